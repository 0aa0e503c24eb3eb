//! Resumable upload sessions, the storage side of the gateway's tus endpoint: one append at a
//! time under a lease kept in the session's record (so appends may come through any gateway
//! and any storage replica), which the replica an append went through keeps for a moment
//! after it so that the client's next PATCH starts without a write; bytes kept up to the last
//! durable point when an append breaks off, per-append checksums, completion into a file, and
//! the sweeper that removes sessions nobody finished.

use super::{ActiveStream, IdempotencyKey, StorageApi, WRITE_BATCH_BYTES, WRITE_QUEUE_DEPTH};
use crate::backend::{KeptTail, RecordChange, SessionWriter, Synced};
use crate::batch::{Batch, GATHERED_BYTES, next_gathered};
use crate::error::{StorageError, StorageResult};
use crate::model::session::{LEASE_RENEWAL, NewSession, SessionRecord};
use crate::model::{DateTime, FileRecord, KeyClaim, ObjectId, Owner, parse_id};
use futures::StreamExt;
use proto::storage::v1 as pb;
use service_kit::Shutdown;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Streaming;
use tracing::instrument;

/// How long an append (or a termination) waits for the one before it to let go of the session
/// before it is refused: long enough for an append whose client went away to notice and
/// stop.
const LEASE_WAIT: Duration = Duration::from_secs(3);
/// How often a waiting append looks again.
const LEASE_POLL: Duration = Duration::from_millis(50);
/// Sessions whose running SHA-256 (so completing one does not read its file again) is
/// remembered between appends; past that, one is forgotten and its file is hashed from its
/// bytes when it completes.
pub(super) const REMEMBERED_DIGESTS: usize = 4096;
/// Sessions whose record, as this replica last stored it (created, or as an append left it),
/// is remembered between appends (a few hundred bytes each): the next append starts on the
/// lease it names as kept by this replica, or tries its lease straight on it, instead of
/// reading it first. One forgotten costs time (its kept lease is waited out), never
/// correctness.
pub(super) const REMEMBERED_SESSIONS: usize = 4096;
/// Batches waiting for an append's hashing task: it may fall this far behind the writes
/// (the batches' memory is shared with the writes until they are stored).
const HASH_QUEUE_DEPTH: usize = 4;
/// Times a change to a session is recomputed when another writer changed it in between.
const MAX_CHANGE_ATTEMPTS: usize = 16;

/// The digest an append's bytes must have.
#[derive(Debug)]
struct ExpectedChecksum {
    digest: AppendDigest,
    expected: Vec<u8>,
}

/// A digest being computed over an append's bytes.
#[derive(Debug)]
enum AppendDigest {
    Sha1(Sha1),
    Sha256(Sha256),
}

impl ExpectedChecksum {
    fn from_header(header: &pb::AppendHeader) -> StorageResult<Option<Self>> {
        let algorithm = pb::ChecksumAlgorithm::try_from(header.checksum_algorithm)
            .map_err(|_| StorageError::InvalidArgument("unknown checksum_algorithm".into()))?;
        let (digest, length) = match algorithm {
            pb::ChecksumAlgorithm::Unspecified if header.checksum.is_empty() => return Ok(None),
            pb::ChecksumAlgorithm::Unspecified => {
                return Err(StorageError::InvalidArgument(
                    "a checksum needs its checksum_algorithm".into(),
                ));
            }
            pb::ChecksumAlgorithm::Sha1 => (AppendDigest::Sha1(Sha1::new()), 20),
            pb::ChecksumAlgorithm::Sha256 => (AppendDigest::Sha256(Sha256::new()), 32),
        };
        if header.checksum.len() != length {
            return Err(StorageError::InvalidArgument(format!(
                "a {} checksum is {length} bytes, not {}",
                algorithm.as_str_name(),
                header.checksum.len()
            )));
        }
        Ok(Some(Self {
            digest,
            expected: header.checksum.to_vec(),
        }))
    }

    fn update(&mut self, bytes: &[u8]) {
        match &mut self.digest {
            AppendDigest::Sha1(digest) => digest.update(bytes),
            AppendDigest::Sha256(digest) => digest.update(bytes),
        }
    }

    fn matches(&self) -> bool {
        let actual = match &self.digest {
            AppendDigest::Sha1(digest) => digest.clone().finalize().to_vec(),
            AppendDigest::Sha256(digest) => digest.clone().finalize().to_vec(),
        };
        actual == self.expected
    }
}

/// How an append's stream ended.
enum StreamEnd {
    /// With `finish`: every byte the caller meant to send arrived.
    Finished,
    /// Broken off, or refused part-way; the error says why.
    Broken(StorageError),
}

impl StorageApi {
    /// The remembered digest of exactly the first `offset` bytes of session `id`, once its
    /// hashing task is done.
    async fn remembered_digest(&self, id: ObjectId, offset: u64) -> Option<Sha256> {
        let pending = self
            .digests
            .take(id)
            .filter(|pending| pending.covers == offset)?;
        pending.digest.await.ok().flatten()
    }

    pub(super) async fn create_session(
        &self,
        mut request: pb::CreateUploadSessionRequest,
    ) -> StorageResult<(SessionRecord, bool)> {
        let new = NewSession::from_request(&request, self.max_file_bytes)?;
        let key = IdempotencyKey::parse(
            std::mem::take(&mut request.idempotency_key),
            std::mem::take(&mut request.request_fingerprint),
        )?;
        let session = new.into_record(DateTime::now(), self.upload_expiry);
        let mut claim = None;
        if let Some(key) = key {
            let new_claim = KeyClaim::for_upload_session(
                &session.owner_id,
                &key.key,
                &key.fingerprint,
                session.id,
            );
            let earlier = self
                .earlier_record_for(&new_claim, |id| self.backend.find_session(id))
                .await?;
            if let Some(earlier) = earlier {
                tracing::info!(upload_id = %earlier.id, "idempotency key replayed");
                return Ok((earlier, true));
            }
            claim = Some(new_claim);
        }
        if let Err(error) = self.backend.insert_session(&session).await {
            if let Some(claim) = claim {
                self.release_claim(&claim.id, session.id).await;
            }
            return Err(error);
        }
        tracing::info!(upload_id = %session.id, length = session.length, "upload session created");
        self.known_sessions.put(session.id, session.clone());
        Ok((session, false))
    }

    /// A session the requester may see.
    pub(super) async fn visible_session(
        &self,
        id: &str,
        requester: &Owner,
    ) -> StorageResult<SessionRecord> {
        let id = parse_id(id, "upload session")?;
        match self.backend.find_session(id).await? {
            Some(session) if requester.sees(&session.owner_id) => Ok(session),
            _ => Err(StorageError::NotFound("upload session")),
        }
    }

    /// A session the requester may see, once no append holds it (waiting for one as long as
    /// a second append would): its offset is then where the next append starts, with every
    /// byte an append broken off by its caller's death kept. A lease another replica keeps
    /// between appends is waited out too (that replica may be appending again without the
    /// record saying so); one this replica keeps is not, unless an append through it runs.
    /// Still held after the wait, it is answered as stored, marked as appending if an append
    /// holds it.
    pub(super) async fn settled_session(
        &self,
        id: &str,
        requester: &Owner,
    ) -> StorageResult<SessionRecord> {
        let deadline = Instant::now() + LEASE_WAIT;
        loop {
            let session = self.visible_session(id, requester).await?;
            // The record this replica keeps the lease with is taken out while an append on
            // that lease runs.
            let kept_here_unused = session.is_kept_by(self.replica)
                && self
                    .known_sessions
                    .holds(session.id, |known| known.revision == session.revision);
            if !session.is_held(DateTime::now()) || kept_here_unused || Instant::now() >= deadline {
                return Ok(session);
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    /// Takes the session's one writer's lease for `holder`, waiting a little for an append
    /// (or a replica keeping the lease between appends) that holds it; `check` says whether
    /// the session (as it is now) may be written at all. An append (`on_kept_lease`) starts
    /// without writing the record on a lease this replica keeps. Returns the session as
    /// leased and whom the lease is held as: `holder`, or this replica for a kept lease.
    async fn lease_session(
        &self,
        id: &str,
        owner: &Owner,
        holder: ObjectId,
        on_kept_lease: bool,
        check: impl Fn(&SessionRecord, DateTime) -> StorageResult<()>,
    ) -> StorageResult<(SessionRecord, ObjectId)> {
        let deadline = Instant::now() + LEASE_WAIT;
        let session_id = parse_id(id, "upload session")?;
        let mut waited_for_another_replica = false;
        loop {
            // The record as this replica last stored it, if another replica did not move the
            // session on since (then only the stored record may refuse). Taking it out makes
            // this the one request through this replica using the lease it keeps.
            let remembered = self
                .known_sessions
                .take(session_id)
                .filter(|session| owner.sees(&session.owner_id));
            if let Some(session) = remembered {
                let now = DateTime::now();
                if check(&session, now).is_err() {
                    // Put back as it was: a refused request changes nothing.
                    self.known_sessions.put(session_id, session);
                } else if on_kept_lease && session.kept_lease_renewal(self.replica, now).is_some() {
                    metrics::counter!(crate::meters::UPLOAD_APPENDS_ON_KEPT_LEASE).increment(1);
                    return Ok((session, self.replica));
                } else if let Some(leased) =
                    session.released_by(self.replica).leased_to(holder, now)
                    && self
                        .backend
                        .replace_session(&leased, session.revision, None)
                        .await?
                {
                    return Ok((leased, holder));
                }
            }
            let session = self.visible_session(id, owner).await?;
            let now = DateTime::now();
            check(&session, now)?;
            waited_for_another_replica |= session.is_kept_by_another(self.replica, now);
            match session.leased_to(holder, now) {
                Some(leased) => {
                    // Taken over from a replica that kept it: from now on nobody keeps it, or
                    // appends through two replicas would wait for each other every time.
                    let leased = if waited_for_another_replica {
                        leased.shared()
                    } else {
                        leased
                    };
                    if self
                        .backend
                        .replace_session(&leased, session.revision, None)
                        .await?
                    {
                        return Ok((leased, holder));
                    }
                }
                None if Instant::now() >= deadline => return Err(StorageError::Locked),
                None => tokio::time::sleep(LEASE_POLL).await,
            }
        }
    }

    #[instrument(skip_all, fields(upload_id))]
    pub(super) async fn append(
        &self,
        mut stream: Streaming<pb::AppendUploadRequest>,
    ) -> StorageResult<SessionRecord> {
        use pb::append_upload_request::Content;
        let header = match stream.message().await {
            Ok(Some(pb::AppendUploadRequest {
                content: Some(Content::Header(header)),
            })) => header,
            Ok(_) => {
                return Err(StorageError::InvalidArgument(
                    "the first message of an append must be its header".into(),
                ));
            }
            Err(status) => return Err(StorageError::UploadAborted(status.message().into())),
        };
        tracing::Span::current().record("upload_id", header.id.as_str());
        let owner = Owner::from_request(header.owner_id.clone(), false)?;
        let checksum = ExpectedChecksum::from_header(&header)?;
        let (offset, length) = (header.offset, header.length);
        let (leased, holder) = self
            .lease_session(&header.id, &owner, ObjectId::new(), true, |session, now| {
                session.refuse_append(offset, length, now)
            })
            .await?;
        let _active = ActiveStream::start("append");
        let (session, outcome) = self
            .append_leased(leased, holder, &mut stream, checksum)
            .await;
        let outcome_label = match &outcome {
            Ok(_) => "kept",
            Err(StorageError::ChecksumMismatch) => "checksum_mismatch",
            Err(_) => "broken",
        };
        metrics::counter!(crate::meters::UPLOAD_APPENDS, "outcome" => outcome_label).increment(1);
        // Whatever happened, the lease goes (a failure here only leaves it to run out); an
        // append that kept its bytes let it go with them, or left it kept by this replica.
        let released = if !session.is_leased_to(holder) || session.is_kept_by(self.replica) {
            Ok(session)
        } else {
            self.change_session(session, None, |current, now| {
                Ok(if current.is_leased_to(holder) {
                    current.appended(current.offset, now, self.upload_expiry)
                } else {
                    current.clone()
                })
            })
            .await
        };
        let session = match released {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(error = %service_kit::error::chain(&error), "could not release an upload session's lease");
                return outcome.and(Err(error));
            }
        };
        // A lease this replica keeps goes back with the record, whatever the outcome: the
        // next append through this replica starts on it.
        if !session.complete && (outcome.is_ok() || session.is_kept_by(self.replica)) {
            self.known_sessions.put(session.id, session.clone());
        }
        outcome?;
        tracing::debug!(offset = session.offset, "append kept");
        Ok(session)
    }

    /// Runs an append under its lease. Returns the session as last stored (its offset what is
    /// kept) and how the append went.
    async fn append_leased(
        &self,
        leased: SessionRecord,
        holder: ObjectId,
        stream: &mut Streaming<pb::AppendUploadRequest>,
        checksum: Option<ExpectedChecksum>,
    ) -> (SessionRecord, StorageResult<()>) {
        let writer = match self.backend.open_session_writer(&leased).await {
            Ok(writer) => writer,
            Err(StorageError::TailLost { whole_to }) => {
                return self.roll_back(leased, whole_to).await;
            }
            Err(error) => return (leased, Err(error)),
        };
        // A session's first append starts its digest; later ones carry it on when this
        // replica remembers it.
        let digest = match self.remembered_digest(leased.id, leased.offset).await {
            Some(digest) => Some(digest),
            None => (leased.offset == 0).then(Sha256::new),
        };
        let hasher = digest.map(|digest| Hasher::start(digest, leased.offset));
        let mut writer = QueuedWriter::start(writer, hasher);
        let (session, outcome) = self
            .stream_into(&mut writer, leased, holder, stream, checksum)
            .await;
        // No byte of this append may land after the lease is let go.
        let Some(ClosedWriter { digest, writer }) = writer.close().await else {
            return (session, outcome);
        };
        // Remembered when it covers exactly the bytes kept (not after a refused checksum),
        // still being computed: the answer does not wait for the hash of the last bytes.
        if let Some(pending) = digest
            && pending.covers == session.offset
            && !session.complete
        {
            self.digests.put(session.id, pending);
        }
        if outcome.is_ok() {
            self.backend.writer_done(writer, &session);
        }
        (session, outcome)
    }

    /// Sends a leased session whose bytes past `whole_to` are gone back there, and refuses the
    /// append the way a wrong offset is: the client asks for the offset and sends the rest
    /// again from it.
    async fn roll_back(
        &self,
        leased: SessionRecord,
        whole_to: u64,
    ) -> (SessionRecord, StorageResult<()>) {
        tracing::warn!(
            upload_id = %leased.id,
            offset = leased.offset,
            whole_to,
            "an upload session's last bytes are gone; it goes back to where they are whole"
        );
        let rolled_back = self
            .change_session(leased.clone(), Some(&KeptTail::default()), |current, _| {
                Ok(current.rolled_back_to(whole_to))
            })
            .await;
        match rolled_back {
            Ok(session) => {
                let refused = StorageError::FailedPrecondition(format!(
                    "the upload is at offset {}, not {}",
                    session.offset, leased.offset
                ));
                (session, Err(refused))
            }
            Err(error) => (leased, Err(error)),
        }
    }

    /// Takes the append's bytes from `stream` into `writer`, keeping them (as `progress`
    /// records) at every durable point.
    async fn stream_into(
        &self,
        writer: &mut QueuedWriter,
        leased: SessionRecord,
        holder: ObjectId,
        stream: &mut Streaming<pb::AppendUploadRequest>,
        mut checksum: Option<ExpectedChecksum>,
    ) -> (SessionRecord, StorageResult<()>) {
        let (expiry, replica) = (self.upload_expiry, self.replica);
        // Every change while appending keeps bytes up to `kept`: renewing the lease while the
        // append goes on, handing it to this replica to keep at the end; unless the lease ran
        // out and someone else took the session meanwhile.
        let record = |kept: u64, done: bool| {
            move |current: &SessionRecord, now: DateTime| {
                if !current.is_leased_to(holder) {
                    Err(StorageError::Locked)
                } else if done {
                    Ok(current.appended(kept, now, expiry).kept_by(replica, now))
                } else {
                    Ok(current.progressed(kept, now, expiry))
                }
            }
        };
        use pb::append_upload_request::Content;
        let mut session = leased;
        let bytes_in = metrics::counter!(crate::meters::BYTES_IN, "bucket" => "videos");
        let mut written = session.offset;
        let mut batch = Batch::default();
        let mut renewal = tokio::time::interval_at(first_renewal(&session, holder), LEASE_RENEWAL);
        let end = loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = renewal.tick() => {
                    // Renewing the lease is also a durable point for an append without a
                    // checksum: what arrived so far is kept even if storage dies next.
                    let renewed = if checksum.is_some() {
                        self.change_session(session.clone(), None, record(session.offset, false))
                            .await
                    } else {
                        self.keep_written(writer, &mut batch, &session, record(written, false))
                            .await
                    };
                    match renewed {
                        Ok(renewed) => session = renewed,
                        Err(error) => break Err(error),
                    }
                    continue;
                }
            };
            let chunk = match message {
                Ok(Some(pb::AppendUploadRequest {
                    content: Some(Content::Chunk(chunk)),
                })) => chunk,
                Ok(Some(pb::AppendUploadRequest {
                    content: Some(Content::Finish(_)),
                })) => break Ok(StreamEnd::Finished),
                Ok(Some(_)) => {
                    break Ok(StreamEnd::Broken(StorageError::InvalidArgument(
                        "only the first message of an append may be a header".into(),
                    )));
                }
                Ok(None) => {
                    break Ok(StreamEnd::Broken(StorageError::UploadAborted(
                        "the stream ended without `finish`".into(),
                    )));
                }
                Err(status) => {
                    break Ok(StreamEnd::Broken(StorageError::UploadAborted(
                        status.message().into(),
                    )));
                }
            };
            if written + chunk.len() as u64 > session.length {
                break Ok(StreamEnd::Broken(StorageError::PastLength {
                    length: session.length,
                }));
            }
            written += chunk.len() as u64;
            bytes_in.increment(chunk.len() as u64);
            if let Some(checksum) = checksum.as_mut() {
                checksum.update(&chunk);
            }
            batch.push(chunk);
            // The first write waits for a whole batch too, though the backend has had nothing
            // to do since the last PATCH: sent at one chunk's worth it started about 1.2 ms
            // sooner, but cost one more command a PATCH, and 5 MiB PATCHes on GridFS ran a few
            // per cent slower against multipart: in 8 of 11 paired benchmark runs, the same in
            // 2 (README).
            if batch.len() >= WRITE_BATCH_BYTES
                && let Err(error) = writer.flush(&mut batch).await
            {
                break Err(error);
            }
        };
        let end = match end {
            Ok(end) => end,
            // The backend failed: nothing more is kept than the last durable point.
            Err(error) => return (session, Err(error)),
        };
        let (keep, outcome) = match (end, checksum) {
            (StreamEnd::Finished, None) => (true, Ok(())),
            (StreamEnd::Finished, Some(checksum)) if checksum.matches() => (true, Ok(())),
            (StreamEnd::Finished, Some(_)) => (false, Err(StorageError::ChecksumMismatch)),
            (StreamEnd::Broken(error), None) => (true, Err(error)),
            (StreamEnd::Broken(error), Some(_)) => (false, Err(error)),
        };
        if !keep {
            return (session, outcome);
        }
        match self
            .keep_written(writer, &mut batch, &session, record(written, true))
            .await
        {
            Ok(kept) => (kept, outcome),
            Err(error) => (session, Err(error)),
        }
    }

    /// Makes every byte given to `writer`, and `batch`, durable, and records that: `change`
    /// applied to `session` (the record as last stored), with the same command as the last
    /// bytes where the backend can, otherwise after them.
    async fn keep_written(
        &self,
        writer: &mut QueuedWriter,
        batch: &mut Batch,
        session: &SessionRecord,
        change: impl Fn(&SessionRecord, DateTime) -> StorageResult<SessionRecord>,
    ) -> StorageResult<SessionRecord> {
        // A change that cannot be made is left to `change_session`, which says why.
        let proposed = change(session, DateTime::now())
            .ok()
            .map(|next| RecordChange {
                session: next,
                expected_revision: session.revision,
            });
        let synced = writer.sync(batch, proposed).await?;
        let record = match synced {
            Synced::Recorded(_) => "with_bytes",
            Synced::Unrecorded(_) => "after_bytes",
        };
        metrics::counter!(crate::meters::UPLOAD_DURABLE_POINTS, "record" => record).increment(1);
        match synced {
            Synced::Recorded(stored) => Ok(stored),
            Synced::Unrecorded(tail) => {
                self.change_session(session.clone(), Some(&tail), change)
                    .await
            }
        }
    }

    /// Applies `change` to the session as a compare-and-set, recomputing it from the stored
    /// record if another writer got there first; with `tail` when it moves the offset to a
    /// durable point that left one.
    async fn change_session(
        &self,
        mut current: SessionRecord,
        tail: Option<&KeptTail>,
        change: impl Fn(&SessionRecord, DateTime) -> StorageResult<SessionRecord>,
    ) -> StorageResult<SessionRecord> {
        for _ in 0..MAX_CHANGE_ATTEMPTS {
            let next = change(&current, DateTime::now())?;
            if self
                .backend
                .replace_session(&next, current.revision, tail)
                .await?
            {
                return Ok(next);
            }
            current = self
                .backend
                .find_session(current.id)
                .await?
                .ok_or(StorageError::NotFound("upload session"))?;
        }
        Err(StorageError::Contended(format!(
            "upload session {}",
            current.id
        )))
    }

    /// Removes a session (its bytes too unless it is complete), once no append holds it.
    pub(super) async fn abort_session(&self, id: &str, owner: &Owner) -> StorageResult<()> {
        let (leased, _) = self
            .lease_session(id, owner, ObjectId::new(), false, |_, _| Ok(()))
            .await?;
        if !self
            .backend
            .delete_session(leased.id, leased.revision)
            .await?
        {
            return Err(StorageError::NotFound("upload session"));
        }
        tracing::info!(upload_id = %leased.id, "upload session terminated");
        Ok(())
    }

    /// Makes a session whose every byte is in a file, and records `job_id` on it when given.
    pub(super) async fn complete_session(
        &self,
        id: &str,
        owner: &Owner,
        job_id: &str,
    ) -> StorageResult<(SessionRecord, FileRecord)> {
        let mut session = self.visible_session(id, owner).await?;
        let file = if session.complete {
            self.backend
                .find_file(crate::model::Bucket::Videos, session.id)
                .await?
                .ok_or_else(|| {
                    StorageError::Internal(format!("complete upload {} has no file", session.id))
                })?
        } else {
            if session.offset < session.length {
                return Err(StorageError::FailedPrecondition(format!(
                    "the upload has {} of its {} bytes",
                    session.offset, session.length
                )));
            }
            if session.is_expired(DateTime::now()) {
                return Err(StorageError::FailedPrecondition(
                    "the upload expired".into(),
                ));
            }
            let sha256 = self.sha256_of(&session).await?;
            let file = self.backend.complete_session(&session, sha256).await?;
            let expiry = self.upload_expiry;
            session = self
                .change_session(session, None, |current, now| {
                    Ok(current.completed(now, expiry))
                })
                .await?;
            metrics::counter!(crate::meters::UPLOADS, "bucket" => "videos", "outcome" => "stored")
                .increment(1);
            tracing::info!(upload_id = %session.id, size = file.size, "upload session complete");
            file
        };
        if !job_id.is_empty() {
            let job_id = parse_id(job_id, "job")?;
            session = self
                .change_session(session, None, |current, _| {
                    if current.job_id.is_empty() {
                        Ok(current.with_job(job_id))
                    } else if current.job_id == job_id.to_hex() {
                        Ok(current.clone())
                    } else {
                        Err(StorageError::FailedPrecondition(format!(
                            "the upload already became job {}",
                            current.job_id
                        )))
                    }
                })
                .await?;
        }
        Ok((session, file))
    }

    /// Removes the session a deleted job was made of, so its tus resource goes with the job; a
    /// failure only leaves it to expire.
    pub(super) async fn forget_session(&self, id: &str) {
        let Ok(id) = parse_id(id, "upload session") else {
            return;
        };
        let forgotten = match self.backend.find_session(id).await {
            Ok(Some(session)) => self.backend.delete_session(id, session.revision).await,
            other => other.map(|_| false),
        };
        if let Err(error) = forgotten {
            tracing::warn!(error = %service_kit::error::chain(&error), upload_id = %id, "could not remove the upload session of a deleted job");
        }
    }

    /// The SHA-256 of a session's every byte: remembered from its appends, or read again.
    async fn sha256_of(&self, session: &SessionRecord) -> StorageResult<String> {
        if let Some(digest) = self.remembered_digest(session.id, session.length).await {
            return Ok(hex::encode(digest.finalize()));
        }
        metrics::counter!(crate::meters::UPLOAD_REHASHES).increment(1);
        tracing::info!(upload_id = %session.id, "hashing a completed upload from its bytes");
        let mut digest = Sha256::new();
        let mut bytes = self
            .backend
            .read_session(session, 0, session.length)
            .await?;
        let mut read = 0u64;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk?;
            read += chunk.len() as u64;
            digest.update(&chunk);
        }
        if read != session.length {
            return Err(StorageError::Internal(format!(
                "upload session {} holds {read} of its {} bytes",
                session.id, session.length
            )));
        }
        Ok(hex::encode(digest.finalize()))
    }

    /// Removes the sessions past their expiry that nobody is writing to: an unfinished one
    /// with its bytes, a complete one's record only. Returns how many went.
    pub async fn sweep_expired_sessions(&self) -> StorageResult<usize> {
        let now = DateTime::now();
        let mut removed = 0;
        for session in self.backend.expired_sessions(now).await? {
            if session.is_held(now) {
                continue;
            }
            if self
                .backend
                .delete_session(session.id, session.revision)
                .await?
            {
                removed += 1;
                if !session.complete {
                    metrics::counter!(crate::meters::UPLOAD_SESSIONS_EXPIRED).increment(1);
                    tracing::info!(upload_id = %session.id, offset = session.offset, length = session.length, "removed an expired upload");
                }
            }
        }
        Ok(removed)
    }

    /// Sweeps every `interval` until `shutdown`.
    pub async fn sweep_sessions_until(self, interval: Duration, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.sweep_expired_sessions().await {
                tracing::warn!(error = %service_kit::error::chain(&error), "could not sweep expired uploads");
            }
        }
    }
}

/// When an append on `leased` (held as `holder`) first renews its lease: after
/// [`LEASE_RENEWAL`], or in time for a lease kept between appends, which runs out sooner.
fn first_renewal(leased: &SessionRecord, holder: ObjectId) -> Instant {
    let (now, wall_now) = (Instant::now(), DateTime::now());
    let after = match leased.kept_lease_renewal(holder, wall_now) {
        Some(renew_by) => {
            let left = renew_by.timestamp_millis() - wall_now.timestamp_millis();
            LEASE_RENEWAL.min(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
        }
        None => LEASE_RENEWAL,
    };
    now + after
}

/// The SHA-256 of a session's first `covers` bytes, as its hashing task computes it (`None`
/// if hashing failed: the file is then hashed from its bytes when it completes).
#[derive(Debug)]
pub(super) struct PendingDigest {
    covers: u64,
    digest: JoinHandle<Option<Sha256>>,
}

/// Hashes an append's batches in order on a task of its own, carrying a session's digest on.
/// Hashing is a third of storage's work on an upload: here it overlaps storing the batches,
/// and the hash of an append's last bytes does not hold up its answer (it runs while the
/// client sends the next PATCH); the next append or the completion waits for it.
struct Hasher {
    batches: mpsc::Sender<Batch>,
    /// Bytes the digest covers once the task has hashed every batch it was given.
    covers: u64,
    digest: JoinHandle<Option<Sha256>>,
}

impl Hasher {
    /// Hashes on from `digest`, the digest of a session's first `covers` bytes.
    fn start(digest: Sha256, covers: u64) -> Self {
        let (batches, mut queue) = mpsc::channel::<Batch>(HASH_QUEUE_DEPTH);
        let digest = tokio::spawn(async move {
            let mut digest = digest;
            while let Some(batch) = queue.recv().await {
                // Each batch on a blocking thread, which is held only while it hashes: a
                // thread waiting for the next batch could leave none for the writes.
                digest = tokio::task::spawn_blocking(move || {
                    for chunk in batch.chunks() {
                        digest.update(chunk);
                    }
                    digest
                })
                .await
                .ok()?;
            }
            Some(digest)
        });
        Self {
            batches,
            covers,
            digest,
        }
    }

    /// Queues `batch` for hashing (waiting while the task is that far behind).
    async fn hash(&mut self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let length = batch.len() as u64;
        // A task that is gone failed: its digest never covers what was kept, so the session
        // is hashed from its bytes when it completes.
        if self.batches.send(batch).await.is_ok() {
            self.covers += length;
        }
    }

    /// The digest of every batch given, once the task is done with them.
    fn finish(self) -> PendingDigest {
        PendingDigest {
            covers: self.covers,
            digest: self.digest,
        }
    }
}

/// A session's writer on its own task, so that storing one batch overlaps receiving the next
/// (as a multipart upload's do), with durable points on request.
struct QueuedWriter {
    commands: Option<mpsc::Sender<WriterCommand>>,
    task: Option<JoinHandle<StorageResult<ClosedWriter>>>,
}

/// What a [`QueuedWriter`] hands back when it has written everything.
struct ClosedWriter {
    digest: Option<PendingDigest>,
    writer: SessionWriter,
}

/// Bytes for a [`QueuedWriter`] to write.
struct WriterCommand {
    batch: Batch,
    /// For the last bytes before a durable point.
    durable: Option<DurablePoint>,
}

/// What a durable point asks of a [`QueuedWriter`] besides its bytes.
struct DurablePoint {
    /// The change to the session's record to make with them, where the backend can.
    change: Option<RecordChange>,
    /// Where to say whether the point was reached, and how it left the record.
    done: oneshot::Sender<StorageResult<Synced>>,
}

impl WriterCommand {
    /// Whether no later command may join this one's write: a durable point ends a write, so
    /// that its answer waits for no byte queued after it.
    fn is_full(&self) -> bool {
        self.durable.is_some() || self.batch.len() >= GATHERED_BYTES
    }

    /// Takes `later` (the command queued next) into this one's write.
    fn absorb(&mut self, later: WriterCommand) {
        self.batch.append(later.batch);
        self.durable = later.durable;
    }
}

impl QueuedWriter {
    /// A writer that has `hasher` hash every byte it writes.
    fn start(mut writer: SessionWriter, mut hasher: Option<Hasher>) -> Self {
        let (commands, mut queue) = mpsc::channel(WRITE_QUEUE_DEPTH);
        let task = tokio::spawn(async move {
            while let Some(WriterCommand { batch, durable }) =
                next_gathered(&mut queue, WriterCommand::is_full, WriterCommand::absorb).await
            {
                if let Some(hasher) = hasher.as_mut() {
                    hasher.hash(batch.clone()).await;
                }
                match durable {
                    None => writer.write(batch).await?,
                    Some(DurablePoint { change, done }) => {
                        let _ = done.send(writer.sync(batch, change).await);
                    }
                }
            }
            Ok(ClosedWriter {
                digest: hasher.map(Hasher::finish),
                writer,
            })
        });
        Self {
            commands: Some(commands),
            task: Some(task),
        }
    }

    /// Queues the gathered bytes for the backend (waiting while it is behind).
    async fn flush(&mut self, batch: &mut Batch) -> StorageResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.send(WriterCommand {
            batch: batch.take(),
            durable: None,
        })
        .await
    }

    /// Queues the gathered bytes, and waits until they and every byte queued before them are
    /// durable, with `change` made to the session's record where the backend can
    /// ([`SessionWriter::sync`]).
    async fn sync(
        &mut self,
        batch: &mut Batch,
        change: Option<RecordChange>,
    ) -> StorageResult<Synced> {
        let (done, synced) = oneshot::channel();
        self.send(WriterCommand {
            batch: batch.take(),
            durable: Some(DurablePoint { change, done }),
        })
        .await?;
        match synced.await {
            Ok(result) => result,
            Err(_) => Err(self.failure().await),
        }
    }

    async fn send(&mut self, command: WriterCommand) -> StorageResult<()> {
        let sent = match &self.commands {
            Some(commands) => commands.send(command).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.failure().await)
        }
    }

    /// Why the writer stopped: the backend's error.
    async fn failure(&mut self) -> StorageError {
        self.commands = None;
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(error)) => error,
                Ok(Ok(_)) => StorageError::Internal("the session writer stopped".into()),
                Err(error) => StorageError::Task(error),
            },
            None => StorageError::Internal("the session writer stopped".into()),
        }
    }

    /// Lets the writer finish what is queued, and waits for it; the digest of every byte it
    /// wrote and the backend's writer back, unless it failed.
    async fn close(mut self) -> Option<ClosedWriter> {
        self.commands = None;
        self.task.take()?.await.ok()?.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn command(
        bytes: &'static [u8],
        done: Option<oneshot::Sender<StorageResult<Synced>>>,
    ) -> WriterCommand {
        let batch = Batch::from(Bytes::from_static(bytes));
        let durable = done.map(|done| DurablePoint { change: None, done });
        WriterCommand { batch, durable }
    }

    #[tokio::test]
    async fn a_durable_point_ends_a_gathered_write_and_is_answered_for_all_of_it() {
        let (queue, mut queued) = mpsc::channel(8);
        let (done, synced) = oneshot::channel();
        queue.send(command(b"one ", None)).await.unwrap();
        queue.send(command(b"two ", Some(done))).await.unwrap();
        queue.send(command(b"three", None)).await.unwrap();
        let first = next_gathered(&mut queued, WriterCommand::is_full, WriterCommand::absorb)
            .await
            .unwrap();
        assert_eq!(first.batch.chunks().concat(), b"one two ");
        first
            .durable
            .expect("the durable point's answer goes with its write")
            .done
            .send(Ok(Synced::Unrecorded(KeptTail::default())))
            .unwrap();
        assert!(synced.await.unwrap().is_ok());
        let second = next_gathered(&mut queued, WriterCommand::is_full, WriterCommand::absorb)
            .await
            .unwrap();
        assert_eq!(second.batch.chunks().concat(), b"three");
        assert!(second.durable.is_none());
    }
}
