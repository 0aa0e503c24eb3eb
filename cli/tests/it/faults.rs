//! Faults against the whole system, with uploads in flight: each test starts the five services
//! as separate processes on real infrastructure ([`cluster`]), keeps a client uploading and
//! polling while it breaks one part, restores it, and then checks the promise users rely on:
//! - while a dependency is down the gateway answers 503 with `Retry-After`, never a 500 and
//!   never a hang, and it recovers by itself soon after the dependency returns;
//! - every upload that got a 202 ends with exactly one MP3 and exactly one e-mail; a refused
//!   upload leaves no file and no job; no GridFS chunk, temp file or dead letter is left over.
//!
//! Each test prints its row of the summary table; the webhook row
//! ([`a_notifier_killed_mid_delivery_delivers_each_webhook_at_least_once_under_one_id`]) prints
//! its own, since what it promises is "at least once, under one `webhook-id`".

use proto::storage::v1 as pb;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use test_support::cluster::{Cluster, Parts, REQUEST_DEADLINE, Role, User};
use test_support::{VideoSpec, WebhookReceiver, free_port, mp4_bytes, rest};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a dependency stays down.
const OUTAGE: Duration = Duration::from_secs(5);
/// How long the system may take to finish every accepted job after the fault.
const SETTLE: Duration = Duration::from_secs(180);

/// What the client saw while the fault ran.
#[derive(Debug, Default)]
struct Tally {
    accepted: Vec<String>,
    /// Uploads and polls answered 503 with `Retry-After`.
    refused: u32,
    polls: u32,
    /// The longest any answer took.
    slowest: Duration,
    /// Anything the promise does not allow: other 5xx, a 503 without `Retry-After`, a hang.
    violations: Vec<String>,
}

impl Tally {
    /// Records one answer; returns the JSON body of a success.
    async fn record(
        &mut self,
        what: &str,
        asked: Instant,
        answer: reqwest::Result<reqwest::Response>,
    ) -> Option<Value> {
        self.slowest = self.slowest.max(asked.elapsed());
        match answer {
            Ok(response) if response.status().is_success() => response.json().await.ok(),
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                if response
                    .headers()
                    .contains_key(reqwest::header::RETRY_AFTER)
                {
                    self.refused += 1;
                } else {
                    self.violations
                        .push(format!("{what}: 503 without Retry-After"));
                }
                None
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                self.violations.push(format!("{what}: {status} {body}"));
                None
            }
            Err(error) => {
                self.violations
                    .push(format!("{what}: {error} (deadline {REQUEST_DEADLINE:?})"));
                None
            }
        }
    }
}

/// A client uploading a clip every few hundred milliseconds and polling its jobs, until stopped.
struct Traffic {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Tally>,
}

impl Traffic {
    fn start(cluster: &Cluster, user: &User, clip: Vec<u8>) -> Self {
        let stop = CancellationToken::new();
        let (http, gateway, token) = (
            cluster.http.clone(),
            cluster.gateway.clone(),
            user.token.clone(),
        );
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut n = 0;
            while !stopping.is_cancelled() {
                n += 1;
                let asked = Instant::now();
                let name = format!("clip-{n}.mp4");
                let upload = rest::upload(&http, &gateway, &token, &name, clip.clone()).await;
                if let Some(body) = tally.record("upload", asked, upload).await {
                    tally
                        .accepted
                        .push(body["job_id"].as_str().unwrap().to_owned());
                }
                if let Some(job_id) = tally.accepted.last().cloned() {
                    let asked = Instant::now();
                    let poll = http
                        .get(format!("{gateway}/jobs/{job_id}"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    tally.polls += 1;
                    tally.record("poll", asked, poll).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            tally
        });
        Self { stop, task }
    }

    async fn finish(self) -> Tally {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// One row of the summary table.
struct Row {
    fault: &'static str,
    accepted: usize,
    refused: u32,
    slowest: Duration,
    recovery: Duration,
    mp3s: usize,
    mails: usize,
    leftovers: String,
}

fn print_row(row: &Row) {
    println!(
        "\n| fault | accepted (202) | refused (503 + Retry-After) | slowest answer | recovered after | MP3s | e-mails | left over |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.1} s | {:.1} s | {} | {} | {} |",
        row.fault,
        row.accepted,
        row.refused,
        row.slowest.as_secs_f64(),
        row.recovery.as_secs_f64(),
        row.mp3s,
        row.mails,
        row.leftovers
    );
}

/// Runs `fault` with traffic flowing, then checks the promise and prints the row.
///
/// `fault` returns the ids of jobs it accepted itself.
async fn survive(
    fault_name: &'static str,
    fault: impl AsyncFnOnce(&mut Cluster, &User) -> Vec<String>,
) {
    survive_on(Cluster::start(crate::binary()).await, fault_name, fault).await;
}

/// [`survive`] on a cluster the test started itself.
async fn survive_on(
    mut cluster: Cluster,
    fault_name: &'static str,
    fault: impl AsyncFnOnce(&mut Cluster, &User) -> Vec<String>,
) {
    let user = cluster.user("survivor@example.com").await;
    let clip = mp4_bytes(VideoSpec::small(2.0)).await;
    let traffic = Traffic::start(&cluster, &user, clip.clone());
    // Some jobs in every state before the fault.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let own_jobs = fault(&mut cluster, &user).await;

    // Recovery: how soon after the dependency's return an upload is accepted again.
    let restored = Instant::now();
    let mut probe = Tally::default();
    loop {
        let asked = Instant::now();
        let answer = cluster.upload(&user.token, "probe.mp4", clip.clone()).await;
        if let Some(body) = probe.record("probe upload", asked, answer).await {
            probe
                .accepted
                .push(body["job_id"].as_str().unwrap().to_owned());
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(30),
            "{fault_name}: no upload accepted within 30 s of the dependency's return: {probe:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovery = restored.elapsed();
    let mut tally = traffic.finish().await;
    tally.accepted.extend(own_jobs);
    tally.accepted.extend(probe.accepted);
    tally.refused += probe.refused;
    tally.slowest = tally.slowest.max(probe.slowest);
    tally.violations.extend(probe.violations);
    assert!(
        tally.violations.is_empty(),
        "{fault_name}: {:#?}",
        tally.violations
    );

    let jobs = settle(&cluster, &user, &tally.accepted).await;
    let row = check_promise(&cluster, &user, fault_name, &tally, &jobs, recovery).await;
    print_row(&row);
}

/// Waits until every accepted job has ended and its user was told; returns the jobs.
async fn settle(cluster: &Cluster, user: &User, accepted: &[String]) -> Vec<pb::Job> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let jobs = cluster.jobs(&user.id).await;
        let ended = |job: &&pb::Job| {
            matches!(job.state(), pb::JobState::Done | pb::JobState::Failed) && job.notified
        };
        let open: Vec<_> = jobs.iter().filter(|job| !ended(job)).collect();
        if open.is_empty() && jobs.len() >= accepted.len() {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "jobs still open after {SETTLE:?}: {open:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn check_promise(
    cluster: &Cluster,
    user: &User,
    fault: &'static str,
    tally: &Tally,
    jobs: &[pb::Job],
    recovery: Duration,
) -> Row {
    let accepted: HashSet<&str> = tally.accepted.iter().map(String::as_str).collect();
    let stored: HashSet<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(
        stored, accepted,
        "{fault}: jobs kept are exactly the accepted ones"
    );
    for job in jobs {
        assert_eq!(job.state(), pb::JobState::Done, "{fault}: {job:?}");
    }
    let videos = cluster.files(pb::Bucket::Videos, &user.id).await;
    assert_eq!(
        videos.len(),
        jobs.len(),
        "{fault}: one video per job, none from refused uploads"
    );
    let mp3s = cluster.files(pb::Bucket::Mp3s, &user.id).await;
    let mp3_ids: HashSet<&str> = mp3s.iter().map(|file| file.id.as_str()).collect();
    let job_mp3s: HashSet<&str> = jobs.iter().map(|job| job.mp3_id.as_str()).collect();
    assert_eq!(mp3s.len(), jobs.len(), "{fault}: exactly one MP3 per job");
    assert_eq!(mp3_ids, job_mp3s, "{fault}: every MP3 belongs to its job");

    // Late duplicates would arrive within a retry or two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = cluster.smtp.mails();
    let mut per_mp3: BTreeMap<&str, usize> = BTreeMap::new();
    for mail in &mails {
        assert_eq!(mail.to, vec![user.email.clone()], "{fault}");
        let text = mail.text();
        let about: Vec<&str> = job_mp3s
            .iter()
            .copied()
            .filter(|id| text.contains(id))
            .collect();
        assert_eq!(
            about.len(),
            1,
            "{fault}: each e-mail is about one MP3:\n{text}"
        );
        *per_mp3.entry(about[0]).or_default() += 1;
        let job = jobs.iter().find(|job| job.mp3_id == about[0]).unwrap();
        let message_id = format!("Message-ID: <job.{}@", job.id);
        assert!(
            text.contains(&message_id),
            "{fault}: an e-mail says which job's news it is ({message_id}…):\n{text}"
        );
    }
    assert!(
        per_mp3.len() == jobs.len() && per_mp3.values().all(|count| *count == 1),
        "{fault}: exactly one e-mail per job: {per_mp3:?} for {} jobs",
        jobs.len()
    );

    let orphan_chunks = cluster.orphan_chunks().await;
    // Each live converter keeps one locked directory; job files inside it are leftovers.
    let scratch_dirs: Vec<_> = std::fs::read_dir(cluster.work_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(
        scratch_dirs.len(),
        1,
        "{fault}: one converter, one directory: {scratch_dirs:?}"
    );
    let temp_files: Vec<_> = std::fs::read_dir(&scratch_dirs[0])
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != ".lock")
        .collect();
    let dead_letters = cluster.dead_letters().await;
    assert_eq!(orphan_chunks, 0, "{fault}: GridFS chunks without a file");
    assert!(
        temp_files.is_empty(),
        "{fault}: converter temp files left: {temp_files:?}"
    );
    assert_eq!(dead_letters, 0, "{fault}: dead letters");
    Row {
        fault,
        accepted: tally.accepted.len(),
        refused: tally.refused,
        slowest: tally.slowest,
        recovery,
        mp3s: mp3s.len(),
        mails: mails.len(),
        leftovers: format!(
            "{orphan_chunks} chunks, {} temp files, {dead_letters} dead letters",
            temp_files.len()
        ),
    }
}

/// Waits until one of `user`'s jobs is in `state` (and, if converting, has made progress).
async fn wait_for_a_job(cluster: &Cluster, user: &User, state: pb::JobState) -> pb::Job {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let jobs = cluster.jobs(&user.id).await;
        if let Some(job) = jobs.into_iter().find(|job| {
            job.state() == state && (state != pb::JobState::Converting || job.progress_percent > 0)
        }) {
            return job;
        }
        assert!(Instant::now() < deadline, "no job reached {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_converter_killed_mid_conversion_loses_nothing() {
    survive("converter SIGKILL mid-conversion", async |cluster, user| {
        let response = cluster
            .upload(
                &user.token,
                "lecture.mp4",
                mp4_bytes(VideoSpec::long_conversion()).await,
            )
            .await;
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let job_id = response.json::<Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        wait_for_a_job(cluster, user, pb::JobState::Converting).await;
        cluster.kill(Role::Converter).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.restart(Role::Converter).await;
        vec![job_id]
    })
    .await;
}

#[tokio::test]
async fn a_notifier_killed_mid_send_sends_each_email_once() {
    survive("notifier SIGKILL mid-send", async |cluster, user| {
        // The mail server hangs, so the notifier is inside an SMTP exchange when it dies.
        cluster.smtp_proxy.hold();
        let finished = cluster
            .jobs(&user.id)
            .await
            .iter()
            .filter(|job| job.state() == pb::JobState::Done)
            .count();
        // Uploads go on, so a conversion finishes after the hold and its e-mail is held.
        let deadline = Instant::now() + Duration::from_secs(60);
        while cluster
            .jobs(&user.id)
            .await
            .iter()
            .filter(|job| job.state() == pb::JobState::Done)
            .count()
            == finished
        {
            assert!(Instant::now() < deadline, "no conversion finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Counted now, not at the hold: an e-mail whose last bytes were already past the proxy
        // may still land a moment after it, but a conversion takes far longer than that.
        let mailed = cluster.smtp.mails().len();
        // Time for the notifier to take the new event and stall inside the held exchange.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        cluster.kill(Role::Notifier).await;
        assert_eq!(
            cluster.smtp.mails().len(),
            mailed,
            "nothing got through the held proxy"
        );
        cluster.smtp_proxy.come_back().await.unwrap();
        cluster.restart(Role::Notifier).await;
        vec![]
    })
    .await;
}

#[tokio::test]
async fn rabbitmq_going_away_is_503_then_recovers_and_loses_nothing() {
    survive(
        "RabbitMQ down (connections closed, port refused)",
        async |cluster, _| {
            cluster.broker_proxy.go_down();
            tokio::time::sleep(OUTAGE).await;
            cluster.broker_proxy.come_back().await.unwrap();
            vec![]
        },
    )
    .await;
}

#[tokio::test]
async fn the_mongodb_server_stopped_and_started_is_503_then_recovers() {
    survive(
        "MongoDB-wire server stopped, started",
        async |cluster, _| {
            cluster.mongo.stop().await.unwrap();
            tokio::time::sleep(OUTAGE).await;
            cluster.mongo.start_again().await.unwrap();
            vec![]
        },
    )
    .await;
}

#[tokio::test]
async fn the_auth_service_stopped_and_started_is_503_then_recovers() {
    survive("auth service stopped, started", restart_auth).await;
}

#[tokio::test]
async fn the_auth_service_stopped_and_started_with_grpc_over_mutual_tls_is_503_then_recovers() {
    let mut cluster = Cluster::configure(crate::binary(), Parts::Real, &[]).await;
    cluster.use_grpc_tls().await;
    cluster.start_roles(&Role::ALL).await;
    survive_on(cluster, "auth stopped, started (mutual TLS)", restart_auth).await;
}

/// Auth stopped for [`OUTAGE`], then started again.
async fn restart_auth(cluster: &mut Cluster, _: &User) -> Vec<String> {
    cluster.stop(Role::Auth).await;
    tokio::time::sleep(OUTAGE).await;
    cluster.restart(Role::Auth).await;
    vec![]
}

#[tokio::test]
async fn the_mail_server_down_for_a_while_gets_each_email_once() {
    survive("SMTP server down, back", async |cluster, _| {
        // It stops as a mail server shutting down does: it reads nothing more, answers what it
        // already took in, then closes its connections and its port. Cut at any instant
        // instead, a connection may go between the server taking a message in and its 250
        // reaching the notifier, which then sends the message again (RFC 1047: the doubt SMTP
        // leaves, whose second copy has the same Message-ID): not the fault named here.
        cluster.smtp_proxy.hold();
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.smtp_proxy.go_down();
        tokio::time::sleep(OUTAGE).await;
        cluster.smtp_proxy.come_back().await.unwrap();
        vec![]
    })
    .await;
}

#[tokio::test]
async fn uploads_cut_by_the_client_leave_nothing_half_written() {
    survive(
        "uploads cut mid-stream by the client",
        async |cluster, user| {
            let addr = cluster.gateway.trim_start_matches("http://").to_owned();
            for _ in 0..3 {
                cut_upload(&addr, &user.token).await;
            }
            vec![]
        },
    )
    .await;
}

/// Sends the head and the first 512 KiB of a 16 MiB upload, then hangs up.
async fn cut_upload(addr: &str, token: &str) {
    use tokio::io::AsyncWriteExt;
    let boundary = "cut-boundary";
    let head_of_part = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.mp4\"\r\nContent-Type: video/mp4\r\n\r\n"
    );
    let promised = head_of_part.len() + 16 * 1024 * 1024;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {promised}\r\n\r\n{head_of_part}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    body.extend(test_support::pseudo_random_bytes(512 * 1024, 7));
    stream.write_all(&body).await.unwrap();
    stream.flush().await.unwrap();
    // Long enough for the gateway to have started streaming into storage.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stream);
}

#[tokio::test]
async fn a_notifier_killed_mid_delivery_delivers_each_webhook_at_least_once_under_one_id() {
    let mut cluster = Cluster::start_with(
        crate::binary(),
        &[
            ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8"),
            ("WEBHOOK_RETRY_SCHEDULE", "0, 1s, 1s, 1s, 1s, 1s, 1s, 1s"),
            ("WEBHOOK_TIMEOUT_SECONDS", "30"),
        ],
    )
    .await;
    let user = cluster.user("hooked@example.com").await;
    let port = free_port();
    let url = test_support::webhook_receiver::url_on(port);
    let registered = cluster
        .http
        .post(format!("{}/webhooks", cluster.gateway))
        .bearer_auth(&user.token)
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let secret = registered.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // The receiver hangs on its first request: the notifier is waiting on it when it dies.
    let mut receiver = WebhookReceiver::hanging_first(port, &[secret], 1).await;
    let clip = mp4_bytes(VideoSpec::small(2.0)).await;
    let mut accepted = Vec::new();
    for n in 0..3 {
        let answer = cluster
            .upload(&user.token, &format!("hooked-{n}.mp4"), clip.clone())
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        let body: Value = answer.json().await.unwrap();
        accepted.push(body["job_id"].as_str().unwrap().to_owned());
    }
    let held = receiver
        .next_within(Duration::from_secs(120))
        .await
        .expect("a delivery came");
    assert_eq!(held["status"], "held", "{held}");
    cluster.kill(Role::Notifier).await;
    cluster.restart(Role::Notifier).await;

    // Every outcome arrives verified, and every request about one job carries one webhook-id.
    let mut ids_by_job: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    let mut delivered: HashSet<String> = HashSet::new();
    let mut requests = 1;
    let deadline = Instant::now() + SETTLE;
    while delivered.len() < accepted.len() {
        assert!(
            Instant::now() < deadline,
            "delivered only {delivered:?} of {accepted:?}"
        );
        let Some(seen) = receiver.next_within(Duration::from_secs(10)).await else {
            continue;
        };
        requests += 1;
        assert_eq!(seen["verified_by"], serde_json::json!([0]), "{seen}");
        let job_id = seen["body"]["data"]["job_id"].as_str().unwrap().to_owned();
        ids_by_job
            .entry(job_id.clone())
            .or_default()
            .insert(seen["id"].as_str().unwrap().to_owned());
        if seen["status"] == 204 {
            delivered.insert(job_id);
        }
    }
    let held_id = held["id"].as_str().unwrap();
    assert!(
        ids_by_job.values().any(|ids| ids.contains(held_id)),
        "the held message was delivered again under its id: {ids_by_job:?}"
    );
    for (job_id, ids) in &ids_by_job {
        assert_eq!(
            ids.len(),
            1,
            "job {job_id} came under several webhook-ids: {ids:?}"
        );
    }
    let expected: HashSet<String> = accepted.iter().cloned().collect();
    assert_eq!(delivered, expected);
    println!(
        "\n| fault | outcomes | requests received | delivered (2xx) | webhook-ids per outcome |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| notifier SIGKILL mid-delivery | {} | {requests} (one held when it died) | {} | 1 |",
        accepted.len(),
        delivered.len()
    );
}

/// A resumable upload whose gateway is killed (SIGKILL) in the middle of a PATCH: storage keeps
/// what arrived before the gateway died, the restarted gateway (or any other) reports exactly
/// that offset, and the rest completes the file, byte for byte, as one job.
#[tokio::test]
async fn a_gateway_killed_mid_patch_keeps_what_arrived_and_the_upload_resumes() {
    use sha2::{Digest, Sha256};
    let mut cluster = Cluster::start(crate::binary()).await;
    let user = cluster.user("tus-fault@example.com").await;
    let clip = test_support::mp4_like(32 * 1024 * 1024, 11);
    let tus = |request: reqwest::RequestBuilder| {
        request
            .bearer_auth(&user.token)
            .header("tus-resumable", "1.0.0")
    };
    let created = tus(cluster.http.post(cluster.url("/files/")))
        .header("upload-length", clip.len())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();

    // The body trickles in; the gateway dies a third of the way through.
    let (body, mut sent_so_far) = rest::trickled_body(&clip, Duration::from_millis(10));
    let patch = tus(reqwest::Client::new().patch(cluster.url(&location)))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(body)
        .send();
    let patch = tokio::spawn(patch);
    sent_so_far
        .wait_for(|total| *total >= clip.len() / 3)
        .await
        .unwrap();
    cluster.kill(Role::Gateway).await;
    assert!(
        patch.await.unwrap().is_err(),
        "the PATCH to the killed gateway did not succeed"
    );
    cluster.restart(Role::Gateway).await;

    let status = tus(cluster.http.head(cluster.url(&location)))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    let kept = rest::upload_offset(&status) as usize;
    assert!(
        kept > 0 && kept < clip.len(),
        "what arrived before the kill is kept: {kept} of {}",
        clip.len()
    );
    let rest = tus(cluster.http.patch(cluster.url(&location)))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", kept)
        .body(clip[kept..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), StatusCode::NO_CONTENT);
    let job_id = rest.headers()["job-id"].to_str().unwrap().to_owned();
    let jobs = cluster.jobs(&user.id).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, job_id);
    let videos = cluster.files(pb::Bucket::Videos, &user.id).await;
    assert_eq!(videos.len(), 1);
    assert_eq!(videos[0].sha256, hex::encode(Sha256::digest(&clip)));
    println!(
        "| gateway killed mid-PATCH | {kept} of {} bytes kept | resumed on the restarted gateway | one job, the file byte for byte |",
        clip.len()
    );
}
