//! `GET /healthz` (the process answers) and `GET /readyz` (it can serve: auth, storage and the
//! broker all reachable), for Kubernetes probes and operators.

use super::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use utoipa::ToSchema;

/// How long a readiness probe waits for each dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `not ready`.
    pub status: &'static str,
    /// Each dependency: `ok` or what is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
}

/// The dependencies checked for readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    /// The auth service.
    pub auth: String,
    /// The storage service.
    pub storage: String,
    /// RabbitMQ.
    pub broker: String,
}

/// Whether the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        checks: None,
    })
}

/// Whether the gateway can serve: auth, storage and the broker reachable.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "A dependency is down", body = Health),
))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (auth, storage, broker) = tokio::join!(
        serving(state.channels.auth.clone(), "the auth service"),
        serving(state.channels.storage.clone(), "the storage service"),
        async {
            match tokio::time::timeout(CHECK_TIMEOUT * 3, state.publisher.check()).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(error)) => format!("unreachable: {error}"),
                Err(_) => "timed out".to_owned(),
            }
        },
    );
    let ready = [&auth, &storage, &broker]
        .iter()
        .all(|check| *check == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !ready {
        tracing::warn!(%auth, %storage, %broker, "not ready");
    }
    (
        status,
        Json(Health {
            status: if ready { "ready" } else { "not ready" },
            checks: Some(Checks {
                auth,
                storage,
                broker,
            }),
        }),
    )
}

async fn serving(channel: tonic::transport::Channel, name: &str) -> String {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(CHECK_TIMEOUT);
    match tokio::time::timeout(CHECK_TIMEOUT, HealthClient::new(channel).check(request)).await {
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => {
            "ok".to_owned()
        }
        Ok(Ok(response)) => format!("{name} reports {:?}", response.get_ref().status()),
        Ok(Err(status)) => format!("{name} unreachable ({:?})", status.code()),
        Err(_) => format!("{name} timed out"),
    }
}
