use super::*;
use rand::{Rng, SeedableRng};
use std::time::Duration;

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(42)
}

async fn open(dir: &Path) -> Store {
    Store::open(dir, false).await.unwrap()
}

#[tokio::test]
async fn random_writes_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    store.create(1, 3).await.unwrap();
    let mut model: Vec<u8> = Vec::new();
    let mut r = rng();
    for _ in 0..40 {
        let offset = r.random_range(0..600_000u64);
        let len = r.random_range(1..200_000usize);
        let data: Vec<u8> = (0..len).map(|_| r.random()).collect();
        let new_len = store.write(1, offset, Bytes::from(data.clone())).await.unwrap();
        let end = offset as usize + len;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[offset as usize..end].copy_from_slice(&data);
        assert_eq!(new_len, model.len() as u64);
        let ro = r.random_range(0..model.len() as u64);
        let rl = r.random_range(1..300_000u64);
        let (got, clen) = store.read(1, 3, ro, rl).await.unwrap();
        assert_eq!(clen, model.len() as u64);
        let want_end = (ro + rl).min(model.len() as u64) as usize;
        assert_eq!(&got[..], &model[ro as usize..want_end]);
    }
    let (all, _) = store.read(1, 3, 0, MAX_IO_SIZE).await.unwrap();
    assert_eq!(&all[..], &model[..]);
}

#[tokio::test]
async fn flipped_byte_is_corrupt_and_never_rechecksummed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    store.create(2, 1).await.unwrap();
    store.write(2, 0, Bytes::from(vec![7u8; 3 * BS as usize])).await.unwrap();
    let path = Store::chunk_path(tmp.path(), 2);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[BS as usize + 10] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    // Reads touching block 1 fail; block 0 and 2 still read fine.
    let err = store.read(2, 1, BS, 100).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { handle: 2, .. }), "{err:?}");
    assert!(store.read(2, 1, 0, 100).await.is_ok());
    assert!(store.read(2, 1, 2 * BS, 100).await.is_ok());
    // A partial write into the corrupt block must not re-checksum it.
    let err = store.write(2, BS + 5, Bytes::from_static(b"abc")).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let err = store.read(2, 1, BS, 100).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }));
    // A full-block overwrite repairs it.
    store.write(2, BS, Bytes::from(vec![9u8; BS as usize])).await.unwrap();
    let (got, _) = store.read(2, 1, BS, BS).await.unwrap();
    assert!(got.iter().all(|&b| b == 9));
}

#[tokio::test]
async fn partial_block_overwrite_keeps_crcs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    store.create(3, 1).await.unwrap();
    store.write(3, 0, Bytes::from(vec![1u8; 200_000])).await.unwrap();
    store.write(3, 100, Bytes::from(vec![2u8; 50])).await.unwrap();
    store.write(3, BS - 10, Bytes::from(vec![3u8; 20])).await.unwrap();
    store.write(3, 199_990, Bytes::from(vec![4u8; 20])).await.unwrap();
    let (got, len) = store.read(3, 1, 0, 300_000).await.unwrap();
    assert_eq!(len, 200_010);
    let mut want = vec![1u8; 200_010];
    want[100..150].fill(2);
    want[BS as usize - 10..BS as usize + 10].fill(3);
    want[199_990..].fill(4);
    assert_eq!(&got[..], &want[..]);
    // Every stored CRC matches the file contents.
    let c = store.get(3).unwrap();
    let meta = c.snapshot().unwrap();
    let file = std::fs::read(Store::chunk_path(tmp.path(), 3)).unwrap();
    for (i, blk) in file.chunks(BS as usize).enumerate() {
        assert_eq!(crc32c::crc32c(blk), meta.crcs[i], "block {i}");
    }
}

#[tokio::test]
async fn gap_and_pad_are_zero_filled() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    store.create(4, 1).await.unwrap();
    store.write(4, 0, Bytes::from_static(b"hello")).await.unwrap();
    store.write(4, 200_000, Bytes::from_static(b"world")).await.unwrap();
    let (got, len) = store.read(4, 1, 0, 1 << 20).await.unwrap();
    assert_eq!(len, 200_005);
    assert_eq!(&got[..5], b"hello");
    assert!(got[5..200_000].iter().all(|&b| b == 0));
    assert_eq!(store.pad(4, 1 << 20).await.unwrap(), 1 << 20);
    assert_eq!(store.pad(4, 10).await.unwrap(), 1 << 20);
    let (got, _) = store.read(4, 1, 199_000, 1 << 20).await.unwrap();
    assert_eq!(&got[1000..1005], b"world");
    assert!(got[1005..].iter().all(|&b| b == 0));
}

#[tokio::test]
async fn restart_preserves_version_length_and_data() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = Store::open(tmp.path(), true).await.unwrap();
        store.create(5, 1).await.unwrap();
        store.write(5, 0, Bytes::from(vec![5u8; 100_000])).await.unwrap();
        store.set_version(5, 9).await.unwrap();
        store.create(6, 2).await.unwrap();
        store.create(7, 2).await.unwrap();
        store.delete(7).await.unwrap();
    }
    // A torn meta of another chunk is dropped on load.
    std::fs::write(tmp.path().join("chunks").join(format!("{:016x}.meta", 8)), b"GFSCMETAjunk").unwrap();
    std::fs::write(tmp.path().join("chunks").join(format!("{:016x}.chunk", 8)), b"x").unwrap();
    let store = open(tmp.path()).await;
    let mut list = store.list();
    list.sort_by_key(|r| r.handle);
    assert_eq!(list.len(), 2);
    assert_eq!((list[0].handle, list[0].version, list[0].length), (5, 9, 100_000));
    assert_eq!((list[1].handle, list[1].version, list[1].length), (6, 2, 0));
    let (got, _) = store.read(5, 9, 0, 200_000).await.unwrap();
    assert_eq!(&got[..], &vec![5u8; 100_000][..]);
    let err = store.read(5, 8, 0, 10).await.unwrap_err();
    assert_eq!(err, Error::StaleVersion { handle: 5, have: 9, want: 8 });
    assert!(!tmp.path().join("chunks").join(format!("{:016x}.chunk", 8)).exists());
}

#[tokio::test]
async fn torn_metadata_update_falls_back_to_the_previous_state() {
    let tmp = tempfile::tempdir().unwrap();
    let meta_path = tmp.path().join("chunks").join(format!("{:016x}.meta", 9));
    {
        let store = Store::open(tmp.path(), true).await.unwrap();
        store.create(9, 1).await.unwrap();
        store.write(9, 0, Bytes::from(vec![1u8; 70_000])).await.unwrap();
        store.write(9, 70_000, Bytes::from(vec![2u8; 10_000])).await.unwrap();
    }
    // A crash in the middle of the last update tore its slot.
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&meta_path).unwrap();
    let newest = meta::load(&f).unwrap();
    assert_eq!((newest.length, newest.seq), (80_000, 3));
    f.write_all_at(&[0xff; 8], meta::slot_offset(newest.seq) + 40).unwrap();
    drop(f);
    let store = open(tmp.path()).await;
    let (got, len) = store.read(9, 1, 0, 1 << 20).await.unwrap();
    assert_eq!(len, 70_000, "the state before the torn update");
    assert_eq!(&got[..], &vec![1u8; 70_000][..]);
    // Updates go on from there, and survive another restart.
    store.write(9, 70_000, Bytes::from(vec![3u8; 5])).await.unwrap();
    drop(store);
    let store = open(tmp.path()).await;
    let (got, len) = store.read(9, 1, 69_999, 10).await.unwrap();
    assert_eq!((len, &got[..]), (70_005, &[1u8, 3, 3, 3, 3, 3][..]));
}

#[tokio::test]
async fn metadata_from_before_slots_loads_and_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let chunks = tmp.path().join("chunks");
    std::fs::create_dir_all(&chunks).unwrap();
    let data = vec![4u8; 100_000];
    std::fs::write(chunks.join(format!("{:016x}.chunk", 11)), &data).unwrap();
    let crcs = data.chunks(BS as usize).map(crc32c::crc32c).collect();
    let old = Meta { version: 6, length: data.len() as u64, crcs, seq: 0 };
    std::fs::write(chunks.join(format!("{:016x}.meta", 11)), meta::encode_old(&old)).unwrap();
    let store = open(tmp.path()).await;
    let (got, len) = store.read(11, 6, 0, 1 << 20).await.unwrap();
    assert_eq!((len, &got[..]), (100_000, &data[..]));
    // Two updates: the first goes beside the old record, the second over it.
    store.write(11, 100_000, Bytes::from_static(b"ab")).await.unwrap();
    store.set_version(11, 7).await.unwrap();
    drop(store);
    let store = open(tmp.path()).await;
    let (got, len) = store.read(11, 7, 99_999, 10).await.unwrap();
    assert_eq!((len, &got[..]), (100_002, &b"\x04ab"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_dropped_mid_way_keep_state_and_files_together() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let chunk = store.create(12, 1).await.unwrap();
    let mut dropped = 0;
    for i in 0..60u64 {
        let data = Bytes::from(vec![i as u8 + 1; 1000]);
        // The caller polls the write once and goes away: the write is then
        // waiting on its file I/O.
        use futures::FutureExt;
        dropped += usize::from(store.write(12, i * 900, data).now_or_never().is_none());
        // Whatever still runs of it holds the chunk; wait until only the
        // store's map and this test do.
        while Arc::strong_count(&chunk) > 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(dropped > 0, "no write was dropped; the test proves nothing");
    // Every block verifies against the in-memory checksums, and the state
    // on disk is the same.
    let (live, len) = store.read(12, 1, 0, 1 << 20).await.unwrap();
    assert_eq!(live.len() as u64, len);
    drop(store);
    let store = open(tmp.path()).await;
    let (disk, _) = store.read(12, 1, 0, 1 << 20).await.unwrap();
    assert_eq!(live, disk);
}

#[test]
fn server_id_is_stable() {
    let tmp = tempfile::tempdir().unwrap();
    let a = load_or_create_server_id(tmp.path()).unwrap();
    let b = load_or_create_server_id(tmp.path()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 16);
}

#[tokio::test]
async fn mutations_past_the_largest_chunk_are_refused_and_change_nothing() {
    // The chunk_store fuzz target: an offset near u64::MAX overflowed the
    // store's own end arithmetic (the RPC handlers check first).
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    store.create(1, 1).await.unwrap();
    store.write(1, 0, Bytes::from_static(b"kept")).await.unwrap();
    for (offset, len) in [(u64::MAX - 3, 10usize), (meta::MAX_CHUNK_LEN, 1), (meta::MAX_CHUNK_LEN - 1, 2)] {
        let e = store.write(1, offset, Bytes::from(vec![7u8; len])).await.unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        let e = store.write_records(1, offset, vec![Bytes::from(vec![7u8; len])]).await.unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    }
    assert!(matches!(store.pad(1, meta::MAX_CHUNK_LEN + 1).await.unwrap_err(), Error::TooLarge { .. }));
    assert_eq!(store.read(1, 1, 0, 100).await.unwrap(), (Bytes::from_static(b"kept"), 4));
}
