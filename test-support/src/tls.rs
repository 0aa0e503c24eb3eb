//! Certificates for the TLS tests: a certificate authority of the test's own, the server
//! certificates it issues (written as PEM files, as a Secret volume holds them), a client
//! that trusts only that authority, and the certificate a server presents at a handshake.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate authority that exists for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

/// A certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate (DER), to compare with what a server presents.
    pub der: CertificateDer<'static>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

impl TestCa {
    /// A new authority, named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The authority's certificate, PEM: what a client trusts.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the authority's certificate to `dir` as `ca.crt`; returns its path.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.crt");
        std::fs::write(&path, self.cert_pem()).unwrap();
        path
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by this authority, good
    /// for a server and for a client (as each service is both, on gRPC).
    pub fn issue(&self, names: &[&str]) -> IssuedCertificate {
        self.issue_with(names, |_| {})
    }

    /// [`TestCa::issue`], but expired yesterday.
    pub fn issue_expired(&self, names: &[&str]) -> IssuedCertificate {
        self.issue_with(names, |params| {
            let now = std::time::SystemTime::now();
            params.not_before = (now - std::time::Duration::from_secs(30 * 86_400)).into();
            params.not_after = (now - std::time::Duration::from_secs(86_400)).into();
        })
    }

    fn issue_with(
        &self,
        names: &[&str],
        change: impl FnOnce(&mut CertificateParams),
    ) -> IssuedCertificate {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "mp3converter test service");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        change(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        IssuedCertificate {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl IssuedCertificate {
    /// Writes the pair to `dir` as `tls.crt` and `tls.key` (the names a Kubernetes TLS Secret
    /// gives them), replacing what is there the way a Secret volume does: each file written
    /// beside and renamed into place. Returns their paths.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        for (path, pem) in [(&key, &self.key_pem), (&cert, &self.cert_pem)] {
            let staged = path.with_extension("new");
            std::fs::write(&staged, pem).unwrap();
            std::fs::rename(&staged, path).unwrap();
        }
        (cert, key)
    }
}

/// The files of a TLS server: its certificate and key, and the authority its clients trust.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The authority that signed it (PEM): what clients are given as their CA file.
    pub ca: PathBuf,
}

impl TestCa {
    /// A certificate for 127.0.0.1 and localhost, written with this authority's to `dir`.
    pub fn server_files(&self, dir: &Path) -> ServerTls {
        let (cert, key) = self.issue(&["127.0.0.1", "localhost"]).write_to(dir);
        ServerTls {
            cert,
            key,
            ca: self.write_to(dir),
        }
    }
}

/// An HTTP client that trusts `ca` alone.
pub fn client_trusting(ca: &TestCa) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// The certificate `addr` presents to a fresh TLS handshake for `name`, verified against `ca`.
pub async fn presented_certificate(
    ca: &TestCa,
    addr: std::net::SocketAddr,
    name: &str,
) -> anyhow::Result<CertificateDer<'static>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from(name.to_owned())?, tcp)
        .await?;
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| anyhow::anyhow!("no certificate presented"))?;
    Ok(leaf.clone().into_owned())
}
