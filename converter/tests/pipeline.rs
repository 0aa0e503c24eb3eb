//! The asynchronous half end to end: real gateway, auth, storage, RabbitMQ, ffmpeg, SMTP
//! capture, the converter (in this process, or as its real binary where a test kills it) and
//! the notifier. Every test has its own queues, databases and mail server.

#[path = "../../gateway/tests/common/mod.rs"]
mod mesh;

use clap::Parser;
use mesh::{Mesh, MeshOptions, User};
use messaging::RetryConfig;
use proto::storage::v1 as pb;
use reqwest::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use test_support::{
    SmtpCapture, TcpProxy, TempDir, TestServer, VideoSpec, ffprobe_duration_seconds, free_port,
    mp4_bytes, temp_dir,
};

/// Retries in these tests wait a fraction of a second, not minutes.
const RETRY_BASE_DELAY_MS: &str = "200";
const RETRY_MAX_DELAY_MS: &str = "1000";
const MAX_ATTEMPTS: &str = "4";
/// Long enough for every conversion here on a loaded 2-core machine.
const JOB_WAIT: Duration = Duration::from_secs(120);

/// The mesh plus the workers' shared settings.
struct Pipeline {
    mesh: Mesh,
    work_dir: TempDir,
}

impl Pipeline {
    async fn start() -> Self {
        let mesh = Mesh::start(MeshOptions::default()).await;
        let retry = RetryConfig {
            max_attempts: MAX_ATTEMPTS.parse().unwrap(),
            retry_base_delay_ms: RETRY_BASE_DELAY_MS.parse().unwrap(),
            retry_max_delay_ms: RETRY_MAX_DELAY_MS.parse().unwrap(),
        };
        for queue in [&mesh.video_queue, &mesh.mp3_queue] {
            for (_, name) in retry.retry_queues(queue) {
                mesh.broker.remember(name);
            }
        }
        Self {
            mesh,
            work_dir: temp_dir(),
        }
    }

    fn amqp_url(&self) -> String {
        self.mesh.broker.url().to_owned()
    }

    /// The settings both workers share, as `(variable, value)` pairs.
    fn worker_env(&self, amqp_url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("STORAGE_URL", self.mesh.storage_server.url()),
            ("AMQP_URL", amqp_url.to_owned()),
            ("VIDEO_QUEUE", self.mesh.video_queue.clone()),
            ("MP3_QUEUE", self.mesh.mp3_queue.clone()),
            ("MAX_ATTEMPTS", MAX_ATTEMPTS.into()),
            ("RETRY_BASE_DELAY_MS", RETRY_BASE_DELAY_MS.into()),
            ("RETRY_MAX_DELAY_MS", RETRY_MAX_DELAY_MS.into()),
            ("LOG_FORMAT", "pretty".into()),
        ]
    }

    fn converter_args(&self, amqp_url: &str, concurrency: u16) -> Vec<String> {
        let mut args = vec!["converter".to_owned()];
        let mut env = self.worker_env(amqp_url);
        env.push(("WORK_DIR", self.work_dir.path().display().to_string()));
        env.push(("CONCURRENCY", concurrency.to_string()));
        for (variable, value) in env {
            args.push(format!("--{}", variable.to_lowercase().replace('_', "-")));
            args.push(value);
        }
        args
    }

    /// A converter in this process.
    async fn converter(&self, amqp_url: &str, concurrency: u16) -> TestServer {
        self.converter_with(amqp_url, concurrency, &[]).await
    }

    /// A converter in this process, with extra flags.
    async fn converter_with(&self, amqp_url: &str, concurrency: u16, extra: &[&str]) -> TestServer {
        let mut args = self.converter_args(amqp_url, concurrency);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let config = converter::Cli::try_parse_from(args).unwrap().config;
        TestServer::start(|ops, shutdown| converter::serve(config, ops, shutdown))
            .await
            .unwrap()
    }

    /// A converter as its own process (so a test can kill it), with its ops endpoint on
    /// `ops_port`.
    fn converter_process(&self, concurrency: u16, ops_port: u16) -> tokio::process::Child {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_converter"));
        command.args(&self.converter_args(&self.amqp_url(), concurrency)[1..]);
        command
            .env("OPS_LISTEN_ADDR", format!("127.0.0.1:{ops_port}"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command.spawn().expect("the converter binary starts")
    }

    /// A notifier in this process, mailing through `smtp_url`.
    async fn notifier(&self, amqp_url: &str, smtp_url: &str) -> TestServer {
        let mut args = vec!["notifier".to_owned()];
        let mut env = self.worker_env(amqp_url);
        env.push(("SMTP_URL", smtp_url.to_owned()));
        env.push(("PUBLIC_BASE_URL", "https://mp3.example.com".into()));
        env.push(("DATA_DIR", self.mesh.data_dir().display().to_string()));
        for (variable, value) in env {
            args.push(format!("--{}", variable.to_lowercase().replace('_', "-")));
            args.push(value);
        }
        let config = notifier::Cli::try_parse_from(args).unwrap().config;
        TestServer::start(|ops, shutdown| notifier::serve(config, ops, shutdown))
            .await
            .unwrap()
    }

    /// Uploads a video through the gateway; returns the job id.
    async fn upload(&self, user: &User, name: &str, bytes: Vec<u8>) -> String {
        let response = self.mesh.upload(&user.token, name, bytes).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json::<Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn job(&self, job_id: &str) -> pb::Job {
        self.mesh
            .storage
            .job(job_id, &clients::Owner::Any)
            .await
            .unwrap()
    }

    /// Waits until `job_id` satisfies `done`, or fails the test after `timeout`.
    async fn wait_for_job(
        &self,
        job_id: &str,
        timeout: Duration,
        done: impl Fn(&pb::Job) -> bool,
    ) -> pb::Job {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.job(job_id).await;
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job never got there; last seen: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_until_ended(&self, job_id: &str) -> pb::Job {
        self.wait_for_job(job_id, JOB_WAIT, |job| {
            matches!(job.state(), pb::JobState::Done | pb::JobState::Failed) && job.notified
        })
        .await
    }

    /// The MP3s storage holds for `owner`.
    async fn stored_mp3s(&self, owner: &str) -> Vec<pb::FileInfo> {
        self.mesh.stored_files(pb::Bucket::Mp3s, owner).await
    }

    /// Messages waiting in `queue`.
    async fn waiting(&self, queue: &str) -> u32 {
        let connection = self.mesh.broker.connect().await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let declared = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "ok".into()).await;
        declared.message_count()
    }
}

/// A counter's value in a Prometheus text exposition (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Mails stay at `count` for a while: nothing more is on its way.
async fn assert_mail_count_stays(smtp: &SmtpCapture, count: usize) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.mails().len(), count, "{:#?}", smtp.mails());
}

#[tokio::test]
async fn an_uploaded_video_becomes_an_mp3_that_is_emailed_and_downloads_with_its_duration() {
    let pipeline = Pipeline::start().await;
    let smtp = SmtpCapture::start().unwrap();
    let _converter = pipeline.converter(&pipeline.amqp_url(), 2).await;
    let _notifier = pipeline.notifier(&pipeline.amqp_url(), &smtp.url()).await;
    let user = pipeline.mesh.user("listener@example.com").await;

    let job_id = pipeline
        .upload(&user, "holiday.mp4", mp4_bytes(VideoSpec::small(3.0)).await)
        .await;
    let job = pipeline.wait_until_ended(&job_id).await;
    assert_eq!(job.state(), pb::JobState::Done, "{job:?}");
    assert_eq!(job.progress_percent, 100);
    assert_eq!(job.attempts, 1);

    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["listener@example.com"]);
    let text = mails[0].text();
    assert!(text.contains("Your MP3 of holiday.mp4 is ready"), "{text}");
    assert!(
        text.contains(&format!("https://mp3.example.com/download/{}", job.mp3_id)),
        "{text}"
    );

    let download = pipeline
        .mesh
        .http
        .get(pipeline.mesh.url(&format!("/download/{}", job.mp3_id)))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.headers()["content-type"], "audio/mpeg");
    let dir = temp_dir();
    let mp3 = dir.path().join("holiday.mp3");
    tokio::fs::write(&mp3, download.bytes().await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        test_support::media::ffprobe_codecs(&mp3).await.unwrap(),
        ["mp3"]
    );
    let seconds = ffprobe_duration_seconds(&mp3).await.unwrap();
    assert!((seconds - 3.0).abs() <= 0.2, "the MP3 lasts {seconds} s");
    assert_eq!(pipeline.stored_mp3s(&user.id).await.len(), 1);
    assert_mail_count_stays(&smtp, 1).await;
}

#[tokio::test]
async fn two_converter_processes_share_a_burst_of_jobs() {
    const JOBS: usize = 6;
    let pipeline = Pipeline::start().await;
    let smtp = SmtpCapture::start().unwrap();
    let _notifier = pipeline.notifier(&pipeline.amqp_url(), &smtp.url()).await;
    let ports = [free_port(), free_port()];
    let mut workers: Vec<_> = ports
        .iter()
        .map(|port| pipeline.converter_process(1, *port))
        .collect();
    let user = pipeline.mesh.user("burst@example.com").await;
    let clip = mp4_bytes(VideoSpec::small(4.0)).await;
    let mut jobs = Vec::new();
    for n in 0..JOBS {
        jobs.push(
            pipeline
                .upload(&user, &format!("clip-{n}.mp4"), clip.clone())
                .await,
        );
    }
    for job_id in &jobs {
        let job = pipeline.wait_until_ended(job_id).await;
        assert_eq!(job.state(), pb::JobState::Done, "{job:?}");
    }

    let mut per_worker = Vec::new();
    for port in ports {
        let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        per_worker.push(counter(&metrics, "converter_jobs_succeeded_total"));
    }
    assert_eq!(
        per_worker.iter().sum::<f64>(),
        JOBS as f64,
        "{per_worker:?}"
    );
    assert!(
        per_worker.iter().all(|&done| done >= 1.0),
        "both workers converted: {per_worker:?}"
    );
    assert_eq!(pipeline.stored_mp3s(&user.id).await.len(), JOBS);
    assert_eq!(
        smtp.wait_for(JOBS, Duration::from_secs(30)).await.len(),
        JOBS
    );
    for worker in &mut workers {
        worker.start_kill().unwrap();
    }
}

#[tokio::test]
async fn a_silent_video_and_a_corrupt_file_fail_once_with_a_failure_email_and_no_retries() {
    let pipeline = Pipeline::start().await;
    let smtp = SmtpCapture::start().unwrap();
    let _converter = pipeline.converter(&pipeline.amqp_url(), 2).await;
    let _notifier = pipeline.notifier(&pipeline.amqp_url(), &smtp.url()).await;
    let user = pipeline.mesh.user("unlucky@example.com").await;

    let silent = pipeline
        .upload(
            &user,
            "silent.mp4",
            mp4_bytes(VideoSpec::small(2.0).without_audio()).await,
        )
        .await;
    let corrupt = pipeline
        .upload(&user, "corrupt.mp4", mesh::mp4_like(64 * 1024, 7))
        .await;
    for (job_id, reason) in [(&silent, "no sound track"), (&corrupt, "could not be read")] {
        let job = pipeline.wait_until_ended(job_id).await;
        assert_eq!(job.state(), pb::JobState::Failed, "{job:?}");
        assert!(job.error_reason.contains(reason), "{job:?}");
        assert_eq!(job.attempts, 1, "no second attempt: {job:?}");
    }
    let mails = smtp.wait_for(2, Duration::from_secs(30)).await;
    let texts: Vec<String> = mails.iter().map(|mail| mail.text()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("We could not convert silent.mp4") && t.contains("no sound track")),
        "{texts:#?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("We could not convert corrupt.mp4")),
        "{texts:#?}"
    );
    assert_mail_count_stays(&smtp, 2).await;
    assert!(pipeline.stored_mp3s(&user.id).await.is_empty());
    let dead = messaging::QueueConfig::dead_letter_queue(&pipeline.mesh.video_queue);
    assert_eq!(
        pipeline.waiting(&dead).await,
        0,
        "nothing was dead-lettered"
    );
}

#[tokio::test]
async fn a_converter_killed_mid_job_leaves_exactly_one_mp3_and_one_email() {
    let pipeline = Pipeline::start().await;
    let smtp = SmtpCapture::start().unwrap();
    let _notifier = pipeline.notifier(&pipeline.amqp_url(), &smtp.url()).await;
    let mut doomed = pipeline.converter_process(1, free_port());
    let user = pipeline.mesh.user("patient@example.com").await;
    let job_id = pipeline
        .upload(
            &user,
            "lecture.mp4",
            mp4_bytes(VideoSpec::long_conversion()).await,
        )
        .await;
    pipeline
        .wait_for_job(&job_id, JOB_WAIT, |job| {
            job.state() == pb::JobState::Converting && job.progress_percent > 0
        })
        .await;
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();

    let _survivor = pipeline.converter(&pipeline.amqp_url(), 1).await;
    let job = pipeline.wait_until_ended(&job_id).await;
    assert_eq!(job.state(), pb::JobState::Done, "{job:?}");
    assert_eq!(job.attempts, 2, "taken over once: {job:?}");
    let mp3s = pipeline.stored_mp3s(&user.id).await;
    assert_eq!(mp3s.len(), 1, "{mp3s:?}");
    assert_eq!(mp3s[0].id, job.mp3_id);
    assert_eq!(smtp.wait_for(1, Duration::from_secs(30)).await.len(), 1);
    assert_mail_count_stays(&smtp, 1).await;
}

#[tokio::test]
async fn a_converter_shut_down_past_its_grace_period_hands_the_job_back_for_another() {
    let pipeline = Pipeline::start().await;
    let smtp = SmtpCapture::start().unwrap();
    let _notifier = pipeline.notifier(&pipeline.amqp_url(), &smtp.url()).await;
    let stopping = pipeline
        .converter_with(&pipeline.amqp_url(), 1, &["--shutdown-grace-seconds", "0"])
        .await;
    let user = pipeline.mesh.user("handed-back@example.com").await;
    let job_id = pipeline
        .upload(
            &user,
            "lecture.mp4",
            mp4_bytes(VideoSpec::long_conversion()).await,
        )
        .await;
    pipeline
        .wait_for_job(&job_id, JOB_WAIT, |job| {
            job.state() == pb::JobState::Converting && job.progress_percent > 0
        })
        .await;

    stopping.stop().await.unwrap();
    let job = pipeline.job(&job_id).await;
    assert_eq!(job.state(), pb::JobState::Queued, "handed back: {job:?}");
    assert_eq!(pipeline.waiting(&pipeline.mesh.video_queue).await, 1);
    let leftovers: Vec<_> = std::fs::read_dir(pipeline.work_dir.path())
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "temp files removed: {leftovers:?}");

    let _next = pipeline.converter(&pipeline.amqp_url(), 1).await;
    let job = pipeline.wait_until_ended(&job_id).await;
    assert_eq!(job.state(), pb::JobState::Done, "{job:?}");
    assert_eq!(pipeline.stored_mp3s(&user.id).await.len(), 1);
    assert_mail_count_stays(&smtp, 1).await;
}

#[tokio::test]
async fn a_mail_server_that_is_down_then_up_gets_exactly_one_email() {
    let pipeline = Pipeline::start().await;
    let smtp_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _converter = pipeline.converter(&pipeline.amqp_url(), 1).await;
    let _notifier = pipeline
        .notifier(&pipeline.amqp_url(), &format!("smtp://{smtp_addr}"))
        .await;
    let user = pipeline.mesh.user("eventually@example.com").await;
    let job_id = pipeline
        .upload(&user, "late.mp4", mp4_bytes(VideoSpec::small(2.0)).await)
        .await;
    let job = pipeline
        .wait_for_job(&job_id, JOB_WAIT, |job| job.state() == pb::JobState::Done)
        .await;
    // The first attempt finds nobody listening; the mail server comes up during the retries.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pipeline.job(&job_id).await.notified);
    let smtp = SmtpCapture::start_on(smtp_addr).unwrap();
    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1);
    assert!(mails[0].text().contains(&job.mp3_id));
    pipeline.wait_until_ended(&job_id).await;
    assert_mail_count_stays(&smtp, 1).await;
}

#[tokio::test]
async fn workers_recover_when_the_broker_drops_their_connections_and_lose_nothing() {
    const JOBS: usize = 4;
    let pipeline = Pipeline::start().await;
    let smtp = SmtpCapture::start().unwrap();
    let broker_addr: SocketAddr = {
        let url = pipeline.amqp_url();
        let host_port = url.split('@').nth(1).unwrap().split('/').next().unwrap();
        tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = TcpProxy::start(broker_addr).await.unwrap();
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let _converter = pipeline.converter(&through_proxy, 2).await;
    let _notifier = pipeline.notifier(&through_proxy, &smtp.url()).await;
    let user = pipeline.mesh.user("resilient@example.com").await;
    let clip = mp4_bytes(VideoSpec::small(3.0)).await;

    let mut jobs = Vec::new();
    for n in 0..JOBS {
        jobs.push(
            pipeline
                .upload(&user, &format!("clip-{n}.mp4"), clip.clone())
                .await,
        );
        if n == 1 {
            // Cut while the first jobs are in flight, and again a moment later.
            proxy.sever();
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.sever();
        }
    }
    for job_id in &jobs {
        let job = pipeline.wait_until_ended(job_id).await;
        assert_eq!(job.state(), pb::JobState::Done, "{job:?}");
    }
    assert_eq!(pipeline.stored_mp3s(&user.id).await.len(), JOBS);
    assert_eq!(
        smtp.wait_for(JOBS, Duration::from_secs(30)).await.len(),
        JOBS
    );
    assert_mail_count_stays(&smtp, JOBS).await;
}
