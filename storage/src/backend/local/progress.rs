//! How far an upload session got, kept in place beside its record in the local directory.
//!
//! Every append ends by recording its session's progress (the offset, the expiry it pushed
//! back, the revision). Written as a whole new record (a temporary file flushed, renamed into
//! place, its directory flushed) that cost a 5 MiB PATCH about 0.9 ms of its 12, in three
//! flushes one after the other. Here the progress overwrites one of two fixed slots of a small
//! file, flushed once: overwriting bytes the file already has changes none of its metadata, so
//! the flush writes one block and commits no journal. The slot overwritten is always the older
//! one and each carries a checksum, so a write torn by a crash leaves the other slot, the
//! progress before it, to be read; the bytes past that offset are dropped by the next append.
//!
//! ```text
//! file: slot 0 | slot 1
//! slot: revision (i64) | offset (u64) | expires_at, ms (i64) | checksum (8 bytes)   little-endian
//! ```

use crate::model::{DateTime, session::SessionRecord};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::Path;

const FIELDS_BYTES: usize = 24;
const CHECKSUM_BYTES: usize = 8;
const SLOT_BYTES: usize = FIELDS_BYTES + CHECKSUM_BYTES;
const SLOTS: usize = 2;
const FILE_BYTES: usize = SLOT_BYTES * SLOTS;

/// The part of a session an append changes (besides its lease, which is kept in memory only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Progress {
    revision: i64,
    offset: u64,
    expires_at: DateTime,
}

impl Progress {
    pub(super) fn of(session: &SessionRecord) -> Self {
        Self {
            revision: session.revision,
            offset: session.offset,
            expires_at: session.expires_at,
        }
    }

    /// Brings `session` up to this progress, unless its record is as new or newer (a change
    /// written as a whole record since, completion say, leaves older progress behind).
    pub(super) fn apply_to(self, session: &mut SessionRecord) {
        if self.revision > session.revision {
            session.revision = self.revision;
            session.offset = self.offset;
            session.expires_at = self.expires_at;
        }
    }

    fn encode(self) -> [u8; SLOT_BYTES] {
        let mut slot = [0; SLOT_BYTES];
        slot[0..8].copy_from_slice(&self.revision.to_le_bytes());
        slot[8..16].copy_from_slice(&self.offset.to_le_bytes());
        slot[16..24].copy_from_slice(&self.expires_at.timestamp_millis().to_le_bytes());
        let checksum = checksum(&slot[..FIELDS_BYTES]);
        slot[FIELDS_BYTES..].copy_from_slice(&checksum);
        slot
    }

    /// The progress in `slot`, unless it was never written or its write was torn.
    fn decode(slot: &[u8]) -> Option<Self> {
        let (fields, stored) = slot.split_at(FIELDS_BYTES);
        if stored != checksum(fields) {
            return None;
        }
        let field = |at: usize| -> [u8; 8] { fields[at..at + 8].try_into().expect("8 bytes") };
        Some(Self {
            revision: i64::from_le_bytes(field(0)),
            offset: u64::from_le_bytes(field(8)),
            expires_at: DateTime::from_millis(i64::from_le_bytes(field(16))),
        })
    }
}

fn checksum(fields: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let digest = Sha256::digest(fields);
    digest[..CHECKSUM_BYTES]
        .try_into()
        .expect("a digest is longer")
}

/// The newest intact progress in the file at `path`; `None` if there is no file or no slot
/// in it is intact.
pub(super) fn read(path: &Path) -> io::Result<Option<Progress>> {
    match File::open(path) {
        Ok(file) => Ok(newest(&read_slots(&file)?).map(|(_, progress)| progress)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Stores `progress` in the file at `path` over its older slot and flushes it to disk.
pub(super) fn write(path: &Path, progress: Progress) -> io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let slots = read_slots(&file)?;
    let at = (older_slot(&slots) * SLOT_BYTES) as u64;
    if file.metadata()?.len() < FILE_BYTES as u64 {
        // New (or cut short by a crash before its first flush): given its full length once,
        // so every later write overwrites and its flush changes no metadata.
        file.set_len(FILE_BYTES as u64)?;
        file.write_all_at(&progress.encode(), at)?;
        file.sync_all()?;
        return super::sync_parent_dir(path);
    }
    file.write_all_at(&progress.encode(), at)?;
    file.sync_data()
}

/// Both slots as they are on disk; what a short file lacks reads as zeros (no slot).
fn read_slots(file: &File) -> io::Result<[u8; FILE_BYTES]> {
    let mut slots = [0; FILE_BYTES];
    let mut filled = 0;
    while filled < FILE_BYTES {
        match file.read_at(&mut slots[filled..], filled as u64)? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(slots)
}

/// The index and progress of the slot holding the newest intact progress.
fn newest(slots: &[u8; FILE_BYTES]) -> Option<(usize, Progress)> {
    slots
        .chunks_exact(SLOT_BYTES)
        .enumerate()
        .filter_map(|(index, slot)| Progress::decode(slot).map(|progress| (index, progress)))
        .max_by_key(|(_, progress)| progress.revision)
}

/// The slot to overwrite: whichever does not hold the newest intact progress.
fn older_slot(slots: &[u8; FILE_BYTES]) -> usize {
    match newest(slots) {
        Some((index, _)) => (index + 1) % SLOTS,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(revision: i64, offset: u64) -> Progress {
        Progress {
            revision,
            offset,
            expires_at: DateTime::from_millis(1_000_000 + revision),
        }
    }

    #[test]
    fn each_write_takes_the_slot_the_newest_progress_is_not_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.progress");
        assert_eq!(read(&path).unwrap(), None, "no file yet");
        for revision in 1..=5 {
            write(&path, progress(revision, revision as u64 * 100)).unwrap();
            assert_eq!(
                read(&path).unwrap(),
                Some(progress(revision, revision as u64 * 100))
            );
        }
        let slots = read_slots(&File::open(&path).unwrap()).unwrap();
        let kept: Vec<_> = slots
            .chunks_exact(SLOT_BYTES)
            .map(Progress::decode)
            .collect();
        assert_eq!(kept, [Some(progress(5, 500)), Some(progress(4, 400))]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), FILE_BYTES as u64);
    }

    #[test]
    fn a_torn_write_leaves_the_progress_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.progress");
        write(&path, progress(3, 300)).unwrap();
        write(&path, progress(4, 400)).unwrap();
        // The next write goes to the slot holding revision 3; a crash tears it half-way.
        let torn_slot = older_slot(&read_slots(&File::open(&path).unwrap()).unwrap());
        let half = &progress(5, 500).encode()[..SLOT_BYTES / 2];
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(half, (torn_slot * SLOT_BYTES) as u64)
            .unwrap();
        assert_eq!(read(&path).unwrap(), Some(progress(4, 400)));
        // Nor is the intact slot the next write's: it overwrites the torn one.
        write(&path, progress(5, 500)).unwrap();
        write(&path, progress(6, 600)).unwrap();
        assert_eq!(read(&path).unwrap(), Some(progress(6, 600)));
    }

    #[test]
    fn a_file_cut_short_or_zeroed_holds_no_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.progress");
        std::fs::write(&path, [0; FILE_BYTES]).unwrap();
        assert_eq!(read(&path).unwrap(), None);
        std::fs::write(&path, &progress(2, 20).encode()[..10]).unwrap();
        assert_eq!(read(&path).unwrap(), None);
        write(&path, progress(3, 30)).unwrap();
        assert_eq!(read(&path).unwrap(), Some(progress(3, 30)));
    }

    #[test]
    fn progress_older_than_the_record_leaves_it_as_it_is() {
        let mut record = crate::model::session::NewSession {
            owner_id: "alice".into(),
            length: 1000,
            filename: "clip.mp4".into(),
            content_type: "video/mp4".into(),
            metadata: String::new(),
        }
        .into_record(DateTime::from_millis(0), std::time::Duration::from_secs(60));
        record.revision = 7;
        let before = record.clone();
        progress(7, 700).apply_to(&mut record);
        assert_eq!(record, before);
        progress(8, 800).apply_to(&mut record);
        assert_eq!((record.revision, record.offset), (8, 800));
        assert_eq!(record.expires_at, DateTime::from_millis(1_000_008));
    }
}
