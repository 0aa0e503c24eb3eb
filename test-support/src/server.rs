//! Running something until told to stop, inside the test process: a service (see
//! [`crate::app::Running`]), or a scaffolding piece that has no `App` of its own (a bare gRPC
//! server).

use service_kit::Shutdown;
use std::future::Future;
use tokio::task::JoinHandle;

/// A task that runs until its [`Shutdown`] fires. Dropping it fires the shutdown;
/// [`Spawned::stop`] also waits for the task to finish draining.
#[derive(Debug)]
pub struct Spawned {
    shutdown: Shutdown,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Spawned {
    /// Spawns `run(shutdown)`.
    pub fn run<F, Fut>(run: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Self {
            shutdown,
            task: Some(task),
        }
    }

    /// Waits until `url` answers 200, failing if the task ends first (with its error) or
    /// `within` passes.
    pub async fn wait_until_answers(
        &mut self,
        url: &str,
        within: std::time::Duration,
    ) -> anyhow::Result<()> {
        // As a kubelet probes HTTPS: whether the server answers, not whom its certificate
        // names (the tests check that themselves).
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()?;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.task.as_ref().is_some_and(|task| task.is_finished()) {
                let task = self.task.take().expect("checked above");
                return Err(match crate::app::joined(task).await {
                    Err(error) => error.context("the service stopped before it was up"),
                    Ok(()) => anyhow::anyhow!("the service returned before it was up"),
                });
            }
            let answered = http
                .get(url)
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await;
            if answered.is_ok_and(|response| response.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("{url} did not answer 200 within {within:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Fires the shutdown and waits for the task to return, with its result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        match self.task.take() {
            Some(task) => crate::app::joined(task).await,
            None => Ok(()),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
