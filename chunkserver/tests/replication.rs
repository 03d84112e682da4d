//! Three chunkservers and a fake master: push pipeline, primary-ordered
//! writes and record appends, reads, checksums, leases, epochs, budgets.

mod common;

use common::*;
use gfs_common::Error;
use gfs_common::shutdown::CancellationToken;
use gfs_proto::*;

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_write_then_read_everywhere() {
    let c = TestCluster::start(3, |_, _| {}).await;
    grant_all(&c, 1, 1, 0, 1).await;
    let data = random_bytes(3 * MIB + 12_345, 1);
    // Push to B with chain [A, C]; the primary is A.
    let mut b = c.client(1).await;
    let received = push(&mut b, 77, vec![c.addr(0), c.addr(2)], &data).await.unwrap();
    assert_eq!(received, data.len() as u64);
    let mut a = c.client(0).await;
    let req = WriteRequest {
        handle: 1,
        version: 1,
        offset: 100,
        data_id: 77,
        length: data.len() as u64,
        secondaries: vec![c.addr(1), c.addr(2)],
        epoch: 1,
        token: token(1, 1, RW),
    };
    let resp = a.write(req).await.unwrap().into_inner();
    assert_eq!(resp.chunk_length, 100 + data.len() as u64);
    for i in 0..3 {
        let got = read(&mut c.client(i).await, 1, 1, 0, 8 * MIB as u64).await.unwrap();
        assert_eq!(got.len(), 100 + data.len(), "server {i}");
        assert!(got[..100].iter().all(|&x| x == 0));
        assert_eq!(&got[100..], &data[..], "server {i}");
    }
    // The pushed data was consumed on every replica.
    let req = WriteRequest {
        handle: 1,
        version: 1,
        data_id: 77,
        length: data.len() as u64,
        token: token(1, 1, RW),
        ..Default::default()
    };
    let err = Error::from(a.write(req).await.unwrap_err());
    assert_eq!(err, Error::DataNotFound { data_id: 77 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_append_until_chunk_full() {
    let c = TestCluster::start(3, |_, _| {}).await;
    grant_all(&c, 9, 4, 0, 1).await;
    let chunk_size = MIB as u64;
    let rec = 200 * 1024;
    let mut offsets = Vec::new();
    let mut full = false;
    for n in 0..10u64 {
        let data = random_bytes(rec, n);
        let entry = (n % 3) as usize;
        let chain: Vec<String> = (0..3).filter(|&i| i != entry).map(|i| c.addr(i)).collect();
        push(&mut c.client(entry).await, 1000 + n, chain, &data).await.unwrap();
        let req = AppendRequest {
            handle: 9,
            version: 4,
            data_id: 1000 + n,
            length: rec as u64,
            secondaries: vec![c.addr(1), c.addr(2)],
            epoch: 1,
            chunk_size,
            token: token(9, 4, RW),
        };
        match c.client(0).await.append(req).await {
            Ok(r) => offsets.push(r.into_inner().offset),
            Err(s) => {
                assert_eq!(Error::from(s), Error::ChunkFull { handle: 9 });
                full = true;
                break;
            }
        }
    }
    assert!(full);
    assert_eq!(offsets, (0..5).map(|i| i * rec as u64).collect::<Vec<_>>());
    let files: Vec<Vec<u8>> = c.servers.iter().map(|s| std::fs::read(s.chunk_path(9)).unwrap()).collect();
    assert_eq!(files[0].len(), MIB);
    assert_eq!(files[0], files[1]);
    assert_eq!(files[0], files[2]);
    for (n, off) in offsets.iter().enumerate() {
        let got = read(&mut c.client(2).await, 9, 4, *off, rec as u64).await.unwrap();
        assert_eq!(got, random_bytes(rec, n as u64));
    }
    // Too-large record is refused.
    let req = AppendRequest {
        handle: 9,
        version: 4,
        length: chunk_size / 4 + 1,
        chunk_size,
        token: token(9, 4, RW),
        ..Default::default()
    };
    let err = Error::from(c.client(0).await.append(req).await.unwrap_err());
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_checksums_leases_epochs() {
    let c = TestCluster::start(2, |_, _| {}).await;
    assert!(eventually(|| c.master.seen.lock().unwrap().registers.len() == 2).await);
    grant_all(&c, 5, 2, 0, 1).await;
    let data = random_bytes(300_000, 5);
    push(&mut c.client(0).await, 1, vec![c.addr(1)], &data).await.unwrap();
    let req = WriteRequest {
        handle: 5,
        version: 2,
        data_id: 1,
        length: data.len() as u64,
        secondaries: vec![c.addr(1)],
        epoch: 1,
        token: token(5, 2, RW),
        ..Default::default()
    };
    c.client(0).await.write(req.clone()).await.unwrap();

    // Version mismatch.
    let err = read(&mut c.client(1).await, 5, 1, 0, 10).await.unwrap_err();
    assert_eq!(err, Error::StaleVersion { handle: 5, have: 2, want: 1 });

    // Write to a server without the lease.
    push(&mut c.client(1).await, 2, vec![], &data).await.unwrap();
    let err = Error::from(c.client(1).await.write(WriteRequest { data_id: 2, ..req.clone() }).await.unwrap_err());
    assert!(matches!(err, Error::NotPrimary { handle: 5, .. }), "{err:?}");

    // Flip a byte on B: Corrupt, and the master hears about it.
    let path = c.servers[1].chunk_path(5);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[70_000] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let err = read(&mut c.client(1).await, 5, 2, 65_536, 100).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { handle: 5, .. }), "{err:?}");
    let id = c.servers[1].id.clone();
    assert!(
        eventually(|| c.master.seen.lock().unwrap().corrupt.iter().any(|r| r.handle == 5 && r.server_id == id)).await
    );
    assert!(read(&mut c.client(0).await, 5, 2, 65_536, 100).await.is_ok());

    // Epoch fencing: a new leader (epoch 7) vouches for its epoch.
    c.master.vouch.store(7, std::sync::atomic::Ordering::Relaxed);
    let grant = GrantLeaseRequest { handle: 5, version: 3, lease_ms: 0, create: false, epoch: 7 };
    c.client(1).await.grant_lease(grant).await.unwrap();
    let grant = GrantLeaseRequest { handle: 5, version: 4, lease_ms: 0, create: false, epoch: 6 };
    let err = Error::from(c.client(1).await.grant_lease(grant).await.unwrap_err());
    assert_eq!(err, Error::StaleEpoch { have: 6, seen: 7 });
    // Older version grants are refused, unknown chunks are not created.
    let grant = GrantLeaseRequest { handle: 5, version: 2, lease_ms: 0, create: false, epoch: 7 };
    let err = Error::from(c.client(1).await.grant_lease(grant).await.unwrap_err());
    assert!(matches!(err, Error::StaleVersion { have: 3, .. }), "{err:?}");
    let grant = GrantLeaseRequest { handle: 99, version: 1, lease_ms: 0, create: false, epoch: 7 };
    let err = Error::from(c.client(1).await.grant_lease(grant).await.unwrap_err());
    assert_eq!(err, Error::ChunkNotFound { handle: 99 });

    // The primary's mutation now fails on the secondary (version moved on).
    push(&mut c.client(0).await, 3, vec![c.addr(1)], &data).await.unwrap();
    let err = Error::from(c.client(0).await.write(WriteRequest { data_id: 3, ..req.clone() }).await.unwrap_err());
    assert!(matches!(err, Error::Unavailable(ref m) if m.contains(&c.addr(1))), "{err:?}");

    // Heartbeats carry the chunk reports.
    assert!(
        eventually(|| c.master.seen.lock().unwrap().heartbeats.iter().any(|h| h.changed.iter().any(|r| r.handle == 5)))
            .await
    );

    // Delete.
    c.client(1).await.delete_chunks(DeleteChunksRequest { handles: vec![5], epoch: 7 }).await.unwrap();
    assert!(!path.exists());
    let err = read(&mut c.client(1).await, 5, 3, 0, 10).await.unwrap_err();
    assert_eq!(err, Error::ChunkNotFound { handle: 5 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_budget_and_failed_hop() {
    let c = TestCluster::start(1, |_, cfg| cfg.push_buffer_bytes = 4 * MIB as u64).await;
    let data = random_bytes(3 * MIB, 3);
    let mut a = c.client(0).await;
    push(&mut a, 1, vec![], &data).await.unwrap();
    let err = push(&mut a, 2, vec![], &data).await.unwrap_err();
    assert!(matches!(err, Error::Busy(_)), "{err:?}");
    // Wrong byte count.
    let frame =
        PushDataFrame { data_id: 3, total_len: 10, data: bytes::Bytes::from_static(b"abc"), ..Default::default() };
    let err = Error::from(a.push_data(tokio_stream::iter(vec![frame])).await.unwrap_err());
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // A dead next hop is named in the error.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let small = random_bytes(1000, 4);
    let err = push(&mut a, 4, vec![dead.clone()], &small).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(ref m) if m.contains(&dead)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_chunks_and_id() {
    let mut c = TestCluster::start(1, |_, cfg| cfg.sync_writes = true).await;
    grant_all(&c, 3, 1, 0, 1).await;
    let data = random_bytes(150_000, 9);
    push(&mut c.client(0).await, 1, vec![], &data).await.unwrap();
    let req = WriteRequest {
        handle: 3,
        version: 1,
        data_id: 1,
        length: data.len() as u64,
        epoch: 1,
        token: token(3, 1, RW),
        ..Default::default()
    };
    c.client(0).await.write(req).await.unwrap();
    let old = c.servers.pop().unwrap();
    let id = old.id.clone();
    c.tokens[0].cancel();
    old.wait().await.unwrap();
    let cfg = config(&c.master_addr, c.dirs[0].path());
    let token = gfs_common::shutdown::CancellationToken::new();
    let h = gfs_chunkserver::start(cfg, token.clone()).await.unwrap();
    assert_eq!(h.id, id);
    // Registered again: it has the master's token key.
    assert!(eventually(|| h.is_registered()).await);
    let got = read(&mut client(&h.addr.to_string()).await, 3, 1, 0, 1 << 20).await.unwrap();
    assert_eq!(got, data);
    assert!(
        eventually(|| c
            .master
            .seen
            .lock()
            .unwrap()
            .registers
            .iter()
            .any(|r| r.chunks.iter().any(|x| x.handle == 3 && x.length == 150_000)))
        .await
    );
    token.cancel();
    h.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_cut_off_by_its_deadline_leaves_no_copy() {
    let c = TestCluster::start(2, |_, _| {}).await;
    // A 4 MiB chunk on server 0 alone.
    let grant = GrantLeaseRequest { handle: 9, version: 3, lease_ms: 60_000, create: true, epoch: 1 };
    c.client(0).await.grant_lease(grant).await.unwrap();
    let data = random_bytes(4 * MIB, 9);
    let mut a = c.client(0).await;
    push(&mut a, 1, vec![], &data).await.unwrap();
    let len = data.len() as u64;
    let write = WriteRequest {
        handle: 9,
        version: 3,
        offset: 0,
        data_id: 1,
        length: len,
        secondaries: vec![],
        epoch: 1,
        token: token(9, 3, RW),
    };
    a.write(write).await.unwrap();

    // Server 1 copies it at 1 MiB/s (one 8 MiB read, then the throttle
    // waits 4 s); its caller gives up after 300 ms.
    let clone = CloneChunkRequest {
        handle: 9,
        version: 3,
        sources: vec![c.addr(0)],
        epoch: 1,
        bytes_per_sec: MIB as u64,
        token: token(9, 3, gfs_common::token::READ),
    };
    let mut b = c.client(1).await;
    let mut cut = tonic::Request::new(clone.clone());
    cut.set_timeout(std::time::Duration::from_millis(300));
    let status = b.clone_chunk(cut).await.unwrap_err();
    assert!(matches!(status.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded), "not cut off: {status:?}");
    let copy = gfs_chunkserver::store::Store::chunk_path(c.dirs[1].path(), 9);
    let meta = copy.with_extension("meta");
    assert!(eventually(|| !copy.exists() && !meta.exists()).await, "the cut-off copy stayed on disk: {copy:?}");

    // Cloning again (refused while the cleanup runs) gives a whole replica.
    let clone = CloneChunkRequest { bytes_per_sec: 0, ..clone };
    let mut refused = 0;
    let resp = loop {
        match b.clone_chunk(clone.clone()).await {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && refused < 100 => {
                refused += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(s) => panic!("clone after the cut-off one: {s:?}"),
        }
    };
    assert_eq!(resp.length, len);
    assert_eq!(read(&mut b, 9, 3, 0, 8 * MIB as u64).await.unwrap(), data);
    assert!(copy.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_chunkserver_on_the_same_data_dir_is_refused_until_the_first_stops() {
    let mut c = TestCluster::start(1, |_, _| {}).await;
    grant_all(&c, 4, 1, 0, 1).await;
    let dir = c.dirs[0].path().to_path_buf();
    let err = gfs_chunkserver::start(config(&c.master_addr, &dir), CancellationToken::new()).await.err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, Error::Busy(_)), "{err:?}");
    assert!(text.contains(&dir.display().to_string()) && text.contains("pid "), "{text}");
    // The first one still serves its chunk; once it stopped, a start works.
    read(&mut c.client(0).await, 4, 1, 0, 1).await.unwrap();
    c.tokens[0].cancel();
    c.servers.remove(0).wait().await.unwrap();
    let token = CancellationToken::new();
    let again = gfs_chunkserver::start(config(&c.master_addr, &dir), token.clone()).await.unwrap();
    // Registered again: it holds the master's token key.
    assert!(eventually(|| again.is_registered()).await);
    assert_eq!(read(&mut client(&again.addr.to_string()).await, 4, 1, 0, 1).await.unwrap().len(), 0);
    token.cancel();
    again.wait().await.unwrap();
}

/// The expected serial on a secondary is one past the last it applied at
/// the chunk's version. A raw ApplyMutation far ahead of it is refused and
/// changes nothing; a duplicate is skipped; the primary's next write still
/// reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_serial_far_ahead_is_refused_and_duplicates_are_skipped() {
    let c = TestCluster::start(2, |_, _| {}).await;
    grant_all(&c, 6, 1, 0, 1).await;
    let first = random_bytes(100_000, 6);
    push(&mut c.client(0).await, 1, vec![c.addr(1)], &first).await.unwrap();
    let len = first.len() as u64;
    let w = WriteRequest {
        handle: 6,
        version: 1,
        offset: 0,
        data_id: 1,
        length: len,
        secondaries: vec![c.addr(1)],
        epoch: 1,
        token: token(6, 1, RW),
    };
    c.client(0).await.write(w.clone()).await.unwrap();
    let path = c.servers[1].chunk_path(6);
    let before = std::fs::read(&path).unwrap();
    assert_eq!(before, first);

    // The secondary applied serial 1, so it expects 2: 2 + 1000 is refused.
    let mut b = c.client(1).await;
    let forged = random_bytes(5_000, 7);
    push(&mut b, 50, vec![], &forged).await.unwrap();
    let raw = ApplyMutationRequest {
        handle: 6,
        version: 1,
        serial: 2 + 1000,
        kind: MutationKind::Write as i32,
        offset: 0,
        data_id: 50,
        length: forged.len() as u64,
        epoch: 1,
        // A valid token: only the serial may refuse it.
        token: token(6, 1, RW),
        ..Default::default()
    };
    let err = Error::from(b.apply_mutation(raw.clone()).await.unwrap_err());
    assert!(
        matches!(err, Error::InvalidArgument(ref m) if m.contains("serial 1002") && m.contains("expected serial 2")),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "a refused mutation changed the replica");
    // A duplicate of serial 1 is skipped: acknowledged, nothing written.
    let dup = b.apply_mutation(ApplyMutationRequest { serial: 1, ..raw }).await.unwrap().into_inner();
    assert_eq!(dup.chunk_length, len);
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // The primary's next mutation (serial 2) is applied everywhere.
    let second = random_bytes(70_000, 8);
    push(&mut c.client(0).await, 2, vec![c.addr(1)], &second).await.unwrap();
    let w2 = WriteRequest { data_id: 2, offset: len, length: second.len() as u64, ..w };
    c.client(0).await.write(w2).await.unwrap();
    let want = [&first[..], &second[..]].concat();
    for i in 0..2 {
        assert_eq!(read(&mut c.client(i).await, 6, 1, 0, 1 << 20).await.unwrap(), want, "server {i}");
    }
}

/// A primary asks for a lease extension only for mutations every replica
/// applied: a chunk whose writes all fail (a secondary that keeps
/// refusing) lets its lease run out, and the next grant's new version
/// starts the serials afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_mutations_every_replica_applied_extend_the_lease() {
    let c = TestCluster::start(1, |_, _| {}).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for handle in [8, 9] {
        let grant = GrantLeaseRequest { handle, version: 1, lease_ms: 2_000, create: true, epoch: 1 };
        c.client(0).await.grant_lease(grant).await.unwrap();
    }
    let extended = |h: u64| c.master.seen.lock().unwrap().heartbeats.iter().any(|b| b.lease_extensions.contains(&h));
    let mut a = c.client(0).await;
    let mut id = 100;
    // Chunk 9 (no secondary) writes fine; chunk 8's secondary is dead.
    // Go on until chunk 9's lease is extended, the control.
    for _ in 0..60 {
        if extended(9) {
            break;
        }
        for (handle, secondaries) in [(9u64, vec![]), (8, vec![dead.clone()])] {
            id += 1;
            push(&mut a, id, vec![], &random_bytes(1000, id)).await.unwrap();
            let w = WriteRequest {
                handle,
                version: 1,
                offset: 0,
                data_id: id,
                length: 1000,
                secondaries,
                epoch: 1,
                token: token(handle, 1, RW),
            };
            let res = a.write(w).await;
            assert_eq!(res.is_ok(), handle == 9, "chunk {handle}: {res:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(extended(9), "the control chunk's lease was never extended");
    assert!(!extended(8), "failed writes asked for a lease extension");
}
