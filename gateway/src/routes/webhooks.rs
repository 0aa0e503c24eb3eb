//! `/webhooks`: the caller's webhook endpoints, where job outcomes are sent as signed HTTP
//! requests (Standard Webhooks). An endpoint's URL is checked when it is registered: it must
//! be `http`/`https` (`https` only with `WEBHOOK_HTTPS_ONLY`) and every address its host
//! resolves to must be public, unless an operator allowed its network
//! (`WEBHOOK_ALLOWED_NETWORKS`); the notifier checks again at each delivery. The signing
//! secret is shown when the endpoint is made and when it is rotated, never otherwise.

use super::{AppState, MalformedId, StorageRefusals, check_id};
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody, OrApiError};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use proto::storage::v1 as pb;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tonic::Code;
use tracing::instrument;
use utoipa::ToSchema;
use webhooks::{Refusal, SigningSecret};

/// How long the check of an endpoint's host name may take.
const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// An endpoint to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where messages go: `http` or `https`, a public address.
    #[schema(max_length = 2048, example = "https://hooks.example.com/mp3converter")]
    pub url: String,
    /// The event types to receive (`job.succeeded`, `job.failed`); absent or empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Your words for it (256 characters at most).
    #[serde(default)]
    #[schema(max_length = 256)]
    pub description: String,
}

/// A webhook endpoint as its owner sees it (without its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    /// Its id.
    pub id: String,
    /// Where messages go.
    pub url: String,
    /// The event types it receives; empty: all.
    pub events: Vec<String>,
    /// The owner's words for it.
    pub description: String,
    /// RFC 3339.
    pub created_at: String,
    /// While a rotated-out secret still signs beside the current one: when it stops (RFC 3339).
    pub previous_secret_expires_at: Option<String>,
    /// Set while nothing is sent to it (a 410 Gone, or failures without a success for too
    /// long): when (RFC 3339) and why. `POST /webhooks/{id}/enable` turns it back on.
    pub disabled: Option<DisabledView>,
    /// When its current run of failed attempts began (RFC 3339); absent after a success.
    pub failing_since: Option<String>,
}

/// Why an endpoint receives nothing.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisabledView {
    /// RFC 3339.
    pub at: String,
    /// Why, in words for its owner.
    pub reason: String,
}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The message's `webhook-id` (the same on every attempt of one message).
    pub message_id: String,
    /// `job.succeeded`, `job.failed` or `ping`.
    pub event_type: String,
    /// When it was tried (RFC 3339).
    pub attempted_at: String,
    /// How long it took.
    pub duration_ms: u32,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Why it did not answer (a timeout, a refused address, a failed connection).
    pub error: Option<String>,
    /// Whether this attempt delivered it.
    pub delivered: bool,
    /// Whether this was the message's last attempt and it failed: the message is given up
    /// (`redeliver` sends it again).
    pub given_up: bool,
}

/// An endpoint's newest attempts (up to 100), newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// The attempts.
    pub deliveries: Vec<DeliveryView>,
}

/// A new endpoint, with the secret its messages are signed with.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEndpoint {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_…`: verify each message's `webhook-signature` with it (any Standard Webhooks
    /// library does). Shown only now.
    pub secret: String,
}

/// The caller's endpoints, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    /// The endpoints.
    pub endpoints: Vec<EndpointView>,
}

/// A new signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    /// The new `whsec_…` secret. Shown only now.
    pub secret: String,
    /// Until then the previous secret signs too (each message carries both signatures), so a
    /// receiver can switch without missing one (RFC 3339).
    pub previous_secret_expires_at: Option<String>,
}

impl From<pb::WebhookEndpoint> for EndpointView {
    fn from(endpoint: pb::WebhookEndpoint) -> Self {
        Self {
            previous_secret_expires_at: previous_secret_expiry(&endpoint),
            created_at: endpoint
                .created_at
                .map(|time| time.to_string())
                .unwrap_or_default(),
            disabled: endpoint.disabled_at.map(|at| DisabledView {
                at: at.to_string(),
                reason: endpoint.disabled_reason.clone(),
            }),
            failing_since: endpoint.failing_since.map(|at| at.to_string()),
            id: endpoint.id,
            url: endpoint.url,
            events: endpoint.events,
            description: endpoint.description,
        }
    }
}

fn previous_secret_expiry(endpoint: &pb::WebhookEndpoint) -> Option<String> {
    endpoint
        .secrets
        .iter()
        .filter_map(|secret| secret.expires_at)
        .map(|time| time.to_string())
        .next()
}

/// Registers a webhook endpoint.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body = NewEndpoint,
    responses(
        (status = 201, description = "Registered; its secret is in the body, and only there", body = CreatedEndpoint,
            headers(("Location" = String, description = "The endpoint's URL"))),
        (status = 400, description = "Bad JSON, a URL that is not http(s), an unknown event type, a long description", body = ErrorBody),
        (status = 409, description = "The account has 20 endpoints already", body = ErrorBody),
        (status = 415, description = "Not a JSON body", body = ErrorBody),
        (status = 422, description = "The URL's host does not resolve, or is (or resolves to) a loopback, private, link-local or other non-public address", body = ErrorBody),
        StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<NewEndpoint>, JsonRejection>,
) -> ApiResult<(StatusCode, HeaderMap, Json<CreatedEndpoint>)> {
    let Json(new) = body.map_err(|rejection| {
        ApiError::from_json_rejection(rejection, "{\"url\", \"events\", \"description\"}")
    })?;
    let url = checked_destination(&state, &new.url).await?;
    let events = checked_events(new.events)?;
    let secret = SigningSecret::generate();
    let endpoint = state
        .storage
        .create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
            owner_id: caller.user_id.clone(),
            owner_email: caller.email.clone(),
            url: url.to_string(),
            events,
            description: new.description,
            secret: secret.expose(),
        })
        .await
        .map_err(|status| match status.code() {
            Code::FailedPrecondition => ApiError::Conflict(status.message().to_owned()),
            _ => ApiError::from_status("storage", "webhook endpoint", status),
        })?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint registered");
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/webhooks/{}", endpoint.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        Json(CreatedEndpoint {
            endpoint: endpoint.into(),
            secret: secret.expose(),
        }),
    ))
}

/// The URL, if it may be called: its form, then every address its host has now.
async fn checked_destination(state: &AppState, url: &str) -> ApiResult<webhooks::Url> {
    let policy = &state.webhook_destinations;
    let url = policy.check_url(url).map_err(refused)?;
    match tokio::time::timeout(RESOLVE_WITHIN, policy.resolve(&url)).await {
        Ok(Ok(_)) => Ok(url),
        Ok(Err(refusal)) => Err(refused(refusal)),
        Err(_) => Err(refused(Refusal::Unresolvable(
            url.host_str().unwrap_or_default().to_owned(),
        ))),
    }
}

/// A refused URL: malformed is 400; well-formed but leading somewhere it may not is 422.
fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Forbidden { .. } | Refusal::Unresolvable(_) => {
            ApiError::Unprocessable(refusal.to_string())
        }
        _ => ApiError::BadRequest(refusal.to_string()),
    }
}

/// The event types asked for, each known, each once.
fn checked_events(events: Vec<String>) -> ApiResult<Vec<String>> {
    let mut checked: Vec<String> = Vec::new();
    for event in events {
        if !webhooks::events::EVENT_TYPES.contains(&event.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown event type `{}`; the types are {}",
                event.chars().take(64).collect::<String>(),
                webhooks::events::EVENT_TYPES.join(", ")
            )));
        }
        if !checked.contains(&event) {
            checked.push(event);
        }
    }
    Ok(checked)
}

/// Lists the caller's webhook endpoints, newest first.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's endpoints", body = EndpointList),
        StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<EndpointList>> {
    let endpoints = state
        .storage
        .webhook_endpoints(&caller.user_id)
        .await
        .or_api("storage", "webhook endpoint")?;
    Ok(Json(EndpointList {
        endpoints: endpoints.into_iter().map(EndpointView::from).collect(),
    }))
}

/// One of the caller's webhook endpoints.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 404, description = "No such endpoint of the caller's", body = ErrorBody),
        MalformedId, StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id, endpoint_id = %id))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointView>> {
    check_id(&id, "webhook endpoint")?;
    let endpoint = state
        .storage
        .webhook_endpoint(&id, &caller.own())
        .await
        .or_api("storage", "webhook endpoint")?;
    Ok(Json(endpoint.into()))
}

/// Deletes one of the caller's webhook endpoints; nothing more is sent to it.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such endpoint of the caller's", body = ErrorBody),
        MalformedId, StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id, endpoint_id = %id))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_id(&id, "webhook endpoint")?;
    state
        .storage
        .delete_webhook_endpoint(&id, &caller.own())
        .await
        .or_api("storage", "webhook endpoint")?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives one of the caller's endpoints a new signing secret. The previous one goes on signing
/// beside it for `WEBHOOK_SECRET_OVERLAP` (24 hours).
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$")),
    responses(
        (status = 200, description = "The new secret, shown only now", body = RotatedSecret),
        (status = 404, description = "No such endpoint of the caller's", body = ErrorBody),
        MalformedId, StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id, endpoint_id = %id))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RotatedSecret>> {
    check_id(&id, "webhook endpoint")?;
    let secret = SigningSecret::generate();
    let endpoint = state
        .storage
        .rotate_webhook_secret(
            &id,
            &caller.user_id,
            secret.expose(),
            Some(state.webhook_secret_overlap),
        )
        .await
        .or_api("storage", "webhook endpoint")?;
    tracing::info!("webhook secret rotated");
    Ok(Json(RotatedSecret {
        secret: secret.expose(),
        previous_secret_expires_at: previous_secret_expiry(&endpoint),
    }))
}

/// A test message that was queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedPing {
    /// Its `webhook-id`.
    pub message_id: String,
}

/// Sends a signed `ping` message to one of the caller's endpoints, as every delivery is sent
/// (and retried): to check a receiver and its verification.
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$")),
    responses(
        (status = 202, description = "Queued for delivery", body = QueuedPing),
        (status = 404, description = "No such endpoint of the caller's", body = ErrorBody),
        (status = 503, description = "Storage or the queue is down", body = ErrorBody),
        MalformedId, StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id, endpoint_id = %id))]
pub async fn send_test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<QueuedPing>)> {
    check_id(&id, "webhook endpoint")?;
    let endpoint = state
        .storage
        .webhook_endpoint(&id, &caller.own())
        .await
        .or_api("storage", "webhook endpoint")?;
    let message_id = webhooks::delivery::new_message_id();
    let body = webhooks::events::body(
        webhooks::events::PING,
        std::time::SystemTime::now(),
        serde_json::json!({ "endpoint_id": endpoint.id }),
    );
    let due = messaging::events::WebhookDue {
        message_id: message_id.clone(),
        endpoint_id: endpoint.id,
        event_type: webhooks::events::PING.to_owned(),
        body,
    };
    queue_for_delivery(&state, due).await?;
    tracing::info!(%message_id, "test message queued");
    Ok((StatusCode::ACCEPTED, Json(QueuedPing { message_id })))
}

/// Puts one endpoint's message on the webhook queue, where the notifier delivers it.
async fn queue_for_delivery(state: &AppState, due: messaging::events::WebhookDue) -> ApiResult<()> {
    let payload = messaging::events::Payload::WebhookDue(due);
    super::publish(state, &state.publisher.queues().webhook_queue, payload).await
}

/// The newest delivery attempts of one of the caller's endpoints (up to 100).
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$")),
    responses(
        (status = 200, description = "Its attempts, newest first", body = DeliveryList),
        (status = 404, description = "No such endpoint of the caller's", body = ErrorBody),
        MalformedId, StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id, endpoint_id = %id))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryList>> {
    check_id(&id, "webhook endpoint")?;
    let attempts = state
        .storage
        .webhook_attempts(&id, &caller.own())
        .await
        .or_api("storage", "webhook endpoint")?;
    let deliveries = attempts
        .into_iter()
        .map(|attempt| DeliveryView {
            message_id: attempt.message_id,
            event_type: attempt.event_type,
            attempted_at: attempt
                .attempted_at
                .map(|at| at.to_string())
                .unwrap_or_default(),
            duration_ms: attempt.duration_ms,
            status_code: u16::try_from(attempt.status_code)
                .ok()
                .filter(|status| *status != 0),
            error: (!attempt.error.is_empty()).then_some(attempt.error),
            delivered: attempt.delivered,
            given_up: attempt.given_up,
        })
        .collect();
    Ok(Json(DeliveryList { deliveries }))
}

/// Sends one logged message of one of the caller's endpoints again, by hand: the same
/// `webhook-id` and body, a fresh timestamp and signature, retried as every message is.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{message_id}/redeliver", tag = "webhooks", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The endpoint's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$"),
        ("message_id" = String, Path, description = "A `webhook-id` from the endpoint's deliveries"),
    ),
    responses(
        (status = 202, description = "Queued for delivery", body = QueuedPing),
        (status = 404, description = "No such endpoint of the caller's, or no such message in its log", body = ErrorBody),
        (status = 503, description = "Storage or the queue is down", body = ErrorBody),
        MalformedId, StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id, endpoint_id = %id))]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, message_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<QueuedPing>)> {
    check_id(&id, "webhook endpoint")?;
    let attempts = state
        .storage
        .webhook_attempts(&id, &caller.own())
        .await
        .or_api("storage", "webhook endpoint")?;
    let logged = attempts
        .into_iter()
        .find(|attempt| attempt.message_id == message_id)
        .ok_or(ApiError::NotFound("webhook message"))?;
    let due = messaging::events::WebhookDue {
        message_id: logged.message_id.clone(),
        endpoint_id: id,
        event_type: logged.event_type,
        body: logged.body.to_vec(),
    };
    queue_for_delivery(&state, due).await?;
    tracing::info!(message_id = %logged.message_id, "message queued again by hand");
    Ok((
        StatusCode::ACCEPTED,
        Json(QueuedPing {
            message_id: logged.message_id,
        }),
    ))
}

/// Turns one of the caller's disabled endpoints back on.
#[utoipa::path(post, path = "/webhooks/{id}/enable", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$")),
    responses(
        (status = 200, description = "Receiving again", body = EndpointView),
        (status = 404, description = "No such endpoint of the caller's", body = ErrorBody),
        MalformedId, StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id, endpoint_id = %id))]
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointView>> {
    check_id(&id, "webhook endpoint")?;
    let endpoint = state
        .storage
        .enable_webhook_endpoint(&id, &caller.user_id)
        .await
        .or_api("storage", "webhook endpoint")?;
    tracing::info!("webhook endpoint enabled");
    Ok(Json(endpoint.into()))
}
