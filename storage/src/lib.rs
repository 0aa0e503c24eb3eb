//! The storage service: owns every stored byte and every job record (gRPC).
//!
//! The shape every service shares: [`Config`] from the environment, telemetry, then [`serve`]
//! on a listener until shutdown. `main.rs` only binds the configured address; tests call
//! [`serve`] with a listener on port 0.

#![forbid(unsafe_code)]

use clap::Parser;
use service_kit::Shutdown;
use service_kit::config::{TelemetryConfig, parse_listen_addr};
use service_kit::grpc::GrpcServer;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// The service's configuration, read from flags or the environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "storage",
    version,
    about = "The storage service: owns every stored byte and every job record (gRPC)."
)]
pub struct Config {
    /// Address (or bare port) the gRPC server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:50052", value_parser = parse_listen_addr)]
    pub listen_addr: SocketAddr,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// Runs the service until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    service_kit::telemetry::init(&config.telemetry);
    let listener = TcpListener::bind(config.listen_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "storage listening");
    serve(config, listener, Shutdown::on_signals()).await
}

/// Serves gRPC on `listener` until `shutdown` fires.
pub async fn serve(
    _config: Config,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> anyhow::Result<()> {
    GrpcServer::new(&[])
        .serve(listener, shutdown.into())
        .await?;
    Ok(())
}
