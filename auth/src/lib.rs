//! The auth service: the only place that knows passwords and signs tokens. The gateway asks it,
//! over gRPC, to register users, log them in and validate their tokens on every request.
//!
//! - [`config`]: settings from the environment, checked before anything starts.
//! - [`store`]: accounts in MySQL or SQLite through sea-orm, with migrations.
//! - [`password`]: argon2id on the blocking pool. [`token`]: HS256 JWTs.
//! - [`throttle`]: brute-force protection. [`service`]: the gRPC service itself.

#![forbid(unsafe_code)]

pub mod config;
pub mod email;
pub mod error;
pub mod meters;
pub mod password;
pub mod service;
pub mod store;
pub mod throttle;
pub mod token;

pub use config::Config;
pub use error::AuthError;
pub use service::AuthApi;

use anyhow::Context;
use clap::{Parser, Subcommand};
use password::Passwords;
use proto::auth::v1::auth_service_server::AuthServiceServer;
use service_kit::config::{ConfigError, ServiceConfig};
use service_kit::grpc::{GrpcListeners, GrpcServer};
use service_kit::{Secret, Shutdown};
use std::path::Path;
use store::UserStore;
use throttle::LoginThrottle;
use token::Tokens;

/// The full name of the gRPC service, as reflection lists it.
pub const SERVICE_NAME: &str = "mp3converter.auth.v1.AuthService";

/// The auth service of mp3converter: accounts, passwords and tokens over gRPC.
#[derive(Debug, Parser)]
#[command(name = "auth", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: Config,
}

/// Maintenance commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Create an account; the password is read from the first line of standard input.
    CreateUser {
        /// The account's e-mail.
        #[arg(long)]
        email: String,
        /// Make the account an admin (an existing account is promoted).
        #[arg(long)]
        admin: bool,
    },
}

/// Runs the command line (its configuration already checked by [`Cli::load`]).
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    service_kit::telemetry::init(&config.telemetry)?;
    match cli.command.unwrap_or(Command::Serve) {
        // Boxed: the server's future nests deeply enough to overflow rustc's layout query
        // depth inside `main`; one allocation at start-up keeps its size off the stack too.
        Command::Serve => {
            let app = Box::pin(App::build(config)).await?;
            Box::pin(app.run_until_stopped(Shutdown::on_signals())).await
        }
        Command::Migrate => {
            let users = connect(&config).await?;
            users.migrate().await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::CreateUser { email, admin } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            let user = create_user(&config, &email, password, admin).await?;
            println!(
                "created {} (id {}, admin: {})",
                user.email, user.id, user.admin
            );
            Ok(())
        }
    }
}

impl Cli {
    /// The command line and environment of this process, its configuration checked.
    pub fn load() -> Result<Self, ConfigError> {
        let cli: Self = service_kit::secret_files::parse(std::env::args_os())?;
        cli.config.validate()?;
        Ok(cli)
    }
}

service_kit::grpc_app! {
    /// The auth service, built: its listeners bound (the ops endpoint already answering), the
    /// database connected and migrated, the first admin made. [`App::run_until_stopped`] serves it.
    App
}

impl App {
    /// Binds LISTEN_ADDR and OPS_LISTEN_ADDR and prepares the service. `config` is checked
    /// already: by [`Cli::load`], or by whoever built it (`up` validates every service's).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        meters::describe();
        let listeners = GrpcListeners::bind("auth", config.addrs.api, config.addrs.ops).await?;
        let api = prepare(&config).await?;
        if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
            let admin = api
                .ensure_admin(email, password.expose().to_owned())
                .await
                .context("creating the ADMIN_EMAIL account")?;
            tracing::info!(user_id = %admin.id, "admin account ready");
        }
        let grpc_tls = config.grpc_tls.load().await?;
        let server = GrpcServer::new(&[SERVICE_NAME], grpc_tls.as_ref())?
            .add_service(AuthServiceServer::new(api))
            .await;
        Ok(Self(listeners.serving("auth", server)))
    }
}

/// Creates an account from the command line (or a test).
pub async fn create_user(
    config: &Config,
    email: &str,
    password: String,
    admin: bool,
) -> anyhow::Result<store::User> {
    let api = prepare(config).await?;
    let user = if admin {
        api.ensure_admin(email, password).await?
    } else {
        api.register(email, password, false).await?
    };
    Ok(user)
}

/// The checked config's parts, connected and migrated, without serving anything.
async fn prepare(config: &Config) -> anyhow::Result<AuthApi> {
    let users = connect(config).await?;
    users.migrate().await.context("applying migrations")?;
    let secret = jwt_secret(config)?;
    assemble(config, users, secret.expose().as_bytes())
}

fn assemble(config: &Config, users: UserStore, secret: &[u8]) -> anyhow::Result<AuthApi> {
    let passwords = Passwords::new(config.argon2_memory_kib, config.argon2_iterations)?;
    let tokens = Tokens::new(
        secret,
        &config.jwt_issuer,
        &config.jwt_audience,
        config.token_ttl(),
    );
    let throttle = LoginThrottle::new(
        config.login_failure_window(),
        config.login_max_failures,
        config.login_max_failures_per_address,
    );
    Ok(AuthApi::new(users, passwords, tokens, throttle))
}

async fn connect(config: &Config) -> anyhow::Result<UserStore> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating DATA_DIR {}", config.data_dir.display()))?;
    }
    UserStore::connect(&config.database_url(), config.database_max_connections)
        .await
        .context("connecting to the accounts database (DATABASE_URL)")
}

/// JWT_SECRET, or for the embedded default a random key generated once and kept in DATA_DIR.
fn jwt_secret(config: &Config) -> anyhow::Result<Secret> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.clone());
    }
    load_or_generate_secret(&config.data_dir.join("jwt-secret"))
}

fn load_or_generate_secret(path: &Path) -> anyhow::Result<Secret> {
    match std::fs::read_to_string(path) {
        Ok(existing) if existing.trim().len() >= config::JWT_SECRET_MIN_BYTES => {
            return Ok(Secret::new(existing.trim()));
        }
        Ok(_) => anyhow::bail!(
            "{} holds no usable JWT secret; remove it to generate one",
            path.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private_file(path, &secret).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a JWT secret for the embedded default");
    Ok(Secret::new(secret))
}

/// Writes a file only its owner can read, failing if it already exists (two replicas racing
/// to create the secret must not overwrite each other's).
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
