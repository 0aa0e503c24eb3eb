//! Hostile input against the real gateway, table-driven: each case is one request with the
//! status and JSON error code it must get. None may produce a 5xx, an error message that shows
//! the insides, or a stored file; the test prints a table of what was tried.

use crate::support::leaked_detail;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};
use test_support::configs::JWT_SECRET as SECRET;
use test_support::mesh::{Mesh, MeshOptions, User};
use test_support::{VideoSpec, mp4_bytes, rest};

/// The largest upload this gateway takes (small, so the over-limit case is quick).
const MAX_UPLOAD_BYTES: usize = 512 * 1024;
const BOUNDARY: &str = "hostile-boundary-7MA4YWxkTrZu0gW";

/// One request and what it must get.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    status: StatusCode,
    /// The JSON error code, for error statuses.
    code: Option<&'static str>,
}

fn case(name: &'static str, method: Method, path: impl Into<String>) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        status: StatusCode::OK,
        code: None,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }
    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    fn multipart(self, token: &str, body: Vec<u8>) -> Self {
        self.bearer(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
    }
    fn expect(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = Some(code);
        self
    }
    fn expect_ok(mut self, status: StatusCode) -> Self {
        self.status = status;
        self.code = None;
        self
    }
}

/// A multipart body with the given parts: (field name, file name, content type, bytes).
fn multipart_body(parts: &[(&str, Option<&str>, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, filename, content_type, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let disposition = match filename {
            Some(name) => format!("form-data; name=\"{field}\"; filename=\"{name}\""),
            None => format!("form-data; name=\"{field}\""),
        };
        body.extend_from_slice(format!("Content-Disposition: {disposition}\r\n").as_bytes());
        body.extend_from_slice(format!("Content-Type: {content_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token with these claims, signed with `algorithm` and `key`.
fn signed(claims: &Value, algorithm: Algorithm, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(key),
    )
    .unwrap()
}

/// A token for `user` as the auth service would issue it, but running out in `seconds`.
pub(crate) fn token_expiring_in(user: &User, seconds: u64) -> String {
    let claims = claims(user, json!({ "email": user.email, "exp": now() + seconds }));
    signed(
        &claims,
        Algorithm::HS256,
        test_support::configs::JWT_SECRET.as_bytes(),
    )
}

/// The claims the auth service would issue for `user`, with `changes` applied.
fn claims(user: &User, changes: Value) -> Value {
    let mut claims = json!({
        "sub": user.id, "email": "mallory@example.com", "admin": false,
        "iat": now() - 10, "exp": now() + 3600,
        "iss": "mp3converter-auth", "aud": "mp3converter",
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// `token` with its payload swapped for `claims` and its signature kept.
fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

fn basic(raw: &str) -> String {
    format!("Basic {}", STANDARD.encode(raw))
}

#[tokio::test]
async fn hostile_requests_get_clear_4xx_json_errors_and_store_nothing() {
    let mesh = Mesh::start(MeshOptions::gateway(|config| {
        config.max_upload_bytes = MAX_UPLOAD_BYTES as u64;
    }))
    .await;
    let mallory = mesh.user("mallory@example.com").await;
    let victim = mesh.user("victim@example.com").await;

    // The victim has a finished job, so there are real ids to aim at.
    let video = mp4_bytes(VideoSpec::small(1.0)).await;
    let accepted: Value = mesh
        .upload(&victim.token, "victim.mp4", video.clone())
        .await
        .json()
        .await
        .unwrap();
    let victim_job = accepted["job_id"].as_str().unwrap().to_owned();
    let victim_mp3 = mesh
        .finish_job(&victim_job, &victim.id, &[0xFF; 4096])
        .await;
    let mallory_accepted: Value = mesh
        .upload(&mallory.token, "own.mp4", video.clone())
        .await
        .json()
        .await
        .unwrap();
    let own_job = mallory_accepted["job_id"].as_str().unwrap().to_owned();
    let own_mp3 = mesh.finish_job(&own_job, &mallory.id, &[0xFF; 4096]).await;
    let videos_before = mesh.stored_videos(&mallory.id).await.len();

    // Uploads (tus) to aim at: one of mallory's own, one of the victim's.
    let new_upload = |token: String| {
        let http = mesh.http.clone();
        let url = mesh.url("/files");
        async move {
            let created = http
                .post(url)
                .bearer_auth(token)
                .header("tus-resumable", "1.0.0")
                .header("upload-length", "1000")
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), StatusCode::CREATED);
            created.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    let own_upload = new_upload(mallory.token.clone()).await;
    let victim_upload = new_upload(victim.token.clone()).await;

    let token = mallory.token.as_str();
    let key = SECRET.as_bytes();
    let tus_create = |name, length: &str| {
        case(name, Method::POST, "/files")
            .bearer(token)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", length.to_owned())
    };
    let tus_patch = |name, upload: &str, offset: &str| {
        case(name, Method::PATCH, upload)
            .bearer(token)
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_owned())
    };
    let unauthenticated = |name, token: String| {
        case(name, Method::GET, "/jobs")
            .header("authorization", token)
            .expect(StatusCode::UNAUTHORIZED, "unauthenticated")
    };
    let bad_upload = |name, body: Vec<u8>| {
        case(name, Method::POST, "/upload")
            .multipart(token, body)
            .expect(StatusCode::BAD_REQUEST, "bad_request")
    };
    let download = |name, range: &str| {
        case(name, Method::GET, format!("/download/{own_mp3}"))
            .bearer(token)
            .header("range", range)
    };
    let one_file = multipart_body(&[("file", Some("a.mp4"), "video/mp4", &video)]);
    let not_a_video = b"just some text, certainly not a video container".to_vec();
    let mut oversized = video.clone();
    oversized.resize(MAX_UPLOAD_BYTES * 2, 0);

    let cases = vec![
        // Authorization headers.
        case("no Authorization", Method::GET, "/jobs")
            .expect(StatusCode::UNAUTHORIZED, "unauthenticated"),
        unauthenticated("Bearer without a token", "Bearer".into()),
        unauthenticated("Bearer with spaces only", "Bearer    ".into()),
        unauthenticated("Bearer, not a JWT", "Bearer not-a-jwt".into()),
        unauthenticated("wrong scheme: Basic", basic("mallory@example.com:x")),
        unauthenticated("wrong scheme: Token", format!("Token {token}")),
        unauthenticated(
            "oversized bearer (16 KiB)",
            format!("Bearer {}", "a".repeat(16 * 1024)),
        ),
        case("non-UTF-8 Authorization", Method::GET, "/jobs")
            .header("authorization", b"Bearer \xff\xfe".to_vec())
            .expect(StatusCode::UNAUTHORIZED, "unauthenticated"),
        // JWTs.
        unauthenticated(
            "JWT alg none",
            format!("Bearer {}", unsigned(&claims(&mallory, json!({})))),
        ),
        unauthenticated(
            "JWT HS512 with the right key",
            format!(
                "Bearer {}",
                signed(&claims(&mallory, json!({})), Algorithm::HS512, key)
            ),
        ),
        unauthenticated(
            "JWT signed with another key",
            format!(
                "Bearer {}",
                signed(
                    &claims(&mallory, json!({})),
                    Algorithm::HS256,
                    b"another-key-of-at-least-thirty-two-bytes"
                )
            ),
        ),
        unauthenticated(
            "JWT payload tampered (sub of another user)",
            format!(
                "Bearer {}",
                tampered(
                    token,
                    &claims(&victim, json!({"email": "victim@example.com"}))
                )
            ),
        ),
        unauthenticated(
            "JWT expired",
            format!(
                "Bearer {}",
                signed(
                    &claims(&mallory, json!({"exp": now() - 60, "iat": now() - 120})),
                    Algorithm::HS256,
                    key
                )
            ),
        ),
        unauthenticated(
            "JWT not yet valid (nbf)",
            format!(
                "Bearer {}",
                signed(
                    &claims(&mallory, json!({"nbf": now() + 3600})),
                    Algorithm::HS256,
                    key
                )
            ),
        ),
        unauthenticated(
            "JWT wrong issuer",
            format!(
                "Bearer {}",
                signed(
                    &claims(&mallory, json!({"iss": "someone-else"})),
                    Algorithm::HS256,
                    key
                )
            ),
        ),
        unauthenticated(
            "JWT wrong audience",
            format!(
                "Bearer {}",
                signed(
                    &claims(&mallory, json!({"aud": "another-app"})),
                    Algorithm::HS256,
                    key
                )
            ),
        ),
        unauthenticated(
            "JWT without exp",
            format!(
                "Bearer {}",
                signed(
                    &claims(&mallory, json!({"exp": null})),
                    Algorithm::HS256,
                    key
                )
            ),
        ),
        unauthenticated(
            "JWT with a signature of garbage",
            format!("Bearer {}.bm9wZQ", token.rsplit_once('.').unwrap().0),
        ),
        // Basic login.
        case("login with bad base64", Method::POST, "/login")
            .header("authorization", "Basic %%%not-base64%%%")
            .expect(StatusCode::UNAUTHORIZED, "bad_credentials"),
        case("login without a colon", Method::POST, "/login")
            .header("authorization", basic("mallory@example.com"))
            .expect(StatusCode::UNAUTHORIZED, "bad_credentials"),
        case("login with an empty Basic", Method::POST, "/login")
            .header("authorization", "Basic ")
            .expect(StatusCode::UNAUTHORIZED, "bad_credentials"),
        case("login with Bearer", Method::POST, "/login")
            .bearer(token)
            .expect(StatusCode::UNAUTHORIZED, "bad_credentials"),
        case("login with a JSON body instead", Method::POST, "/login")
            .header("content-type", "application/json")
            .body(r#"{"email":"mallory@example.com","password":"x"}"#)
            .expect(StatusCode::UNAUTHORIZED, "bad_credentials"),
        // Multipart.
        bad_upload(
            "multipart with no parts",
            format!("--{BOUNDARY}--\r\n").into_bytes(),
        ),
        bad_upload(
            "multipart with no file part",
            multipart_body(&[("note", None, "text/plain", b"hello")]),
        ),
        bad_upload(
            "multipart with two files",
            multipart_body(&[
                ("file", Some("a.mp4"), "video/mp4", &video),
                ("file2", Some("b.mp4"), "video/mp4", &video),
            ]),
        ),
        case("multipart with a broken boundary", Method::POST, "/upload")
            .bearer(token)
            .header("content-type", "multipart/form-data; boundary=other")
            .body(one_file.clone())
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case("multipart without a boundary", Method::POST, "/upload")
            .bearer(token)
            .header("content-type", "multipart/form-data")
            .body(one_file.clone())
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        bad_upload("multipart truncated mid-part", {
            let mut body = one_file.clone();
            body.truncate(body.len() / 2);
            body
        }),
        bad_upload("multipart part with a huge header (64 KiB)", {
            let mut body = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\nX-Filler: {}\r\n\r\n", "x".repeat(64 * 1024)).into_bytes();
            body.extend_from_slice(&video);
            body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
            body
        }),
        case("upload with a JSON content type", Method::POST, "/upload")
            .bearer(token)
            .header("content-type", "application/json")
            .body("{}")
            .expect(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        case("empty file", Method::POST, "/upload")
            .multipart(
                token,
                multipart_body(&[("file", Some("empty.mp4"), "video/mp4", b"")]),
            )
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case("text file named .mp4", Method::POST, "/upload")
            .multipart(
                token,
                multipart_body(&[("file", Some("notes.mp4"), "video/mp4", &not_a_video)]),
            )
            .expect(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        case("file over the size limit", Method::POST, "/upload")
            .multipart(
                token,
                multipart_body(&[("file", Some("big.mp4"), "video/mp4", &oversized)]),
            )
            .expect(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        case("upload without a token", Method::POST, "/upload")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(one_file.clone())
            .expect(StatusCode::UNAUTHORIZED, "unauthenticated"),
        // Ids.
        case("malformed job id", Method::GET, "/jobs/not-an-id")
            .bearer(token)
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case(
            "job id with non-hex characters",
            Method::GET,
            "/jobs/zzzzzzzzzzzzzzzzzzzzzzzz",
        )
        .bearer(token)
        .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case(
            "job id with percent-encoded traversal",
            Method::GET,
            "/jobs/..%2F..%2Fetc%2Fpasswd",
        )
        .bearer(token)
        .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case(
            "unknown job id",
            Method::GET,
            "/jobs/0123456789abcdef01234567",
        )
        .bearer(token)
        .expect(StatusCode::NOT_FOUND, "not_found"),
        case(
            "another user's job",
            Method::GET,
            format!("/jobs/{victim_job}"),
        )
        .bearer(token)
        .expect(StatusCode::NOT_FOUND, "not_found"),
        case(
            "deleting another user's job",
            Method::DELETE,
            format!("/jobs/{victim_job}"),
        )
        .bearer(token)
        .expect(StatusCode::NOT_FOUND, "not_found"),
        case("deleting a malformed id", Method::DELETE, "/jobs/123")
            .bearer(token)
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case("malformed mp3 id", Method::GET, "/download/xyz")
            .bearer(token)
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case(
            "traversal in fid",
            Method::GET,
            "/download?fid=../../etc/passwd",
        )
        .bearer(token)
        .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case("download without fid", Method::GET, "/download")
            .bearer(token)
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case(
            "unknown mp3 id",
            Method::GET,
            "/download/0123456789abcdef01234567",
        )
        .bearer(token)
        .expect(StatusCode::NOT_FOUND, "not_found"),
        case(
            "another user's mp3",
            Method::GET,
            format!("/download/{victim_mp3}"),
        )
        .bearer(token)
        .expect(StatusCode::NOT_FOUND, "not_found"),
        case(
            "another user's mp3 by fid",
            Method::GET,
            format!("/download?fid={victim_mp3}"),
        )
        .bearer(token)
        .expect(StatusCode::NOT_FOUND, "not_found"),
        case(
            "a video's id as an mp3 id",
            Method::GET,
            format!(
                "/download/{}",
                mallory_accepted["video_id"].as_str().unwrap()
            ),
        )
        .bearer(token)
        .expect(StatusCode::NOT_FOUND, "not_found"),
        // Ranges.
        download("malformed Range is ignored", "bytes=abc").expect_ok(StatusCode::OK),
        download("multiple ranges are ignored", "bytes=0-1,5-6").expect_ok(StatusCode::OK),
        download("range of another unit is ignored", "items=0-1").expect_ok(StatusCode::OK),
        download("range past the end", "bytes=999999-")
            .expect(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
        download("empty suffix range", "bytes=-0")
            .expect(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
        download("a valid range", "bytes=0-99").expect_ok(StatusCode::PARTIAL_CONTENT),
        // URLs, methods, content types.
        case(
            "very long URL (8 KiB id)",
            Method::GET,
            format!("/jobs/{}", "a".repeat(8 * 1024)),
        )
        .bearer(token)
        .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case(
            "very long query (8 KiB fid)",
            Method::GET,
            format!("/download?fid={}", "b".repeat(8 * 1024)),
        )
        .bearer(token)
        .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case("unknown route", Method::GET, "/admin")
            .bearer(token)
            .expect(StatusCode::NOT_FOUND, "not_found"),
        case(
            "traversal out of the assets",
            Method::GET,
            "/assets/../../Cargo.toml",
        )
        .expect(StatusCode::NOT_FOUND, "not_found"),
        case("PUT on /jobs", Method::PUT, "/jobs")
            .bearer(token)
            .expect(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        case("DELETE on /upload", Method::DELETE, "/upload")
            .bearer(token)
            .expect(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        case("GET on /login", Method::GET, "/login")
            .expect(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        // Resumable uploads (tus).
        case("tus: no Tus-Resumable", Method::POST, "/files")
            .bearer(token)
            .header("upload-length", "10")
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case("tus: another protocol version", Method::POST, "/files")
            .bearer(token)
            .header("tus-resumable", "0.2.2")
            .header("upload-length", "10")
            .expect(StatusCode::PRECONDITION_FAILED, "precondition_failed"),
        case("tus: no Upload-Length", Method::POST, "/files")
            .bearer(token)
            .header("tus-resumable", "1.0.0")
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_create("tus: negative Upload-Length", "-1")
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_create("tus: Upload-Length past 2^64", "99999999999999999999999")
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_create("tus: Upload-Length of 1 TiB", "1099511627776")
            .expect(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        tus_create("tus: Upload-Length 0", "0").expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_create("tus: Upload-Defer-Length", "10")
            .header("upload-defer-length", "1")
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_create("tus: Upload-Metadata not base64", "10")
            .header("upload-metadata", "filename !!not-base64!!")
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_create("tus: Upload-Metadata key twice", "10")
            .header("upload-metadata", "filename YQ==,filename Yg==")
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_create("tus: Upload-Metadata bad option", "10")
            .header(
                "upload-metadata",
                format!("format {}", STANDARD.encode("wav")),
            )
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_create("tus: Upload-Metadata not ASCII", "10")
            .header("upload-metadata", b"filename \xc3\xa9".to_vec())
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_patch("tus: negative Upload-Offset", &own_upload, "-5")
            .body(vec![0; 10])
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_patch(
            "tus: Upload-Offset past 2^64",
            &own_upload,
            "18446744073709551616",
        )
        .body(vec![0; 10])
        .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_patch(
            "tus: huge Upload-Offset",
            &own_upload,
            "18446744073709551615",
        )
        .body(vec![0; 10])
        .expect(StatusCode::CONFLICT, "conflict"),
        case(
            "tus: PATCH without Upload-Offset",
            Method::PATCH,
            own_upload.clone(),
        )
        .bearer(token)
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .body(vec![0; 10])
        .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case(
            "tus: PATCH as octet-stream",
            Method::PATCH,
            own_upload.clone(),
        )
        .bearer(token)
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/octet-stream")
        .header("upload-offset", "0")
        .body(vec![0; 10])
        .expect(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        tus_patch("tus: body longer than Upload-Length", &own_upload, "0")
            .body(vec![0; 2000])
            .expect(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        tus_patch("tus: malformed Upload-Checksum", &own_upload, "0")
            .header("upload-checksum", "sha1")
            .body(vec![0; 10])
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_patch("tus: unsupported checksum algorithm", &own_upload, "0")
            .header("upload-checksum", "crc32 AAAAAA==")
            .body(vec![0; 10])
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_patch("tus: PATCH another user's upload", &victim_upload, "0")
            .body(vec![0; 10])
            .expect(StatusCode::NOT_FOUND, "not_found"),
        case(
            "tus: DELETE another user's upload",
            Method::DELETE,
            victim_upload.clone(),
        )
        .bearer(token)
        .header("tus-resumable", "1.0.0")
        .expect(StatusCode::NOT_FOUND, "not_found"),
        tus_patch("tus: malformed upload id", "/files/..%2f..%2fetc", "0")
            .body(vec![0; 10])
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_patch(
            "tus: unknown upload id",
            "/files/0123456789abcdef01234567",
            "0",
        )
        .body(vec![0; 10])
        .expect(StatusCode::NOT_FOUND, "not_found"),
        case(
            "tus: method override to GET",
            Method::POST,
            own_upload.clone(),
        )
        .bearer(token)
        .header("tus-resumable", "1.0.0")
        .header("x-http-method-override", "GET")
        .expect(StatusCode::BAD_REQUEST, "bad_request"),
        tus_patch("tus: no media in the first bytes", &own_upload, "0")
            .body(vec![b'x'; 1000])
            .expect(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        case("register as text/plain", Method::POST, "/register")
            .header("content-type", "text/plain")
            .body(r#"{"email":"a@example.com","password":"long enough"}"#)
            .expect(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        case("register with invalid UTF-8", Method::POST, "/register")
            .header("content-type", "application/json")
            .body(b"{\"email\":\"\xff\xfe\",\"password\":\"long enough\"}".to_vec())
            .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case("register with a 2 MiB body", Method::POST, "/register")
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"email":"a@example.com","password":"{}"}}"#,
                "p".repeat(2 * 1024 * 1024)
            ))
            .expect(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        case(
            "register with a too short password",
            Method::POST,
            "/register",
        )
        .header("content-type", "application/json")
        .body(r#"{"email":"short@example.com","password":"short"}"#)
        .expect(StatusCode::BAD_REQUEST, "bad_request"),
        case(
            "register with a control character in the e-mail",
            Method::POST,
            "/register",
        )
        .header("content-type", "application/json")
        .body("{\"email\":\"a\\u0000b@example.com\",\"password\":\"long enough pw\"}")
        .expect(StatusCode::BAD_REQUEST, "bad_request"),
    ];
    assert!(cases.len() >= 90, "{} cases", cases.len());

    let mut failures = Vec::new();
    let mut table = vec![format!(
        "{:<48} {:>8} {:>6}  held",
        "case", "expected", "got"
    )];
    for case in cases {
        let mut headers = HeaderMap::new();
        for (name, value) in &case.headers {
            headers.insert(*name, HeaderValue::from_bytes(value).unwrap());
        }
        let response = mesh
            .http
            .request(case.method.clone(), mesh.url(&case.path))
            .headers(headers)
            .body(case.body.clone())
            .send()
            .await;
        let Ok(response) = response else {
            failures.push(format!("{}: no response ({response:?})", case.name));
            continue;
        };
        let got = response.status();
        let body = response.text().await.unwrap_or_default();
        let problem = if got != case.status || got.is_server_error() {
            Some(format!("expected {}, got {got}: {body}", case.status))
        } else if let Some(code) = case.code {
            // An error must be JSON with the expected code, and say nothing of the insides.
            match serde_json::from_str::<Value>(&body) {
                Ok(json) if json["error"]["code"] != code => {
                    Some(format!("expected code {code}: {body}"))
                }
                Ok(json) => json["error"]["message"]
                    .as_str()
                    .map_or(Some(format!("no message: {body}")), |message| {
                        leaked_detail(message).map(|leak| format!("leaks {leak}: {message}"))
                    }),
                Err(_) => Some(format!("not JSON: {body}")),
            }
        } else {
            None
        };
        let held = if problem.is_none() { "yes" } else { "NO" };
        table.push(format!(
            "{:<48} {:>8} {:>6}  {held}",
            case.name,
            case.status.as_u16(),
            got.as_u16()
        ));
        if let Some(problem) = problem {
            failures.push(format!("{}: {problem}", case.name));
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Nothing hostile was stored: the attacker still has exactly the one video it uploaded.
    assert_eq!(mesh.stored_videos(&mallory.id).await.len(), videos_before);
    assert_eq!(mesh.stored_jobs(&mallory.id).await.len(), 1);
    // And the victim's job survived the attempt to delete it.
    assert_eq!(mesh.stored_jobs(&victim.id).await.len(), 1);
}

/// A file name with a path is not refused (browsers have sent the user's whole path): it is kept
/// without it, in the job and the stored file (the download's name, made from it, is checked by
/// `http_util`'s tests). A control character other than a tab cannot be in a part's header at
/// all: 400, nothing kept.
#[tokio::test]
async fn file_names_with_paths_or_control_characters_are_kept_without_them() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let user = mesh.user("namer@example.com").await;
    let video = mp4_bytes(VideoSpec::small(1.0)).await;
    let harmless = |name: &str| {
        !name.is_empty() && !name.contains(['/', '\\']) && !name.chars().any(char::is_control)
    };
    let hostile_names = [
        ("../../etc/passwd.mp4", "passwd.mp4"),
        ("C:\\Users\\eve\\clip.mp4", "clip.mp4"),
        ("tab\there.mp4", "tabhere.mp4"),
    ];
    // Built by hand: an HTTP client would escape the very characters under test.
    let upload_named = async |name: &str| {
        let body = multipart_body(&[("file", Some(name), "video/mp4", &video)]);
        mesh.http
            .post(mesh.url("/upload"))
            .bearer_auth(&user.token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .unwrap()
    };
    // Other control characters cannot even be in a part's header: the body is malformed.
    for sent in ["bell\u{7}.mp4", "escape\u{1b}[31m.mp4", "nul\u{0}.mp4"] {
        let response = upload_named(sent).await;
        crate::support::assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert!(
        mesh.stored_videos(&user.id).await.is_empty(),
        "nothing kept"
    );
    for (sent, expected) in hostile_names {
        let response = upload_named(sent).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{sent:?}");
        let job_id = response.json::<Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let job = rest::job(&mesh.http, &mesh.gateway.url(), &user.token, &job_id).await;
        assert_eq!(job["original_filename"], expected, "{sent:?}");
    }
    for video in mesh.stored_videos(&user.id).await {
        assert!(harmless(&video.filename), "stored as {:?}", video.filename);
    }
}
