//! Webhooks as the Standard Webhooks specification describes them (the spec svix-server
//! follows): what delivering one takes, apart from where endpoints are kept and how messages
//! queue, so that the notifier (which delivers) and the gateway (which checks an endpoint's URL
//! when it is registered) share one implementation.
//!
//! - [`config`]: `WEBHOOK_ALLOWED_NETWORKS` and `WEBHOOK_HTTPS_ONLY`, for both services.
//! - [`events`]: the event types an endpoint can ask for.
//! - [`secret`]: endpoint secrets (`whsec_…`), made here and never printed.
//! - [`signature`]: the `webhook-signature` header, one signature per live secret.
//! - [`destination`]: the guard that keeps requests off loopback, private, link-local and other
//!   non-public addresses, at registration and at each delivery.
//! - [`resolver`]: the HTTP client's name resolution through that guard.
//! - [`delivery`]: one attempt and what its answer means (delivered, gone, try again).
//! - [`schedule`]: when a failed message is tried again.

#![forbid(unsafe_code)]

pub mod config;
pub mod delivery;
pub mod destination;
pub mod events;
pub mod resolver;
pub mod schedule;
pub mod secret;
pub mod signature;

pub use config::WebhookDestinations;
pub use delivery::{Attempt, AttemptOutcome, DELIVERY_TIMEOUT, Deliverer, Message, Verdict};
pub use destination::{AllowedNetworks, DestinationPolicy, Refusal};
pub use schedule::RetrySchedule;
pub use secret::SigningSecret;
pub use url::Url;
