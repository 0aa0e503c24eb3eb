//! Mutual TLS on the gRPC hops (GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE, GRPC_TLS_CA_FILE):
//! auth and storage accept only callers presenting a current certificate of their authority,
//! reflection and health answer over it (grpcurl, a client nobody here wrote, lists the
//! services), and the gateway will not talk to a storage server whose certificate names
//! another host.

use reqwest::StatusCode;
use serde_json::Value;
use service_kit::grpc_tls::GrpcTlsConfig;
use std::net::SocketAddr;
use std::path::Path;
use test_support::tls::{IssuedCertificate, TestCa};
use test_support::{Running, TempDir, configs, temp_dir};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Where every certificate of one test lives.
struct Pki {
    ca: TestCa,
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        let pki = Self {
            ca: TestCa::new("mp3converter gRPC test CA"),
            dir: temp_dir(),
        };
        pki.ca.write_to(pki.dir.path());
        pki
    }

    /// The GRPC_TLS_* settings of a service holding `cert`, saved as `name`.
    fn settings(&self, name: &str, cert: &IssuedCertificate) -> GrpcTlsConfig {
        let dir = self.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let (cert_file, key_file) = cert.write_to(&dir);
        GrpcTlsConfig {
            cert_file: Some(cert_file),
            key_file: Some(key_file),
            ca_file: Some(self.dir.path().join("ca.crt")),
        }
    }
}

/// A health check of `addr` over TLS trusting `ca`, presenting `client` if any.
async fn health_check(
    addr: SocketAddr,
    ca: &TestCa,
    client: Option<&IssuedCertificate>,
) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.cert_pem()));
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| format!("connect: {error:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("call: {status:?}"))
}

#[tokio::test]
async fn auth_and_storage_accept_only_callers_presenting_a_current_certificate_of_their_authority()
{
    let pki = Pki::new();
    let data = temp_dir();
    let server = pki.ca.issue(&["127.0.0.1", "localhost"]);
    let mut auth_config = configs::auth(data.path(), None);
    auth_config.grpc_tls = pki.settings("auth", &server);
    let auth = Running::<auth::App>::start(auth_config).await.unwrap();
    let mut storage_config = configs::storage(data.path(), None);
    storage_config.grpc_tls = pki.settings("storage", &server);
    let storage = Running::<storage::App>::start(storage_config)
        .await
        .unwrap();

    let good = pki.ca.issue(&["gateway"]);
    let expired = pki.ca.issue_expired(&["gateway"]);
    let other_ca = TestCa::new("another authority");
    let foreign = other_ca.issue(&["gateway"]);
    for (service, addr) in [("auth", auth.addr()), ("storage", storage.addr())] {
        health_check(addr, &pki.ca, Some(&good))
            .await
            .unwrap_or_else(|error| panic!("{service} refused a good certificate: {error}"));
        for (what, client) in [
            ("no certificate", None),
            ("a certificate of another authority", Some(&foreign)),
            ("an expired certificate", Some(&expired)),
        ] {
            let refused = health_check(addr, &pki.ca, client).await;
            assert!(refused.is_err(), "{service} accepted {what}");
        }
        // Plain HTTP/2 gets nothing either.
        let plain = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await;
        if let Ok(channel) = plain {
            let answered = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await;
            assert!(answered.is_err(), "{service} answered plain HTTP/2");
        }
    }

    // grpcurl, as the README shows it, lists storage's services through reflection.
    let dir = pki.dir.path();
    let client_dir = dir.join("grpcurl");
    std::fs::create_dir(&client_dir).unwrap();
    let (cert, key) = good.write_to(&client_dir);
    let listed = grpcurl(dir, Some((&cert, &key)), storage.addr()).await;
    assert!(
        listed.contains("mp3converter.storage.v1.StorageService"),
        "{listed}"
    );
    let without = grpcurl(dir, None, storage.addr()).await;
    assert!(!without.contains("StorageService"), "{without}");
}

/// `grpcurl -cacert … [-cert … -key …] ADDR list`: what it printed, or its error.
async fn grpcurl(dir: &Path, identity: Option<(&Path, &Path)>, addr: SocketAddr) -> String {
    let mut command = tokio::process::Command::new("grpcurl");
    command.arg("-cacert").arg(dir.join("ca.crt"));
    if let Some((cert, key)) = identity {
        command.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let output = command
        .arg(addr.to_string())
        .arg("list")
        .output()
        .await
        .expect("grpcurl runs (scripts/test puts it on PATH)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_gateway_refuses_a_storage_server_whose_certificate_names_another_host() {
    let pki = Pki::new();
    let data = temp_dir();
    let mut auth_config = configs::auth(data.path(), None);
    auth_config.grpc_tls = pki.settings("auth", &pki.ca.issue(&["127.0.0.1"]));
    let auth = Running::<auth::App>::start(auth_config).await.unwrap();
    let gateway_tls = pki.settings("gateway", &pki.ca.issue(&["gateway"]));

    let mut readiness = Vec::new();
    for (name, names) in [
        ("right", "127.0.0.1"),
        ("wrong", "storage.elsewhere.example"),
    ] {
        let mut storage_config = configs::storage(data.path(), None);
        storage_config.grpc_tls = pki.settings(name, &pki.ca.issue(&[names]));
        let storage = Running::<storage::App>::start(storage_config)
            .await
            .unwrap();
        let mut gateway_config = configs::gateway(
            &auth.url().replace("http://", "https://"),
            &format!("https://{}", storage.addr()),
            configs::embedded(data.path()),
        );
        gateway_config.grpc_tls = gateway_tls.clone();
        let gateway = Running::<gateway::App>::start(gateway_config)
            .await
            .unwrap();
        let response = reqwest::get(format!("{}/readyz", gateway.url()))
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        readiness.push((name, status, body));
    }
    let (_, status, body) = &readiness[0];
    assert_eq!(body["checks"]["auth"], "ok", "{body}");
    assert_eq!(body["checks"]["storage"], "ok", "{body}");
    assert_eq!(*status, StatusCode::OK, "{body}");
    let (_, status, body) = &readiness[1];
    assert_eq!(body["checks"]["auth"], "ok", "{body}");
    assert_ne!(body["checks"]["storage"], "ok", "{body}");
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}
