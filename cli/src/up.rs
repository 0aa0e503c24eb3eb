//! `mp3converter up`: the whole system in one process. Each service is the same library code
//! its own binary runs (`serve` on a listener), on its own port, and they call each other over
//! gRPC on loopback, so what runs here is the mesh that runs on Kubernetes. Whatever real
//! component is not configured is replaced by its embedded default: SQLite for accounts
//! (`DATABASE_URL`), the local-directory store for files (`MONGODB_URI`), the queue file for
//! RabbitMQ (`AMQP_URL`) and the outbox directory for SMTP (`SMTP_URL`), all in `--data-dir`.
//! Everything durable lives there, so after a crash the next `up` picks up where it stopped.

use crate::local_tls::LocalTls;
use anyhow::Context;
use clap::Args;
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use service_kit::Shutdown;
use service_kit::config::{
    ConfigError, LogFormat, ServiceConfig, TelemetryConfig, parse_log_filter,
};
use service_kit::grpc_tls::GrpcTlsConfig;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long the services may take to become ready before `up` gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the services may take to drain after Ctrl-C (the converter's grace is the longest).
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// The admin account `up` creates on first start.
const ADMIN_EMAIL: &str = "admin@mp3converter.localhost";
/// Where the first start keeps the admin's generated password (0600).
const ADMIN_FILE: &str = "admin-credentials.json";

/// `up`'s settings. The services' own variables (`DATABASE_URL`, `MONGODB_URI`, `AMQP_URL`,
/// `SMTP_URL`, `CONCURRENCY`, ...) apply as they do to the separate binaries; ports and the data
/// directory are set here.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the embedded defaults keep everything: accounts, files, jobs, the job queue, the
    /// outbox.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// The address every service listens on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// The gateway's HTTP port (the web page and the REST API).
    #[arg(long, default_value_t = 8080)]
    pub gateway_port: u16,

    /// The auth service's gRPC port.
    #[arg(long, default_value_t = 50051)]
    pub auth_port: u16,

    /// The storage service's gRPC port.
    #[arg(long, default_value_t = 50052)]
    pub storage_port: u16,

    /// The first of four health/metrics ports: converter, notifier, auth, storage.
    #[arg(long, default_value_t = 9090)]
    pub ops_port: u16,

    /// Let the system choose free ports for everything (side-by-side runs, tests).
    #[arg(long)]
    pub any_ports: bool,

    /// Serve the gateway over HTTPS and the gRPC hops between the services over mutual TLS,
    /// with a certificate authority and certificates of this machine's own, made on first use
    /// in DATA_DIR/tls (clients trust DATA_DIR/tls/ca.crt).
    #[arg(long)]
    pub tls: bool,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax; one that does not parse stops `up`.
    #[arg(long, env = "RUST_LOG", value_name = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub log_filter: String,
}

/// The seven addresses `up` serves on, as its arguments choose them (port 0 with
/// `--any-ports`: the system picks, and the services learn each other's once bound).
struct Addresses {
    gateway: SocketAddr,
    auth: SocketAddr,
    storage: SocketAddr,
    converter_ops: SocketAddr,
    notifier_ops: SocketAddr,
    auth_ops: SocketAddr,
    storage_ops: SocketAddr,
}

impl Addresses {
    fn of(args: &UpArgs) -> Self {
        let at = |port: u16| SocketAddr::new(args.host, if args.any_ports { 0 } else { port });
        Self {
            gateway: at(args.gateway_port),
            auth: at(args.auth_port),
            storage: at(args.storage_port),
            converter_ops: at(args.ops_port),
            notifier_ops: at(args.ops_port.saturating_add(1)),
            auth_ops: at(args.ops_port.saturating_add(2)),
            storage_ops: at(args.ops_port.saturating_add(3)),
        }
    }

    /// Whether every fixed port is free, so a second `up` stops with one clear line before it
    /// touches anything (a port taken between this check and the bind fails the same way, a
    /// moment later).
    fn check_free(&self) -> anyhow::Result<()> {
        let all = [
            ("the gateway", self.gateway),
            ("auth", self.auth),
            ("storage", self.storage),
            ("the converter's health", self.converter_ops),
            ("the notifier's health", self.notifier_ops),
            ("auth's health", self.auth_ops),
            ("storage's health", self.storage_ops),
        ];
        for (what, addr) in all.into_iter().filter(|(_, addr)| addr.port() != 0) {
            std::net::TcpListener::bind(addr).with_context(|| {
                format!(
                    "cannot listen on {addr} for {what} (is another `up` running? try --any-ports)"
                )
            })?;
        }
        Ok(())
    }
}

/// Every service's configuration: what its own binary would read from this environment, with
/// the fields that are `up`'s to choose (addresses, the data directory, where the others are)
/// set on top.
struct Configs {
    auth: auth::Config,
    storage: storage::Config,
    gateway: gateway::Config,
    converter: converter::Config,
    notifier: notifier::Config,
}

impl Configs {
    fn from_env(
        addresses: &Addresses,
        data_dir: &Path,
        tls: Option<&LocalTls>,
    ) -> anyhow::Result<Self> {
        let mut auth = auth::Config::from_env()?;
        auth.data_dir = data_dir.to_owned();
        auth.addrs.api = addresses.auth;
        auth.addrs.ops = addresses.auth_ops;

        let mut storage = storage::Config::from_env()?;
        storage.data_dir = data_dir.to_owned();
        storage.addrs.api = addresses.storage;
        storage.addrs.ops = addresses.storage_ops;

        let mut gateway = gateway::Config::from_env()?;
        gateway.broker.data_dir = data_dir.to_owned();
        gateway.listen_addr = addresses.gateway;
        gateway.auth_url = url(tls.is_some(), addresses.auth);
        gateway.storage_url = url(tls.is_some(), addresses.storage);

        let mut converter = converter::Config::from_env()?;
        converter.links.broker.data_dir = data_dir.to_owned();
        converter.ops.ops = addresses.converter_ops;
        converter.links.storage_url = url(tls.is_some(), addresses.storage);

        let mut notifier = notifier::Config::from_env()?;
        notifier.links.broker.data_dir = data_dir.to_owned();
        notifier.ops.ops = addresses.notifier_ops;
        notifier.links.storage_url = url(tls.is_some(), addresses.storage);
        if std::env::var_os("PUBLIC_BASE_URL").is_none() {
            notifier.public_base_url = url(tls.is_some(), addresses.gateway);
        }
        if let Some(tls) = tls {
            let (cert, key) = tls.gateway();
            gateway.tls_cert_file = Some(cert);
            gateway.tls_key_file = Some(key);
            let (cert, key) = tls.services();
            let grpc_tls = GrpcTlsConfig {
                cert_file: Some(cert),
                key_file: Some(key),
                ca_file: Some(tls.ca()),
            };
            auth.grpc_tls = grpc_tls.clone();
            storage.grpc_tls = grpc_tls.clone();
            gateway.grpc_tls = grpc_tls.clone();
            converter.links.grpc_tls = grpc_tls.clone();
            notifier.links.grpc_tls = grpc_tls;
        }
        Ok(Self {
            auth,
            storage,
            gateway,
            converter,
            notifier,
        })
    }

    /// Every service's checks (the converter's runs ffmpeg), all before anything starts.
    fn validate(&self) -> Result<(), ConfigError> {
        self.auth.validate()?;
        self.storage.validate()?;
        self.gateway.validate()?;
        self.converter.validate()?;
        self.notifier.validate()
    }
}

/// The admin account of the embedded default.
#[derive(Debug, Serialize, Deserialize)]
struct AdminCredentials {
    email: String,
    password: String,
}

/// The admin account: made up (and saved, 0600) on first start, read back later.
fn admin_credentials(data_dir: &Path) -> anyhow::Result<(AdminCredentials, bool)> {
    let path = data_dir.join(ADMIN_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let saved = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; remove it to make a new admin",
                    path.display()
                )
            })?;
            return Ok((saved, false));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    let credentials = AdminCredentials {
        email: ADMIN_EMAIL.into(),
        password: Alphanumeric.sample_string(&mut rand::rng(), 20),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, &serde_json::to_vec_pretty(&credentials)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((credentials, true))
}

type Service = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// How a service on `addr` is called: `https://` with `up --tls`.
fn url(tls: bool, addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(host, addr.port()))
}

/// Runs the system until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    // Everything is checked before anything is written: a refused start leaves no trace.
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("the data directory {}", args.data_dir.display()))?;
    let addresses = Addresses::of(&args);
    let local_tls = args.tls.then(|| LocalTls::in_data_dir(&data_dir));
    let tls = local_tls.as_ref();
    let mut configs = Configs::from_env(&addresses, &data_dir, tls)?;
    configs.validate()?;
    addresses.check_free()?;
    service_kit::telemetry::init(&TelemetryConfig {
        log_format: args.log_format,
        log_filter: args.log_filter.clone(),
    })?;

    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    if let Some(tls) = tls
        && tls.ensure(args.host)?
    {
        tracing::info!(ca = %tls.ca().display(), "made a local certificate authority and the mesh's certificates");
    }
    let admin = if configs.auth.admin_email.is_none() {
        let (admin, first_start) = admin_credentials(&data_dir)?;
        configs.auth.admin_email = Some(admin.email.clone());
        configs.auth.admin_password = Some(admin.password.clone().into());
        Some((admin, first_start))
    } else {
        None
    };
    let Configs {
        auth,
        storage,
        mut gateway,
        mut converter,
        mut notifier,
    } = configs;
    let accounts = if auth.database_url.is_some() {
        "MySQL (DATABASE_URL)"
    } else {
        "SQLite, in the data directory"
    };
    let files = if storage.mongodb_uri.is_some() {
        "MongoDB GridFS (MONGODB_URI)"
    } else {
        "the data directory"
    };
    let mail = match &notifier.smtp_url {
        Some(_) => "sent through SMTP (SMTP_URL)".to_owned(),
        None => format!("written to the outbox, {}", notifier.outbox_dir().display()),
    };

    // Built in the order they need each other's addresses (with --any-ports those are only
    // known once bound).
    let auth = auth::App::build(auth).await.context("auth")?;
    let storage = storage::App::build(storage).await.context("storage")?;
    gateway.auth_url = url(tls.is_some(), auth.grpc_addr());
    gateway.storage_url = url(tls.is_some(), storage.grpc_addr());
    converter.links.storage_url = url(tls.is_some(), storage.grpc_addr());
    notifier.links.storage_url = url(tls.is_some(), storage.grpc_addr());
    let queue = gateway.broker.describe();
    let gateway = gateway::App::build(gateway).await.context("the gateway")?;
    let gateway_url = url(tls.is_some(), gateway.http_addr());
    if std::env::var_os("PUBLIC_BASE_URL").is_none() {
        notifier.public_base_url = gateway_url.clone();
    }
    let converter = converter::App::build(converter)
        .await
        .context("the converter")?;
    let notifier = notifier::App::build(notifier)
        .await
        .context("the notifier")?;

    let summary = Summary {
        gateway: gateway_url.clone(),
        auth: auth.grpc_addr(),
        storage: storage.grpc_addr(),
        data_dir: data_dir.clone(),
        accounts,
        files,
        queue,
        mail,
        admin,
        tls: local_tls.clone(),
    };

    let shutdown = Shutdown::on_signals();
    let mut services: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let started: [(&'static str, Service); 5] = [
        ("auth", Box::pin(auth.run_until_stopped(shutdown.clone()))),
        (
            "storage",
            Box::pin(storage.run_until_stopped(shutdown.clone())),
        ),
        (
            "gateway",
            Box::pin(gateway.run_until_stopped(shutdown.clone())),
        ),
        (
            "converter",
            Box::pin(converter.run_until_stopped(shutdown.clone())),
        ),
        (
            "notifier",
            Box::pin(notifier.run_until_stopped(shutdown.clone())),
        ),
    ];
    for (name, service) in started {
        services.spawn(async move { (name, service.await) });
    }

    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        ready = wait_until_ready(&gateway_url, tls) => match ready {
            Ok(()) => println!("{}", summary.render()),
            Err(error) => {
                failure = Some(error.context("the system did not become ready"));
                shutdown.trigger();
            }
        },
        Some(ended) = services.join_next() => {
            record(ended, &mut failure);
            shutdown.trigger();
        }
    }
    // Up until Ctrl-C or SIGTERM, or until one service stops by itself: a half system helps
    // nobody, so that takes the others down too.
    tokio::select! {
        () = shutdown.wait() => {}
        Some(ended) = services.join_next() => {
            record(ended, &mut failure);
            shutdown.trigger();
        }
    }
    let drained = async {
        while let Some(ended) = services.join_next().await {
            record(ended, &mut failure);
        }
    };
    if tokio::time::timeout(STOP_TIMEOUT, drained).await.is_err() {
        tracing::warn!(timeout = ?STOP_TIMEOUT, "services did not stop in time; stopping them now");
        services.abort_all();
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Notes how a service ended, keeping the first failure.
fn record(
    ended: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
    failure: &mut Option<anyhow::Error>,
) {
    let error = match ended {
        Ok((name, Ok(()))) => {
            tracing::info!(service = name, "stopped");
            return;
        }
        Ok((name, Err(error))) => error.context(format!("{name} failed")),
        Err(error) => anyhow::anyhow!("a service panicked: {error}"),
    };
    tracing::error!(error = format!("{error:#}"), "service ended");
    failure.get_or_insert(error);
}

/// Waits until the gateway's `/readyz` says auth, storage and the queue all answer.
async fn wait_until_ready(gateway_url: &str, tls: Option<&LocalTls>) -> anyhow::Result<()> {
    let mut http = reqwest::Client::builder();
    if let Some(tls) = tls {
        let pem = tokio::fs::read(tls.ca()).await?;
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let http = http.build()?;
    let started = Instant::now();
    loop {
        let ready = http
            .get(format!("{gateway_url}/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if ready {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            anyhow::bail!("not ready after {READY_TIMEOUT:?}; see the log above");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the start-up banner tells.
struct Summary {
    gateway: String,
    auth: SocketAddr,
    storage: SocketAddr,
    data_dir: PathBuf,
    accounts: &'static str,
    files: &'static str,
    queue: String,
    mail: String,
    admin: Option<(AdminCredentials, bool)>,
    tls: Option<LocalTls>,
}

impl Summary {
    fn render(&self) -> String {
        let admin = match &self.admin {
            Some((admin, true)) => format!(
                "{} / {}  (made on this first start; kept in {})",
                admin.email,
                admin.password,
                self.data_dir.join(ADMIN_FILE).display()
            ),
            Some((admin, false)) => format!(
                "{}  (password in {})",
                admin.email,
                self.data_dir.join(ADMIN_FILE).display()
            ),
            None => "ADMIN_EMAIL, as configured".to_owned(),
        };
        let (grpcurl, tls) = match &self.tls {
            Some(tls) => {
                let ca = tls.ca().display().to_string();
                let (cert, key) = tls.services();
                (
                    format!(
                        "grpcurl -cacert {ca} -cert {} -key {} {} list",
                        cert.display(),
                        key.display(),
                        self.auth
                    ),
                    format!(
                        "\x20 TLS       HTTPS and mutual-TLS gRPC; trust {ca}:\n\
                         \x20           curl --cacert {ca} {gateway}/healthz\n\
                         \x20           (or export CURL_CA_BUNDLE={ca} MP3CONVERTER_CA_FILE={ca})\n",
                        gateway = self.gateway
                    ),
                )
            }
            None => (
                format!("grpcurl -plaintext {} list", self.auth),
                String::new(),
            ),
        };
        format!(
            "\n\
             mp3converter is up. Ctrl-C stops it.\n\
             \n\
             \x20 gateway   {gateway}\n\
             \x20 web page  {gateway}/\n\
             \x20 API docs  {gateway}/openapi.json\n\
             \x20 auth      grpc {auth}     ({grpcurl})\n\
             \x20 storage   grpc {storage}\n\
             \x20 data      {data}\n\
             \x20 accounts  {accounts}; files: {files}\n\
             \x20 queue     {queue}\n\
             \x20 e-mail    {mail}\n\
             \x20 admin     {admin}\n\
             {tls}\
             \n\
             Sign up on the web page, or: mp3converter register you@example.com && mp3converter login you@example.com",
            gateway = self.gateway,
            auth = self.auth,
            storage = self.storage,
            data = self.data_dir.display(),
            accounts = self.accounts,
            files = self.files,
            queue = self.queue,
            mail = self.mail,
        )
    }
}
