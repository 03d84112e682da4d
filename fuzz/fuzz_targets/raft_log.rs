//! The Raft log segment scanner (`gfs_master::raft::segments`): what a
//! master reads from its own disk at start and what `gfs-master check-log`
//! reads. Any bytes must give pieces in file order, inside the buffer,
//! never a panic or a hang.
#![no_main]

use gfs_master::oplog::decode_frame;
use gfs_master::raft::segments::{Piece, scan};
use gfs_proto::RaftEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for stop_at_bad in [false, true] {
        let pieces = scan(data, None, stop_at_bad);
        let mut next = 0u64;
        let mut last_index: Option<u64> = None;
        for piece in &pieces {
            match piece {
                Piece::Frame(f) => {
                    assert!(f.offset >= next && (f.offset as usize) < data.len(), "frame out of order");
                    next = f.offset + 8;
                    last_index = Some(f.entry.log_id.index);
                }
                Piece::Bad(b) => {
                    assert!(b.offset >= next && (b.offset as usize) < data.len(), "bad stretch out of order");
                    if let Some((at, index)) = b.resumes {
                        assert!(at > b.offset && (at as usize) < data.len(), "resumes out of range");
                        // Resynchronising never goes back in the log.
                        assert!(last_index.is_none_or(|l| index > l), "resumed at an older entry");
                    }
                    next = b.offset + 1;
                }
            }
        }
        if stop_at_bad {
            let bad = pieces.iter().filter(|p| matches!(p, Piece::Bad(_))).count();
            assert!(bad <= 1 && pieces.last().is_none_or(|p| bad == 0 || matches!(p, Piece::Bad(_))));
        }
    }
    // The raw frame decoder walks the same bytes without panicking.
    let mut off = 0;
    while let Ok(Some((_, end))) = decode_frame::<RaftEntry>(data, off) {
        assert!(end > off && end <= data.len());
        off = end;
    }
});
