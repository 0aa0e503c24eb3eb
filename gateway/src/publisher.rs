//! Publishing "video uploaded" events, to RabbitMQ or to the embedded queue (see
//! [`service_kit::messaging`]). With RabbitMQ, one confirmed channel is shared by every request
//! (the broker confirms in order, so requests only wait for their own message); when the broker
//! drops it, the next publish connects again, so the gateway recovers by itself after a broker
//! restart.

use anyhow::Context;
use lapin::{Channel, Connection};
use proto::events::v1::Event;
use service_kit::Secret;
use service_kit::broker::{self, PublishError};
use service_kit::embedded_queue::EmbeddedQueue;
use service_kit::messaging::{BrokerConfig, Publisher};
use service_kit::queues::QueueConfig;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};

/// How long connecting, or a publish and its confirm, may take before the broker counts as
/// unavailable.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's link to the video queue.
#[derive(Debug)]
pub struct JobPublisher {
    queues: QueueConfig,
    target: Target,
}

#[derive(Debug)]
enum Target {
    Amqp {
        url: Secret,
        // Boxed: a connection is large, and the embedded variant has none.
        link: Box<Mutex<Option<(Connection, Channel)>>>,
    },
    Embedded {
        path: PathBuf,
        queue: OnceCell<EmbeddedQueue>,
    },
}

impl JobPublisher {
    /// A publisher for the broker `config` names; it connects (or opens the queue file) on
    /// first use.
    pub fn new(config: &BrokerConfig) -> Self {
        let target = match &config.amqp_url {
            Some(url) => Target::Amqp {
                url: url.clone(),
                link: Box::new(Mutex::new(None)),
            },
            None => Target::Embedded {
                path: config.embedded_queue_path(),
                queue: OnceCell::new(),
            },
        };
        Self {
            queues: config.queues.clone(),
            target,
        }
    }

    /// Somewhere to publish, connecting (and declaring the topology) if needed.
    async fn publisher(&self) -> anyhow::Result<Publisher> {
        match &self.target {
            Target::Amqp { url, link } => amqp_channel(url, &self.queues, link)
                .await
                .map(Publisher::Amqp),
            Target::Embedded { path, queue } => {
                let queue = queue
                    .get_or_try_init(|| EmbeddedQueue::open(path))
                    .await
                    .with_context(|| format!("opening the embedded queue {}", path.display()))?;
                Ok(Publisher::Embedded(queue.clone()))
            }
        }
    }

    /// Whether the queue can be reached now (connecting if needed).
    pub async fn check(&self) -> anyhow::Result<()> {
        self.publisher().await.map(|_| ())
    }

    /// Puts `event` on the video queue and waits until it is durably queued.
    pub async fn publish_video(&self, event: &Event) -> anyhow::Result<()> {
        let publisher = self.publisher().await?;
        let published = tokio::time::timeout(
            BROKER_TIMEOUT,
            publisher.publish(&self.queues.video_queue, event),
        )
        .await;
        let forget_channel = || async {
            if let Target::Amqp { link, .. } = &self.target {
                link.lock().await.take();
            }
        };
        match published {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                if matches!(error, PublishError::Broker(_)) {
                    // The channel is broken: drop it so the next publish starts afresh.
                    forget_channel().await;
                }
                Err(error).context("publishing to the video queue")
            }
            Err(_) => {
                forget_channel().await;
                anyhow::bail!("the queue did not confirm within {BROKER_TIMEOUT:?}")
            }
        }
    }
}

/// The shared confirmed channel, connecting if there is none.
async fn amqp_channel(
    url: &Secret,
    queues: &QueueConfig,
    link: &Mutex<Option<(Connection, Channel)>>,
) -> anyhow::Result<Channel> {
    let mut link = link.lock().await;
    if let Some((connection, channel)) = link.as_ref()
        && connection.status().connected()
        && channel.status().connected()
    {
        return Ok(channel.clone());
    }
    *link = None;
    let connected = tokio::time::timeout(BROKER_TIMEOUT, async {
        let connection = broker::connect(url.expose(), "gateway").await?;
        let channel = broker::confirmed_channel(&connection).await?;
        broker::declare_topology(&channel, queues).await?;
        Ok::<_, lapin::Error>((connection, channel))
    })
    .await
    .context("connecting to the broker timed out")?
    .context("connecting to the broker")?;
    tracing::info!("connected to the broker");
    let channel = connected.1.clone();
    *link = Some(connected);
    Ok(channel)
}
