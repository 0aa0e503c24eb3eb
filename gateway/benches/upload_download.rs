//! Upload and download throughput through the gateway against the `mongodb` driver writing and
//! reading GridFS directly on the same server in the same run; resumable (tus) uploads through
//! the gateway in 5 MiB and 64 MiB PATCHes against the multipart path and against the tus
//! reference server for Node (`@tus/server` with its file store, from npm), driven by the same
//! client; and the peak memory (VmHWM) of the gateway and storage processes across uploads of
//! growing size, multipart and tus.
//!
//! The services run as the release binaries, each its own process, so their memory is their
//! own, and GridFS is on a MongoDB-wire server the benchmark starts for itself (so every run
//! begins on an empty one, and its CPU is measured beside the services'):
//!
//! ```text
//! cargo build --release --bins && cargo bench -p gateway --bench upload_download
//! ```
//! Needs RabbitMQ (`scripts/test --services-only` starts it), `secantusd-py` on `PATH` and Node
//! with `node_modules` (`scripts/install` installs both).
//! `BENCH_MB` sets the throughput file size (default 256), `BENCH_ROUNDS` how many interleaved
//! rounds of both sides are run (default 5, after one round not measured that warms the
//! servers up; this machine is noisy, so the table shows medians, every round's ratio, and
//! from five rounds on the range that holds a ratio's true median with a chance of 90 %,
//! which narrows with more rounds: read a goal from the range);
//! `BENCH_RSS_MB` the sizes for the memory column (default `64,1024`); `BENCH_PARTS` which
//! tables are measured, a comma-separated subset of `direct`, `tus` and `rss` (default all
//! three); `BENCH_SIDES` which sides of the `tus` table run, a comma-separated list of parts of
//! their names (`BENCH_SIDES='local,@tus/server 5'` runs the three local-directory sides and
//! the reference server in 5 MiB PATCHes; default all), so an A/B run of two binaries spends
//! its time on the sides it compares.

use clients::{Owner, StorageClient};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use mongodb::bson::{Bson, doc};
use mongodb::gridfs::GridFsBucket;
use proto::storage::v1 as pb;
use std::time::{Duration, Instant};
use test_support::bench::{env_number, median, median_interval, settle_disk};
use test_support::free_port;
use test_support::process::{ServiceProcess, cpu_times, wait_for_port};

const PIECE: usize = 1024 * 1024;
const PASSWORD: &str = "benchmark password";

fn main() -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run())
}

/// A median ratio as a table shows it: blank where its base was not measured, and with the
/// range that holds the true median with a chance of 90 % when the run had rounds enough (five
/// or more), so a goal is read from the range rather than from one noisy median.
fn ratio_cell(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return String::new();
    }
    let median = median(ratios);
    match median_interval(ratios, 0.9) {
        Some(range) => format!("{median:.2} [{:.2}, {:.2}]", range.low, range.high),
        None => format!("{median:.2}"),
    }
}

/// Every round's ratio, as a table lists them.
fn listed(ratios: &[f64]) -> String {
    let text: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    text.join(", ")
}

/// Leaves the machine as a side found it, so that no side pays for the one before: the
/// MongoDB-wire server checkpoints what the side wrote (its own checkpoint, every few seconds,
/// would otherwise write it out during the next side and bill that side's CPU; the sides of a
/// round always go in the same cyclic order, so the side after multipart on GridFS paid for
/// multipart's 256 MiB in every round), and the kernel writes back the page cache the side
/// dirtied (`@tus/server` never flushes its file store).
async fn settle(mongo: &mongodb::Database) -> anyhow::Result<()> {
    mongo
        .client()
        .database("admin")
        .run_command(doc! { "fsync": 1 })
        .await?;
    tokio::task::spawn_blocking(settle_disk).await??;
    Ok(())
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

/// Writes `size` bytes with the driver's GridFS upload stream; the time taken and the file id.
async fn direct_upload(bucket: &GridFsBucket, size: usize) -> anyhow::Result<(Duration, Bson)> {
    let piece = test_support::pseudo_random_bytes(PIECE, 1);
    let started = Instant::now();
    let mut upload = bucket.open_upload_stream("direct").await?;
    for n in 0..size.div_ceil(PIECE) {
        upload
            .write_all(&piece[..PIECE.min(size - n * PIECE)])
            .await?;
    }
    upload.close().await?;
    Ok((started.elapsed(), upload.id().clone()))
}

/// Reads the file `id` of `size` bytes with the driver's GridFS download stream.
async fn direct_download(bucket: &GridFsBucket, id: Bson, size: usize) -> anyhow::Result<Duration> {
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
    anyhow::ensure!(read == size, "read {read} of {size} bytes");
    Ok(started.elapsed())
}

/// The bytes of the benchmark's virtual file of `total` bytes from `offset` (a multiple of
/// [`PIECE`]) for `length` bytes: an MP4 signature in its first piece, pseudo-random data after.
fn file_range(
    offset: usize,
    length: usize,
    seed: u64,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let (first, piece) = pieces(seed);
    let end = offset + length;
    futures::stream::iter((offset / PIECE..end.div_ceil(PIECE)).map(move |n| {
        let start = n * PIECE;
        let len = PIECE.min(end - start);
        Ok(if n == 0 {
            first.slice(..len)
        } else {
            piece.slice(..len)
        })
    }))
}

/// The first piece of a file of `seed` (an MP4 signature, then zeros) and the piece every
/// other is, made once per seed: a client reads its file from disk, and making a MiB of
/// pseudo-random bytes for every request would charge the many small PATCHes of a tus upload
/// for work of this benchmark's own.
fn pieces(seed: u64) -> (bytes::Bytes, bytes::Bytes) {
    static MADE: std::sync::Mutex<Vec<(u64, bytes::Bytes, bytes::Bytes)>> =
        std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().expect("not poisoned");
    if let Some((_, first, piece)) = made.iter().find(|(made, ..)| *made == seed) {
        return (first.clone(), piece.clone());
    }
    let mut first = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    first.resize(PIECE, 0);
    let (first, piece) = (
        bytes::Bytes::from(first),
        bytes::Bytes::from(test_support::pseudo_random_bytes(PIECE, seed)),
    );
    made.push((seed, first.clone(), piece.clone()));
    (first, piece)
}

/// A tus server and the client that drives it (the same for both servers).
struct TusServer {
    http: reqwest::Client,
    /// The creation URL (`…/files/`).
    files: String,
    /// The gateway's bearer token; none for the reference server, which has no accounts.
    token: Option<String>,
}

impl TusServer {
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, url)
            .header("Tus-Resumable", "1.0.0");
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Creates an upload of `size` bytes and sends it in PATCHes of `patch_bytes`; the time
    /// from the creation to the last answer, and the job the gateway made of it (if any).
    async fn upload(
        &self,
        size: usize,
        patch_bytes: usize,
        seed: u64,
    ) -> anyhow::Result<(Duration, Option<String>)> {
        let started = Instant::now();
        let created = self
            .request(reqwest::Method::POST, &self.files)
            .header("Upload-Length", size)
            .header("Upload-Metadata", "filename YmVuY2gubXA0")
            .send()
            .await?
            .error_for_status()?;
        let location = created.headers()["location"].to_str()?.to_owned();
        let url = reqwest::Url::parse(&self.files)?
            .join(&location)?
            .to_string();
        let mut offset = 0;
        let mut job = None;
        while offset < size {
            let length = patch_bytes.min(size - offset);
            let answer = self
                .request(reqwest::Method::PATCH, &url)
                .header("Upload-Offset", offset)
                .header("Content-Type", "application/offset+octet-stream")
                .header("Content-Length", length)
                .body(reqwest::Body::wrap_stream(file_range(offset, length, seed)))
                .send()
                .await?
                .error_for_status()?;
            let kept: usize = answer.headers()["upload-offset"].to_str()?.parse()?;
            anyhow::ensure!(
                kept == offset + length,
                "kept {kept}, sent to {}",
                offset + length
            );
            job = answer
                .headers()
                .get("job-id")
                .map(|id| id.to_str().map(str::to_owned))
                .transpose()?;
            offset = kept;
        }
        Ok((started.elapsed(), job))
    }
}

/// A signed-in user of the gateway.
struct Gateway {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Gateway {
    async fn sign_in(base: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let email = "bench@example.com";
        test_support::rest::register(&http, &base, email, PASSWORD).await;
        let token = test_support::rest::login(&http, &base, email, PASSWORD).await;
        Ok(Self { http, base, token })
    }

    /// The same user, as a tus client.
    fn tus(&self) -> TusServer {
        TusServer {
            http: self.http.clone(),
            files: format!("{}/files/", self.base),
            token: Some(self.token.clone()),
        }
    }

    /// Uploads `bytes` bytes (an MP4 signature, then pseudo-random data) as one streamed
    /// multipart body; the time until the 202 and its body.
    async fn upload(
        &self,
        bytes: usize,
        seed: u64,
    ) -> anyhow::Result<(Duration, serde_json::Value)> {
        let body = file_range(0, bytes, seed);
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(body),
            bytes as u64,
        )
        .file_name("bench.mp4");
        let started = Instant::now();
        let accepted: serde_json::Value = self
            .http
            .post(format!("{}/upload", self.base))
            .bearer_auth(&self.token)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok((started.elapsed(), accepted))
    }

    /// Deletes an accepted upload's job and its files, so stored data does not pile up
    /// between rounds.
    async fn delete_job(&self, accepted: &serde_json::Value) -> anyhow::Result<()> {
        self.delete_job_id(accepted["job_id"].as_str().expect("a job id"))
            .await
    }

    async fn delete_job_id(&self, job_id: &str) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/jobs/{job_id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Reads the MP3 `mp3_id` of `size` bytes through `/download`.
    async fn download(&self, mp3_id: &str, size: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut body = self
            .http
            .get(format!("{}/download/{mp3_id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .bytes_stream();
        let mut received = 0;
        while let Some(chunk) = body.next().await {
            received += chunk?.len();
        }
        anyhow::ensure!(received == size, "received {received} of {size} bytes");
        Ok(started.elapsed())
    }

    /// A finished job whose MP3 has `size` bytes, made as a converter would (upload, store
    /// an "MP3" through storage, mark the job done); the MP3's id.
    async fn downloadable_mp3(
        &self,
        storage: &StorageClient,
        size: usize,
    ) -> anyhow::Result<String> {
        let (_, accepted) = self.upload(PIECE, 2).await?;
        let job_id = accepted["job_id"].as_str().unwrap().to_owned();
        let job = storage.job(&job_id, &Owner::Any).await?;
        let mut upload = storage.upload(pb::UploadHeader {
            bucket: pb::Bucket::Mp3s.into(),
            owner_id: job.owner_id.clone(),
            filename: "bench.mp3".into(),
            content_type: "audio/mpeg".into(),
            job_id: job.id.clone(),
        });
        let mut pieces = std::pin::pin!(file_range(0, size, 3));
        while let Some(piece) = pieces.next().await {
            if !upload.send(piece?).await {
                break;
            }
        }
        let mp3 = upload.finish().await?;
        let claimed = storage.claim(&job, pb::JobState::Queued).await?;
        storage.mark_done(&claimed, &mp3.id).await?;
        Ok(mp3.id)
    }
}

async fn run() -> anyhow::Result<()> {
    let size_mb = env_number("BENCH_MB", 256);
    let rss_sizes: Vec<usize> = std::env::var("BENCH_RSS_MB")
        .unwrap_or_else(|_| "64,1024".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let rounds = env_number("BENCH_ROUNDS", 5).max(1);
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "direct,tus,rss".into());
    let part = |name: &str| parts.split(',').any(|part| part.trim() == name);
    let size = size_mb * 1024 * 1024;
    let mongo_server = test_support::MongoServer::start().await?;
    let mongo = test_support::TestMongo::on(mongo_server.uri()).await?;
    let broker = test_support::TestBroker::create().await?;
    let data = tempfile::tempdir()?;

    // Through the mesh: auth (embedded SQLite), storage (same server), gateway.
    let (auth_port, auth_ops, storage_port, storage_ops, gateway_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let auth = ServiceProcess::spawn_release(
        "auth",
        &[
            ("LISTEN_ADDR", format!("127.0.0.1:{auth_port}")),
            ("OPS_LISTEN_ADDR", format!("127.0.0.1:{auth_ops}")),
            ("DATA_DIR", data.path().display().to_string()),
        ],
    );
    let storage =
        ServiceProcess::spawn_release_storage(storage_port, storage_ops, &mongo, data.path());
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
    let gateway_client = Gateway::sign_in(format!("http://127.0.0.1:{gateway_port}")).await?;
    let storage_client =
        StorageClient::connect_lazy(&format!("http://127.0.0.1:{storage_port}"), None)?;
    let mp3_id = gateway_client
        .downloadable_mp3(&storage_client, size)
        .await?;
    let bucket = mongo.database().gridfs_bucket(None);

    // Rounds alternate which side goes first, so a slow spell of the machine (or of the
    // MongoDB-wire server) lands on both sides instead of on one.
    let mut rows = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for round in (0..rounds).filter(|_| part("direct")) {
        let mut direct_up = Duration::ZERO;
        let mut gateway_up = Duration::ZERO;
        let mut direct_id = None;
        for direct_first in [round % 2 == 0, round % 2 == 1] {
            if direct_first {
                let (elapsed, id) = direct_upload(&bucket, size).await?;
                direct_up = elapsed;
                direct_id = Some(id);
            } else {
                let (elapsed, accepted) = gateway_client.upload(size, 20 + round as u64).await?;
                gateway_up = elapsed;
                gateway_client.delete_job(&accepted).await?;
            }
            settle(&mongo.database()).await?;
        }
        let direct_id = direct_id.expect("the direct side ran");
        let mut direct_down = Duration::ZERO;
        let mut gateway_down = Duration::ZERO;
        for direct_first in [round % 2 == 0, round % 2 == 1] {
            if direct_first {
                direct_down = direct_download(&bucket, direct_id.clone(), size).await?;
            } else {
                gateway_down = gateway_client.download(&mp3_id, size).await?;
            }
        }
        bucket.delete(direct_id).await?;
        for (row, elapsed) in
            rows.iter_mut()
                .zip([direct_up, gateway_up, direct_down, gateway_down])
        {
            row.push(mb_per_s(size, elapsed));
        }
    }
    let [direct_up, gateway_up, direct_down, gateway_down] = rows;
    let ratios = |gateway: &[f64], direct: &[f64]| -> Vec<f64> {
        gateway.iter().zip(direct).map(|(g, d)| g / d).collect()
    };
    let up_ratios = ratios(&gateway_up, &direct_up);
    let down_ratios = ratios(&gateway_down, &direct_down);

    if part("direct") {
        println!();
        println!(
            "{size_mb} MiB, {rounds} interleaved rounds: medians, and the ratio of each round (gateway / direct; \
             a [range] as in the tus table below)"
        );
        println!(
            "|               | direct GridFS (driver) | through the gateway | ratio | ratio per round |"
        );
        println!(
            "|---------------|-----------------------:|--------------------:|------:|-----------------|"
        );
        for (label, direct, gateway, ratios) in [
            ("upload MB/s  ", &direct_up, &gateway_up, &up_ratios),
            ("download MB/s", &direct_down, &gateway_down, &down_ratios),
        ] {
            println!(
                "| {label} | {:>22.1} | {:>19.1} | {} | {} |",
                median(direct),
                median(gateway),
                ratio_cell(ratios),
                listed(ratios)
            );
        }
    }

    // Resumable uploads: the gateway's tus against its own multipart path and against the tus
    // reference server for Node, each in 5 MiB and 64 MiB PATCHes, by the same client.
    let reference_dir = tempfile::tempdir()?;
    let reference_port = free_port();
    let tools = concat!(env!("CARGO_MANIFEST_DIR"), "/../test-support/tools");
    let reference_server = tokio::process::Command::new("node")
        .arg(format!("{tools}/tus_node_server.mjs"))
        .arg(reference_port.to_string())
        .arg(reference_dir.path())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_for_port(reference_port).await;
    let reference = TusServer {
        http: reqwest::Client::new(),
        files: format!("http://127.0.0.1:{reference_port}/files/"),
        token: None,
    };
    let ours = gateway_client.tus();
    // The same, on storage's local directory (the embedded default): the like of the
    // reference server's file store, where GridFS on the MongoDB-wire server is the slower
    // part of the first pair.
    let local_data = tempfile::tempdir()?;
    let (local_storage_port, local_storage_ops, local_gateway_port) =
        (free_port(), free_port(), free_port());
    let local_storage = ServiceProcess::spawn_release(
        "storage",
        &[
            ("LISTEN_ADDR", format!("127.0.0.1:{local_storage_port}")),
            ("OPS_LISTEN_ADDR", format!("127.0.0.1:{local_storage_ops}")),
            ("DATA_DIR", local_data.path().display().to_string()),
        ],
    );
    let local_gateway = ServiceProcess::spawn_release(
        "gateway",
        &[
            ("LISTEN_ADDR", format!("127.0.0.1:{local_gateway_port}")),
            ("AUTH_URL", format!("http://127.0.0.1:{auth_port}")),
            (
                "STORAGE_URL",
                format!("http://127.0.0.1:{local_storage_port}"),
            ),
            ("AMQP_URL", broker.url().to_owned()),
            ("VIDEO_QUEUE", broker.queue("video")),
            ("MP3_QUEUE", broker.queue("mp3")),
        ],
    );
    for port in [local_storage_port, local_gateway_port] {
        wait_for_port(port).await;
    }
    let local_client = Gateway {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{local_gateway_port}"),
        token: gateway_client.token.clone(),
    };
    let local = local_client.tus();
    const SMALL_PATCH: usize = 5 * 1024 * 1024;
    const LARGE_PATCH: usize = 64 * 1024 * 1024;
    let sides = [
        "multipart (GridFS)",
        "tus 5 MiB (GridFS)",
        "tus 64 MiB (GridFS)",
        "@tus/server 5 MiB (file store)",
        "@tus/server 64 MiB (file store)",
        "multipart (local directory)",
        "tus 5 MiB (local directory)",
        "tus 64 MiB (local directory)",
    ];
    let wanted_sides = std::env::var("BENCH_SIDES").unwrap_or_default();
    let measured: Vec<bool> = sides
        .iter()
        .map(|name| {
            wanted_sides.is_empty()
                || wanted_sides
                    .split(',')
                    .any(|wanted| name.contains(wanted.trim()))
        })
        .collect();
    // The sides run, in the order a round goes through them.
    let chosen: Vec<usize> = (0..sides.len()).filter(|&side| measured[side]).collect();
    let mut speeds = vec![Vec::new(); sides.len()];
    // CPU seconds per GiB uploaded, each round: the server that answers the client (the
    // gateway, or the reference server), storage, auth, the client (this process) and the
    // MongoDB-wire server (a Python program, which on GridFS spends three to four times what
    // the services do together, and so sets the pace there).
    let mut cpu = vec![Vec::new(); sides.len()];
    let reference_pid = reference_server.id().unwrap_or_default();
    let mongo_pid = mongo_server.pid().unwrap_or_default();
    let processes = |side: usize| match side {
        0..=2 => [gateway.id(), storage.id(), auth.id(), mongo_pid],
        3 | 4 => [reference_pid, 0, 0, 0],
        _ => [local_gateway.id(), local_storage.id(), auth.id(), 0],
    };
    let cpu_now = |side: usize| {
        let [server, storage, auth, mongo] = processes(side);
        [server, storage, auth, std::process::id(), mongo].map(|pid| match pid {
            0 => 0.0,
            pid => cpu_times(pid).own,
        })
    };
    // Round 0 is not measured: it warms every server up (Node compiles `@tus/server`'s code
    // during its first upload, which ran at two thirds of its later speed).
    for round in (0..=rounds).filter(|_| part("tus")) {
        // Each round starts with another of the chosen sides, so a slow spell lands on every
        // side in turn; two chosen sides swap places every round (rotating over all eight ran
        // them in the same order in most rounds).
        for turn in 0..chosen.len() {
            let side = chosen[(turn + round) % chosen.len()];
            let seed = 40 + round as u64;
            let cpu_before = cpu_now(side);
            let elapsed = match side {
                0 => {
                    let (elapsed, accepted) = gateway_client.upload(size, seed).await?;
                    gateway_client.delete_job(&accepted).await?;
                    elapsed
                }
                1 | 2 => {
                    let patch = if side == 1 { SMALL_PATCH } else { LARGE_PATCH };
                    let (elapsed, job) = ours.upload(size, patch, seed).await?;
                    let job = job.ok_or_else(|| anyhow::anyhow!("the last PATCH named no job"))?;
                    gateway_client.delete_job_id(&job).await?;
                    elapsed
                }
                3 | 4 => {
                    let patch = if side == 3 { SMALL_PATCH } else { LARGE_PATCH };
                    let (elapsed, _) = reference.upload(size, patch, seed).await?;
                    // Its file store keeps every upload: clear it between rounds.
                    for entry in std::fs::read_dir(reference_dir.path())? {
                        std::fs::remove_file(entry?.path())?;
                    }
                    elapsed
                }
                5 => {
                    let (elapsed, accepted) = local_client.upload(size, seed).await?;
                    local_client.delete_job(&accepted).await?;
                    elapsed
                }
                _ => {
                    let patch = if side == 6 { SMALL_PATCH } else { LARGE_PATCH };
                    let (elapsed, job) = local.upload(size, patch, seed).await?;
                    let job = job.ok_or_else(|| anyhow::anyhow!("the last PATCH named no job"))?;
                    local_client.delete_job_id(&job).await?;
                    elapsed
                }
            };
            // Before the CPU is read: the server's checkpoint of this side's chunks is this
            // side's cost (its time, MB/s, is the upload's alone, as for every side).
            settle(&mongo.database()).await?;
            if round == 0 {
                continue;
            }
            speeds[side].push(mb_per_s(size, elapsed));
            let gib = size as f64 / f64::from(1u32 << 30);
            let cpu_after = cpu_now(side);
            cpu[side].push(std::array::from_fn::<f64, 5, _>(|n| {
                (cpu_after[n] - cpu_before[n]) / gib
            }));
        }
    }
    // Each round's ratio of one side's speed to another's (none where either was not run).
    let per_round = |values: &[f64], base: &[f64]| -> Vec<f64> {
        values.iter().zip(base).map(|(v, b)| v / b).collect()
    };
    if part("tus") {
        println!();
        println!(
            "{size_mb} MiB uploads, {rounds} interleaved rounds: medians, and each round's ratios \
             (a ratio's [range] holds its true median with a chance of at least 90 %; it needs \
             five rounds or more)"
        );
        println!(
            "| side | MB/s | every round (MB/s) | ÷ multipart (same backend) | per round | ÷ @tus/server (same PATCH size) | per round |"
        );
        println!("|---|---:|---|---:|---|---:|---|");
        for (side, name) in sides.iter().enumerate().filter(|(side, _)| measured[*side]) {
            let every: Vec<String> = speeds[side].iter().map(|v| format!("{v:.0}")).collect();
            // Each side against the multipart path on the same storage backend, and a tus side
            // against the reference server with PATCHes of the same size.
            let multipart = if side >= 5 { 5 } else { 0 };
            let vs_multipart = per_round(&speeds[side], &speeds[multipart]);
            let vs_reference = match side {
                1 | 2 => per_round(&speeds[side], &speeds[side + 2]),
                6 | 7 => per_round(&speeds[side], &speeds[side - 3]),
                _ => Vec::new(),
            };
            println!(
                "| {name} | {:.1} | {} | {} | {} | {} | {} |",
                median(&speeds[side]),
                every.join(", "),
                ratio_cell(&vs_multipart),
                listed(&vs_multipart),
                ratio_cell(&vs_reference),
                listed(&vs_reference),
            );
        }
    }
    if part("tus") {
        println!();
        println!(
            "CPU seconds per GiB uploaded, medians over the rounds (each round's in brackets; the \
             client is this benchmark's process, which also deletes each upload's job)"
        );
        println!(
            "| side | server (gateway or @tus/server) | storage | auth | client | in all | MongoDB-wire server |"
        );
        println!("|---|---|---|---|---|---:|---|");
        for (side, name) in sides.iter().enumerate().filter(|(side, _)| measured[*side]) {
            let column = |n: usize| {
                let values: Vec<f64> = cpu[side].iter().map(|round: &[f64; 5]| round[n]).collect();
                let every: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
                format!("{:.2} ({})", median(&values), every.join(", "))
            };
            // The MongoDB-wire server stands in for a real MongoDB and is not ours: kept out
            // of the total, so the sides compare with `@tus/server`'s as they did before.
            let totals: Vec<f64> = cpu[side]
                .iter()
                .map(|round| round[..4].iter().sum())
                .collect();
            let mongo = if side <= 2 { column(4) } else { String::new() };
            println!(
                "| {name} | {} | {} | {} | {} | {:.2} | {mongo} |",
                column(0),
                column(1),
                column(2),
                column(3),
                median(&totals)
            );
        }
    }
    if !part("rss") {
        return Ok(());
    }

    println!();
    println!(
        "| upload size | path | gateway peak RSS (MiB) | storage peak RSS (MiB) | upload MB/s |"
    );
    println!("|------------:|---|-----------------------:|-----------------------:|------------:|");
    for (n, mb) in rss_sizes.iter().enumerate() {
        let bytes = mb * 1024 * 1024;
        let (elapsed, accepted) = gateway_client.upload(bytes, 10 + n as u64).await?;
        gateway_client.delete_job(&accepted).await?;
        println!(
            "| {:>7} MiB | multipart | {:>22.1} | {:>22.1} | {:>11.1} |",
            mb,
            gateway.peak_rss_mib(),
            storage.peak_rss_mib(),
            mb_per_s(bytes, elapsed)
        );
        let (elapsed, job) = ours.upload(bytes, LARGE_PATCH, 30 + n as u64).await?;
        if let Some(job) = job {
            gateway_client.delete_job_id(&job).await?;
        }
        println!(
            "| {:>7} MiB | tus, 64 MiB PATCHes | {:>22.1} | {:>22.1} | {:>11.1} |",
            mb,
            gateway.peak_rss_mib(),
            storage.peak_rss_mib(),
            mb_per_s(bytes, elapsed)
        );
    }
    println!(
        "\n(peak RSS is VmHWM: the highest since the process started, so a flat column means memory did not grow with the file)"
    );
    Ok(())
}
