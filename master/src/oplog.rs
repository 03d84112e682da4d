//! On-disk building blocks of the master's durable state: CRC-checked
//! frames (used by the Raft log, `raft::log_store`), checkpoints (the Raft
//! snapshots) and atomic small-file replacement.
//!
//! Frame: `u32 len (LE) | u32 crc32c(payload) (LE) | payload`.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use gfs_common::{Error, Result};
use gfs_proto::Checkpoint;
use prost::Message;
use tracing::info;

/// Largest frame accepted on replay; anything larger is corruption.
pub const MAX_FRAME: u32 = 64 * 1024 * 1024;

/// Fsyncs a directory so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(format!("fsync dir {}", dir.display()), e))
}

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why the bytes at an offset are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than 8 bytes left for the header.
    ShortHeader,
    /// The length field is above [`MAX_FRAME`].
    LengthOutOfRange,
    /// The payload runs past the end of the buffer.
    ShortPayload,
    /// The payload does not match its CRC32C.
    ChecksumMismatch,
    /// The payload matches its CRC32C but is not a valid message.
    Undecodable,
}

impl FrameError {
    /// True when a write cut short (a crash mid-append) can leave these
    /// bytes. A frame whose checksum matches was written whole, so an
    /// undecodable one never is.
    pub fn can_be_torn(self) -> bool {
        !matches!(self, FrameError::Undecodable)
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::ShortHeader => "short frame header",
            FrameError::LengthOutOfRange => "frame length out of range",
            FrameError::ShortPayload => "short frame payload",
            FrameError::ChecksumMismatch => "checksum mismatch",
            FrameError::Undecodable => "undecodable record",
        })
    }
}

/// Decodes the frame at `buf[off..]`: Ok(Some((message, next_off))), Ok(None)
/// at a clean end, Err for a torn or corrupt frame.
pub fn decode_frame<M: Message + Default>(
    buf: &[u8],
    off: usize,
) -> std::result::Result<Option<(M, usize)>, FrameError> {
    if off == buf.len() {
        return Ok(None);
    }
    if buf.len() - off < 8 {
        return Err(FrameError::ShortHeader);
    }
    let len = u32::from_le_bytes(buf[off..off + 4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(buf[off + 4..off + 8].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err(FrameError::LengthOutOfRange);
    }
    let end = off + 8 + len as usize;
    if end > buf.len() {
        return Err(FrameError::ShortPayload);
    }
    let payload = &buf[off + 8..end];
    if crc32c::crc32c(payload) != crc {
        return Err(FrameError::ChecksumMismatch);
    }
    match M::decode(payload) {
        Ok(m) => Ok(Some((m, end))),
        Err(_) => Err(FrameError::Undecodable),
    }
}

/// Replaces `dir/name` with `bytes` durably: write `name.tmp`, fsync,
/// rename, fsync the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let fin = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    drop(f);
    std::fs::rename(&tmp, &fin).map_err(|e| Error::io(format!("rename {}", tmp.display()), e))?;
    sync_dir(dir)
}

/// Loads `checkpoint` from `dir`, if present.
pub fn load_checkpoint(dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join("checkpoint");
    match std::fs::read(&path) {
        Ok(b) => Checkpoint::decode(b.as_slice())
            .map(Some)
            .map_err(|e| Error::Internal(format!("checkpoint {} is corrupt: {e}; refusing to start", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// Writes `checkpoint` atomically.
pub fn write_checkpoint(dir: &Path, bytes: &[u8], last_seq: u64) -> Result<()> {
    write_atomic(dir, "checkpoint", bytes)?;
    info!(last_seq, bytes = bytes.len(), "checkpoint written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_proto::{LogRecord, MkdirOp, log_record::Op};

    #[test]
    fn frames_detect_torn_and_corrupt_tails() {
        let rec =
            LogRecord { seq: 1, time_ms: 2, op: Some(Op::Mkdir(MkdirOp { path: "/a".into(), ..Default::default() })) };
        let mut buf = Vec::new();
        encode_frame(&rec.encode_to_vec(), &mut buf);
        let one = buf.len();
        encode_frame(&rec.encode_to_vec(), &mut buf);
        let (back, next) = decode_frame::<LogRecord>(&buf, 0).unwrap().unwrap();
        assert_eq!((back, next), (rec, one));
        assert!(decode_frame::<LogRecord>(&buf, buf.len()).unwrap().is_none());
        assert_eq!(decode_frame::<LogRecord>(&buf[..buf.len() - 1], one), Err(FrameError::ShortPayload));
        assert_eq!(decode_frame::<LogRecord>(&buf[..one + 3], one), Err(FrameError::ShortHeader));
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(decode_frame::<LogRecord>(&bad, one), Err(FrameError::ChecksumMismatch));
    }
}
