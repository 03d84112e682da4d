//! Placement and repair around full chunkservers, over gRPC with fake
//! chunkservers.

mod common;

use common::*;
use gfs_common::{Error, ErrorKind};
use gfs_proto::*;

async fn heartbeat(c: &mut Client, id: &str, full: bool) -> HeartbeatResponse {
    let free = if full { 1 << 10 } else { 1 << 40 };
    let req = HeartbeatRequest {
        server_id: id.into(),
        session: session(id),
        capacity_bytes: 1 << 40,
        free_bytes: Some(free),
        full,
        ..Default::default()
    };
    c.heartbeat(req).await.unwrap().into_inner()
}

async fn handles(c: &mut Client, path: &str) -> Vec<u64> {
    let req = StatRequest { path: path.into(), allow_stale: false };
    c.stat(req).await.unwrap().into_inner().chunks.iter().map(|l| l.handle).collect()
}

#[tokio::test]
async fn full_servers_get_no_new_chunks_and_none_left_is_no_space() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    let mut fakes = Vec::new();
    for id in ["s1", "s2", "s3"] {
        let (fake, addr) = fake_server().await;
        register(&mut c, id, &addr, vec![]).await;
        fakes.push((fake, addr));
    }
    heartbeat(&mut c, "s1", true).await;
    let st = c.cluster_status(ClusterStatusRequest {}).await.unwrap().into_inner();
    let s1 = st.servers.iter().find(|s| s.server.as_ref().unwrap().id == "s1").unwrap();
    assert!(s1.full && s1.free_bytes == 1 << 10, "{s1:?}");

    create(&mut c, "/f").await.unwrap();
    let l = write_lease(&mut c, "/f", 0).await.unwrap();
    let mut placed: Vec<String> = l.secondaries.iter().map(|s| s.id.clone()).collect();
    placed.push(l.primary.unwrap().id);
    placed.sort();
    assert_eq!(placed, vec!["s2", "s3"], "a new chunk went to the full server");
    assert!(fakes[0].0.grants.lock().unwrap().is_empty(), "the full server was asked to create a chunk");

    // Every live server full: a clear NoSpace naming them, nothing created.
    heartbeat(&mut c, "s2", true).await;
    heartbeat(&mut c, "s3", true).await;
    create(&mut c, "/g").await.unwrap();
    let e = Error::from(write_lease(&mut c, "/g", 0).await.unwrap_err());
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    for (_, addr) in &fakes {
        assert!(e.to_string().contains(addr.as_str()), "{e} does not name {addr}");
    }
    assert!(handles(&mut c, "/g").await.is_empty());

    // Space again on s1: it takes the chunk.
    heartbeat(&mut c, "s1", false).await;
    let l = write_lease(&mut c, "/g", 0).await.unwrap();
    assert_eq!(l.primary.unwrap().id, "s1");
    assert!(l.secondaries.is_empty());
    stop(h, token).await;
}

/// A clone whose destination runs out of space is not sent there again
/// and again: the destination is backed off (for that chunk, and for every
/// clone and new chunk while its hold lasts) and shown full.
#[tokio::test]
async fn a_clone_that_finds_no_space_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.heal.scan_ms = 50;
    cfg.heal.clone_retry_ms = 60_000;
    let (h, token, mut c) = start(cfg).await;
    let (_source, addr1) = fake_server().await;
    register(&mut c, "s1", &addr1, vec![]).await;
    let req = CreateRequest {
        path: "/f".into(),
        replication: 2,
        exclusive: true,
        call: None,
        allow_under_replicated: true,
        umask: None,
    };
    c.create(req).await.unwrap();
    write_lease(&mut c, "/f", 0).await.unwrap();
    // The only other server, the clone's one possible destination, is full
    // in fact though its reports do not say so.
    let (target, addr2) = fake_server().await;
    *target.clone_error.lock().unwrap() =
        Some(Error::NoSpace { server: Some(addr2.clone()), detail: "write chunk file: disk full".into() });
    register(&mut c, "s2", &addr2, vec![]).await;
    let attempts = || target.clones.lock().unwrap().len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while attempts() == 0 {
        assert!(std::time::Instant::now() < deadline, "no clone to s2 was tried");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Many repair scans later: still that one attempt.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(attempts(), 1, "the failed destination was tried again at once");
    let st = c.cluster_status(ClusterStatusRequest {}).await.unwrap().into_inner();
    let s2 = st.servers.iter().find(|s| s.server.as_ref().unwrap().id == "s2").unwrap();
    assert!(s2.full, "a server a clone found out of space is not shown full");
    // A new chunk meanwhile goes to s1 alone.
    create(&mut c, "/g").await.unwrap();
    let l = write_lease(&mut c, "/g", 0).await.unwrap();
    assert_eq!(l.primary.unwrap().id, "s1");
    assert!(l.secondaries.is_empty(), "a new chunk went to the server that is out of space");
    stop(h, token).await;
}

/// Chunk creation that finds no space anywhere (the servers' reports are
/// not yet full) fails with `NoSpace` naming a server, not `Unavailable`.
#[tokio::test]
async fn a_chunk_no_server_has_room_for_is_no_space() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    let mut addrs = Vec::new();
    for id in ["s1", "s2"] {
        let (fake, addr) = fake_server().await;
        *fake.grant_error.lock().unwrap() =
            Some(Error::NoSpace { server: None, detail: "create chunk meta: disk full".into() });
        register(&mut c, id, &addr, vec![]).await;
        addrs.push((fake, addr));
    }
    create(&mut c, "/f").await.unwrap();
    let e = Error::from(write_lease(&mut c, "/f", 0).await.unwrap_err());
    match &e {
        Error::NoSpace { server: Some(s), .. } => assert!(addrs.iter().any(|(_, a)| a == s), "{e}"),
        other => panic!("expected NoSpace naming a server, got {other:?}"),
    }
    // Both are held back now: shown full, and the next chunk is refused
    // up front without asking them again.
    let st = c.cluster_status(ClusterStatusRequest {}).await.unwrap().into_inner();
    assert!(st.servers.iter().all(|s| s.full), "{:?}", st.servers);
    let e = Error::from(write_lease(&mut c, "/f", 0).await.unwrap_err());
    assert!(e.to_string().contains("every live one is full"), "{e}");
    stop(h, token).await;
}
