//! Disk space: room for a mutation is reserved before anything is written,
//! and heartbeats report the free space and whether it is below the
//! server's reserve ("full").
//!
//! A write that runs out of space half-way would leave bytes on disk that
//! the checksums do not describe (inside the acknowledged length, a block
//! no longer verifies) or a torn metadata slot. So every mutation first
//! asks the file system for the blocks it is about to write
//! (`fallocate`): on a full disk that fails with ENOSPC before a single
//! byte changed, and the mutation fails with `NoSpace` leaving the replica
//! exactly as acknowledged.

use std::fs::File;
use std::path::Path;

use gfs_common::{Error, Result};
use rustix::fs::FallocateFlags;
use rustix::io::Errno;

/// Allocates the blocks of `len` bytes at `offset` of `file` (extending the
/// file if needed), so a write there cannot then fail for lack of space.
/// File systems without `fallocate` are let through: there the write
/// itself reports ENOSPC.
pub(crate) fn reserve(file: &File, offset: u64, len: u64, what: &str) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS => Ok(()),
        Err(e) => Err(Error::io(what, e.into())),
    }
}

/// Size and free space of the file system holding a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Total bytes.
    pub capacity: u64,
    /// Bytes an unprivileged writer may still use (`f_bavail`).
    pub free: u64,
}

impl DiskSpace {
    /// Returns the space of the file system holding `dir` (statvfs).
    pub fn of(dir: &Path) -> Result<DiskSpace> {
        let s = rustix::fs::statvfs(dir).map_err(|e| Error::io(format!("statvfs {}", dir.display()), e.into()))?;
        Ok(DiskSpace { capacity: s.f_blocks.saturating_mul(s.f_frsize), free: s.f_bavail.saturating_mul(s.f_frsize) })
    }

    /// True when less than `reserve` bytes are free: the master should
    /// place no new replica here (a chunk placed now could not grow).
    pub fn is_full(&self, reserve: u64) -> bool {
        self.free < reserve
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_means_below_the_reserve() {
        let d = DiskSpace { capacity: 100, free: 10 };
        assert!(d.is_full(11));
        assert!(!d.is_full(10));
        assert!(!d.is_full(0));
    }

    #[test]
    fn reserve_and_statvfs_work_on_a_normal_disk() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(dir.path().join("f")).unwrap();
        reserve(&f, 0, 0, "test").unwrap();
        reserve(&f, 4096, 100, "test").unwrap();
        let space = DiskSpace::of(dir.path()).unwrap();
        assert!(space.capacity > 0 && space.free <= space.capacity);
    }
}
