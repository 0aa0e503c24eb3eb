//! `GET /download/{mp3_id}` (and the original tutorial's `GET /download?fid=…`): the audio file
//! (an MP3 unless the job asked for another format; the path keeps its old name) streams from
//! storage to the client, with ranges and conditional requests.

use super::{AppState, MalformedId, StorageRefusals, check_id};
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody, OrApiError};
use crate::http_util::{RangeRequest, attachment_disposition, etag_matches, parse_range};
use audio_options::Format;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use clients::storage::Bucket;
use futures::StreamExt;
use serde::Deserialize;
use tracing::instrument;
use utoipa::IntoParams;

/// The tutorial's query form.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// The MP3's id (24 hex characters).
    #[param(pattern = "^[0-9a-fA-F]{24}$")]
    pub fid: String,
}

/// Downloads an MP3 of the caller's.
#[utoipa::path(get, path = "/download/{mp3_id}", tag = "files", security(("bearer" = [])),
    params(
        ("mp3_id" = String, Path, description = "The MP3's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023`"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier download"),
    ),
    responses(
        (status = 200, description = "The whole file (its type follows the job's format)", content((Vec<u8> = "audio/mpeg"), (Vec<u8> = "audio/mp4"), (Vec<u8> = "audio/ogg"), (Vec<u8> = "audio/flac"))),
        (status = 206, description = "The requested range", content((Vec<u8> = "audio/mpeg"), (Vec<u8> = "audio/mp4"), (Vec<u8> = "audio/ogg"), (Vec<u8> = "audio/flac"))),
        (status = 304, description = "Unchanged since the ETag given"),
        (status = 404, description = "No such MP3 of the caller's", body = ErrorBody),
        (status = 416, description = "The range is outside the file", body = ErrorBody),
        MalformedId, StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id, mp3_id = %id))]
pub async fn download_by_path(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_mp3(&state, &caller, id, &headers).await
}

/// Downloads an MP3 of the caller's (the original tutorial's form).
#[utoipa::path(get, path = "/download", tag = "files", security(("bearer" = [])),
    params(FileQuery),
    responses(
        (status = 200, description = "The whole file (its type follows the job's format)", content((Vec<u8> = "audio/mpeg"), (Vec<u8> = "audio/mp4"), (Vec<u8> = "audio/ogg"), (Vec<u8> = "audio/flac"))),
        (status = 206, description = "The requested range", content((Vec<u8> = "audio/mpeg"), (Vec<u8> = "audio/mp4"), (Vec<u8> = "audio/ogg"), (Vec<u8> = "audio/flac"))),
        (status = 400, description = "Missing or malformed `fid`", body = ErrorBody),
        (status = 404, description = "No such MP3 of the caller's", body = ErrorBody),
        (status = 416, description = "The range is outside the file", body = ErrorBody),
        StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id))]
pub async fn download_by_query(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<FileQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Query(query) = query
        .map_err(|_| ApiError::BadRequest("the query must name the MP3 as `fid=<id>`".into()))?;
    serve_mp3(&state, &caller, query.fid, &headers).await
}

async fn serve_mp3(
    state: &AppState,
    caller: &Caller,
    id: String,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    check_id(&id, "file")?;
    let owner = caller.readable_owner();
    let file = state
        .storage
        .stat(Bucket::Mp3s, &id, &owner)
        .await
        .or_api("storage", "file")?;

    let etag = format!("\"{}\"", file.sha256);
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes");
    if etag_matches(text(header::IF_NONE_MATCH), &etag) {
        return response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(|error| ApiError::Internal {
                what: "building the answer",
                cause: error.into(),
            });
    }
    let (status, offset, length) = match parse_range(text(header::RANGE), file.size) {
        RangeRequest::Whole => (StatusCode::OK, 0, file.size),
        RangeRequest::Partial { start, end } => {
            response = response.header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", file.size),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            return Err(ApiError::RangeNotSatisfiable { size: file.size });
        }
    };

    let chunks = state
        .storage
        .download(Bucket::Mp3s, &id, &owner, offset, Some(length))
        .await
        .or_api("storage", "file")?;
    let body = chunks.map(|chunk| {
        chunk.map_err(|status| {
            // Headers are gone already: all that is left is to cut the body short, which the
            // client sees as a download shorter than Content-Length.
            tracing::warn!(%status, "download broke off");
            std::io::Error::other(status.message().to_owned())
        })
    });
    metrics::counter!(crate::meters::DOWNLOAD_BYTES).increment(length);
    // The converter stored the file with its format's media type; anything else (a file
    // stored before formats existed) is an MP3.
    let format = Format::ALL
        .into_iter()
        .find(|format| format.content_type() == file.content_type)
        .unwrap_or_default();
    response
        .status(status)
        .header(header::CONTENT_TYPE, format.content_type())
        .header(header::CONTENT_LENGTH, length)
        .header(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&attachment_disposition(&file.filename, format.extension()))
                .unwrap_or(HeaderValue::from_static(
                    "attachment; filename=\"audio.mp3\"",
                )),
        )
        .body(Body::from_stream(body))
        .map_err(|error| ApiError::Internal {
            what: "building the answer",
            cause: error.into(),
        })
}
