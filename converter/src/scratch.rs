//! The converter's scratch space on disk, and the clean-up a killed converter cannot do.
//!
//! A job's temp files go when the job ends, but a process killed outright (SIGKILL, the OOM
//! killer, a lost node with a persistent volume) leaves its jobs' files behind. So each
//! converter process works in a directory of its own under `WORK_DIR` and holds an exclusive
//! lock on a file in it for as long as it lives; the kernel drops the lock when the process
//! dies, however it dies. A converter starting on the same `WORK_DIR` removes every directory
//! whose lock it can take: those of dead processes only, so converters can share a `WORK_DIR`.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// How every process's directory is named.
const PREFIX: &str = "mp3converter-run-";
const LOCK_FILE: &str = ".lock";
/// A directory being set up, not yet locked: the sweep leaves it alone.
const STARTING: &str = ".mp3converter-starting-";

/// This process's directory under `WORK_DIR`; removed when dropped.
#[derive(Debug)]
pub struct ScratchSpace {
    dir: PathBuf,
    _lock: File,
}

impl ScratchSpace {
    /// Removes what dead converters left in `work_dir`, then makes and locks this process's
    /// directory. Returns it and how many dead converters' directories were removed.
    pub fn claim(work_dir: &Path) -> io::Result<(Self, usize)> {
        let swept = sweep(work_dir)?;
        // Built under a name the sweep ignores, and only renamed into view once locked, so a
        // converter starting at the same moment can never take it for a dead one's.
        let building = tempfile::Builder::new()
            .prefix(STARTING)
            .tempdir_in(work_dir)?;
        let lock = File::create(building.path().join(LOCK_FILE))?;
        lock.try_lock().map_err(io::Error::other)?;
        let building = building.keep();
        let suffix = building
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix(STARTING))
            .expect("tempfile names the directory PREFIX + random suffix")
            .to_owned();
        let dir = work_dir.join(format!("{PREFIX}{suffix}"));
        fs::rename(building, &dir)?;
        Ok((Self { dir, _lock: lock }, swept))
    }

    /// Where this process's jobs make their temp directories.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ScratchSpace {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), %error, "could not remove the scratch directory");
        }
    }
}

/// Removes every converter directory in `work_dir` whose lock is free.
fn sweep(work_dir: &Path) -> io::Result<usize> {
    let mut swept = 0;
    for entry in fs::read_dir(work_dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let Ok(lock) = File::open(entry.path().join(LOCK_FILE)) else {
            continue;
        };
        // Held while removing, so nothing can claim the directory meanwhile.
        if lock.try_lock().is_ok() {
            fs::remove_dir_all(entry.path())?;
            swept += 1;
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_dead_converters_directory_is_removed_and_a_live_ones_is_kept() {
        let work_dir = tempfile::tempdir().unwrap();
        // A dead converter's leftovers: its directory, with an unlocked lock file and a job.
        let dead = work_dir.path().join(format!("{PREFIX}dead"));
        fs::create_dir_all(dead.join("mp3converter-job-1")).unwrap();
        fs::write(dead.join(LOCK_FILE), b"").unwrap();
        fs::write(dead.join("mp3converter-job-1/input"), b"video").unwrap();
        // Someone else's file in the same directory is left alone.
        fs::write(work_dir.path().join("unrelated"), b"keep").unwrap();

        let (live, swept) = ScratchSpace::claim(work_dir.path()).unwrap();
        assert_eq!(swept, 1);
        assert!(!dead.exists());
        assert!(live.path().starts_with(work_dir.path()));

        // A second converter on the same WORK_DIR keeps the first one's directory.
        let (other, swept) = ScratchSpace::claim(work_dir.path()).unwrap();
        assert_eq!(swept, 0);
        assert!(live.path().exists());
        assert_eq!(
            entries(work_dir.path()).len(),
            3,
            "{:?}",
            entries(work_dir.path())
        );

        drop(live);
        drop(other);
        assert_eq!(entries(work_dir.path()), vec!["unrelated".to_owned()]);
    }
}
