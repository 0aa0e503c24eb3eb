//! Security properties of the running system as a whole ([`cluster`]: five processes on real
//! infrastructure): secrets never reach any service's logs, and given as files they never
//! enter a process's environment; authenticated answers are not cached, the login throttle
//! holds under a burst of concurrent guesses, and the internal gRPC services cannot be reached
//! through the gateway.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proto::auth::v1 as auth_pb;
use proto::storage::v1 as storage_pb;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use test_support::cluster::{Cluster, JWT_SECRET, PASSWORD, Parts, Role};
use test_support::{VideoSpec, mp4_bytes, rest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `POST /login` with HTTP Basic.
async fn log_in(cluster: &Cluster, email: &str, password: &str) -> reqwest::Response {
    let request = cluster.http.post(cluster.url("/login"));
    request
        .basic_auth(email, Some(password))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn passwords_tokens_and_the_signing_key_never_reach_the_logs() {
    // Stricter than production (info): our own crates and the HTTP layer at debug.
    let cluster = Cluster::start_with(
        crate::binary(),
        &[(
            "RUST_LOG",
            "info,gateway=debug,auth=debug,storage=debug,converter=debug,notifier=debug,\
         service_kit=debug,tower_http=debug",
        )],
    )
    .await;
    let email = "careful@example.com";
    let user = cluster.user(email).await;
    let wrong_password = "not-the-password-4711";
    let refused = log_in(&cluster, email, wrong_password).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // The request id the client chose is carried to every service that works on the upload.
    let request_id = format!("trace-upload-{}", test_support::unique_name(""));
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(mp4_bytes(VideoSpec::small(1.0)).await)
            .file_name("clip.mp4"),
    );
    let upload = cluster
        .http
        .post(cluster.url("/upload"))
        .bearer_auth(&user.token)
        .header("x-request-id", &request_id)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::ACCEPTED);
    assert_eq!(upload.headers()["x-request-id"], request_id.as_str());
    let upload_headers = upload.headers().clone();
    let job_id = upload.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mp3_id = loop {
        let job = rest::job(&cluster.http, &cluster.gateway, &user.token, &job_id).await;
        if let Some(mp3_id) = job["mp3_id"].as_str() {
            break mp3_id.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "never done: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let path = format!("/download/{mp3_id}");
    let download = rest::get(&cluster.http, &cluster.gateway, &path, &user.token).await;
    assert_eq!(download.status(), StatusCode::OK);
    // Authenticated answers are never cached, and never sniffed into another type.
    for (what, headers) in [
        ("the upload", &upload_headers),
        ("the download", download.headers()),
    ] {
        assert_eq!(headers["cache-control"], "no-store", "{what}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    }
    cluster.smtp.wait_for(1, Duration::from_secs(30)).await;
    // Every service that worked on the upload logs its request id, the notifier only after the
    // mail it sent has arrived: wait for each, so the search below reads the whole flow.
    for role in Role::ALL {
        let log = cluster
            .log_containing(role, &request_id, Duration::from_secs(10))
            .await;
        assert!(
            log.contains(&request_id),
            "{role:?} logged nothing with the upload's request id {request_id}"
        );
    }

    let signature = user.token.rsplit('.').next().unwrap();
    let secrets = [
        ("the password", PASSWORD.to_owned()),
        ("a wrong password", wrong_password.to_owned()),
        (
            "the Basic credentials",
            STANDARD.encode(format!("{email}:{PASSWORD}")),
        ),
        ("the token", user.token.clone()),
        ("the token's signature", signature.to_owned()),
        ("the JWT signing key", JWT_SECRET.to_owned()),
    ];
    let mut lines = 0;
    for role in Role::ALL {
        let log = cluster.log(role);
        lines += log.lines().count();
        for (what, secret) in &secrets {
            if let Some(line) = log.lines().find(|line| line.contains(secret.as_str())) {
                panic!("{role:?} logged {what}:\n{line}");
            }
        }
    }
    // The logs saw the whole flow, so their silence means something.
    let gateway_log = cluster.log(Role::Gateway);
    for path in ["/login", "/upload", "/download/"] {
        assert!(
            gateway_log.contains(path),
            "the gateway logged no {path} request"
        );
    }
    assert!(cluster.log(Role::Converter).contains(&job_id));
    println!(
        "searched {lines} log lines of 5 services for {} secrets: none found",
        secrets.len()
    );
}

#[tokio::test]
async fn the_login_throttle_holds_under_a_burst_of_concurrent_guesses() {
    const MAX_FAILURES: usize = 3;
    const BURST: usize = 30;
    let cluster = Cluster::start_with(crate::binary(), &[("LOGIN_MAX_FAILURES", "3")]).await;
    let email = "target@example.com";
    cluster.user(email).await;
    let guesses: Vec<_> = (0..BURST)
        .map(|n| {
            let request = cluster
                .http
                .post(cluster.url("/login"))
                .basic_auth(email, Some(format!("guess-number-{n}")));
            tokio::spawn(async move { request.send().await.unwrap() })
        })
        .collect();
    let (mut refused, mut throttled) = (0, 0);
    for guess in guesses {
        let response = guess.await.unwrap();
        match response.status() {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(
                    response
                        .headers()
                        .contains_key(reqwest::header::RETRY_AFTER)
                );
                throttled += 1;
            }
            other => panic!("a guess got {other}: {:?}", response.text().await),
        }
    }
    println!(
        "{BURST} concurrent guesses: {refused} checked and refused (401), {throttled} throttled (429)"
    );
    assert!(
        refused <= MAX_FAILURES,
        "{refused} guesses were checked; the limit is {MAX_FAILURES}"
    );
    assert_eq!(refused + throttled, BURST);
    // Even the right password waits now.
    let right = log_in(&cluster, email, PASSWORD).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn auth_and_storage_cannot_be_reached_through_the_gateway() {
    let cluster = Cluster::start(crate::binary()).await;
    let user = cluster.user("outsider@example.com").await;

    // Real gRPC clients aimed at the gateway get no service.
    let gateway = tonic::transport::Endpoint::from_shared(cluster.gateway.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let login = auth_pb::auth_service_client::AuthServiceClient::new(gateway.clone())
        .login(auth_pb::LoginRequest {
            email: "outsider@example.com".into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await;
    assert!(
        login.is_err(),
        "the gateway answered an AuthService call: {login:?}"
    );
    let listed = storage_pb::storage_service_client::StorageServiceClient::new(gateway)
        .list_files(storage_pb::ListFilesRequest {
            bucket: storage_pb::Bucket::Videos.into(),
            any_owner: true,
            ..Default::default()
        })
        .await;
    assert!(
        listed.is_err(),
        "the gateway answered a StorageService call: {listed:?}"
    );

    // gRPC paths over HTTP/1 are unknown routes, with a JSON 404.
    for path in [
        "/mp3converter.auth.v1.AuthService/Login",
        "/mp3converter.storage.v1.StorageService/ListFiles",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.health.v1.Health/Check",
    ] {
        let response = cluster
            .http
            .post(cluster.url(path))
            .bearer_auth(&user.token)
            .header("content-type", "application/grpc")
            .body(vec![0u8; 5])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }

    // A proxy-style request naming the auth service is not forwarded there.
    let auth_addr = cluster.listen_addr(Role::Auth);
    let gateway_addr = cluster.gateway.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(gateway_addr).await.unwrap();
    let request = format!(
        "GET http://{auth_addr}/grpc.health.v1.Health/Check HTTP/1.1\r\nHost: {auth_addr}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test]
async fn secrets_given_as_files_serve_the_whole_flow_and_never_enter_an_environment() {
    let mut cluster = Cluster::configure(crate::binary(), Parts::Real, &[]).await;
    let secrets = cluster.secrets_as_files();
    // The signing key, MariaDB's URL, the MongoDB URI, the AMQP URL, the SMTP URL.
    assert_eq!(secrets.len(), 5, "{} secrets moved", secrets.len());
    cluster.start_roles(&Role::ALL).await;

    let user = cluster.user("files@example.com").await;
    let upload = cluster
        .upload(
            &user.token,
            "clip.mp4",
            mp4_bytes(VideoSpec::small(1.0)).await,
        )
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::ACCEPTED);
    let job_id = upload.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mail = cluster.smtp.wait_for(1, Duration::from_secs(120)).await;
    assert_eq!(mail[0].to, ["files@example.com"]);
    let job = rest::job(&cluster.http, &cluster.gateway, &user.token, &job_id).await;
    assert!(job["mp3_id"].is_string(), "{job}");
    // A token signed with the key read from the file, trailing newline trimmed, verifies.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["mp3converter"]);
    jsonwebtoken::decode::<Value>(
        &user.token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .expect("the token is signed with the file's key, newline trimmed");

    for role in Role::ALL {
        let environ = std::fs::read(format!("/proc/{}/environ", cluster.pid(role))).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        for secret in &secrets {
            assert!(
                !environ.contains(secret.as_str()),
                "{role:?}'s environment holds a secret"
            );
        }
        // Every role is given at least one secret on the real servers.
        assert!(environ.contains("_FILE="), "{role:?} got no secret file");
    }
}

#[tokio::test]
async fn a_secret_file_that_cannot_be_read_or_is_given_twice_stops_the_service_naming_it() {
    let dir = test_support::temp_dir();
    let secret_value = "a-signing-key-that-must-never-print-0123456789";
    let key_file = dir.path().join("jwt");
    std::fs::write(&key_file, format!("{secret_value}\n")).unwrap();
    let not_a_file = dir.path().display().to_string();
    let refusal = |env: Vec<(&'static str, String)>| async move {
        let output = tokio::process::Command::new(crate::binary())
            .args(["serve", "auth"])
            .env_remove("JWT_SECRET")
            .env_remove("JWT_SECRET_FILE")
            .env("DATA_DIR", test_support::temp_dir().path())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("OPS_LISTEN_ADDR", "127.0.0.1:0")
            .envs(env)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(30), output)
            .await
            .expect("the service stops at once")
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        String::from_utf8(output.stderr).unwrap()
    };

    let unreadable = refusal(vec![("JWT_SECRET_FILE", not_a_file.clone())]).await;
    assert!(
        unreadable.contains("JWT_SECRET_FILE") && unreadable.contains(&not_a_file),
        "{unreadable}"
    );

    let twice = refusal(vec![
        ("JWT_SECRET_FILE", key_file.display().to_string()),
        ("JWT_SECRET", secret_value.into()),
    ])
    .await;
    assert!(
        twice.contains("JWT_SECRET_FILE") && twice.contains("and JWT_SECRET are both set"),
        "{twice}"
    );
    assert!(!twice.contains(secret_value), "{twice}");

    // The file's content still passes through validation: too short a key is refused by the
    // variable it stands for, without its value.
    std::fs::write(&key_file, "short\n").unwrap();
    let short = refusal(vec![("JWT_SECRET_FILE", key_file.display().to_string())]).await;
    assert!(
        short.contains("JWT_SECRET must be at least 32 bytes"),
        "{short}"
    );
    assert!(
        !short.contains("short\n") && !short.contains(": short"),
        "{short}"
    );
}
