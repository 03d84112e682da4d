//! What a (possibly compromised) chunkserver sends the master in a
//! heartbeat: chunk reports folded into the chunk table, and the chunk
//! indexes of lease requests resolved against a file. No report may make
//! an unregistered server a replica, or panic; no lease request may
//! allocate past the bounds.
#![no_main]

use gfs_common::MAX_NEW_CHUNKS_PER_LEASE;
use gfs_master::grant::{Target, append_target, write_target};
use gfs_master::report::ReportOutcome;
use gfs_master::state::Meta;
use gfs_proto::log_record::Op;
use gfs_proto::{AddChunkOp, CreateOp, HeartbeatRequest, MkdirOp, ServerInfo};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn cluster() -> Meta {
    let mut m = Meta::new();
    m.apply(&Op::Mkdir(MkdirOp { path: "/d".into(), ..Default::default() }), 1).unwrap();
    let create = CreateOp { path: "/d/f".into(), replication: 3, chunk_size: 1 << 20, ..Default::default() };
    m.apply(&Op::Create(create), 2).unwrap();
    for (index, handle) in [(0, 1u64), (1, 2), (2, 3)] {
        let add = AddChunkOp { path: "/d/f".into(), index, handle, version: 2 };
        m.apply(&Op::AddChunk(add), 3).unwrap();
    }
    let now = tokio::time::Instant::now();
    for id in ["cs-1", "cs-2"] {
        let info = ServerInfo { id: id.into(), address: format!("{id}:1"), ..Default::default() };
        m.servers.register(info, 1 << 40, 0, now);
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = HeartbeatRequest::decode(data) else { return };
    let mut m = cluster();
    let server = if req.server_id.is_empty() { "cs-1" } else { req.server_id.as_str() };
    let mut out = ReportOutcome::default();
    m.process_reports(server, req.report_seq, &req.changed, &mut out);
    if req.is_full_report {
        m.replace_reports(server, req.report_seq, &req.full_report, &mut out);
    }
    for (h, c) in m.chunks.iter() {
        for r in &c.replicas {
            assert!(m.servers.get(r).is_some(), "chunk {h}: unregistered replica {r}");
        }
        assert!(c.length <= c.chunk_size, "chunk {h}: length past the chunk size");
    }
    for (h, v, _) in &out.adopt {
        assert!(m.chunks.get(*h).is_some_and(|c| *v > c.version));
    }
    // Lease indexes: the extensions stand for a file's chunk list.
    let chunks = &req.lease_extensions;
    if let Ok(Target::Allocate { from, to }) = write_target(chunks, req.capacity_bytes, req.full) {
        assert_eq!(from, chunks.len() as u64);
        assert!(to >= from && to - from < MAX_NEW_CHUNKS_PER_LEASE, "allocation storm: {from}..={to}");
    }
    if let Ok(Target::Allocate { from, to }) = append_target(chunks, req.free_bytes) {
        assert_eq!((from, to), (chunks.len() as u64, chunks.len() as u64));
    }
});
