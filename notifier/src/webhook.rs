//! The webhook channel: conversion outcomes as signed HTTP requests to the endpoints their
//! owners registered (Standard Webhooks), on a queue of its own so a slow or dead receiver
//! never delays an e-mail, nor an SMTP outage a webhook.
//!
//! Two kinds of message travel on that queue. An outcome (routed there by the outcome
//! exchange) is turned into one [`WebhookDue`] per endpoint that asked for its type, and
//! acknowledged; each `WebhookDue` is then delivered, and tried again on the webhook schedule
//! when the receiver fails, on its own, so one failing endpoint neither holds up nor repeats
//! another's delivery. Its id, derived from the outcome and the endpoint, is the
//! `webhook-id` of every attempt: an outcome handled twice makes the same message twice, which
//! a receiver recognises.

use clients::{Owner, StorageClient};
use messaging::events::{self, Event, Payload, WebhookDue, WebhookEndpointDisabled};
use messaging::{Handler, Outcome, Received, RetryConfig};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};
use tonic::Code;
use tracing::Instrument;
use webhooks::{Attempt, AttemptOutcome, Deliverer, Message, SigningSecret, Verdict};

/// How the webhook queue tries a failed delivery again on `schedule`: the queue holds the
/// message between attempts, in delay queues named after the delays (which a test names too,
/// to delete them).
pub fn retry_on(schedule: &webhooks::RetrySchedule) -> RetryConfig {
    RetryConfig::on_schedule(schedule.retry_delays(), schedule.jitter_percent())
}

/// The notifier's handler of the webhook queue.
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    storage: StorageClient,
    deliverer: Deliverer,
    webhook_queue: String,
    mail_queue: String,
    public_base_url: String,
    disable_after: Option<Duration>,
    schedule: webhooks::RetrySchedule,
}

impl Handler for WebhookChannel {
    async fn handle(&self, received: Received) -> Outcome {
        let span = tracing::info_span!("webhook", attempt = received.attempt);
        match &received.event.payload {
            Some(Payload::WebhookDue(due)) => self.deliver(due, &received).instrument(span).await,
            Some(Payload::ConversionSucceeded(_) | Payload::ConversionFailed(_)) => {
                self.fan_out(&received).instrument(span).await
            }
            _ => Outcome::DeadLetter(
                "the webhook queue carries only conversion outcomes and webhook messages".into(),
            ),
        }
    }
}

impl WebhookChannel {
    /// A channel that finds endpoints in `storage`, sends with `deliverer`, puts each
    /// endpoint's message on the webhook queue of `queues`, links downloads under
    /// `public_base_url`, disables an endpoint that fails for `disable_after` without a success
    /// (`None`: never), tells its owner through the e-mail channel's queue, and waits at least
    /// what `schedule`'s floor says before trying a receiver that asked for a pause again.
    pub fn new(
        storage: StorageClient,
        deliverer: Deliverer,
        queues: &messaging::QueueConfig,
        public_base_url: String,
        disable_after: Option<Duration>,
        schedule: webhooks::RetrySchedule,
    ) -> Self {
        Self {
            storage,
            deliverer,
            webhook_queue: queues.webhook_queue.clone(),
            mail_queue: queues.mp3_queue.clone(),
            public_base_url,
            disable_after,
            schedule,
        }
    }

    /// One message per endpoint of the job's owner that asked for this outcome's type.
    async fn fan_out(&self, received: &Received) -> Outcome {
        let event = &received.event;
        let Some(event_type) = events::outcome_type(event) else {
            return Outcome::DeadLetter("not a conversion outcome".into());
        };
        let owner_id = match &event.payload {
            Some(Payload::ConversionSucceeded(done)) => &done.owner_id,
            Some(Payload::ConversionFailed(failed)) => &failed.owner_id,
            _ => return Outcome::DeadLetter("not a conversion outcome".into()),
        };
        let endpoints = match self.storage.webhook_endpoints(owner_id).await {
            Ok(endpoints) => endpoints,
            Err(status) => {
                return Outcome::Retry(format!(
                    "listing the webhook endpoints: {}",
                    status.message()
                ));
            }
        };
        let body = self.body(event, event_type);
        let wanted = |endpoint: &&clients::storage::WebhookEndpoint| {
            endpoint.disabled_at.is_none()
                && (endpoint.events.is_empty() || endpoint.events.iter().any(|e| e == event_type))
        };
        for endpoint in endpoints.iter().filter(wanted) {
            let due = WebhookDue {
                message_id: message_id(&event.event_id, &endpoint.id),
                endpoint_id: endpoint.id.clone(),
                event_type: event_type.to_owned(),
                body: body.clone(),
            };
            let mut message = events::new_event(Payload::WebhookDue(due));
            message.request_id.clone_from(&event.request_id);
            if let Err(error) = received
                .publisher
                .publish(&self.webhook_queue, &message)
                .await
            {
                // Those already queued are queued again on the retry, with the same ids.
                return Outcome::Retry(format!("queueing a webhook message: {error}"));
            }
            metrics::counter!(crate::meters::WEBHOOKS_DUE).increment(1);
            tracing::info!(endpoint_id = %endpoint.id, event_type, "webhook message queued");
        }
        Outcome::Ack
    }

    /// The JSON body of `event`'s webhook: `{type, timestamp, data}`.
    fn body(&self, event: &Event, event_type: &str) -> Vec<u8> {
        let occurred = event
            .occurred_at
            .and_then(|at| SystemTime::try_from(at).ok())
            .unwrap_or_else(SystemTime::now);
        let data = match &event.payload {
            Some(Payload::ConversionSucceeded(done)) => json!({
                "job_id": done.job_id,
                "status": "done",
                "mp3_id": done.mp3_id,
                "format": done.format,
                "original_filename": done.original_filename,
                "download_url": format!("{}/download/{}", self.public_base_url.trim_end_matches('/'), done.mp3_id),
            }),
            Some(Payload::ConversionFailed(failed)) => json!({
                "job_id": failed.job_id,
                "status": "failed",
                "reason": failed.reason,
                "original_filename": failed.original_filename,
            }),
            _ => json!({}),
        };
        webhooks::events::body(event_type, occurred, data)
    }

    /// One attempt at one endpoint's message, logged with the endpoint.
    async fn deliver(&self, due: &WebhookDue, received: &Received) -> Outcome {
        let endpoint = match self
            .storage
            .webhook_endpoint(&due.endpoint_id, &Owner::Any)
            .await
        {
            Ok(endpoint) => endpoint,
            Err(status) if status.code() == Code::NotFound => {
                tracing::info!(endpoint_id = %due.endpoint_id, "the endpoint was deleted; dropping its message");
                return Outcome::Ack;
            }
            Err(status) => {
                return Outcome::Retry(format!(
                    "reading the webhook endpoint: {}",
                    status.message()
                ));
            }
        };
        if endpoint.disabled_at.is_some() {
            tracing::info!(endpoint_id = %endpoint.id, "the endpoint is disabled; dropping its message");
            return Outcome::Ack;
        }
        let secrets: Vec<SigningSecret> = endpoint
            .secrets
            .iter()
            .filter_map(|secret| SigningSecret::parse(&secret.secret).ok())
            .collect();
        let message = Message::stamped_now(due.message_id.clone(), due.body.clone().into());
        let attempt = self
            .deliverer
            .attempt(&endpoint.url, &secrets, &message)
            .await;
        let verdict = attempt.verdict();
        let label = match verdict {
            Verdict::Delivered => "delivered",
            Verdict::Gone => "gone",
            Verdict::Retry { .. } => "retry",
        };
        metrics::counter!(crate::meters::WEBHOOK_ATTEMPTS, "verdict" => label).increment(1);
        self.log_attempt(due, &attempt, &verdict, received).await;
        match verdict {
            Verdict::Delivered => Outcome::Ack,
            Verdict::Gone => {
                tracing::warn!(endpoint_id = %endpoint.id, "the receiver answered 410 Gone; the endpoint is disabled");
                Outcome::Ack
            }
            Verdict::Retry { .. } => Outcome::RetryNoSooner(
                format!(
                    "webhook to endpoint {} not delivered: {:?}",
                    endpoint.id, attempt.outcome
                ),
                self.schedule.floor(&verdict),
            ),
        }
    }
}

impl WebhookChannel {
    /// Logs `attempt` with its endpoint, which updates the endpoint's health; when that
    /// disabled the endpoint, its owner is told by e-mail. The log is for people: a failure to
    /// write it is logged and does not change what happens to the message.
    async fn log_attempt(
        &self,
        due: &WebhookDue,
        attempt: &Attempt,
        verdict: &Verdict,
        received: &Received,
    ) {
        let (status_code, error) = match &attempt.outcome {
            AttemptOutcome::Answered { status, .. } => (u32::from(*status), String::new()),
            AttemptOutcome::Refused(refusal) => (0, refusal.to_string()),
            AttemptOutcome::TimedOut => (0, "the receiver did not answer in time".to_owned()),
            AttemptOutcome::Unreachable(why) => (0, why.clone()),
        };
        let logged = clients::storage::WebhookAttempt {
            message_id: due.message_id.clone(),
            event_type: due.event_type.clone(),
            attempted_at: Some(prost_types::Timestamp::from(attempt.started)),
            duration_ms: u32::try_from(attempt.duration.as_millis()).unwrap_or(u32::MAX),
            status_code,
            error,
            delivered: *verdict == Verdict::Delivered,
            // The consumer dead-letters a message whose last attempt failed.
            given_up: received.last_attempt && matches!(verdict, Verdict::Retry { .. }),
            body: due.body.clone().into(),
        };
        let gone = *verdict == Verdict::Gone;
        let recorded = self
            .storage
            .record_webhook_attempt(&due.endpoint_id, logged, gone, self.disable_after)
            .await;
        let endpoint = match recorded {
            Ok((endpoint, true)) => endpoint,
            Ok((_, false)) => return,
            Err(status) => {
                tracing::warn!(
                    error = status.message(),
                    "could not log the webhook attempt"
                );
                return;
            }
        };
        let notice = WebhookEndpointDisabled {
            endpoint_id: endpoint.id.clone(),
            owner_email: endpoint.owner_email.clone(),
            url: endpoint.url.clone(),
            reason: endpoint.disabled_reason.clone(),
        };
        let event = events::new_event(Payload::WebhookEndpointDisabled(notice));
        if let Err(error) = received.publisher.publish(&self.mail_queue, &event).await {
            tracing::error!(%error, endpoint_id = %endpoint.id, "the endpoint was disabled but its owner could not be told");
        }
    }
}

/// The `webhook-id` of `event_id`'s message to `endpoint_id`: the same whenever it is made.
fn message_id(event_id: &str, endpoint_id: &str) -> String {
    let digest = Sha256::digest(format!("{event_id}/{endpoint_id}"));
    format!("msg_{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_is_the_same_for_the_same_outcome_and_endpoint_only() {
        let id = message_id("event-1", "endpoint-1");
        assert_eq!(id, message_id("event-1", "endpoint-1"));
        assert_ne!(id, message_id("event-1", "endpoint-2"));
        assert_ne!(id, message_id("event-2", "endpoint-1"));
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
    }
}
