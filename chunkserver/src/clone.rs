//! Re-replication, destination side: copy a chunk from a peer replica,
//! verify the copy, then publish it.
//!
//! The source verifies its checksums on every read it serves (a corrupt
//! source answers `Corrupt` and reports itself; the next source is tried).
//! The copy is written unpublished at version 0, read back through the
//! checksummed read path and compared with the CRC32C of the bytes
//! received, and only then given its version and reported.
//!
//! A clone cut off by its caller's deadline (the master then gives up on
//! it and plans the repair again) does not leave its unpublished copy on
//! disk: [`CloneClaim`] deletes it, and no other clone of that chunk starts
//! here until it has.

use std::sync::Arc;

use gfs_common::throttle::Throttle;
use gfs_common::{Error, MAX_IO_SIZE, Result};
use gfs_proto::{CloneChunkRequest, CloneChunkResponse, ReadRequest};

use crate::service::Shared;

impl Shared {
    /// Master -> chunkserver: clone a chunk from one of `req.sources`.
    pub(crate) async fn clone_chunk(self: &Arc<Self>, req: CloneChunkRequest) -> Result<CloneChunkResponse> {
        self.admit_epoch(req.epoch).await?;
        if req.sources.is_empty() {
            return Err(Error::InvalidArgument("clone without sources".into()));
        }
        let _permit = self.clones.acquire().await.map_err(|_| Error::Unavailable("shutting down".into()))?;
        let claim = CloneClaim::new(self, req.handle)?;
        let res = self.clone_claimed(&req).await;
        claim.finished();
        res
    }

    async fn clone_claimed(&self, req: &CloneChunkRequest) -> Result<CloneChunkResponse> {
        if let Ok(c) = self.store.get(req.handle) {
            if c.is_published() && c.version() == req.version {
                let (length, crc32c) = self.checksum(req.handle, req.version).await?;
                return Ok(CloneChunkResponse { length, crc32c, report_seq: self.store.report_seq() });
            }
            self.store.delete(req.handle).await?;
        }
        let mut last = Error::Unavailable("no source tried".into());
        for src in &req.sources {
            match self.copy_from(src, req).await {
                Ok(r) => {
                    tracing::info!(handle = req.handle, version = req.version, source = %src, bytes = r.length, "chunk cloned");
                    return Ok(r);
                }
                Err(e) => {
                    tracing::warn!(handle = req.handle, source = %src, error = %e, "clone from source failed");
                    let _ = self.store.delete(req.handle).await;
                    // Another source cannot make room here: the master
                    // picks another destination.
                    if matches!(e, Error::NoSpace { .. }) {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn copy_from(&self, src: &str, req: &CloneChunkRequest) -> Result<CloneChunkResponse> {
        self.store.create_clone(req.handle).await?;
        let mut throttle = Throttle::new(req.bytes_per_sec);
        let (mut off, mut crc) = (0u64, 0u32);
        loop {
            let r = ReadRequest {
                handle: req.handle,
                version: req.version,
                offset: off,
                length: MAX_IO_SIZE,
                token: req.token.clone(),
            };
            let resp = self.rpc.read(src, r).await?;
            if resp.data.is_empty() {
                if off < resp.chunk_length {
                    return Err(Error::Internal(format!("source stopped at {off} of {}", resp.chunk_length)));
                }
                break;
            }
            let n = resp.data.len() as u64;
            crc = crc32c::crc32c_append(crc, &resp.data);
            self.metrics.written_bytes.inc_by(n);
            self.store.write(req.handle, off, resp.data).await?;
            off += n;
            throttle.consume(n).await;
            if off >= resp.chunk_length {
                break;
            }
        }
        let (length, got) = self.checksum(req.handle, 0).await?;
        if length != off || got != crc {
            return Err(Error::Corrupt {
                handle: req.handle,
                detail: format!("copy reads back {length} bytes crc {got:08x}, received {off} bytes crc {crc:08x}"),
            });
        }
        self.store.publish(req.handle, req.version).await?;
        Ok(CloneChunkResponse { length, crc32c: crc, report_seq: self.store.report_seq() })
    }

    /// Reads a local replica through the checksummed path; returns its
    /// length and the CRC32C of its bytes.
    pub(crate) async fn checksum(&self, handle: u64, version: u64) -> Result<(u64, u32)> {
        let (mut off, mut crc) = (0u64, 0u32);
        loop {
            let (data, len) = self.store.read(handle, version, off, MAX_IO_SIZE).await?;
            crc = crc32c::crc32c_append(crc, &data);
            off += data.len() as u64;
            if data.is_empty() || off >= len {
                return Ok((off, crc));
            }
        }
    }
}

/// One chunk's clone on this server, from start to its end or its cleanup.
struct CloneClaim {
    shared: Arc<Shared>,
    handle: u64,
    finished: bool,
}

impl CloneClaim {
    /// Claims `handle`; refuses while another clone of it (or the cleanup
    /// of one cut off) is running here.
    fn new(shared: &Arc<Shared>, handle: u64) -> Result<Self> {
        if !shared.cloning.lock().expect("cloning lock").insert(handle) {
            return Err(Error::Unavailable(format!("a clone of chunk {handle:#x} is already running here")));
        }
        Ok(Self { shared: shared.clone(), handle, finished: false })
    }

    /// The clone ran to its end (a failed copy has deleted itself).
    fn finished(mut self) {
        self.finished = true;
    }
}

impl Drop for CloneClaim {
    fn drop(&mut self) {
        let (shared, handle) = (self.shared.clone(), self.handle);
        if self.finished {
            shared.cloning.lock().expect("cloning lock").remove(&handle);
            return;
        }
        // Dropped mid-way: the caller went away. Without a runtime (the
        // process is stopping) the copy stays at version 0 and is reported
        // as stale after the restart, which gets it deleted.
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            // `delete` waits for a write of the copy still in flight.
            if shared.store.get(handle).is_ok_and(|c| !c.is_published()) {
                match shared.store.delete(handle).await {
                    Ok(_) => tracing::info!(handle, "deleted the copy of a clone cut off by its caller"),
                    Err(e) => tracing::warn!(handle, error = %e, "cannot delete the copy of a cut-off clone"),
                }
            }
            shared.cloning.lock().expect("cloning lock").remove(&handle);
        });
    }
}
