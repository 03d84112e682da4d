//! Mutations: primary ordering (write, record append), secondary apply,
//! and the master's lease grants and deletions.

use bytes::Bytes;
use gfs_common::{Error, Result};
use gfs_proto::*;

use crate::service::Shared;
use crate::store::ChunkState;

/// Sanity bound on `offset + length` of any mutation.
const MAX_CHUNK_END: u64 = 1 << 30;

fn check_range(offset: u64, length: u64) -> Result<()> {
    let end = offset.saturating_add(length);
    if end > MAX_CHUNK_END {
        return Err(Error::TooLarge { what: "mutation end offset".into(), size: end, limit: MAX_CHUNK_END });
    }
    Ok(())
}

impl Shared {
    /// Takes pushed data and checks it has the announced length.
    fn take_data(&self, data_id: u64, length: u64) -> Result<Bytes> {
        let data = self.pushbuf.take(data_id)?;
        if data.len() as u64 != length {
            return Err(Error::InvalidArgument(format!(
                "pushed data {data_id} has {} bytes, mutation says {length}",
                data.len()
            )));
        }
        Ok(data)
    }

    /// Checks the primary's preconditions; call under the mutation lock.
    fn check_primary(&self, chunk: &ChunkState, version: u64) -> Result<()> {
        self.leases.check(chunk.handle())?;
        chunk.check_version(version)
    }

    /// Sends a mutation to every secondary in parallel; fails if any fails.
    async fn replicate(&self, secondaries: &[String], req: ApplyMutationRequest) -> Result<()> {
        let calls = secondaries.iter().map(|addr| async move { (addr, self.rpc.apply_mutation(addr, req).await) });
        for (addr, res) in futures::future::join_all(calls).await {
            if let Err(e) = res {
                tracing::warn!(handle = req.handle, serial = req.serial, secondary = %addr, error = %e,
                    "secondary failed to apply mutation");
                return Err(Error::Unavailable(format!("secondary {addr}: {e}")));
            }
        }
        Ok(())
    }

    /// Applies a mutation locally at the next serial, then on every
    /// secondary. Returns the local chunk length.
    async fn primary_apply(
        &self,
        chunk: &ChunkState,
        mut m: ApplyMutationRequest,
        data: Option<Bytes>,
        secondaries: &[String],
    ) -> Result<u64> {
        let serial = chunk.last_serial() + 1;
        m.serial = serial;
        m.epoch = self.epoch.seen();
        let (handle, offset) = (m.handle, m.offset);
        let local = async {
            match data {
                Some(d) => {
                    self.metrics.written_bytes.inc_by(d.len() as u64);
                    self.store.write(handle, offset, d).await
                }
                None => self.store.pad(handle, offset).await,
            }
        };
        // The local apply and the secondaries' applies run at the same time
        // (their fsyncs overlap); the chunk's mutation lock, held by the
        // caller, still keeps one serial order on every replica. If either
        // side fails the client retries the whole mutation.
        let (len, replicated) = tokio::join!(local, self.replicate(secondaries, m));
        // The serial is used up even when the local apply failed: the
        // secondaries may have applied it, and must not skip the next one as
        // a duplicate.
        chunk.set_last_serial(serial);
        let len = len?;
        self.leases.mark_mutated(handle);
        replicated?;
        Ok(len)
    }

    /// Client -> primary: write pushed data at an offset.
    pub(crate) async fn write(&self, req: WriteRequest) -> Result<WriteResponse> {
        self.epoch.check(req.epoch)?;
        check_range(req.offset, req.length)?;
        let chunk = self.store.get(req.handle)?;
        let _m = chunk.mutation.lock().await;
        self.check_primary(&chunk, req.version)?;
        let data = self.take_data(req.data_id, req.length)?;
        let m = ApplyMutationRequest {
            handle: req.handle,
            version: req.version,
            kind: MutationKind::Write as i32,
            offset: req.offset,
            data_id: req.data_id,
            length: req.length,
            ..Default::default()
        };
        let chunk_length = self.primary_apply(&chunk, m, Some(data), &req.secondaries).await?;
        tracing::debug!(handle = req.handle, offset = req.offset, length = req.length, "write applied");
        Ok(WriteResponse { chunk_length })
    }

    /// Client -> primary: record append at the end of the chunk, or pad the
    /// chunk and answer `ChunkFull` when the record does not fit.
    pub(crate) async fn append(&self, req: AppendRequest) -> Result<AppendResponse> {
        self.epoch.check(req.epoch)?;
        if req.chunk_size == 0 || req.chunk_size > MAX_CHUNK_END {
            return Err(Error::InvalidArgument(format!("append: bad chunk_size {}", req.chunk_size)));
        }
        let limit = req.chunk_size / 4;
        if req.length > limit {
            return Err(Error::TooLarge { what: "record".into(), size: req.length, limit });
        }
        let chunk = self.store.get(req.handle)?;
        let _m = chunk.mutation.lock().await;
        self.check_primary(&chunk, req.version)?;
        let offset = chunk.length();
        let mut m = ApplyMutationRequest {
            handle: req.handle,
            version: req.version,
            data_id: req.data_id,
            length: req.length,
            ..Default::default()
        };
        if offset + req.length > req.chunk_size {
            self.pushbuf.discard(req.data_id);
            m.kind = MutationKind::Pad as i32;
            m.offset = req.chunk_size;
            m.length = 0;
            self.primary_apply(&chunk, m, None, &req.secondaries).await?;
            tracing::debug!(handle = req.handle, chunk_size = req.chunk_size, "chunk padded for append");
            return Err(Error::ChunkFull { handle: req.handle });
        }
        let data = self.take_data(req.data_id, req.length)?;
        m.kind = MutationKind::Write as i32;
        m.offset = offset;
        let chunk_length = self.primary_apply(&chunk, m, Some(data), &req.secondaries).await?;
        Ok(AppendResponse { offset, chunk_length })
    }

    /// Primary -> secondary: apply one mutation in serial order.
    pub(crate) async fn apply_mutation(&self, req: ApplyMutationRequest) -> Result<ApplyMutationResponse> {
        self.epoch.check(req.epoch)?;
        check_range(req.offset, req.length)?;
        let chunk = self.store.get(req.handle)?;
        let _m = chunk.mutation.lock().await;
        chunk.check_version(req.version)?;
        if req.serial <= chunk.last_serial() {
            tracing::debug!(handle = req.handle, serial = req.serial, "duplicate mutation ignored");
            return Ok(ApplyMutationResponse { chunk_length: chunk.length() });
        }
        let chunk_length = match MutationKind::try_from(req.kind) {
            Ok(MutationKind::Write) => {
                let data = self.take_data(req.data_id, req.length)?;
                self.metrics.written_bytes.inc_by(data.len() as u64);
                self.store.write(req.handle, req.offset, data).await?
            }
            Ok(MutationKind::Pad) => {
                if req.data_id != 0 {
                    self.pushbuf.discard(req.data_id);
                }
                self.store.pad(req.handle, req.offset).await?
            }
            _ => return Err(Error::InvalidArgument(format!("unknown mutation kind {}", req.kind))),
        };
        chunk.set_last_serial(req.serial);
        Ok(ApplyMutationResponse { chunk_length })
    }

    /// Master -> chunkserver: bump the version (creating the replica if
    /// asked) and take or drop the primary lease.
    pub(crate) async fn grant_lease(&self, req: GrantLeaseRequest) -> Result<GrantLeaseResponse> {
        self.epoch.check(req.epoch)?;
        let chunk = match self.store.get(req.handle) {
            Ok(c) => c,
            Err(_) if req.create => self.store.create(req.handle, req.version).await?,
            Err(e) => return Err(e),
        };
        let _m = chunk.mutation.lock().await;
        let have = chunk.version();
        if req.version < have {
            return Err(Error::StaleVersion { handle: req.handle, have, want: req.version });
        }
        self.store.set_version(req.handle, req.version).await?;
        if req.lease_ms > 0 {
            self.leases.grant(req.handle, req.version, req.lease_ms);
        } else {
            self.leases.revoke(req.handle);
        }
        tracing::debug!(handle = req.handle, version = req.version, lease_ms = req.lease_ms, "lease granted");
        Ok(GrantLeaseResponse { chunk_length: chunk.length(), report_seq: self.store.report_seq() })
    }

    /// Deletes replicas (master's garbage collection or stale replicas).
    pub(crate) async fn delete_chunks(&self, handles: &[u64]) {
        for &h in handles {
            self.leases.revoke(h);
            if let Err(e) = self.store.delete(h).await {
                tracing::warn!(handle = h, error = %e, "cannot delete chunk");
            }
        }
    }
}
