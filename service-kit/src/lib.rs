//! The runtime every mp3converter service needs, written once: the pieces of typed
//! configuration they share, secrets that never print (and their `_FILE` forms), telemetry, the
//! shutdown signal, the gRPC scaffolding (health + reflection), the ops endpoint (health +
//! `/metrics`), a TLS listener whose certificate reloads, and the request id that ties one
//! request's log lines together across services. How events travel between
//! services is the `messaging` crate's job.
//!
//! Each service's `lib.rs` follows the same shape: parse its config (flattening
//! [`config::TelemetryConfig`]), call [`telemetry::init`], build its parts, then serve until
//! [`shutdown::Shutdown`] fires.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod grpc;
pub mod grpc_tls;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod request_id;
pub mod secret;
pub mod secret_files;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use secret::Secret;
pub use shutdown::Shutdown;
