//! The operation log: framed, CRC-checked `LogRecord`s in segment files
//! `log.<first_seq>`, written with group commit, plus checkpoints and
//! recovery.
//!
//! Frame: `u32 len (LE) | u32 crc32c(payload) (LE) | payload`.
//!
//! One writer thread owns the current segment. Appenders send their
//! operations over a bounded channel; the writer drains everything queued,
//! writes it, calls `sync_data` once and then answers every appender.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gfs_common::{Error, Result};
use gfs_proto::log_record::Op;
use gfs_proto::{Checkpoint, LogRecord};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Largest frame accepted on replay; anything larger is corruption.
const MAX_FRAME: u32 = 64 * 1024 * 1024;
/// Most commands folded into one group commit.
const MAX_BATCH: usize = 4096;

enum Cmd {
    Append { ops: Vec<Op>, time_ms: i64, reply: oneshot::Sender<Result<u64>> },
    Rotate { reply: oneshot::Sender<Result<u64>> },
    Close { reply: oneshot::Sender<Result<()>> },
}

struct Stats {
    last_seq: AtomicU64,
    since_checkpoint: AtomicU64,
    fsyncs: AtomicU64,
    poisoned: AtomicBool,
    /// Group fsync latency (`gfs_master_oplog_fsync_seconds`).
    fsync_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Stats {
    fn with_histogram(fsync_seconds: prometheus_client::metrics::histogram::Histogram) -> Self {
        Stats {
            last_seq: AtomicU64::new(0),
            since_checkpoint: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            fsync_seconds,
        }
    }
}

/// Handle to the log writer.
#[derive(Clone)]
pub struct Oplog {
    tx: mpsc::Sender<Cmd>,
    stats: Arc<Stats>,
    dir: PathBuf,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("log.{first_seq}"))
}

/// Returns the log segments in `dir` as (first_seq, path), sorted.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(format!("read dir {}", dir.display()), e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read dir entry", e))?;
        let name = entry.file_name();
        let Some(seq) = name.to_str().and_then(|n| n.strip_prefix("log.")).and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Fsyncs a directory so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(format!("fsync dir {}", dir.display()), e))
}

/// Encodes one frame.
pub fn encode_frame(rec: &LogRecord, out: &mut Vec<u8>) {
    let payload = rec.encode_to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Decodes the frame at `buf[off..]`: Ok(Some((record, next_off))), Ok(None)
/// at a clean end, Err(reason) for a torn or corrupt frame.
fn decode_frame(buf: &[u8], off: usize) -> std::result::Result<Option<(LogRecord, usize)>, &'static str> {
    if off == buf.len() {
        return Ok(None);
    }
    if buf.len() - off < 8 {
        return Err("short frame header");
    }
    let len = u32::from_le_bytes(buf[off..off + 4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(buf[off + 4..off + 8].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err("frame length out of range");
    }
    let end = off + 8 + len as usize;
    if end > buf.len() {
        return Err("short frame payload");
    }
    let payload = &buf[off + 8..end];
    if crc32c::crc32c(payload) != crc {
        return Err("checksum mismatch");
    }
    match LogRecord::decode(payload) {
        Ok(rec) if rec.op.is_some() => Ok(Some((rec, end))),
        Ok(_) => Err("record without operation"),
        Err(_) => Err("undecodable record"),
    }
}

/// Loads `checkpoint` from `dir`, if present.
pub fn load_checkpoint(dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join("checkpoint");
    match std::fs::read(&path) {
        Ok(b) => Checkpoint::decode(b.as_slice())
            .map(Some)
            .map_err(|e| Error::Internal(format!("checkpoint {} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// Writes `checkpoint.tmp`, fsyncs, renames it to `checkpoint`, fsyncs the
/// directory, then deletes segments starting before `keep_from_seq`.
pub fn write_checkpoint(dir: &Path, cp: &Checkpoint, keep_from_seq: u64) -> Result<()> {
    let tmp = dir.join("checkpoint.tmp");
    let fin = dir.join("checkpoint");
    let mut f = File::create(&tmp).map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    f.write_all(&cp.encode_to_vec()).and_then(|_| f.sync_all()).map_err(|e| Error::io("write checkpoint", e))?;
    drop(f);
    std::fs::rename(&tmp, &fin).map_err(|e| Error::io("rename checkpoint", e))?;
    sync_dir(dir)?;
    for (seq, path) in list_segments(dir)? {
        if seq < keep_from_seq {
            std::fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
        }
    }
    info!(last_seq = cp.last_seq, entries = cp.entries.len(), "checkpoint written");
    Ok(())
}

/// Replays every record with seq > `after` from the segments in `dir`,
/// calling `apply` in order. A torn or corrupt frame ends replay of its
/// segment: it is logged and the segment truncated there. A gap in the
/// sequence is an error. Returns the last applied seq.
pub fn replay(dir: &Path, after: u64, mut apply: impl FnMut(&LogRecord) -> Result<()>) -> Result<u64> {
    let mut last = after;
    for (first, path) in list_segments(dir)? {
        let buf = std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if first > last + 1 && !buf.is_empty() {
            return Err(gap(&path, last, first));
        }
        let mut off = 0;
        loop {
            match decode_frame(&buf, off) {
                Ok(None) => break,
                Ok(Some((rec, next))) => {
                    off = next;
                    if rec.seq <= last {
                        continue;
                    }
                    if rec.seq != last + 1 {
                        return Err(gap(&path, last, rec.seq));
                    }
                    apply(&rec)?;
                    last = rec.seq;
                }
                Err(reason) => {
                    warn!(file = %path.display(), offset = off, last_good_seq = last, reason, "operation log tail is torn or corrupt; truncating it there");
                    let f = OpenOptions::new().write(true).open(&path).map_err(|e| Error::io("open log", e))?;
                    f.set_len(off as u64).and_then(|_| f.sync_all()).map_err(|e| Error::io("truncate log", e))?;
                    break;
                }
            }
        }
    }
    Ok(last)
}

fn gap(path: &Path, last: u64, found: u64) -> Error {
    Error::Internal(format!(
        "operation log has a gap in {}: expected seq {} but found {found}; refusing to start (restore the missing log segment)",
        path.display(),
        last + 1
    ))
}

struct Writer {
    dir: PathBuf,
    file: File,
    next_seq: u64,
    buf: Vec<u8>,
    waiting: Vec<(oneshot::Sender<Result<u64>>, u64)>,
    stats: Arc<Stats>,
}

impl Writer {
    fn open_segment(dir: &Path, first_seq: u64) -> Result<File> {
        let path = segment_path(dir, first_seq);
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        sync_dir(dir)?;
        Ok(f)
    }

    fn flush(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let res = self.file.write_all(&self.buf).and_then(|_| self.file.sync_data());
        self.stats.fsync_seconds.observe(started.elapsed().as_secs_f64());
        self.buf.clear();
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        let waiting = std::mem::take(&mut self.waiting);
        match res {
            Ok(()) => {
                self.stats.last_seq.store(self.next_seq - 1, Ordering::Release);
                for (tx, seq) in waiting {
                    let _ = tx.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "operation log write failed; refusing further mutations");
                self.stats.poisoned.store(true, Ordering::Release);
                for (tx, _) in waiting {
                    let _ =
                        tx.send(Err(Error::io("operation log write", std::io::Error::new(e.kind(), e.to_string()))));
                }
            }
        }
    }

    fn append(&mut self, ops: Vec<Op>, time_ms: i64, reply: oneshot::Sender<Result<u64>>) {
        if self.stats.poisoned.load(Ordering::Acquire) {
            let _ = reply.send(Err(Error::Internal("operation log is failed".into())));
            return;
        }
        let n = ops.len() as u64;
        for op in ops {
            let rec = LogRecord { seq: self.next_seq, time_ms, op: Some(op) };
            encode_frame(&rec, &mut self.buf);
            self.next_seq += 1;
        }
        self.stats.since_checkpoint.fetch_add(n, Ordering::Relaxed);
        self.waiting.push((reply, self.next_seq - 1));
    }

    fn rotate(&mut self) -> Result<u64> {
        self.flush();
        if self.stats.poisoned.load(Ordering::Acquire) {
            return Err(Error::Internal("operation log is failed".into()));
        }
        self.file = Self::open_segment(&self.dir, self.next_seq)?;
        self.stats.since_checkpoint.store(0, Ordering::Relaxed);
        Ok(self.next_seq)
    }

    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            for cmd in batch {
                match cmd {
                    Cmd::Append { ops, time_ms, reply } => self.append(ops, time_ms, reply),
                    Cmd::Rotate { reply } => {
                        let _ = reply.send(self.rotate());
                    }
                    Cmd::Close { reply } => {
                        self.flush();
                        let _ = reply.send(Ok(()));
                        return;
                    }
                }
            }
            self.flush();
        }
        self.flush();
    }
}

impl Oplog {
    /// Starts a writer on a fresh segment `log.<next_seq>` in `dir`.
    pub fn open(dir: &Path, next_seq: u64) -> Result<Oplog> {
        Self::open_with(dir, next_seq, prometheus_client::metrics::histogram::Histogram::new([0.001]))
    }

    /// As [`Oplog::open`], observing each group write + fsync in `fsync_seconds`.
    pub fn open_with(
        dir: &Path,
        next_seq: u64,
        fsync_seconds: prometheus_client::metrics::histogram::Histogram,
    ) -> Result<Oplog> {
        let file = Writer::open_segment(dir, next_seq)?;
        let stats = Arc::new(Stats::with_histogram(fsync_seconds));
        stats.last_seq.store(next_seq - 1, Ordering::Release);
        let (tx, rx) = mpsc::channel(1024);
        let w = Writer {
            dir: dir.to_path_buf(),
            file,
            next_seq,
            buf: Vec::new(),
            waiting: Vec::new(),
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name("gfs-oplog".into())
            .spawn(move || w.run(rx))
            .map_err(|e| Error::io("spawn log writer", e))?;
        Ok(Oplog { tx, stats, dir: dir.to_path_buf() })
    }

    /// Appends one operation; returns its seq after it is fsynced.
    pub async fn append(&self, op: Op) -> Result<u64> {
        self.append_batch(vec![op], gfs_common::now_ms()).await
    }

    /// Appends operations with one timestamp; returns the last seq after
    /// they are fsynced.
    pub async fn append_batch(&self, ops: Vec<Op>, time_ms: i64) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Append { ops, time_ms, reply }).await?;
        rx.await.map_err(|_| closed())?
    }

    /// Flushes, then starts a new segment; returns its first seq.
    pub async fn rotate(&self) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Rotate { reply }).await?;
        rx.await.map_err(|_| closed())?
    }

    /// Flushes and fsyncs everything queued, then stops the writer.
    pub async fn close(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Close { reply }).await?;
        rx.await.map_err(|_| closed())?
    }

    async fn send(&self, cmd: Cmd) -> Result<()> {
        self.tx.send(cmd).await.map_err(|_| closed())
    }

    /// Seq of the last fsynced record.
    pub fn last_seq(&self) -> u64 {
        self.stats.last_seq.load(Ordering::Acquire)
    }

    /// Records appended since the last rotation.
    pub fn since_checkpoint(&self) -> u64 {
        self.stats.since_checkpoint.load(Ordering::Relaxed)
    }

    /// Number of fsyncs performed so far.
    pub fn fsync_count(&self) -> u64 {
        self.stats.fsyncs.load(Ordering::Relaxed)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn closed() -> Error {
    Error::Unavailable("operation log is closed (shutting down)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_proto::MkdirOp;

    fn op(i: u64) -> Op {
        Op::Mkdir(MkdirOp { path: format!("/d{i}") })
    }

    fn collect(dir: &Path, after: u64) -> (Vec<u64>, u64) {
        let mut seqs = vec![];
        let last = replay(dir, after, |r| {
            seqs.push(r.seq);
            Ok(())
        })
        .unwrap();
        (seqs, last)
    }

    #[tokio::test]
    async fn append_replay_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = Oplog::open(dir.path(), 1).unwrap();
        for i in 0..5 {
            assert_eq!(log.append(op(i)).await.unwrap(), i + 1);
        }
        log.close().await.unwrap();
        assert_eq!(collect(dir.path(), 0), ((1..=5).collect(), 5));
        // Torn tail: cut the last frame in half.
        let seg = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        assert_eq!(collect(dir.path(), 0), ((1..=4).collect(), 4));
        // The tail was truncated to the last good record.
        let len4 = std::fs::metadata(&seg).unwrap().len();
        // Garbage tail.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[7u8; 40]).unwrap();
        assert_eq!(collect(dir.path(), 0), ((1..=4).collect(), 4));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len4);
        // Records already in a checkpoint are skipped.
        assert_eq!(collect(dir.path(), 2), (vec![3, 4], 4));
    }

    #[tokio::test]
    async fn gap_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = Oplog::open(dir.path(), 1).unwrap();
        log.append(op(0)).await.unwrap();
        log.close().await.unwrap();
        let log = Oplog::open(dir.path(), 5).unwrap();
        log.append(op(0)).await.unwrap();
        log.close().await.unwrap();
        let err = replay(dir.path(), 0, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("gap"), "{err}");
    }

    #[tokio::test]
    async fn group_commit_shares_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let log = Oplog::open(dir.path(), 1).unwrap();
        let n = 200;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                tokio::spawn({
                    let log = log.clone();
                    async move { log.append(op(i)).await.unwrap() }
                })
            })
            .collect();
        let mut seqs = vec![];
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
        assert!(log.fsync_count() < n, "fsyncs {} for {n} appends", log.fsync_count());
        log.close().await.unwrap();
    }

    #[tokio::test]
    async fn rotate_and_checkpoint_delete_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = Oplog::open(dir.path(), 1).unwrap();
        log.append(op(1)).await.unwrap();
        let next = log.rotate().await.unwrap();
        assert_eq!(next, 2);
        write_checkpoint(dir.path(), &Checkpoint { last_seq: 1, next_handle: 1, ..Default::default() }, next).unwrap();
        log.append(op(2)).await.unwrap();
        log.close().await.unwrap();
        let segs: Vec<u64> = list_segments(dir.path()).unwrap().into_iter().map(|s| s.0).collect();
        assert_eq!(segs, vec![2]);
        let cp = load_checkpoint(dir.path()).unwrap().unwrap();
        assert_eq!(collect(dir.path(), cp.last_seq), (vec![2], 2));
    }
}
