//! `POST /register` and `POST /login`: accounts, relayed to the auth service.

use super::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody, OrApiError};
use crate::http_util::authorization;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tonic::Code;
use tracing::instrument;
use utoipa::ToSchema;

/// A new account's credentials.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Registration {
    /// The account's e-mail (where conversion results are sent).
    #[schema(min_length = 3, max_length = 254)]
    pub email: String,
    /// 8 to 1024 bytes (UTF-8).
    #[schema(min_length = 8)]
    pub password: String,
}

/// A created account.
#[derive(Debug, Serialize, ToSchema)]
pub struct Account {
    /// The account's id.
    pub id: String,
    /// The account's e-mail, normalised.
    pub email: String,
}

/// An access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct Token {
    /// The JWT to send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: i64,
}

/// Creates an account.
#[utoipa::path(post, path = "/register", tag = "accounts", request_body = Registration,
    responses(
        (status = 201, description = "Account created", body = Account),
        (status = 400, description = "Malformed e-mail, weak password or bad JSON", body = ErrorBody),
        (status = 409, description = "The e-mail already has an account", body = ErrorBody),
        (status = 415, description = "Not a JSON body", body = ErrorBody),
        (status = 503, description = "The auth service is down", body = ErrorBody),
    ))]
#[instrument(skip_all)]
pub async fn register(
    State(state): State<AppState>,
    body: Result<Json<Registration>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Account>)> {
    let Json(registration) = body.map_err(|rejection| {
        ApiError::from_json_rejection(rejection, "{\"email\", \"password\"}")
    })?;
    let user = state
        .auth
        .register(&registration.email, &registration.password)
        .await
        .or_api("the auth service", "account")?;
    Ok((
        StatusCode::CREATED,
        Json(Account {
            id: user.id,
            email: user.email,
        }),
    ))
}

/// Exchanges HTTP Basic credentials (e-mail and password) for an access token.
#[utoipa::path(post, path = "/login", tag = "accounts",
    security(("basic" = [])),
    responses(
        (status = 200, description = "Logged in", body = Token),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 429, description = "Too many failed logins; see Retry-After", body = ErrorBody),
        (status = 503, description = "The auth service is down", body = ErrorBody),
    ))]
#[instrument(skip_all)]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<Token>> {
    let (email, password) = basic_credentials(&headers)?;
    let response = state
        .auth
        .login(&email, &password, &peer.ip().to_string())
        .await
        .map_err(|status| match status.code() {
            Code::Unauthenticated | Code::InvalidArgument => {
                ApiError::BadCredentials("invalid e-mail or password")
            }
            Code::ResourceExhausted => ApiError::TooManyRequests {
                retry_after_seconds: clients::auth::retry_after(&status)
                    .map_or(60, |wait| wait.as_secs().max(1)),
            },
            _ => ApiError::from_status("the auth service", "account", status),
        })?;
    Ok(Json(Token {
        access_token: response.access_token,
        token_type: response.token_type,
        expires_in: response.expires_in,
    }))
}

/// The e-mail and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> ApiResult<(String, String)> {
    let refuse = || ApiError::BadCredentials("send the e-mail and password with HTTP Basic");
    let value = headers.get(AUTHORIZATION).ok_or_else(refuse)?;
    let encoded = authorization(value, "basic", 4096).ok_or_else(refuse)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(ApiError::BadCredentials(
            "the Basic credentials are not valid base64 UTF-8",
        ))?;
    let (email, password) = decoded.split_once(':').ok_or(ApiError::BadCredentials(
        "the Basic credentials must be `email:password`",
    ))?;
    Ok((email.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn basic_credentials_are_decoded_and_checked() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("a@b.c:pa:ss");
        let (email, password) =
            basic_credentials(&with_authorization(&format!("Basic {encoded}"))).unwrap();
        assert_eq!((email.as_str(), password.as_str()), ("a@b.c", "pa:ss"));
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        for bad in [
            "Bearer abc".to_owned(),
            "Basic !!!".to_owned(),
            format!("Basic {no_colon}"),
            "Basic".to_owned(),
        ] {
            assert!(
                basic_credentials(&with_authorization(&bad)).is_err(),
                "{bad}"
            );
        }
        assert!(basic_credentials(&HeaderMap::new()).is_err());
    }
}
