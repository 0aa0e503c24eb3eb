//! The consuming half of a worker, written once for the converter and the notifier: connect,
//! declare the topology, consume with a prefetch equal to the concurrency, hand each event to a
//! [`Handler`] on its own task, and settle the message by what the handler answers. When the
//! broker drops the connection the in-flight work is cancelled (its messages are redelivered
//! anyway) and the consumer connects again with a growing pause; on shutdown it stops
//! consuming, lets in-flight work finish within a grace period, and hands back what is left.

use crate::broker::{self, RetryConfig};
use crate::events::{self, Event};
use crate::ops::Readiness;
use crate::queues::QueueConfig;
use crate::{Secret, Shutdown};
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
use tokio_util::task::TaskTracker;

/// The first pause before connecting again; it doubles up to [`MAX_RECONNECT_PAUSE`].
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(200);
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(10);

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
    /// Whether the broker delivered this message before (its consumer went away).
    pub redelivered: bool,
    /// The channel the message came on: publish the next event on it, so that the
    /// acknowledgement follows the confirm.
    pub channel: Channel,
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

    /// The RabbitMQ URL (it may hold a password, so it never prints).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: Secret,

    #[command(flatten)]
    pub queues: QueueConfig,

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
            url: self.amqp_url.clone(),
            queues: self.queues.clone(),
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
    /// The broker's URL.
    pub url: Secret,
    /// The queue names (all of them are declared).
    pub queues: QueueConfig,
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

/// Consumes until `shutdown` fires, reconnecting whenever the broker goes away.
pub async fn consume<H: Handler>(
    settings: ConsumerSettings,
    handler: Arc<H>,
    readiness: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
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
        let connection = broker::connect(settings.url.expose(), settings.service)
            .await
            .context("connecting to the broker")?;
        let channel = broker::confirmed_channel(&connection).await?;
        broker::declare_topology(&channel, &settings.queues).await?;
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
                if tokio::time::timeout(settings.grace, in_flight.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(grace = ?settings.grace, "grace period over; handing back in-flight work");
                    cancel.cancel();
                    in_flight.wait().await;
                }
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

/// Handles one delivery and settles it by the outcome.
async fn settle<H: Handler>(
    delivery: Delivery,
    channel: Channel,
    settings: Arc<ConsumerSettings>,
    handler: Arc<H>,
    cancel: CancellationToken,
) {
    let service = settings.service;
    let attempt = broker::attempt_of(&delivery.properties);
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|value| value.as_str().to_owned());
    let outcome = match events::decode(&delivery.data, content_type.as_deref()) {
        Ok(event) => {
            record_lag(service, &event);
            let received = Received {
                event,
                attempt,
                last_attempt: attempt >= settings.retry.max_attempts,
                redelivered: delivery.redelivered,
                channel: channel.clone(),
                cancel,
            };
            handler.handle(received).await
        }
        Err(error) => Outcome::DeadLetter(error.to_string()),
    };
    let label = match &outcome {
        Outcome::Ack => "acked",
        Outcome::Retry(_) if attempt < settings.retry.max_attempts => "retried",
        Outcome::Retry(_) | Outcome::DeadLetter(_) => "dead_lettered",
        Outcome::HandBack => "handed_back",
    };
    metrics::counter!("worker_messages_total", "service" => service, "outcome" => label)
        .increment(1);
    let settled = match outcome {
        Outcome::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
        Outcome::Retry(reason) if attempt < settings.retry.max_attempts => {
            let delay = settings.retry.delay_after(attempt);
            tracing::warn!(%reason, attempt, ?delay, "retrying later");
            retry_later(&delivery, &channel, &settings, attempt).await
        }
        Outcome::Retry(reason) | Outcome::DeadLetter(reason) => {
            tracing::error!(%reason, attempt, "dead-lettering the message");
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                })
                .await
        }
        Outcome::HandBack => delivery.acker.nack(requeue()).await,
    };
    if let Err(error) = settled {
        // The channel is gone: the broker redelivers the message to whoever consumes next.
        tracing::warn!(%error, "could not settle a message; it will be redelivered");
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
