//! Who is calling: every protected route takes a [`Caller`], which exists only once the auth
//! service has validated the request's bearer token.

use crate::error::{ApiError, OrApiError};
use crate::http_util::authorization;
use crate::routes::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use clients::Owner;

/// Longest bearer token looked at; anything longer is refused without a call to auth.
const MAX_TOKEN_BYTES: usize = 4096;

/// An authenticated user.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account's id.
    pub user_id: String,
    /// The account's e-mail.
    pub email: String,
    /// Whether the account may read everyone's files.
    pub admin: bool,
}

impl Caller {
    /// Whose records this caller reads: admins see every owner's.
    pub fn readable_owner(&self) -> Owner {
        if self.admin { Owner::Any } else { self.own() }
    }

    /// This caller's own records (what it writes, and what it lists).
    pub fn own(&self) -> Owner {
        Owner::One(self.user_id.clone())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated("missing bearer token"))?;
        let token = authorization(header, "bearer", MAX_TOKEN_BYTES).ok_or(
            ApiError::Unauthenticated("the Authorization header must be `Bearer <token>`"),
        )?;
        let claims = state
            .auth
            .validate(token)
            .await
            .or_api("the auth service", "account")?;
        tracing::Span::current().record("user_id", claims.user_id.as_str());
        Ok(Caller {
            user_id: claims.user_id,
            email: claims.email,
            admin: claims.admin,
        })
    }
}
