//! A frozen view of the replicated state, for checkpoints and digests.
//!
//! [`Meta::freeze`](crate::state::Meta::freeze) takes it under the metadata
//! lock: the namespace and the chunk versions are persistent maps
//! (`imbl`), so freezing them is a reference count, whatever their size;
//! the rest (names, admin states, recent call outcomes, token keys) is
//! small and bounded and is copied. Encoding the view, which at a million
//! files takes about a second, then runs without the lock while the
//! master goes on: a change made meanwhile copies the tree nodes it
//! touches and leaves the view as it was.

use gfs_proto::{Checkpoint, CheckpointChunk, CheckpointFile, RetryEntry, ServerStateOp, TokenKey};

use crate::chunks::Versions;
use crate::namespace::{Node, Nodes};
use crate::raft::{NodeId, StoredMembership};

type LogId = openraft::LogId<NodeId>;

/// The replicated state at one applied Raft position.
pub struct Frozen {
    pub(crate) nodes: Nodes,
    pub(crate) versions: Versions,
    pub(crate) names: Vec<String>,
    pub(crate) server_states: Vec<ServerStateOp>,
    pub(crate) retries: Vec<RetryEntry>,
    pub(crate) token_keys: Vec<TokenKey>,
    pub(crate) next_handle: u64,
    pub(crate) applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

impl Frozen {
    /// The Raft position the view is at.
    pub fn applied(&self) -> Option<LogId> {
        self.applied
    }

    /// The membership in force at that position.
    pub fn membership(&self) -> &StoredMembership {
        &self.membership
    }

    /// Encodes the view as a checkpoint (parents before children).
    pub fn checkpoint(&self) -> Checkpoint {
        let entries = self.nodes.iter().map(|(path, node)| self.entry(path, node)).collect();
        let last = self.applied;
        Checkpoint {
            last_seq: last.map_or(0, |l| l.index),
            last_term: last.map_or(0, |l| l.leader_id.term),
            last_leader_id: last.map_or(0, |l| l.leader_id.node_id),
            has_last: last.is_some(),
            membership_json: serde_json::to_vec(&self.membership).expect("membership serializes").into(),
            next_handle: self.next_handle,
            entries,
            server_states: self.server_states.clone(),
            retries: self.retries.clone(),
            token_keys: self.token_keys.clone(),
            names: self.names.clone(),
        }
    }

    fn entry(&self, path: &str, node: &Node) -> CheckpointFile {
        let perm = node.perm();
        let mut e = match node {
            Node::Dir { mtime_ms, .. } => {
                CheckpointFile { path: path.to_string(), is_dir: true, mtime_ms: *mtime_ms, ..Default::default() }
            }
            Node::File(f) => CheckpointFile {
                path: path.to_string(),
                is_dir: false,
                replication: f.replication,
                chunk_size: f.chunk_size,
                mtime_ms: f.mtime_ms,
                chunks: f
                    .chunks
                    .iter()
                    .map(|h| CheckpointChunk { handle: *h, version: self.versions.get(h).copied().unwrap_or(0) })
                    .collect(),
                ..Default::default()
            },
        };
        (e.mode, e.owner, e.group) = (Some(u32::from(perm.mode)), perm.owner, perm.group);
        e
    }

    /// CRC32C of the replicated metadata (namespace with owners and modes,
    /// the name table, chunks and versions, admin states, membership):
    /// equal on masters with equal state.
    pub fn digest(&self) -> u32 {
        let mut cp = self.checkpoint();
        // Not part of the namespace: the Raft position (a new leader adds
        // a blank entry) and next_handle (raised past the term's range on
        // election). Token keys are secrets: not in a digest others see.
        cp.next_handle = 0;
        cp.token_keys.clear();
        (cp.last_seq, cp.last_term, cp.last_leader_id, cp.has_last) = (0, 0, 0, false);
        crc32c::crc32c(&prost::Message::encode_to_vec(&cp))
    }
}
