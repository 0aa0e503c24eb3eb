//! What TLS costs: prints tables, asserts nothing.
//!
//! `cargo bench -p gateway --bench tls_cost` starts two copies of auth, storage (the local
//! backend) and the gateway in this process, one plain and one with every hop encrypted (the
//! gateway on HTTPS, gRPC on mutual TLS, certificates from a test authority), and measures, in
//! interleaved rounds (plain, TLS, plain, TLS, ...), on the same cores:
//! - `Validate` calls per second straight to auth (8 callers over 4 connections): the call
//!   the gateway makes for every request;
//! - upload MB/s through the gateway (one upload of `BENCH_MB` at a time, streamed from
//!   memory), the bytes crossing TLS twice: client → gateway, gateway → storage.
//!
//! Knobs: `BENCH_SECONDS` (per Validate round, default 3), `BENCH_MB` (default 64),
//! `BENCH_ROUNDS` (default 3). Client and servers share the machine's cores.

use clients::AuthClient;
use reqwest::StatusCode;
use service_kit::grpc_tls::{GrpcTls, GrpcTlsConfig};
use std::time::{Duration, Instant};
use test_support::bench::{env_number, median};
use test_support::tls::{TestCa, client_trusting};
use test_support::{Running, TempDir, configs, mp4_like, rest, temp_dir};

/// One copy of the three services, plain or with TLS on every hop.
struct Stack {
    auth: Running<auth::App>,
    gateway: Running<gateway::App>,
    /// The benchmark's own gRPC TLS, as a caller of auth (None: plain).
    client_tls: Option<GrpcTls>,
    http: reqwest::Client,
    _storage: Running<storage::App>,
    _dirs: (TempDir, TempDir),
}

impl Stack {
    async fn start(ca: Option<&TestCa>) -> anyhow::Result<Self> {
        let data = temp_dir();
        let certs = temp_dir();
        let settings = |name: &str| -> GrpcTlsConfig {
            let Some(ca) = ca else {
                return GrpcTlsConfig::default();
            };
            let dir = certs.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]).write_to(&dir);
            GrpcTlsConfig {
                cert_file: Some(cert),
                key_file: Some(key),
                ca_file: Some(ca.write_to(certs.path())),
            }
        };
        let quiet = || service_kit::config::TelemetryConfig {
            log_filter: "error".into(),
            ..configs::telemetry()
        };
        let mut auth_config = configs::auth(data.path(), None);
        auth_config.grpc_tls = settings("auth");
        auth_config.telemetry = quiet();
        let auth = Running::<auth::App>::start(auth_config).await?;
        let mut storage_config = configs::storage(data.path(), None);
        storage_config.grpc_tls = settings("storage");
        storage_config.telemetry = quiet();
        let storage = Running::<storage::App>::start(storage_config).await?;
        let scheme = if ca.is_some() { "https" } else { "http" };
        let mut gateway_config = configs::gateway(
            &format!("{scheme}://{}", auth.addr()),
            &format!("{scheme}://{}", storage.addr()),
            configs::embedded(data.path()),
        );
        gateway_config.grpc_tls = settings("gateway");
        gateway_config.telemetry = quiet();
        if let Some(ca) = ca {
            let (cert, key) = ca.issue(&["127.0.0.1"]).write_to(certs.path());
            gateway_config.tls_cert_file = Some(cert);
            gateway_config.tls_key_file = Some(key);
        }
        let gateway = Running::<gateway::App>::start(gateway_config).await?;
        Ok(Self {
            auth,
            gateway,
            client_tls: settings("bench").load().await?,
            http: ca.map(client_trusting).unwrap_or_default(),
            _storage: storage,
            _dirs: (data, certs),
        })
    }

    /// A token of a fresh account, through the gateway.
    async fn token(&self) -> String {
        let base = self.gateway.url();
        let email = format!("{}@example.com", test_support::unique_name("bench"));
        rest::register(&self.http, &base, &email, "bench password 1").await;
        rest::login(&self.http, &base, &email, "bench password 1").await
    }

    /// `Validate` calls per second over `seconds`.
    async fn validations_per_second(&self, token: &str, seconds: u64) -> anyhow::Result<f64> {
        let scheme = if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{}", self.auth.addr());
        let connections: Vec<AuthClient> = (0..4)
            .map(|_| AuthClient::connect_lazy(&url, self.client_tls.as_ref()))
            .collect::<Result<_, _>>()?;
        // Connect (and handshake) before the clock starts.
        for client in &connections {
            client.validate(token).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let callers: Vec<_> = (0..8)
            .map(|i| {
                let client = connections[i % connections.len()].clone();
                let token = token.to_owned();
                tokio::spawn(async move {
                    let mut calls = 0u64;
                    while Instant::now() < deadline {
                        client
                            .validate(&token)
                            .await
                            .expect("a valid token validates");
                        calls += 1;
                    }
                    calls
                })
            })
            .collect();
        let mut calls = 0;
        for caller in callers {
            calls += caller.await?;
        }
        Ok(calls as f64 / started.elapsed().as_secs_f64())
    }

    /// MB/s of one upload of `video` through the gateway (the job removed again after).
    async fn upload_mb_per_s(&self, token: &str, video: &[u8]) -> anyhow::Result<f64> {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> = video
            .chunks(1024 * 1024)
            .map(|piece| Ok(piece.to_vec()))
            .collect();
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(futures::stream::iter(pieces)),
            video.len() as u64,
        )
        .file_name("bench.mp4")
        .mime_str("video/mp4")?;
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{}/upload", self.gateway.url()))
            .bearer_auth(token)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            response.status() == StatusCode::ACCEPTED,
            "{}",
            response.status()
        );
        let accepted: serde_json::Value = response.json().await?;
        let job = accepted["job_id"].as_str().unwrap_or_default();
        self.http
            .delete(format!("{}/jobs/{job}", self.gateway.url()))
            .bearer_auth(token)
            .send()
            .await?;
        Ok(video.len() as f64 / 1e6 / elapsed.as_secs_f64())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_number("BENCH_SECONDS", 3) as u64;
    let size_mb = env_number("BENCH_MB", 64);
    let rounds = env_number("BENCH_ROUNDS", 3).max(1);
    let ca = TestCa::new("mp3converter benchmark CA");
    let plain = Stack::start(None).await?;
    let tls = Stack::start(Some(&ca)).await?;
    let (plain_token, tls_token) = (plain.token().await, tls.token().await);
    let video = mp4_like(size_mb * 1024 * 1024, 3);

    let mut validate: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut upload: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, (stack, token)) in [(&plain, &plain_token), (&tls, &tls_token)]
            .into_iter()
            .enumerate()
        {
            validate[i].push(stack.validations_per_second(token, seconds).await?);
            upload[i].push(stack.upload_mb_per_s(token, &video).await?);
        }
    }
    let list = |values: &[f64], digits: usize| {
        values
            .iter()
            .map(|v| format!("{v:.digits$}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!();
    println!("TLS cost, {rounds} interleaved rounds (plain, TLS, plain, TLS, ...)");
    println!();
    println!(
        "| measure | plain (each round) | TLS (each round) | plain median | TLS median | TLS / plain |"
    );
    println!("|---|---|---|---:|---:|---:|");
    for (what, values, digits) in [
        ("Validate calls/s (8 callers, 4 connections)", &validate, 0),
        (
            &*format!("upload MB/s ({size_mb} MiB through the gateway)"),
            &upload,
            1,
        ),
    ] {
        let (p, t) = (median(&values[0]), median(&values[1]));
        println!(
            "| {what} | {} | {} | {p:.digits$} | {t:.digits$} | {:.2} |",
            list(&values[0], digits),
            list(&values[1], digits),
            t / p
        );
    }
    Ok(())
}
