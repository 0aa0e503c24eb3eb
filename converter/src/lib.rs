//! The converter worker: turns uploaded videos into MP3s with ffmpeg, competing with its peers
//! on the video queue.
//!
//! - [`config`]: settings from the environment.
//! - [`job`]: one event from claim to announcement (the pipeline's rules live here).
//! - [`media`]: ffprobe and ffmpeg as child processes.
//! - [`transfer`]: streaming files from and to the storage service.
//! - [`scratch`]: this process's temp directory, and removing what killed converters left.
//!
//! The shape every service shares: [`Cli`] from the environment, telemetry, then [`serve`] on a
//! listener until shutdown. `main.rs` only calls [`main`]; tests call [`serve`] with a listener
//! on port 0.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod job;
pub mod media;
pub mod scratch;
pub mod transfer;

pub use config::Config;

use anyhow::Context;
use clap::Parser;
use clients::StorageClient;
use job::Converter;
use media::{Encoding, Tools};
use messaging::consumer::{self, ConsumerSettings};
use scratch::ScratchSpace;
use service_kit::Shutdown;
use std::time::Duration;
use tokio::net::TcpListener;

/// The command line: the worker's settings.
#[derive(Debug, Parser)]
#[command(
    name = "converter",
    version,
    about = "The converter worker of mp3converter: turns uploaded videos into MP3s with ffmpeg."
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
    tracing::info!(addr = %ops.local_addr()?, "converter health and metrics listening");
    serve(config, ops, Shutdown::on_signals()).await
}

/// Consumes the video queue, with health and metrics on `ops_listener`, until `shutdown`
/// fires; then stops consuming and finishes (or hands back) the jobs in flight.
pub async fn serve(
    config: Config,
    ops_listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> anyhow::Result<()> {
    config.validate()?;
    let shutdown = shutdown.into();
    let storage = StorageClient::connect_lazy(&config.storage_url)
        .with_context(|| format!("STORAGE_URL `{}` is not a URL", config.storage_url))?;
    let tools = Tools {
        ffmpeg: config.ffmpeg.clone(),
        ffprobe: config.ffprobe.clone(),
        encoding: match config.mp3_bitrate_kbps {
            Some(kbps) => Encoding::Cbr(kbps),
            None => Encoding::Vbr(config.mp3_quality),
        },
        max_duration: Duration::from_secs(config.max_duration_seconds),
        timeout: config.job_timeout(),
    };
    let (scratch, swept) = ScratchSpace::claim(&config.work_dir).with_context(|| {
        format!(
            "setting up a scratch directory in WORK_DIR `{}`",
            config.work_dir.display()
        )
    })?;
    if swept > 0 {
        tracing::info!(swept, "removed the temp files of converters that died");
    }
    let converter = Converter::new(
        storage,
        tools,
        scratch.path().to_owned(),
        config.broker.queues.mp3_queue.clone(),
    );
    let settings = ConsumerSettings {
        service: "converter",
        queue: config.broker.queues.video_queue.clone(),
        concurrency: config.effective_concurrency(),
        broker: config.broker,
        retry: config.retry,
        grace: Duration::from_secs(config.shutdown_grace_seconds),
    };
    let served = consumer::serve_worker(settings, converter, ops_listener, shutdown).await;
    drop(scratch);
    served
}
