//! The queue over TLS (`amqps://` with AMQP_CA_FILE), against a RabbitMQ node of the test's own
//! with only a TLS listener: the gateway is ready and queues an upload (publisher confirms over
//! TLS), and a publisher that cannot verify the broker, or speaks plain AMQP to it, gets nowhere.

use messaging::Publisher;
use reqwest::StatusCode;
use test_support::mesh::{Mesh, MeshOptions};
use test_support::tls::TestCa;
use test_support::{TlsRabbitMq, mp4_like, temp_dir};

#[tokio::test]
async fn uploads_are_queued_over_amqps_and_a_broker_that_cannot_be_verified_is_refused() {
    let certs = temp_dir();
    let ca = TestCa::new("mp3converter RabbitMQ test CA");
    let tls = ca.server_files(certs.path());
    let node = TlsRabbitMq::start(&tls).await.unwrap();
    let ca_file = tls.ca.clone();
    let mesh = Mesh::start(MeshOptions {
        amqp_url: Some(node.url()),
        ..MeshOptions::gateway(move |config| config.broker.amqp_ca_file = Some(ca_file))
    })
    .await;
    let (status, body) = mesh
        .readiness_when(|body| body["checks"]["broker"] == "ok")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice = mesh.user("alice@example.com").await;
    let upload = mesh
        .upload(&alice.token, "clip.mp4", mp4_like(128 * 1024, 3))
        .await;
    assert_eq!(upload.status(), StatusCode::ACCEPTED, "queued over amqps");

    let other = temp_dir();
    let other_ca = TestCa::new("another authority").write_to(other.path());
    let plain = node.url().replacen("amqps://", "amqp://", 1);
    for (what, url, ca) in [
        ("a CA that did not sign it", node.url(), Some(other_ca)),
        ("no CA file (the system's roots)", node.url(), None),
        ("plain AMQP", plain, None),
    ] {
        let mut broker = mesh.broker_config();
        broker.amqp_url = Some(url.into());
        broker.amqp_ca_file = ca;
        let checked = Publisher::new(&broker, "test").check().await;
        assert!(
            checked.is_err(),
            "a publisher reached the broker with {what}"
        );
    }
}
