//! The gateway's one error type and its one mapping to HTTP: every error is a JSON body
//! `{"error": {"code", "message"}}` with the status that fits. What went wrong inside (a gRPC
//! status, a broker error) is logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;

/// tus's status for an append whose bytes do not match their checksum.
pub const CHECKSUM_MISMATCH: StatusCode = match StatusCode::from_u16(460) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// Seconds a client is told to wait when a dependency is down.
const RETRY_AFTER_SECONDS: &str = "5";

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input: the message says what, in the client's terms.
    #[error("{0}")]
    BadRequest(String),
    /// No usable bearer token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Login with a wrong e-mail or password (or no usable Basic credentials).
    #[error("{0}")]
    BadCredentials(&'static str),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such thing, or not the caller's.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The thing exists already.
    #[error("{0}")]
    Conflict(String),
    /// It was there, and is no more (an upload that expired).
    #[error("{0}")]
    Gone(String),
    /// A precondition of the request's headers does not hold (another tus version).
    #[error("{0}")]
    PreconditionFailed(String),
    /// Someone else is changing the thing right now.
    #[error("{0}")]
    Locked(String),
    /// An upload's bytes do not match the checksum they came with (tus's 460).
    #[error("the bytes do not match their Upload-Checksum; they were not kept")]
    ChecksumMismatch,
    /// Well-formed, but it contradicts what the server holds (an idempotency key used for
    /// another request).
    #[error("{0}")]
    Unprocessable(String),
    /// The upload is over the limit.
    #[error("the upload is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// Not a kind of content the endpoint takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A `Range` outside the file.
    #[error("the requested range is outside the file's {size} bytes")]
    RangeNotSatisfiable {
        /// The file's size.
        size: u64,
    },
    /// Too many attempts; try again later.
    #[error("too many attempts; try again in {retry_after_seconds} s")]
    TooManyRequests {
        /// Seconds to wait.
        retry_after_seconds: u64,
    },
    /// A service the request needs is down or overloaded.
    #[error("{dependency} is temporarily unavailable")]
    Unavailable {
        /// Which one, in words for the client.
        dependency: &'static str,
        /// What happened, for the log.
        #[source]
        cause: BoxError,
    },
    /// A bug, or a dependency answering nonsense.
    #[error("internal error: {what}")]
    Internal {
        /// What failed.
        what: &'static str,
        /// Why, for the log.
        #[source]
        cause: BoxError,
    },
}

impl ApiError {
    /// The error a JSON body that could not be read means: 415 without the JSON content type,
    /// 413 over the limit, else 400 saying what was `expected`.
    pub fn from_json_rejection(
        rejection: axum::extract::rejection::JsonRejection,
        expected: &str,
    ) -> Self {
        use axum::extract::rejection::JsonRejection;
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "expected a JSON body (Content-Type: application/json)".into(),
            ),
            too_large if too_large.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge {
                    limit: crate::routes::JSON_BODY_LIMIT as u64,
                }
            }
            other => Self::BadRequest(format!(
                "expected a JSON body {expected}: {}",
                other.body_text()
            )),
        }
    }
}

/// Any error, kept as the source of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How tonic begins the message of a status it made itself from an HTTP/2 error, as opposed
/// to one a server sent.
const TRANSPORT_ENDED_CALL: &str = "h2 protocol error";

impl ApiError {
    /// The error a failed gRPC call to `dependency` means for the client. Our services word
    /// INVALID_ARGUMENT messages for clients, so those are passed on.
    pub fn from_status(
        dependency: &'static str,
        what: &'static str,
        status: tonic::Status,
    ) -> Self {
        match status.code() {
            Code::InvalidArgument => Self::BadRequest(status.message().to_owned()),
            Code::NotFound => Self::NotFound(what),
            Code::AlreadyExists => Self::Conflict(status.message().to_owned()),
            Code::Unauthenticated => Self::Unauthenticated("invalid or expired token"),
            Code::PermissionDenied => Self::Forbidden("not allowed"),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                Self::Unavailable {
                    dependency,
                    cause: status.into(),
                }
            }
            // A call the server's HTTP/2 layer ended without a gRPC status: tonic says INTERNAL,
            // "h2 protocol error: …", for a GOAWAY or reset with NO_ERROR, which is what a
            // server that is shutting down sends. That server went away; it did not fail.
            Code::Internal if status.message().starts_with(TRANSPORT_ENDED_CALL) => {
                Self::Unavailable {
                    dependency,
                    cause: status.into(),
                }
            }
            _ => Self::Internal {
                what: dependency,
                cause: status.into(),
            },
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::BadCredentials(_) => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Gone(_) => (StatusCode::GONE, "gone"),
            Self::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            Self::Locked(_) => (StatusCode::LOCKED, "locked"),
            Self::ChecksumMismatch => (CHECKSUM_MISMATCH, "checksum_mismatch"),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn client_message(&self) -> String {
        match self {
            Self::Unavailable { dependency, .. } => {
                format!("{dependency} is temporarily unavailable; try again shortly")
            }
            Self::Internal { .. } => "internal error".to_owned(),
            other => other.to_string(),
        }
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`bad_request`, `unauthenticated`, `not_found`, ...).
    pub code: String,
    /// What happened, for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Self::Unavailable { .. } => {
                tracing::warn!(error = %service_kit::error::chain(&self), "dependency unavailable");
            }
            Self::Internal { .. } => {
                tracing::error!(error = %service_kit::error::chain(&self), "request failed");
            }
            _ => tracing::debug!(error = %self, "request refused"),
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.client_message(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::BadCredentials(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"mp3converter\", charset=\"UTF-8\""),
                );
            }
            Self::Unavailable { .. } | Self::Locked(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
            }
            Self::TooManyRequests {
                retry_after_seconds,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            Self::RangeNotSatisfiable { size } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// A failed call to auth or storage, as the API answers it (see [`ApiError::from_status`]).
pub trait OrApiError<T> {
    /// The call to `dependency` (in the client's words) about a `what` failed.
    fn or_api(self, dependency: &'static str, what: &'static str) -> ApiResult<T>;
}

impl<T> OrApiError<T> for Result<T, tonic::Status> {
    fn or_api(self, dependency: &'static str, what: &'static str) -> ApiResult<T> {
        self.map_err(|status| ApiError::from_status(dependency, what, status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_cut_off_by_a_server_shutting_down_is_503_but_a_servers_own_internal_error_is_500() {
        let cut_off = tonic::Status::internal(
            "h2 protocol error: stream no longer needed (NO_ERROR) from remote",
        );
        let error = ApiError::from_status("the auth service", "account", cut_off);
        assert_eq!(error.status_and_code().0, StatusCode::SERVICE_UNAVAILABLE);

        let failed = tonic::Status::internal("internal error");
        let error = ApiError::from_status("the auth service", "account", failed);
        assert_eq!(error.status_and_code().0, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
