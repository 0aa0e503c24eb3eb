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
/// The queue that carries conversion outcomes to the notifier's e-mail channel.
pub const MP3_QUEUE: &str = "mp3";
/// The queue that carries conversion outcomes (and then each endpoint's message) to the
/// notifier's webhook channel.
pub const WEBHOOK_QUEUE: &str = "webhooks";
/// The topic exchange conversion outcomes are published to, routed by type (`job.succeeded`,
/// `job.failed`) to every channel's queue.
pub const OUTCOME_EXCHANGE: &str = "outcomes";

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

/// Queue and exchange names, configurable per deployment. The defaults are `video`, `mp3`,
/// `webhooks` and the `outcomes` exchange; a prefix lets several deployments (or parallel
/// tests) share one broker without seeing each other.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct QueueConfig {
    /// Queue that carries uploaded videos to the converters.
    #[arg(long, env = "VIDEO_QUEUE", default_value = VIDEO_QUEUE)]
    pub video_queue: String,

    /// Queue that carries conversion outcomes to the notifier's e-mails.
    #[arg(long, env = "MP3_QUEUE", default_value = MP3_QUEUE)]
    pub mp3_queue: String,

    /// Queue that carries conversion outcomes to the notifier's webhooks.
    #[arg(long, env = "WEBHOOK_QUEUE", default_value = WEBHOOK_QUEUE)]
    pub webhook_queue: String,

    /// Topic exchange that routes each conversion outcome to MP3_QUEUE and WEBHOOK_QUEUE.
    #[arg(long, env = "OUTCOME_EXCHANGE", default_value = OUTCOME_EXCHANGE)]
    pub outcome_exchange: String,
}

impl QueueConfig {
    /// The default names behind a prefix (`{prefix}video`, `{prefix}mp3`, ...).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            video_queue: format!("{prefix}{VIDEO_QUEUE}"),
            mp3_queue: format!("{prefix}{MP3_QUEUE}"),
            webhook_queue: format!("{prefix}{WEBHOOK_QUEUE}"),
            outcome_exchange: format!("{prefix}{OUTCOME_EXCHANGE}"),
        }
    }

    /// The variables that name these to a service process (`VIDEO_QUEUE=…` and the rest).
    pub fn env_vars(&self) -> [(&'static str, String); 4] {
        [
            ("VIDEO_QUEUE", self.video_queue.clone()),
            ("MP3_QUEUE", self.mp3_queue.clone()),
            ("WEBHOOK_QUEUE", self.webhook_queue.clone()),
            ("OUTCOME_EXCHANGE", self.outcome_exchange.clone()),
        ]
    }

    /// Every queue, in the order they are declared.
    pub fn queues(&self) -> [&String; 3] {
        [&self.video_queue, &self.mp3_queue, &self.webhook_queue]
    }

    /// The queues every conversion outcome goes to: one per channel (e-mail, webhooks), so
    /// each has its own retries and dead letters and neither delays the other.
    pub fn outcome_queues(&self) -> [&String; 2] {
        [&self.mp3_queue, &self.webhook_queue]
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

    /// A schedule instead of the growing delays: the delay after each failed attempt, in
    /// order (set by a consumer with a schedule of its own, such as the webhooks'; never read
    /// from the environment).
    #[arg(skip)]
    pub schedule: Option<Vec<Duration>>,

    /// How far each delay may move either way, in percent of it, so that messages that failed
    /// together do not all come back together (set by a consumer that wants it; never read from
    /// the environment).
    #[arg(skip)]
    pub jitter_percent: u8,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_base_delay_ms: 5_000,
            retry_max_delay_ms: 600_000,
            schedule: None,
            jitter_percent: 0,
        }
    }
}

impl RetryConfig {
    /// Retries after these delays, one per failed attempt, each moved by up to
    /// `jitter_percent` either way; then the dead-letter queue.
    pub fn on_schedule(delays: Vec<Duration>, jitter_percent: u8) -> Self {
        Self {
            max_attempts: u32::try_from(delays.len() + 1).unwrap_or(u32::MAX),
            schedule: Some(delays),
            jitter_percent: jitter_percent.min(100),
            ..Self::default()
        }
    }

    /// The delay after failed attempt `attempt`, moved by a random share of its jitter.
    pub fn jittered_delay_after(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let share = f64::from(self.jitter_percent) / 100.0;
        let draw: f64 = rand::rng().random_range(-1.0..=1.0);
        self.delay_after(attempt)
            .mul_f64((1.0 + share * draw).max(0.0))
    }

    /// The longest wait after failed attempt `attempt`: its delay with all of its jitter (what
    /// a delay queue holds a message for at most).
    pub fn longest_delay_after(&self, attempt: u32) -> Duration {
        self.delay_after(attempt)
            .mul_f64(1.0 + f64::from(self.jitter_percent) / 100.0)
    }

    /// How long to wait after failed attempt `attempt` (1-based) before the next one.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        if let Some(schedule) = &self.schedule {
            let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
            return schedule
                .get(index)
                .or(schedule.last())
                .copied()
                .unwrap_or_default();
        }
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
            let delay = self.longest_delay_after(attempt);
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
            schedule: None,
            jitter_percent: 0,
        }
    }

    #[test]
    fn a_schedule_gives_each_retry_its_delay_and_one_queue_per_distinct_delay() {
        let seconds = |s: u64| Duration::from_secs(s);
        let config = RetryConfig::on_schedule(vec![seconds(5), seconds(300), seconds(300)], 0);
        assert_eq!(config.max_attempts, 4);
        let delays: Vec<Duration> = (1..4).map(|attempt| config.delay_after(attempt)).collect();
        assert_eq!(delays, [seconds(5), seconds(300), seconds(300)]);
        let names: Vec<String> = config
            .retry_queues("webhooks")
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        assert_eq!(names, ["webhooks.retry.5000ms", "webhooks.retry.300000ms"]);

        // With jitter, each wait is within its share, and the delay queues hold the longest.
        let jittered = RetryConfig::on_schedule(vec![seconds(5), seconds(300)], 20);
        for _ in 0..200 {
            let wait = jittered.jittered_delay_after(1);
            assert!(wait >= seconds(4) && wait <= seconds(6), "{wait:?}");
        }
        let names: Vec<String> = jittered
            .retry_queues("webhooks")
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        assert_eq!(names, ["webhooks.retry.6000ms", "webhooks.retry.360000ms"]);
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
        assert_eq!(queues.webhook_queue, "t-1234.webhooks");
        assert_eq!(queues.outcome_exchange, "t-1234.outcomes");
        assert_eq!(
            QueueConfig::dead_letter_queue(&queues.video_queue),
            "t-1234.video.dead"
        );
        assert_eq!(QueueConfig::default().video_queue, "video");
    }
}
