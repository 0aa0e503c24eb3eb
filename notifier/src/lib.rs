//! The notifier worker: e-mails users when their conversion succeeded or failed, once per job.
//!
//! - [`config`]: settings from the environment.
//! - [`mail`]: the e-mails' wording (pure).
//! - [`mailer`]: SMTP, or the outbox directory of the embedded default.
//! - [`notify`]: one event, from the job's record to the e-mail and back.
//!
//! The shape every service shares: [`Cli`] from the environment, telemetry, then [`serve`] on a
//! listener until shutdown. `main.rs` only calls [`main`]; tests call [`serve`] with a listener
//! on port 0.

#![forbid(unsafe_code)]

pub mod config;
pub mod mail;
pub mod mailer;
pub mod notify;

pub use config::Config;

use anyhow::Context;
use clap::Parser;
use clients::StorageClient;
use mailer::Mailer;
use messaging::consumer::{self, ConsumerSettings};
use notify::Notifier;
use service_kit::Shutdown;
use std::time::Duration;
use tokio::net::TcpListener;

/// The command line: the worker's settings.
#[derive(Debug, Parser)]
#[command(
    name = "notifier",
    version,
    about = "The notifier worker of mp3converter: e-mails users when their conversion ended."
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
}

/// Runs the command line.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    service_kit::telemetry::init(&cli.config.telemetry);
    run(cli.config).await
}

/// Works until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let ops = service_kit::ops::bind(config.ops_listen_addr).await?;
    tracing::info!(addr = %ops.local_addr()?, "notifier health and metrics listening");
    serve(config, ops, Shutdown::on_signals()).await
}

/// Consumes the mp3 queue, with health and metrics on `ops_listener`, until `shutdown` fires.
pub async fn serve(
    config: Config,
    ops_listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> anyhow::Result<()> {
    let shutdown = shutdown.into();
    let storage = StorageClient::connect_lazy(&config.storage_url)
        .with_context(|| format!("STORAGE_URL `{}` is not a URL", config.storage_url))?;
    let timeout = Duration::from_secs(config.smtp_timeout_seconds);
    let mailer = match &config.smtp_url {
        Some(url) => Mailer::smtp(url.expose(), timeout)?,
        None => {
            let outbox = config.outbox_dir();
            tracing::info!(outbox = %outbox.display(), "no SMTP_URL: writing e-mails to the outbox");
            Mailer::outbox(outbox)?
        }
    };
    let notifier = Notifier::new(
        storage,
        mailer,
        config.mail_from.clone(),
        config.public_base_url.clone(),
    );
    let settings = ConsumerSettings {
        service: "notifier",
        queue: config.broker.queues.mp3_queue.clone(),
        broker: config.broker,
        concurrency: config.concurrency,
        retry: config.retry,
        grace: Duration::from_secs(config.shutdown_grace_seconds),
    };
    consumer::serve_worker(settings, notifier, ops_listener, shutdown).await
}
