//! Queue names behind a unique prefix per test, on the real RabbitMQ.

use anyhow::Context;
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use std::sync::Mutex;

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// One test's corner of the broker: every queue it names starts with [`TestBroker::prefix`], and
/// the queues it named are deleted when this value is dropped.
#[derive(Debug)]
pub struct TestBroker {
    url: String,
    prefix: String,
    named: Mutex<Vec<String>>,
}

impl TestBroker {
    /// Checks that the broker at `AMQP_TEST_URL` answers and picks a fresh prefix.
    pub async fn create() -> anyhow::Result<Self> {
        let url = crate::env_or("AMQP_TEST_URL", DEFAULT_URL);
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {url} (is it running?)"))?;
        connection.close(200, "ok".into()).await?;
        Ok(Self {
            url,
            prefix: format!("{}.", crate::unique_name("t-")),
            named: Mutex::new(Vec::new()),
        })
    }

    /// The broker's URL, as a service's `AMQP_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix of every queue this test uses (ends with a dot).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefixed name for `queue`, remembered for deletion (with its dead-letter queue,
    /// `{name}.dead`; see [`TestBroker::remember`] for others).
    pub fn queue(&self, queue: &str) -> String {
        let name = format!("{}{queue}", self.prefix);
        let mut named = self.named.lock().expect("queue list lock");
        for suffix in ["", ".dead"] {
            named.push(format!("{name}{suffix}"));
        }
        name
    }

    /// Remembers another queue to delete at the end (a retry queue, say).
    pub fn remember(&self, name: impl Into<String>) {
        self.named
            .lock()
            .expect("queue list lock")
            .push(name.into());
    }

    /// A new connection to the broker.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        Ok(Connection::connect(&self.url, ConnectionProperties::default()).await?)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.named.lock().expect("queue list lock"));
        if names.is_empty() {
            return;
        }
        let url = self.url.clone();
        crate::cleanup_blocking("test queues", async move {
            let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            for name in names {
                // Deleting a queue that was never declared is not an error worth reporting.
                let _ = channel
                    .queue_delete(name.into(), QueueDeleteOptions::default())
                    .await;
            }
            connection.close(200, "ok".into()).await?;
            Ok(())
        });
    }
}
