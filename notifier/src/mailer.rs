//! Where e-mails go: an SMTP server (configured by one URL: none, STARTTLS or TLS, optional
//! login), or, as the embedded default, `.eml` files in an outbox directory. Failures are
//! sorted once into the ones worth retrying and the ones that never will succeed.

use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::PathBuf;
use std::time::Duration;

/// Why an e-mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused it for good (a 5xx answer: no such mailbox, say).
    #[error("the mail server refused the message: {0}")]
    Permanent(String),
    /// It may work later (connection refused, a 4xx answer, a timeout, a full disk).
    #[error("the message could not be sent now: {0}")]
    Transient(String),
}

/// The configured transport.
#[derive(Debug, Clone)]
pub enum Mailer {
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a directory.
    Outbox(AsyncFileTransport<Tokio1Executor>),
}

impl Mailer {
    /// An SMTP transport from an `smtp://` or `smtps://` URL.
    pub fn smtp(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|error| anyhow::anyhow!("SMTP_URL is not a usable SMTP URL: {error}"))?
            .timeout(Some(timeout))
            .build();
        Ok(Self::Smtp(transport))
    }

    /// The outbox in `dir`, created if missing.
    pub fn outbox(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|error| {
            anyhow::anyhow!("cannot create the outbox {}: {error}", dir.display())
        })?;
        Ok(Self::Outbox(AsyncFileTransport::new(dir)))
    }

    /// Sends `message`.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match self {
            Self::Smtp(transport) => transport.send(message).await.map(drop).map_err(|error| {
                // The whole chain: lettre's top message alone often hides the server's answer.
                let reason = service_kit::error::chain(&error);
                if error.is_permanent() {
                    SendError::Permanent(reason)
                } else {
                    SendError::Transient(reason)
                }
            }),
            Self::Outbox(transport) => transport
                .send(message)
                .await
                .map(drop)
                .map_err(|error| SendError::Transient(service_kit::error::chain(&error))),
        }
    }
}
