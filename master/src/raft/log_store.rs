//! The Raft log of a master on disk, and its vote.
//!
//! Files in the data directory:
//! - `raft-log.<first_index>`: segments of frames
//!   `u32 len (LE) | u32 crc32c(payload) (LE) | RaftEntry`;
//! - `raft-vote`: the last vote (JSON), replaced atomically;
//! - `raft-purged`: the last purged log id (JSON), replaced atomically.
//!
//! Every write (append, truncate, purge, vote) goes through one writer
//! thread in submission order, as openraft requires. Appends queued
//! together share one `fdatasync` (group commit); each append's callback
//! runs after its fsync. All entries not yet purged are also kept in memory
//! (the snapshot policy bounds them), so reads never touch the disk.
//!
//! Recovery reads the segments in order. A torn tail (bad bytes at the end
//! of the last segment holding any, with no valid frame after them) ends
//! the log there: one warning names the file, offset and last good index,
//! and the file is truncated; that is the only change recovery makes.
//! Damage anywhere else, or a gap between segments, refuses to start and
//! changes nothing (the rule is in `segments`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gfs_common::{Error, Result};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::segments::{Bad, Piece, Verdict, judge, later_with_bytes, list_segments, scan, segment_path};
use super::{Entry, NodeId, TypeConfig, entry_to_proto};
use crate::oplog::{encode_frame, sync_dir, write_atomic};

/// Entries per segment before the writer starts a new one (purging deletes
/// whole segments).
const SEGMENT_ENTRIES: usize = 8192;
/// Most commands folded into one group commit.
const MAX_BATCH: usize = 4096;

type StoreError = StorageError<NodeId>;

enum Cmd {
    Append { frames: Vec<u8>, indexes: Vec<(u64, usize)>, done: LogFlushed<TypeConfig> },
    Truncate { index: u64, reply: oneshot::Sender<Result<()>> },
    Purge { upto: LogId<NodeId>, reply: oneshot::Sender<Result<()>> },
    Vote { vote: Vote<NodeId>, reply: oneshot::Sender<Result<()>> },
    Close { reply: oneshot::Sender<()> },
}

#[derive(Default)]
struct Mem {
    entries: BTreeMap<u64, Entry>,
    purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

struct Inner {
    mem: Mutex<Mem>,
    cut: bool,
    tx: mpsc::Sender<Cmd>,
    fsync_seconds: prometheus_client::metrics::histogram::Histogram,
}

/// The log store handed to openraft (and its reader: a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

/// Reads a small JSON state file (`raft-vote`, `raft-purged`); None when
/// it does not exist.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Internal(format!("{} is corrupt: {e}; refusing to start", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// What recovery found on disk.
struct Recovered {
    mem: Mem,
    /// Recovery cut a torn tail.
    cut: bool,
    /// Index -> (segment first index, byte offset) of every entry on disk.
    offsets: BTreeMap<u64, (u64, u64)>,
    segments: BTreeMap<u64, PathBuf>,
}

/// The refusal to start on a damaged log: names the file, the offset, the
/// last good index and why it is not a torn tail.
fn damaged(dir: &Path, path: &Path, bad: &Bad, last: Option<u64>, why: &str) -> Error {
    let last = last.map_or_else(|| "none".to_string(), |l| l.to_string());
    Error::Internal(format!(
        "raft log {} is damaged at byte offset {} ({}); last good index {last}; {why}, so this is not a torn \
         tail. Refusing to start; nothing was changed. Inspect it with `gfs-master check-log --data-dir {}` \
         and rebuild this master from its group (README: Rebuilding a damaged master)",
        path.display(),
        bad.offset,
        bad.reason,
        dir.display()
    ))
}

/// Cuts a torn tail: truncates `path` at `offset` and removes the later
/// segments (empty, or the tail would be damage).
fn cut_torn_tail(path: &Path, offset: u64, later: &[(u64, PathBuf)]) -> Result<()> {
    let f = OpenOptions::new().write(true).open(path).map_err(|e| Error::io("open log", e))?;
    f.set_len(offset).and_then(|_| f.sync_all()).map_err(|e| Error::io("truncate log", e))?;
    for (_, p) in later {
        warn!(file = %p.display(), "removing empty log segment after a torn tail");
        std::fs::remove_file(p).map_err(|e| Error::io(format!("remove {}", p.display()), e))?;
    }
    Ok(())
}

/// Adds a recovered entry to `mem`; `last` is the index of the previous one.
fn take_entry(mem: &mut Mem, last: &mut Option<u64>, path: &Path, entry: Entry) -> Result<()> {
    let index = entry.log_id.index;
    if mem.purged.is_some_and(|p| index <= p.index) {
        return Ok(());
    }
    match *last {
        // A later segment rewrote a truncated suffix.
        Some(l) if index <= l => {
            mem.entries.split_off(&index);
        }
        Some(l) if index != l + 1 => {
            return Err(Error::Internal(format!(
                "raft log has a gap in {}: expected index {} but found {index}; refusing to start",
                path.display(),
                l + 1
            )));
        }
        _ => {}
    }
    mem.entries.insert(index, entry);
    *last = Some(index);
    Ok(())
}

/// Reads the log in `dir`. A torn tail is cut (the only change recovery
/// ever makes to the log); damage refuses to start (see `segments`).
fn recover(dir: &Path) -> Result<Recovered> {
    let mut mem = Mem {
        vote: read_json(&dir.join("raft-vote"))?,
        purged: read_json(&dir.join("raft-purged"))?,
        ..Default::default()
    };
    let mut offsets = BTreeMap::new();
    let mut segments = BTreeMap::new();
    let mut last: Option<u64> = mem.purged.map(|p| p.index);
    let listed = list_segments(dir)?;
    for (i, (first, path)) in listed.iter().enumerate() {
        let buf = std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        segments.insert(*first, path.clone());
        for piece in scan(&buf, last, true) {
            let bad = match piece {
                Piece::Frame(f) => {
                    offsets.insert(f.entry.log_id.index, (*first, f.offset));
                    take_entry(&mut mem, &mut last, path, f.entry)?;
                    continue;
                }
                Piece::Bad(b) => b,
            };
            let later = later_with_bytes(&listed, i)?;
            if let Verdict::Damage(why) = judge(&bad, later.as_ref().map(|(p, n)| (p.as_path(), *n))) {
                return Err(damaged(dir, path, &bad, last, &why));
            }
            warn!(
                file = %path.display(),
                offset = bad.offset,
                last_good_index = ?last,
                reason = %bad.reason,
                "raft log tail is torn: recovery cuts it at the last valid entry"
            );
            cut_torn_tail(path, bad.offset, &listed[i + 1..])?;
            return Ok(Recovered { mem, cut: true, offsets, segments });
        }
    }
    Ok(Recovered { mem, cut: false, offsets, segments })
}

struct Writer {
    dir: PathBuf,
    file: File,
    current: u64,
    current_entries: usize,
    segments: BTreeMap<u64, PathBuf>,
    offsets: BTreeMap<u64, (u64, u64)>,
    file_len: u64,
    buf: Vec<u8>,
    waiting: Vec<LogFlushed<TypeConfig>>,
    poisoned: Option<String>,
    fsync_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Writer {
    fn open_segment(dir: &Path, first: u64) -> std::io::Result<File> {
        let f = OpenOptions::new().create(true).write(true).truncate(true).open(segment_path(dir, first))?;
        File::open(dir)?.sync_all()?;
        Ok(f)
    }

    fn flush(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let res = match &self.poisoned {
            Some(p) => Err(std::io::Error::other(p.clone())),
            None => self.file.write_all(&self.buf).and_then(|_| self.file.sync_data()),
        };
        self.fsync_seconds.observe(started.elapsed().as_secs_f64());
        self.file_len += self.buf.len() as u64;
        self.buf.clear();
        if let Err(e) = &res
            && self.poisoned.is_none()
        {
            tracing::error!(error = %e, "raft log write failed; this master refuses further log writes");
            self.poisoned = Some(format!("raft log write failed earlier: {e}"));
        }
        for done in self.waiting.drain(..) {
            done.log_io_completed(res.as_ref().map(|_| ()).map_err(|e| std::io::Error::new(e.kind(), e.to_string())));
        }
    }

    fn append(&mut self, frames: Vec<u8>, indexes: Vec<(u64, usize)>, done: LogFlushed<TypeConfig>) {
        if self.current_entries >= SEGMENT_ENTRIES
            && let Some(&(first, _)) = indexes.first()
            && let Err(e) = self.rotate(first)
        {
            self.poisoned.get_or_insert(format!("cannot start log segment {first}: {e}"));
        }
        let base = self.file_len + self.buf.len() as u64;
        for (index, off) in indexes {
            self.offsets.insert(index, (self.current, base + off as u64));
            self.current_entries += 1;
        }
        self.buf.extend_from_slice(&frames);
        self.waiting.push(done);
    }

    fn rotate(&mut self, first: u64) -> std::io::Result<()> {
        self.flush();
        self.file = Self::open_segment(&self.dir, first)?;
        self.segments.insert(first, segment_path(&self.dir, first));
        self.current = first;
        self.current_entries = 0;
        self.file_len = 0;
        Ok(())
    }

    fn truncate(&mut self, index: u64) -> Result<()> {
        self.flush();
        let Some(&(seg, off)) = self.offsets.get(&index) else { return Ok(()) };
        for (first, path) in self.segments.split_off(&(seg + 1)) {
            std::fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
            let _ = first;
        }
        self.offsets.split_off(&index);
        let path = segment_path(&self.dir, seg);
        let f = OpenOptions::new().write(true).open(&path).map_err(|e| Error::io("open log", e))?;
        f.set_len(off).and_then(|_| f.sync_all()).map_err(|e| Error::io("truncate log", e))?;
        sync_dir(&self.dir)?;
        // Continue in a fresh segment after the truncated one.
        self.rotate(index).map_err(|e| Error::io("start log segment", e))
    }

    fn purge(&mut self, upto: LogId<NodeId>) -> Result<()> {
        self.flush();
        write_atomic(&self.dir, "raft-purged", &serde_json::to_vec(&upto).expect("log id serializes"))?;
        // A segment can go when the next one starts at or before upto + 1.
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for w in firsts.windows(2) {
            if w[1] <= upto.index + 1
                && w[0] != self.current
                && let Some(path) = self.segments.remove(&w[0])
            {
                std::fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
            }
        }
        self.offsets = self.offsets.split_off(&(upto.index + 1));
        Ok(())
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
                    Cmd::Append { frames, indexes, done } => self.append(frames, indexes, done),
                    Cmd::Truncate { index, reply } => {
                        let _ = reply.send(self.truncate(index));
                    }
                    Cmd::Purge { upto, reply } => {
                        let _ = reply.send(self.purge(upto));
                    }
                    Cmd::Vote { vote, reply } => {
                        self.flush();
                        let bytes = serde_json::to_vec(&vote).expect("vote serializes");
                        let _ = reply.send(write_atomic(&self.dir, "raft-vote", &bytes));
                    }
                    Cmd::Close { reply } => {
                        self.flush();
                        let _ = reply.send(());
                        return;
                    }
                }
            }
            self.flush();
        }
        self.flush();
    }
}

fn io_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StorageIOError::write_logs(AnyError::error(format!("{what}: {e}"))).into()
}

impl LogStore {
    /// Recovers the log in `dir` and starts its writer.
    pub fn open(dir: &Path, fsync_seconds: prometheus_client::metrics::histogram::Histogram) -> Result<LogStore> {
        let Recovered { mem, cut, offsets, mut segments } = recover(dir)?;
        let next = mem.entries.keys().next_back().map(|i| i + 1).or(mem.purged.map(|p| p.index + 1)).unwrap_or(0);
        info!(
            entries = mem.entries.len(),
            first = ?mem.entries.keys().next(),
            last = ?mem.entries.keys().next_back(),
            purged = ?mem.purged.map(|p| p.index),
            "raft log recovered"
        );
        let file = Writer::open_segment(dir, next).map_err(|e| Error::io("open log segment", e))?;
        segments.insert(next, segment_path(dir, next));
        let (tx, rx) = mpsc::channel(1024);
        let w = Writer {
            dir: dir.to_path_buf(),
            file,
            current: next,
            current_entries: 0,
            segments,
            offsets,
            file_len: 0,
            buf: Vec::new(),
            waiting: Vec::new(),
            poisoned: None,
            fsync_seconds: fsync_seconds.clone(),
        };
        std::thread::Builder::new()
            .name("gfs-raft-log".into())
            .spawn(move || w.run(rx))
            .map_err(|e| Error::io("spawn log writer", e))?;
        Ok(LogStore { inner: Arc::new(Inner { mem: Mutex::new(mem), cut, tx, fsync_seconds }) })
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, cmd: Cmd) -> std::result::Result<(), StoreError> {
        self.inner.tx.send(cmd).await.map_err(|_| io_err("raft log", "writer stopped"))
    }

    /// Flushes and stops the writer.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.inner.tx.send(Cmd::Close { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Index of the last entry, if any.
    pub fn last_index(&self) -> Option<u64> {
        let m = self.mem();
        m.entries.keys().next_back().copied().or(m.purged.map(|p| p.index))
    }

    /// The membership of the last membership entry still in the log.
    pub fn last_membership(&self) -> Option<openraft::Membership<NodeId, openraft::BasicNode>> {
        self.mem().entries.values().rev().find_map(|e| match &e.payload {
            openraft::EntryPayload::Membership(m) => Some(m.clone()),
            _ => None,
        })
    }

    /// Moves this node's vote to the next term, voting for itself (what a
    /// candidate does first). Used when a group of one restarts: openraft
    /// would otherwise resume leadership in the same term, and the term is
    /// the epoch that fences grants and spaces chunk handles.
    pub async fn advance_term(&mut self, me: NodeId) -> Result<()> {
        let Some(v) = self.mem().vote else { return Ok(()) };
        let next = Vote::new(v.leader_id.term + 1, me);
        RaftLogStorage::save_vote(self, &next).await.map_err(|e| Error::Internal(format!("save vote: {e}")))
    }

    /// When recovery cut the log tail and the vote says this node was the
    /// leader, turns it back into a plain vote for itself in the same term,
    /// so that openraft does not resume leadership at startup with a log
    /// shorter than what it replicated: the group elects a leader as usual.
    /// Safe: the node still voted for itself in that term and nobody else.
    pub async fn forget_own_leadership(&mut self, me: NodeId) -> Result<()> {
        let Some(v) = self.mem().vote else { return Ok(()) };
        if !(self.inner.cut && v.is_committed() && v.leader_id.node_id == me) {
            return Ok(());
        }
        let plain = Vote::new(v.leader_id.term, me);
        RaftLogStorage::save_vote(self, &plain).await.map_err(|e| Error::Internal(format!("save vote: {e}")))
    }

    /// The fsync histogram (shared with metrics).
    pub fn fsync_histogram(&self) -> &prometheus_client::metrics::histogram::Histogram {
        &self.inner.fsync_seconds
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StoreError> {
        Ok(self.mem().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, StoreError> {
        let m = self.mem();
        let last = m.entries.values().next_back().map(|e| e.log_id).or(m.purged);
        Ok(LogState { last_purged_log_id: m.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> std::result::Result<(), StoreError> {
        self.mem().vote = Some(*vote);
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Vote { vote: *vote, reply }).await?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageIOError::write_vote(AnyError::error(e.to_string())).into()),
            Err(_) => Err(io_err("save vote", "writer stopped")),
        }
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<NodeId>>, StoreError> {
        Ok(self.mem().vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> std::result::Result<(), StoreError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut frames = Vec::new();
        let mut indexes = Vec::new();
        {
            let mut m = self.mem();
            for e in entries {
                indexes.push((e.log_id.index, frames.len()));
                encode_frame(&entry_to_proto(&e).encode_to_vec(), &mut frames);
                m.entries.insert(e.log_id.index, e);
            }
        }
        self.send(Cmd::Append { frames, indexes, done: callback }).await
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> std::result::Result<(), StoreError> {
        self.mem().entries.split_off(&log_id.index);
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Truncate { index: log_id.index, reply }).await?;
        rx.await.map_err(|_| io_err("truncate", "writer stopped"))?.map_err(|e| io_err("truncate", e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> std::result::Result<(), StoreError> {
        {
            let mut m = self.mem();
            m.entries = m.entries.split_off(&(log_id.index + 1));
            m.purged = Some(log_id);
        }
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Purge { upto: log_id, reply }).await?;
        rx.await.map_err(|_| io_err("purge", "writer stopped"))?.map_err(|e| io_err("purge", e))
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
