//! The gateway's configuration, from the environment (or same-named flags).

use clap::Parser;
use messaging::BrokerConfig;
use service_kit::config::{ConfigError, ServiceConfig, TelemetryConfig, parse_listen_addr};
use service_kit::grpc_tls::GrpcTlsConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The REST edge of mp3converter.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version)]
pub struct Config {
    /// Address (or bare port) the HTTP server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080", value_parser = parse_listen_addr)]
    pub listen_addr: SocketAddr,

    /// The auth service's gRPC address.
    #[arg(long, env = "AUTH_URL", default_value = "http://127.0.0.1:50051")]
    pub auth_url: String,

    /// The storage service's gRPC address.
    #[arg(long, env = "STORAGE_URL", default_value = "http://127.0.0.1:50052")]
    pub storage_url: String,

    /// Where accepted uploads are queued for conversion: RabbitMQ, or the embedded queue.
    #[command(flatten)]
    pub broker: BrokerConfig,

    /// Largest upload accepted, in bytes (the multipart body as a whole).
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = 2 * 1024 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_upload_bytes: u64,

    /// Time limit for requests that do not stream a file, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_seconds: u64,

    /// The gateway's public address (`https://convert.example.com`), for absolute URLs in
    /// answers (a tus upload's `Location`); unset: relative URLs.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// Build absolute URLs from `X-Forwarded-Proto` and `X-Forwarded-Host` (set only behind a
    /// proxy that sets them; PUBLIC_BASE_URL wins).
    #[arg(long, env = "TRUST_FORWARDED_HEADERS", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_headers: bool,

    /// Origins allowed to call the API from a browser (comma-separated); empty: no CORS.
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub cors_allowed_origins: Vec<String>,

    /// Mutual TLS to auth and storage (GRPC_TLS_*; their URLs are then https://).
    #[command(flatten)]
    pub grpc_tls: GrpcTlsConfig,

    /// Serve HTTPS with this PEM certificate chain (leaf first), with TLS_KEY_FILE; unset:
    /// plain HTTP. Read again when it changes (cert-manager renews it in place).
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// The PEM private key of TLS_CERT_FILE.
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Where webhook endpoints may point (WEBHOOK_ALLOWED_NETWORKS, WEBHOOK_HTTPS_ONLY).
    #[command(flatten)]
    pub webhook_destinations: webhooks::WebhookDestinations,

    /// How long a rotated-out webhook secret goes on signing beside the new one (`24h`).
    #[arg(long, env = "WEBHOOK_SECRET_OVERLAP", default_value = "24h", value_parser = service_kit::config::parse_duration)]
    pub webhook_secret_overlap: Duration,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

impl Config {
    /// Time limit for requests that do not stream a file.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    /// The certificate and key to serve HTTPS with, when both are set.
    pub fn tls(&self) -> Option<service_kit::tls::CertificateFiles> {
        Some(service_kit::tls::CertificateFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
            variables: ("TLS_CERT_FILE", "TLS_KEY_FILE"),
        })
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.grpc_tls.validate()?;
        self.grpc_tls.check_url("AUTH_URL", &self.auth_url)?;
        self.grpc_tls.check_url("STORAGE_URL", &self.storage_url)?;
        service_kit::config::set_together(
            ("TLS_CERT_FILE", self.tls_cert_file.is_some()),
            ("TLS_KEY_FILE", self.tls_key_file.is_some()),
        )?;
        self.broker.validate()?;
        if let Some(base) = &self.public_base_url {
            let parsed = webhooks::Url::parse(base).map_err(|error| {
                ConfigError::invalid("PUBLIC_BASE_URL", format!("is not a URL: {error}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.query().is_some()
                || parsed.fragment().is_some()
                || parsed.cannot_be_a_base()
            {
                return Err(ConfigError::invalid(
                    "PUBLIC_BASE_URL",
                    "must be an http:// or https:// address without a query or fragment",
                ));
            }
        }
        for origin in self.cors_allowed_origins.iter().filter(|o| !o.is_empty()) {
            if http::HeaderValue::from_str(origin).is_err() {
                return Err(ConfigError::invalid(
                    "CORS_ALLOWED_ORIGINS",
                    format!("holds an invalid origin `{origin}`"),
                ));
            }
        }
        Ok(())
    }
}
