//! End-to-end tests of the master over gRPC, with fake chunkservers.

mod common;

use std::time::Duration;

use common::*;
use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, ErrorKind};
use gfs_master::Config;
use gfs_proto::*;
use tonic::Request;

#[tokio::test]
async fn namespace_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    mkdir(&mut c, "/a/b/c", true).await.unwrap();
    mkdir(&mut c, "/a/b/c", true).await.unwrap();
    assert_eq!(kind(mkdir(&mut c, "/a/b", false).await), ErrorKind::AlreadyExists);
    assert_eq!(kind(mkdir(&mut c, "/x/y", false).await), ErrorKind::NotFound);
    let f = create(&mut c, "/a/b/f").await.unwrap();
    assert_eq!((f.replication, f.chunk_size, f.size), (3, 1 << 20, 0));
    assert_eq!(kind(create(&mut c, "/a/b/f").await), ErrorKind::AlreadyExists);
    let again = c
        .create(CreateRequest {
            path: "/a/b/f".into(),
            replication: 2,
            exclusive: false,
            call: None,
            allow_under_replicated: true,
            umask: None,
        })
        .await
        .unwrap();
    assert_eq!(again.into_inner().info.unwrap().replication, 3, "non-exclusive create returns the existing file");
    assert_eq!(kind(mkdir(&mut c, "/a/b/f", true).await), ErrorKind::NotADirectory);
    assert_eq!(kind(mkdir(&mut c, "/a/b/f/g", true).await), ErrorKind::NotADirectory);
    assert_eq!(kind(create(&mut c, "/a/b/f/g").await), ErrorKind::NotADirectory);
    assert_eq!(kind(create(&mut c, "/nope/f").await), ErrorKind::NotFound);
    assert_eq!(kind(create(&mut c, "/a/../f").await), ErrorKind::InvalidPath);
    assert_eq!(kind(create(&mut c, "/a//f").await), ErrorKind::InvalidPath);
    assert_eq!(kind(create(&mut c, "relative").await), ErrorKind::InvalidPath);
    let big = c
        .create(CreateRequest {
            path: "/r".into(),
            replication: 17,
            exclusive: true,
            call: None,
            allow_under_replicated: true,
            umask: None,
        })
        .await;
    assert_eq!(kind(big), ErrorKind::InvalidArgument);
    let del = c.delete(DeleteRequest { path: "/a".into(), recursive: false, call: None, ..Default::default() }).await;
    assert_eq!(kind(del), ErrorKind::DirectoryNotEmpty);
    assert_eq!(
        kind(
            c.delete(DeleteRequest { path: "/missing".into(), recursive: false, call: None, ..Default::default() })
                .await
        ),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(c.delete(DeleteRequest { path: "/".into(), recursive: true, call: None, ..Default::default() }).await),
        ErrorKind::InvalidArgument
    );
    let bad =
        c.rename(RenameRequest { src: "/a".into(), dst: "/a/b/z".into(), call: None, ..Default::default() }).await;
    assert_eq!(kind(bad), ErrorKind::InvalidArgument);
    assert_eq!(kind(c.stat(StatRequest { path: "/zz".into(), allow_stale: false }).await), ErrorKind::NotFound);

    c.rename(RenameRequest { src: "/a/b".into(), dst: "/moved".into(), call: None, ..Default::default() })
        .await
        .unwrap();
    for i in 0..10 {
        create(&mut c, &format!("/moved/file{i}")).await.unwrap();
    }
    c.delete(DeleteRequest { path: "/moved/c".into(), recursive: false, call: None, ..Default::default() })
        .await
        .unwrap();
    c.delete(DeleteRequest { path: "/moved/file3".into(), recursive: false, call: None, ..Default::default() })
        .await
        .unwrap();
    mkdir(&mut c, "/gone/deep/er", true).await.unwrap();
    c.delete(DeleteRequest { path: "/gone".into(), recursive: true, call: None, ..Default::default() }).await.unwrap();

    let listed = c
        .list(ListRequest { path: "/moved".into(), include_hidden: false, allow_stale: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let names: Vec<_> = listed.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted");
    assert_eq!(names.len(), 10);
    let one = c
        .list(ListRequest { path: "/moved/f".into(), include_hidden: false, allow_stale: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(one.len(), 1, "listing a file lists the file");
    let st =
        c.stat(StatRequest { path: "/moved".into(), allow_stale: false }).await.unwrap().into_inner().info.unwrap();
    assert_eq!((st.r#type, st.children), (FileType::Directory as i32, 10));

    let before = tree(&mut c).await;
    stop(h, token).await;
    let (h, token, mut c) = start(config(dir.path())).await;
    assert_eq!(tree(&mut c).await, before);
    let status = c.cluster_status(ClusterStatusRequest {}).await.unwrap().into_inner();
    // The epoch is the Raft term: a restarted group of one is in a later term.
    assert!(status.epoch > 1, "epoch {} after restart", status.epoch);
    assert_eq!(status.file_count, 10);
    stop(h, token).await;
}

#[tokio::test]
async fn leases_versions_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { lease_ms: 1500, rpc_timeout_ms: 200, ..config(dir.path()) };
    let (h, token, mut c) = start(cfg.clone()).await;
    let mut fakes = vec![];
    let mut sessions = std::collections::HashMap::new();
    for id in ["s1", "s2", "s3"] {
        let (fake, addr) = fake_server().await;
        sessions.insert(id.to_string(), register(&mut c, id, &addr, vec![]).await.session);
        fakes.push((id, fake, addr));
    }
    let total_grants =
        |f: &Vec<(&str, FakeChunkServer, String)>| f.iter().map(|x| x.1.grants.lock().unwrap().len()).sum::<usize>();
    create(&mut c, "/f").await.unwrap();
    assert_eq!(kind(write_lease(&mut c, "/f", 1).await), ErrorKind::InvalidArgument);

    // New chunk: version 1, created on all three, the primary alone has a lease.
    let l1 = write_lease(&mut c, "/f", 0).await.unwrap();
    let chunk = l1.chunk.clone().unwrap();
    assert_eq!((chunk.index, chunk.version, chunk.replicas.len()), (0, 1, 3));
    assert_eq!(l1.secondaries.len(), 2);
    assert!(l1.lease_ms > 0 && l1.epoch == 1);
    assert_eq!(total_grants(&fakes), 3);
    for (id, fake, _) in &fakes {
        let g = fake.grants.lock().unwrap()[0];
        assert!(g.create && g.version == 1);
        assert_eq!(g.lease_ms > 0, *id == l1.primary.as_ref().unwrap().id);
    }

    // Valid lease: reused without a bump or a grant.
    let l2 = write_lease(&mut c, "/f", 0).await.unwrap();
    assert_eq!(l2.chunk.unwrap().version, 1);
    assert_eq!(l2.primary, l1.primary);
    assert_eq!(total_grants(&fakes), 3);

    // Expired (plus grace): a new grant bumps the version.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let l3 = write_lease(&mut c, "/f", 0).await.unwrap();
    assert_eq!(l3.chunk.unwrap().version, 2);
    assert_eq!(total_grants(&fakes), 6);

    // Lengths and appends.
    c.report_length(ReportLengthRequest { handle: chunk.handle, length: 1000 }).await.unwrap();
    let too_big = c.report_length(ReportLengthRequest { handle: chunk.handle, length: (1 << 20) + 1 }).await;
    assert_eq!(kind(too_big), ErrorKind::InvalidArgument);
    assert_eq!(kind(c.report_length(ReportLengthRequest { handle: 999, length: 1 }).await), ErrorKind::NotFound);
    let st = c.stat(StatRequest { path: "/f".into(), allow_stale: false }).await.unwrap().into_inner();
    assert_eq!(st.info.unwrap().size, 1000);
    let a = c.get_append_lease(GetAppendLeaseRequest { path: "/f".into(), after_index: None }).await.unwrap();
    assert_eq!(a.into_inner().lease.unwrap().chunk.unwrap().index, 0);
    let a = c.get_append_lease(GetAppendLeaseRequest { path: "/f".into(), after_index: Some(0) }).await.unwrap();
    let a = a.into_inner();
    assert_eq!((a.lease.unwrap().chunk.unwrap().index, a.chunk_size), (1, 1 << 20));
    let a = c.get_append_lease(GetAppendLeaseRequest { path: "/f".into(), after_index: Some(0) }).await.unwrap();
    assert_eq!(a.into_inner().lease.unwrap().chunk.unwrap().index, 1, "someone already allocated chunk 1");
    let st = c.stat(StatRequest { path: "/f".into(), allow_stale: false }).await.unwrap().into_inner();
    // size = max(index * chunk_size + length): chunk 1 exists, so chunk 0 counts as full.
    assert_eq!(st.info.unwrap().size, 1 << 20);
    assert_eq!(st.chunks.len(), 2);

    // Heartbeats: unknown server must re-register; lease extension for the primary.
    let hb = c.heartbeat(HeartbeatRequest { server_id: "ghost".into(), ..Default::default() }).await.unwrap();
    assert!(hb.into_inner().reregister);
    let primary = l3.primary.unwrap().id;
    let hb = HeartbeatRequest {
        server_id: primary.clone(),
        lease_extensions: vec![chunk.handle],
        session: "not-the-secret".into(),
        ..Default::default()
    };
    // Without its registration's secret a heartbeat speaks for nobody.
    let refused = c.heartbeat(hb.clone()).await.unwrap().into_inner();
    assert!(refused.reregister && refused.extended.is_empty());
    let hb = HeartbeatRequest { session: sessions[&primary].clone(), ..hb };
    let hb = c.heartbeat(hb).await.unwrap().into_inner();
    assert!(!hb.reregister);
    assert_eq!(hb.extended.len(), 1);
    assert_eq!(hb.extended[0].version, 2);

    stop(h, token).await;
    let (h, token, mut c) = start(cfg.clone()).await;
    // During the new leader's warm-up a file whose chunks no chunkserver
    // reported yet is not described (its size would be short)...
    assert_eq!(kind(c.stat(StatRequest { path: "/f".into(), allow_stale: false }).await), ErrorKind::Unavailable);
    // ...unless the reader accepts stale answers. Versions survive; locations do not.
    let st = c.stat(StatRequest { path: "/f".into(), allow_stale: true }).await.unwrap().into_inner();
    assert_eq!(st.chunks[0].version, 2);
    assert!(st.chunks[0].replicas.is_empty());
    assert_eq!(kind(write_lease(&mut c, "/f", 0).await), ErrorKind::Unavailable);
    // Re-register: current, stale and unknown chunks.
    let (_, _, addr1) = &fakes[0];
    let r = register(
        &mut c,
        "s1",
        addr1,
        vec![
            ChunkReport { handle: chunk.handle, version: 2, length: 0 },
            ChunkReport { handle: 777, version: 1, length: 0 },
        ],
    )
    .await;
    assert!(r.epoch > l1.epoch, "epoch {} after restart, {} before", r.epoch, l1.epoch);
    assert_eq!(r.delete_chunks, vec![777]);
    let s1_session = r.session;
    let (_, _, addr2) = &fakes[1];
    let r = register(&mut c, "s2", addr2, vec![ChunkReport { handle: chunk.handle, version: 1, length: 0 }]).await;
    assert_eq!(r.stale_chunks, vec![chunk.handle]);
    // A new leader grants no lease on an older chunk until its warm-up
    // (every live chunkserver re-registered) has passed.
    let early = write_lease(&mut c, "/f", 0).await;
    let l4 = match early {
        Ok(l) => l,
        Err(e) => {
            assert_eq!(Error::from(e).kind(), ErrorKind::Unavailable);
            tokio::time::sleep(Duration::from_millis(350)).await;
            write_lease(&mut c, "/f", 0).await.unwrap()
        }
    };
    assert_eq!(l4.chunk.as_ref().unwrap().version, 3);
    assert_eq!(l4.primary.unwrap().id, "s1");
    assert!(l4.secondaries.is_empty());

    // Deleting the file hides it; its chunks stay until the GC delay (3
    // days by default) passes, so no replica is told to delete them yet.
    c.delete(DeleteRequest { path: "/f".into(), recursive: false, call: None, ..Default::default() }).await.unwrap();
    let hb = HeartbeatRequest { server_id: "s1".into(), session: s1_session, ..Default::default() };
    let hb = c.heartbeat(hb).await.unwrap().into_inner();
    assert!(!hb.reregister && hb.delete_chunks.is_empty());
    stop(h, token).await;
}

/// A lease request whose caller gives up while the master waits on the
/// chunkservers still finishes its version bump: the new version is logged
/// and the lease recorded, instead of the chunk being left mid-bump (which
/// keeps repair away from it).
#[tokio::test]
async fn a_lease_request_cut_off_by_its_deadline_still_finishes_the_bump() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { lease_ms: 300, rpc_timeout_ms: 10_000, ..config(dir.path()) };
    let (h, token, mut c) = start(cfg).await;
    let mut fakes = vec![];
    for id in ["s1", "s2", "s3"] {
        let (fake, addr) = fake_server().await;
        register(&mut c, id, &addr, vec![]).await;
        fakes.push(fake);
    }
    create(&mut c, "/f").await.unwrap();
    let l1 = write_lease(&mut c, "/f", 0).await.unwrap();
    assert_eq!(l1.chunk.as_ref().unwrap().version, 1);
    // The lease runs out; the next grant round takes 3 s per server, and
    // its caller gives up after 100 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for f in &fakes {
        f.grant_delay_ms.store(3000, std::sync::atomic::Ordering::Relaxed);
    }
    let mut req = Request::new(GetWriteLeaseRequest { path: "/f".into(), index: 0, create_missing: false });
    req.set_timeout(Duration::from_millis(100));
    let e = c.get_write_lease(req).await.unwrap_err();
    assert!(matches!(e.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled), "{e:?}");
    for f in &fakes {
        f.grant_delay_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    }
    // The round the caller left finishes: version 2 is logged.
    let mut version = 0;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let st = c.stat(StatRequest { path: "/f".into(), allow_stale: false }).await.unwrap().into_inner();
        version = st.chunks[0].version;
        if version == 2 {
            break;
        }
    }
    assert_eq!(version, 2, "the abandoned grant round did not finish its bump");
    let grants: usize = fakes.iter().map(|f| f.grants.lock().unwrap().len()).sum();
    assert_eq!(grants, 6, "two rounds of three grants");
    stop(h, token).await;
}

#[tokio::test]
async fn silent_servers_are_declared_dead() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { heartbeat_ms: 50, dead_after_ms: 200, ..config(dir.path()) };
    let (h, token, mut c) = start(cfg).await;
    let (_fake, addr) = fake_server().await;
    register(&mut c, "s1", &addr, vec![]).await;
    create(&mut c, "/f").await.unwrap();
    write_lease(&mut c, "/f", 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = c.cluster_status(ClusterStatusRequest {}).await.unwrap().into_inner();
    assert!(!status.servers[0].alive);
    assert_eq!(status.under_replicated_chunks, 1);
    let st = c.stat(StatRequest { path: "/f".into(), allow_stale: false }).await.unwrap().into_inner();
    assert!(st.chunks[0].replicas.is_empty());
    let hb = c.heartbeat(HeartbeatRequest { server_id: "s1".into(), ..Default::default() }).await.unwrap();
    assert!(hb.into_inner().reregister);
    // No live server: a new chunk cannot be placed.
    create(&mut c, "/g").await.unwrap();
    assert_eq!(kind(write_lease(&mut c, "/g", 0).await), ErrorKind::NoSpace);
    stop(h, token).await;
}

/// Concurrent creates are proposed together: far fewer Raft entries than
/// creates, every create acknowledged exactly once, and all of them back
/// after a restart (the grouped entries are in the log).
#[tokio::test]
async fn concurrent_creates_share_raft_entries_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    mkdir(&mut c, "/many", false).await.unwrap();
    let applied = |mut c: Client| async move {
        c.master_status(MasterStatusRequest {}).await.unwrap().into_inner().this.unwrap().last_applied
    };
    let before = applied(c.clone()).await;
    const N: usize = 400;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move { create(&mut c, &format!("/many/f{i:03}")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let entries = applied(c.clone()).await - before;
    // 400 callers at once, at most 2 entries in flight: grouping is what
    // keeps this well below one entry per create.
    assert!(entries < (N / 4) as u64, "{N} concurrent creates took {entries} Raft entries");
    assert!(entries >= 1);
    // A second create of any of them is refused: each was applied once.
    assert_eq!(kind(create(&mut c, "/many/f123").await), ErrorKind::AlreadyExists);
    let listed = c
        .list(ListRequest { path: "/many".into(), include_hidden: false, allow_stale: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .entries
        .len();
    assert_eq!(listed, N);

    stop(h, token).await;
    let (h, token, mut c) = start(config(dir.path())).await;
    let names: std::collections::BTreeSet<String> = c
        .list(ListRequest { path: "/many".into(), include_hidden: false, allow_stale: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(names, (0..N).map(|i| format!("/many/f{i:03}")).collect());
    stop(h, token).await;
}

/// A retried call (same `CallId`) that already took effect gets its
/// outcome instead of running again, also after a restart; a new call on
/// the same path runs normally.
#[tokio::test]
async fn retried_calls_get_their_outcome_not_a_second_run() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    let call = |seq| Some(CallId { client: 77, seq });
    let create = |path: &str, seq| CreateRequest {
        path: path.into(),
        replication: 0,
        exclusive: true,
        call: call(seq),
        allow_under_replicated: true,
        umask: None,
    };
    let first = c.create(create("/f", 1)).await.unwrap().into_inner().info.unwrap();
    // The reply was "lost": the same call again answers with the file.
    let again = c.create(create("/f", 1)).await.unwrap().into_inner().info.unwrap();
    assert_eq!((again.path.as_str(), again.mtime_ms), (first.path.as_str(), first.mtime_ms));
    // A new call on the same path is a new create: refused.
    assert_eq!(kind(c.create(create("/f", 2)).await), ErrorKind::AlreadyExists);
    c.mkdir(MkdirRequest { path: "/d".into(), parents: false, call: call(3), umask: None }).await.unwrap();
    c.mkdir(MkdirRequest { path: "/d".into(), parents: false, call: call(3), umask: None }).await.unwrap();
    assert_eq!(kind(mkdir(&mut c, "/d", false).await), ErrorKind::AlreadyExists);
    c.rename(RenameRequest { src: "/f".into(), dst: "/g".into(), call: call(4), ..Default::default() }).await.unwrap();
    c.rename(RenameRequest { src: "/f".into(), dst: "/g".into(), call: call(4), ..Default::default() }).await.unwrap();
    c.delete(DeleteRequest { path: "/g".into(), recursive: false, call: call(5), ..Default::default() }).await.unwrap();
    c.delete(DeleteRequest { path: "/g".into(), recursive: false, call: call(5), ..Default::default() }).await.unwrap();
    assert_eq!(
        kind(
            c.delete(DeleteRequest { path: "/g".into(), recursive: false, call: call(6), ..Default::default() }).await
        ),
        ErrorKind::NotFound
    );
    // Another client's call with the same seq is its own call.
    let other = CreateRequest {
        path: "/d".into(),
        replication: 0,
        exclusive: true,
        call: Some(CallId { client: 78, seq: 3 }),
        allow_under_replicated: true,
        umask: None,
    };
    assert_eq!(kind(c.create(other).await), ErrorKind::AlreadyExists);

    // The outcomes are replicated state: they survive a restart (the
    // config checkpoints every 7 entries, so both the checkpoint and the
    // log tail carry them).
    stop(h, token).await;
    let (h, token, mut c) = start(config(dir.path())).await;
    c.rename(RenameRequest { src: "/f".into(), dst: "/g".into(), call: call(4), ..Default::default() }).await.unwrap();
    c.delete(DeleteRequest { path: "/g".into(), recursive: false, call: call(5), ..Default::default() }).await.unwrap();
    c.mkdir(MkdirRequest { path: "/d".into(), parents: false, call: call(3), umask: None }).await.unwrap();
    stop(h, token).await;
}

#[tokio::test]
async fn a_second_master_on_the_same_data_dir_is_refused_until_the_first_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    mkdir(&mut c, "/kept", false).await.unwrap();
    let err = gfs_master::start(config(dir.path()), CancellationToken::new()).await.err().expect("second master");
    let text = err.to_string();
    assert!(matches!(err, Error::Busy(_)), "{err:?}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
    // The first one is unharmed, and once it stopped the next start works.
    mkdir(&mut c, "/kept/after", false).await.unwrap();
    stop(h, token).await;
    let (h, token, mut c) = start(config(dir.path())).await;
    let names: Vec<String> = tree(&mut c).await.into_iter().map(|t| t.0).collect();
    assert_eq!(names, vec!["/kept".to_string(), "/kept/after".to_string()]);
    stop(h, token).await;
}

async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A corruption report counts only from the replica's holder (its session)
/// and only once the holder confirmed it (VerifyChunk); the last replica
/// that is not confirmed corrupt is never dropped.
#[tokio::test]
async fn corruption_reports_are_verified_and_the_last_good_copy_is_kept() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    let mut fakes = std::collections::BTreeMap::new();
    for id in ["s1", "s2", "s3"] {
        let (fake, addr) = fake_server().await;
        let session = register(&mut c, id, &addr, vec![]).await.session;
        fakes.insert(id, (fake, session));
    }
    create(&mut c, "/f").await.unwrap();
    let handle = write_lease(&mut c, "/f", 0).await.unwrap().chunk.unwrap().handle;
    let replicas = |mut c: Client| async move {
        let st = c.stat(StatRequest { path: "/f".into(), allow_stale: false }).await.unwrap().into_inner();
        let mut ids: Vec<String> = st.chunks[0].replicas.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        ids
    };
    let report =
        |id: &str, session: &str| ReportCorruptRequest { handle, server_id: id.into(), session: session.into() };
    // Nobody but the holder may report its replica.
    assert_eq!(kind(c.report_corrupt(report("s1", "")).await), ErrorKind::Unauthenticated);
    assert_eq!(kind(c.report_corrupt(report("s1", &fakes["s2"].1)).await), ErrorKind::Unauthenticated);
    assert_eq!(kind(c.report_corrupt(report("nobody", "x")).await), ErrorKind::Unauthenticated);
    let other = ReportCorruptRequest { handle: handle + 1, ..report("s1", &fakes["s1"].1) };
    assert_eq!(kind(c.report_corrupt(other).await), ErrorKind::NotFound);
    assert_eq!(replicas(c.clone()).await, ["s1", "s2", "s3"]);
    // The holder's report, but the holder finds the replica intact: kept.
    c.report_corrupt(report("s1", &fakes["s1"].1)).await.unwrap();
    until("s1 verified", || async { fakes["s1"].0.verifies.load(SeqCst) == 1 }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(replicas(c.clone()).await, ["s1", "s2", "s3"]);
    // Confirmed while good replicas remain: dropped, one at a time.
    for (id, left) in [("s1", vec!["s2", "s3"]), ("s2", vec!["s3"])] {
        fakes[id].0.corrupt.store(true, SeqCst);
        c.report_corrupt(report(id, &fakes[id].1)).await.unwrap();
        until(&format!("{id} dropped"), || async { replicas(c.clone()).await == left }).await;
    }
    // The last one confirmed corrupt is kept, counted, not deleted.
    fakes["s3"].0.corrupt.store(true, SeqCst);
    c.report_corrupt(report("s3", &fakes["s3"].1)).await.unwrap();
    let kept = |mut c: Client| async move {
        c.cluster_status(ClusterStatusRequest {}).await.unwrap().into_inner().corrupt_replicas_kept
    };
    until("the last copy counted as kept", || async { kept(c.clone()).await == 1 }).await;
    assert_eq!(replicas(c.clone()).await, ["s3"]);
    let hb = HeartbeatRequest { server_id: "s3".into(), session: fakes["s3"].1.clone(), ..Default::default() };
    let hb = c.heartbeat(hb).await.unwrap().into_inner();
    assert!(!hb.reregister && !hb.delete_chunks.contains(&handle), "the last copy was deleted: {hb:?}");
    // Reported again: nothing more to verify.
    c.report_corrupt(report("s3", &fakes["s3"].1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fakes["s3"].0.verifies.load(SeqCst), 1);
    stop(h, token).await;
}
