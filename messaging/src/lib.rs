//! How events travel between the services that do not call each other: the gateway announces
//! an upload, a converter announces its outcome, the notifier tells the user. Everything that
//! knows about queues lives here, so the services only say what to publish and how to handle
//! what they consume.
//!
//! - [`events`]: the one wire format (a protobuf `Event`), encoded and decoded.
//! - [`config`]: where the queues are (RabbitMQ at `AMQP_URL`, or the embedded queue file),
//!   their names, and the retry policy.
//! - [`publisher`]: one reconnecting publisher, for every service that publishes.
//! - [`consumer`]: one consumer interface ([`consumer::Handler`]) and its rules (concurrency,
//!   retries with their delays, dead letters, draining at shutdown), over either transport:
//! - [`amqp`]: RabbitMQ (topology, confirmed publishes, delay queues, the consuming session);
//! - [`embedded`]: the SQLite queue file that stands in for RabbitMQ on one machine.
//! - [`worker`]: what the converter and the notifier share as applications.

#![forbid(unsafe_code)]

pub mod amqp;
pub mod config;
pub mod consumer;
pub mod embedded;
pub mod events;
pub mod meters;
pub mod publisher;
pub mod worker;

pub use config::{BrokerConfig, QueueConfig, RetryConfig};
pub use consumer::{ConsumerSettings, Handler, Outcome, Received};
pub use publisher::{PublishError, Publisher};
pub use worker::{WorkerApp, WorkerLinks};
