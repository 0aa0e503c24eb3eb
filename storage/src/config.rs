//! The storage service's configuration, from the environment (or same-named flags). The backend
//! follows `MONGODB_URI`: set, files go to GridFS and jobs to a collection; unset, both live in
//! a directory under `DATA_DIR` (the embedded default).

use clap::Parser;
use service_kit::Secret;
use service_kit::config::{ConfigError, ServiceConfig, TelemetryConfig, parse_listen_addr};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The default largest file accepted: 2 GiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The storage service's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "storage",
    version,
    about = "The storage service of mp3converter: files and job records over gRPC."
)]
pub struct Config {
    /// Address (or bare port) the gRPC server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:50052", value_parser = parse_listen_addr)]
    pub listen_addr: SocketAddr,

    /// Address (or bare port) of the health (`/healthz`, `/readyz`) and `/metrics` endpoint.
    #[arg(long, env = "OPS_LISTEN_ADDR", default_value = "0.0.0.0:9093", value_parser = parse_listen_addr)]
    pub ops_listen_addr: SocketAddr,

    /// MongoDB connection string (files in GridFS, jobs in a collection). Unset: the embedded
    /// local-directory backend under DATA_DIR.
    #[arg(long, env = "MONGODB_URI")]
    pub mongodb_uri: Option<Secret>,

    /// Database used on the MongoDB server.
    #[arg(long, env = "MONGODB_DATABASE", default_value = "mp3converter")]
    pub mongodb_database: String,

    /// Where the embedded backend keeps files and job records (in `DATA_DIR/storage`).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Largest file accepted, in bytes; enforced while the bytes stream in.
    #[arg(long, env = "MAX_FILE_BYTES", default_value_t = DEFAULT_MAX_FILE_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_file_bytes: u64,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(uri) = &self.mongodb_uri
            && !(uri.expose().starts_with("mongodb://")
                || uri.expose().starts_with("mongodb+srv://"))
        {
            return Err(ConfigError::invalid(
                "MONGODB_URI",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Where the embedded backend's files live.
    pub fn local_root(&self) -> PathBuf {
        self.data_dir.join("storage")
    }
}
