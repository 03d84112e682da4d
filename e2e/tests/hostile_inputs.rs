//! Hostile inputs against an in-process cluster (testkit), sent with raw
//! gRPC clients: each must be refused with a clear error, and every byte
//! written before it must read back intact afterwards.

use std::time::Duration;

use gfs_client::Client;
use gfs_common::{Error, MAX_FILE_CHUNKS, MAX_NEW_CHUNKS_PER_LEASE};
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::{
    CreateRequest, GetAppendLeaseRequest, GetChunksRequest, GetWriteLeaseRequest, HeartbeatRequest, MkdirRequest,
    ReadRequest, RegisterRequest, RenameRequest, ReportCorruptRequest, ReportLengthRequest, ServerInfo,
    VerifyChunkRequest,
};
use gfs_testkit::{Cluster, ClusterOptions};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use tonic::transport::Channel;

type Master = MasterServiceClient<Channel>;

const MIB: u64 = 1 << 20;

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

async fn master(cluster: &Cluster) -> Master {
    MasterServiceClient::connect(format!("http://{}", cluster.master_addr())).await.unwrap()
}

/// The typed error of a refused call (panics if it was accepted).
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Error {
    match r {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(s) => Error::from(s),
    }
}

/// Writes each file and returns (path, bytes) to check later.
async fn write_files(c: &Client, files: &[(&str, u64, usize)]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for &(path, seed, len) in files {
        let d = data(seed, len);
        c.create(path, None).await.unwrap();
        c.write_at(path, 0, &d).await.unwrap();
        out.push((path.to_string(), d));
    }
    out
}

/// Every file reads back byte for byte.
async fn assert_intact(c: &Client, files: &[(String, Vec<u8>)]) {
    for (p, d) in files {
        let got = c.read_all(p).await.unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(got == *d, "{p}: {} bytes read back differ from the {} written", got.len(), d.len());
    }
}

fn mkdir(path: &str, parents: bool) -> MkdirRequest {
    MkdirRequest { path: path.into(), parents, call: None, umask: None }
}

fn create(path: &str) -> CreateRequest {
    CreateRequest { path: path.into(), replication: 0, exclusive: true, ..Default::default() }
}

fn rename(src: &str, dst: &str) -> RenameRequest {
    RenameRequest { src: src.into(), dst: dst.into(), call: None, overwrite: false }
}

fn assert_invalid_path(e: &Error, what: &str, says: &str) {
    assert!(matches!(e, Error::InvalidPath { .. }), "{what}: {e:?}");
    assert!(e.to_string().contains(says), "{what}: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserved_names_control_characters_and_path_limits_are_refused() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let c = cluster.client();
    let mut m = master(&cluster).await;
    c.mkdir("/d", false).await.unwrap();
    c.mkdir("/old", false).await.unwrap();
    let mut files = write_files(&c, &[("/d/f", 1, 300 << 10), ("/old/keep", 2, 4 << 10)]).await;
    // A deleted directory: its hidden name must never take new entries
    // (the garbage collector would delete them with it).
    c.delete("/old", true).await.unwrap();
    let hidden = c.list_hidden("/").await.unwrap().into_iter().find(|e| e.path.contains("old")).unwrap().path;
    let reserved = "reserved for deleted files";
    let e = refused(m.mkdir(mkdir(&format!("{hidden}/new"), false)).await);
    assert_invalid_path(&e, "mkdir inside a deleted directory", reserved);
    let e = refused(m.mkdir(mkdir("/d/.gfs-deleted.1.x/y", true)).await);
    assert_invalid_path(&e, "mkdir -p of a made-up hidden ancestor", reserved);
    let e = refused(m.create(create(&format!("{hidden}/g"))).await);
    assert_invalid_path(&e, "create inside a deleted directory", reserved);
    let e = refused(m.rename(rename("/d/f", &format!("{hidden}/f"))).await);
    assert_invalid_path(&e, "rename into a deleted directory", reserved);

    for bad in ["/d/a\u{1}b", "/d/line\nbreak", "/d/esc\u{1b}[2J", "/d/x\u{202e}txt.exe", "/d/nul\0", "/d/del\u{7f}"] {
        let e = refused(m.create(create(bad)).await);
        assert_invalid_path(&e, &format!("create {bad:?}"), "control character");
        let e = refused(m.mkdir(mkdir(&format!("{bad}/sub"), true)).await);
        assert_invalid_path(&e, &format!("mkdir {bad:?}"), "control character");
        let e = refused(m.rename(rename("/d/f", bad)).await);
        assert_invalid_path(&e, &format!("rename to {bad:?}"), "control character");
        assert!(!e.to_string().chars().any(|ch| ch.is_control()), "unescaped in {e:?}");
    }

    // A 1 MiB path gets a short answer.
    let huge = format!("/{}", "a".repeat(1 << 20));
    let status = m.create(create(&huge)).await.unwrap_err();
    assert!(status.message().len() < 512, "{} bytes of message", status.message().len());
    assert_invalid_path(&Error::from(status), "1 MiB path", "longer than 4096");

    // Limits hold for every path a rename moves, not only its destination.
    let deep = format!("/deep{}", "/a".repeat(599));
    c.mkdir(&deep, true).await.unwrap();
    let under = format!("/y{}", "/b".repeat(450));
    c.mkdir(&under, true).await.unwrap();
    let e = refused(m.rename(rename("/deep", &format!("{under}/deep"))).await);
    assert_invalid_path(&e, "rename deeper than the limit", "deeper than 1000");
    let name = "l".repeat(250);
    c.mkdir(&format!("/long/{}", vec![name.as_str(); 15].join("/")), true).await.unwrap();
    c.mkdir(&format!("/z/{name}/{name}"), true).await.unwrap();
    let e = refused(m.rename(rename("/long", &format!("/z/{name}/{name}/long"))).await);
    assert_invalid_path(&e, "rename longer than the limit", "longer than 4096");
    assert!(c.stat(&deep).await.is_ok() && c.stat("/long").await.is_ok(), "a refused rename moved something");

    // Undelete is a rename of the hidden entry, also for a name of the
    // longest length (its hidden name is longer than 255 bytes).
    let longest = format!("/d/{}", "u".repeat(255));
    files.extend(write_files(&c, &[(longest.as_str(), 3, 1000)]).await);
    c.delete(&longest, false).await.unwrap();
    let gone = c.list_hidden("/d").await.unwrap().into_iter().find(|e| e.path.ends_with("uuu")).unwrap().path;
    c.rename(&gone, &longest).await.unwrap();
    c.rename(&format!("{hidden}/keep"), "/kept").await.unwrap();
    files[1].0 = "/kept".into();
    assert_intact(&c, &files).await;
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_and_location_requests_far_past_the_end_are_refused() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let c = cluster.client();
    let mut m = master(&cluster).await;
    let files = write_files(&c, &[("/f", 4, (2 * MIB + 1000) as usize)]).await;
    let chunks = c.stat("/f").await.unwrap().chunks;
    assert_eq!(chunks.len(), 3);
    let lease = |index, create_missing| GetWriteLeaseRequest { path: "/f".into(), index, create_missing };
    // One past the last chunk plus a gap of more than 64: refused at once,
    // nothing allocated (it used to place, create and log every chunk).
    for index in [3 + MAX_NEW_CHUNKS_PER_LEASE, 1000, 1 << 40, u64::MAX] {
        let r = tokio::time::timeout(Duration::from_secs(10), m.get_write_lease(lease(index, true))).await;
        let e = refused(r.expect("the master took more than 10 s to answer"));
        assert!(matches!(e, Error::InvalidArgument(_)), "index {index}: {e:?}");
        assert_eq!(c.stat("/f").await.unwrap().chunks.len(), 3, "index {index} allocated chunks");
    }
    let e = refused(m.get_write_lease(lease(5, false)).await);
    assert!(e.to_string().contains("past the end"), "{e}");
    let e = refused(m.get_append_lease(GetAppendLeaseRequest { path: "/f".into(), after_index: Some(9) }).await);
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    c.create("/empty", None).await.unwrap();
    let r = m.get_append_lease(GetAppendLeaseRequest { path: "/empty".into(), after_index: Some(1 << 50) }).await;
    assert!(matches!(refused(r), Error::InvalidArgument(_)));
    assert_eq!(c.stat("/empty").await.unwrap().chunks.len(), 0, "an append lease after no chunk allocated one");

    // Locations: any start and count give a bounded, correct answer.
    let get = |start_index, count| GetChunksRequest { path: "/f".into(), start_index, count, allow_stale: false };
    assert!(m.get_chunks(get(u64::MAX, u64::MAX)).await.unwrap().into_inner().chunks.is_empty());
    let all = m.get_chunks(get(1, u64::MAX)).await.unwrap().into_inner().chunks;
    assert_eq!(all.iter().map(|l| l.index).collect::<Vec<_>>(), vec![1, 2]);

    // A write far past the end still works: the client fills the gap in
    // steps the master accepts.
    let far = 150 * MIB;
    c.write_at("/f", far, b"far away").await.unwrap();
    assert_eq!(c.read_at("/f", far, 8).await.unwrap(), b"far away");
    assert_eq!(c.stat("/f").await.unwrap().chunks.len(), 151);
    // Past the largest file: a clear error, no steps taken.
    let e = c.write_at("/f", MAX_FILE_CHUNKS * MIB, b"x").await.unwrap_err();
    assert!(e.to_string().contains("beyond the largest file"), "{e}");
    assert_eq!(c.stat("/f").await.unwrap().chunks.len(), 151);

    // Lengths: a chunk nobody holds a lease on takes no length from a
    // client (after a master restart no lease is held).
    cluster.restart_master().await.unwrap();
    cluster.wait_live(3).await.unwrap();
    let mut m = master(&cluster).await;
    let last = &chunks[2];
    let e = refused(m.report_length(ReportLengthRequest { handle: last.handle, length: MIB }).await);
    assert!(e.to_string().contains("no lease"), "{e}");
    let e = refused(m.report_length(ReportLengthRequest { handle: 1 << 62, length: 1 }).await);
    assert!(matches!(e, Error::ChunkNotFound { .. }), "{e:?}");
    let size = c.stat("/f").await.unwrap().info.size;
    assert_eq!(size, far + 8);
    let mut whole = files[0].1.clone();
    whole.resize(far as usize, 0);
    whole.extend_from_slice(b"far away");
    assert_intact(&c, &[("/f".into(), whole)]).await;
    cluster.shutdown().await.unwrap();
}

fn claim(id: &str, address: &str) -> RegisterRequest {
    let server = ServerInfo { id: id.into(), address: address.into(), zone: "elsewhere".into() };
    RegisterRequest {
        server: Some(server),
        capacity_bytes: 1 << 40,
        used_bytes: 0,
        chunks: vec![],
        report_seq: u64::MAX,
        ..Default::default()
    }
}

/// True when every chunk of `path` lists `n` replicas.
async fn replicated(c: &Client, path: &str, n: usize) -> bool {
    c.stat(path).await.is_ok_and(|st| st.chunks.iter().all(|ch| ch.replicas.len() == n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunkserver_id_is_spoken_for_only_by_its_registration() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let c = cluster.client();
    let mut m = master(&cluster).await;
    let files = write_files(&c, &[("/a", 6, (3 * MIB / 2) as usize)]).await;
    let (id0, addr0) = (cluster.chunkserver_id(0).unwrap(), cluster.chunkserver_addr(0).unwrap());
    // Another address claiming a live server's id is refused, naming the
    // holder (it used to take the id over and drop the holder's replicas).
    let e = refused(m.register(claim(&id0, "127.0.0.1:1")).await);
    assert_eq!(e, Error::ServerIdInUse { id: id0.clone(), holder: addr0 });
    // A new id at the address of a server that is talking is refused: it
    // would retire that server and drop its replicas.
    let addr1 = cluster.chunkserver_addr(1).unwrap();
    let e = refused(m.register(claim("intruder", &addr1)).await);
    assert!(e.to_string().contains("belongs to live chunkserver"), "{e}");
    assert!(replicated(&c, "/a", 3).await, "a refused claim dropped replicas");
    // A heartbeat for a live server without its registration's secret is
    // told to re-register and changes nothing (its empty full report used
    // to drop every replica of that server).
    let id1 = cluster.chunkserver_id(1).unwrap();
    let hb = HeartbeatRequest {
        server_id: id1.clone(),
        is_full_report: true,
        report_seq: u64::MAX,
        session: "0123456789abcdef0123456789abcdef".into(),
        ..Default::default()
    };
    assert!(m.heartbeat(hb).await.unwrap().into_inner().reregister);
    assert!(replicated(&c, "/a", 3).await, "a heartbeat without the secret dropped replicas");
    for (id, address) in [("a\nb", "127.0.0.1:3"), ("x", ""), (&"i".repeat(10_000) as &str, "127.0.0.1:3")] {
        let e = refused(m.register(claim(id, address)).await);
        assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().len() < 512, "{e:?}");
    }
    // A disk id is shown to admins and groups capacity: bounded, printable.
    for disk_id in ["x".repeat(129), "boot id\n:801".into()] {
        let e = refused(m.register(RegisterRequest { disk_id, ..claim("new-server", "127.0.0.1:4") }).await);
        assert!(e.to_string().contains("disk id"), "{e:?}");
    }
    // The same id from the same address (a restart) registers again.
    cluster.stop_chunkserver(2).await.unwrap();
    cluster.start_chunkserver(2).await.unwrap();
    gfs_e2e::wait_for("the restarted server's replicas", 30, || replicated(&c, "/a", 3)).await;
    // A dead holder's id may be taken.
    let id2 = cluster.chunkserver_id(2).unwrap();
    cluster.stop_chunkserver(2).await.unwrap();
    gfs_e2e::wait_for("server 2 dead", 30, || async {
        c.cluster_status()
            .await
            .unwrap()
            .servers
            .iter()
            .any(|s| s.server.as_ref().is_some_and(|i| i.id == id2) && !s.alive)
    })
    .await;
    let r = m.register(claim(&id2, "127.0.0.1:2")).await.unwrap().into_inner();
    assert_eq!(r.session.len(), 32, "{r:?}");
    assert_intact(&c, &files).await;
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corruption_reports_need_the_holder_and_the_last_copy_is_kept() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let c = cluster.client();
    let mut m = master(&cluster).await;
    let files = write_files(&c, &[("/c", 7, 300 << 10)]).await;
    let one = data(8, 256 << 10);
    c.create("/one", Some(1)).await.unwrap();
    c.write_at("/one", 0, &one).await.unwrap();
    // Only its holder may report a replica: a report without the holder's
    // session is refused and drops nothing (it used to drop it at once).
    let ch = c.stat("/c").await.unwrap().chunks[0].clone();
    for r in &ch.replicas {
        for session in ["", "00000000000000000000000000000000"] {
            let req = ReportCorruptRequest { handle: ch.handle, server_id: r.id.clone(), session: session.into() };
            let e = refused(m.report_corrupt(req).await);
            assert!(matches!(e, Error::Unauthenticated(_)), "{e:?}");
        }
    }
    assert!(replicated(&c, "/c", 3).await, "a report from a stranger dropped a replica");
    // An intact replica verifies whole.
    let mut cs = ChunkServiceClient::connect(format!("http://{}", ch.replicas[0].address)).await.unwrap();
    let verify =
        |l: &gfs_proto::ChunkLocation| VerifyChunkRequest { handle: l.handle, version: l.version, bytes_per_sec: 0 };
    let v = cs.verify_chunk(verify(&ch)).await.unwrap().into_inner();
    assert!(v.ok && v.length == 300 << 10, "{v:?}");

    // The only replica of /one gets a bad block 0; a read of it makes its
    // holder report itself, the master has it verified, it is confirmed,
    // and kept: it is the last copy, and its other blocks are good.
    let loc = c.stat("/one").await.unwrap().chunks[0].clone();
    let holder = loc.replicas[0].address.clone();
    let path = cluster.chunk_path(cluster.chunkserver_index(&holder).unwrap(), loc.handle).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let mut cs = ChunkServiceClient::connect(format!("http://{holder}")).await.unwrap();
    let v = cs.verify_chunk(verify(&loc)).await.unwrap().into_inner();
    assert!(!v.ok && v.corrupt_block == 0, "{v:?}");
    let token = Some(cluster.token(loc.handle, loc.version, gfs_common::token::READ));
    let read = ReadRequest { handle: loc.handle, version: loc.version, offset: 0, length: 10, token };
    assert!(matches!(refused(cs.read(read).await), Error::Corrupt { .. }));
    gfs_e2e::wait_for("the confirmed last copy counted", 30, || async {
        c.cluster_status().await.unwrap().corrupt_replicas_kept == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(path.exists(), "the last copy was deleted");
    assert_eq!(c.stat("/one").await.unwrap().chunks[0].replicas.len(), 1);
    assert!(c.read_at("/one", 64 << 10, 192 << 10).await.unwrap() == one[64 << 10..]);
    assert_intact(&c, &files).await;
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_above_the_live_chunkservers_is_refused_unless_allowed() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let c = cluster.client();
    let mut m = master(&cluster).await;
    let mut files = write_files(&c, &[("/before", 9, 100 << 10)]).await;
    let five = |path: &str, allow| CreateRequest {
        path: path.into(),
        replication: 5,
        exclusive: true,
        allow_under_replicated: allow,
        ..Default::default()
    };
    // Past the master's warm-up (see below), the refusal is final.
    let warmup = Duration::from_millis(cluster.options().dead_after_ms + 200);
    tokio::time::sleep(warmup).await;
    let e = refused(m.create(five("/five", false)).await);
    assert!(matches!(e, Error::NoSpace { .. }), "{e:?}");
    assert!(e.to_string().contains("replication 5 but only 3 chunkservers are live"), "{e}");
    assert!(matches!(c.stat("/five").await, Err(Error::NotFound { .. })), "a refused create left a file");
    // Allowed explicitly: created, written, and shown under-replicated.
    m.create(five("/five", true)).await.unwrap();
    let d = data(10, (2 * MIB) as usize);
    c.write_at("/five", 0, &d).await.unwrap();
    files.push(("/five".into(), d));
    let st = c.stat("/five").await.unwrap();
    assert_eq!(st.info.replication, 5);
    assert!(st.chunks.iter().all(|ch| ch.replicas.len() == 3), "{:?}", st.chunks);
    let status = c.cluster_status().await.unwrap();
    assert!(status.under_replicated_chunks >= 2, "{status:?}");
    assert!(status.deficits.iter().any(|d| d.missing == 2 && d.chunks >= 2), "{:?}", status.deficits);

    // A new leader's warm-up: chunkservers are still re-registering, so a
    // create it cannot place yet is retryable, never refused for good.
    cluster.stop_chunkserver(2).await.unwrap();
    cluster.restart_master().await.unwrap();
    let mut m = master(&cluster).await;
    let e = refused(m.create(create("/early")).await);
    assert!(matches!(e, Error::Unavailable(_)), "during the warm-up: {e:?}");
    // After it, with 2 of 3 live, the refusal stands; a client's create
    // (which retries) succeeds once the third server is back.
    tokio::time::sleep(warmup).await;
    let e = refused(m.create(create("/early")).await);
    assert!(e.to_string().contains("replication 3 but only 2 chunkservers are live"), "{e}");
    cluster.start_chunkserver(2).await.unwrap();
    cluster.wait_live(3).await.unwrap();
    files.extend(write_files(&c, &[("/after", 11, 1000)]).await);
    assert_intact(&c, &files).await;
    cluster.shutdown().await.unwrap();
}
