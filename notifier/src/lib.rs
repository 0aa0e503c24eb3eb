//! The notifier worker: e-mails users when their conversion finished or failed.
//!
//! The shape every service shares: [`Config`] from the environment, telemetry, then [`serve`]
//! on a listener until shutdown. `main.rs` only binds the configured address; tests call
//! [`serve`] with a listener on port 0.

#![forbid(unsafe_code)]

use clap::Parser;
use service_kit::Shutdown;
use service_kit::config::{TelemetryConfig, parse_listen_addr};
use service_kit::ops::{self, Readiness};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// The worker's configuration, read from flags or the environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "notifier",
    version,
    about = "The notifier worker: e-mails users when their conversion finished or failed."
)]
pub struct Config {
    /// Address (or bare port) of the health and metrics endpoint.
    #[arg(long, env = "OPS_LISTEN_ADDR", default_value = "0.0.0.0:9091", value_parser = parse_listen_addr)]
    pub ops_listen_addr: SocketAddr,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// Runs the worker until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    service_kit::telemetry::init(&config.telemetry);
    let listener = TcpListener::bind(config.ops_listen_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "notifier health and metrics listening");
    serve(config, listener, Shutdown::on_signals()).await
}

/// Serves the health and metrics endpoint on `ops_listener` until `shutdown` fires.
pub async fn serve(
    _config: Config,
    ops_listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> anyhow::Result<()> {
    let readiness = Readiness::new();
    ops::serve(ops_listener, readiness, shutdown.into()).await?;
    Ok(())
}
