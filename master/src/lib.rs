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

use gfs_common::net::{bind, limited_incoming, server_builder};
use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, MAX_MESSAGE_SIZE, Result};
use gfs_proto::master_service_server::MasterServiceServer;
use tokio::task::JoinHandle;
use tracing::{error, info};

pub use config::{Config, HealConfig};

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
    task: JoinHandle<Result<()>>,
}

impl MasterHandle {
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
/// until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<MasterHandle> {
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
    let oplog = Oplog::open(&config.data_dir, last_seq + 1)?;
    let mut meta = meta;
    // Handles carry the epoch in their high bits, so a handle allocated by
    // an earlier master life (possibly never logged) is never reused.
    meta.chunks.bump_next_handle(epoch << HANDLE_EPOCH_SHIFT);
    let shared = Arc::new(Shared::new(config.clone(), epoch, meta, oplog));
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
    Ok(MasterHandle { addr, task })
}

/// Starts the master and waits until it has shut down.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    start(config, shutdown).await?.wait().await
}
