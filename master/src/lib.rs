//! The gfs master: namespace, chunk metadata, leases, chunkserver liveness
//! and the operation log.
//!
//! [`start`] recovers the state from the data directory, bumps the epoch,
//! binds and serves `MasterService` until the shutdown token is cancelled.

pub mod admin;
pub mod chunks;
pub mod config;
pub mod gc;
pub mod grant;
pub mod heal;
pub mod hidden;
pub mod lease;
pub mod locks;
pub mod metrics;
pub mod namespace;
pub mod oplog;
pub mod placement;
pub mod repair;
pub mod report;
pub mod rpc;
pub mod servers;
pub mod service;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use gfs_common::admin_http::{self, Admin};
use gfs_common::net::{bind, limited_incoming, server_builder};
use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, MAX_MESSAGE_SIZE, Result};
use gfs_proto::master_service_server::MasterServiceServer;
use tokio::task::JoinHandle;
use tracing::{error, info};

pub use config::{Config, HealConfig};
pub use metrics::Metrics;
use prometheus_client::registry::Registry;

use crate::gc::GcWorker;
use crate::heal::RepairWorker;
use crate::oplog::Oplog;
use crate::servers::LivenessWorker;
use crate::service::Service;
use crate::state::Shared;

/// A running master.
pub struct MasterHandle {
    /// The bound address.
    pub addr: SocketAddr,
    /// The bound admin HTTP address, if `admin_listen` was set.
    pub admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    task: JoinHandle<Result<()>>,
}

impl MasterHandle {
    /// Returns a hook that refreshes the state-derived gauges (run it
    /// before each scrape; see [`metrics::Metrics::refresh`]).
    pub fn metrics_refresher(&self) -> impl Fn() + Send + Sync + 'static {
        let weak = Arc::downgrade(&self.shared);
        move || {
            if let Some(s) = weak.upgrade() {
                s.metrics.refresh(&s);
            }
        }
    }

    /// Resolves after graceful shutdown finished: the server stopped,
    /// in-flight requests completed, the log was flushed, fsynced and
    /// checkpointed.
    pub async fn wait(self) -> Result<()> {
        self.task.await.map_err(|e| Error::Internal(format!("master task failed: {e}")))?
    }
}

/// Bit position of the epoch inside chunk handles: each master life can
/// allocate 2^40 handles before reaching the next life's range.
pub const HANDLE_EPOCH_SHIFT: u32 = 40;

/// Validates the config, recovers state, bumps the epoch, binds and serves
/// until `shutdown` is cancelled. With `admin_listen` set, also serves
/// `/metrics`, `/healthz` and `/readyz` there.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<MasterHandle> {
    let admin = match &config.admin_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let profiling = config.profiling;
    let mut handle = start_with_metrics(config, shutdown.clone(), metrics).await?;
    if let Some((listener, addr)) = admin {
        let token = shutdown.clone();
        let admin = Admin::new(Arc::new(registry))
            .ready(move || !token.is_cancelled())
            .refresh(handle.metrics_refresher())
            .profiling(profiling);
        tokio::spawn(admin_http::serve_listener(listener, admin, shutdown));
        info!(%addr, "master admin http listening");
        handle.admin_addr = Some(addr);
    }
    Ok(handle)
}

/// As [`start`], recording into `metrics` (registered by the caller, who
/// serves the admin port); `admin_listen` is ignored.
pub async fn start_with_metrics(config: Config, shutdown: CancellationToken, metrics: Metrics) -> Result<MasterHandle> {
    config.validate()?;
    // Bind first so that a busy port fails fast, before touching the data dir.
    let (listener, addr) = bind(&config.listen).await?;
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create data dir {}", dir.display()), e))?;
    let (epoch, meta, last_seq) = tokio::task::spawn_blocking(move || -> Result<_> {
        let epoch = state::bump_epoch(&dir)?;
        let (meta, last) = state::recover(&dir)?;
        Ok((epoch, meta, last))
    })
    .await
    .map_err(|e| Error::Internal(format!("recovery task: {e}")))??;
    let oplog = Oplog::open_with(&config.data_dir, last_seq + 1, metrics.oplog_fsync.clone())?;
    let mut meta = meta;
    // Handles carry the epoch in their high bits, so a handle allocated by
    // an earlier master life (possibly never logged) is never reused.
    meta.chunks.bump_next_handle(epoch << HANDLE_EPOCH_SHIFT);
    let shared = Arc::new(Shared::new(config.clone(), epoch, meta, oplog, metrics));
    // Compact the replayed log into a fresh checkpoint.
    shared.checkpoint().await?;
    info!(%addr, epoch, data_dir = %config.data_dir.display(), "master listening");

    let worker_stop = CancellationToken::new();
    tokio::spawn(LivenessWorker::new(shared.clone()).run(worker_stop.clone()));
    tokio::spawn(RepairWorker::new(shared.clone()).run(worker_stop.clone()));
    tokio::spawn(GcWorker::new(shared.clone()).run(worker_stop.clone()));
    let svc = MasterServiceServer::new(Service::new(shared.clone()))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let limits = config.limits;
    let handle_shared = shared.clone();
    let task = tokio::spawn(async move {
        let served = server_builder(&limits)
            .add_service(svc)
            .serve_with_incoming_shutdown(limited_incoming(listener, limits.max_connections), shutdown.cancelled())
            .await
            .map_err(|e| Error::Internal(format!("master server: {e}")));
        worker_stop.cancel();
        if let Err(e) = shared.checkpoint().await {
            error!(error = %e, "final checkpoint failed");
        }
        let closed = shared.oplog.close().await;
        info!("master stopped");
        served?;
        closed
    });
    Ok(MasterHandle { addr, admin_addr: None, shared: handle_shared, task })
}

/// Starts the master and waits until it has shut down.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    start(config, shutdown).await?.wait().await
}
