//! The notifier's settings, from flags or the environment. clap refuses to start on a bad
//! value and names the variable.

use clap::Parser;
use lettre::message::Mailbox;
use messaging::WorkerLinks;
use service_kit::Secret;
use service_kit::config::{ConfigError, OpsAddr, ServiceConfig, TelemetryConfig};
use std::path::PathBuf;

/// The notifier worker of mp3converter: e-mails users when their conversion ended.
#[derive(Debug, Clone, Parser)]
#[command(name = "notifier", version)]
pub struct Config {
    /// Where the health and metrics endpoint listens (9091).
    #[command(flatten)]
    pub ops: OpsAddr<9091>,

    /// Where mail goes: `smtp://host:port` (no TLS), `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://host:465` (TLS), with `user:password@` for a login. Unset: mail is
    /// written as `.eml` files to the outbox, `DATA_DIR/outbox`.
    #[arg(long, env = "SMTP_URL")]
    pub smtp_url: Option<Secret>,

    /// Storage, the broker and its queues, and the retry policy.
    #[command(flatten)]
    pub links: WorkerLinks,

    /// How long one SMTP conversation may take, in seconds.
    #[arg(long, env = "SMTP_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub smtp_timeout_seconds: u64,

    /// The sender of every e-mail.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "mp3converter <no-reply@mp3converter.localhost>"
    )]
    pub mail_from: Mailbox,

    /// The gateway's address as users reach it; download links start with it.
    #[arg(long, env = "PUBLIC_BASE_URL", default_value = "http://localhost:8080")]
    pub public_base_url: String,

    /// E-mails sent at once (and the prefetch).
    #[arg(long, env = "CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Where webhooks may go (WEBHOOK_ALLOWED_NETWORKS, WEBHOOK_HTTPS_ONLY), checked again at
    /// each delivery.
    #[command(flatten)]
    pub webhook_destinations: webhooks::WebhookDestinations,

    /// When a webhook is tried: before the first attempt, then after each failure
    /// (comma-separated, `ms`/`s`/`m`/`h`); the default is the Standard Webhooks schedule.
    /// After the last attempt the message goes to the webhook queue's dead-letter queue.
    #[arg(
        long,
        env = "WEBHOOK_RETRY_SCHEDULE",
        default_value = "0s, 5s, 5m, 30m, 2h, 5h, 10h, 10h"
    )]
    pub webhook_retry_schedule: webhooks::RetrySchedule,

    /// An endpoint whose attempts fail for this long without a success is disabled and its
    /// owner e-mailed (`5d`, `12h`; `0`: never).
    #[arg(long, env = "WEBHOOK_DISABLE_AFTER", default_value = "5d", value_parser = service_kit::config::parse_duration)]
    pub webhook_disable_after: std::time::Duration,

    /// The least wait before trying a webhook receiver again after it timed out or answered
    /// 429 (`60s`).
    #[arg(long, env = "WEBHOOK_SLOW_DOWN", default_value = "60s", value_parser = service_kit::config::parse_duration)]
    pub webhook_slow_down: std::time::Duration,

    /// How long a webhook receiver has to answer, in seconds.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_seconds: u64,

    /// Webhook messages delivered at once (and the webhook queue's prefetch).
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub webhook_concurrency: u16,

    /// How long in-flight e-mails may go on after SIGTERM before they are handed back.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.links.validate()?;
        if let Some(url) = &self.smtp_url {
            crate::mailer::Mailer::smtp(url.expose(), std::time::Duration::from_secs(1)).map_err(
                |_| ConfigError::invalid("SMTP_URL", "is not an smtp:// or smtps:// URL"),
            )?;
        }
        Ok(())
    }
}

impl Config {
    /// The outbox directory of the embedded default (`DATA_DIR/outbox`).
    pub fn outbox_dir(&self) -> PathBuf {
        self.links.broker.data_dir.join("outbox")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_that_is_not_an_address_is_refused_at_start_up_by_name() {
        let good = Config::try_parse_from(["notifier", "--mail-from", "Ops <ops@example.com>"]);
        assert_eq!(good.unwrap().mail_from.email.to_string(), "ops@example.com");
        let error = Config::try_parse_from(["notifier", "--mail-from", "nobody"]).unwrap_err();
        assert!(error.to_string().contains("--mail-from"), "{error}");
    }
}
