//! Which queue carries the events: RabbitMQ when `AMQP_URL` is set, otherwise the embedded
//! queue file in `DATA_DIR` (see [`crate::embedded_queue`]). The gateway, converter and notifier
//! flatten [`BrokerConfig`] into their configs, so one variable switches all three, and publish
//! through [`Publisher`] without caring which one it is.

use crate::Secret;
use crate::broker::{self, PublishError};
use crate::embedded_queue::{self, EmbeddedQueue};
use crate::events;
use crate::queues::QueueConfig;
use clap::Args;
use proto::events::v1::Event;
use std::path::PathBuf;
use std::time::Duration;

/// Where the queues live, and their names.
#[derive(Debug, Clone, Args)]
pub struct BrokerConfig {
    /// RabbitMQ URL (it may hold a password, so it never prints). Unset: the embedded queue in
    /// DATA_DIR, which every service on this machine shares.
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: Option<Secret>,

    /// Root of local data (the embedded queue is `DATA_DIR/queue.sqlite`).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// How long a worker holds an embedded-queue message without renewing it, in seconds: after
    /// a crash, its messages are delivered again this long after its last renewal.
    #[arg(long, env = "EMBEDDED_QUEUE_LEASE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub embedded_queue_lease_seconds: u64,

    #[command(flatten)]
    pub queues: QueueConfig,
}

impl BrokerConfig {
    /// The embedded queue's file.
    pub fn embedded_queue_path(&self) -> PathBuf {
        self.data_dir.join(embedded_queue::FILE_NAME)
    }

    /// The embedded queue's lease.
    pub fn embedded_queue_lease(&self) -> Duration {
        Duration::from_secs(self.embedded_queue_lease_seconds)
    }

    /// Checks what clap cannot, naming the variable at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.amqp_url
            && !(url.expose().starts_with("amqp://") || url.expose().starts_with("amqps://"))
        {
            anyhow::bail!("AMQP_URL must start with amqp:// or amqps://");
        }
        Ok(())
    }

    /// What the logs and the start-up banner say about where events go (no password).
    pub fn describe(&self) -> String {
        match &self.amqp_url {
            Some(_) => "RabbitMQ (AMQP_URL)".to_owned(),
            None => format!("embedded queue {}", self.embedded_queue_path().display()),
        }
    }
}

/// Where a worker publishes the next event: the confirmed channel its message came on, or the
/// embedded queue.
#[derive(Debug, Clone)]
pub enum Publisher {
    /// A RabbitMQ channel with publisher confirms.
    Amqp(lapin::Channel),
    /// The embedded queue.
    Embedded(EmbeddedQueue),
}

impl Publisher {
    /// Puts `event` on `queue`; `Ok` means it is durably queued.
    pub async fn publish(&self, queue: &str, event: &Event) -> Result<(), PublishError> {
        match self {
            Self::Amqp(channel) => broker::publish(channel, queue, event).await,
            Self::Embedded(embedded) => Ok(embedded.publish(queue, &events::encode(event)).await?),
        }
    }
}
