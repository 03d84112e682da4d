//! Chunk storage: one data file and one metadata file per chunk, with one
//! CRC32C per 64 KiB block.
//!
//! Layout under `data_dir/chunks/`:
//! - `<handle:016x>.chunk`: the chunk bytes (plain file, grows as written).
//! - `<handle:016x>.meta`: see [`crate::meta`] for the binary format.
//!
//! Every chunk has an I/O lock (readers share it, writers hold it alone) so a
//! read never sees data whose checksum is not yet updated, and a mutation
//! lock that the service holds across a whole replicated mutation.
//!
//! A full disk fails a mutation before it changes anything: the blocks of
//! the data and of the metadata slot are reserved first (`space.rs`), and
//! a mutation that fails anyway cuts the data file back to the recorded
//! length, so the replica stays exactly as last acknowledged.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use gfs_common::bufpool::BufPool;
use gfs_common::{BLOCK_SIZE, Error, MAX_IO_SIZE, Result};
use gfs_proto::ChunkReport;

use crate::meta::{self, Meta};
use crate::serial::{SerialCheck, Serials};
use crate::space;

const BS: u64 = BLOCK_SIZE;
static ZEROS: [u8; BLOCK_SIZE as usize] = [0; BLOCK_SIZE as usize];

/// In-memory state of one chunk replica.
pub struct ChunkState {
    handle: u64,
    state: Mutex<MetaState>,
    io: tokio::sync::RwLock<()>,
    /// Serializes mutations on this chunk; the primary holds it across the
    /// whole replicated mutation, a secondary while applying one.
    pub mutation: tokio::sync::Mutex<()>,
    /// Record appends waiting for the next group (primary only).
    pub(crate) appends: std::sync::Mutex<Vec<crate::mutation::QueuedAppend>>,
}

struct MetaState {
    meta: Meta,
    /// Mutation serials applied at this version (`serial.rs`).
    serials: Serials,
    deleted: bool,
    /// False while a clone is being copied in: not reported, not served.
    published: bool,
    /// Last local mutation (None: none since this process started).
    last_mutation: Option<std::time::Instant>,
}

impl ChunkState {
    fn new(handle: u64, meta: Meta, serials: Serials) -> Self {
        Self {
            handle,
            state: Mutex::new(MetaState { meta, serials, deleted: false, published: true, last_mutation: None }),
            io: tokio::sync::RwLock::new(()),
            mutation: tokio::sync::Mutex::new(()),
            appends: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MetaState> {
        self.state.lock().expect("chunk state lock")
    }

    /// Returns the chunk handle.
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// Returns the replica's version.
    pub fn version(&self) -> u64 {
        self.lock().meta.version
    }

    /// Returns the replica's length in bytes.
    pub fn length(&self) -> u64 {
        self.lock().meta.length
    }

    /// Returns the serial a primary gives its next mutation at this version.
    pub(crate) fn next_serial(&self) -> u64 {
        self.lock().serials.next()
    }

    /// Judges a secondary's mutation serial (`serial.rs`).
    pub(crate) fn check_serial(&self, serial: u64) -> Result<SerialCheck> {
        self.lock().serials.check(self.handle, serial)
    }

    /// Records that mutation `serial` was applied (or used by the primary).
    pub(crate) fn record_serial(&self, serial: u64) {
        self.lock().serials.record(serial);
    }

    /// Fails with `StaleVersion` unless the replica holds exactly `want`.
    pub fn check_version(&self, want: u64) -> Result<()> {
        let have = self.version();
        if have != want {
            return Err(Error::StaleVersion { handle: self.handle, have, want });
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Meta> {
        let s = self.lock();
        if s.deleted {
            return Err(Error::ChunkNotFound { handle: self.handle });
        }
        Ok(s.meta.clone())
    }

    fn report(&self) -> Option<ChunkReport> {
        let s = self.lock();
        s.published.then_some(ChunkReport { handle: self.handle, version: s.meta.version, length: s.meta.length })
    }

    /// True once the replica may be reported and served.
    pub fn is_published(&self) -> bool {
        self.lock().published
    }

    /// True when not mutated within `idle` (or never since start).
    pub fn is_idle(&self, idle: std::time::Duration) -> bool {
        self.lock().last_mutation.is_none_or(|t| t.elapsed() >= idle)
    }
}

/// Paths of one chunk's files.
#[derive(Clone)]
struct ChunkPaths {
    dir: PathBuf,
    data: PathBuf,
    meta: PathBuf,
}

/// All chunk replicas of this server.
pub struct Store {
    dir: PathBuf,
    chunks: RwLock<HashMap<u64, Arc<ChunkState>>>,
    changed: Mutex<HashSet<u64>>,
    /// Report sequence: raised after every visible change to a replica.
    /// Starts at the wall clock in microseconds so it keeps growing across
    /// restarts.
    seq: std::sync::atomic::AtomicU64,
    create_lock: tokio::sync::Mutex<()>,
    pool: BufPool,
    sync: bool,
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir/chunks` and loads
    /// every chunk's metadata. `sync` makes every mutation fdatasync data and
    /// metadata before returning.
    pub async fn open(data_dir: &Path, sync: bool) -> Result<Store> {
        let dir = data_dir.join("chunks");
        let d = dir.clone();
        let loaded = tokio::task::spawn_blocking(move || load_all(&d)).await.map_err(join_err)??;
        // Where the primaries' serial counts are is unknown after a restart.
        let chunks =
            loaded.into_iter().map(|(h, m)| (h, Arc::new(ChunkState::new(h, m, Serials::unknown())))).collect();
        Ok(Store {
            dir,
            chunks: RwLock::new(chunks),
            changed: Mutex::new(HashSet::new()),
            seq: std::sync::atomic::AtomicU64::new(gfs_common::now_ms().max(0) as u64 * 1000),
            create_lock: tokio::sync::Mutex::new(()),
            pool: BufPool::new((MAX_IO_SIZE + 2 * BS) as usize, 16),
            sync,
        })
    }

    /// Returns the data file path of a chunk under `data_dir`.
    pub fn chunk_path(data_dir: &Path, handle: u64) -> PathBuf {
        data_dir.join("chunks").join(format!("{handle:016x}.chunk"))
    }

    fn paths(&self, handle: u64) -> ChunkPaths {
        ChunkPaths {
            dir: self.dir.clone(),
            data: self.dir.join(format!("{handle:016x}.chunk")),
            meta: self.dir.join(format!("{handle:016x}.meta")),
        }
    }

    /// Returns the state of a chunk, or `ChunkNotFound`.
    pub fn get(&self, handle: u64) -> Result<Arc<ChunkState>> {
        self.chunks.read().expect("store lock").get(&handle).cloned().ok_or(Error::ChunkNotFound { handle })
    }

    fn mark_changed(&self, handle: u64) {
        self.changed.lock().expect("changed lock").insert(handle);
        self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Returns the report sequence. Read it *before* building a report: every
    /// change counted in it is then visible in the report.
    pub fn report_seq(&self) -> u64 {
        self.seq.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Creates an empty chunk at `version`; returns the existing one if the
    /// handle is already present.
    pub async fn create(&self, handle: u64, version: u64) -> Result<Arc<ChunkState>> {
        let _g = self.create_lock.lock().await;
        if let Ok(c) = self.get(handle) {
            return Ok(c);
        }
        let paths = self.paths(handle);
        let sync = self.sync;
        let mut m = Meta::new(version);
        let meta = blocking(move || {
            let res = (|| {
                let f = OpenOptions::new().create(true).write(true).truncate(true).open(&paths.data);
                let f = f.map_err(|e| Error::io("create chunk file", e))?;
                if sync {
                    f.sync_all().map_err(|e| Error::io("sync chunk file", e))?;
                }
                create_meta(&paths, &mut m, sync)
            })();
            if res.is_err() {
                // Nothing half-created stays behind (e.g. the disk is full).
                let _ = remove_if_exists(&paths.meta);
                let _ = remove_if_exists(&paths.data);
            }
            res.map(|()| m)
        })
        .await?;
        let state = Arc::new(ChunkState::new(handle, meta, Serials::fresh()));
        self.chunks.write().expect("store lock").insert(handle, state.clone());
        self.mark_changed(handle);
        tracing::debug!(handle, version, "chunk created");
        Ok(state)
    }

    /// Applies `f` to a chunk's metadata under its exclusive I/O lock, on a
    /// blocking thread; the in-memory state changes only if `f` succeeds.
    async fn mutate<F>(&self, handle: u64, f: F) -> Result<u64>
    where
        F: FnOnce(&ChunkPaths, Meta) -> Result<Meta> + Send + 'static,
    {
        let chunk = self.get(handle)?;
        let paths = self.paths(handle);
        // The files and the in-memory state change together in a task of
        // their own: a caller that goes away mid-way (its future dropped)
        // cannot leave the state (length, checksums) behind the files.
        let len = tokio::spawn(async move {
            let _io = chunk.io.write().await;
            let meta = chunk.snapshot()?;
            let new = blocking(move || f(&paths, meta)).await?;
            let len = new.length;
            let mut s = chunk.lock();
            if s.meta.version != new.version {
                s.serials = Serials::fresh();
            }
            s.meta = new;
            s.last_mutation = Some(std::time::Instant::now());
            Ok::<_, Error>(len)
        })
        .await
        .map_err(join_err)??;
        self.mark_changed(handle);
        Ok(len)
    }

    /// Sets the replica's version (persisted). A version change resets the
    /// mutation serial numbers.
    pub async fn set_version(&self, handle: u64, version: u64) -> Result<()> {
        if self.get(handle)?.version() == version {
            return Ok(());
        }
        let sync = self.sync;
        self.mutate(handle, move |paths, mut meta| {
            meta.version = version;
            write_meta(paths, &mut meta, sync)?;
            Ok(meta)
        })
        .await?;
        Ok(())
    }

    /// Writes `data` at `offset`, zero-filling any gap past the current
    /// length. Returns the new chunk length.
    pub async fn write(&self, handle: u64, offset: u64, data: Bytes) -> Result<u64> {
        self.write_records(handle, offset, vec![data]).await
    }

    /// Writes `records` back to back from `offset` with one sync (a group
    /// of record appends). Returns the new chunk length.
    pub async fn write_records(&self, handle: u64, offset: u64, records: Vec<Bytes>) -> Result<u64> {
        let total = records.iter().try_fold(0u64, |sum, d| sum.checked_add(d.len() as u64));
        let end = check_end("write", total.and_then(|t| offset.checked_add(t)))?;
        let sync = self.sync;
        self.mutate(handle, move |paths, meta| {
            let file = open_rw(&paths.data)?;
            let mut new = meta.clone();
            rolled_back(&file, &meta, || {
                if offset > new.length {
                    zero_fill(handle, &file, &mut new, offset)?;
                }
                space::reserve(&file, offset, end - offset, "reserve chunk data")?;
                reserve_meta(paths, new.seq + 1, new.length.max(end))?;
                let mut at = offset;
                for data in records.iter().filter(|d| !d.is_empty()) {
                    write_data(handle, &file, &mut new, at, data)?;
                    at += data.len() as u64;
                }
                finish(paths, &file, &mut new, sync)
            })?;
            Ok(new)
        })
        .await
    }

    /// Extends the chunk with zeros up to `to_len` (no-op if already that
    /// long). Returns the new chunk length.
    pub async fn pad(&self, handle: u64, to_len: u64) -> Result<u64> {
        check_end("pad", Some(to_len))?;
        let sync = self.sync;
        self.mutate(handle, move |paths, meta| {
            if to_len <= meta.length {
                return Ok(meta);
            }
            let file = open_rw(&paths.data)?;
            let mut new = meta.clone();
            rolled_back(&file, &meta, || {
                zero_fill(handle, &file, &mut new, to_len)?;
                finish(paths, &file, &mut new, sync)
            })?;
            Ok(new)
        })
        .await
    }

    /// Reads up to `len` bytes at `offset` from a replica that must hold
    /// exactly `version`, verifying the checksum of every block touched.
    /// Returns the data (shorter at the end of the chunk) and the length.
    pub async fn read(&self, handle: u64, version: u64, offset: u64, len: u64) -> Result<(Bytes, u64)> {
        let chunk = self.get(handle)?;
        let _io = chunk.io.read().await;
        let meta = chunk.snapshot()?;
        if meta.version != version {
            return Err(Error::StaleVersion { handle, have: meta.version, want: version });
        }
        let end = offset.saturating_add(len.min(MAX_IO_SIZE)).min(meta.length);
        if offset >= end {
            return Ok((Bytes::new(), meta.length));
        }
        let b0 = offset / BS;
        let b1 = (end - 1) / BS;
        let crcs = meta.crcs[b0 as usize..=b1 as usize].to_vec();
        let start = b0 * BS;
        let region_end = ((b1 + 1) * BS).min(meta.length);
        let path = self.paths(handle).data;
        let pool = self.pool.clone();
        let buf = blocking(move || {
            let file = File::open(&path).map_err(|e| Error::io("open chunk file", e))?;
            let mut buf = pool.get();
            buf.resize((region_end - start) as usize, 0);
            file.read_exact_at(&mut buf, start).map_err(|e| short_read(handle, e))?;
            for (i, block) in buf.chunks(BS as usize).enumerate() {
                verify_block(handle, b0 + i as u64, crcs[i], block)?;
            }
            Ok(buf)
        })
        .await?;
        let data = buf.freeze().slice((offset - start) as usize..(end - start) as usize);
        Ok((data, meta.length))
    }

    /// Deletes a replica's files. Returns false if it was not present.
    pub async fn delete(&self, handle: u64) -> Result<bool> {
        let Ok(chunk) = self.get(handle) else {
            return Ok(false);
        };
        let _io = chunk.io.write().await;
        chunk.lock().deleted = true;
        self.chunks.write().expect("store lock").remove(&handle);
        self.changed.lock().expect("changed lock").remove(&handle);
        self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let paths = self.paths(handle);
        blocking(move || {
            remove_if_exists(&paths.data)?;
            remove_if_exists(&paths.meta)
        })
        .await?;
        tracing::info!(handle, "chunk deleted");
        Ok(true)
    }

    /// Number of published chunks.
    pub fn published_count(&self) -> usize {
        self.chunks.read().expect("store lock").values().filter(|c| c.is_published()).count()
    }

    /// Returns a report of every published chunk.
    pub fn list(&self) -> Vec<ChunkReport> {
        let chunks: Vec<_> = self.chunks.read().expect("store lock").values().cloned().collect();
        chunks.iter().filter_map(|c| c.report()).collect()
    }

    /// Returns reports of published chunks changed since the last call.
    pub fn take_changed(&self) -> Vec<ChunkReport> {
        let handles: Vec<u64> = self.changed.lock().expect("changed lock").drain().collect();
        handles.into_iter().filter_map(|h| self.get(h).ok()).filter_map(|c| c.report()).collect()
    }

    /// Every chunk state, by handle.
    pub fn all(&self) -> Vec<Arc<ChunkState>> {
        let mut v: Vec<_> = self.chunks.read().expect("store lock").values().cloned().collect();
        v.sort_by_key(|c| c.handle);
        v
    }

    /// Creates an unpublished replica for a clone, at version 0 on disk so
    /// that a crash mid-copy leaves a stale replica, never a short one.
    pub async fn create_clone(&self, handle: u64) -> Result<Arc<ChunkState>> {
        if self.get(handle).is_ok() {
            return Err(Error::AlreadyExists { path: format!("chunk {handle:#x}") });
        }
        let c = self.create(handle, 0).await?;
        c.lock().published = false;
        Ok(c)
    }

    /// Gives a cloned replica its version and makes it visible.
    pub async fn publish(&self, handle: u64, version: u64) -> Result<()> {
        self.set_version(handle, version).await?;
        self.get(handle)?.lock().published = true;
        self.mark_changed(handle);
        Ok(())
    }

    /// Returns the sum of all chunk lengths.
    pub fn used_bytes(&self) -> u64 {
        self.chunks.read().expect("store lock").values().map(|c| c.length()).sum()
    }

    /// Flushes every chunk's files to disk (used at shutdown when mutations
    /// were not synced one by one).
    pub async fn sync_all(&self) -> Result<()> {
        let handles: Vec<u64> = self.chunks.read().expect("store lock").keys().copied().collect();
        let paths: Vec<ChunkPaths> = handles.into_iter().map(|h| self.paths(h)).collect();
        let dir = self.dir.clone();
        blocking(move || {
            for p in &paths {
                for f in [&p.data, &p.meta] {
                    if let Ok(file) = File::open(f) {
                        file.sync_all().map_err(|e| Error::io("sync chunk", e))?;
                    }
                }
            }
            sync_dir(&dir)
        })
        .await
    }
}

/// Runs blocking file I/O off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(join_err)?
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::Internal(format!("blocking task failed: {e}"))
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| Error::io("open chunk file", e))
}

fn short_read(handle: u64, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return Error::Corrupt { handle, detail: "data file shorter than recorded length".into() };
    }
    Error::io("read chunk file", e)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove chunk file", e)),
        _ => Ok(()),
    }
}

fn verify_block(handle: u64, block: u64, want: u32, data: &[u8]) -> Result<()> {
    let got = crc32c::crc32c(data);
    if got != want {
        return Err(Error::Corrupt { handle, detail: format!("block {block}: crc32c {got:08x}, expected {want:08x}") });
    }
    Ok(())
}

/// Reads the existing bytes of block `b` (up to `meta.length`) and verifies
/// them against the stored checksum.
fn read_block(handle: u64, file: &File, meta: &Meta, b: u64) -> Result<Vec<u8>> {
    let start = b * BS;
    let end = (start + BS).min(meta.length);
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start).map_err(|e| short_read(handle, e))?;
    verify_block(handle, b, meta.crcs[b as usize], &buf)?;
    Ok(buf)
}

/// Extends the chunk with zeros from `meta.length` to `to` and updates the
/// checksums of the blocks involved. The old partial last block is verified
/// first so a corrupt block is never re-checksummed.
/// The end offset of a mutation, refused past the largest chunk a `.meta`
/// slot can describe (or past `u64::MAX`: `None`). The RPC handlers check
/// their requests first; this keeps the store's own arithmetic in bounds
/// whoever calls it.
fn check_end(what: &str, end: Option<u64>) -> Result<u64> {
    match end {
        Some(end) if end <= meta::MAX_CHUNK_LEN => Ok(end),
        _ => Err(Error::TooLarge {
            what: format!("{what} end offset"),
            size: end.unwrap_or(u64::MAX),
            limit: meta::MAX_CHUNK_LEN,
        }),
    }
}

fn zero_fill(handle: u64, file: &File, meta: &mut Meta, to: u64) -> Result<()> {
    let old = meta.length;
    let first = old / BS;
    let head_crc =
        if !old.is_multiple_of(BS) { Some(crc32c::crc32c(&read_block(handle, file, meta, first)?)) } else { None };
    // Truncate first so bytes of an earlier failed write past `old` are zeroed.
    file.set_len(old).map_err(|e| Error::io("truncate chunk file", e))?;
    file.set_len(to).map_err(|e| Error::io("extend chunk file", e))?;
    meta.crcs.truncate(first as usize);
    for b in first..to.div_ceil(BS) {
        let bs = b * BS;
        let be = (bs + BS).min(to);
        let crc = match head_crc {
            Some(c) if b == first => crc32c::crc32c_append(c, &ZEROS[..(be - old) as usize]),
            _ => crc32c::crc32c(&ZEROS[..(be - bs) as usize]),
        };
        meta.crcs.push(crc);
    }
    meta.length = to;
    Ok(())
}

/// Writes `data` at `offset` (≤ current length) and recomputes the
/// checksums of every touched block, merging with verified old bytes in
/// partially covered first/last blocks.
fn write_data(handle: u64, file: &File, meta: &mut Meta, offset: u64, data: &[u8]) -> Result<()> {
    let cur = meta.length;
    let end = offset + data.len() as u64;
    let new_len = cur.max(end);
    let (b0, b1) = (offset / BS, (end - 1) / BS);
    let head = if !offset.is_multiple_of(BS) { Some(read_block(handle, file, meta, b0)?) } else { None };
    let tail_end = ((b1 + 1) * BS).min(cur);
    let tail = if end < tail_end {
        match &head {
            Some(h) if b0 == b1 => Some(h.clone()),
            _ => Some(read_block(handle, file, meta, b1)?),
        }
    } else {
        None
    };
    for b in b0..=b1 {
        let bs = b * BS;
        let be = (bs + BS).min(new_len);
        let mut crc = 0;
        if let (true, Some(h)) = (b == b0, &head) {
            crc = crc32c::crc32c(&h[..(offset - bs) as usize]);
        }
        let ds = bs.max(offset) - offset;
        let de = be.min(end) - offset;
        crc = crc32c::crc32c_append(crc, &data[ds as usize..de as usize]);
        if let (true, Some(t)) = (b == b1, &tail) {
            crc = crc32c::crc32c_append(crc, &t[(end - bs) as usize..(be - bs) as usize]);
        }
        if (b as usize) < meta.crcs.len() {
            meta.crcs[b as usize] = crc;
        } else {
            meta.crcs.push(crc);
        }
    }
    file.write_all_at(data, offset).map_err(|e| Error::io("write chunk file", e))?;
    meta.length = new_len;
    Ok(())
}

/// Runs a mutation of the data file; if it fails, cuts the file back to
/// the length `before` records, dropping whatever it appended (and the
/// blocks it reserved), so file and metadata agree again.
fn rolled_back(file: &File, before: &Meta, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let res = f();
    if res.is_err()
        && let Err(e) = file.set_len(before.length)
    {
        tracing::warn!(error = %e, length = before.length, "cannot cut chunk file back after a failed mutation");
    }
    res
}

/// Reserves the blocks of the metadata slot that sequence number `seq`
/// goes to, for a chunk of `length` bytes.
fn reserve_meta(paths: &ChunkPaths, seq: u64, length: u64) -> Result<()> {
    let f = OpenOptions::new().write(true).open(&paths.meta).map_err(|e| Error::io("open chunk meta", e))?;
    space::reserve(&f, meta::slot_offset(seq), meta::slot_len(length), "reserve chunk meta")
}

fn finish(paths: &ChunkPaths, file: &File, meta: &mut Meta, sync: bool) -> Result<()> {
    if sync {
        file.sync_data().map_err(|e| Error::io("sync chunk file", e))?;
    }
    write_meta(paths, meta, sync)
}

/// Records `meta` in the slot of its next sequence number (see `meta.rs`):
/// one positional write and one `fdatasync`, leaving the newest state
/// before it intact in the other slot until this one is complete.
fn write_meta(paths: &ChunkPaths, meta: &mut Meta, sync: bool) -> Result<()> {
    let mut next = meta.clone();
    next.seq += 1;
    let bytes = meta::encode_slot(&next);
    let f = OpenOptions::new().write(true).open(&paths.meta).map_err(|e| Error::io("open chunk meta", e))?;
    // Allocated first: a slot torn by a full disk would fall back to the
    // previous state on the next start while memory went on with this one.
    space::reserve(&f, meta::slot_offset(next.seq), bytes.len() as u64, "reserve chunk meta")?;
    let res = (|| {
        f.write_all_at(&bytes, meta::slot_offset(next.seq))?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    })();
    res.map_err(|e: std::io::Error| Error::io("write chunk meta", e))?;
    *meta = next;
    Ok(())
}

/// Creates (or empties) the metadata file of a new replica and records
/// `meta` in it; the directory is synced so the new entries survive a
/// crash.
fn create_meta(paths: &ChunkPaths, meta: &mut Meta, sync: bool) -> Result<()> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&paths.meta)
        .map_err(|e| Error::io("create chunk meta", e))?;
    write_meta(paths, meta, sync)?;
    if sync {
        sync_dir(&paths.dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("sync chunk dir", e))
}

/// Loads every chunk's metadata, removing leftovers and replicas whose
/// metadata is torn or whose data file is missing or short.
fn load_all(dir: &Path) -> Result<HashMap<u64, Meta>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let mut out = HashMap::new();
    let mut data_files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("read chunk dir", e))? {
        let path = entry.map_err(|e| Error::io("read chunk dir", e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Some((stem, ext)) = name.split_once('.') else { continue };
        let Ok(handle) = u64::from_str_radix(stem, 16) else { continue };
        match ext {
            "meta" => {
                if let Some(m) = load_one(dir, handle, &path) {
                    out.insert(handle, m);
                }
            }
            "chunk" => data_files.push((handle, path)),
            _ => {}
        }
    }
    for (handle, path) in data_files {
        if !out.contains_key(&handle) {
            tracing::warn!(handle, "removing chunk data file without valid metadata");
            let _ = std::fs::remove_file(&path);
        }
    }
    tracing::info!(chunks = out.len(), dir = %dir.display(), "chunk store loaded");
    Ok(out)
}

fn load_one(dir: &Path, handle: u64, meta_path: &Path) -> Option<Meta> {
    let data_path = dir.join(format!("{handle:016x}.chunk"));
    let problem = match File::open(meta_path) {
        Err(e) => format!("cannot open metadata: {e}"),
        Ok(file) => match meta::load(&file) {
            Err(e) => e,
            Ok(m) => match std::fs::metadata(&data_path) {
                Err(e) => format!("data file: {e}"),
                Ok(md) if md.len() < m.length => {
                    format!("data file has {} bytes, metadata says {}", md.len(), m.length)
                }
                Ok(_) => return Some(m),
            },
        },
    };
    tracing::warn!(handle, problem = %problem, "dropping chunk replica with bad metadata");
    let _ = std::fs::remove_file(meta_path);
    let _ = std::fs::remove_file(&data_path);
    None
}

/// Returns this server's stable id from `data_dir/server-id`, generating
/// and persisting a new one (16 hex chars) on first start.
pub fn load_or_create_server_id(data_dir: &Path) -> Result<String> {
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io(format!("create {}", data_dir.display()), e))?;
    let path = data_dir.join("server-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let id = s.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let tmp = data_dir.join("server-id.tmp");
    let res = (|| {
        let f = File::create(&tmp)?;
        f.write_all_at(format!("{id}\n").as_bytes(), 0)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(data_dir)?.sync_all()
    })();
    res.map_err(|e| Error::io("write server-id", e))?;
    Ok(id)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
