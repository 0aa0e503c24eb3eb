//! The HTTP surface (the REST API and the web page that uses it): one router, the state every handler shares, the middleware every request
//! passes (request id, tracing, metrics, security headers, timeouts, CORS), and the OpenAPI
//! document generated from the handlers.

pub mod accounts;
pub mod download;
pub mod health;
pub mod jobs;
pub mod presets;
pub mod tus;
pub mod upload;
pub mod web;
pub mod webhooks;

use crate::config::Config;
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorDetail};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, head, post};
use axum::{Json, Router};
use clients::{AuthClient, StorageClient};
use messaging::Publisher;
use std::time::Instant;
use tonic::transport::Channel;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, OpenApi};

/// The largest body a route without a file takes (credentials are a few hundred bytes).
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The auth service.
    pub auth: AuthClient,
    /// The storage service.
    pub storage: StorageClient,
    /// The channels under the clients, for health checks.
    pub channels: Channels,
    /// Where accepted uploads are queued.
    pub publisher: Publisher,
    /// Largest upload accepted.
    pub max_upload_bytes: u64,
    /// Where webhooks may be sent.
    pub webhook_destinations: std::sync::Arc<::webhooks::DestinationPolicy>,
    /// How long a rotated-out webhook secret goes on signing.
    pub webhook_secret_overlap: std::time::Duration,
    /// How absolute URLs in answers are made.
    pub public_urls: tus::PublicUrls,
}

/// The gRPC channels to the services the gateway calls.
#[derive(Debug, Clone)]
pub struct Channels {
    /// To auth.
    pub auth: Channel,
    /// To storage.
    pub storage: Channel,
}

/// The answers every route that asks storage on a signed-in caller's behalf can give besides
/// its own, documented once.
#[derive(Debug, IntoResponses)]
pub enum StorageRefusals {
    /// No usable bearer token.
    #[response(status = 401, description = "Missing or invalid bearer token")]
    Unauthenticated(ErrorBody),
    /// Storage did not answer.
    #[response(status = 503, description = "Storage is down")]
    StorageDown(ErrorBody),
}

/// What a route that names a record by id answers for an id that is not one.
#[derive(Debug, IntoResponses)]
#[response(status = 400, description = "Malformed id")]
pub struct MalformedId(pub ErrorBody);

/// Puts an event with `payload` on `queue`; a broker that does not take it is a 503.
pub(crate) async fn publish(
    state: &AppState,
    queue: &str,
    payload: messaging::events::Payload,
) -> ApiResult<()> {
    let event = messaging::events::new_event(payload);
    state
        .publisher
        .publish(queue, &event)
        .await
        .map_err(|error| ApiError::Unavailable {
            dependency: "the queue",
            cause: error.into(),
        })
}

/// A malformed id is the client's mistake (400), caught before any call.
pub fn check_id(id: &str, what: &str) -> ApiResult<()> {
    if id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "malformed {what} id: expected 24 hex characters"
        )))
    }
}

/// The OpenAPI document of the REST API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "mp3converter", description = "Upload a video, get an e-mail when its MP3 is ready, download it."),
    paths(
        accounts::register, accounts::login, upload::upload,
        tus::options, tus::create, tus::status, tus::append, tus::terminate, tus::overridden,
        jobs::list_jobs, jobs::get_job,
        jobs::delete_job, download::download_by_path, download::download_by_query,
        presets::list_presets,
        webhooks::create_endpoint, webhooks::list_endpoints, webhooks::get_endpoint,
        webhooks::delete_endpoint, webhooks::rotate_secret, webhooks::send_test,
        webhooks::list_deliveries, webhooks::redeliver, webhooks::enable,
        health::healthz, health::readyz,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

#[derive(Debug)]
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// The gateway's routes with their middleware.
pub fn router(state: AppState, config: &Config) -> Router {
    // Install the recorder now, so metrics recorded before the first scrape are kept.
    service_kit::metrics::prometheus();
    let request_id = HeaderName::from_static("x-request-id");

    // Routes that stream a file have no overall time limit: a large file on a slow link takes
    // as long as it takes (idle connections are the ingress's business).
    let streaming = Router::new()
        .route("/upload", post(upload::upload))
        .route_layer(middleware::from_fn(
            crate::multipart_guard::guard_part_headers,
        ))
        .layer(DefaultBodyLimit::max(
            usize::try_from(config.max_upload_bytes).unwrap_or(usize::MAX),
        ))
        .route("/download", get(download::download_by_query))
        .route("/download/{mp3_id}", get(download::download_by_path))
        .merge(tus_routes());
    let bounded = Router::new()
        .route("/register", post(accounts::register))
        .route("/login", post(accounts::login))
        .route("/jobs", get(jobs::list_jobs))
        .route("/jobs/{id}", get(jobs::get_job).delete(jobs::delete_job))
        .route("/presets", get(presets::list_presets))
        .route(
            "/webhooks",
            get(webhooks::list_endpoints).post(webhooks::create_endpoint),
        )
        .route(
            "/webhooks/{id}",
            get(webhooks::get_endpoint).delete(webhooks::delete_endpoint),
        )
        .route(
            "/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/webhooks/{id}/test", post(webhooks::send_test))
        .route("/webhooks/{id}/deliveries", get(webhooks::list_deliveries))
        .route(
            "/webhooks/{id}/deliveries/{message_id}/redeliver",
            post(webhooks::redeliver),
        )
        .route("/webhooks/{id}/enable", post(webhooks::enable))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(service_kit::ops::metrics))
        .route("/openapi.json", get(openapi))
        .route("/", get(web::index))
        .route("/assets/app.js", get(web::script))
        .route("/assets/style.css", get(web::stylesheet))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            config.request_timeout(),
        ));

    Router::new()
        .merge(streaming)
        .merge(bounded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn(with_request_id))
        .layer(cors(&config.cors_allowed_origins))
        // Outside CORS, which takes every OPTIONS for a browser's preflight.
        .layer(middleware::from_fn_with_state(state, tus::discovery))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id, user_id = tracing::field::Empty)
                }))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                )),
        )
}

/// The tus endpoint: every answer speaks the protocol (see [`tus::protocol`]).
fn tus_routes() -> Router<AppState> {
    Router::new()
        .route(tus::FILES_PATH, post(tus::create).options(tus::options))
        // tusd's endpoint, as tus clients are usually given it.
        .route(
            &format!("{}/", tus::FILES_PATH),
            post(tus::create).options(tus::options),
        )
        .route(
            &format!("{}/{{id}}", tus::FILES_PATH),
            head(tus::status)
                .patch(tus::append)
                .delete(tus::terminate)
                .post(tus::overridden)
                .options(tus::options),
        )
        .route_layer(middleware::from_fn(tus::protocol))
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter(|origin| !origin.is_empty())
        .filter_map(|origin| origin.parse().ok())
        .collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
        ])
        .allow_headers(
            [
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::RANGE,
                upload::IDEMPOTENCY_KEY,
                HeaderName::from_static("x-request-id"),
            ]
            .into_iter()
            .chain(tus::REQUEST_HEADERS)
            .collect::<Vec<_>>(),
        )
        .expose_headers(
            [
                header::CONTENT_DISPOSITION,
                header::CONTENT_RANGE,
                header::ETAG,
                header::LOCATION,
                upload::IDEMPOTENT_REPLAYED,
                HeaderName::from_static("x-request-id"),
            ]
            .into_iter()
            .chain(tus::ANSWER_HEADERS)
            .collect::<Vec<_>>(),
        )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

async fn method_not_allowed() -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: "method_not_allowed".into(),
            message: "this route does not take that method".into(),
        },
    };
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// Runs the request with its id (the client's `x-request-id`, or the one made for it) as the
/// current one, so every call it makes to auth and storage, and the job it queues, carry it.
async fn with_request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(service_kit::request_id::HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    service_kit::request_id::scope(id, next.run(request)).await
}

/// Counts requests and their latency by route and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(crate::meters::HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(crate::meters::HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
