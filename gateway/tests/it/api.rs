//! The REST API end to end with a real HTTP client, against real auth, storage, MariaDB, the
//! MongoDB-wire server and RabbitMQ.

use crate::support::assert_error;
use futures::StreamExt;
use lapin::options::BasicGetOptions;
use proto::events::v1::event::Payload;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use test_support::mesh::{ADMIN_EMAIL, Mesh, MeshOptions};
use test_support::{VideoSpec, generate_video, mp4_like, pseudo_random_bytes, temp_dir};

async fn flow_on(local_storage: bool) {
    let mesh = Mesh::start(MeshOptions {
        local_storage,
        ..MeshOptions::default()
    })
    .await;
    let alice = mesh.user("alice@example.com").await;
    let bob = mesh.user("bob@example.com").await;

    let dir = temp_dir();
    let video_path = dir.path().join("holiday clip.mp4");
    generate_video(&video_path, VideoSpec::small(2.0))
        .await
        .unwrap();
    let video = std::fs::read(&video_path).unwrap();
    let response = mesh
        .upload(&alice.token, "holiday clip.mp4", video.clone())
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let accepted: Value = response.json().await.unwrap();
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    let video_id = accepted["video_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["status_url"], format!("/jobs/{job_id}"));
    assert_eq!(location, format!("/jobs/{job_id}"));

    // The stored video is the upload, byte for byte (storage hashed what it stored).
    let stored = mesh.stored_videos(&alice.id).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, video_id);
    assert_eq!(stored[0].sha256, hex::encode(Sha256::digest(&video)));
    assert_eq!(stored[0].filename, "holiday clip.mp4");

    // The event is on the durable video queue, persistent, with the right content.
    let connection = mesh.broker.connect().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let message = channel
        .basic_get(
            mesh.video_queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the upload's event is on the video queue");
    let properties = message.delivery.properties.clone();
    assert_eq!(properties.delivery_mode(), &Some(2));
    assert_eq!(
        properties.content_type().as_ref().map(|s| s.as_str()),
        Some(proto::events::v1::CONTENT_TYPE)
    );
    let event = messaging::events::decode(
        &message.delivery.data,
        Some(proto::events::v1::CONTENT_TYPE),
    )
    .unwrap();
    assert_eq!(
        properties.message_id().as_ref().map(|s| s.as_str()),
        Some(event.event_id.as_str())
    );
    let Some(Payload::VideoUploaded(uploaded)) = event.payload else {
        panic!("expected VideoUploaded, got {:?}", event.payload);
    };
    assert_eq!(uploaded.job_id, job_id);
    assert_eq!(uploaded.video_id, video_id);
    assert_eq!(uploaded.owner_id, alice.id);
    assert_eq!(uploaded.owner_email, "alice@example.com");
    assert_eq!(uploaded.original_filename, "holiday clip.mp4");

    // The job is visible to its owner only.
    let job: Value = get_json(&mesh, &format!("/jobs/{job_id}"), &alice.token).await;
    assert_eq!(job["status"], "queued");
    assert_eq!(job["video_id"], video_id.as_str());
    assert!(job["download_url"].is_null());
    let listed: Value = get_json(&mesh, "/jobs", &alice.token).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);
    let bobs: Value = get_json(&mesh, "/jobs", &bob.token).await;
    assert!(bobs["jobs"].as_array().unwrap().is_empty());
    let response = get(&mesh, &format!("/jobs/{job_id}"), &bob.token).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;

    // A converter finishes it; the MP3 downloads whole and in ranges.
    let mp3 = pseudo_random_bytes(300_000, 9);
    let mp3_id = mesh.finish_job(&job_id, &alice.id, &mp3).await;
    let job: Value = get_json(&mesh, &format!("/jobs/{job_id}"), &alice.token).await;
    assert_eq!(job["status"], "done");
    assert_eq!(job["download_url"], format!("/download/{mp3_id}"));

    let download = format!("/download/{mp3_id}");
    let response = get(&mesh, &download, &alice.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "audio/mpeg");
    assert_eq!(
        headers[header::CONTENT_LENGTH],
        mp3.len().to_string().as_str()
    );
    assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"holiday clip.mp3\"; filename*=UTF-8''holiday%20clip.mp3"
    );
    let etag = headers[header::ETAG].clone();
    assert_eq!(
        etag.to_str().unwrap(),
        format!("\"{}\"", hex::encode(Sha256::digest(&mp3)))
    );
    assert!(response.bytes().await.unwrap() == mp3);

    let ranged = get_with(
        &mesh,
        &download,
        &alice.token,
        header::RANGE,
        "bytes=1000-1999",
    )
    .await;
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        ranged.headers()[header::CONTENT_RANGE],
        format!("bytes 1000-1999/{}", mp3.len()).as_str()
    );
    assert!(ranged.bytes().await.unwrap() == mp3[1000..2000]);
    let by_fid = format!("/download?fid={mp3_id}");
    let suffix = get_with(&mesh, &by_fid, &alice.token, header::RANGE, "bytes=-100").await;
    assert_eq!(suffix.status(), StatusCode::PARTIAL_CONTENT);
    assert!(suffix.bytes().await.unwrap() == mp3[mp3.len() - 100..]);
    let past_the_end = format!("bytes={}-", mp3.len());
    let outside = get_with(&mesh, &download, &alice.token, header::RANGE, &past_the_end).await;
    assert_eq!(
        outside.headers()[header::CONTENT_RANGE],
        format!("bytes */{}", mp3.len()).as_str()
    );
    assert_error(
        outside,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
    )
    .await;
    let etag = etag.to_str().unwrap();
    let unchanged = get_with(&mesh, &download, &alice.token, header::IF_NONE_MATCH, etag).await;
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert!(unchanged.bytes().await.unwrap().is_empty());

    // Bob cannot fetch Alice's MP3 (and cannot tell it exists); an admin can.
    let response = get(&mesh, &download, &bob.token).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = get(&mesh, &by_fid, &bob.token).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let admin = mesh.login(ADMIN_EMAIL).await;
    let response = get(&mesh, &download, &admin).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Deleting the job removes it and its files.
    let delete_job = |token: &str| {
        mesh.http
            .delete(mesh.url(&format!("/jobs/{job_id}")))
            .bearer_auth(token)
            .send()
    };
    let response = delete_job(&bob.token).await.unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = delete_job(&alice.token).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = get(&mesh, &download, &alice.token).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert!(mesh.stored_videos(&alice.id).await.is_empty());
}

#[tokio::test]
async fn register_login_upload_queue_and_download_with_gridfs_storage() {
    flow_on(false).await;
}

#[tokio::test]
async fn register_login_upload_queue_and_download_with_embedded_storage() {
    flow_on(true).await;
}

#[tokio::test]
async fn a_100_mb_upload_streams_through_and_downloads_byte_identical() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    const SIZE: usize = 100 * 1024 * 1024;
    let video = mp4_like(SIZE, 11);
    let expected = hex::encode(Sha256::digest(&video));
    // The body is streamed from 1 MiB pieces, as a client reading a file would send it.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = video
        .chunks(1024 * 1024)
        .map(|piece| Ok(piece.to_vec()))
        .collect();
    drop(video);
    let body = reqwest::Body::wrap_stream(futures::stream::iter(pieces));
    let part = reqwest::multipart::Part::stream_with_length(body, SIZE as u64)
        .file_name("big.mp4")
        .mime_str("video/mp4")
        .unwrap();
    let response = mesh
        .http
        .post(mesh.url("/upload"))
        .bearer_auth(&alice.token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    let stored = mesh.stored_videos(&alice.id).await;
    assert_eq!(stored[0].size, SIZE as u64);
    assert_eq!(
        stored[0].sha256, expected,
        "storage received exactly the bytes sent"
    );

    // The same 100 MB as the job's MP3, downloaded through the gateway.
    let mp3 = mp4_like(SIZE, 11);
    let mp3_id = mesh
        .finish_job(accepted["job_id"].as_str().unwrap(), &alice.id, &mp3)
        .await;
    drop(mp3);
    let response = get(&mesh, &format!("/download/{mp3_id}"), &alice.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_LENGTH],
        SIZE.to_string().as_str()
    );
    let mut hasher = Sha256::new();
    let mut received = 0;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(received, SIZE);
    assert_eq!(hex::encode(hasher.finalize()), expected);
}

#[tokio::test]
async fn refused_uploads_leave_no_file_and_no_job_behind() {
    let mesh = Mesh::start(MeshOptions::gateway(|config| {
        config.max_upload_bytes = 1_000_000
    }))
    .await;
    let alice = mesh.user("alice@example.com").await;
    let upload = |body: reqwest::multipart::Form| {
        mesh.http
            .post(mesh.url("/upload"))
            .bearer_auth(&alice.token)
            .multipart(body)
            .send()
    };
    let file = |bytes: Vec<u8>, name: &str| {
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned())
    };
    use reqwest::multipart::Form;

    let no_file = upload(Form::new().text("title", "no file here"))
        .await
        .unwrap();
    assert_error(no_file, StatusCode::BAD_REQUEST, "bad_request").await;
    let two_files = Form::new()
        .part("file", file(mp4_like(5000, 1), "a.mp4"))
        .part("other", file(mp4_like(5000, 2), "b.mp4"));
    let body = assert_error(
        upload(two_files).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than one file")
    );
    let empty = upload(Form::new().part("file", file(Vec::new(), "empty.mp4")))
        .await
        .unwrap();
    assert_error(empty, StatusCode::BAD_REQUEST, "bad_request").await;
    let text = b"just some text, named like a video".to_vec();
    let text = upload(Form::new().part("file", file(text, "notes.mp4")))
        .await
        .unwrap();
    assert_error(
        text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let too_big = upload(Form::new().part("file", file(mp4_like(2_000_000, 3), "big.mp4")))
        .await
        .unwrap();
    assert_error(too_big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // Bodies no form encoder would write, sent as they are.
    let raw_upload = |content_type: &'static str, body: &'static str| {
        mesh.http
            .post(mesh.url("/upload"))
            .bearer_auth(&alice.token)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    let not_multipart = raw_upload("application/json", "{}").await.unwrap();
    assert_error(
        not_multipart,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let broken = raw_upload(
        "multipart/form-data; boundary=XYZ",
        "--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n\r\n\x00\x00\x00\x18ftypisom and then no closing boundary",
    )
    .await
    .unwrap();
    assert_error(broken, StatusCode::BAD_REQUEST, "bad_request").await;

    // Give storage a moment to finish discarding, then check nothing is left.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(mesh.stored_videos(&alice.id).await.is_empty());
    assert!(mesh.stored_jobs(&alice.id).await.is_empty());
}

#[tokio::test]
async fn an_upload_cut_off_by_the_client_leaves_nothing_behind() {
    use tokio::io::AsyncWriteExt;
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let mut socket = tokio::net::TcpStream::connect(mesh.gateway.addr())
        .await
        .unwrap();
    let preamble = "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.mp4\"\r\nContent-Type: video/mp4\r\n\r\n";
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 50000000\r\n\r\n{preamble}",
        alice.token
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket
        .write_all(&mp4_like(3 * 1024 * 1024, 5))
        .await
        .unwrap();
    socket.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(socket);

    let mut videos = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        videos = mesh.stored_videos(&alice.id).await;
        if videos.is_empty() {
            break;
        }
    }
    assert!(videos.is_empty(), "a cut-off upload was kept: {videos:?}");
    assert!(mesh.stored_jobs(&alice.id).await.is_empty());
}

#[tokio::test]
async fn authentication_and_input_errors_are_json_with_the_right_status() {
    let mesh = Mesh::start(MeshOptions::auth(|config| config.login_max_failures = 2)).await;
    let alice = mesh.user("alice@example.com").await;

    let missing = mesh.http.get(mesh.url("/jobs")).send().await.unwrap();
    assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_error(missing, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    for authorization in ["Bearer not-a-jwt", "Basic abc", "Bearer", "Token xyz"] {
        let response = mesh
            .http
            .get(mesh.url("/jobs"))
            .header(header::AUTHORIZATION, authorization)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
    let tampered = format!("{}x", alice.token);
    assert_error(
        get(&mesh, "/jobs", &tampered).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;

    for path in [
        "/jobs/not-an-id",
        "/download/xyz",
        "/download?fid=../../etc",
        "/download",
    ] {
        assert_error(
            get(&mesh, path, &alice.token).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    for path in [
        "/jobs/0123456789abcdef01234567",
        "/download/0123456789abcdef01234567",
    ] {
        assert_error(
            get(&mesh, path, &alice.token).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    assert_error(
        get(&mesh, "/no/such/route", &alice.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let wrong_method = mesh.http.put(mesh.url("/jobs")).send().await.unwrap();
    assert_error(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    let register = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = mesh.http.post(mesh.url("/register")).body(body);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.send()
    };
    let json = Some("application/json");
    let refused_registrations = [
        ("{", json, StatusCode::BAD_REQUEST, "bad_request"),
        (
            "{\"email\":\"x@y.z\"}",
            json,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "{\"email\":\"not-an-email\",\"password\":\"long enough pw\"}",
            json,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "{}",
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "{\"email\":\"ALICE@example.com\",\"password\":\"correct horse battery\"}",
            json,
            StatusCode::CONFLICT,
            "conflict",
        ),
    ];
    for (body, content_type, status, code) in refused_registrations {
        assert_error(register(body, content_type).await.unwrap(), status, code).await;
    }

    let login = |authorization: &'static str| {
        mesh.http
            .post(mesh.url("/login"))
            .header(header::AUTHORIZATION, authorization)
            .send()
    };
    let no_credentials = mesh.http.post(mesh.url("/login")).send().await.unwrap();
    assert!(
        no_credentials.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_error(no_credentials, StatusCode::UNAUTHORIZED, "bad_credentials").await;
    // "bm8tY29sb24=" is "no-colon" in base64.
    for authorization in ["Basic %%%", "Basic bm8tY29sb24="] {
        let refused = login(authorization).await.unwrap();
        assert_error(refused, StatusCode::UNAUTHORIZED, "bad_credentials").await;
    }
    for _ in 0..2 {
        let wrong = mesh
            .http
            .post(mesh.url("/login"))
            .basic_auth("alice@example.com", Some("wrong password"))
            .send()
            .await
            .unwrap();
        assert_error(wrong, StatusCode::UNAUTHORIZED, "bad_credentials").await;
    }
    let throttled = mesh
        .http
        .post(mesh.url("/login"))
        .basic_auth("alice@example.com", Some("wrong password"))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = throttled.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0);
    assert_error(
        throttled,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
    )
    .await;
}

#[tokio::test]
async fn a_dead_dependency_is_503_with_retry_after_and_nothing_is_kept() {
    // The broker is unreachable: the upload is stored, then publishing fails and it is undone.
    let mesh = Mesh::start(MeshOptions {
        amqp_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".into()),
        ..MeshOptions::default()
    })
    .await;
    let alice = mesh.user("alice@example.com").await;
    let response = mesh
        .upload(&alice.token, "clip.mp4", mp4_like(100_000, 7))
        .await;
    assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(
        mesh.stored_videos(&alice.id).await.is_empty(),
        "the video was removed"
    );
    assert!(
        mesh.stored_jobs(&alice.id).await.is_empty(),
        "the job was removed"
    );
    // Each check has a deadline of its own, which a loaded machine can miss once; what is
    // judged is the answer once auth's check has come back.
    let (status, ready) = mesh
        .readiness_when(|body| body["checks"]["auth"] == "ok")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"]["auth"], "ok");
    assert_ne!(ready["checks"]["broker"], "ok");

    // Storage is unreachable.
    let mesh = Mesh::start(MeshOptions {
        storage_url: Some("http://127.0.0.1:1".into()),
        ..MeshOptions::default()
    })
    .await;
    let alice = mesh.user("alice@example.com").await;
    let response = get(&mesh, "/jobs", &alice.token).await;
    assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let response = mesh
        .upload(&alice.token, "clip.mp4", mp4_like(100_000, 8))
        .await;
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
}

#[tokio::test]
async fn ops_endpoints_security_headers_request_ids_and_the_openapi_document() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let health = mesh.http.get(mesh.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(health.headers()[header::CACHE_CONTROL], "no-store");
    assert!(!health.headers()["x-request-id"].is_empty());
    let echoed = mesh
        .http
        .get(mesh.url("/healthz"))
        .header("x-request-id", HeaderValue::from_static("trace-me-123"))
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-123");

    // Readiness becomes true once the gateway has reached auth, storage and the broker (the
    // first check connects and declares the queues): awaited with a deadline, then judged.
    let (status, ready) = mesh.readiness_when(|body| body["status"] == "ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ready["checks"],
        serde_json::json!({"auth": "ok", "storage": "ok", "broker": "ok"})
    );

    let spec: Value = mesh
        .http
        .get(mesh.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/register",
        "/login",
        "/upload",
        "/jobs",
        "/jobs/{id}",
        "/download/{mp3_id}",
        "/download",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} is missing from the spec"
        );
    }
    let metrics = test_support::scrape(&mesh.url("/metrics")).await;
    assert!(
        metrics.contains(
            "gateway_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"
        ),
        "{metrics}"
    );
}

async fn get(mesh: &Mesh, path: &str, token: &str) -> reqwest::Response {
    test_support::rest::get(&mesh.http, &mesh.gateway.url(), path, token).await
}

/// `path` with one more request header, `name: value` (a Range, an If-None-Match).
async fn get_with(
    mesh: &Mesh,
    path: &str,
    token: &str,
    name: header::HeaderName,
    value: &str,
) -> reqwest::Response {
    mesh.http
        .get(mesh.url(path))
        .bearer_auth(token)
        .header(name, value)
        .send()
        .await
        .unwrap()
}

async fn get_json(mesh: &Mesh, path: &str, token: &str) -> Value {
    let response = get(mesh, path, token).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}
