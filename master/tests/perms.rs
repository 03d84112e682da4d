//! Namespace permissions over gRPC against a real master (insecure: each
//! client's claimed user is who it is), with two users, alice and bob,
//! and the superuser gfs.

mod common;

use common::*;
use gfs_common::{Error, ErrorKind};
use gfs_master::Config;
use gfs_proto::*;

async fn users(h: &gfs_master::MasterHandle) -> (Client, Client) {
    (connect_as(h.addr, "alice", &["alice", "eng"]).await, connect_as(h.addr, "bob", &["bob"]).await)
}

fn denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> String {
    let e = Error::from(r.expect_err("refused"));
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    e.to_string()
}

async fn mkdir_mode(c: &mut Client, path: &str, umask: u32) -> Result<(), tonic::Status> {
    c.mkdir(MkdirRequest { path: path.into(), parents: true, call: None, umask: Some(umask) }).await.map(|_| ())
}

async fn chmod(c: &mut Client, path: &str, mode: u32, call: Option<CallId>) -> Result<FileInfo, tonic::Status> {
    let r = c.set_permission(SetPermissionRequest { path: path.into(), mode, call }).await?;
    Ok(r.into_inner().info.unwrap())
}

async fn chown(c: &mut Client, path: &str, owner: &str, group: &str) -> Result<FileInfo, tonic::Status> {
    let req = SetOwnerRequest { path: path.into(), owner: owner.into(), group: group.into(), call: None };
    Ok(c.set_owner(req).await?.into_inner().info.unwrap())
}

async fn info(c: &mut Client, path: &str) -> FileInfo {
    c.stat(StatRequest { path: path.into(), allow_stale: false }).await.unwrap().into_inner().info.unwrap()
}

async fn digest(c: &mut Client) -> u32 {
    c.master_status(MasterStatusRequest {}).await.unwrap().into_inner().namespace_digest
}

fn delete(path: &str, recursive: bool) -> DeleteRequest {
    DeleteRequest { path: path.into(), recursive, call: None, immediate: false }
}

fn rename(src: &str, dst: &str) -> RenameRequest {
    RenameRequest { src: src.into(), dst: dst.into(), call: None, overwrite: false }
}

/// Every entry with its owner, group and mode, sorted (as the superuser
/// sees them, deleted entries included).
async fn perms(c: &mut Client) -> Vec<(String, String, String, u32)> {
    let mut out = vec![];
    let mut todo = vec!["/".to_string()];
    while let Some(d) = todo.pop() {
        let req = ListRequest { path: d, include_hidden: true, allow_stale: false, ..Default::default() };
        for e in c.list(req).await.unwrap().into_inner().entries {
            if e.r#type == FileType::Directory as i32 {
                todo.push(e.path.clone());
            }
            out.push((e.path, e.owner, e.group, e.mode));
        }
    }
    out.sort();
    out
}

/// /alice (alice, 0700) holding a file with a chunk and a directory;
/// alice holds the chunk's lease.
async fn alices_home(gfs: &mut Client, alice: &mut Client) -> u64 {
    mkdir(gfs, "/alice", false).await.unwrap();
    chown(gfs, "/alice", "alice", "alice").await.unwrap();
    chmod(alice, "/alice", 0o700, None).await.unwrap();
    create(alice, "/alice/f").await.unwrap();
    mkdir(alice, "/alice/sub/deeper", true).await.unwrap();
    write_lease(alice, "/alice/f", 0).await.unwrap().chunk.unwrap().handle
}

#[tokio::test]
async fn a_private_directory_is_closed_to_others_and_their_attempts_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut gfs) = start(config(dir.path())).await;
    let (_fake, addr) = fake_server().await;
    register(&mut gfs, "s1", &addr, vec![]).await;
    let (mut alice, mut bob) = users(&h).await;
    let handle = alices_home(&mut gfs, &mut alice).await;
    assert_eq!(info(&mut alice, "/alice/f").await.owner, "alice");

    let before = (perms(&mut gfs).await, digest(&mut gfs).await);
    let list =
        |p: &str| ListRequest { path: p.into(), include_hidden: false, allow_stale: false, ..Default::default() };
    let stat = |p: &str| StatRequest { path: p.into(), allow_stale: false };
    let e = denied(bob.list(list("/alice")).await);
    assert!(e.contains("user=bob, access=READ_EXECUTE, inode=\"/alice\":alice:alice:drwx------"), "{e}");
    let e = denied(bob.stat(stat("/alice/f")).await);
    assert!(e.contains("user=bob, access=EXECUTE, inode=\"/alice\""), "{e}");
    denied(bob.stat(stat("/alice/nothing-here")).await);
    denied(bob.list(list("/alice/sub")).await);
    denied(create(&mut bob, "/alice/g").await);
    denied(mkdir(&mut bob, "/alice/d", false).await);
    denied(mkdir(&mut bob, "/alice/d/e", true).await);
    denied(bob.delete(delete("/alice/f", false)).await);
    denied(bob.delete(delete("/alice", true)).await);
    denied(bob.delete(DeleteRequest { immediate: true, ..delete("/alice/f", false) }).await);
    denied(bob.rename(rename("/alice/f", "/bobs")).await);
    denied(bob.rename(RenameRequest { overwrite: true, ..rename("/alice/f", "/bobs") }).await);
    let read = GetChunksRequest { path: "/alice/f".into(), start_index: 0, count: 0, allow_stale: false };
    denied(bob.get_chunks(read.clone()).await);
    denied(write_lease(&mut bob, "/alice/f", 0).await);
    denied(write_lease(&mut bob, "/alice/f", 1).await);
    denied(bob.get_append_lease(GetAppendLeaseRequest { path: "/alice/f".into(), after_index: None }).await);
    denied(bob.report_length(ReportLengthRequest { handle, length: 4096 }).await);
    denied(chmod(&mut bob, "/alice", 0o777, None).await);
    denied(chown(&mut bob, "/alice", "bob", "").await);
    assert_eq!((perms(&mut gfs).await, digest(&mut gfs).await), before, "bob changed something");
    assert_eq!(info(&mut gfs, "/alice/f").await.size, 0, "bob's length report was not taken");

    // Alice does all of it in her own directory.
    assert_eq!(alice.list(list("/alice")).await.unwrap().into_inner().entries.len(), 2);
    assert_eq!(alice.get_chunks(read).await.unwrap().into_inner().chunks.len(), 1);
    alice.report_length(ReportLengthRequest { handle, length: 4096 }).await.unwrap();
    assert_eq!(info(&mut alice, "/alice/f").await.size, 4096);
    alice.rename(rename("/alice/f", "/alice/g")).await.unwrap();
    alice.delete(delete("/alice/sub", true)).await.unwrap();
    // Opened to others, bob may look but not write.
    chmod(&mut alice, "/alice", 0o755, None).await.unwrap();
    assert_eq!(bob.list(list("/alice")).await.unwrap().into_inner().entries.len(), 1);
    assert_eq!(info(&mut bob, "/alice/g").await.mode, 0o644);
    denied(write_lease(&mut bob, "/alice/g", 0).await);
    denied(create(&mut bob, "/alice/bobs").await);
    stop(h, token).await;
}

#[tokio::test]
async fn chmod_and_chown_follow_hdfs_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut gfs) = start(config(dir.path())).await;
    let (mut alice, mut bob) = users(&h).await;
    // The root belongs to the superuser: others may not create there.
    let root = info(&mut gfs, "/").await;
    assert_eq!((root.owner.as_str(), root.group.as_str(), root.mode), ("gfs", "supergroup", 0o755));
    denied(mkdir(&mut alice, "/a", false).await);
    mkdir(&mut gfs, "/a", false).await.unwrap();
    chown(&mut gfs, "/a", "alice", "").await.unwrap();
    create(&mut alice, "/a/f").await.unwrap();
    let f = info(&mut alice, "/a/f").await;
    assert_eq!((f.owner.as_str(), f.group.as_str(), f.mode), ("alice", "supergroup", 0o644), "parent's group");

    // chmod: the owner or a superuser.
    assert_eq!(chmod(&mut alice, "/a/f", 0o600, None).await.unwrap().mode, 0o600);
    let e = denied(chmod(&mut bob, "/a/f", 0o666, None).await);
    assert!(e.contains("only its owner or a superuser"), "{e}");
    assert_eq!(chmod(&mut gfs, "/a/f", 0o640, None).await.unwrap().mode, 0o640);
    let bad = chmod(&mut alice, "/a/f", 0o7777, None).await.unwrap_err();
    assert_eq!(Error::from(bad).kind(), ErrorKind::InvalidArgument);
    // chown: owners only by a superuser; the group by the owner, to one of hers.
    let e = denied(chown(&mut alice, "/a/f", "bob", "").await);
    assert!(e.contains("only a superuser may change an owner"), "{e}");
    assert_eq!(chown(&mut alice, "/a/f", "", "eng").await.unwrap().group, "eng");
    let e = denied(chown(&mut alice, "/a/f", "", "ops").await);
    assert!(e.contains("does not belong to group ops"), "{e}");
    denied(chown(&mut bob, "/a/f", "", "bob").await);
    let g = chown(&mut gfs, "/a/f", "bob", "ops").await.unwrap();
    assert_eq!((g.owner.as_str(), g.group.as_str()), ("bob", "ops"));
    for (owner, group) in [("", ""), ("a b", ""), ("", "x,y")] {
        let e = chown(&mut gfs, "/a/f", owner, group).await.unwrap_err();
        assert_eq!(Error::from(e).kind(), ErrorKind::InvalidArgument, "{owner:?} {group:?}");
    }
    // A member of the supergroup is a superuser.
    let mut ops = connect_as(h.addr, "carol", &["supergroup"]).await;
    assert_eq!(chmod(&mut ops, "/a/f", 0o604, None).await.unwrap().mode, 0o604);

    // A retried chmod answers with its outcome and changes nothing again.
    let call = Some(CallId { client: 7, seq: 1 });
    chmod(&mut gfs, "/a", 0o700, call).await.unwrap();
    chmod(&mut gfs, "/a", 0o750, None).await.unwrap();
    assert_eq!(chmod(&mut gfs, "/a", 0o700, call).await.unwrap().mode, 0o750);

    // umask and mkdir -p: ancestors get u+wx, the leaf the masked mode.
    chmod(&mut gfs, "/a", 0o755, None).await.unwrap();
    mkdir_mode(&mut alice, "/a/x/y", 0o077).await.unwrap();
    assert_eq!((info(&mut alice, "/a/x").await.mode, info(&mut alice, "/a/x/y").await.mode), (0o700, 0o700));
    mkdir_mode(&mut alice, "/a/p/q", 0o777).await.unwrap();
    assert_eq!((info(&mut alice, "/a/p").await.mode, info(&mut alice, "/a/p/q").await.mode), (0o300, 0o000));
    let c =
        CreateRequest { path: "/a/x/m".into(), allow_under_replicated: true, umask: Some(0o027), ..Default::default() };
    assert_eq!(alice.create(c).await.unwrap().into_inner().info.unwrap().mode, 0o640);
    let bad = CreateRequest { path: "/a/x/n".into(), umask: Some(0o1000), ..Default::default() };
    assert_eq!(Error::from(alice.create(bad).await.unwrap_err()).kind(), ErrorKind::InvalidArgument);

    // The sticky bit: in /tmp everyone creates, only owners remove.
    mkdir(&mut gfs, "/tmp", false).await.unwrap();
    chmod(&mut gfs, "/tmp", 0o1777, None).await.unwrap();
    create(&mut alice, "/tmp/a").await.unwrap();
    create(&mut bob, "/tmp/b").await.unwrap();
    let e = denied(bob.delete(delete("/tmp/a", false)).await);
    assert!(e.contains("sticky bit: user=bob"), "{e}");
    denied(bob.rename(rename("/tmp/a", "/tmp/mine")).await);
    bob.rename(rename("/tmp/b", "/tmp/b2")).await.unwrap();
    bob.delete(delete("/tmp/b2", false)).await.unwrap();
    alice.delete(delete("/tmp/a", false)).await.unwrap();
    // Undelete is a rename: the hidden entry keeps its owner, and the
    // sticky bit guards it.
    let req = ListRequest { path: "/tmp".into(), include_hidden: true, allow_stale: false, ..Default::default() };
    let trash = gfs.list(req).await.unwrap().into_inner().entries;
    let a = trash.iter().find(|e| e.path.ends_with(".a")).unwrap().clone();
    assert_eq!(a.owner, "alice");
    denied(bob.rename(rename(&a.path, "/tmp/a")).await);
    alice.rename(rename(&a.path, "/tmp/a")).await.unwrap();
    stop(h, token).await;
}

#[tokio::test]
async fn a_recursive_delete_needs_every_directory_below() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut gfs) = start(config(dir.path())).await;
    let (mut alice, mut bob) = users(&h).await;
    mkdir(&mut gfs, "/shared", false).await.unwrap();
    chmod(&mut gfs, "/shared", 0o777, None).await.unwrap();
    mkdir(&mut alice, "/shared/t/locked", true).await.unwrap();
    create(&mut alice, "/shared/t/locked/f").await.unwrap();
    chmod(&mut alice, "/shared/t", 0o777, None).await.unwrap();
    // bob may write /shared and /shared/t, not alice's locked (0755) one.
    let e = denied(bob.delete(delete("/shared/t", true)).await);
    assert!(e.contains("access=ALL, inode=\"/shared/t/locked\""), "{e}");
    assert!(info(&mut gfs, "/shared/t/locked/f").await.path.ends_with("/f"));
    // An empty directory needs nothing of its own.
    alice.delete(DeleteRequest { immediate: true, ..delete("/shared/t/locked/f", false) }).await.unwrap();
    bob.delete(delete("/shared/t", true)).await.unwrap();
    stop(h, token).await;
}

async fn restart_keeps_permissions(drop_checkpoint: bool) {
    let dir = tempfile::tempdir().unwrap();
    // No checkpoint before shutdown: the log holds every op.
    let cfg = Config { checkpoint_every: 10_000, ..config(dir.path()) };
    let (h, token, mut gfs) = start(cfg.clone()).await;
    let (mut alice, _) = users(&h).await;
    mkdir(&mut gfs, "/home/alice", true).await.unwrap();
    chown(&mut gfs, "/home/alice", "alice", "eng").await.unwrap();
    mkdir_mode(&mut alice, "/home/alice/private/deep", 0o077).await.unwrap();
    create(&mut alice, "/home/alice/f").await.unwrap();
    chmod(&mut alice, "/home/alice/f", 0o1640, None).await.unwrap();
    chmod(&mut gfs, "/home", 0o1777, None).await.unwrap();
    chown(&mut gfs, "/home/alice/f", "zed", "").await.unwrap();
    let before = (perms(&mut gfs).await, digest(&mut gfs).await);
    assert!(before.0.contains(&("/home/alice/f".into(), "zed".into(), "eng".into(), 0o1640)), "{before:?}");
    stop(h, token).await;
    if drop_checkpoint {
        // Recovery from the log alone: every op replayed.
        std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    }
    let (h, token, mut gfs) = start(cfg).await;
    assert_eq!((perms(&mut gfs).await, digest(&mut gfs).await), before);
    // And the checks use them: bob cannot enter alice's private directory.
    let (_, mut bob) = users(&h).await;
    denied(create(&mut bob, "/home/alice/private/x").await);
    stop(h, token).await;
}

#[tokio::test]
async fn owners_and_modes_survive_a_restart_from_the_checkpoint() {
    restart_keeps_permissions(false).await;
}

#[tokio::test]
async fn owners_and_modes_survive_a_restart_from_the_log() {
    restart_keeps_permissions(true).await;
}
