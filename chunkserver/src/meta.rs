//! Binary format of a chunk's `.meta` file.
//!
//! ```text
//! magic "GFSCMETA" (8) | version u64 LE | length u64 LE | crc u32 LE | block crcs u32 LE ...
//! ```
//! `crc` is the CRC32C of every other byte of the file (magic, version,
//! length and the block checksums), so a torn or damaged file is detected.
//! There is exactly one block checksum per started 64 KiB block of `length`.

use gfs_common::BLOCK_SIZE;

const MAGIC: &[u8; 8] = b"GFSCMETA";
const HEADER_LEN: usize = 8 + 8 + 8 + 4;

/// Persistent metadata of one chunk replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Chunk version held by this replica.
    pub version: u64,
    /// Bytes in the chunk.
    pub length: u64,
    /// One CRC32C per 64 KiB block (the last one may be partial).
    pub crcs: Vec<u32>,
}

fn checksum(header: &[u8], crcs: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header), crcs)
}

/// Encodes metadata into the file format.
pub fn encode(meta: &Meta) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + meta.crcs.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&meta.version.to_le_bytes());
    out.extend_from_slice(&meta.length.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for c in &meta.crcs {
        out.extend_from_slice(&c.to_le_bytes());
    }
    let crc = checksum(&out[..24], &out[HEADER_LEN..]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a metadata file, describing what is wrong on failure.
pub fn decode(bytes: &[u8]) -> Result<Meta, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("metadata too short ({} bytes)", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err("bad metadata magic".into());
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let stored = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    let body = &bytes[HEADER_LEN..];
    if checksum(&bytes[..24], body) != stored {
        return Err("metadata checksum mismatch (torn or damaged)".into());
    }
    let (version, length) = (u64_at(8), u64_at(16));
    if !body.len().is_multiple_of(4) || (body.len() / 4) as u64 != length.div_ceil(BLOCK_SIZE) {
        return Err(format!("metadata has {} checksum bytes for length {length}", body.len()));
    }
    let crcs = body.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    Ok(Meta { version, length, crcs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_detection() {
        let m = Meta { version: 7, length: BLOCK_SIZE + 5, crcs: vec![1, 2] };
        let enc = encode(&m);
        assert_eq!(decode(&enc).unwrap(), m);
        let mut bad = enc.clone();
        bad[30] ^= 1;
        assert!(decode(&bad).is_err());
        assert!(decode(&enc[..enc.len() - 4]).is_err());
        assert!(decode(&enc[..10]).is_err());
    }
}
