//! gRPC scaffolding shared by the auth and storage servers: every server answers
//! `grpc.health.v1.Health` and server reflection (v1 and v1alpha, so grpcurl 1.8 works), and
//! drains in-flight calls when [`Shutdown`] fires.

use crate::Shutdown;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;

/// A tonic router that already serves health and reflection for the named gRPC services.
#[derive(Debug)]
pub struct GrpcServer {
    router: Router,
    health: HealthReporter,
}

impl GrpcServer {
    /// Starts a router whose reflection describes exactly `services` (full names such as
    /// `mp3converter.auth.v1.AuthService`) plus health and reflection themselves.
    pub fn new(services: &[&str]) -> Self {
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
        let router = Server::builder()
            .add_service(health_service)
            .add_service(v1)
            .add_service(v1alpha);
        Self { router, health }
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
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain)
            .await
    }
}
