//! Upload and download throughput through the gateway against the `mongodb` driver writing and
//! reading GridFS directly on the same server in the same run, and the peak memory (VmHWM) of
//! the gateway and storage processes across uploads of growing size.
//!
//! The services run as the release binaries, each its own process, so their memory is their
//! own:
//!
//! ```text
//! cargo build --release --bins && cargo bench -p gateway --bench upload_download
//! ```
//! Needs the MongoDB-wire server and RabbitMQ (`scripts/test --services-only` starts them).
//! `BENCH_MB` sets the throughput file size (default 256); `BENCH_RSS_MB` the sizes for the
//! memory column (default `64,1024`).

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use mongodb::bson::doc;
use proto::storage::v1 as pb;
use proto::storage::v1::storage_service_client::StorageServiceClient;
use std::time::{Duration, Instant};
use test_support::free_port;
use test_support::process::{ServiceProcess, wait_for_port};

const PIECE: usize = 1024 * 1024;
const PASSWORD: &str = "benchmark password";

fn main() -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run())
}

fn pieces(total: usize, seed: u64) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let piece = test_support::pseudo_random_bytes(PIECE, seed);
    futures::stream::iter((0..total.div_ceil(PIECE)).map(move |n| {
        let len = PIECE.min(total - n * PIECE);
        Ok(piece[..len].to_vec())
    }))
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

async fn run() -> anyhow::Result<()> {
    let size_mb: usize = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let rss_sizes: Vec<usize> = std::env::var("BENCH_RSS_MB")
        .unwrap_or_else(|_| "64,1024".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let size = size_mb * 1024 * 1024;
    let mongo = test_support::TestMongo::create().await?;
    let broker = test_support::TestBroker::create().await?;
    let data = tempfile::tempdir()?;

    // Direct: the driver's GridFS upload and download streams.
    let bucket = mongo.database().gridfs_bucket(None);
    let piece = test_support::pseudo_random_bytes(PIECE, 1);
    let started = Instant::now();
    let mut upload = bucket.open_upload_stream("direct").await?;
    for n in 0..size.div_ceil(PIECE) {
        upload
            .write_all(&piece[..PIECE.min(size - n * PIECE)])
            .await?;
    }
    upload.close().await?;
    let direct_up = mb_per_s(size, started.elapsed());
    let id = upload.id().clone();
    let started = Instant::now();
    let mut download = bucket.open_download_stream(id).await?;
    let mut buffer = vec![0u8; PIECE];
    let mut read = 0;
    loop {
        let n = download.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    assert_eq!(read, size);
    let direct_down = mb_per_s(size, started.elapsed());
    mongo
        .database()
        .collection::<mongodb::bson::Document>("fs.chunks")
        .delete_many(doc! {})
        .await?;

    // Through the mesh: auth (embedded SQLite), storage (same server), gateway.
    let (auth_port, auth_ops, storage_port, storage_ops, gateway_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let data_dir = data.path().display().to_string();
    let _auth = ServiceProcess::spawn_release(
        "auth",
        &[
            ("LISTEN_ADDR", format!("127.0.0.1:{auth_port}")),
            ("OPS_LISTEN_ADDR", format!("127.0.0.1:{auth_ops}")),
            ("DATA_DIR", data_dir.clone()),
        ],
    );
    let storage = ServiceProcess::spawn_release(
        "storage",
        &[
            ("LISTEN_ADDR", format!("127.0.0.1:{storage_port}")),
            ("OPS_LISTEN_ADDR", format!("127.0.0.1:{storage_ops}")),
            ("MONGODB_URI", mongo.uri().to_owned()),
            ("MONGODB_DATABASE", mongo.name().to_owned()),
            ("DATA_DIR", data_dir.clone()),
        ],
    );
    let gateway = ServiceProcess::spawn_release(
        "gateway",
        &[
            ("LISTEN_ADDR", format!("127.0.0.1:{gateway_port}")),
            ("AUTH_URL", format!("http://127.0.0.1:{auth_port}")),
            ("STORAGE_URL", format!("http://127.0.0.1:{storage_port}")),
            ("AMQP_URL", broker.url().to_owned()),
            ("VIDEO_QUEUE", broker.queue("video")),
            ("MP3_QUEUE", broker.queue("mp3")),
        ],
    );
    for port in [auth_port, storage_port, gateway_port] {
        wait_for_port(port).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = format!("http://127.0.0.1:{gateway_port}");
    let http = reqwest::Client::new();
    http.post(format!("{base}/register"))
        .json(&serde_json::json!({"email": "bench@example.com", "password": PASSWORD}))
        .send()
        .await?
        .error_for_status()?;
    let login: serde_json::Value = http
        .post(format!("{base}/login"))
        .basic_auth("bench@example.com", Some(PASSWORD))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = login["access_token"].as_str().unwrap().to_owned();

    let upload_through_gateway = |bytes: usize, seed: u64| {
        let http = http.clone();
        let base = base.clone();
        let token = token.clone();
        async move {
            let mut prefix = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
            prefix.resize(PIECE, 0);
            let body = futures::stream::once(async move { Ok::<_, std::io::Error>(prefix) })
                .chain(pieces(bytes - PIECE, seed));
            let part = reqwest::multipart::Part::stream_with_length(
                reqwest::Body::wrap_stream(body),
                bytes as u64,
            )
            .file_name("bench.mp4");
            let started = Instant::now();
            let accepted: serde_json::Value = http
                .post(format!("{base}/upload"))
                .bearer_auth(&token)
                .multipart(reqwest::multipart::Form::new().part("file", part))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok::<_, anyhow::Error>((started.elapsed(), accepted))
        }
    };
    let (elapsed, accepted) = upload_through_gateway(size, 2).await?;
    let gateway_up = mb_per_s(size, elapsed);

    // Make the upload the job's MP3 (as a converter would), then download it.
    let mut client = StorageServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{storage_port}"))?
            .connect()
            .await?,
    );
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    let job = client
        .get_job(pb::GetJobRequest {
            id: job_id.clone(),
            owner_id: String::new(),
        })
        .await?
        .into_inner()
        .job
        .unwrap();
    let header = pb::UploadRequest {
        content: Some(pb::upload_request::Content::Header(pb::UploadHeader {
            bucket: pb::Bucket::Mp3s.into(),
            owner_id: job.owner_id,
            filename: "bench.mp3".into(),
            content_type: "audio/mpeg".into(),
            job_id: job.id,
        })),
    };
    let messages = futures::stream::once(async { header })
        .chain(pieces(size, 3).map(|piece| pb::UploadRequest {
            content: Some(pb::upload_request::Content::Chunk(piece.unwrap().into())),
        }))
        .chain(futures::stream::once(async {
            pb::UploadRequest {
                content: Some(pb::upload_request::Content::Finish(pb::UploadFinish {})),
            }
        }));
    let mp3 = client.upload(messages).await?.into_inner().file.unwrap();
    for (from, to) in [
        (pb::JobState::Queued, pb::JobState::Converting),
        (pb::JobState::Converting, pb::JobState::Done),
    ] {
        client
            .transition_job(pb::TransitionJobRequest {
                id: job_id.clone(),
                from: from.into(),
                to: to.into(),
                mp3_id: mp3.id.clone(),
                error_reason: String::new(),
                claim: None,
            })
            .await?;
    }
    let started = Instant::now();
    let mut body = http
        .get(format!("{base}/download/{}", mp3.id))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .bytes_stream();
    let mut received = 0;
    while let Some(chunk) = body.next().await {
        received += chunk?.len();
    }
    assert_eq!(received, size);
    let gateway_down = mb_per_s(size, started.elapsed());

    println!();
    println!(
        "| {size_mb} MiB                | direct GridFS (driver) | through the gateway | ratio |"
    );
    println!("|-------------------------|-----------------------:|--------------------:|------:|");
    println!(
        "| upload MB/s             | {direct_up:>22.1} | {gateway_up:>19.1} | {:>5.2} |",
        gateway_up / direct_up
    );
    println!(
        "| download MB/s           | {direct_down:>22.1} | {gateway_down:>19.1} | {:>5.2} |",
        gateway_down / direct_down
    );
    println!();
    println!("| upload size | gateway peak RSS (MiB) | storage peak RSS (MiB) | upload MB/s |");
    println!("|------------:|-----------------------:|-----------------------:|------------:|");
    for (n, mb) in rss_sizes.iter().enumerate() {
        let (elapsed, _) = upload_through_gateway(mb * 1024 * 1024, 10 + n as u64).await?;
        println!(
            "| {:>7} MiB | {:>22.1} | {:>22.1} | {:>11.1} |",
            mb,
            gateway.peak_rss_mib(),
            storage.peak_rss_mib(),
            mb_per_s(mb * 1024 * 1024, elapsed)
        );
    }
    println!(
        "\n(peak RSS is VmHWM: the highest since the process started, so a flat column means memory did not grow with the file)"
    );
    Ok(())
}
