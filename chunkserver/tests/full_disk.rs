//! A chunkserver on a full disk (a small tmpfs): mutations fail with
//! `NoSpace` naming the server, change nothing that was acknowledged, and
//! work again once space is freed; heartbeats report the server full.

mod common;

use bytes::Bytes;
use common::*;
use gfs_chunkserver::space::DiskSpace;
use gfs_chunkserver::store::Store;
use gfs_common::Error;
use gfs_proto::{WriteRequest, WriteResponse};

const KIB: u64 = 1024;

fn pattern(len: u64, seed: u8) -> Bytes {
    Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
}

fn no_space(r: Result<u64, Error>, what: &str) {
    match r {
        Err(Error::NoSpace { detail, .. }) => assert!(detail.contains("No space left"), "{what}: {detail}"),
        other => panic!("{what}: expected NoSpace, got {other:?}"),
    }
}

/// Writes `data` at `offset` into `model`, growing it with zeros.
fn apply(model: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if model.len() < end {
        model.resize(end, 0);
    }
    model[offset as usize..end].copy_from_slice(data);
}

async fn assert_reads(store: &Store, handle: u64, model: &[u8]) {
    let (got, len) = store.read(handle, 1, 0, 8 << 20).await.unwrap_or_else(|e| panic!("chunk {handle}: {e}"));
    assert_eq!(len, model.len() as u64, "chunk {handle} length");
    assert!(got[..] == model[..], "chunk {handle} content differs");
}

fn files_of(dir: &std::path::Path, handle: u64) -> Vec<String> {
    let prefix = format!("{handle:016x}.");
    std::fs::read_dir(dir.join("chunks"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

#[tokio::test]
async fn a_full_disk_fails_mutations_without_touching_acknowledged_data() {
    let fs = Tmpfs::mount(2 << 20);
    let dir = fs.path().join("cs");
    let store = Store::open(&dir, true).await.unwrap();
    // Chunk 1 holds data at both ends and an acknowledged hole (zeros) in
    // between, which takes no disk space until written.
    let (mut one, mut two) = (Vec::new(), Vec::new());
    store.create(1, 1).await.unwrap();
    for (off, data) in [(0, pattern(8 * KIB, 1)), (1 << 20, pattern(8 * KIB, 2))] {
        store.write(1, off, data.clone()).await.unwrap();
        apply(&mut one, off, &data);
    }
    store.create(2, 1).await.unwrap();
    let d = pattern(256 * KIB, 3);
    store.write(2, 0, d.clone()).await.unwrap();
    apply(&mut two, 0, &d);

    let ballast = fs.fill("ballast");
    assert_eq!(DiskSpace::of(&dir).unwrap().free, 0, "the tmpfs is not full");
    no_space(store.write(2, two.len() as u64, pattern(4 * KIB, 4)).await, "append on a full disk");
    no_space(store.write(1, 64 * KIB, pattern(4 * KIB, 5)).await, "write into a hole on a full disk");
    no_space(store.create(3, 1).await.map(|_| 0), "chunk creation on a full disk");
    assert!(files_of(&dir, 3).is_empty(), "a failed creation left {:?}", files_of(&dir, 3));
    assert!(store.get(3).is_err());

    // Some room, less than the next mutations need: each fails as a whole
    // (a partial write into the hole would break the checksums of
    // acknowledged zeros) and gives back every block it took.
    let f = std::fs::OpenOptions::new().write(true).open(&ballast).unwrap();
    f.set_len(f.metadata().unwrap().len() - 256 * KIB).unwrap();
    let free = DiskSpace::of(&dir).unwrap().free;
    assert!(free >= 256 * KIB, "only {free} bytes freed");
    no_space(store.write(1, 64 * KIB, pattern(512 * KIB, 6)).await, "overwrite of a hole larger than the free space");
    no_space(store.write(2, two.len() as u64, pattern(512 * KIB, 7)).await, "append larger than the free space");
    assert_eq!(DiskSpace::of(&dir).unwrap().free, free, "a failed mutation kept disk space");
    assert_reads(&store, 1, &one).await;
    assert_reads(&store, 2, &two).await;

    // What is on disk is what was acknowledged.
    drop(store);
    let store = Store::open(&dir, true).await.unwrap();
    assert_reads(&store, 1, &one).await;
    assert_reads(&store, 2, &two).await;

    // Space freed: the same mutations now succeed.
    drop(f);
    std::fs::remove_file(&ballast).unwrap();
    let d = pattern(512 * KIB, 6);
    store.write(1, 64 * KIB, d.clone()).await.unwrap();
    apply(&mut one, 64 * KIB, &d);
    let (d, end) = (pattern(512 * KIB, 7), two.len() as u64);
    store.write(2, end, d.clone()).await.unwrap();
    apply(&mut two, end, &d);
    store.create(3, 1).await.unwrap();
    assert_reads(&store, 1, &one).await;
    assert_reads(&store, 2, &two).await;
    drop(store);
    let store = Store::open(&dir, true).await.unwrap();
    assert_reads(&store, 1, &one).await;
    assert_reads(&store, 2, &two).await;
}

async fn write(
    c: &TestCluster,
    primary: usize,
    handle: u64,
    offset: u64,
    data: &Bytes,
) -> Result<WriteResponse, Error> {
    let data_id = rand_id(handle, offset);
    let chain: Vec<String> = (0..c.servers.len()).filter(|i| *i != primary).map(|i| c.addr(i)).collect();
    push(&mut c.client(primary).await, data_id, chain.clone(), data).await?;
    let req = WriteRequest {
        handle,
        version: 1,
        offset,
        data_id,
        length: data.len() as u64,
        secondaries: chain,
        epoch: 1,
        token: token(handle, 1, RW),
    };
    c.client(primary).await.write(req).await.map(|r| r.into_inner()).map_err(Error::from)
}

fn rand_id(handle: u64, offset: u64) -> u64 {
    handle.wrapping_mul(1_000_003) ^ offset.wrapping_mul(7919) ^ 0x5eed
}

#[tokio::test]
async fn a_full_secondary_fails_the_write_naming_itself_and_reports_full() {
    let fs = Tmpfs::mount(1 << 20);
    let c = TestCluster::start(2, |i, cfg| {
        cfg.disk_reserve_bytes = 128 * KIB;
        if i == 1 {
            cfg.data_dir = fs.path().join("cs");
        }
    })
    .await;
    let full_addr = c.addr(1);
    let id1 = c.servers[1].id.clone();
    let beats = |full: bool| {
        let seen = c.master.seen.lock().unwrap();
        seen.heartbeats
            .iter()
            .rev()
            .find(|h| h.server_id == id1)
            .is_some_and(|h| h.full == full && h.free_bytes.is_some())
    };
    assert!(eventually(|| beats(false)).await, "the tmpfs server does not report free space");

    grant_all(&c, 9, 1, 0, 1).await;
    let first = random_bytes(64 * 1024, 9);
    write(&c, 0, 9, 0, &first).await.unwrap();

    let _ballast = fs.fill("ballast");
    assert!(eventually(|| beats(true)).await, "the full server does not report itself full");
    let err = write(&c, 0, 9, first.len() as u64, &random_bytes(64 * 1024, 10)).await.unwrap_err();
    match &err {
        Error::NoSpace { server: Some(s), .. } => assert_eq!(s, &full_addr, "{err}"),
        other => panic!("expected NoSpace naming {full_addr}, got {other:?}"),
    }
    assert!(err.to_string().starts_with(&format!("no space on {full_addr}: ")), "{err}");
    // The acknowledged write still reads back, verified, on both replicas.
    for i in 0..2 {
        let got = read(&mut c.client(i).await, 9, 1, 0, first.len() as u64).await.unwrap();
        assert_eq!(got, first, "replica {i}");
    }
}
