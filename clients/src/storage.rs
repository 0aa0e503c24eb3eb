//! The storage service as its callers use it: files (stat, download, upload, delete, list) and
//! jobs (create, read, list, and each step of a job's life under a worker's claim).

use crate::{MAX_MESSAGE_BYTES, required};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use proto::storage::v1 as pb;
use proto::storage::v1::storage_service_client::StorageServiceClient;
use service_kit::grpc::unary;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

pub use pb::{
    Bucket, ChecksumAlgorithm, FileInfo, Job, JobState, UploadSession, WebhookAttempt,
    WebhookEndpoint,
};

/// Messages queued towards storage before a sender waits: a few in flight keep the link busy
/// without holding much memory.
const UPLOAD_MESSAGES_IN_FLIGHT: usize = 4;

/// Whose records a call may see: one owner's, or every owner's (workers, admins). Storage
/// refuses a call that names neither, so there is no way to ask for "everyone" by omission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Only this owner's records (another owner's answer NOT_FOUND).
    One(String),
    /// Every owner's: for trusted callers.
    Any,
}

impl Owner {
    /// The contract's `(owner_id, any_owner)`.
    fn fields(&self) -> (String, bool) {
        match self {
            Self::One(owner) => (owner.clone(), false),
            Self::Any => (String::new(), true),
        }
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, Default)]
pub struct Page<T> {
    /// The records.
    pub items: Vec<T>,
    /// Where the next page starts; empty on the last page.
    pub next_page_token: String,
}

/// What CreateJob answered.
#[derive(Debug, Clone)]
pub struct CreatedJob {
    /// The job: new, or the one an earlier request with the same idempotency key created.
    pub job: Job,
    /// Whether it is the earlier one (nothing new was recorded).
    pub replayed: bool,
}

/// A client of the storage service (cheap to clone).
#[derive(Debug, Clone)]
pub struct StorageClient {
    inner: StorageServiceClient<Channel>,
}

impl StorageClient {
    /// A client over `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: StorageServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// A client of the service at `url` (over mutual TLS with `tls`), connecting on first use
    /// (and again after the service went away), so a caller can start before storage does.
    pub fn connect_lazy(
        url: &str,
        tls: Option<&service_kit::grpc_tls::GrpcTls>,
    ) -> Result<Self, tonic::transport::Error> {
        Ok(Self::new(service_kit::grpc::client_channel(url, tls)?))
    }

    fn rpc(&self) -> StorageServiceClient<Channel> {
        self.inner.clone()
    }

    // Files ------------------------------------------------------------------------------------

    /// A file's info, if `owner` may see it.
    pub async fn stat(&self, bucket: Bucket, id: &str, owner: &Owner) -> Result<FileInfo, Status> {
        let answer = self.stat_asking(bucket, id, owner, false).await?;
        required(answer.file, "Stat", "a file")
    }

    /// [`StorageClient::stat`], and where storage keeps the bytes on its own disk when it keeps
    /// them as a file there (the local directory backend). A caller on the same machine may
    /// read them in place once it has checked that the path names a file of the recorded size:
    /// on another machine it names nothing, or something else.
    pub async fn stat_with_local_path(
        &self,
        bucket: Bucket,
        id: &str,
        owner: &Owner,
    ) -> Result<(FileInfo, Option<PathBuf>), Status> {
        let answer = self.stat_asking(bucket, id, owner, true).await?;
        let local_path = Some(answer.local_path)
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        Ok((required(answer.file, "Stat", "a file")?, local_path))
    }

    async fn stat_asking(
        &self,
        bucket: Bucket,
        id: &str,
        owner: &Owner,
        local_path_wanted: bool,
    ) -> Result<pb::StatResponse, Status> {
        let (owner_id, any_owner) = owner.fields();
        let request = pb::StatRequest {
            bucket: bucket.into(),
            id: id.to_owned(),
            owner_id,
            any_owner,
            local_path_wanted,
        };
        Ok(self.rpc().stat(unary(request)).await?.into_inner())
    }

    /// `length` bytes of a file from `offset` (to the end when `None`), as they arrive. An error
    /// mid-stream ends it.
    pub async fn download(
        &self,
        bucket: Bucket,
        id: &str,
        owner: &Owner,
        offset: u64,
        length: Option<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, Status>>, Status> {
        let (owner_id, any_owner) = owner.fields();
        let mut request = tonic::Request::new(pb::DownloadRequest {
            bucket: bucket.into(),
            id: id.to_owned(),
            owner_id,
            any_owner,
            offset,
            length,
        });
        service_kit::request_id::attach(&mut request);
        let stream = self.rpc().download(request).await?.into_inner();
        Ok(stream
            .filter_map(|message| async move {
                match message {
                    Ok(pb::DownloadResponse {
                        content: Some(pb::download_response::Content::Chunk(chunk)),
                    }) => Some(Ok(chunk)),
                    Ok(_) => None,
                    Err(status) => Some(Err(status)),
                }
            })
            .boxed())
    }

    /// Removes a file `owner` may see.
    pub async fn delete_file(&self, bucket: Bucket, id: &str, owner: &Owner) -> Result<(), Status> {
        let (owner_id, any_owner) = owner.fields();
        let request = pb::DeleteRequest {
            bucket: bucket.into(),
            id: id.to_owned(),
            owner_id,
            any_owner,
        };
        self.rpc().delete(unary(request)).await?;
        Ok(())
    }

    /// One page of the files of `bucket` that `owner` may see.
    pub async fn files_page(
        &self,
        bucket: Bucket,
        owner: &Owner,
        limit: u32,
        page_token: &str,
    ) -> Result<Page<FileInfo>, Status> {
        let (owner_id, any_owner) = owner.fields();
        let request = pb::ListFilesRequest {
            bucket: bucket.into(),
            owner_id,
            any_owner,
            limit,
            page_token: page_token.to_owned(),
        };
        let response = self.rpc().list_files(unary(request)).await?.into_inner();
        Ok(Page {
            items: response.files,
            next_page_token: response.next_page_token,
        })
    }

    /// Every file of `bucket` that `owner` may see, newest first (all pages).
    pub async fn all_files(&self, bucket: Bucket, owner: &Owner) -> Result<Vec<FileInfo>, Status> {
        all_pages(|token| async move { self.files_page(bucket, owner, 0, &token).await }).await
    }

    /// Starts storing a file; its bytes follow through the [`Upload`].
    pub fn upload(&self, header: pb::UploadHeader) -> Upload {
        let mut rpc = self.rpc();
        let first = pb::UploadRequest {
            content: Some(pb::upload_request::Content::Header(header)),
        };
        ByteStream::start(first, move |messages| async move {
            rpc.upload(streaming_request(messages)).await
        })
    }

    // Resumable upload sessions ----------------------------------------------------------------

    /// Starts a resumable upload session; `true` with it when an earlier request with the same
    /// idempotency key created it.
    pub async fn create_upload_session(
        &self,
        request: pb::CreateUploadSessionRequest,
    ) -> Result<(UploadSession, bool), Status> {
        let response = self
            .rpc()
            .create_upload_session(unary(request))
            .await?
            .into_inner();
        let session = required(response.session, "CreateUploadSession", "a session")?;
        Ok((session, response.replayed))
    }

    /// A resumable upload session `owner` may see.
    pub async fn upload_session(&self, id: &str, owner: &Owner) -> Result<UploadSession, Status> {
        let (owner_id, any_owner) = owner.fields();
        let request = pb::GetUploadSessionRequest {
            id: id.to_owned(),
            owner_id,
            any_owner,
        };
        let response = self.rpc().get_upload_session(unary(request)).await?;
        required(
            response.into_inner().session,
            "GetUploadSession",
            "a session",
        )
    }

    /// Starts appending to a session at `header.offset`; the bytes follow through the
    /// [`Append`].
    pub fn append(&self, header: pb::AppendHeader) -> Append {
        let mut rpc = self.rpc();
        let first = pb::AppendUploadRequest {
            content: Some(pb::append_upload_request::Content::Header(header)),
        };
        ByteStream::start(first, move |messages| async move {
            rpc.append_upload(streaming_request(messages)).await
        })
    }

    /// Removes an owner's session (and its bytes, unless complete).
    pub async fn abort_upload_session(&self, id: &str, owner_id: &str) -> Result<(), Status> {
        let request = pb::AbortUploadSessionRequest {
            id: id.to_owned(),
            owner_id: owner_id.to_owned(),
        };
        self.rpc().abort_upload_session(unary(request)).await?;
        Ok(())
    }

    /// Makes an owner's session whose every byte is in into a file (again: the same file),
    /// recording `job_id` on it when not empty.
    pub async fn complete_upload_session(
        &self,
        id: &str,
        owner_id: &str,
        job_id: &str,
    ) -> Result<(UploadSession, FileInfo), Status> {
        let request = pb::CompleteUploadSessionRequest {
            id: id.to_owned(),
            owner_id: owner_id.to_owned(),
            job_id: job_id.to_owned(),
        };
        let response = self
            .rpc()
            .complete_upload_session(unary(request))
            .await?
            .into_inner();
        Ok((
            required(response.session, "CompleteUploadSession", "a session")?,
            required(response.file, "CompleteUploadSession", "a file")?,
        ))
    }

    // Jobs -------------------------------------------------------------------------------------

    /// Records a new job (QUEUED) for a stored video of its owner.
    pub async fn create_job(&self, request: pb::CreateJobRequest) -> Result<Job, Status> {
        Ok(self.create_job_once(request).await?.job)
    }

    /// [`StorageClient::create_job`] for a request that may carry an idempotency key: the job,
    /// and whether an earlier request with the same key created it.
    pub async fn create_job_once(
        &self,
        request: pb::CreateJobRequest,
    ) -> Result<CreatedJob, Status> {
        let answer = self.rpc().create_job(unary(request)).await?.into_inner();
        Ok(CreatedJob {
            job: required(answer.job, "CreateJob", "a job")?,
            replayed: answer.replayed,
        })
    }

    /// A job `owner` may see.
    pub async fn job(&self, id: &str, owner: &Owner) -> Result<Job, Status> {
        let (owner_id, any_owner) = owner.fields();
        let request = pb::GetJobRequest {
            id: id.to_owned(),
            owner_id,
            any_owner,
        };
        let answer = self.rpc().get_job(unary(request)).await?.into_inner();
        required(answer.job, "GetJob", "a job")
    }

    /// One page of the jobs `owner` may see.
    pub async fn jobs_page(
        &self,
        owner: &Owner,
        limit: u32,
        page_token: &str,
    ) -> Result<Page<Job>, Status> {
        let (owner_id, any_owner) = owner.fields();
        let request = pb::ListJobsRequest {
            owner_id,
            any_owner,
            limit,
            page_token: page_token.to_owned(),
        };
        let response = self.rpc().list_jobs(unary(request)).await?.into_inner();
        Ok(Page {
            items: response.jobs,
            next_page_token: response.next_page_token,
        })
    }

    /// Every job `owner` may see, newest first (all pages).
    pub async fn all_jobs(&self, owner: &Owner) -> Result<Vec<Job>, Status> {
        all_pages(|token| async move { self.jobs_page(owner, 0, &token).await }).await
    }

    /// Removes a job `owner` may see, with its files.
    pub async fn delete_job(&self, id: &str, owner: &Owner) -> Result<(), Status> {
        let (owner_id, any_owner) = owner.fields();
        let request = pb::DeleteJobRequest {
            id: id.to_owned(),
            owner_id,
            any_owner,
        };
        self.rpc().delete_job(unary(request)).await?;
        Ok(())
    }

    /// Claims `job` for conversion: `from` (QUEUED, or CONVERTING to take over from a worker
    /// presumed dead) to CONVERTING. The answer's `attempts` is the new claim. Another change
    /// in between answers FAILED_PRECONDITION.
    pub async fn claim(&self, job: &Job, from: JobState) -> Result<Job, Status> {
        self.transition(
            job,
            from,
            JobState::Converting,
            None,
            String::new(),
            String::new(),
        )
        .await
    }

    /// Marks a claimed job DONE with its MP3. FAILED_PRECONDITION: another worker claimed it
    /// since.
    pub async fn mark_done(&self, job: &Job, mp3_id: &str) -> Result<Job, Status> {
        self.transition(
            job,
            JobState::Converting,
            JobState::Done,
            Some(job.attempts),
            mp3_id.to_owned(),
            String::new(),
        )
        .await
    }

    /// Marks a claimed job FAILED for `reason`, which the user is shown.
    pub async fn mark_failed(&self, job: &Job, reason: &str) -> Result<Job, Status> {
        self.transition(
            job,
            JobState::Converting,
            JobState::Failed,
            Some(job.attempts),
            String::new(),
            reason.to_owned(),
        )
        .await
    }

    /// Puts a claimed job back to QUEUED, for another attempt.
    pub async fn hand_back(&self, job: &Job) -> Result<Job, Status> {
        self.transition(
            job,
            JobState::Converting,
            JobState::Queued,
            Some(job.attempts),
            String::new(),
            String::new(),
        )
        .await
    }

    /// Records the progress of a job under `claim`. FAILED_PRECONDITION: another worker claimed
    /// it since.
    pub async fn report_progress(
        &self,
        job_id: &str,
        claim: u32,
        percent: u32,
    ) -> Result<(), Status> {
        let request = pb::UpdateJobProgressRequest {
            id: job_id.to_owned(),
            progress_percent: percent,
            claim: Some(claim),
        };
        self.rpc().update_job_progress(unary(request)).await?;
        Ok(())
    }

    /// Records that the job's owner was told its outcome; `true` if someone had already.
    pub async fn mark_notified(&self, job_id: &str) -> Result<bool, Status> {
        let request = pb::MarkJobNotifiedRequest {
            id: job_id.to_owned(),
        };
        Ok(self
            .rpc()
            .mark_job_notified(unary(request))
            .await?
            .into_inner()
            .already_notified)
    }

    /// Records a webhook endpoint.
    pub async fn create_webhook_endpoint(
        &self,
        request: pb::CreateWebhookEndpointRequest,
    ) -> Result<WebhookEndpoint, Status> {
        let answer = self
            .rpc()
            .create_webhook_endpoint(unary(request))
            .await?
            .into_inner();
        required(answer.endpoint, "CreateWebhookEndpoint", "an endpoint")
    }

    /// An owner's webhook endpoints, newest first.
    pub async fn webhook_endpoints(&self, owner_id: &str) -> Result<Vec<WebhookEndpoint>, Status> {
        let request = pb::ListWebhookEndpointsRequest {
            owner_id: owner_id.to_owned(),
        };
        Ok(self
            .rpc()
            .list_webhook_endpoints(unary(request))
            .await?
            .into_inner()
            .endpoints)
    }

    /// A webhook endpoint `owner` may see.
    pub async fn webhook_endpoint(
        &self,
        id: &str,
        owner: &Owner,
    ) -> Result<WebhookEndpoint, Status> {
        let (owner_id, any_owner) = owner.fields();
        let request = pb::GetWebhookEndpointRequest {
            id: id.to_owned(),
            owner_id,
            any_owner,
        };
        let answer = self
            .rpc()
            .get_webhook_endpoint(unary(request))
            .await?
            .into_inner();
        required(answer.endpoint, "GetWebhookEndpoint", "an endpoint")
    }

    /// Removes a webhook endpoint `owner` may see.
    pub async fn delete_webhook_endpoint(&self, id: &str, owner: &Owner) -> Result<(), Status> {
        let (owner_id, any_owner) = owner.fields();
        let request = pb::DeleteWebhookEndpointRequest {
            id: id.to_owned(),
            owner_id,
            any_owner,
        };
        self.rpc().delete_webhook_endpoint(unary(request)).await?;
        Ok(())
    }

    /// Makes `secret` the signing secret of `owner_id`'s endpoint `id`; the one it replaces
    /// signs beside it for `overlap` (`None`: storage's default, 24 hours).
    pub async fn rotate_webhook_secret(
        &self,
        id: &str,
        owner_id: &str,
        secret: String,
        overlap: Option<std::time::Duration>,
    ) -> Result<WebhookEndpoint, Status> {
        let request = pb::RotateWebhookSecretRequest {
            id: id.to_owned(),
            owner_id: owner_id.to_owned(),
            secret,
            overlap_seconds: overlap.map_or(0, |overlap| {
                u32::try_from(overlap.as_secs()).unwrap_or(u32::MAX).max(1)
            }),
        };
        let answer = self
            .rpc()
            .rotate_webhook_secret(unary(request))
            .await?
            .into_inner();
        required(answer.endpoint, "RotateWebhookSecret", "an endpoint")
    }

    /// Logs one delivery attempt to endpoint `endpoint_id` and updates its health (`gone`: the
    /// receiver answered 410; `disable_after`: how long failures may go on without a success
    /// before the endpoint is disabled). The endpoint, and whether this attempt disabled it.
    pub async fn record_webhook_attempt(
        &self,
        endpoint_id: &str,
        attempt: WebhookAttempt,
        gone: bool,
        disable_after: Option<std::time::Duration>,
    ) -> Result<(WebhookEndpoint, bool), Status> {
        let request = pb::RecordWebhookAttemptRequest {
            endpoint_id: endpoint_id.to_owned(),
            attempt: Some(attempt),
            gone,
            disable_after_seconds: disable_after.map_or(0, |after| after.as_secs().max(1)),
        };
        let answer = self
            .rpc()
            .record_webhook_attempt(unary(request))
            .await?
            .into_inner();
        let endpoint = required(answer.endpoint, "RecordWebhookAttempt", "an endpoint")?;
        Ok((endpoint, answer.just_disabled))
    }

    /// The logged attempts of an endpoint `owner` may see, newest first.
    pub async fn webhook_attempts(
        &self,
        endpoint_id: &str,
        owner: &Owner,
    ) -> Result<Vec<WebhookAttempt>, Status> {
        let (owner_id, any_owner) = owner.fields();
        let request = pb::ListWebhookAttemptsRequest {
            endpoint_id: endpoint_id.to_owned(),
            owner_id,
            any_owner,
        };
        Ok(self
            .rpc()
            .list_webhook_attempts(unary(request))
            .await?
            .into_inner()
            .attempts)
    }

    /// Turns `owner_id`'s disabled endpoint `id` back on.
    pub async fn enable_webhook_endpoint(
        &self,
        id: &str,
        owner_id: &str,
    ) -> Result<WebhookEndpoint, Status> {
        let request = pb::EnableWebhookEndpointRequest {
            id: id.to_owned(),
            owner_id: owner_id.to_owned(),
        };
        let answer = self
            .rpc()
            .enable_webhook_endpoint(unary(request))
            .await?
            .into_inner();
        required(answer.endpoint, "EnableWebhookEndpoint", "an endpoint")
    }

    async fn transition(
        &self,
        job: &Job,
        from: JobState,
        to: JobState,
        claim: Option<u32>,
        mp3_id: String,
        error_reason: String,
    ) -> Result<Job, Status> {
        let request = pb::TransitionJobRequest {
            id: job.id.clone(),
            from: from.into(),
            to: to.into(),
            mp3_id,
            error_reason,
            claim,
        };
        let answer = self
            .rpc()
            .transition_job(unary(request))
            .await?
            .into_inner();
        required(answer.job, "TransitionJob", "a job")
    }
}

/// Every item of a paged listing, following `next_page_token` to the end.
async fn all_pages<T, F, Fut>(page: F) -> Result<Vec<T>, Status>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Page<T>, Status>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let next = page(token).await?;
        items.extend(next.items);
        if next.next_page_token.is_empty() {
            return Ok(items);
        }
        token = next.next_page_token;
    }
}

/// A client stream of bytes into storage: its first message is sent, chunks follow with
/// [`ByteStream::send`], and the last message says every byte was sent. Dropped (or
/// abandoned) before that, the stream ends without it, which storage reads as a break.
#[derive(Debug)]
pub struct ByteStream<M, R> {
    messages: mpsc::Sender<M>,
    call: JoinHandle<Result<tonic::Response<R>, Status>>,
    storage_stopped: bool,
}

/// The messages of a client stream of bytes.
pub trait ByteMessage: Sized {
    /// A message carrying bytes.
    fn chunk(bytes: Bytes) -> Self;
    /// The last message: every byte was sent.
    fn finish() -> Self;
}

impl ByteMessage for pb::UploadRequest {
    fn chunk(bytes: Bytes) -> Self {
        Self {
            content: Some(pb::upload_request::Content::Chunk(bytes)),
        }
    }

    fn finish() -> Self {
        Self {
            content: Some(pb::upload_request::Content::Finish(pb::UploadFinish {})),
        }
    }
}

impl ByteMessage for pb::AppendUploadRequest {
    fn chunk(bytes: Bytes) -> Self {
        Self {
            content: Some(pb::append_upload_request::Content::Chunk(bytes)),
        }
    }

    fn finish() -> Self {
        Self {
            content: Some(pb::append_upload_request::Content::Finish(
                pb::UploadFinish {},
            )),
        }
    }
}

/// A file on its way into storage ([`StorageClient::upload`]): storage keeps it only once
/// [`Upload::finish`] says every byte was sent.
pub type Upload = ByteStream<pb::UploadRequest, pb::UploadResponse>;

/// Bytes on their way into a resumable upload session ([`StorageClient::append`]). Without a
/// checksum, storage keeps what arrived even if the stream breaks off.
pub type Append = ByteStream<pb::AppendUploadRequest, pb::AppendUploadResponse>;

impl<M: ByteMessage + Send + 'static, R> ByteStream<M, R> {
    /// Starts `call` on its own task, so the caller can feed the stream while it runs.
    fn start<F>(first: M, call: impl FnOnce(ReceiverStream<M>) -> F) -> Self
    where
        F: std::future::Future<Output = Result<tonic::Response<R>, Status>> + Send + 'static,
        R: Send + 'static,
    {
        let (messages, outgoing) = mpsc::channel(UPLOAD_MESSAGES_IN_FLIGHT);
        let call = tokio::spawn(call(ReceiverStream::new(outgoing)));
        // Room for the first message is always there; a closed stream shows at the next send.
        let storage_stopped = messages.try_send(first).is_err();
        Self {
            messages,
            call,
            storage_stopped,
        }
    }

    /// Sends the next bytes. `false` when storage stopped reading: finishing then says why.
    pub async fn send(&mut self, chunk: Bytes) -> bool {
        self.send_message(M::chunk(chunk)).await
    }

    async fn send_message(&mut self, message: M) -> bool {
        if self.storage_stopped {
            return false;
        }
        let sent = self.messages.send(message).await;
        self.storage_stopped = sent.is_err();
        sent.is_ok()
    }

    /// Says every byte was sent and waits for storage's answer (an answer before every byte
    /// was sent is an error too).
    async fn finish_call(mut self) -> Result<R, Status> {
        let finished = self.send_message(M::finish()).await;
        let answer = self.answer().await?;
        if !finished {
            return Err(Status::internal("storage answered before the stream ended"));
        }
        Ok(answer.into_inner())
    }

    /// Ends the stream without its last message, and waits until storage has dealt with the
    /// break.
    pub async fn abandon(self) {
        let _ = self.answer().await;
    }

    /// Closes the stream and waits for storage's answer.
    async fn answer(self) -> Result<tonic::Response<R>, Status> {
        drop(self.messages);
        self.call
            .await
            .map_err(|error| Status::internal(format!("the storage call failed: {error}")))?
    }
}

impl Upload {
    /// Ends the upload and asks storage to keep the file; its record, or why storage refused.
    pub async fn finish(self) -> Result<FileInfo, Status> {
        required(self.finish_call().await?.file, "Upload", "a file")
    }
}

impl Append {
    /// Ends the append with every byte sent; the session as it is after it, or why storage
    /// refused.
    pub async fn finish(self) -> Result<UploadSession, Status> {
        required(
            self.finish_call().await?.session,
            "AppendUpload",
            "a session",
        )
    }
}

/// A client-streaming request carrying the current request id, without a deadline (a stream
/// of bytes takes as long as the bytes take).
fn streaming_request<M>(messages: ReceiverStream<M>) -> tonic::Request<ReceiverStream<M>> {
    let mut request = tonic::Request::new(messages);
    service_kit::request_id::attach(&mut request);
    request
}
