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
//! throughput rows (default 6), `BENCH_PRESET_RUNS` the rounds of the per-preset table
//! (default 3).
//!
//! The per-preset table times one job of each preset (and of the defaults without their cover,
//! and the podcast preset without its loudness pass, to state what those cost) against raw
//! ffmpeg doing the same work by hand: the same encoder settings, a loudnorm measuring pass and
//! its linear second pass where the preset normalises, and where there is a cover, a key-frame
//! thumbnail and a stream-copy pass that attaches it.

use audio_options::{AudioOptions, parse_options};
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

/// A variant of the per-preset table: its options, and raw ffmpeg's encoder arguments for the
/// same file, whether it normalises, and whether it has a cover.
struct Variant {
    name: &'static str,
    options: &'static [(&'static str, &'static str)],
    encoder: &'static [&'static str],
    normalize: bool,
    cover: bool,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "defaults (MP3 -V 2, cover)",
        options: &[],
        encoder: &["-c:a", "libmp3lame", "-q:a", "2", "-f", "mp3"],
        normalize: false,
        cover: true,
    },
    Variant {
        name: "defaults, cover=none",
        options: &[("cover", "none")],
        encoder: &["-c:a", "libmp3lame", "-q:a", "2", "-f", "mp3"],
        normalize: false,
        cover: false,
    },
    Variant {
        name: "music",
        options: &[("preset", "music")],
        encoder: &["-c:a", "libmp3lame", "-q:a", "0", "-f", "mp3"],
        normalize: false,
        cover: true,
    },
    Variant {
        name: "podcast",
        options: &[("preset", "podcast")],
        encoder: &[
            "-c:a",
            "libmp3lame",
            "-b:a",
            "96k",
            "-ac",
            "1",
            "-ar",
            "44100",
            "-f",
            "mp3",
        ],
        normalize: true,
        cover: true,
    },
    Variant {
        name: "podcast, normalize=false",
        options: &[("preset", "podcast"), ("normalize", "false")],
        encoder: &[
            "-c:a",
            "libmp3lame",
            "-b:a",
            "96k",
            "-ac",
            "1",
            "-ar",
            "44100",
            "-f",
            "mp3",
        ],
        normalize: false,
        cover: true,
    },
    Variant {
        name: "voice",
        options: &[("preset", "voice")],
        encoder: &[
            "-c:a", "libopus", "-b:a", "32k", "-ac", "1", "-ar", "48000", "-f", "ogg",
        ],
        normalize: true,
        cover: true,
    },
    Variant {
        name: "archive",
        options: &[("preset", "archive")],
        encoder: &["-c:a", "flac", "-f", "flac"],
        normalize: false,
        cover: true,
    },
];

fn ffmpeg(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let output = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Raw ffmpeg doing `variant`'s work on a local file, by hand; seconds taken.
fn raw_variant(variant: &Variant, input: &Path, dir: &Path) -> f64 {
    use std::ffi::OsStr;
    let os = |text: &'static str| OsStr::new(text);
    let started = Instant::now();
    let mut filter = None;
    if variant.normalize {
        let measured = ffmpeg(&[
            os("-i"),
            input.as_os_str(),
            os("-vn"),
            os("-af"),
            os("loudnorm=I=-16:TP=-2:LRA=11:print_format=json"),
            os("-f"),
            os("null"),
            os("-"),
        ]);
        let text = String::from_utf8_lossy(&measured.stderr);
        let value = |key: &str| {
            text.split(&format!("\"{key}\" : \""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("0")
                .to_owned()
        };
        filter = Some(format!(
            "loudnorm=I=-16:TP=-2:LRA=11:measured_I={}:measured_TP={}:measured_LRA={}:measured_thresh={}:offset={}:linear=true",
            value("input_i"),
            value("input_tp"),
            value("input_lra"),
            value("input_thresh"),
            value("target_offset")
        ));
    }
    let encoded = dir.join("raw-encoded");
    let mut args: Vec<&OsStr> = vec![os("-loglevel"), os("error"), os("-i"), input.as_os_str()];
    args.extend([os("-vn")]);
    if let Some(filter) = &filter {
        args.extend([os("-af"), OsStr::new(filter.as_str())]);
    }
    args.extend(variant.encoder.iter().map(|arg| OsStr::new(*arg)));
    args.push(encoded.as_os_str());
    ffmpeg(&args);
    let format = variant.encoder.last().copied().unwrap_or("mp3");
    let finished = dir.join("raw-finished");
    if variant.cover {
        let cover = dir.join("raw-cover.jpg");
        ffmpeg(&[
            os("-loglevel"),
            os("error"),
            os("-skip_frame"),
            os("nokey"),
            os("-ss"),
            os("6"),
            os("-i"),
            input.as_os_str(),
            os("-map"),
            os("0:v:0"),
            os("-vf"),
            os(
                "thumbnail=3,scale=w='min(600,iw)':h='min(600,ih)':force_original_aspect_ratio=decrease",
            ),
            os("-frames:v"),
            os("1"),
            os("-f"),
            os("image2"),
            cover.as_os_str(),
        ]);
        // Ogg takes no picture stream (the converter writes it as a comment): a plain copy.
        let mut args = vec![os("-loglevel"), os("error"), os("-i"), encoded.as_os_str()];
        if format != "ogg" {
            args.extend([
                os("-i"),
                cover.as_os_str(),
                os("-map"),
                os("0:a"),
                os("-map"),
            ]);
            args.extend([os("1:0"), os("-disposition:v:0"), os("attached_pic")]);
        }
        args.extend([os("-c"), os("copy"), os("-f"), OsStr::new(format)]);
        args.push(finished.as_os_str());
        ffmpeg(&args);
    }
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
    queue_job_with(storage, channel, queue, video_id, None).await
}

/// [`queue_job`] with audio options.
async fn queue_job_with(
    storage: &StorageClient,
    channel: &lapin::Channel,
    queue: &str,
    video_id: &str,
    options: Option<&AudioOptions>,
) -> anyhow::Result<String> {
    let job = storage
        .create_job(pb::CreateJobRequest {
            owner_id: "bench".into(),
            owner_email: "bench@example.com".into(),
            video_id: video_id.into(),
            original_filename: "bench.mp4".into(),
            options: options.map(AudioOptions::to_proto),
            ..Default::default()
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
    let mut env = vec![
        ("OPS_LISTEN_ADDR", format!("127.0.0.1:{ops}")),
        ("STORAGE_URL", storage_url.to_owned()),
        ("AMQP_URL", broker.url().to_owned()),
        ("CONCURRENCY", "1".into()),
        ("WORK_DIR", work_dir.display().to_string()),
    ];
    env.extend(queues.env_vars());
    let process = ServiceProcess::spawn_release("converter", &env);
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
    let queues = broker.queues();
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
    drop(second);

    // Per preset, each job right after raw ffmpeg doing the same work, round after round.
    let preset_runs = env_number("BENCH_PRESET_RUNS", 3).max(1);
    let mut preset_raw = vec![Vec::new(); VARIANTS.len()];
    let mut preset_jobs = vec![Vec::new(); VARIANTS.len()];
    for _ in 0..preset_runs {
        for (index, variant) in VARIANTS.iter().enumerate() {
            let options = parse_options(variant.options.iter().copied())?;
            preset_raw[index].push(raw_variant(variant, &input, dir.path()));
            let job_id = queue_job_with(
                &storage,
                &channel,
                &queues.video_queue,
                &video_id,
                Some(&options),
            )
            .await?;
            let started = Instant::now();
            wait_done(&storage, &job_id).await;
            preset_jobs[index].push(started.elapsed().as_secs_f64());
        }
    }
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
    println!();
    println!(
        "per preset: one job against raw ffmpeg doing the same work (1 worker, CONCURRENCY=1; median of {preset_runs} interleaved rounds)"
    );
    println!("| variant                       | raw (s) | job (s) | ratio | ratio of each round |");
    println!("|-------------------------------|---------|---------|-------|---------------------|");
    for (index, variant) in VARIANTS.iter().enumerate() {
        let ratios: Vec<f64> = preset_jobs[index]
            .iter()
            .zip(&preset_raw[index])
            .map(|(job, raw)| job / raw)
            .collect();
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {:<29} | {:>7.2} | {:>7.2} | {:>5.2} | {} |",
            variant.name,
            median(&preset_raw[index]),
            median(&preset_jobs[index]),
            median(&ratios),
            each.join(", ")
        );
    }
    let job_median = |name: &str| {
        VARIANTS
            .iter()
            .position(|variant| variant.name == name)
            .map_or(0.0, |index| median(&preset_jobs[index]))
    };
    println!(
        "the cover costs a job {:.2} s (defaults against defaults with cover=none); the loudness passes {:.2} s (podcast against podcast, normalize=false)",
        job_median("defaults (MP3 -V 2, cover)") - job_median("defaults, cover=none"),
        job_median("podcast") - job_median("podcast, normalize=false"),
    );
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
