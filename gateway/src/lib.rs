//! The REST edge: the only part of mp3converter that faces users. It authenticates every
//! request through the auth service and streams bytes to and from the storage service.
//!
//! The shape every service shares: [`Config`] from the environment, telemetry, then [`serve`]
//! on a listener until shutdown. `main.rs` only binds the configured address; tests call
//! [`serve`] with a listener on port 0.

#![forbid(unsafe_code)]

use axum::Router;
use axum::routing::get;
use clap::Parser;
use service_kit::Shutdown;
use service_kit::config::{TelemetryConfig, parse_listen_addr};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// The gateway's configuration, read from flags or the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version, about = "The REST edge of mp3converter.")]
pub struct Config {
    /// Address (or bare port) the HTTP server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080", value_parser = parse_listen_addr)]
    pub listen_addr: SocketAddr,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// Runs the gateway until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    service_kit::telemetry::init(&config.telemetry);
    let listener = TcpListener::bind(config.listen_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    serve(config, listener, Shutdown::on_signals()).await
}

/// The gateway's routes.
pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(service_kit::ops::metrics))
}

/// Serves HTTP on `listener` until `shutdown` fires, then drains open requests.
pub async fn serve(
    _config: Config,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> anyhow::Result<()> {
    let shutdown = shutdown.into();
    axum::serve(listener, router())
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await?;
    Ok(())
}
