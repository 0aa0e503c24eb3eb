//! One delivery attempt of one message to one endpoint, and what its answer means. The
//! request carries the Standard Webhooks headers (`webhook-id`, the same on every attempt of a
//! message, so the receiver can drop a repeat; `webhook-timestamp`; `webhook-signature`). It
//! goes only to checked addresses, follows no redirect (a redirect could lead anywhere, the
//! guard's networks included), goes through no proxy, and gives up after the timeout (15 s by
//! default). The receiver's body is not read: only its status matters.

use crate::destination::{DestinationPolicy, Refusal};
use crate::resolver::GuardedResolver;
use crate::secret::SigningSecret;
use crate::signature::signature_header;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a receiver has to answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// A message as it is sent: the same id and timestamp on every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `webhook-id`: unique per message, the receiver's idempotency key.
    pub id: String,
    /// `webhook-timestamp`: seconds since the Unix epoch.
    pub timestamp: i64,
    /// The JSON body, signed byte for byte.
    pub body: Bytes,
}

impl Message {
    /// A message with a new id, stamped now.
    pub fn new(body: Bytes) -> Self {
        Self::stamped_now(new_message_id(), body)
    }

    /// Message `id`, stamped now: every attempt of a message carries a fresh timestamp, since
    /// receivers refuse old ones as replays.
    pub fn stamped_now(id: String, body: Bytes) -> Self {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        Self {
            id,
            timestamp,
            body,
        }
    }
}

/// A new random `webhook-id`: `msg_` and 32 hex digits.
pub fn new_message_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("msg_{hex}")
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// When it started.
    pub started: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The receiver answered with this status.
    Answered {
        /// The HTTP status.
        status: u16,
        /// What its `Retry-After` asked for, if it said.
        retry_after: Option<Duration>,
    },
    /// Nothing was sent: the destination is not allowed (now).
    Refused(Refusal),
    /// The receiver did not answer in time.
    TimedOut,
    /// No connection, or it broke: why, for the deliveries log.
    Unreachable(String),
}

/// What an attempt means for the message and its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered: 2xx.
    Delivered,
    /// 410 Gone: the receiver wants no more; the endpoint is disabled.
    Gone,
    /// Anything else: tried again on the schedule.
    Retry {
        /// A `Retry-After` the receiver sent with a 429 or 5xx.
        retry_after: Option<Duration>,
        /// The receiver is overwhelmed (a timeout or 429): wait at least the schedule's least
        /// wait for that.
        slow_down: bool,
    },
}

impl Attempt {
    /// What this attempt means.
    pub fn verdict(&self) -> Verdict {
        match &self.outcome {
            AttemptOutcome::Answered { status, .. } if (200..300).contains(status) => {
                Verdict::Delivered
            }
            AttemptOutcome::Answered { status: 410, .. } => Verdict::Gone,
            AttemptOutcome::Answered {
                status,
                retry_after,
            } => Verdict::Retry {
                retry_after: (*status == 429 || *status >= 500)
                    .then_some(*retry_after)
                    .flatten(),
                slow_down: *status == 429,
            },
            AttemptOutcome::TimedOut => Verdict::Retry {
                retry_after: None,
                slow_down: true,
            },
            AttemptOutcome::Refused(_) | AttemptOutcome::Unreachable(_) => Verdict::Retry {
                retry_after: None,
                slow_down: false,
            },
        }
    }
}

/// Sends messages to endpoints. Cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    policy: Arc<DestinationPolicy>,
}

impl Deliverer {
    /// A deliverer that sends only where `policy` allows and waits `timeout` for an answer.
    pub fn new(policy: DestinationPolicy, timeout: Duration) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .dns_resolver(Arc::new(GuardedResolver::new(policy.clone())))
            .user_agent(concat!("mp3converter-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, policy })
    }

    /// The policy deliveries follow.
    pub fn policy(&self) -> &DestinationPolicy {
        &self.policy
    }

    /// Sends `message`, signed with each of `secrets`, to `url`.
    pub async fn attempt(
        &self,
        url: &str,
        secrets: &[SigningSecret],
        message: &Message,
    ) -> Attempt {
        let started = SystemTime::now();
        let clock = Instant::now();
        let outcome = self.send(url, secrets, message).await;
        let attempt = Attempt {
            started,
            duration: clock.elapsed(),
            outcome,
        };
        tracing::info!(
            message_id = %message.id,
            duration_ms = attempt.duration.as_millis() as u64,
            outcome = ?attempt.outcome,
            "webhook attempt"
        );
        attempt
    }

    async fn send(
        &self,
        url: &str,
        secrets: &[SigningSecret],
        message: &Message,
    ) -> AttemptOutcome {
        // An IP literal never reaches the resolver, so it is checked here; a name is checked
        // as it is resolved.
        let url = match self.policy.check_url(url) {
            Ok(url) => url,
            Err(refusal) => return AttemptOutcome::Refused(refusal),
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let values = [
            ("webhook-id", message.id.clone()),
            ("webhook-timestamp", message.timestamp.to_string()),
            (
                "webhook-signature",
                signature_header(secrets, &message.id, message.timestamp, &message.body),
            ),
        ];
        for (name, value) in values {
            match HeaderValue::from_str(&value) {
                Ok(value) => {
                    headers.insert(name, value);
                }
                Err(_) => {
                    return AttemptOutcome::Unreachable(format!("the {name} cannot be sent"));
                }
            }
        }
        let sent = self
            .client
            .post(url)
            .headers(headers)
            .body(message.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => AttemptOutcome::Answered {
                status: response.status().as_u16(),
                retry_after: response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(retry_after),
            },
            Err(error) if error.is_timeout() => AttemptOutcome::TimedOut,
            Err(error) => match refusal_in(&error) {
                Some(refusal) => AttemptOutcome::Refused(refusal),
                None => AttemptOutcome::Unreachable(error_chain(&error)),
            },
        }
    }
}

/// A `Retry-After` in seconds, or as an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The guard's refusal, if that is why the request failed.
fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(refusal) = error.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        source = error.source();
    }
    None
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(error) = source {
        text.push_str(": ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, retry_after: Option<u64>) -> Verdict {
        Attempt {
            started: SystemTime::now(),
            duration: Duration::ZERO,
            outcome: AttemptOutcome::Answered {
                status,
                retry_after: retry_after.map(Duration::from_secs),
            },
        }
        .verdict()
    }

    #[test]
    fn what_each_answer_means() {
        assert_eq!(answered(200, None), Verdict::Delivered);
        assert_eq!(answered(204, None), Verdict::Delivered);
        assert_eq!(answered(410, None), Verdict::Gone);
        let retry = |retry_after: Option<u64>, slow_down| Verdict::Retry {
            retry_after: retry_after.map(Duration::from_secs),
            slow_down,
        };
        assert_eq!(answered(302, None), retry(None, false));
        assert_eq!(answered(404, Some(30)), retry(None, false));
        assert_eq!(answered(429, Some(30)), retry(Some(30), true));
        assert_eq!(answered(503, Some(30)), retry(Some(30), false));
        assert_eq!(answered(500, None), retry(None, false));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        let waited = retry_after(&in_a_minute).unwrap();
        assert!(
            waited > Duration::from_secs(55) && waited <= Duration::from_secs(61),
            "{waited:?}"
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn messages_get_distinct_ids() {
        let (a, b) = (Message::new(Bytes::new()), Message::new(Bytes::new()));
        assert_ne!(a.id, b.id);
        assert!(a.id.starts_with("msg_") && a.id.len() == 36, "{}", a.id);
    }
}
