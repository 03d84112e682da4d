//! Checkpoints, digests and apply of the replicated state.

use super::*;
use gfs_proto::{AddChunkOp, CreateOp, DeleteOp, MkdirOp, RenameOp, SetAttrOp, SetVersionOp};
use prost::Message;

fn create(path: &str, replication: u32, owner: &str) -> Op {
    let mode = Some(0o640);
    Op::Create(CreateOp { path: path.into(), replication, chunk_size: 1 << 20, owner: owner.into(), mode })
}

fn ops() -> Vec<Op> {
    vec![
        Op::Mkdir(MkdirOp { path: "/a/b".into(), owner: "alice".into(), mode: Some(0o750) }),
        create("/a/b/f", 2, "bob"),
        Op::AddChunk(AddChunkOp { path: "/a/b/f".into(), index: 0, handle: 1, version: 1 }),
        Op::AddChunk(AddChunkOp { path: "/a/b/f".into(), index: 1, handle: 2, version: 1 }),
        Op::SetVersion(SetVersionOp { handle: 1, version: 4 }),
        create("/a/g", 3, "carol"),
        Op::SetAttr(SetAttrOp {
            path: "/a/b/f".into(),
            mode: Some(0o1600),
            owner: "dave".into(),
            group: "eng".into(),
            replication: None,
        }),
        Op::AddChunk(AddChunkOp { path: "/a/g".into(), index: 0, handle: 3, version: 1 }),
        Op::Rename(RenameOp { src: "/a/b".into(), dst: "/c".into() }),
        Op::Delete(DeleteOp { path: "/a/g".into() }),
    ]
}

#[test]
fn checkpoint_restores_the_replicated_state() {
    let mut live = Meta::new();
    for (i, op) in ops().into_iter().enumerate() {
        live.apply(&op, 1000 + i as i64).unwrap();
    }
    live.applied = Some(crate::raft::log_id(3, 2, 41));
    let cp = live.snapshot();
    assert_eq!((cp.last_seq, cp.last_term, cp.last_leader_id, cp.has_last), (41, 3, 2, true));
    let back = Meta::from_checkpoint(&cp).unwrap();
    assert_eq!(back.ns, live.ns);
    assert_eq!(back.applied, live.applied);
    assert_eq!(back.chunks.get(1).unwrap().version, 4);
    assert!(back.chunks.get(3).is_none());
    assert_eq!(back.chunks.next_handle(), 4);
    assert_eq!(back.digest(), live.digest());
    // Any replicated difference changes the digest.
    let mut other = Meta::from_checkpoint(&cp).unwrap();
    other.apply(&Op::Mkdir(MkdirOp { path: "/z".into(), ..Default::default() }), 5).unwrap();
    assert_ne!(other.digest(), live.digest());
    // So does a permission change, alone.
    for change in [
        SetAttrOp { path: "/c/f".into(), mode: Some(0o600), ..Default::default() },
        SetAttrOp { path: "/c/f".into(), owner: "bob".into(), ..Default::default() },
        SetAttrOp { path: "/c/f".into(), group: "alice".into(), ..Default::default() },
    ] {
        let mut other = Meta::from_checkpoint(&cp).unwrap();
        other.apply(&Op::SetAttr(change.clone()), 5).unwrap();
        assert_ne!(other.digest(), live.digest(), "{change:?}");
    }
}

#[test]
fn setrep_sets_the_file_and_chunk_goals_and_survives_a_checkpoint() {
    let mut live = Meta::new();
    for (i, op) in ops().into_iter().enumerate() {
        live.apply(&op, 1000 + i as i64).unwrap();
    }
    let before = live.digest();
    let setrep = |r| Op::SetAttr(SetAttrOp { path: "/c/f".into(), replication: Some(r), ..Default::default() });
    live.apply(&setrep(5), 2000).unwrap();
    assert_eq!(live.ns.file("/c/f").unwrap().replication, 5);
    assert_eq!([1, 2].map(|h| live.chunks.get(h).unwrap().replication), [5, 5]);
    assert_ne!(live.digest(), before);
    let back = Meta::from_checkpoint(&live.snapshot()).unwrap();
    assert_eq!(back.ns.file("/c/f").unwrap().replication, 5);
    assert_eq!([1, 2].map(|h| back.chunks.get(h).unwrap().replication), [5, 5]);
    // A directory has no replication; a goal outside 1..=16 is refused,
    // and neither changes anything.
    let on_dir = Op::SetAttr(SetAttrOp { path: "/c".into(), replication: Some(2), ..Default::default() });
    for bad in [on_dir, setrep(0), setrep(17)] {
        let digest = live.digest();
        assert!(live.apply(&bad, 2001).is_err(), "{bad:?}");
        assert_eq!(live.digest(), digest, "{bad:?}");
    }
    live.apply(&setrep(1), 2002).unwrap();
    assert_eq!(live.chunks.get(2).unwrap().replication, 1);
}

#[test]
fn checkpoints_keep_owners_groups_and_modes() {
    let mut live = Meta::new();
    for (i, op) in ops().into_iter().enumerate() {
        live.apply(&op, 1000 + i as i64).unwrap();
    }
    let back = Meta::from_checkpoint(&live.snapshot()).unwrap();
    let info = |m: &Meta, p: &str| {
        let i = m.file_info(p, m.ns.get(p).unwrap());
        (i.owner, i.group, i.mode)
    };
    // Renamed with /a/b: the owner, the group taken from /a then, and
    // the chmod/chown.
    assert_eq!(info(&back, "/c/f"), ("dave".into(), "eng".into(), 0o1600));
    assert_eq!(info(&back, "/c"), ("alice".into(), "supergroup".into(), 0o750));
    assert_eq!(info(&back, "/a"), ("alice".into(), "supergroup".into(), 0o750 | 0o300));
    assert_eq!(info(&back, "/"), ("gfs".into(), "supergroup".into(), 0o755));
    assert_eq!(back.ns.names(), live.ns.names());
    // A later op interns the same ids on both.
    let op = create("/c/new", 1, "erin");
    let mut l2 = Meta::from_checkpoint(&live.snapshot()).unwrap();
    live.apply(&op, 9).unwrap();
    l2.apply(&op, 9).unwrap();
    assert_eq!(l2.digest(), live.digest());
}

#[test]
fn checkpoints_from_before_permissions_keep_everyones_access() {
    let mut live = Meta::new();
    for (i, op) in ops().into_iter().enumerate() {
        live.apply(&op, 1000 + i as i64).unwrap();
    }
    let mut cp = live.snapshot();
    // What an older master wrote: no names, no modes.
    cp.names.clear();
    for e in &mut cp.entries {
        (e.mode, e.owner, e.group) = (None, 0, 0);
    }
    let old = Meta::from_checkpoint(&cp).unwrap();
    for (p, n) in old.ns.iter() {
        let want = if n.is_dir() { 0o777 } else { 0o666 };
        let i = old.file_info(p, n);
        assert_eq!((i.owner.as_str(), i.group.as_str(), i.mode), ("gfs", "supergroup", want), "{p}");
    }
    // Entries referring to names the table lacks refuse to load.
    let mut bad = live.snapshot();
    bad.entries[1].owner = 999;
    let e = Meta::from_checkpoint(&bad).unwrap_err();
    assert!(e.to_string().contains("not in its name table"), "{e}");
    let mut bad = live.snapshot();
    bad.entries[1].mode = Some(0o7777);
    assert!(Meta::from_checkpoint(&bad).is_err());
}

#[test]
fn a_failing_op_changes_nothing() {
    let mut m = Meta::new();
    m.apply(&Op::Mkdir(MkdirOp { path: "/a".into(), ..Default::default() }), 1).unwrap();
    let before = m.digest();
    let err = m.apply(&create("/a", 3, "bob"), 2);
    assert!(err.is_err());
    assert_eq!(m.digest(), before);
}

// Found by fuzzing (fuzz/fuzz_targets/log_entry.rs, checkpoint.rs,
// chunkserver_report.rs): each made a master panic at its next start or
// left state that no checkpoint could load.

#[test]
fn logged_ops_on_non_canonical_paths_are_refused() {
    let mut m = Meta::new();
    for bad in ["relative", "/a//b", "/a/./b", "/a/", "/a\u{0}b"] {
        let op = Op::Mkdir(MkdirOp { path: bad.into(), owner: "alice".into(), mode: Some(0o755) });
        let e = m.apply(&op, 1).unwrap_err();
        assert!(e.to_string().contains("non-canonical"), "{bad:?}: {e}");
        let op = Op::Rename(RenameOp { src: "/".into(), dst: bad.into() });
        assert!(m.apply(&op, 1).is_err(), "{bad:?}");
    }
    assert_eq!(m.ns.counts(), Meta::new().ns.counts());
    // What was refused left a checkpoint that loads.
    Meta::from_checkpoint(&m.snapshot()).unwrap();
}

#[test]
fn checkpoints_with_a_bad_root_are_refused() {
    let mut live = Meta::new();
    for op in ops() {
        live.apply(&op, 5).unwrap();
    }
    let cp = live.snapshot();
    assert_eq!(cp.entries[0].path, "/");
    // The root as a file.
    let mut bad = cp.clone();
    bad.entries[0].is_dir = false;
    let e = Meta::from_checkpoint(&bad).unwrap_err().to_string();
    assert!(e.contains("root is not a directory"), "{e}");
    // The root after its children keeps them.
    let mut late = cp.clone();
    let root = late.entries.remove(0);
    late.entries.push(root);
    assert_eq!(Meta::from_checkpoint(&late).unwrap().ns, live.ns);
    // No root entry and a name table without the root's owner and group.
    let mut no_root = cp.clone();
    no_root.entries.clear();
    no_root.names.truncate(1);
    let e = Meta::from_checkpoint(&no_root).unwrap_err().to_string();
    assert!(e.contains("not in its name table"), "{e}");
    // A non-canonical entry.
    let mut odd = cp;
    odd.entries[1].path = "/a/".into();
    assert!(Meta::from_checkpoint(&odd).unwrap_err().to_string().contains("not a canonical path"));
}

#[test]
fn reports_from_an_unregistered_server_change_nothing() {
    let mut m = Meta::new();
    for op in ops() {
        m.apply(&op, 5).unwrap();
    }
    let report = gfs_proto::ChunkReport { handle: 1, version: 4, length: 10 };
    let mut out = crate::report::ReportOutcome::default();
    m.process_reports("ghost", 1, &[report], &mut out);
    assert!(m.chunks.get(1).unwrap().replicas.is_empty());
    assert_eq!(out, Default::default());
}

#[test]
fn a_frozen_view_is_unchanged_by_later_changes() {
    let mut live = Meta::new();
    for (i, op) in ops().into_iter().enumerate() {
        live.apply(&op, 1000 + i as i64).unwrap();
    }
    // A directory large enough to be a persistent tree (`children::Kids`).
    let mk = Op::Mkdir(MkdirOp { path: "/big".into(), owner: "bob".into(), mode: Some(0o755) });
    live.apply(&mk, 2000).unwrap();
    for i in 0..300 {
        live.apply(&create(&format!("/big/f{i:03}"), 1, "bob"), 2000).unwrap();
    }
    live.applied = Some(crate::raft::log_id(2, 1, 77));
    let expected = live.snapshot().encode_to_vec();
    let frozen = live.freeze();
    // Every kind of replicated change, to every part the view holds.
    let later = [
        create("/big/new", 1, "erin"),
        Op::Delete(DeleteOp { path: "/big/f007".into() }),
        Op::Rename(RenameOp { src: "/c".into(), dst: "/big/c".into() }),
        Op::AddChunk(AddChunkOp { path: "/big/f001".into(), index: 0, handle: 9, version: 1 }),
        Op::SetVersion(SetVersionOp { handle: 1, version: 8 }),
        Op::SetAttr(SetAttrOp {
            path: "/big/f002".into(),
            mode: Some(0o600),
            owner: "zed".into(),
            ..Default::default()
        }),
        Op::Mkdir(MkdirOp { path: "/x/y".into(), owner: "zed".into(), mode: Some(0o700) }),
    ];
    for op in &later {
        live.apply(op, 3000).unwrap();
    }
    live.applied = Some(crate::raft::log_id(2, 1, 90));
    assert_eq!(frozen.checkpoint().encode_to_vec(), expected, "the view moved with the live state");
    assert_eq!(frozen.applied(), Some(crate::raft::log_id(2, 1, 77)));
    // And the live state has every change (its checkpoint loads back to it).
    let now = live.snapshot();
    assert_ne!(now.encode_to_vec(), expected);
    let back = Meta::from_checkpoint(&now).unwrap();
    assert_eq!(back.ns, live.ns);
    assert_eq!(back.chunks.get(1).unwrap().version, 8);
    assert!(back.ns.get("/big/c/f").is_some() && back.ns.get("/big/f007").is_none());
    assert_eq!(back.digest(), live.digest());
}
