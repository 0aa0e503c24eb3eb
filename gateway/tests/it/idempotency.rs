//! `Idempotency-Key` on `POST /upload`, end to end on the mesh: a retried upload gets the
//! first answer back and creates nothing, on either storage backend, across a gateway restart
//! and under concurrent retries; the key is the user's own, and bound to the request it first
//! came with.

use crate::support::assert_error;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use test_support::mesh::{Mesh, MeshOptions, User};
use test_support::mp4_like;

/// Audio options as query pairs.
type Options<'a> = &'a [(&'a str, &'a str)];

/// Uploads `bytes` as `name` with `options` in the query and `key` as the Idempotency-Key.
async fn upload_with_key(
    mesh: &Mesh,
    user: &User,
    key: &str,
    name: &str,
    bytes: &[u8],
    options: Options<'_>,
) -> Response {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str("video/mp4")
        .unwrap();
    mesh.http
        .post(mesh.url("/upload"))
        .query(options)
        .bearer_auth(&user.token)
        .header("Idempotency-Key", key)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap()
}

/// The 202's body, and whether it says it is a replay.
async fn accepted(response: Response) -> (Value, bool) {
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true");
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    (body, replayed)
}

async fn replays_on(local_storage: bool) {
    let mut mesh = Mesh::start(MeshOptions {
        local_storage,
        ..MeshOptions::default()
    })
    .await;
    let alice = mesh.user("alice@example.com").await;
    let bob = mesh.user("bob@example.com").await;
    let clip = mp4_like(300_000, 1);

    let (first, replayed) =
        accepted(upload_with_key(&mesh, &alice, "order-42", "clip.mp4", &clip, &[]).await).await;
    assert!(!replayed, "a first request is no replay");
    let (again, replayed) =
        accepted(upload_with_key(&mesh, &alice, "order-42", "clip.mp4", &clip, &[]).await).await;
    assert!(replayed, "the retry says it is one");
    assert_eq!(again, first, "the retry gets the first answer");
    assert_eq!(mesh.stored_jobs(&alice.id).await.len(), 1);
    assert_eq!(
        mesh.stored_videos(&alice.id).await.len(),
        1,
        "the retry's copy of the video is not kept"
    );
    assert_eq!(mesh.waiting(&mesh.video_queue).await, 1, "queued once");

    // The same key with another file, another name or other options: refused, nothing kept.
    let other_clip = mp4_like(300_000, 2);
    let others: [(&str, &[u8], Options); 3] = [
        ("clip.mp4", &other_clip, &[]),
        ("renamed.mp4", &clip, &[]),
        ("clip.mp4", &clip, &[("format", "opus")]),
    ];
    for (name, bytes, options) in others {
        let response = upload_with_key(&mesh, &alice, "order-42", name, bytes, options).await;
        assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    }
    assert_eq!(mesh.stored_jobs(&alice.id).await.len(), 1);
    assert_eq!(mesh.stored_videos(&alice.id).await.len(), 1);

    // Another user's identical key is another job.
    let (bobs, replayed) =
        accepted(upload_with_key(&mesh, &bob, "order-42", "clip.mp4", &clip, &[]).await).await;
    assert!(!replayed);
    assert_ne!(bobs["job_id"], first["job_id"]);

    // The key lives in storage, not in the gateway: it holds across a restart.
    mesh.gateway = mesh.gateway.restart().await.unwrap();
    let (after_restart, replayed) =
        accepted(upload_with_key(&mesh, &alice, "order-42", "clip.mp4", &clip, &[]).await).await;
    assert!(replayed);
    assert_eq!(after_restart, first);
    assert_eq!(mesh.stored_jobs(&alice.id).await.len(), 1);

    // Deleting the job frees the key.
    let deleted = mesh
        .http
        .delete(mesh.url(&format!("/jobs/{}", first["job_id"].as_str().unwrap())))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let (fresh, replayed) =
        accepted(upload_with_key(&mesh, &alice, "order-42", "clip.mp4", &clip, &[]).await).await;
    assert!(!replayed);
    assert_ne!(fresh["job_id"], first["job_id"]);
}

#[tokio::test]
async fn a_retried_upload_gets_the_first_answer_and_creates_nothing_on_gridfs() {
    replays_on(false).await;
}

#[tokio::test]
async fn a_retried_upload_gets_the_first_answer_and_creates_nothing_on_the_local_backend() {
    replays_on(true).await;
}

#[tokio::test]
async fn concurrent_retries_of_one_key_make_one_job() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let clip = mp4_like(2_000_000, 3);
    let answers = futures::future::join_all(
        (0..6).map(|_| upload_with_key(&mesh, &alice, "burst", "clip.mp4", &clip, &[])),
    )
    .await;
    let mut job_ids = Vec::new();
    for response in answers {
        match response.status() {
            StatusCode::ACCEPTED => {
                let (body, _) = accepted(response).await;
                job_ids.push(body["job_id"].as_str().unwrap().to_owned());
            }
            // Still being recorded by the first: the client is told to come back.
            StatusCode::CONFLICT => {
                assert_error(response, StatusCode::CONFLICT, "conflict").await;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert!(!job_ids.is_empty());
    job_ids.dedup();
    assert_eq!(job_ids.len(), 1, "every 202 names the one job");
    assert_eq!(mesh.stored_jobs(&alice.id).await.len(), 1);
    assert_eq!(mesh.stored_videos(&alice.id).await.len(), 1);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_refused_before_anything_is_stored() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let clip = mp4_like(100_000, 4);
    let too_long = "k".repeat(256);
    for key in ["", "two words", too_long.as_str(), "caf\u{e9}"] {
        let part = reqwest::multipart::Part::bytes(clip.clone()).file_name("clip.mp4");
        let response = mesh
            .http
            .post(mesh.url("/upload"))
            .bearer_auth(&alice.token)
            .header(
                "Idempotency-Key",
                reqwest::header::HeaderValue::from_bytes(key.as_bytes()).unwrap(),
            )
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert!(mesh.stored_videos(&alice.id).await.is_empty());
    // The structured-field form (a quoted string) is the same key as the bare one.
    let (quoted, _) =
        accepted(upload_with_key(&mesh, &alice, "\"k-1\"", "clip.mp4", &clip, &[]).await).await;
    let (bare, replayed) =
        accepted(upload_with_key(&mesh, &alice, "k-1", "clip.mp4", &clip, &[]).await).await;
    assert!(replayed);
    assert_eq!(bare, quoted);
}
