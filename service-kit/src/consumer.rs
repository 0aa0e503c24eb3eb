//! The consuming half of a worker, written once for the converter and the notifier: take
//! messages, at most the concurrency at once, hand each event to a [`Handler`] on its own task,
//! and settle the message by what the handler answers. On shutdown it stops taking messages,
//! lets in-flight work finish within a grace period, and hands back what is left.
//!
//! Two transports behind the same rules. RabbitMQ: connect, declare the topology, consume with
//! a prefetch equal to the concurrency; when the broker drops the connection the in-flight work
//! is cancelled (its messages are redelivered anyway) and the consumer connects again with a
//! growing pause. The embedded queue: lease messages from the shared file, renew the leases
//! while the work runs, and cancel the work if a lease is lost.

use crate::Shutdown;
use crate::broker::{self, RetryConfig};
use crate::embedded_queue::{EmbeddedQueue, Leased};
use crate::events::{self, Event};
use crate::messaging::{BrokerConfig, Publisher};
use crate::ops::Readiness;
use anyhow::Context;
use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

/// The first pause before connecting again; it doubles up to [`MAX_RECONNECT_PAUSE`].
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(200);
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(10);
/// How often an idle worker looks at the embedded queue again.
const EMBEDDED_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What a handler decided about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or nothing to do): acknowledge.
    Ack,
    /// Failed for a passing reason: try again after a delay, or dead-letter it after the last
    /// attempt.
    Retry(String),
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
    /// Where to publish the next event: with RabbitMQ, the channel the message came on, so
    /// that the acknowledgement follows the confirm.
    pub publisher: Publisher,
    /// Fires when the work must stop (shutdown past the grace period, or the connection lost).
    pub cancel: CancellationToken,
}

/// What a worker does with each event of its queue.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event.
    fn handle(&self, received: Received) -> impl Future<Output = Outcome> + Send;
}

/// What both workers are linked to: the storage service, the broker and its queues, and the
/// retry policy. Flattened into each worker's config, so the variables mean the same in both.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerLinks {
    /// The storage service's gRPC URL.
    #[arg(long, env = "STORAGE_URL", default_value = "http://127.0.0.1:50052")]
    pub storage_url: String,

    /// The broker (or the embedded queue) and the queue names.
    #[command(flatten)]
    pub broker: BrokerConfig,

    #[command(flatten)]
    pub retry: RetryConfig,
}

impl WorkerLinks {
    /// A channel to the storage service (it connects on first use).
    pub fn storage_channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        crate::grpc::client_channel(&self.storage_url)
            .with_context(|| format!("STORAGE_URL `{}` is not a URL", self.storage_url))
    }

    /// How `service` consumes `queue`, `concurrency` messages at once, allowing `grace` for
    /// in-flight work at shutdown.
    pub fn consumer_settings(
        &self,
        service: &'static str,
        queue: &str,
        concurrency: u16,
        grace: Duration,
    ) -> ConsumerSettings {
        ConsumerSettings {
            service,
            broker: self.broker.clone(),
            queue: queue.to_owned(),
            concurrency,
            retry: self.retry.clone(),
            grace,
        }
    }
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

/// A whole worker: the ops endpoint (`/healthz`, `/readyz` true while consuming, `/metrics`) on
/// `ops_listener`, and [`consume`] until `shutdown` fires.
pub async fn serve_worker<H: Handler>(
    settings: ConsumerSettings,
    handler: H,
    ops_listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let readiness = Readiness::new();
    let ops = tokio::spawn(crate::ops::serve(
        ops_listener,
        readiness.clone(),
        shutdown.clone(),
    ));
    let consumed = consume(settings, Arc::new(handler), readiness, shutdown.clone()).await;
    // A consumer that failed takes the ops endpoint down with it.
    shutdown.trigger();
    ops.await.context("ops endpoint task")??;
    consumed
}

/// Consumes until `shutdown` fires: from RabbitMQ when `AMQP_URL` is set, reconnecting
/// whenever the broker goes away; otherwise from the embedded queue.
pub async fn consume<H: Handler>(
    settings: ConsumerSettings,
    handler: Arc<H>,
    readiness: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    settings.broker.validate()?;
    let settings = Arc::new(settings);
    if settings.broker.amqp_url.is_none() {
        return consume_embedded(settings, handler, readiness, shutdown).await;
    }
    let mut pause = FIRST_RECONNECT_PAUSE;
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        let session = Session::open(&settings).await;
        let ended = match session {
            Ok(session) => {
                readiness.set(true);
                pause = FIRST_RECONNECT_PAUSE;
                session.run(&settings, &handler, &shutdown).await
            }
            Err(error) => Err(error),
        };
        readiness.set(false);
        match ended {
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::Lost(reason)) => {
                tracing::warn!(reason, "lost the broker; connecting again");
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    ?pause,
                    "cannot consume; retrying"
                );
            }
        }
        metrics::counter!("worker_broker_reconnects_total", "service" => settings.service)
            .increment(1);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.wait() => return Ok(()),
        }
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
    }
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

/// One connection's worth of consuming.
struct Session {
    connection: lapin::Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Session {
    async fn open(settings: &ConsumerSettings) -> anyhow::Result<Self> {
        let url = settings
            .broker
            .amqp_url
            .as_ref()
            .context("AMQP_URL is not set")?;
        let connection = broker::connect(url.expose(), settings.service)
            .await
            .context("connecting to the broker")?;
        let channel = broker::confirmed_channel(&connection).await?;
        broker::declare_topology(&channel, &settings.broker.queues).await?;
        broker::declare_retry_queues(&channel, &settings.queue, &settings.retry)
            .await
            .context("declaring the retry queues")?;
        channel
            .basic_qos(settings.concurrency, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                settings.queue.as_str().into(),
                format!("{}-{}", settings.service, uuid::Uuid::new_v4()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming {}", settings.queue))?;
        tracing::info!(queue = %settings.queue, concurrency = settings.concurrency, "consuming");
        Ok(Self {
            connection,
            channel,
            consumer,
        })
    }

    async fn run<H: Handler>(
        mut self,
        settings: &Arc<ConsumerSettings>,
        handler: &Arc<H>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<SessionEnd> {
        let in_flight = TaskTracker::new();
        let cancel = CancellationToken::new();
        let end = loop {
            tokio::select! {
                () = shutdown.wait() => break SessionEnd::Shutdown,
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        in_flight.spawn(settle(
                            delivery,
                            self.channel.clone(),
                            settings.clone(),
                            handler.clone(),
                            cancel.child_token(),
                        ));
                    }
                    Some(Err(error)) => break SessionEnd::Lost(error.to_string()),
                    None => break SessionEnd::Lost("the consumer was cancelled".into()),
                }
            }
        };
        in_flight.close();
        match &end {
            SessionEnd::Shutdown => {
                let tag = self.consumer.tag();
                if let Err(error) = self
                    .channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await
                {
                    tracing::warn!(%error, "could not cancel the consumer");
                }
                drain(&in_flight, &cancel, settings.grace).await;
                // Closing returns every unacknowledged message to the queue.
                let _ = self.connection.close(200, "shutting down".into()).await;
            }
            SessionEnd::Lost(_) => {
                cancel.cancel();
                in_flight.wait().await;
            }
        }
        Ok(end)
    }
}

/// What to do with a message once its handler answered.
enum Settlement {
    Ack,
    RetryAfter(Duration),
    DeadLetter(String),
    HandBack,
}

/// Decodes and handles one message's body; a body that is not an event is dead-lettered.
async fn handle_message<H: Handler>(
    body: &[u8],
    content_type: Option<&str>,
    handler: &H,
    service: &'static str,
    received: impl FnOnce(Event) -> Received,
) -> Outcome {
    match events::decode(body, content_type) {
        Ok(event) => {
            record_lag(service, &event);
            handler.handle(received(event)).await
        }
        Err(error) => Outcome::DeadLetter(error.to_string()),
    }
}

/// Turns the handler's outcome into what happens to the message, counting and logging it.
fn settlement(outcome: Outcome, attempt: u32, settings: &ConsumerSettings) -> Settlement {
    let retries_left = attempt < settings.retry.max_attempts;
    let label = match &outcome {
        Outcome::Ack => "acked",
        Outcome::Retry(_) if retries_left => "retried",
        Outcome::Retry(_) | Outcome::DeadLetter(_) => "dead_lettered",
        Outcome::HandBack => "handed_back",
    };
    metrics::counter!("worker_messages_total", "service" => settings.service, "outcome" => label)
        .increment(1);
    match outcome {
        Outcome::Ack => Settlement::Ack,
        Outcome::Retry(reason) if retries_left => {
            let delay = settings.retry.delay_after(attempt);
            tracing::warn!(%reason, attempt, ?delay, "retrying later");
            Settlement::RetryAfter(delay)
        }
        Outcome::Retry(reason) | Outcome::DeadLetter(reason) => {
            tracing::error!(%reason, attempt, "dead-lettering the message");
            Settlement::DeadLetter(reason)
        }
        Outcome::HandBack => Settlement::HandBack,
    }
}

/// Handles one RabbitMQ delivery and settles it by the outcome.
async fn settle<H: Handler>(
    delivery: Delivery,
    channel: Channel,
    settings: Arc<ConsumerSettings>,
    handler: Arc<H>,
    cancel: CancellationToken,
) {
    let attempt = broker::attempt_of(&delivery.properties);
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|value| value.as_str().to_owned());
    let outcome = handle_message(
        &delivery.data,
        content_type.as_deref(),
        handler.as_ref(),
        settings.service,
        |event| Received {
            event,
            attempt,
            last_attempt: attempt >= settings.retry.max_attempts,
            redelivered: delivery.redelivered,
            publisher: Publisher::Amqp(channel.clone()),
            cancel,
        },
    )
    .await;
    let settled = match settlement(outcome, attempt, &settings) {
        Settlement::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
        Settlement::RetryAfter(_) => retry_later(&delivery, &channel, &settings, attempt).await,
        Settlement::DeadLetter(_) => {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                })
                .await
        }
        Settlement::HandBack => delivery.acker.nack(requeue()).await,
    };
    if let Err(error) = settled {
        // The channel is gone: the broker redelivers the message to whoever consumes next.
        tracing::warn!(%error, "could not settle a message; it will be redelivered");
    }
}

/// Consumes the embedded queue until `shutdown` fires: leases up to the concurrency at once,
/// polling while the queue is empty.
async fn consume_embedded<H: Handler>(
    settings: Arc<ConsumerSettings>,
    handler: Arc<H>,
    readiness: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let path = settings.broker.embedded_queue_path();
    let queue = EmbeddedQueue::open(&path)
        .await
        .with_context(|| format!("opening the embedded queue {}", path.display()))?;
    let lease = settings.broker.embedded_queue_lease();
    tracing::info!(queue = %settings.queue, file = %path.display(), concurrency = settings.concurrency, "consuming the embedded queue");
    readiness.set(true);
    let slots = Arc::new(tokio::sync::Semaphore::new(usize::from(
        settings.concurrency.max(1),
    )));
    let in_flight = TaskTracker::new();
    let cancel = CancellationToken::new();
    let mut pause = EMBEDDED_POLL_INTERVAL;
    loop {
        let slot = tokio::select! {
            () = shutdown.wait() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        match queue.lease(&settings.queue, lease).await {
            Ok(Some(leased)) => {
                pause = EMBEDDED_POLL_INTERVAL;
                let (queue, settings, handler) = (queue.clone(), settings.clone(), handler.clone());
                let cancel = cancel.child_token();
                in_flight.spawn(async move {
                    settle_leased(leased, queue, settings, handler, cancel).await;
                    drop(slot);
                });
                continue;
            }
            Ok(None) => pause = EMBEDDED_POLL_INTERVAL,
            Err(error) => {
                tracing::warn!(%error, ?pause, "cannot read the embedded queue; retrying");
                pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
            }
        }
        drop(slot);
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    readiness.set(false);
    in_flight.close();
    drain(&in_flight, &cancel, settings.grace).await;
    Ok(())
}

/// Lets in-flight work finish within `grace`, then cancels what is left (its handlers hand
/// their messages back) and waits for it.
async fn drain(in_flight: &TaskTracker, cancel: &CancellationToken, grace: Duration) {
    if tokio::time::timeout(grace, in_flight.wait()).await.is_err() {
        tracing::warn!(?grace, "grace period over; handing back in-flight work");
        cancel.cancel();
        in_flight.wait().await;
    }
}

/// Handles one leased message, renewing its lease meanwhile, and settles it by the outcome.
async fn settle_leased<H: Handler>(
    leased: Leased,
    queue: EmbeddedQueue,
    settings: Arc<ConsumerSettings>,
    handler: Arc<H>,
    cancel: CancellationToken,
) {
    let lease = settings.broker.embedded_queue_lease();
    // Stops renewing when dropped, so even a handler that panics lets its lease run out and the
    // message go to another worker.
    let renewing = AbortOnDropHandle::new(tokio::spawn(renew_until_done(
        queue.clone(),
        leased.clone(),
        lease,
        cancel.clone(),
    )));
    let outcome = handle_message(
        &leased.body,
        None,
        handler.as_ref(),
        settings.service,
        |event| Received {
            event,
            attempt: leased.attempt,
            last_attempt: leased.attempt >= settings.retry.max_attempts,
            redelivered: leased.deliveries > 1,
            publisher: Publisher::Embedded(queue.clone()),
            cancel,
        },
    )
    .await;
    drop(renewing);
    let settled = match settlement(outcome, leased.attempt, &settings) {
        Settlement::Ack => queue.ack(&leased).await,
        Settlement::RetryAfter(delay) => queue.retry_later(&leased, delay).await,
        Settlement::DeadLetter(reason) => queue.dead_letter(&leased, &reason).await,
        Settlement::HandBack => queue.release(&leased).await,
    };
    match settled {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "the message's lease ran out before it was settled; it will be delivered again"
        ),
        Err(error) => {
            tracing::warn!(%error, "could not settle a message; it will be delivered again when its lease runs out")
        }
    }
}

/// Keeps a lease alive while its work runs; cancels the work when the lease is lost.
async fn renew_until_done(
    queue: EmbeddedQueue,
    leased: Leased,
    lease: Duration,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval(lease / 3);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match queue.renew(&leased, lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("lost the lease on a message (another worker has it now); stopping");
                cancel.cancel();
                return;
            }
            Err(error) => tracing::warn!(%error, "could not renew a lease; trying again"),
        }
    }
}

/// Republishes a message to its delay queue and acknowledges the original; puts it back if the
/// delay queue does not take it.
async fn retry_later(
    delivery: &Delivery,
    channel: &Channel,
    settings: &ConsumerSettings,
    attempt: u32,
) -> lapin::Result<bool> {
    let published = broker::publish_retry(
        channel,
        &settings.queue,
        &settings.retry,
        attempt,
        &delivery.data,
        &delivery.properties,
    )
    .await;
    match published {
        Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
        Err(error) => {
            tracing::warn!(%error, "could not schedule a retry; returning the message to its queue");
            delivery.acker.nack(requeue()).await
        }
    }
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
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
        metrics::histogram!("worker_queue_lag_seconds", "service" => service)
            .record(lag.as_secs_f64());
    }
}
