//! Accounts made through the gateway's REST API, as a user makes them, for tests that need a
//! signed-in user.

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
