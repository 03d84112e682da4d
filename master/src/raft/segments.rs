//! Reading the Raft log's segment files without changing them: their
//! frames, the stretches that are not frames, and where valid frames
//! resume after one. Recovery (`log_store`) and `gfs-master check-log`
//! (`check`) both judge a bad stretch here, so they always agree.
//!
//! # Torn tail or damage
//!
//! The writer only ever appends to the newest segment, and fsyncs before
//! anything is acknowledged. A crash in the middle of an append can leave
//! the end of that segment as a partial frame, zeros (a file extended but
//! not written) or stale bytes: a *torn tail*, never acknowledged, which
//! recovery cuts off. Bad bytes anywhere else were acknowledged once and
//! later damaged (a flipped bit, a bad sector, an overwrite); cutting them
//! off would silently drop every later acknowledged entry. The rule:
//!
//! A bad stretch (a short header or payload, a length above the limit, an
//! empty frame, a checksum mismatch) is a torn tail only if
//! 1. no valid frame follows it in its segment: resynchronising tries every
//!    later byte offset for a frame whose length fits, whose CRC32C matches
//!    and whose entry decodes with an index after the last good one, and
//! 2. no later segment holds any bytes.
//!
//! Anything else is damage, and so is a frame whose checksum matches but
//! which does not decode (it was written whole). A damaged last frame
//! cannot be told from a torn one and is cut like one; Raft gets it back
//! from the leader.

use std::path::{Path, PathBuf};

use gfs_common::{Error, Result};
use gfs_proto::RaftEntry;

use super::{Entry, entry_from_proto};
use crate::oplog::{FrameError, MAX_FRAME, decode_frame};

/// Returns the path of the segment whose first entry is `first`.
pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("raft-log.{first}"))
}

/// Lists `raft-log.<first>` segments, sorted by first index.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(format!("read dir {}", dir.display()), e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read dir entry", e))?;
        let name = entry.file_name();
        if let Some(i) = name.to_str().and_then(|n| n.strip_prefix("raft-log.")).and_then(|s| s.parse::<u64>().ok()) {
            out.push((i, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A valid frame of a segment.
pub struct Frame {
    /// Byte offset of its header in the segment.
    pub offset: u64,
    /// The decoded entry.
    pub entry: Entry,
}

/// Bytes at `offset` that are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    /// Byte offset in the segment.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
    /// A write cut short can leave such bytes (false for a whole frame
    /// whose checksum matches but which does not decode).
    pub can_be_torn: bool,
    /// The first valid frame after it in the same segment (offset, index).
    pub resumes: Option<(u64, u64)>,
}

/// One piece of a segment, in file order.
pub enum Piece {
    /// A valid frame.
    Frame(Frame),
    /// A bad stretch, up to `resumes` or the end of the segment.
    Bad(Bad),
}

/// How a bad stretch is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The end of an append cut short: recovery truncates it.
    TornTail,
    /// Damage to acknowledged entries: recovery refuses to start. Says why
    /// it is not a torn tail.
    Damage(String),
}

/// Decodes the frame at `off` down to an entry. An empty frame (length 0,
/// as zeros read) is bad: the writer never writes one.
fn frame_at(buf: &[u8], off: usize) -> std::result::Result<Option<(Entry, usize)>, (String, bool)> {
    if buf.len().saturating_sub(off) >= 8 && buf[off..off + 4] == [0; 4] {
        return Err(("empty frame (zeros)".into(), true));
    }
    match decode_frame::<RaftEntry>(buf, off) {
        Ok(None) => Ok(None),
        Ok(Some((rec, next))) => match entry_from_proto(rec) {
            Ok(e) => Ok(Some((e, next))),
            Err(e) => Err((format!("undecodable entry: {e}"), false)),
        },
        Err(e) => Err((e.to_string(), FrameError::can_be_torn(e))),
    }
}

/// The first offset after `from` holding a valid frame whose entry's index
/// comes after `after`: (offset, index).
pub fn resync(buf: &[u8], from: usize, after: Option<u64>) -> Option<(u64, u64)> {
    let mut p = from;
    while p + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[p..p + 4].try_into().expect("4 bytes"));
        // Cheap filters first: most offsets fail here.
        if len > 0
            && len <= MAX_FRAME
            && p + 8 + len as usize <= buf.len()
            && let Ok(Some((e, _))) = frame_at(buf, p)
            && after.is_none_or(|a| e.log_id.index > a)
        {
            return Some((p as u64, e.log_id.index));
        }
        p += 1;
    }
    None
}

/// Reads one segment. `after` is the index of the last valid entry before
/// it. A bad stretch records where valid frames resume; with `stop_at_bad`
/// the scan ends there, otherwise it goes on from that frame.
pub fn scan(buf: &[u8], mut after: Option<u64>, stop_at_bad: bool) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut off = 0usize;
    loop {
        match frame_at(buf, off) {
            Ok(None) => return out,
            Ok(Some((entry, next))) => {
                after = Some(entry.log_id.index);
                out.push(Piece::Frame(Frame { offset: off as u64, entry }));
                off = next;
            }
            Err((reason, can_be_torn)) => {
                let resumes = resync(buf, off + 1, after);
                out.push(Piece::Bad(Bad { offset: off as u64, reason, can_be_torn, resumes }));
                match resumes {
                    Some((at, _)) if !stop_at_bad => off = at as usize,
                    _ => return out,
                }
            }
        }
    }
}

/// Judges a bad stretch; `later` is the first later segment holding bytes
/// (path, length), if any.
pub fn judge(bad: &Bad, later: Option<(&Path, u64)>) -> Verdict {
    if !bad.can_be_torn {
        return Verdict::Damage("the frame's checksum matches, so it was written whole".into());
    }
    if let Some((at, index)) = bad.resumes {
        return Verdict::Damage(format!("a valid entry (index {index}) follows at byte offset {at}"));
    }
    if let Some((path, len)) = later {
        return Verdict::Damage(format!("the later segment {} holds {len} bytes", path.display()));
    }
    Verdict::TornTail
}

/// The first segment after `i` in `segments` that holds bytes.
pub fn later_with_bytes(segments: &[(u64, PathBuf)], i: usize) -> Result<Option<(PathBuf, u64)>> {
    for (_, path) in &segments[i + 1..] {
        let len = std::fs::metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len();
        if len > 0 {
            return Ok(Some((path.clone(), len)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oplog::encode_frame;
    use crate::raft::{Request, entry_to_proto, log_id};
    use openraft::EntryPayload;
    use prost::Message;

    fn frames(range: std::ops::RangeInclusive<u64>) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut offs = Vec::new();
        for i in range {
            offs.push(buf.len());
            let e = Entry { log_id: log_id(1, 1, i), payload: EntryPayload::Normal(Request { group: vec![] }) };
            encode_frame(&entry_to_proto(&e).encode_to_vec(), &mut buf);
        }
        (buf, offs)
    }

    fn bads(pieces: &[Piece]) -> Vec<Bad> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Bad(b) => Some(b.clone()),
                Piece::Frame(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_flipped_byte_resynchronises_at_the_next_frame() {
        let (mut buf, offs) = frames(1..=6);
        buf[offs[2] + 10] ^= 0x01;
        let pieces = scan(&buf, None, false);
        let b = bads(&pieces);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].offset, b[0].resumes), (offs[2] as u64, Some((offs[3] as u64, 4))));
        assert_eq!(
            judge(&b[0], None),
            Verdict::Damage(format!("a valid entry (index 4) follows at byte offset {}", offs[3]))
        );
        // Every other frame is still read.
        assert_eq!(pieces.len(), 6);
    }

    #[test]
    fn zeros_a_partial_frame_or_garbage_at_the_end_are_a_torn_tail() {
        let (buf, offs) = frames(1..=4);
        for tail in [vec![0u8; 64], buf[offs[1]..offs[2] - 3].to_vec(), vec![0xAB; 77]] {
            let mut b = buf.clone();
            b.extend_from_slice(&tail);
            let pieces = scan(&b, None, false);
            let bad = bads(&pieces);
            assert_eq!(bad.len(), 1);
            assert_eq!(bad[0].offset, buf.len() as u64);
            assert_eq!(judge(&bad[0], None), Verdict::TornTail);
            let later = PathBuf::from("raft-log.9");
            assert!(matches!(judge(&bad[0], Some((&later, 5))), Verdict::Damage(_)));
        }
    }

    #[test]
    fn resync_only_takes_entries_after_the_last_good_one() {
        let (a, _) = frames(1..=3);
        let mut buf = a.clone();
        buf.extend_from_slice(&[0xAB; 20]);
        // An older entry after the bad stretch is not "in sequence".
        buf.extend_from_slice(&a);
        let b = bads(&scan(&buf, None, true));
        assert_eq!(b[0].resumes, None);
        assert_eq!(resync(&buf, a.len() + 1, None), Some(((a.len() + 20) as u64, 1)));
    }
}
