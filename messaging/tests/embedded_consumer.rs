//! The consumer loop on the embedded queue: the same rules as on RabbitMQ (retries count
//! attempts and end in the dead-letter queue, shutdown hands unfinished work back, a body that
//! is not an event is dead-lettered), against the real queue file.

use messaging::BrokerConfig;
use messaging::QueueConfig;
use messaging::RetryConfig;
use messaging::consumer::{self, ConsumerSettings, Handler, Outcome, Received};
use messaging::embedded::EmbeddedQueue;
use messaging::events::{self, Payload, VideoUploaded};
use service_kit::Shutdown;
use service_kit::ops::Readiness;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a handler saw of each delivery: its attempt, and whether it was the last.
type Seen = Arc<Mutex<Vec<(u32, bool)>>>;

/// Answers from a script, one per delivery, and remembers what it saw.
struct Scripted {
    answers: Mutex<Vec<Outcome>>,
    seen: Seen,
    wait_for_cancel: bool,
}

impl Handler for Scripted {
    async fn handle(&self, received: Received) -> Outcome {
        self.seen
            .lock()
            .unwrap()
            .push((received.attempt, received.last_attempt));
        if self.wait_for_cancel {
            received.cancel.cancelled().await;
            return Outcome::HandBack;
        }
        let mut answers = self.answers.lock().unwrap();
        if answers.is_empty() {
            Outcome::Ack
        } else {
            answers.remove(0)
        }
    }
}

fn settings(dir: &std::path::Path, max_attempts: u32) -> ConsumerSettings {
    ConsumerSettings {
        service: "test",
        broker: BrokerConfig {
            amqp_url: None,
            amqp_ca_file: None,
            data_dir: dir.to_owned(),
            embedded_queue_lease_seconds: 30,
            queues: QueueConfig::default(),
        },
        queue: "video".into(),
        concurrency: 2,
        retry: RetryConfig {
            max_attempts,
            retry_base_delay_ms: 50,
            retry_max_delay_ms: 50,
            schedule: None,
            jitter_percent: 0,
        },
        grace: Duration::from_millis(200),
    }
}

/// Settings over `dir` and the queue file with `body` published to `video`.
async fn queue_holding(
    dir: &std::path::Path,
    max_attempts: u32,
    body: &[u8],
) -> (ConsumerSettings, EmbeddedQueue) {
    let settings = settings(dir, max_attempts);
    let queue = EmbeddedQueue::open(&settings.broker.embedded_queue_path())
        .await
        .unwrap();
    queue.publish("video", body).await.unwrap();
    (settings, queue)
}

fn event_body() -> Vec<u8> {
    events::encode(&events::new_event(Payload::VideoUploaded(
        VideoUploaded::default(),
    )))
}

/// Runs the consumer until `done` holds for the queue file, then stops it.
async fn consume_until(
    queue: &EmbeddedQueue,
    settings: ConsumerSettings,
    handler: impl Handler,
    done: impl AsyncFn(&EmbeddedQueue) -> bool,
) {
    let shutdown = Shutdown::new();
    let running = tokio::spawn(consumer::consume(
        settings,
        handler,
        Readiness::new(),
        shutdown.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(20), async {
        while !done(queue).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the consumer finishes in time");
    shutdown.trigger();
    running.await.unwrap().unwrap();
}

fn scripted(answers: Vec<Outcome>) -> (Scripted, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = Scripted {
        answers: Mutex::new(answers),
        seen: seen.clone(),
        wait_for_cancel: false,
    };
    (handler, seen)
}

#[tokio::test]
async fn a_retried_message_comes_back_as_the_next_attempt_and_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, queue) = queue_holding(dir.path(), 3, &event_body()).await;
    let (handler, seen) = scripted(vec![Outcome::Retry("storage is down".into())]);
    consume_until(&queue, settings, handler, async |queue| {
        queue.depth("video").await.unwrap() == 0
    })
    .await;
    assert_eq!(*seen.lock().unwrap(), [(1, false), (2, false)]);
    assert_eq!(queue.depth("video.dead").await.unwrap(), 0);
}

#[tokio::test]
async fn a_message_that_keeps_failing_ends_in_the_dead_letter_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, queue) = queue_holding(dir.path(), 2, &event_body()).await;
    let failing = vec![
        Outcome::Retry("down".into()),
        Outcome::Retry("still down".into()),
    ];
    let (handler, seen) = scripted(failing);
    consume_until(&queue, settings, handler, async |queue| {
        queue.depth("video.dead").await.unwrap() == 1
    })
    .await;
    assert_eq!(*seen.lock().unwrap(), [(1, false), (2, true)]);
    assert_eq!(queue.depth("video").await.unwrap(), 0);
}

#[tokio::test]
async fn a_body_that_is_not_an_event_is_dead_lettered_without_reaching_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, queue) = queue_holding(dir.path(), 3, b"\xff\xff not protobuf").await;
    let (handler, seen) = scripted(Vec::new());
    consume_until(&queue, settings, handler, async |queue| {
        queue.depth("video.dead").await.unwrap() == 1
    })
    .await;
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn work_unfinished_at_shutdown_is_handed_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, queue) = queue_holding(dir.path(), 3, &event_body()).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stuck = Scripted {
        answers: Mutex::new(Vec::new()),
        seen: seen.clone(),
        wait_for_cancel: true,
    };
    let seen_by_check = seen.clone();
    consume_until(&queue, settings, stuck, async move |_| {
        !seen_by_check.lock().unwrap().is_empty()
    })
    .await;
    // Handed back, not left leased for 30 s: the next worker gets it now, as a redelivery.
    let again = queue
        .lease("video", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the message is available again");
    assert_eq!((again.attempt, again.deliveries), (1, 2));
}

/// A handler with a bug: it panics on its first delivery and acknowledges the next.
struct PanicsOnce {
    calls: Arc<AtomicU32>,
    redelivered: Arc<Mutex<Vec<bool>>>,
}

impl Handler for PanicsOnce {
    async fn handle(&self, received: Received) -> Outcome {
        self.redelivered.lock().unwrap().push(received.redelivered);
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a bug in the handler");
        }
        Outcome::Ack
    }
}

#[tokio::test]
async fn a_message_whose_handler_panicked_goes_to_the_next_delivery_once_its_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (mut settings, queue) = queue_holding(dir.path(), 3, &event_body()).await;
    settings.broker.embedded_queue_lease_seconds = 1;
    let redelivered = Arc::new(Mutex::new(Vec::new()));
    let handler = PanicsOnce {
        calls: Arc::new(AtomicU32::new(0)),
        redelivered: redelivered.clone(),
    };
    consume_until(&queue, settings, handler, async |queue| {
        queue.depth("video").await.unwrap() == 0
    })
    .await;
    // Not renewed forever by the dead handler: delivered again, as a redelivery, and acked.
    assert_eq!(*redelivered.lock().unwrap(), [false, true]);
}
