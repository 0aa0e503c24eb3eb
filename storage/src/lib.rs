//! The storage service: the one owner of every stored byte and every job record. The gateway
//! streams uploads in and downloads out through it; the converter claims jobs and stores MP3s
//! through it; nothing else talks to the database.
//!
//! - [`config`]: settings from the environment.
//! - [`model`]: files and jobs, and the rules of a job's life (pure).
//! - [`backend`]: MongoDB GridFS, or a local directory (the embedded default); [`batch`]: the
//!   chunks of one write to it.
//! - [`service`]: the gRPC service, where ownership, limits and checksums are enforced.
//! - [`remembered`]: what a replica keeps of an upload session between appends (a cache).

#![forbid(unsafe_code)]

pub mod backend;
pub mod batch;
pub mod config;
pub mod error;
pub mod meters;
pub mod model;
pub mod remembered;
pub mod service;

pub use config::Config;
pub use error::StorageError;
pub use service::StorageApi;

use anyhow::Context;
use backend::Backend;
use proto::storage::v1::storage_service_server::StorageServiceServer;
use service_kit::Shutdown;
use service_kit::grpc::{GrpcListeners, GrpcServer};

/// The full name of the gRPC service, as reflection lists it.
pub const SERVICE_NAME: &str = "mp3converter.storage.v1.StorageService";

/// Largest gRPC message accepted or sent. Chunks are a few hundred KiB; the margin is for
/// clients that send bigger ones.
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Runs the service until SIGTERM or Ctrl-C (its configuration already checked by
/// `Config::load`).
pub async fn main(config: Config) -> anyhow::Result<()> {
    service_kit::telemetry::init(&config.telemetry)?;
    // Boxed: the server's future nests deeply enough to overflow rustc's layout query depth.
    let app = Box::pin(App::build(config)).await?;
    Box::pin(app.run_until_stopped(Shutdown::on_signals())).await
}

service_kit::grpc_app! {
    /// The storage service, built: its listeners bound (the ops endpoint already answering) and
    /// its backend connected. [`App::run_until_stopped`] serves it.
    App
}

impl App {
    /// Binds LISTEN_ADDR and OPS_LISTEN_ADDR and connects the backend; `config` is checked
    /// already.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        meters::describe();
        let listeners = GrpcListeners::bind("storage", config.addrs.api, config.addrs.ops).await?;
        let api = build(&config).await?;
        let sweeper = api.clone();
        let sweep_interval = config.upload_sweep_interval();
        let service = StorageServiceServer::new(api)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let grpc_tls = config.grpc_tls.load().await?;
        let server = GrpcServer::new(&[SERVICE_NAME], grpc_tls.as_ref())?
            .add_service(service)
            .await;
        Ok(Self(listeners.serving("storage", server).with_background(
            move |shutdown| sweeper.sweep_sessions_until(sweep_interval, shutdown),
        )))
    }
}

/// The service over the configured backend, ready to answer requests.
async fn build(config: &Config) -> anyhow::Result<StorageApi> {
    let backend = match &config.mongodb_uri {
        Some(uri) => {
            let mongo = backend::mongo::MongoBackend::connect(
                uri.expose(),
                &config.mongodb_database,
                config.mongodb_bulk_write,
            )
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
    Ok(StorageApi::new(
        backend,
        config.max_file_bytes,
        config.upload_expiry,
    ))
}
