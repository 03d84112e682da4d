//! Master state: the metadata (namespace, chunks, servers) behind one mutex,
//! plus the log, path locks and the commit/checkpoint protocol.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gfs_common::{Error, Result};
use gfs_proto::log_record::Op;
use gfs_proto::{
    Checkpoint, CheckpointChunk, CheckpointFile, ChunkLocation, FileInfo, FileType, ServerState, ServerStateOp,
};
use tracing::{error, info};

use crate::chunks::ChunkTable;
use crate::config::Config;
use crate::heal::HealState;
use crate::locks::LockManager;
use crate::namespace::{FileMeta, Namespace, Node};
use crate::oplog::{self, Oplog};
use crate::rpc::ChunkRpc;
use crate::servers::ServerRegistry;

/// Number of per-chunk lease mutex stripes.
const CHUNK_STRIPES: usize = 256;

/// All in-memory metadata.
#[derive(Debug, Default)]
pub struct Meta {
    /// The tree.
    pub ns: Namespace,
    /// The chunk table.
    pub chunks: ChunkTable,
    /// Registered chunkservers.
    pub servers: ServerRegistry,
    /// Persistent admin states (decommissioning, decommissioned) by id.
    pub admin: BTreeMap<String, ServerState>,
    /// Soft repair state: clones in flight, events, read scores.
    pub heal: HealState,
    /// Handles being created on chunkservers but not logged yet: their
    /// replicas' reports are neither orphans nor replicas until then.
    pub allocating: std::collections::HashSet<u64>,
}

impl Meta {
    /// Empty metadata (root only).
    pub fn new() -> Self {
        Meta { ns: Namespace::new(), chunks: ChunkTable::new(), ..Default::default() }
    }

    /// Applies a logged operation to the namespace and the chunk table.
    pub fn apply(&mut self, op: &Op, time_ms: i64) -> Result<()> {
        let removed = self.ns.apply(op, time_ms)?;
        match op {
            Op::AddChunk(a) => {
                let f = self.ns.file(&a.path)?;
                let (r, cs) = (f.replication, f.chunk_size);
                self.chunks.insert(a.handle, a.version, r, cs);
            }
            Op::SetVersion(s) => {
                if let Some(c) = self.chunks.get_mut(s.handle) {
                    c.version = c.version.max(s.version);
                }
            }
            Op::ServerState(s) => self.apply_server_state(s),
            _ => {}
        }
        for h in removed {
            if let Some(c) = self.chunks.remove(h) {
                for s in c.replicas {
                    if let Some(e) = self.servers.get_mut(&s) {
                        e.chunks.remove(&h);
                        e.pending_delete.insert(h);
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds `server` as an up-to-date replica of `handle`.
    pub fn add_replica(&mut self, handle: u64, server: &str) {
        if let Some(c) = self.chunks.get_mut(handle) {
            c.replicas.insert(server.to_string());
        }
        if let Some(s) = self.servers.get_mut(server) {
            s.chunks.insert(handle);
            s.pending_delete.remove(&handle);
        }
    }

    /// Removes `server` from the replicas of `handle`.
    pub fn remove_replica(&mut self, handle: u64, server: &str) {
        if let Some(c) = self.chunks.get_mut(handle) {
            c.replicas.remove(server);
        }
        if let Some(s) = self.servers.get_mut(server) {
            s.chunks.remove(&handle);
        }
    }

    /// Builds a checkpoint (parents before children).
    pub fn snapshot(&self, last_seq: u64) -> Checkpoint {
        let entries = self
            .ns
            .iter()
            .map(|(path, node)| match node {
                Node::Dir { mtime_ms, .. } => {
                    CheckpointFile { path: path.clone(), is_dir: true, mtime_ms: *mtime_ms, ..Default::default() }
                }
                Node::File(f) => CheckpointFile {
                    path: path.clone(),
                    is_dir: false,
                    replication: f.replication,
                    chunk_size: f.chunk_size,
                    mtime_ms: f.mtime_ms,
                    chunks: f
                        .chunks
                        .iter()
                        .map(|h| CheckpointChunk { handle: *h, version: self.chunks.get(*h).map_or(0, |c| c.version) })
                        .collect(),
                },
            })
            .collect();
        let server_states =
            self.admin.iter().map(|(id, st)| ServerStateOp { server_id: id.clone(), state: *st as i32 }).collect();
        Checkpoint { last_seq, next_handle: self.chunks.next_handle(), entries, server_states, ..Default::default() }
    }

    /// Records a persistent admin state; `Live` clears it.
    pub fn apply_server_state(&mut self, op: &ServerStateOp) {
        match ServerState::try_from(op.state) {
            Ok(st @ (ServerState::Decommissioning | ServerState::Decommissioned)) => {
                self.admin.insert(op.server_id.clone(), st);
            }
            _ => {
                self.admin.remove(&op.server_id);
            }
        }
    }

    /// Rebuilds metadata from a checkpoint.
    pub fn from_checkpoint(cp: &Checkpoint) -> Result<Meta> {
        let mut m = Meta::new();
        for e in &cp.entries {
            let node = if e.is_dir {
                Node::Dir { mtime_ms: e.mtime_ms, children: Default::default() }
            } else {
                for c in &e.chunks {
                    m.chunks.insert(c.handle, c.version, e.replication, e.chunk_size);
                }
                Node::File(FileMeta {
                    replication: e.replication,
                    chunk_size: e.chunk_size,
                    chunks: e.chunks.iter().map(|c| c.handle).collect(),
                    mtime_ms: e.mtime_ms,
                })
            };
            m.ns.load_entry(&e.path, node)?;
        }
        m.chunks.bump_next_handle(cp.next_handle);
        for st in &cp.server_states {
            m.apply_server_state(st);
        }
        Ok(m)
    }

    /// A chunk's location with only live, up-to-date replicas.
    pub fn location(&self, index: u64, handle: u64) -> ChunkLocation {
        let (version, length, replicas) = match self.chunks.get(handle) {
            Some(c) => (c.version, c.length, c.replicas.iter().filter_map(|s| self.servers.live_info(s)).collect()),
            None => (0, 0, vec![]),
        };
        ChunkLocation { index, handle, version, length, replicas }
    }

    /// `FileInfo` for the node at `path`.
    pub fn file_info(&self, path: &str, node: &Node) -> FileInfo {
        match node {
            Node::Dir { mtime_ms, children } => FileInfo {
                path: path.to_string(),
                r#type: FileType::Directory as i32,
                mtime_ms: *mtime_ms,
                // Deleted entries awaiting GC are not shown, nor counted.
                children: children.iter().filter(|c| !c.starts_with(crate::hidden::PREFIX)).count() as u64,
                ..Default::default()
            },
            Node::File(f) => {
                let size = f
                    .chunks
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| self.chunks.get(*h).map(|c| (i as u64, c.length)))
                    .map(|(i, len)| i * f.chunk_size + len)
                    .max()
                    .unwrap_or(0);
                FileInfo {
                    path: path.to_string(),
                    r#type: FileType::File as i32,
                    size,
                    replication: f.replication,
                    chunk_size: f.chunk_size,
                    chunk_count: f.chunks.len() as u64,
                    mtime_ms: f.mtime_ms,
                    children: 0,
                }
            }
        }
    }
}

/// Everything the handlers share.
pub struct Shared {
    /// Configuration.
    pub cfg: Config,
    /// This master's epoch.
    pub epoch: u64,
    meta: Mutex<Meta>,
    /// Held in read mode from log append to apply; write mode to snapshot.
    gate: tokio::sync::RwLock<()>,
    /// Per-path locks.
    pub locks: LockManager,
    /// The operation log.
    pub oplog: Oplog,
    /// Calls to chunkservers.
    pub rpc: ChunkRpc,
    /// Prometheus families.
    pub metrics: crate::metrics::Metrics,
    chunk_locks: Vec<tokio::sync::Mutex<()>>,
    checkpoint_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Shared {
    /// Wraps recovered metadata and an open log.
    pub fn new(cfg: Config, epoch: u64, meta: Meta, oplog: Oplog, metrics: crate::metrics::Metrics) -> Self {
        let rpc = ChunkRpc::new(Duration::from_millis(cfg.rpc_timeout_ms));
        Shared {
            cfg,
            epoch,
            meta: Mutex::new(meta),
            gate: tokio::sync::RwLock::new(()),
            locks: LockManager::new(),
            oplog,
            rpc,
            metrics,
            chunk_locks: (0..CHUNK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            checkpoint_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Locks the metadata (never held across an await).
    pub fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease mutex stripe of a chunk.
    pub fn chunk_lock(&self, handle: u64) -> &tokio::sync::Mutex<()> {
        &self.chunk_locks[(handle % CHUNK_STRIPES as u64) as usize]
    }

    /// Logs `ops` (one group fsync), then applies them. The caller holds the
    /// path locks and has checked the ops against the current state.
    pub async fn commit(self: &Arc<Self>, ops: Vec<Op>) -> Result<()> {
        self.commit_then(ops, |_| {}).await
    }

    /// Like [`Shared::commit`], and runs `then` on the metadata under the
    /// same lock as the apply, so no other task sees the state in between.
    pub async fn commit_then<R>(self: &Arc<Self>, ops: Vec<Op>, then: impl FnOnce(&mut Meta) -> R) -> Result<R> {
        let out = {
            let _gate = self.gate.read().await;
            let time_ms = gfs_common::now_ms();
            self.oplog.append_batch(ops.clone(), time_ms).await?;
            let mut meta = self.meta();
            for op in &ops {
                if let Err(e) = meta.apply(op, time_ms) {
                    error!(error = %e, "logged operation failed to apply");
                    return Err(e);
                }
            }
            then(&mut meta)
        };
        self.maybe_checkpoint();
        Ok(out)
    }

    fn maybe_checkpoint(self: &Arc<Self>) {
        if self.oplog.since_checkpoint() < self.cfg.checkpoint_every {
            return;
        }
        let Ok(guard) = self.checkpoint_lock.clone().try_lock_owned() else { return };
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.checkpoint_locked().await {
                error!(error = %e, "checkpoint failed");
            }
            drop(guard);
        });
    }

    /// Writes a checkpoint and drops the log segments it covers.
    pub async fn checkpoint(&self) -> Result<()> {
        let _g = self.checkpoint_lock.lock().await;
        self.checkpoint_locked().await
    }

    async fn checkpoint_locked(&self) -> Result<()> {
        let (snap, keep_from) = {
            let _gate = self.gate.write().await;
            let last_seq = self.oplog.last_seq();
            let snap = self.meta().snapshot(last_seq);
            let next = self.oplog.rotate().await?;
            if next != last_seq + 1 {
                return Err(Error::Internal(format!("checkpoint at seq {last_seq} but log continues at {next}")));
            }
            (snap, next)
        };
        let dir = self.oplog.dir().to_path_buf();
        tokio::task::spawn_blocking(move || oplog::write_checkpoint(&dir, &snap, keep_from))
            .await
            .map_err(|e| Error::Internal(format!("checkpoint task: {e}")))?
    }
}

/// Loads the checkpoint and replays the log in `dir`; returns the metadata
/// and the last seq.
pub fn recover(dir: &std::path::Path) -> Result<(Meta, u64)> {
    let (mut meta, after) = match oplog::load_checkpoint(dir)? {
        Some(cp) => (Meta::from_checkpoint(&cp)?, cp.last_seq),
        None => (Meta::new(), 0),
    };
    let last = oplog::replay(dir, after, |rec| {
        let op = rec.op.as_ref().ok_or_else(|| Error::Internal("record without op".into()))?;
        meta.apply(op, rec.time_ms)
            .map_err(|e| Error::Internal(format!("replaying log record {}: {e}; refusing to start", rec.seq)))
    })?;
    info!(checkpoint_seq = after, last_seq = last, replayed = last - after, "master state recovered");
    Ok((meta, last))
}

/// Reads, increments and durably rewrites the `epoch` file.
pub fn bump_epoch(dir: &std::path::Path) -> Result<u64> {
    let path = dir.join("epoch");
    let old = match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|e| Error::Internal(format!("{} is not a decimal epoch: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let epoch = old + 1;
    let tmp = dir.join("epoch.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create epoch.tmp", e))?;
        f.write_all(format!("{epoch}\n").as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io("write epoch", e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename epoch", e))?;
    oplog::sync_dir(dir)?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_proto::{AddChunkOp, CreateOp, DeleteOp, MkdirOp, RenameOp, SetVersionOp};

    fn ops() -> Vec<Op> {
        vec![
            Op::Mkdir(MkdirOp { path: "/a/b".into() }),
            Op::Create(CreateOp { path: "/a/b/f".into(), replication: 2, chunk_size: 1 << 20 }),
            Op::AddChunk(AddChunkOp { path: "/a/b/f".into(), index: 0, handle: 1, version: 1 }),
            Op::AddChunk(AddChunkOp { path: "/a/b/f".into(), index: 1, handle: 2, version: 1 }),
            Op::SetVersion(SetVersionOp { handle: 1, version: 4 }),
            Op::Create(CreateOp { path: "/a/g".into(), replication: 3, chunk_size: 1 << 20 }),
            Op::AddChunk(AddChunkOp { path: "/a/g".into(), index: 0, handle: 3, version: 1 }),
            Op::Rename(RenameOp { src: "/a/b".into(), dst: "/c".into() }),
            Op::Delete(DeleteOp { path: "/a/g".into() }),
        ]
    }

    fn summary(m: &Meta) -> (Checkpoint, Vec<(u64, u64)>) {
        let mut v: Vec<(u64, u64)> = m.chunks.iter().map(|(h, c)| (*h, c.version)).collect();
        v.sort();
        (m.snapshot(0), v)
    }

    #[tokio::test]
    async fn recovery_equals_pre_crash_state() {
        let dir = tempfile::tempdir().unwrap();
        let log = Oplog::open(dir.path(), 1).unwrap();
        let mut live = Meta::new();
        for (i, op) in ops().into_iter().enumerate() {
            log.append_batch(vec![op.clone()], 1000 + i as i64).await.unwrap();
            live.apply(&op, 1000 + i as i64).unwrap();
            if i == 4 {
                // Checkpoint in the middle.
                let next = log.rotate().await.unwrap();
                oplog::write_checkpoint(dir.path(), &live.snapshot(log.last_seq()), next).unwrap();
            }
        }
        log.close().await.unwrap();
        let (rec, last) = recover(dir.path()).unwrap();
        assert_eq!(last, ops().len() as u64);
        assert_eq!(summary(&rec), summary(&live));
        assert_eq!(rec.chunks.get(1).unwrap().version, 4);
        assert!(rec.chunks.get(3).is_none());
        assert_eq!(rec.chunks.next_handle(), 4);
        assert_eq!(rec.ns, live.ns);
    }

    #[test]
    fn epoch_increments() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(bump_epoch(dir.path()).unwrap(), 1);
        assert_eq!(bump_epoch(dir.path()).unwrap(), 2);
    }
}
