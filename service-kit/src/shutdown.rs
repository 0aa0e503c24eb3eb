//! One shutdown signal for the whole process. SIGTERM (Kubernetes) and Ctrl-C both trigger it;
//! every server and consumer watches the same [`Shutdown`] to stop accepting work and drain.

use tokio_util::sync::CancellationToken;

/// A cloneable handle that fires once, when the process should stop.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A handle that fires only when [`Shutdown::trigger`] is called (tests use this).
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle that also fires on SIGTERM or Ctrl-C.
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; draining");
            trigger.trigger();
        });
        shutdown
    }

    /// Fires the signal.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves when the signal fires.
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }

    /// A child handle: fires with this one, and can be fired alone (to stop one part).
    pub fn child(&self) -> Self {
        Self(self.0.child_token())
    }
}

impl From<CancellationToken> for Shutdown {
    fn from(token: CancellationToken) -> Self {
        Self(token)
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::Shutdown;

    #[tokio::test]
    async fn child_fires_with_parent_but_not_the_other_way() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(child.is_triggered());
        assert!(!parent.is_triggered());

        let second_child = parent.child();
        parent.trigger();
        second_child.wait().await;
        assert!(second_child.is_triggered());
    }
}
