//! RabbitMQ plumbing the gateway, converter and notifier share: the queue topology every one of
//! them declares (idempotently) at start-up, and publishing one event durably: persistent,
//! mandatory (an unroutable message is an error, not a silent drop) and confirmed by the
//! broker before the caller goes on.

use crate::events;
use crate::queues::QueueConfig;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use proto::events::v1::{CONTENT_TYPE, Event, MESSAGE_TYPE};

/// Why a publish did not reach a queue.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connection or channel failed.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker refused to take responsibility for the message.
    #[error("the broker did not accept the message ({0})")]
    NotAccepted(&'static str),
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
    let properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_type(MESSAGE_TYPE.into())
        .with_message_id(event.event_id.as_str().into())
        .with_delivery_mode(2);
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &events::encode(event),
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
