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
    /// `https` for a service that serves TLS on [`TestApp::addr`], else `http`.
    fn scheme(&self) -> &'static str {
        "http"
    }
}

/// `TestApp` for a service's `App`: `$addr` is the method that says where it answers callers.
macro_rules! test_app {
    ($app:ty, $config:ty, $addr:ident, $ops:ident $(, $ready:literal)? $(; $scheme:expr)?) => {
        impl TestApp for $app {
            type Config = $config;
            $(const READY_PATH: &'static str = $ready;)?
            $(fn scheme(&self) -> &'static str {
                $scheme(self)
            })?
            fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send {
                Self::build(config)
            }
            fn addr(&self) -> SocketAddr {
                self.$addr()
            }
            fn ops_addr(&self) -> SocketAddr {
                self.$ops()
            }
            fn run(self, shutdown: Shutdown) -> impl Future<Output = anyhow::Result<()>> + Send {
                self.run_until_stopped(shutdown)
            }
        }
    };
}

test_app!(auth::App, auth::Config, grpc_addr, ops_addr);
test_app!(storage::App, storage::Config, grpc_addr, ops_addr);
// The gateway's `/readyz` also needs auth, storage and the broker, which some tests keep away
// on purpose; up means serving HTTP.
test_app!(
    gateway::App,
    gateway::Config,
    http_addr,
    http_addr,
    "/healthz";
    |app: &gateway::App| if app.serves_tls() { "https" } else { "http" }
);
test_app!(converter::App, converter::Config, ops_addr, ops_addr);
test_app!(notifier::App, notifier::Config, ops_addr, ops_addr);

/// How long a service may take to be up once built (it has connected already; only a worker's
/// first broker session is left, on a loaded machine).
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// A service running on its own task. Dropping it fires the service's shutdown;
/// [`Running::stop`] also waits for it to drain.
#[derive(Debug)]
pub struct Running<A: TestApp> {
    config: A::Config,
    scheme: &'static str,
    addr: SocketAddr,
    ops_addr: SocketAddr,
    spawned: crate::server::Spawned,
    /// What the service's data lives in (a test database, a directory): kept for as long as
    /// the service, across restarts.
    guards: Vec<Box<dyn std::any::Any + Send>>,
}

impl<A: TestApp> Running<A> {
    /// Builds the service from `config`, runs it until stopped, and returns once it is up.
    pub async fn start(config: A::Config) -> anyhow::Result<Self> {
        let app = A::build(config.clone()).await?;
        let (scheme, addr, ops_addr) = (app.scheme(), app.addr(), app.ops_addr());
        let mut spawned = crate::server::Spawned::run(|shutdown| app.run(shutdown));
        // The gateway's ops routes are on its own port, so over HTTPS when it serves TLS.
        let ops_scheme = if ops_addr == addr { scheme } else { "http" };
        let probe = format!("{ops_scheme}://{ops_addr}{}", A::READY_PATH);
        spawned.wait_until_answers(&probe, READY_WITHIN).await?;
        Ok(Self {
            config,
            scheme,
            addr,
            ops_addr,
            spawned,
            guards: Vec::new(),
        })
    }

    /// Keeps `guard` (a test database, a directory) alive as long as the service.
    pub fn keeping(mut self, guard: impl std::any::Any + Send) -> Self {
        self.guards.push(Box::new(guard));
        self
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &A::Config {
        &self.config
    }

    /// Where it answers its callers (see [`TestApp::addr`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` (`https://` for a service serving TLS) and [`Running::addr`], for HTTP
    /// clients and tonic channels.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `http://` (or the gateway's `https://`) and the ops endpoint's address.
    pub fn ops_url(&self) -> String {
        let scheme = if self.ops_addr == self.addr {
            self.scheme
        } else {
            "http"
        };
        format!("{scheme}://{}", self.ops_addr)
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
        let Self {
            config,
            spawned,
            guards,
            ..
        } = self;
        spawned.stop().await?;
        let mut restarted = Self::start(config).await?;
        restarted.guards = guards;
        Ok(restarted)
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
