//! Resumable uploads (tus 1.0) at the HTTP level, on the mesh: the protocol's answers, the
//! extensions, and what tusd gets wrong and we must not (every request authorised and bound to
//! the creator, no sticky sessions, checksums, partial PATCHes keeping their bytes, expiry
//! without a cron job). The third-party clients (tuspy, tus-js-client) drive it elsewhere.

use crate::support::assert_error;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use reqwest::{Response, StatusCode};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::time::Duration;
use test_support::mesh::{Mesh, MeshOptions, User};
use test_support::{Running, TcpProxy, mp4_like, rest};

const TUS: &str = "1.0.0";
const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// The `Upload-Metadata` of a file called `name`, with `options` as more pairs.
fn metadata(name: &str, options: &[(&str, &str)]) -> String {
    std::iter::once(("filename", name))
        .chain(std::iter::once(("filetype", "video/mp4")))
        .chain(options.iter().copied())
        .map(|(key, value)| format!("{key} {}", BASE64.encode(value)))
        .collect::<Vec<_>>()
        .join(",")
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", response.headers()))
        .to_str()
        .unwrap()
}

/// A tus client of the mesh's gateway (or of `base`), as `user`.
struct Tus<'a> {
    mesh: &'a Mesh,
    base: String,
    token: String,
}

impl<'a> Tus<'a> {
    fn new(mesh: &'a Mesh, user: &User) -> Self {
        Self {
            mesh,
            base: mesh.gateway.url(),
            token: user.token.clone(),
        }
    }

    /// The same user through another address (another gateway, a proxy).
    fn via(&self, base: String) -> Self {
        Self {
            mesh: self.mesh,
            base,
            token: self.token.clone(),
        }
    }

    fn url(&self, location: &str) -> String {
        format!("{}{location}", self.base)
    }

    async fn create(&self, length: u64, metadata: &str) -> Response {
        self.mesh
            .http
            .post(self.url("/files"))
            .bearer_auth(&self.token)
            .header("tus-resumable", TUS)
            .header("upload-length", length.to_string())
            .header("upload-metadata", metadata)
            .send()
            .await
            .unwrap()
    }

    /// Creates an upload of `length` bytes and returns its location.
    async fn created(&self, length: u64, name: &str) -> String {
        let response = self.create(length, &metadata(name, &[])).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        header(&response, "location").to_owned()
    }

    fn head_request(&self, location: &str) -> reqwest::RequestBuilder {
        self.mesh
            .http
            .head(self.url(location))
            .bearer_auth(&self.token)
            .header("tus-resumable", TUS)
    }

    async fn head(&self, location: &str) -> Response {
        self.head_request(location).send().await.unwrap()
    }

    fn patch_request(&self, location: &str, offset: u64) -> reqwest::RequestBuilder {
        self.mesh
            .http
            .patch(self.url(location))
            .bearer_auth(&self.token)
            .header("tus-resumable", TUS)
            .header("content-type", OFFSET_STREAM)
            .header("upload-offset", offset.to_string())
    }

    async fn patch(&self, location: &str, offset: u64, bytes: &[u8]) -> Response {
        self.patch_request(location, offset)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn delete(&self, location: &str) -> Response {
        self.mesh
            .http
            .delete(self.url(location))
            .bearer_auth(&self.token)
            .header("tus-resumable", TUS)
            .send()
            .await
            .unwrap()
    }

    /// Sends `bytes` from `from` in PATCHes of `size`; the last answer.
    async fn patch_all(&self, location: &str, bytes: &[u8], from: usize, size: usize) -> Response {
        let mut at = from;
        loop {
            let end = (at + size).min(bytes.len());
            let response = self.patch(location, at as u64, &bytes[at..end]).await;
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "PATCH at {at}");
            assert_eq!(rest::upload_offset(&response), end as u64);
            at = end;
            if at == bytes.len() {
                return response;
            }
        }
    }
}

/// The video a finished upload stored, checked against the bytes sent; the job it became.
async fn check_finished(mesh: &Mesh, user: &User, answer: &Response, bytes: &[u8]) -> String {
    let job_id = header(answer, "job-id").to_owned();
    assert_eq!(header(answer, "job-status-url"), format!("/jobs/{job_id}"));
    let job = mesh.job(&job_id).await;
    let videos = mesh.stored_videos(&user.id).await;
    let video = videos
        .iter()
        .find(|video| video.id == job.video_id)
        .expect("the job's video is stored");
    assert_eq!(video.size, bytes.len() as u64);
    assert_eq!(video.sha256, hex::encode(Sha256::digest(bytes)));
    job_id
}

#[tokio::test]
async fn the_protocol_is_spoken_from_options_through_creation_head_and_patch_to_a_queued_job() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let tus = Tus::new(&mesh, &alice);

    let options = mesh
        .http
        .request(reqwest::Method::OPTIONS, mesh.url("/files"))
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&options, "tus-version"), TUS);
    assert_eq!(header(&options, "tus-resumable"), TUS);
    assert_eq!(
        header(&options, "tus-extension"),
        "creation,creation-with-upload,termination,expiration,checksum"
    );
    assert_eq!(header(&options, "tus-checksum-algorithm"), "sha1,sha256");
    assert_eq!(header(&options, "tus-max-size"), "2147483648");

    // Another version is 412, none 400, both naming the version spoken.
    for (version, status, code) in [
        (
            Some("0.2.2"),
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        ),
        (None, StatusCode::BAD_REQUEST, "bad_request"),
    ] {
        let mut request = mesh
            .http
            .post(mesh.url("/files"))
            .bearer_auth(&alice.token)
            .header("upload-length", "10");
        if let Some(version) = version {
            request = request.header("tus-resumable", version);
        }
        let response = request.send().await.unwrap();
        assert_eq!(header(&response, "tus-version"), TUS);
        assert_eq!(header(&response, "tus-resumable"), TUS);
        assert_error(response, status, code).await;
    }

    let clip = mp4_like(700_000, 1);
    let sent_metadata = metadata("holiday.mp4", &[("format", "m4a")]);
    let created = tus.create(clip.len() as u64, &sent_metadata).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(header(&created, "tus-resumable"), TUS);
    let location = header(&created, "location").to_owned();
    assert!(
        location.starts_with("/files/"),
        "relative by default: {location}"
    );
    let expires = httpdate::parse_http_date(header(&created, "upload-expires")).unwrap();
    let in_a_day = std::time::SystemTime::now() + Duration::from_secs(86_400);
    assert!(expires <= in_a_day && expires > in_a_day - Duration::from_secs(120));

    let status = tus.head(&location).await;
    assert_eq!(status.status(), StatusCode::OK);
    assert_eq!(rest::upload_offset(&status), 0);
    assert_eq!(header(&status, "upload-length"), clip.len().to_string());
    assert_eq!(header(&status, "upload-metadata"), sent_metadata);
    assert_eq!(header(&status, "cache-control"), "no-store");
    assert_eq!(header(&status, "tus-resumable"), TUS);

    // PATCH's own refusals.
    let wrong_type = mesh
        .http
        .patch(mesh.url(&location))
        .bearer_auth(&alice.token)
        .header("tus-resumable", TUS)
        .header("content-type", "application/octet-stream")
        .header("upload-offset", "0")
        .body(clip[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_error(
        wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let no_offset = mesh
        .http
        .patch(mesh.url(&location))
        .bearer_auth(&alice.token)
        .header("tus-resumable", TUS)
        .header("content-type", OFFSET_STREAM)
        .body(clip[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_error(no_offset, StatusCode::BAD_REQUEST, "bad_request").await;
    let wrong_offset = tus.patch(&location, 5, &clip[5..100]).await;
    assert_error(wrong_offset, StatusCode::CONFLICT, "conflict").await;

    let first = tus.patch(&location, 0, &clip[..300_000]).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(rest::upload_offset(&first), 300_000);
    assert!(first.headers().get("job-id").is_none(), "not done yet");
    assert!(first.headers().get("upload-expires").is_some());
    let last = tus.patch(&location, 300_000, &clip[300_000..]).await;
    assert_eq!(last.status(), StatusCode::NO_CONTENT);
    assert_eq!(rest::upload_offset(&last), clip.len() as u64);
    let job_id = check_finished(&mesh, &alice, &last, &clip).await;

    // HEAD on the finished upload names the same job; the job names the upload.
    let status = tus.head(&location).await;
    assert_eq!(rest::upload_offset(&status), clip.len() as u64);
    assert_eq!(header(&status, "job-id"), job_id);
    let job = test_support::rest::job(&mesh.http, &mesh.gateway.url(), &alice.token, &job_id).await;
    assert_eq!(job["upload_url"], location);
    assert_eq!(job["original_filename"], "holiday.mp4");
    assert_eq!(
        job["options"]["format"], "m4a",
        "options come from Upload-Metadata"
    );
    assert_eq!(mesh.waiting(&mesh.video_queue).await, 1, "queued once");
}

/// A PATCH past an upload's start goes to storage without the session read first; what
/// storage refuses must still get the answer a check against the session would have given.
#[tokio::test]
async fn a_later_patch_that_does_not_fit_gets_the_same_answers_as_a_first_one() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let clip = mp4_like(400_000, 5);
    let tus = Tus::new(&mesh, &alice);
    let location = tus.created(clip.len() as u64, "clip.mp4").await;
    let first = tus.patch(&location, 0, &clip[..100_000]).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);

    let mut too_long = clip[100_000..].to_vec();
    too_long.push(0);
    let refused = tus.patch(&location, 100_000, &too_long).await;
    assert_error(refused, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(
        rest::upload_offset(&tus.head(&location).await),
        100_000,
        "nothing of a body longer than the upload is kept"
    );
    let ahead = tus.patch(&location, 150_000, &clip[150_000..]).await;
    let body = assert_error(ahead, StatusCode::CONFLICT, "conflict").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at offset 100000"),
        "{body}"
    );

    let last = tus.patch(&location, 100_000, &clip[100_000..]).await;
    assert_eq!(last.status(), StatusCode::NO_CONTENT);
    let job_id = check_finished(&mesh, &alice, &last, &clip).await;
    // A client that lost the last answer may send an empty PATCH at the end: it names the
    // job again; a byte more is too many.
    let again = tus.patch(&location, clip.len() as u64, &[]).await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert_eq!(rest::upload_offset(&again), clip.len() as u64);
    assert_eq!(header(&again, "job-id"), job_id);
    let past = tus.patch(&location, clip.len() as u64, &[0]).await;
    assert_error(past, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(mesh.waiting(&mesh.video_queue).await, 1, "queued once");
}

#[tokio::test]
async fn another_users_upload_is_not_found_and_an_expired_token_mid_upload_loses_nothing() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let bob = mesh.user("bob@example.com").await;
    let clip = mp4_like(400_000, 2);
    let tus = Tus::new(&mesh, &alice);
    let location = tus.created(clip.len() as u64, "clip.mp4").await;
    assert_eq!(
        tus.patch(&location, 0, &clip[..100_000]).await.status(),
        StatusCode::NO_CONTENT
    );

    let mallory = Tus::new(&mesh, &bob);
    assert_eq!(
        mallory.head(&location).await.status(),
        StatusCode::NOT_FOUND
    );
    let patched = mallory.patch(&location, 100_000, &clip[100_000..]).await;
    assert_error(patched, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(
        mallory.delete(&location).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let anonymous = mesh
        .http
        .head(mesh.url(&location))
        .header("tus-resumable", TUS)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // A token that runs out between two PATCHes: 401, and after logging in again the upload
    // goes on from where it was.
    let expiring = Tus {
        token: crate::hostile_input::token_expiring_in(&alice, 2),
        ..tus.via(mesh.gateway.url())
    };
    assert_eq!(
        expiring
            .patch(&location, 100_000, &clip[100_000..200_000])
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = expiring.patch(&location, 200_000, &clip[200_000..]).await;
    assert_error(refused, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let again = Tus {
        token: mesh.login(&alice.email).await,
        ..tus.via(mesh.gateway.url())
    };
    assert_eq!(rest::upload_offset(&again.head(&location).await), 200_000);
    let last = again.patch(&location, 200_000, &clip[200_000..]).await;
    check_finished(&mesh, &alice, &last, &clip).await;
}

#[tokio::test]
async fn a_chunk_that_fails_its_checksum_is_460_and_discarded() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let tus = Tus::new(&mesh, &alice);
    let clip = mp4_like(300_000, 3);
    let location = tus.created(clip.len() as u64, "clip.mp4").await;

    let wrong = BASE64.encode(Sha1::digest(b"other bytes"));
    let mismatch = tus
        .patch_request(&location, 0)
        .header("upload-checksum", format!("sha1 {wrong}"))
        .body(clip[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(header(&mismatch, "tus-resumable"), TUS);
    assert_error(
        mismatch,
        StatusCode::from_u16(460).unwrap(),
        "checksum_mismatch",
    )
    .await;
    assert_eq!(
        rest::upload_offset(&tus.head(&location).await),
        0,
        "nothing of it was kept"
    );
    let unsupported = tus
        .patch_request(&location, 0)
        .header("upload-checksum", "md5 1B2M2Y8AsgTpgAmY7PhCfg==")
        .body(clip[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_error(unsupported, StatusCode::BAD_REQUEST, "bad_request").await;

    let sha1 = BASE64.encode(Sha1::digest(&clip[..100_000]));
    let kept = tus
        .patch_request(&location, 0)
        .header("upload-checksum", format!("sha1 {sha1}"))
        .body(clip[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), StatusCode::NO_CONTENT);
    let sha256 = BASE64.encode(Sha256::digest(&clip[100_000..]));
    let last = tus
        .patch_request(&location, 100_000)
        .header("upload-checksum", format!("sha256 {sha256}"))
        .body(clip[100_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), StatusCode::NO_CONTENT);
    check_finished(&mesh, &alice, &last, &clip).await;
}

#[tokio::test]
async fn termination_removes_an_upload_and_an_abandoned_one_expires_without_a_cron_job() {
    let mesh = Mesh::start(MeshOptions {
        storage: Some(Box::new(|config: &mut storage::Config| {
            config.upload_expiry = Duration::from_secs(2);
        })),
        ..MeshOptions::default()
    })
    .await;
    let alice = mesh.user("alice@example.com").await;
    let tus = Tus::new(&mesh, &alice);
    let clip = mp4_like(300_000, 4);

    let location = tus.created(clip.len() as u64, "clip.mp4").await;
    tus.patch(&location, 0, &clip[..100_000]).await;
    assert_eq!(tus.delete(&location).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(tus.head(&location).await.status(), StatusCode::NOT_FOUND);

    let abandoned = tus.created(clip.len() as u64, "clip.mp4").await;
    tus.patch(&abandoned, 0, &clip[..100_000]).await;
    let mut saw_gone = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = tus.head(&abandoned).await.status();
        if status == StatusCode::GONE {
            saw_gone = true;
            let refused = tus.patch(&abandoned, 100_000, &clip[100_000..]).await;
            assert!(
                matches!(refused.status(), StatusCode::GONE | StatusCode::NOT_FOUND),
                "{}",
                refused.status()
            );
        } else if status == StatusCode::NOT_FOUND {
            break;
        } else {
            assert_eq!(status, StatusCode::OK);
        }
        assert!(std::time::Instant::now() < deadline, "never removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The sweeper runs every half second here; the 410 shows between expiry and removal.
    tracing::info!(saw_gone, "expired upload removed");
    assert!(
        mesh.stored_videos(&alice.id).await.is_empty(),
        "nothing became a file"
    );
}

#[tokio::test]
async fn creation_with_upload_an_idempotency_key_and_method_override_work_as_tus_clients_use_them()
{
    let mesh = Mesh::start(MeshOptions::gateway(|config| {
        config.public_base_url = Some("https://convert.example.com/".into());
    }))
    .await;
    let alice = mesh.user("alice@example.com").await;
    let tus = Tus::new(&mesh, &alice);
    let clip = mp4_like(500_000, 5);

    let create = || {
        mesh.http
            .post(mesh.url("/files"))
            .bearer_auth(&alice.token)
            .header("tus-resumable", TUS)
            .header("upload-length", clip.len().to_string())
            .header("upload-metadata", metadata("clip.mp4", &[]))
            .header("idempotency-key", "new-upload-1")
            .header("content-type", OFFSET_STREAM)
            .body(clip[..200_000].to_vec())
    };
    let created = create().send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        rest::upload_offset(&created),
        200_000,
        "the body's bytes are kept"
    );
    let absolute = header(&created, "location").to_owned();
    let location = absolute
        .strip_prefix("https://convert.example.com")
        .unwrap_or_else(|| panic!("absolute from PUBLIC_BASE_URL: {absolute}"))
        .to_owned();
    let again = create().send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(header(&again, "location"), absolute, "the same upload");
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(
        rest::upload_offset(&again),
        200_000,
        "and its bytes are not sent twice"
    );

    // POST with X-HTTP-Method-Override stands for PATCH (and HEAD, and DELETE).
    let overridden = mesh
        .http
        .post(mesh.url(&location))
        .bearer_auth(&alice.token)
        .header("tus-resumable", TUS)
        .header("x-http-method-override", "PATCH")
        .header("content-type", OFFSET_STREAM)
        .header("upload-offset", "200000")
        .body(clip[200_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(overridden.status(), StatusCode::NO_CONTENT);
    check_finished(&mesh, &alice, &overridden, &clip).await;
    let head = mesh
        .http
        .post(mesh.url(&location))
        .bearer_auth(&alice.token)
        .header("tus-resumable", TUS)
        .header("x-http-method-override", "HEAD")
        .send()
        .await
        .unwrap();
    assert_eq!(rest::upload_offset(&head), clip.len() as u64);

    // A file whose first bytes are no media is refused and removed.
    let text = b"this is a text file, not a video at all ".repeat(20);
    let location = tus.created(text.len() as u64, "notes.mp4").await;
    let location = location
        .strip_prefix("https://convert.example.com")
        .unwrap();
    let refused = tus.patch(location, 0, &text).await;
    assert_error(
        refused,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(tus.head(location).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_patch_cut_off_mid_body_keeps_what_arrived_and_the_upload_resumes_from_head() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let proxy = TcpProxy::start(mesh.gateway.addr()).await.unwrap();
    let tus = Tus::new(&mesh, &alice);
    let through_proxy = tus.via(format!("http://{}", proxy.addr()));
    let clip = mp4_like(8 * 1024 * 1024, 6);
    let location = tus.created(clip.len() as u64, "clip.mp4").await;

    // The body trickles in pieces; the connection is cut after about half of it.
    let (body, mut sent_so_far) = rest::trickled_body(&clip, Duration::from_millis(20));
    let patch = through_proxy.patch_request(&location, 0).body(body).send();
    let cut = async {
        sent_so_far
            .wait_for(|total| *total >= clip.len() / 2)
            .await
            .unwrap();
        proxy.sever();
    };
    let (answer, ()) = tokio::join!(patch, cut);
    assert!(
        answer
            .map(|response| !response.status().is_success())
            .unwrap_or(true),
        "the cut PATCH did not succeed"
    );

    // What arrived is kept; HEAD says exactly how much, and the rest completes the file.
    let mut kept = 0;
    for _ in 0..100 {
        let status = tus.head(&location).await;
        assert_eq!(status.status(), StatusCode::OK);
        kept = rest::upload_offset(&status);
        if kept > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        kept > 0 && kept < clip.len() as u64,
        "a part was kept: {kept} of {}",
        clip.len()
    );
    let last = tus
        .patch_all(&location, &clip, kept as usize, 5 * 1024 * 1024)
        .await;
    check_finished(&mesh, &alice, &last, &clip).await;
}

#[tokio::test]
async fn patches_may_alternate_between_gateways_and_survive_a_gateway_restart() {
    let mut mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let second = Running::<gateway::App>::start(mesh.gateway.config().clone())
        .await
        .unwrap();
    let clip = mp4_like(1_000_000, 7);
    let location = {
        let tus = Tus::new(&mesh, &alice);
        let location = tus.created(clip.len() as u64, "clip.mp4").await;
        let other = tus.via(second.url());
        // No sticky sessions: each PATCH goes to the other gateway.
        for (index, at) in (0..600_000).step_by(100_000).enumerate() {
            let via = if index % 2 == 0 { &tus } else { &other };
            let response = via
                .patch(&location, at as u64, &clip[at..at + 100_000])
                .await;
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "PATCH {index}");
        }
        assert_eq!(rest::upload_offset(&other.head(&location).await), 600_000);
        location
    };
    mesh.gateway = mesh.gateway.restart().await.unwrap();
    let tus = Tus::new(&mesh, &alice);
    assert_eq!(
        rest::upload_offset(&tus.head(&location).await),
        600_000,
        "state is in storage"
    );
    let last = tus.patch_all(&location, &clip, 600_000, 200_000).await;
    check_finished(&mesh, &alice, &last, &clip).await;
}

#[tokio::test]
async fn concurrent_patches_on_one_upload_never_interleave() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let tus = Tus::new(&mesh, &alice);
    let clip = mp4_like(4 * 1024 * 1024, 8);
    let location = tus.created(clip.len() as u64, "clip.mp4").await;

    // Two clients send the same offset at once, each its own half-slow body: one is kept,
    // the other is refused (409, or 423 while the first still runs).
    let slow = |bytes: Vec<u8>| {
        let pieces: Vec<Vec<u8>> = bytes.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
        reqwest::Body::wrap_stream(futures::stream::iter(pieces).then(|piece| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, std::io::Error>(piece)
        }))
    };
    let half = clip.len() / 2;
    let (one, two) = tokio::join!(
        tus.patch_request(&location, 0)
            .body(slow(clip[..half].to_vec()))
            .send(),
        tus.patch_request(&location, 0)
            .body(slow(clip[..half].to_vec()))
            .send(),
    );
    let mut statuses = [one.unwrap().status(), two.unwrap().status()];
    statuses.sort();
    assert_eq!(statuses[0], StatusCode::NO_CONTENT, "{statuses:?}");
    assert!(
        matches!(statuses[1], StatusCode::CONFLICT | StatusCode::LOCKED),
        "{statuses:?}"
    );
    assert_eq!(rest::upload_offset(&tus.head(&location).await), half as u64);
    let last = tus.patch_all(&location, &clip, half, half).await;
    check_finished(&mesh, &alice, &last, &clip).await;
}

#[tokio::test]
async fn a_head_while_a_patch_runs_waits_for_its_offset_and_is_locked_if_it_does_not_end() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let tus = Tus::new(&mesh, &alice);
    let clip = mp4_like(1024 * 1024, 12);
    let location = tus.created(clip.len() as u64, "clip.mp4").await;
    let first = tus.patch(&location, 0, &clip[..100_000]).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);

    // A PATCH whose body stops coming after its first piece, until the test lets it end.
    let (pieces, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let patch = tokio::spawn(
        tus.patch_request(&location, 100_000)
            .body(reqwest::Body::wrap_stream(
                tokio_stream::wrappers::ReceiverStream::new(body),
            ))
            .send(),
    );
    pieces
        .send(Ok(clip[100_000..300_000].to_vec()))
        .await
        .unwrap();
    let id = location.rsplit('/').next().unwrap();
    let owner = clients::storage::Owner::One(alice.id.clone());
    while !mesh
        .storage
        .upload_session(id, &owner)
        .await
        .unwrap()
        .appending
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // It still runs when storage stops waiting: no offset can be told yet.
    let locked = tus.head(&location).await;
    assert_eq!(locked.status(), StatusCode::LOCKED);

    // A HEAD made while it runs answers, once it ended, with every byte it kept.
    let head = tokio::spawn({
        let request = tus.head_request(&location);
        async move { request.send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(pieces);
    let patched = patch.await.unwrap().unwrap();
    assert_eq!(patched.status(), StatusCode::NO_CONTENT);
    assert_eq!(rest::upload_offset(&patched), 300_000);
    let head = head.await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(rest::upload_offset(&head), 300_000);
    let last = tus.patch_all(&location, &clip, 300_000, 1024 * 1024).await;
    check_finished(&mesh, &alice, &last, &clip).await;
}
