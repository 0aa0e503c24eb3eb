//! The REST edge: the only part of mp3converter that faces users. It authenticates every
//! request through the auth service, streams bytes to and from the storage service, and queues
//! accepted uploads for the converters.
//!
//! - [`config`]: settings from the environment. [`error`]: the one error type and its JSON.
//! - [`caller`]: bearer-token authentication. [`routes`]: the handlers and middleware, and
//!   the web page.
//! - [`sniff`]: recognising media from its first bytes. [`http_util`]: ranges, ETags and
//!   safe download names. [`multipart_guard`]: a bound on multipart part headers.
//! - Accepted uploads are queued through `messaging::Publisher` (RabbitMQ or the embedded queue).

#![forbid(unsafe_code)]

pub mod caller;
pub mod config;
pub mod error;
pub mod http_util;
pub mod multipart_guard;
pub mod routes;
pub mod sniff;

pub use config::Config;

use anyhow::Context;
use clap::Parser;
use clients::{AuthClient, StorageClient};
use messaging::Publisher;
use routes::{AppState, Channels};
use service_kit::Shutdown;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// The command line: the gateway's settings.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about = "The REST edge of mp3converter.")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
}

/// Runs the command line.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    cli.config.validate()?;
    service_kit::telemetry::init(&cli.config.telemetry);
    // Boxed: the server's future nests deeply enough to overflow rustc's layout query depth.
    Box::pin(run(cli.config)).await
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding LISTEN_ADDR {}", config.listen_addr))?;
    serve(config, listener, Shutdown::on_signals()).await
}

/// Serves HTTP on `listener` until `shutdown` fires, then drains open requests.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> anyhow::Result<()> {
    config.validate()?;
    let shutdown = shutdown.into();
    let state = build(&config)?;
    let app = routes::router(state, &config);
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    axum::serve(
        service_kit::net::nodelay_listener(listener),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.wait().await })
    .await?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// The shared state: lazy gRPC channels (the gateway starts whether or not its dependencies
/// are up yet, and `/readyz` says when they are) and the broker link.
pub fn build(config: &Config) -> anyhow::Result<AppState> {
    let auth = channel(&config.auth_url).context("AUTH_URL")?;
    let storage = channel(&config.storage_url).context("STORAGE_URL")?;
    Ok(AppState {
        auth: AuthClient::new(auth.clone()),
        storage: StorageClient::new(storage.clone()),
        channels: Channels { auth, storage },
        publisher: Publisher::new(&config.broker, "gateway"),
        max_upload_bytes: config.max_upload_bytes,
    })
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(service_kit::grpc::client_channel(url)?)
}
