//! What the gateway's tests share beyond the mesh (which lives in `test_support::mesh`): the
//! check that an error answer is the JSON the API promises and says nothing of the insides.

use reqwest::{Response, StatusCode};
use serde_json::Value;

/// Asserts a JSON error response: its status, its `error.code`, and that it says nothing of
/// the insides.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "for {}", response.url());
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    if let Some(leak) = leaked_detail(message) {
        panic!("leaks {leak}: {message}");
    }
    body
}

/// The first word of the insides (libraries, gRPC statuses) an error message gives away, if any.
pub fn leaked_detail(message: &str) -> Option<&'static str> {
    let message = message.to_lowercase();
    [
        "tonic", "grpc", "status:", "status {", "mongodb", "lapin", "sqlx",
    ]
    .into_iter()
    .find(|leak| message.contains(leak))
}
