//! The gRPC service: every rule about files and jobs lives here, once, above whichever backend
//! stores them: ownership (another owner's record is NOT_FOUND), the size limit, checksums,
//! ranges, and the job life cycle as compare-and-set.

use crate::backend::{Backend, UploadSink};
use crate::batch::{Batch, GATHERED_BYTES, next_gathered};
use crate::error::{StorageError, StorageResult};
use crate::model::session::SessionRecord;
use crate::model::{
    ABANDONED_CLAIM_AFTER, Applied, AttemptRecord, Bucket, DEFAULT_SECRET_OVERLAP, DateTime,
    EndpointRecord, FileRecord, IDEMPOTENCY_WINDOW, JobChange, JobRecord, JobState, KEPT_ATTEMPTS,
    KeyClaim, MAX_ENDPOINTS_PER_OWNER, MAX_IDEMPOTENCY_KEY_BYTES, NewFile, ObjectId, Owner,
    PageCursor, PageQuery, parse_id,
};
use crate::remembered::Remembered;
use audio_options::AudioOptions;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use proto::storage::v1 as pb;
use proto::storage::v1::storage_service_server::StorageService;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

mod resumable;

/// Bytes gathered from the stream before one write to the backend (four GridFS chunks, so the
/// driver stores them in one round trip). Eight chunks, with wider HTTP/2 windows, measured no
/// faster and pushed storage's peak memory past 64 MiB.
const WRITE_BATCH_BYTES: usize = 4 * 255 * 1024;
/// Batches waiting for the backend while the next ones arrive: receiving and storing overlap,
/// and memory per upload stays a few MiB whatever the file's size. A writer that fell behind
/// takes all that wait in one write ([`next_gathered`]).
const WRITE_QUEUE_DEPTH: usize = 2;
/// Records listed when a request does not say how many.
const DEFAULT_LIST_LIMIT: usize = 100;
/// The most records one list request returns.
const MAX_LIST_LIMIT: usize = 1000;
/// Times a job change is recomputed when another writer changed the job in between.
const MAX_CHANGE_ATTEMPTS: usize = 16;

/// The storage service over a backend.
#[derive(Debug, Clone)]
pub struct StorageApi {
    backend: Arc<Backend>,
    max_file_bytes: u64,
    upload_expiry: std::time::Duration,
    /// Each session's SHA-256 as its hashing task computes it, and how many bytes it covers.
    digests: Arc<Remembered<resumable::PendingDigest>>,
    /// Each session's record as this replica last stored it; one that names a lease this
    /// replica keeps is what lets an append start on that lease (one append at a time: the
    /// record is taken out while it runs).
    known_sessions: Arc<Remembered<SessionRecord>>,
    /// This replica (this process), as the holder of the leases it keeps between appends.
    replica: ObjectId,
}

impl StorageApi {
    /// Serves `backend`, refusing files larger than `max_file_bytes` and removing resumable
    /// uploads left alone for `upload_expiry`.
    pub fn new(backend: Backend, max_file_bytes: u64, upload_expiry: std::time::Duration) -> Self {
        Self {
            backend: Arc::new(backend),
            max_file_bytes,
            upload_expiry,
            digests: Arc::new(Remembered::with_capacity(resumable::REMEMBERED_DIGESTS)),
            known_sessions: Arc::new(Remembered::with_capacity(resumable::REMEMBERED_SESSIONS)),
            replica: ObjectId::new(),
        }
    }

    /// The backend, for readiness checks.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    #[instrument(skip_all, fields(file_id, bucket))]
    async fn receive_upload(
        &self,
        mut stream: Streaming<pb::UploadRequest>,
    ) -> StorageResult<FileRecord> {
        use pb::upload_request::Content;
        let header = match stream.message().await {
            Ok(Some(pb::UploadRequest {
                content: Some(Content::Header(header)),
            })) => header,
            Ok(_) => {
                return Err(StorageError::InvalidArgument(
                    "the first message of an upload must be its header".into(),
                ));
            }
            Err(status) => return Err(StorageError::UploadAborted(status.message().into())),
        };
        let file = NewFile::from_header(header)?;
        let bucket = file.bucket;
        let span = tracing::Span::current();
        span.record("file_id", tracing::field::display(file.id));
        span.record("bucket", bucket.name());
        let _active = ActiveStream::start("upload");

        let sink = self.backend.begin_upload(file).await?;
        let (batches, queued) = mpsc::channel(WRITE_QUEUE_DEPTH);
        let (received, (sink, written)) = tokio::join!(
            self.receive_chunks(&mut stream, batches, bucket),
            write_batches(sink, queued),
        );
        // A backend failure explains a receive that stopped because the writer went away.
        let outcome = written.and(received);
        match outcome {
            Ok((size, sha256)) => {
                let record = sink.commit(size, sha256).await?;
                metrics::counter!(crate::meters::UPLOADS, "bucket" => bucket.name(), "outcome" => "stored")
                    .increment(1);
                tracing::info!(size, "upload stored");
                Ok(record)
            }
            Err(error) => {
                if let Err(cleanup) = sink.abort().await {
                    tracing::warn!(error = %cleanup, "could not remove a failed upload");
                }
                metrics::counter!(crate::meters::UPLOADS, "bucket" => bucket.name(), "outcome" => "refused")
                    .increment(1);
                tracing::info!(error = %error, "upload not stored");
                Err(error)
            }
        }
    }

    /// Reads chunks, enforcing the size limit and hashing as they pass, and hands them to the
    /// writer in batches. Returns the size and hex SHA-256.
    async fn receive_chunks(
        &self,
        stream: &mut Streaming<pb::UploadRequest>,
        batches: mpsc::Sender<Batch>,
        bucket: Bucket,
    ) -> StorageResult<(u64, String)> {
        use pb::upload_request::Content;
        let writer_gone = || StorageError::Internal("upload writer stopped".into());
        let bytes_in = metrics::counter!(crate::meters::BYTES_IN, "bucket" => bucket.name());
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut batch = Batch::default();
        loop {
            let message = stream
                .message()
                .await
                .map_err(|status| StorageError::UploadAborted(status.message().into()))?
                .ok_or_else(|| {
                    StorageError::UploadAborted("the stream ended without `finish`".into())
                })?;
            let chunk = match message.content {
                Some(Content::Chunk(chunk)) => chunk,
                Some(Content::Finish(_)) => break,
                Some(Content::Header(_)) | None => {
                    return Err(StorageError::InvalidArgument(
                        "only the first message of an upload may be a header".into(),
                    ));
                }
            };
            size += chunk.len() as u64;
            if size > self.max_file_bytes {
                return Err(StorageError::TooLarge {
                    limit: self.max_file_bytes,
                });
            }
            hasher.update(&chunk);
            bytes_in.increment(chunk.len() as u64);
            batch.push(chunk);
            if batch.len() >= WRITE_BATCH_BYTES {
                batches
                    .send(batch.take())
                    .await
                    .map_err(|_| writer_gone())?;
            }
        }
        if stream.message().await.ok().flatten().is_some() {
            return Err(StorageError::InvalidArgument(
                "nothing may follow `finish`".into(),
            ));
        }
        if !batch.is_empty() {
            batches.send(batch).await.map_err(|_| writer_gone())?;
        }
        Ok((size, hex::encode(hasher.finalize())))
    }

    /// A complete file the requester may see.
    async fn visible_file(
        &self,
        bucket: i32,
        id: &str,
        requester: &Owner,
    ) -> StorageResult<FileRecord> {
        let bucket = Bucket::from_proto(bucket)?;
        let id = parse_id(id, "file")?;
        match self.backend.find_file(bucket, id).await? {
            Some(file) if requester.sees(&file.owner_id) => Ok(file),
            _ => Err(StorageError::NotFound("file")),
        }
    }

    /// The complete file a request names, if its requester may see it.
    async fn requested_file(&self, request: &impl Addressed) -> StorageResult<FileRecord> {
        self.visible_file(request.bucket(), request.id(), &request.owner()?)
            .await
    }

    /// Claims `claim`'s key for its job; `None` when the caller should record that job, else
    /// the job an earlier request with the same key and fingerprint created.
    async fn earlier_job_for(&self, claim: &KeyClaim) -> StorageResult<Option<JobRecord>> {
        self.earlier_record_for(claim, |id| self.backend.find_job(id))
            .await
    }

    /// Claims `claim`'s key for the record it names; `None` when the caller should create that
    /// record, else the record (found by `find`) an earlier request with the same key and
    /// fingerprint created.
    async fn earlier_record_for<T, Found>(
        &self,
        claim: &KeyClaim,
        find: impl Fn(ObjectId) -> Found,
    ) -> StorageResult<Option<T>>
    where
        Found: std::future::Future<Output = StorageResult<Option<T>>>,
    {
        // Twice at most: once more after clearing a claim whose record was never stored.
        for _ in 0..2 {
            let Some(standing) = self.backend.claim_key(claim, IDEMPOTENCY_WINDOW).await? else {
                return Ok(None);
            };
            if standing.fingerprint != claim.fingerprint {
                return Err(StorageError::KeyReused);
            }
            if let Some(record) = find(standing.job_id).await? {
                return Ok(Some(record));
            }
            // Claimed, but its record is not stored: being stored now, or its request died
            // in between (then the claim is cleared once it is old enough to be sure).
            if !standing.is_older_than(ABANDONED_CLAIM_AFTER, DateTime::now()) {
                return Err(StorageError::KeyInFlight);
            }
            self.backend
                .release_key(&standing.id, standing.job_id)
                .await?;
        }
        Err(StorageError::KeyInFlight)
    }

    /// The upload session a new job's video came from, when the request names one: it must be
    /// the owner's, complete, and the video's.
    async fn job_upload(&self, request: &pb::CreateJobRequest) -> StorageResult<String> {
        if request.upload_id.is_empty() {
            return Ok(String::new());
        }
        let session = self
            .visible_session(&request.upload_id, &Owner::One(request.owner_id.clone()))
            .await?;
        if !session.complete || session.id.to_hex() != request.video_id {
            return Err(StorageError::FailedPrecondition(
                "upload_id must name the complete upload session of the video".into(),
            ));
        }
        Ok(session.id.to_hex())
    }

    /// Frees a claim; a failure is only logged (the claim then ages out).
    async fn release_claim(&self, id: &str, job_id: ObjectId) {
        if let Err(error) = self.backend.release_key(id, job_id).await {
            tracing::warn!(error = %service_kit::error::chain(&error), "could not free an idempotency key");
        }
    }

    /// The job a request names, if its requester may see it.
    async fn requested_job(&self, request: &impl Addressed) -> StorageResult<JobRecord> {
        self.visible_job(request.id(), &request.owner()?).await
    }

    /// A job the requester may see.
    async fn visible_job(&self, id: &str, requester: &Owner) -> StorageResult<JobRecord> {
        let id = parse_id(id, "job")?;
        match self.backend.find_job(id).await? {
            Some(job) if requester.sees(&job.owner_id) => Ok(job),
            _ => Err(StorageError::NotFound("job")),
        }
    }

    /// A webhook endpoint the requester may see.
    async fn visible_endpoint(&self, id: &str, requester: &Owner) -> StorageResult<EndpointRecord> {
        let id = parse_id(id, "webhook endpoint")?;
        match self.backend.find_endpoint(id).await? {
            Some(endpoint) if requester.sees(&endpoint.owner_id) => Ok(endpoint),
            _ => Err(StorageError::NotFound("webhook endpoint")),
        }
    }

    /// Applies `change` to a job as a compare-and-set on its revision, recomputing it if
    /// another writer got there first. `None` when the change had already been made.
    async fn change_job(&self, id: &str, change: JobChange) -> StorageResult<Option<JobRecord>> {
        for _ in 0..MAX_CHANGE_ATTEMPTS {
            let current = self.visible_job(id, &Owner::Any).await?;
            match current.apply(&change)? {
                Applied::AlreadyDone => return Ok(None),
                Applied::Changed(next) => {
                    if self.backend.replace_job(&next, current.revision).await? {
                        return Ok(Some(*next));
                    }
                }
            }
        }
        Err(StorageError::Contended(format!("job {id}")))
    }

    /// Deletes the MP3s made for `job` other than the one it ended with: those of attempts
    /// whose converter died between storing the MP3 and recording it on the job.
    async fn remove_stale_mp3s(&self, job: &JobRecord) -> StorageResult<()> {
        let made_for_job = self
            .backend
            .list_job_files(Bucket::Mp3s, &job.owner_id, &job.id.to_hex())
            .await?;
        for stale in made_for_job
            .iter()
            .filter(|file| file.id.to_hex() != job.mp3_id)
        {
            tracing::info!(mp3_id = %stale.id, "removing an MP3 of an abandoned attempt");
            self.backend.delete_file(Bucket::Mp3s, stale.id).await?;
        }
        Ok(())
    }

    async fn remove_file_if_there(&self, bucket: Bucket, id: &str) -> StorageResult<()> {
        if let Ok(id) = parse_id(id, "file") {
            self.backend.delete_file(bucket, id).await?;
        }
        Ok(())
    }
}

/// A request about one record: its id, its bucket (for files), and whose records it may see.
trait Addressed {
    fn id(&self) -> &str;
    fn bucket(&self) -> i32 {
        pb::Bucket::Unspecified.into()
    }
    fn owner(&self) -> StorageResult<Owner>;
}

macro_rules! addressed {
    ($request:ty $(, $bucket:ident)?) => {
        impl Addressed for $request {
            fn id(&self) -> &str {
                &self.id
            }
            $(fn bucket(&self) -> i32 {
                self.$bucket
            })?
            fn owner(&self) -> StorageResult<Owner> {
                Owner::from_request(self.owner_id.clone(), self.any_owner)
            }
        }
    };
}

addressed!(pb::DownloadRequest, bucket);
addressed!(pb::StatRequest, bucket);
addressed!(pb::DeleteRequest, bucket);
addressed!(pb::GetJobRequest);
addressed!(pb::DeleteJobRequest);
addressed!(pb::GetWebhookEndpointRequest);
addressed!(pb::DeleteWebhookEndpointRequest);

/// Stores batches as they come; gives the sink back (to commit or abort) with the outcome.
async fn write_batches(
    mut sink: UploadSink,
    mut batches: mpsc::Receiver<Batch>,
) -> (UploadSink, StorageResult<()>) {
    while let Some(batch) = next_gathered(
        &mut batches,
        |batch| batch.len() >= GATHERED_BYTES,
        Batch::append,
    )
    .await
    {
        if let Err(error) = sink.write(batch).await {
            return (sink, Err(error));
        }
    }
    (sink, Ok(()))
}

fn list_limit(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_LIST_LIMIT,
        n => n.min(MAX_LIST_LIMIT),
    }
}

/// The page a list request asks for.
fn page_query(
    owner_id: String,
    any_owner: bool,
    limit: u32,
    page_token: &str,
) -> StorageResult<PageQuery> {
    Ok(PageQuery {
        owner: Owner::from_request(owner_id, any_owner)?,
        limit: list_limit(limit),
        after: PageCursor::from_token(page_token)?,
    })
}

/// The byte range a download asks for, checked against the file's size.
fn checked_range(size: u64, offset: u64, length: Option<u64>) -> StorageResult<(u64, u64)> {
    let length = length.unwrap_or(size.saturating_sub(offset));
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok((offset, length)),
        _ => Err(StorageError::RangeOutOfBounds {
            offset,
            length,
            size,
        }),
    }
}

/// Counts a stream in the `storage_active_streams` gauge for as long as it lives.
#[derive(Debug)]
struct ActiveStream(&'static str);

impl ActiveStream {
    fn start(direction: &'static str) -> Self {
        metrics::gauge!(crate::meters::ACTIVE_STREAMS, "direction" => direction).increment(1.0);
        Self(direction)
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        metrics::gauge!(crate::meters::ACTIVE_STREAMS, "direction" => self.0).decrement(1.0);
    }
}

#[tonic::async_trait]
impl StorageService for StorageApi {
    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadRequest>>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        let api = self.clone();
        // On its own task: if the caller goes away mid-stream, the upload still runs to its
        // end (an error), and that end removes what was written.
        let record = tokio::spawn(async move { api.receive_upload(request.into_inner()).await })
            .await
            .map_err(StorageError::Task)??;
        Ok(Response::new(pb::UploadResponse {
            file: Some(record.to_proto()),
        }))
    }

    type DownloadStream = BoxStream<'static, Result<pb::DownloadResponse, Status>>;

    #[instrument(skip_all, fields(file_id = %request.get_ref().id))]
    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        use pb::download_response::Content;
        let request = request.into_inner();
        let file = self.requested_file(&request).await?;
        let (offset, length) = checked_range(file.size, request.offset, request.length)?;
        let bytes = self.backend.read_file(&file, offset, length).await?;
        let active = ActiveStream::start("download");
        let bytes_out = metrics::counter!(crate::meters::BYTES_OUT, "bucket" => file.bucket.name());
        let info = pb::DownloadResponse {
            content: Some(Content::Info(file.to_proto())),
        };
        let chunks = bytes.map(move |chunk: StorageResult<Bytes>| {
            let _streaming = &active;
            let chunk = chunk.map_err(|error| {
                tracing::error!(error = %error, "download failed mid-stream");
                Status::from(error)
            })?;
            bytes_out.increment(chunk.len() as u64);
            Ok(pb::DownloadResponse {
                content: Some(Content::Chunk(chunk)),
            })
        });
        Ok(Response::new(
            futures::stream::once(async { Ok(info) })
                .chain(chunks)
                .boxed(),
        ))
    }

    async fn stat(
        &self,
        request: Request<pb::StatRequest>,
    ) -> Result<Response<pb::StatResponse>, Status> {
        let request = request.into_inner();
        let file = self.requested_file(&request).await?;
        let local_path = request
            .local_path_wanted
            .then(|| self.backend.local_path(&file))
            .flatten()
            .and_then(|path| path.into_os_string().into_string().ok())
            .unwrap_or_default();
        Ok(Response::new(pb::StatResponse {
            file: Some(file.to_proto()),
            local_path,
        }))
    }

    #[instrument(skip_all, fields(file_id = %request.get_ref().id))]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        let file = self.requested_file(&request).await?;
        if !self.backend.delete_file(file.bucket, file.id).await? {
            return Err(StorageError::NotFound("file").into());
        }
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        let request = request.into_inner();
        let bucket = Bucket::from_proto(request.bucket)?;
        let query = page_query(
            request.owner_id,
            request.any_owner,
            request.limit,
            &request.page_token,
        )?;
        let listed = self.backend.list_files(bucket, &query.one_more()).await?;
        let (files, next_page_token) = query.page(listed);
        Ok(Response::new(pb::ListFilesResponse {
            files: files.iter().map(FileRecord::to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(video_id = %request.get_ref().video_id))]
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::CreateJobResponse>, Status> {
        let mut request = request.into_inner();
        if request.owner_id.is_empty() || request.owner_email.is_empty() {
            return Err(StorageError::InvalidArgument(
                "owner_id and owner_email are required".into(),
            )
            .into());
        }
        // The video must exist and belong to the job's owner.
        let video = self
            .visible_file(
                pb::Bucket::Videos.into(),
                &request.video_id,
                &Owner::One(request.owner_id.clone()),
            )
            .await?;
        let options = AudioOptions::from_proto(request.options.as_ref())
            .map_err(|error| StorageError::InvalidArgument(format!("options: {error}")))?;
        let key = IdempotencyKey::parse(
            std::mem::take(&mut request.idempotency_key),
            std::mem::take(&mut request.request_fingerprint),
        )?;
        let upload_id = self.job_upload(&request).await?;
        let mut job = JobRecord::new(
            request.owner_id,
            request.owner_email,
            video.id,
            request.original_filename,
            options,
        );
        job.upload_id = upload_id;
        // A job made of an upload session is made once per session, whoever completes it.
        let claim = match key {
            Some(key) => {
                let claim = KeyClaim::new(&job.owner_id, &key.key, &key.fingerprint, job.id);
                job.idempotency_key = Some(key.key);
                Some(claim)
            }
            None if !job.upload_id.is_empty() => Some(KeyClaim::for_upload_job(
                &job.owner_id,
                &job.upload_id,
                job.id,
            )),
            None => None,
        };
        if let Some(claim) = &claim
            && let Some(earlier) = self.earlier_job_for(claim).await?
        {
            tracing::info!(job_id = %earlier.id, "idempotency key replayed");
            return Ok(Response::new(pb::CreateJobResponse {
                job: Some(earlier.to_proto()),
                replayed: true,
            }));
        }
        if let Err(error) = self.backend.insert_job(&job).await {
            if let Some(claim) = claim {
                self.release_claim(&claim.id, job.id).await;
            }
            return Err(error.into());
        }
        metrics::counter!(crate::meters::JOBS_CREATED).increment(1);
        tracing::info!(job_id = %job.id, "job created");
        Ok(Response::new(pb::CreateJobResponse {
            job: Some(job.to_proto()),
            replayed: false,
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let request = request.into_inner();
        let job = self.requested_job(&request).await?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job.to_proto()),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let query = page_query(
            request.owner_id,
            request.any_owner,
            request.limit,
            &request.page_token,
        )?;
        let listed = self.backend.list_jobs(&query.one_more()).await?;
        let (jobs, next_page_token) = query.page(listed);
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(JobRecord::to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(job_id = %request.get_ref().id))]
    async fn transition_job(
        &self,
        request: Request<pb::TransitionJobRequest>,
    ) -> Result<Response<pb::TransitionJobResponse>, Status> {
        let request = request.into_inner();
        let change = JobChange::Transition {
            from: JobState::from_proto(request.from, "from")?,
            to: JobState::from_proto(request.to, "to")?,
            mp3_id: request.mp3_id,
            error_reason: request.error_reason,
            claim: request.claim,
        };
        let job = self
            .change_job(&request.id, change)
            .await?
            .ok_or_else(|| StorageError::Internal("a transition is never a no-op".into()))?;
        tracing::info!(state = ?job.state, "job moved");
        if matches!(job.state, JobState::Done | JobState::Failed) {
            // The transition stands either way; a failed clean-up only leaves an unreachable
            // file, so it is logged rather than reported to a caller who cannot act on it.
            if let Err(error) = self.remove_stale_mp3s(&job).await {
                tracing::warn!(%error, "could not remove the job's stale MP3s");
            }
        }
        Ok(Response::new(pb::TransitionJobResponse {
            job: Some(job.to_proto()),
        }))
    }

    async fn update_job_progress(
        &self,
        request: Request<pb::UpdateJobProgressRequest>,
    ) -> Result<Response<pb::UpdateJobProgressResponse>, Status> {
        let request = request.into_inner();
        let change = JobChange::Progress {
            percent: request.progress_percent,
            claim: request.claim,
        };
        self.change_job(&request.id, change).await?;
        Ok(Response::new(pb::UpdateJobProgressResponse {}))
    }

    #[instrument(skip_all, fields(job_id = %request.get_ref().id))]
    async fn mark_job_notified(
        &self,
        request: Request<pb::MarkJobNotifiedRequest>,
    ) -> Result<Response<pb::MarkJobNotifiedResponse>, Status> {
        let request = request.into_inner();
        let changed = self
            .change_job(&request.id, JobChange::MarkNotified)
            .await?;
        Ok(Response::new(pb::MarkJobNotifiedResponse {
            already_notified: changed.is_none(),
        }))
    }

    #[instrument(skip_all, fields(job_id = %request.get_ref().id))]
    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let request = request.into_inner();
        let job = self.requested_job(&request).await?;
        // The record goes first: a crash afterwards leaves unreferenced files, never a job
        // pointing at files that are gone.
        if !self.backend.delete_job(job.id).await? {
            return Err(StorageError::NotFound("job").into());
        }
        if let Some(key) = &job.idempotency_key {
            self.release_claim(&KeyClaim::id_of(&job.owner_id, key), job.id)
                .await;
        }
        self.remove_file_if_there(Bucket::Videos, &job.video_id)
            .await?;
        self.remove_file_if_there(Bucket::Mp3s, &job.mp3_id).await?;
        if !job.upload_id.is_empty() {
            self.forget_session(&job.upload_id).await;
        }
        tracing::info!("job deleted with its files");
        Ok(Response::new(pb::DeleteJobResponse {}))
    }

    #[instrument(skip_all, fields(owner_id = %request.get_ref().owner_id))]
    async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::CreateWebhookEndpointResponse>, Status> {
        let endpoint = EndpointRecord::from_request(request.into_inner())?;
        if !self
            .backend
            .insert_endpoint(&endpoint, MAX_ENDPOINTS_PER_OWNER)
            .await?
        {
            return Err(StorageError::FailedPrecondition(format!(
                "an account has at most {MAX_ENDPOINTS_PER_OWNER} webhook endpoints; delete one first"
            ))
            .into());
        }
        tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");
        Ok(Response::new(pb::CreateWebhookEndpointResponse {
            endpoint: Some(endpoint.to_proto(DateTime::now())),
        }))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        let request = request.into_inner();
        if request.owner_id.is_empty() {
            return Err(StorageError::InvalidArgument("owner_id is required".into()).into());
        }
        let now = DateTime::now();
        let endpoints = self.backend.list_endpoints(&request.owner_id).await?;
        Ok(Response::new(pb::ListWebhookEndpointsResponse {
            endpoints: endpoints.iter().map(|e| e.to_proto(now)).collect(),
        }))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<pb::GetWebhookEndpointRequest>,
    ) -> Result<Response<pb::GetWebhookEndpointResponse>, Status> {
        let request = request.into_inner();
        let endpoint = self
            .visible_endpoint(&request.id, &request.owner()?)
            .await?;
        Ok(Response::new(pb::GetWebhookEndpointResponse {
            endpoint: Some(endpoint.to_proto(DateTime::now())),
        }))
    }

    #[instrument(skip_all, fields(endpoint_id = %request.get_ref().id))]
    async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<pb::DeleteWebhookEndpointResponse>, Status> {
        let request = request.into_inner();
        let endpoint = self
            .visible_endpoint(&request.id, &request.owner()?)
            .await?;
        if !self.backend.delete_endpoint(endpoint.id).await? {
            return Err(StorageError::NotFound("webhook endpoint").into());
        }
        tracing::info!("webhook endpoint deleted");
        Ok(Response::new(pb::DeleteWebhookEndpointResponse {}))
    }

    #[instrument(skip_all, fields(endpoint_id = %request.get_ref().id))]
    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let request = request.into_inner();
        if request.owner_id.is_empty() {
            return Err(StorageError::InvalidArgument("owner_id is required".into()).into());
        }
        let owner = Owner::One(request.owner_id.clone());
        let overlap = match request.overlap_seconds {
            0 => DEFAULT_SECRET_OVERLAP,
            seconds => std::time::Duration::from_secs(seconds.into()),
        };
        for _ in 0..MAX_CHANGE_ATTEMPTS {
            let current = self.visible_endpoint(&request.id, &owner).await?;
            let now = DateTime::now();
            let rotated = current.rotated(request.secret.clone(), overlap, now)?;
            if self
                .backend
                .replace_endpoint(&rotated, current.revision)
                .await?
            {
                tracing::info!("webhook secret rotated");
                return Ok(Response::new(pb::RotateWebhookSecretResponse {
                    endpoint: Some(rotated.to_proto(now)),
                }));
            }
        }
        Err(StorageError::Contended(format!("webhook endpoint {}", request.id)).into())
    }

    #[instrument(skip_all, fields(endpoint_id = %request.get_ref().endpoint_id))]
    async fn record_webhook_attempt(
        &self,
        request: Request<pb::RecordWebhookAttemptRequest>,
    ) -> Result<Response<pb::RecordWebhookAttemptResponse>, Status> {
        let request = request.into_inner();
        let endpoint = self
            .visible_endpoint(&request.endpoint_id, &Owner::Any)
            .await?;
        let attempt = request
            .attempt
            .ok_or_else(|| StorageError::InvalidArgument("attempt is required".into()))?;
        let attempt = AttemptRecord::from_proto(endpoint.id, attempt)?;
        self.backend.insert_attempt(&attempt, KEPT_ATTEMPTS).await?;
        let disable_after = match request.disable_after_seconds {
            0 => None,
            seconds => Some(std::time::Duration::from_secs(seconds)),
        };
        let mut current = endpoint;
        for _ in 0..MAX_CHANGE_ATTEMPTS {
            let now = DateTime::now();
            let (next, just_disabled) =
                current.after_attempt(attempt.delivered, request.gone, disable_after, now);
            if self
                .backend
                .replace_endpoint(&next, current.revision)
                .await?
            {
                if just_disabled {
                    tracing::warn!("webhook endpoint disabled");
                }
                return Ok(Response::new(pb::RecordWebhookAttemptResponse {
                    endpoint: Some(next.to_proto(now)),
                    just_disabled,
                }));
            }
            current = self
                .visible_endpoint(&request.endpoint_id, &Owner::Any)
                .await?;
        }
        Err(StorageError::Contended(format!("webhook endpoint {}", request.endpoint_id)).into())
    }

    async fn list_webhook_attempts(
        &self,
        request: Request<pb::ListWebhookAttemptsRequest>,
    ) -> Result<Response<pb::ListWebhookAttemptsResponse>, Status> {
        let request = request.into_inner();
        let owner = Owner::from_request(request.owner_id, request.any_owner)?;
        let endpoint = self.visible_endpoint(&request.endpoint_id, &owner).await?;
        let attempts = self.backend.list_attempts(endpoint.id).await?;
        Ok(Response::new(pb::ListWebhookAttemptsResponse {
            attempts: attempts.iter().map(AttemptRecord::to_proto).collect(),
        }))
    }

    #[instrument(skip_all, fields(endpoint_id = %request.get_ref().id))]
    async fn enable_webhook_endpoint(
        &self,
        request: Request<pb::EnableWebhookEndpointRequest>,
    ) -> Result<Response<pb::EnableWebhookEndpointResponse>, Status> {
        let request = request.into_inner();
        if request.owner_id.is_empty() {
            return Err(StorageError::InvalidArgument("owner_id is required".into()).into());
        }
        let owner = Owner::One(request.owner_id.clone());
        for _ in 0..MAX_CHANGE_ATTEMPTS {
            let current = self.visible_endpoint(&request.id, &owner).await?;
            let next = current.enabled();
            if self
                .backend
                .replace_endpoint(&next, current.revision)
                .await?
            {
                tracing::info!("webhook endpoint enabled");
                return Ok(Response::new(pb::EnableWebhookEndpointResponse {
                    endpoint: Some(next.to_proto(DateTime::now())),
                }));
            }
        }
        Err(StorageError::Contended(format!("webhook endpoint {}", request.id)).into())
    }

    async fn create_upload_session(
        &self,
        request: Request<pb::CreateUploadSessionRequest>,
    ) -> Result<Response<pb::CreateUploadSessionResponse>, Status> {
        let (session, replayed) = self.create_session(request.into_inner()).await?;
        Ok(Response::new(pb::CreateUploadSessionResponse {
            session: Some(session.to_proto(DateTime::now())),
            replayed,
        }))
    }

    async fn get_upload_session(
        &self,
        request: Request<pb::GetUploadSessionRequest>,
    ) -> Result<Response<pb::GetUploadSessionResponse>, Status> {
        let request = request.into_inner();
        let owner = Owner::from_request(request.owner_id, request.any_owner)?;
        let session = self.settled_session(&request.id, &owner).await?;
        Ok(Response::new(pb::GetUploadSessionResponse {
            session: Some(session.to_proto(DateTime::now())),
        }))
    }

    async fn append_upload(
        &self,
        request: Request<Streaming<pb::AppendUploadRequest>>,
    ) -> Result<Response<pb::AppendUploadResponse>, Status> {
        let api = self.clone();
        // On its own task: if the caller goes away mid-stream, the append still runs to its
        // end, which keeps what arrived and lets the session go.
        let session = tokio::spawn(async move { api.append(request.into_inner()).await })
            .await
            .map_err(StorageError::Task)??;
        Ok(Response::new(pb::AppendUploadResponse {
            session: Some(session.to_proto(DateTime::now())),
        }))
    }

    #[instrument(skip_all, fields(upload_id = %request.get_ref().id))]
    async fn abort_upload_session(
        &self,
        request: Request<pb::AbortUploadSessionRequest>,
    ) -> Result<Response<pb::AbortUploadSessionResponse>, Status> {
        let request = request.into_inner();
        let owner = Owner::from_request(request.owner_id, false)?;
        self.abort_session(&request.id, &owner).await?;
        Ok(Response::new(pb::AbortUploadSessionResponse {}))
    }

    #[instrument(skip_all, fields(upload_id = %request.get_ref().id))]
    async fn complete_upload_session(
        &self,
        request: Request<pb::CompleteUploadSessionRequest>,
    ) -> Result<Response<pb::CompleteUploadSessionResponse>, Status> {
        let request = request.into_inner();
        let owner = Owner::from_request(request.owner_id, false)?;
        let (session, file) = self
            .complete_session(&request.id, &owner, &request.job_id)
            .await?;
        Ok(Response::new(pb::CompleteUploadSessionResponse {
            session: Some(session.to_proto(DateTime::now())),
            file: Some(file.to_proto()),
        }))
    }
}

/// The idempotency key of a CreateJob request, with what identifies the request.
struct IdempotencyKey {
    key: String,
    fingerprint: String,
}

impl IdempotencyKey {
    /// A request's key, if it gives one; a key must be printable ASCII and bounded, and come
    /// with a fingerprint.
    fn parse(key: String, fingerprint: String) -> StorageResult<Option<Self>> {
        if key.is_empty() {
            return Ok(None);
        }
        if key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(StorageError::InvalidArgument(format!(
                "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters"
            )));
        }
        if fingerprint.is_empty() {
            return Err(StorageError::InvalidArgument(
                "request_fingerprint is required with an idempotency_key".into(),
            ));
        }
        Ok(Some(Self { key, fingerprint }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_must_lie_inside_the_file() {
        assert_eq!(checked_range(10, 0, None).unwrap(), (0, 10));
        assert_eq!(checked_range(10, 4, None).unwrap(), (4, 6));
        assert_eq!(checked_range(10, 4, Some(6)).unwrap(), (4, 6));
        assert_eq!(checked_range(10, 10, None).unwrap(), (10, 0));
        assert!(checked_range(10, 4, Some(7)).is_err());
        assert!(checked_range(10, 11, None).is_err());
        assert!(checked_range(10, u64::MAX, Some(2)).is_err());
    }

    #[test]
    fn list_limits_default_and_cap() {
        assert_eq!(list_limit(0), DEFAULT_LIST_LIMIT);
        assert_eq!(list_limit(5), 5);
        assert_eq!(list_limit(1_000_000), MAX_LIST_LIMIT);
    }
}
