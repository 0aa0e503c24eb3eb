//! The deployment as an operator ships it: the five images built from the Dockerfile
//! (`scripts/images`) running the rendered Kubernetes manifests under `podman kube play`
//! (`test_support::pods`), used as a user uses the system.
//!
//! They need the images, which take a while to build, so they are ignored in a plain `cargo
//! nextest run`; `scripts/containers` (part of `scripts/test`) builds the images and runs them.

use crate::up_process::{looks_like_mp3, run_readme_block};
use clients::Owner;
use proto::storage::v1 as pb;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use test_support::pods::{Deployment, PASSWORD};
use test_support::{VideoSpec, mp4_bytes, rest, temp_dir};
use tokio::time::Instant;

/// Signs up `email` and logs in: the user's id and token.
async fn user(deployment: &Deployment, email: &str) -> (String, String) {
    let id = rest::register(&deployment.http, &deployment.gateway, email, PASSWORD).await;
    let token = rest::login(&deployment.http, &deployment.gateway, email, PASSWORD).await;
    (id, token)
}

/// Uploads `video` and returns its job's id.
async fn upload(deployment: &Deployment, token: &str, video: Vec<u8>) -> String {
    let response = rest::upload(
        &deployment.http,
        &deployment.gateway,
        token,
        "talk.mp4",
        video,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    body["job_id"].as_str().unwrap().to_owned()
}

/// Waits until `owner`'s job `job_id` satisfies `until` (10 minutes at most).
async fn wait_for_job(
    deployment: &Deployment,
    owner: &str,
    job_id: &str,
    what: &str,
    until: impl Fn(&pb::Job) -> bool,
) -> pb::Job {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let job = deployment
            .storage()
            .job(job_id, &Owner::One(owner.into()))
            .await
            .unwrap();
        if until(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "the job never {what}: {job:?}\n{}",
            deployment.logs(deployment.container("converter"))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ended(job: &pb::Job) -> bool {
    matches!(job.state(), pb::JobState::Done | pb::JobState::Failed) && job.notified
}

#[tokio::test]
#[ignore = "needs the images: scripts/containers builds them and runs this"]
async fn the_played_manifests_run_as_specified_and_serve_the_readme_walkthrough() {
    let deployment = Deployment::play().await.unwrap();

    // What the manifests ask of every container, as the runtime enforces it.
    for container in &deployment.containers {
        let enforced = deployment.enforced(container).unwrap();
        let name = container.podman_name();
        assert_eq!(
            enforced.user, "65532:65532",
            "{name} runs as the non-root user"
        );
        assert!(enforced.read_only_root, "{name}: read-only root");
        // Secrets arrive as mounted files, never through the environment.
        for secret in [
            "JWT_SECRET",
            "DATABASE_URL",
            "MONGODB_URI",
            "AMQP_URL",
            "SMTP_URL",
        ] {
            assert!(
                !enforced.environment.iter().any(|name| name == secret),
                "{name} has {secret} in its environment"
            );
        }
        assert!(
            enforced
                .environment
                .iter()
                .any(|name| name.ends_with("_FILE")),
            "{name} is given no secret file: {:?}",
            enforced.environment
        );
        assert!(
            enforced.effective_capabilities.is_empty(),
            "{name}: no capabilities, got {:?}",
            enforced.effective_capabilities
        );
        assert_eq!(
            enforced.memory_limit, container.memory_limit,
            "{name}: the manifest's memory limit is the cgroup's"
        );
        for probe in [
            &container.startup,
            &container.liveness,
            &container.readiness,
        ] {
            let probe = probe
                .as_ref()
                .expect("every container declares all three probes");
            deployment.probe(probe).await.unwrap();
        }
    }

    let work = temp_dir();
    let env = [("GATEWAY", deployment.gateway.clone())];
    let curl = run_readme_block("curl", work.path(), &env).await;
    assert!(curl.status.success(), "the curl walkthrough failed");
    let mp3 = work.path().join("video.mp3");
    assert!(looks_like_mp3(&mp3), "curl saved the MP3");

    let mails = deployment.smtp.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(mails.len(), 1, "one e-mail for the one upload");
    assert_eq!(mails[0].to, vec!["you@example.com".to_owned()]);
    println!("{}", deployment.report().unwrap());
}

#[tokio::test]
#[ignore = "needs the images: scripts/containers builds them and runs this"]
async fn a_twenty_minute_video_converts_inside_the_converter_containers_memory_limit() {
    let deployment = Deployment::play().await.unwrap();
    let (owner, token) = user(&deployment, "listener@example.com").await;
    let spec = VideoSpec::long_conversion();
    assert!(spec.seconds >= 1200.0, "at least 20 minutes of audio");
    let job_id = upload(&deployment, &token, mp4_bytes(spec).await).await;

    let job = wait_for_job(&deployment, &owner, &job_id, "ended", ended).await;
    assert_eq!(job.state(), pb::JobState::Done, "{job:?}");
    let work = temp_dir();
    let mp3 = work.path().join("talk.mp3");
    let bytes = deployment
        .http
        .get(deployment.url(&format!("/download/{}", job.mp3_id)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    std::fs::write(&mp3, &bytes).unwrap();
    let seconds = test_support::ffprobe_duration_seconds(&mp3).await.unwrap();
    assert!(
        (seconds - f64::from(spec.seconds)).abs() < 2.0,
        "the MP3 lasts {seconds} s"
    );

    let converter = deployment.container("converter");
    assert!(!deployment.oom_killed(converter).unwrap());
    let peak = deployment.peak_memory(converter).unwrap();
    assert!(
        peak < converter.memory_limit,
        "peak {peak} B within the limit {} B",
        converter.memory_limit
    );
    println!("{}", deployment.report().unwrap());
}

#[tokio::test]
#[ignore = "needs the images: scripts/containers builds them and runs this"]
async fn a_converter_container_killed_mid_conversion_and_restarted_gives_one_mp3_and_one_email() {
    let deployment = Deployment::play().await.unwrap();
    let (owner, token) = user(&deployment, "patient@example.com").await;
    let job_id = upload(
        &deployment,
        &token,
        mp4_bytes(VideoSpec::long_conversion()).await,
    )
    .await;
    wait_for_job(&deployment, &owner, &job_id, "made progress", |job| {
        job.state() == pb::JobState::Converting && job.progress_percent > 0
    })
    .await;

    let converter = deployment.container("converter");
    let started = || {
        deployment
            .inspect(converter, "{{.State.StartedAt.UnixNano}}")
            .unwrap()
    };
    let first_start = started();
    deployment.kill(converter).await.unwrap();
    let took = deployment.restart(converter).await.unwrap();
    assert_ne!(
        started(),
        first_start,
        "the converter runs as a new process after the kill"
    );
    println!(
        "converter ready again {:.2} s after its restart",
        took.as_secs_f64()
    );

    let job = wait_for_job(&deployment, &owner, &job_id, "ended", ended).await;
    assert_eq!(job.state(), pb::JobState::Done, "{job:?}");
    let mp3s = deployment
        .storage()
        .all_files(pb::Bucket::Mp3s, &Owner::One(owner.clone()))
        .await
        .unwrap();
    assert_eq!(mp3s.len(), 1, "exactly one MP3: {mp3s:?}");
    assert_eq!(mp3s[0].id, job.mp3_id);
    // A duplicate would come within a retry or two.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mails = deployment.smtp.mails();
    assert_eq!(mails.len(), 1, "exactly one e-mail: {mails:?}");
    assert!(mails[0].text().contains(&job.mp3_id));
}
