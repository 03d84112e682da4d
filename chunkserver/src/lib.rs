//! gfs chunkserver: stores chunks as plain files with one CRC32C per 64 KiB
//! block, receives pushed data through a bounded buffer and a forwarding
//! pipeline, orders mutations as primary (write, record append) or applies
//! them as secondary, and keeps the master informed through heartbeats.
//!
//! [`start`] binds and serves; [`ChunkserverHandle::wait`] resolves after a
//! graceful shutdown. See `ARCHITECTURE.md` for the flows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use gfs_common::admin_http::{self, Admin};
use gfs_common::dirlock::DirLock;
use gfs_common::net::{ServerLimits, bind, incoming, server_builder};
use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, MAX_MESSAGE_SIZE, MasterSet, Result};
use gfs_proto::ServerInfo;
use gfs_proto::chunk_service_server::ChunkServiceServer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod clone;
mod fence;
mod heartbeat;
mod lease;
pub mod meta;
pub mod metrics;
mod mutation;
mod push;
pub mod pushbuf;
mod rpc;
pub mod scrub;
mod serial;
mod service;
pub mod space;
pub mod store;
mod verify;

use heartbeat::Heartbeat;
use lease::{Epoch, Leases};
use pushbuf::PushBuffer;
use rpc::Rpc;
use scrub::{ScrubConfig, Scrubber};
use service::{ChunkServer, Shared};
use store::Store;

pub use metrics::Metrics;
use prometheus_client::registry::Registry;

/// Capacity of the queue of corruption reports waiting for the master.
const CORRUPT_QUEUE: usize = 256;

/// Chunkserver settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Address given to the master and clients; default: the bound address.
    pub advertise: Option<String>,
    /// Master address(es): `host:port`, a list `h1:p1,h2:p2,h3:p3` (the
    /// master group), or one `name:port` whose DNS name resolves to every
    /// master. Register, heartbeats and reports go to the leader.
    pub master: String,
    /// Folder holding `server-id` and `chunks/`.
    pub data_dir: PathBuf,
    /// Failure domain.
    pub zone: String,
    /// Heartbeat period; the master's `RegisterResponse.heartbeat_ms`
    /// overrides it when nonzero.
    pub heartbeat_ms: u64,
    /// Heartbeats between full chunk reports.
    pub full_report_every: u32,
    /// Disk capacity reported to the master; default: statvfs of `data_dir`.
    pub capacity_bytes: Option<u64>,
    /// With less free space than this on the data dir's file system, the
    /// server reports itself full and the master places no new replicas
    /// on it (default: one 64 MiB chunk, so a chunk placed here can grow
    /// to its full size).
    pub disk_reserve_bytes: u64,
    /// Bound on pushed-but-uncommitted data.
    pub push_buffer_bytes: u64,
    /// Pushed data expires after this long.
    pub push_timeout_ms: u64,
    /// fdatasync data and metadata before acknowledging a mutation.
    pub sync_writes: bool,
    /// Deadline of RPCs to peers and the master.
    pub rpc_timeout_ms: u64,
    /// Connection and request limits of the gRPC server.
    pub limits: ServerLimits,
    /// Clones this server runs at once as destination.
    pub max_clones: usize,
    /// Pause between two scrubbed chunks, ms (0 = scrubber off).
    pub scrub_interval_ms: u64,
    /// Chunks not mutated for this long are scrubbed, ms.
    pub scrub_idle_ms: u64,
    /// Scrubber read rate, bytes/s (0 = unlimited).
    pub scrub_bytes_per_sec: u64,
    /// Admin HTTP address (`/metrics`, `/healthz`, `/readyz`); None = off.
    pub admin_listen: Option<String>,
    /// Serves `/debug/pprof/profile` on the admin port.
    pub profiling: bool,
    /// Bearer token that `/metrics` and `/debug/pprof/*` on the admin port
    /// require (`--admin-auth-token-file`); open when `None`.
    pub admin_auth: Option<Arc<gfs_common::admin_auth::TokenFile>>,
    /// mTLS material for every connection (served and dialled), or
    /// plaintext without authentication (the default for in-code configs;
    /// the binary needs `--insecure` for it).
    pub security: gfs_common::tls::Security,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            advertise: None,
            master: "127.0.0.1:9700".into(),
            data_dir: PathBuf::from("gfs-chunkserver-data"),
            zone: "default".into(),
            heartbeat_ms: 1000,
            full_report_every: 60,
            capacity_bytes: None,
            disk_reserve_bytes: gfs_common::DEFAULT_CHUNK_SIZE,
            push_buffer_bytes: 256 * 1024 * 1024,
            push_timeout_ms: 60_000,
            sync_writes: true,
            rpc_timeout_ms: 10_000,
            limits: ServerLimits::default(),
            max_clones: 4,
            scrub_interval_ms: 1_000,
            scrub_idle_ms: 60_000,
            scrub_bytes_per_sec: 16 << 20,
            admin_listen: None,
            profiling: false,
            admin_auth: None,
            security: Default::default(),
        }
    }
}

impl Config {
    /// Checks that every setting is usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.listen.is_empty() {
            return bad("listen address is empty");
        }
        MasterSet::parse(&self.master)?;
        if self.advertise.as_deref() == Some("") {
            return bad("advertise address is empty");
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data dir is empty");
        }
        if self.heartbeat_ms == 0 || self.full_report_every == 0 {
            return bad("heartbeat_ms and full_report_every must be positive");
        }
        if self.push_buffer_bytes == 0 || self.push_timeout_ms == 0 || self.rpc_timeout_ms == 0 {
            return bad("push buffer, push timeout and rpc timeout must be positive");
        }
        if self.limits.max_connections == 0 || self.limits.max_concurrent_per_connection == 0 {
            return bad("server limits must be positive");
        }
        if self.max_clones == 0 {
            return bad("max_clones must be positive");
        }
        Ok(())
    }
}

/// A running chunkserver.
pub struct ChunkserverHandle {
    /// Bound address of the ChunkService.
    pub addr: SocketAddr,
    /// The bound admin HTTP address, if `admin_listen` was set.
    pub admin_addr: Option<SocketAddr>,
    /// Stable server id (from `data_dir/server-id`).
    pub id: String,
    /// The data folder.
    pub data_dir: PathBuf,
    shared: Arc<Shared>,
    server: JoinHandle<Result<()>>,
    tasks: Vec<JoinHandle<()>>,
    tasks_token: CancellationToken,
    sync_writes: bool,
    /// The data dir's lock, also held by the server task: released once
    /// both the server stopped and this handle is gone (`wait` finished).
    _lock: Arc<DirLock>,
}

impl ChunkserverHandle {
    /// Resolves after a graceful shutdown: the server stopped accepting,
    /// in-flight requests (mutations) finished and chunk files are synced.
    pub async fn wait(self) -> Result<()> {
        let served = self.server.await.map_err(|e| Error::Internal(format!("server task: {e}")));
        self.tasks_token.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        if !self.sync_writes {
            self.shared.store.sync_all().await?;
        }
        tracing::info!(server_id = %self.id, "chunkserver stopped");
        served?
    }

    /// Returns the data file of a chunk.
    pub fn chunk_path(&self, handle: u64) -> PathBuf {
        Store::chunk_path(&self.data_dir, handle)
    }

    /// True while the server is registered with the master (`/readyz`).
    pub fn is_registered(&self) -> bool {
        self.shared.registered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns a readiness probe that outlives the handle.
    pub fn readiness(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let weak = Arc::downgrade(&self.shared);
        move || weak.upgrade().is_some_and(|s| s.registered.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Opens the store, binds, serves the ChunkService and starts the heartbeat
/// loop (registration is retried in the background until the master
/// answers) and the push-buffer sweeper. Returns once listening. With
/// `admin_listen` set, also serves `/metrics`, `/healthz` and `/readyz`
/// (ready once registered with the master).
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<ChunkserverHandle> {
    let admin = match &config.admin_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let profiling = config.profiling;
    let auth = config.admin_auth.clone();
    let mut handle = start_with_metrics(config, shutdown.clone(), metrics).await?;
    if let Some((listener, addr)) = admin {
        let admin = Admin::new(Arc::new(registry)).ready(handle.readiness()).profiling(profiling).auth(auth);
        tokio::spawn(admin_http::serve_listener(listener, admin, shutdown));
        tracing::info!(%addr, "chunkserver admin http listening");
        handle.admin_addr = Some(addr);
    }
    Ok(handle)
}

/// As [`start`], recording into `metrics` (registered by the caller, who
/// serves the admin port; series are labelled with this server's
/// advertised address); `admin_listen` is ignored.
pub async fn start_with_metrics(
    config: Config,
    shutdown: CancellationToken,
    metrics: Metrics,
) -> Result<ChunkserverHandle> {
    config.validate()?;
    let masters = MasterSet::parse(&config.master)?;
    // One process per data dir, until the server and `wait` are done.
    let lock = Arc::new(DirLock::acquire(&config.data_dir)?);
    let dir = config.data_dir.clone();
    let id = tokio::task::spawn_blocking(move || store::load_or_create_server_id(&dir))
        .await
        .map_err(|e| Error::Internal(format!("server id task: {e}")))??;
    let store = Store::open(&config.data_dir, config.sync_writes).await?;
    let (listener, addr) = bind(&config.listen).await?;
    let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    let (corrupt_tx, corrupt_rx) = mpsc::channel(CORRUPT_QUEUE);
    let push_timeout = Duration::from_millis(config.push_timeout_ms);
    let pushbuf = PushBuffer::new(config.push_buffer_bytes, push_timeout);
    let shared = Arc::new(Shared {
        store,
        pushbuf: pushbuf.clone(),
        leases: Leases::default(),
        epoch: Epoch::default(),
        fence: fence::Confirmer::new(Duration::from_millis(config.rpc_timeout_ms)),
        rpc: Rpc::new(masters, Duration::from_millis(config.rpc_timeout_ms), &config.security),
        push_timeout,
        corrupt_tx,
        load: AtomicU32::new(0),
        clones: tokio::sync::Semaphore::new(config.max_clones),
        cloning: Default::default(),
        metrics: metrics.for_server(&advertise),
        registered: std::sync::atomic::AtomicBool::new(false),
        tokens: Default::default(),
        verifying: Default::default(),
        full: std::sync::atomic::AtomicBool::new(false),
        address: advertise.clone(),
    });
    let conns = incoming(listener, &config.limits, &config.security);
    let server = serve(conns, config.limits, ChunkServer { shared: shared.clone() }, shutdown.clone(), lock.clone());
    let tasks_token = shutdown.child_token();
    let hb = Heartbeat {
        shared: shared.clone(),
        server: ServerInfo { id: id.clone(), address: advertise.clone(), zone: config.zone.clone() },
        data_dir: config.data_dir.clone(),
        capacity_override: config.capacity_bytes,
        disk_reserve: config.disk_reserve_bytes,
        interval: Duration::from_millis(config.heartbeat_ms),
        full_report_every: config.full_report_every,
        corrupt_rx,
        master: None,
        session: String::new(),
    };
    let mut tasks =
        vec![tokio::spawn(hb.run(tasks_token.clone())), tokio::spawn(pushbuf.run_sweeper(tasks_token.clone()))];
    if config.scrub_interval_ms > 0 {
        let cfg = ScrubConfig {
            interval: Duration::from_millis(config.scrub_interval_ms),
            idle: Duration::from_millis(config.scrub_idle_ms),
            bytes_per_sec: config.scrub_bytes_per_sec,
        };
        tasks.push(tokio::spawn(Scrubber::new(shared.clone(), cfg).run(tasks_token.clone())));
    }
    tracing::info!(%addr, advertise = %advertise, server_id = %id, master = %config.master, "chunkserver listening");
    Ok(ChunkserverHandle {
        addr,
        admin_addr: None,
        id,
        data_dir: config.data_dir,
        shared,
        server,
        tasks,
        tasks_token,
        sync_writes: config.sync_writes,
        _lock: lock,
    })
}

fn serve(
    incoming: gfs_common::net::Incoming,
    limits: ServerLimits,
    svc: ChunkServer,
    shutdown: CancellationToken,
    lock: Arc<DirLock>,
) -> JoinHandle<Result<()>> {
    let svc = ChunkServiceServer::new(svc)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    tokio::spawn(async move {
        let served = server_builder(&limits)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
            .await
            .map_err(Error::from);
        drop(lock);
        served
    })
}

/// Runs a chunkserver until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    start(config, shutdown).await?.wait().await
}
