use gfs_proto::log_record::Op;
use gfs_proto::{AddChunkOp, CreateOp, DeleteOp, RenameOp, ServerInfo, ServerStateOp};

use super::*;
use crate::config::Config;

/// `files` files of `chunks` chunks each, every chunk on a, b and c.
fn meta(files: u64, chunks: u64) -> Meta {
    let mut m = Meta::new();
    for s in ["a", "b", "c", "d"] {
        let info = ServerInfo { id: s.into(), address: format!("{s}:1"), zone: "z".into() };
        m.servers.register(info, 1 << 40, 0, Instant::now());
    }
    let mut handle = 1;
    for f in 0..files {
        let path = format!("/f{f}");
        let create = CreateOp { path: path.clone(), replication: 3, chunk_size: 100, ..Default::default() };
        m.apply(&Op::Create(create), 1).unwrap();
        for index in 0..chunks {
            m.apply(&Op::AddChunk(AddChunkOp { path: path.clone(), index, handle, version: 1 }), 1).unwrap();
            for s in ["a", "b", "c"] {
                m.add_replica(handle, s);
            }
            m.chunks.get_mut(handle).unwrap().length = 100;
            handle += 1;
        }
    }
    m
}

/// One repair step's index work without the background sweep.
fn step(m: &mut Meta, cfg: &Config) {
    m.index_begin(cfg, false);
    while m.index_slice(cfg, Instant::now()) {}
}

fn handles_of(m: &Meta, path: &str) -> Vec<u64> {
    m.ns.file(path).unwrap().chunks.clone()
}

#[test]
fn a_lost_replica_is_queued_by_its_change_alone() {
    let cfg = Config::default();
    let mut m = meta(3, 2);
    m.refresh_index_now(&cfg);
    assert!(m.heal.index.complete);
    assert_eq!(m.heal.index.totals(), &Totals::default());
    let h = handles_of(&m, "/f1")[1];
    m.remove_replica(h, "b");
    // No sweep: only the change stream can find it.
    step(&mut m, &cfg);
    assert_eq!(m.heal.index.queue().collect::<Vec<_>>(), [h]);
    let t = m.heal.index.totals();
    assert_eq!((t.chunks, t.bytes, t.drain_chunks), (1, 100, 0));
    assert!(m.heal.index.pending_since(h).is_some());
    m.add_replica(h, "d");
    step(&mut m, &cfg);
    assert!(m.heal.index.queue_is_empty());
    assert_eq!(m.heal.index.totals(), &Totals::default());
    assert_eq!(m.heal.index.pending_since(h), None);
}

#[test]
fn a_drain_queues_the_servers_chunks_without_a_chunk_change() {
    let cfg = Config::default();
    let mut m = meta(2, 3);
    m.refresh_index_now(&cfg);
    let op = ServerStateOp { server_id: "c".into(), state: gfs_proto::ServerState::Decommissioning as i32 };
    m.apply(&Op::ServerState(op), 2).unwrap();
    step(&mut m, &cfg);
    let t = m.heal.index.totals();
    assert_eq!((t.chunks, t.drain_chunks, t.drain_bytes), (6, 6, 600));
    // A dead server: its replicas leave the chunks (a change each).
    let dead = m.servers.expire(Instant::now() + Duration::from_secs(3600), Duration::from_secs(1));
    assert_eq!(dead.len(), 4);
    m.drop_replicas_of(dead);
    step(&mut m, &cfg);
    let t = m.heal.index.totals();
    assert_eq!((t.chunks, t.drain_chunks), (6, 0));
    assert_eq!(t.deficits.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), [(3, 6)]);
}

#[test]
fn deleted_chunks_go_last_and_purged_ones_leave_the_index() {
    let cfg = Config::default();
    let mut m = meta(2, 1);
    let (live, gone) = (handles_of(&m, "/f0")[0], handles_of(&m, "/f1")[0]);
    let hidden = crate::hidden::hidden_path("/f1", 5);
    m.apply(&Op::Rename(RenameOp { src: "/f1".into(), dst: hidden.clone() }), 5).unwrap();
    assert!(m.chunks.get(gone).unwrap().hidden && !m.chunks.get(live).unwrap().hidden);
    for h in [gone, live] {
        m.remove_replica(h, "a");
    }
    m.refresh_index_now(&cfg);
    assert_eq!(m.heal.index.queue().collect::<Vec<_>>(), [live, gone]);
    // Undelete: the chunk is a live file's again.
    m.apply(&Op::Rename(RenameOp { src: hidden, dst: "/back".into() }), 6).unwrap();
    assert!(!m.chunks.get(gone).unwrap().hidden);
    m.apply(&Op::Delete(DeleteOp { path: "/back".into() }), 7).unwrap();
    assert!(m.chunks.get(gone).is_none());
    step(&mut m, &cfg);
    assert_eq!(m.heal.index.queue().collect::<Vec<_>>(), [live]);
    assert_eq!(m.heal.index.totals().chunks, 1);
}

#[test]
fn a_slice_evaluates_a_bounded_number_of_chunks() {
    let cfg = Config::default();
    let mut m = meta(1, (2 * SLICE + 10) as u64);
    m.index_begin(&cfg, true);
    // A new index walks everything first, one slice per call.
    assert!(m.index_slice(&cfg, Instant::now()));
    assert!(!m.heal.index.complete);
    assert!(m.index_slice(&cfg, Instant::now()));
    assert!(!m.index_slice(&cfg, Instant::now()));
    assert!(m.heal.index.complete);
    assert_eq!(m.heal.index.used("a"), Some(100 * (2 * SLICE as u64 + 10)));
    // Steady state: more changes than a slice take two.
    for h in 1..=(SLICE as u64 + 5) {
        m.remove_replica(h, "c");
    }
    m.index_begin(&cfg, false);
    assert!(m.index_slice(&cfg, Instant::now()), "more changes than a slice");
    assert!(!m.index_slice(&cfg, Instant::now()));
    assert_eq!(m.heal.index.totals().chunks, SLICE as u64 + 5);
    // A step's share of the sweep: at least MIN_SWEEP chunks, then done.
    m.index_begin(&cfg, true);
    assert!(!m.index_slice(&cfg, Instant::now()));
    assert_eq!(m.heal.index.sweep_budget, 0);
}

#[test]
fn a_new_change_stream_resets_the_index() {
    let cfg = Config::default();
    let mut m = meta(1, 4);
    m.remove_replica(1, "a");
    m.refresh_index_now(&cfg);
    assert_eq!(m.heal.index.totals().chunks, 1);
    // A new leader forgets replicas: every chunk is short until reports.
    m.chunks.clear_soft_state();
    m.refresh_index_now(&cfg);
    let t = m.heal.index.totals();
    assert_eq!((t.chunks, t.deficits.get(&3).copied()), (4, Some(4)));
}
