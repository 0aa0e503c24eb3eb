//! `mp3converter.auth.v1.AuthService`: the gRPC face of accounts, passwords and tokens.

use crate::email::{check_password, normalize_email};
use crate::error::AuthError;
use crate::password::Passwords;
use crate::store::{User, UserStore};
use crate::throttle::{LoginThrottle, ThrottleKey};
use crate::token::{Claims, Tokens};
use proto::auth::v1 as pb;
use proto::auth::v1::auth_service_server::AuthService;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

/// The service's state: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct AuthApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    users: UserStore,
    passwords: Passwords,
    tokens: Tokens,
    throttle: LoginThrottle,
}

impl AuthApi {
    /// Puts the parts together.
    pub fn new(
        users: UserStore,
        passwords: Passwords,
        tokens: Tokens,
        throttle: LoginThrottle,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                users,
                passwords,
                tokens,
                throttle,
            }),
        }
    }

    /// Creates an account (used by `Register` and by `create-user`).
    pub async fn register(
        &self,
        email: &str,
        password: String,
        admin: bool,
    ) -> Result<User, AuthError> {
        let (email, hash) = self.new_credentials(email, password).await?;
        self.inner.users.create(&email, hash, admin).await
    }

    /// Creates an admin account, or makes an existing account an admin.
    pub async fn ensure_admin(&self, email: &str, password: String) -> Result<User, AuthError> {
        let (email, hash) = self.new_credentials(email, password).await?;
        self.inner.users.ensure_admin(&email, hash).await
    }

    /// The normalized e-mail and the password's hash, after checking both.
    async fn new_credentials(
        &self,
        email: &str,
        password: String,
    ) -> Result<(String, String), AuthError> {
        let email = normalize_email(email)?;
        check_password(&password)?;
        Ok((email, self.inner.passwords.hash(password).await?))
    }

    /// Checks credentials and issues a token.
    pub async fn login(
        &self,
        email: &str,
        password: String,
        client_address: &str,
    ) -> Result<(String, Duration), AuthError> {
        // A malformed e-mail can never have an account: same answer as a wrong password.
        let email = normalize_email(email).map_err(|_| AuthError::InvalidCredentials)?;
        let mut keys = vec![ThrottleKey::Email(email.clone())];
        if !client_address.is_empty() {
            keys.push(ThrottleKey::Address(client_address.to_owned()));
        }
        let throttle = &self.inner.throttle;
        let attempt = throttle.begin(&keys).map_err(|wait| {
            metrics::counter!(crate::meters::LOGINS, "outcome" => "throttled").increment(1);
            AuthError::Throttled {
                retry_after_seconds: wait.as_secs().max(1),
            }
        })?;
        let checked = async {
            let user = self.inner.users.find_by_email(&email).await?;
            let stored = user.as_ref().map(|u| u.password_hash.clone());
            let matched = self.inner.passwords.verify(password, stored).await?;
            Ok::<_, AuthError>(user.filter(|_| matched))
        };
        let user = match checked.await {
            Ok(user) => user,
            Err(error) => {
                throttle.withdraw(attempt);
                return Err(error);
            }
        };
        match user {
            Some(user) => {
                throttle.succeeded(attempt);
                metrics::counter!(crate::meters::LOGINS, "outcome" => "ok").increment(1);
                let token = self.inner.tokens.issue(&user.id, &user.email, user.admin)?;
                Ok((token, self.inner.tokens.ttl()))
            }
            None => {
                // The attempt stays counted.
                drop(attempt);
                metrics::counter!(crate::meters::LOGINS, "outcome" => "failed").increment(1);
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// The claims of a valid token.
    pub fn validate(&self, token: &str) -> Result<Claims, AuthError> {
        let outcome = self.inner.tokens.validate(token);
        let label = if outcome.is_ok() { "valid" } else { "invalid" };
        metrics::counter!(crate::meters::VALIDATIONS, "outcome" => label).increment(1);
        outcome
    }
}

/// The client's address for throttling: what the edge says, else the direct peer.
fn client_address<T>(request: &Request<T>, declared: &str) -> String {
    if !declared.is_empty() {
        return declared.to_owned();
    }
    request
        .remote_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

fn timestamp(unix_seconds: u64) -> prost_types::Timestamp {
    prost_types::Timestamp::from(UNIX_EPOCH + Duration::from_secs(unix_seconds))
}

fn user_message(user: &User) -> pb::User {
    pb::User {
        id: user.id.clone(),
        email: user.email.clone(),
        admin: user.admin,
        created_at: Some(prost_types::Timestamp::from(SystemTime::from(
            user.created_at,
        ))),
    }
}

/// Records the call's latency under its method name.
fn observe(method: &'static str, started: Instant) {
    metrics::histogram!(crate::meters::RPC_DURATION, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[tracing::instrument(skip_all, fields(rpc = "Register"))]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let started = Instant::now();
        let pb::RegisterRequest { email, password } = request.into_inner();
        let outcome = AuthApi::register(self, &email, password, false).await;
        observe("Register", started);
        let user = outcome?;
        tracing::info!(user_id = %user.id, "account registered");
        metrics::counter!(crate::meters::REGISTRATIONS).increment(1);
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user_message(&user)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Login"))]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let started = Instant::now();
        let address = client_address(&request, &request.get_ref().client_address);
        let pb::LoginRequest {
            email, password, ..
        } = request.into_inner();
        let outcome = AuthApi::login(self, &email, password, &address).await;
        observe("Login", started);
        let (access_token, ttl) = outcome?;
        tracing::debug!("logged in");
        Ok(Response::new(pb::LoginResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: ttl.as_secs() as i64,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Validate"))]
    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let started = Instant::now();
        let outcome = AuthApi::validate(self, &request.get_ref().token);
        observe("Validate", started);
        let claims = outcome?;
        tracing::debug!(user_id = %claims.sub, "token valid");
        Ok(Response::new(pb::ValidateResponse {
            claims: Some(pb::Claims {
                user_id: claims.sub,
                email: claims.email,
                admin: claims.admin,
                issued_at: Some(timestamp(claims.iat)),
                expires_at: Some(timestamp(claims.exp)),
            }),
        }))
    }
}
