//! Raft replication of the operation log among master replicas (openraft).
//!
//! - [`log_store`]: the Raft log on disk (CRC-framed `RaftEntry` segments,
//!   group commit) plus the vote; [`segments`] reads segment files and
//!   tells a torn tail from damage; [`check`] is `gfs-master check-log`.
//! - [`state_machine`]: applies committed `LogBatch`es to [`Meta`]; its
//!   snapshots are checkpoints.
//! - [`network`]: `RaftService` over tonic, with a fault-injection switch
//!   for partition tests.
//!
//! Every metadata mutation is one `LogBatch` proposed by the leader; it is
//! acknowledged after a majority persisted it and this master applied it.
//!
//! [`Meta`]: crate::state::Meta

pub mod check;
pub mod log_store;
pub mod network;
pub mod proposer;
pub mod segments;
pub mod state_machine;

use std::io::Cursor;

use gfs_common::{Error, Result};
use gfs_proto::{LogBatch, LogGroup, RaftBlank, RaftEntry, raft_entry};
use openraft::{BasicNode, EntryPayload, LeaderId, LogId};
use prost::Message;
use serde::{Deserialize, Serialize};

/// A master's Raft id.
pub type NodeId = u64;

/// A proposed metadata change: an encoded [`LogGroup`], the batches of
/// one or more callers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    /// `LogGroup` protobuf.
    pub group: Vec<u8>,
}

impl Request {
    /// A request carrying `batches`.
    pub fn of(batches: Vec<LogBatch>) -> Request {
        Request { group: LogGroup { batches }.encode_to_vec() }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogGroup({} bytes)", self.group.len())
    }
}

/// The outcome of applying one entry. Callers learn their own batch's
/// outcome from their continuation (`Machine::expect`); this only reports
/// an entry that could not be decoded at all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Response {
    /// `ErrorDetail` protobuf when the entry could not be decoded.
    pub error: Option<Vec<u8>>,
}

openraft::declare_raft_types!(
    /// openraft types of the master group.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// An openraft log entry of the master group.
pub type Entry = openraft::Entry<TypeConfig>;
/// The openraft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A stored membership.
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;

/// Builds a log id.
pub fn log_id(term: u64, node_id: NodeId, index: u64) -> LogId<NodeId> {
    LogId::new(LeaderId::new(term, node_id), index)
}

/// Converts an entry to its on-disk form.
pub fn entry_to_proto(e: &Entry) -> RaftEntry {
    let payload = match &e.payload {
        EntryPayload::Blank => raft_entry::Payload::Blank(RaftBlank {}),
        EntryPayload::Normal(r) => raft_entry::Payload::Group(
            // The group was built by this process when it was proposed; an
            // undecodable one is stored as an empty group rather than lost.
            LogGroup::decode(r.group.as_slice()).unwrap_or_default(),
        ),
        EntryPayload::Membership(m) => {
            raft_entry::Payload::MembershipJson(serde_json::to_vec(m).expect("membership serializes").into())
        }
    };
    RaftEntry {
        term: e.log_id.leader_id.term,
        leader_id: e.log_id.leader_id.node_id,
        index: e.log_id.index,
        payload: Some(payload),
    }
}

/// Converts an on-disk entry back.
pub fn entry_from_proto(p: RaftEntry) -> Result<Entry> {
    let payload = match p.payload {
        Some(raft_entry::Payload::Blank(_)) => EntryPayload::Blank,
        Some(raft_entry::Payload::Batch(b)) => EntryPayload::Normal(Request::of(vec![b])),
        Some(raft_entry::Payload::Group(g)) => EntryPayload::Normal(Request { group: g.encode_to_vec() }),
        Some(raft_entry::Payload::MembershipJson(j)) => EntryPayload::Membership(
            serde_json::from_slice(&j)
                .map_err(|e| Error::Internal(format!("raft entry {}: bad membership: {e}", p.index)))?,
        ),
        None => return Err(Error::Internal(format!("raft entry {} has no payload", p.index))),
    };
    Ok(Entry { log_id: log_id(p.term, p.leader_id, p.index), payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_proto::{LogRecord, MkdirOp, log_record::Op};
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn entries_round_trip_through_the_disk_format() {
        let batch = LogBatch {
            time_ms: 5,
            ops: vec![LogRecord {
                seq: 0,
                time_ms: 5,
                op: Some(Op::Mkdir(MkdirOp { path: "/a".into(), ..Default::default() })),
            }],
            proposer: 2,
            request_id: 9,
            call: Some(gfs_proto::CallId { client: 4, seq: 6 }),
        };
        let nodes: BTreeMap<u64, BasicNode> = [(1, BasicNode { addr: "h:1".into() })].into();
        let members = openraft::Membership::new(vec![BTreeSet::from([1])], nodes);
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(Request::of(vec![batch.clone(), batch.clone()])),
            EntryPayload::Membership(members),
        ] {
            let e = Entry { log_id: log_id(3, 1, 17), payload };
            let back = entry_from_proto(entry_to_proto(&e)).unwrap();
            assert_eq!(back.log_id, e.log_id);
            assert_eq!(format!("{:?}", back.payload), format!("{:?}", e.payload));
        }
    }

    #[test]
    fn an_older_single_batch_entry_reads_as_a_group_of_one() {
        let batch = LogBatch { time_ms: 5, ops: vec![], proposer: 2, request_id: 9, call: None };
        let old =
            RaftEntry { term: 3, leader_id: 1, index: 17, payload: Some(raft_entry::Payload::Batch(batch.clone())) };
        let e = entry_from_proto(old).unwrap();
        assert_eq!(
            format!("{:?}", e.payload),
            format!("{:?}", EntryPayload::<TypeConfig>::Normal(Request::of(vec![batch])))
        );
    }
}
