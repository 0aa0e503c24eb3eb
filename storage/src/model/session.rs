//! Resumable upload sessions: a video's bytes gathering over many appends before it becomes a
//! file. The rules here (who may append, when a session expires, who holds the one writer's
//! lease) are pure, so they are tested without a database; the backends keep the record with a
//! compare-and-set on its revision, as they do jobs.

use super::{DateTime, MAX_FILENAME_BYTES, ObjectId, timestamp};
use crate::error::{StorageError, StorageResult};
use proto::storage::v1 as pb;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a writer's lease lasts without renewal: a storage replica that died mid-append
/// holds its session no longer than this.
pub const WRITER_LEASE: Duration = Duration::from_secs(30);
/// How often a running append renews its lease (well inside [`WRITER_LEASE`]).
pub const LEASE_RENEWAL: Duration = Duration::from_secs(10);
/// How long a storage replica keeps a session's lease after an append through it ends, so
/// that the client's next PATCH, when it comes through the same replica, starts without a
/// write of the record (a round trip to the database in front of every PATCH). Another
/// replica waits this long at most, once: then the session is marked shared.
pub const KEPT_LEASE: Duration = Duration::from_secs(2);
/// An append starts on a kept lease only while at least this much of it is left, and renews
/// it this long before it runs out: room for a write still in flight and for the clocks of
/// two replicas to disagree.
pub const KEPT_LEASE_MARGIN: Duration = Duration::from_secs(1);
/// The longest `Upload-Metadata` kept, in bytes (tus clients send a few names and types).
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// A resumable upload session. `revision` grows with every change; backends store a change
/// only if the revision they hold is the one it was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Its id, which the file takes when complete.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Compare-and-set counter.
    pub revision: i64,
    /// Who owns it.
    pub owner_id: String,
    /// The file's declared length.
    pub length: u64,
    /// Bytes durably stored: everything before it is kept, anything after it is not.
    pub offset: u64,
    /// The name the user gave the file.
    pub filename: String,
    /// The content type the uploader declared.
    pub content_type: String,
    /// The client's description of the upload, as sent.
    pub metadata: String,
    /// When it was created.
    pub created_at: DateTime,
    /// When it is removed if nothing more happens.
    pub expires_at: DateTime,
    /// Every byte is in and the file exists.
    pub complete: bool,
    /// The job made of the file, once recorded.
    #[serde(default)]
    pub job_id: String,
    /// The append writing to it now, if any.
    #[serde(default)]
    pub writer: Option<WriterLease>,
    /// Appends to it came through more than one storage replica: none keeps its lease between
    /// appends (the other would wait for it every time).
    #[serde(default)]
    pub shared: bool,
}

/// One append's hold on a session: nobody else writes until it is released or runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterLease {
    /// Which append holds it.
    pub holder: ObjectId,
    /// When it runs out unless renewed.
    pub until: DateTime,
    /// Kept by a storage replica (then `holder`) between appends through it: it may be
    /// appending again without the record saying so.
    #[serde(default)]
    pub kept: bool,
}

/// What a new session is asked to be.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Its owner.
    pub owner_id: String,
    /// The file's length.
    pub length: u64,
    /// The file's name.
    pub filename: String,
    /// The declared content type.
    pub content_type: String,
    /// The client's description.
    pub metadata: String,
}

impl NewSession {
    /// Checks a creation request against the size limit.
    pub fn from_request(
        request: &pb::CreateUploadSessionRequest,
        max_file_bytes: u64,
    ) -> StorageResult<Self> {
        if request.owner_id.is_empty() {
            return Err(StorageError::InvalidArgument(
                "owner_id is required for an upload session".into(),
            ));
        }
        if request.length == 0 {
            return Err(StorageError::InvalidArgument(
                "an upload session needs a length of at least one byte".into(),
            ));
        }
        if request.length > max_file_bytes {
            return Err(StorageError::TooLarge {
                limit: max_file_bytes,
            });
        }
        if request.filename.len() > MAX_FILENAME_BYTES {
            return Err(StorageError::InvalidArgument(format!(
                "filename is longer than {MAX_FILENAME_BYTES} bytes"
            )));
        }
        if request.metadata.len() > MAX_METADATA_BYTES {
            return Err(StorageError::InvalidArgument(format!(
                "the upload's metadata is longer than {MAX_METADATA_BYTES} bytes"
            )));
        }
        Ok(Self {
            owner_id: request.owner_id.clone(),
            length: request.length,
            filename: request.filename.clone(),
            content_type: request.content_type.clone(),
            metadata: request.metadata.clone(),
        })
    }

    /// The session, created `now`, expiring `expiry` later.
    pub fn into_record(self, now: DateTime, expiry: Duration) -> SessionRecord {
        SessionRecord {
            id: ObjectId::new(),
            revision: 0,
            owner_id: self.owner_id,
            length: self.length,
            offset: 0,
            filename: self.filename,
            content_type: self.content_type,
            metadata: self.metadata,
            created_at: now,
            expires_at: later(now, expiry),
            complete: false,
            job_id: String::new(),
            writer: None,
            shared: false,
        }
    }
}

impl SessionRecord {
    /// Whether it outlived its expiry at `now`.
    pub fn is_expired(&self, now: DateTime) -> bool {
        self.expires_at <= now
    }

    /// Why an append at `offset`, of `length` bytes when that is known, cannot start now, if
    /// it cannot.
    pub fn refuse_append(
        &self,
        offset: u64,
        length: Option<u64>,
        now: DateTime,
    ) -> StorageResult<()> {
        if self.complete {
            return Err(StorageError::FailedPrecondition(
                "the upload is complete; it takes no more bytes".into(),
            ));
        }
        if self.is_expired(now) {
            return Err(StorageError::FailedPrecondition(
                "the upload expired; it takes no more bytes".into(),
            ));
        }
        if offset != self.offset {
            return Err(StorageError::FailedPrecondition(format!(
                "the upload is at offset {}, not {offset}",
                self.offset
            )));
        }
        if length.is_some_and(|length| offset.saturating_add(length) > self.length) {
            return Err(StorageError::PastLength {
                length: self.length,
            });
        }
        Ok(())
    }

    /// The session with `holder` writing to it until a lease from `now` runs out; `None` while
    /// another append holds a lease that has not.
    pub fn leased_to(&self, holder: ObjectId, now: DateTime) -> Option<Self> {
        match self.writer {
            Some(lease) if lease.holder != holder && lease.until > now => None,
            _ => Some(Self {
                revision: self.revision + 1,
                writer: Some(WriterLease {
                    holder,
                    until: later(now, WRITER_LEASE),
                    kept: false,
                }),
                ..self.clone()
            }),
        }
    }

    /// Whether this record and `other` differ only in the writer's lease (and the revision
    /// that counts the change): a change a crash may lose, since a lost lease only ends
    /// sooner.
    pub fn differs_only_in_lease(&self, other: &SessionRecord) -> bool {
        let mut same = other.clone();
        same.revision = self.revision;
        same.writer = self.writer;
        same == *self
    }

    /// Whether this record and `other` differ only in how far the upload got: the offset, the
    /// expiry an append pushes back, the writer's lease and the revision. An append's end (or
    /// its renewal) is such a change, made at every PATCH; a backend may store it apart from
    /// the rest of the record, which it never touches.
    pub fn differs_only_in_progress(&self, other: &SessionRecord) -> bool {
        let mut same = other.clone();
        same.revision = self.revision;
        same.offset = self.offset;
        same.expires_at = self.expires_at;
        same.writer = self.writer;
        same == *self
    }

    /// Whether an append holds a lease that has not run out at `now` (a lease a replica
    /// keeps between appends is no append).
    pub fn is_appending(&self, now: DateTime) -> bool {
        self.writer
            .is_some_and(|lease| lease.until > now && !lease.kept)
    }

    /// Whether anyone holds a lease that has not run out at `now`: an append, or a replica
    /// that may start one without saying so.
    pub fn is_held(&self, now: DateTime) -> bool {
        self.writer.is_some_and(|lease| lease.until > now)
    }

    /// Whether `replica` keeps the lease between appends.
    pub fn is_kept_by(&self, replica: ObjectId) -> bool {
        self.writer
            .is_some_and(|lease| lease.kept && lease.holder == replica)
    }

    /// Whether another replica than `replica` keeps a lease that has not run out at `now`.
    pub fn is_kept_by_another(&self, replica: ObjectId, now: DateTime) -> bool {
        self.writer
            .is_some_and(|lease| lease.kept && lease.holder != replica && lease.until > now)
    }

    /// When an append may start on the lease `replica` keeps at `now` without writing the
    /// record, the time it must renew the lease by; `None` when it may not (the lease is
    /// another's, is not kept, or is too close to running out).
    pub fn kept_lease_renewal(&self, replica: ObjectId, now: DateTime) -> Option<DateTime> {
        let lease = self
            .writer
            .filter(|lease| lease.kept && lease.holder == replica)?;
        let renew_by = earlier(lease.until, KEPT_LEASE_MARGIN);
        (renew_by > now).then_some(renew_by)
    }

    /// The session with the lease kept by `replica` from `now` on, after an append through it
    /// ended with its bytes kept; released instead once the session is shared or has every
    /// byte (no append follows).
    pub fn kept_by(&self, replica: ObjectId, now: DateTime) -> Self {
        let keep = !self.shared && !self.complete && self.offset < self.length;
        Self {
            writer: keep.then(|| WriterLease {
                holder: replica,
                until: later(now, KEPT_LEASE),
                kept: true,
            }),
            ..self.clone()
        }
    }

    /// The session with a lease that `replica` keeps let go: only the replica itself, knowing
    /// that no append through it runs, may do that.
    pub fn released_by(&self, replica: ObjectId) -> Self {
        Self {
            writer: self.writer.filter(|_| !self.is_kept_by(replica)),
            ..self.clone()
        }
    }

    /// The session marked as appended to through more than one replica.
    pub fn shared(&self) -> Self {
        Self {
            shared: true,
            ..self.clone()
        }
    }

    /// Whether `holder` holds the writer's lease (run out or not).
    pub fn is_leased_to(&self, holder: ObjectId) -> bool {
        self.writer.is_some_and(|lease| lease.holder == holder)
    }

    /// The session with its append over: bytes up to `offset` kept (the same offset when
    /// the append kept nothing), the expiry pushed back when it grew, the lease released.
    pub fn appended(&self, offset: u64, now: DateTime, expiry: Duration) -> Self {
        let grew = offset > self.offset;
        Self {
            revision: self.revision + 1,
            offset,
            expires_at: if grew {
                later(now, expiry)
            } else {
                self.expires_at
            },
            writer: None,
            ..self.clone()
        }
    }

    /// The session with only its bytes before `offset` kept, after those past it were found
    /// gone.
    pub fn rolled_back_to(&self, offset: u64) -> Self {
        Self {
            revision: self.revision + 1,
            offset: offset.min(self.offset),
            ..self.clone()
        }
    }

    /// The session with bytes up to `offset` kept so far and the lease renewed, while its
    /// append goes on.
    pub fn progressed(&self, offset: u64, now: DateTime, expiry: Duration) -> Self {
        Self {
            writer: self.writer.map(|lease| WriterLease {
                until: later(now, WRITER_LEASE),
                kept: false,
                ..lease
            }),
            ..self.appended(offset, now, expiry)
        }
    }

    /// The session once its file exists, remembered for `expiry` more so a client asking after
    /// it learns the job.
    pub fn completed(&self, now: DateTime, expiry: Duration) -> Self {
        Self {
            revision: self.revision + 1,
            complete: true,
            expires_at: later(now, expiry),
            writer: None,
            ..self.clone()
        }
    }

    /// The session naming the job made of its file.
    pub fn with_job(&self, job_id: ObjectId) -> Self {
        Self {
            revision: self.revision + 1,
            job_id: job_id.to_hex(),
            ..self.clone()
        }
    }

    /// The record as the API shows it at `now`.
    pub fn to_proto(&self, now: DateTime) -> pb::UploadSession {
        pb::UploadSession {
            id: self.id.to_hex(),
            owner_id: self.owner_id.clone(),
            length: self.length,
            offset: self.offset,
            filename: self.filename.clone(),
            content_type: self.content_type.clone(),
            metadata: self.metadata.clone(),
            created_at: Some(timestamp(self.created_at)),
            expires_at: Some(timestamp(self.expires_at)),
            expired: !self.complete && self.is_expired(now),
            complete: self.complete,
            job_id: self.job_id.clone(),
            appending: self.is_appending(now),
        }
    }
}

/// `after` past `now`.
fn later(now: DateTime, after: Duration) -> DateTime {
    DateTime::from_millis(now.timestamp_millis().saturating_add(millis(after)))
}

/// `before` ahead of `time`.
fn earlier(time: DateTime, before: Duration) -> DateTime {
    DateTime::from_millis(time.timestamp_millis().saturating_sub(millis(before)))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn session(length: u64) -> SessionRecord {
        NewSession {
            owner_id: "alice".into(),
            length,
            filename: "clip.mp4".into(),
            content_type: "video/mp4".into(),
            metadata: String::new(),
        }
        .into_record(DateTime::from_millis(1_000_000), DAY)
    }

    fn at(millis: i64) -> DateTime {
        DateTime::from_millis(millis)
    }

    #[test]
    fn only_taking_or_letting_go_of_the_lease_is_a_change_a_crash_may_lose() {
        let session = session(100);
        let now = at(2_000_000);
        let held = session.leased_to(ObjectId::new(), now).unwrap();
        assert!(session.differs_only_in_lease(&held));
        let released = held.appended(held.offset, now, DAY);
        assert!(held.differs_only_in_lease(&released), "nothing kept");
        let grown = held.appended(40, now, DAY);
        assert!(!held.differs_only_in_lease(&grown), "bytes kept");
        let renewed = held.progressed(40, at(2_010_000), DAY);
        assert!(
            !held.differs_only_in_lease(&renewed),
            "bytes kept while appending"
        );
        let completed = session.completed(now, DAY);
        assert!(!session.differs_only_in_lease(&completed));
    }

    #[test]
    fn an_append_changes_only_the_progress_but_completion_and_the_job_do_not() {
        let session = session(100);
        let now = at(2_000_000);
        let held = session.leased_to(ObjectId::new(), now).unwrap();
        assert!(session.differs_only_in_progress(&held), "the lease");
        assert!(held.differs_only_in_progress(&held.appended(40, now, DAY)));
        assert!(held.differs_only_in_progress(&held.progressed(40, at(2_010_000), DAY)));
        let completed = held.appended(100, now, DAY).completed(now, DAY);
        assert!(!held.differs_only_in_progress(&completed));
        assert!(!completed.differs_only_in_progress(&completed.with_job(ObjectId::new())));
        let renamed = SessionRecord {
            filename: "other.mp4".into(),
            ..held.appended(40, now, DAY)
        };
        assert!(!held.differs_only_in_progress(&renamed));
    }

    #[test]
    fn one_writer_holds_a_session_until_it_releases_or_its_lease_runs_out() {
        let session = session(100);
        let (first, second) = (ObjectId::new(), ObjectId::new());
        let now = at(2_000_000);
        let held = session
            .leased_to(first, now)
            .expect("a free session is leased");
        assert!(held.leased_to(second, now).is_none(), "held by the first");
        assert!(
            held.leased_to(first, now).is_some(),
            "the holder may renew its own lease"
        );
        let lease_ms = i64::try_from(WRITER_LEASE.as_millis()).unwrap();
        assert!(held.leased_to(second, at(2_000_000 + lease_ms)).is_some());
        let released = held.appended(40, now, DAY);
        assert_eq!(released.writer, None);
        assert!(released.leased_to(second, now).is_some());
    }

    #[test]
    fn a_replica_keeps_the_lease_after_an_append_and_starts_the_next_on_it_while_enough_is_left() {
        let session = session(100);
        let (append, replica, other_replica) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        let now = at(2_000_000);
        let kept = session
            .leased_to(append, now)
            .unwrap()
            .appended(40, now, DAY)
            .kept_by(replica, now);
        assert!(kept.is_kept_by(replica));
        assert!(
            !kept.is_appending(now),
            "kept between appends, not appending"
        );
        assert!(kept.is_held(now));
        assert!(kept.is_kept_by_another(other_replica, now));
        assert!(!kept.is_kept_by_another(replica, now));
        assert!(
            kept.leased_to(ObjectId::new(), now).is_none(),
            "nobody else takes it while it is kept"
        );

        let kept_ms = millis(KEPT_LEASE);
        let margin_ms = millis(KEPT_LEASE_MARGIN);
        assert_eq!(
            kept.kept_lease_renewal(replica, now),
            Some(at(2_000_000 + kept_ms - margin_ms))
        );
        assert_eq!(kept.kept_lease_renewal(other_replica, now), None);
        let too_late = at(2_000_000 + kept_ms - margin_ms);
        assert_eq!(
            kept.kept_lease_renewal(replica, too_late),
            None,
            "too close to running out"
        );
        let run_out = at(2_000_000 + kept_ms);
        assert!(!kept.is_held(run_out));
        assert!(kept.leased_to(ObjectId::new(), run_out).is_some());

        let renewed = kept.progressed(60, at(2_000_500), DAY);
        assert!(
            renewed.is_appending(at(2_000_500)),
            "renewed by an append that runs"
        );
        assert!(renewed.is_leased_to(replica));
    }

    #[test]
    fn no_lease_is_kept_once_the_session_is_shared_or_has_every_byte() {
        let (replica, now) = (ObjectId::new(), at(2_000_000));
        let session = session(100);
        assert!(
            session
                .appended(40, now, DAY)
                .kept_by(replica, now)
                .is_held(now)
        );
        let shared = session
            .shared()
            .appended(40, now, DAY)
            .kept_by(replica, now);
        assert_eq!(shared.writer, None);
        let full = session.appended(100, now, DAY).kept_by(replica, now);
        assert_eq!(full.writer, None);
    }

    #[test]
    fn only_the_replica_that_keeps_a_lease_lets_it_go_before_it_runs_out() {
        let (replica, other_replica, now) = (ObjectId::new(), ObjectId::new(), at(2_000_000));
        let kept = session(100).appended(40, now, DAY).kept_by(replica, now);
        assert_eq!(kept.released_by(replica).writer, None);
        assert_eq!(kept.released_by(other_replica), kept);
        let appending = session(100).leased_to(replica, now).unwrap();
        assert_eq!(
            appending.released_by(replica),
            appending,
            "an append's lease is not kept"
        );
    }

    #[test]
    fn an_append_must_start_at_the_offset_of_a_live_incomplete_session() {
        let session = session(100).appended(40, at(2_000_000), DAY);
        let now = at(3_000_000);
        assert!(session.refuse_append(40, None, now).is_ok());
        assert!(session.refuse_append(40, Some(60), now).is_ok());
        let wrong = session.refuse_append(0, None, now).unwrap_err().to_string();
        assert!(wrong.contains("at offset 40, not 0"), "{wrong}");
        let expired = session
            .refuse_append(40, None, session.expires_at)
            .unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");
        let complete = session
            .completed(now, DAY)
            .refuse_append(40, None, now)
            .unwrap_err();
        assert!(complete.to_string().contains("complete"), "{complete}");
        let past = session.refuse_append(40, Some(61), now).unwrap_err();
        assert!(
            matches!(past, StorageError::PastLength { length: 100 }),
            "{past}"
        );
    }

    #[test]
    fn only_an_append_that_kept_bytes_pushes_the_expiry_back() {
        let session = session(100);
        let later_on = at(5_000_000);
        assert_eq!(
            session.appended(0, later_on, DAY).expires_at,
            session.expires_at
        );
        assert!(session.appended(10, later_on, DAY).expires_at > session.expires_at);
        assert_eq!(
            session.progressed(10, later_on, DAY).revision,
            session.revision + 1
        );
    }

    #[test]
    fn creation_refuses_an_empty_or_oversized_file_and_long_metadata() {
        let request = |length: u64, metadata: &str| pb::CreateUploadSessionRequest {
            owner_id: "alice".into(),
            length,
            metadata: metadata.into(),
            ..Default::default()
        };
        assert!(NewSession::from_request(&request(10, ""), 10).is_ok());
        assert!(NewSession::from_request(&request(0, ""), 10).is_err());
        assert!(matches!(
            NewSession::from_request(&request(11, ""), 10),
            Err(StorageError::TooLarge { limit: 10 })
        ));
        let long = "m".repeat(MAX_METADATA_BYTES + 1);
        assert!(NewSession::from_request(&request(10, &long), 10).is_err());
    }
}
