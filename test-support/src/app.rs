//! The services in this process, exactly as production builds and runs them: each test builds
//! a typed configuration (see [`crate::configs`]), then [`Running::start`] calls the service's
//! `App::build`, spawns its `run_until_stopped`, and waits (with a deadline) until its ops
//! endpoint says it is ready, so calls made then do not race its start.

use service_kit::Shutdown;
use std::future::Future;
use std::net::SocketAddr;
use tokio::task::JoinHandle;

/// What [`Running`] needs of a service's `App`: the same three steps for all five.
pub trait TestApp: Sized + Send + 'static {
    /// The service's configuration.
    type Config: Clone + Send + 'static;
    /// `App::build`.
    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send;
    /// Where the service answers its callers: gRPC for auth and storage, HTTP for the gateway,
    /// the ops endpoint for the workers (which answer nobody else).
    fn addr(&self) -> SocketAddr;
    /// Where `/healthz`, `/readyz` and `/metrics` are.
    fn ops_addr(&self) -> SocketAddr;
    /// `App::run_until_stopped`.
    fn run(self, shutdown: Shutdown) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// What answers 200 once the service is up: `/readyz` (serving, or consuming).
    const READY_PATH: &'static str = "/readyz";
}

impl TestApp for auth::App {
    type Config = auth::Config;
    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send {
        Self::build(config)
    }
    fn addr(&self) -> SocketAddr {
        self.grpc_addr()
    }
    fn ops_addr(&self) -> SocketAddr {
        self.ops_addr()
    }
    fn run(self, shutdown: Shutdown) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.run_until_stopped(shutdown)
    }
}

impl TestApp for storage::App {
    type Config = storage::Config;
    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send {
        Self::build(config)
    }
    fn addr(&self) -> SocketAddr {
        self.grpc_addr()
    }
    fn ops_addr(&self) -> SocketAddr {
        self.ops_addr()
    }
    fn run(self, shutdown: Shutdown) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.run_until_stopped(shutdown)
    }
}

impl TestApp for gateway::App {
    type Config = gateway::Config;
    // The gateway's `/readyz` also needs auth, storage and the broker, which some tests keep
    // away on purpose; up means serving HTTP.
    const READY_PATH: &'static str = "/healthz";
    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send {
        Self::build(config)
    }
    fn addr(&self) -> SocketAddr {
        self.http_addr()
    }
    fn ops_addr(&self) -> SocketAddr {
        self.http_addr()
    }
    fn run(self, shutdown: Shutdown) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.run_until_stopped(shutdown)
    }
}

impl TestApp for converter::App {
    type Config = converter::Config;
    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send {
        Self::build(config)
    }
    fn addr(&self) -> SocketAddr {
        self.ops_addr()
    }
    fn ops_addr(&self) -> SocketAddr {
        self.ops_addr()
    }
    fn run(self, shutdown: Shutdown) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.run_until_stopped(shutdown)
    }
}

impl TestApp for notifier::App {
    type Config = notifier::Config;
    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send {
        Self::build(config)
    }
    fn addr(&self) -> SocketAddr {
        self.ops_addr()
    }
    fn ops_addr(&self) -> SocketAddr {
        self.ops_addr()
    }
    fn run(self, shutdown: Shutdown) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.run_until_stopped(shutdown)
    }
}

/// How long a service may take to be up once built (it has connected already; only a worker's
/// first broker session is left, on a loaded machine).
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// A service running on its own task. Dropping it fires the service's shutdown;
/// [`Running::stop`] also waits for it to drain.
#[derive(Debug)]
pub struct Running<A: TestApp> {
    config: A::Config,
    addr: SocketAddr,
    ops_addr: SocketAddr,
    spawned: crate::server::Spawned,
}

impl<A: TestApp> Running<A> {
    /// Builds the service from `config`, runs it until stopped, and returns once it is up.
    pub async fn start(config: A::Config) -> anyhow::Result<Self> {
        let app = A::build(config.clone()).await?;
        let (addr, ops_addr) = (app.addr(), app.ops_addr());
        let mut spawned = crate::server::Spawned::run(|shutdown| app.run(shutdown));
        let probe = format!("http://{ops_addr}{}", A::READY_PATH);
        spawned.wait_until_answers(&probe, READY_WITHIN).await?;
        Ok(Self {
            config,
            addr,
            ops_addr,
            spawned,
        })
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &A::Config {
        &self.config
    }

    /// Where it answers its callers (see [`TestApp::addr`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and [`Running::addr`], for HTTP clients and tonic channels.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://` and the ops endpoint's address.
    pub fn ops_url(&self) -> String {
        format!("http://{}", self.ops_addr)
    }

    /// A gRPC channel to it, connected now.
    pub async fn grpc_channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        Ok(tonic::transport::Endpoint::from_shared(self.url())?
            .connect()
            .await?)
    }

    /// Stops it (waiting for it to drain) and starts it again with the same configuration, on
    /// the same data (its address may change when the configuration says port 0).
    pub async fn restart(self) -> anyhow::Result<Self> {
        let config = self.config.clone();
        self.stop().await?;
        Self::start(config).await
    }

    /// Fires its shutdown and waits for it to return, with its result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.spawned.stop().await
    }
}

/// Joins a task's result into the service's.
pub(crate) async fn joined(task: JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    task.await?
}
