//! Where bytes and job records live. Two backends answer the same questions: MongoDB (files in
//! GridFS, jobs in a collection) and a local directory (the embedded default). The gRPC service
//! sits on top and holds every rule (ownership, size limit, checksums, job life cycle), so the
//! backends only store, find and compare-and-set.

pub mod local;
pub mod mongo;

use crate::batch::Batch;
use crate::error::StorageResult;
use crate::model::{
    AttemptRecord, Bucket, DateTime, EndpointRecord, FileRecord, JobRecord, KeyClaim, NewFile,
    ObjectId, PageQuery, session::SessionRecord,
};
use bytes::Bytes;
use futures::stream::BoxStream;

/// The bytes of a file (or a range of it), in chunks of a few hundred KiB.
pub type ByteStream = BoxStream<'static, StorageResult<Bytes>>;

/// The backend chosen by configuration.
#[derive(Debug)]
pub enum Backend {
    /// MongoDB: GridFS buckets and a `jobs` collection.
    Mongo(mongo::MongoBackend),
    /// A local directory.
    Local(local::LocalBackend),
}

/// An upload in progress: bytes go in, then it is committed (the file appears whole) or
/// aborted (nothing is left).
#[derive(Debug)]
pub enum UploadSink {
    /// Into GridFS.
    Mongo(mongo::GridFsUpload),
    /// Into a file in the local directory.
    Local(local::LocalUpload),
}

impl Backend {
    /// Whether the backend answers.
    pub async fn ping(&self) -> StorageResult<()> {
        match self {
            Backend::Mongo(mongo) => mongo.ping().await,
            Backend::Local(local) => local.ping().await,
        }
    }

    /// Starts storing a new file.
    pub async fn begin_upload(&self, file: NewFile) -> StorageResult<UploadSink> {
        Ok(match self {
            Backend::Mongo(mongo) => UploadSink::Mongo(mongo.begin_upload(file).await?),
            Backend::Local(local) => UploadSink::Local(local.begin_upload(file).await?),
        })
    }

    /// A complete file's record, whoever owns it.
    pub async fn find_file(
        &self,
        bucket: Bucket,
        id: ObjectId,
    ) -> StorageResult<Option<FileRecord>> {
        match self {
            Backend::Mongo(mongo) => mongo.find_file(bucket, id).await,
            Backend::Local(local) => local.find_file(bucket, id).await,
        }
    }

    /// `length` bytes of `file` from `offset` (the range is already checked).
    pub async fn read_file(
        &self,
        file: &FileRecord,
        offset: u64,
        length: u64,
    ) -> StorageResult<ByteStream> {
        match self {
            Backend::Mongo(mongo) => mongo.read_file(file, offset, length).await,
            Backend::Local(local) => local.read_file(file, offset, length).await,
        }
    }

    /// Where `file`'s bytes lie on this machine's disk, as an absolute path, for a caller on the
    /// same machine that reads them in place; `None` where the backend keeps no such file
    /// (GridFS).
    pub fn local_path(&self, file: &FileRecord) -> Option<std::path::PathBuf> {
        match self {
            Backend::Mongo(_) => None,
            Backend::Local(local) => Some(local.bytes_path(file.bucket, file.id)),
        }
    }

    /// Removes a file; `false` if there was none.
    pub async fn delete_file(&self, bucket: Bucket, id: ObjectId) -> StorageResult<bool> {
        match self {
            Backend::Mongo(mongo) => mongo.delete_file(bucket, id).await,
            Backend::Local(local) => local.delete_file(bucket, id).await,
        }
    }

    /// The complete files of a bucket that `page` asks for, newest first.
    pub async fn list_files(
        &self,
        bucket: Bucket,
        page: &PageQuery,
    ) -> StorageResult<Vec<FileRecord>> {
        match self {
            Backend::Mongo(mongo) => mongo.list_files(bucket, page).await,
            Backend::Local(local) => local.list_files(bucket, page).await,
        }
    }

    /// An owner's complete files in a bucket that were made for job `job_id`.
    pub async fn list_job_files(
        &self,
        bucket: Bucket,
        owner_id: &str,
        job_id: &str,
    ) -> StorageResult<Vec<FileRecord>> {
        match self {
            Backend::Mongo(mongo) => mongo.list_job_files(bucket, owner_id, job_id).await,
            Backend::Local(local) => local.list_job_files(bucket, owner_id, job_id).await,
        }
    }

    /// Stores a new job.
    pub async fn insert_job(&self, job: &JobRecord) -> StorageResult<()> {
        match self {
            Backend::Mongo(mongo) => mongo.insert_job(job).await,
            Backend::Local(local) => local.insert_job(job).await,
        }
    }

    /// A job, whoever owns it.
    pub async fn find_job(&self, id: ObjectId) -> StorageResult<Option<JobRecord>> {
        match self {
            Backend::Mongo(mongo) => mongo.find_job(id).await,
            Backend::Local(local) => local.find_job(id).await,
        }
    }

    /// The jobs that `page` asks for, newest first.
    pub async fn list_jobs(&self, page: &PageQuery) -> StorageResult<Vec<JobRecord>> {
        match self {
            Backend::Mongo(mongo) => mongo.list_jobs(page).await,
            Backend::Local(local) => local.list_jobs(page).await,
        }
    }

    /// Stores `job` only if the stored record's revision is still `expected_revision`;
    /// `false` if someone else changed (or removed) it first.
    pub async fn replace_job(
        &self,
        job: &JobRecord,
        expected_revision: i64,
    ) -> StorageResult<bool> {
        match self {
            Backend::Mongo(mongo) => mongo.replace_job(job, expected_revision).await,
            Backend::Local(local) => local.replace_job(job, expected_revision).await,
        }
    }

    /// Removes a job record; `false` if there was none.
    pub async fn delete_job(&self, id: ObjectId) -> StorageResult<bool> {
        match self {
            Backend::Mongo(mongo) => mongo.delete_job(id).await,
            Backend::Local(local) => local.delete_job(id).await,
        }
    }

    /// Stores `claim` unless a claim on the same key younger than `window` stands (an older
    /// one is replaced): `None` when `claim` now stands, else the standing claim. Atomic: of
    /// two requests claiming one key at once, one gets `None`.
    pub async fn claim_key(
        &self,
        claim: &KeyClaim,
        window: std::time::Duration,
    ) -> StorageResult<Option<KeyClaim>> {
        match self {
            Backend::Mongo(mongo) => mongo.claim_key(claim, window).await,
            Backend::Local(local) => local.claim_key(claim, window).await,
        }
    }

    /// Removes the claim `id` if it still names `job_id`.
    pub async fn release_key(&self, id: &str, job_id: ObjectId) -> StorageResult<()> {
        match self {
            Backend::Mongo(mongo) => mongo.release_key(id, job_id).await,
            Backend::Local(local) => local.release_key(id, job_id).await,
        }
    }
}

/// Webhook endpoints.
impl Backend {
    /// Stores a new endpoint unless its owner has `limit` already: `false` then.
    pub async fn insert_endpoint(
        &self,
        endpoint: &EndpointRecord,
        limit: usize,
    ) -> StorageResult<bool> {
        match self {
            Backend::Mongo(mongo) => mongo.insert_endpoint(endpoint, limit).await,
            Backend::Local(local) => local.insert_endpoint(endpoint, limit).await,
        }
    }

    /// An endpoint, whoever owns it.
    pub async fn find_endpoint(&self, id: ObjectId) -> StorageResult<Option<EndpointRecord>> {
        match self {
            Backend::Mongo(mongo) => mongo.find_endpoint(id).await,
            Backend::Local(local) => local.find_endpoint(id).await,
        }
    }

    /// An owner's endpoints, newest first.
    pub async fn list_endpoints(&self, owner_id: &str) -> StorageResult<Vec<EndpointRecord>> {
        match self {
            Backend::Mongo(mongo) => mongo.list_endpoints(owner_id).await,
            Backend::Local(local) => local.list_endpoints(owner_id).await,
        }
    }

    /// Stores `endpoint` only if the stored record's revision is still `expected_revision`.
    pub async fn replace_endpoint(
        &self,
        endpoint: &EndpointRecord,
        expected_revision: i64,
    ) -> StorageResult<bool> {
        match self {
            Backend::Mongo(mongo) => mongo.replace_endpoint(endpoint, expected_revision).await,
            Backend::Local(local) => local.replace_endpoint(endpoint, expected_revision).await,
        }
    }

    /// Removes an endpoint and its attempt log; `false` if there was none.
    pub async fn delete_endpoint(&self, id: ObjectId) -> StorageResult<bool> {
        match self {
            Backend::Mongo(mongo) => mongo.delete_endpoint(id).await,
            Backend::Local(local) => local.delete_endpoint(id).await,
        }
    }

    /// Adds an attempt to its endpoint's log, keeping the newest `keep`.
    pub async fn insert_attempt(&self, attempt: &AttemptRecord, keep: usize) -> StorageResult<()> {
        match self {
            Backend::Mongo(mongo) => mongo.insert_attempt(attempt, keep).await,
            Backend::Local(local) => local.insert_attempt(attempt, keep).await,
        }
    }

    /// An endpoint's logged attempts, newest first.
    pub async fn list_attempts(&self, endpoint_id: ObjectId) -> StorageResult<Vec<AttemptRecord>> {
        match self {
            Backend::Mongo(mongo) => mongo.list_attempts(endpoint_id).await,
            Backend::Local(local) => local.list_attempts(endpoint_id).await,
        }
    }
}

/// Resumable upload sessions.
impl Backend {
    /// Stores a new session.
    pub async fn insert_session(&self, session: &SessionRecord) -> StorageResult<()> {
        match self {
            Backend::Mongo(mongo) => mongo.insert_session(session).await,
            Backend::Local(local) => local.insert_session(session).await,
        }
    }

    /// A session, whoever owns it.
    pub async fn find_session(&self, id: ObjectId) -> StorageResult<Option<SessionRecord>> {
        match self {
            Backend::Mongo(mongo) => mongo.find_session(id).await,
            Backend::Local(local) => local.find_session(id).await,
        }
    }

    /// Stores `session` only if the stored record's revision is still `expected_revision`;
    /// with `tail`, what the append's last durable point left for the record to keep (a
    /// change that moves the offset must give it; any other leaves the tail as it was).
    pub async fn replace_session(
        &self,
        session: &SessionRecord,
        expected_revision: i64,
        tail: Option<&KeptTail>,
    ) -> StorageResult<bool> {
        match self {
            Backend::Mongo(mongo) => {
                mongo
                    .replace_session(session, expected_revision, tail)
                    .await
            }
            // The session's file holds every byte.
            Backend::Local(local) => local.replace_session(session, expected_revision).await,
        }
    }

    /// Removes a session (and, unless it is complete, its bytes) if its revision is still
    /// `expected_revision`; `false` otherwise.
    pub async fn delete_session(
        &self,
        id: ObjectId,
        expected_revision: i64,
    ) -> StorageResult<bool> {
        match self {
            Backend::Mongo(mongo) => mongo.delete_session(id, expected_revision).await,
            Backend::Local(local) => local.delete_session(id, expected_revision).await,
        }
    }

    /// Every session past its expiry at `now`.
    pub async fn expired_sessions(&self, now: DateTime) -> StorageResult<Vec<SessionRecord>> {
        match self {
            Backend::Mongo(mongo) => mongo.expired_sessions(now).await,
            Backend::Local(local) => local.expired_sessions(now).await,
        }
    }

    /// Starts writing a session's bytes at its offset (what lies past it is dropped);
    /// `session` as an append just leased it.
    pub async fn open_session_writer(
        &self,
        session: &SessionRecord,
    ) -> StorageResult<SessionWriter> {
        Ok(match self {
            Backend::Mongo(mongo) => {
                SessionWriter::Mongo(mongo.open_session_writer(session).await?)
            }
            Backend::Local(local) => {
                SessionWriter::Local(local.open_session_writer(session).await?)
            }
        })
    }

    /// Takes back `writer` after an append that kept every byte it wrote; `session` is the
    /// record as that append left it. The GridFS backend remembers where the chunks stand, so
    /// the next append through this replica need not read them back.
    pub fn writer_done(&self, writer: SessionWriter, session: &SessionRecord) {
        if let (Backend::Mongo(mongo), SessionWriter::Mongo(writer)) = (self, writer) {
            mongo.remember_tail(writer, session);
        }
    }

    /// `length` bytes of a session's kept bytes from `offset`.
    pub async fn read_session(
        &self,
        session: &SessionRecord,
        offset: u64,
        length: u64,
    ) -> StorageResult<ByteStream> {
        match self {
            Backend::Mongo(mongo) => mongo.read_session(session, offset, length).await,
            Backend::Local(local) => local.read_session(session, offset, length).await,
        }
    }

    /// Makes a session whose every byte is in a file in the videos bucket, under its id, with
    /// digest `sha256`; the file's record (the same one when it exists already).
    pub async fn complete_session(
        &self,
        session: &SessionRecord,
        sha256: String,
    ) -> StorageResult<FileRecord> {
        match self {
            Backend::Mongo(mongo) => mongo.complete_session(session, sha256).await,
            Backend::Local(local) => local.complete_session(session, sha256).await,
        }
    }
}

/// An append's bytes on their way into a session.
#[derive(Debug)]
pub enum SessionWriter {
    /// Into GridFS chunks.
    Mongo(mongo::MongoSessionWriter),
    /// Into the session's local file.
    Local(local::LocalSessionWriter),
}

impl SessionWriter {
    /// Appends bytes (kept only once [`SessionWriter::sync`] returns).
    pub async fn write(&mut self, batch: Batch) -> StorageResult<()> {
        match self {
            SessionWriter::Mongo(writer) => writer.write(&batch).await,
            SessionWriter::Local(writer) => writer.write(batch).await,
        }
    }

    /// Appends `batch` and makes every byte written so far durable (together, because GridFS
    /// then stores the last bytes with the same command as the ones before them), but for
    /// what the session's record must keep; and makes `change` to the record with them where
    /// the backend can (GridFS on a server with `bulkWrite`, in the same command). The bytes
    /// are kept once the record is stored with the tail: [`Synced`] says whether it is.
    pub async fn sync(
        &mut self,
        batch: Batch,
        change: Option<RecordChange>,
    ) -> StorageResult<Synced> {
        match self {
            SessionWriter::Mongo(writer) => writer.sync(&batch, change).await,
            SessionWriter::Local(writer) => {
                writer.sync(batch).await?;
                Ok(Synced::Unrecorded(KeptTail::default()))
            }
        }
    }
}

/// A change to a session's record that a durable point makes with its bytes: the record as
/// it is to be, if it still has `expected_revision` (a compare-and-set).
#[derive(Debug, Clone)]
pub struct RecordChange {
    pub session: SessionRecord,
    pub expected_revision: i64,
}

/// How a durable point ([`SessionWriter::sync`]) left the session's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// Changed as asked, with the bytes: they are kept, and this is the record as stored.
    Recorded(SessionRecord),
    /// Not changed (the backend writes the record on its own, or the record had moved on):
    /// the bytes are kept once it is stored with this tail.
    Unrecorded(KeptTail),
}

/// What a session's record keeps of its bytes, as a durable point left them: on GridFS, the
/// bytes of the partly filled last chunk, which would otherwise be a chunk document of their
/// own, stored at every durable point and again once the chunk fills (the record is written
/// at every durable point anyway). Nothing when every byte is in the chunks or the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptTail(Option<Vec<u8>>);

impl KeptTail {
    /// The record keeps `bytes`.
    fn in_record(bytes: Vec<u8>) -> Self {
        Self(Some(bytes))
    }

    /// The bytes the record keeps, if any.
    fn bytes(&self) -> Option<&[u8]> {
        self.0.as_deref()
    }
}

impl UploadSink {
    /// Appends bytes.
    pub async fn write(&mut self, batch: Batch) -> StorageResult<()> {
        match self {
            UploadSink::Mongo(upload) => upload.write(&batch).await,
            UploadSink::Local(upload) => upload.write(batch).await,
        }
    }

    /// Makes the file visible, whole, with its size and checksum.
    pub async fn commit(self, size: u64, sha256: String) -> StorageResult<FileRecord> {
        match self {
            UploadSink::Mongo(upload) => upload.commit(size, sha256).await,
            UploadSink::Local(upload) => upload.commit(size, sha256).await,
        }
    }

    /// Removes whatever was written.
    pub async fn abort(self) -> StorageResult<()> {
        match self {
            UploadSink::Mongo(upload) => upload.abort().await,
            UploadSink::Local(upload) => upload.abort().await,
        }
    }
}
