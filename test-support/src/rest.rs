//! The gateway's REST API called as a user calls it (sign up, log in, upload, read a job), for
//! tests that need a signed-in user or an accepted upload.

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

/// Sends `request`, which must answer `expected`; its JSON body.
async fn answered(request: RequestBuilder, expected: StatusCode, what: &str) -> Value {
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("the gateway answers {what}: {error}"));
    assert_eq!(response.status(), expected, "{what}");
    response.json().await.expect("a JSON body")
}

/// Registers `email` with `password` at the gateway `base_url`; returns the account's id.
pub async fn register(
    http: &reqwest::Client,
    base_url: &str,
    email: &str,
    password: &str,
) -> String {
    let request = http
        .post(format!("{base_url}/register"))
        .json(&json!({ "email": email, "password": password }));
    let body = answered(
        request,
        StatusCode::CREATED,
        &format!("registering {email}"),
    )
    .await;
    body["id"].as_str().expect("an id").to_owned()
}

/// Logs in with HTTP Basic; returns the access token.
pub async fn login(http: &reqwest::Client, base_url: &str, email: &str, password: &str) -> String {
    let request = http
        .post(format!("{base_url}/login"))
        .basic_auth(email, Some(password));
    let body = answered(request, StatusCode::OK, &format!("logging in {email}")).await;
    body["access_token"].as_str().expect("a token").to_owned()
}

/// Uploads `bytes` as the multipart part `file` named `name`, with the bearer `token`.
pub async fn upload(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str("video/mp4")?;
    http.post(format!("{base_url}/upload"))
        .bearer_auth(token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
}

/// [`upload`] with audio options: `query` as query parameters, `fields` as multipart text
/// fields before the file part.
pub async fn upload_with_options(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    name: &str,
    bytes: Vec<u8>,
    query: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> reqwest::Result<reqwest::Response> {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str("video/mp4")?;
    let mut form = reqwest::multipart::Form::new();
    for (field, value) in fields {
        form = form.text(field.to_string(), value.to_string());
    }
    http.post(format!("{base_url}/upload"))
        .query(query)
        .bearer_auth(token)
        .multipart(form.part("file", part))
        .send()
        .await
}

/// `GET /jobs/{job_id}` as the owner of `token`: the job's JSON, which must be a 200.
pub async fn job(http: &reqwest::Client, base_url: &str, token: &str, job_id: &str) -> Value {
    let request = http
        .get(format!("{base_url}/jobs/{job_id}"))
        .bearer_auth(token);
    answered(request, StatusCode::OK, &format!("job {job_id}")).await
}

/// `GET path` as the owner of `token`.
pub async fn get(
    http: &reqwest::Client,
    base_url: &str,
    path: &str,
    token: &str,
) -> reqwest::Response {
    http.get(format!("{base_url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|error| panic!("the gateway answers {path}: {error}"))
}

/// The `Upload-Offset` a tus answer gives.
pub fn upload_offset(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("upload-offset")
        .unwrap_or_else(|| panic!("no Upload-Offset in {:?}", response.headers()))
        .to_str()
        .expect("a visible Upload-Offset")
        .parse()
        .expect("a numeric Upload-Offset")
}

/// A request body that sends `bytes` in 256 KiB pieces, one every `pause`, and the count of
/// bytes handed over so far: for a test that breaks something part-way through an upload.
pub fn trickled_body(
    bytes: &[u8],
    pause: std::time::Duration,
) -> (reqwest::Body, tokio::sync::watch::Receiver<usize>) {
    use futures::StreamExt;
    let pieces: Vec<Vec<u8>> = bytes.chunks(256 * 1024).map(<[u8]>::to_vec).collect();
    let (sent, sent_so_far) = tokio::sync::watch::channel(0usize);
    let body = futures::stream::iter(pieces).then(move |piece| {
        let sent = sent.clone();
        async move {
            tokio::time::sleep(pause).await;
            sent.send_modify(|total| *total += piece.len());
            Ok::<_, std::io::Error>(piece)
        }
    });
    (reqwest::Body::wrap_stream(body), sent_so_far)
}
