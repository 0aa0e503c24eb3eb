//! What the gateway answers on its own, without asking auth, storage or the queue: the router
//! is driven in process (`tower::ServiceExt::oneshot`), with its backends pointed at a port
//! where nothing listens. An answer that needed a backend would be a 503, so each answer here
//! also shows that the gateway refused (or served) the request by itself.

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use std::net::SocketAddr;
use test_support::{TempDir, configs, temp_dir};
use tower::ServiceExt;

/// Nothing listens here.
const NOWHERE: &str = "http://127.0.0.1:1";

/// The gateway's router, its backends unreachable, and the directory its embedded queue would
/// use (it is never opened).
fn router() -> (axum::Router, TempDir) {
    let dir = temp_dir();
    let config = configs::gateway(NOWHERE, NOWHERE, configs::embedded(dir.path()));
    let state = gateway::state(&config, None).unwrap();
    let router = gateway::routes::router(state, &config)
        .layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
    (router, dir)
}

/// Sends one request; returns the status, headers and body.
async fn send(request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let (router, _dir) = router();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, body.to_vec())
}

/// Sends a request without a body.
async fn send_empty(method: Method, path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    send(request(method, path).body(Body::empty()).unwrap()).await
}

fn request(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path)
}

/// The JSON error's code.
fn error_code(body: &[u8]) -> String {
    let body: Value = serde_json::from_slice(body).expect("a JSON error body");
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_protected_route_without_a_usable_bearer_token_is_401_with_a_bearer_challenge() {
    let long = format!("Bearer {}", "a".repeat(5000));
    for authorization in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
        Some(&*long),
    ] {
        let mut builder = request(Method::GET, "/jobs");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let (status, headers, body) = send(builder.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(error_code(&body), "unauthenticated");
    }
}

#[tokio::test]
async fn a_login_without_usable_basic_credentials_is_401_with_a_basic_challenge() {
    for authorization in [None, Some("Basic !!!"), Some("Bearer abc")] {
        let mut builder = request(Method::POST, "/login");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let (status, headers, body) = send(builder.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
        assert_eq!(error_code(&body), "bad_credentials");
    }
}

#[tokio::test]
async fn a_registration_that_is_not_json_too_big_or_malformed_is_refused_before_auth_is_asked() {
    let cases = [
        (
            "text/plain",
            b"email=a".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "application/json",
            vec![b' '; 65 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "application/json",
            b"{\"email\":".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (content_type, body, expected) in cases {
        let request = request(Method::POST, "/register")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let (status, _, body) = send(request).await;
        assert_eq!(status, expected, "{content_type}");
        assert!(!error_code(&body).is_empty());
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let (status, _, body) = send_empty(Method::GET, "/nowhere").await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, _, body) = send_empty(Method::PUT, "/jobs").await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn liveness_the_document_and_the_page_are_served_with_their_headers() {
    let (status, headers, _) = send_empty(Method::GET, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(!headers["x-request-id"].is_empty());

    let (status, _, body) = send_empty(Method::GET, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let document: Value = serde_json::from_slice(&body).unwrap();
    assert!(document["paths"]["/jobs"]["get"].is_object());

    let (status, headers, body) = send_empty(Method::GET, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert!(String::from_utf8_lossy(&body).contains("<html"));

    // Readiness does ask the backends: unreachable, it says so.
    let (status, _, body) = send_empty(Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_ne!(body["checks"]["auth"], "ok");
}

/// The router with browsers at `origin` allowed (CORS).
fn router_allowing(origin: &str) -> (axum::Router, TempDir) {
    let dir = temp_dir();
    let mut config = configs::gateway(NOWHERE, NOWHERE, configs::embedded(dir.path()));
    config.cors_allowed_origins = vec![origin.to_owned()];
    let state = gateway::state(&config, None).unwrap();
    (gateway::routes::router(state, &config), dir)
}

#[tokio::test]
async fn a_tus_client_discovers_the_server_and_a_browser_may_send_and_read_every_tus_header() {
    // A tus client's OPTIONS (no preflight): the server's version, extensions and limits.
    let (status, headers, _) = send_empty(Method::OPTIONS, "/files/").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["tus-version"], "1.0.0");
    assert_eq!(headers["tus-resumable"], "1.0.0");
    assert!(headers.contains_key("tus-max-size"));

    // A browser's preflight for a PATCH from an allowed origin.
    let origin = "https://app.example";
    let (router, _dir) = router_allowing(origin);
    let preflight = request(Method::OPTIONS, "/files/0123456789abcdef01234567")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type,tus-resumable,upload-offset,upload-checksum,x-request-id,x-http-method-override",
        )
        .body(Body::empty())
        .unwrap();
    let answer = router.clone().oneshot(preflight).await.unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let allowed = |name: header::HeaderName| {
        answer.headers()[name]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
    };
    assert_eq!(allowed(header::ACCESS_CONTROL_ALLOW_ORIGIN), origin);
    assert!(allowed(header::ACCESS_CONTROL_ALLOW_METHODS).contains("patch"));
    for name in [
        "tus-resumable",
        "upload-offset",
        "upload-checksum",
        "x-request-id",
        "authorization",
    ] {
        assert!(
            allowed(header::ACCESS_CONTROL_ALLOW_HEADERS).contains(name),
            "{name} is not allowed"
        );
    }

    // Any answer lets the page's script read the tus headers.
    let head = request(Method::HEAD, "/files/0123456789abcdef01234567")
        .header(header::ORIGIN, origin)
        .body(Body::empty())
        .unwrap();
    let answer = router.oneshot(head).await.unwrap();
    let exposed = answer.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "upload-offset",
        "location",
        "upload-length",
        "tus-version",
        "tus-resumable",
        "tus-max-size",
        "tus-extension",
        "upload-metadata",
        "upload-expires",
        "job-id",
    ] {
        assert!(exposed.contains(name), "{name} is not exposed: {exposed}");
    }
}
