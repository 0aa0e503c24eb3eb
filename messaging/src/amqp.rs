//! RabbitMQ, one of the two transports: the queue topology every service declares
//! (idempotently) at start-up, publishing one event durably (persistent, mandatory, so an
//! unroutable message is an error and not a silent drop, and confirmed by the broker before the
//! caller goes on), retrying a message later through delay queues, and the consumer's session.
//!
//! Retries: a consumer that fails for a passing reason republishes the message, with its
//! attempt number in the `x-attempt` header and its wait as its own expiration, to
//! `{queue}.retry.{ms}ms`: a queue without consumers that holds messages for at most that long
//! (a step of the retry policy, with its jitter) and dead-letters them back to `{queue}`. Each
//! step has its own queue, because a queue only expires messages at its head; a wait longer
//! than its step (a receiver asked for a pause) goes to a `{queue}.retry.hold.{n}s` queue of the
//! next power of two seconds, declared when first needed.

use crate::config::{QueueConfig, RetryConfig};
use crate::consumer::{self, Delivery, Handler, Settlement, Worker};
use crate::events;
use crate::publisher::PublishError;
use anyhow::Context;
use futures::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use proto::events::v1::{CONTENT_TYPE, Event, MESSAGE_TYPE};
use service_kit::Shutdown;
use service_kit::ops::Readiness;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The first pause before connecting again; it doubles up to [`MAX_RECONNECT_PAUSE`].
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(200);
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(10);
/// How long opening a consuming session (connect, declare, consume) may take. A broker can
/// accept the TCP connection and then never answer (one out of file handles does); without a
/// limit the worker would wait on it for ever, neither consuming nor trying again.
pub const SESSION_OPEN_WITHIN: Duration = Duration::from_secs(20);

/// The header that numbers a message's attempts; absent on the first.
pub const ATTEMPT_HEADER: &str = "x-attempt";

/// Connects to the broker at `url` (over TLS for `amqps://`, trusting `ca_file` besides the
/// system's roots), naming the connection after `service` (it shows in the management UI).
pub async fn connect(
    url: &str,
    ca_file: Option<&std::path::Path>,
    service: &str,
) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(service.into());
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: match ca_file {
            Some(path) => Some(tokio::fs::read_to_string(path).await?),
            None => None,
        },
    };
    Connection::connect_with_config(url, properties, tls, lapin::runtime::default_runtime()?).await
}

/// A channel with publisher confirms on.
pub async fn confirmed_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Declares every queue of `queues`: durable quorum queues (replicated, and they survive a
/// broker restart) whose rejected messages go to a `{queue}.dead` queue; and the outcome
/// exchange, a durable topic exchange bound to each channel's queue for every `job.*` outcome.
/// Declaring what exists with the same arguments changes nothing, so every service can call
/// this at start-up.
pub async fn declare_topology(channel: &Channel, queues: &QueueConfig) -> Result<(), lapin::Error> {
    for queue in queues.queues() {
        let dead = QueueConfig::dead_letter_queue(queue);
        channel
            .queue_declare(
                dead.as_str().into(),
                durable(),
                quorum(FieldTable::default()),
            )
            .await?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dead.as_str().into()),
        );
        channel
            .queue_declare(queue.as_str().into(), durable(), quorum(arguments))
            .await?;
    }
    channel
        .exchange_declare(
            queues.outcome_exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for queue in queues.outcome_queues() {
        channel
            .queue_bind(
                queue.as_str().into(),
                queues.outcome_exchange.as_str().into(),
                OUTCOME_BINDING.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// The binding of each channel's queue to the outcome exchange: every conversion outcome.
const OUTCOME_BINDING: &str = "job.*";

/// Declares the delay queues of `queue` for `retry` (see the module docs). Quorum queues with
/// at-least-once dead-lettering, so a message that waits out its delay cannot be lost on its
/// way back.
pub async fn declare_retry_queues(
    channel: &Channel,
    queue: &str,
    retry: &RetryConfig,
) -> Result<(), lapin::Error> {
    for (hold, name) in retry.retry_queues(queue) {
        declare_delay_queue(channel, queue, &name, hold).await?;
    }
    Ok(())
}

/// Declares `name`, a delay queue that holds messages of `queue` for at most `hold` and then
/// dead-letters them back to it.
async fn declare_delay_queue(
    channel: &Channel,
    queue: &str,
    name: &str,
    hold: Duration,
) -> Result<(), lapin::Error> {
    let mut arguments = FieldTable::default();
    let millis = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
    arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(millis));
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
    arguments.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(name.into(), durable(), quorum(arguments))
        .await?;
    Ok(())
}

/// Where a retry that is to wait `delay` goes: the schedule's delay queue for it when `delay` is
/// within that queue's band (its step with its jitter), so it waits beside messages that expire
/// about when it does; otherwise (a receiver asked for a longer pause) a queue that holds
/// messages for the next power of two seconds, declared when first needed, in which no message
/// waits behind another for more than twice its own delay. Returns the queue, how long it
/// holds a message, and whether it is such a hold (which a test that causes one names, to
/// delete it).
pub fn delay_queue_for(
    queue: &str,
    retry: &RetryConfig,
    delay: Duration,
) -> (String, Duration, bool) {
    let jitter = f64::from(retry.jitter_percent) / 100.0;
    // The queue holds a step with all its jitter; the shortest wait of that step is this share
    // of it.
    let band_floor = (1.0 - jitter) / (1.0 + jitter);
    let scheduled = retry
        .retry_queues(queue)
        .into_iter()
        .find(|(hold, _)| *hold >= delay && delay >= hold.mul_f64(band_floor));
    match scheduled {
        Some((hold, name)) => (name, hold, false),
        None => {
            let seconds = delay.as_secs_f64().ceil().max(1.0) as u64;
            let hold = Duration::from_secs(seconds.next_power_of_two());
            (
                format!("{queue}.retry.hold.{}s", hold.as_secs()),
                hold,
                true,
            )
        }
    }
}

/// Which attempt a message with these properties is (1 for a first delivery).
pub fn attempt_of(properties: &BasicProperties) -> u32 {
    let header = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(ATTEMPT_HEADER).cloned());
    match header {
        Some(AMQPValue::LongUInt(n)) => n.max(1),
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(1).max(1),
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(1).max(1),
        Some(AMQPValue::ShortUInt(n)) => u32::from(n).max(1),
        _ => 1,
    }
}

/// Which attempt failed, and how long the message is to wait before the next.
#[derive(Debug, Clone, Copy)]
pub struct RetryAt {
    /// The failed attempt (1-based).
    pub attempt: u32,
    /// The wait: the attempt's delay, moved by its jitter, or longer when asked.
    pub delay: Duration,
}

/// Republishes a message (its body and identity unchanged), numbered `attempt + 1`, to a delay
/// queue ([`delay_queue_for`]) with `delay` as its own expiration, and waits for the broker's
/// confirm. A queue expires messages at its head only, so a message may wait behind one that
/// expires later in the same queue: a wait is never shorter than asked, and at most that
/// queue's hold.
pub async fn publish_retry(
    channel: &Channel,
    queue: &str,
    retry: &RetryConfig,
    at: RetryAt,
    body: &[u8],
    original: &BasicProperties,
) -> Result<(), PublishError> {
    let RetryAt { attempt, delay } = at;
    let mut headers = original.headers().clone().unwrap_or_default();
    headers.insert(
        ShortString::from(ATTEMPT_HEADER),
        AMQPValue::LongUInt(attempt + 1),
    );
    let mut properties = persistent_properties().with_headers(headers);
    if let Some(id) = original.message_id() {
        properties = properties.with_message_id(id.clone());
    }
    let (delay_queue, hold, extra) = delay_queue_for(queue, retry, delay);
    if extra {
        declare_delay_queue(channel, queue, &delay_queue, hold).await?;
    }
    let expiration = delay.as_millis().to_string();
    let properties = properties.with_expiration(expiration.as_str().into());
    publish_confirmed(channel, "", &delay_queue, body, properties).await
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn quorum(mut arguments: FieldTable) -> FieldTable {
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments
}

/// Publishes `event` to `queue` through the default exchange and waits for the broker's
/// confirm. `Ok` means the broker has the message on disk in the queue.
pub async fn publish(channel: &Channel, queue: &str, event: &Event) -> Result<(), PublishError> {
    let properties = persistent_properties().with_message_id(event.event_id.as_str().into());
    publish_confirmed(channel, "", queue, &events::encode(event), properties).await
}

/// Publishes `event` to `exchange` with `routing_key` and waits for the broker's confirm: `Ok`
/// means every queue it was routed to has it on disk (and, being mandatory, that it was
/// routed to at least one).
pub async fn publish_routed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    event: &Event,
) -> Result<(), PublishError> {
    let properties = persistent_properties().with_message_id(event.event_id.as_str().into());
    publish_confirmed(
        channel,
        exchange,
        routing_key,
        &events::encode(event),
        properties,
    )
    .await
}

/// The properties of every event message (see `events.proto`).
fn persistent_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_type(MESSAGE_TYPE.into())
        .with_delivery_mode(2)
}

async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?
        .await?;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::NotAccepted("no queue took it")),
        Confirmation::Nack(_) => Err(PublishError::NotAccepted("negative acknowledgement")),
        Confirmation::NotRequested => Err(PublishError::NotAccepted("confirms are off")),
    }
}

/// Consumes `worker`'s queue until `shutdown` fires, connecting again (with a growing pause)
/// whenever the broker goes away.
pub(crate) async fn consume<H: Handler>(
    worker: Arc<Worker<H>>,
    readiness: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut pause = FIRST_RECONNECT_PAUSE;
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        let opened = tokio::select! {
            opened = tokio::time::timeout(SESSION_OPEN_WITHIN, Session::open(&worker)) => {
                opened.unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "the broker opened no session within {SESSION_OPEN_WITHIN:?}"
                    ))
                })
            }
            () = shutdown.wait() => return Ok(()),
        };
        let ended = match opened {
            Ok(session) => {
                readiness.set(true);
                pause = FIRST_RECONNECT_PAUSE;
                session.run(&worker, &shutdown).await
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
        metrics::counter!(crate::meters::BROKER_RECONNECTS, "service" => worker.settings.service)
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
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Session {
    async fn open<H: Handler>(worker: &Worker<H>) -> anyhow::Result<Self> {
        let settings = &worker.settings;
        let url = settings
            .broker
            .amqp_url
            .as_ref()
            .context("AMQP_URL is not set")?;
        let ca_file = settings.broker.amqp_ca_file.as_deref();
        let connection = connect(url.expose(), ca_file, settings.service)
            .await
            .context("connecting to the broker")?;
        let channel = confirmed_channel(&connection).await?;
        declare_topology(&channel, &settings.broker.queues).await?;
        declare_retry_queues(&channel, &settings.queue, &settings.retry)
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
        worker: &Arc<Worker<H>>,
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
                            worker.clone(),
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
                consumer::drain(&in_flight, &cancel, worker.settings.grace).await;
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
    delivery: AmqpDelivery,
    channel: Channel,
    worker: Arc<Worker<H>>,
    cancel: CancellationToken,
) {
    let attempt = attempt_of(&delivery.properties);
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|value| value.as_str().to_owned());
    let settlement = worker
        .handle(Delivery {
            body: &delivery.data,
            content_type: content_type.as_deref(),
            attempt,
            redelivered: delivery.redelivered,
            cancel,
        })
        .await;
    let settled = match settlement {
        Settlement::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
        Settlement::RetryAfter(delay) => {
            retry_later(&delivery, &channel, &worker, attempt, delay).await
        }
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

/// Republishes a message to its delay queue and acknowledges the original; puts it back if the
/// delay queue does not take it.
async fn retry_later<H: Handler>(
    delivery: &AmqpDelivery,
    channel: &Channel,
    worker: &Worker<H>,
    attempt: u32,
    delay: Duration,
) -> lapin::Result<bool> {
    let settings = &worker.settings;
    let published = publish_retry(
        channel,
        &settings.queue,
        &settings.retry,
        RetryAt { attempt, delay },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_waits_in_its_steps_queue_or_in_a_power_of_two_hold() {
        let seconds = Duration::from_secs;
        let retry = RetryConfig::on_schedule(vec![seconds(5), seconds(300)], 20);
        let pick = |delay| delay_queue_for("webhooks", &retry, delay);
        assert_eq!(
            pick(seconds(5)),
            ("webhooks.retry.6000ms".into(), seconds(6), false)
        );
        assert_eq!(
            pick(Duration::from_millis(4100)),
            ("webhooks.retry.6000ms".into(), seconds(6), false)
        );
        assert_eq!(
            pick(seconds(290)),
            ("webhooks.retry.360000ms".into(), seconds(360), false)
        );
        // Longer than its step allows (a Retry-After, a slow-down), or far shorter than the
        // queue that would hold it: a hold of its own.
        assert_eq!(
            pick(seconds(60)),
            ("webhooks.retry.hold.64s".into(), seconds(64), true)
        );
        assert_eq!(
            pick(seconds(3)),
            ("webhooks.retry.hold.4s".into(), seconds(4), true)
        );
        assert_eq!(
            pick(seconds(36_000)),
            ("webhooks.retry.hold.65536s".into(), seconds(65_536), true)
        );
        let plain = RetryConfig::default();
        let (name, _, extra) = delay_queue_for("video", &plain, plain.delay_after(2));
        assert_eq!((name.as_str(), extra), ("video.retry.20000ms", false));
    }

    #[test]
    fn the_attempt_header_counts_from_one() {
        assert_eq!(attempt_of(&BasicProperties::default()), 1);
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(3));
        assert_eq!(
            attempt_of(&BasicProperties::default().with_headers(headers)),
            3
        );
    }
}
