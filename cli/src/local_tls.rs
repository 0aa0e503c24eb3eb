//! `up --tls`: a certificate authority of this machine's own, and the certificates the mesh
//! serves with, made once under `DATA_DIR/tls` and used again on later starts. The gateway's
//! certificate serves HTTPS; the services' serves (and presents, as a client) the gRPC hops'
//! mutual TLS.
//!
//! The authority's private key is never written down: once the certificates exist, nothing
//! more can be signed with it, so a copied data directory cannot mint a certificate the mesh
//! would trust. When a certificate goes missing or nears its end, everything (the authority
//! too) is made anew, and whoever trusted the old `ca.crt` takes the new one.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long the certificates are good for (the most browsers accept for a server's).
const VALIDITY: Duration = Duration::from_secs(397 * 86_400);
/// A set older than this is made anew at the next start.
const RENEW_AFTER: Duration = Duration::from_secs(365 * 86_400);

/// Where `up --tls` keeps the authority's certificate and the mesh's certificates.
#[derive(Debug, Clone)]
pub struct LocalTls {
    dir: PathBuf,
}

impl LocalTls {
    /// The files under `data_dir/tls` (made by [`LocalTls::ensure`]).
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("tls"),
        }
    }

    /// The authority's certificate: what a client trusts (`curl --cacert`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The gateway's HTTPS certificate and key.
    pub fn gateway(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("gateway.crt"), self.dir.join("gateway.key"))
    }

    /// The gRPC certificate and key every service presents.
    pub fn services(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("services.crt"), self.dir.join("services.key"))
    }

    /// Makes the authority and the certificates (for localhost, 127.0.0.1 and `host`) unless a
    /// complete set younger than a year is there; says whether it made them.
    pub fn ensure(&self, host: IpAddr) -> anyhow::Result<bool> {
        let (gateway_cert, gateway_key) = self.gateway();
        let (services_cert, services_key) = self.services();
        let files = [
            self.ca(),
            gateway_cert.clone(),
            gateway_key.clone(),
            services_cert.clone(),
            services_key.clone(),
        ];
        if files.iter().all(|file| younger_than(file, RENEW_AFTER)) {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        if !host.is_unspecified() && !host.is_loopback() {
            names.push(host.to_string());
        }
        let authority = authority()?;
        write(&self.ca(), &authority.pem(), false)?;
        for (cert, key, usage) in [
            (
                gateway_cert,
                gateway_key,
                vec![ExtendedKeyUsagePurpose::ServerAuth],
            ),
            (
                services_cert,
                services_key,
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
        ] {
            let mut params = CertificateParams::new(names.clone())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "mp3converter up --tls");
            params.extended_key_usages = usage;
            (params.not_before, params.not_after) = validity();
            let key_pair = KeyPair::generate()?;
            let signed = params.signed_by(&key_pair, &authority)?;
            write(&key, &key_pair.serialize_pem(), true)?;
            write(&cert, &signed.pem(), false)?;
        }
        Ok(true)
    }
}

/// A new authority, its key kept in memory only.
fn authority() -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "mp3converter up --tls local authority");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.not_before, params.not_after) = validity();
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn validity() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = SystemTime::now();
    // A minute back: a clock a little behind still accepts a certificate made now.
    (
        (now - Duration::from_secs(60)).into(),
        (now + VALIDITY).into(),
    )
}

fn younger_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .is_ok_and(|modified| modified.elapsed().is_ok_and(|elapsed| elapsed < age))
}

/// Writes `content` to `path` (a private key readable by its owner alone), replacing it.
fn write(path: &Path, content: &str, private: bool) -> anyhow::Result<()> {
    let staged = path.with_extension("new");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options
        .open(&staged)
        .with_context(|| format!("creating {}", staged.display()))?;
    std::io::Write::write_all(&mut file, content.as_bytes())
        .with_context(|| format!("writing {}", staged.display()))?;
    std::fs::rename(&staged, path).with_context(|| format!("writing {}", path.display()))
}
