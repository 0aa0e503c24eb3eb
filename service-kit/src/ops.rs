//! The small HTTP endpoint every service but the gateway (which serves the same routes beside
//! its API) answers for Kubernetes probes and Prometheus: `/healthz` (the process is alive),
//! `/readyz` (it can do work) and `/metrics`.

use crate::Shutdown;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;

/// Whether a worker can do work right now (connected to its broker, say). Cheap to clone and
/// flip from anywhere. A worker that does several things (the notifier consumes two queues)
/// gives each its own part ([`Readiness::another_part`]): it is ready when every part is.
#[derive(Debug, Clone)]
pub struct Readiness {
    own: Arc<AtomicBool>,
    parts: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        let own = Arc::new(AtomicBool::new(false));
        Self {
            parts: Arc::new(Mutex::new(vec![own.clone()])),
            own,
        }
    }
}

impl Readiness {
    /// Not ready until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks this part ready or not.
    pub fn set(&self, ready: bool) {
        self.own.store(ready, Ordering::Relaxed);
    }

    /// Whether every part is ready.
    pub fn is_ready(&self) -> bool {
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .all(|part| part.load(Ordering::Relaxed))
    }

    /// A new part, not ready until told, without which the whole is not ready either.
    pub fn another_part(&self) -> Self {
        let own = Arc::new(AtomicBool::new(false));
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(own.clone());
        Self {
            own,
            parts: self.parts.clone(),
        }
    }
}

/// The ops routes, for serving alone or merging into a bigger router.
pub fn router(readiness: Readiness) -> Router {
    // Install the recorder now, so metrics recorded before the first scrape are kept.
    crate::metrics::prometheus();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

/// A service's ops endpoint, serving from the moment it is bound: `/healthz` answers at once,
/// `/readyz` says "not ready" until the service sets its [`Readiness`], so an orchestrator sees
/// a service that is still migrating or connecting as alive but not ready. It stops when
/// [`OpsEndpoint::stop`] is called, or when dropped.
#[derive(Debug)]
pub struct OpsEndpoint {
    addr: SocketAddr,
    readiness: Readiness,
    stop: Shutdown,
    serving: AbortOnDropHandle<std::io::Result<()>>,
}

impl OpsEndpoint {
    /// Binds `addr` (OPS_LISTEN_ADDR, naming the variable if it cannot) and starts serving.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::serve(crate::net::bind("OPS_LISTEN_ADDR", addr).await?)
    }

    /// Serves on `listener`, already bound (a gateway serves its ops routes with its API; tests
    /// bind port 0).
    pub fn serve(listener: TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let readiness = Readiness::new();
        let stop = Shutdown::new();
        let serving = AbortOnDropHandle::new(tokio::spawn(serve(
            listener,
            readiness.clone(),
            stop.clone(),
        )));
        Ok(Self {
            addr,
            readiness,
            stop,
            serving,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The readiness `/readyz` reports.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Stops accepting, lets open requests finish, and returns how serving ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.readiness.set(false);
        self.stop.trigger();
        Ok(self.serving.await??)
    }
}

/// Serves the ops routes on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(crate::net::nodelay_listener(listener), router(readiness))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Prometheus text exposition of this process's metrics.
pub async fn metrics() -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_ready_when_every_part_is() {
        let whole = Readiness::new();
        whole.set(true);
        assert!(whole.is_ready());
        let part = whole.another_part();
        assert!(!whole.is_ready(), "a new part is not ready yet");
        part.set(true);
        assert!(whole.is_ready() && part.is_ready());
        whole.set(false);
        assert!(!part.is_ready());
    }
}
