//! `POST /upload`: the video streams from the multipart body straight into the storage service
//! as it arrives, then a job is recorded and queued. Memory stays flat whatever the size.
//!
//! The promise: an upload answered 2xx is stored, recorded and queued; one that fails leaves
//! nothing behind. The storage stream only ends with `finish` once every byte arrived and the
//! body held exactly one file, so a failure before that (or the client going away, which drops
//! this handler) makes storage discard the bytes. After that, each later failure undoes the
//! steps before it.

use super::AppState;
use crate::body_messages::BodyMessages;
use crate::caller::Caller;
use crate::duration::DurationProbe;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::sniff::{SNIFF_BYTES, media_container};
use audio_options::{AudioOptions, is_option_name, parse_options};
use axum::Json;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, RawQuery, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clients::Upload;
use proto::events::v1::{VideoUploaded, event::Payload};
use proto::storage::v1 as pb;
use proto::storage::v1::MAX_IDEMPOTENCY_KEY_BYTES;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

/// Longest original file name kept.
const MAX_FILENAME_CHARS: usize = 255;

/// The upload's body, for the OpenAPI document: the handler reads the multipart stream itself.
/// Options (see the query parameters) may also come as text fields before the file part.
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// The video (any single file part is taken; `file` is the conventional name).
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    pub file: String,
}

/// What the job makes, as query parameters or as multipart text fields before the file part
/// (a name given both ways is refused). Every one is optional; a preset is applied first and
/// explicit options override it.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only: the handler reads the pairs itself.
pub struct UploadOptions {
    /// A preset from `GET /presets` (`music`, `podcast`, `voice`, `archive`).
    preset: Option<String>,
    /// `mp3` (the default), `m4a` (AAC), `opus` (Ogg Opus) or `flac`.
    format: Option<String>,
    /// Variable bitrate quality, 0 (best) to 9 (smallest); 2 when neither this nor `bitrate`.
    #[param(minimum = 0, maximum = 9)]
    quality: Option<u8>,
    /// Constant bitrate in kb/s (for MP3 one of LAME's: 8 … 320).
    bitrate: Option<u16>,
    /// Sample rate in Hz.
    sample_rate: Option<u32>,
    /// 1 (mono) or 2 (stereo).
    channels: Option<String>,
    /// Where the kept part starts: seconds (`90.5`) or `HH:MM:SS.mmm`.
    start: Option<String>,
    /// Where the kept part ends, in the same form; after `start`.
    end: Option<String>,
    /// `true` (to -16 LUFS), `false`, or a target in LUFS such as `-14`; two passes of
    /// ffmpeg's loudnorm (EBU R128).
    normalize: Option<String>,
    /// The true-peak ceiling with `normalize`, dBTP (default -1.5).
    true_peak: Option<f64>,
    /// `auto` (a representative frame of the video; an audio file keeps its own) or `none`.
    cover: Option<String>,
    /// The ID3v2 version of an MP3: `2.3` (the default, read by every player) or `2.4`.
    id3v2: Option<String>,
    /// Title tag (default: the source's title, else the file name without its extension).
    title: Option<String>,
    /// Artist tag.
    artist: Option<String>,
    /// Album tag.
    album: Option<String>,
    /// Year (`2024`) or date (`2024-05-31`).
    year: Option<String>,
    /// Track number (`3` or `3/12`).
    track: Option<String>,
    /// Genre tag.
    genre: Option<String>,
    /// Comment tag.
    comment: Option<String>,
}

/// An accepted upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadAccepted {
    /// The conversion job.
    pub job_id: String,
    /// The stored video.
    pub video_id: String,
    /// Where to follow the job.
    pub status_url: String,
    /// What the job makes (the preset resolved, the defaults spelled out).
    pub options: AudioOptions,
}

impl UploadAccepted {
    fn of(job_id: String, video_id: String, options: AudioOptions) -> Self {
        Self {
            status_url: format!("/jobs/{job_id}"),
            job_id,
            video_id,
            options,
        }
    }
}

/// The request header that makes an upload safe to send again: the same key from the same
/// user within 24 hours gets the first answer back, and nothing is created twice.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header that says an answer is the one a request with the same
/// `Idempotency-Key` got before.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Why forwarding the body stopped.
enum Forwarding {
    /// The client's body was at fault (or broke off).
    Client(ApiError),
    /// Storage stopped reading; its answer says why.
    StorageGone,
}

/// Uploads a video (one file in a multipart body) and queues its conversion.
#[utoipa::path(post, path = "/upload", tag = "files",
    security(("bearer" = [])),
    params(
        UploadOptions,
        ("Idempotency-Key" = Option<String>, Header,
            description = "Makes the upload safe to retry: 1 to 255 printable ASCII characters. Within 24 hours, the same key from the same user with the same file, name and options gets the first answer again (with `Idempotent-Replayed: true`) and creates nothing; with anything else it is a 422."),
    ),
    request_body(content = UploadForm, content_type = "multipart/form-data",
        description = "Exactly one file part (conventionally named `file`): a video or audio container."),
    responses(
        (status = 202, description = "Stored and queued (or, with `Idempotent-Replayed: true`, the answer to an earlier request with the same Idempotency-Key)", body = UploadAccepted),
        (status = 400, description = "Malformed multipart body, no file, two files, an empty file, or an option that cannot be used (the message names it)", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 413, description = "Larger than the limit", body = ErrorBody),
        (status = 409, description = "An earlier request with the same Idempotency-Key is still being handled; nothing was kept", body = ErrorBody),
        (status = 415, description = "Not multipart, or the file is not a video/audio container", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for another upload; nothing was kept", body = ErrorBody),
        (status = 503, description = "Storage, auth or the queue is down; nothing was kept", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(user_id, video_id, job_id))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let is_multipart = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !is_multipart {
        return Err(ApiError::UnsupportedMediaType(
            "send the video as multipart/form-data".into(),
        ));
    }
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "malformed multipart body: {}",
            rejection.body_text()
        ))
    })?;
    let limit = state.max_upload_bytes;
    let body_error = |error: MultipartError| multipart_error(error, limit);

    let idempotency_key = idempotency_key(&headers)?;
    let mut given = query_pairs(query.as_deref().unwrap_or_default())?;
    let mut field = loop {
        match multipart.next_field().await.map_err(body_error)? {
            Some(field) if is_file(&field) => break field,
            Some(field) => {
                if let Some(name) = field.name().filter(|name| is_option_name(name)) {
                    let name = name.to_owned();
                    let value = read_option_field(field, &name, limit).await?;
                    given.push((name, value));
                }
            }
            None => {
                return Err(ApiError::BadRequest(
                    "the body holds no file; send it as a multipart part named `file`".into(),
                ));
            }
        }
    };
    // Before a byte is stored.
    let options = parse_options(
        given
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    )
    .map_err(|error| ApiError::BadRequest(format!("invalid option {error}")))?;
    let filename = clean_filename(field.file_name().unwrap_or_default());
    let declared_type = field
        .content_type()
        .unwrap_or("application/octet-stream")
        .to_owned();

    let mut messages = BodyMessages::default();
    while messages.gathered().len() < SNIFF_BYTES {
        match field.chunk().await.map_err(body_error)? {
            Some(chunk) => messages.hold(&chunk),
            None => break,
        }
    }
    if messages.gathered().is_empty() {
        return Err(ApiError::BadRequest("the file is empty".into()));
    }
    let Some(container) = media_container(messages.gathered()) else {
        return Err(ApiError::UnsupportedMediaType(
            "the file is not a video or audio file (its first bytes match no known container)"
                .into(),
        ));
    };
    tracing::debug!(container, "upload recognised");

    let mut upload = state.storage.upload(pb::UploadHeader {
        bucket: pb::Bucket::Videos.into(),
        owner_id: caller.user_id.clone(),
        filename: filename.clone(),
        content_type: declared_type,
        job_id: String::new(),
    });
    // An MP4's or a Matroska file's duration shows as it streams past, so a trim that starts
    // past its end is refused before storage keeps the file (other containers: the converter
    // refuses it).
    let mut duration = options
        .start_ms
        .and_then(|_| DurationProbe::for_container(container));
    let forwarded =
        match forward_field(field, messages, &mut upload, limit, duration.as_mut()).await {
            Ok(()) => refuse_more_files(&mut multipart, limit).await,
            error => error,
        };
    let forwarded = forwarded.and_then(|()| {
        check_trim_start(
            &options,
            duration.as_ref().and_then(DurationProbe::duration),
        )
        .map_err(Forwarding::Client)
    });
    let video = match forwarded {
        // Storage keeps the file only once it has every byte of a body that held one file.
        Ok(()) => upload
            .finish()
            .await
            .map_err(|status| stored_error(status, limit))?,
        Err(Forwarding::Client(error)) => {
            upload.abandon().await;
            return Err(error);
        }
        // Storage stopped reading: its answer says why.
        Err(Forwarding::StorageGone) => {
            let status = upload.finish().await.err().unwrap_or_else(|| {
                tonic::Status::internal("storage answered before the upload ended")
            });
            return Err(stored_error(status, limit));
        }
    };
    tracing::Span::current().record("video_id", video.id.as_str());

    let key = idempotency_key.map(|key| {
        let fingerprint = request_fingerprint(&video, &filename, &options);
        (key, fingerprint)
    });
    let (accepted, replayed) =
        record_and_queue(&state, &caller, &video, &filename, options, key).await?;
    if replayed {
        tracing::info!(job_id = %accepted.job_id, "idempotent upload replayed");
    } else {
        metrics::counter!(crate::meters::UPLOADS_ACCEPTED).increment(1);
        metrics::counter!(crate::meters::UPLOAD_BYTES).increment(video.size);
        tracing::info!(size = video.size, "upload accepted");
    }
    let mut response = (StatusCode::ACCEPTED, Json(&accepted)).into_response();
    if let Ok(location) = HeaderValue::from_str(&accepted.status_url) {
        response.headers_mut().insert(LOCATION, location);
    }
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The request's `Idempotency-Key`, if it sends one: 1 to 255 printable ASCII characters (the
/// structured-field form, in double quotes, is taken too).
pub(super) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let refused = || {
        ApiError::BadRequest(format!(
            "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters"
        ))
    };
    let text = value.to_str().map_err(|_| refused())?;
    let key = text
        .strip_prefix('"')
        .and_then(|quoted| quoted.strip_suffix('"'))
        .unwrap_or(text);
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_BYTES
        || !key.bytes().all(|byte| byte.is_ascii_graphic())
    {
        return Err(refused());
    }
    Ok(Some(key.to_owned()))
}

/// What tells one upload from another under the same key: the file's bytes (storage's
/// checksum of them), its name and the options, resolved.
fn request_fingerprint(video: &pb::FileInfo, filename: &str, options: &AudioOptions) -> String {
    let mut digest = Sha256::new();
    for part in [video.sha256.as_bytes(), filename.as_bytes()] {
        digest.update(part);
        digest.update([0]);
    }
    digest.update(serde_json::to_vec(options).unwrap_or_default());
    hex::encode(digest.finalize())
}

/// What storage refusing to create something under an `Idempotency-Key` (or failing to)
/// means for the client: the key was used for another request (422), or its first request is
/// still being handled (409).
pub(super) fn keyed_creation_error(status: tonic::Status, what: &'static str) -> ApiError {
    match status.code() {
        tonic::Code::AlreadyExists => ApiError::Unprocessable(
            "this Idempotency-Key was used for another upload; use a new key".into(),
        ),
        tonic::Code::Aborted => ApiError::Conflict(
            "an upload with this Idempotency-Key is still being handled; try again shortly".into(),
        ),
        _ => ApiError::from_status("storage", what, status),
    }
}

/// What storage refusing (or failing) the upload means for the client.
fn stored_error(status: tonic::Status, limit: u64) -> ApiError {
    if status.code() == tonic::Code::ResourceExhausted {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::from_status("storage", "file", status)
    }
}

/// Records the job and queues it; undoes what was done if a step fails. With an idempotency
/// key (and the request's fingerprint) that an earlier request used, nothing is recorded or
/// queued: the answer is that request's, and `true` says so.
async fn record_and_queue(
    state: &AppState,
    caller: &Caller,
    video: &pb::FileInfo,
    filename: &str,
    options: AudioOptions,
    key: Option<(String, String)>,
) -> ApiResult<(UploadAccepted, bool)> {
    let (idempotency_key, request_fingerprint) = key.unwrap_or_default();
    let created = state
        .storage
        .create_job_once(pb::CreateJobRequest {
            owner_id: caller.user_id.clone(),
            owner_email: caller.email.clone(),
            video_id: video.id.clone(),
            original_filename: filename.to_owned(),
            options: Some(options.to_proto()),
            idempotency_key,
            request_fingerprint,
            upload_id: String::new(),
        })
        .await;
    let job = match created {
        Ok(created) if !created.replayed => created.job,
        // This video is a second copy of the earlier request's: not kept.
        Ok(created) => {
            remove_unrecorded_video(state, caller, video).await;
            let job = created.job;
            tracing::Span::current().record("job_id", job.id.as_str());
            let options = AudioOptions::from_proto(job.options.as_ref()).map_err(|error| {
                ApiError::Internal {
                    what: "storage",
                    cause: error.into(),
                }
            })?;
            return Ok((UploadAccepted::of(job.id, job.video_id, options), true));
        }
        Err(status) => {
            remove_unrecorded_video(state, caller, video).await;
            return Err(keyed_creation_error(status, "file"));
        }
    };
    tracing::Span::current().record("job_id", job.id.as_str());

    if let Err(error) = queue_job(state, caller, &job).await {
        if let Err(cleanup) = state.storage.delete_job(&job.id, &caller.own()).await {
            tracing::error!(error = %cleanup, job_id = %job.id, "could not remove a job that was never queued");
        }
        return Err(error);
    }
    Ok((UploadAccepted::of(job.id, video.id.clone(), options), false))
}

/// Queues a recorded job for the converters.
pub(super) async fn queue_job(state: &AppState, caller: &Caller, job: &pb::Job) -> ApiResult<()> {
    let payload = Payload::VideoUploaded(VideoUploaded {
        job_id: job.id.clone(),
        video_id: job.video_id.clone(),
        owner_id: caller.user_id.clone(),
        owner_email: caller.email.clone(),
        original_filename: job.original_filename.clone(),
    });
    super::publish(state, &state.publisher.queues().video_queue, payload).await
}

/// Removes a stored video no job was recorded for.
async fn remove_unrecorded_video(state: &AppState, caller: &Caller, video: &pb::FileInfo) {
    let removed = state
        .storage
        .delete_file(pb::Bucket::Videos, &video.id, &caller.own())
        .await;
    if let Err(error) = removed {
        tracing::error!(%error, video_id = %video.id, "could not remove the video of a job that was never recorded");
    }
}

/// Sends the file part to storage in messages ([`BodyMessages`]), starting with the bytes
/// already read.
async fn forward_field(
    mut field: Field<'_>,
    mut messages: BodyMessages,
    upload: &mut Upload,
    limit: u64,
    mut duration: Option<&mut DurationProbe>,
) -> Result<(), Forwarding> {
    if let Some(duration) = duration.as_deref_mut() {
        duration.feed(messages.gathered());
    }
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if let Some(duration) = duration.as_deref_mut() {
                    duration.feed(&chunk);
                }
                if let Some(message) = messages.push(chunk)
                    && !upload.send(message).await
                {
                    return Err(Forwarding::StorageGone);
                }
            }
            Ok(None) => break,
            Err(error) => return Err(Forwarding::Client(multipart_error(error, limit))),
        }
    }
    if let Some(message) = messages.finish()
        && !upload.send(message).await
    {
        return Err(Forwarding::StorageGone);
    }
    Ok(())
}

/// Refuses a trim that starts at or past the end of a video of `duration`, when it is known.
fn check_trim_start(options: &AudioOptions, duration: Option<Duration>) -> ApiResult<()> {
    let (Some(start), Some(duration)) = (options.start_ms, duration) else {
        return Ok(());
    };
    if Duration::from_millis(start) < duration {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "invalid option `start`: {:.3} s is at or past the end of the video, which is {:.3} s long",
        start as f64 / 1000.0,
        duration.as_secs_f64()
    )))
}

/// Reads the rest of the body: other form fields are ignored, a second file is refused.
async fn refuse_more_files(multipart: &mut Multipart, limit: u64) -> Result<(), Forwarding> {
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if is_file(&field) => {
                return Err(Forwarding::Client(ApiError::BadRequest(
                    "the body holds more than one file; send exactly one".into(),
                )));
            }
            Ok(Some(field)) if field.name().is_some_and(is_option_name) => {
                return Err(Forwarding::Client(ApiError::BadRequest(format!(
                    "invalid option `{}`: options must come before the file part",
                    field.name().unwrap_or_default()
                ))));
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Ok(()),
            Err(error) => return Err(Forwarding::Client(multipart_error(error, limit))),
        }
    }
}

/// The query's `name=value` pairs, percent-decoded.
fn query_pairs(query: &str) -> ApiResult<Vec<(String, String)>> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map_err(|_| ApiError::BadRequest("the query string is malformed".into()))
}

/// An option's text field, read up to a bound (a tag's longest value in UTF-8, with room), so
/// a huge field is refused without being held.
async fn read_option_field(mut field: Field<'_>, name: &str, limit: u64) -> ApiResult<String> {
    const MAX_OPTION_BYTES: usize = audio_options::MAX_TAG_CHARS * 4 + 64;
    let mut value = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|error| multipart_error(error, limit))?
    {
        if value.len() + chunk.len() > MAX_OPTION_BYTES {
            return Err(ApiError::BadRequest(format!(
                "invalid option `{name}`: is longer than {} characters",
                audio_options::MAX_TAG_CHARS
            )));
        }
        value.extend_from_slice(&chunk);
    }
    String::from_utf8(value)
        .map_err(|_| ApiError::BadRequest(format!("invalid option `{name}`: is not UTF-8 text")))
}

/// Whether a part is the file: one with a file name, or (like the original tutorial's
/// clients) one named `file`.
fn is_file(field: &Field<'_>) -> bool {
    field.file_name().is_some() || field.name() == Some("file")
}

fn multipart_error(error: MultipartError, limit: u64) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::BadRequest(format!("malformed multipart body: {}", error.body_text()))
    }
}

/// The file name as kept: the last path component, without control characters, bounded.
pub(super) fn clean_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        "upload".to_owned()
    } else {
        cleaned.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::clean_filename;

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(clean_filename("clip.mp4"), "clip.mp4");
        assert_eq!(clean_filename("C:\\videos\\clip.mp4"), "clip.mp4");
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("a\r\nb\u{0}.mp4"), "ab.mp4");
        assert_eq!(clean_filename(""), "upload");
        assert_eq!(clean_filename(".."), "upload");
        assert_eq!(clean_filename(&"x".repeat(1000)).len(), 255);
    }
}
