//! Resumable uploads with the tus protocol 1.0.0 (<https://tus.io/protocols/resumable-upload>)
//! under `/files/`: core, creation, creation-with-upload, termination, expiration and checksum
//! (SHA-1 and SHA-256). A connection that drops loses only what never arrived.
//!
//! The gateway keeps nothing between requests: an upload's state (offset, length, expiry, the
//! one writer's lease, the bytes) lives in the storage service, so consecutive PATCHes may land
//! on different gateways. Every request but OPTIONS carries the caller's bearer token and sees
//! only the caller's uploads (another user's is 404). When the last byte is in, the upload
//! becomes a job exactly as a multipart upload does, and the answer names it (`Job-Id`,
//! `Job-Status-Url`).

use super::upload::{IDEMPOTENT_REPLAYED, clean_filename, idempotency_key, keyed_creation_error};
use super::{AppState, check_id};
use crate::body_messages::BodyMessages;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::sniff::{SNIFF_BYTES, media_container};
use audio_options::{AudioOptions, is_option_name, parse_options};
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clients::Append;
use clients::storage::{ChecksumAlgorithm, UploadSession};
use futures::StreamExt;
use proto::storage::v1 as pb;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};
use tracing::instrument;

/// Where uploads live (tusd's convention).
pub const FILES_PATH: &str = "/files";
/// The protocol version spoken.
pub const PROTOCOL_VERSION: &str = "1.0.0";
/// The extensions supported.
const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
/// The checksum algorithms supported (SHA-1 is the one the protocol requires).
const TUS_CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// The content type of a PATCH body.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// How long a PATCH body may send nothing before it counts as broken off (what arrived is
/// kept, and the upload is free for the client's next try).
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The protocol's headers.
pub mod headers {
    use axum::http::HeaderName;

    /// The protocol version a request or answer speaks.
    pub const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
    /// The versions the server speaks.
    pub const TUS_VERSION: HeaderName = HeaderName::from_static("tus-version");
    /// The extensions the server supports.
    pub const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
    /// The largest upload accepted.
    pub const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
    /// The checksum algorithms accepted.
    pub const TUS_CHECKSUM_ALGORITHM: HeaderName =
        HeaderName::from_static("tus-checksum-algorithm");
    /// Bytes of the upload stored so far, or where a PATCH starts.
    pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
    /// The upload's whole length.
    pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
    /// What the client said of the upload: `key base64(value)` pairs.
    pub const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
    /// When an unfinished upload is removed.
    pub const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
    /// The digest of a PATCH's body: `sha1 base64(digest)`.
    pub const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
    /// A length given later (not supported).
    pub const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
    /// Concatenation (not supported).
    pub const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
    /// A PATCH, DELETE or HEAD sent as a POST by a client that cannot send those.
    pub const METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-http-method-override");
    /// The job a complete upload became.
    pub const JOB_ID: HeaderName = HeaderName::from_static("job-id");
    /// Where to follow that job.
    pub const JOB_STATUS_URL: HeaderName = HeaderName::from_static("job-status-url");
}

use headers::*;

/// The request headers a browser may send to `/files/`, for CORS.
pub const REQUEST_HEADERS: [HeaderName; 8] = [
    TUS_RESUMABLE,
    UPLOAD_LENGTH,
    UPLOAD_METADATA,
    UPLOAD_OFFSET,
    UPLOAD_CHECKSUM,
    UPLOAD_DEFER_LENGTH,
    UPLOAD_CONCAT,
    METHOD_OVERRIDE,
];

/// The answer headers a browser's script may read, for CORS.
pub const ANSWER_HEADERS: [HeaderName; 11] = [
    UPLOAD_OFFSET,
    UPLOAD_LENGTH,
    UPLOAD_METADATA,
    UPLOAD_EXPIRES,
    TUS_VERSION,
    TUS_RESUMABLE,
    TUS_MAX_SIZE,
    TUS_EXTENSION,
    TUS_CHECKSUM_ALGORITHM,
    JOB_ID,
    JOB_STATUS_URL,
];

/// How absolute URLs are made: from the configured public address, from the proxy's
/// `X-Forwarded-*` headers when trusted, or not at all (relative URLs).
#[derive(Debug, Clone, Default)]
pub struct PublicUrls {
    /// `PUBLIC_BASE_URL`, without a trailing slash.
    pub base: Option<String>,
    /// `TRUST_FORWARDED_HEADERS`.
    pub trust_forwarded_headers: bool,
}

impl PublicUrls {
    /// The URL of `path` for a client that sent `headers`.
    fn of(&self, path: &str, headers: &HeaderMap) -> String {
        if let Some(base) = &self.base {
            return format!("{base}{path}");
        }
        if self.trust_forwarded_headers {
            let first = |name: &str| {
                headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.split(',').next())
                    .map(str::trim)
                    .filter(|value| !value.is_empty())
            };
            let proto =
                first("x-forwarded-proto").filter(|proto| matches!(*proto, "http" | "https"));
            let host = first("x-forwarded-host")
                .or_else(|| headers.get(HOST).and_then(|value| value.to_str().ok()));
            if let Some(host) = host.filter(|host| is_host(host)) {
                return format!("{}://{host}{path}", proto.unwrap_or("http"));
            }
        }
        path.to_owned()
    }
}

/// Whether `host` is a plain `name[:port]` (nothing that could change the URL's meaning).
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b".-:[]".contains(&byte))
}

/// Says which protocol version every `/files/` answer speaks.
pub async fn protocol(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(PROTOCOL_VERSION));
    response
}

/// A request in the protocol's version: taken after the caller is known (an anonymous request
/// is 401 whatever it speaks); one in another version is refused (412), one that names none
/// is malformed (400), both answers naming the version spoken.
#[derive(Debug)]
pub struct Resumable;

impl<S: Send + Sync> FromRequestParts<S> for Resumable {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let version = parts
            .headers
            .get(TUS_RESUMABLE)
            .filter(|version| !version.is_empty());
        let advice = format!("send `Tus-Resumable: {PROTOCOL_VERSION}`");
        let error = match version {
            Some(version) if version == PROTOCOL_VERSION => return Ok(Self),
            Some(_) => ApiError::PreconditionFailed(format!(
                "this server speaks tus {PROTOCOL_VERSION}: {advice}"
            )),
            None => ApiError::BadRequest(format!("a tus request says its version: {advice}")),
        };
        let mut refused = error.into_response();
        refused
            .headers_mut()
            .insert(TUS_VERSION, HeaderValue::from_static(PROTOCOL_VERSION));
        Err(refused)
    }
}

/// Answers a tus client's OPTIONS (one that is not a browser's CORS preflight, which the CORS
/// layer answers) before the CORS layer would take it for a preflight.
pub async fn discovery(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let is_files = path == FILES_PATH
        || path
            .strip_prefix(FILES_PATH)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|id| !id.contains('/'));
    if request.method() == Method::OPTIONS
        && is_files
        && !request
            .headers()
            .contains_key(axum::http::header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut response = options(State(state)).await;
        response
            .headers_mut()
            .insert(TUS_RESUMABLE, HeaderValue::from_static(PROTOCOL_VERSION));
        return response;
    }
    next.run(request).await
}

/// What the server speaks and takes.
#[utoipa::path(options, path = "/files", tag = "uploads",
    responses((status = 204, description = "The tus version, extensions, largest upload and checksum algorithms, in the `Tus-*` headers")))]
pub async fn options(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(TUS_VERSION, HeaderValue::from_static(PROTOCOL_VERSION));
    headers.insert(TUS_EXTENSION, HeaderValue::from_static(TUS_EXTENSIONS));
    headers.insert(TUS_MAX_SIZE, HeaderValue::from(state.max_upload_bytes));
    headers.insert(
        TUS_CHECKSUM_ALGORITHM,
        HeaderValue::from_static(TUS_CHECKSUM_ALGORITHMS),
    );
    response
}

/// Starts an upload (tus creation), with its first bytes when the body carries them
/// (creation-with-upload).
#[utoipa::path(post, path = "/files", tag = "uploads",
    security(("bearer" = [])),
    params(
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("Upload-Length" = u64, Header, description = "The file's size in bytes"),
        ("Upload-Metadata" = Option<String>, Header, description = "Comma-separated `key base64(value)` pairs: `filename`, `filetype`, and any upload option (`format`, `preset`, `quality`, …)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the creation safe to retry: the same key with the same length and metadata within 24 hours gets the same upload back"),
    ),
    request_body(content = String, content_type = "application/offset+octet-stream",
        description = "Optional: the first bytes of the file"),
    responses(
        (status = 201, description = "Created: `Location` is the upload's URL, `Upload-Expires` when it is removed unless it goes on, `Upload-Offset` the bytes kept when the body carried some"),
        (status = 400, description = "A missing or malformed header, or an option that cannot be used", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 412, description = "Another tus version", body = ErrorBody),
        (status = 413, description = "Larger than the limit", body = ErrorBody),
        (status = 415, description = "The first bytes are no video or audio container", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for another upload", body = ErrorBody),
        (status = 503, description = "Storage or the queue is down", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(user_id, upload_id))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    _: Resumable,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if headers.contains_key(UPLOAD_DEFER_LENGTH) {
        return Err(ApiError::BadRequest(
            "Upload-Defer-Length is not supported: send Upload-Length".into(),
        ));
    }
    if headers.contains_key(UPLOAD_CONCAT) {
        return Err(ApiError::BadRequest(
            "concatenation (Upload-Concat) is not supported".into(),
        ));
    }
    let length = number_header(&headers, &UPLOAD_LENGTH)?
        .ok_or_else(|| ApiError::BadRequest("Upload-Length is required".into()))?;
    if length == 0 {
        return Err(ApiError::BadRequest("the file is empty".into()));
    }
    if length > state.max_upload_bytes {
        return Err(ApiError::PayloadTooLarge {
            limit: state.max_upload_bytes,
        });
    }
    let metadata = match headers.get(UPLOAD_METADATA) {
        Some(value) => value
            .to_str()
            .map_err(|_| ApiError::BadRequest("Upload-Metadata must be ASCII".into()))?
            .to_owned(),
        None => String::new(),
    };
    let described = Described::from_metadata(&metadata)?;
    let with_upload = is_offset_stream(&headers)?;
    let checksum = if with_upload {
        upload_checksum(&headers)?
    } else {
        None
    };
    let key = idempotency_key(&headers)?;
    let request_fingerprint = key
        .as_ref()
        .map(|_| {
            let mut digest = Sha256::new();
            digest.update(length.to_be_bytes());
            digest.update(metadata.as_bytes());
            hex::encode(digest.finalize())
        })
        .unwrap_or_default();
    let (mut session, replayed) = state
        .storage
        .create_upload_session(pb::CreateUploadSessionRequest {
            owner_id: caller.user_id.clone(),
            length,
            filename: described.filename,
            content_type: described.content_type,
            metadata,
            idempotency_key: key.unwrap_or_default(),
            request_fingerprint,
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::ResourceExhausted => ApiError::PayloadTooLarge {
                limit: state.max_upload_bytes,
            },
            _ => keyed_creation_error(status, "upload"),
        })?;
    tracing::Span::current().record("upload_id", session.id.as_str());
    if !replayed {
        metrics::counter!(crate::meters::TUS_UPLOADS_CREATED).increment(1);
    }

    // The first bytes: what arrived is kept whatever happens to the rest, and the answer says
    // how much that is; only bytes that are no media end the upload.
    if with_upload && session.offset == 0 {
        let target = AppendTarget::of(&session, None);
        match forward(&state, &caller, &target, checksum, body).await {
            Ok(appended) => session = appended,
            Err(error @ ApiError::UnsupportedMediaType(_)) => return Err(error),
            Err(error) => {
                tracing::info!(%error, "the first bytes of a new upload were not all kept");
                session = state
                    .storage
                    .upload_session(&session.id, &caller.own())
                    .await
                    .map_err(|status| ApiError::from_status("storage", "upload", status))?;
            }
        }
    }
    let job = finish_if_complete(&state, &caller, &session).await?;

    let location = state
        .public_urls
        .of(&format!("{FILES_PATH}/{}", session.id), &headers);
    let mut response = StatusCode::CREATED.into_response();
    let answer = response.headers_mut();
    answer.insert(LOCATION, header_value(&location)?);
    if with_upload {
        answer.insert(UPLOAD_OFFSET, HeaderValue::from(session.offset));
    }
    if replayed {
        answer.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    describe_progress(answer, &session, job.as_deref());
    Ok(response)
}

/// How far an upload is (tus HEAD).
#[utoipa::path(head, path = "/files/{id}", tag = "uploads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The upload's id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`")),
    responses(
        (status = 200, description = "`Upload-Offset` (bytes kept), `Upload-Length`, `Upload-Metadata`, `Upload-Expires`; once complete, `Job-Id` and `Job-Status-Url`"),
        (status = 400, description = "Malformed id"),
        (status = 401, description = "Missing or invalid bearer token"),
        (status = 404, description = "No such upload, or another user's"),
        (status = 410, description = "The upload expired"),
        (status = 412, description = "Another tus version"),
        (status = 423, description = "A PATCH to this upload was still running after a few seconds' wait: its offset is not known yet"),
    ))]
#[instrument(skip_all, fields(user_id, upload_id = %id))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    _: Resumable,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let session = live_session(&state, &caller, &id).await?;
    let job = finish_if_complete(&state, &caller, &session).await?;
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(session.offset));
    headers.insert(UPLOAD_LENGTH, HeaderValue::from(session.length));
    if !session.metadata.is_empty() {
        headers.insert(UPLOAD_METADATA, header_value(&session.metadata)?);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    describe_progress(headers, &session, job.as_deref());
    Ok(response)
}

/// Sends the next bytes of an upload (tus PATCH).
#[utoipa::path(patch, path = "/files/{id}", tag = "uploads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The upload's id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("Upload-Offset" = u64, Header, description = "Where the bytes start: the upload's offset"),
        ("Upload-Checksum" = Option<String>, Header, description = "`sha1 <base64 digest>` or `sha256 …` of the body: its bytes are kept only if they match")),
    request_body(content = String, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Kept: `Upload-Offset` is the new offset; once complete, `Job-Id` and `Job-Status-Url` name the job"),
        (status = 400, description = "A missing or malformed header", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such upload, or another user's", body = ErrorBody),
        (status = 409, description = "`Upload-Offset` is not the upload's offset", body = ErrorBody),
        (status = 410, description = "The upload expired", body = ErrorBody),
        (status = 412, description = "Another tus version", body = ErrorBody),
        (status = 413, description = "The body goes past the upload's length", body = ErrorBody),
        (status = 415, description = "Not `application/offset+octet-stream`, or the first bytes are no media", body = ErrorBody),
        (status = 423, description = "Another PATCH to this upload is still running", body = ErrorBody),
        (status = 460, description = "The body does not match `Upload-Checksum`; none of it was kept", body = ErrorBody),
        (status = 503, description = "Storage or the queue is down", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(user_id, upload_id = %id))]
pub async fn append(
    State(state): State<AppState>,
    caller: Caller,
    _: Resumable,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if !is_offset_stream(&headers)? {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a PATCH body must be {OFFSET_OCTET_STREAM}"
        )));
    }
    let offset = number_header(&headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| ApiError::BadRequest("Upload-Offset is required".into()))?;
    let checksum = upload_checksum(&headers)?;
    let declared = number_header(&headers, &CONTENT_LENGTH)?;
    check_id(&id, "upload")?;
    let session = if offset == 0 {
        // A file's first bytes are looked at before any is stored, which needs its length.
        let session = live_session(&state, &caller, &id).await?;
        check_patch(&session, offset, declared)?;
        if session.offset == session.length {
            session
        } else {
            let target = AppendTarget::of(&session, declared);
            forward(&state, &caller, &target, checksum, body).await?
        }
    } else {
        // Straight to storage, which checks the offset, the expiry and the length as it takes
        // the upload's one writer's lease: no read of the session in front of every PATCH. A
        // refusal is looked into afterwards and answered as precisely.
        let target = AppendTarget {
            id: &id,
            offset,
            length: None,
            declared,
        };
        forward(&state, &caller, &target, checksum, body).await?
    };
    let job = finish_if_complete(&state, &caller, &session).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(session.offset));
    describe_progress(headers, &session, job.as_deref());
    Ok(response)
}

/// Removes an unfinished upload and its bytes (tus termination); a finished one's job keeps
/// its video.
#[utoipa::path(delete, path = "/files/{id}", tag = "uploads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The upload's id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such upload, or another user's", body = ErrorBody),
        (status = 412, description = "Another tus version", body = ErrorBody),
        (status = 423, description = "A PATCH to this upload is still running", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(user_id, upload_id = %id))]
pub async fn terminate(
    State(state): State<AppState>,
    caller: Caller,
    _: Resumable,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_id(&id, "upload")?;
    state
        .storage
        .abort_upload_session(&id, &caller.user_id)
        .await
        .map_err(append_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A PATCH, DELETE or HEAD sent as a POST with `X-HTTP-Method-Override`, for clients that
/// cannot send those methods.
#[utoipa::path(post, path = "/files/{id}", tag = "uploads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The upload's id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("X-HTTP-Method-Override" = String, Header, description = "`PATCH`, `DELETE` or `HEAD`: the request is answered as that method would be")),
    request_body(content = String, content_type = "application/offset+octet-stream",
        description = "For PATCH: the bytes"),
    responses(
        (status = 200, description = "As HEAD"),
        (status = 204, description = "As PATCH or DELETE"),
        (status = 400, description = "No or another X-HTTP-Method-Override, or a missing or malformed header", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such upload, or another user's", body = ErrorBody),
        (status = 409, description = "As PATCH: `Upload-Offset` is not the upload's offset", body = ErrorBody),
        (status = 410, description = "The upload expired", body = ErrorBody),
        (status = 412, description = "Another tus version", body = ErrorBody),
        (status = 413, description = "As PATCH: past the upload's length", body = ErrorBody),
        (status = 415, description = "As PATCH: not `application/offset+octet-stream`, or no media", body = ErrorBody),
        (status = 423, description = "Another request to this upload is still running", body = ErrorBody),
        (status = 460, description = "As PATCH: the body does not match `Upload-Checksum`", body = ErrorBody),
        (status = 503, description = "Storage or the queue is down", body = ErrorBody),
    ))]
pub async fn overridden(
    state: State<AppState>,
    caller: Caller,
    _: Resumable,
    id: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let method = headers
        .get(METHOD_OVERRIDE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_ascii_uppercase);
    match method.as_deref() {
        Some("PATCH") => append(state, caller, Resumable, id, headers, body).await,
        Some("DELETE") => Ok(terminate(state, caller, Resumable, id)
            .await?
            .into_response()),
        Some("HEAD") => status(state, caller, Resumable, id).await,
        _ => Err(ApiError::BadRequest(
            "POST to an upload needs X-HTTP-Method-Override: PATCH, DELETE or HEAD".into(),
        )),
    }
}

/// The caller's upload `id`, unless it expired (410), is not there (404) or is still being
/// appended to after storage waited a little for that append to end (423): the offset of an
/// upload no request is writing to is where the next PATCH starts.
async fn live_session(state: &AppState, caller: &Caller, id: &str) -> ApiResult<UploadSession> {
    check_id(id, "upload")?;
    let session = state
        .storage
        .upload_session(id, &caller.own())
        .await
        .map_err(|status| ApiError::from_status("storage", "upload", status))?;
    if session.expired {
        return Err(ApiError::Gone(
            "the upload expired before it was finished; start a new one".into(),
        ));
    }
    if session.appending {
        return Err(still_running());
    }
    Ok(session)
}

/// Why a PATCH of `declared` bytes at `offset` does not fit `session`, if it does not.
fn check_patch(session: &UploadSession, offset: u64, declared: Option<u64>) -> ApiResult<()> {
    if offset != session.offset {
        return Err(offset_mismatch(session.offset, offset));
    }
    if declared.is_some_and(|declared| declared > session.length - session.offset) {
        return Err(past_length(session.length));
    }
    Ok(())
}

/// Where a PATCH's bytes go.
struct AppendTarget<'a> {
    /// The upload.
    id: &'a str,
    /// Where the bytes start.
    offset: u64,
    /// The upload's length, when its session was read first; otherwise storage alone holds
    /// the bytes to it.
    length: Option<u64>,
    /// How many bytes the request says it brings (`Content-Length`).
    declared: Option<u64>,
}

impl<'a> AppendTarget<'a> {
    /// The bytes after those `session` holds.
    fn of(session: &'a UploadSession, declared: Option<u64>) -> Self {
        Self {
            id: &session.id,
            offset: session.offset,
            length: Some(session.length),
            declared,
        }
    }
}

/// Streams the body into the upload at its offset, in messages ([`BodyMessages`]).
/// The first bytes of a file are looked at before any is stored: no media, and the upload is
/// removed (415). A body that breaks off (or stalls) keeps what arrived, unless it carries a
/// checksum.
async fn forward(
    state: &AppState,
    caller: &Caller,
    target: &AppendTarget<'_>,
    checksum: Option<(ChecksumAlgorithm, Vec<u8>)>,
    body: Body,
) -> ApiResult<UploadSession> {
    let (checksum_algorithm, checksum) = checksum.unwrap_or_default();
    let header = pb::AppendHeader {
        id: target.id.to_owned(),
        owner_id: caller.user_id.clone(),
        offset: target.offset,
        checksum_algorithm: checksum_algorithm.into(),
        checksum: checksum.into(),
        length: target.declared,
    };
    let start = || state.storage.append(header.clone());
    // Opened once the first bytes of the file are known to be media.
    let mut append: Option<Append> = (target.offset > 0).then(start);
    if append.is_some() {
        // The call's task sends the header now, so storage takes the lease and opens the file
        // while the body arrives; otherwise it waited for the first messages to be read
        // (measured: 1.3-1.9 ms before storage saw the header of a 5 MiB PATCH, 0.6 after).
        tokio::task::yield_now().await;
    }
    let mut body = body.into_data_stream();
    let mut messages = BodyMessages::default();
    let mut received = 0u64;
    let bytes_in = metrics::counter!(crate::meters::TUS_BYTES);
    loop {
        let chunk = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) => {
                // Everything that arrived is kept: it goes to storage, then the append ends
                // without `finish`, which storage reads as a break.
                if let Some(mut append) = append {
                    if let Some(message) = messages.finish() {
                        append.send(message).await;
                    }
                    append.abandon().await;
                }
                return Err(ApiError::BadRequest(
                    "the request body broke off; HEAD the upload to see what was kept".into(),
                ));
            }
        };
        received += chunk.len() as u64;
        if let Some(length) = target.length
            && received > length - target.offset
        {
            if let Some(append) = append {
                append.abandon().await;
            }
            return Err(past_length(length));
        }
        bytes_in.increment(chunk.len() as u64);
        let Some(append) = append.as_mut() else {
            messages.hold(&chunk);
            if messages.gathered().len() >= SNIFF_BYTES {
                refuse_unless_media(state, caller, target.id, messages.gathered()).await?;
                append = Some(start());
            }
            continue;
        };
        if let Some(message) = messages.push(chunk)
            && !append.send(message).await
        {
            // Storage stopped reading: finishing says why.
            break;
        }
    }
    let mut append = match append {
        Some(append) => append,
        None => {
            // The body ended inside the window the container is recognised in: a whole file
            // that short is looked at now, the first part of a longer one when it completes.
            if target.length == Some(messages.gathered().len() as u64) {
                refuse_unless_media(state, caller, target.id, messages.gathered()).await?;
            }
            start()
        }
    };
    if let Some(message) = messages.finish() {
        append.send(message).await;
    }
    match append.finish().await {
        Ok(session) => Ok(session),
        Err(status) => explain_refusal(state, caller, target, received, status).await,
    }
}

/// What storage refusing (or failing) an append means for the client. Where storage says
/// only that the append cannot start (the offset, the expiry, a finished or missing upload),
/// the session is read to answer as a PATCH checked against it first would have been; a
/// PATCH that brought nothing to an upload that has every byte is then no failure at all.
async fn explain_refusal(
    state: &AppState,
    caller: &Caller,
    target: &AppendTarget<'_>,
    received: u64,
    status: tonic::Status,
) -> ApiResult<UploadSession> {
    let read = || async {
        state
            .storage
            .upload_session(target.id, &caller.own())
            .await
            .map_err(|status| ApiError::from_status("storage", "upload", status))
    };
    match status.code() {
        tonic::Code::OutOfRange => Err(past_length(match target.length {
            Some(length) => length,
            None => read().await?.length,
        })),
        tonic::Code::FailedPrecondition | tonic::Code::NotFound => {
            let session = live_session(state, caller, target.id).await?;
            check_patch(&session, target.offset, target.declared)?;
            match (session.offset == session.length, received) {
                (true, 0) => Ok(session),
                (true, _) => Err(past_length(session.length)),
                (false, _) => Err(append_error(status)),
            }
        }
        _ => Err(append_error(status)),
    }
}

/// Removes the upload `id` (415) unless `prefix`, its first bytes, is a video or audio
/// container.
async fn refuse_unless_media(
    state: &AppState,
    caller: &Caller,
    id: &str,
    prefix: &[u8],
) -> ApiResult<()> {
    if media_container(prefix).is_some() {
        return Ok(());
    }
    if let Err(error) = state
        .storage
        .abort_upload_session(id, &caller.user_id)
        .await
    {
        tracing::warn!(%error, "could not remove an upload that is no media");
    }
    Err(ApiError::UnsupportedMediaType(
        "the file is not a video or audio file (its first bytes match no known container)".into(),
    ))
}

/// When every byte of the upload is in: the job it became, made now if need be (the file
/// made, its first bytes looked at, the job recorded and queued, exactly once whoever asks
/// first). `None` while bytes are missing.
async fn finish_if_complete(
    state: &AppState,
    caller: &Caller,
    session: &UploadSession,
) -> ApiResult<Option<String>> {
    if session.offset < session.length {
        return Ok(None);
    }
    if !session.job_id.is_empty() {
        return Ok(Some(session.job_id.clone()));
    }
    let storage_error = |status| ApiError::from_status("storage", "upload", status);
    let (session, video) = state
        .storage
        .complete_upload_session(&session.id, &caller.user_id, "")
        .await
        .map_err(storage_error)?;
    let prefix = first_bytes(state, caller, &video).await?;
    if media_container(&prefix).is_none() {
        if let Err(error) = state
            .storage
            .delete_file(pb::Bucket::Videos, &video.id, &caller.own())
            .await
        {
            tracing::warn!(%error, "could not remove an upload that is no media");
        }
        refuse_unless_media(state, caller, &session.id, &prefix).await?;
    }
    let described = Described::from_metadata(&session.metadata)?;
    let created = state
        .storage
        .create_job_once(pb::CreateJobRequest {
            owner_id: caller.user_id.clone(),
            owner_email: caller.email.clone(),
            video_id: video.id.clone(),
            original_filename: session.filename.clone(),
            options: Some(described.options.to_proto()),
            upload_id: session.id.clone(),
            ..Default::default()
        })
        .await
        .map_err(storage_error)?;
    let job = created.job;
    tracing::Span::current().record("job_id", job.id.as_str());
    // Queued by whoever gets here before the session names the job: by the request that made
    // it, and again by a later one if that request failed to queue it or died first (never not
    // at all). Two requests finishing one upload at the same moment queue it twice, which the
    // converter's claim on the job makes harmless; tus clients do not do that.
    super::upload::queue_job(state, caller, &job).await?;
    state
        .storage
        .complete_upload_session(&session.id, &caller.user_id, &job.id)
        .await
        .map_err(storage_error)?;
    if !created.replayed {
        metrics::counter!(crate::meters::UPLOADS_ACCEPTED).increment(1);
        tracing::info!(size = video.size, job_id = %job.id, "resumable upload accepted");
    }
    Ok(Some(job.id))
}

/// Up to [`SNIFF_BYTES`] of the start of a stored file.
async fn first_bytes(
    state: &AppState,
    caller: &Caller,
    video: &pb::FileInfo,
) -> ApiResult<Vec<u8>> {
    let length = video.size.min(SNIFF_BYTES as u64);
    let mut stream = state
        .storage
        .download(
            pb::Bucket::Videos,
            &video.id,
            &caller.own(),
            0,
            Some(length),
        )
        .await
        .map_err(|status| ApiError::from_status("storage", "upload", status))?;
    let mut prefix = Vec::with_capacity(length as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|status| ApiError::from_status("storage", "upload", status))?;
        prefix.extend_from_slice(&chunk);
    }
    Ok(prefix)
}

/// The headers that say where an upload stands: its expiry while unfinished, its job once
/// done.
fn describe_progress(headers: &mut HeaderMap, session: &UploadSession, job_id: Option<&str>) {
    match job_id {
        Some(job_id) => {
            if let (Ok(id), Ok(url)) = (
                HeaderValue::from_str(job_id),
                HeaderValue::from_str(&format!("/jobs/{job_id}")),
            ) {
                headers.insert(JOB_ID, id);
                headers.insert(JOB_STATUS_URL, url);
            }
        }
        None => {
            let expires = session
                .expires_at
                .and_then(|at| u64::try_from(at.seconds).ok())
                .map(|seconds| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
            if let Some(expires) = expires
                && let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(expires))
            {
                headers.insert(UPLOAD_EXPIRES, value);
            }
        }
    }
}

/// What an upload's metadata says of it: the file's name and type, and the job's options.
#[derive(Debug)]
struct Described {
    filename: String,
    content_type: String,
    options: AudioOptions,
}

impl Described {
    /// Reads `Upload-Metadata`: comma-separated pairs of a key and its value in base64 (the
    /// value may be left out). `filename` (or `name`) and `filetype` (or `type`) describe the
    /// file, as tus clients send them; an upload option's name (`format`, `preset`, …) sets
    /// that option; other keys are kept but not read.
    fn from_metadata(metadata: &str) -> ApiResult<Self> {
        let mut filename = None;
        let mut content_type = None;
        let mut options = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for pair in metadata
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
        {
            let (key, value) = match pair.split_once(' ') {
                Some((key, value)) => (key, value.trim()),
                None => (pair, ""),
            };
            if key.is_empty() || !key.bytes().all(|byte| byte.is_ascii_graphic()) {
                return Err(ApiError::BadRequest(format!(
                    "Upload-Metadata holds a malformed key `{key}`"
                )));
            }
            if !seen.insert(key) {
                return Err(ApiError::BadRequest(format!(
                    "Upload-Metadata gives `{key}` twice"
                )));
            }
            let value = BASE64.decode(value).map_err(|_| {
                ApiError::BadRequest(format!(
                    "the Upload-Metadata value of `{key}` is not base64"
                ))
            })?;
            let text = || {
                String::from_utf8(value.clone()).map_err(|_| {
                    ApiError::BadRequest(format!(
                        "the Upload-Metadata value of `{key}` is not UTF-8 text"
                    ))
                })
            };
            match key {
                "filename" | "name" => filename = Some(text()?),
                "filetype" | "type" => content_type = Some(text()?),
                option if is_option_name(option) => options.push((option.to_owned(), text()?)),
                _ => {}
            }
        }
        let options = parse_options(
            options
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
        .map_err(|error| ApiError::BadRequest(format!("invalid option {error}")))?;
        let content_type = content_type
            .filter(|value| !value.is_empty() && value.len() <= 255 && value.is_ascii())
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        Ok(Self {
            filename: clean_filename(filename.as_deref().unwrap_or_default()),
            content_type,
            options,
        })
    }
}

/// `Upload-Checksum`: `sha1` or `sha256`, a space, and the body's digest in base64.
fn upload_checksum(headers: &HeaderMap) -> ApiResult<Option<(ChecksumAlgorithm, Vec<u8>)>> {
    let Some(value) = headers.get(UPLOAD_CHECKSUM) else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::BadRequest(format!(
            "Upload-Checksum must be an algorithm ({TUS_CHECKSUM_ALGORITHMS}), a space and the body's digest in base64"
        ))
    };
    let (name, digest) = value
        .to_str()
        .map_err(|_| malformed())?
        .trim()
        .split_once(' ')
        .ok_or_else(malformed)?;
    let (algorithm, length) = match name.to_ascii_lowercase().as_str() {
        "sha1" => (ChecksumAlgorithm::Sha1, 20),
        "sha256" => (ChecksumAlgorithm::Sha256, 32),
        _ => {
            return Err(ApiError::BadRequest(format!(
                "the checksum algorithm `{name}` is not supported; use one of {TUS_CHECKSUM_ALGORITHMS}"
            )));
        }
    };
    let digest = BASE64.decode(digest.trim()).map_err(|_| malformed())?;
    if digest.len() != length {
        return Err(malformed());
    }
    Ok(Some((algorithm, digest)))
}

/// Whether the body is declared `application/offset+octet-stream`; another declared type is
/// refused (415), none means no body.
fn is_offset_stream(headers: &HeaderMap) -> ApiResult<bool> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(false);
    };
    let declared = value
        .to_str()
        .ok()
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    if declared.as_deref() == Some(OFFSET_OCTET_STREAM) {
        Ok(true)
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "upload bytes must be sent as {OFFSET_OCTET_STREAM}"
        )))
    }
}

/// A header holding a non-negative decimal number, if present.
fn number_header(headers: &HeaderMap, name: &HeaderName) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{name} must be a non-negative whole number of bytes"
            ))
        })
}

fn header_value(text: &str) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(text).map_err(|error| ApiError::Internal {
        what: "an answer header",
        cause: error.into(),
    })
}

fn offset_mismatch(actual: u64, sent: u64) -> ApiError {
    ApiError::Conflict(format!(
        "the upload is at offset {actual}, not {sent}: HEAD it and send from there"
    ))
}

/// A body going past the upload's `length`.
fn past_length(length: u64) -> ApiError {
    ApiError::PayloadTooLarge { limit: length }
}

/// What storage refusing an append (or a termination) means for the client.
fn append_error(status: tonic::Status) -> ApiError {
    match status.code() {
        // The offset moved (another PATCH got there first), or the upload expired or
        // completed in between.
        tonic::Code::FailedPrecondition => ApiError::Conflict(format!(
            "{}; HEAD the upload to see where it stands",
            status.message()
        )),
        tonic::Code::Aborted => still_running(),
        tonic::Code::DataLoss => ApiError::ChecksumMismatch,
        _ => ApiError::from_status("storage", "upload", status),
    }
}

fn still_running() -> ApiError {
    ApiError::Locked("another request to this upload is still running; try again shortly".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_the_file_and_sets_options() {
        let encode = |text: &str| BASE64.encode(text);
        let metadata = format!(
            "filename {},filetype {},format {},is_confidential,quality {}",
            encode("../clip one.mp4"),
            encode("video/mp4"),
            encode("m4a"),
            encode("3")
        );
        let described = Described::from_metadata(&metadata).unwrap();
        assert_eq!(described.filename, "clip one.mp4");
        assert_eq!(described.content_type, "video/mp4");
        assert_eq!(described.options.quality, Some(3));
        assert_eq!(Described::from_metadata("").unwrap().filename, "upload");
    }

    #[test]
    fn malformed_metadata_is_refused_naming_the_key() {
        for (metadata, says) in [
            ("filename !!!", "`filename` is not base64"),
            ("filename YQ==,filename YQ==", "`filename` twice"),
            ("quality OTk=", "invalid option"),
            ("title /w==", "not UTF-8"),
        ] {
            let error = Described::from_metadata(metadata).unwrap_err().to_string();
            assert!(error.contains(says), "{metadata}: {error}");
        }
    }

    #[test]
    fn checksums_name_a_supported_algorithm_and_a_digest_of_its_length() {
        let mut headers = HeaderMap::new();
        let sha1 = BASE64.encode([7u8; 20]);
        headers.insert(UPLOAD_CHECKSUM, format!("sha1 {sha1}").parse().unwrap());
        assert_eq!(
            upload_checksum(&headers).unwrap(),
            Some((ChecksumAlgorithm::Sha1, vec![7; 20]))
        );
        for bad in [
            "md5 AAAA",
            "sha1",
            "sha256 not-base64",
            &format!("sha256 {sha1}"),
        ] {
            headers.insert(UPLOAD_CHECKSUM, bad.parse().unwrap());
            assert!(upload_checksum(&headers).is_err(), "{bad}");
        }
    }

    #[test]
    fn absolute_urls_come_from_the_configured_base_or_trusted_forwarded_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "gateway:8080".parse().unwrap());
        headers.insert("x-forwarded-host", "convert.example.com".parse().unwrap());
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        let relative = PublicUrls::default();
        assert_eq!(relative.of("/files/1", &headers), "/files/1");
        let forwarded = PublicUrls {
            base: None,
            trust_forwarded_headers: true,
        };
        assert_eq!(
            forwarded.of("/files/1", &headers),
            "https://convert.example.com/files/1"
        );
        let base = PublicUrls {
            base: Some("https://public.example".into()),
            trust_forwarded_headers: true,
        };
        assert_eq!(
            base.of("/files/1", &headers),
            "https://public.example/files/1"
        );
        headers.insert("x-forwarded-host", "evil.example/path?".parse().unwrap());
        headers.remove(HOST);
        assert_eq!(forwarded.of("/files/1", &headers), "/files/1");
    }
}
