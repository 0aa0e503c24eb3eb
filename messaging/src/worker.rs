//! What the two workers (the converter and the notifier) share beyond the consumer's rules:
//! the settings every worker has, and the worker as an application (its ops endpoint and its
//! consumer, built, then run until stopped).

use crate::config::{BrokerConfig, RetryConfig};
use crate::consumer::{self, ConsumerSettings, Handler};
use clap::Args;
use service_kit::Shutdown;
use service_kit::config::ConfigError;
use service_kit::grpc_tls::GrpcTlsConfig;
use service_kit::ops::OpsEndpoint;
use std::net::SocketAddr;
use std::time::Duration;

/// What every worker is linked to: the storage service, the queues, and the retry policy.
/// Flattened into each worker's configuration, so the variables mean the same in both.
#[derive(Debug, Clone, Args)]
pub struct WorkerLinks {
    /// The storage service's gRPC URL.
    #[arg(long, env = "STORAGE_URL", default_value = "http://127.0.0.1:50052")]
    pub storage_url: String,

    /// The broker (or the embedded queue) and the queue names.
    #[command(flatten)]
    pub broker: BrokerConfig,

    #[command(flatten)]
    pub retry: RetryConfig,

    /// Mutual TLS to storage (GRPC_TLS_*).
    #[command(flatten)]
    pub grpc_tls: GrpcTlsConfig,
}

impl WorkerLinks {
    /// Checks what parsing cannot, naming the variable at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.grpc_tls.validate()?;
        self.grpc_tls.check_url("STORAGE_URL", &self.storage_url)?;
        self.broker.validate()
    }

    /// How `service` consumes `queue`, `concurrency` messages at once, allowing `grace` for
    /// in-flight work at shutdown.
    pub fn consumer(
        &self,
        service: &'static str,
        queue: &str,
        concurrency: u16,
        grace: Duration,
    ) -> ConsumerSettings {
        ConsumerSettings {
            service,
            broker: self.broker.clone(),
            queue: queue.to_owned(),
            concurrency,
            retry: self.retry.clone(),
            grace,
        }
    }
}

/// A worker, built: its ops endpoint answering (not ready until it consumes) and its handler
/// ready. [`WorkerApp::run_until_stopped`] consumes.
#[derive(Debug)]
pub struct WorkerApp<H> {
    ops: OpsEndpoint,
    settings: ConsumerSettings,
    handler: H,
}

impl<H: Handler> WorkerApp<H> {
    /// Binds the ops endpoint at `ops_listen_addr` (OPS_LISTEN_ADDR) for a worker that will
    /// consume as `settings` say with `handler`.
    pub async fn build(
        ops_listen_addr: SocketAddr,
        settings: ConsumerSettings,
        handler: H,
    ) -> anyhow::Result<Self> {
        let ops = OpsEndpoint::bind(ops_listen_addr).await?;
        tracing::info!(addr = %ops.addr(), service = settings.service, "health and metrics listening");
        Ok(Self {
            ops,
            settings,
            handler,
        })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.addr()
    }

    /// What `/readyz` reports; a worker that consumes another queue beside this one adds a
    /// part for it ([`service_kit::ops::Readiness::another_part`]).
    pub fn readiness(&self) -> &service_kit::ops::Readiness {
        self.ops.readiness()
    }

    /// Consumes until `shutdown` fires, with `/readyz` true while consuming; then finishes (or
    /// hands back) the work in flight. When consuming ends (shutdown, or a failure) the ops
    /// endpoint stops with it, so the orchestrator sees the process go.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let readiness = self.ops.readiness().clone();
        let consumed = consumer::consume(self.settings, self.handler, readiness, shutdown).await;
        self.ops.stop().await?;
        consumed
    }
}
