//! The consuming half of a worker, written once for the converter and the notifier: take
//! messages, at most the concurrency at once, hand each event to a [`Handler`] on its own task,
//! and settle the message by what the handler answers. On shutdown it stops taking messages,
//! lets in-flight work finish within a grace period, and hands back what is left.
//!
//! The rules live here; each transport's loop lives with its transport: [`crate::amqp`]
//! (consume with a prefetch equal to the concurrency; when the broker drops the connection the
//! in-flight work is cancelled, since its messages are redelivered anyway, and the consumer
//! connects again with a growing pause) and [`crate::embedded`] (lease messages from the shared
//! file, renew the leases while the work runs, cancel the work if a lease is lost).

use crate::config::{BrokerConfig, RetryConfig};
use crate::events::{self, Event};
use crate::publisher::Publisher;
use crate::{amqp, embedded};
use service_kit::Shutdown;
use service_kit::ops::Readiness;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What a handler decided about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or nothing to do): acknowledge.
    Ack,
    /// Failed for a passing reason: try again after a delay, or dead-letter it after the last
    /// attempt.
    Retry(String),
    /// As [`Outcome::Retry`], but not sooner than this (the other side asked for a pause, or is
    /// overwhelmed): the retry waits the longer of its delay and this.
    RetryNoSooner(String, Duration),
    /// Can never succeed: straight to the dead-letter queue.
    DeadLetter(String),
    /// Not done, through no fault of the message (shutdown, lost connection): put it back at
    /// once for another worker.
    HandBack,
}

/// One event to handle, with what the handler needs to know about its delivery.
#[derive(Debug)]
pub struct Received {
    /// The decoded event.
    pub event: Event,
    /// 1 for the first attempt; retries count up.
    pub attempt: u32,
    /// Whether a failure now is final ([`Outcome::Retry`] would dead-letter).
    pub last_attempt: bool,
    /// Whether the message was delivered before (its consumer went away).
    pub redelivered: bool,
    /// Where to publish the next event. The handler's answer settles the message only after
    /// it returns, so an event it published (and waited for) is queued before the message
    /// that caused it is let go.
    pub publisher: Publisher,
    /// Fires when the work must stop (shutdown past the grace period, or the connection lost).
    pub cancel: CancellationToken,
}

/// What a worker does with each event of its queue.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event.
    fn handle(&self, received: Received) -> impl Future<Output = Outcome> + Send;
}

/// Where and how a worker consumes.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The service's name (connection name, consumer tag, metric label).
    pub service: &'static str,
    /// The broker or embedded queue, and the queue names (all of them are declared).
    pub broker: BrokerConfig,
    /// The queue this worker consumes.
    pub queue: String,
    /// Messages handled at once (and the prefetch).
    pub concurrency: u16,
    /// Retry policy for this queue.
    pub retry: RetryConfig,
    /// How long in-flight work may go on after shutdown before it is handed back.
    pub grace: Duration,
}

/// Consumes until `shutdown` fires: from RabbitMQ when `AMQP_URL` is set, reconnecting
/// whenever the broker goes away; otherwise from the embedded queue. `readiness` is true while
/// messages can be taken.
pub async fn consume<H: Handler>(
    settings: ConsumerSettings,
    handler: H,
    readiness: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    crate::meters::describe();
    let worker = Worker {
        publisher: Publisher::new(&settings.broker, settings.service),
        settings,
        handler,
    };
    let worker = Arc::new(worker);
    if worker.settings.broker.amqp_url.is_some() {
        amqp::consume(worker, readiness, shutdown).await
    } else {
        embedded::consume(worker, readiness, shutdown).await
    }
}

/// What every delivery's task shares: the settings, the handler, and where it publishes.
pub(crate) struct Worker<H> {
    pub(crate) settings: ConsumerSettings,
    pub(crate) handler: H,
    pub(crate) publisher: Publisher,
}

/// How one delivery came, as its transport reports it.
pub(crate) struct Delivery<'a> {
    pub(crate) body: &'a [u8],
    /// The AMQP content type, when the transport has one.
    pub(crate) content_type: Option<&'a str>,
    pub(crate) attempt: u32,
    pub(crate) redelivered: bool,
    pub(crate) cancel: CancellationToken,
}

/// What to do with a message once its handler answered.
pub(crate) enum Settlement {
    Ack,
    RetryAfter(Duration),
    DeadLetter(String),
    HandBack,
}

impl<H: Handler> Worker<H> {
    /// Decodes and handles one message, and says how to settle it (counted and logged). A body
    /// that is not an event is dead-lettered.
    pub(crate) async fn handle(&self, delivery: Delivery<'_>) -> Settlement {
        let attempt = delivery.attempt;
        let outcome = match events::decode(delivery.body, delivery.content_type) {
            Ok(event) => {
                record_lag(self.settings.service, &event);
                let request_id = event.request_id.clone();
                let span = tracing::info_span!(
                    "message",
                    service = self.settings.service,
                    request_id = %request_id,
                );
                let received = Received {
                    event,
                    attempt,
                    last_attempt: attempt >= self.settings.retry.max_attempts,
                    redelivered: delivery.redelivered,
                    publisher: self.publisher.clone(),
                    cancel: delivery.cancel,
                };
                // The work's calls to storage, and the events it publishes, carry the id on.
                let handled = self.handler.handle(received).instrument(span);
                service_kit::request_id::scope(request_id, handled).await
            }
            Err(error) => Outcome::DeadLetter(error.to_string()),
        };
        self.settlement(outcome, attempt)
    }

    /// Turns the handler's outcome into what happens to the message, counting and logging it.
    fn settlement(&self, outcome: Outcome, attempt: u32) -> Settlement {
        let settings = &self.settings;
        let retries_left = attempt < settings.retry.max_attempts;
        let label = match &outcome {
            Outcome::Ack => "acked",
            Outcome::Retry(_) | Outcome::RetryNoSooner(..) if retries_left => "retried",
            Outcome::Retry(_) | Outcome::RetryNoSooner(..) | Outcome::DeadLetter(_) => {
                "dead_lettered"
            }
            Outcome::HandBack => "handed_back",
        };
        metrics::counter!(crate::meters::MESSAGES, "service" => settings.service, "outcome" => label)
            .increment(1);
        match outcome {
            Outcome::Ack => Settlement::Ack,
            Outcome::Retry(reason) if retries_left => {
                let delay = settings.retry.jittered_delay_after(attempt);
                tracing::warn!(%reason, attempt, ?delay, "retrying later");
                Settlement::RetryAfter(delay)
            }
            Outcome::RetryNoSooner(reason, floor) if retries_left => {
                let delay = settings.retry.jittered_delay_after(attempt).max(floor);
                tracing::warn!(%reason, attempt, ?delay, "retrying later, not sooner than asked");
                Settlement::RetryAfter(delay)
            }
            Outcome::Retry(reason)
            | Outcome::RetryNoSooner(reason, _)
            | Outcome::DeadLetter(reason) => {
                tracing::error!(%reason, attempt, "dead-lettering the message");
                Settlement::DeadLetter(reason)
            }
            Outcome::HandBack => Settlement::HandBack,
        }
    }
}

/// Lets in-flight work finish within `grace`, then cancels what is left (its handlers hand
/// their messages back) and waits for it.
pub(crate) async fn drain(in_flight: &TaskTracker, cancel: &CancellationToken, grace: Duration) {
    if tokio::time::timeout(grace, in_flight.wait()).await.is_err() {
        tracing::warn!(?grace, "grace period over; handing back in-flight work");
        cancel.cancel();
        in_flight.wait().await;
    }
}

/// How long the event waited since it happened (retries included).
fn record_lag(service: &'static str, event: &Event) {
    let Some(occurred) = event
        .occurred_at
        .and_then(|at| SystemTime::try_from(at).ok())
    else {
        return;
    };
    if let Ok(lag) = SystemTime::now().duration_since(occurred) {
        metrics::histogram!(crate::meters::QUEUE_LAG, "service" => service)
            .record(lag.as_secs_f64());
    }
}
