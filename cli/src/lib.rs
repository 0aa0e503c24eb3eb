//! The `mp3converter` command. `up` runs the whole system on this machine: all five services in
//! one process, each on its own port, talking gRPC to each other exactly as they do on
//! Kubernetes, with embedded defaults for whatever real component is not configured. The other
//! commands are a client for the REST API, for people and for scripts (`--json`).
//!
//! - [`up`]: the single-process system. `serve SERVICE`: one service, as its own binary runs it
//!   (so one program, or one image, can play every role).
//!   [`local_tls`]: the certificate authority and certificates of `up --tls`.
//! - [`api`]: the REST client. [`session`]: the saved login.
//! - [`commands`]: what each client command does and prints. [`progress`]: progress bars.

#![forbid(unsafe_code)]

pub mod api;
pub mod commands;
pub mod local_tls;
pub mod progress;
pub mod resumable;
pub mod session;
pub mod up;

use clap::{Parser, Subcommand};
use service_kit::config::ServiceConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "mp3converter",
    version,
    about = "Turn videos into MP3s: run the system (`up`) or use it (register, login, upload, ...).",
    after_help = "Exit codes: 0 success, 1 failure (network, server, bad input), 2 usage error, \
                  3 not logged in or the login was refused, 4 the conversion failed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// The gateway's URL (default: the one saved at login, else http://127.0.0.1:8080).
    #[arg(long, env = "MP3CONVERTER_URL", global = true)]
    pub url: Option<String>,

    /// A certificate authority to trust besides the usual ones (PEM): `up --tls` makes one,
    /// DATA_DIR/tls/ca.crt.
    #[arg(long, env = "MP3CONVERTER_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,

    /// Print results as JSON on stdout (errors too), for scripts.
    #[arg(long, global = true)]
    pub json: bool,

    /// Where the login is kept (default: $XDG_CONFIG_HOME/mp3converter or ~/.config/mp3converter).
    #[arg(long, env = "MP3CONVERTER_CONFIG_DIR", global = true)]
    pub config_dir: Option<PathBuf>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system on this machine (Ctrl-C stops it).
    Up(up::UpArgs),
    /// Run one service on its own, configured exactly as its own binary is (same variables and
    /// flags; `mp3converter serve converter --help` lists them): one program for every role.
    Serve {
        // Boxed: a service's settings are large, and the other commands are small.
        #[command(subcommand)]
        service: Box<Service>,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

/// One of the five services, with its own command line.
#[derive(Debug, Subcommand)]
pub enum Service {
    /// The REST edge.
    Gateway(gateway::Config),
    /// Accounts and tokens (gRPC).
    Auth(auth::Cli),
    /// Files and job records (gRPC).
    Storage(storage::Config),
    /// The ffmpeg workers.
    Converter(converter::Config),
    /// The e-mail worker.
    Notifier(notifier::Config),
}

impl Service {
    /// Runs the service until SIGTERM or Ctrl-C, as its own binary would: a configuration that
    /// does not check out stops it at once, naming the variable.
    async fn run(self) -> anyhow::Result<()> {
        fn checked<C: ServiceConfig>(config: C) -> C {
            config.validate().unwrap_or_else(|error| error.exit());
            config
        }
        match self {
            Self::Gateway(config) => gateway::main(checked(config)).await,
            Self::Auth(cli) => {
                cli.config.validate().unwrap_or_else(|error| error.exit());
                auth::main(cli).await
            }
            Self::Storage(config) => storage::main(checked(config)).await,
            Self::Converter(config) => converter::main(checked(config)).await,
            Self::Notifier(config) => notifier::main(checked(config)).await,
        }
    }
}

/// The commands that talk to a running system's REST API.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create an account.
    Register(commands::Credentials),
    /// Log in and keep the token (readable only by you) for the other commands.
    Login(commands::Credentials),
    /// Upload a video for conversion.
    Upload(Box<commands::UploadArgs>),
    /// List your jobs.
    Jobs,
    /// Show one job.
    Status {
        /// The job's id.
        job_id: String,
    },
    /// Download an MP3 (or the audio file in the format the job asked for).
    Download(commands::DownloadArgs),
    /// List the presets of audio options that `upload --preset` takes.
    Presets,
    /// Your webhook endpoints: where job outcomes are sent as signed HTTP requests.
    #[command(subcommand)]
    Webhooks(commands::WebhookCommand),
}

/// Runs the command line and turns the result into an exit code.
pub async fn main(cli: Cli) -> ExitCode {
    let json = cli.json;
    let result = match cli.command {
        Command::Up(args) => up::run(args).await.map_err(commands::Failure::from),
        Command::Serve { service } => service.run().await.map_err(commands::Failure::from),
        Command::Client(command) => {
            commands::run(command, cli.url, cli.config_dir, cli.ca_file, json).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(json),
    }
}
