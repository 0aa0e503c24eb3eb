//! `/webhooks` end to end on the mesh: a user's endpoints (made with a secret shown once,
//! listed, read, rotated, deleted), nobody else's; and URLs that lead into loopback, private
//! or link-local networks refused when they are registered.

use crate::support::assert_error;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use test_support::mesh::{Mesh, MeshOptions, User};
use webhooks::SigningSecret;

/// A public address as an IP literal: registering it needs no DNS.
const PUBLIC_URL: &str = "https://93.184.215.14/hooks/mp3converter";

async fn register(mesh: &Mesh, user: &User, body: Value) -> Response {
    mesh.http
        .post(mesh.url("/webhooks"))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn call(mesh: &Mesh, user: &User, method: reqwest::Method, path: &str) -> Response {
    mesh.http
        .request(method, mesh.url(path))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
}

async fn listed(mesh: &Mesh, user: &User) -> Vec<Value> {
    let response = call(mesh, user, reqwest::Method::GET, "/webhooks").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["endpoints"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_user_registers_reads_rotates_and_deletes_their_endpoints_and_nobody_elses() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    let bob = mesh.user("bob@example.com").await;

    let response = register(
        &mesh,
        &alice,
        json!({"url": PUBLIC_URL, "events": ["job.succeeded", "job.succeeded"], "description": "CI"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/webhooks/{id}"));
    assert_eq!(created["url"], PUBLIC_URL);
    assert_eq!(created["events"], json!(["job.succeeded"]));
    assert_eq!(created["description"], "CI");
    let first_secret = created["secret"].as_str().unwrap().to_owned();
    SigningSecret::parse(&first_secret).expect("a whsec_ secret of 24 to 64 bytes");

    // Shown without the secret from then on.
    let endpoints = listed(&mesh, &alice).await;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["id"], id.as_str());
    assert!(endpoints[0].get("secret").is_none(), "{}", endpoints[0]);
    let path = format!("/webhooks/{id}");
    let one: Value = call(&mesh, &alice, reqwest::Method::GET, &path)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["url"], PUBLIC_URL);
    assert!(one.get("secret").is_none());
    assert!(one["previous_secret_expires_at"].is_null());

    // Bob sees none of it.
    assert!(listed(&mesh, &bob).await.is_empty());
    let rotate_path = format!("{path}/rotate-secret");
    for (method, path) in [
        (reqwest::Method::GET, path.as_str()),
        (reqwest::Method::DELETE, path.as_str()),
        (reqwest::Method::POST, rotate_path.as_str()),
    ] {
        assert_error(
            call(&mesh, &bob, method, path).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }

    // A rotation: a new secret, the old one signing beside it for a day.
    let response = call(&mesh, &alice, reqwest::Method::POST, &rotate_path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let rotated: Value = response.json().await.unwrap();
    let second_secret = rotated["secret"].as_str().unwrap();
    SigningSecret::parse(second_secret).unwrap();
    assert_ne!(second_secret, first_secret);
    let until = rotated["previous_secret_expires_at"].as_str().unwrap();
    let one: Value = call(&mesh, &alice, reqwest::Method::GET, &path)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["previous_secret_expires_at"], until);
    let expires = until.parse::<prost_types::Timestamp>().unwrap().seconds;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let hours_left = (expires - now) as f64 / 3600.0;
    assert!((23.9..=24.0).contains(&hours_left), "{hours_left} h");

    let response = call(&mesh, &alice, reqwest::Method::DELETE, &path).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_error(
        call(&mesh, &alice, reqwest::Method::GET, &path).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(listed(&mesh, &alice).await.is_empty());

    // Twenty endpoints at most.
    for n in 0..20 {
        let url = format!("{PUBLIC_URL}/{n}");
        let response = register(&mesh, &alice, json!({"url": url})).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let body = assert_error(
        register(&mesh, &alice, json!({"url": PUBLIC_URL})).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 20"),
        "{body}"
    );
}

#[tokio::test]
async fn urls_into_loopback_private_or_metadata_addresses_are_refused_and_nothing_is_kept() {
    let mesh = Mesh::start(MeshOptions::default()).await;
    let alice = mesh.user("alice@example.com").await;
    for (url, says) in [
        ("http://127.0.0.1:9/hook", "127.0.0.1, a loopback address"),
        ("http://[::1]:9/hook", "::1, a loopback address"),
        (
            "http://[::ffff:127.0.0.1]/",
            "127.0.0.1, a loopback address",
        ),
        ("http://10.0.0.5/hook", "10.0.0.5, a private address"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254, a link-local (cloud metadata) address",
        ),
        ("http://localhost:8080/hook", "`localhost` is"),
        ("http://no-such-host.invalid/", "does not resolve"),
    ] {
        let body = assert_error(
            register(&mesh, &alice, json!({"url": url})).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        )
        .await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{url}: {message}");
    }
    for (body, says) in [
        (
            json!({"url": "ftp://example.com/"}),
            "must use http or https",
        ),
        (json!({"url": "not a url"}), "not a URL"),
        (
            json!({"url": "https://u:p@93.184.215.14/"}),
            "user name or password",
        ),
        (
            json!({"url": PUBLIC_URL, "events": ["job.exploded"]}),
            "unknown event type `job.exploded`",
        ),
        (
            json!({"url": PUBLIC_URL, "description": "d".repeat(257)}),
            "description is longer than 256",
        ),
        (
            json!({"url": PUBLIC_URL, "secret": "mine"}),
            "unknown field",
        ),
        (json!({"events": []}), "missing field `url`"),
    ] {
        let answer = assert_error(
            register(&mesh, &alice, body.clone()).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let not_json = mesh
        .http
        .post(mesh.url("/webhooks"))
        .bearer_auth(&alice.token)
        .body(PUBLIC_URL)
        .send()
        .await
        .unwrap();
    assert_error(
        not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let anonymous = mesh.http.get(mesh.url("/webhooks")).send().await.unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert!(listed(&mesh, &alice).await.is_empty(), "nothing was kept");
}

#[tokio::test]
async fn an_operator_can_allow_a_named_network_and_refuse_plain_http() {
    let mesh = Mesh::start(MeshOptions::gateway(|config| {
        config.webhook_destinations.webhook_allowed_networks = "127.0.0.0/8".parse().unwrap();
        config.webhook_destinations.webhook_https_only = true;
    }))
    .await;
    let alice = mesh.user("alice@example.com").await;
    let allowed = register(&mesh, &alice, json!({"url": "https://127.0.0.1:9/hook"})).await;
    assert_eq!(allowed.status(), StatusCode::CREATED, "the allowed network");
    let body = assert_error(
        register(&mesh, &alice, json!({"url": "http://127.0.0.1:9/hook"})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert_eq!(
        body["error"]["message"],
        "the webhook URL must use https, not `http`"
    );
    assert_error(
        register(&mesh, &alice, json!({"url": "https://[::1]:9/hook"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
    )
    .await;
}
