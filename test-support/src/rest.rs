//! The gateway's REST API called as a user calls it (sign up, log in, upload, read a job), for
//! tests that need a signed-in user or an accepted upload.

use serde_json::{Value, json};

/// Registers `email` with `password` at the gateway `base_url`; returns the account's id.
pub async fn register(
    http: &reqwest::Client,
    base_url: &str,
    email: &str,
    password: &str,
) -> String {
    let response = http
        .post(format!("{base_url}/register"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("the gateway answers /register");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::CREATED,
        "registering {email}"
    );
    let body: Value = response.json().await.expect("a JSON body");
    body["id"].as_str().expect("an id").to_owned()
}

/// Logs in with HTTP Basic; returns the access token.
pub async fn login(http: &reqwest::Client, base_url: &str, email: &str, password: &str) -> String {
    let response = http
        .post(format!("{base_url}/login"))
        .basic_auth(email, Some(password))
        .send()
        .await
        .expect("the gateway answers /login");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::OK,
        "logging in {email}"
    );
    let body: Value = response.json().await.expect("a JSON body");
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

/// `GET /jobs/{job_id}` as the owner of `token`: the job's JSON, which must be a 200.
pub async fn job(http: &reqwest::Client, base_url: &str, token: &str, job_id: &str) -> Value {
    let response = http
        .get(format!("{base_url}/jobs/{job_id}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the gateway answers /jobs/{id}");
    assert_eq!(response.status(), reqwest::StatusCode::OK, "job {job_id}");
    response.json().await.expect("a JSON body")
}
