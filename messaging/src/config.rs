//! Where the queues are and what they are called, and how patiently a failed message is tried
//! again. The gateway, converter and notifier flatten these pieces into their configurations, so
//! one variable means the same in all three: `AMQP_URL` set, the queues are on RabbitMQ;
//! unset, they are the embedded queue file in `DATA_DIR`, which every process on the machine
//! shares.

use crate::embedded;
use clap::Args;
use service_kit::Secret;
use service_kit::config::ConfigError;
use std::path::PathBuf;
use std::time::Duration;

/// The queue that carries `VideoUploaded` events to the converters.
pub const VIDEO_QUEUE: &str = "video";
/// The queue that carries conversion outcomes to the notifier.
pub const MP3_QUEUE: &str = "mp3";

/// Where the queues live, and their names.
#[derive(Debug, Clone, Args)]
pub struct BrokerConfig {
    /// RabbitMQ URL (it may hold a password, so it never prints). Unset: the embedded queue in
    /// DATA_DIR, which every service on this machine shares.
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: Option<Secret>,

    /// The authority (PEM) to trust for an `amqps://` AMQP_URL, besides the system's roots: a
    /// broker whose certificate a private authority signed.
    #[arg(long, env = "AMQP_CA_FILE")]
    pub amqp_ca_file: Option<PathBuf>,

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
        self.data_dir.join(embedded::FILE_NAME)
    }

    /// The embedded queue's lease.
    pub fn embedded_queue_lease(&self) -> Duration {
        Duration::from_secs(self.embedded_queue_lease_seconds)
    }

    /// Checks what parsing cannot, naming the variable at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.amqp_url
            && !(url.expose().starts_with("amqp://") || url.expose().starts_with("amqps://"))
        {
            return Err(ConfigError::invalid(
                "AMQP_URL",
                "must start with amqp:// or amqps://",
            ));
        }
        let amqps = self
            .amqp_url
            .as_ref()
            .is_some_and(|url| url.expose().starts_with("amqps://"));
        if self.amqp_ca_file.is_some() && !amqps {
            return Err(ConfigError::invalid(
                "AMQP_CA_FILE",
                "is set, but AMQP_URL is not an amqps:// URL",
            ));
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

/// Queue names, configurable per deployment. The defaults are `video` and `mp3`; a prefix lets
/// several deployments (or parallel tests) share one broker without seeing each other.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct QueueConfig {
    /// Queue that carries uploaded videos to the converters.
    #[arg(long, env = "VIDEO_QUEUE", default_value = VIDEO_QUEUE)]
    pub video_queue: String,

    /// Queue that carries conversion outcomes to the notifier.
    #[arg(long, env = "MP3_QUEUE", default_value = MP3_QUEUE)]
    pub mp3_queue: String,
}

impl QueueConfig {
    /// The default names behind a prefix (`{prefix}video`, `{prefix}mp3`).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            video_queue: format!("{prefix}{VIDEO_QUEUE}"),
            mp3_queue: format!("{prefix}{MP3_QUEUE}"),
        }
    }

    /// The dead-letter queue that holds what could not be processed from `queue`.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dead")
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

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

    /// Every distinct delay a message of `queue` may wait, with the RabbitMQ queue that holds
    /// it (see [`crate::amqp`]).
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
    fn prefix_applies_to_every_queue() {
        let queues = QueueConfig::with_prefix("t-1234.");
        assert_eq!(queues.video_queue, "t-1234.video");
        assert_eq!(queues.mp3_queue, "t-1234.mp3");
        assert_eq!(
            QueueConfig::dead_letter_queue(&queues.video_queue),
            "t-1234.video.dead"
        );
        assert_eq!(QueueConfig::default().video_queue, "video");
    }
}
