//! The storage service's one error type and its one mapping to gRPC statuses. Clients get a
//! message that says what went wrong in their terms; database details go to the log only.

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
    /// A job is not in the state a change needs (the compare-and-set lost, say).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The client broke its upload stream off; nothing was kept.
    #[error("upload stream ended with an error: {0}")]
    UploadAborted(String),
    /// The database or disk behind the service cannot be reached right now.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected backend failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StorageError {
    /// An unexpected failure, with its detail kept for the log.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<mongodb::error::Error> for StorageError {
    fn from(error: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        match *error.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. } => Self::Unavailable(error.to_string()),
            _ => Self::internal(error),
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(error: std::io::Error) -> Self {
        Self::internal(error)
    }
}

impl From<StorageError> for Status {
    fn from(error: StorageError) -> Self {
        match &error {
            StorageError::InvalidArgument(_) => Status::invalid_argument(error.to_string()),
            StorageError::NotFound(_) => Status::not_found(error.to_string()),
            StorageError::TooLarge { .. } => Status::resource_exhausted(error.to_string()),
            StorageError::RangeOutOfBounds { .. } => Status::out_of_range(error.to_string()),
            StorageError::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
            StorageError::UploadAborted(_) => Status::cancelled(error.to_string()),
            StorageError::Unavailable(_) => {
                tracing::warn!(error = %error, "storage backend unavailable");
                Status::new(Code::Unavailable, "storage temporarily unavailable")
            }
            StorageError::Internal(_) => {
                tracing::error!(error = %error, "request failed");
                Status::internal("internal error")
            }
        }
    }
}

/// Result of a storage operation.
pub type StorageResult<T> = Result<T, StorageError>;
