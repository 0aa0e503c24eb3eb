//! The auth service over real gRPC on loopback, against real MariaDB and SQLite: the same
//! scenarios run on both databases.

use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::auth::v1::{LoginRequest, LoginResponse, RegisterRequest, ValidateRequest};
use service_kit::config::ServiceConfig;
use std::time::{Duration, Instant};
use test_support::configs::JWT_SECRET as SECRET;
use test_support::{Running, TempDir, TestMysql, configs, temp_dir};
use tonic::Code;
use tonic::transport::Channel;

const PASSWORD: &str = "correct horse battery";

#[derive(Debug, Clone, Copy)]
enum Backend {
    Mysql,
    Sqlite,
}

/// One auth service on port 0 with its own database (or directory), and a raw gRPC client of it.
struct RunningAuth {
    service: Running<auth::App>,
    client: AuthServiceClient<Channel>,
}

impl RunningAuth {
    /// A service with a fixed JWT secret on a fresh database of `backend`.
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// [`RunningAuth::start`], with `change` made to its configuration.
    async fn start_with(backend: Backend, change: impl FnOnce(&mut auth::Config)) -> Self {
        let dir = temp_dir();
        let mysql = match backend {
            Backend::Mysql => Some(TestMysql::create().await.unwrap()),
            Backend::Sqlite => None,
        };
        let mut config = configs::auth(dir.path(), mysql.as_ref());
        change(&mut config);
        Self::launch(config, (mysql, dir)).await
    }

    /// The embedded default exactly as a newcomer runs it: SQLite and a generated JWT secret,
    /// both in `dir`.
    async fn start_embedded(dir: TempDir) -> Self {
        let config = auth::Config {
            jwt_secret: None,
            ..configs::auth(dir.path(), None)
        };
        Self::launch(config, dir).await
    }

    async fn launch(config: auth::Config, data: impl std::any::Any + Send) -> Self {
        test_support::init_tracing();
        let service = Running::<auth::App>::start(config).await.unwrap();
        Self::connected(service.keeping(data)).await
    }

    async fn connected(service: Running<auth::App>) -> Self {
        let client = AuthServiceClient::new(service.grpc_channel().await.unwrap());
        Self { service, client }
    }

    /// Stops the service and starts it again on the same database and data directory.
    async fn restart(self) -> Self {
        Self::connected(self.service.restart().await.unwrap()).await
    }

    async fn register(&mut self, email: &str, password: &str) -> Result<String, tonic::Status> {
        let response = self
            .client
            .register(RegisterRequest {
                email: email.into(),
                password: password.into(),
            })
            .await?;
        Ok(response.into_inner().user.unwrap().id)
    }

    /// `times` logins of `email` with a wrong password, each refused as wrong (not throttled).
    async fn fail_logins(&mut self, email: &str, times: usize) {
        for _ in 0..times {
            let status = self.login(email, "wrong password").await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{email}");
        }
    }

    /// A token for `email`, whose login must succeed.
    async fn token(&mut self, email: &str, password: &str) -> String {
        self.login(email, password).await.unwrap().access_token
    }

    async fn login(&mut self, email: &str, password: &str) -> Result<LoginResponse, tonic::Status> {
        self.login_from(email, password, "").await
    }

    async fn login_from(
        &mut self,
        email: &str,
        password: &str,
        address: &str,
    ) -> Result<LoginResponse, tonic::Status> {
        let request = LoginRequest {
            email: email.into(),
            password: password.into(),
            client_address: address.into(),
        };
        Ok(self.client.login(request).await?.into_inner())
    }

    async fn validate(&mut self, token: &str) -> Result<proto::auth::v1::Claims, tonic::Status> {
        let response = self
            .client
            .validate(ValidateRequest {
                token: token.into(),
            })
            .await?;
        Ok(response.into_inner().claims.unwrap())
    }
}

test_support::on_each!(Backend { Mysql => mysql, Sqlite => sqlite }: [
    register_login_validate_round_trip,
    duplicate_registration_is_already_exists_whatever_the_case,
    wrong_password_and_unknown_user_get_identical_answers,
    migrations_are_idempotent_across_restarts,
    admin_from_the_environment_gets_admin_claims,
]);

async fn register_login_validate_round_trip(backend: Backend) {
    let mut auth = RunningAuth::start(backend).await;
    let user_id = auth
        .register("  Alice@Example.com ", PASSWORD)
        .await
        .unwrap();
    assert_eq!(user_id.len(), 36, "a UUID");

    let login = auth.login("alice@example.com", PASSWORD).await.unwrap();
    assert_eq!(login.token_type, "Bearer");
    assert_eq!(login.expires_in, 86_400);

    let claims = auth.validate(&login.access_token).await.unwrap();
    assert_eq!(claims.user_id, user_id);
    assert_eq!(claims.email, "alice@example.com");
    assert!(!claims.admin);
    let issued = claims.issued_at.unwrap().seconds;
    let expires = claims.expires_at.unwrap().seconds;
    assert_eq!(expires - issued, 86_400);
}

async fn duplicate_registration_is_already_exists_whatever_the_case(backend: Backend) {
    let mut auth = RunningAuth::start(backend).await;
    auth.register("bob@example.com", PASSWORD).await.unwrap();
    let duplicate = auth
        .register("BOB@example.com", "another password")
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    assert_eq!(
        duplicate.message(),
        "an account with this e-mail already exists"
    );
    // The first account's password still works.
    auth.login("bob@example.com", PASSWORD).await.unwrap();
}

async fn wrong_password_and_unknown_user_get_identical_answers(backend: Backend) {
    let mut auth = RunningAuth::start_with(backend, |c| c.login_max_failures = 100).await;
    auth.register("carol@example.com", PASSWORD).await.unwrap();

    let wrong = auth
        .login("carol@example.com", "wrong password")
        .await
        .unwrap_err();
    let unknown = auth
        .login("nobody@example.com", "wrong password")
        .await
        .unwrap_err();
    let malformed = auth
        .login("not an email", "wrong password")
        .await
        .unwrap_err();
    for status in [&wrong, &unknown, &malformed] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "invalid e-mail or password");
    }

    // Unknown accounts still pay for a password verification, so timing does not tell them
    // apart (without it they would answer in a small fraction of the time).
    // The fastest of several interleaved tries is each side's cost with the least of the
    // machine's noise in it: another process taking the core inflates a try, never shrinks it.
    let mut known = Duration::MAX;
    let mut unknown = Duration::MAX;
    for _ in 0..7 {
        let started = Instant::now();
        let _ = auth.login("carol@example.com", "wrong password").await;
        known = known.min(started.elapsed());
        let started = Instant::now();
        let _ = auth.login("nobody@example.com", "wrong password").await;
        unknown = unknown.min(started.elapsed());
    }
    assert!(
        unknown.as_secs_f64() >= known.as_secs_f64() * 0.5,
        "unknown e-mail answered in {unknown:?}, wrong password in {known:?}"
    );
}

async fn migrations_are_idempotent_across_restarts(backend: Backend) {
    let mut auth = RunningAuth::start(backend).await;
    let id = auth.register("dave@example.com", PASSWORD).await.unwrap();
    let mut auth = auth.restart().await;
    let mut auth_again = {
        let token = auth.token("dave@example.com", PASSWORD).await;
        assert_eq!(auth.validate(&token).await.unwrap().user_id, id);
        auth.restart().await
    };
    auth_again
        .login("dave@example.com", PASSWORD)
        .await
        .unwrap();
}

async fn admin_from_the_environment_gets_admin_claims(backend: Backend) {
    let mut auth = RunningAuth::start_with(backend, |config| {
        config.admin_email = Some("Root@Example.com".into());
        config.admin_password = Some("admin password 1".into());
    })
    .await;
    let token = auth.token("root@example.com", "admin password 1").await;
    assert!(auth.validate(&token).await.unwrap().admin);

    let id = auth.register("eve@example.com", PASSWORD).await.unwrap();
    let token = auth.token("eve@example.com", PASSWORD).await;
    let claims = auth.validate(&token).await.unwrap();
    assert_eq!(claims.user_id, id);
    assert!(!claims.admin, "ordinary accounts are not admins");

    // A restart with the same variables neither fails nor duplicates the admin.
    let mut auth = auth.restart().await;
    let token = auth.token("root@example.com", "admin password 1").await;
    assert!(auth.validate(&token).await.unwrap().admin);
}

#[tokio::test]
async fn create_user_command_makes_an_admin_who_can_log_in() {
    let dir = temp_dir();
    let config = auth::Config {
        jwt_secret: None,
        ..configs::auth(dir.path(), None)
    };
    let user = auth::create_user(&config, "Ops@Example.com", "ops password 1".into(), true)
        .await
        .unwrap();
    assert_eq!(user.email, "ops@example.com");
    assert!(user.admin);

    // The embedded default generated a secret and kept it: the server started afterwards on
    // the same data directory issues tokens with it.
    let secret = std::fs::read_to_string(dir.path().join("jwt-secret")).unwrap();
    assert_eq!(secret.len(), 64);
    let mut auth = RunningAuth::start_embedded(dir).await;
    let token = auth.token("ops@example.com", "ops password 1").await;
    assert!(auth.validate(&token).await.unwrap().admin);
}

#[tokio::test]
async fn embedded_secret_survives_a_restart_so_tokens_stay_valid() {
    let mut auth = RunningAuth::start_embedded(temp_dir()).await;
    auth.register("fay@example.com", PASSWORD).await.unwrap();
    let token = auth.token("fay@example.com", PASSWORD).await;
    let mut auth = auth.restart().await;
    auth.validate(&token).await.unwrap();
}

#[tokio::test]
async fn malformed_registrations_are_invalid_argument() {
    let mut auth = RunningAuth::start(Backend::Sqlite).await;
    for (email, password, message) in [
        ("not-an-email", PASSWORD, "e-mail address is not valid"),
        ("a@example", PASSWORD, "e-mail address is not valid"),
        ("", PASSWORD, "e-mail address is not valid"),
        (
            "gil@example.com",
            "short",
            "password must be between 8 and 1024 bytes",
        ),
        (
            "gil@example.com",
            &"x".repeat(1025),
            "password must be between 8 and 1024 bytes",
        ),
    ] {
        let status = auth.register(email, password).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{email:?}");
        assert_eq!(status.message(), message);
    }
}

mod tokens {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn claims() -> Value {
        json!({
            "sub": "8d4bd0a4-3a5e-4c1e-9a53-7d1c8e0f2b11", "email": "h@example.com", "admin": false,
            "iat": now(), "exp": now() + 3600, "iss": "mp3converter-auth", "aud": "mp3converter",
        })
    }

    fn sign(claims: &Value, algorithm: Algorithm, key: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(algorithm),
            claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    #[tokio::test]
    async fn every_kind_of_bad_token_is_unauthenticated() {
        let mut auth = RunningAuth::start(Backend::Sqlite).await;
        let good = sign(&claims(), Algorithm::HS256, SECRET);
        auth.validate(&good)
            .await
            .expect("a correctly signed token is valid");

        let parts: Vec<&str> = good.split('.').collect();
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let alg_none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            parts[1]
        );
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&with(claims(), "admin", json!(true))),
            parts[2]
        );

        let cases = [
            ("alg none", alg_none),
            (
                "HS384 with the right key",
                sign(&claims(), Algorithm::HS384, SECRET),
            ),
            (
                "HS512 with the right key",
                sign(&claims(), Algorithm::HS512, SECRET),
            ),
            (
                "signed with another key",
                sign(
                    &claims(),
                    Algorithm::HS256,
                    "another-key-another-key-another-key!",
                ),
            ),
            ("tampered payload", tampered),
            ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
            (
                "expired",
                sign(
                    &with(claims(), "exp", json!(now() - 1)),
                    Algorithm::HS256,
                    SECRET,
                ),
            ),
            (
                "not yet valid",
                sign(
                    &with(claims(), "nbf", json!(now() + 600)),
                    Algorithm::HS256,
                    SECRET,
                ),
            ),
            (
                "wrong issuer",
                sign(
                    &with(claims(), "iss", json!("someone-else")),
                    Algorithm::HS256,
                    SECRET,
                ),
            ),
            (
                "wrong audience",
                sign(
                    &with(claims(), "aud", json!("another-app")),
                    Algorithm::HS256,
                    SECRET,
                ),
            ),
            (
                "no expiry",
                sign(&without(claims(), "exp"), Algorithm::HS256, SECRET),
            ),
            (
                "no subject",
                sign(&without(claims(), "sub"), Algorithm::HS256, SECRET),
            ),
            (
                "no issuer",
                sign(&without(claims(), "iss"), Algorithm::HS256, SECRET),
            ),
            ("garbage", "not.a.token".into()),
            ("empty", String::new()),
            ("random bytes", "\u{1}\u{2}\u{3}".into()),
        ];
        for (case, token) in cases {
            let status = auth.validate(&token).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{case}");
            assert_eq!(status.message(), "invalid or expired token", "{case}");
        }
    }
}

mod throttling {
    use super::*;

    /// The wait the status carries, as the standard `google.rpc.RetryInfo` detail.
    fn retry_after(status: &tonic::Status) -> u64 {
        use tonic_types::StatusExt;
        let info = status.get_details_retry_info().expect("a RetryInfo detail");
        info.retry_delay.expect("a delay").as_secs()
    }

    #[tokio::test]
    async fn repeated_failures_for_one_email_are_refused_even_with_the_right_password() {
        let mut auth = RunningAuth::start_with(Backend::Sqlite, |c| c.login_max_failures = 3).await;
        auth.register("ivy@example.com", PASSWORD).await.unwrap();
        auth.fail_logins("ivy@example.com", 3).await;
        let throttled = auth.login("ivy@example.com", PASSWORD).await.unwrap_err();
        assert_eq!(throttled.code(), Code::ResourceExhausted);
        let wait = retry_after(&throttled);
        assert!((1..=900).contains(&wait), "retry-after {wait}");
        assert!(
            throttled
                .message()
                .contains(&format!("try again in {wait} s"))
        );
        // Other accounts are not affected.
        auth.register("jay@example.com", PASSWORD).await.unwrap();
        auth.login("jay@example.com", PASSWORD).await.unwrap();
    }

    #[tokio::test]
    async fn a_successful_login_resets_the_count() {
        let mut auth = RunningAuth::start_with(Backend::Sqlite, |c| c.login_max_failures = 3).await;
        auth.register("kim@example.com", PASSWORD).await.unwrap();
        auth.fail_logins("kim@example.com", 2).await;
        auth.login("kim@example.com", PASSWORD).await.unwrap();
        // The count started again: two more wrong passwords are only wrong, not throttled.
        auth.fail_logins("kim@example.com", 2).await;
        auth.login("kim@example.com", PASSWORD).await.unwrap();
    }

    #[tokio::test]
    async fn the_throttle_lifts_when_the_window_passes() {
        // The window is judged against the real clock, so the test measures its own logins
        // instead of assuming how long they take: the refusal is only asserted for logins that
        // all ran inside the window, and the wait for the lift is counted from the moment the
        // first failure had surely been counted (its answer), not from a guess.
        const WINDOW: Duration = Duration::from_secs(5);
        let mut auth = RunningAuth::start_with(Backend::Sqlite, |config| {
            config.login_max_failures = 2;
            config.login_failure_window_seconds = WINDOW.as_secs();
        })
        .await;
        auth.register("lee@example.com", PASSWORD).await.unwrap();
        let first_sent = Instant::now();
        auth.login("lee@example.com", "wrong password")
            .await
            .unwrap_err();
        let first_counted_by = Instant::now();
        auth.login("lee@example.com", "wrong password")
            .await
            .unwrap_err();
        let refused = auth.login("lee@example.com", PASSWORD).await;
        let three_logins = first_sent.elapsed();
        assert!(
            three_logins < WINDOW,
            "three logins took {three_logins:?}, longer than the {WINDOW:?} window: the refusal \
             cannot be judged on a machine this slow"
        );
        assert_eq!(refused.unwrap_err().code(), Code::ResourceExhausted);

        // The first failure leaves the window at most WINDOW after its answer came back.
        tokio::time::sleep_until((first_counted_by + WINDOW).into()).await;
        auth.login("lee@example.com", PASSWORD).await.unwrap();
    }

    #[tokio::test]
    async fn one_client_address_spraying_many_emails_is_refused() {
        let mut auth = RunningAuth::start_with(Backend::Sqlite, |config| {
            config.login_max_failures = 100;
            config.login_max_failures_per_address = 4;
        })
        .await;
        auth.register("mia@example.com", PASSWORD).await.unwrap();
        for i in 0..4 {
            let status = auth
                .login_from(&format!("victim{i}@example.com"), "guess", "203.0.113.7")
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
        }
        let refused = auth
            .login_from("mia@example.com", PASSWORD, "203.0.113.7")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        // The same account from another address is fine.
        auth.login_from("mia@example.com", PASSWORD, "198.51.100.1")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn answers_health_and_reflection_through_real_grpc_clients() {
    use test_support::grpc::{health_status, reflected_services};
    use tonic_health::pb::health_check_response::ServingStatus;
    let auth = RunningAuth::start(Backend::Sqlite).await;
    let channel = auth.service.grpc_channel().await.unwrap();
    assert_eq!(
        health_status(channel.clone(), "").await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health_status(channel.clone(), auth::SERVICE_NAME)
            .await
            .unwrap(),
        ServingStatus::Serving
    );
    let services = reflected_services(channel).await.unwrap();
    assert!(
        services.contains(&auth::SERVICE_NAME.to_owned()),
        "{services:?}"
    );
    assert!(
        services.contains(&"grpc.health.v1.Health".to_owned()),
        "{services:?}"
    );
}

#[test]
fn refuses_unsafe_configurations_naming_the_variable() {
    let refused = |change: fn(&mut auth::Config)| {
        let mut config = auth::Config::defaults();
        change(&mut config);
        config.validate().unwrap_err()
    };
    let short = refused(|c| c.jwt_secret = Some("too-short".into()));
    assert_eq!(short.variable(), Some("JWT_SECRET"));
    let missing = refused(|c| c.database_url = Some("mysql://root@127.0.0.1/x".into()));
    assert_eq!(missing.variable(), Some("JWT_SECRET"));
    assert!(
        missing
            .to_string()
            .contains("required when DATABASE_URL is set")
    );
    let weak = refused(|c| c.argon2_memory_kib = 1024);
    assert_eq!(weak.variable(), Some("ARGON2_MEMORY_KIB"));
    let scheme = refused(|c| {
        c.database_url = Some("postgres://x".into());
        c.jwt_secret = Some(SECRET.into());
    });
    assert_eq!(scheme.variable(), Some("DATABASE_URL"));
    let admin_alone = refused(|c| c.admin_email = Some("root@example.com".into()));
    assert_eq!(admin_alone.variable(), Some("ADMIN_PASSWORD"));
    let password_alone = refused(|c| c.admin_password = Some("a password".into()));
    assert_eq!(password_alone.variable(), Some("ADMIN_EMAIL"));
    assert!(
        auth::Config::defaults().validate().is_ok(),
        "the embedded default needs nothing"
    );
    // Secrets never print, even through the config's Debug.
    let config = auth::Config {
        jwt_secret: Some(SECRET.into()),
        ..auth::Config::defaults()
    };
    assert!(!format!("{config:?}").contains(SECRET));
}

#[tokio::test]
async fn ops_endpoint_reports_readiness_and_login_metrics() {
    test_support::init_tracing();
    let dir = temp_dir();
    let config = auth::Config {
        login_max_failures: 1,
        jwt_secret: None,
        ..configs::auth(dir.path(), None)
    };
    let server = Running::<auth::App>::start(config).await.unwrap();
    let ops_url = server.ops_url();
    let http = reqwest::Client::new();
    // `start` returns once the service says it is ready.
    let ready = http.get(format!("{ops_url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    assert_eq!(
        http.get(format!("{ops_url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let mut client = AuthServiceClient::new(server.grpc_channel().await.unwrap());
    client
        .register(RegisterRequest {
            email: "ops@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    let login = |password: &str| LoginRequest {
        email: "ops@example.com".into(),
        password: password.into(),
        client_address: String::new(),
    };
    let token = client
        .login(login(PASSWORD))
        .await
        .unwrap()
        .into_inner()
        .access_token;
    client.validate(ValidateRequest { token }).await.unwrap();
    client.login(login("wrong password")).await.unwrap_err();
    assert_eq!(
        client.login(login(PASSWORD)).await.unwrap_err().code(),
        Code::ResourceExhausted
    );

    let metrics = test_support::scrape(&format!("{ops_url}/metrics")).await;
    for line in [
        "auth_logins_total{outcome=\"ok\"}",
        "auth_logins_total{outcome=\"failed\"}",
        "auth_logins_total{outcome=\"throttled\"}",
        "auth_validations_total{outcome=\"valid\"}",
        "auth_registrations_total",
        "auth_rpc_duration_seconds_bucket{method=\"Validate\"",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    server.stop().await.unwrap();
    assert!(
        http.get(format!("{ops_url}/healthz")).send().await.is_err(),
        "ops endpoint stops with the service"
    );
}

#[tokio::test]
async fn accounts_live_on_a_mysql_server_over_tls_and_a_server_that_cannot_be_verified_is_refused()
{
    use test_support::tls::TestCa;
    let certs = temp_dir();
    let ca = TestCa::new("mp3converter MariaDB test CA");
    let tls = ca.server_files(certs.path());
    let server = test_support::TlsMariaDb::start(&tls).await.unwrap();
    let dir = temp_dir();
    let config = |url: String| auth::Config {
        database_url: Some(url.into()),
        jwt_secret: Some(SECRET.into()),
        ..configs::auth(dir.path(), None)
    };

    // sqlx's own URL options are the settings: TLS required, the server's name verified
    // against the CA file.
    let verified = format!(
        "{}?ssl-mode=verify_identity&ssl-ca={}",
        server.url(),
        tls.ca.display()
    );
    let auth = Running::<auth::App>::start(config(verified)).await.unwrap();
    let mut client = AuthServiceClient::new(auth.grpc_channel().await.unwrap());
    let (email, password) = ("tls@example.com", "a long password 1");
    client
        .register(RegisterRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .unwrap();
    let login = client
        .login(LoginRequest {
            email: email.into(),
            password: password.into(),
            client_address: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!login.access_token.is_empty());

    let other = temp_dir();
    let other_ca = TestCa::new("another authority").write_to(other.path());
    for (what, url) in [
        (
            "a server its CA file did not sign",
            format!(
                "{}?ssl-mode=verify_identity&ssl-ca={}",
                server.url(),
                other_ca.display()
            ),
        ),
        (
            "no TLS (the server requires it)",
            format!("{}?ssl-mode=disabled", server.url()),
        ),
    ] {
        let refused = auth::App::build(config(url)).await;
        assert!(refused.is_err(), "auth started on {what}");
    }
}
