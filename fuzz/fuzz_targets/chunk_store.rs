//! A chunk replica under the mutations a primary or a client can ask for
//! (ApplyMutation: write, records, pad, at any offset and length) and
//! reads in between. An in-memory copy is the model: every read, and a
//! full read through a store reopened from the files (the .meta slots and
//! block checksums on disk), must equal it byte for byte; a mutation past
//! the largest chunk is refused and changes nothing.
//!
//! Input: 13-byte operations: kind (low 2 bits; bit 7: the offset is taken
//! raw, else modulo 4 MiB), offset u64 LE, length u32 LE (modulo 300 KiB).
#![no_main]

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use gfs_chunkserver::meta::MAX_CHUNK_LEN;
use gfs_chunkserver::store::Store;
use libfuzzer_sys::fuzz_target;

/// Chunks the model keeps whole in memory; valid mutations ending past it
/// are skipped (they are the same code at other offsets).
const MODEL_LIMIT: u64 = 8 << 20;

struct Env {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    store: Store,
    next: AtomicU64,
}

static ENV: LazyLock<Env> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(Store::open(dir.path(), false)).unwrap();
    Env { rt, dir, store, next: AtomicU64::new(1) }
});

async fn read_all(store: &Store, handle: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        let (piece, length) = store.read(handle, 1, out.len() as u64, len - out.len() as u64).await.unwrap();
        assert_eq!(length, len, "chunk length");
        assert!(!piece.is_empty(), "short read at {}", out.len());
        out.extend_from_slice(&piece);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let env = &*ENV;
    let handle = env.next.fetch_add(1, Ordering::Relaxed);
    env.rt.block_on(async {
        let store = &env.store;
        store.create(handle, 1).await.unwrap();
        let mut model: Vec<u8> = Vec::new();
        for (i, op) in data.chunks_exact(13).take(24).enumerate() {
            let raw = u64::from_le_bytes(op[1..9].try_into().unwrap());
            let offset = if op[0] & 0x80 != 0 { raw } else { raw % (4 << 20) };
            let len = u64::from(u32::from_le_bytes(op[9..13].try_into().unwrap())) % (300 << 10);
            let end = offset.checked_add(len);
            let fits = end.is_some_and(|e| e <= MAX_CHUNK_LEN);
            if fits && end.unwrap() > MODEL_LIMIT {
                continue;
            }
            let fill: Vec<u8> = (0..len).map(|j| (i as u8).wrapping_mul(29) ^ (j as u8)).collect();
            match op[0] & 3 {
                0 | 1 => {
                    let res = if op[0] & 3 == 0 {
                        store.write(handle, offset, Bytes::from(fill.clone())).await
                    } else {
                        // The same bytes as up to three back-to-back records.
                        let (a, rest) = fill.split_at(fill.len() / 3);
                        let (b, c) = rest.split_at(rest.len() / 2);
                        let records = [a, b, c].iter().map(|r| Bytes::copy_from_slice(r)).collect();
                        store.write_records(handle, offset, records).await
                    };
                    match res {
                        Ok(length) => {
                            assert!(fits);
                            let end = end.unwrap() as usize;
                            if model.len() < end {
                                model.resize(end, 0);
                            }
                            model[offset as usize..end].copy_from_slice(&fill);
                            assert_eq!(length, model.len() as u64);
                        }
                        Err(e) => assert!(!fits, "a write within bounds failed: {e}"),
                    }
                }
                2 => match store.pad(handle, offset).await {
                    Ok(length) => {
                        assert!(offset <= MAX_CHUNK_LEN);
                        model.resize(model.len().max(offset as usize), 0);
                        assert_eq!(length, model.len() as u64);
                    }
                    Err(e) => assert!(offset > MAX_CHUNK_LEN, "a pad within bounds failed: {e}"),
                },
                _ => {
                    let (got, length) = store.read(handle, 1, offset, len).await.unwrap();
                    assert_eq!(length, model.len() as u64);
                    let from = (offset as usize).min(model.len());
                    let to = end.map_or(model.len(), |e| (e as usize).min(model.len()));
                    assert_eq!(&got[..], &model[from..to.max(from)][..got.len()], "read at {offset}");
                    assert!(!got.is_empty() || from == to.max(from), "empty read inside the chunk");
                }
            }
        }
        assert_eq!(read_all(store, handle, model.len() as u64).await, model);
        // What is on disk (data, .meta slots, checksums) says the same.
        let reopened = Store::open(env.dir.path(), false).await.unwrap();
        assert_eq!(read_all(&reopened, handle, model.len() as u64).await, model);
        store.delete(handle).await.unwrap();
    });
});
