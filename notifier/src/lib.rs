//! The notifier worker: tells users when their conversion succeeded or failed, on two channels
//! that each consume a queue of their own: e-mail (once per job) and webhooks (signed HTTP
//! requests to the endpoints the user registered).
//!
//! - [`config`]: settings from the environment.
//! - [`mail`]: the e-mails' wording (pure).
//! - [`mailer`]: SMTP, or the outbox directory of the embedded default.
//! - [`notify`]: one event, from the job's record to the e-mail and back.
//! - [`webhook`]: one outcome, to a message per endpoint, each delivered and retried alone.
//!
//! The shape every service shares: [`Config`] from the environment, then [`App::build`] and
//! [`App::run_until_stopped`]. `main.rs` only loads the configuration and calls [`main`]; tests
//! build an [`App`] from a typed configuration on port 0.

#![forbid(unsafe_code)]

pub mod config;
pub mod mail;
pub mod mailer;
pub mod meters;
pub mod notify;
pub mod webhook;

pub use config::Config;

use anyhow::Context;
use clients::StorageClient;
use mailer::Mailer;
use messaging::{ConsumerSettings, WorkerApp};
use notify::Notifier;
use service_kit::Shutdown;
use std::net::SocketAddr;
use std::time::Duration;
use webhook::WebhookChannel;

/// Works until SIGTERM or Ctrl-C (the configuration already checked by `Config::load`).
pub async fn main(config: Config) -> anyhow::Result<()> {
    service_kit::telemetry::init(&config.telemetry)?;
    App::build(config)
        .await?
        .run_until_stopped(Shutdown::on_signals())
        .await
}

/// The notifier, built: its ops endpoint answering, its mailer and its webhook client set up.
/// [`App::run_until_stopped`] consumes the mp3 queue and the webhook queue.
#[derive(Debug)]
pub struct App {
    worker: WorkerApp<Notifier>,
    webhooks: (ConsumerSettings, WebhookChannel),
}

impl App {
    /// Binds OPS_LISTEN_ADDR and sets up the mailer; `config` is checked already.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        meters::describe();
        let links = &config.links;
        let grpc_tls = links.grpc_tls.load().await?;
        let storage = StorageClient::connect_lazy(&links.storage_url, grpc_tls.as_ref())
            .with_context(|| format!("STORAGE_URL `{}` is not a URL", links.storage_url))?;
        let timeout = Duration::from_secs(config.smtp_timeout_seconds);
        let mailer = match &config.smtp_url {
            Some(url) => Mailer::smtp(url.expose(), timeout)?,
            None => {
                let outbox = config.outbox_dir();
                tracing::info!(outbox = %outbox.display(), "no SMTP_URL: writing e-mails to the outbox");
                Mailer::outbox(outbox)?
            }
        };
        let deliverer = webhooks::Deliverer::new(
            config.webhook_destinations.policy(),
            Duration::from_secs(config.webhook_timeout_seconds),
        )
        .context("making the webhook client")?;
        let channel = WebhookChannel::new(
            storage.clone(),
            deliverer,
            &links.broker.queues,
            config.public_base_url.clone(),
            Some(config.webhook_disable_after).filter(|after| !after.is_zero()),
            config
                .webhook_retry_schedule
                .clone()
                .with_slow_down(config.webhook_slow_down),
        );
        let mut webhook_settings = links.consumer(
            "notifier-webhooks",
            &links.broker.queues.webhook_queue,
            config.webhook_concurrency,
            Duration::from_secs(config.shutdown_grace_seconds),
        );
        webhook_settings.retry = webhook::retry_on(&config.webhook_retry_schedule);
        let notifier = Notifier::new(
            storage,
            mailer,
            config.mail_from.clone(),
            config.public_base_url.clone(),
        );
        let settings = links.consumer(
            "notifier",
            &links.broker.queues.mp3_queue,
            config.concurrency,
            Duration::from_secs(config.shutdown_grace_seconds),
        );
        let worker = WorkerApp::build(config.ops.ops, settings, notifier).await?;
        Ok(Self {
            worker,
            webhooks: (webhook_settings, channel),
        })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.worker.ops_addr()
    }

    /// Consumes the mp3 queue and the webhook queue until `shutdown` fires; ready while both
    /// consume. If either consumer fails, the other is stopped too and the failure returned.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let (settings, channel) = self.webhooks;
        let readiness = self.worker.readiness().another_part();
        let webhooks = {
            let shutdown = shutdown.clone();
            async move {
                let consumed =
                    messaging::consumer::consume(settings, channel, readiness, shutdown.clone())
                        .await;
                shutdown.trigger();
                consumed
            }
        };
        let mail = {
            let shutdown = shutdown.clone();
            async move {
                let consumed = self.worker.run_until_stopped(shutdown.clone()).await;
                shutdown.trigger();
                consumed
            }
        };
        let (mail, webhooks) = tokio::join!(mail, webhooks);
        mail.and(webhooks)
    }
}
