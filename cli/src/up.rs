//! `mp3converter up`: the whole system in one process. Each service is the same library code
//! its own binary runs (`serve` on a listener), on its own port, and they call each other over
//! gRPC on loopback, so what runs here is the mesh that runs on Kubernetes. Whatever real
//! component is not configured is replaced by its embedded default: SQLite for accounts
//! (`DATABASE_URL`), the local-directory store for files (`MONGODB_URI`), the queue file for
//! RabbitMQ (`AMQP_URL`) and the outbox directory for SMTP (`SMTP_URL`), all in `--data-dir`.
//! Everything durable lives there, so after a crash the next `up` picks up where it stopped.

use anyhow::Context;
use clap::{Args, Parser};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use service_kit::Shutdown;
use service_kit::config::{LogFormat, TelemetryConfig};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
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

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// The listeners, bound before anything starts so every service knows the others' addresses.
struct Listeners {
    gateway: TcpListener,
    auth: TcpListener,
    storage: TcpListener,
    auth_ops: TcpListener,
    storage_ops: TcpListener,
    converter_ops: TcpListener,
    notifier_ops: TcpListener,
}

impl Listeners {
    async fn bind(args: &UpArgs) -> anyhow::Result<Self> {
        let port = |port: u16| if args.any_ports { 0 } else { port };
        let bind = async |what: &str, port: u16| {
            let addr = SocketAddr::new(args.host, port);
            TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen on {addr} for {what} (is another `up` running? try --any-ports)"
                )
            })
        };
        Ok(Self {
            gateway: bind("the gateway", port(args.gateway_port)).await?,
            auth: bind("auth", port(args.auth_port)).await?,
            storage: bind("storage", port(args.storage_port)).await?,
            converter_ops: bind("the converter's health", port(args.ops_port)).await?,
            notifier_ops: bind(
                "the notifier's health",
                port(args.ops_port.saturating_add(1)),
            )
            .await?,
            auth_ops: bind("auth's health", port(args.ops_port.saturating_add(2))).await?,
            storage_ops: bind("storage's health", port(args.ops_port.saturating_add(3))).await?,
        })
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

/// Parses a service's command line from `args` plus the environment, as its binary would.
fn parse<C: Parser>(name: &str, args: &[(&str, String)]) -> anyhow::Result<C> {
    let mut argv = vec![name.to_owned()];
    for (flag, value) in args {
        argv.push(format!("--{flag}"));
        argv.push(value.clone());
    }
    C::try_parse_from(argv).map_err(|error| anyhow::anyhow!("{name}: {error}"))
}

fn url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(host, addr.port()))
}

/// Runs the system until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    service_kit::telemetry::init(&TelemetryConfig {
        log_format: args.log_format,
        log_filter: args.log_filter.clone(),
    });
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let data = data_dir.display().to_string();
    let listeners = Listeners::bind(&args).await?;
    let addr = |listener: &TcpListener| listener.local_addr().map(url);
    let gateway_url = addr(&listeners.gateway)?;
    let auth_url = addr(&listeners.auth)?;
    let storage_url = addr(&listeners.storage)?;

    let mut auth_args = vec![("data-dir", data.clone())];
    let admin = if std::env::var_os("ADMIN_EMAIL").is_none() {
        let (admin, first_start) = admin_credentials(&data_dir)?;
        auth_args.push(("admin-email", admin.email.clone()));
        auth_args.push(("admin-password", admin.password.clone()));
        Some((admin, first_start))
    } else {
        None
    };
    let auth: auth::Cli = parse("auth", &auth_args)?;
    let storage: storage::Cli = parse("storage", &[("data-dir", data.clone())])?;
    let gateway: gateway::Cli = parse(
        "gateway",
        &[
            ("data-dir", data.clone()),
            ("auth-url", auth_url.clone()),
            ("storage-url", storage_url.clone()),
        ],
    )?;
    let worker_args = vec![
        ("data-dir", data.clone()),
        ("storage-url", storage_url.clone()),
    ];
    let converter: converter::Cli = parse("converter", &worker_args)?;
    let mut notifier_args = worker_args.clone();
    if std::env::var_os("PUBLIC_BASE_URL").is_none() {
        notifier_args.push(("public-base-url", gateway_url.clone()));
    }
    let notifier: notifier::Cli = parse("notifier", &notifier_args)?;
    gateway.config.validate()?;
    auth.config.validate()?;
    converter.config.validate()?;

    let summary = Summary {
        gateway: gateway_url.clone(),
        auth: listeners.auth.local_addr()?,
        storage: listeners.storage.local_addr()?,
        data_dir: data_dir.clone(),
        accounts: if auth.config.database_url.is_some() {
            "MySQL (DATABASE_URL)"
        } else {
            "SQLite, in the data directory"
        },
        files: if storage.config.mongodb_uri.is_some() {
            "MongoDB GridFS (MONGODB_URI)"
        } else {
            "the data directory"
        },
        queue: gateway.config.broker.describe(),
        mail: match notifier.config.smtp_url {
            Some(_) => "sent through SMTP (SMTP_URL)".to_owned(),
            None => format!(
                "written to the outbox, {}",
                notifier.config.outbox_dir().display()
            ),
        },
        admin,
    };

    let shutdown = Shutdown::on_signals();
    let mut services: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let Listeners {
        gateway: gateway_listener,
        auth: auth_listener,
        storage: storage_listener,
        auth_ops,
        storage_ops,
        converter_ops,
        notifier_ops,
    } = listeners;
    let started: [(&'static str, Service); 5] = [
        (
            "auth",
            Box::pin(auth::serve_with_ops(
                auth.config,
                auth_listener,
                auth_ops,
                shutdown.clone(),
            )),
        ),
        (
            "storage",
            Box::pin(storage::serve_with_ops(
                storage.config,
                storage_listener,
                storage_ops,
                shutdown.clone(),
            )),
        ),
        (
            "gateway",
            Box::pin(gateway::serve(
                gateway.config,
                gateway_listener,
                shutdown.clone(),
            )),
        ),
        (
            "converter",
            Box::pin(converter::serve(
                converter.config,
                converter_ops,
                shutdown.clone(),
            )),
        ),
        (
            "notifier",
            Box::pin(notifier::serve(
                notifier.config,
                notifier_ops,
                shutdown.clone(),
            )),
        ),
    ];
    for (name, service) in started {
        services.spawn(async move { (name, service.await) });
    }

    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        ready = wait_until_ready(&gateway_url) => match ready {
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
async fn wait_until_ready(gateway_url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
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
        format!(
            "\n\
             mp3converter is up. Ctrl-C stops it.\n\
             \n\
             \x20 gateway   {gateway}\n\
             \x20 web page  {gateway}/\n\
             \x20 API docs  {gateway}/openapi.json\n\
             \x20 auth      grpc {auth}     (grpcurl -plaintext {auth} list)\n\
             \x20 storage   grpc {storage}\n\
             \x20 data      {data}\n\
             \x20 accounts  {accounts}; files: {files}\n\
             \x20 queue     {queue}\n\
             \x20 e-mail    {mail}\n\
             \x20 admin     {admin}\n\
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
