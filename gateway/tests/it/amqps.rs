//! The queue over TLS (`amqps://` with AMQP_CA_FILE), against a RabbitMQ node of the test's own
//! with only a TLS listener: the gateway is ready and queues an upload (publisher confirms over
//! TLS), a converter consumes it over TLS and converts it, and a publisher that cannot verify
//! the broker, or speaks plain AMQP to it, gets nowhere.

use messaging::Publisher;
use proto::storage::v1 as pb;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use test_support::mesh::{Mesh, MeshOptions};
use test_support::tls::TestCa;
use test_support::{Running, TlsRabbitMq, VideoSpec, mp4_bytes, temp_dir};

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
        .upload(
            &alice.token,
            "clip.mp4",
            mp4_bytes(VideoSpec::small(1.0)).await,
        )
        .await;
    assert_eq!(upload.status(), StatusCode::ACCEPTED, "queued over amqps");
    let job_id = upload.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A converter on the same broker settings (amqps, the CA file) consumes and converts it.
    let _converter = Running::<converter::App>::start(mesh.converter_config())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let job = mesh.job(&job_id).await;
        if job.state() == pb::JobState::Done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was never converted: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

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
