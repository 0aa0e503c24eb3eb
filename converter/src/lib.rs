//! The converter worker: turns uploaded videos into audio files (an MP3 unless the job asks for
//! another format) with ffmpeg, competing with its peers on the video queue.
//!
//! - [`config`]: settings from the environment.
//! - [`job`]: one event from claim to announcement (the pipeline's rules live here).
//! - [`media`]: ffprobe and ffmpeg as child processes, pass by pass.
//! - [`recipe`]: a job's options as each pass's ffmpeg arguments; [`loudness`] and [`cover`]
//!   the two passes that need more than arguments; [`description`] what ffmpeg says about its
//!   input; [`id3_tags`] an MP3's tag, written in process.
//! - [`transfer`]: streaming files from and to the storage service.
//! - [`scratch`]: this process's temp directory, and removing what killed converters left.
//!
//! The shape every service shares: [`Config`] from the environment, then [`App::build`] and
//! [`App::run_until_stopped`]. `main.rs` only loads the configuration and calls [`main`]; tests
//! build an [`App`] from a typed configuration on port 0.

#![forbid(unsafe_code)]

pub mod config;
pub mod cover;
pub mod description;
pub mod error;
pub mod id3_tags;
pub mod job;
pub mod loudness;
pub mod media;
pub mod meters;
pub mod recipe;
pub mod scratch;
pub mod transfer;

pub use config::Config;

use anyhow::Context;
use clients::StorageClient;
use job::Converter;
use media::{Encoding, Tools};
use messaging::WorkerApp;
use scratch::ScratchSpace;
use service_kit::Shutdown;
use std::net::SocketAddr;
use std::time::Duration;

/// Works until SIGTERM or Ctrl-C (the configuration already checked by `Config::load`).
pub async fn main(config: Config) -> anyhow::Result<()> {
    service_kit::telemetry::init(&config.telemetry)?;
    App::build(config)
        .await?
        .run_until_stopped(Shutdown::on_signals())
        .await
}

/// The converter, built: its ops endpoint answering, its scratch directory claimed (and the
/// temp files of converters that died removed). [`App::run_until_stopped`] consumes the video
/// queue.
#[derive(Debug)]
pub struct App {
    worker: WorkerApp<Converter>,
    scratch: ScratchSpace,
}

impl App {
    /// Binds OPS_LISTEN_ADDR and sets up the scratch space; `config` is checked already.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        meters::describe();
        let links = &config.links;
        let grpc_tls = links.grpc_tls.load().await?;
        let storage = StorageClient::connect_lazy(&links.storage_url, grpc_tls.as_ref())
            .with_context(|| format!("STORAGE_URL `{}` is not a URL", links.storage_url))?;
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
        let queues = &links.broker.queues;
        let concurrency = config.effective_concurrency();
        let converter = Converter::new(storage, tools, scratch.path().to_owned(), concurrency);
        let settings = links.consumer(
            "converter",
            &queues.video_queue,
            concurrency.saturating_add(job::JOBS_IN_HAND_AHEAD),
            Duration::from_secs(config.shutdown_grace_seconds),
        );
        let worker = WorkerApp::build(config.ops.ops, settings, converter).await?;
        Ok(Self { worker, scratch })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.worker.ops_addr()
    }

    /// Consumes the video queue until `shutdown` fires; then stops consuming and finishes (or
    /// hands back) the jobs in flight.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let served = self.worker.run_until_stopped(shutdown).await;
        drop(self.scratch);
        served
    }
}
