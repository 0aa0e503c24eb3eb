//! One "conversion finished" event: e-mail the user once. The job records whether the user was
//! told; a redelivered or repeated event for a notified job sends nothing.

use crate::mail::{self, News};
use crate::mailer::{Mailer, SendError};
use clients::{Owner, StorageClient};
use lettre::message::Mailbox;
use messaging::events::Payload;
use messaging::{Handler, Outcome, Received};
use std::time::Duration;
use tonic::Code;
use tracing::Instrument;

/// Times recording "notified" is tried after the e-mail went out: a failure here would send the
/// e-mail again on the next delivery, so it is worth a few quick tries.
const MARK_ATTEMPTS: u32 = 3;

/// The notifier's handler of the mp3 queue.
#[derive(Debug, Clone)]
pub struct Notifier {
    storage: StorageClient,
    mailer: Mailer,
    mail_from: Mailbox,
    public_base_url: String,
}

impl Handler for Notifier {
    async fn handle(&self, received: Received) -> Outcome {
        let (job_id, news) = match received.event.payload {
            Some(Payload::ConversionSucceeded(done)) => (
                done.job_id,
                News::Ready {
                    mp3_id: done.mp3_id,
                    format: done.format,
                },
            ),
            Some(Payload::ConversionFailed(failed)) => (
                failed.job_id,
                News::Failed {
                    reason: failed.reason,
                },
            ),
            Some(Payload::WebhookEndpointDisabled(disabled)) => {
                let span =
                    tracing::info_span!("endpoint_disabled", endpoint_id = %disabled.endpoint_id);
                let letter = mail::endpoint_disabled_letter(
                    &disabled.endpoint_id,
                    &disabled.url,
                    &disabled.reason,
                );
                let about = format!("endpoint-disabled.{}", received.event.event_id);
                return self
                    .send(letter, &disabled.owner_email, &about)
                    .instrument(span)
                    .await;
            }
            _ => {
                return Outcome::DeadLetter(
                    "the mp3 queue carries only conversion outcomes and endpoint notices".into(),
                );
            }
        };
        let span = tracing::info_span!("notification", %job_id, attempt = received.attempt);
        self.notify(&job_id, news).instrument(span).await
    }
}

impl Notifier {
    /// A notifier sending through `mailer` from `mail_from`, linking to `public_base_url`.
    pub fn new(
        storage: StorageClient,
        mailer: Mailer,
        mail_from: Mailbox,
        public_base_url: String,
    ) -> Self {
        Self {
            storage,
            mailer,
            mail_from,
            public_base_url,
        }
    }

    async fn notify(&self, job_id: &str, news: News) -> Outcome {
        let job = match self.storage.job(job_id, &Owner::Any).await {
            Ok(job) => job,
            Err(status) if status.code() == Code::NotFound => {
                tracing::info!("job was deleted; no e-mail");
                return Outcome::Ack;
            }
            Err(status) => return Outcome::Retry(format!("reading the job: {}", status.message())),
        };
        if job.notified {
            metrics::counter!(crate::meters::DUPLICATES_SKIPPED).increment(1);
            tracing::info!("user was already told; no second e-mail");
            return Outcome::Ack;
        }
        let letter = mail::letter(&news, &job.original_filename, &self.public_base_url);
        match self
            .send(letter, &job.owner_email, &format!("job.{job_id}"))
            .await
        {
            Outcome::Ack => {}
            other => return other,
        }
        self.mark_notified(job_id).await;
        Outcome::Ack
    }

    /// Sends `letter`, which tells of `about`, to `to`: what the outcome is, for the queue.
    async fn send(&self, letter: mail::Letter, to: &str, about: &str) -> Outcome {
        let message = match mail::message(letter, &self.mail_from, to, about) {
            Ok(message) => message,
            Err(error) => {
                metrics::counter!(crate::meters::EMAILS_FAILED, "reason" => "unaddressable")
                    .increment(1);
                return Outcome::DeadLetter(error.to_string());
            }
        };
        match self.mailer.send(message).await {
            Ok(()) => {
                metrics::counter!(crate::meters::EMAILS_SENT).increment(1);
                tracing::info!("e-mail sent");
            }
            Err(SendError::Permanent(reason)) => {
                metrics::counter!(crate::meters::EMAILS_FAILED, "reason" => "refused").increment(1);
                return Outcome::DeadLetter(reason);
            }
            Err(SendError::Transient(reason)) => {
                metrics::counter!(crate::meters::EMAILS_FAILED, "reason" => "transient")
                    .increment(1);
                return Outcome::Retry(reason);
            }
        }
        Outcome::Ack
    }

    async fn mark_notified(&self, job_id: &str) {
        for attempt in 1..=MARK_ATTEMPTS {
            match self.storage.mark_notified(job_id).await {
                Ok(_) => return,
                Err(status) if status.code() == Code::NotFound => return,
                Err(status) => {
                    tracing::warn!(
                        attempt,
                        error = status.message(),
                        "could not record the notification"
                    );
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        tracing::error!(
            "the e-mail went out but the job does not say so; a redelivery would send it again"
        );
    }
}
