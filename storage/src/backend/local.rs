//! The embedded default: files and job records in a local directory, for running the whole
//! system on one machine without MongoDB.
//!
//! ```text
//! root/incoming/{id}          uploads in progress (emptied at start-up)
//! root/{bucket}/{id}          a file's bytes
//! root/{bucket}/{id}.json     its record: written last, so a file without one is not there
//! root/jobs/{id}.json         a job record
//! root/webhooks/{id}.json     a webhook endpoint
//! root/webhook-attempts/{id}.json  its newest delivery attempts, newest first
//! root/keys/{sha256}.json      an idempotency key's claim (named by the digest of its id; the
//!                              claims older than their window are removed at start-up)
//! root/uploads/{id}.json       a resumable upload session
//! root/uploads/{id}            its bytes so far (past the session's offset: not kept)
//! root/uploads/{id}.progress   its offset and expiry as its appends left them, in place
//! ```
//! Every record is written to a temporary file, flushed to disk and renamed into place, so a
//! crash leaves the old record or the new one, never half of either. One process owns the
//! directory; a lock inside it serialises the compare-and-set of job records. So an upload
//! session's writer's lease, which excludes a second append only while this process runs, is
//! kept in memory: taking and letting go of it cost an append two record writes with their
//! fsyncs, for nothing a crash would need. What an append does keep, how far the session got,
//! is written in place ([`progress`]), not as a new record.

use super::ByteStream;
use crate::batch::Batch;
use crate::error::{StorageError, StorageResult};
use crate::model::{
    AttemptRecord, Bucket, DateTime, EndpointRecord, FileRecord, IDEMPOTENCY_WINDOW, JobRecord,
    KeyClaim, NewFile, ObjectId, PageQuery, session::SessionRecord,
};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Mutex;
use tokio_util::io::ReaderStream;

mod progress;

/// Bytes per chunk when reading a file out: each chunk is one read on a blocking thread and one
/// gRPC message, so larger chunks mean fewer thread hand-offs and frames per file (a
/// converter's fetch of a video is most of what storage does per job).
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// A directory holding files and job records.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    job_lock: Mutex<()>,
    /// Upload sessions as their latest change left them, where that is newer than their
    /// record on disk: a writer's lease, kept in memory only, or an append's progress, written
    /// in place beside the record (changed under `job_lock`). One entry per session appended
    /// to since its record was last written whole, until it completes or goes; so the next
    /// append's lease reads neither file.
    latest_sessions: std::sync::Mutex<HashMap<ObjectId, SessionRecord>>,
}

impl LocalBackend {
    /// Opens (creating if needed) the directory at `root`, and clears what a crash left behind:
    /// uploads that never finished, and bytes whose record was never written.
    pub async fn open(root: impl Into<PathBuf>) -> StorageResult<Self> {
        let backend = Self {
            // Absolute, so a path handed to another process means the same file there.
            root: std::path::absolute(root.into())?,
            job_lock: Mutex::new(()),
            latest_sessions: std::sync::Mutex::default(),
        };
        let incoming = backend.incoming_dir();
        if fs::try_exists(&incoming).await? {
            fs::remove_dir_all(&incoming).await?;
        }
        fs::create_dir_all(&incoming).await?;
        fs::create_dir_all(backend.jobs_dir()).await?;
        fs::create_dir_all(backend.keys_dir()).await?;
        fs::create_dir_all(backend.endpoints_dir()).await?;
        fs::create_dir_all(backend.attempts_dir()).await?;
        fs::create_dir_all(backend.sessions_dir()).await?;
        backend.remove_old_claims().await?;
        for bucket in Bucket::ALL {
            let dir = backend.bucket_dir(bucket);
            fs::create_dir_all(&dir).await?;
            backend.remove_unrecorded_bytes(&dir).await?;
        }
        Ok(backend)
    }

    async fn remove_unrecorded_bytes(&self, dir: &Path) -> StorageResult<()> {
        let mut entries = fs::read_dir(dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if path.extension().is_none() && !fs::try_exists(path.with_extension("json")).await? {
                tracing::warn!(path = %path.display(), "removing a file whose upload never finished");
                fs::remove_file(&path).await?;
            }
        }
        Ok(())
    }

    fn incoming_dir(&self) -> PathBuf {
        self.root.join("incoming")
    }

    fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }

    fn endpoints_dir(&self) -> PathBuf {
        self.root.join("webhooks")
    }

    fn attempts_dir(&self) -> PathBuf {
        self.root.join("webhook-attempts")
    }

    fn attempts_path(&self, endpoint_id: ObjectId) -> PathBuf {
        self.attempts_dir()
            .join(format!("{}.json", endpoint_id.to_hex()))
    }

    fn endpoint_path(&self, id: ObjectId) -> PathBuf {
        self.endpoints_dir().join(format!("{}.json", id.to_hex()))
    }

    fn sessions_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    fn session_path(&self, id: ObjectId) -> PathBuf {
        self.sessions_dir().join(format!("{}.json", id.to_hex()))
    }

    fn session_progress_path(&self, id: ObjectId) -> PathBuf {
        self.sessions_dir()
            .join(format!("{}.progress", id.to_hex()))
    }

    fn session_bytes_path(&self, id: ObjectId) -> PathBuf {
        self.sessions_dir().join(id.to_hex())
    }

    fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    fn claim_path(&self, id: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(id.as_bytes()));
        self.keys_dir().join(format!("{digest}.json"))
    }

    async fn remove_old_claims(&self) -> StorageResult<()> {
        let claims: Vec<KeyClaim> = read_all_json(&self.keys_dir()).await?;
        let now = DateTime::now();
        for claim in claims {
            if claim.is_older_than(IDEMPOTENCY_WINDOW, now) {
                remove_if_there(&self.claim_path(&claim.id)).await?;
            }
        }
        Ok(())
    }

    fn bucket_dir(&self, bucket: Bucket) -> PathBuf {
        self.root.join(bucket.name())
    }

    pub(super) fn bytes_path(&self, bucket: Bucket, id: ObjectId) -> PathBuf {
        self.bucket_dir(bucket).join(id.to_hex())
    }

    fn record_path(&self, bucket: Bucket, id: ObjectId) -> PathBuf {
        self.bucket_dir(bucket)
            .join(format!("{}.json", id.to_hex()))
    }

    fn job_path(&self, id: ObjectId) -> PathBuf {
        self.jobs_dir().join(format!("{}.json", id.to_hex()))
    }

    async fn write_record(&self, path: &Path, value: &impl Serialize) -> StorageResult<()> {
        write_json_atomically(&self.incoming_dir(), path, value).await
    }

    pub(super) async fn ping(&self) -> StorageResult<()> {
        fs::metadata(&self.root)
            .await
            .map(|_| ())
            .map_err(|error| StorageError::DiskUnavailable("the data directory", error))
    }

    pub(super) async fn begin_upload(&self, file: NewFile) -> StorageResult<LocalUpload> {
        let path = self.incoming_dir().join(file.id.to_hex());
        let out = Arc::new(fs::File::create(&path).await?.into_std().await);
        Ok(LocalUpload {
            out,
            path,
            bytes_path: self.bytes_path(file.bucket, file.id),
            record_path: self.record_path(file.bucket, file.id),
            incoming: self.incoming_dir(),
            file,
        })
    }

    pub(super) async fn find_file(
        &self,
        bucket: Bucket,
        id: ObjectId,
    ) -> StorageResult<Option<FileRecord>> {
        read_json(&self.record_path(bucket, id)).await
    }

    pub(super) async fn read_file(
        &self,
        file: &FileRecord,
        offset: u64,
        length: u64,
    ) -> StorageResult<ByteStream> {
        read_range(&self.bytes_path(file.bucket, file.id), offset, length).await
    }

    pub(super) async fn delete_file(&self, bucket: Bucket, id: ObjectId) -> StorageResult<bool> {
        // The record goes first: from then on the file is not there, whatever happens next.
        match fs::remove_file(self.record_path(bucket, id)).await {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error.into()),
        }
        match fs::remove_file(self.bytes_path(bucket, id)).await {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(true),
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn list_files(
        &self,
        bucket: Bucket,
        page: &PageQuery,
    ) -> StorageResult<Vec<FileRecord>> {
        let files: Vec<FileRecord> = read_all_json(&self.bucket_dir(bucket)).await?;
        Ok(one_page(files, page, |file| {
            (&file.owner_id, file.uploaded_at, file.id)
        }))
    }

    pub(super) async fn list_job_files(
        &self,
        bucket: Bucket,
        owner_id: &str,
        job_id: &str,
    ) -> StorageResult<Vec<FileRecord>> {
        let mut files: Vec<FileRecord> = read_all_json(&self.bucket_dir(bucket)).await?;
        files.retain(|file| file.owner_id == owner_id && file.job_id == job_id);
        Ok(files)
    }

    pub(super) async fn insert_job(&self, job: &JobRecord) -> StorageResult<()> {
        let _guard = self.job_lock.lock().await;
        self.write_record(&self.job_path(job.id), job).await
    }

    pub(super) async fn find_job(&self, id: ObjectId) -> StorageResult<Option<JobRecord>> {
        read_json(&self.job_path(id)).await
    }

    pub(super) async fn list_jobs(&self, page: &PageQuery) -> StorageResult<Vec<JobRecord>> {
        let jobs: Vec<JobRecord> = read_all_json(&self.jobs_dir()).await?;
        Ok(one_page(jobs, page, |job| {
            (&job.owner_id, job.created_at, job.id)
        }))
    }

    pub(super) async fn replace_job(
        &self,
        job: &JobRecord,
        expected_revision: i64,
    ) -> StorageResult<bool> {
        let _guard = self.job_lock.lock().await;
        let path = self.job_path(job.id);
        match read_json::<JobRecord>(&path).await? {
            Some(current) if current.revision == expected_revision => {
                self.write_record(&path, job).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(super) async fn delete_job(&self, id: ObjectId) -> StorageResult<bool> {
        let _guard = self.job_lock.lock().await;
        remove_if_there(&self.job_path(id)).await
    }

    pub(super) async fn claim_key(
        &self,
        claim: &KeyClaim,
        window: std::time::Duration,
    ) -> StorageResult<Option<KeyClaim>> {
        let _guard = self.job_lock.lock().await;
        let path = self.claim_path(&claim.id);
        if let Some(standing) = read_json::<KeyClaim>(&path).await?
            && !standing.is_older_than(window, DateTime::now())
        {
            return Ok(Some(standing));
        }
        self.write_record(&path, claim).await?;
        Ok(None)
    }

    pub(super) async fn release_key(&self, id: &str, job_id: ObjectId) -> StorageResult<()> {
        let _guard = self.job_lock.lock().await;
        let path = self.claim_path(id);
        if read_json::<KeyClaim>(&path)
            .await?
            .is_some_and(|standing| standing.job_id == job_id)
        {
            remove_if_there(&path).await?;
        }
        Ok(())
    }
}

/// Webhook endpoints, under the same lock as jobs.
impl LocalBackend {
    pub(super) async fn insert_endpoint(
        &self,
        endpoint: &EndpointRecord,
        limit: usize,
    ) -> StorageResult<bool> {
        let _guard = self.job_lock.lock().await;
        if self.list_endpoints(&endpoint.owner_id).await?.len() >= limit {
            return Ok(false);
        }
        self.write_record(&self.endpoint_path(endpoint.id), endpoint)
            .await?;
        Ok(true)
    }

    pub(super) async fn find_endpoint(
        &self,
        id: ObjectId,
    ) -> StorageResult<Option<EndpointRecord>> {
        read_json(&self.endpoint_path(id)).await
    }

    pub(super) async fn list_endpoints(
        &self,
        owner_id: &str,
    ) -> StorageResult<Vec<EndpointRecord>> {
        let mut endpoints: Vec<EndpointRecord> = read_all_json(&self.endpoints_dir()).await?;
        endpoints.retain(|endpoint| endpoint.owner_id == owner_id);
        endpoints.sort_by_key(|endpoint| std::cmp::Reverse((endpoint.created_at, endpoint.id)));
        Ok(endpoints)
    }

    pub(super) async fn replace_endpoint(
        &self,
        endpoint: &EndpointRecord,
        expected_revision: i64,
    ) -> StorageResult<bool> {
        let _guard = self.job_lock.lock().await;
        let path = self.endpoint_path(endpoint.id);
        match read_json::<EndpointRecord>(&path).await? {
            Some(current) if current.revision == expected_revision => {
                self.write_record(&path, endpoint).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(super) async fn delete_endpoint(&self, id: ObjectId) -> StorageResult<bool> {
        let _guard = self.job_lock.lock().await;
        remove_if_there(&self.attempts_path(id)).await?;
        remove_if_there(&self.endpoint_path(id)).await
    }

    /// The log is one file per endpoint, rewritten whole: at most [`KEPT_ATTEMPTS`] small
    /// records.
    ///
    /// [`KEPT_ATTEMPTS`]: crate::model::KEPT_ATTEMPTS
    pub(super) async fn insert_attempt(
        &self,
        attempt: &AttemptRecord,
        keep: usize,
    ) -> StorageResult<()> {
        let _guard = self.job_lock.lock().await;
        let path = self.attempts_path(attempt.endpoint_id);
        let mut attempts: Vec<AttemptRecord> = read_json(&path).await?.unwrap_or_default();
        attempts.insert(0, attempt.clone());
        attempts.truncate(keep);
        self.write_record(&path, &attempts).await
    }

    pub(super) async fn list_attempts(
        &self,
        endpoint_id: ObjectId,
    ) -> StorageResult<Vec<AttemptRecord>> {
        Ok(read_json(&self.attempts_path(endpoint_id))
            .await?
            .unwrap_or_default())
    }
}

/// Resumable upload sessions: a record and a file of bytes each, the record under the same lock
/// as jobs.
impl LocalBackend {
    pub(super) async fn insert_session(&self, session: &SessionRecord) -> StorageResult<()> {
        let _guard = self.job_lock.lock().await;
        self.write_record(&self.session_path(session.id), session)
            .await
    }

    pub(super) async fn find_session(&self, id: ObjectId) -> StorageResult<Option<SessionRecord>> {
        if let Some(latest) = self.latest_session(id) {
            return Ok(Some(latest));
        }
        match read_json(&self.session_path(id)).await? {
            Some(mut session) => {
                self.bring_up_to_date(&mut session).await?;
                Ok(Some(session))
            }
            None => Ok(None),
        }
    }

    /// The session as changed by its latest lease or append, if that is newer than its record.
    fn latest_session(&self, id: ObjectId) -> Option<SessionRecord> {
        self.latest_sessions().get(&id).cloned()
    }

    fn latest_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectId, SessionRecord>> {
        self.latest_sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `session`, read from its record, as its latest change left it: in memory while this
    /// process runs; after a restart, as far as its appends' progress on disk says.
    async fn bring_up_to_date(&self, session: &mut SessionRecord) -> StorageResult<()> {
        if let Some(latest) = self.latest_session(session.id) {
            *session = latest;
            return Ok(());
        }
        let path = self.session_progress_path(session.id);
        if let Some(progress) = tokio::task::spawn_blocking(move || progress::read(&path)).await?? {
            progress.apply_to(session);
        }
        Ok(())
    }

    pub(super) async fn replace_session(
        &self,
        session: &SessionRecord,
        expected_revision: i64,
    ) -> StorageResult<bool> {
        let _guard = self.job_lock.lock().await;
        let path = self.session_path(session.id);
        match self.find_session(session.id).await? {
            Some(current) if current.revision == expected_revision => {
                if current.differs_only_in_lease(session) {
                    // Nothing a crash would need.
                } else if current.differs_only_in_progress(session) {
                    let progress_path = self.session_progress_path(session.id);
                    let progress = progress::Progress::of(session);
                    tokio::task::spawn_blocking(move || progress::write(&progress_path, progress))
                        .await??;
                } else {
                    self.write_record(&path, session).await?;
                    self.latest_sessions().remove(&session.id);
                    return Ok(true);
                }
                self.latest_sessions().insert(session.id, session.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(super) async fn delete_session(
        &self,
        id: ObjectId,
        expected_revision: i64,
    ) -> StorageResult<bool> {
        let _guard = self.job_lock.lock().await;
        let path = self.session_path(id);
        match self.find_session(id).await? {
            Some(current) if current.revision == expected_revision => {
                // The record first: from then on the session is not there, whatever happens.
                remove_if_there(&path).await?;
                self.latest_sessions().remove(&id);
                remove_if_there(&self.session_progress_path(id)).await?;
                remove_if_there(&self.session_bytes_path(id)).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(super) async fn expired_sessions(
        &self,
        now: DateTime,
    ) -> StorageResult<Vec<SessionRecord>> {
        let mut sessions: Vec<SessionRecord> = read_all_json(&self.sessions_dir()).await?;
        for session in &mut sessions {
            self.bring_up_to_date(session).await?;
        }
        sessions.retain(|session| session.is_expired(now));
        Ok(sessions)
    }

    pub(super) async fn open_session_writer(
        &self,
        session: &SessionRecord,
    ) -> StorageResult<LocalSessionWriter> {
        let mut out = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.session_bytes_path(session.id))
            .await?;
        // Whatever lies past the offset was never kept (an append that broke before it could
        // record its bytes, or one that was refused): it goes.
        out.set_len(session.offset).await?;
        out.seek(SeekFrom::Start(session.offset)).await?;
        LocalSessionWriter::new(out, session.offset).await
    }

    pub(super) async fn read_session(
        &self,
        session: &SessionRecord,
        offset: u64,
        length: u64,
    ) -> StorageResult<ByteStream> {
        read_range(&self.session_bytes_path(session.id), offset, length).await
    }

    /// Moves the session's bytes into the videos bucket and writes their record: the file is
    /// there once the record is. Done already, it returns the record.
    pub(super) async fn complete_session(
        &self,
        session: &SessionRecord,
        sha256: String,
    ) -> StorageResult<FileRecord> {
        let record_path = self.record_path(Bucket::Videos, session.id);
        if let Some(done) = read_json::<FileRecord>(&record_path).await? {
            return Ok(done);
        }
        let bytes_path = self.bytes_path(Bucket::Videos, session.id);
        let partial = self.session_bytes_path(session.id);
        if fs::try_exists(&partial).await? {
            let out = fs::OpenOptions::new().write(true).open(&partial).await?;
            out.set_len(session.length).await?;
            out.sync_all().await?;
            drop(out);
            fs::rename(&partial, &bytes_path).await?;
        } else if !fs::try_exists(&bytes_path).await? {
            return Err(StorageError::Internal(format!(
                "the bytes of upload session {} are gone",
                session.id
            )));
        }
        let record = FileRecord {
            id: session.id,
            bucket: Bucket::Videos,
            owner_id: session.owner_id.clone(),
            filename: session.filename.clone(),
            content_type: session.content_type.clone(),
            job_id: String::new(),
            size: session.length,
            sha256,
            uploaded_at: DateTime::now(),
        };
        self.write_record(&record_path, &record).await?;
        Ok(record)
    }
}

/// Appends to a session's file of bytes. Each write also starts the kernel writing those bytes
/// to disk, so the durable point at an append's end waits only for what is still on its way
/// (an append in 5 MiB PATCHes otherwise waited for every byte of a PATCH to reach the disk
/// after the last had arrived). Starting writeback commits no journal and flushes no device
/// cache: one `fdatasync` per append does that, where flushing in the background as the bytes
/// came in did it several times per PATCH.
#[derive(Debug)]
pub struct LocalSessionWriter {
    /// Written on blocking threads.
    out: Arc<std::fs::File>,
    /// Where the next write goes.
    position: u64,
}

impl LocalSessionWriter {
    async fn new(out: fs::File, position: u64) -> StorageResult<Self> {
        Ok(Self {
            out: Arc::new(out.into_std().await),
            position,
        })
    }

    pub(super) async fn write(&mut self, batch: Batch) -> StorageResult<()> {
        self.append(batch, false).await
    }

    pub(super) async fn sync(&mut self, batch: Batch) -> StorageResult<()> {
        self.append(batch, true).await
    }

    /// Writes `batch`, then flushes the file when `durable`, or else starts the writeback of
    /// the batch's bytes: in one blocking task either way.
    async fn append(&mut self, batch: Batch, durable: bool) -> StorageResult<()> {
        let (at, length) = (self.position, batch.len() as u64);
        on_blocking_thread(&self.out, move |file| {
            batch.write_to(file)?;
            if durable {
                file.sync_data()
            } else {
                start_writeback(file, at, length);
                Ok(())
            }
        })
        .await?;
        self.position += length;
        Ok(())
    }
}

/// Has the kernel start writing `length` bytes of `file` from `at` to disk, without waiting.
/// On Linux, `POSIX_FADV_DONTNEED` starts writeback of the range's dirty pages (it then drops
/// only pages already clean, so bytes just written stay cached); `sync_file_range`, made for
/// this, has no wrapper outside `unsafe` code. It is advice: where it does nothing or fails,
/// the `fdatasync` at the durable point writes everything, as it must anyway.
fn start_writeback(file: &std::fs::File, at: u64, length: u64) {
    if let Some(length) = std::num::NonZeroU64::new(length)
        && let Err(error) =
            rustix::fs::fadvise(file, at, Some(length), rustix::fs::Advice::DontNeed)
    {
        tracing::debug!(%error, "could not start writeback");
    }
}

/// `length` bytes of the file at `path` from `offset`, as they are read.
async fn read_range(path: &Path, offset: u64, length: u64) -> StorageResult<ByteStream> {
    let mut bytes = fs::File::open(path).await?;
    bytes.seek(SeekFrom::Start(offset)).await?;
    let stream = ReaderStream::with_capacity(bytes.take(length), READ_CHUNK_BYTES)
        .map(|chunk| chunk.map_err(StorageError::from));
    Ok(stream.boxed())
}

/// Removes the file at `path`; `false` if there was none.
async fn remove_if_there(path: &Path) -> StorageResult<bool> {
    match fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Runs `work` on `file` on a blocking thread (a write or a flush) and waits for it.
async fn on_blocking_thread<T: Send + 'static>(
    file: &Arc<std::fs::File>,
    work: impl FnOnce(&std::fs::File) -> std::io::Result<T> + Send + 'static,
) -> StorageResult<T> {
    let file = Arc::clone(file);
    Ok(tokio::task::spawn_blocking(move || work(&file)).await??)
}

/// A file being written into the `incoming` directory.
#[derive(Debug)]
pub struct LocalUpload {
    out: Arc<std::fs::File>,
    path: PathBuf,
    bytes_path: PathBuf,
    record_path: PathBuf,
    incoming: PathBuf,
    file: NewFile,
}

impl LocalUpload {
    pub(super) async fn write(&mut self, batch: Batch) -> StorageResult<()> {
        on_blocking_thread(&self.out, move |file| batch.write_to(file)).await
    }

    pub(super) async fn commit(self, size: u64, sha256: String) -> StorageResult<FileRecord> {
        on_blocking_thread(&self.out, std::fs::File::sync_all).await?;
        fs::rename(&self.path, &self.bytes_path).await?;
        let record = self.file.into_record(size, sha256);
        write_json_atomically(&self.incoming, &self.record_path, &record).await?;
        Ok(record)
    }

    pub(super) async fn abort(self) -> StorageResult<()> {
        drop(self.out);
        match fs::remove_file(&self.path).await {
            Err(error) if error.kind() != ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }
}

/// Writes `value` as JSON at `path` so that readers see the old file or the new one: first to
/// a temporary file in `scratch` (on the same file system), flushed, then renamed into place.
async fn write_json_atomically(
    scratch: &Path,
    path: &Path,
    value: &impl Serialize,
) -> StorageResult<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|source| StorageError::Record {
        path: path.to_owned(),
        source,
    })?;
    let temporary = scratch.join(format!("{}.json", ObjectId::new().to_hex()));
    let path = path.to_owned();
    // One blocking task for the five steps: an upload session's record is written at the end
    // of every append, and each hop to a blocking thread is a wake-up and a switch.
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&json)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, &path)?;
        sync_parent_dir(&path)
    })
    .await??;
    Ok(())
}

async fn read_json<T: DeserializeOwned>(path: &Path) -> StorageResult<Option<T>> {
    match fs::read(path).await {
        Ok(json) => {
            serde_json::from_slice(&json)
                .map(Some)
                .map_err(|source| StorageError::Record {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The records of `page`, newest first; `key` gives a record's owner, time and id.
fn one_page<T>(
    mut records: Vec<T>,
    page: &PageQuery,
    key: impl Fn(&T) -> (&String, DateTime, ObjectId),
) -> Vec<T> {
    records.retain(|record| {
        let (owner, at, id) = key(record);
        page.owner.sees(owner) && page.after.is_none_or(|after| after.precedes(at, id))
    });
    records.sort_by(|a, b| {
        let (_, a_at, a_id) = key(a);
        let (_, b_at, b_id) = key(b);
        (b_at, b_id).cmp(&(a_at, a_id))
    });
    records.truncate(page.limit);
    records
}

async fn read_all_json<T: DeserializeOwned>(dir: &Path) -> StorageResult<Vec<T>> {
    let mut records = Vec::new();
    let mut entries = fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "json")
            && let Some(record) = read_json(&path).await?
        {
            records.push(record);
        }
    }
    Ok(records)
}

/// Flushes the directory holding `path`, so a rename into it survives a power cut.
fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
