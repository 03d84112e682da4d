//! VerifyChunk: the master asks the holder of a replica reported corrupt to
//! re-read it whole through the checksummed path before it drops the
//! replica, so that no report (a confused or hostile caller, a transient
//! read error) deletes data by itself.
//!
//! Bounded: one verification per chunk at a time and at most
//! [`MAX_VERIFICATIONS`] on this server (more are refused with `Busy`),
//! reads paced at the rate the master asks, and the caller's deadline
//! (tonic drops the handler when it passes; a verification only reads, so
//! stopping it half way leaves nothing behind).

use std::collections::HashSet;
use std::sync::Mutex;

use gfs_common::throttle::Throttle;
use gfs_common::{BLOCK_SIZE, Error, MAX_IO_SIZE, Result};
use gfs_proto::{VerifyChunkRequest, VerifyChunkResponse};

use crate::service::Shared;

/// Verifications running at once on one server.
pub(crate) const MAX_VERIFICATIONS: usize = 2;

/// Marks a chunk as being verified until dropped.
struct Claim<'a> {
    set: &'a Mutex<HashSet<u64>>,
    handle: u64,
}

impl<'a> Claim<'a> {
    fn take(set: &'a Mutex<HashSet<u64>>, handle: u64) -> Result<Self> {
        let mut s = set.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() >= MAX_VERIFICATIONS || !s.insert(handle) {
            return Err(Error::Busy(format!("chunk {handle:#x}: a verification is running here; retry later")));
        }
        Ok(Claim { set, handle })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.handle);
    }
}

impl Shared {
    /// Reads every block of the replica at `req.version`; answers `ok`, or
    /// the first block whose checksum does not match. Reports nothing to
    /// the master (it asked).
    pub(crate) async fn verify_chunk(&self, req: VerifyChunkRequest) -> Result<VerifyChunkResponse> {
        let _claim = Claim::take(&self.verifying, req.handle)?;
        let (handle, version) = (req.handle, req.version);
        self.store.get(handle)?.check_version(version)?;
        let mut throttle = Throttle::new(req.bytes_per_sec);
        let mut off = 0;
        loop {
            match self.store.read(handle, version, off, MAX_IO_SIZE).await {
                Ok((data, length)) => {
                    off += data.len() as u64;
                    throttle.consume(data.len() as u64).await;
                    if data.is_empty() || off >= length {
                        return Ok(VerifyChunkResponse { ok: true, length, ..Default::default() });
                    }
                }
                Err(Error::Corrupt { .. }) => return self.first_bad_block(handle, version, off).await,
                Err(e) => return Err(e),
            }
        }
    }

    /// Finds the first block from `off` that fails its checksum.
    async fn first_bad_block(&self, handle: u64, version: u64, mut off: u64) -> Result<VerifyChunkResponse> {
        loop {
            match self.store.read(handle, version, off, BLOCK_SIZE).await {
                Ok((data, length)) => {
                    off += data.len() as u64;
                    if data.is_empty() || off >= length {
                        // Rewritten meanwhile: every block verifies now.
                        return Ok(VerifyChunkResponse { ok: true, length, ..Default::default() });
                    }
                }
                Err(Error::Corrupt { detail, .. }) => {
                    let length = self.store.get(handle)?.length();
                    tracing::warn!(handle, block = off / BLOCK_SIZE, %detail, "verification found a corrupt block");
                    let block = off / BLOCK_SIZE;
                    return Ok(VerifyChunkResponse { ok: false, corrupt_block: block, length, detail });
                }
                Err(e) => return Err(e),
            }
        }
    }
}
