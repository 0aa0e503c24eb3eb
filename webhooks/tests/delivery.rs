//! Deliveries over real connections: a receiver that verifies with the Standard Webhooks
//! reference library (`test_support::WebhookReceiver`), real listeners that count what reaches
//! them, and real HTTP answers.

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use bytes::Bytes;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use test_support::WebhookReceiver;
use tokio::net::TcpListener;
use webhooks::{
    AllowedNetworks, AttemptOutcome, Deliverer, DestinationPolicy, Message, Refusal, SigningSecret,
    Verdict, signature,
};

/// The verifying receiver with each of `secrets`.
async fn receiver(secrets: &[&SigningSecret]) -> WebhookReceiver {
    let secrets: Vec<String> = secrets.iter().map(|secret| secret.expose()).collect();
    WebhookReceiver::start(&secrets, 0).await
}

fn loopback_allowed() -> DestinationPolicy {
    DestinationPolicy {
        allowed_networks: "127.0.0.0/8, ::1".parse().unwrap(),
        https_only: false,
    }
}

fn deliverer(policy: DestinationPolicy) -> Deliverer {
    Deliverer::new(policy, Duration::from_secs(5)).unwrap()
}

fn job_message() -> Message {
    let body = json!({
        "type": "job.succeeded",
        "timestamp": "2026-12-06T02:00:00Z",
        "data": {"job_id": "j1", "mp3_id": "m1", "download_url": "/download/j1"}
    });
    Message::new(Bytes::from(serde_json::to_vec(&body).unwrap()))
}

#[tokio::test]
async fn the_reference_verifier_accepts_our_deliveries_and_rejects_tampered_or_replayed_ones() {
    let secret = SigningSecret::generate();
    let mut receiver = receiver(&[&secret]).await;
    let deliverer = deliverer(loopback_allowed());

    let message = job_message();
    let attempt = deliverer
        .attempt(&receiver.url, std::slice::from_ref(&secret), &message)
        .await;
    assert_eq!(attempt.verdict(), Verdict::Delivered, "{attempt:?}");
    let seen = receiver.next().await;
    assert_eq!(seen["verified_by"], json!([0]), "{seen}");
    assert_eq!(seen["id"], json!(message.id));
    assert_eq!(seen["body"]["data"]["job_id"], json!("j1"));

    // The same signature over another body, and a correct signature over an old timestamp,
    // sent by hand: the reference verifier refuses both, so the check above can fail.
    let client = reqwest::Client::new();
    let url = receiver.url.clone();
    let send = |body: &'static str, timestamp: i64, signed_body: &'static str| {
        let signature = signature::sign(&secret, "msg_by_hand", timestamp, signed_body.as_bytes());
        client
            .post(&url)
            .header("webhook-id", "msg_by_hand")
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
    };
    let tampered = send(
        r#"{"type":"job.failed"}"#,
        message.timestamp,
        r#"{"type":"job.succeeded"}"#,
    )
    .await
    .unwrap();
    assert_eq!(tampered.status(), 400);
    let seen = receiver.next().await;
    assert_eq!(
        seen["errors"],
        json!(["No matching signature found"]),
        "{seen}"
    );
    let replayed = send("{}", message.timestamp - 600, "{}").await.unwrap();
    assert_eq!(replayed.status(), 400);
    let seen = receiver.next().await;
    assert_eq!(
        seen["errors"],
        json!(["Message timestamp too old"]),
        "{seen}"
    );
}

#[tokio::test]
async fn during_a_rotation_either_secret_verifies_and_a_stranger_secret_does_not() {
    let (old, new, stranger) = (
        SigningSecret::generate(),
        SigningSecret::generate(),
        SigningSecret::generate(),
    );
    let mut receiver = receiver(&[&old, &new, &stranger]).await;
    let deliverer = deliverer(loopback_allowed());

    let both = deliverer
        .attempt(&receiver.url, &[old.clone(), new.clone()], &job_message())
        .await;
    assert_eq!(both.verdict(), Verdict::Delivered);
    assert_eq!(receiver.next().await["verified_by"], json!([0, 1]));

    let after_the_overlap = deliverer
        .attempt(&receiver.url, std::slice::from_ref(&new), &job_message())
        .await;
    assert_eq!(after_the_overlap.verdict(), Verdict::Delivered);
    assert_eq!(receiver.next().await["verified_by"], json!([1]));

    let unknown = SigningSecret::generate();
    let refused = deliverer
        .attempt(&receiver.url, &[unknown], &job_message())
        .await;
    assert_eq!(
        refused.outcome,
        AttemptOutcome::Answered {
            status: 400,
            retry_after: None
        }
    );
    assert_eq!(receiver.next().await["verified_by"], json!([]));
}

/// A listener that accepts and counts connections, and answers none.
async fn counting_listener(address: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(address).await.unwrap();
    let local = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(connection);
        }
    });
    (local, count)
}

#[tokio::test]
async fn loopback_private_and_metadata_destinations_are_refused_and_nothing_reaches_them() {
    let (v4, v4_count) = counting_listener("127.0.0.1:0").await;
    let (v6, v6_count) = counting_listener("[::1]:0").await;
    let secret = [SigningSecret::generate()];
    let guarded = deliverer(DestinationPolicy::default());
    for (url, range) in [
        (format!("http://127.0.0.1:{}/", v4.port()), "loopback"),
        (format!("http://[::1]:{}/", v6.port()), "loopback"),
        (format!("http://localhost:{}/", v4.port()), "loopback"),
        (
            format!("http://[::ffff:127.0.0.1]:{}/", v4.port()),
            "loopback",
        ),
        ("http://10.0.0.5/".to_owned(), "private"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "link-local (cloud metadata)",
        ),
    ] {
        let attempt = guarded.attempt(&url, &secret, &job_message()).await;
        assert!(
            matches!(&attempt.outcome, AttemptOutcome::Refused(Refusal::Forbidden { range: r, .. }) if *r == range),
            "{url}: {attempt:?}"
        );
        assert!(matches!(attempt.verdict(), Verdict::Retry { .. }));
    }
    assert_eq!(
        v4_count.load(Ordering::SeqCst),
        0,
        "nothing reached 127.0.0.1"
    );
    assert_eq!(v6_count.load(Ordering::SeqCst), 0, "nothing reached ::1");

    // The same requests with loopback allowed reach both listeners: the counts above could
    // have been more than zero.
    let allowed = deliverer(loopback_allowed());
    for url in [
        format!("http://127.0.0.1:{}/", v4.port()),
        format!("http://[::1]:{}/", v6.port()),
        format!("http://localhost:{}/", v4.port()),
    ] {
        let attempt = allowed.attempt(&url, &secret, &job_message()).await;
        assert!(
            matches!(attempt.outcome, AttemptOutcome::Unreachable(_)),
            "{url}: {attempt:?}"
        );
    }
    assert!(v4_count.load(Ordering::SeqCst) >= 2);
    assert!(v6_count.load(Ordering::SeqCst) >= 1);
}

async fn serve(address: &str, router: Router) -> SocketAddr {
    let listener = TcpListener::bind(address).await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    local
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_it_cannot_lead_past_the_guard() {
    // Only 127.0.0.1 is allowed; the redirect leads to 127.0.0.2, another loopback address.
    let (hidden, hidden_count) = counting_listener("127.0.0.2:0").await;
    let target = format!("http://{hidden}/internal");
    let redirecting =
        serve(
            "127.0.0.1:0",
            Router::new().route(
                "/hook",
                post(move || async move {
                    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)])
                }),
            ),
        )
        .await;
    let policy = DestinationPolicy {
        allowed_networks: AllowedNetworks::new(vec!["127.0.0.1/32".parse().unwrap()]),
        https_only: false,
    };
    let url = format!("http://{redirecting}/hook");
    let attempt = deliverer(policy)
        .attempt(&url, &[SigningSecret::generate()], &job_message())
        .await;
    assert_eq!(
        attempt.outcome,
        AttemptOutcome::Answered {
            status: 307,
            retry_after: None
        }
    );
    assert!(
        matches!(attempt.verdict(), Verdict::Retry { .. }),
        "a redirect is a failure"
    );
    assert_eq!(hidden_count.load(Ordering::SeqCst), 0);

    // A client that follows redirects gets there: the count above could have been one.
    let _ = reqwest::Client::new().post(&url).body("{}").send().await;
    assert_eq!(hidden_count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn each_answer_becomes_its_verdict_and_a_silent_receiver_times_out() {
    let answering = serve(
        "127.0.0.1:0",
        Router::new()
            .route("/ok", post(|| async { StatusCode::NO_CONTENT }))
            .route("/gone", post(|| async { StatusCode::GONE }))
            .route(
                "/busy",
                post(|| async {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, "120")],
                    )
                }),
            )
            .route(
                "/down",
                post(|| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "7")],
                    )
                }),
            )
            .route("/missing", post(|| async { StatusCode::NOT_FOUND }))
            .route(
                "/headers",
                post(|headers: HeaderMap| async move {
                    let sent = ["webhook-id", "webhook-timestamp", "webhook-signature"]
                        .iter()
                        .all(|name| headers.contains_key(*name))
                        && headers[header::CONTENT_TYPE] == "application/json";
                    if sent {
                        StatusCode::OK
                    } else {
                        StatusCode::BAD_REQUEST
                    }
                }),
            )
            .route(
                "/silent",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    StatusCode::OK
                }),
            ),
    )
    .await;
    let deliverer = Deliverer::new(loopback_allowed(), Duration::from_secs(1)).unwrap();
    let secret = [SigningSecret::generate()];
    let verdict_of = |path: &'static str| {
        let deliverer = deliverer.clone();
        let secret = secret.clone();
        async move {
            let url = format!("http://{answering}{path}");
            deliverer.attempt(&url, &secret, &job_message()).await
        }
    };
    assert_eq!(verdict_of("/ok").await.verdict(), Verdict::Delivered);
    assert_eq!(verdict_of("/headers").await.verdict(), Verdict::Delivered);
    assert_eq!(verdict_of("/gone").await.verdict(), Verdict::Gone);
    assert_eq!(
        verdict_of("/busy").await.verdict(),
        Verdict::Retry {
            retry_after: Some(Duration::from_secs(120)),
            slow_down: true
        }
    );
    assert_eq!(
        verdict_of("/down").await.verdict(),
        Verdict::Retry {
            retry_after: Some(Duration::from_secs(7)),
            slow_down: false
        }
    );
    assert_eq!(
        verdict_of("/missing").await.verdict(),
        Verdict::Retry {
            retry_after: None,
            slow_down: false
        }
    );
    let silent = verdict_of("/silent").await;
    assert_eq!(silent.outcome, AttemptOutcome::TimedOut);
    assert!(
        silent.duration >= Duration::from_millis(900) && silent.duration < Duration::from_secs(5),
        "{:?}",
        silent.duration
    );
    assert_eq!(
        silent.verdict(),
        Verdict::Retry {
            retry_after: None,
            slow_down: true
        }
    );
}
