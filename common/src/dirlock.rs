//! One process per data directory.
//!
//! Two servers on one data directory (a master started twice by mistake, a
//! stray local run on a pod's volume) would interleave writes to the same
//! Raft log or chunk files and corrupt them. Every server therefore holds
//! an exclusive, non-blocking `flock` on `DIR/gfs.lock` from before it
//! reads the directory until it has stopped; a second one fails at start
//! with an error naming the directory and the holder's pid.
//!
//! `flock` belongs to the open file, not the process: two opens in one
//! process exclude each other too (in-process test clusters), and the
//! kernel drops the lock when the holder exits, even by `kill -9`, so a
//! crash never leaves a stale lock behind. The file stays; only the lock
//! matters. `gfs server` locks each of its sub-directories
//! (`master`, `chunkserver-N`) on its own.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::{Error, Result};

/// Name of the lock file inside a data directory.
pub const LOCK_FILE: &str = "gfs.lock";

/// An exclusive lock on a data directory, released when dropped.
#[derive(Debug)]
pub struct DirLock {
    /// Holds the lock while open.
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and locks it for this process, recording
    /// the pid in the lock file for whoever finds it locked. Fails with
    /// `Busy` naming the directory (and the holder's pid) when another
    /// process, or another server in this one, holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create data dir {}", dir.display()), e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    pid if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => format!("pid {pid}"),
                    _ => "pid unknown".to_string(),
                };
                return Err(Error::Busy(format!(
                    "data dir {} is in use by another gfs process ({holder}, holding {}); one process per data dir",
                    dir.display(),
                    path.display()
                )));
            }
            Err(e) => return Err(Error::io(format!("lock {}", path.display()), e.into())),
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_naming_the_dir_and_pid_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = DirLock::acquire(&dir).unwrap();
        assert_eq!(first.path(), dir.join(LOCK_FILE));
        let err = DirLock::acquire(&dir).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Busy(_)), "{err:?}");
        assert!(text.contains(&dir.display().to_string()), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        // Another directory is not affected.
        let other = DirLock::acquire(&tmp.path().join("other")).unwrap();
        drop(first);
        let again = DirLock::acquire(&dir).unwrap();
        drop((again, other));
    }
}
