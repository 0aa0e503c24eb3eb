//! Load on the whole system ([`cluster`]: five processes on real infrastructure): two waves of
//! 50 clients each uploading a small video at the same moment and then polling its status
//! until the MP3 is ready. Every upload must complete and no request may fail; the gateway's
//! and storage's memory must stay flat (the second wave must not grow it: nothing accumulates
//! per request). The test prints throughput and latency percentiles.

use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use test_support::cluster::{Cluster, Role, User};
use test_support::process::memory_mib;
use test_support::{VideoSpec, mp4_bytes, rest};
use tokio::sync::Barrier;
use tokio::time::Instant;

const CLIENTS: usize = 50;
/// Clients share accounts: registering 50 would mostly measure argon2.
const USERS: usize = 10;
const POLL_EVERY: Duration = Duration::from_millis(250);

/// What one client measured.
struct ClientRun {
    upload: Duration,
    polls: Vec<Duration>,
    /// From sending the upload to seeing the job done.
    done_after: Duration,
}

async fn one_client(
    cluster: Arc<ClusterView>,
    user: User,
    clip: Vec<u8>,
    start: Arc<Barrier>,
) -> ClientRun {
    start.wait().await;
    let began = Instant::now();
    let response = rest::upload(
        &cluster.http,
        &cluster.gateway,
        &user.token,
        "clip.mp4",
        clip,
    )
    .await
    .expect("the upload is answered");
    let upload = began.elapsed();
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "{:?}",
        response.text().await
    );
    let job_id = response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut polls = Vec::new();
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let asked = Instant::now();
        let response = cluster
            .http
            .get(format!("{}/jobs/{job_id}", cluster.gateway))
            .bearer_auth(&user.token)
            .send()
            .await
            .expect("the poll is answered");
        polls.push(asked.elapsed());
        assert_eq!(response.status(), StatusCode::OK);
        let job: Value = response.json().await.unwrap();
        match job["status"].as_str() {
            Some("done") => break,
            Some("queued" | "converting") => {}
            other => panic!("job {job_id} ended {other:?}: {job}"),
        }
        assert!(
            began.elapsed() < Duration::from_secs(240),
            "job {job_id} never finished"
        );
    }
    ClientRun {
        upload,
        polls,
        done_after: began.elapsed(),
    }
}

/// The part of the cluster the clients need (the cluster itself stays with the test).
struct ClusterView {
    http: reqwest::Client,
    gateway: String,
}

impl ClusterView {
    fn of(cluster: &Cluster) -> Arc<Self> {
        Arc::new(Self {
            http: cluster.http.clone(),
            gateway: cluster.gateway.clone(),
        })
    }
}

/// Runs one wave; returns the clients' measurements and the wall time.
async fn wave(cluster: &Cluster, users: &[User], clip: &[u8]) -> (Vec<ClientRun>, Duration) {
    let view = ClusterView::of(cluster);
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(one_client(
                view.clone(),
                users[n % users.len()].clone(),
                clip.to_vec(),
                start.clone(),
            ))
        })
        .collect();
    start.wait().await;
    let began = Instant::now();
    let mut runs = Vec::new();
    for client in clients {
        runs.push(client.await.expect("no client failed"));
    }
    (runs, began.elapsed())
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[rank]
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

#[tokio::test]
async fn fifty_clients_upload_at_once_and_all_complete_with_flat_memory() {
    let cluster = Cluster::start(crate::binary()).await;
    let mut users = Vec::new();
    for n in 0..USERS {
        users.push(cluster.user(&format!("client-{n}@example.com")).await);
    }
    let clip = mp4_bytes(VideoSpec::small(1.0)).await;

    // Warm up (connection pools, lazily built state) with one whole upload-to-done run, so the
    // baseline is taken at rest and the warm-up's MP3 is surely there when they are counted.
    let alone = Arc::new(Barrier::new(1));
    one_client(
        ClusterView::of(&cluster),
        users[0].clone(),
        clip.clone(),
        alone,
    )
    .await;
    let watched = [Role::Gateway, Role::Storage];
    let baseline: Vec<f64> = watched
        .iter()
        .map(|role| memory_mib(cluster.pid(*role)).now)
        .collect();

    let (first, first_wall) = wave(&cluster, &users, &clip).await;
    let after_first: Vec<f64> = watched
        .iter()
        .map(|role| memory_mib(cluster.pid(*role)).now)
        .collect();
    let (second, second_wall) = wave(&cluster, &users, &clip).await;
    let after_second: Vec<f64> = watched
        .iter()
        .map(|role| memory_mib(cluster.pid(*role)).now)
        .collect();
    let peak: Vec<f64> = watched
        .iter()
        .map(|role| memory_mib(cluster.pid(*role)).peak)
        .collect();

    // Everything accepted became an MP3 and an e-mail.
    let mut mp3s = 0;
    for user in &users {
        mp3s += cluster
            .files(proto::storage::v1::Bucket::Mp3s, &user.id)
            .await
            .len();
    }
    assert_eq!(mp3s, 2 * CLIENTS + 1, "one MP3 per upload");
    let mails = cluster
        .smtp
        .wait_for(2 * CLIENTS + 1, Duration::from_secs(60))
        .await;
    assert_eq!(mails.len(), 2 * CLIENTS + 1, "one e-mail per upload");

    let runs: Vec<&ClientRun> = first.iter().chain(&second).collect();
    let mut uploads: Vec<Duration> = runs.iter().map(|run| run.upload).collect();
    let mut polls: Vec<Duration> = runs.iter().flat_map(|run| run.polls.clone()).collect();
    let mut done: Vec<Duration> = runs.iter().map(|run| run.done_after).collect();
    let jobs_per_minute = (2 * CLIENTS) as f64 / (first_wall + second_wall).as_secs_f64() * 60.0;
    println!("\n| load: {CLIENTS} clients at once, 2 waves | p50 | p99 | count |");
    println!("|---|---|---|---|");
    for (what, samples) in [
        ("upload answered (202)", &mut uploads),
        ("status poll answered (200)", &mut polls),
        ("upload sent → job done", &mut done),
    ] {
        let count = samples.len();
        println!(
            "| {what} | {} | {} | {count} |",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99))
        );
    }
    println!(
        "\nthroughput: {jobs_per_minute:.0} jobs/min (waves took {:.1} s and {:.1} s); failed requests: 0",
        first_wall.as_secs_f64(),
        second_wall.as_secs_f64()
    );
    println!("\n| process | RSS baseline | after wave 1 | after wave 2 | peak |");
    println!("|---|---|---|---|---|");
    for (n, role) in watched.iter().enumerate() {
        println!(
            "| {role:?} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            baseline[n], after_first[n], after_second[n], peak[n]
        );
    }
    for (n, role) in watched.iter().enumerate() {
        // Flat: the second wave, the same as the first, must not leave the process bigger
        // (allocator noise is a few MiB), and no wave may balloon it (the bytes stream through;
        // 50 small uploads at once need buffers, not copies of every file).
        assert!(
            after_second[n] - after_first[n] < 16.0,
            "{role:?} grew by {:.1} MiB from wave 1 to wave 2",
            after_second[n] - after_first[n]
        );
        assert!(
            peak[n] - baseline[n] < 128.0,
            "{role:?} peaked {:.1} MiB above its baseline",
            peak[n] - baseline[n]
        );
    }
}
