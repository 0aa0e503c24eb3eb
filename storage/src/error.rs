//! The storage service's one error type and its one mapping to gRPC statuses. Clients get a
//! message that says what went wrong in their terms; database details go to the log only.

use std::path::PathBuf;
use tonic::{Code, Status};

/// Everything a storage request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The request is malformed; the message says how, in client-safe words.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such file or job, or it belongs to someone else (deliberately the same answer).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// An upload went past the size limit.
    #[error("file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// A download range that starts or ends past the end of the file.
    #[error("range {offset}+{length} is outside the file's {size} bytes")]
    RangeOutOfBounds {
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        length: u64,
        /// The file's size.
        size: u64,
    },
    /// An append that goes past its upload session's declared length.
    #[error("the append goes past the upload's declared length of {length} bytes")]
    PastLength {
        /// The session's length, in bytes.
        length: u64,
    },
    /// A job is not in the state a change needs (the compare-and-set lost, say).
    #[error("{0}")]
    FailedPrecondition(String),
    /// An idempotency key came back with another request than the one that first used it.
    #[error("the idempotency key was used for another request")]
    KeyReused,
    /// An idempotency key came back while its first request's job is still being recorded.
    #[error("a request with this idempotency key is still being handled; try again shortly")]
    KeyInFlight,
    /// Another append holds the upload session.
    #[error("another append to this upload is in progress; try again shortly")]
    Locked,
    /// An append's bytes do not match the checksum it came with; none of them were kept.
    #[error("the bytes do not match their checksum; they were not kept")]
    ChecksumMismatch,
    /// An upload session's bytes past `whole_to` are gone: a replica of an earlier version,
    /// running beside this one, stored the session's record without them. The session goes
    /// back to `whole_to`; this never reaches a client.
    #[error("the upload session's bytes past offset {whole_to} are gone")]
    TailLost {
        /// Where the session's bytes are whole.
        whole_to: u64,
    },
    /// The client broke its upload stream off; nothing was kept.
    #[error("upload stream ended with an error: {0}")]
    UploadAborted(String),
    /// MongoDB cannot be reached right now.
    #[error("MongoDB unavailable")]
    DatabaseUnavailable(#[source] mongodb::error::Error),
    /// The local backend's directory cannot be reached, or GridFS stopped taking bytes.
    #[error("{0} unavailable")]
    DiskUnavailable(&'static str, #[source] std::io::Error),
    /// A job changed under every attempt to change it.
    #[error("{0} kept changing under every attempt")]
    Contended(String),
    /// Any other MongoDB failure.
    #[error("MongoDB failed")]
    Database(#[source] mongodb::error::Error),
    /// A file of the local backend failed.
    #[error("local storage failed")]
    Io(#[from] std::io::Error),
    /// A record of the local backend does not parse (or cannot be written as JSON).
    #[error("record {} does not parse", .path.display())]
    Record {
        /// The record's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A task of the service panicked or was cancelled.
    #[error("a storage task did not finish")]
    Task(#[from] tokio::task::JoinError),
    /// Stored data contradicts itself (a chunk missing from a file, say), or a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<mongodb::error::Error> for StorageError {
    fn from(error: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        match *error.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. } => Self::DatabaseUnavailable(error),
            _ => Self::Database(error),
        }
    }
}

impl From<StorageError> for Status {
    fn from(error: StorageError) -> Self {
        match &error {
            StorageError::InvalidArgument(_) => Status::invalid_argument(error.to_string()),
            StorageError::NotFound(_) => Status::not_found(error.to_string()),
            StorageError::TooLarge { .. } => Status::resource_exhausted(error.to_string()),
            StorageError::RangeOutOfBounds { .. } | StorageError::PastLength { .. } => {
                Status::out_of_range(error.to_string())
            }
            StorageError::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
            StorageError::KeyReused => Status::already_exists(error.to_string()),
            StorageError::KeyInFlight => Status::aborted(error.to_string()),
            StorageError::UploadAborted(_) => Status::cancelled(error.to_string()),
            StorageError::Locked => Status::aborted(error.to_string()),
            StorageError::ChecksumMismatch => Status::data_loss(error.to_string()),
            StorageError::DatabaseUnavailable(_)
            | StorageError::DiskUnavailable(..)
            | StorageError::Contended(_) => {
                tracing::warn!(error = %service_kit::error::chain(&error), "storage backend unavailable");
                Status::new(Code::Unavailable, "storage temporarily unavailable")
            }
            StorageError::Database(_)
            | StorageError::Io(_)
            | StorageError::Record { .. }
            | StorageError::Task(_)
            | StorageError::TailLost { .. }
            | StorageError::Internal(_) => {
                tracing::error!(error = %service_kit::error::chain(&error), "request failed");
                Status::internal("internal error")
            }
        }
    }
}

/// Result of a storage operation.
pub type StorageResult<T> = Result<T, StorageError>;
