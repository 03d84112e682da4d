//! Master state: the metadata (namespace, chunks, servers) behind one mutex,
//! plus the Raft node, path locks and the commit protocol.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gfs_common::auth::Role;
use gfs_common::{Error, Result};
use gfs_proto::log_record::Op;
use gfs_proto::{
    CallId, Checkpoint, ChunkLocation, ChunkToken, FileInfo, FileType, LogBatch, LogRecord, ServerState, ServerStateOp,
    TokenKey,
};

use crate::chunks::ChunkTable;
use crate::config::Config;
use crate::frozen::Frozen;
use crate::heal::HealState;
use crate::locks::LockManager;
use crate::namespace::{FileMeta, Namespace, Node};
use crate::raft::log_store::LogStore;
use crate::raft::proposer::Proposer;
use crate::raft::state_machine::Machine;
use crate::raft::{NodeId, Raft};
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
    /// Raft: the last applied log entry (replicated state).
    pub applied: Option<openraft::LogId<crate::raft::NodeId>>,
    /// Raft: the membership in force at `applied` (replicated state).
    pub membership: crate::raft::StoredMembership,
    /// Outcomes of recent client calls (replicated state).
    pub retries: crate::retry::RetryCache,
    /// Chunk token signing keys by id, not yet expired (replicated state).
    pub token_keys: BTreeMap<u32, TokenKey>,
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
                self.chunks.set_hidden(a.handle, crate::hidden::is_within_hidden(&a.path));
            }
            Op::Rename(r) => {
                let hidden = crate::hidden::is_within_hidden(&r.dst);
                if hidden != crate::hidden::is_within_hidden(&r.src) {
                    self.set_hidden_under(&r.dst, hidden);
                }
            }
            Op::SetVersion(s) => self.chunks.raise_version(s.handle, s.version),
            Op::SetAttr(a) => {
                if let Some(r) = a.replication {
                    let handles = self.ns.file(&a.path)?.chunks.clone();
                    for h in handles {
                        if let Some(c) = self.chunks.get_mut_if(h, |c| c.replication != r) {
                            c.replication = r;
                        }
                    }
                }
            }
            Op::ServerState(s) => self.apply_server_state(s),
            Op::TokenKey(k) => {
                // Pruned by the batch's time, so every master keeps the same set.
                self.token_keys.retain(|_, old| old.expires_ms > time_ms);
                self.token_keys.insert(k.id, k.clone());
            }
            _ => {}
        }
        for h in removed {
            self.heal.index.set(h, None, tokio::time::Instant::now());
            if let Some(c) = self.chunks.remove(h) {
                for s in &c.replicas {
                    if let Some(e) = self.servers.get_mut(s) {
                        e.chunks.remove(&h);
                        e.pending_delete.insert(h);
                    }
                }
            }
        }
        Ok(())
    }

    /// Marks the chunks of every file at or under `path` as of a deleted
    /// file or not (a delete or an undelete moved the entry).
    fn set_hidden_under(&mut self, path: &str, hidden: bool) {
        let handles: Vec<u64> = self
            .ns
            .subtree(path)
            .filter_map(|(_, n)| match n {
                Node::File(f) => Some(f.chunks.iter().copied()),
                Node::Dir { .. } => None,
            })
            .flatten()
            .collect();
        for h in handles {
            self.chunks.set_hidden(h, hidden);
        }
    }

    /// Adds `server` as an up-to-date replica of `handle`.
    pub fn add_replica(&mut self, handle: u64, server: &str) {
        // Only a real change counts as one for shadow pulls.
        if let Some(c) = self.chunks.get_mut_if(handle, |c| !c.replicas.contains(server)) {
            c.replicas.insert(server);
        }
        if let Some(s) = self.servers.get_mut(server) {
            s.chunks.insert(handle);
            s.pending_delete.remove(&handle);
        }
    }

    /// Removes `server` from the replicas of `handle` (and forgets that it
    /// was corrupt: a later copy there is a new replica).
    pub fn remove_replica(&mut self, handle: u64, server: &str) {
        if let Some(c) = self.chunks.get_mut_if(handle, |c| c.replicas.contains(server) || c.corrupt.contains(server)) {
            c.replicas.remove(server);
            c.corrupt.remove(server);
        }
        if let Some(s) = self.servers.get_mut(server) {
            s.chunks.remove(&handle);
        }
    }

    /// The replicated state as of now, for a checkpoint or a digest
    /// encoded outside the lock (`frozen.rs`): O(1) for the namespace and
    /// the chunks, a copy of the small bounded tables.
    pub fn freeze(&self) -> Frozen {
        Frozen {
            nodes: self.ns.freeze(),
            versions: self.chunks.freeze_versions(),
            names: self.ns.names().to_list(),
            server_states: self
                .admin
                .iter()
                .map(|(id, st)| ServerStateOp { server_id: id.clone(), state: *st as i32 })
                .collect(),
            retries: self.retries.to_proto(),
            token_keys: self.token_keys.values().cloned().collect(),
            next_handle: self.chunks.next_handle(),
            applied: self.applied,
            membership: self.membership.clone(),
        }
    }

    /// Builds a checkpoint at the applied Raft position. Under a lock,
    /// prefer [`Meta::freeze`] and encode the view after releasing it.
    pub fn snapshot(&self) -> Checkpoint {
        self.freeze().checkpoint()
    }

    /// CRC32C of the replicated metadata ([`Frozen::digest`]). Under a
    /// lock, prefer [`Meta::freeze`].
    pub fn digest(&self) -> u32 {
        self.freeze().digest()
    }

    /// Replaces the replicated state with `fresh` (an installed snapshot),
    /// keeping the soft state (servers, repair); replica locations are
    /// rebuilt from what each server reported.
    pub fn replace_persistent(&mut self, fresh: Meta) {
        self.ns = fresh.ns;
        self.chunks = fresh.chunks;
        self.admin = fresh.admin;
        self.retries = fresh.retries;
        self.token_keys = fresh.token_keys;
        let held: Vec<(String, u64)> =
            self.servers.iter().flat_map(|s| s.chunks.iter().map(|h| (s.info.id.clone(), *h))).collect();
        for (server, h) in held {
            self.add_replica(h, &server);
        }
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

    /// Rebuilds metadata from a checkpoint. Entries of a checkpoint from
    /// before permissions (no mode) get the pre-permission defaults.
    pub fn from_checkpoint(cp: &Checkpoint) -> Result<Meta> {
        let mut m = Meta::new();
        m.ns.set_names(crate::perm::Names::from_list(&cp.names)?);
        for e in &cp.entries {
            let perm = match e.mode {
                Some(mode) => {
                    gfs_common::perm::check_mode(mode)
                        .map_err(|err| Error::Internal(format!("checkpoint entry {}: {err}", e.path)))?;
                    let perm = crate::perm::Perm { owner: e.owner, group: e.group, mode: mode as u16 };
                    m.ns.check_perm_ids(&e.path, perm)?;
                    perm
                }
                None => m.ns.legacy_perm(e.is_dir)?,
            };
            let node = if e.is_dir {
                Node::new_dir(e.mtime_ms, perm)
            } else {
                let hidden = crate::hidden::is_within_hidden(&e.path);
                for c in &e.chunks {
                    m.chunks.insert(c.handle, c.version, e.replication, e.chunk_size);
                    m.chunks.set_hidden(c.handle, hidden);
                }
                Node::File(FileMeta {
                    replication: e.replication,
                    chunk_size: e.chunk_size,
                    chunks: e.chunks.iter().map(|c| c.handle).collect(),
                    mtime_ms: e.mtime_ms,
                    perm,
                })
            };
            m.ns.load_entry(&e.path, node)?;
        }
        // The root keeps its built-in owner when the checkpoint has no
        // entry for it; those must be in the checkpoint's name table too.
        let root = m.ns.lookup("/")?.perm();
        m.ns.check_perm_ids("/", root)?;
        m.chunks.bump_next_handle(cp.next_handle);
        for st in &cp.server_states {
            m.apply_server_state(st);
        }
        if cp.has_last {
            m.applied = Some(crate::raft::log_id(cp.last_term, cp.last_leader_id, cp.last_seq));
        }
        if !cp.membership_json.is_empty() {
            m.membership = serde_json::from_slice(&cp.membership_json)
                .map_err(|e| Error::Internal(format!("checkpoint membership is corrupt: {e}; refusing to start")))?;
        }
        m.retries = crate::retry::RetryCache::from_proto(&cp.retries);
        m.token_keys = cp.token_keys.iter().map(|k| (k.id, k.clone())).collect();
        Ok(m)
    }

    /// A token for `handle` at `version` with `rights`, issued to `user`,
    /// signed with the newest key that every chunkserver has had time to
    /// receive (or the newest, in a new group). `Unavailable` while the
    /// group has no key yet (the leader makes one as it takes office).
    pub fn token(&self, handle: u64, version: u64, rights: u32, user: &str, lifetime_ms: u64) -> Result<ChunkToken> {
        let now = gfs_common::now_ms();
        let active = self.token_keys.values().rev().find(|k| k.created_ms + crate::tokens::ACTIVATION_MS <= now);
        let key = active
            .or_else(|| self.token_keys.values().next_back())
            .ok_or_else(|| Error::Unavailable("the master group has no token key yet; retry shortly".into()))?;
        let expires = now.saturating_add(lifetime_ms as i64).min(key.expires_ms);
        Ok(gfs_common::token::sign(key, handle, version, rights, expires, user))
    }

    /// A chunk's location with only live, up-to-date replicas.
    pub fn location(&self, index: u64, handle: u64) -> ChunkLocation {
        let (version, length, replicas) = match self.chunks.get(handle) {
            Some(c) => (c.version, c.length, c.replicas.iter().filter_map(|s| self.servers.live_info(s)).collect()),
            None => (0, 0, vec![]),
        };
        ChunkLocation { index, handle, version, length, replicas, token: None }
    }

    /// True when every chunk of `node` (a file) has a reported replica;
    /// always for directories.
    pub fn reported(&self, node: &Node) -> bool {
        self.unreported(node).is_none()
    }

    /// The first chunk of `node` (a file) that no live replica has
    /// reported, as (index, handle): its length is not known here.
    pub fn unreported(&self, node: &Node) -> Option<(usize, u64)> {
        match node {
            Node::File(f) => f
                .chunks
                .iter()
                .enumerate()
                .find(|(_, h)| self.chunks.get(**h).is_some_and(|c| c.replicas.is_empty()))
                .map(|(i, h)| (i, *h)),
            Node::Dir { .. } => None,
        }
    }

    /// `FileInfo` for the node at `path`.
    pub fn file_info(&self, path: &str, node: &Node) -> FileInfo {
        let perm = node.perm();
        let names = self.ns.names();
        let mut info = self.file_info_of(path, node);
        info.owner = names.name(perm.owner).to_string();
        info.group = names.name(perm.group).to_string();
        info.mode = u32::from(perm.mode);
        info
    }

    fn file_info_of(&self, path: &str, node: &Node) -> FileInfo {
        match node {
            Node::Dir { mtime_ms, children, hidden, .. } => FileInfo {
                path: path.to_string(),
                r#type: FileType::Directory as i32,
                mtime_ms: *mtime_ms,
                // Deleted entries awaiting GC are not shown, nor counted
                // (kept count: no walk over a large directory's names).
                children: crate::children::visible(children, *hidden) as u64,
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
                    ..Default::default()
                }
            }
        }
    }
}

/// Everything the handlers share.
pub struct Shared {
    /// Configuration.
    pub cfg: Config,
    /// This master's Raft id.
    pub id: NodeId,
    meta: Arc<Mutex<Meta>>,
    /// The replicated state machine over `meta`.
    pub machine: Arc<Machine>,
    /// The Raft node.
    pub raft: Raft,
    /// The Raft log (closed at shutdown).
    pub log: LogStore,
    /// Leadership: the term while this master is the leader and has applied
    /// its term's first entry, else 0; and since when.
    pub(crate) leadership: crate::group::Leadership,
    /// The last namespace digest (`MasterStatus`), by applied position.
    pub(crate) digest: crate::group::DigestCache,
    next_request: AtomicU64,
    /// Groups concurrent callers' batches into one Raft entry.
    proposer: Proposer,
    /// Per-path locks.
    pub locks: LockManager,
    /// Calls to chunkservers.
    pub rpc: ChunkRpc,
    /// Channels to the other masters (status, shadow sync).
    pub peers: gfs_common::net::ChannelPool,
    /// Prometheus families.
    pub metrics: crate::metrics::Metrics,
    chunk_locks: Vec<tokio::sync::Mutex<()>>,
}

impl Shared {
    /// Wraps the recovered metadata (`meta`, shared with `machine`) and the
    /// Raft node.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Config,
        id: NodeId,
        meta: Arc<Mutex<Meta>>,
        machine: Arc<Machine>,
        raft: Raft,
        log: LogStore,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        let rpc = ChunkRpc::new(Duration::from_millis(cfg.rpc_timeout_ms), &cfg.security);
        let peers = gfs_common::net::ChannelPool::new(
            16,
            Duration::from_millis(cfg.rpc_timeout_ms.min(2_000)),
            &cfg.security,
            &[Role::Master],
        );
        // Request ids only need to be unique within this process life and
        // distinct from a previous life's still-unapplied batches.
        let seed = (gfs_common::now_ms() as u64) << 20;
        let proposer = Proposer::start(
            id,
            raft.clone(),
            machine.clone(),
            Duration::from_millis(cfg.rpc_timeout_ms),
            metrics.raft_entry_batches.clone(),
        );
        Shared {
            cfg,
            id,
            meta,
            machine,
            raft,
            log,
            leadership: Default::default(),
            digest: Default::default(),
            next_request: AtomicU64::new(seed),
            proposer,
            locks: LockManager::new(),
            rpc,
            peers,
            metrics,
            chunk_locks: (0..CHUNK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// Who `caller` is for namespace permissions, with this master's
    /// superusers.
    pub fn requester(&self, caller: &gfs_common::auth::Caller) -> crate::perm::Requester {
        crate::perm::Requester::of(caller, &self.cfg.superusers, &self.cfg.supergroup)
    }

    /// Locks the metadata (never held across an await).
    pub fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease mutex stripe of a chunk.
    pub fn chunk_lock(&self, handle: u64) -> &tokio::sync::Mutex<()> {
        &self.chunk_locks[(handle % CHUNK_STRIPES as u64) as usize]
    }

    /// Replicates `ops` through Raft and applies them. The caller holds the
    /// path locks and has checked the ops against the current state.
    pub async fn commit(self: &Arc<Self>, ops: Vec<Op>) -> Result<()> {
        self.commit_then(ops, |_| {}).await
    }

    /// Like [`Shared::commit`], and runs `then` on the metadata right after
    /// the ops are applied, under the same lock, so no other task sees the
    /// state in between. Fails with `NotLeader` on a follower and
    /// `Unavailable` when no quorum acknowledges within the RPC timeout (a
    /// partitioned leader); the ops may still commit later, without `then`.
    ///
    /// The batch goes through the proposer (`raft::proposer`), which puts
    /// the batches of concurrent callers into one Raft entry. The caller is
    /// answered by its continuation the moment its batch is applied.
    pub async fn commit_then<R: Send + 'static>(
        self: &Arc<Self>,
        ops: Vec<Op>,
        then: impl FnOnce(&mut Meta) -> R + Send + 'static,
    ) -> Result<R> {
        self.propose(None, ops, then).await
    }

    /// Like [`Shared::commit`], for a client call: the applied batch
    /// records the call's outcome in the retry cache (`crate::retry`).
    pub async fn commit_call(self: &Arc<Self>, call: Option<&CallId>, ops: Vec<Op>) -> Result<()> {
        self.propose(call.cloned(), ops, |_| {}).await
    }

    async fn propose<R: Send + 'static>(
        self: &Arc<Self>,
        call: Option<CallId>,
        ops: Vec<Op>,
        then: impl FnOnce(&mut Meta) -> R + Send + 'static,
    ) -> Result<R> {
        self.require_leader()?;
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, applied) = tokio::sync::oneshot::channel();
        self.machine.expect(
            request_id,
            Box::new(move |meta: Result<&mut Meta>| {
                let _ = tx.send(meta.map(then));
            }),
        );
        let time_ms = gfs_common::now_ms();
        let ops = ops.into_iter().map(|op| LogRecord { seq: 0, time_ms, op: Some(op) }).collect();
        let batch = LogBatch { time_ms, ops, proposer: self.id, request_id, call };
        let wait = Duration::from_millis(self.cfg.rpc_timeout_ms);
        let outcome = tokio::time::timeout(wait, async {
            self.proposer.propose(batch).await?;
            applied.await.unwrap_or_else(|_| Err(Error::Internal("applied batch lost its continuation".into())))
        })
        .await;
        let res = outcome.unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "no quorum of masters acknowledged the change within {wait:?} (this master may be partitioned)"
            )))
        });
        if res.is_err() {
            self.machine.forget(request_id);
        }
        res
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
