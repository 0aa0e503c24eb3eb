//! Publishing events, written once for every service that publishes: the gateway (an upload
//! to convert), the converters (an outcome to announce). `Ok` means the event is durably
//! queued: confirmed by RabbitMQ (persistent, mandatory, so an unroutable message is an error,
//! not a silent drop), or written to the embedded queue file.
//!
//! With RabbitMQ one confirmed channel is shared by every caller (the broker confirms in order,
//! so a caller only waits for its own message). When the broker drops it, or a publish fails or
//! times out, the channel is forgotten and the next publish connects again, so a publisher
//! recovers by itself after a broker restart.

use crate::amqp;
use crate::config::{BrokerConfig, QueueConfig};
use crate::embedded::{EmbeddedQueue, QueueError};
use crate::events;
use lapin::{Channel, Connection};
use proto::events::v1::Event;
use service_kit::Secret;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};

/// How long connecting, or a publish and its confirm, may take before the broker counts as
/// unavailable.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an event was not queued.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connection or channel failed.
    #[error("broker error")]
    Broker(#[from] lapin::Error),
    /// The broker refused to take responsibility for the message.
    #[error("the broker did not accept the message ({0})")]
    NotAccepted(&'static str),
    /// The broker did not answer in time.
    #[error("the broker did not answer within {0:?}")]
    TimedOut(Duration),
    /// The embedded queue's file could not take the message.
    #[error(transparent)]
    Embedded(#[from] QueueError),
}

/// A service's link to the queues (cheap to clone: clones share the link).
#[derive(Debug, Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Names the connection in the broker's management UI.
    service: &'static str,
    queues: QueueConfig,
    target: Target,
}

#[derive(Debug)]
enum Target {
    Amqp {
        url: Secret,
        /// AMQP_CA_FILE.
        ca_file: Option<PathBuf>,
        // Boxed: a connection is large, and the embedded variant has none.
        link: Box<Mutex<Option<(Connection, Channel)>>>,
    },
    Embedded {
        path: PathBuf,
        queue: OnceCell<EmbeddedQueue>,
    },
}

impl Publisher {
    /// A publisher to the queues `config` names, for `service`; it connects (or opens the queue
    /// file) on first use, so a service can start before its broker.
    pub fn new(config: &BrokerConfig, service: &'static str) -> Self {
        let target = match &config.amqp_url {
            Some(url) => Target::Amqp {
                url: url.clone(),
                ca_file: config.amqp_ca_file.clone(),
                link: Box::new(Mutex::new(None)),
            },
            None => Target::Embedded {
                path: config.embedded_queue_path(),
                queue: OnceCell::new(),
            },
        };
        Self {
            inner: Arc::new(Inner {
                service,
                queues: config.queues.clone(),
                target,
            }),
        }
    }

    /// The queue names this publisher declares.
    pub fn queues(&self) -> &QueueConfig {
        &self.inner.queues
    }

    /// Whether the queues can be reached now (connecting if needed).
    pub async fn check(&self) -> Result<(), PublishError> {
        match &self.inner.target {
            Target::Amqp { .. } => self.amqp_channel().await.map(drop),
            Target::Embedded { path, queue } => Ok(open(path, queue).await.map(drop)?),
        }
    }

    /// Puts `event` on `queue` and waits until it is durably queued.
    pub async fn publish(&self, queue: &str, event: &Event) -> Result<(), PublishError> {
        match &self.inner.target {
            Target::Amqp { .. } => {
                self.confirmed(async |channel| amqp::publish(&channel, queue, event).await)
                    .await
            }
            Target::Embedded { path, queue: file } => Ok(open(path, file)
                .await?
                .publish(queue, &events::encode(event))
                .await?),
        }
    }

    /// Publishes a conversion outcome to every channel's queue (through the outcome exchange,
    /// routed by its type) and waits until each has it durably.
    pub async fn publish_outcome(&self, event: &Event) -> Result<(), PublishError> {
        let Some(routing_key) = events::outcome_type(event) else {
            return Err(PublishError::NotAccepted("not a conversion outcome"));
        };
        let queues = &self.inner.queues;
        match &self.inner.target {
            Target::Amqp { .. } => {
                let exchange = &queues.outcome_exchange;
                self.confirmed(async |channel| {
                    amqp::publish_routed(&channel, exchange, routing_key, event).await
                })
                .await
            }
            Target::Embedded { path, queue: file } => {
                let outcome_queues = queues.outcome_queues().map(String::as_str);
                Ok(open(path, file)
                    .await?
                    .publish_to_each(&outcome_queues, &events::encode(event))
                    .await?)
            }
        }
    }

    /// Runs `send` on the shared channel within [`BROKER_TIMEOUT`]; when it fails with the
    /// channel, or times out, the channel is forgotten so the next publish starts afresh.
    async fn confirmed(
        &self,
        send: impl AsyncFnOnce(Channel) -> Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        let Target::Amqp { link, .. } = &self.inner.target else {
            unreachable!("only called for RabbitMQ");
        };
        let channel = self.amqp_channel().await?;
        let published = tokio::time::timeout(BROKER_TIMEOUT, send(channel))
            .await
            .unwrap_or(Err(PublishError::TimedOut(BROKER_TIMEOUT)));
        if matches!(
            published,
            Err(PublishError::Broker(_) | PublishError::TimedOut(_))
        ) {
            link.lock().await.take();
        }
        published
    }

    /// The shared confirmed channel, connecting (and declaring the topology) if there is none.
    async fn amqp_channel(&self) -> Result<Channel, PublishError> {
        let Target::Amqp { url, ca_file, link } = &self.inner.target else {
            unreachable!("only called for RabbitMQ");
        };
        let mut link = link.lock().await;
        if let Some((connection, channel)) = link.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *link = None;
        let connected = tokio::time::timeout(BROKER_TIMEOUT, async {
            let connection =
                amqp::connect(url.expose(), ca_file.as_deref(), self.inner.service).await?;
            let channel = amqp::confirmed_channel(&connection).await?;
            amqp::declare_topology(&channel, &self.inner.queues).await?;
            Ok::<_, lapin::Error>((connection, channel))
        })
        .await
        .map_err(|_| PublishError::TimedOut(BROKER_TIMEOUT))??;
        tracing::info!(service = self.inner.service, "connected to the broker");
        let channel = connected.1.clone();
        *link = Some(connected);
        Ok(channel)
    }
}

async fn open<'a>(
    path: &Path,
    queue: &'a OnceCell<EmbeddedQueue>,
) -> Result<&'a EmbeddedQueue, QueueError> {
    queue.get_or_try_init(|| EmbeddedQueue::open(path)).await
}
