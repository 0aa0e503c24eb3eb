//! The records the storage service keeps, whichever backend keeps them, and the rules for
//! changing a job. The rules are pure functions of a record, so they are tested without a
//! database and both backends only need a compare-and-set on the record's revision.

use crate::error::{StorageError, StorageResult};
use audio_options::AudioOptions;
use proto::storage::v1 as pb;
use serde::{Deserialize, Serialize};

pub mod session;

pub use mongodb::bson::DateTime;
pub use mongodb::bson::oid::ObjectId;

/// Longest original file name kept, in bytes.
pub const MAX_FILENAME_BYTES: usize = 1024;
/// Longest failure reason kept, in characters.
pub const MAX_ERROR_REASON_CHARS: usize = 2000;

/// How long an idempotency key brings back the job its first request created.
pub const IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// A claim whose job was never recorded (its request died between the two writes) frees its
/// key after this long.
pub const ABANDONED_CLAIM_AFTER: std::time::Duration = std::time::Duration::from_secs(60);
pub use pb::MAX_IDEMPOTENCY_KEY_BYTES;

/// An owner's idempotency key, claimed by the first request that used it: the job that request
/// creates, and what identifies the request, so a retry is told from another request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyClaim {
    /// `{owner_id}/{key}`: unique by construction (owner ids hold no `/`).
    #[serde(rename = "_id")]
    pub id: String,
    /// The key's owner.
    pub owner_id: String,
    /// The client's key.
    pub key: String,
    /// The caller's digest of the request.
    pub fingerprint: String,
    /// The record the first request creates: its job, or (for a key given when creating a
    /// resumable upload) its upload session.
    pub job_id: ObjectId,
    /// When the key was first used.
    pub created_at: DateTime,
}

impl KeyClaim {
    /// A claim made now for `job_id`.
    pub fn new(owner_id: &str, key: &str, fingerprint: &str, job_id: ObjectId) -> Self {
        Self {
            id: Self::id_of(owner_id, key),
            owner_id: owner_id.to_owned(),
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            job_id,
            created_at: DateTime::now(),
        }
    }

    /// A claim made now on a key given when creating resumable upload session `session_id`.
    /// Such keys are claimed apart from the keys of uploads (a client may use one string for
    /// both).
    pub fn for_upload_session(
        owner_id: &str,
        key: &str,
        fingerprint: &str,
        session_id: ObjectId,
    ) -> Self {
        Self {
            // Keys are printable ASCII without spaces, so this id is no upload key's.
            id: format!("{owner_id}/upload session {key}"),
            ..Self::new(owner_id, key, fingerprint, session_id)
        }
    }

    /// The claim that makes the job of upload session `session_id` once: whoever completes the
    /// session first creates it, and everyone after gets it back.
    pub fn for_upload_job(owner_id: &str, session_id: &str, job_id: ObjectId) -> Self {
        Self {
            id: format!("{owner_id}/job of upload session {session_id}"),
            ..Self::new(owner_id, session_id, session_id, job_id)
        }
    }

    /// The claim id of `owner_id`'s `key`.
    pub fn id_of(owner_id: &str, key: &str) -> String {
        format!("{owner_id}/{key}")
    }

    /// Whether the claim has outlived `window` at `now`.
    pub fn is_older_than(&self, window: std::time::Duration, now: DateTime) -> bool {
        let age_ms = now.timestamp_millis() - self.created_at.timestamp_millis();
        u128::try_from(age_ms).is_ok_and(|age_ms| age_ms >= window.as_millis())
    }
}

/// Which kind of file: the uploaded videos, or the MP3s made from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// Uploaded videos.
    Videos,
    /// Converted MP3s.
    Mp3s,
}

impl Bucket {
    /// Every bucket, for set-up and sweeps.
    pub const ALL: [Bucket; 2] = [Bucket::Videos, Bucket::Mp3s];

    /// The bucket's name on disk and in MongoDB.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Videos => "videos",
            Bucket::Mp3s => "mp3s",
        }
    }

    /// The bucket a request names; it must name one.
    pub fn from_proto(value: i32) -> StorageResult<Self> {
        match pb::Bucket::try_from(value) {
            Ok(pb::Bucket::Videos) => Ok(Bucket::Videos),
            Ok(pb::Bucket::Mp3s) => Ok(Bucket::Mp3s),
            _ => Err(StorageError::InvalidArgument(
                "bucket must be BUCKET_VIDEOS or BUCKET_MP3S".into(),
            )),
        }
    }

    fn to_proto(self) -> pb::Bucket {
        match self {
            Bucket::Videos => pb::Bucket::Videos,
            Bucket::Mp3s => pb::Bucket::Mp3s,
        }
    }
}

/// Parses a 24-character hex id; anything else is the caller's mistake.
pub fn parse_id(value: &str, what: &str) -> StorageResult<ObjectId> {
    ObjectId::parse_str(value).map_err(|_| {
        StorageError::InvalidArgument(format!("malformed {what} id: expected 24 hex characters"))
    })
}

/// Whose records a request may see, as the contract says it explicitly: one owner's, or every
/// owner's for a trusted caller (a worker, an admin's request relayed by the gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Only this owner's records.
    One(String),
    /// Every owner's.
    Any,
}

impl Owner {
    /// The scope a request's `owner_id` and `any_owner` name. Naming neither is refused, so a
    /// caller that forgot the owner is not shown everyone's records.
    pub fn from_request(owner_id: String, any_owner: bool) -> StorageResult<Self> {
        match (owner_id.is_empty(), any_owner) {
            (false, false) => Ok(Self::One(owner_id)),
            (true, true) => Ok(Self::Any),
            (true, false) => Err(StorageError::InvalidArgument(
                "owner_id is required (or any_owner, for a trusted caller reading every owner's)"
                    .into(),
            )),
            (false, true) => Err(StorageError::InvalidArgument(
                "owner_id and any_owner exclude each other".into(),
            )),
        }
    }

    /// Whether a record owned by `owner_id` is in scope.
    pub fn sees(&self, owner_id: &str) -> bool {
        match self {
            Self::One(owner) => owner == owner_id,
            Self::Any => true,
        }
    }
}

/// Where a newest-first listing goes on: everything older than the record made at `at` with id
/// `id` (ids break ties between records of the same millisecond). Clients see it only as an
/// opaque `page_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    /// The last listed record's time.
    pub at: DateTime,
    /// The last listed record's id.
    pub id: ObjectId,
}

impl PageCursor {
    /// The token that resumes after this record.
    pub fn token(&self) -> String {
        format!("{}.{}", self.at.timestamp_millis(), self.id.to_hex())
    }

    /// The cursor a request's `page_token` names; `None` for the first page.
    pub fn from_token(token: &str) -> StorageResult<Option<Self>> {
        if token.is_empty() {
            return Ok(None);
        }
        let malformed = || StorageError::InvalidArgument("malformed page_token".into());
        let (millis, id) = token.split_once('.').ok_or_else(malformed)?;
        let millis: i64 = millis.parse().map_err(|_| malformed())?;
        let id = ObjectId::parse_str(id).map_err(|_| malformed())?;
        Ok(Some(Self {
            at: DateTime::from_millis(millis),
            id,
        }))
    }

    /// Whether a record made at `at` with `id` comes after the cursor (is older than it).
    pub fn precedes(&self, at: DateTime, id: ObjectId) -> bool {
        (at, id) < (self.at, self.id)
    }
}

/// One page of a newest-first listing: whose records, how many, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    /// Whose records.
    pub owner: Owner,
    /// At most this many.
    pub limit: usize,
    /// After this record; the newest first when `None`.
    pub after: Option<PageCursor>,
}

impl PageQuery {
    /// The same query asking for one record more, to learn whether another page follows.
    pub fn one_more(&self) -> Self {
        Self {
            limit: self.limit + 1,
            ..self.clone()
        }
    }

    /// Cuts `records` (from [`PageQuery::one_more`]) to this page, with the token of the next
    /// page if there is one.
    pub fn page<T: Listed>(&self, mut records: Vec<T>) -> (Vec<T>, String) {
        if records.len() <= self.limit {
            return (records, String::new());
        }
        records.truncate(self.limit);
        let next = records.last().map(|last| last.cursor().token());
        (records, next.unwrap_or_default())
    }
}

/// A record that listings page through, newest first.
pub trait Listed {
    /// Where a page that ends with this record goes on.
    fn cursor(&self) -> PageCursor;
}

impl Listed for FileRecord {
    fn cursor(&self) -> PageCursor {
        PageCursor {
            at: self.uploaded_at,
            id: self.id,
        }
    }
}

impl Listed for JobRecord {
    fn cursor(&self) -> PageCursor {
        PageCursor {
            at: self.created_at,
            id: self.id,
        }
    }
}

/// A file about to be uploaded: what the upload's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// The file's id, chosen before the first byte is stored.
    pub id: ObjectId,
    /// Where it goes.
    pub bucket: Bucket,
    /// Who owns it.
    pub owner_id: String,
    /// The name the user gave it.
    pub filename: String,
    /// The content type the uploader declared.
    pub content_type: String,
    /// For an MP3, the job it was made for (empty otherwise).
    pub job_id: String,
}

impl NewFile {
    /// Checks an upload header.
    pub fn from_header(header: pb::UploadHeader) -> StorageResult<Self> {
        let bucket = Bucket::from_proto(header.bucket)?;
        if header.owner_id.is_empty() {
            return Err(StorageError::InvalidArgument(
                "owner_id is required for an upload".into(),
            ));
        }
        if header.filename.len() > MAX_FILENAME_BYTES {
            return Err(StorageError::InvalidArgument(format!(
                "filename is longer than {MAX_FILENAME_BYTES} bytes"
            )));
        }
        Ok(Self {
            id: ObjectId::new(),
            bucket,
            owner_id: header.owner_id,
            filename: header.filename,
            content_type: header.content_type,
            job_id: header.job_id,
        })
    }

    /// The stored file's record once all `size` bytes with digest `sha256` are in.
    pub fn into_record(self, size: u64, sha256: String) -> FileRecord {
        FileRecord {
            id: self.id,
            bucket: self.bucket,
            owner_id: self.owner_id,
            filename: self.filename,
            content_type: self.content_type,
            job_id: self.job_id,
            size,
            sha256,
            uploaded_at: DateTime::now(),
        }
    }
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Its id.
    pub id: ObjectId,
    /// The bucket it is in.
    pub bucket: Bucket,
    /// Who owns it.
    pub owner_id: String,
    /// The name the user gave it.
    pub filename: String,
    /// The content type the uploader declared.
    pub content_type: String,
    /// For an MP3, the job it was made for (empty otherwise).
    #[serde(default)]
    pub job_id: String,
    /// Its length in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of its bytes.
    pub sha256: String,
    /// When the upload finished.
    pub uploaded_at: DateTime,
}

impl FileRecord {
    /// The record as the API shows it.
    pub fn to_proto(&self) -> pb::FileInfo {
        pb::FileInfo {
            id: self.id.to_hex(),
            bucket: self.bucket.to_proto().into(),
            owner_id: self.owner_id.clone(),
            filename: self.filename.clone(),
            content_type: self.content_type.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            uploaded_at: Some(timestamp(self.uploaded_at)),
        }
    }
}

/// A job's place in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a converter.
    Queued,
    /// A converter claimed it.
    Converting,
    /// The MP3 is stored.
    Done,
    /// It ended without an MP3.
    Failed,
}

impl JobState {
    /// The state a request names; it must name one.
    pub fn from_proto(value: i32, field: &str) -> StorageResult<Self> {
        match pb::JobState::try_from(value) {
            Ok(pb::JobState::Queued) => Ok(JobState::Queued),
            Ok(pb::JobState::Converting) => Ok(JobState::Converting),
            Ok(pb::JobState::Done) => Ok(JobState::Done),
            Ok(pb::JobState::Failed) => Ok(JobState::Failed),
            _ => Err(StorageError::InvalidArgument(format!(
                "{field} must be a job state other than JOB_STATE_UNSPECIFIED"
            ))),
        }
    }

    fn to_proto(self) -> pb::JobState {
        match self {
            JobState::Queued => pb::JobState::Queued,
            JobState::Converting => pb::JobState::Converting,
            JobState::Done => pb::JobState::Done,
            JobState::Failed => pb::JobState::Failed,
        }
    }

    fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }

    fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Converting => "converting",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    /// The moves a job may make: claimed, finished either way, handed back by a worker that
    /// stops, or failed before any worker claimed it (a message that could not be processed).
    fn may_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Queued, Converting)
                | (Converting, Done)
                | (Converting, Failed)
                | (Converting, Queued)
                | (Converting, Converting)
                | (Queued, Failed)
        )
    }
}

/// A conversion job. `revision` grows with every change; backends store a change only if the
/// revision they hold is still the one the change was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Compare-and-set counter.
    pub revision: i64,
    /// Who owns it.
    pub owner_id: String,
    /// Where the outcome is e-mailed.
    pub owner_email: String,
    /// Where it is in its life.
    pub state: JobState,
    /// How many times a worker claimed it.
    pub attempts: u32,
    /// 0..=100.
    pub progress_percent: u32,
    /// Why it failed; empty unless failed.
    pub error_reason: String,
    /// The uploaded video.
    pub video_id: String,
    /// The MP3, once done.
    pub mp3_id: String,
    /// The video's original name.
    pub original_filename: String,
    /// Whether the user was told the outcome.
    pub notified: bool,
    /// When it was created.
    pub created_at: DateTime,
    /// When it last changed.
    pub updated_at: DateTime,
    /// What it makes, as validated when it was created; a record older than options has the
    /// defaults.
    #[serde(default)]
    pub options: AudioOptions,
    /// The idempotency key its request gave, if any (deleting the job frees it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The resumable upload session its video came from; empty for a multipart upload.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upload_id: String,
}

/// A change asked of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobChange {
    /// Move from one state to another (compare-and-set on `from`).
    Transition {
        /// The state the job must be in now.
        from: JobState,
        /// The state it moves to.
        to: JobState,
        /// The MP3's id, for DONE.
        mp3_id: String,
        /// Why, for FAILED.
        error_reason: String,
        /// The `attempts` the caller's claim left; when set, another claim since then
        /// refuses the change.
        claim: Option<u32>,
    },
    /// Record conversion progress.
    Progress {
        /// 0..=100.
        percent: u32,
        /// As for [`JobChange::Transition`].
        claim: Option<u32>,
    },
    /// Record that the user was told.
    MarkNotified,
}

/// What applying a change gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The record after the change, to be stored (boxed: a record is large beside nothing).
    Changed(Box<JobRecord>),
    /// Nothing to store: the change was already made (the user was already notified).
    AlreadyDone,
}

impl JobRecord {
    /// A new job in QUEUED.
    pub fn new(
        owner_id: String,
        owner_email: String,
        video_id: ObjectId,
        original_filename: String,
        options: AudioOptions,
    ) -> Self {
        let now = DateTime::now();
        Self {
            id: ObjectId::new(),
            revision: 0,
            owner_id,
            owner_email,
            state: JobState::Queued,
            attempts: 0,
            progress_percent: 0,
            error_reason: String::new(),
            video_id: video_id.to_hex(),
            mp3_id: String::new(),
            original_filename,
            notified: false,
            created_at: now,
            updated_at: now,
            options,
            idempotency_key: None,
            upload_id: String::new(),
        }
    }

    /// The job after `change`, or why the change is not allowed now.
    pub fn apply(&self, change: &JobChange) -> StorageResult<Applied> {
        let mut next = self.clone();
        match change {
            JobChange::Transition {
                from,
                to,
                mp3_id,
                error_reason,
                claim,
            } => {
                if !from.may_become(*to) {
                    return Err(StorageError::InvalidArgument(format!(
                        "a job cannot go from {} to {}",
                        from.name(),
                        to.name()
                    )));
                }
                if self.state != *from {
                    return Err(StorageError::FailedPrecondition(format!(
                        "job is {}, not {}",
                        self.state.name(),
                        from.name()
                    )));
                }
                self.check_claim(*claim)?;
                next.state = *to;
                match to {
                    JobState::Converting => {
                        next.attempts += 1;
                        next.progress_percent = 0;
                    }
                    JobState::Queued => next.progress_percent = 0,
                    JobState::Done => {
                        parse_id(mp3_id, "mp3")?;
                        next.mp3_id = mp3_id.clone();
                        next.progress_percent = 100;
                    }
                    JobState::Failed => {
                        let reason = error_reason.trim();
                        if reason.is_empty() {
                            return Err(StorageError::InvalidArgument(
                                "error_reason is required to fail a job".into(),
                            ));
                        }
                        next.error_reason = reason.chars().take(MAX_ERROR_REASON_CHARS).collect();
                    }
                }
            }
            JobChange::Progress { percent, claim } => {
                if *percent > 100 {
                    return Err(StorageError::InvalidArgument(
                        "progress_percent must be at most 100".into(),
                    ));
                }
                if self.state != JobState::Converting {
                    return Err(StorageError::FailedPrecondition(format!(
                        "job is {}, not converting",
                        self.state.name()
                    )));
                }
                self.check_claim(*claim)?;
                next.progress_percent = *percent;
            }
            JobChange::MarkNotified => {
                if !self.state.is_final() {
                    return Err(StorageError::FailedPrecondition(format!(
                        "job is {}; only a finished job can be notified",
                        self.state.name()
                    )));
                }
                if self.notified {
                    return Ok(Applied::AlreadyDone);
                }
                next.notified = true;
            }
        }
        next.revision += 1;
        next.updated_at = DateTime::now();
        Ok(Applied::Changed(Box::new(next)))
    }

    /// Refuses a change from a worker whose claim was taken over since.
    fn check_claim(&self, claim: Option<u32>) -> StorageResult<()> {
        match claim {
            Some(claim) if claim != self.attempts => {
                Err(StorageError::FailedPrecondition(format!(
                    "job was claimed again (attempt {}, not {claim})",
                    self.attempts
                )))
            }
            _ => Ok(()),
        }
    }

    /// The record as the API shows it.
    pub fn to_proto(&self) -> pb::Job {
        pb::Job {
            id: self.id.to_hex(),
            owner_id: self.owner_id.clone(),
            owner_email: self.owner_email.clone(),
            state: self.state.to_proto().into(),
            attempts: self.attempts,
            progress_percent: self.progress_percent,
            error_reason: self.error_reason.clone(),
            video_id: self.video_id.clone(),
            mp3_id: self.mp3_id.clone(),
            original_filename: self.original_filename.clone(),
            notified: self.notified,
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            options: Some(self.options.to_proto()),
            upload_id: self.upload_id.clone(),
        }
    }
}

/// The most webhook endpoints one owner has.
pub const MAX_ENDPOINTS_PER_OWNER: usize = 20;
/// How long a replaced signing secret goes on signing when the request does not say.
pub const DEFAULT_SECRET_OVERLAP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Longest endpoint URL kept, in bytes.
pub const MAX_ENDPOINT_URL_BYTES: usize = 2048;
/// Longest endpoint description kept, in characters.
pub const MAX_ENDPOINT_DESCRIPTION_CHARS: usize = 256;
/// Most event types one endpoint names, and the longest name.
pub const MAX_ENDPOINT_EVENTS: usize = 16;
const MAX_EVENT_NAME_BYTES: usize = 64;
/// Longest secret text kept (`whsec_` and the base64 of at most 64 bytes is 94).
const MAX_SECRET_BYTES: usize = 128;

/// A webhook endpoint: where an owner's job outcomes are sent, and the secrets that sign them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Its id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Compare-and-set counter.
    pub revision: i64,
    /// Who owns it.
    pub owner_id: String,
    /// Where its owner is told when it is disabled.
    pub owner_email: String,
    /// Where messages go.
    pub url: String,
    /// The event types it receives; empty: every type.
    pub events: Vec<String>,
    /// The owner's words for it.
    pub description: String,
    /// Newest first: the current secret, then the one it replaced while that still signs.
    pub secrets: Vec<EndpointSecret>,
    /// When it was created.
    pub created_at: DateTime,
    /// When and why it was disabled; nothing is sent to it meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    /// When its current run of failed attempts began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime>,
}

/// Why an endpoint stopped receiving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disabled {
    /// When.
    pub at: DateTime,
    /// Why, in words for its owner.
    pub reason: String,
}

/// The most attempts kept in an endpoint's log.
pub const KEPT_ATTEMPTS: usize = 100;

/// One logged delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Its id (its time order too).
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// The endpoint it went to.
    pub endpoint_id: ObjectId,
    /// The message's `webhook-id`.
    pub message_id: String,
    /// `job.succeeded`, `job.failed` or `ping`.
    pub event_type: String,
    /// When it started.
    pub attempted_at: DateTime,
    /// How long it took.
    pub duration_ms: u32,
    /// The receiver's status; 0 without an answer.
    pub status_code: u32,
    /// Why there was no answer.
    pub error: String,
    /// Whether it was delivered.
    pub delivered: bool,
    /// Whether it was the message's last attempt, failed: the message was given up.
    #[serde(default)]
    pub given_up: bool,
    /// The body (our own JSON), for a redelivery by hand.
    pub body: String,
}

impl AttemptRecord {
    /// An attempt as the notifier reports it, checked.
    pub fn from_proto(endpoint_id: ObjectId, attempt: pb::WebhookAttempt) -> StorageResult<Self> {
        let body = String::from_utf8(attempt.body.to_vec())
            .map_err(|_| StorageError::InvalidArgument("a webhook body is UTF-8 JSON".into()))?;
        if attempt.message_id.is_empty() || attempt.message_id.len() > 128 || body.len() > 64 * 1024
        {
            return Err(StorageError::InvalidArgument(
                "an attempt needs a message_id (at most 128 bytes) and a body of at most 64 KiB"
                    .into(),
            ));
        }
        Ok(Self {
            id: ObjectId::new(),
            endpoint_id,
            message_id: attempt.message_id,
            event_type: attempt.event_type.chars().take(64).collect(),
            attempted_at: attempt.attempted_at.map_or_else(DateTime::now, |at| {
                DateTime::from_millis(at.seconds * 1000 + i64::from(at.nanos / 1_000_000))
            }),
            duration_ms: attempt.duration_ms,
            status_code: attempt.status_code,
            error: attempt.error.chars().take(500).collect(),
            delivered: attempt.delivered,
            given_up: attempt.given_up && !attempt.delivered,
            body,
        })
    }

    /// The attempt as the API shows it.
    pub fn to_proto(&self) -> pb::WebhookAttempt {
        pb::WebhookAttempt {
            message_id: self.message_id.clone(),
            event_type: self.event_type.clone(),
            attempted_at: Some(timestamp(self.attempted_at)),
            duration_ms: self.duration_ms,
            status_code: self.status_code,
            error: self.error.clone(),
            delivered: self.delivered,
            given_up: self.given_up,
            body: self.body.clone().into_bytes().into(),
        }
    }
}

/// One signing secret of an endpoint.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSecret {
    /// `whsec_…`.
    pub secret: String,
    /// When it stops signing; `None` for the current one.
    pub expires_at: Option<DateTime>,
}

impl std::fmt::Debug for EndpointSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSecret")
            .field("secret", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl EndpointRecord {
    /// A new endpoint from a create request, checked.
    pub fn from_request(request: pb::CreateWebhookEndpointRequest) -> StorageResult<Self> {
        let invalid = |message: String| Err(StorageError::InvalidArgument(message));
        if request.owner_id.is_empty() || request.owner_email.is_empty() {
            return invalid("owner_id and owner_email are required".into());
        }
        if request.url.is_empty() || request.url.len() > MAX_ENDPOINT_URL_BYTES {
            return invalid(format!("url must be 1 to {MAX_ENDPOINT_URL_BYTES} bytes"));
        }
        if request.description.chars().count() > MAX_ENDPOINT_DESCRIPTION_CHARS {
            return invalid(format!(
                "description is longer than {MAX_ENDPOINT_DESCRIPTION_CHARS} characters"
            ));
        }
        if request.events.len() > MAX_ENDPOINT_EVENTS
            || request
                .events
                .iter()
                .any(|event| event.is_empty() || event.len() > MAX_EVENT_NAME_BYTES)
        {
            return invalid(format!(
                "events names at most {MAX_ENDPOINT_EVENTS} types of 1 to {MAX_EVENT_NAME_BYTES} bytes"
            ));
        }
        Ok(Self {
            id: ObjectId::new(),
            revision: 0,
            owner_id: request.owner_id,
            owner_email: request.owner_email,
            url: request.url,
            events: request.events,
            description: request.description,
            secrets: vec![EndpointSecret {
                secret: checked_secret(request.secret)?,
                expires_at: None,
            }],
            created_at: DateTime::now(),
            disabled: None,
            failing_since: None,
        })
    }

    /// The endpoint after an attempt at `now` (`delivered`; `gone`: the receiver answered
    /// 410), disabled when `gone` or when it has failed without a success for `disable_after`;
    /// and whether this attempt disabled it.
    pub fn after_attempt(
        &self,
        delivered: bool,
        gone: bool,
        disable_after: Option<std::time::Duration>,
        now: DateTime,
    ) -> (Self, bool) {
        let mut next = Self {
            revision: self.revision + 1,
            ..self.clone()
        };
        if delivered {
            next.failing_since = None;
            return (next, false);
        }
        let since = *next.failing_since.get_or_insert(now);
        if next.disabled.is_some() {
            return (next, false);
        }
        let failed_for =
            u64::try_from(now.timestamp_millis() - since.timestamp_millis()).unwrap_or(0);
        let reason = if gone {
            Some("the receiver answered 410 Gone".to_owned())
        } else {
            disable_after
                .filter(|limit| u128::from(failed_for) >= limit.as_millis())
                .map(|_| format!("every attempt failed since {}", timestamp(since)))
        };
        match reason {
            Some(reason) => {
                next.disabled = Some(Disabled { at: now, reason });
                (next, true)
            }
            None => (next, false),
        }
    }

    /// The endpoint turned back on, its failing streak forgotten.
    pub fn enabled(&self) -> Self {
        Self {
            revision: self.revision + 1,
            disabled: None,
            failing_since: None,
            ..self.clone()
        }
    }

    /// The endpoint with `secret` current and the secret it replaces signing until `overlap`
    /// from `now`; older secrets, and any already expired, are dropped.
    pub fn rotated(
        &self,
        secret: String,
        overlap: std::time::Duration,
        now: DateTime,
    ) -> StorageResult<Self> {
        let expires_at = DateTime::from_millis(
            now.timestamp_millis()
                .saturating_add(i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX)),
        );
        let mut secrets = vec![EndpointSecret {
            secret: checked_secret(secret)?,
            expires_at: None,
        }];
        if let Some(current) = self.secrets.first() {
            secrets.push(EndpointSecret {
                secret: current.secret.clone(),
                expires_at: Some(expires_at),
            });
        }
        secrets.retain(|secret| secret.expires_at.is_none_or(|at| at > now));
        Ok(Self {
            secrets,
            revision: self.revision + 1,
            ..self.clone()
        })
    }

    /// The record as the API shows it, without the secrets that stopped signing by `now`.
    pub fn to_proto(&self, now: DateTime) -> pb::WebhookEndpoint {
        pb::WebhookEndpoint {
            id: self.id.to_hex(),
            owner_id: self.owner_id.clone(),
            owner_email: self.owner_email.clone(),
            url: self.url.clone(),
            events: self.events.clone(),
            description: self.description.clone(),
            secrets: self
                .secrets
                .iter()
                .filter(|secret| secret.expires_at.is_none_or(|at| at > now))
                .map(|secret| pb::WebhookSecret {
                    secret: secret.secret.clone(),
                    expires_at: secret.expires_at.map(timestamp),
                })
                .collect(),
            created_at: Some(timestamp(self.created_at)),
            disabled_at: self
                .disabled
                .as_ref()
                .map(|disabled| timestamp(disabled.at)),
            disabled_reason: self
                .disabled
                .as_ref()
                .map(|disabled| disabled.reason.clone())
                .unwrap_or_default(),
            failing_since: self.failing_since.map(timestamp),
        }
    }
}

fn checked_secret(secret: String) -> StorageResult<String> {
    if !secret.starts_with("whsec_") || secret.len() > MAX_SECRET_BYTES {
        return Err(StorageError::InvalidArgument(format!(
            "secret must be `whsec_` and base64, at most {MAX_SECRET_BYTES} bytes"
        )));
    }
    Ok(secret)
}

fn timestamp(time: DateTime) -> prost_types::Timestamp {
    let millis = time.timestamp_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint_request() -> pb::CreateWebhookEndpointRequest {
        pb::CreateWebhookEndpointRequest {
            owner_id: "user-1".into(),
            owner_email: "u@example.com".into(),
            url: "https://hooks.example.com/mp3".into(),
            events: vec!["job.succeeded".into()],
            description: "CI".into(),
            secret: "whsec_first".into(),
        }
    }

    #[test]
    fn a_rotation_keeps_the_replaced_secret_until_the_overlap_ends_and_no_older_one() {
        let endpoint = EndpointRecord::from_request(endpoint_request()).unwrap();
        let now = DateTime::now();
        let hour = std::time::Duration::from_secs(3600);
        let once = endpoint.rotated("whsec_second".into(), hour, now).unwrap();
        let secrets = |record: &EndpointRecord, at| -> Vec<String> {
            record
                .to_proto(at)
                .secrets
                .into_iter()
                .map(|s| s.secret)
                .collect()
        };
        assert_eq!(secrets(&once, now), ["whsec_second", "whsec_first"]);
        assert_eq!(once.revision, endpoint.revision + 1);
        let later = DateTime::from_millis(now.timestamp_millis() + 3_600_000);
        assert_eq!(secrets(&once, later), ["whsec_second"], "the overlap ended");
        let twice = once.rotated("whsec_third".into(), hour, now).unwrap();
        assert_eq!(secrets(&twice, now), ["whsec_third", "whsec_second"]);
        assert!(format!("{twice:?}").contains("[redacted]"));
        assert!(!format!("{twice:?}").contains("whsec_"));
        assert!(once.rotated("plain".into(), hour, now).is_err());
    }

    #[test]
    fn an_endpoint_is_disabled_by_a_410_or_by_failing_for_long_enough_and_a_success_resets_it() {
        let endpoint = EndpointRecord::from_request(endpoint_request()).unwrap();
        let at = |ms: i64| DateTime::from_millis(1_000_000 + ms);
        let day = Some(std::time::Duration::from_secs(86_400));
        let (failing, disabled) = endpoint.after_attempt(false, false, day, at(0));
        assert!(!disabled && failing.disabled.is_none());
        assert_eq!(failing.failing_since, Some(at(0)));
        let (still, disabled) = failing.after_attempt(false, false, day, at(86_399_999));
        assert!(!disabled && still.failing_since == Some(at(0)));
        let (recovered, _) = still.after_attempt(true, false, day, at(86_399_999));
        assert_eq!(recovered.failing_since, None);
        let (off, disabled) = still.after_attempt(false, false, day, at(86_400_000));
        assert!(disabled, "a day of failures");
        assert!(
            off.disabled
                .as_ref()
                .unwrap()
                .reason
                .starts_with("every attempt failed since")
        );
        let (again, disabled) = off.after_attempt(false, false, day, at(86_500_000));
        assert!(!disabled && again.disabled.is_some(), "disabled once");
        let (gone, disabled) = endpoint.after_attempt(false, true, None, at(0));
        assert!(disabled);
        assert_eq!(
            gone.disabled.unwrap().reason,
            "the receiver answered 410 Gone"
        );
        let (never, disabled) = failing.after_attempt(false, false, None, at(999_999_999));
        assert!(
            !disabled && never.disabled.is_none(),
            "no limit, no disabling"
        );
        let on = off.enabled();
        assert!(on.disabled.is_none() && on.failing_since.is_none());
    }

    #[test]
    fn an_endpoint_request_is_checked() {
        assert!(EndpointRecord::from_request(endpoint_request()).is_ok());
        let mut bad = endpoint_request();
        bad.description = "d".repeat(MAX_ENDPOINT_DESCRIPTION_CHARS + 1);
        assert!(EndpointRecord::from_request(bad).is_err());
        let mut bad = endpoint_request();
        bad.events = vec![String::new()];
        assert!(EndpointRecord::from_request(bad).is_err());
        let mut bad = endpoint_request();
        bad.secret = "hunter2".into();
        assert!(EndpointRecord::from_request(bad).is_err());
        let mut bad = endpoint_request();
        bad.owner_email.clear();
        assert!(EndpointRecord::from_request(bad).is_err());
    }

    #[test]
    fn a_key_claim_ages_out_of_its_window() {
        let claim = KeyClaim::new("user-1", "retry-1", "digest", ObjectId::new());
        let at = |ms: i64| DateTime::from_millis(claim.created_at.timestamp_millis() + ms);
        let day = IDEMPOTENCY_WINDOW;
        assert!(!claim.is_older_than(day, at(0)));
        assert!(!claim.is_older_than(day, at(24 * 3600 * 1000 - 1)));
        assert!(claim.is_older_than(day, at(24 * 3600 * 1000)));
        // A clock that went back does not make a claim old.
        assert!(!claim.is_older_than(day, at(-5000)));
        assert_eq!(claim.id, "user-1/retry-1");
    }

    fn job() -> JobRecord {
        JobRecord::new(
            "user-1".into(),
            "a@example.com".into(),
            ObjectId::new(),
            "clip.mp4".into(),
            AudioOptions::default(),
        )
    }

    fn transition(from: JobState, to: JobState) -> JobChange {
        JobChange::Transition {
            from,
            to,
            mp3_id: ObjectId::new().to_hex(),
            error_reason: "not a video".into(),
            claim: None,
        }
    }

    fn progress(percent: u32) -> JobChange {
        JobChange::Progress {
            percent,
            claim: None,
        }
    }

    /// A fresh job, claimed once.
    fn claimed() -> JobRecord {
        changed(
            job()
                .apply(&transition(JobState::Queued, JobState::Converting))
                .unwrap(),
        )
    }

    fn changed(applied: Applied) -> JobRecord {
        match applied {
            Applied::Changed(record) => *record,
            Applied::AlreadyDone => panic!("expected a change"),
        }
    }

    #[test]
    fn claiming_counts_an_attempt_and_bumps_the_revision() {
        let claimed = claimed();
        assert_eq!(claimed.state, JobState::Converting);
        assert_eq!(claimed.attempts, 1);
        assert_eq!(claimed.revision, 1);
    }

    #[test]
    fn a_second_claim_loses_the_compare_and_set() {
        let claimed = claimed();
        let error = claimed
            .apply(&transition(JobState::Queued, JobState::Converting))
            .unwrap_err();
        assert!(
            matches!(&error, StorageError::FailedPrecondition(m) if m == "job is converting, not queued"),
            "{error:?}"
        );
    }

    #[test]
    fn moves_outside_the_life_cycle_are_refused() {
        for (from, to) in [
            (JobState::Done, JobState::Queued),
            (JobState::Failed, JobState::Converting),
            (JobState::Queued, JobState::Done),
            (JobState::Done, JobState::Done),
        ] {
            let error = job().apply(&transition(from, to)).unwrap_err();
            assert!(
                matches!(error, StorageError::InvalidArgument(_)),
                "{from:?}->{to:?}"
            );
        }
    }

    #[test]
    fn a_takeover_is_a_new_claim_that_fences_off_the_previous_worker() {
        let first = claimed();
        let taken_over = changed(
            first
                .apply(&transition(JobState::Converting, JobState::Converting))
                .unwrap(),
        );
        assert_eq!(taken_over.attempts, 2);
        let stale = |change: JobChange| match change {
            JobChange::Transition {
                from,
                to,
                mp3_id,
                error_reason,
                ..
            } => JobChange::Transition {
                from,
                to,
                mp3_id,
                error_reason,
                claim: Some(first.attempts),
            },
            JobChange::Progress { percent, .. } => JobChange::Progress {
                percent,
                claim: Some(first.attempts),
            },
            other => other,
        };
        for change in [
            stale(transition(JobState::Converting, JobState::Done)),
            stale(progress(50)),
        ] {
            let error = taken_over.apply(&change).unwrap_err();
            assert!(
                matches!(&error, StorageError::FailedPrecondition(m) if m.contains("claimed again")),
                "{error:?}"
            );
        }
        let current = JobChange::Transition {
            from: JobState::Converting,
            to: JobState::Done,
            mp3_id: ObjectId::new().to_hex(),
            error_reason: String::new(),
            claim: Some(taken_over.attempts),
        };
        assert_eq!(
            changed(taken_over.apply(&current).unwrap()).state,
            JobState::Done
        );
    }

    #[test]
    fn done_needs_a_well_formed_mp3_id_and_failed_a_reason() {
        let claimed = claimed();
        let bad_mp3 = JobChange::Transition {
            from: JobState::Converting,
            to: JobState::Done,
            mp3_id: "nope".into(),
            error_reason: String::new(),
            claim: None,
        };
        assert!(matches!(
            claimed.apply(&bad_mp3),
            Err(StorageError::InvalidArgument(_))
        ));
        let no_reason = JobChange::Transition {
            from: JobState::Converting,
            to: JobState::Failed,
            mp3_id: String::new(),
            error_reason: "  ".into(),
            claim: None,
        };
        assert!(matches!(
            claimed.apply(&no_reason),
            Err(StorageError::InvalidArgument(_))
        ));
        let done = changed(
            claimed
                .apply(&transition(JobState::Converting, JobState::Done))
                .unwrap(),
        );
        assert_eq!(done.progress_percent, 100);
        assert!(!done.mp3_id.is_empty());
    }

    #[test]
    fn notifying_happens_once_and_only_for_finished_jobs() {
        assert!(matches!(
            job().apply(&JobChange::MarkNotified),
            Err(StorageError::FailedPrecondition(_))
        ));
        let failed = changed(
            job()
                .apply(&transition(JobState::Queued, JobState::Failed))
                .unwrap(),
        );
        assert_eq!(failed.error_reason, "not a video");
        let notified = changed(failed.apply(&JobChange::MarkNotified).unwrap());
        assert!(notified.notified);
        assert_eq!(
            notified.apply(&JobChange::MarkNotified).unwrap(),
            Applied::AlreadyDone
        );
    }

    #[test]
    fn progress_is_only_for_converting_jobs_and_at_most_100() {
        assert!(matches!(
            job().apply(&progress(10)),
            Err(StorageError::FailedPrecondition(_))
        ));
        let claimed = claimed();
        assert!(matches!(
            claimed.apply(&progress(101)),
            Err(StorageError::InvalidArgument(_))
        ));
        assert_eq!(
            changed(claimed.apply(&progress(42)).unwrap()).progress_percent,
            42
        );
    }

    #[test]
    fn records_round_trip_through_json_for_the_local_backend() {
        let record = job();
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<JobRecord>(&json).unwrap(), record);
    }

    #[test]
    fn malformed_ids_are_invalid_arguments() {
        assert!(parse_id("0123456789abcdef01234567", "file").is_ok());
        for bad in ["", "xyz", "0123456789abcdef0123456", "../../etc/passwd"] {
            assert!(matches!(
                parse_id(bad, "file"),
                Err(StorageError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn a_record_stored_before_options_existed_reads_with_the_defaults() {
        let mut stored = serde_json::to_value(job()).unwrap();
        stored.as_object_mut().unwrap().remove("options");
        let record: JobRecord = serde_json::from_value(stored).unwrap();
        assert_eq!(record.options, AudioOptions::default());
    }
}
