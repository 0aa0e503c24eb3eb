//! The whole system as five separate processes (`mp3converter serve ROLE`), the way Kubernetes
//! runs it, on real infrastructure that each test owns a slice of: a fresh MariaDB database, a
//! MongoDB-wire server of its own (so it can be stopped), queues behind a unique prefix on
//! RabbitMQ, and an SMTP capture. RabbitMQ and SMTP are reached through [`TcpProxy`]s, so a
//! test can cut them or take them down without touching other tests. Each process can be
//! killed, stopped and started again; its logs go to one file per role. The same five
//! processes can run on the embedded defaults instead ([`Parts::Embedded`]), as a machine
//! without any of those servers runs them.

use crate::{
    MongoServer, SmtpCapture, TcpProxy, TempDir, TestBroker, TestMysql, free_port, rest, temp_dir,
};
use clients::{Owner, StorageClient};
use messaging::RetryConfig;
use proto::storage::v1 as pb;
use service_kit::grpc_tls::{GrpcTls, GrpcTlsConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The HS256 key the cluster's auth signs with.
pub const JWT_SECRET: &str = "cluster-test-signing-key-of-at-least-32-bytes";
/// The password of every account a cluster test makes.
pub const PASSWORD: &str = "correct horse battery staple";
/// Retries wait a fraction of a second and go on long enough to outlast every outage here.
const RETRY: RetryConfig = RetryConfig {
    max_attempts: 20,
    retry_base_delay_ms: 200,
    retry_max_delay_ms: 1000,
    schedule: None,
    jitter_percent: 0,
};

/// What the services run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// MariaDB, the MongoDB-wire server, RabbitMQ and the SMTP capture.
    Real,
    /// The embedded defaults, all in the shared data directory: SQLite accounts, the local
    /// file store, the queue file and the outbox. (The real servers are still set up, unused.)
    Embedded,
}

/// One of the five services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The REST edge.
    Gateway,
    /// Accounts.
    Auth,
    /// Files and jobs.
    Storage,
    /// The ffmpeg worker.
    Converter,
    /// The e-mail worker.
    Notifier,
}

impl Role {
    /// Every role, in start-up order.
    pub const ALL: [Role; 5] = [
        Role::Auth,
        Role::Storage,
        Role::Gateway,
        Role::Converter,
        Role::Notifier,
    ];

    fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Auth => "auth",
            Role::Storage => "storage",
            Role::Converter => "converter",
            Role::Notifier => "notifier",
        }
    }
}

pub use crate::mesh::User;

/// The running system and the infrastructure under it.
#[derive(Debug)]
pub struct Cluster {
    /// The gateway's URL.
    pub gateway: String,
    /// An HTTP client with [`REQUEST_DEADLINE`].
    pub http: reqwest::Client,
    /// The MongoDB-wire server, which a test can stop and start.
    pub mongo: MongoServer,
    /// Storage's database on it.
    pub mongo_database: String,
    /// Between the services and RabbitMQ.
    pub broker_proxy: TcpProxy,
    /// Where the notifier's mail arrives.
    pub smtp: SmtpCapture,
    /// Between the notifier and the SMTP capture.
    pub smtp_proxy: TcpProxy,
    /// RabbitMQ, behind the cluster's queue prefix.
    pub broker: TestBroker,
    binary: PathBuf,
    queues: [String; 3],
    storage_url: String,
    /// The test's own certificate for storage, once [`Cluster::use_grpc_tls`] is called.
    storage_tls: Option<GrpcTls>,
    env: HashMap<Role, Vec<(&'static str, String)>>,
    ops_ports: HashMap<Role, u16>,
    processes: HashMap<Role, Child>,
    logs: TempDir,
    work_dir: TempDir,
    data_dir: TempDir,
    _mysql: TestMysql,
}

impl Cluster {
    /// Starts the infrastructure and every service as processes of `binary` (the
    /// `mp3converter` program), and waits until each is ready.
    pub async fn start(binary: &Path) -> Self {
        Self::start_with(binary, &[]).await
    }

    /// [`Cluster::start`], with `overrides` added to every service's environment (the
    /// processes are configured the way Kubernetes configures them: through variables).
    pub async fn start_with(binary: &Path, overrides: &[(&'static str, &str)]) -> Self {
        let mut cluster = Self::configure(binary, Parts::Real, overrides).await;
        cluster.start_roles(&Role::ALL).await;
        cluster
    }

    /// Sets up the infrastructure and every service's settings on `parts`, with `overrides`
    /// added, but starts no service: [`Cluster::start_roles`] starts them.
    pub async fn configure(
        binary: &Path,
        parts: Parts,
        overrides: &[(&'static str, &str)],
    ) -> Self {
        let mysql = TestMysql::create().await.unwrap();
        let mongo = MongoServer::start().await.unwrap();
        let mongo_database = crate::unique_name("t_");
        let broker = TestBroker::create().await.unwrap();
        let queue_names = broker.queues();
        for queue in queue_names.queues() {
            broker.remember_retry_queues(queue, &RETRY);
        }
        let webhook_schedule = overrides
            .iter()
            .find(|(name, _)| *name == "WEBHOOK_RETRY_SCHEDULE")
            .map(|(_, schedule)| schedule.parse().expect("a valid WEBHOOK_RETRY_SCHEDULE"));
        if let Some(schedule) = webhook_schedule {
            let retry = notifier::webhook::retry_on(&schedule);
            broker.remember_retry_queues(&queue_names.webhook_queue, &retry);
        }
        let (broker_proxy, amqp_url) = broker.proxy().await.unwrap();
        let smtp = SmtpCapture::start().unwrap();
        let smtp_proxy = TcpProxy::start(smtp.addr()).await.unwrap();
        let (logs, work_dir, data_dir) = (temp_dir(), temp_dir(), temp_dir());

        let ports: HashMap<Role, u16> = Role::ALL.iter().map(|r| (*r, free_port())).collect();
        let ops_ports: HashMap<Role, u16> = Role::ALL.iter().map(|r| (*r, free_port())).collect();
        let url = |role: Role| format!("http://127.0.0.1:{}", ports[&role]);
        let queues = queue_names.env_vars();
        let retry = [
            ("MAX_ATTEMPTS", RETRY.max_attempts.to_string()),
            ("RETRY_BASE_DELAY_MS", RETRY.retry_base_delay_ms.to_string()),
            ("RETRY_MAX_DELAY_MS", RETRY.retry_max_delay_ms.to_string()),
        ];
        let mut env: HashMap<Role, Vec<(&'static str, String)>> = HashMap::new();
        for role in Role::ALL {
            let mut vars = vec![
                ("LISTEN_ADDR", format!("127.0.0.1:{}", ports[&role])),
                ("OPS_LISTEN_ADDR", format!("127.0.0.1:{}", ops_ports[&role])),
                ("DATA_DIR", data_dir.path().display().to_string()),
                ("LOG_FORMAT", "json".into()),
                ("RUST_LOG", "info".into()),
            ];
            let real = parts == Parts::Real;
            match role {
                Role::Auth => {
                    vars.push(("JWT_SECRET", JWT_SECRET.into()));
                    if real {
                        vars.push(("DATABASE_URL", mysql.url()));
                    }
                }
                Role::Storage if real => vars.extend([
                    ("MONGODB_URI", mongo.uri()),
                    ("MONGODB_DATABASE", mongo_database.clone()),
                ]),
                Role::Storage => {}
                Role::Gateway => {
                    vars.extend([
                        ("AUTH_URL", url(Role::Auth)),
                        ("STORAGE_URL", url(Role::Storage)),
                    ]);
                    if real {
                        vars.push(("AMQP_URL", amqp_url.clone()));
                    }
                    vars.extend(queues.clone());
                }
                Role::Converter | Role::Notifier => {
                    vars.extend([
                        ("STORAGE_URL", url(Role::Storage)),
                        ("WORK_DIR", work_dir.path().display().to_string()),
                        ("CONCURRENCY", "2".into()),
                        ("SMTP_TIMEOUT_SECONDS", "5".into()),
                        ("PUBLIC_BASE_URL", "https://mp3.example.com".into()),
                    ]);
                    if real {
                        vars.extend([
                            ("AMQP_URL", amqp_url.clone()),
                            ("SMTP_URL", format!("smtp://{}", smtp_proxy.addr())),
                        ]);
                    }
                    vars.extend(queues.clone());
                    vars.extend(retry.clone());
                }
            }
            vars.extend(overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
            env.insert(role, vars);
        }
        Self {
            binary: binary.to_owned(),
            gateway: url(Role::Gateway),
            http: reqwest::Client::builder()
                .timeout(REQUEST_DEADLINE)
                .build()
                .unwrap(),
            mongo,
            mongo_database,
            broker_proxy,
            smtp,
            smtp_proxy,
            broker,
            queues: queue_names.queues().map(String::clone),
            storage_url: url(Role::Storage),
            storage_tls: None,
            env,
            ops_ports,
            processes: HashMap::new(),
            logs,
            work_dir,
            data_dir,
            _mysql: mysql,
        }
    }

    /// Takes every secret out of the services' environments and puts it in a file of its own
    /// (the value and a trailing newline, as `echo` and `kubectl create secret --from-file`
    /// leave it; readable by its owner alone), each service given `NAME_FILE` instead, as a
    /// Kubernetes Secret mounted as files reaches it. Call it before any role starts. Returns
    /// the values moved, for a test to look for where they must not be.
    pub fn secrets_as_files(&mut self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.data_dir.path().join("secrets");
        std::fs::create_dir_all(&dir).unwrap();
        let mut moved = Vec::new();
        for (role, vars) in &mut self.env {
            for (name, value) in vars.iter_mut() {
                let Some(file_form) = secret_file_form(name) else {
                    continue;
                };
                let path = dir.join(format!("{}-{name}", role.name()));
                std::fs::write(&path, format!("{value}\n")).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
                moved.push(std::mem::replace(value, path.display().to_string()));
                *name = file_form;
            }
        }
        moved.sort();
        moved.dedup();
        moved
    }

    /// Puts the gRPC hops on mutual TLS, as an operator would: a certificate authority of
    /// this cluster's own, a certificate for each service (and one for the test's own storage
    /// client), every service given GRPC_TLS_* and `https://` gRPC URLs. Call it before any
    /// role starts.
    pub async fn use_grpc_tls(&mut self) {
        let ca = crate::tls::TestCa::new("mp3converter cluster CA");
        let dir = self.data_dir.path().join("grpc-tls");
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = ca.write_to(&dir);
        let settings = |name: &str| {
            let own = dir.join(name);
            std::fs::create_dir_all(&own).unwrap();
            let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]).write_to(&own);
            GrpcTlsConfig {
                cert_file: Some(cert),
                key_file: Some(key),
                ca_file: Some(ca_file.clone()),
            }
        };
        let path = |file: &Option<PathBuf>| file.as_ref().unwrap().display().to_string();
        for (role, vars) in &mut self.env {
            let tls = settings(role.name());
            for (name, value) in vars.iter_mut() {
                if *name == "AUTH_URL" || *name == "STORAGE_URL" {
                    *value = value.replacen("http://", "https://", 1);
                }
            }
            vars.extend([
                ("GRPC_TLS_CERT_FILE", path(&tls.cert_file)),
                ("GRPC_TLS_KEY_FILE", path(&tls.key_file)),
                ("GRPC_TLS_CA_FILE", path(&tls.ca_file)),
            ]);
        }
        self.storage_url = self.storage_url.replacen("http://", "https://", 1);
        self.storage_tls = settings("test").load().await.unwrap();
    }

    /// Starts `roles` together and waits until each is ready.
    pub async fn start_roles(&mut self, roles: &[Role]) {
        for role in roles {
            self.launch(*role);
        }
        for role in roles {
            self.wait_until_ready(*role).await;
        }
    }

    /// Starts `role`'s process (again), with the same settings; returns at once.
    pub fn launch(&mut self, role: Role) {
        assert!(!self.processes.contains_key(&role), "{role:?} runs already");
        let child = self.spawn(role, &[]);
        self.processes.insert(role, child);
    }

    /// Starts one more process of `role` beside the cluster's own, with `overrides` added to
    /// its settings (its own `OPS_LISTEN_ADDR`, say, or another `CONCURRENCY`); it logs to the
    /// role's log and is killed when the returned handle is dropped.
    pub fn spawn(&self, role: Role, overrides: &[(&'static str, String)]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(role))
            .unwrap();
        let mut command = Command::new(&self.binary);
        command.args(["serve", role.name()]);
        for variable in [
            "DATABASE_URL",
            "MONGODB_URI",
            "AMQP_URL",
            "SMTP_URL",
            "STORAGE_URL",
            "AUTH_URL",
        ] {
            command.env_remove(variable);
            if let Some(file_form) = secret_file_form(variable) {
                command.env_remove(file_form);
            }
        }
        command
            .envs(self.env[&role].iter().map(|(k, v)| (*k, v.as_str())))
            .envs(overrides.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        command.spawn().expect("mp3converter serve starts")
    }

    /// Starts `role` again and waits until it is ready.
    pub async fn restart(&mut self, role: Role) {
        self.launch(role);
        self.wait_until_ready(role).await;
    }

    /// SIGKILL: no drain, no clean-up, like a crash or a node lost.
    pub async fn kill(&mut self, role: Role) {
        let mut child = self.processes.remove(&role).expect("running");
        child.kill().await.unwrap();
    }

    /// SIGTERM, as Kubernetes stops a pod, and wait for the process to exit.
    pub async fn stop(&mut self, role: Role) {
        let mut child = self.processes.remove(&role).expect("running");
        signal(&child, "TERM").await;
        let exited = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
        assert!(
            exited.is_ok(),
            "{role:?} did not exit within 60 s of SIGTERM"
        );
    }

    /// Where `role` serves (`127.0.0.1:PORT`).
    pub fn listen_addr(&self, role: Role) -> String {
        self.env[&role]
            .iter()
            .find(|(name, _)| *name == "LISTEN_ADDR")
            .map(|(_, addr)| addr.clone())
            .expect("every role has a LISTEN_ADDR")
    }

    /// The process id of `role`.
    pub fn pid(&self, role: Role) -> u32 {
        self.processes[&role].id().expect("running")
    }

    /// Everything `role` logged so far, across restarts.
    pub fn log(&self, role: Role) -> String {
        std::fs::read_to_string(self.log_path(role)).unwrap_or_default()
    }

    /// Everything `role` logged, once that holds `needle` or `timeout` has passed. A service
    /// logs what it did after doing it (the notifier's "e-mail sent" comes once the SMTP
    /// conversation has ended, after the capture already holds the mail), so a test that has
    /// seen the effect waits for the line.
    pub async fn log_containing(&self, role: Role, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let log = self.log(role);
            if log.contains(needle) || tokio::time::Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_path(&self, role: Role) -> PathBuf {
        self.logs.path().join(format!("{}.log", role.name()))
    }

    /// The data directory every service shares (where the embedded defaults keep everything).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Where the converters keep temp files.
    pub fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    async fn wait_until_ready(&mut self, role: Role) {
        let url = match role {
            Role::Gateway => self.url("/readyz"),
            _ => format!("http://127.0.0.1:{}/readyz", self.ops_ports[&role]),
        };
        let child = self
            .processes
            .get_mut(&role)
            .expect("the role was launched");
        let ready = crate::process::wait_until_child_answers(
            child,
            &self.http,
            &url,
            Duration::from_secs(90),
        )
        .await;
        if let Err(error) = ready {
            panic!("{role:?} is not ready: {error}\n{}", self.log(role));
        }
    }

    /// The gateway's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// Registers `email` and logs in.
    pub async fn user(&self, email: &str) -> User {
        User {
            email: email.to_owned(),
            id: rest::register(&self.http, &self.gateway, email, PASSWORD).await,
            token: rest::login(&self.http, &self.gateway, email, PASSWORD).await,
        }
    }

    /// Uploads `bytes` as the multipart part `file` named `name`.
    pub async fn upload(
        &self,
        token: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Result<reqwest::Response> {
        rest::upload(&self.http, &self.gateway, token, name, bytes).await
    }

    /// A client of the storage service, straight to its port (not through the gateway).
    pub fn storage(&self) -> StorageClient {
        StorageClient::connect_lazy(&self.storage_url, self.storage_tls.as_ref()).unwrap()
    }

    /// Every job of `owner`'s, as storage holds them (all pages: a busy fault run accepts more
    /// uploads than one page holds).
    pub async fn jobs(&self, owner: &str) -> Vec<pb::Job> {
        self.storage()
            .all_jobs(&Owner::One(owner.into()))
            .await
            .unwrap()
    }

    /// Every file of `owner`'s in `bucket`, as storage holds them (all pages).
    pub async fn files(&self, bucket: pb::Bucket, owner: &str) -> Vec<pb::FileInfo> {
        self.storage()
            .all_files(bucket, &Owner::One(owner.into()))
            .await
            .unwrap()
    }

    /// GridFS chunks whose file document does not exist: bytes half-written and abandoned.
    pub async fn orphan_chunks(&self) -> u64 {
        use mongodb::bson::{Bson, doc};
        let client = mongodb::Client::with_uri_str(self.mongo.uri())
            .await
            .unwrap();
        let database = client.database(&self.mongo_database);
        let mut orphans = 0;
        for bucket in ["videos", "mp3s"] {
            let files: Vec<Bson> = database
                .collection::<mongodb::bson::Document>(&format!("{bucket}.files"))
                .distinct("_id", doc! {})
                .await
                .unwrap();
            let chunk_owners: Vec<Bson> = database
                .collection::<mongodb::bson::Document>(&format!("{bucket}.chunks"))
                .distinct("files_id", doc! {})
                .await
                .unwrap();
            orphans += chunk_owners
                .iter()
                .filter(|owner| !files.contains(owner))
                .count() as u64;
        }
        client.shutdown().await;
        orphans
    }

    /// Messages waiting in `{queue}.dead`, summed over the video, mp3 and webhook queues.
    pub async fn dead_letters(&self) -> u32 {
        let connection = self.broker.connect().await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut total = 0;
        for queue in &self.queues {
            let name = format!("{queue}.dead");
            let declared = channel
                .queue_declare(
                    name.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await;
            total += declared.map_or(0, |queue| queue.message_count());
        }
        let _ = connection.close(200, "ok".into()).await;
        total
    }
}

/// How long any one request may take before the test calls it a hang.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

async fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// The `_FILE` form of a secret variable the cluster sets, or `None` for one that holds no
/// secret.
fn secret_file_form(variable: &str) -> Option<&'static str> {
    Some(match variable {
        "JWT_SECRET" => "JWT_SECRET_FILE",
        "DATABASE_URL" => "DATABASE_URL_FILE",
        "MONGODB_URI" => "MONGODB_URI_FILE",
        "AMQP_URL" => "AMQP_URL_FILE",
        "SMTP_URL" => "SMTP_URL_FILE",
        "ADMIN_PASSWORD" => "ADMIN_PASSWORD_FILE",
        _ => return None,
    })
}
