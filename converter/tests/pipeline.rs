//! The asynchronous half end to end: real gateway, auth, storage, RabbitMQ, ffmpeg, SMTP
//! capture, the converter (in this process, or as its real binary where a test kills it) and
//! the notifier. Every test has its own queues, databases and mail server.

use clients::Owner;
use futures::StreamExt;
use messaging::RetryConfig;
use proto::storage::v1 as pb;
use reqwest::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use test_support::mesh::{Mesh, MeshOptions, User};
use test_support::tus_clients::TusClient;
use test_support::{
    Running, SmtpCapture, TcpProxy, VideoSpec, WebhookReceiver, ffprobe_duration_seconds,
    free_port, mp4_bytes, mp4_like, temp_dir,
};

/// Retries in these tests wait a fraction of a second, not minutes.
const RETRY: RetryConfig = RetryConfig {
    max_attempts: 4,
    retry_base_delay_ms: 200,
    retry_max_delay_ms: 1000,
    schedule: None,
    jitter_percent: 0,
};
/// Long enough for every conversion here on a loaded 2-core machine.
const JOB_WAIT: Duration = Duration::from_secs(120);

/// The mesh, and the workers each test adds to it.
struct Pipeline {
    mesh: Mesh,
}

impl Pipeline {
    async fn start() -> Self {
        Self::start_with(MeshOptions::default()).await
    }

    async fn start_with(options: MeshOptions) -> Self {
        let mesh = Mesh::start(options).await;
        for queue in mesh.broker_config().queues.queues() {
            mesh.broker.remember_retry_queues(queue, &RETRY);
        }
        Self { mesh }
    }

    /// [`Pipeline::start`], with a notifier mailing to an SMTP capture.
    async fn start_mailing() -> (Self, SmtpCapture, Running<notifier::App>) {
        let pipeline = Self::start().await;
        let smtp = SmtpCapture::start().unwrap();
        let notifier = pipeline.notifier(&pipeline.amqp_url(), &smtp).await;
        (pipeline, smtp, notifier)
    }

    /// [`Pipeline::start_mailing`] with one converter of `concurrency` on the test broker.
    async fn start_converting(
        concurrency: u16,
    ) -> (
        Self,
        SmtpCapture,
        Running<notifier::App>,
        Running<converter::App>,
    ) {
        let (pipeline, smtp, notifier) = Self::start_mailing().await;
        let converter = pipeline.converter(&pipeline.amqp_url(), concurrency).await;
        (pipeline, smtp, notifier, converter)
    }

    fn amqp_url(&self) -> String {
        self.mesh.broker.url().to_owned()
    }

    /// A proxy in front of the test broker, and the `AMQP_URL` that goes through it.
    async fn broker_proxy(&self) -> (TcpProxy, String) {
        self.mesh.broker.proxy().await.unwrap()
    }

    /// A converter's configuration: this mesh's, with fast retries, on the broker at
    /// `amqp_url` (the test broker, or a proxy in front of it).
    fn converter_config(&self, amqp_url: &str, concurrency: u16) -> converter::Config {
        let mut config = self.mesh.converter_config();
        config.links.broker.amqp_url = Some(amqp_url.into());
        config.links.retry = RETRY;
        config.concurrency = concurrency;
        config
    }

    /// A converter in this process.
    async fn converter(&self, amqp_url: &str, concurrency: u16) -> Running<converter::App> {
        self.converter_with(self.converter_config(amqp_url, concurrency))
            .await
    }

    /// A converter in this process, configured as given.
    async fn converter_with(&self, config: converter::Config) -> Running<converter::App> {
        Running::start(config).await.unwrap()
    }

    /// A converter as its own process (so a test can kill it), with its ops endpoint on
    /// `ops_port`: configured through its variables, as its binary is.
    async fn converter_process(&self, concurrency: u16, ops_port: u16) -> tokio::process::Child {
        let config = self.converter_config(&self.amqp_url(), concurrency);
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_converter"));
        command
            .env("STORAGE_URL", &config.links.storage_url)
            .env("AMQP_URL", self.amqp_url())
            .envs(config.links.broker.queues.env_vars())
            .env("MAX_ATTEMPTS", RETRY.max_attempts.to_string())
            .env("RETRY_BASE_DELAY_MS", RETRY.retry_base_delay_ms.to_string())
            .env("RETRY_MAX_DELAY_MS", RETRY.retry_max_delay_ms.to_string())
            .env("WORK_DIR", &config.work_dir)
            .env("CONCURRENCY", concurrency.to_string())
            .env("OPS_LISTEN_ADDR", format!("127.0.0.1:{ops_port}"))
            .env("LOG_FORMAT", "pretty")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the converter binary starts");
        // Consuming before the test goes on, so jobs published next can reach this process.
        test_support::process::wait_until_child_answers(
            &mut child,
            &self.mesh.http,
            &format!("http://127.0.0.1:{ops_port}/readyz"),
            Duration::from_secs(60),
        )
        .await
        .expect("the converter process is ready");
        child
    }

    /// A notifier in this process, mailing through `smtp`, on the broker at `amqp_url`.
    async fn notifier(&self, amqp_url: &str, smtp: &SmtpCapture) -> Running<notifier::App> {
        self.notifier_with(amqp_url, &smtp.url(), |_| {}).await
    }

    /// A notifier mailing to `smtp_url`, with `change` made to its configuration.
    async fn notifier_with(
        &self,
        amqp_url: &str,
        smtp_url: &str,
        change: impl FnOnce(&mut notifier::Config),
    ) -> Running<notifier::App> {
        let mut config = self.mesh.notifier_config(smtp_url);
        config.links.broker.amqp_url = Some(amqp_url.into());
        config.links.retry = RETRY;
        change(&mut config);
        Running::start(config).await.unwrap()
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
        self.mesh.job(job_id).await
    }

    /// Downloads the audio file `job` made into `dir`; its path.
    async fn download_to(
        &self,
        dir: &test_support::TempDir,
        user: &User,
        job: &pb::Job,
    ) -> std::path::PathBuf {
        let response = self
            .mesh
            .http
            .get(self.mesh.url(&format!("/download/{}", job.mp3_id)))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let path = dir.path().join(format!("{}.audio", job.id));
        std::fs::write(&path, response.bytes().await.unwrap()).unwrap();
        path
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

    /// Uploads the long lecture, and waits until a converter is under way with it.
    async fn long_job_under_way(&self, user: &User) -> String {
        let lecture = mp4_bytes(VideoSpec::long_conversion()).await;
        let job_id = self.upload(user, "lecture.mp4", lecture).await;
        self.wait_for_job(&job_id, JOB_WAIT, |job| {
            job.state() == pb::JobState::Converting && job.progress_percent > 0
        })
        .await;
        job_id
    }

    async fn wait_until_ended(&self, job_id: &str) -> pb::Job {
        self.wait_for_job(job_id, JOB_WAIT, |job| {
            matches!(job.state(), pb::JobState::Done | pb::JobState::Failed) && job.notified
        })
        .await
    }

    /// Uploads `clip` as `clip-{n}.mp4`, the n-th of a burst; returns the job id.
    async fn upload_clip(&self, user: &User, n: usize, clip: &[u8]) -> String {
        self.upload(user, &format!("clip-{n}.mp4"), clip.to_vec())
            .await
    }

    /// Waits for every job to end, and fails the test unless each ended DONE.
    async fn assert_all_done(&self, jobs: &[String]) {
        for job_id in jobs {
            let job = self.wait_until_ended(job_id).await;
            assert_eq!(job.state(), pb::JobState::Done, "{job:?}");
        }
    }

    /// The MP3s storage holds for `owner`.
    async fn stored_mp3s(&self, owner: &str) -> Vec<pb::FileInfo> {
        self.mesh.stored_files(pb::Bucket::Mp3s, owner).await
    }

    /// Messages waiting in `queue`, once it holds `expected` (RabbitMQ counts a message
    /// handed back a moment after the consumer let it go), or the last count after 10 s.
    async fn waiting(&self, queue: &str, expected: u32) -> u32 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = self.mesh.waiting(queue).await;
            if waiting == expected || tokio::time::Instant::now() >= deadline {
                return waiting;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Mails stay at `count` for a while: nothing more is on its way.
async fn assert_mail_count_stays(smtp: &SmtpCapture, count: usize) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.mails().len(), count, "{:#?}", smtp.mails());
}

#[tokio::test]
async fn videos_uploaded_by_real_tus_clients_resume_chunk_by_chunk_and_convert() {
    let (pipeline, smtp, _notifier, _converter) = Pipeline::start_converting(2).await;
    let user = pipeline.mesh.user("resumer@example.com").await;
    let dir = temp_dir();
    let video = dir.path().join("walk.mp4");
    std::fs::write(&video, mp4_bytes(VideoSpec::small(3.0)).await).unwrap();
    let endpoint = pipeline.mesh.url("/files/");

    for client in TusClient::ALL {
        let name = format!("walk by {client:?}.mp4");
        // Small chunks: many PATCHes, each resuming where the one before stopped.
        let url = client
            .upload(
                &endpoint,
                &user.token,
                &video,
                32 * 1024,
                &[("filename", &name), ("format", "m4a")],
            )
            .await
            .unwrap();
        let status = pipeline
            .mesh
            .http
            .head(&url)
            .bearer_auth(&user.token)
            .header("tus-resumable", "1.0.0")
            .send()
            .await
            .unwrap();
        assert_eq!(status.status(), StatusCode::OK, "{client:?}: {url}");
        let job_id = status.headers()["job-id"].to_str().unwrap().to_owned();
        let job = pipeline.wait_until_ended(&job_id).await;
        assert_eq!(job.state(), pb::JobState::Done, "{client:?}: {job:?}");
        assert_eq!(job.original_filename, name);
        assert!(url.ends_with(&job.upload_id), "the job names {url}");
        let codecs =
            test_support::media::ffprobe_codecs(&pipeline.download_to(&dir, &user, &job).await)
                .await
                .unwrap();
        assert!(codecs.contains(&"aac".to_owned()), "{client:?}: {codecs:?}");
    }
    assert_eq!(smtp.wait_for(2, Duration::from_secs(30)).await.len(), 2);
}

#[tokio::test]
async fn an_uploaded_video_becomes_an_mp3_that_is_emailed_and_downloads_with_its_duration() {
    let (pipeline, smtp, _notifier, converter) = Pipeline::start_converting(2).await;
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
    // The sound, and its cover: a frame of the video.
    assert_eq!(
        test_support::media::ffprobe_codecs(&mp3).await.unwrap(),
        ["mp3", "mjpeg"]
    );
    let seconds = ffprobe_duration_seconds(&mp3).await.unwrap();
    assert!((seconds - 3.0).abs() <= 0.2, "the MP3 lasts {seconds} s");
    assert_eq!(pipeline.stored_mp3s(&user.id).await.len(), 1);
    // GridFS keeps no files: the video came as a stream.
    assert_eq!(videos_fetched(&converter).await, (0.0, 1.0));
    assert_mail_count_stays(&smtp, 1).await;
}

/// How many videos `converter` read where storage keeps them, and how many it had streamed.
async fn videos_fetched(converter: &Running<converter::App>) -> (f64, f64) {
    let metrics = test_support::scrape(&format!("{}/metrics", converter.ops_url())).await;
    let fetched = test_support::series_by_label(&metrics, "converter_videos_fetched_total");
    let count = |how: &str| {
        fetched
            .iter()
            .find(|(label, _)| label == how)
            .map_or(0.0, |(_, count)| *count)
    };
    (count("in_place"), count("streamed"))
}

#[tokio::test]
async fn a_video_stored_on_this_machine_is_converted_where_it_lies_and_left_as_it_was() {
    let pipeline = Pipeline::start_with(MeshOptions {
        local_storage: true,
        ..MeshOptions::default()
    })
    .await;
    let smtp = SmtpCapture::start().unwrap();
    let _notifier = pipeline.notifier(&pipeline.amqp_url(), &smtp).await;
    let converter = pipeline.converter(&pipeline.amqp_url(), 1).await;
    let user = pipeline.mesh.user("nearby@example.com").await;
    let clip = mp4_bytes(VideoSpec::small(2.0)).await;

    let job_id = pipeline.upload(&user, "nearby.mp4", clip.clone()).await;
    let job = pipeline.wait_until_ended(&job_id).await;
    assert_eq!(job.state(), pb::JobState::Done, "{job:?}");
    assert_eq!(videos_fetched(&converter).await, (1.0, 0.0));
    let dir = temp_dir();
    let audio = pipeline.download_to(&dir, &user, &job).await;
    let seconds = ffprobe_duration_seconds(&audio).await.unwrap();
    assert!((seconds - 2.0).abs() <= 0.2, "the MP3 lasts {seconds} s");
    // Storage's file is read, never moved, changed or removed by the job.
    let mut video = pipeline
        .mesh
        .storage
        .download(pb::Bucket::Videos, &job.video_id, &Owner::Any, 0, None)
        .await
        .unwrap();
    let mut stored = Vec::new();
    while let Some(chunk) = video.next().await {
        stored.extend_from_slice(&chunk.unwrap());
    }
    assert!(
        stored == clip,
        "the stored video is the upload, byte for byte"
    );
}

#[tokio::test]
async fn two_converter_processes_share_a_burst_of_jobs() {
    const JOBS: usize = 6;
    let (pipeline, smtp, _notifier) = Pipeline::start_mailing().await;
    let ports = [free_port(), free_port()];
    let mut workers = Vec::new();
    for port in ports {
        workers.push(pipeline.converter_process(1, port).await);
    }
    let user = pipeline.mesh.user("burst@example.com").await;
    let clip = mp4_bytes(VideoSpec::small(4.0)).await;
    let mut jobs = Vec::new();
    for n in 0..JOBS {
        jobs.push(pipeline.upload_clip(&user, n, &clip).await);
    }
    pipeline.assert_all_done(&jobs).await;

    let mut per_worker = Vec::new();
    for port in ports {
        let metrics = test_support::scrape(&format!("http://127.0.0.1:{port}/metrics")).await;
        per_worker.push(test_support::counter(
            &metrics,
            "converter_jobs_succeeded_total",
        ));
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
    let (pipeline, smtp, _notifier, _converter) = Pipeline::start_converting(2).await;
    let user = pipeline.mesh.user("unlucky@example.com").await;

    let silent = pipeline
        .upload(
            &user,
            "silent.mp4",
            mp4_bytes(VideoSpec::small(2.0).without_audio()).await,
        )
        .await;
    let corrupt = pipeline
        .upload(&user, "corrupt.mp4", mp4_like(64 * 1024, 7))
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
        pipeline.waiting(&dead, 0).await,
        0,
        "nothing was dead-lettered"
    );
}

#[tokio::test]
async fn a_converter_killed_mid_job_leaves_exactly_one_mp3_and_one_email() {
    let (pipeline, smtp, _notifier) = Pipeline::start_mailing().await;
    let mut doomed = pipeline.converter_process(1, free_port()).await;
    let user = pipeline.mesh.user("patient@example.com").await;
    let job_id = pipeline.long_job_under_way(&user).await;
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
    let (pipeline, smtp, _notifier) = Pipeline::start_mailing().await;
    let stopping = pipeline
        .converter_with(converter::Config {
            shutdown_grace_seconds: 0,
            ..pipeline.converter_config(&pipeline.amqp_url(), 1)
        })
        .await;
    let user = pipeline.mesh.user("handed-back@example.com").await;
    let job_id = pipeline.long_job_under_way(&user).await;

    stopping.stop().await.unwrap();
    let job = pipeline.job(&job_id).await;
    assert_eq!(job.state(), pb::JobState::Queued, "handed back: {job:?}");
    assert_eq!(pipeline.waiting(&pipeline.mesh.video_queue, 1).await, 1);
    let leftovers: Vec<_> = std::fs::read_dir(pipeline.mesh.work_dir())
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
    // Patient enough (a second between tries, twenty tries) that the mail server coming up
    // below falls inside its retries however slowly this machine gets there.
    let _notifier = pipeline
        .notifier_with(
            &pipeline.amqp_url(),
            &format!("smtp://{smtp_addr}"),
            |config| {
                config.links.retry.max_attempts = 20;
            },
        )
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
    let (proxy, through_proxy) = pipeline.broker_proxy().await;
    let _converter = pipeline.converter(&through_proxy, 2).await;
    let _notifier = pipeline.notifier(&through_proxy, &smtp).await;
    let user = pipeline.mesh.user("resilient@example.com").await;
    let clip = mp4_bytes(VideoSpec::small(3.0)).await;

    let mut jobs = Vec::new();
    for n in 0..JOBS {
        jobs.push(pipeline.upload_clip(&user, n, &clip).await);
        if n == 1 {
            // Cut while the first jobs are in flight, and again a moment later.
            proxy.sever();
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.sever();
        }
    }
    pipeline.assert_all_done(&jobs).await;
    assert_eq!(pipeline.stored_mp3s(&user.id).await.len(), JOBS);
    assert_eq!(
        smtp.wait_for(JOBS, Duration::from_secs(30)).await.len(),
        JOBS
    );
    assert_mail_count_stays(&smtp, JOBS).await;
}

#[tokio::test]
async fn a_worker_gives_up_on_a_broker_that_never_answers_and_consumes_once_it_does() {
    let pipeline = Pipeline::start().await;
    let (proxy, through_proxy) = pipeline.broker_proxy().await;
    // The broker takes connections and says nothing, as one out of file handles does.
    proxy.hold();
    let starting = tokio::spawn(Running::<converter::App>::start(
        pipeline.converter_config(&through_proxy, 1),
    ));
    let deadline = tokio::time::Instant::now()
        + messaging::amqp::SESSION_OPEN_WITHIN
        + Duration::from_secs(10);
    while proxy.connections() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the converter never gave up on its first connection ({} made)",
            proxy.connections()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.come_back().await.unwrap();
    let _converter = starting.await.unwrap().unwrap();
    let user = pipeline.mesh.user("patient@example.com").await;
    let clip = mp4_bytes(VideoSpec::small(2.0)).await;
    let job_id = pipeline.upload_clip(&user, 0, &clip).await;
    let job = pipeline
        .wait_for_job(&job_id, JOB_WAIT, |job| job.state() == pb::JobState::Done)
        .await;
    assert!(!job.mp3_id.is_empty(), "{job:?}");
}

impl Pipeline {
    /// A pipeline whose gateway lets webhook endpoints point at loopback, where the tests'
    /// receivers listen.
    async fn with_webhooks() -> Self {
        Self::start_with(MeshOptions::gateway(|config| {
            config.webhook_destinations.webhook_allowed_networks = loopback();
        }))
        .await
    }

    /// A notifier mailing to `smtp_url` that delivers webhooks to loopback, with `change` made
    /// to its configuration (the delay queues of its webhook retry schedule remembered for
    /// deletion).
    async fn webhook_notifier(
        &self,
        smtp_url: &str,
        change: impl FnOnce(&mut notifier::Config),
    ) -> Running<notifier::App> {
        let mut schedule = None;
        let notifier = self
            .notifier_with(&self.amqp_url(), smtp_url, |config| {
                config.webhook_destinations.webhook_allowed_networks = loopback();
                change(config);
                schedule = Some(config.webhook_retry_schedule.clone());
            })
            .await;
        let schedule = schedule.expect("configured");
        let webhook_queue = &self.mesh.broker_config().queues.webhook_queue;
        self.mesh
            .broker
            .remember_retry_queues(webhook_queue, &notifier::webhook::retry_on(&schedule));
        notifier
    }
}

fn loopback() -> webhooks::AllowedNetworks {
    "127.0.0.0/8".parse().unwrap()
}

/// The id of `user`'s newest webhook endpoint.
async fn first_endpoint_id(mesh: &Mesh, user: &User) -> String {
    let endpoints: Value = mesh
        .http
        .get(mesh.url("/webhooks"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    endpoints["endpoints"][0]["id"].as_str().unwrap().to_owned()
}

/// `POST /webhooks/{id}/test` as `user`.
async fn send_test(mesh: &Mesh, user: &User, id: &str) -> reqwest::Response {
    mesh.http
        .post(mesh.url(&format!("/webhooks/{id}/test")))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
}

/// Registers a webhook endpoint for `user` at `url` for `events`; its secret.
async fn webhook_endpoint(mesh: &Mesh, user: &User, url: &str, events: &[&str]) -> String {
    let response = mesh
        .http
        .post(mesh.url("/webhooks"))
        .bearer_auth(&user.token)
        .json(&serde_json::json!({ "url": url, "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_outcome_reaches_each_webhook_once_verified_and_on_time_while_smtp_is_down() {
    // Receivers on loopback: the gateway and the notifier are told to allow it.
    let pipeline = Pipeline::with_webhooks().await;
    let mesh = &pipeline.mesh;
    let schedule = "0, 1s, 1s, 1s, 1s";
    // SMTP is down for the whole test: no e-mail can go, and webhooks must not wait for it.
    let dead_smtp = format!("smtp://127.0.0.1:{}", free_port());
    let _notifier = pipeline
        .webhook_notifier(&dead_smtp, |config| {
            config.webhook_retry_schedule = schedule.parse().unwrap();
        })
        .await;
    let _converter = pipeline.converter(&pipeline.amqp_url(), 1).await;
    let user = mesh.user("hooks@example.com").await;
    let other = mesh.user("other@example.com").await;

    // Three endpoints of the user's: one that answers at once, one that fails twice before it
    // answers, one that asked for failures only; and another user's endpoint.
    let mut receivers = Vec::new();
    for (owner, fail_first, events) in [
        (&user, 0, vec![]),
        (&user, 2, vec!["job.succeeded"]),
        (&user, 0, vec!["job.failed"]),
        (&other, 0, vec![]),
    ] {
        // The gateway makes the secret, so the endpoint is registered at a port its receiver
        // then starts on.
        let port = free_port();
        let url = test_support::webhook_receiver::url_on(port);
        let secret = webhook_endpoint(mesh, owner, &url, &events).await;
        receivers.push(WebhookReceiver::start_on(port, &[secret], fail_first).await);
    }
    let job_id = pipeline
        .upload(&user, "holiday.mp4", mp4_bytes(VideoSpec::small(2.0)).await)
        .await;
    let job = pipeline
        .wait_for_job(&job_id, JOB_WAIT, |job| job.state() == pb::JobState::Done)
        .await;

    // At once: verified by the reference library, the job's outcome in its body.
    let delivered = receivers[0].next().await;
    assert_eq!(
        delivered["verified_by"],
        serde_json::json!([0]),
        "{delivered}"
    );
    assert_eq!(delivered["status"], 204);
    let body = &delivered["body"];
    assert_eq!(body["type"], "job.succeeded", "{body}");
    assert_eq!(body["data"]["job_id"], job_id.as_str());
    assert_eq!(body["data"]["mp3_id"], job.mp3_id.as_str());
    assert!(
        body["data"]["download_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/download/{}", job.mp3_id)),
        "{body}"
    );

    // Failed twice, then delivered: three attempts, one webhook-id, each verified.
    let attempts: Vec<Value> = [
        receivers[1].next().await,
        receivers[1].next().await,
        receivers[1].next().await,
    ]
    .into();
    let statuses: Vec<&Value> = attempts.iter().map(|seen| &seen["status"]).collect();
    assert_eq!(statuses, [503, 503, 204]);
    assert!(attempts.iter().all(|seen| seen["id"] == attempts[0]["id"]));
    assert!(
        attempts
            .iter()
            .all(|seen| seen["verified_by"] == serde_json::json!([0]))
    );
    assert_ne!(
        attempts[0]["id"], delivered["id"],
        "one message per endpoint"
    );

    // Exactly once each, and nothing for the endpoint that asked for failures only, nor for
    // another user's; no e-mail could go meanwhile.
    for (n, receiver) in receivers.iter_mut().enumerate() {
        let more = receiver.next_within(Duration::from_secs(2)).await;
        assert!(more.is_none(), "receiver {n} heard more: {more:?}");
    }
    assert!(
        !pipeline.job(&job_id).await.notified,
        "the e-mail is still waiting for SMTP"
    );
}

#[tokio::test]
async fn a_test_ping_reaches_the_endpoint_signed_and_only_its_owner_can_send_one() {
    let pipeline = Pipeline::with_webhooks().await;
    let mesh = &pipeline.mesh;
    let smtp = SmtpCapture::start().unwrap();
    let _notifier = pipeline.webhook_notifier(&smtp.url(), |_| {}).await;
    let user = mesh.user("pinger@example.com").await;
    let other = mesh.user("other@example.com").await;
    let port = free_port();
    let url = test_support::webhook_receiver::url_on(port);
    let secret = webhook_endpoint(mesh, &user, &url, &["job.failed"]).await;
    let mut receiver = WebhookReceiver::start_on(port, &[secret], 0).await;
    let id = first_endpoint_id(mesh, &user).await;
    let ping = |token: String| {
        let request = mesh
            .http
            .post(mesh.url(&format!("/webhooks/{id}/test")))
            .bearer_auth(token);
        async move { request.send().await.unwrap() }
    };

    let refused = ping(other.token.clone()).await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let queued = ping(user.token.clone()).await;
    assert_eq!(
        queued.status(),
        StatusCode::ACCEPTED,
        "{:?}",
        queued.text().await
    );
    let message_id = queued.json::<Value>().await.unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = receiver.next().await;
    assert_eq!(seen["verified_by"], serde_json::json!([0]), "{seen}");
    assert_eq!(seen["id"], message_id.as_str());
    assert_eq!(seen["body"]["type"], "ping");
    assert_eq!(seen["body"]["data"]["endpoint_id"], id.as_str());
    let more = receiver.next_within(Duration::from_secs(2)).await;
    assert!(
        more.is_none(),
        "one ping, and nothing from the other user's try: {more:?}"
    );
}

#[tokio::test]
async fn a_410_disables_the_endpoint_tells_its_owner_and_after_enabling_a_logged_message_goes_again()
 {
    let pipeline = Pipeline::with_webhooks().await;
    let mesh = &pipeline.mesh;
    let smtp = SmtpCapture::start().unwrap();
    let _notifier = pipeline.webhook_notifier(&smtp.url(), |_| {}).await;
    let user = mesh.user("gone@example.com").await;
    let port = free_port();
    let url = test_support::webhook_receiver::url_on(port);
    let secret = webhook_endpoint(mesh, &user, &url, &[]).await;
    let mut gone = WebhookReceiver::answering(port, std::slice::from_ref(&secret), 0, 410).await;
    let call = |method: reqwest::Method, path: String| {
        let request = mesh
            .http
            .request(method, mesh.url(&path))
            .bearer_auth(&user.token);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (_, listed) = call(reqwest::Method::GET, "/webhooks".into()).await;
    let id = listed["endpoints"][0]["id"].as_str().unwrap().to_owned();

    let (status, queued) = call(reqwest::Method::POST, format!("/webhooks/{id}/test")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let message_id = queued["message_id"].as_str().unwrap().to_owned();
    let seen = gone.next().await;
    assert_eq!(
        (seen["status"].as_u64(), seen["id"].as_str()),
        (Some(410), Some(message_id.as_str()))
    );

    // Disabled, with the reason, and its owner e-mailed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let endpoint = loop {
        let (_, endpoint) = call(reqwest::Method::GET, format!("/webhooks/{id}")).await;
        if !endpoint["disabled"].is_null() || tokio::time::Instant::now() > deadline {
            break endpoint;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        endpoint["disabled"]["reason"], "the receiver answered 410 Gone",
        "{endpoint}"
    );
    let mails = smtp.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]
            .text()
            .contains("Your webhook endpoint was disabled")
    );
    assert!(mails[0].text().contains(&url), "the mail names the URL");

    // Nothing is sent to a disabled endpoint.
    let (status, _) = call(reqwest::Method::POST, format!("/webhooks/{id}/test")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let more = gone.next_within(Duration::from_secs(2)).await;
    assert!(more.is_none(), "a disabled endpoint gets nothing: {more:?}");
    let (_, log) = call(reqwest::Method::GET, format!("/webhooks/{id}/deliveries")).await;
    let deliveries = log["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{log}");
    assert_eq!(deliveries[0]["message_id"], message_id.as_str());
    assert_eq!(deliveries[0]["status_code"], 410);
    assert_eq!(deliveries[0]["delivered"], false);

    // Enabled again and answering: the logged message, sent again by hand, arrives as itself.
    drop(gone);
    let mut fixed = WebhookReceiver::start_on(port, &[secret], 0).await;
    let (status, endpoint) = call(reqwest::Method::POST, format!("/webhooks/{id}/enable")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(endpoint["disabled"].is_null(), "{endpoint}");
    let (status, _) = call(
        reqwest::Method::POST,
        format!("/webhooks/{id}/deliveries/{message_id}/redeliver"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let seen = fixed.next().await;
    assert_eq!(seen["id"], message_id.as_str());
    assert_eq!(seen["status"], 204);
    assert_eq!(seen["verified_by"], serde_json::json!([0]));
    assert_eq!(seen["body"]["type"], "ping");
    let (status, _) = call(
        reqwest::Method::POST,
        format!("/webhooks/{id}/deliveries/msg_unknown/redeliver"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn e_mail_goes_out_on_time_while_a_webhook_receiver_keeps_failing() {
    let pipeline = Pipeline::with_webhooks().await;
    let mesh = &pipeline.mesh;
    let schedule = "0, 1s, 1s, 1s, 1s, 1s, 1s, 1s";
    let smtp = SmtpCapture::start().unwrap();
    let _notifier = pipeline
        .webhook_notifier(&smtp.url(), |config| {
            config.webhook_retry_schedule = schedule.parse().unwrap();
        })
        .await;
    let _converter = pipeline.converter(&pipeline.amqp_url(), 1).await;
    let user = mesh.user("mail-first@example.com").await;
    let port = free_port();
    let url = test_support::webhook_receiver::url_on(port);
    let secret = webhook_endpoint(mesh, &user, &url, &[]).await;
    // Answers 503 to everything for the whole test.
    let mut failing = WebhookReceiver::start_on(port, &[secret], u32::MAX).await;

    let job_id = pipeline
        .upload(&user, "talk.mp4", mp4_bytes(VideoSpec::small(2.0)).await)
        .await;
    pipeline
        .wait_for_job(&job_id, JOB_WAIT, |job| job.state() == pb::JobState::Done)
        .await;
    let done = std::time::Instant::now();
    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1);
    let waited = done.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "the e-mail waited {waited:?} behind a failing webhook receiver"
    );
    // Meanwhile the webhook is being tried again and again, each time refused.
    let first = failing.next().await;
    let second = failing.next().await;
    assert_eq!(
        (first["status"].as_u64(), second["status"].as_u64()),
        (Some(503), Some(503))
    );
    assert_eq!(first["id"], second["id"], "one message, tried again");

    // After its eighth attempt the message is given up, and its log says so.
    let id = first_endpoint_id(mesh, &user).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = deliveries(mesh, &user, &id).await;
        if log.first().is_some_and(|last| last["given_up"] == true)
            || tokio::time::Instant::now() > deadline
        {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(log.len(), 8, "{log:#?}");
    assert_eq!(log[0]["given_up"], true, "{log:#?}");
    assert!(
        log[1..].iter().all(|attempt| attempt["given_up"] == false),
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_receiver_that_asks_for_a_pause_is_not_tried_again_sooner() {
    let pipeline = Pipeline::with_webhooks().await;
    let mesh = &pipeline.mesh;
    // Retries a second apart, and the least wait after a 429 is a second too: only the
    // receiver's Retry-After can make the next attempt wait 4 s.
    let schedule = "0, 1s, 1s, 1s";
    let smtp = SmtpCapture::start().unwrap();
    let _notifier = pipeline
        .webhook_notifier(&smtp.url(), |config| {
            config.webhook_retry_schedule = schedule.parse().unwrap();
            config.webhook_slow_down = Duration::from_secs(1);
        })
        .await;
    // The pause makes the notifier declare a hold queue of its own.
    let retry = notifier::webhook::retry_on(&schedule.parse().unwrap());
    let webhook_queue = &mesh.broker_config().queues.webhook_queue;
    let (hold_queue, _, _) =
        messaging::amqp::delay_queue_for(webhook_queue, &retry, Duration::from_secs(4));
    mesh.broker.remember(hold_queue);
    let user = mesh.user("paused@example.com").await;
    let port = free_port();
    let url = test_support::webhook_receiver::url_on(port);
    let secret = webhook_endpoint(mesh, &user, &url, &[]).await;
    let mut receiver = WebhookReceiver::asking_for_a_pause(port, &[secret], 1, 429, 4).await;
    let id = first_endpoint_id(mesh, &user).await;
    let queued = send_test(mesh, &user, &id).await;
    assert_eq!(queued.status(), StatusCode::ACCEPTED);
    let first = receiver.next().await;
    assert_eq!(first["status"], 429);
    let second = receiver
        .next_within(Duration::from_secs(20))
        .await
        .expect("tried again");
    assert_eq!(second["status"], 204);
    assert_eq!(first["id"], second["id"]);
    let waited = second["at"].as_f64().unwrap() - first["at"].as_f64().unwrap();
    assert!(
        waited >= 4.0,
        "tried again after {waited:.2} s, before the 4 s it asked for"
    );
}

/// `GET /webhooks/{id}/deliveries` as `user`.
async fn deliveries(mesh: &Mesh, user: &User, id: &str) -> Vec<Value> {
    let log: Value = mesh
        .http
        .get(mesh.url(&format!("/webhooks/{id}/deliveries")))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log["deliveries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_receiver_down_then_up_gets_the_message_once_under_its_id() {
    let pipeline = Pipeline::with_webhooks().await;
    let mesh = &pipeline.mesh;
    let smtp = SmtpCapture::start().unwrap();
    let _notifier = pipeline
        .webhook_notifier(&smtp.url(), |config| {
            config.webhook_retry_schedule = "0, 1s, 1s, 1s, 1s, 1s, 1s".parse().unwrap();
        })
        .await;
    let user = mesh.user("down-up@example.com").await;
    let port = free_port();
    let secret = webhook_endpoint(
        mesh,
        &user,
        &test_support::webhook_receiver::url_on(port),
        &[],
    )
    .await;
    let id = first_endpoint_id(mesh, &user).await;
    let queued = send_test(mesh, &user, &id).await;
    assert_eq!(queued.status(), StatusCode::ACCEPTED);
    let message_id = queued.json::<Value>().await.unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Nobody listens: the first attempts fail, logged with why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while deliveries(mesh, &user, &id).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no attempt logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = deliveries(mesh, &user, &id).await;
    assert_eq!(failed[0]["message_id"], message_id.as_str());
    assert_eq!(failed[0]["delivered"], false);
    assert!(failed[0]["error"].as_str().is_some(), "{failed:?}");

    // Up: the same message arrives once, verified.
    let mut receiver = WebhookReceiver::start_on(port, &[secret], 0).await;
    let seen = receiver.next().await;
    assert_eq!(seen["id"], message_id.as_str());
    assert_eq!(seen["status"], 204);
    assert_eq!(seen["verified_by"], serde_json::json!([0]));
    let more = receiver.next_within(Duration::from_secs(3)).await;
    assert!(more.is_none(), "delivered once: {more:?}");
    let log = deliveries(mesh, &user, &id).await;
    assert_eq!(log[0]["delivered"], true);
    assert!(log[1..].iter().all(|attempt| attempt["delivered"] == false));
}

#[tokio::test]
async fn during_a_rotation_messages_verify_with_either_secret_and_after_it_with_the_new_only() {
    let pipeline = Pipeline::start_with(MeshOptions::gateway(|config| {
        config.webhook_destinations.webhook_allowed_networks = loopback();
        config.webhook_secret_overlap = Duration::from_secs(3);
    }))
    .await;
    let mesh = &pipeline.mesh;
    let smtp = SmtpCapture::start().unwrap();
    let _notifier = pipeline.webhook_notifier(&smtp.url(), |_| {}).await;
    let user = mesh.user("rotating@example.com").await;
    let port = free_port();
    let old = webhook_endpoint(
        mesh,
        &user,
        &test_support::webhook_receiver::url_on(port),
        &[],
    )
    .await;
    let id = first_endpoint_id(mesh, &user).await;
    let rotated: Value = mesh
        .http
        .post(mesh.url(&format!("/webhooks/{id}/rotate-secret")))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    let mut receiver = WebhookReceiver::start_on(port, &[old, new], 0).await;

    assert_eq!(
        send_test(mesh, &user, &id).await.status(),
        StatusCode::ACCEPTED
    );
    let during = receiver.next().await;
    assert_eq!(during["verified_by"], serde_json::json!([0, 1]), "{during}");

    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        send_test(mesh, &user, &id).await.status(),
        StatusCode::ACCEPTED
    );
    let after = receiver.next().await;
    assert_eq!(after["verified_by"], serde_json::json!([1]), "{after}");
}
