//! Auth throughput benchmark: prints a table, asserts nothing.
//!
//! `cargo bench -p auth --bench auth_throughput` starts the real auth service on port 0
//! (embedded SQLite, default argon2 parameters), then measures over loopback:
//! - `Validate` calls per second and p50/p99/max latency at several client concurrencies,
//!   counting gRPC errors (goal: >= 20,000/s with p99 < 2 ms on a 2-core machine);
//! - `Login` calls per second at the configured argon2id parameters.
//!
//! Client and server share the machine's cores, so absolute numbers are a floor.
//! Knobs: `BENCH_SECONDS` (per row, default 5), `BENCH_CONNECTIONS` (default 4).

use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::auth::v1::{LoginRequest, RegisterRequest, ValidateRequest};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

struct Row {
    label: String,
    concurrency: usize,
    calls: usize,
    errors: usize,
    seconds: f64,
    latencies_micros: Vec<u32>,
}

impl Row {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_micros.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_micros.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies_micros[index]) / 1000.0
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_number("BENCH_SECONDS", 5);
    let connections = env_number("BENCH_CONNECTIONS", 4) as usize;
    let dir = test_support::temp_dir();
    let config = auth::Config {
        login_max_failures: 1_000_000,
        telemetry: service_kit::config::TelemetryConfig {
            log_filter: "error".into(),
            ..test_support::configs::telemetry()
        },
        jwt_secret: None,
        ..test_support::configs::auth(dir.path(), None)
    };
    let argon2 = (config.argon2_memory_kib, config.argon2_iterations);
    let server = test_support::Running::<auth::App>::start(config).await?;
    let channel = server.grpc_channel().await?;

    let mut client = AuthServiceClient::new(channel.clone());
    let (email, password) = ("bench@example.com", "bench password 1");
    client
        .register(RegisterRequest {
            email: email.into(),
            password: password.into(),
        })
        .await?;
    let login = LoginRequest {
        email: email.into(),
        password: password.into(),
        client_address: String::new(),
    };
    let token = client.login(login.clone()).await?.into_inner().access_token;

    let mut channels = vec![channel];
    for _ in 1..connections {
        channels.push(server.grpc_channel().await?);
    }

    let duration = Duration::from_secs(seconds);
    let mut rows = Vec::new();
    // Warm-up, not reported.
    run(
        &channels,
        8,
        Duration::from_secs(1),
        Call::Validate(token.clone()),
    )
    .await;
    for concurrency in [1, 8, 32, 64] {
        let mut row = run(
            &channels,
            concurrency,
            duration,
            Call::Validate(token.clone()),
        )
        .await;
        row.label = "Validate".into();
        rows.push(row);
    }
    for concurrency in [1, 2, 4] {
        let mut row = run(&channels, concurrency, duration, Call::Login(login.clone())).await;
        row.label = format!("Login (argon2id m={} KiB, t={})", argon2.0, argon2.1);
        rows.push(row);
    }

    println!();
    println!(
        "auth service over loopback, {connections} HTTP/2 connections, {seconds} s per row, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| call | concurrency | calls | calls/s | p50 ms | p99 ms | max ms | gRPC errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
            row.label,
            row.concurrency,
            row.calls,
            row.calls as f64 / row.seconds,
            row.percentile(0.50),
            row.percentile(0.99),
            row.percentile(1.0),
            row.errors
        );
    }
    server.stop().await?;
    Ok(())
}

#[derive(Clone)]
enum Call {
    Validate(String),
    Login(LoginRequest),
}

/// `concurrency` tasks issue calls back to back for `duration`, spread over the channels.
async fn run(channels: &[Channel], concurrency: usize, duration: Duration, call: Call) -> Row {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut client = AuthServiceClient::new(channels[i % channels.len()].clone());
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(100_000);
                let mut errors = 0;
                while Instant::now() < deadline {
                    let begun = Instant::now();
                    let ok = match &call {
                        Call::Validate(token) => client
                            .validate(ValidateRequest {
                                token: token.clone(),
                            })
                            .await
                            .is_ok(),
                        Call::Login(request) => client.login(request.clone()).await.is_ok(),
                    };
                    latencies.push(begun.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    if !ok {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies_micros = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, task_errors) = task.await.expect("bench task");
        latencies_micros.extend(latencies);
        errors += task_errors;
    }
    latencies_micros.sort_unstable();
    Row {
        label: String::new(),
        concurrency,
        calls: latencies_micros.len(),
        errors,
        seconds: started.elapsed().as_secs_f64(),
        latencies_micros,
    }
}
