//! The storage service's configuration, from the environment (or same-named flags). The backend
//! follows `MONGODB_URI`: set, files go to GridFS and jobs to a collection; unset, both live in
//! a directory under `DATA_DIR` (the embedded default).

use clap::Parser;
use service_kit::Secret;
use service_kit::config::{ApiAddrs, ConfigError, ServiceConfig, TelemetryConfig};
use std::path::PathBuf;
use std::time::Duration;

/// The default largest file accepted: 2 GiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The storage service of mp3converter: files and job records over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "storage", version)]
pub struct Config {
    /// Where gRPC (50052) and the ops endpoint (9093) listen.
    #[command(flatten)]
    pub addrs: ApiAddrs<50052, 9093>,

    /// Where the embedded backend keeps files and job records (in `DATA_DIR/storage`).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// MongoDB connection string (files in GridFS, jobs in a collection). Unset: the embedded
    /// local-directory backend under DATA_DIR.
    #[arg(long, env = "MONGODB_URI")]
    pub mongodb_uri: Option<Secret>,

    /// Database used on the MongoDB server.
    #[arg(long, env = "MONGODB_DATABASE", default_value = "mp3converter")]
    pub mongodb_database: String,

    /// Whether a durable point of a resumable upload on GridFS stores its last chunks and the
    /// session's record with one `bulkWrite` command (`auto`: when the server says it is
    /// MongoDB 8.0 or later, which has that command, until one is found without it) or with
    /// two (`off`: for a server that says 8.0 but has no `bulkWrite`).
    #[arg(long, env = "MONGODB_BULK_WRITE", value_enum, default_value_t = BulkWrite::Auto)]
    pub mongodb_bulk_write: BulkWrite,

    /// Largest file accepted, in bytes; enforced while the bytes stream in.
    #[arg(long, env = "MAX_FILE_BYTES", default_value_t = DEFAULT_MAX_FILE_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_file_bytes: u64,

    /// How long an unfinished resumable upload is kept after its last append (`24h`); the
    /// service itself removes it after that.
    #[arg(long, env = "UPLOAD_EXPIRY", default_value = "24h", value_parser = parse_upload_expiry)]
    pub upload_expiry: Duration,

    /// Mutual TLS for its gRPC server (GRPC_TLS_*): callers must present a certificate the
    /// authority signed.
    #[command(flatten)]
    pub grpc_tls: service_kit::grpc_tls::GrpcTlsConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.grpc_tls.validate()?;
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

/// Whether the GridFS backend uses MongoDB 8's `bulkWrite` command ([`Config::mongodb_bulk_write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BulkWrite {
    /// When the server says it has it (MongoDB 8.0 or later).
    Auto,
    /// Never.
    Off,
}

/// A duration of at least a second.
fn parse_upload_expiry(text: &str) -> Result<Duration, String> {
    let expiry = service_kit::config::parse_duration(text)?;
    if expiry < Duration::from_secs(1) {
        return Err(format!("`{text}` is shorter than a second"));
    }
    Ok(expiry)
}

impl Config {
    /// How often expired uploads are looked for: a quarter of their expiry, at most every
    /// five minutes, so one is removed at most a quarter late.
    pub fn upload_sweep_interval(&self) -> Duration {
        (self.upload_expiry / 4).min(Duration::from_secs(300))
    }

    /// Where the embedded backend's files live.
    pub fn local_root(&self) -> PathBuf {
        self.data_dir.join("storage")
    }
}
