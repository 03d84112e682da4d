//! Immediate deletes and renames that replace a file, over gRPC with a
//! fake chunkserver.

mod common;

use common::*;
use gfs_common::Error;
use gfs_proto::*;

async fn heartbeat(c: &mut Client, id: &str) -> HeartbeatResponse {
    let req = HeartbeatRequest { server_id: id.into(), session: session(id), ..Default::default() };
    c.heartbeat(req).await.unwrap().into_inner()
}

async fn delete(c: &mut Client, path: &str, recursive: bool, immediate: bool) -> Result<(), Error> {
    let req = DeleteRequest { path: path.into(), recursive, immediate, call: None };
    c.delete(req).await.map(|_| ()).map_err(Error::from)
}

async fn rename(c: &mut Client, src: &str, dst: &str, overwrite: bool, call: Option<CallId>) -> Result<(), Error> {
    let req = RenameRequest { src: src.into(), dst: dst.into(), overwrite, call };
    c.rename(req).await.map(|_| ()).map_err(Error::from)
}

async fn names(c: &mut Client, dir: &str) -> Vec<String> {
    let req = ListRequest { path: dir.into(), include_hidden: true, allow_stale: false, ..Default::default() };
    let mut v: Vec<String> = c.list(req).await.unwrap().into_inner().entries.into_iter().map(|e| e.path).collect();
    v.sort();
    v
}

async fn handles(c: &mut Client, path: &str) -> Vec<u64> {
    let req = StatRequest { path: path.into(), allow_stale: false };
    c.stat(req).await.unwrap().into_inner().chunks.iter().map(|l| l.handle).collect()
}

#[tokio::test]
async fn an_immediate_delete_frees_the_chunks_at_the_next_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    let (_fake, addr) = fake_server().await;
    register(&mut c, "s1", &addr, vec![]).await;
    mkdir(&mut c, "/d", false).await.unwrap();
    for f in ["/d/kept", "/d/now"] {
        create(&mut c, f).await.unwrap();
        write_lease(&mut c, f, 0).await.unwrap();
    }
    let (kept, now) = (handles(&mut c, "/d/kept").await, handles(&mut c, "/d/now").await);
    heartbeat(&mut c, "s1").await;

    // A normal delete keeps the file hidden, its chunk on the server.
    delete(&mut c, "/d/kept", false, false).await.unwrap();
    // An immediate one removes it: no hidden entry, the chunk goes.
    delete(&mut c, "/d/now", false, true).await.unwrap();
    let left = names(&mut c, "/d").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("/d/.gfs-deleted.") && left[0].ends_with(".kept"), "{left:?}");
    let hb = heartbeat(&mut c, "s1").await;
    assert_eq!(hb.delete_chunks, now, "the immediately deleted file's chunk is not queued for deletion");
    assert!(!hb.delete_chunks.iter().any(|h| kept.contains(h)));

    // Errors are those of a delete.
    assert!(matches!(delete(&mut c, "/d/missing", false, true).await, Err(Error::NotFound { .. })));
    create(&mut c, "/d/x").await.unwrap();
    assert!(matches!(delete(&mut c, "/d", false, true).await, Err(Error::DirectoryNotEmpty { .. })));
    delete(&mut c, "/d", true, true).await.unwrap();
    assert!(names(&mut c, "/").await.is_empty(), "a recursive immediate delete leaves nothing");
    let hb = heartbeat(&mut c, "s1").await;
    assert_eq!(hb.delete_chunks, kept, "the hidden file went with its directory");
    stop(h, token).await;
}

#[tokio::test]
async fn a_rename_over_a_file_replaces_it_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    let (_fake, addr) = fake_server().await;
    register(&mut c, "s1", &addr, vec![]).await;
    for f in ["/new", "/old"] {
        create(&mut c, f).await.unwrap();
        write_lease(&mut c, f, 0).await.unwrap();
    }
    let (new, old) = (handles(&mut c, "/new").await, handles(&mut c, "/old").await);
    assert!(matches!(rename(&mut c, "/new", "/old", false, None).await, Err(Error::AlreadyExists { .. })));

    let call = CallId { client: 7, seq: 1 };
    rename(&mut c, "/new", "/old", true, Some(call)).await.unwrap();
    // A retry of the same call gets its outcome, not a second run.
    rename(&mut c, "/new", "/old", true, Some(call)).await.unwrap();
    assert_eq!(handles(&mut c, "/old").await, new);
    let all = names(&mut c, "/").await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1], "/old");
    assert!(all[0].starts_with("/.gfs-deleted.") && all[0].ends_with(".old"), "{all:?}");
    assert_eq!(handles(&mut c, &all[0]).await, old, "the replaced file waits in the trash");

    // Onto a missing name it is a plain rename; never over a directory.
    rename(&mut c, "/old", "/moved", true, None).await.unwrap();
    assert_eq!(handles(&mut c, "/moved").await, new);
    mkdir(&mut c, "/dir", false).await.unwrap();
    assert!(matches!(rename(&mut c, "/moved", "/dir", true, None).await, Err(Error::IsADirectory { .. })));
    assert!(matches!(rename(&mut c, "/dir", "/moved", true, None).await, Err(Error::IsADirectory { .. })));
    assert!(matches!(rename(&mut c, "/gone", "/moved", true, None).await, Err(Error::NotFound { .. })));
    assert!(matches!(rename(&mut c, "/moved", "/moved", true, None).await, Err(Error::InvalidArgument(_))));
    assert_eq!(handles(&mut c, "/moved").await, new, "failed renames changed nothing");
    stop(h, token).await;
}
