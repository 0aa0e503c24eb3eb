//! Publishing "video uploaded" events. One confirmed channel is shared by every request (the
//! broker confirms in order, so requests only wait for their own message); when the broker
//! drops it, the next publish connects again, so the gateway recovers by itself after a
//! broker restart.

use anyhow::Context;
use lapin::{Channel, Connection};
use proto::events::v1::Event;
use service_kit::Secret;
use service_kit::broker::{self, PublishError};
use service_kit::queues::QueueConfig;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long connecting, or a publish and its confirm, may take before the broker counts as
/// unavailable.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's link to the broker.
#[derive(Debug)]
pub struct JobPublisher {
    url: Secret,
    queues: QueueConfig,
    link: Mutex<Option<(Connection, Channel)>>,
}

impl JobPublisher {
    /// A publisher for `queues` on the broker at `url`; it connects on first use.
    pub fn new(url: Secret, queues: QueueConfig) -> Self {
        Self {
            url,
            queues,
            link: Mutex::new(None),
        }
    }

    /// A connected channel, connecting (and declaring the topology) if there is none.
    async fn channel(&self) -> anyhow::Result<Channel> {
        let mut link = self.link.lock().await;
        if let Some((connection, channel)) = link.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *link = None;
        let connected = tokio::time::timeout(BROKER_TIMEOUT, async {
            let connection = broker::connect(self.url.expose(), "gateway").await?;
            let channel = broker::confirmed_channel(&connection).await?;
            broker::declare_topology(&channel, &self.queues).await?;
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

    /// Whether the broker can be reached now (connecting if needed).
    pub async fn check(&self) -> anyhow::Result<()> {
        self.channel().await.map(|_| ())
    }

    /// Puts `event` on the video queue and waits for the broker's confirm.
    pub async fn publish_video(&self, event: &Event) -> anyhow::Result<()> {
        let channel = self.channel().await?;
        let published = tokio::time::timeout(
            BROKER_TIMEOUT,
            broker::publish(&channel, &self.queues.video_queue, event),
        )
        .await;
        match published {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                if matches!(error, PublishError::Broker(_)) {
                    // The channel is broken: drop it so the next publish starts afresh.
                    self.link.lock().await.take();
                }
                Err(error).context("publishing to the video queue")
            }
            Err(_) => {
                self.link.lock().await.take();
                anyhow::bail!("the broker did not confirm within {BROKER_TIMEOUT:?}")
            }
        }
    }
}
