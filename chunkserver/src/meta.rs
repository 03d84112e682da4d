//! Binary format of a chunk's `.meta` file.
//!
//! The file has two fixed slots, at offset 0 and at [`SLOT_SIZE`]. An
//! update writes the slot that does not hold the newest state, with the
//! next sequence number, and syncs it: no temporary file, rename or
//! directory sync per mutation, and a write torn by a crash leaves the
//! other slot, the previous state, to load.
//!
//! ```text
//! slot: magic "GFSCMET2" (8) | seq u64 LE | version u64 LE | length u64 LE | crc u32 LE | block crcs u32 LE ...
//! ```
//! `crc` is the CRC32C of every other byte of the slot (magic, seq,
//! version, length and the block checksums), so a torn or damaged slot is
//! detected. There is exactly one block checksum per started 64 KiB block
//! of `length`. Load takes the valid slot with the highest `seq`.
//!
//! Files written before slots existed hold one record at offset 0:
//! `"GFSCMETA" | version | length | crc | block crcs`. It loads as
//! sequence 0, so the first update goes to slot 1 and leaves it intact.

use std::fs::File;
use std::os::unix::fs::FileExt;

use gfs_common::BLOCK_SIZE;

const MAGIC: &[u8; 8] = b"GFSCMET2";
const HEADER_LEN: usize = 8 + 8 + 8 + 8 + 4;
const OLD_MAGIC: &[u8; 8] = b"GFSCMETA";
const OLD_HEADER_LEN: usize = 8 + 8 + 8 + 4;

/// Largest chunk a slot can describe (the mutation bound, 1 GiB).
pub const MAX_CHUNK_LEN: u64 = 1 << 30;
/// Bytes reserved for one slot: the header and a checksum per block of
/// the largest chunk, rounded up to 4 KiB.
pub const SLOT_SIZE: u64 = (HEADER_LEN as u64 + MAX_CHUNK_LEN / BLOCK_SIZE * 4).div_ceil(4096) * 4096;

/// Persistent metadata of one chunk replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Chunk version held by this replica.
    pub version: u64,
    /// Bytes in the chunk.
    pub length: u64,
    /// One CRC32C per 64 KiB block (the last one may be partial).
    pub crcs: Vec<u32>,
    /// Sequence number of the slot this state was loaded from or last
    /// written to (0: never written in the slot format).
    pub seq: u64,
}

impl Meta {
    /// An empty chunk at `version`, not yet written.
    pub fn new(version: u64) -> Self {
        Self { version, length: 0, crcs: Vec::new(), seq: 0 }
    }
}

/// Bytes of a slot describing a chunk of `length` bytes (header and one
/// checksum per started block).
pub fn slot_len(length: u64) -> u64 {
    HEADER_LEN as u64 + length.div_ceil(BLOCK_SIZE) * 4
}

/// Offset of the slot that sequence number `seq` is written to.
pub fn slot_offset(seq: u64) -> u64 {
    (seq % 2) * SLOT_SIZE
}

fn checksum(header: &[u8], crcs: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header), crcs)
}

/// Encodes `meta` as a slot with sequence number `meta.seq`.
pub fn encode_slot(meta: &Meta) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + meta.crcs.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&meta.seq.to_le_bytes());
    out.extend_from_slice(&meta.version.to_le_bytes());
    out.extend_from_slice(&meta.length.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for c in &meta.crcs {
        out.extend_from_slice(&c.to_le_bytes());
    }
    let crc = checksum(&out[..32], &out[HEADER_LEN..]);
    out[32..36].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Where a `.meta` file's bytes come from: the file itself, or a buffer
/// (the fuzz target and tests decode bytes without a file).
pub trait Source {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Source for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl Source for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Reads exactly `len` bytes at `offset`; a short file is reported.
fn read_at(file: &(impl Source + ?Sized), offset: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).map_err(|e| format!("{len} bytes at {offset}: {e}"))?;
    Ok(buf)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn crcs_of(body: &[u8]) -> Vec<u32> {
    body.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
}

/// Bytes of block checksums for `length`, if it is within bounds.
fn body_len(length: u64) -> Result<usize, String> {
    if length > MAX_CHUNK_LEN {
        return Err(format!("length {length} is above the largest chunk {MAX_CHUNK_LEN}"));
    }
    Ok(length.div_ceil(BLOCK_SIZE) as usize * 4)
}

/// Decodes the slot at `offset`.
fn read_slot(file: &(impl Source + ?Sized), offset: u64) -> Result<Meta, String> {
    let header = read_at(file, offset, HEADER_LEN)?;
    if &header[..8] != MAGIC {
        return Err("no slot magic".into());
    }
    let (seq, version, length) = (u64_at(&header, 8), u64_at(&header, 16), u64_at(&header, 24));
    if seq == u64::MAX {
        // The writer counts up from 0 by one per update and never gets
        // here; a slot that claims it would leave no next sequence number
        // (the next update would wrap to 0 and lose to this slot forever).
        return Err("sequence number out of range".into());
    }
    let body = read_at(file, offset + HEADER_LEN as u64, body_len(length)?)?;
    if checksum(&header[..32], &body) != u32_at(&header, 32) {
        return Err("checksum mismatch (torn or damaged)".into());
    }
    Ok(Meta { version, length, crcs: crcs_of(&body), seq })
}

/// Decodes a file written before slots existed (sequence 0).
fn read_old(file: &(impl Source + ?Sized)) -> Result<Meta, String> {
    let header = read_at(file, 0, OLD_HEADER_LEN)?;
    if &header[..8] != OLD_MAGIC {
        return Err("no metadata magic".into());
    }
    let (version, length) = (u64_at(&header, 8), u64_at(&header, 16));
    let body = read_at(file, OLD_HEADER_LEN as u64, body_len(length)?)?;
    if checksum(&header[..24], &body) != u32_at(&header, 24) {
        return Err("checksum mismatch (torn or damaged)".into());
    }
    Ok(Meta { version, length, crcs: crcs_of(&body), seq: 0 })
}

/// Loads the newest valid state of a metadata file, describing what is
/// wrong with each slot when none is valid.
pub fn load(file: &(impl Source + ?Sized)) -> Result<Meta, String> {
    let first = read_slot(file, 0).or_else(|e| read_old(file).map_err(|old| format!("{e}; {old}")));
    let second = read_slot(file, SLOT_SIZE);
    match (first, second) {
        (Ok(a), Ok(b)) => Ok(if b.seq > a.seq { b } else { a }),
        (Ok(m), Err(_)) | (Err(_), Ok(m)) => Ok(m),
        (Err(a), Err(b)) => Err(format!("no valid metadata slot (slot 0: {a}; slot 1: {b})")),
    }
}

/// The format from before slots, as earlier releases wrote it (tests
/// check that such files still load).
#[cfg(test)]
pub(crate) fn encode_old(m: &Meta) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(OLD_MAGIC);
    out.extend_from_slice(&m.version.to_le_bytes());
    out.extend_from_slice(&m.length.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for c in &m.crcs {
        out.extend_from_slice(&c.to_le_bytes());
    }
    let crc = checksum(&out[..24], &out[OLD_HEADER_LEN..]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(parts: &[(u64, Vec<u8>)]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        for (at, bytes) in parts {
            f.write_all_at(bytes, *at).unwrap();
        }
        (dir, f)
    }

    fn meta(seq: u64, length: u64) -> Meta {
        let crcs = (0..length.div_ceil(BLOCK_SIZE)).map(|i| i as u32 * 7 + seq as u32).collect();
        Meta { version: 3, length, crcs, seq }
    }

    #[test]
    fn the_newest_valid_slot_wins() {
        let (a, b) = (meta(4, BLOCK_SIZE + 5), meta(5, 3 * BLOCK_SIZE));
        let (_d, f) = file_with(&[(slot_offset(4), encode_slot(&a)), (slot_offset(5), encode_slot(&b))]);
        assert_eq!(load(&f).unwrap(), b);
        // Only one slot written so far (a new chunk).
        let (_d, f) = file_with(&[(slot_offset(1), encode_slot(&meta(1, 0)))]);
        assert_eq!(load(&f).unwrap(), meta(1, 0));
    }

    #[test]
    fn a_slot_claiming_the_last_sequence_number_is_refused() {
        // Found by fuzzing: such a slot always won, and the next update
        // (sequence + 1 wrapped to 0) could never replace it.
        let good = meta(8, BLOCK_SIZE);
        let mut bytes = vec![0u8; 2 * SLOT_SIZE as usize];
        let poisoned = encode_slot(&meta(u64::MAX, 0));
        bytes[slot_offset(8) as usize..][..slot_len(BLOCK_SIZE) as usize].copy_from_slice(&encode_slot(&good));
        bytes[SLOT_SIZE as usize..][..poisoned.len()].copy_from_slice(&poisoned);
        assert_eq!(load(bytes.as_slice()).unwrap(), good);
        let (_d, f) = file_with(&[(SLOT_SIZE, poisoned)]);
        assert!(load(&f).unwrap_err().contains("sequence number out of range"));
    }

    #[test]
    fn a_torn_newer_slot_leaves_the_older_one() {
        let (a, b) = (meta(6, 2 * BLOCK_SIZE), meta(7, 4 * BLOCK_SIZE));
        let mut torn = encode_slot(&b);
        let n = torn.len();
        torn[n - 2] ^= 0x40;
        let (_d, f) = file_with(&[(slot_offset(6), encode_slot(&a)), (slot_offset(7), torn.clone())]);
        assert_eq!(load(&f).unwrap(), a);
        // A slot cut short by the end of the file is torn too.
        let (_d, f) = file_with(&[(slot_offset(6), encode_slot(&a)), (slot_offset(7), torn[..n - 8].to_vec())]);
        assert_eq!(load(&f).unwrap(), a);
        // Both damaged: an error naming both slots.
        let mut bad_a = encode_slot(&a);
        bad_a[20] ^= 1;
        let (_d, f) = file_with(&[(slot_offset(6), bad_a), (slot_offset(7), torn)]);
        let e = load(&f).unwrap_err();
        assert!(e.contains("slot 0") && e.contains("slot 1") && e.contains("checksum"), "{e}");
    }

    #[test]
    fn files_from_before_slots_load_and_upgrade_in_place() {
        let old = meta(0, BLOCK_SIZE * 2 + 1);
        let (_d, f) = file_with(&[(0, encode_old(&old))]);
        assert_eq!(load(&f).unwrap(), old);
        // The first update (seq 1) goes to slot 1 and wins; slot 0 stays.
        let next = meta(1, BLOCK_SIZE * 3);
        f.write_all_at(&encode_slot(&next), slot_offset(1)).unwrap();
        assert_eq!(load(&f).unwrap(), next);
        // The second (seq 2) overwrites the old record in slot 0.
        let third = meta(2, BLOCK_SIZE * 3 + 9);
        f.write_all_at(&encode_slot(&third), slot_offset(2)).unwrap();
        assert_eq!(load(&f).unwrap(), third);
    }

    #[test]
    fn out_of_bounds_lengths_are_refused() {
        let mut huge = meta(1, 0);
        huge.length = MAX_CHUNK_LEN + 1;
        let (_d, f) = file_with(&[(slot_offset(1), encode_slot(&huge))]);
        assert!(load(&f).unwrap_err().contains("largest chunk"));
        let (_d, f) = file_with(&[(0, b"GFSCMETAjunk".to_vec())]);
        assert!(load(&f).is_err());
    }
}
