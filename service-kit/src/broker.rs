//! RabbitMQ plumbing the gateway, converter and notifier share: the queue topology every one of
//! them declares (idempotently) at start-up, publishing one event durably (persistent,
//! mandatory, so an unroutable message is an error and not a silent drop, and confirmed by the
//! broker before the caller goes on), and retrying a message later through delay queues.
//!
//! Retries: a consumer that fails for a passing reason republishes the message, with its
//! attempt number in the `x-attempt` header, to `{queue}.retry.{ms}ms`: a queue without
//! consumers whose messages expire after that delay and are dead-lettered back to `{queue}`.
//! Each delay has its own queue, because a queue only expires messages at its head.

use crate::events;
use crate::queues::QueueConfig;
use clap::Args;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use proto::events::v1::{CONTENT_TYPE, Event, MESSAGE_TYPE};
use std::time::Duration;

/// The header that numbers a message's attempts; absent on the first.
pub const ATTEMPT_HEADER: &str = "x-attempt";

/// How often, and how patiently, a consumer retries a message that failed for a passing
/// reason before it gives up and dead-letters it.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per message (the first one included) before it goes to the dead-letter queue.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_attempts: u32,

    /// Delay before the first retry, in milliseconds; each later retry waits four times longer.
    #[arg(long, env = "RETRY_BASE_DELAY_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_base_delay_ms: u64,

    /// The longest delay between two attempts, in milliseconds.
    #[arg(long, env = "RETRY_MAX_DELAY_MS", default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_base_delay_ms: 5_000,
            retry_max_delay_ms: 600_000,
        }
    }
}

impl RetryConfig {
    /// How long to wait after failed attempt `attempt` (1-based) before the next one.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 4u64.saturating_pow(attempt.saturating_sub(1));
        Duration::from_millis(
            self.retry_base_delay_ms
                .saturating_mul(factor)
                .min(self.retry_max_delay_ms),
        )
    }

    /// Every distinct delay a message of `queue` may wait, with the queue that holds it.
    pub fn retry_queues(&self, queue: &str) -> Vec<(Duration, String)> {
        let mut queues: Vec<(Duration, String)> = Vec::new();
        for attempt in 1..self.max_attempts {
            let delay = self.delay_after(attempt);
            if queues.last().is_none_or(|(last, _)| *last != delay) {
                queues.push((delay, retry_queue(queue, delay)));
            }
        }
        queues
    }
}

/// The delay queue that holds messages of `queue` for `delay`.
pub fn retry_queue(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}ms", delay.as_millis())
}

/// Why a publish did not reach a queue.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connection or channel failed.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker refused to take responsibility for the message.
    #[error("the broker did not accept the message ({0})")]
    NotAccepted(&'static str),
    /// The embedded queue's file could not take the message.
    #[error(transparent)]
    Embedded(#[from] crate::embedded_queue::QueueError),
}

/// Connects to the broker at `url`, naming the connection after `service` (it shows in the
/// management UI).
pub async fn connect(url: &str, service: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(service.into());
    Connection::connect(url, properties).await
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
/// broker restart) whose rejected messages go to a `{queue}.dead` queue. Declaring what exists
/// with the same arguments changes nothing, so every service can call this at start-up.
pub async fn declare_topology(channel: &Channel, queues: &QueueConfig) -> Result<(), lapin::Error> {
    for queue in [&queues.video_queue, &queues.mp3_queue] {
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
    Ok(())
}

/// Declares the delay queues of `queue` for `retry` (see the module docs). Quorum queues with
/// at-least-once dead-lettering, so a message that waits out its delay cannot be lost on its
/// way back.
pub async fn declare_retry_queues(
    channel: &Channel,
    queue: &str,
    retry: &RetryConfig,
) -> Result<(), lapin::Error> {
    for (delay, name) in retry.retry_queues(queue) {
        let mut arguments = FieldTable::default();
        let millis = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
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
            .queue_declare(name.as_str().into(), durable(), quorum(arguments))
            .await?;
    }
    Ok(())
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

/// Republishes a message (its body and identity unchanged) to the delay queue for its
/// `attempt`, numbered `attempt + 1`, and waits for the broker's confirm.
pub async fn publish_retry(
    channel: &Channel,
    queue: &str,
    retry: &RetryConfig,
    attempt: u32,
    body: &[u8],
    original: &BasicProperties,
) -> Result<(), PublishError> {
    let mut headers = original.headers().clone().unwrap_or_default();
    headers.insert(
        ShortString::from(ATTEMPT_HEADER),
        AMQPValue::LongUInt(attempt + 1),
    );
    let mut properties = persistent_properties().with_headers(headers);
    if let Some(id) = original.message_id() {
        properties = properties.with_message_id(id.clone());
    }
    let delay_queue = retry_queue(queue, retry.delay_after(attempt));
    publish_confirmed(channel, &delay_queue, body, properties).await
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
    publish_confirmed(channel, queue, &events::encode(event), properties).await
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
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
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
        Confirmation::Ack(Some(_)) => Err(PublishError::NotAccepted("no such queue")),
        Confirmation::Nack(_) => Err(PublishError::NotAccepted("negative acknowledgement")),
        Confirmation::NotRequested => Err(PublishError::NotAccepted("confirms are off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(max_attempts: u32, base: u64, max: u64) -> RetryConfig {
        RetryConfig {
            max_attempts,
            retry_base_delay_ms: base,
            retry_max_delay_ms: max,
        }
    }

    #[test]
    fn delays_grow_fourfold_up_to_the_cap() {
        let config = retry(6, 1_000, 30_000);
        let delays: Vec<u64> = (1..6)
            .map(|attempt| config.delay_after(attempt).as_millis() as u64)
            .collect();
        assert_eq!(delays, [1_000, 4_000, 16_000, 30_000, 30_000]);
    }

    #[test]
    fn each_distinct_delay_gets_one_queue_named_after_it() {
        let queues = retry(6, 1_000, 30_000).retry_queues("video");
        let names: Vec<&str> = queues.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "video.retry.1000ms",
                "video.retry.4000ms",
                "video.retry.16000ms",
                "video.retry.30000ms"
            ]
        );
        assert!(retry(1, 1_000, 30_000).retry_queues("video").is_empty());
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
