//! Mutual TLS on the gRPC hops inside the system (gateway → auth and storage, workers →
//! storage). Every service holds one certificate of its own and trusts one authority: a server
//! accepts only clients that present a certificate the authority signed, and a client accepts
//! only a server whose certificate the authority signed for the host name in its URL. So a pod
//! that can reach storage's port but holds no certificate cannot call it, and a client sent to
//! the wrong server (or to an impostor) stops at the handshake.
//!
//! Unset, the hops stay plain HTTP/2: the embedded default on one machine.

use crate::config::ConfigError;
use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The gRPC TLS settings every service flattens into its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct GrpcTlsConfig {
    /// This service's certificate for gRPC (PEM, chain leaf first): what its server presents,
    /// and what its clients present to the servers they call. With GRPC_TLS_KEY_FILE and
    /// GRPC_TLS_CA_FILE; unset: plain HTTP/2.
    #[arg(long = "grpc-tls-cert-file", env = "GRPC_TLS_CERT_FILE")]
    pub cert_file: Option<PathBuf>,

    /// The PEM private key of GRPC_TLS_CERT_FILE.
    #[arg(long = "grpc-tls-key-file", env = "GRPC_TLS_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// The authority (PEM) that signs every service's certificate: the only one trusted, for
    /// clients and servers alike.
    #[arg(long = "grpc-tls-ca-file", env = "GRPC_TLS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl GrpcTlsConfig {
    /// All three files or none.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let set = [
            ("GRPC_TLS_CERT_FILE", self.cert_file.is_some()),
            ("GRPC_TLS_KEY_FILE", self.key_file.is_some()),
            ("GRPC_TLS_CA_FILE", self.ca_file.is_some()),
        ];
        if let Some((present, _)) = set.iter().find(|(_, is_set)| *is_set)
            && let Some((missing, _)) = set.iter().find(|(_, is_set)| !*is_set)
        {
            return Err(ConfigError::invalid(
                *missing,
                format!("is required when {present} is set (gRPC TLS needs all three files)"),
            ));
        }
        Ok(())
    }

    /// Whether the gRPC hops use TLS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Checks a gRPC URL setting: it parses, and its scheme matches the TLS settings
    /// (`https://` with them, `http://` without), naming `variable` if not.
    pub fn check_url(&self, variable: &'static str, url: &str) -> Result<(), ConfigError> {
        let scheme = if self.enabled() { "https" } else { "http" };
        let parses = tonic::transport::Endpoint::from_shared(url.to_owned()).is_ok();
        if !parses || !url.starts_with(&format!("{scheme}://")) {
            let why = if self.enabled() {
                " (GRPC_TLS_CERT_FILE is set)"
            } else {
                ""
            };
            return Err(ConfigError::invalid(
                variable,
                format!("`{url}` is not a valid {scheme}:// URL{why}"),
            ));
        }
        Ok(())
    }

    /// Reads the files (at start-up); `None` when gRPC TLS is off. An error names the
    /// variable and the path, never a file's content.
    pub async fn load(&self) -> anyhow::Result<Option<GrpcTls>> {
        let (Some(cert), Some(key), Some(ca)) = (&self.cert_file, &self.key_file, &self.ca_file)
        else {
            return Ok(None);
        };
        let cert = read("GRPC_TLS_CERT_FILE", cert).await?;
        let key = read("GRPC_TLS_KEY_FILE", key).await?;
        let ca = read("GRPC_TLS_CA_FILE", ca).await?;
        Ok(Some(GrpcTls {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
        }))
    }
}

async fn read(variable: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .with_context(|| format!("{variable} {}: cannot be read", path.display()))
}

/// A service's gRPC certificate, its key, and the authority it trusts, loaded.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    identity: Identity,
    ca: Certificate,
}

impl GrpcTls {
    /// For a server: present the certificate, require a client certificate the authority
    /// signed.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// For a client: trust only the authority (for the URL's host name), and present the
    /// certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}
