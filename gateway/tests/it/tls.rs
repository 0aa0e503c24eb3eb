//! HTTPS at the gateway (TLS_CERT_FILE, TLS_KEY_FILE): it presents the configured certificate,
//! plain HTTP gets nothing on that port, a certificate replaced on disk is what the next
//! handshake presents while a download on a connection opened before it runs to its end, and
//! a configuration that cannot work is refused naming the variable.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use test_support::mesh::{Mesh, MeshOptions};
use test_support::tls::{TestCa, client_trusting, presented_certificate};
use test_support::{configs, mp4_like, pseudo_random_bytes, temp_dir};

#[tokio::test]
async fn https_presents_a_replaced_certificate_at_the_next_handshake_while_an_open_download_finishes()
 {
    let ca = TestCa::new("mp3converter gateway test CA");
    let dir = temp_dir();
    let first = ca.issue(&["localhost", "127.0.0.1"]);
    let (cert, key) = first.write_to(dir.path());
    let http = client_trusting(&ca);
    let mesh = Mesh::start(MeshOptions {
        http: Some(http.clone()),
        ..MeshOptions::gateway(move |config| {
            config.tls_cert_file = Some(cert);
            config.tls_key_file = Some(key);
        })
    })
    .await;
    let addr = mesh.gateway.addr();
    assert!(mesh.url("/").starts_with("https://"), "{}", mesh.url("/"));
    assert_eq!(
        presented_certificate(&ca, addr, "localhost").await.unwrap(),
        first.der
    );
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // A download large enough to be still under way when the certificate changes.
    let alice = mesh.user("alice@example.com").await;
    let upload = mesh
        .upload(&alice.token, "clip.mp4", mp4_like(256 * 1024, 5))
        .await;
    assert_eq!(upload.status(), StatusCode::ACCEPTED);
    let job_id = upload.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    const SIZE: usize = 64 * 1024 * 1024;
    let mp3 = pseudo_random_bytes(SIZE, 17);
    let expected = Sha256::digest(&mp3);
    let mp3_id = mesh.finish_job(&job_id, &alice.id, &mp3).await;
    drop(mp3);
    let download = http
        .get(mesh.url(&format!("/download/{mp3_id}")))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let mut body = download.bytes_stream();
    let mut hasher = Sha256::new();
    let mut received = 0;
    let first_chunk = body.next().await.unwrap().unwrap();
    received += first_chunk.len();
    hasher.update(&first_chunk);

    // cert-manager renews the certificate in place.
    let second = ca.issue(&["localhost", "127.0.0.1"]);
    second.write_to(dir.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let presented = presented_certificate(&ca, addr, "localhost").await.unwrap();
        if presented == second.der {
            break;
        }
        assert_eq!(presented, first.der, "neither certificate was presented");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never presented"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before_the_rest = received;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("the open download goes on across the renewal");
        received += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(received, SIZE);
    assert_eq!(
        hasher.finalize(),
        expected,
        "the download is byte-identical"
    );
    assert!(
        before_the_rest < SIZE / 2,
        "the download was {before_the_rest} of {SIZE} bytes in when the certificate changed: \
         too far along to show anything"
    );
    let after = client_trusting(&ca)
        .get(mesh.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_tls_configuration_that_cannot_work_is_refused_naming_the_variable() {
    use service_kit::config::ServiceConfig;
    const NOWHERE: &str = "http://127.0.0.1:1";
    let dir = temp_dir();
    let config = || configs::gateway(NOWHERE, NOWHERE, configs::embedded(dir.path()));

    let mut cert_alone = config();
    cert_alone.tls_cert_file = Some(dir.path().join("tls.crt"));
    let refused = cert_alone.validate().unwrap_err();
    assert_eq!(refused.variable(), Some("TLS_KEY_FILE"));

    let ca = TestCa::new("mp3converter gateway test CA");
    let (cert, key) = ca.issue(&["localhost"]).write_to(dir.path());
    let mut missing = config();
    missing.tls_cert_file = Some(dir.path().join("absent.crt"));
    missing.tls_key_file = Some(key.clone());
    let refused = format!("{:#}", gateway::App::build(missing).await.unwrap_err());
    assert!(
        refused.contains("TLS_CERT_FILE") && refused.contains("absent.crt"),
        "{refused}"
    );

    // A key of another certificate: the pair does not match.
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, ca.issue(&["localhost"]).key_pem).unwrap();
    let mut mismatched = config();
    mismatched.tls_cert_file = Some(cert);
    mismatched.tls_key_file = Some(other_key);
    let refused = format!("{:#}", gateway::App::build(mismatched).await.unwrap_err());
    assert!(refused.contains("TLS_KEY_FILE"), "{refused}");
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap();
    assert!(!refused.contains(key_body), "the error holds the key");
}
