//! The storage service: the one owner of every stored byte and every job record. The gateway
//! streams uploads in and downloads out through it; the converter claims jobs and stores MP3s
//! through it; nothing else talks to the database.
//!
//! - [`config`]: settings from the environment.
//! - [`model`]: files and jobs, and the rules of a job's life (pure).
//! - [`backend`]: MongoDB GridFS, or a local directory (the embedded default).
//! - [`service`]: the gRPC service, where ownership, limits and checksums are enforced.

#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod error;
pub mod model;
pub mod service;

pub use config::Config;
pub use error::StorageError;
pub use service::StorageApi;

use anyhow::Context;
use backend::Backend;
use clap::Parser;
use proto::storage::v1::storage_service_server::StorageServiceServer;
use service_kit::Shutdown;
use tokio::net::TcpListener;

/// The full name of the gRPC service, as reflection lists it.
pub const SERVICE_NAME: &str = "mp3converter.storage.v1.StorageService";

/// Largest gRPC message accepted or sent. Chunks are a few hundred KiB; the margin is for
/// clients that send bigger ones.
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// The command line: the service's settings.
#[derive(Debug, Parser)]
#[command(
    name = "storage",
    version,
    about = "The storage service of mp3converter: files and job records over gRPC."
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
}

/// Runs the command line.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
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

/// Connects the backend and serves gRPC on `listener` until `shutdown` fires, with the ops
/// endpoint on OPS_LISTEN_ADDR.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> anyhow::Result<()> {
    let ops = service_kit::ops::bind(config.ops_listen_addr).await?;
    serve_with_ops(config, listener, ops, shutdown).await
}

/// [`serve`] with the ops endpoint (`/healthz`, `/readyz`, `/metrics`) on a given listener.
pub async fn serve_with_ops(
    config: Config,
    listener: TcpListener,
    ops_listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> anyhow::Result<()> {
    service_kit::grpc::serve_with_ops(
        "storage",
        SERVICE_NAME,
        listener,
        ops_listener,
        shutdown.into(),
        async {
            Ok(StorageServiceServer::new(build(&config).await?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES))
        },
    )
    .await
}

/// The service over the configured backend, ready to answer requests.
pub async fn build(config: &Config) -> anyhow::Result<StorageApi> {
    let backend = match &config.mongodb_uri {
        Some(uri) => {
            let mongo =
                backend::mongo::MongoBackend::connect(uri.expose(), &config.mongodb_database)
                    .await
                    .context("connecting to MongoDB (MONGODB_URI)")?;
            tracing::info!(database = %config.mongodb_database, "storing in MongoDB GridFS");
            Backend::Mongo(mongo)
        }
        None => {
            let root = config.local_root();
            let local = backend::local::LocalBackend::open(&root)
                .await
                .with_context(|| {
                    format!(
                        "opening the storage directory in DATA_DIR ({})",
                        root.display()
                    )
                })?;
            tracing::info!(root = %root.display(), "storing in a local directory (no MONGODB_URI)");
            Backend::Local(local)
        }
    };
    Ok(StorageApi::new(backend, config.max_file_bytes))
}
