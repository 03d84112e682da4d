//! Splitting a byte range of a file into per-chunk, size-bounded pieces.

/// One contiguous part of an I/O that lies inside a single chunk and is at
/// most the I/O size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Chunk index within the file.
    pub index: u64,
    /// Offset inside the chunk.
    pub offset_in_chunk: u64,
    /// Offset inside the file.
    pub file_offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Splits `[offset, offset + len)` at chunk boundaries and into pieces of at
/// most `max_io` bytes. Returns no pieces for `len == 0`.
pub fn split(offset: u64, len: u64, chunk_size: u64, max_io: u64) -> Vec<Piece> {
    assert!(chunk_size > 0 && max_io > 0, "chunk size and io size must be positive");
    let mut out = Vec::new();
    let mut pos = offset;
    let end = offset.saturating_add(len);
    while pos < end {
        let index = pos / chunk_size;
        let offset_in_chunk = pos % chunk_size;
        let n = (chunk_size - offset_in_chunk).min(max_io).min(end - pos);
        out.push(Piece { index, offset_in_chunk, file_offset: pos, len: n });
        pos += n;
    }
    out
}

/// Length of the piece starting at file offset `pos` for a sequential
/// stream: up to the next chunk boundary, at most `max_io`.
pub fn next_piece_len(pos: u64, chunk_size: u64, max_io: u64) -> u64 {
    (chunk_size - pos % chunk_size).min(max_io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_range_has_no_pieces() {
        assert!(split(5, 0, 10, 4).is_empty());
    }

    #[test]
    fn splits_at_chunk_boundaries_and_io_limit() {
        let p = split(6, 12, 10, 3);
        let got: Vec<_> = p.iter().map(|p| (p.index, p.offset_in_chunk, p.file_offset, p.len)).collect();
        assert_eq!(got, vec![(0, 6, 6, 3), (0, 9, 9, 1), (1, 0, 10, 3), (1, 3, 13, 3), (1, 6, 16, 2)]);
        assert_eq!(p.iter().map(|p| p.len).sum::<u64>(), 12);
    }

    #[test]
    fn whole_chunks() {
        let p = split(0, 20, 10, 100);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1], Piece { index: 1, offset_in_chunk: 0, file_offset: 10, len: 10 });
    }

    #[test]
    fn pieces_never_cross_a_chunk() {
        for (off, len, cs, io) in [(0, 1000, 64, 8), (7, 333, 50, 16), (99, 1, 100, 1), (1, 250, 7, 100)] {
            let p = split(off, len, cs, io);
            let mut pos = off;
            for piece in &p {
                assert_eq!(piece.file_offset, pos);
                assert!(piece.len <= io && piece.len > 0);
                assert_eq!(piece.index, pos / cs);
                assert!(piece.offset_in_chunk + piece.len <= cs);
                pos += piece.len;
            }
            assert_eq!(pos, off + len);
        }
    }

    #[test]
    fn sequential_piece_len() {
        assert_eq!(next_piece_len(0, 64, 8), 8);
        assert_eq!(next_piece_len(60, 64, 8), 4);
        assert_eq!(next_piece_len(64, 64, 100), 64);
    }
}
