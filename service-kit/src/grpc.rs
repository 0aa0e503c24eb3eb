//! gRPC scaffolding shared by the auth and storage servers: every server answers
//! `grpc.health.v1.Health` and server reflection (v1 and v1alpha, so grpcurl 1.8 works), and
//! drains in-flight calls when [`Shutdown`] fires.

use crate::Shutdown;
use crate::grpc_tls::GrpcTls;
use crate::ops::OpsEndpoint;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::server::HealthReporter;

/// Bytes one stream may have in flight towards a client before it must wait.
const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// Bytes all streams of one connection may have in flight towards a client.
const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// The largest HTTP/2 frame a peer may send us (the protocol's default is 16 KiB). A file moves
/// in chunks of up to a MiB; at 16 KiB a frame, each chunk was 64 frames to write, parse and
/// wake a task for, and the frames cost more CPU than the bytes did.
const MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// A tonic router that already serves health and reflection for the named gRPC services.
#[derive(Debug)]
pub struct GrpcServer {
    router: Router,
    health: HealthReporter,
}

impl GrpcServer {
    /// Starts a router whose reflection describes exactly `services` (full names such as
    /// `mp3converter.auth.v1.AuthService`) plus health and reflection themselves; with `tls`,
    /// it serves mutual TLS only.
    pub fn new(services: &[&str], tls: Option<&GrpcTls>) -> Result<Self, tonic::transport::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health");
            for service in services {
                builder = builder.with_service_name(*service);
            }
            builder
        };
        let v1 = reflection()
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .build_v1()
            .expect("embedded descriptor sets are valid");
        let v1alpha = reflection()
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
            .build_v1alpha()
            .expect("embedded descriptor sets are valid");
        let mut server = Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls.server())?;
        }
        let router = server
            .max_frame_size(MAX_FRAME_BYTES)
            // Every call's log lines carry its method and the request id it came with (the
            // gateway's, for calls made on behalf of an HTTP request).
            .trace_fn(|request| {
                tracing::info_span!(
                    "grpc",
                    method = %request.uri().path(),
                    request_id = crate::request_id::of(request).unwrap_or_default(),
                )
            })
            .add_service(health_service)
            .add_service(v1)
            .add_service(v1alpha);
        Ok(Self { router, health })
    }

    /// The health reporter, to mark services serving or not.
    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// Adds a service and reports it (and the server as a whole) as serving.
    pub async fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.health.set_serving::<S>().await;
        self.router = self.router.add_service(service);
        self
    }

    /// Serves on `listener` until `shutdown` fires, then stops accepting, reports NOT_SERVING
    /// and lets in-flight calls finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> Result<(), tonic::transport::Error> {
        let health = self.health.clone();
        let drain = async move {
            shutdown.wait().await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        };
        self.router
            .serve_with_incoming_shutdown(crate::net::nodelay_incoming(listener), drain)
            .await
    }
}

/// A gRPC service's listeners, bound: the first step of building one. The ops endpoint answers
/// from here on (`/readyz`: not ready), while the service connects and migrates.
#[derive(Debug)]
pub struct GrpcListeners {
    listener: TcpListener,
    ops: OpsEndpoint,
}

impl GrpcListeners {
    /// Binds `listen_addr` (LISTEN_ADDR) and `ops_listen_addr` (OPS_LISTEN_ADDR) for `label`.
    pub async fn bind(
        label: &str,
        listen_addr: SocketAddr,
        ops_listen_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        let listener = crate::net::bind("LISTEN_ADDR", listen_addr).await?;
        let ops = OpsEndpoint::bind(ops_listen_addr).await?;
        tracing::info!(grpc = %listener.local_addr()?, ops = %ops.addr(), "{label} listening");
        Ok(Self { listener, ops })
    }

    /// The built service: `server` (with its service added) will serve on these listeners.
    pub fn serving(self, label: &'static str, server: GrpcServer) -> GrpcApp {
        GrpcApp {
            label,
            listeners: self,
            server,
            background: Vec::new(),
        }
    }
}

/// Work a service does beside answering calls, until it is told to stop.
type BackgroundTask = Box<dyn FnOnce(Shutdown) -> BoxFuture<'static, ()> + Send>;

/// A gRPC service of ours, built: its listeners bound and its server ready.
pub struct GrpcApp {
    label: &'static str,
    listeners: GrpcListeners,
    server: GrpcServer,
    background: Vec<BackgroundTask>,
}

impl std::fmt::Debug for GrpcApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcApp")
            .field("label", &self.label)
            .field("listeners", &self.listeners)
            .field("server", &self.server)
            .field("background_tasks", &self.background.len())
            .finish()
    }
}

impl GrpcApp {
    /// Runs `task` beside the server while it serves: it gets the shutdown signal, and the
    /// service stops only once it has returned.
    pub fn with_background<F>(mut self, task: impl FnOnce(Shutdown) -> F + Send + 'static) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.background
            .push(Box::new(move |shutdown| Box::pin(task(shutdown))));
        self
    }

    /// Where gRPC is served.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners
            .listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.listeners.ops.addr()
    }

    /// Serves until `shutdown` fires: `/readyz` says ready, gRPC serves, then `/readyz` says
    /// not ready (as the gRPC health service does) while calls in flight drain, and the ops
    /// endpoint stops. A probe that reads `/readyz` (a kubelet's, with gRPC behind mutual TLS)
    /// sees a draining server as not ready.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let GrpcListeners { listener, ops } = self.listeners;
        let readiness = ops.readiness().clone();
        readiness.set(true);
        let draining = shutdown.clone();
        tokio::spawn(async move {
            draining.wait().await;
            readiness.set(false);
        });
        let background: Vec<_> = self
            .background
            .into_iter()
            .map(|task| tokio::spawn(task(shutdown.clone())))
            .collect();
        tracing::info!(addr = %listener.local_addr()?, "{} serving gRPC", self.label);
        let served = self.server.serve(listener, shutdown).await;
        for task in background {
            if let Err(error) = task.await {
                tracing::error!(%error, "a background task of {} failed", self.label);
            }
        }
        ops.stop().await?;
        served?;
        tracing::info!("{} stopped", self.label);
        Ok(())
    }
}

/// Declares a gRPC service's `App`: a [`GrpcApp`] with the addresses and the
/// `run_until_stopped` every service's `App` has; the service writes its own `App::build`
/// (bind with [`GrpcListeners::bind`], prepare, then [`GrpcListeners::serving`]).
#[macro_export]
macro_rules! grpc_app {
    ($(#[$doc:meta])* $app:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $app($crate::grpc::GrpcApp);

        impl $app {
            /// Where gRPC is served.
            pub fn grpc_addr(&self) -> std::net::SocketAddr {
                self.0.grpc_addr()
            }

            /// Where `/healthz`, `/readyz` and `/metrics` are served.
            pub fn ops_addr(&self) -> std::net::SocketAddr {
                self.0.ops_addr()
            }

            /// Serves gRPC until `shutdown` fires, then drains the calls in flight.
            pub async fn run_until_stopped(
                self,
                shutdown: $crate::Shutdown,
            ) -> anyhow::Result<()> {
                self.0.run_until_stopped(shutdown).await
            }
        }
    };
}

/// Deadline of calls that do not stream.
pub const UNARY_DEADLINE: Duration = Duration::from_secs(10);

/// A gRPC request with the deadline every non-streaming call gets, carrying the current request
/// id (see [`crate::request_id`]).
pub fn unary<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(UNARY_DEADLINE);
    crate::request_id::attach(&mut request);
    request
}

/// A client channel to one of our gRPC services (over mutual TLS with `tls`). It connects on
/// first use and again after the server went away, so a client can start before its server.
pub fn client_channel(
    url: &str,
    tls: Option<&GrpcTls>,
) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.client())?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        // Windows wide enough that a stream of file chunks is not throttled by round trips.
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .max_frame_size(MAX_FRAME_BYTES)
        .connect_lazy())
}
