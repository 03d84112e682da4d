//! Writes the hand-made seed inputs of every target into fuzz/corpus
//! (valid inputs of each format, so that the fuzzer starts from the
//! structure rather than from random bytes). Run from the repo root:
//! `cargo +nightly run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use gfs_chunkserver::meta::{self, SLOT_SIZE};
use gfs_common::token::{READ, WRITE, sign};
use gfs_master::oplog::encode_frame;
use gfs_master::raft::{Entry, Request, TypeConfig, entry_to_proto, log_id};
use gfs_master::state::Meta;
use gfs_proto::log_record::Op;
use gfs_proto::{
    AddChunkOp, CallId, ChunkReport, CreateOp, DeleteOp, HeartbeatRequest, LogBatch, LogGroup, LogRecord, MkdirOp,
    RenameOp, ServerState, ServerStateOp, SetAttrOp, SetVersionOp, TokenKey,
};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, EntryPayload, Membership, SnapshotMeta, StoredMembership, Vote};
use prost::Message;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn rec(op: Op) -> LogRecord {
    LogRecord { seq: 0, time_ms: 0, op: Some(op) }
}

fn batch(n: u64, ops: Vec<Op>) -> LogBatch {
    LogBatch {
        time_ms: 1_000 * n as i64,
        ops: ops.into_iter().map(rec).collect(),
        proposer: 1,
        request_id: n,
        call: Some(CallId { client: 9, seq: n }),
    }
}

fn groups() -> Vec<LogGroup> {
    let mkdir = |p: &str, mode| Op::Mkdir(MkdirOp { path: p.into(), owner: "alice".into(), mode });
    let create = |p: &str| {
        Op::Create(CreateOp {
            path: p.into(),
            replication: 3,
            chunk_size: 64 << 20,
            owner: "bob".into(),
            mode: Some(0o640),
        })
    };
    let add = |p: &str, index, handle| Op::AddChunk(AddChunkOp { path: p.into(), index, handle, version: 1 });
    vec![
        LogGroup {
            batches: vec![
                batch(1, vec![mkdir("/a/b", Some(0o755)), create("/a/b/f")]),
                batch(2, vec![add("/a/b/f", 0, 1), add("/a/b/f", 1, 2)]),
                batch(3, vec![Op::SetVersion(SetVersionOp { handle: 1, version: 2 })]),
            ],
        },
        LogGroup {
            batches: vec![
                batch(1, vec![mkdir("/x", None), create("/x/y")]),
                batch(
                    2,
                    vec![Op::SetAttr(SetAttrOp {
                        path: "/x/y".into(),
                        mode: Some(0o1777),
                        owner: "carol".into(),
                        group: "ops".into(),
                        replication: None,
                    })],
                ),
                batch(3, vec![Op::Rename(RenameOp { src: "/x/y".into(), dst: "/x/z".into() })]),
                batch(4, vec![Op::Delete(DeleteOp { path: "/x".into() })]),
            ],
        },
        LogGroup {
            batches: vec![
                batch(
                    1,
                    vec![Op::ServerState(ServerStateOp {
                        server_id: "cs-1".into(),
                        state: ServerState::Decommissioning as i32,
                    })],
                ),
                batch(
                    2,
                    vec![Op::TokenKey(TokenKey {
                        id: 3,
                        secret: vec![1; 32].into(),
                        created_ms: 1,
                        expires_ms: 10_000,
                    })],
                ),
                // The same call twice: the retry cache answers the second.
                batch(2, vec![mkdir("/r", Some(0o700))]),
            ],
        },
    ]
}

fn entries() -> Vec<Entry> {
    let mut out: Vec<Entry> = vec![Entry { log_id: log_id(1, 1, 1), payload: EntryPayload::Blank }];
    let nodes: BTreeMap<u64, BasicNode> = (1..=3).map(|i| (i, BasicNode::new(format!("m{i}:7000")))).collect();
    let members = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
    out.push(Entry { log_id: log_id(1, 1, 2), payload: EntryPayload::Membership(members) });
    for (i, g) in groups().into_iter().enumerate() {
        let e = Entry { log_id: log_id(1, 1, 3 + i as u64), payload: EntryPayload::Normal(Request::of(g.batches)) };
        out.push(e);
    }
    out
}

fn main() {
    // log_entry and checkpoint: each group, and the checkpoint after it.
    for (i, g) in groups().iter().enumerate() {
        write("log_entry", &i.to_string(), &g.encode_to_vec());
        let mut m = Meta::new();
        for b in &g.batches {
            for r in &b.ops {
                let _ = m.apply(r.op.as_ref().unwrap(), b.time_ms);
            }
        }
        write("checkpoint", &i.to_string(), &m.snapshot().encode_to_vec());
    }

    // raft_log: a segment of frames, and one with a flipped byte.
    let mut seg = Vec::new();
    for e in entries() {
        encode_frame(&entry_to_proto(&e).encode_to_vec(), &mut seg);
    }
    write("raft_log", "segment", &seg);
    let mut damaged = seg.clone();
    damaged[20] ^= 0x10;
    write("raft_log", "damaged", &damaged);
    write("raft_log", "torn", &seg[..seg.len() - 3]);

    // raft_rpc: selector byte, then the postcard message.
    let vote = Vote::new(2, 1);
    let ae = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(1, 1, 1)),
        entries: entries(),
        leader_commit: Some(log_id(1, 1, 2)),
    };
    let rpc = |which: u8, body: Vec<u8>| [vec![which], body].concat();
    write("raft_rpc", "append", &rpc(0, postcard::to_allocvec(&ae).unwrap()));
    let v = VoteRequest::<u64> { vote, last_log_id: Some(log_id(1, 1, 5)) };
    write("raft_rpc", "vote", &rpc(1, postcard::to_allocvec(&v).unwrap()));
    let snap = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(log_id(1, 1, 5)),
            last_membership: StoredMembership::default(),
            snapshot_id: "1-5".into(),
        },
        offset: 0,
        data: Meta::new().snapshot().encode_to_vec(),
        done: true,
    };
    write("raft_rpc", "snapshot", &rpc(2, postcard::to_allocvec(&snap).unwrap()));

    // chunk_meta: slot 0 bytes, then slot 1 bytes (halves of the input).
    let m = |seq, length: u64| meta::Meta {
        version: 4,
        length,
        crcs: (0..length.div_ceil(gfs_common::BLOCK_SIZE)).map(|i| i as u32).collect(),
        seq,
    };
    let (a, b) = (meta::encode_slot(&m(2, 200_000)), meta::encode_slot(&m(3, 70_000)));
    let n = a.len().max(b.len());
    let pad = |mut v: Vec<u8>| {
        v.resize(n, 0);
        v
    };
    write("chunk_meta", "two-slots", &[pad(a.clone()), pad(b)].concat());
    write("chunk_meta", "one-slot", &[pad(a), vec![0; n]].concat());
    assert!(n as u64 <= SLOT_SIZE);

    // path: a path, a newline, a mode spec.
    for (i, s) in [
        "/a/b/c\n0755",
        "/x/./y/../z\nu+rwx,g-w,o=",
        "//a//b/\na+X",
        "/.gfs-deleted.1/f\n1777",
        "host1:7000,host2:7000\nug+s",
    ]
    .iter()
    .enumerate()
    {
        write("path", &i.to_string(), s.as_bytes());
    }

    // token: tokens signed with the target's fixed key.
    let key = TokenKey { id: 7, secret: vec![0x5a; 32].into(), created_ms: 0, expires_ms: i64::MAX };
    write("token", "read", &sign(&key, 0x10, 3, READ, 1 << 40, "alice").encode_to_vec());
    write("token", "write", &sign(&key, 0x11, 1, READ | WRITE, 1 << 40, "bob").encode_to_vec());

    // chunkserver_report: heartbeats with changed and full reports.
    let report = |handle, version, length| ChunkReport { handle, version, length };
    let hb = HeartbeatRequest {
        server_id: "cs-2".into(),
        changed: vec![report(1, 2, 100), report(2, 3, 5), report(9, 1, 1)],
        full_report: vec![report(1, 2, 4096), report(3, 1, 0)],
        is_full_report: true,
        lease_extensions: vec![1, 2, 3],
        capacity_bytes: 3,
        report_seq: 4,
        free_bytes: Some(2),
        ..Default::default()
    };
    write("chunkserver_report", "0", &hb.encode_to_vec());
    // chunk_store: 13-byte ops (kind, offset, length).
    let op = |kind: u8, offset: u64, len: u32| {
        [vec![kind], offset.to_le_bytes().to_vec(), len.to_le_bytes().to_vec()].concat()
    };
    let ops = [
        op(0, 0, 100_000),
        op(0, 70_000, 5),
        op(3, 65_530, 20),
        op(1, 300_000, 200_000),
        op(2, 1_000_000, 0),
        op(3, 0, 300_000),
        op(0x80, u64::MAX - 3, 10),
        op(0x82, 1 << 31, 0),
    ];
    write("chunk_store", "0", &ops.concat());
    // push_buffer: 6-byte ops (kind, slot or id, length).
    let op = |kind: u8, which: u8, n: u32| [vec![kind, which], n.to_le_bytes().to_vec()].concat();
    let ops = [
        op(0, 1, 100),
        op(1, 0, 60),
        op(1, 0, 40),
        op(2, 0, 0),
        op(3, 1, 0),
        op(0, 2, 3 << 20),
        op(0, 3, 9 << 20),
        op(4, 2, 0),
    ];
    write("push_buffer", "0", &ops.concat());
    println!("seeds written under fuzz/corpus");
}
