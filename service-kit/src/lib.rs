//! What every mp3converter service needs, written once: the pieces of typed configuration they
//! share, secrets that never print, telemetry, the shutdown signal, the gRPC scaffolding
//! (health + reflection), the ops endpoint of the workers (health + `/metrics`), the queue
//! names and event codec that the gateway, converter and notifier agree on, the choice between
//! RabbitMQ and the embedded queue, and the consumer loop the two workers share.
//!
//! Each service's `lib.rs` follows the same shape: parse its config (flattening
//! [`config::TelemetryConfig`]), call [`telemetry::init`], build its parts, then serve until
//! [`shutdown::Shutdown`] fires.

#![forbid(unsafe_code)]

pub mod broker;
pub mod config;
pub mod consumer;
pub mod embedded_queue;
pub mod events;
pub mod grpc;
pub mod messaging;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod queues;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

pub use secret::Secret;
pub use shutdown::Shutdown;
