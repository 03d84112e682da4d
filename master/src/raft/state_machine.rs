//! The replicated state machine: committed entries (each a `LogGroup` of
//! callers' `LogBatch`es, see `raft::proposer`) applied to [`Meta`],
//! snapshots in the checkpoint format.
//!
//! A batch's operations are applied in order; the first one that fails
//! stops that batch (not the rest of its group) and its error goes to the
//! batch's caller. Every replica applies the same entries in the same
//! order, so every replica reaches the same state, including for a failed
//! batch.
//!
//! The leader may attach a continuation to a batch it proposes (see
//! `Shared::commit_then`): it runs on the metadata right after the batch is
//! applied, under the same lock, so no other task sees the state in
//! between (for example a logged chunk whose replicas are not recorded yet).

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gfs_common::{Error, Result};
use gfs_proto::{Checkpoint, LogBatch, LogGroup};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use prost::Message;
use tracing::{error, info};

use super::{Entry, NodeId, Response, TypeConfig};
use crate::oplog;
use crate::state::Meta;

type StoreError = StorageError<NodeId>;

/// A continuation run right after its batch applied: on the metadata, or
/// with the error that stopped the batch (the same on every master).
pub type Then = Box<dyn FnOnce(std::result::Result<&mut Meta, Error>) + Send>;

/// State shared by the state machine and the request handlers.
pub struct Machine {
    /// The metadata (also `Shared::meta`).
    pub meta: Arc<Mutex<Meta>>,
    dir: PathBuf,
    my_id: NodeId,
    pending: Mutex<HashMap<u64, Then>>,
}

impl Machine {
    /// Wraps the metadata recovered from the checkpoint in `dir`.
    pub fn new(meta: Arc<Mutex<Meta>>, dir: PathBuf, my_id: NodeId) -> Arc<Machine> {
        Arc::new(Machine { meta, dir, my_id, pending: Mutex::new(HashMap::new()) })
    }

    fn meta(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the continuation of the batch with `request_id`.
    pub fn expect(&self, request_id: u64, then: Then) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(request_id, then);
    }

    /// Drops the continuation of a batch that failed or timed out.
    pub fn forget(&self, request_id: u64) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&request_id);
    }

    /// Applies one caller's batch and runs its continuation, if this
    /// master proposed it and the caller still waits.
    fn apply_one(&self, meta: &mut Meta, batch: &LogBatch) {
        // A client call is applied once: a second batch for a call already
        // carried out (a retry proposed while the first was still in
        // flight) gets the first one's outcome and changes nothing.
        let res = match meta.retries.outcome(batch.call.as_ref()) {
            Some(done) => done,
            None => {
                let res = self.apply_batch(meta, batch);
                if let Some(call) = &batch.call {
                    let err = res.as_ref().err().map(Error::to_detail_bytes).unwrap_or_default();
                    meta.retries.record(call, batch.time_ms, err);
                }
                res
            }
        };
        let then = (batch.proposer == self.my_id).then(|| self.take(batch.request_id)).flatten();
        if let Some(then) = then {
            then(res.map(|()| meta));
        }
    }

    /// Applies the batches of one committed entry, each on its own (a
    /// failing batch does not stop the ones after it).
    pub fn apply_group(&self, meta: &mut Meta, group: &LogGroup) {
        for batch in &group.batches {
            self.apply_one(meta, batch);
        }
    }

    fn take(&self, request_id: u64) -> Option<Then> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&request_id)
    }

    /// Fails the waiting caller of `request_id` (its batch was not
    /// committed by this master: leadership lost, Raft stopped).
    pub fn fail(&self, request_id: u64, e: Error) {
        if let Some(then) = self.take(request_id) {
            then(Err(e));
        }
    }

    fn apply_batch(&self, meta: &mut Meta, batch: &LogBatch) -> Result<()> {
        for rec in &batch.ops {
            let op = rec.op.as_ref().ok_or_else(|| Error::Internal("log batch entry without op".into()))?;
            meta.apply(op, batch.time_ms)?;
        }
        Ok(())
    }

    /// The state machine handed to openraft.
    pub fn state_machine(self: &Arc<Self>) -> StateMachine {
        StateMachine { m: self.clone() }
    }

    fn snapshot_of(
        &self,
        last: Option<LogId<NodeId>>,
        membership: StoredMembership<NodeId, openraft::BasicNode>,
        bytes: Vec<u8>,
    ) -> Snapshot<TypeConfig> {
        let (term, seq) = last.map_or((0, 0), |l| (l.leader_id.term, l.index));
        let snapshot_id = format!("{term}-{seq}-{}", crc32c::crc32c(&bytes));
        Snapshot {
            meta: SnapshotMeta { last_log_id: last, last_membership: membership, snapshot_id },
            snapshot: Box::new(Cursor::new(bytes)),
        }
    }

    /// Builds, persists and returns a snapshot of the applied state. The
    /// metadata lock is held only to freeze it (`frozen.rs`); encoding and
    /// writing run on a blocking thread while the master goes on.
    pub async fn build(&self) -> Result<Snapshot<TypeConfig>> {
        let frozen = self.meta().freeze();
        let (last, membership) = (frozen.applied(), frozen.membership().clone());
        let dir = self.dir.clone();
        let seq = last.map_or(0, |l| l.index);
        let bytes = tokio::task::spawn_blocking(move || {
            let bytes = frozen.checkpoint().encode_to_vec();
            drop(frozen);
            oplog::write_checkpoint(&dir, &bytes, seq).map(|_| bytes)
        })
        .await
        .map_err(|e| Error::Internal(format!("checkpoint task: {e}")))??;
        Ok(self.snapshot_of(last, membership, bytes))
    }
}

/// The membership a checkpoint records (the default when it has none).
fn checkpoint_membership(cp: &Checkpoint) -> Result<StoredMembership<NodeId, openraft::BasicNode>> {
    if cp.membership_json.is_empty() {
        return Ok(StoredMembership::default());
    }
    serde_json::from_slice(&cp.membership_json)
        .map_err(|e| Error::Internal(format!("checkpoint membership is corrupt: {e}")))
}

/// openraft's view of [`Machine`].
pub struct StateMachine {
    m: Arc<Machine>,
}

fn sm_err(e: impl std::fmt::Display) -> StoreError {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, StoreError> {
        self.m.build().await.map_err(sm_err)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>), StoreError> {
        let meta = self.m.meta();
        Ok((meta.applied, meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> std::result::Result<Vec<Response>, StoreError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut out = Vec::new();
        let mut meta = self.m.meta();
        for e in entries {
            meta.applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Response::default()),
                EntryPayload::Membership(mem) => {
                    meta.membership = StoredMembership::new(Some(e.log_id), mem);
                    out.push(Response::default());
                }
                EntryPayload::Normal(req) => {
                    let group = match LogGroup::decode(req.group.as_slice()) {
                        Ok(g) => g,
                        Err(err) => {
                            error!(index = e.log_id.index, error = %err, "undecodable log entry; skipped");
                            out.push(Response {
                                error: Some(Error::Internal("undecodable log entry".into()).to_detail_bytes()),
                            });
                            continue;
                        }
                    };
                    self.m.apply_group(&mut meta, &group);
                    out.push(Response::default());
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine { m: self.m.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> std::result::Result<Box<Cursor<Vec<u8>>>, StoreError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), StoreError> {
        let bytes = snapshot.into_inner();
        let cp = Checkpoint::decode(bytes.as_slice()).map_err(sm_err)?;
        let fresh = Meta::from_checkpoint(&cp).map_err(sm_err)?;
        {
            let mut m = self.m.meta();
            m.replace_persistent(fresh);
            m.applied = meta.last_log_id;
            m.membership = meta.last_membership.clone();
        }
        let dir = self.m.dir.clone();
        let seq = cp.last_seq;
        tokio::task::spawn_blocking(move || oplog::write_checkpoint(&dir, &bytes, seq))
            .await
            .map_err(sm_err)?
            .map_err(sm_err)?;
        info!(last = ?meta.last_log_id, entries = cp.entries.len(), "installed snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> std::result::Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let dir = self.m.dir.clone();
        let cp =
            tokio::task::spawn_blocking(move || oplog::load_checkpoint(&dir)).await.map_err(sm_err)?.map_err(sm_err)?;
        match cp {
            None => Ok(None),
            Some(cp) => {
                let membership = checkpoint_membership(&cp).map_err(sm_err)?;
                let last = cp.has_last.then(|| super::log_id(cp.last_term, cp.last_leader_id, cp.last_seq));
                Ok(Some(self.m.snapshot_of(last, membership, cp.encode_to_vec())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Request, log_id};
    use gfs_proto::{LogRecord, MkdirOp, RenameOp, log_record::Op};

    fn batch(request_id: u64, ops: Vec<Op>) -> LogBatch {
        let ops = ops.into_iter().map(|op| LogRecord { seq: 0, time_ms: 1, op: Some(op) }).collect();
        LogBatch { time_ms: 1, ops, proposer: 1, request_id, call: None }
    }

    fn mkdir(p: &str) -> Op {
        Op::Mkdir(MkdirOp { path: p.into(), ..Default::default() })
    }

    /// One entry carries several callers' batches: each applies on its own,
    /// a failing one stops only itself, and each caller hears its own
    /// outcome; a caller that gave up is skipped.
    #[tokio::test]
    async fn a_group_applies_each_batch_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let machine = Machine::new(Arc::new(Mutex::new(Meta::new())), dir.path().to_path_buf(), 1);
        let mut outcomes = Vec::new();
        for id in [10, 11, 12] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            machine.expect(
                id,
                Box::new(move |r: Result<&mut Meta>| {
                    let _ = tx.send(r.map(|m| m.ns.lookup("/a").is_ok()));
                }),
            );
            outcomes.push(rx);
        }
        machine.forget(13);
        let group = vec![
            batch(10, vec![mkdir("/a")]),
            // Fails at its second op (no such source): its first op stays
            // applied, the same on every master.
            batch(
                11,
                vec![mkdir("/b"), Op::Rename(RenameOp { src: "/missing".into(), dst: "/c".into() }), mkdir("/f")],
            ),
            batch(12, vec![mkdir("/d")]),
            batch(13, vec![mkdir("/e")]),
        ];
        let entry = Entry { log_id: log_id(1, 1, 1), payload: openraft::EntryPayload::Normal(Request::of(group)) };
        let out = machine.state_machine().apply(vec![entry]).await.unwrap();
        assert_eq!(out, vec![Response::default()]);
        let mut results = Vec::new();
        for rx in outcomes {
            results.push(rx.await.unwrap());
        }
        assert_eq!(results[0], Ok(true));
        assert!(matches!(&results[1], Err(Error::Internal(m)) if m.contains("/missing")), "{:?}", results[1]);
        assert_eq!(results[2], Ok(true));
        let meta = machine.meta();
        for p in ["/a", "/b", "/d", "/e"] {
            assert!(meta.ns.lookup(p).is_ok(), "{p} applied");
        }
        assert!(meta.ns.lookup("/c").is_err() && meta.ns.lookup("/f").is_err(), "the failed batch stopped");
        assert_eq!(meta.applied, Some(log_id(1, 1, 1)));
    }

    /// A second batch for a call already carried out changes nothing and
    /// gets the first batch's outcome, on every master alike.
    #[tokio::test]
    async fn a_call_applies_once_even_if_proposed_twice() {
        let dir = tempfile::tempdir().unwrap();
        let machine = Machine::new(Arc::new(Mutex::new(Meta::new())), dir.path().to_path_buf(), 1);
        let call = Some(gfs_proto::CallId { client: 5, seq: 1 });
        let create = |request_id| LogBatch {
            call,
            ..batch(
                request_id,
                vec![Op::Create(gfs_proto::CreateOp {
                    path: "/f".into(),
                    replication: 3,
                    chunk_size: 1,
                    ..Default::default()
                })],
            )
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        machine.expect(
            21,
            Box::new(move |r: Result<&mut Meta>| {
                let _ = tx.send(r.map(|_| ()));
            }),
        );
        let entries = vec![
            Entry { log_id: log_id(1, 1, 1), payload: openraft::EntryPayload::Normal(Request::of(vec![create(20)])) },
            Entry { log_id: log_id(1, 1, 2), payload: openraft::EntryPayload::Normal(Request::of(vec![create(21)])) },
        ];
        machine.state_machine().apply(entries).await.unwrap();
        assert_eq!(rx.await.unwrap(), Ok(()), "the second run answers with the first one's outcome");
        assert_eq!(machine.meta().retries.len(), 1);
        assert!(machine.meta().ns.lookup("/f").is_ok());
    }
}
