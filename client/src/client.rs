//! The async gfs client: metadata calls go to the master, data moves
//! directly between the client and chunkservers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use gfs_common::auth::Role;
use gfs_common::bufpool::BufPool;
use gfs_common::net::{ChannelPool, with_deadline};
use gfs_common::path::normalize;
use gfs_common::peer::{CLOSED, PeerFailure};
use gfs_common::{
    Error, MAX_FILE_CHUNKS, MAX_IO_SIZE, MAX_MESSAGE_SIZE, MAX_NEW_CHUNKS_PER_LEASE, MasterSet, PUSH_FRAME_SIZE, Result,
};
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::{
    AppendRequest, CallId, ChunkLocation, ChunkToken, ClusterStatusRequest, ClusterStatusResponse, CreateRequest,
    DeleteRequest, FileInfo, FileType, GetAppendLeaseRequest, GetChunksRequest, GetWriteLeaseRequest,
    GetWriteLeaseResponse, LeaseInfo, MkdirRequest, PushDataFrame, ReadRequest, RenameRequest, ReportLengthRequest,
    ServerInfo, StatRequest, WriteRequest,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::task::AbortOnDropHandle;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::{CONNECT_TIMEOUT, ClientConfig, LOCATION_BATCH, MAX_CHANNELS, MAX_CONNECT_ATTEMPTS};
use crate::path_cache::PathCache;
use crate::pieces::{Piece, split};
use crate::replicas::LatencyTracker;
use crate::retry::{BACKOFF_BASE, Backoff};

#[path = "put.rs"]
mod put;
pub use put::{COPYING_SUFFIX, PutOptions, copying_path};
#[path = "listing.rs"]
mod listing;
#[path = "perms.rs"]
mod perms;
pub use listing::{ListPage, Lister, TreeLister};

/// Longest pause between two tries while looking for the leader master.
const SEEK_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long the HTTP/2 probe of an address that only closed connections
/// waits for an answer (`peer::probe_http2`).
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// Longest wait for the master to take a chunk's new length.
const REPORT_DEADLINE: Duration = Duration::from_secs(2);

/// Lease-cache key index used for a file's current append chunk.
const APPEND_KEY: u64 = u64::MAX;

/// A progress callback: called with the bytes transferred so far.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// A file or directory and, for files, the locations of its chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStat {
    /// Namespace entry.
    pub info: FileInfo,
    /// Chunks in index order (files only).
    pub chunks: Vec<ChunkLocation>,
}

/// A master client whose requests carry the user's claims.
pub(crate) type MasterClient = MasterServiceClient<InterceptedService<Channel, Claims>>;

/// Adds the configured user and groups to every master request. A master
/// with TLS takes the identity from the certificate and ignores them; an
/// `--insecure` one believes them (HDFS "simple" authentication).
#[derive(Clone)]
pub(crate) struct Claims {
    user: String,
    groups: Vec<String>,
}

impl Claims {
    fn new(user: &str, groups: &[String]) -> Self {
        Claims { user: user.to_string(), groups: groups.to_vec() }
    }
}

impl Interceptor for Claims {
    fn call(&mut self, mut req: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        gfs_common::auth::claim(&mut req, &self.user, &self.groups);
        Ok(req)
    }
}

/// A gfs client. Cheap to clone; clones share channels and caches.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    /// Random id of this client instance and the sequence of its mutating
    /// calls: a retry repeats its call's id, so a master answers a call
    /// that already took effect with its outcome (retry cache).
    client_id: u64,
    call_seq: std::sync::atomic::AtomicU64,
    /// The master group's addresses, following the leader.
    masters: MasterSet,
    pool: ChannelPool,
    /// The user and groups claimed to a master that authenticates nobody.
    claims: Claims,
    /// (path, chunk index) -> location.
    locations: PathCache<(String, u64), ChunkLocation>,
    /// path -> chunk size.
    chunk_sizes: PathCache<String, u64>,
    /// (path, chunk index or APPEND_KEY) -> lease.
    leases: PathCache<(String, u64), Lease>,
    latency: LatencyTracker,
    bufs: BufPool,
}

/// A lease as the client uses it.
#[derive(Debug, Clone)]
struct Lease {
    index: u64,
    handle: u64,
    version: u64,
    primary: ServerInfo,
    secondaries: Vec<ServerInfo>,
    epoch: u64,
    chunk_size: u64,
    /// The write token the master issued with the lease.
    token: Option<ChunkToken>,
    /// When the client stops trusting the lease (the master's remaining
    /// lease minus a margin).
    expires: Instant,
}

impl Lease {
    fn from_wire(info: Option<LeaseInfo>, chunk_size: u64) -> Result<Self> {
        let missing = |what: &str| Error::Internal(format!("master lease reply without {what}"));
        let l = info.ok_or_else(|| missing("lease"))?;
        let chunk = l.chunk.ok_or_else(|| missing("chunk"))?;
        let primary = l.primary.ok_or_else(|| missing("primary"))?;
        if chunk_size == 0 {
            return Err(missing("chunk size"));
        }
        Ok(Lease {
            token: chunk.token,
            index: chunk.index,
            handle: chunk.handle,
            version: chunk.version,
            primary,
            secondaries: l.secondaries,
            epoch: l.epoch,
            chunk_size,
            expires: Instant::now() + lease_validity(l.lease_ms),
        })
    }

    fn valid(&self) -> bool {
        Instant::now() < self.expires
    }

    fn secondary_addrs(&self) -> Vec<String> {
        self.secondaries.iter().map(|s| s.address.clone()).collect()
    }
}

/// How long a lease with `lease_ms` remaining may be used from the cache:
/// the remaining time minus a quarter of it (at least 500 ms).
pub(crate) fn lease_validity(lease_ms: u64) -> Duration {
    Duration::from_millis(lease_ms.saturating_sub((lease_ms / 4).max(500)))
}

/// True when the status comes from the transport (no gfs error detail):
/// the peer could not be reached at all.
fn is_transport_failure(s: &tonic::Status) -> bool {
    s.details().is_empty() && s.code() == tonic::Code::Unavailable
}

/// True when a master call failed without an answer from the master: not
/// reachable, or no reply within the deadline (e.g. a partitioned old
/// leader that cannot commit). The client tries another master.
fn master_unreachable(s: &tonic::Status) -> bool {
    s.details().is_empty()
        && matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
}

/// The status message with its error sources, for transport failures.
fn status_text(s: &tonic::Status) -> String {
    gfs_common::peer::chain_text(s)
}

fn zeros(len: u64) -> Bytes {
    Bytes::from(vec![0u8; len as usize])
}

/// Checks a replica's answer for piece `p` of chunk `loc` and makes it
/// exactly `p.len` bytes. Fewer bytes than the master's length of the
/// chunk says exist in the range is a short replica (one that missed a
/// write, e.g. on a full disk): an error for that replica, never zeros.
/// Bytes missing past that length are a hole (a chunk before the file's
/// last one that was never written to its end) and read as zeros; more
/// than it is fine (the master's length may lag behind the replicas').
fn piece_data(loc: &ChunkLocation, p: &Piece, data: Bytes, replica: &str) -> Result<Bytes> {
    let known = loc.length.saturating_sub(p.offset_in_chunk).min(p.len);
    if (data.len() as u64) < known {
        return Err(Error::Unavailable(format!(
            "chunk {:#x}: replica {replica} has {} bytes at offset {}, the master knows {known}",
            loc.handle,
            data.len(),
            p.offset_in_chunk
        )));
    }
    Ok(fit(data, p.len))
}

/// Makes `data` exactly `len` bytes: pads with zeros or truncates.
fn fit(data: Bytes, len: u64) -> Bytes {
    let len = len as usize;
    match data.len().cmp(&len) {
        std::cmp::Ordering::Equal => data,
        std::cmp::Ordering::Greater => data.slice(..len),
        std::cmp::Ordering::Less => {
            let mut b = BytesMut::with_capacity(len);
            b.extend_from_slice(&data);
            b.resize(len, 0);
            b.freeze()
        }
    }
}

fn chunk_size_of(path: &str, info: &FileInfo) -> Result<u64> {
    if info.r#type() == FileType::Directory {
        return Err(Error::IsADirectory { path: path.to_string() });
    }
    if info.chunk_size == 0 {
        return Err(Error::Internal(format!("{path}: master reported chunk size 0")));
    }
    Ok(info.chunk_size)
}

/// Splits `data` into push frames; the first carries the id, chain and
/// total length.
fn push_frames(data_id: u64, chain: Vec<String>, data: Bytes) -> Vec<PushDataFrame> {
    let total_len = data.len() as u64;
    let mut frames = Vec::with_capacity(data.len() / PUSH_FRAME_SIZE + 1);
    frames.push(PushDataFrame { data_id, chain, total_len, data: data.slice(..data.len().min(PUSH_FRAME_SIZE)) });
    let mut off = PUSH_FRAME_SIZE;
    while off < data.len() {
        let end = (off + PUSH_FRAME_SIZE).min(data.len());
        frames.push(PushDataFrame { data: data.slice(off..end), ..Default::default() });
        off = end;
    }
    frames
}

impl Client {
    /// Returns a client for `config.master` (one address, a list, or a DNS
    /// name; see [`ClientConfig::master`]). Connections are made lazily on
    /// first use; only the address format is checked here.
    pub fn new(mut config: ClientConfig) -> Result<Client> {
        let masters = MasterSet::parse(&config.master)?;
        config.max_attempts = config.max_attempts.max(1);
        config.io_parallelism = config.io_parallelism.max(1);
        let cache_size = config.cache_entries.max(1);
        let ttl = if config.cache_ttl.is_zero() { Duration::from_millis(1) } else { config.cache_ttl };
        let locations = PathCache::new(cache_size, ttl);
        let chunk_sizes = PathCache::new(cache_size, ttl);
        let leases = PathCache::new(cache_size, Duration::from_secs(120));
        let bufs = BufPool::new(MAX_IO_SIZE as usize, config.io_parallelism + 1);
        Ok(Client {
            inner: Arc::new(Inner {
                client_id: rand::random::<u64>().max(1),
                call_seq: std::sync::atomic::AtomicU64::new(1),
                pool: ChannelPool::new(
                    MAX_CHANNELS,
                    CONNECT_TIMEOUT,
                    &config.security,
                    &[Role::Master, Role::Chunkserver],
                ),
                claims: Claims::new(&config.user, &config.groups),
                masters,
                config,
                locations,
                chunk_sizes,
                leases,
                latency: LatencyTracker::default(),
                bufs,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The master addresses and the leader this client follows (shared
    /// with its clones).
    pub fn masters(&self) -> &MasterSet {
        &self.inner.masters
    }

    // ----------------------------------------------------------------------
    // Namespace
    // ----------------------------------------------------------------------

    /// Creates a directory; with `parents`, creates missing ancestors and
    /// succeeds if it exists.
    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<()> {
        let path = normalize(path)?;
        let call = self.next_call();
        self.master_call(|mut m, t| {
            let umask = Some(self.inner.config.umask);
            let req = MkdirRequest { path: path.clone(), parents, call: Some(call), umask };
            async move { m.mkdir(with_deadline(req, t)).await }
        })
        .await?;
        Ok(())
    }

    /// Creates an empty file (`AlreadyExists` if the path exists).
    /// `replication` `None` uses the master's default.
    pub async fn create(&self, path: &str, replication: Option<u32>) -> Result<FileInfo> {
        self.create_file(path, replication, true).await
    }

    /// Returns the file at `path`, creating it first when it is missing
    /// (`IsADirectory` when a directory is there).
    pub async fn open_or_create(&self, path: &str, replication: Option<u32>) -> Result<FileInfo> {
        self.create_file(path, replication, false).await
    }

    async fn create_file(&self, path: &str, replication: Option<u32>, exclusive: bool) -> Result<FileInfo> {
        let path = normalize(path)?;
        let call = self.next_call();
        let resp = self
            .master_call(|mut m, t| {
                let req = CreateRequest {
                    path: path.clone(),
                    replication: replication.unwrap_or(0),
                    exclusive,
                    call: Some(call),
                    allow_under_replicated: self.inner.config.allow_under_replicated,
                    umask: Some(self.inner.config.umask),
                };
                async move { m.create(with_deadline(req, t)).await }
            })
            .await?;
        let info = resp.info.ok_or_else(|| Error::Internal("create reply without file info".into()))?;
        self.forget_path(&path);
        if info.chunk_size > 0 {
            self.inner.chunk_sizes.insert(path, info.chunk_size);
        }
        Ok(info)
    }

    /// Deletes a file or an empty directory (any directory with
    /// `recursive`). It stays hidden, restorable, until garbage collection.
    pub async fn delete(&self, path: &str, recursive: bool) -> Result<()> {
        self.delete_inner(path, recursive, false).await
    }

    /// Deletes at once, without the trash: the chunks are freed at the
    /// servers' next heartbeats. For what was never a finished file, such
    /// as a failed upload.
    pub async fn delete_now(&self, path: &str, recursive: bool) -> Result<()> {
        self.delete_inner(path, recursive, true).await
    }

    async fn delete_inner(&self, path: &str, recursive: bool, immediate: bool) -> Result<()> {
        let path = normalize(path)?;
        let call = self.next_call();
        let res = self
            .master_call(|mut m, t| {
                let req = DeleteRequest { path: path.clone(), recursive, call: Some(call), immediate };
                async move { m.delete(with_deadline(req, t)).await }
            })
            .await;
        self.forget_path(&path);
        res.map(|_| ())
    }

    /// Renames `src` to `dst` (which must not exist).
    pub async fn rename(&self, src: &str, dst: &str) -> Result<()> {
        self.rename_inner(src, dst, false).await
    }

    /// Renames file `src` to `dst`, replacing a file already there in the
    /// same step (the old one goes to the trash, as by `delete`); never a
    /// directory.
    pub async fn rename_over(&self, src: &str, dst: &str) -> Result<()> {
        self.rename_inner(src, dst, true).await
    }

    async fn rename_inner(&self, src: &str, dst: &str, overwrite: bool) -> Result<()> {
        let src = normalize(src)?;
        let dst = normalize(dst)?;
        let call = self.next_call();
        let res = self
            .master_call(|mut m, t| {
                let req = RenameRequest { src: src.clone(), dst: dst.clone(), call: Some(call), overwrite };
                async move { m.rename(with_deadline(req, t)).await }
            })
            .await;
        self.forget_path(&src);
        self.forget_path(&dst);
        res.map(|_| ())
    }

    /// Returns a file's or directory's info and, for files, its chunks.
    pub async fn stat(&self, path: &str) -> Result<FileStat> {
        let path = normalize(path)?;
        let allow_stale = self.inner.config.allow_stale_reads;
        let resp = self
            .master_call(|mut m, t| {
                let req = StatRequest { path: path.clone(), allow_stale };
                async move { m.stat(with_deadline(req, t)).await }
            })
            .await?;
        let info = resp.info.ok_or_else(|| Error::Internal("stat reply without file info".into()))?;
        Ok(FileStat { info, chunks: resp.chunks })
    }

    /// Returns the master's view of the cluster.
    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse> {
        self.master_call(|mut m, t| async move { m.cluster_status(with_deadline(ClusterStatusRequest {}, t)).await })
            .await
    }

    // ----------------------------------------------------------------------
    // Data
    // ----------------------------------------------------------------------

    /// Reads up to `len` bytes at `offset`. The result is short only at the
    /// end of the file; holes read as zeros.
    pub async fn read_at(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let path = normalize(path)?;
        let start = self.inner.chunk_sizes.get(&path).map(|cs| offset / cs).unwrap_or(0);
        let (info, _) = self.get_chunks(&path, start, LOCATION_BATCH).await?;
        let cs = chunk_size_of(&path, &info)?;
        let end = offset.saturating_add(len).min(info.size);
        if end <= offset {
            return Ok(Vec::new());
        }
        let pieces = split(offset, end - offset, cs, MAX_IO_SIZE);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut reads = self.piece_reads(&path, pieces);
        while let Some(piece) = reads.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    /// Reads a whole file.
    pub async fn read_all(&self, path: &str) -> Result<Vec<u8>> {
        self.read_at(path, 0, u64::MAX).await
    }

    /// Writes `data` at `offset` of an existing file, extending it if needed.
    /// The write may span chunks; each piece is retried as a whole on
    /// retryable errors.
    pub async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> Result<()> {
        let path = normalize(path)?;
        let cs = match self.inner.chunk_sizes.get(&path) {
            Some(cs) if !data.is_empty() => cs,
            _ => {
                let (info, _) = self.get_chunks(&path, 0, 1).await?;
                chunk_size_of(&path, &info)?
            }
        };
        if data.is_empty() {
            return Ok(());
        }
        offset.checked_add(data.len() as u64).ok_or_else(|| Error::InvalidArgument("offset overflows".into()))?;
        let data = Bytes::copy_from_slice(data);
        let pieces = split(offset, data.len() as u64, cs, MAX_IO_SIZE);
        stream::iter(pieces)
            .map(|p| {
                let start = (p.file_offset - offset) as usize;
                let bytes = data.slice(start..start + p.len as usize);
                self.write_piece(&path, p, bytes, cs)
            })
            .buffer_unordered(self.inner.config.io_parallelism)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    /// Appends `record` atomically at least once at an offset gfs chooses
    /// and returns that offset. Records are limited to a quarter chunk.
    pub async fn append(&self, path: &str, record: &[u8]) -> Result<u64> {
        let path = normalize(path)?;
        let too_large = |limit: u64| Error::TooLarge { what: "record".into(), size: record.len() as u64, limit };
        // Check the limit before asking for a lease: a lease on an empty
        // file allocates its first chunk, and a refused record must change
        // nothing.
        let chunk_size = match self.inner.chunk_sizes.get(&path) {
            Some(cs) => cs,
            None => self.stat(&path).await?.info.chunk_size,
        };
        if chunk_size > 0 && record.len() as u64 > chunk_size / 4 {
            return Err(too_large(chunk_size / 4));
        }
        let data = Bytes::copy_from_slice(record);
        let key = (path.clone(), APPEND_KEY);
        let cfg = &self.inner.config;
        let mut backoff = Backoff::default();
        let mut attempt = 0u32;
        let mut full_hops = 0u32;
        let mut after: Option<u64> = None;
        loop {
            let lease = match self.inner.leases.get(&key) {
                Some(l) if after.is_none() && l.valid() => l,
                _ => {
                    let resp = self
                        .master_call(|mut m, t| {
                            let req = GetAppendLeaseRequest { path: path.clone(), after_index: after };
                            async move { m.get_append_lease(with_deadline(req, t)).await }
                        })
                        .await?;
                    let lease = Lease::from_wire(resp.lease, resp.chunk_size)?;
                    self.inner.chunk_sizes.insert(path.clone(), lease.chunk_size);
                    self.inner.locations.invalidate(&(path.clone(), lease.index));
                    self.inner.leases.insert(key.clone(), lease.clone());
                    lease
                }
            };
            after = None;
            if record.len() as u64 > lease.chunk_size / 4 {
                return Err(too_large(lease.chunk_size / 4));
            }
            let res = async {
                let data_id = self.push(&lease, data.clone()).await?;
                let req = AppendRequest {
                    handle: lease.handle,
                    version: lease.version,
                    data_id,
                    length: data.len() as u64,
                    secondaries: lease.secondary_addrs(),
                    epoch: lease.epoch,
                    chunk_size: lease.chunk_size,
                    token: lease.token.clone(),
                };
                let t = cfg.data_timeout;
                self.chunk_call(&lease.primary.address, |mut c| async move { c.append(with_deadline(req, t)).await })
                    .await
            }
            .await;
            match res {
                Ok(resp) => {
                    self.report_length(lease.handle, resp.chunk_length).await;
                    return Ok(lease.index * lease.chunk_size + resp.offset);
                }
                Err(Error::ChunkFull { .. }) => {
                    self.inner.leases.invalidate(&key);
                    full_hops += 1;
                    if full_hops > 64 {
                        return Err(Error::Unavailable(format!("{path}: append found 64 full chunks in a row")));
                    }
                    after = Some(lease.index);
                }
                Err(e) => {
                    self.inner.leases.invalidate(&key);
                    attempt += 1;
                    if !e.is_retryable() || attempt >= cfg.max_attempts {
                        return Err(e);
                    }
                    tracing::debug!(path, error = %e, attempt, "append failed, retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Streams a whole file into `writer`, reading up to `io_parallelism`
    /// pieces ahead and writing them in order. Returns the bytes written.
    pub async fn get<W: AsyncWrite + Unpin + Send>(
        &self,
        path: &str,
        mut writer: W,
        progress: Option<Progress<'_>>,
    ) -> Result<u64> {
        let path = normalize(path)?;
        let (info, _) = self.get_chunks(&path, 0, LOCATION_BATCH).await?;
        let cs = chunk_size_of(&path, &info)?;
        let pieces = split(0, info.size, cs, MAX_IO_SIZE);
        let mut reads = self.piece_reads(&path, pieces);
        let mut total = 0u64;
        while let Some(piece) = reads.next().await {
            let piece = piece?;
            writer.write_all(&piece).await.map_err(|e| Error::io("write output", e))?;
            total += piece.len() as u64;
            if let Some(f) = progress {
                f(total);
            }
        }
        writer.flush().await.map_err(|e| Error::io("write output", e))?;
        Ok(total)
    }

    // ----------------------------------------------------------------------
    // Internals
    // ----------------------------------------------------------------------

    fn master_at(&self, addr: &str) -> Result<MasterClient> {
        let ch = self.inner.pool.get(addr)?;
        Ok(MasterServiceClient::with_interceptor(ch, self.inner.claims.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }

    fn chunkserver(&self, addr: &str) -> Result<ChunkServiceClient<Channel>> {
        let ch = self.inner.pool.get(addr)?;
        Ok(ChunkServiceClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }

    /// Calls the leader master with the metadata deadline.
    ///
    /// - `NotLeader` with the leader's address: switch to it and retry at
    ///   once (at most `2 x masters` switches in a row, then as below);
    /// - `NotLeader` without one (election) or no answer (unreachable, no
    ///   reply in time): rotate to the next master and retry with backoff
    ///   for up to `failover_timeout`, then fail with `Unavailable` naming
    ///   every master tried. While no master ever answered this client,
    ///   give up once each was tried (a single one `MAX_CONNECT_ATTEMPTS`
    ///   times) instead of waiting;
    /// - other retryable errors: retry with backoff, `max_attempts` in all.
    ///
    /// Shadow reads (`allow_stale` requests) are answered by followers too,
    /// so they need no leader.
    pub(crate) async fn master_call<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(MasterClient, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let cfg = &self.inner.config;
        let masters = &self.inner.masters;
        let mut backoff = Backoff::default();
        let mut seek_backoff = Backoff::new(BACKOFF_BASE, SEEK_BACKOFF_MAX);
        let mut attempts = 0u32;
        // Leader-seeking failures: when the first one happened, how many.
        let mut seeking_since: Option<Instant> = None;
        let mut unavailable_since: Option<Instant> = None;
        let mut seeks = 0usize;
        let mut hops = 0usize;
        let mut tried: Vec<String> = Vec::new();
        // "ADDR is not a gfs master (...)", once something foreign answered.
        let mut not_gfs: Option<String> = None;
        loop {
            masters.refresh().await;
            let addr = masters.current();
            if !tried.contains(&addr) {
                tried.push(addr.clone());
            }
            let status = match call(self.master_at(&addr)?, cfg.rpc_timeout).await {
                Ok(resp) => {
                    masters.note_success(&addr);
                    return Ok(resp.into_inner());
                }
                Err(s) => s,
            };
            let peer = PeerFailure::of(&status);
            // Something that is not a gfs master, before any master ever
            // answered: a wrong address, treated as unreachable.
            let foreign = matches!(peer, Some(PeerFailure::NotGfs(_))) && !masters.ever_answered();
            if let (true, Some(p)) = (foreign, &peer) {
                not_gfs = Some(format!("{addr} is not a gfs master ({})", p.reason()));
            }
            let unreachable = master_unreachable(&status) || foreign;
            let text = peer.as_ref().map(|p| p.reason().to_string()).unwrap_or_else(|| status_text(&status));
            let err = Error::from(status);
            if unreachable {
                self.inner.pool.forget(&addr);
                masters.note_unreachable(&addr);
            } else if let Error::NotLeader { leader } = &err {
                masters.note_not_leader(&addr, leader.as_deref());
                if leader.is_some() && hops < 2 * masters.len() {
                    hops += 1;
                    tracing::debug!(tried = %addr, leader = ?leader, "not the leader master, switching");
                    continue;
                }
            }
            if unreachable || matches!(err, Error::NotLeader { .. }) {
                let since = *seeking_since.get_or_insert_with(Instant::now);
                seeks += 1;
                hops = 0;
                let min_tries = masters.len().max(cfg.max_attempts.min(MAX_CONNECT_ATTEMPTS) as usize);
                let remaining = cfg.failover_timeout.saturating_sub(since.elapsed());
                // Until some master ever answered, the addresses may lead
                // nowhere (wrong address, nothing running): no waiting.
                let wait = masters.ever_answered() && !remaining.is_zero();
                if !wait && seeks >= min_tries {
                    let mut names = tried.join(", ");
                    if let Some(name) = masters.dns_name() {
                        names.push_str(&format!("; resolved from {name}"));
                    }
                    let last = if unreachable { text } else { err.to_string() };
                    // Only closed connections, plaintext: ask what answers.
                    if not_gfs.is_none()
                        && !masters.ever_answered()
                        && cfg.security.tls().is_none()
                        && matches!(&peer, Some(PeerFailure::Unreachable(r)) if r == CLOSED)
                        && let Some(reason) = gfs_common::peer::probe_http2(&addr, PROBE_WAIT).await
                    {
                        not_gfs = Some(format!("{addr} is not a gfs master ({reason})"));
                    }
                    return Err(Error::Unavailable(match (masters.ever_answered(), not_gfs) {
                        (true, _) => format!("cannot reach a leader master (tried {names}): {last}"),
                        (false, Some(foreign)) => foreign,
                        (false, None) => format!("cannot reach a gfs master at {names}: {last}"),
                    }));
                }
                tracing::debug!(tried = %addr, error = %err, seeks, "no leader master answered, retrying");
                let delay = seek_backoff.next_delay();
                tokio::time::sleep(if remaining.is_zero() { delay } else { delay.min(remaining) }).await;
                continue;
            }
            // A master that answers "not now" (a new leader collecting chunk
            // reports, a chunk no chunkserver has reported to it yet) is the
            // tail of a failover: wait it out like an election, within
            // `failover_timeout`, however many attempts that takes.
            if matches!(err, Error::Unavailable(_)) {
                let since = *unavailable_since.get_or_insert_with(Instant::now);
                if since.elapsed() < cfg.failover_timeout {
                    tracing::debug!(error = %err, "master not ready to answer, retrying");
                    let delay = backoff.next_delay();
                    tokio::time::sleep(delay.min(cfg.failover_timeout.saturating_sub(since.elapsed()))).await;
                    continue;
                }
            }
            attempts += 1;
            if !err.is_retryable() || attempts >= cfg.max_attempts {
                return Err(err);
            }
            tracing::debug!(error = %err, attempts, "master call failed, retrying");
            backoff.wait().await;
        }
    }

    /// One call to a chunkserver; records its latency, names the server in
    /// transport errors.
    async fn chunk_call<T, F, Fut>(&self, addr: &str, call: F) -> Result<T>
    where
        F: FnOnce(ChunkServiceClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.chunkserver(addr)?;
        let started = Instant::now();
        match call(client).await {
            Ok(resp) => {
                self.inner.latency.record(addr, started.elapsed());
                Ok(resp.into_inner())
            }
            Err(status) => {
                self.inner.latency.record_failure(addr);
                if is_transport_failure(&status) {
                    self.inner.pool.forget(addr);
                    let reason = PeerFailure::of(&status).map(|p| p.reason().to_string());
                    let reason = reason.unwrap_or_else(|| status_text(&status));
                    return Err(Error::Unavailable(format!("chunkserver {addr}: {reason}")));
                }
                Err(Error::from(status))
            }
        }
    }

    /// A fresh id for one mutating call, kept across its retries.
    fn next_call(&self) -> CallId {
        CallId {
            client: self.inner.client_id,
            seq: self.inner.call_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Drops every cached entry of `path` and anything below it.
    fn forget_path(&self, path: &str) {
        self.inner.locations.invalidate_under(path);
        self.inner.leases.invalidate_under(path);
        self.inner.chunk_sizes.invalidate_under(path);
    }

    /// `GetChunks` for `[start, start + count)`; fills the caches.
    async fn get_chunks(&self, path: &str, start: u64, count: u64) -> Result<(FileInfo, Vec<ChunkLocation>)> {
        let allow_stale = self.inner.config.allow_stale_reads;
        let resp = self
            .master_call(|mut m, t| {
                let req = GetChunksRequest { path: path.to_string(), start_index: start, count, allow_stale };
                async move { m.get_chunks(with_deadline(req, t)).await }
            })
            .await?;
        let info = resp.info.ok_or_else(|| Error::Internal("GetChunks reply without file info".into()))?;
        if info.r#type() == FileType::Directory {
            return Err(Error::IsADirectory { path: path.to_string() });
        }
        if info.chunk_size > 0 {
            self.inner.chunk_sizes.insert(path.to_string(), info.chunk_size);
        }
        for c in &resp.chunks {
            self.inner.locations.insert((path.to_string(), c.index), c.clone());
        }
        Ok((info, resp.chunks))
    }

    /// The location of chunk `index`, from the cache or a batch fetch.
    /// `None` when the file has no such chunk.
    async fn location(&self, path: &str, index: u64) -> Result<Option<ChunkLocation>> {
        if let Some(l) = self.inner.locations.get(&(path.to_string(), index)) {
            return Ok(Some(l));
        }
        let (_, chunks) = self.get_chunks(path, index, LOCATION_BATCH).await?;
        Ok(chunks.into_iter().find(|c| c.index == index))
    }

    /// Reads `pieces` of `path` in order, up to `io_parallelism` of them
    /// ahead. Each read runs as its own task, so reads go on while the
    /// caller is busy with an earlier piece (writing it to a local disk);
    /// dropping the stream aborts the reads still in flight.
    fn piece_reads(&self, path: &str, pieces: Vec<Piece>) -> impl Stream<Item = Result<Bytes>> + Unpin + use<> {
        let (client, path) = (self.clone(), path.to_string());
        let reads = stream::iter(pieces.into_iter().enumerate()).map(move |(turn, p)| {
            let (client, path) = (client.clone(), path.clone());
            let task = AbortOnDropHandle::new(tokio::spawn(async move { client.read_piece(&path, p, turn).await }));
            async move { task.await.map_err(|e| Error::Internal(format!("piece read task: {e}")))? }
        });
        reads.buffered(self.inner.config.io_parallelism)
    }

    /// Reads one piece from the closest replica that answers, failing over
    /// to the others; when all fail, refreshes the location and retries.
    /// `turn` (the piece's place in a larger read) spreads consecutive
    /// pieces over replicas that are about as close.
    async fn read_piece(&self, path: &str, p: Piece, turn: usize) -> Result<Bytes> {
        let cfg = &self.inner.config;
        let mut backoff = Backoff::default();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let Some(loc) = self.location(path, p.index).await? else {
                return Ok(zeros(p.len));
            };
            let mut last_err = None;
            let mut short = Vec::new();
            for r in self.inner.latency.order_for_turn(&loc.replicas, cfg.zone.as_deref(), turn) {
                let req = ReadRequest {
                    handle: loc.handle,
                    version: loc.version,
                    offset: p.offset_in_chunk,
                    length: p.len,
                    token: loc.token.clone(),
                };
                let t = cfg.data_timeout;
                let res = self.chunk_call(&r.address, |mut c| async move { c.read(with_deadline(req, t)).await }).await;
                let res = res.and_then(|resp| {
                    let n = resp.data.len();
                    piece_data(&loc, &p, resp.data, &r.address).inspect_err(|_| short.push((r.address.clone(), n)))
                });
                match res {
                    Ok(data) => return Ok(data),
                    // A corrupt replica reported itself to the master (only
                    // its holder may, and the master has it verified).
                    Err(e) => {
                        tracing::debug!(path, replica = %r.address, error = %e, "read failed, trying next replica");
                        last_err = Some(e);
                    }
                }
            }
            self.inner.locations.invalidate(&(path.to_string(), p.index));
            let mut err = last_err
                .unwrap_or_else(|| Error::Unavailable(format!("{path}: chunk {} has no live replica", p.index)));
            if !short.is_empty() && short.len() == loc.replicas.len() {
                let known = loc.length.saturating_sub(p.offset_in_chunk).min(p.len);
                let list: Vec<String> = short.iter().map(|(a, n)| format!("{a} has {n}")).collect();
                err = Error::Unavailable(format!(
                    "{path}: chunk {} ({:#x}): no replica has the {known} bytes at offset {} that the master knows \
                     exist ({})",
                    p.index,
                    loc.handle,
                    p.offset_in_chunk,
                    list.join(", ")
                ));
            }
            let stale = matches!(err, Error::StaleVersion { .. } | Error::ChunkNotFound { .. });
            if !(err.is_retryable() || stale) || attempt >= cfg.max_attempts {
                return Err(err);
            }
            // A stale location is refreshed at once the first time.
            if !(stale && attempt == 1) {
                backoff.wait().await;
            }
        }
    }

    /// Tells the master a chunk's new length, so that a stat right after a
    /// write sees it. The data is already on every replica and heartbeats
    /// carry lengths too: one attempt within [`REPORT_DEADLINE`], no leader
    /// seeking or waiting out an election (that could hold a finished write
    /// for the whole `failover_timeout`); a failure only logs.
    async fn report_length(&self, handle: u64, length: u64) {
        let res = self
            .master_call_once(REPORT_DEADLINE, |mut m, t| async move {
                m.report_length(with_deadline(ReportLengthRequest { handle, length }, t)).await
            })
            .await;
        if let Err(e) = res {
            tracing::warn!(handle, error = %e, "cannot report chunk length (the chunkservers' heartbeats will)");
        }
    }

    /// One call to the master this client takes for the leader, following
    /// at most one "not the leader, it is X" answer; no retries, no waits.
    async fn master_call_once<T, F, Fut>(&self, deadline: Duration, mut call: F) -> Result<T>
    where
        F: FnMut(MasterClient, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let masters = &self.inner.masters;
        let deadline = deadline.min(self.inner.config.rpc_timeout);
        let mut addr = masters.current();
        let mut redirected = false;
        loop {
            let call = call(self.master_at(&addr)?, deadline);
            let status = match tokio::time::timeout(deadline, call).await {
                Ok(Ok(resp)) => {
                    masters.note_success(&addr);
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => return Err(Error::Unavailable(format!("master {addr}: no answer within {deadline:?}"))),
            };
            match Error::from(status) {
                Error::NotLeader { leader: Some(leader) } if !redirected => {
                    masters.note_not_leader(&addr, Some(&leader));
                    addr = masters.current();
                    redirected = true;
                }
                e => return Err(e),
            }
        }
    }

    /// The write lease for chunk `index` of `path`, cached until it nears
    /// expiry.
    async fn write_lease(&self, path: &str, index: u64) -> Result<Lease> {
        let key = (path.to_string(), index);
        if let Some(l) = self.inner.leases.get(&key)
            && l.valid()
        {
            return Ok(l);
        }
        let resp = match self.request_write_lease(path, index).await {
            Err(Error::InvalidArgument(_)) if self.fill_gap(path, index).await? => {
                self.request_write_lease(path, index).await?
            }
            r => r?,
        };
        let lease = Lease::from_wire(resp.lease, resp.chunk_size)?;
        // The grant may have bumped the version: cached reads would be stale.
        self.inner.locations.invalidate(&key);
        self.inner.leases.insert(key, lease.clone());
        Ok(lease)
    }

    async fn request_write_lease(&self, path: &str, index: u64) -> Result<GetWriteLeaseResponse> {
        self.master_call(|mut m, t| {
            let req = GetWriteLeaseRequest { path: path.to_string(), index, create_missing: true };
            async move { m.get_write_lease(with_deadline(req, t)).await }
        })
        .await
    }

    /// A write far past the end of a file: the master creates at most
    /// [`MAX_NEW_CHUNKS_PER_LEASE`] chunks per lease request, so the gap
    /// before `index` is created in steps. Returns false when `index` was
    /// not that far past the end (the master's refusal stands).
    async fn fill_gap(&self, path: &str, index: u64) -> Result<bool> {
        if index >= MAX_FILE_CHUNKS {
            return Ok(false); // Past the largest file: no gap to fill.
        }
        let mut filled = false;
        // Each step adds at least one batch; a file that does not grow
        // (deleted and created again meanwhile) ends the loop anyway.
        let mut steps = None;
        loop {
            let (info, _) = self.get_chunks(path, 0, 1).await?;
            let count = info.chunk_count;
            if index < count + MAX_NEW_CHUNKS_PER_LEASE {
                return Ok(filled);
            }
            let left = steps.get_or_insert((index - count) / MAX_NEW_CHUNKS_PER_LEASE + 1);
            if *left == 0 {
                return Ok(filled);
            }
            *left -= 1;
            self.request_write_lease(path, count + MAX_NEW_CHUNKS_PER_LEASE - 1).await?;
            filled = true;
        }
    }

    /// Pushes `data` to the closest replica with the others as the chain.
    /// Returns the data id.
    async fn push(&self, lease: &Lease, data: Bytes) -> Result<u64> {
        let mut all = Vec::with_capacity(1 + lease.secondaries.len());
        all.push(lease.primary.clone());
        all.extend(lease.secondaries.iter().cloned());
        let ordered = self.inner.latency.order(&all, self.inner.config.zone.as_deref());
        let data_id = rand::random::<u64>();
        let chain = ordered[1..].iter().map(|s| s.address.clone()).collect();
        let frames = push_frames(data_id, chain, data);
        let t = self.inner.config.data_timeout;
        self.chunk_call(&ordered[0].address, |mut c| async move {
            c.push_data(with_deadline(stream::iter(frames), t)).await
        })
        .await?;
        Ok(data_id)
    }

    /// Writes one piece (inside one chunk): lease, push, write, report.
    /// Retries the whole sequence on retryable errors.
    async fn write_piece(&self, path: &str, p: Piece, data: Bytes, cs: u64) -> Result<()> {
        let cfg = &self.inner.config;
        let key = (path.to_string(), p.index);
        let mut backoff = Backoff::default();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let lease = self.write_lease(path, p.index).await?;
            if lease.chunk_size != cs {
                self.forget_path(path);
                return Err(Error::Internal(format!(
                    "{path}: chunk size changed during the write ({cs} -> {})",
                    lease.chunk_size
                )));
            }
            let res = async {
                let data_id = self.push(&lease, data.clone()).await?;
                let req = WriteRequest {
                    handle: lease.handle,
                    version: lease.version,
                    offset: p.offset_in_chunk,
                    data_id,
                    length: data.len() as u64,
                    secondaries: lease.secondary_addrs(),
                    epoch: lease.epoch,
                    token: lease.token.clone(),
                };
                let t = cfg.data_timeout;
                self.chunk_call(&lease.primary.address, |mut c| async move { c.write(with_deadline(req, t)).await })
                    .await
            }
            .await;
            match res {
                Ok(resp) => {
                    self.report_length(lease.handle, resp.chunk_length).await;
                    return Ok(());
                }
                Err(e) => {
                    self.inner.leases.invalidate(&key);
                    if !e.is_retryable() || attempt >= cfg.max_attempts {
                        return Err(e);
                    }
                    tracing::debug!(path, index = p.index, error = %e, attempt, "write failed, retrying");
                    backoff.wait().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_validated() {
        for ok in ["127.0.0.1:9700", "localhost:1", "http://h:2", "[::1]:80", "a:1,b:2,c:3", "gfs-master.ns.svc:9700"] {
            assert!(Client::new(ClientConfig::new(ok)).is_ok(), "{ok}");
        }
        for bad in ["", "nohost", ":80", "h:notaport", "h:99999", "a:1,,b:2", "a:1,b"] {
            assert!(matches!(Client::new(ClientConfig::new(bad)), Err(Error::InvalidArgument(_))), "{bad}");
        }
        let c = Client::new(ClientConfig::new("a:1, b:2")).unwrap();
        assert_eq!(c.masters().all(), vec!["a:1", "b:2"]);
    }

    #[test]
    fn frames_split_data() {
        let data = Bytes::from(vec![7u8; PUSH_FRAME_SIZE * 2 + 5]);
        let f = push_frames(9, vec!["a:1".into()], data);
        assert_eq!(f.len(), 3);
        assert_eq!((f[0].data_id, f[0].total_len, f[0].chain.len()), (9, (PUSH_FRAME_SIZE * 2 + 5) as u64, 1));
        assert!(f[1].chain.is_empty() && f[1].total_len == 0);
        assert_eq!(f.iter().map(|x| x.data.len()).sum::<usize>(), PUSH_FRAME_SIZE * 2 + 5);
        let empty = push_frames(1, vec![], Bytes::new());
        assert_eq!(empty.len(), 1);
    }

    #[test]
    fn a_short_replica_is_an_error_and_only_holes_read_as_zeros() {
        let loc = ChunkLocation { handle: 5, length: 6, ..Default::default() };
        let piece = |offset_in_chunk, len| Piece { index: 0, offset_in_chunk, file_offset: offset_in_chunk, len };
        // The master knows 6 bytes: a replica answering 2 of the first 4 is short.
        let e = piece_data(&loc, &piece(0, 4), Bytes::from_static(b"ab"), "r:1").unwrap_err();
        assert!(matches!(&e, Error::Unavailable(m) if m.contains("r:1 has 2 bytes")), "{e:?}");
        assert!(e.is_retryable(), "another replica or a fresh location may have the data");
        // Past the master's length: a hole, zeros.
        assert_eq!(&piece_data(&loc, &piece(4, 4), Bytes::from_static(b"ef"), "r:1").unwrap()[..], b"ef\0\0");
        assert_eq!(&piece_data(&loc, &piece(8, 2), Bytes::new(), "r:1").unwrap()[..], b"\0\0");
        // More than the master knows (its length lags): kept, cut to the piece.
        assert_eq!(&piece_data(&loc, &piece(0, 2), Bytes::from_static(b"abcd"), "r:1").unwrap()[..], b"ab");
        assert_eq!(&fit(Bytes::from_static(b"abcd"), 2)[..], b"ab");
    }

    #[test]
    fn lease_margin() {
        assert_eq!(lease_validity(60_000), Duration::from_millis(45_000));
        assert_eq!(lease_validity(1_000), Duration::from_millis(500));
        assert_eq!(lease_validity(100), Duration::ZERO);
    }

    #[test]
    fn futures_are_send() {
        fn is_send<T: Send>(_: &T) {}
        let c = Client::new(ClientConfig::new("127.0.0.1:1")).unwrap();
        is_send(&c.put("/a", &b""[..], None));
        is_send(&c.get("/a", tokio::io::sink(), None));
        is_send(&c.append("/a", b"x"));
        is_send(&c.write_at("/a", 0, b"x"));
        is_send(&c.read_at("/a", 0, 1));
    }

    #[tokio::test]
    async fn bad_paths_fail_before_any_rpc() {
        let c = Client::new(ClientConfig::new("127.0.0.1:1")).unwrap();
        assert!(matches!(c.mkdir("a/b", false).await, Err(Error::InvalidPath { .. })));
        assert!(matches!(c.read_all("/a/../b").await, Err(Error::InvalidPath { .. })));
    }

    /// A client of masters that never answer fails with one error naming
    /// them all, without waiting out a (here 1 h) failover timeout; the
    /// 600 s guard only turns a hang into a failure.
    async fn never_answered<T: std::fmt::Debug>(
        spec: &str,
        call: impl for<'a> Fn(&'a Client) -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + 'a>>,
    ) {
        let mut cfg = ClientConfig::new(spec);
        cfg.failover_timeout = Duration::from_secs(3600);
        let c = Client::new(cfg).unwrap();
        let e = tokio::time::timeout(Duration::from_secs(600), call(&c))
            .await
            .expect("waited out the failover timeout although no master ever answered")
            .unwrap_err();
        let tried = spec.replace(',', ", ");
        match &e {
            Error::Unavailable(m) => {
                assert!(m.starts_with(&format!("cannot reach a gfs master at {tried}: ")), "{m}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_master_is_reported_quickly() {
        never_answered("127.0.0.1:1", |c| Box::pin(c.list("/"))).await;
    }

    #[tokio::test]
    async fn masters_never_reached_fail_fast_even_with_failover_time() {
        assert_eq!(ClientConfig::new("x:1").failover_timeout, Duration::from_secs(20));
        never_answered("127.0.0.1:1,127.0.0.1:2", |c| Box::pin(c.stat("/"))).await;
    }
}
