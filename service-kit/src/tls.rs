//! HTTPS for a server that axum serves: a listener that completes each TLS handshake off the
//! accept loop, with a certificate that is read again when its files change.
//!
//! cert-manager (and a Kubernetes Secret volume generally) renews a certificate by replacing
//! the files in place. The listener notices at the next connection (it looks at most once a
//! second) and hands new handshakes the new pair, while connections already open keep the
//! session they negotiated: a long download is never cut by a renewal. A pair that does not
//! load (the key written before its certificate, say) is logged and the last good one kept.

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take over its handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, at most, the files are looked at for a change.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where a server's certificate chain and private key are, as PEM files, and the variables
/// that named them (for errors).
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The variables naming them, e.g. `("TLS_CERT_FILE", "TLS_KEY_FILE")`.
    pub variables: (&'static str, &'static str),
}

/// What identifies a version of the two files: a change to either is a new pair.
type Stamp = [(SystemTime, u64, u64); 2];

/// The TLS configuration for the next handshake, read again from [`CertificateFiles`] when
/// they change.
#[derive(Debug)]
pub struct ReloadingServerConfig {
    files: CertificateFiles,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    config: Arc<ServerConfig>,
    stamp: Stamp,
    checked: Instant,
}

impl ReloadingServerConfig {
    /// Reads the pair now; an error names the variable and the path at fault.
    pub async fn load(files: CertificateFiles) -> anyhow::Result<Self> {
        let stamp = stamp(&files).await?;
        let config = server_config(&files).await?;
        Ok(Self {
            files,
            current: Mutex::new(Current {
                config,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration to hand the next handshake: the files' newest pair that loads.
    pub async fn for_next_handshake(&self) -> Arc<ServerConfig> {
        let last_stamp = {
            let mut current = self.current.lock().expect("never poisoned");
            if current.checked.elapsed() < RELOAD_CHECK_INTERVAL {
                return current.config.clone();
            }
            current.checked = Instant::now();
            current.stamp
        };
        match stamp(&self.files).await {
            Ok(stamp) if stamp != last_stamp => match server_config(&self.files).await {
                Ok(config) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    let mut current = self.current.lock().expect("never poisoned");
                    current.config = config;
                    current.stamp = stamp;
                }
                // Retried at the next check: the second file of a pair may still be on its way.
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "TLS certificate not reloaded; serving the previous one"
                ),
            },
            Ok(_) => {}
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "TLS certificate files unreadable; serving the previous pair"
            ),
        }
        self.current.lock().expect("never poisoned").config.clone()
    }
}

async fn stamp(files: &CertificateFiles) -> anyhow::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let mut stamp = [(SystemTime::UNIX_EPOCH, 0, 0); 2];
    for (slot, (path, variable)) in stamp.iter_mut().zip([
        (&files.cert, files.variables.0),
        (&files.key, files.variables.1),
    ]) {
        // Follows symbolic links: a Secret volume swaps its `..data` link on every update.
        let metadata = tokio::fs::metadata(path)
            .await
            .with_context(|| format!("{variable} {}", path.display()))?;
        *slot = (metadata.modified()?, metadata.len(), metadata.ino());
    }
    Ok(stamp)
}

async fn server_config(files: &CertificateFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert_variable, key_variable) = files.variables;
    let certs = read_pem(&files.cert, cert_variable, |pem| {
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()
    })
    .await?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{cert_variable} {}: holds no PEM certificate",
        files.cert.display()
    );
    let key = read_pem(&files.key, key_variable, PrivateKeyDer::from_pem_slice).await?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "{cert_variable} {} with {key_variable} {}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads a small PEM file and parses it; errors name the variable and the path, never the
/// content (the key is a secret).
async fn read_pem<T>(
    path: &Path,
    variable: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, rustls::pki_types::pem::Error>,
) -> anyhow::Result<T> {
    let pem = tokio::fs::read(path)
        .await
        .with_context(|| format!("{variable} {}: cannot be read", path.display()))?;
    parse(&pem).map_err(|error| anyhow::anyhow!("{variable} {}: not PEM ({error})", path.display()))
}

/// A TCP listener whose connections are TLS, for `axum::serve`. Handshakes run on tasks of
/// their own, so one slow or silent client never holds up the next connection.
#[derive(Debug)]
pub struct TlsListener {
    tcp: TcpListener,
    config: Arc<ReloadingServerConfig>,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp`.
    pub fn new(tcp: TcpListener, config: ReloadingServerConfig) -> Self {
        Self {
            tcp,
            config: Arc::new(config),
            handshakes: JoinSet::new(),
        }
    }

    async fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        crate::net::nodelay(&stream);
        let acceptor = TlsAcceptor::from(self.config.for_next_handshake().await);
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => self.start_handshake(stream, peer).await,
                    // Out of file descriptors, say: what axum's own listener does.
                    Err(error) => {
                        tracing::error!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                // A failed handshake ends its task with None; the loop goes on waiting.
                Some(finished) = self.handshakes.join_next() => {
                    if let Ok(Some(done)) = finished {
                        return done;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
