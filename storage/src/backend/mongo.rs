//! The MongoDB backend: files in GridFS (one bucket each for videos and MP3s, owner, content
//! type and checksum in the file's metadata), jobs in a `jobs` collection, and the claims on
//! idempotency keys in `idempotency_keys` (unique by `_id`; those past their window are removed
//! at start-up).
//!
//! Uploads go through the driver's GridFS upload stream. The checksum is only known at the end,
//! after the driver wrote the files document, so it is set in a second step and a file without
//! one is treated as not there (an upload that died between the two steps stays invisible).
//! Downloads read the chunks collection directly: the driver's download stream always starts at
//! byte 0, and a ranged request must not read through everything before its range.

use super::{ByteStream, KeptTail, RecordChange, Synced};
use crate::batch::Batch;
use crate::config::BulkWrite;
use crate::error::{StorageError, StorageResult};
use crate::model::{
    AttemptRecord, Bucket, DateTime, EndpointRecord, FileRecord, IDEMPOTENCY_WINDOW, JobRecord,
    KeyClaim, NewFile, ObjectId, Owner, PageQuery, session::SessionRecord,
};
use crate::remembered::Remembered;
use bytes::Bytes;
use futures::{AsyncWriteExt, StreamExt, TryStreamExt};
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::error::{ErrorKind, GridFsErrorKind, WriteFailure};
use mongodb::gridfs::{FilesCollectionDocument, GridFsBucket, GridFsUploadStream};
use mongodb::options::{
    ClientOptions, GridFsBucketOptions, IndexOptions, InsertOneModel, ReplaceOneModel,
    ReturnDocument, UpdateOneModel, WriteModel,
};
use mongodb::{Client, Collection, Database, IndexModel, Namespace};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long an operation waits for a reachable server before failing as unavailable.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Chunks fetched per round trip when reading (GridFS chunks are 255 KiB).
const READ_BATCH_CHUNKS: u32 = 4;
/// The bytes in each chunk of a resumable upload's file: GridFS's default, as the driver
/// writes.
const SESSION_CHUNK_BYTES: u64 = 255 * 1024;
/// Sessions whose last chunk this replica remembers between appends ([`KnownTail`]); each
/// costs up to a chunk of memory. Past that, one is forgotten and its next append reads the
/// chunk's bytes back from the session's record.
const REMEMBERED_TAILS: usize = 32;
/// The wire version of MongoDB 8.0, the first with the `bulkWrite` command.
const BULK_WRITE_WIRE_VERSION: i64 = 25;
/// Filter matching only files whose upload finished (the checksum is written last).
fn complete() -> Document {
    doc! { "metadata.sha256": { "$exists": true } }
}

/// The filter for `page` over documents whose owner and time are the fields named: the owner's
/// (or everyone's), older than the cursor in (time, id) order.
fn page_filter(page: &PageQuery, owner_field: &str, time_field: &str) -> Document {
    let mut filter = Document::new();
    if let Owner::One(owner) = &page.owner {
        filter.insert(owner_field, owner);
    }
    if let Some(after) = &page.after {
        filter.insert(
            "$or",
            vec![
                doc! { time_field: { "$lt": after.at } },
                doc! { time_field: after.at, "_id": { "$lt": after.id } },
            ],
        );
    }
    filter
}

fn page_limit(page: &PageQuery) -> i64 {
    i64::try_from(page.limit).unwrap_or(i64::MAX)
}

/// A connection to one database on a MongoDB server.
#[derive(Debug, Clone)]
pub struct MongoBackend {
    database: Database,
    jobs: Collection<JobRecord>,
    keys: Collection<KeyClaim>,
    endpoints: Collection<EndpointRecord>,
    attempts: Collection<AttemptRecord>,
    sessions: Collection<SessionRecord>,
    tails: Arc<Remembered<KnownTail>>,
    /// Whether a session's durable point stores its chunks and its record with one command;
    /// shared with the session writers, the first of which to find the command missing turns
    /// it off ([`MongoSessionWriter::sync`]).
    bulk_write: Arc<AtomicBool>,
}

impl MongoBackend {
    /// Connects to `uri`, uses `database`, and makes sure the indexes exist; `bulk_write` says
    /// whether to use the `bulkWrite` command where the server has it.
    pub async fn connect(uri: &str, database: &str, bulk_write: BulkWrite) -> StorageResult<Self> {
        let mut options = ClientOptions::parse(uri).await?;
        options.app_name = Some("mp3converter-storage".into());
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        let database = Client::with_options(options)?.database(database);
        let bulk_write = match bulk_write {
            BulkWrite::Auto => has_bulk_write(&database).await?,
            BulkWrite::Off => false,
        };
        tracing::info!(
            bulk_write,
            "an upload's durable point stores its chunks and its record with {}",
            if bulk_write { "one command" } else { "two" }
        );
        let backend = Self {
            jobs: database.collection("jobs"),
            keys: database.collection("idempotency_keys"),
            endpoints: database.collection("webhook_endpoints"),
            attempts: database.collection("webhook_attempts"),
            sessions: database.collection("upload_sessions"),
            tails: Arc::new(Remembered::with_capacity(REMEMBERED_TAILS)),
            bulk_write: Arc::new(AtomicBool::new(bulk_write)),
            database,
        };
        backend.create_indexes().await?;
        backend.remove_old_claims().await?;
        Ok(backend)
    }

    async fn create_indexes(&self) -> StorageResult<()> {
        self.jobs
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "owner_id": 1, "created_at": -1 })
                    .build(),
            )
            .await?;
        self.attempts
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "endpoint_id": 1, "_id": -1 })
                    .build(),
            )
            .await?;
        self.endpoints
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "owner_id": 1, "created_at": -1 })
                    .build(),
            )
            .await?;
        self.sessions
            .create_index(IndexModel::builder().keys(doc! { "expires_at": 1 }).build())
            .await?;
        for bucket in Bucket::ALL {
            self.files(bucket)
                .create_index(
                    IndexModel::builder()
                        .keys(doc! { "metadata.owner_id": 1, "uploadDate": -1 })
                        .build(),
                )
                .await?;
            self.create_gridfs_indexes(bucket).await?;
        }
        Ok(())
    }

    /// GridFS's own indexes, as its specification defines them. The driver creates them only
    /// before its first upload into a bucket with no files; resumable uploads store their
    /// chunks themselves, so a bucket whose first file came that way never had them, and every
    /// chunk an append rewrote and every download's read of the chunks scanned the whole chunks
    /// collection (200 ms for one rewrite among 1,000 chunks on the test server, against 6).
    async fn create_gridfs_indexes(&self, bucket: Bucket) -> StorageResult<()> {
        self.files(bucket)
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "filename": 1, "uploadDate": 1 })
                    .build(),
            )
            .await?;
        let chunks = IndexModel::builder()
            .keys(doc! { "files_id": 1, "n": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build();
        match self.chunks(bucket).create_index(chunks).await {
            Err(error) if is_duplicate_key(&error) => {
                // Slower without it, never wrong: no reason to refuse to start.
                tracing::error!(
                    bucket = bucket.name(),
                    %error,
                    "the GridFS chunks index cannot be built: two chunks share a file and a number"
                );
                Ok(())
            }
            outcome => Ok(outcome.map(drop)?),
        }
    }

    /// Removes the claims past their window, at start-up as the local backend does, and not
    /// through a TTL index: the MongoDB-wire server of the tests stopped answering once with
    /// one. An old claim left until the next start is harmless: `claim_key` replaces it.
    async fn remove_old_claims(&self) -> StorageResult<()> {
        let window_start =
            DateTime::from_millis(DateTime::now().timestamp_millis() - window_millis());
        self.keys
            .delete_many(doc! { "created_at": { "$lt": window_start } })
            .await?;
        Ok(())
    }

    fn bucket(&self, bucket: Bucket) -> GridFsBucket {
        self.database.gridfs_bucket(
            GridFsBucketOptions::builder()
                .bucket_name(bucket.name().to_owned())
                .build(),
        )
    }

    fn files(&self, bucket: Bucket) -> Collection<FilesCollectionDocument> {
        self.database
            .collection(&format!("{}.files", bucket.name()))
    }

    fn chunks(&self, bucket: Bucket) -> Collection<RawDocumentBuf> {
        self.database
            .collection(&format!("{}.chunks", bucket.name()))
    }

    pub(super) async fn ping(&self) -> StorageResult<()> {
        self.database.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    pub(super) async fn begin_upload(&self, file: NewFile) -> StorageResult<GridFsUpload> {
        let stream = self
            .bucket(file.bucket)
            .open_upload_stream(&file.filename)
            .id(Bson::ObjectId(file.id))
            .metadata(doc! {
                "owner_id": &file.owner_id,
                "content_type": &file.content_type,
                "job_id": &file.job_id,
            })
            .await?;
        Ok(GridFsUpload {
            stream,
            files: self.files(file.bucket),
            bucket: self.bucket(file.bucket),
            file,
        })
    }

    pub(super) async fn find_file(
        &self,
        bucket: Bucket,
        id: ObjectId,
    ) -> StorageResult<Option<FileRecord>> {
        let mut filter = complete();
        filter.insert("_id", id);
        let found = self.files(bucket).find_one(filter).await?;
        found.map(|file| record(bucket, file)).transpose()
    }

    pub(super) async fn read_file(
        &self,
        file: &FileRecord,
        offset: u64,
        length: u64,
    ) -> StorageResult<ByteStream> {
        if length == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        let stored = self
            .files(file.bucket)
            .find_one(doc! { "_id": file.id })
            .await?
            .ok_or(StorageError::NotFound("file"))?;
        let chunk_size = u64::from(stored.chunk_size_bytes.max(1));
        self.read_chunks(file.bucket, file.id, chunk_size, offset, length)
            .await
    }

    /// `length` bytes (at least one) from `offset` of the chunks of file `id`, whose chunks
    /// hold `chunk_size` bytes each.
    async fn read_chunks(
        &self,
        bucket: Bucket,
        id: ObjectId,
        chunk_size: u64,
        offset: u64,
        length: u64,
    ) -> StorageResult<ByteStream> {
        let end = offset + length;
        let first = offset / chunk_size;
        let last = (end - 1) / chunk_size;
        let cursor = self
            .chunks(bucket)
            .find(doc! {
                "files_id": id,
                "n": { "$gte": first as i64, "$lte": last as i64 },
            })
            .sort(doc! { "n": 1 })
            .batch_size(READ_BATCH_CHUNKS)
            .await?;
        let chunks =
            futures::stream::try_unfold((cursor, first), move |(mut cursor, n)| async move {
                if n > last {
                    return Ok(None);
                }
                let missing = || StorageError::Internal(format!("file {id} is missing chunk {n}"));
                let chunk = cursor.try_next().await?.ok_or_else(missing)?;
                let number = chunk
                    .get("n")
                    .ok()
                    .flatten()
                    .and_then(|value| value.as_i32().map(i64::from).or_else(|| value.as_i64()));
                if number != Some(n as i64) {
                    return Err(missing());
                }
                let data = chunk
                    .get_binary("data")
                    .map_err(|_| {
                        StorageError::Internal(format!("file {id} chunk {n} has no data"))
                    })?
                    .bytes;
                let chunk_start = n * chunk_size;
                let from = offset.saturating_sub(chunk_start) as usize;
                let to = ((end - chunk_start) as usize).min(data.len());
                if from > to {
                    return Err(StorageError::Internal(format!(
                        "file {id} chunk {n} is short"
                    )));
                }
                Ok(Some((
                    Bytes::copy_from_slice(&data[from..to]),
                    (cursor, n + 1),
                )))
            });
        Ok(chunks.boxed())
    }

    pub(super) async fn delete_file(&self, bucket: Bucket, id: ObjectId) -> StorageResult<bool> {
        match self.bucket(bucket).delete(Bson::ObjectId(id)).await {
            Ok(()) => Ok(true),
            Err(error)
                if matches!(
                    *error.kind,
                    ErrorKind::GridFs(GridFsErrorKind::FileNotFound { .. })
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn list_files(
        &self,
        bucket: Bucket,
        page: &PageQuery,
    ) -> StorageResult<Vec<FileRecord>> {
        let mut filter = complete();
        filter.extend(page_filter(page, "metadata.owner_id", "uploadDate"));
        let files: Vec<FilesCollectionDocument> = self
            .files(bucket)
            .find(filter)
            .sort(doc! { "uploadDate": -1, "_id": -1 })
            .limit(page_limit(page))
            .await?
            .try_collect()
            .await?;
        files.into_iter().map(|file| record(bucket, file)).collect()
    }

    pub(super) async fn list_job_files(
        &self,
        bucket: Bucket,
        owner_id: &str,
        job_id: &str,
    ) -> StorageResult<Vec<FileRecord>> {
        let mut filter = complete();
        filter.insert("metadata.owner_id", owner_id);
        filter.insert("metadata.job_id", job_id);
        let files: Vec<FilesCollectionDocument> =
            self.files(bucket).find(filter).await?.try_collect().await?;
        files.into_iter().map(|file| record(bucket, file)).collect()
    }

    pub(super) async fn insert_job(&self, job: &JobRecord) -> StorageResult<()> {
        self.jobs.insert_one(job).await?;
        Ok(())
    }

    pub(super) async fn find_job(&self, id: ObjectId) -> StorageResult<Option<JobRecord>> {
        Ok(self.jobs.find_one(doc! { "_id": id }).await?)
    }

    pub(super) async fn list_jobs(&self, page: &PageQuery) -> StorageResult<Vec<JobRecord>> {
        Ok(self
            .jobs
            .find(page_filter(page, "owner_id", "created_at"))
            .sort(doc! { "created_at": -1, "_id": -1 })
            .limit(page_limit(page))
            .await?
            .try_collect()
            .await?)
    }

    pub(super) async fn replace_job(
        &self,
        job: &JobRecord,
        expected_revision: i64,
    ) -> StorageResult<bool> {
        let result = self
            .jobs
            .replace_one(doc! { "_id": job.id, "revision": expected_revision }, job)
            .await?;
        Ok(result.matched_count == 1)
    }

    pub(super) async fn delete_job(&self, id: ObjectId) -> StorageResult<bool> {
        Ok(self
            .jobs
            .delete_one(doc! { "_id": id })
            .await?
            .deleted_count
            == 1)
    }

    pub(super) async fn claim_key(
        &self,
        claim: &KeyClaim,
        window: Duration,
    ) -> StorageResult<Option<KeyClaim>> {
        // The unique `_id` decides between racing claims. A standing claim past its window is
        // removed and the insert tried again.
        for _ in 0..3 {
            match self.keys.insert_one(claim).await {
                Ok(_) => return Ok(None),
                Err(error) if is_duplicate_key(&error) => {}
                Err(error) => return Err(error.into()),
            }
            let Some(standing) = self.keys.find_one(doc! { "_id": &claim.id }).await? else {
                continue;
            };
            if !standing.is_older_than(window, DateTime::now()) {
                return Ok(Some(standing));
            }
            self.keys
                .delete_one(doc! { "_id": &standing.id, "job_id": standing.job_id })
                .await?;
        }
        Err(StorageError::Contended(format!(
            "the claim on idempotency key {}",
            claim.key
        )))
    }

    pub(super) async fn release_key(&self, id: &str, job_id: ObjectId) -> StorageResult<()> {
        self.keys
            .delete_one(doc! { "_id": id, "job_id": job_id })
            .await?;
        Ok(())
    }
}

/// Webhook endpoints: a `webhook_endpoints` collection.
impl MongoBackend {
    /// The owner's count and the insert are two requests, so two creations racing at the
    /// limit can both pass it: the limit is there against abuse, not as an exact quota.
    pub(super) async fn insert_endpoint(
        &self,
        endpoint: &EndpointRecord,
        limit: usize,
    ) -> StorageResult<bool> {
        let owned = self
            .endpoints
            .count_documents(doc! { "owner_id": &endpoint.owner_id })
            .await?;
        if usize::try_from(owned).unwrap_or(usize::MAX) >= limit {
            return Ok(false);
        }
        self.endpoints.insert_one(endpoint).await?;
        Ok(true)
    }

    pub(super) async fn find_endpoint(
        &self,
        id: ObjectId,
    ) -> StorageResult<Option<EndpointRecord>> {
        Ok(self.endpoints.find_one(doc! { "_id": id }).await?)
    }

    pub(super) async fn list_endpoints(
        &self,
        owner_id: &str,
    ) -> StorageResult<Vec<EndpointRecord>> {
        Ok(self
            .endpoints
            .find(doc! { "owner_id": owner_id })
            .sort(doc! { "created_at": -1, "_id": -1 })
            .await?
            .try_collect()
            .await?)
    }

    pub(super) async fn replace_endpoint(
        &self,
        endpoint: &EndpointRecord,
        expected_revision: i64,
    ) -> StorageResult<bool> {
        let result = self
            .endpoints
            .replace_one(
                doc! { "_id": endpoint.id, "revision": expected_revision },
                endpoint,
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    pub(super) async fn delete_endpoint(&self, id: ObjectId) -> StorageResult<bool> {
        self.attempts
            .delete_many(doc! { "endpoint_id": id })
            .await?;
        Ok(self
            .endpoints
            .delete_one(doc! { "_id": id })
            .await?
            .deleted_count
            == 1)
    }

    /// Inserts, then removes what falls past the newest `keep` (ids grow with time).
    pub(super) async fn insert_attempt(
        &self,
        attempt: &AttemptRecord,
        keep: usize,
    ) -> StorageResult<()> {
        self.attempts.insert_one(attempt).await?;
        let older: Vec<AttemptRecord> = self
            .attempts
            .find(doc! { "endpoint_id": attempt.endpoint_id })
            .sort(doc! { "_id": -1 })
            .skip(u64::try_from(keep).unwrap_or(u64::MAX))
            .await?
            .try_collect()
            .await?;
        if !older.is_empty() {
            let ids: Vec<ObjectId> = older.iter().map(|old| old.id).collect();
            self.attempts
                .delete_many(doc! { "_id": { "$in": ids } })
                .await?;
        }
        Ok(())
    }

    pub(super) async fn list_attempts(
        &self,
        endpoint_id: ObjectId,
    ) -> StorageResult<Vec<AttemptRecord>> {
        Ok(self
            .attempts
            .find(doc! { "endpoint_id": endpoint_id })
            .sort(doc! { "_id": -1 })
            .await?
            .try_collect()
            .await?)
    }
}

/// The field of a session's record that keeps the bytes of its partly filled last chunk
/// ([`KeptTail`]). Only an append reads it: every other read of the record leaves it out.
const TAIL_FIELD: &str = "tail";

/// Resumable upload sessions: records in `upload_sessions`, bytes as chunks of the videos
/// bucket under the session's id, with no files document until the session completes (so the
/// file is invisible until then, and appears whole with one insert). Between appends, the
/// bytes of the partly filled last chunk are kept in the record instead ([`TAIL_FIELD`]);
/// a record without them (one an earlier version of this service wrote) has them in a chunk.
impl MongoBackend {
    pub(super) async fn insert_session(&self, session: &SessionRecord) -> StorageResult<()> {
        self.sessions.insert_one(session).await?;
        Ok(())
    }

    pub(super) async fn find_session(&self, id: ObjectId) -> StorageResult<Option<SessionRecord>> {
        Ok(self
            .sessions
            .find_one(doc! { "_id": id })
            .projection(doc! { TAIL_FIELD: 0 })
            .await?)
    }

    /// Sets every field of the record but the tail, which changes only with `tail`.
    pub(super) async fn replace_session(
        &self,
        session: &SessionRecord,
        expected_revision: i64,
        tail: Option<&KeptTail>,
    ) -> StorageResult<bool> {
        let result = self
            .sessions
            .update_one(
                revision_filter(session, expected_revision),
                session_update(session, tail)?,
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    pub(super) async fn delete_session(
        &self,
        id: ObjectId,
        expected_revision: i64,
    ) -> StorageResult<bool> {
        let Some(session) = self
            .sessions
            .find_one_and_delete(doc! { "_id": id, "revision": expected_revision })
            .projection(doc! { TAIL_FIELD: 0 })
            .await?
        else {
            return Ok(false);
        };
        if !session.complete {
            self.chunks(Bucket::Videos)
                .delete_many(doc! { "files_id": id })
                .await?;
        }
        Ok(true)
    }

    pub(super) async fn expired_sessions(
        &self,
        now: DateTime,
    ) -> StorageResult<Vec<SessionRecord>> {
        Ok(self
            .sessions
            .find(doc! { "expires_at": { "$lte": now } })
            .projection(doc! { TAIL_FIELD: 0 })
            .await?
            .try_collect()
            .await?)
    }

    pub(super) async fn open_session_writer(
        &self,
        session: &SessionRecord,
    ) -> StorageResult<MongoSessionWriter> {
        let next = session.offset / SESSION_CHUNK_BYTES;
        let kept_in_next = (session.offset % SESSION_CHUNK_BYTES) as usize;
        let (pending, stored_in_place) = if session.revision == 1 {
            // Leased straight from its creation: nothing was ever written to it.
            (Vec::with_capacity(SESSION_CHUNK_BYTES as usize), None)
        } else {
            match self
                .tails
                .take(session.id)
                .and_then(|tail| tail.for_lease(session))
            {
                Some(known) => (known.bytes, known.stored_in_place),
                None => self.read_tail(session, next, kept_in_next).await?,
            }
        };
        Ok(MongoSessionWriter {
            database: self.database.clone(),
            sessions: self.sessions.namespace(),
            bulk_write: Arc::clone(&self.bulk_write),
            chunks: self
                .database
                .collection(&format!("{}.chunks", Bucket::Videos.name())),
            files_id: session.id,
            file_length: session.length,
            next,
            pending,
            stored_in_place,
        })
    }

    /// The kept bytes of the session's partly filled last chunk, read back, with every chunk
    /// past them removed (they hold bytes that were never kept); and the chunk that holds
    /// them when they are not in the record.
    async fn read_tail(
        &self,
        session: &SessionRecord,
        next: u64,
        kept_in_next: usize,
    ) -> StorageResult<(Vec<u8>, Option<u64>)> {
        metrics::counter!(crate::meters::UPLOAD_TAIL_READS).increment(1);
        let chunks = self.chunks(Bucket::Videos);
        let record = self
            .sessions
            .clone_with_type::<Document>()
            .find_one(doc! { "_id": session.id })
            .projection(doc! { TAIL_FIELD: 1 })
            .await?
            .ok_or(StorageError::NotFound("upload session"))?;
        let mut pending = Vec::with_capacity(SESSION_CHUNK_BYTES as usize);
        let stored_in_place = if let Ok(kept) = record.get_binary_generic(TAIL_FIELD) {
            if kept.len() != kept_in_next {
                return Err(StorageError::Internal(format!(
                    "upload session {} keeps {} bytes of chunk {next}, not {kept_in_next}",
                    session.id,
                    kept.len()
                )));
            }
            pending.extend_from_slice(kept);
            None
        } else if kept_in_next > 0 {
            // Neither the record nor a chunk has them when a replica of the version before
            // the record kept them stored the record (it knows no tail, so drops it).
            let lost = StorageError::TailLost {
                whole_to: next * SESSION_CHUNK_BYTES,
            };
            let stored = chunks
                .find_one(doc! { "files_id": session.id, "n": next as i64 })
                .await?
                .ok_or(lost)?;
            let data = stored.get_binary("data").map_err(|_| {
                StorageError::Internal(format!(
                    "upload session {} chunk {next} has no data",
                    session.id
                ))
            })?;
            let kept = data.bytes.get(..kept_in_next).ok_or_else(|| {
                StorageError::Internal(format!(
                    "upload session {} chunk {next} is short",
                    session.id
                ))
            })?;
            pending.extend_from_slice(kept);
            // Rewritten in place, so a crash before that leaves it as it was.
            Some(next)
        } else {
            None
        };
        let first_unkept = stored_in_place.map_or(next, |n| n + 1);
        chunks
            .delete_many(doc! { "files_id": session.id, "n": { "$gte": first_unkept as i64 } })
            .await?;
        Ok((pending, stored_in_place))
    }

    /// Remembers where `writer` left the session's chunks, for the next append through this
    /// replica: `session` is the record as the append that wrote them ended, every byte it
    /// wrote kept.
    pub(super) fn remember_tail(&self, writer: MongoSessionWriter, session: &SessionRecord) {
        if writer.written() == session.offset && session.offset < session.length {
            let tail = KnownTail {
                revision: session.revision,
                offset: session.offset,
                stored_in_place: writer.stored_in_place.filter(|&n| n == writer.next),
                bytes: writer.pending,
            };
            self.tails.put(session.id, tail);
        }
    }

    pub(super) async fn read_session(
        &self,
        session: &SessionRecord,
        offset: u64,
        length: u64,
    ) -> StorageResult<ByteStream> {
        if length == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        self.read_chunks(
            Bucket::Videos,
            session.id,
            SESSION_CHUNK_BYTES,
            offset,
            length,
        )
        .await
    }

    /// Inserts the files document, with the checksum: the file appears whole. Done already,
    /// it returns the record.
    pub(super) async fn complete_session(
        &self,
        session: &SessionRecord,
        sha256: String,
    ) -> StorageResult<FileRecord> {
        if let Some(done) = self.find_file(Bucket::Videos, session.id).await? {
            return Ok(done);
        }
        let chunk_count = session.length.div_ceil(SESSION_CHUNK_BYTES);
        self.chunks(Bucket::Videos)
            .delete_many(doc! { "files_id": session.id, "n": { "$gte": chunk_count as i64 } })
            .await?;
        let files = self.files(Bucket::Videos).clone_with_type::<Document>();
        let inserted = files
            .insert_one(doc! {
                "_id": session.id,
                "length": session.length as i64,
                "chunkSize": SESSION_CHUNK_BYTES as i64,
                "uploadDate": DateTime::now(),
                "filename": &session.filename,
                "metadata": {
                    "owner_id": &session.owner_id,
                    "content_type": &session.content_type,
                    "job_id": "",
                    "sha256": &sha256,
                },
            })
            .await;
        match inserted {
            Ok(_) => {}
            Err(error) if is_duplicate_key(&error) => {}
            Err(error) => return Err(error.into()),
        }
        self.find_file(Bucket::Videos, session.id)
            .await?
            .ok_or_else(|| {
                StorageError::Internal(format!("upload session {} left no file", session.id))
            })
    }
}

/// How a session's chunks stood when an append through this replica last ended with every
/// byte it wrote kept: the bytes of the partly filled last chunk, and nothing stored past them.
/// The next append starts from there instead of reading the chunk back and removing what may
/// lie past it (two round trips to the server per PATCH), but only when it leased the session
/// straight from the revision that append left: any other change in between (another
/// replica's append, one refused for its checksum) and the chunks are read again.
#[derive(Debug)]
struct KnownTail {
    /// The session's revision when the append ended.
    revision: i64,
    offset: u64,
    /// The chunk that holds `bytes`, when the record does not (see [`TAIL_FIELD`]).
    stored_in_place: Option<u64>,
    bytes: Vec<u8>,
}

impl KnownTail {
    /// Itself, for `leased` (the session as an append just leased it), if nothing changed
    /// the session between the append that left it and this lease.
    fn for_lease(self, leased: &SessionRecord) -> Option<Self> {
        // Taking the lease is one change from exactly the revision the append left, or none
        // when the append starts on the lease this replica kept.
        let next_append = matches!(leased.revision - self.revision, 0 | 1);
        (next_append && self.offset == leased.offset).then_some(self)
    }
}

/// Appends to a session's chunks: full chunks are stored as they fill, each write one round
/// trip to the server, the durable point's included (with the session's record in the same
/// command where the server has `bulkWrite`). The last, partly filled chunk goes to the
/// session's record ([`KeptTail`]), written at the durable point anyway, except when it is
/// the file's last chunk. A session whose record does not keep it has it stored as a chunk
/// already: that chunk is stored again at every durable point, and replaced, once it fills, by
/// the same command that stores the chunks after it.
pub struct MongoSessionWriter {
    database: Database,
    /// Where the session records are, for a durable point that stores the chunks and the
    /// record with one command.
    sessions: Namespace,
    /// Whether a durable point does that (the server has `bulkWrite`): the backend's.
    bulk_write: Arc<AtomicBool>,
    chunks: Collection<Document>,
    files_id: ObjectId,
    /// The length the session's file will have.
    file_length: u64,
    /// The number of the chunk `pending` fills.
    next: u64,
    /// The bytes of chunk `next` so far.
    pending: Vec<u8>,
    /// The chunk that is stored already, partly filled, and so must be replaced, not added.
    stored_in_place: Option<u64>,
}

impl std::fmt::Debug for MongoSessionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSessionWriter")
            .field("files_id", &self.files_id)
            .field("next", &self.next)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl MongoSessionWriter {
    /// Stores the chunks `batch` fills.
    pub(super) async fn write(&mut self, batch: &Batch) -> StorageResult<()> {
        let filled = self.fill(batch);
        self.store(filled).await
    }

    /// Stores the chunks `batch` fills; the partly filled last one, for the session's record to
    /// keep, or stored with them when it is the file's last or stored as a chunk already. With
    /// them, in the same command when the server has `bulkWrite`, `change` is made to the
    /// session's record, the tail in it.
    pub(super) async fn sync(
        &mut self,
        batch: &Batch,
        change: Option<RecordChange>,
    ) -> StorageResult<Synced> {
        let mut chunks = self.fill(batch);
        let in_a_chunk = !self.pending.is_empty()
            && (self.written() == self.file_length || self.stored_in_place == Some(self.next));
        if in_a_chunk {
            chunks.push((self.next, self.pending.clone()));
        }
        let tail = if in_a_chunk || self.pending.is_empty() {
            KeptTail::default()
        } else {
            KeptTail::in_record(self.pending.clone())
        };
        let synced = match change {
            Some(change) if self.bulk_write.load(Ordering::Relaxed) => {
                let update = session_update(&change.session, Some(&tail))?;
                match self.store_recording(chunks, &change, update).await {
                    Ok(true) => Synced::Recorded(change.session),
                    Ok(false) => Synced::Unrecorded(tail),
                    // A server that said it was MongoDB 8 when storage connected may not be
                    // now (one downgraded under a running replica), or may never have had the
                    // command. Nothing of it ran, and its chunks went with it (copying them
                    // for this, a MiB or more at every durable point, would cost more than it
                    // saves): the append ends at the durable point before, the client sends
                    // the rest again, and this one and every later one are two commands.
                    Err(error) if lacks_bulk_write(&error) => {
                        tracing::warn!(
                            %error,
                            "the MongoDB server has no bulkWrite: durable points store their \
                             chunks and their record with two commands from now on"
                        );
                        self.bulk_write.store(false, Ordering::Relaxed);
                        return Err(StorageError::DatabaseUnavailable(error));
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            _ => {
                self.store(chunks).await?;
                Synced::Unrecorded(tail)
            }
        };
        if in_a_chunk {
            self.stored_in_place = Some(self.next);
        }
        Ok(synced)
    }

    /// Where the session's bytes end, counting those still pending.
    fn written(&self) -> u64 {
        self.next * SESSION_CHUNK_BYTES + self.pending.len() as u64
    }

    /// Takes `batch`'s bytes into the pending chunk; the chunks they filled, numbered.
    fn fill(&mut self, batch: &Batch) -> Vec<(u64, Vec<u8>)> {
        let size = SESSION_CHUNK_BYTES as usize;
        let mut filled = Vec::new();
        for mut bytes in batch.chunks().iter().map(|chunk| &chunk[..]) {
            while !bytes.is_empty() {
                let take = (size - self.pending.len()).min(bytes.len());
                self.pending.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.pending.len() == size {
                    let data = std::mem::replace(&mut self.pending, Vec::with_capacity(size));
                    filled.push((self.next, data));
                    self.next += 1;
                }
            }
        }
        filled
    }

    /// Stores `chunks` (in order) with one command: inserted, unless the first is the one
    /// stored partly filled, when every chunk is an upsert of one `update` command (an insert
    /// cannot replace, and a replacement on its own would cost a round trip of its own).
    async fn store(&mut self, chunks: Vec<(u64, Vec<u8>)>) -> StorageResult<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        if self.replaces_stored(&chunks) {
            let updates: Vec<Document> = chunks
                .into_iter()
                .map(|(n, data)| {
                    doc! {
                        "q": self.chunk_filter(n),
                        "u": chunk_fields(self.files_id, n, data),
                        "upsert": true,
                    }
                })
                .collect();
            self.update(updates).await?;
            self.stored_in_place = None;
        } else {
            let documents = chunks
                .into_iter()
                .map(|(n, data)| new_chunk(self.files_id, n, data));
            self.chunks.insert_many(documents).await?;
        }
        Ok(())
    }

    /// Stores `chunks` as [`Self::store`] does and then makes `change` to the session's record
    /// (`update`, which carries the tail), all with one ordered `bulkWrite` command: a chunk
    /// the server refuses stops it before the record, which so never counts bytes that are not
    /// stored. Whether the record had the revision `change` expects (if not, the chunks are
    /// stored and the record is left as it was).
    async fn store_recording(
        &mut self,
        chunks: Vec<(u64, Vec<u8>)>,
        change: &RecordChange,
        update: Document,
    ) -> mongodb::error::Result<bool> {
        let replacing = self.replaces_stored(&chunks);
        let namespace = self.chunks.namespace();
        let mut writes: Vec<WriteModel> = chunks
            .into_iter()
            .map(|(n, data)| {
                if replacing {
                    ReplaceOneModel::builder()
                        .namespace(namespace.clone())
                        .filter(self.chunk_filter(n))
                        .replacement(chunk_fields(self.files_id, n, data))
                        .upsert(true)
                        .build()
                        .into()
                } else {
                    InsertOneModel::builder()
                        .namespace(namespace.clone())
                        .document(new_chunk(self.files_id, n, data))
                        .build()
                        .into()
                }
            })
            .collect();
        let record = writes.len();
        writes.push(
            UpdateOneModel::builder()
                .namespace(self.sessions.clone())
                .filter(revision_filter(&change.session, change.expected_revision))
                .update(update)
                .build()
                .into(),
        );
        let result = self
            .database
            .client()
            .bulk_write(writes)
            .ordered(true)
            .verbose_results()
            .await?;
        if replacing {
            self.stored_in_place = None;
        }
        Ok(result
            .update_results
            .get(&record)
            .is_some_and(|updated| updated.matched_count == 1))
    }

    /// Runs the `update` command with `updates`, in order, under the collection's write
    /// concern. The driver has no command for several upserts but the server-wide
    /// `bulkWrite`, which needs MongoDB 8.
    async fn update(&self, updates: Vec<Document>) -> StorageResult<()> {
        let mut command = doc! {
            "update": self.chunks.name(),
            "updates": updates,
            "ordered": true,
        };
        if let Some(concern) = self.chunks.write_concern() {
            let concern = mongodb::bson::to_bson(concern).map_err(|error| {
                StorageError::Internal(format!("the write concern as BSON: {error}"))
            })?;
            command.insert("writeConcern", concern);
        }
        let reply = self.database.run_command(command).await?;
        // The server answers `ok` with the statements it refused listed.
        let refused = reply
            .get_array("writeErrors")
            .ok()
            .and_then(|errors| errors.first())
            .or_else(|| reply.get("writeConcernError"));
        match refused {
            None => Ok(()),
            Some(error) => Err(StorageError::Internal(format!(
                "storing the chunks of upload session {} failed: {error}",
                self.files_id
            ))),
        }
    }

    /// Whether `chunks` start with the one stored partly filled, so that they must replace
    /// what is stored rather than be added to it.
    fn replaces_stored(&self, chunks: &[(u64, Vec<u8>)]) -> bool {
        chunks
            .first()
            .is_some_and(|&(first, _)| self.stored_in_place == Some(first))
    }

    /// Chunk `n` of the session's file.
    fn chunk_filter(&self, n: u64) -> Document {
        doc! { "files_id": self.files_id, "n": n as i64 }
    }
}

/// Chunk `n` of file `files_id`, to be inserted: with an `_id` of its own, as the driver's
/// GridFS chunks have. Without one the driver gives it one by copying the serialized document
/// (the chunk's bytes) once more before sending it, while the server waits: 15 % of the
/// copying storage did for an append, counted by callgrind.
fn new_chunk(files_id: ObjectId, n: u64, data: Vec<u8>) -> Document {
    let mut chunk = doc! { "_id": ObjectId::new() };
    chunk.extend(chunk_fields(files_id, n, data));
    chunk
}

/// Chunk `n` of file `files_id` without an `_id`: as it replaces the one stored (whose `_id` it
/// keeps), and the rest of a new one.
fn chunk_fields(files_id: ObjectId, n: u64, data: Vec<u8>) -> Document {
    doc! {
        "files_id": files_id,
        "n": n as i64,
        "data": binary(data),
    }
}

/// A session's record, if it has `expected_revision`.
fn revision_filter(session: &SessionRecord, expected_revision: i64) -> Document {
    doc! { "_id": session.id, "revision": expected_revision }
}

/// Sets every field of `session`'s record but the tail, which changes only with `tail`.
fn session_update(session: &SessionRecord, tail: Option<&KeptTail>) -> StorageResult<Document> {
    let mut fields = mongodb::bson::to_document(session).map_err(|error| {
        StorageError::Internal(format!("upload session {} as BSON: {error}", session.id))
    })?;
    fields.remove("_id");
    let mut update = doc! {};
    match tail.map(KeptTail::bytes) {
        Some(Some(bytes)) => {
            fields.insert(TAIL_FIELD, binary(bytes.to_vec()));
        }
        Some(None) => {
            update.insert("$unset", doc! { TAIL_FIELD: "" });
        }
        None => {}
    }
    update.insert("$set", fields);
    Ok(update)
}

/// Whether `error` says the server has no `bulkWrite` command: the driver's own refusal of a
/// server older than 8.0, or the server's answer that it knows no such command.
fn lacks_bulk_write(error: &mongodb::error::Error) -> bool {
    const COMMAND_NOT_FOUND: i32 = 59;
    match &*error.kind {
        ErrorKind::IncompatibleServer { .. } => true,
        ErrorKind::Command(command) => command.code == COMMAND_NOT_FOUND,
        _ => false,
    }
}

/// Whether the server has the `bulkWrite` command: it says it is MongoDB 8.0 or later.
async fn has_bulk_write(database: &Database) -> StorageResult<bool> {
    let hello = database.run_command(doc! { "hello": 1 }).await?;
    let wire_version = match hello.get("maxWireVersion") {
        Some(Bson::Int32(version)) => i64::from(*version),
        Some(Bson::Int64(version)) => *version,
        _ => 0,
    };
    Ok(wire_version >= BULK_WRITE_WIRE_VERSION)
}

/// `bytes` as BSON's generic binary.
fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(mongodb::bson::Binary {
        subtype: mongodb::bson::spec::BinarySubtype::Generic,
        bytes,
    })
}

/// [`IDEMPOTENCY_WINDOW`] in milliseconds.
fn window_millis() -> i64 {
    i64::try_from(IDEMPOTENCY_WINDOW.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `error` is a unique index refusing a second document with the same key (a write's,
/// or an index build's over documents already there).
fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    const DUPLICATE_KEY: i32 = 11000;
    match &*error.kind {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.code == DUPLICATE_KEY,
        ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// A file being written into GridFS.
pub struct GridFsUpload {
    stream: GridFsUploadStream,
    files: Collection<FilesCollectionDocument>,
    bucket: GridFsBucket,
    file: NewFile,
}

impl std::fmt::Debug for GridFsUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GridFsUpload")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl GridFsUpload {
    pub(super) async fn write(&mut self, batch: &Batch) -> StorageResult<()> {
        // Gathered into one buffer: the driver stores the chunks one write fills in one round
        // trip, where a write per part would make one per chunk.
        self.stream
            .write_all(&batch.chunks().concat())
            .await
            .map_err(gridfs_io_error)
    }

    pub(super) async fn commit(mut self, size: u64, sha256: String) -> StorageResult<FileRecord> {
        self.stream.close().await.map_err(gridfs_io_error)?;
        let id = self.file.id;
        let marked = self
            .files
            .find_one_and_update(
                doc! { "_id": id, "length": size as i64 },
                doc! { "$set": { "metadata.sha256": &sha256 } },
            )
            .return_document(ReturnDocument::After)
            .await;
        match marked {
            Ok(Some(stored)) => record(self.file.bucket, stored),
            outcome => {
                // The file is in GridFS but unfinished: take it out again.
                if let Err(error) = self.bucket.delete(Bson::ObjectId(id)).await {
                    tracing::warn!(%id, %error, "could not remove an unfinished upload");
                }
                Err(match outcome {
                    Err(error) => error.into(),
                    Ok(_) => StorageError::Internal(format!(
                        "upload {id}: GridFS stored a length other than {size}"
                    )),
                })
            }
        }
    }

    pub(super) async fn abort(mut self) -> StorageResult<()> {
        Ok(self.stream.abort().await?)
    }
}

fn gridfs_io_error(error: std::io::Error) -> StorageError {
    StorageError::DiskUnavailable("writing to GridFS", error)
}

fn record(bucket: Bucket, file: FilesCollectionDocument) -> StorageResult<FileRecord> {
    let id = file.id.as_object_id().ok_or_else(|| {
        StorageError::Internal(format!("GridFS file id {} is not an ObjectId", file.id))
    })?;
    let metadata = file.metadata.unwrap_or_default();
    let text = |key: &str| metadata.get_str(key).unwrap_or_default().to_owned();
    Ok(FileRecord {
        id,
        bucket,
        owner_id: text("owner_id"),
        filename: file.filename.unwrap_or_default(),
        content_type: text("content_type"),
        job_id: text("job_id"),
        size: file.length,
        sha256: text("sha256"),
        uploaded_at: file.upload_date,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inserted_chunk_brings_its_own_id_so_the_driver_need_not_copy_it_to_add_one() {
        let chunk = new_chunk(ObjectId::new(), 3, vec![7; 16]);
        assert!(
            matches!(chunk.get("_id"), Some(Bson::ObjectId(_))),
            "{chunk:?}"
        );
    }
}
