//! Typed clients of the two gRPC services other parts call: [`StorageClient`] and
//! [`AuthClient`]. Each method is one thing a caller does (claim a job, mark it done, fetch a
//! file, log in), so a call site reads as what it means rather than as the request it builds.
//! Every call gets the deadline of its kind and carries the request id of the HTTP request it
//! serves (`service_kit::request_id`), so one id ties the gateway's log lines to auth's and storage's.
//!
//! Errors stay [`tonic::Status`]: each caller maps them once, to HTTP (the gateway) or to what
//! happens to a job (the workers). An answer missing a field the contract promises is
//! `INTERNAL`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod storage;

pub use auth::AuthClient;
pub use storage::{Append, CreatedJob, Owner, Page, StorageClient, Upload};

/// Largest gRPC message taken from or sent to storage (chunks are a few hundred KiB).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// The field the contract promises an answer carries; `INTERNAL` when `rpc` answered without it.
fn required<T>(field: Option<T>, rpc: &str, what: &str) -> Result<T, tonic::Status> {
    field.ok_or_else(|| tonic::Status::internal(format!("{rpc} answered without {what}")))
}
