//! A chunk's `.meta` file (two slots) as a chunkserver loads it at start.
//! The input's first half is slot 0's bytes, the second half slot 1's.
//! What loads is within bounds, leaves room for a next update, and written
//! back by the encoder loads to the same state.
#![no_main]

use gfs_chunkserver::meta::{self, MAX_CHUNK_LEN, SLOT_SIZE, encode_slot, slot_offset};
use gfs_common::BLOCK_SIZE;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (a, b) = data.split_at(data.len() / 2);
    let mut file = a[..a.len().min(SLOT_SIZE as usize)].to_vec();
    if !b.is_empty() {
        file.resize(SLOT_SIZE as usize, 0);
        file.extend_from_slice(b);
    }
    let Ok(m) = meta::load(file.as_slice()) else { return };
    assert!(m.length <= MAX_CHUNK_LEN);
    assert_eq!(m.crcs.len() as u64, m.length.div_ceil(BLOCK_SIZE));
    assert!(m.seq.checked_add(1).is_some(), "no next sequence number");
    let slot = encode_slot(&m);
    let mut fresh = vec![0u8; 2 * SLOT_SIZE as usize];
    fresh[slot_offset(m.seq) as usize..][..slot.len()].copy_from_slice(&slot);
    assert_eq!(meta::load(fresh.as_slice()).unwrap(), m);
});
