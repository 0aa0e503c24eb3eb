//! The whole system as a newcomer runs it: `mp3converter up` on embedded defaults (no MySQL,
//! MongoDB, RabbitMQ or SMTP), driven through the README's walkthrough, the CLI, a browser, and
//! a crash in the middle of a conversion.

use crate::up_process::{System, looks_like_mp3, run_readme_block};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use test_support::media::{VideoSpec, generate_video};
use test_support::{SmtpCapture, TestBroker, TestMongo, TestMysql, temp_dir};

const PASSWORD: &str = "correct horse battery";

async fn video_in(dir: &Path, name: &str, seconds: f32) -> std::path::PathBuf {
    let path = dir.join(name);
    generate_video(&path, VideoSpec::small(seconds))
        .await
        .unwrap();
    path
}

/// Runs the CLI with `args`, the login kept in `config`; returns exit code, stdout, stderr.
async fn cli(
    config: &Path,
    gateway: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(crate::binary());
    command
        .args(args)
        .env("MP3CONVERTER_URL", gateway)
        .env("MP3CONVERTER_CONFIG_DIR", config)
        .env_remove("MP3CONVERTER_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the CLI finishes")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `mp3converter [--json] upload VIDEO --wait --output OUTPUT`, which must succeed; its stdout.
async fn upload_and_wait(
    config: &Path,
    gateway: &str,
    video: &Path,
    output: &Path,
    json: bool,
) -> String {
    let mut args = vec!["upload", video.to_str().unwrap(), "--wait", "--output"];
    args.push(output.to_str().unwrap());
    if json {
        args.insert(0, "--json");
    }
    let (code, out, err) = cli(config, gateway, &args, None).await;
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// Registers `email` and logs the CLI in as it, keeping the login in `config`.
async fn sign_up(config: &Path, gateway: &str, email: &str) {
    for command in ["register", "login"] {
        let args = [command, email, "--password-stdin"];
        let (code, _, err) = cli(config, gateway, &args, Some(PASSWORD)).await;
        assert_eq!(code, 0, "{command}: {err}");
    }
}

#[tokio::test]
async fn up_refuses_a_configuration_that_cannot_work_before_it_writes_anything() {
    let parent = temp_dir();
    for (variable, value, named) in [
        ("FFMPEG_PATH", "/no/such/ffmpeg", "FFMPEG_PATH"),
        ("RUST_LOG", "auth=loud", "RUST_LOG"),
        ("AMQP_URL", "http://not-a-broker", "AMQP_URL"),
        ("JWT_SECRET", "too short", "JWT_SECRET"),
    ] {
        let data_dir = parent.path().join(format!("fresh-{variable}"));
        let run = tokio::process::Command::new(crate::binary())
            .args(["up", "--any-ports", "--data-dir"])
            .arg(&data_dir)
            .env(variable, value)
            .stdin(std::process::Stdio::null())
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("up stops at once")
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{variable}={value} was accepted");
        assert!(stderr.contains(named), "{variable}: {stderr}");
        assert!(
            !data_dir.exists(),
            "{variable}: a refused start left {}",
            data_dir.display()
        );
    }
}

#[tokio::test]
async fn the_readme_walkthrough_works_as_written_against_up() {
    readme_walkthrough(&[]).await;
}

#[tokio::test]
async fn the_readme_walkthrough_works_as_written_against_up_with_tls() {
    readme_walkthrough(&["--tls"]).await;
}

/// The README's curl and CLI walkthroughs, as written, against `up` started with `args`.
/// With `--tls`, curl and the CLI are told to trust the local authority (CURL_CA_BUNDLE,
/// MP3CONVERTER_CA_FILE), as the banner says.
async fn readme_walkthrough(args: &[&str]) {
    let data = temp_dir();
    let work = temp_dir();
    let system = System::start_with(data.path(), args, &[]).await;
    let tls = args.contains(&"--tls");
    assert_eq!(
        system.gateway.starts_with("https://"),
        tls,
        "{}",
        system.gateway
    );
    let mut env = vec![
        ("GATEWAY", system.gateway.clone()),
        ("MP3CONVERTER_URL", system.gateway.clone()),
        (
            "MP3CONVERTER_CONFIG_DIR",
            work.path().join("config").display().to_string(),
        ),
        ("HOME", work.path().display().to_string()),
    ];
    if tls {
        let ca = data.path().join("tls/ca.crt").display().to_string();
        env.extend([("CURL_CA_BUNDLE", ca.clone()), ("MP3CONVERTER_CA_FILE", ca)]);
    }

    let curl = run_readme_block("curl", work.path(), &env).await;
    assert!(curl.status.success(), "the curl walkthrough failed");
    let curl_mp3s: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "mp3"))
        .collect();
    assert_eq!(curl_mp3s.len(), 1, "curl saved one MP3: {curl_mp3s:?}");
    assert!(looks_like_mp3(&curl_mp3s[0]));

    let cli = run_readme_block("cli", work.path(), &env).await;
    assert!(cli.status.success(), "the CLI walkthrough failed");
    assert!(looks_like_mp3(&work.path().join("video-cli.mp3")));
    let opus = std::fs::read(work.path().join("video.opus")).unwrap();
    assert!(
        opus.starts_with(b"OggS"),
        "the voice preset made an Ogg file"
    );

    // The three uploads were announced by e-mail, to the address that registered.
    tokio::time::timeout(Duration::from_secs(30), async {
        while system.outbox().len() < 3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("three e-mails reach the outbox");
    let mails = system.outbox();
    assert_eq!(mails.len(), 3);
    assert!(
        mails
            .iter()
            .all(|mail| mail.contains("To: you@example.com")),
        "{mails:?}"
    );
    assert!(system.stop().await, "up exits cleanly on SIGTERM");
}

#[tokio::test]
async fn the_cli_registers_logs_in_uploads_waits_and_downloads() {
    let data = temp_dir();
    let work = temp_dir();
    let config = work.path().join("config");
    let system = System::start(data.path(), &[]).await;
    let gateway = system.gateway.as_str();
    let video = video_in(work.path(), "clip.mp4", 2.0).await;

    let (code, _, stderr) = cli(&config, gateway, &["jobs"], None).await;
    assert_eq!(code, 3, "not logged in yet: {stderr}");
    assert!(stderr.contains("mp3converter login"), "{stderr}");

    let (code, out, err) = cli(
        &config,
        gateway,
        &["--json", "register", "cli@example.com", "--password-stdin"],
        Some(PASSWORD),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["email"],
        "cli@example.com"
    );
    let (code, out, err) = cli(
        &config,
        gateway,
        &["--json", "login", "cli@example.com", "--password-stdin"],
        Some("wrong password\n"),
    )
    .await;
    assert_eq!(code, 3, "a wrong password is refused: {out}{err}");
    assert!(serde_json::from_str::<Value>(&out).unwrap()["error"]["message"].is_string());
    let (code, out, err) = cli(
        &config,
        gateway,
        &["login", "cli@example.com", "--password-stdin"],
        Some(PASSWORD),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let token_file = config.join("session.json");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token is readable by its owner only");

    let output = work.path().join("clip.mp3");
    let out = upload_and_wait(&config, gateway, &video, &output, true).await;
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["job"]["status"], "done");
    assert!(looks_like_mp3(&output));
    assert_eq!(
        result["bytes"].as_u64(),
        Some(std::fs::metadata(&output).unwrap().len())
    );
    let job_id = result["job"]["id"].as_str().unwrap().to_owned();

    let (code, out, _) = cli(&config, gateway, &["--json", "jobs"], None).await;
    assert_eq!(code, 0);
    let jobs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
    let (code, out, _) = cli(&config, gateway, &["status", &job_id], None).await;
    assert_eq!(code, 0);
    assert!(out.contains("done"), "{out}");

    // `download` takes the job's id (or the MP3's) and names the file as the gateway suggests.
    let downloads = work.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let again = downloads.join("again.mp3");
    let (code, out, err) = cli(
        &config,
        gateway,
        &["download", &job_id, "-o", again.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&output).unwrap()
    );

    let (code, out, _) = cli(
        &config,
        gateway,
        &["--json", "status", "0123456789abcdef01234567"],
        None,
    )
    .await;
    assert_eq!(code, 1);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["error"]["code"],
        "not_found"
    );

    let text = work.path().join("notes.mp4");
    std::fs::write(&text, "this is not a video").unwrap();
    let (code, _, err) = cli(&config, gateway, &["upload", text.to_str().unwrap()], None).await;
    assert_eq!(code, 1);
    assert!(err.contains("415"), "a text file is refused as such: {err}");
    let (code, _, err) = cli(&config, gateway, &["upload", "/no/such/file.mp4"], None).await;
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/file.mp4"), "{err}");
}

#[tokio::test]
async fn the_cli_tries_an_upload_again_while_the_queue_is_down_and_makes_one_job() {
    use test_support::mesh::{Mesh, MeshOptions};
    let mesh = Mesh::start(MeshOptions::default()).await;
    // A gateway whose queue goes through a proxy that is down: every upload is a 503 (and
    // what it stored is removed) until the proxy comes back.
    let (proxy, through_proxy) = mesh.broker.proxy().await.unwrap();
    proxy.go_down();
    let mut config = mesh.gateway.config().clone();
    config.broker.amqp_url = Some(through_proxy.into());
    let gateway = test_support::Running::<gateway::App>::start(config)
        .await
        .unwrap();
    let user = mesh.user("retry@example.com").await;
    let work = temp_dir();
    let config_dir = work.path().join("config");
    let login = ["login", "retry@example.com", "--password-stdin"];
    let (code, _, err) = cli(&config_dir, &gateway.url(), &login, Some(PASSWORD)).await;
    assert_eq!(code, 0, "{err}");
    let video = video_in(work.path(), "clip.mp4", 1.0).await;

    let uploading = {
        let (config_dir, gateway_url) = (config_dir.clone(), gateway.url());
        let video = video.clone();
        tokio::spawn(async move {
            cli(
                &config_dir,
                &gateway_url,
                &["--json", "upload", video.to_str().unwrap()],
                None,
            )
            .await
        })
    };
    // The first attempt fails at once; the second comes a second later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.come_back().await.unwrap();
    let (code, out, err) = uploading.await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("trying again"), "{err}");
    let accepted: Value = serde_json::from_str(&out).unwrap();
    let jobs = mesh.stored_jobs(&user.id).await;
    assert_eq!(jobs.len(), 1, "one job for every attempt");
    assert_eq!(jobs[0].id, accepted["job_id"].as_str().unwrap());
    assert_eq!(
        mesh.stored_videos(&user.id).await.len(),
        1,
        "the refused attempts left no video"
    );
}

#[tokio::test]
async fn the_cli_retries_through_a_dropped_connection_and_resumes_after_being_killed() {
    use sha2::{Digest, Sha256};
    use test_support::mesh::{Mesh, MeshOptions};
    let mesh = Mesh::start(MeshOptions::default()).await;
    let user = mesh.user("resume@example.com").await;
    let proxy = test_support::TcpProxy::start(mesh.gateway.addr())
        .await
        .unwrap();
    let gateway = format!("http://{}", proxy.addr());
    let work = temp_dir();
    let config_dir = work.path().join("config");
    let login = ["login", "resume@example.com", "--password-stdin"];
    let (code, _, err) = cli(&config_dir, &gateway, &login, Some(PASSWORD)).await;
    assert_eq!(code, 0, "{err}");
    let clip = test_support::mp4_like(96 * 1024 * 1024, 9);
    let video = work.path().join("long walk.mp4");
    std::fs::write(&video, &clip).unwrap();

    // The first run: its connection is cut a quarter of the way in (it tries again), then it
    // is killed half-way.
    let mut first = tokio::process::Command::new(crate::binary())
        .args(["upload", video.to_str().unwrap()])
        .env("MP3CONVERTER_URL", &gateway)
        .env("MP3CONVERTER_CONFIG_DIR", &config_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let quarter = clip.len() / 4;
    let passed = |share: usize| {
        let proxy = &proxy;
        async move {
            while proxy.bytes_to_server() < quarter * share {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), passed(1))
        .await
        .expect("a quarter is sent");
    proxy.sever();
    tokio::time::timeout(Duration::from_secs(60), passed(2))
        .await
        .expect("half is sent");
    first.kill().await.unwrap();
    let killed = first.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&killed.stderr);
    assert!(
        said.contains("trying again"),
        "the cut connection was retried: {said}"
    );

    // The upload's URL is kept beside the login, privately, and the gateway kept what arrived.
    let records = config_dir.join("uploads.json");
    let mode = std::fs::metadata(&records).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let kept: Value = serde_json::from_slice(&std::fs::read(&records).unwrap()).unwrap();
    let url = kept[0]["url"].as_str().unwrap().to_owned();
    let status = mesh
        .http
        .head(url.replace(&gateway, &mesh.gateway.url()))
        .bearer_auth(&user.token)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    let offset = test_support::rest::upload_offset(&status) as usize;
    assert!(
        offset > 0 && offset < clip.len(),
        "part of the file is kept: {offset}"
    );

    // The same command again sends only the rest.
    let before = proxy.bytes_to_server();
    let (code, out, err) = cli(
        &config_dir,
        &gateway,
        &["--json", "upload", video.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("resuming the upload"), "{err}");
    let sent_again = proxy.bytes_to_server() - before;
    assert!(
        sent_again < clip.len() - offset + 1024 * 1024,
        "{sent_again} bytes sent again for the {} missing",
        clip.len() - offset
    );
    let accepted: Value = serde_json::from_str(&out).unwrap();
    let jobs = mesh.stored_jobs(&user.id).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, accepted["job_id"].as_str().unwrap());
    let videos = mesh.stored_videos(&user.id).await;
    assert_eq!(videos.len(), 1);
    assert_eq!(videos[0].sha256, hex::encode(Sha256::digest(&clip)));
    let kept: Value = serde_json::from_slice(&std::fs::read(&records).unwrap()).unwrap();
    assert_eq!(
        kept,
        serde_json::json!([]),
        "a finished upload is forgotten"
    );
}

#[tokio::test]
async fn the_cli_uploads_with_audio_options_lists_presets_and_refuses_a_bad_option_before_uploading()
 {
    let data = temp_dir();
    let work = temp_dir();
    let config = work.path().join("config");
    let system = System::start(data.path(), &[]).await;
    let gateway = system.gateway.as_str();
    sign_up(&config, gateway, "options@example.com").await;
    let video = video_in(work.path(), "talk.mp4", 3.0).await;

    let (code, out, err) = cli(&config, gateway, &["presets"], None).await;
    assert_eq!(code, 0, "{out}{err}");
    for name in ["music", "podcast", "voice", "archive"] {
        assert!(out.contains(name), "{out}");
    }

    // Refused here, naming the option, before the video is sent: no job appears.
    let (code, _, err) = cli(
        &config,
        gateway,
        &["upload", video.to_str().unwrap(), "--bitrate", "7"],
        None,
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`bitrate`"), "{err}");
    let (_, out, _) = cli(&config, gateway, &["--json", "jobs"], None).await;
    let jobs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(0), "{jobs}");

    let output = work.path().join("talk.opus");
    let (code, out, err) = cli(
        &config,
        gateway,
        &[
            "--json",
            "upload",
            video.to_str().unwrap(),
            "--format",
            "opus",
            "--title",
            "My talk",
            "--normalize=-18",
            "--wait",
            "--output",
            output.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    let options = &result["job"]["options"];
    assert_eq!(options["format"], "opus", "{result}");
    assert_eq!(options["tags"]["title"], "My talk", "{result}");
    assert_eq!(options["normalize"]["target_lufs"], -18.0, "{result}");
    let bytes = std::fs::read(&output).unwrap();
    assert!(bytes.starts_with(b"OggS"), "an Ogg file");
}

#[tokio::test]
async fn the_cli_adds_lists_rotates_and_deletes_webhook_endpoints() {
    let data = temp_dir();
    let work = temp_dir();
    let config = work.path().join("config");
    // Loopback allowed, so the ping below goes to a local port nobody answers at, never to
    // an address outside this machine.
    let system = System::start(data.path(), &[("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")]).await;
    let gateway = system.gateway.as_str();
    sign_up(&config, gateway, "hooks@example.com").await;

    let (code, out, err) = cli(&config, gateway, &["webhooks", "list"], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no webhook endpoints yet"), "{out}");

    let url = format!("http://127.0.0.1:{}/hooks/mp3", test_support::free_port());
    let url = url.as_str();
    let args = [
        "--json",
        "webhooks",
        "add",
        url,
        "--event",
        "job.failed",
        "--description",
        "alerts",
    ];
    let (code, out, err) = cli(&config, gateway, &args, None).await;
    assert_eq!(code, 0, "{out}{err}");
    let added: Value = serde_json::from_str(&out).unwrap();
    let id = added["id"].as_str().unwrap().to_owned();
    assert_eq!(added["events"], serde_json::json!(["job.failed"]));
    assert!(
        added["secret"].as_str().unwrap().starts_with("whsec_"),
        "{added}"
    );

    let (code, out, _) = cli(&config, gateway, &["webhooks", "list"], None).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains(url) && out.contains("job.failed"),
        "{out}"
    );
    assert!(
        !out.contains("whsec_"),
        "the secret is shown only once: {out}"
    );

    let (code, out, err) = cli(&config, gateway, &["webhooks", "rotate-secret", &id], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("new signing secret: whsec_"), "{out}");
    let (_, out, _) = cli(&config, gateway, &["webhooks", "show", &id], None).await;
    assert!(out.contains("the previous secret signs too until"), "{out}");
    let (code, out, err) = cli(&config, gateway, &["webhooks", "test", &id], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ping msg_") && out.contains("queued"),
        "{out}"
    );

    // A private address is refused with the gateway's reason (exit code 1, as every refusal).
    let (code, _, err) = cli(
        &config,
        gateway,
        &["webhooks", "add", "http://10.0.0.5/hook"],
        None,
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a private address"), "{err}");

    let (code, out, err) = cli(&config, gateway, &["webhooks", "delete", &id], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted"), "{out}");
    let (code, _, err) = cli(&config, gateway, &["webhooks", "show", &id], None).await;
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test]
async fn killing_up_mid_conversion_and_starting_it_again_finishes_the_job_once() {
    let data = temp_dir();
    let work = temp_dir();
    // ffmpeg that starts slowly, so there is time to pull the plug mid-conversion.
    let slow_ffmpeg = work.path().join("slow-ffmpeg");
    std::fs::write(&slow_ffmpeg, "#!/bin/sh\nsleep 3\nexec ffmpeg \"$@\"\n").unwrap();
    std::fs::set_permissions(&slow_ffmpeg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let slow = slow_ffmpeg.display().to_string();
    let env = [
        ("FFMPEG_PATH", slow.as_str()),
        ("EMBEDDED_QUEUE_LEASE_SECONDS", "2"),
    ];
    let video = video_in(work.path(), "crash.mp4", 3.0).await;
    let config = work.path().join("config");

    let first = System::start(data.path(), &env).await;
    let gateway = first.gateway.clone();
    sign_up(&config, &gateway, "crash@example.com").await;
    let (code, out, err) = cli(
        &config,
        &gateway,
        &["--json", "upload", video.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let job_id = serde_json::from_str::<Value>(&out).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = async |config: &Path, gateway: &str| {
        let (_, out, _) = cli(config, gateway, &["--json", "status", &job_id], None).await;
        serde_json::from_str::<Value>(&out).unwrap()["status"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        while status(&config, &gateway).await != "converting" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the job starts converting");
    first.kill().await;

    // A new run on the same data: it gets new ports, so log in again there.
    let second = System::start(data.path(), &env).await;
    let (code, _, err) = cli(
        &config,
        &second.gateway,
        &["login", "crash@example.com", "--password-stdin"],
        Some(PASSWORD),
    )
    .await;
    assert_eq!(code, 0, "the account survived the crash: {err}");
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match status(&config, &second.gateway).await.as_str() {
                "done" => break,
                "failed" => panic!("the job failed after the restart"),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    })
    .await
    .expect("the job finishes after the restart");
    let output = work.path().join("after-crash.mp3");
    let (code, _, err) = cli(
        &config,
        &second.gateway,
        &["download", &job_id, "-o", output.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(looks_like_mp3(&output));
    // Exactly one MP3 and one e-mail, however many attempts it took.
    tokio::time::timeout(Duration::from_secs(30), async {
        while second.outbox().is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the user is told");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(second.stored_mp3s(), 1);
    assert_eq!(second.outbox().len(), 1);
    assert!(second.stop().await);
}

#[tokio::test]
async fn the_web_page_converts_a_video_in_chromium() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists() && root.join("node_modules/playwright-core").exists(),
        "the browser test needs Chromium ({chromium}) and playwright-core in node_modules: \
         scripts/test installs both"
    );
    let data = temp_dir();
    let work = temp_dir();
    // The page's webhook goes to a loopback port nobody answers at: allowed for this run.
    let system = System::start(data.path(), &[("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")]).await;
    let video = video_in(work.path(), "browser.mp4", 2.0).await;
    // Three of the page's 8 MiB PATCHes; it only has to start like a video.
    let big = work.path().join("big upload.mp4");
    std::fs::write(&big, test_support::mp4_like(20 * 1024 * 1024, 5)).unwrap();
    let webhook_url = format!("http://127.0.0.1:{}/hook", test_support::free_port());
    let output = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/upload_flow.mjs"))
        .env("GATEWAY_URL", &system.gateway)
        .env("WEBHOOK_URL", &webhook_url)
        .env("VIDEO_PATH", &video)
        .env("BIG_PATH", &big)
        .env("OUT_DIR", work.path())
        .env("CHROMIUM_PATH", &chromium)
        .current_dir(root)
        .output()
        .await
        .expect("node runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser test failed (see its output above)"
    );
    assert!(looks_like_mp3(&work.path().join("downloaded.mp3")));
}

#[tokio::test]
async fn up_uses_each_real_component_whose_variable_is_set() {
    let mysql = TestMysql::create().await.unwrap();
    let mongo = TestMongo::create().await.unwrap();
    let broker = TestBroker::create().await.unwrap();
    let smtp = SmtpCapture::start().unwrap();
    let queues = broker.queues().env_vars();
    let (database_url, smtp_url) = (mysql.url(), smtp.url());
    let mut env = vec![
        ("DATABASE_URL", database_url.as_str()),
        ("JWT_SECRET", "a-signing-key-for-the-real-components-test"),
        ("MONGODB_URI", mongo.uri()),
        ("MONGODB_DATABASE", mongo.name()),
        ("AMQP_URL", broker.url()),
        ("SMTP_URL", smtp_url.as_str()),
    ];
    env.extend(queues.iter().map(|(name, value)| (*name, value.as_str())));
    let data = temp_dir();
    let work = temp_dir();
    let config = work.path().join("config");
    let system = System::start(data.path(), &env).await;
    let gateway = system.gateway.as_str();
    let video = video_in(work.path(), "real.mp4", 2.0).await;

    sign_up(&config, gateway, "real@example.com").await;
    let output = work.path().join("real.mp3");
    upload_and_wait(&config, gateway, &video, &output, false).await;
    assert!(looks_like_mp3(&output));
    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails[0].to, ["real@example.com"]);

    // The real components hold the account, the files, the queue and the mail: the embedded
    // defaults were never created.
    for embedded in ["auth.sqlite", "storage", "queue.sqlite", "outbox"] {
        assert!(
            !data.path().join(embedded).exists(),
            "{embedded} was created"
        );
    }
    assert!(system.stop().await);
}
