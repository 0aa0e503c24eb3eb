//! The auth service's configuration. Everything comes from the environment (or same-named
//! flags); [`ServiceConfig::validate`] refuses combinations that would be unsafe, naming the
//! variable.

use clap::Parser;
use service_kit::Secret;
use service_kit::config::{ApiAddrs, ConfigError, ServiceConfig, TelemetryConfig};
use std::path::PathBuf;
use std::time::Duration;

/// OWASP's minimum for argon2id: 19 MiB of memory, 2 iterations, 1 lane.
pub const ARGON2_MIN_MEMORY_KIB: u32 = 19 * 1024;
/// See [`ARGON2_MIN_MEMORY_KIB`].
pub const ARGON2_MIN_ITERATIONS: u32 = 2;
/// The shortest signing key accepted for HS256.
pub const JWT_SECRET_MIN_BYTES: usize = 32;

/// The auth service of mp3converter: accounts, passwords and tokens over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "auth", version)]
pub struct Config {
    /// Where gRPC (50051) and the ops endpoint (9092) listen.
    #[command(flatten)]
    pub addrs: ApiAddrs<50051, 9092>,

    /// Accounts database: `mysql://user:pass@host/db`, or unset for the embedded SQLite file
    /// in DATA_DIR.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<Secret>,

    /// Most connections kept open to the accounts database.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Where the embedded defaults keep their files (SQLite database, generated JWT secret).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// HS256 signing key, at least 32 bytes. Required when DATABASE_URL is set; the embedded
    /// default generates one and keeps it in DATA_DIR.
    #[arg(long, env = "JWT_SECRET")]
    pub jwt_secret: Option<Secret>,

    /// `iss` claim of issued tokens, and the only issuer accepted.
    #[arg(long, env = "JWT_ISSUER", default_value = "mp3converter-auth")]
    pub jwt_issuer: String,

    /// `aud` claim of issued tokens, and the only audience accepted.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "mp3converter")]
    pub jwt_audience: String,

    /// Lifetime of an access token, in seconds (default 24 h).
    #[arg(long, env = "TOKEN_TTL_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub token_ttl_seconds: u64,

    /// argon2id memory cost in KiB (at least 19456, OWASP's minimum).
    #[arg(long, env = "ARGON2_MEMORY_KIB", default_value_t = ARGON2_MIN_MEMORY_KIB)]
    pub argon2_memory_kib: u32,

    /// argon2id iterations (at least 2).
    #[arg(long, env = "ARGON2_ITERATIONS", default_value_t = ARGON2_MIN_ITERATIONS)]
    pub argon2_iterations: u32,

    /// Failed logins for one e-mail within the window before further attempts are refused.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures: u32,

    /// Failed logins from one client address within the window before it is refused.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_ADDRESS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures_per_address: u32,

    /// The login throttle's window, in seconds.
    #[arg(long, env = "LOGIN_FAILURE_WINDOW_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    pub login_failure_window_seconds: u64,

    /// E-mail of an admin account to create (or promote) at start-up; needs ADMIN_PASSWORD.
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password for ADMIN_EMAIL when the account is created.
    // The pair is checked in `validate`, not by clap's `requires`: clap does not count a value
    // read from ADMIN_PASSWORD_FILE (a default, to clap) as given.
    #[arg(long, env = "ADMIN_PASSWORD")]
    pub admin_password: Option<Secret>,

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
        match &self.jwt_secret {
            Some(secret) if secret.expose().len() < JWT_SECRET_MIN_BYTES => {
                return Err(ConfigError::invalid(
                    "JWT_SECRET",
                    format!("must be at least {JWT_SECRET_MIN_BYTES} bytes"),
                ));
            }
            None if self.database_url.is_some() => {
                return Err(ConfigError::invalid(
                    "JWT_SECRET",
                    "is required when DATABASE_URL is set (only the embedded default generates one)",
                ));
            }
            _ => {}
        }
        if let Some(url) = &self.database_url {
            let url = url.expose();
            if !(url.starts_with("mysql://") || url.starts_with("sqlite:")) {
                return Err(ConfigError::invalid(
                    "DATABASE_URL",
                    "must start with mysql:// or sqlite:",
                ));
            }
        }
        service_kit::config::set_together(
            ("ADMIN_EMAIL", self.admin_email.is_some()),
            ("ADMIN_PASSWORD", self.admin_password.is_some()),
        )?;
        if self.argon2_memory_kib < ARGON2_MIN_MEMORY_KIB {
            return Err(ConfigError::invalid(
                "ARGON2_MEMORY_KIB",
                format!("must be at least {ARGON2_MIN_MEMORY_KIB} (OWASP minimum)"),
            ));
        }
        if self.argon2_iterations < ARGON2_MIN_ITERATIONS {
            return Err(ConfigError::invalid(
                "ARGON2_ITERATIONS",
                format!("must be at least {ARGON2_MIN_ITERATIONS} (OWASP minimum)"),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The database to use: DATABASE_URL, or the SQLite file in DATA_DIR.
    pub fn database_url(&self) -> Secret {
        match &self.database_url {
            Some(url) => url.clone(),
            None => Secret::new(format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("auth.sqlite").display()
            )),
        }
    }

    /// The token lifetime.
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_seconds)
    }

    /// The login throttle's window.
    pub fn login_failure_window(&self) -> Duration {
        Duration::from_secs(self.login_failure_window_seconds)
    }
}
