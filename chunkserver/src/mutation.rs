//! Mutations: primary ordering (write, record append), secondary apply,
//! and the master's lease grants and deletions.
//!
//! Record appends are group-committed: appends to one chunk queue on it,
//! and whoever takes the chunk's mutation lock next orders every queued
//! record back to back as one mutation (one write and one sync per
//! replica) and answers each with its own offset.

use bytes::Bytes;
use gfs_common::token::WRITE;
use gfs_common::{Error, Result};
use gfs_proto::*;
use tokio::sync::oneshot;

use crate::serial::SerialCheck;
use crate::service::Shared;
use crate::store::ChunkState;

/// Sanity bound on `offset + length` of any mutation.
const MAX_CHUNK_END: u64 = 1 << 30;
/// Most records in one group-committed append mutation.
const MAX_GROUP_RECORDS: usize = 256;
/// Most bytes in one group-committed append mutation (a larger single
/// record still goes alone).
const MAX_GROUP_BYTES: u64 = 16 << 20;

/// An append waiting on its chunk for the next group.
pub(crate) struct QueuedAppend {
    req: AppendRequest,
    reply: oneshot::Sender<Result<AppendResponse>>,
}

impl QueuedAppend {
    fn answer(self, r: Result<AppendResponse>) {
        // The caller may have gone; its record was still ordered.
        let _ = self.reply.send(r);
    }
}

/// What the primary applies locally.
enum Local {
    /// Pushed bytes written back to back from the mutation's offset.
    Data(Vec<Bytes>),
    /// Zero padding up to the mutation's offset.
    Pad,
}

/// True when `b` can join a group led by `a`: the same replica set and
/// version (so the same preconditions) and the same chunk size.
fn same_group(a: &AppendRequest, b: &AppendRequest) -> bool {
    a.version == b.version && a.chunk_size == b.chunk_size && a.secondaries == b.secondaries
}

fn check_range(offset: u64, length: u64) -> Result<()> {
    let end = offset.saturating_add(length);
    if end > MAX_CHUNK_END {
        return Err(Error::TooLarge { what: "mutation end offset".into(), size: end, limit: MAX_CHUNK_END });
    }
    Ok(())
}

/// Checks a secondary's mutation request on its own, before anything
/// else: a known kind, and for records at most `MAX_GROUP_RECORDS` whose
/// lengths sum to its length.
fn check_mutation(req: &ApplyMutationRequest) -> Result<MutationKind> {
    let kind = match MutationKind::try_from(req.kind) {
        Ok(k @ (MutationKind::Write | MutationKind::Records | MutationKind::Pad)) => k,
        _ => return Err(Error::InvalidArgument(format!("unknown mutation kind {}", req.kind))),
    };
    if kind == MutationKind::Records {
        if req.records.len() > MAX_GROUP_RECORDS {
            return Err(Error::TooLarge {
                what: "records in a mutation".into(),
                size: req.records.len() as u64,
                limit: MAX_GROUP_RECORDS as u64,
            });
        }
        let total = req.records.iter().try_fold(0u64, |sum, r| sum.checked_add(r.length));
        if total != Some(req.length) {
            return Err(Error::InvalidArgument(format!(
                "records mutation: the records' lengths do not sum to its length {}",
                req.length
            )));
        }
    }
    Ok(kind)
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
    /// A secondary out of space fails it with that `NoSpace` (naming the
    /// secondary): retrying cannot help, and the client must say which
    /// server is full.
    async fn replicate(&self, secondaries: &[String], req: ApplyMutationRequest) -> Result<()> {
        let req = &req;
        let calls =
            secondaries.iter().map(|addr| async move { (addr, self.rpc.apply_mutation(addr, req.clone()).await) });
        for (addr, res) in futures::future::join_all(calls).await {
            if let Err(e) = res {
                tracing::warn!(handle = req.handle, serial = req.serial, secondary = %addr, error = %e,
                    "secondary failed to apply mutation");
                if matches!(e, Error::NoSpace { .. }) {
                    return Err(e.on_server(addr));
                }
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
        local: Local,
        secondaries: &[String],
    ) -> Result<u64> {
        let serial = chunk.next_serial();
        m.serial = serial;
        m.epoch = self.epoch.known();
        let (handle, offset) = (m.handle, m.offset);
        let local = async {
            match local {
                Local::Data(d) => {
                    self.metrics.written_bytes.inc_by(d.iter().map(|b| b.len() as u64).sum());
                    self.store.write_records(handle, offset, d).await
                }
                Local::Pad => self.store.pad(handle, offset).await,
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
        chunk.record_serial(serial);
        let len = len?;
        replicated?;
        // Only a mutation every replica applied asks for lease extensions:
        // when none succeeds for a whole lease (a secondary that keeps
        // refusing, e.g. its serial window passed), the lease runs out and
        // the next grant's new version starts the serials afresh.
        self.leases.mark_mutated(handle);
        Ok(len)
    }

    /// Client -> primary: write pushed data at an offset.
    pub(crate) async fn write(&self, req: WriteRequest) -> Result<WriteResponse> {
        self.check_token(req.token.as_ref(), req.handle, req.version, WRITE)?;
        self.admit_epoch(req.epoch).await?;
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
            token: req.token.clone(),
            ..Default::default()
        };
        let chunk_length = self.primary_apply(&chunk, m, Local::Data(vec![data]), &req.secondaries).await?;
        tracing::debug!(handle = req.handle, offset = req.offset, length = req.length, "write applied");
        Ok(WriteResponse { chunk_length })
    }

    /// Client -> primary: record append at the end of the chunk, or pad the
    /// chunk and answer `ChunkFull` when the record does not fit.
    ///
    /// The append queues on its chunk; the next holder of the chunk's
    /// mutation lock (this call, unless an earlier one took it first)
    /// orders it with every other queued append.
    pub(crate) async fn append(&self, req: AppendRequest) -> Result<AppendResponse> {
        self.check_token(req.token.as_ref(), req.handle, req.version, WRITE)?;
        self.admit_epoch(req.epoch).await?;
        if req.chunk_size == 0 || req.chunk_size > MAX_CHUNK_END {
            return Err(Error::InvalidArgument(format!("append: bad chunk_size {}", req.chunk_size)));
        }
        let limit = req.chunk_size / 4;
        if req.length > limit {
            return Err(Error::TooLarge { what: "record".into(), size: req.length, limit });
        }
        let chunk = self.store.get(req.handle)?;
        let (reply, answer) = oneshot::channel();
        chunk.appends.lock().expect("append queue lock").push(QueuedAppend { req, reply });
        {
            let _m = chunk.mutation.lock().await;
            let queued = std::mem::take(&mut *chunk.appends.lock().expect("append queue lock"));
            self.append_queued(&chunk, queued).await;
        }
        answer.await.map_err(|_| Error::Unavailable("append abandoned by the primary".into()))?
    }

    /// Orders queued appends (under the mutation lock) as groups of
    /// compatible neighbours, in queue order.
    async fn append_queued(&self, chunk: &ChunkState, queued: Vec<QueuedAppend>) {
        let mut rest = queued.into_iter().peekable();
        while let Some(first) = rest.next() {
            let mut bytes = first.req.length;
            let mut group = vec![first];
            while let Some(next) = rest.peek() {
                if group.len() >= MAX_GROUP_RECORDS
                    || bytes + next.req.length > MAX_GROUP_BYTES
                    || !same_group(&group[0].req, &next.req)
                {
                    break;
                }
                bytes += next.req.length;
                group.extend(rest.next());
            }
            self.append_group(chunk, group).await;
        }
    }

    /// One group: the records that fit go back to back at the chunk's end
    /// as one mutation; if one does not fit, the chunk is then padded and
    /// it and every later record get `ChunkFull`.
    async fn append_group(&self, chunk: &ChunkState, group: Vec<QueuedAppend>) {
        let (handle, version) = (group[0].req.handle, group[0].req.version);
        // Every queued append's token was checked for this handle and
        // version; the secondaries check the first one again.
        let token = group[0].req.token.clone();
        let (chunk_size, secondaries) = (group[0].req.chunk_size, group[0].req.secondaries.clone());
        let mut offset = chunk.length();
        let mut fits: Vec<(QueuedAppend, u64)> = Vec::new();
        let mut data = Vec::new();
        let mut full = Vec::new();
        for q in group {
            if let Err(e) = self.check_primary(chunk, q.req.version) {
                self.pushbuf.discard(q.req.data_id);
                q.answer(Err(e));
            } else if !full.is_empty() || offset + q.req.length > chunk_size {
                self.pushbuf.discard(q.req.data_id);
                full.push(q);
            } else {
                match self.take_data(q.req.data_id, q.req.length) {
                    Ok(d) => {
                        let len = q.req.length;
                        data.push(d);
                        fits.push((q, offset));
                        offset += len;
                    }
                    Err(e) => q.answer(Err(e)),
                }
            }
        }
        let mut failed = None;
        if let Some((_, start)) = fits.first() {
            let mut m = ApplyMutationRequest {
                handle,
                version,
                offset: *start,
                length: offset - start,
                token: token.clone(),
                ..Default::default()
            };
            if let [(only, _)] = &fits[..] {
                m.kind = MutationKind::Write as i32;
                m.data_id = only.req.data_id;
            } else {
                m.kind = MutationKind::Records as i32;
                m.records =
                    fits.iter().map(|(q, _)| PushedRecord { data_id: q.req.data_id, length: q.req.length }).collect();
            }
            self.metrics.append_group_records.observe(fits.len() as f64);
            let res = self.primary_apply(chunk, m, Local::Data(data), &secondaries).await;
            for (q, at) in fits {
                q.answer(res.clone().map(|chunk_length| AppendResponse { offset: at, chunk_length }));
            }
            failed = res.err();
        }
        if full.is_empty() {
            return;
        }
        // When the records that fit failed, the chunk is not padded: the
        // rest fail the same way and their clients retry.
        let res = match failed {
            Some(e) => Err(e),
            None => {
                // The secondaries drop the records' pushed data.
                let records = full.iter().map(|q| PushedRecord { data_id: q.req.data_id, length: 0 }).collect();
                let m = ApplyMutationRequest {
                    handle,
                    version,
                    kind: MutationKind::Pad as i32,
                    offset: chunk_size,
                    records,
                    token,
                    ..Default::default()
                };
                self.primary_apply(chunk, m, Local::Pad, &secondaries).await
            }
        };
        let e = match res {
            Ok(_) => {
                tracing::debug!(handle, chunk_size, "chunk padded for append");
                Error::ChunkFull { handle }
            }
            Err(e) => e,
        };
        for q in full {
            q.answer(Err(e.clone()));
        }
    }

    /// Primary -> secondary: apply one mutation in serial order (which
    /// serials are applied, skipped or refused: `serial.rs`).
    pub(crate) async fn apply_mutation(&self, req: ApplyMutationRequest) -> Result<ApplyMutationResponse> {
        self.check_token(req.token.as_ref(), req.handle, req.version, WRITE)?;
        let kind = check_mutation(&req)?;
        self.admit_epoch(req.epoch).await?;
        check_range(req.offset, req.length)?;
        let chunk = self.store.get(req.handle)?;
        let _m = chunk.mutation.lock().await;
        chunk.check_version(req.version)?;
        if chunk.check_serial(req.serial)? == SerialCheck::Duplicate {
            tracing::debug!(handle = req.handle, serial = req.serial, "duplicate mutation ignored");
            return Ok(ApplyMutationResponse { chunk_length: chunk.length() });
        }
        let chunk_length = match kind {
            MutationKind::Write => {
                let data = self.take_data(req.data_id, req.length)?;
                self.metrics.written_bytes.inc_by(data.len() as u64);
                self.store.write(req.handle, req.offset, data).await?
            }
            MutationKind::Records => {
                let data =
                    req.records.iter().map(|r| self.take_data(r.data_id, r.length)).collect::<Result<Vec<_>>>()?;
                self.metrics.written_bytes.inc_by(req.length);
                self.store.write_records(req.handle, req.offset, data).await?
            }
            _ => {
                if req.data_id != 0 {
                    self.pushbuf.discard(req.data_id);
                }
                for r in req.records.iter().take(MAX_GROUP_RECORDS) {
                    self.pushbuf.discard(r.data_id);
                }
                self.store.pad(req.handle, req.offset).await?
            }
        };
        chunk.record_serial(req.serial);
        Ok(ApplyMutationResponse { chunk_length })
    }

    /// Master -> chunkserver: bump the version (creating the replica if
    /// asked) and take or drop the primary lease.
    pub(crate) async fn grant_lease(&self, req: GrantLeaseRequest) -> Result<GrantLeaseResponse> {
        self.admit_epoch(req.epoch).await?;
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
