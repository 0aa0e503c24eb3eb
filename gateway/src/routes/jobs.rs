//! `GET /jobs`, `GET /jobs/{id}` and `DELETE /jobs/{id}`: the caller's conversion jobs.

use super::{AppState, MalformedId, StorageRefusals, check_id};
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody, OrApiError};
use audio_options::AudioOptions;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use proto::storage::v1 as pb;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

/// A conversion job as users see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// The job's id.
    pub id: String,
    /// `queued`, `converting`, `done` or `failed`.
    pub status: &'static str,
    /// 0 to 100.
    pub progress_percent: u32,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The uploaded video.
    pub video_id: String,
    /// The audio file, once done (an MP3 unless `options.format` says otherwise; the name is
    /// older than formats).
    pub mp3_id: Option<String>,
    /// Where to download the audio file, once done.
    pub download_url: Option<String>,
    /// The video's original file name.
    pub original_filename: String,
    /// The resumable (tus) upload the video came from, as its URL path (`/files/{id}`);
    /// absent for a multipart upload.
    pub upload_url: Option<String>,
    /// Whether the outcome was e-mailed.
    pub notified: bool,
    /// What the job makes.
    pub options: AudioOptions,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// The most jobs one page holds (and the default).
pub const MAX_PAGE_JOBS: u32 = 100;

/// One page of the caller's jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// The jobs.
    pub jobs: Vec<JobView>,
    /// Present when older jobs follow: pass it as `page_token` to get the next page.
    pub next_page_token: Option<String>,
}

/// Which page of the jobs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// At most this many jobs (1 to 100; 100 when absent).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_page_token` of the page before; absent for the newest jobs.
    #[param(max_length = 200)]
    pub page_token: Option<String>,
}

impl From<pb::Job> for JobView {
    fn from(job: pb::Job) -> Self {
        let status = match pb::JobState::try_from(job.state) {
            Ok(pb::JobState::Queued) => "queued",
            Ok(pb::JobState::Converting) => "converting",
            Ok(pb::JobState::Done) => "done",
            Ok(pb::JobState::Failed) => "failed",
            _ => "unknown",
        };
        let mp3_id = (!job.mp3_id.is_empty()).then_some(job.mp3_id);
        Self {
            status,
            progress_percent: job.progress_percent,
            error: (!job.error_reason.is_empty()).then_some(job.error_reason),
            video_id: job.video_id,
            download_url: mp3_id.as_ref().map(|id| format!("/download/{id}")),
            mp3_id,
            original_filename: job.original_filename,
            upload_url: (!job.upload_id.is_empty())
                .then(|| format!("{}/{}", super::tus::FILES_PATH, job.upload_id)),
            notified: job.notified,
            // Storage validated them when it recorded the job.
            options: AudioOptions::from_proto(job.options.as_ref()).unwrap_or_default(),
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            id: job.id,
        }
    }
}

fn rfc3339(time: Option<prost_types::Timestamp>) -> String {
    time.map(|time| time.to_string()).unwrap_or_default()
}

/// Lists the caller's jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/jobs", tag = "jobs", security(("bearer" = [])),
    params(JobListQuery),
    responses(
        (status = 200, description = "A page of the caller's jobs", body = JobList),
        (status = 400, description = "A limit outside 1 to 100, or a malformed page token", body = ErrorBody),
        StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id))]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<JobListQuery>, QueryRejection>,
) -> ApiResult<Json<JobList>> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::BadRequest(format!("malformed query: {}", rejection.body_text()))
    })?;
    let limit = query.limit.unwrap_or(MAX_PAGE_JOBS);
    if !(1..=MAX_PAGE_JOBS).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE_JOBS}"
        )));
    }
    let page = state
        .storage
        .jobs_page(
            &caller.own(),
            limit,
            query.page_token.as_deref().unwrap_or_default(),
        )
        .await
        .or_api("storage", "job")?;
    Ok(Json(JobList {
        jobs: page.items.into_iter().map(JobView::from).collect(),
        next_page_token: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    }))
}

/// One of the caller's jobs.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job of the caller's", body = ErrorBody),
        MalformedId, StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id, job_id = %id))]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    check_id(&id, "job")?;
    let job = state
        .storage
        .job(&id, &caller.readable_owner())
        .await
        .or_api("storage", "job")?;
    Ok(Json(job.into()))
}

/// Deletes one of the caller's jobs with its video and MP3.
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$")),
    responses(
        (status = 204, description = "Deleted with its files"),
        (status = 404, description = "No such job of the caller's", body = ErrorBody),
        MalformedId, StorageRefusals,
    ))]
#[instrument(skip_all, fields(user_id, job_id = %id))]
pub async fn delete_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_id(&id, "job")?;
    state
        .storage
        .delete_job(&id, &caller.readable_owner())
        .await
        .or_api("storage", "job")?;
    Ok(StatusCode::NO_CONTENT)
}
