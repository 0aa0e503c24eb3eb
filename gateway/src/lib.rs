//! The REST edge: the only part of mp3converter that faces users. It authenticates every
//! request through the auth service, streams bytes to and from the storage service, and queues
//! accepted uploads for the converters.
//!
//! - [`config`]: settings from the environment. [`error`]: the one error type and its JSON.
//! - [`caller`]: bearer-token authentication. [`routes`]: the handlers and middleware, and
//!   the web page.
//! - [`body_messages`]: an upload's body cut into messages for storage.
//! - [`sniff`]: recognising media from its first bytes. [`http_util`]: ranges, ETags and
//!   safe download names. [`multipart_guard`]: a bound on multipart part headers.
//! - Accepted uploads are queued through `messaging::Publisher` (RabbitMQ or the embedded queue).

#![forbid(unsafe_code)]

pub mod body_messages;
pub mod caller;
pub mod config;
pub mod duration;
pub mod error;
pub mod http_util;
pub mod meters;
pub mod multipart_guard;
pub mod routes;
pub mod sniff;

pub use config::Config;

use anyhow::Context;
use axum::serve::ListenerExt;
use clients::{AuthClient, StorageClient};
use messaging::Publisher;
use routes::{AppState, Channels};
use service_kit::Shutdown;
use service_kit::grpc_tls::GrpcTls;
use service_kit::tls::{ReloadingServerConfig, TlsListener};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Runs the gateway until SIGTERM or Ctrl-C (its configuration already checked by
/// `Config::load`).
pub async fn main(config: Config) -> anyhow::Result<()> {
    service_kit::telemetry::init(&config.telemetry)?;
    let app = App::build(config).await?;
    // Boxed: the server's future nests deeply enough to overflow rustc's layout query depth.
    Box::pin(app.run_until_stopped(Shutdown::on_signals())).await
}

/// The gateway, built: its listener bound and its routes ready, with lazy gRPC channels (the
/// gateway starts whether or not its dependencies are up yet, and `/readyz` says when they
/// are). [`App::run_until_stopped`] serves it.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    /// HTTPS when TLS_CERT_FILE and TLS_KEY_FILE are set.
    tls: Option<ReloadingServerConfig>,
    router: axum::Router,
}

impl App {
    /// Binds LISTEN_ADDR and assembles the routes; `config` is checked already.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        meters::describe();
        let listener = service_kit::net::bind("LISTEN_ADDR", config.listen_addr).await?;
        let tls = match config.tls() {
            Some(files) => Some(ReloadingServerConfig::load(files).await?),
            None => None,
        };
        let grpc_tls = config.grpc_tls.load().await?;
        let state = state(&config, grpc_tls.as_ref())?;
        Ok(Self {
            listener,
            tls,
            router: routes::router(state, &config),
        })
    }

    /// Whether it serves HTTPS (else plain HTTP).
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Where HTTP is served: the API, the web page, and the ops routes.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves HTTP (or HTTPS) until `shutdown` fires, then drains open requests.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        tracing::info!(addr = %self.http_addr(), tls = self.serves_tls(), "gateway listening");
        match self.tls {
            Some(tls) => {
                // A no-op tap: axum gives `ConnectInfo<SocketAddr>` (the login throttle's client
                // address) for a `TcpListener` or a tapped listener, not for other listeners.
                let listener = TlsListener::new(self.listener, tls).tap_io(|_| {});
                serve(listener, self.router, shutdown).await?
            }
            None => {
                let listener = service_kit::net::nodelay_listener(self.listener);
                serve(listener, self.router, shutdown).await?
            }
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// `router` on `listener` until `shutdown` fires, then the open requests drained.
async fn serve<L>(listener: L, router: axum::Router, shutdown: Shutdown) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    SocketAddr: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.wait().await })
    .await
}

/// What every handler shares: the clients of auth and storage (over mutual TLS with `grpc_tls`),
/// and the publisher.
pub fn state(config: &Config, grpc_tls: Option<&GrpcTls>) -> anyhow::Result<AppState> {
    let channel = |url: &str| service_kit::grpc::client_channel(url, grpc_tls);
    let auth = channel(&config.auth_url).context("AUTH_URL")?;
    let storage = channel(&config.storage_url).context("STORAGE_URL")?;
    Ok(AppState {
        auth: AuthClient::new(auth.clone()),
        storage: StorageClient::new(storage.clone()),
        channels: Channels { auth, storage },
        publisher: Publisher::new(&config.broker, "gateway"),
        max_upload_bytes: config.max_upload_bytes,
        webhook_destinations: std::sync::Arc::new(config.webhook_destinations.policy()),
        webhook_secret_overlap: config.webhook_secret_overlap,
        public_urls: routes::tus::PublicUrls {
            base: config
                .public_base_url
                .as_ref()
                .map(|base| base.trim_end_matches('/').to_owned()),
            trust_forwarded_headers: config.trust_forwarded_headers,
        },
    })
}
