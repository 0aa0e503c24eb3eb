//! Starting a service on port 0 inside the test process, the same code production runs.

use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

/// A service running on a free port of 127.0.0.1. Dropping it fires the service's shutdown
/// signal; [`TestServer::stop`] also waits for the service to finish draining.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Binds 127.0.0.1:0 and runs `serve(listener, shutdown)` in the background. `serve` is a
    /// service's own entry point (its `lib.rs`), given the listener and the token that stops it.
    pub async fn start<F, Fut, E>(serve: F) -> anyhow::Result<Self>
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<anyhow::Error>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let running = serve(listener, shutdown.clone());
        let task = tokio::spawn(async move { running.await.map_err(Into::into) });
        Ok(Self {
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for HTTP clients and tonic channels.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A gRPC channel to the service (connected eagerly, so a refused connection is an error).
    pub async fn grpc_channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        Ok(tonic::transport::Endpoint::from_shared(self.url())?
            .connect()
            .await?)
    }

    /// A gRPC channel once the service reports SERVING through its health service, for
    /// services that do work (migrations, say) before they serve. A connection alone proves
    /// nothing: the listener is bound before that work starts, so the kernel accepts at once.
    /// If the service stops first, its error is returned.
    pub async fn ready_grpc_channel(
        &mut self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<tonic::transport::Channel> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.task.as_ref().is_some_and(|task| task.is_finished()) {
                let task = self.task.take().expect("checked above");
                return Err(match task.await {
                    Ok(Err(error)) => error.context("the service stopped before serving"),
                    Ok(Ok(())) => anyhow::anyhow!("the service returned before serving"),
                    Err(join) => anyhow::anyhow!("the service panicked: {join}"),
                });
            }
            if let Ok(channel) = self.grpc_channel().await {
                // Bounded, so a service that never starts serving cannot outlast the deadline.
                let health = crate::grpc::health_status(channel.clone(), "");
                let answered =
                    tokio::time::timeout(std::time::Duration::from_secs(1), health).await;
                if matches!(answered, Ok(Ok(ServingStatus::Serving))) {
                    return Ok(channel);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the service did not answer within {timeout:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Fires the shutdown signal and waits for the service to return, with its result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
