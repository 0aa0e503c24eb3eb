//! The auth service's one error type and its one mapping to gRPC statuses (a throttled login
//! carries its wait as `google.rpc.RetryInfo`, so the gateway can answer `Retry-After`). Messages that reach
//! clients say what happened without internal detail; the detail goes to the log.

use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Everything an auth request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request is malformed; the message says how, in client-safe words.
    #[error("{0}")]
    InvalidArgument(String),
    /// Registration for an e-mail that already has an account.
    #[error("an account with this e-mail already exists")]
    EmailTaken,
    /// Wrong password or unknown e-mail: deliberately the same answer.
    #[error("invalid e-mail or password")]
    InvalidCredentials,
    /// A token that is not valid for any reason (signature, algorithm, expiry, issuer, ...).
    #[error("invalid or expired token")]
    InvalidToken,
    /// Too many failed logins; the caller must wait.
    #[error("too many failed logins; try again in {retry_after_seconds} s")]
    Throttled {
        /// Seconds until a new attempt is accepted.
        retry_after_seconds: u64,
    },
    /// The database could not be reached.
    #[error("accounts database unavailable")]
    DatabaseUnavailable(#[source] sea_orm::DbErr),
    /// Any other database failure.
    #[error("database error")]
    Database(#[source] sea_orm::DbErr),
    /// The argon2 parameters were refused.
    #[error("argon2 parameters refused")]
    Argon2Parameters(#[source] argon2::Error),
    /// Hashing a password, or reading a stored hash, failed.
    #[error("{0}")]
    PasswordHash(&'static str, #[source] argon2::password_hash::Error),
    /// A task on the blocking pool panicked or was cancelled.
    #[error("a password task did not finish")]
    Task(#[from] tokio::task::JoinError),
    /// Signing a token failed.
    #[error("signing a token")]
    Signing(#[source] jsonwebtoken::errors::Error),
    /// Something that cannot happen did (a bug, or a database that changed under us).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<sea_orm::DbErr> for AuthError {
    fn from(error: sea_orm::DbErr) -> Self {
        use sea_orm::DbErr;
        match error {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Self::DatabaseUnavailable(error),
            other => Self::Database(other),
        }
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match &error {
            AuthError::InvalidArgument(_) => Status::invalid_argument(error.to_string()),
            AuthError::EmailTaken => Status::already_exists(error.to_string()),
            AuthError::InvalidCredentials | AuthError::InvalidToken => {
                Status::unauthenticated(error.to_string())
            }
            AuthError::Throttled {
                retry_after_seconds,
            } => Status::with_error_details(
                Code::ResourceExhausted,
                error.to_string(),
                ErrorDetails::with_retry_info(Some(Duration::from_secs(*retry_after_seconds))),
            ),
            AuthError::DatabaseUnavailable(_) => {
                tracing::error!(error = %service_kit::error::chain(&error), "request failed");
                Status::new(Code::Unavailable, "auth service temporarily unavailable")
            }
            AuthError::Database(_)
            | AuthError::Argon2Parameters(_)
            | AuthError::PasswordHash(..)
            | AuthError::Task(_)
            | AuthError::Signing(_)
            | AuthError::Internal(_) => {
                tracing::error!(error = %service_kit::error::chain(&error), "request failed");
                Status::internal("internal error")
            }
        }
    }
}
