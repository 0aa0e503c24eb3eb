//! The converter against raw ffmpeg in the same run: the time from "upload complete" (video
//! stored, job recorded, event published) to "MP3 stored" for one job, next to
//! `ffmpeg -i in.mp4 -vn -c:a libmp3lame -q:a 2 out.mp3` on a local file; jobs per minute with one
//! and with two worker processes; and the converter's peak memory (its own process, the ffmpeg
//! children not included).
//!
//! ```text
//! cargo build --release --bins && cargo bench -p converter --bench conversion
//! ```
//! Needs the MongoDB-wire server and RabbitMQ (`scripts/test --services-only` starts them).
//! `BENCH_SECONDS` sets the video's length (default 60), `BENCH_RUNS` how many single jobs are
//! timed, each right after a raw ffmpeg run (default 5), `BENCH_JOBS` the burst size for the
//! throughput rows (default 6).

use clients::{Owner, StorageClient};
use messaging::QueueConfig;
use messaging::amqp as broker;
use messaging::events::{Payload, VideoUploaded, new_event};
use proto::storage::v1 as pb;
use std::path::Path;
use std::time::{Duration, Instant};
use test_support::bench::{env_number, median};
use test_support::process::{ServiceProcess, wait_for_port};
use test_support::{VideoSpec, free_port, generate_video};

fn main() -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run())
}

/// Runs raw ffmpeg on a local file; seconds taken.
fn raw_ffmpeg(input: &Path, output: &Path) -> f64 {
    let started = Instant::now();
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(input)
        .args(["-vn", "-c:a", "libmp3lame", "-q:a", "2"])
        .arg(output)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    started.elapsed().as_secs_f64()
}

/// Stores the video once; every job of the benchmark converts it.
async fn store_video(storage: &StorageClient, path: &Path) -> anyhow::Result<String> {
    let bytes = tokio::fs::read(path).await?;
    let mut upload = storage.upload(pb::UploadHeader {
        bucket: pb::Bucket::Videos.into(),
        owner_id: "bench".into(),
        filename: "bench.mp4".into(),
        content_type: "video/mp4".into(),
        job_id: String::new(),
    });
    for chunk in bytes.chunks(256 * 1024) {
        if !upload.send(chunk.to_vec().into()).await {
            break;
        }
    }
    Ok(upload.finish().await?.id)
}

/// What the gateway does after an upload: record the job and publish the event.
async fn queue_job(
    storage: &StorageClient,
    channel: &lapin::Channel,
    queue: &str,
    video_id: &str,
) -> anyhow::Result<String> {
    let job = storage
        .create_job(pb::CreateJobRequest {
            owner_id: "bench".into(),
            owner_email: "bench@example.com".into(),
            video_id: video_id.into(),
            original_filename: "bench.mp4".into(),
            options: None,
        })
        .await?;
    let event = new_event(Payload::VideoUploaded(VideoUploaded {
        job_id: job.id.clone(),
        video_id: video_id.into(),
        owner_id: "bench".into(),
        owner_email: "bench@example.com".into(),
        original_filename: "bench.mp4".into(),
    }));
    broker::publish(channel, queue, &event).await?;
    Ok(job.id)
}

async fn wait_done(storage: &StorageClient, job_id: &str) {
    loop {
        let job = storage
            .job(job_id, &Owner::Any)
            .await
            .expect("job readable");
        match job.state() {
            pb::JobState::Done => return,
            pb::JobState::Failed => panic!("job failed: {}", job.error_reason),
            // Fine-grained: the poll interval is part of what is measured.
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

fn converter(
    storage_url: &str,
    broker: &test_support::TestBroker,
    queues: &QueueConfig,
    work_dir: &Path,
) -> (ServiceProcess, u16) {
    let ops = free_port();
    let process = ServiceProcess::spawn_release(
        "converter",
        &[
            ("OPS_LISTEN_ADDR", format!("127.0.0.1:{ops}")),
            ("STORAGE_URL", storage_url.to_owned()),
            ("AMQP_URL", broker.url().to_owned()),
            ("VIDEO_QUEUE", queues.video_queue.clone()),
            ("MP3_QUEUE", queues.mp3_queue.clone()),
            ("CONCURRENCY", "1".into()),
            ("WORK_DIR", work_dir.display().to_string()),
        ],
    );
    (process, ops)
}

/// Mean seconds per job of each stage, from the converter's own `converter_stage_seconds`.
async fn stage_means(ops_port: u16, jobs: usize) -> anyhow::Result<Vec<(String, f64)>> {
    let metrics = test_support::scrape(&format!("http://127.0.0.1:{ops_port}/metrics")).await;
    let mut stages = test_support::series_by_label(&metrics, "converter_stage_seconds_sum");
    for (_, seconds) in &mut stages {
        *seconds /= jobs as f64;
    }
    let order = ["claim", "fetch", "wait", "convert", "store", "finish"];
    stages.sort_by_key(|(stage, _)| order.iter().position(|known| known == stage));
    Ok(stages)
}

async fn run() -> anyhow::Result<()> {
    let seconds = env_number("BENCH_SECONDS", 60);
    let jobs = env_number("BENCH_JOBS", 6);
    let runs = env_number("BENCH_RUNS", 5).max(1);
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("input.mp4");
    let spec = VideoSpec {
        seconds: seconds as f32,
        size: (1280, 720),
        fps: 25,
        ..VideoSpec::small(1.0)
    };
    eprintln!("generating a {seconds} s 720p video...");
    generate_video(&input, spec).await?;
    let video_mb = std::fs::metadata(&input)?.len() as f64 / 1e6;

    let mongo = test_support::TestMongo::create().await?;
    let broker = test_support::TestBroker::create().await?;
    let queues = QueueConfig {
        video_queue: broker.queue("video"),
        mp3_queue: broker.queue("mp3"),
    };
    for queue in [&queues.video_queue, &queues.mp3_queue] {
        for (_, name) in messaging::RetryConfig::default().retry_queues(queue) {
            broker.remember(name);
        }
    }
    let (storage_port, storage_ops) = (free_port(), free_port());
    let _storage =
        ServiceProcess::spawn_release_storage(storage_port, storage_ops, &mongo, dir.path());
    wait_for_port(storage_port).await;
    let storage_url = format!("http://127.0.0.1:{storage_port}");
    let storage = StorageClient::connect_lazy(&storage_url, None)?;
    let video_id = store_video(&storage, &input).await?;
    let connection = broker::connect(broker.url(), None, "bench").await?;
    let channel = broker::confirmed_channel(&connection).await?;
    broker::declare_topology(&channel, &queues).await?;

    // One job at a time, next to raw ffmpeg, interleaved so both see the same machine.
    let (first, first_ops) = converter(&storage_url, &broker, &queues, dir.path());
    wait_for_port(first_ops).await;
    let mut raw = Vec::new();
    let mut through = Vec::new();
    for _ in 0..runs {
        raw.push(raw_ffmpeg(&input, &dir.path().join("raw.mp3")));
        let job_id = queue_job(&storage, &channel, &queues.video_queue, &video_id).await?;
        let started = Instant::now();
        wait_done(&storage, &job_id).await;
        through.push(started.elapsed().as_secs_f64());
    }
    let ratios: Vec<f64> = through.iter().zip(&raw).map(|(t, r)| t / r).collect();
    let per_run: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let (raw, through, ratio) = (median(&raw), median(&through), median(&ratios));
    let stages = stage_means(first_ops, runs).await?;

    // Bursts: all jobs queued at once, to one worker process, then to two.
    let mut per_minute = Vec::new();
    let mut second = None;
    for workers in [1, 2] {
        if workers == 2 {
            let (process, ops) = converter(&storage_url, &broker, &queues, dir.path());
            wait_for_port(ops).await;
            second = Some(process);
        }
        let mut ids = Vec::new();
        for _ in 0..jobs {
            ids.push(queue_job(&storage, &channel, &queues.video_queue, &video_id).await?);
        }
        let started = Instant::now();
        for id in &ids {
            wait_done(&storage, id).await;
        }
        per_minute.push(jobs as f64 / started.elapsed().as_secs_f64() * 60.0);
    }
    let second_peak = second.as_ref().map_or(0.0, ServiceProcess::peak_rss_mib);
    let peak = first.peak_rss_mib().max(second_peak);

    println!();
    println!(
        "converter vs raw ffmpeg ({seconds} s 1280x720 H.264/AAC video, {video_mb:.1} MB; median of {runs})"
    );
    println!("| measure                                         | value    | goal |");
    println!("|-------------------------------------------------|----------|------|");
    println!("| raw ffmpeg on a local file (s)                  | {raw:>8.2} |      |");
    println!("| converter: upload complete → MP3 stored (s)     | {through:>8.2} |      |");
    println!("| ratio converter / raw (median of the runs')     | {ratio:>8.2} | ≤ 1.5 |");
    println!(
        "| jobs/min, 1 worker process (burst of {jobs})        | {:>8.1} |      |",
        per_minute[0]
    );
    println!(
        "| jobs/min, 2 worker processes (burst of {jobs})      | {:>8.1} |      |",
        per_minute[1]
    );
    println!("| converter peak RSS, ffmpeg excluded (MiB)       | {peak:>8.1} | < 64 |");
    println!("ratio of each run: {}", per_run.join(", "));
    println!(
        "(each worker process runs CONCURRENCY=1 on this {}-core machine)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("where a single job's time goes (converter_stage_seconds, mean of {runs})");
    println!("| stage     | seconds |");
    println!("|-----------|---------|");
    for (stage, seconds) in &stages {
        println!("| {stage:<9} | {seconds:>7.3} |");
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
