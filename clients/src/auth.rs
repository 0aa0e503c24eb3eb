//! The auth service as the gateway uses it: register, log in, validate a bearer token.

use crate::required;
use proto::auth::v1 as pb;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use service_kit::grpc::unary;
use std::time::Duration;
use tonic::Status;
use tonic::transport::Channel;
use tonic_types::StatusExt;

pub use pb::{Claims, LoginResponse, User};

/// A client of the auth service (cheap to clone).
#[derive(Debug, Clone)]
pub struct AuthClient {
    inner: AuthServiceClient<Channel>,
}

impl AuthClient {
    /// A client over `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: AuthServiceClient::new(channel),
        }
    }

    /// A client of the service at `url` (over mutual TLS with `tls`), connecting on first use.
    pub fn connect_lazy(
        url: &str,
        tls: Option<&service_kit::grpc_tls::GrpcTls>,
    ) -> Result<Self, tonic::transport::Error> {
        Ok(Self::new(service_kit::grpc::client_channel(url, tls)?))
    }

    // A tonic client is a cheap handle on the shared channel; each call takes its own.
    fn rpc(&self) -> AuthServiceClient<Channel> {
        self.inner.clone()
    }

    /// Creates an account.
    pub async fn register(&self, email: &str, password: &str) -> Result<User, Status> {
        let request = pb::RegisterRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        let answer = self.rpc().register(unary(request)).await?.into_inner();
        required(answer.user, "Register", "a user")
    }

    /// Exchanges credentials for a token; `client_address` is the end user's, for the
    /// per-address throttle (empty when unknown). Throttled: RESOURCE_EXHAUSTED, with the wait in
    /// [`retry_after`].
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client_address: &str,
    ) -> Result<LoginResponse, Status> {
        let request = pb::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
            client_address: client_address.to_owned(),
        };
        Ok(self.rpc().login(unary(request)).await?.into_inner())
    }

    /// The claims of a valid token; UNAUTHENTICATED otherwise.
    pub async fn validate(&self, token: &str) -> Result<Claims, Status> {
        let request = pb::ValidateRequest {
            token: token.to_owned(),
        };
        let answer = self.rpc().validate(unary(request)).await?.into_inner();
        required(answer.claims, "Validate", "claims")
    }
}

/// How long a refused caller is told to wait (`google.rpc.RetryInfo` in the status details).
pub fn retry_after(status: &Status) -> Option<Duration> {
    let delay = status.get_details_retry_info()?.retry_delay?;
    Some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn the_wait_is_read_from_retry_info_and_absent_without_it() {
        let status = Status::with_error_details(
            tonic::Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(42))),
        );
        assert_eq!(retry_after(&status), Some(Duration::from_secs(42)));
        assert_eq!(retry_after(&Status::resource_exhausted("no details")), None);
    }
}
