//! Data-plane tests against an in-process cluster (testkit): byte-exact
//! reads after writes, replica consistency, record append, corruption
//! handling and bad input.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use gfs_client::Client;
use gfs_common::Error;
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::{
    ApplyMutationRequest, ChunkLocation, GetWriteLeaseRequest, MutationKind, PushDataFrame, PushedRecord, ReadRequest,
    WriteRequest,
};
use gfs_testkit::{Cluster, ClusterOptions};
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

const MIB: u64 = 1024 * 1024;

fn random_bytes(rng: &mut StdRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// Reads chunk `handle` at `version` from one replica, whole.
async fn read_replica(cluster: &Cluster, addr: &str, handle: u64, version: u64, len: u64) -> Vec<u8> {
    let token = Some(cluster.token(handle, version, gfs_common::token::READ));
    let mut c = ChunkServiceClient::connect(format!("http://{addr}")).await.expect("connect replica");
    c = c.max_decoding_message_size(gfs_common::MAX_MESSAGE_SIZE);
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        let want = (len - out.len() as u64).min(gfs_common::MAX_IO_SIZE);
        let resp = c
            .read(ReadRequest { handle, version, offset: out.len() as u64, length: want, token: token.clone() })
            .await
            .expect("replica read")
            .into_inner();
        assert!(!resp.data.is_empty(), "replica {addr} returned no data before {len}");
        out.extend_from_slice(&resp.data);
    }
    out
}

/// Reads every replica of `c` whole and checks there are three and that
/// they hold the same bytes; returns one copy.
async fn identical_replicas(cluster: &Cluster, c: &ChunkLocation) -> Vec<u8> {
    assert_eq!(c.replicas.len(), 3, "chunk {} replicas", c.index);
    let mut copies = Vec::new();
    for r in &c.replicas {
        copies.push(read_replica(cluster, &r.address, c.handle, c.version, c.length).await);
    }
    assert!(copies.windows(2).all(|w| w[0] == w[1]), "chunk {} replicas differ", c.index);
    copies.swap_remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_chunk_file_reads_back_byte_equal_including_random_offsets() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = cluster.client();
    let mut rng = StdRng::seed_from_u64(7);

    // 3.5 chunks of 1 MiB.
    let mut model = random_bytes(&mut rng, (3 * MIB + MIB / 2) as usize);
    client.create("/big", None).await.unwrap();
    client.write_at("/big", 0, &model).await.unwrap();
    assert_eq!(client.read_all("/big").await.unwrap(), model);

    let stat = client.stat("/big").await.unwrap();
    assert_eq!(stat.info.size, model.len() as u64);
    assert_eq!(stat.chunks.len(), 4);
    for c in &stat.chunks {
        assert_eq!(c.replicas.len(), 3, "chunk {} replicas", c.index);
        let distinct: HashSet<_> = c.replicas.iter().map(|r| r.address.clone()).collect();
        assert_eq!(distinct.len(), 3, "replicas on distinct servers");
    }

    // Overwrites at random offsets, some crossing chunk boundaries and some
    // extending the file.
    for _ in 0..20 {
        let off = rng.random_range(0..model.len() as u64 + 1000);
        let len = rng.random_range(1..(MIB as usize + 300_000));
        let data = random_bytes(&mut rng, len);
        client.write_at("/big", off, &data).await.unwrap();
        let end = off as usize + len;
        if end > model.len() {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&data);
    }
    // Random-range reads through a fresh client (cold caches).
    let fresh = cluster.client();
    for _ in 0..30 {
        let off = rng.random_range(0..model.len() as u64);
        let len = rng.random_range(1..2 * MIB);
        let got = fresh.read_at("/big", off, len).await.unwrap();
        let end = (off + len).min(model.len() as u64) as usize;
        assert_eq!(got, &model[off as usize..end], "read at {off} len {len}");
    }
    assert_eq!(fresh.read_all("/big").await.unwrap(), model);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_overwrites_leave_replicas_identical() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let setup = cluster.client();
    setup.create("/shared", None).await.unwrap();
    setup.write_at("/shared", 0, &vec![0u8; (2 * MIB) as usize]).await.unwrap();

    let mut tasks = Vec::new();
    for w in 0..6u8 {
        let client = cluster.client();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(w as u64);
            for _ in 0..15 {
                // Overlapping ranges, some across the chunk boundary.
                let off = rng.random_range(0..2 * MIB - 200_000);
                let len = rng.random_range(1..200_000usize);
                client.write_at("/shared", off, &vec![w + 1; len]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let stat = setup.stat("/shared").await.unwrap();
    let whole = setup.read_all("/shared").await.unwrap();
    for c in &stat.chunks {
        let copy = identical_replicas(&cluster, c).await;
        let start = (c.index * MIB) as usize;
        assert_eq!(&whole[start..start + copy.len()], &copy[..]);
    }
    cluster.shutdown().await.unwrap();
}

/// A self-checking record: magic, writer, sequence, payload length,
/// payload, CRC32C of everything before it.
fn encode_record(writer: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(20 + payload.len());
    r.extend_from_slice(&0x6766_7352u32.to_le_bytes());
    r.extend_from_slice(&writer.to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    r.extend_from_slice(payload);
    let crc = crc32c::crc32c(&r);
    r.extend_from_slice(&crc.to_le_bytes());
    r
}

/// Returns (writer, seq, record length) when a valid record starts at `buf`.
fn decode_record(buf: &[u8]) -> Option<(u32, u32, usize)> {
    let word = |i: usize| u32::from_le_bytes(buf.get(i..i + 4)?.try_into().ok()?).into();
    let magic: Option<u32> = word(0);
    if magic? != 0x6766_7352 {
        return None;
    }
    let len = word(12)? as usize;
    let total = 16 + len + 4;
    let body = buf.get(..16 + len)?;
    let crc = u32::from_le_bytes(buf.get(16 + len..total)?.try_into().ok()?);
    (crc32c::crc32c(body) == crc).then(|| (word(4).unwrap(), word(8).unwrap(), total))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_appenders_every_record_intact() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let setup = cluster.client();
    setup.create("/log", None).await.unwrap();

    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let client = cluster.client();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(100 + w as u64);
            let mut offsets = Vec::new();
            for seq in 0..500u32 {
                let n = rng.random_range(16..3000);
                let payload = random_bytes(&mut rng, n);
                let rec = encode_record(w, seq, &payload);
                let off = client.append("/log", &rec).await.unwrap();
                offsets.push((seq, off, rec));
            }
            offsets
        }));
    }
    let mut acked = Vec::new();
    for (w, t) in tasks.into_iter().enumerate() {
        for (seq, off, rec) in t.await.unwrap() {
            acked.push((w as u32, seq, off, rec));
        }
    }

    let file = setup.read_all("/log").await.unwrap();
    // Each acknowledged record is at the offset the append returned.
    for (w, seq, off, rec) in &acked {
        let at = &file[*off as usize..*off as usize + rec.len()];
        assert_eq!(at, &rec[..], "record {w}/{seq} at {off}");
    }
    // And a scan of the file finds every record at least once.
    let mut found: HashMap<(u32, u32), usize> = HashMap::new();
    let mut pos = 0;
    while pos < file.len() {
        match decode_record(&file[pos..]) {
            Some((w, s, len)) => {
                *found.entry((w, s)).or_default() += 1;
                pos += len;
            }
            None => pos += 1,
        }
    }
    for w in 0..8 {
        for s in 0..500 {
            assert!(found.contains_key(&(w, s)), "record {w}/{s} missing from scan");
        }
    }
    // Records never straddle a chunk boundary.
    for (_, _, off, rec) in &acked {
        assert_eq!(off / MIB, (off + rec.len() as u64 - 1) / MIB, "record at {off} crosses a chunk");
    }
    // Every replica of every chunk holds the same bytes: the primary's
    // groups of records were applied alike on the secondaries.
    let stat = setup.stat("/log").await.unwrap();
    assert!(stat.chunks.len() > 1, "the log spans chunks (padding was exercised)");
    for c in &stat.chunks {
        identical_replicas(&cluster, c).await;
    }
    // Appends that queued behind a mutation went out together: some
    // mutation carried more than one record (records > mutations).
    let metrics = cluster.chunkserver_metrics();
    let total = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (records, mutations) =
        (total("gfs_chunkserver_append_group_records_sum"), total("gfs_chunkserver_append_group_records_count"));
    assert!(records >= 4000.0, "{records} records in append mutations");
    assert!(records > mutations, "{records} records in {mutations} mutations: no group formed");
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_replica_is_detected_reported_and_bypassed() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = cluster.client();
    let mut rng = StdRng::seed_from_u64(3);
    let data = random_bytes(&mut rng, (MIB / 2) as usize);
    client.create("/c", None).await.unwrap();
    client.write_at("/c", 0, &data).await.unwrap();

    let stat = client.stat("/c").await.unwrap();
    let chunk = &stat.chunks[0];
    assert_eq!(chunk.replicas.len(), 3);
    let victim_addr = chunk.replicas[0].address.clone();
    let victim = cluster.chunkserver_index(&victim_addr).unwrap();
    let path = cluster.chunk_path(victim, chunk.handle).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    // Fresh clients pick replicas in random order; every read must return
    // the right bytes. Once one has hit the corrupt replica it is reported:
    // the master stops listing it and has it deleted, and repair may already
    // have cloned a good copy back onto the same server. Either way the
    // flipped byte is gone from that server's disk.
    let mut reported = false;
    for _ in 0..60 {
        let c = cluster.client();
        assert_eq!(c.read_all("/c").await.unwrap(), data);
        let now = c.stat("/c").await.unwrap();
        let listed = now.chunks[0].replicas.iter().any(|r| r.address == victim_addr);
        let on_disk = std::fs::read(&path).ok();
        let still_corrupt = on_disk.as_ref().is_some_and(|b| b.get(1000) == Some(&bytes[1000]));
        if !listed || !still_corrupt {
            reported = true;
            break;
        }
    }
    assert!(reported, "corrupt replica still listed and on disk after 60 reads");
    cluster.shutdown().await.unwrap();
}

async fn tree(client: &Client) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut todo = vec!["/".to_string()];
    while let Some(dir) = todo.pop() {
        for e in client.list(&dir).await.unwrap() {
            if e.r#type == gfs_proto::FileType::Directory as i32 {
                todo.push(e.path.clone());
            }
            out.push((e.path, e.size));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = cluster.client();
    client.mkdir("/d/e", true).await.unwrap();
    client.create("/d/e/f", None).await.unwrap();
    client.write_at("/d/e/f", 0, b"hello").await.unwrap();
    client.create("/file", None).await.unwrap();
    let before = tree(&client).await;

    let e = client.read_all("/missing").await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("/missing"), "{e}");

    let e = client.delete("/d", false).await.unwrap_err();
    assert!(matches!(e, Error::DirectoryNotEmpty { .. }), "{e:?}");

    let e = client.mkdir("/file", false).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. } | Error::NotADirectory { .. }), "{e:?}");
    let e = client.mkdir("/file/sub", true).await.unwrap_err();
    assert!(matches!(e, Error::NotADirectory { .. }), "{e:?}");

    let too_big = vec![7u8; (MIB / 4 + 1) as usize];
    let e = client.append("/d/e/f", &too_big).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");

    for bad in ["/d/../file", "/d//e", "relative", "", "/d/./e"] {
        let e = client.stat(bad).await.unwrap_err();
        assert!(matches!(e, Error::InvalidPath { .. }), "{bad:?}: {e:?}");
        let e = client.create(&format!("{bad}x"), None).await.unwrap_err();
        assert!(matches!(e, Error::InvalidPath { .. }), "{bad:?}x: {e:?}");
    }

    let e = client.create("/d/e/f", None).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    let e = client.rename("/missing", "/x").await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    let e = client.write_at("/d", 0, b"x").await.unwrap_err();
    assert!(matches!(e, Error::IsADirectory { .. }), "{e:?}");

    assert_eq!(tree(&client).await, before, "bad input changed the namespace");
    assert_eq!(client.read_all("/d/e/f").await.unwrap(), b"hello");

    // Malformed mutations sent straight to a replica are refused and
    // leave it as it was.
    let chunk = client.stat("/d/e/f").await.unwrap().chunks[0].clone();
    let addr = chunk.replicas[0].address.clone();
    let mut cs = ChunkServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let records = |lengths: &[u64]| -> Vec<PushedRecord> {
        lengths.iter().enumerate().map(|(i, &length)| PushedRecord { data_id: 1000 + i as u64, length }).collect()
    };
    let bad = [
        (MutationKind::Records, records(&[1; 257]), 257, "too many records"),
        (MutationKind::Records, records(&[3, 4]), 8, "lengths not summing to the length"),
        (MutationKind::Records, records(&[u64::MAX, 2]), 1, "lengths overflowing"),
        (MutationKind::Unspecified, Vec::new(), 0, "no kind"),
    ];
    for (kind, records, length, what) in bad {
        let req = ApplyMutationRequest {
            handle: chunk.handle,
            version: chunk.version,
            serial: 1 << 40,
            kind: kind as i32,
            offset: chunk.length,
            length,
            records,
            // A valid token: the malformation itself must be refused.
            token: Some(cluster.token(chunk.handle, chunk.version, gfs_common::token::WRITE)),
            ..Default::default()
        };
        let e = Error::from(cs.apply_mutation(req).await.unwrap_err());
        assert!(matches!(e, Error::TooLarge { .. } | Error::InvalidArgument(_)), "{what}: {e:?}");
    }
    assert_eq!(read_replica(&cluster, &addr, chunk.handle, chunk.version, 5).await, b"hello");
    assert_eq!(client.read_all("/d/e/f").await.unwrap(), b"hello");

    // An unreachable master: a clear error naming it.
    let mut cfg = gfs_client::ClientConfig::new("127.0.0.1:1");
    cfg.max_attempts = 2;
    let nowhere = Client::new(cfg).unwrap();
    let e = nowhere.stat("/").await.unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_restart_recovers_namespace_and_data() {
    let mut cluster = Cluster::start(ClusterOptions { checkpoint_every: 7, ..Default::default() }).await.unwrap();
    let client = cluster.client();
    let mut rng = StdRng::seed_from_u64(11);
    let mut files = Vec::new();
    client.mkdir("/r", false).await.unwrap();
    for i in 0..20 {
        let p = format!("/r/f{i}");
        let n = rng.random_range(0..(2 * MIB) as usize);
        let data = random_bytes(&mut rng, n);
        let replication = 2 + (i % 2);
        client.create(&p, Some(replication)).await.unwrap();
        client.write_at(&p, 0, &data).await.unwrap();
        files.push((p, data, replication));
    }
    client.rename("/r/f0", "/r/renamed").await.unwrap();
    files[0].0 = "/r/renamed".into();
    client.delete("/r/f1", false).await.unwrap();
    files.remove(1);
    let before = tree(&client).await;

    cluster.restart_master().await.unwrap();
    cluster.wait_live(3).await.unwrap();
    let client = cluster.client();
    // Chunk locations come back from chunkserver reports; sizes with them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = tree(&client).await;
        if now == before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "namespace differs after restart:\n{now:?}\nvs\n{before:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (p, data, replication) in &files {
        assert_eq!(&client.read_all(p).await.unwrap(), data, "{p}");
        let st = client.stat(p).await.unwrap();
        assert_eq!(st.info.replication, *replication, "{p}");
    }
    cluster.shutdown().await.unwrap();
}

/// A write whose caller's deadline passes mid-mutation must still finish
/// (or not start) as a whole on the primary: a mutation cut off between its
/// write and its bookkeeping would leave the primary's chunk state behind
/// its file, or reuse a serial the secondaries already applied, so that
/// they skip the next mutation as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_cut_off_by_their_deadline_leave_replicas_identical() {
    let cluster = Cluster::start(ClusterOptions { lease_ms: 60_000, ..Default::default() }).await.unwrap();
    let client = cluster.client();
    client.create("/cut", None).await.unwrap();
    client.write_at("/cut", 0, &[9u8; 1000]).await.unwrap();
    let mut master = MasterServiceClient::connect(format!("http://{}", cluster.master_addr())).await.unwrap();
    let req = GetWriteLeaseRequest { path: "/cut".into(), index: 0, create_missing: false };
    let lease = master.get_write_lease(req).await.unwrap().into_inner().lease.unwrap();
    let chunk = lease.chunk.unwrap();
    let primary = lease.primary.unwrap().address;
    let secondaries: Vec<String> = lease.secondaries.iter().map(|s| s.address.clone()).collect();
    let mut cs = ChunkServiceClient::connect(format!("http://{primary}")).await.unwrap();
    let mut rng = StdRng::seed_from_u64(77);
    let mut cut = 0;
    for i in 0..60u64 {
        let data = random_bytes(&mut rng, 64 * 1024);
        let data_id = 10_000 + i;
        let frame = PushDataFrame {
            data_id,
            chain: secondaries.clone(),
            total_len: data.len() as u64,
            data: data.clone().into(),
        };
        cs.push_data(futures::stream::iter(vec![frame])).await.unwrap();
        let mut req = tonic::Request::new(WriteRequest {
            handle: chunk.handle,
            version: chunk.version,
            offset: (i % 8) * 64 * 1024,
            data_id,
            length: data.len() as u64,
            secondaries: secondaries.clone(),
            epoch: lease.epoch,
            token: chunk.token.clone(),
        });
        // From far below to around one replicated mutation's time.
        req.set_timeout(Duration::from_micros(rng.random_range(50..3000)));
        cut += usize::from(cs.write(req).await.is_err());
    }
    assert!(cut > 0, "no write was cut off; the test proves nothing");
    // Whatever was cut has finished by now; a normal write goes through.
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.write_at("/cut", 8 * 64 * 1024, b"tail").await.unwrap();
    let stat = client.stat("/cut").await.unwrap();
    let copy = identical_replicas(&cluster, &stat.chunks[0]).await;
    assert_eq!(client.read_all("/cut").await.unwrap(), copy, "every block still verifies after {cut} cut-off writes");
    cluster.shutdown().await.unwrap();
}

/// Appends to one file from 8 writers while a chunkserver stops: groups
/// that lose a replica fail as a whole and their records are appended
/// again. Every acknowledged record must be, on every replica of its
/// chunk, at the offset its append returned (the GFS guarantee; failed
/// attempts may leave duplicates or padding between records).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_survive_a_chunkserver_stopping_mid_way() {
    // One chunk holds the whole run, so the stopped server is in its
    // replica set for sure.
    const CHUNK: u64 = 64 * MIB;
    let opts = ClusterOptions { chunkservers: 4, chunk_size: CHUNK, lease_ms: 1_000, ..Default::default() };
    let mut cluster = Cluster::start(opts).await.unwrap();
    let setup = cluster.client();
    setup.create("/log", None).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let retries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        // One attempt per call, so that every failure reaches the loop below.
        let mut cfg = gfs_client::ClientConfig::new(cluster.master_addr());
        cfg.rpc_timeout = Duration::from_secs(5);
        cfg.max_attempts = 1;
        let client = Client::new(cfg).unwrap();
        let (stop, retries, count) = (stop.clone(), retries.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(500 + w as u64);
            let mut acked = Vec::new();
            let mut seq = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = rng.random_range(16..4000);
                let rec = encode_record(w, seq, &random_bytes(&mut rng, n));
                // The application retries what the client library gave up
                // on, as a GFS producer does.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let off = loop {
                    match client.append("/log", &rec).await {
                        Ok(off) => break off,
                        Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                            retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        Err(e) => panic!("append {w}/{seq}: {e}"),
                    }
                };
                acked.push((off, rec));
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                seq += 1;
            }
            acked
        }));
    }
    // Waits until `n` appends are acknowledged in all.
    let acked_at_least = |n: usize| {
        let count = count.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while count.load(std::sync::atomic::Ordering::Relaxed) < n {
                assert!(tokio::time::Instant::now() < deadline, "fewer than {n} appends acknowledged in 60 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Stop a secondary of the chunk once appends flow: the primary's next
    // groups fail as a whole, until the master grants a lease without it.
    acked_at_least(100).await;
    let mut master = MasterServiceClient::connect(format!("http://{}", cluster.master_addr())).await.unwrap();
    let req = gfs_proto::GetAppendLeaseRequest { path: "/log".into(), after_index: None };
    let lease = master.get_append_lease(req).await.unwrap().into_inner().lease.unwrap();
    assert_eq!(lease.chunk.as_ref().unwrap().index, 0);
    let victim = cluster.chunkserver_index(&lease.secondaries[0].address).unwrap();
    cluster.stop_chunkserver(victim).await.unwrap();
    // Appends go on without it.
    let before = count.load(std::sync::atomic::Ordering::Relaxed);
    acked_at_least(before + 100).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let retried = retries.load(std::sync::atomic::Ordering::Relaxed);
    assert!(retried > 0, "no append failed; the stop was not exercised");

    // Repair brings every chunk back to 3 replicas on the 3 servers left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let stat = loop {
        let stat = setup.stat("/log").await.unwrap();
        if stat.chunks.iter().all(|c| c.replicas.len() == 3) {
            break stat;
        }
        assert!(tokio::time::Instant::now() < deadline, "chunks not repaired: {:?}", stat.chunks);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut replicas = HashMap::new();
    for c in &stat.chunks {
        for r in &c.replicas {
            let mut cs = ChunkServiceClient::connect(format!("http://{}", r.address)).await.unwrap();
            cs = cs.max_decoding_message_size(gfs_common::MAX_MESSAGE_SIZE);
            replicas.entry(c.index).or_insert_with(Vec::new).push((cs, c.handle, c.version));
        }
    }
    for (off, rec) in &acked {
        let (index, at) = (off / CHUNK, off % CHUNK);
        for (cs, handle, version) in replicas.get_mut(&index).unwrap() {
            let token = Some(cluster.token(*handle, *version, gfs_common::token::READ));
            let req = ReadRequest { handle: *handle, version: *version, offset: at, length: rec.len() as u64, token };
            let got = cs.read(req).await.unwrap().into_inner().data;
            assert_eq!(&got[..], &rec[..], "acknowledged record at {off} differs on a replica of chunk {index}");
        }
    }
    cluster.shutdown().await.unwrap();
}

/// A read of many pieces draws on every replica, not only the one that
/// answered fastest first: pieces take turns among replicas about as close.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_read_spreads_its_pieces_over_the_replicas() {
    const CHUNK: u64 = 256 * 1024;
    let cluster = Cluster::start(ClusterOptions { chunk_size: CHUNK, ..Default::default() }).await.unwrap();
    let c = cluster.client();
    let data = random_bytes(&mut StdRng::seed_from_u64(11), (24 * CHUNK) as usize);
    c.put("/spread", &data[..], None).await.unwrap();
    let before = read_bytes_by_server(&cluster);

    let mut out = Vec::new();
    assert_eq!(c.get("/spread", &mut out, None).await.unwrap(), data.len() as u64);
    assert!(out == data, "bytes read back differ from those written");

    let after = read_bytes_by_server(&cluster);
    let served: Vec<f64> = after.iter().map(|(s, n)| n - before.get(s).copied().unwrap_or(0.0)).collect();
    assert_eq!(served.len(), 3, "{after:?}");
    assert_eq!(served.iter().sum::<f64>(), data.len() as f64, "{served:?}");
    for n in &served {
        // A fair share is a third (8 pieces); a server behind the others
        // may lose some turns, but none is left idle.
        assert!(*n >= data.len() as f64 / 8.0, "every replica serves a share: {served:?}");
    }
}

/// `gfs_chunkserver_read_bytes_total` per chunkserver of the testkit's
/// registry, by its `server` label.
fn read_bytes_by_server(cluster: &Cluster) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in cluster.chunkserver_metrics().lines() {
        let Some(rest) = line.strip_prefix("gfs_chunkserver_read_bytes_total{server=\"") else {
            continue;
        };
        let (server, value) = rest.split_once("\"}").expect("one label");
        out.insert(server.to_string(), value.trim().parse().expect("a number"));
    }
    out
}

/// A write whose data is on every replica returns without the master: the
/// length report after it is one short attempt (it went through the
/// leader-seeking loop and held the finished write for the whole failover
/// timeout, 120 s here). The bytes are there once the master is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_under_a_cached_lease_returns_while_the_master_is_down() {
    let mut cluster = Cluster::start(ClusterOptions { lease_ms: 60_000, ..Default::default() }).await.unwrap();
    let mut cfg = cluster.client().config().clone();
    cfg.failover_timeout = Duration::from_secs(120);
    let c = Client::new(cfg).unwrap();
    let (first, second) = (vec![1u8; 1000], vec![2u8; 1000]);
    c.create("/w", None).await.unwrap();
    c.write_at("/w", 0, &first).await.unwrap();

    cluster.stop_master().await.unwrap();
    let started = std::time::Instant::now();
    c.write_at("/w", 1000, &second).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "the write waited {took:?} for a master it does not need");

    cluster.start_stopped_master().await.unwrap();
    let got = c.read_all("/w").await.unwrap();
    assert!(got == [first, second].concat(), "read back {} bytes that differ", got.len());
    cluster.shutdown().await.unwrap();
}
