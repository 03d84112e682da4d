//! The gfs master: namespace, chunk metadata, leases, chunkserver liveness
//! and the operation log.
//!
//! [`start`] recovers the state from the data directory, joins the master
//! group (Raft), and serves `MasterService` and `RaftService` on one port
//! until the shutdown token is cancelled.

pub mod access;
pub mod admin;
pub mod backoff;
pub mod children;
pub mod chunks;
pub mod config;
pub mod corrupt;
pub mod frozen;
pub mod gc;
pub mod grant;
pub mod group;
pub mod heal;
pub mod heal_index;
pub mod hidden;
pub mod lease;
pub mod locks;
pub mod metrics;
pub mod namespace;
pub mod ns_index;
pub mod ns_service;
pub mod oplog;
pub mod perm;
pub mod placement;
pub mod raft;
pub mod repair;
pub mod report;
pub mod retry;
pub mod rpc;
pub mod servers;
pub mod service;
pub mod shadow;
pub mod sid;
pub mod state;
pub mod status_page;
pub mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gfs_common::admin_http::{self, Admin};
use gfs_common::dirlock::DirLock;
use gfs_common::net::{bind, incoming, server_builder};
use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, MAX_MESSAGE_SIZE, Result};
use gfs_proto::master_service_server::MasterServiceServer;
use gfs_proto::raft_service_server::RaftServiceServer;
use openraft::BasicNode;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use config::{Config, HealConfig};
pub use metrics::Metrics;
use prometheus_client::registry::Registry;

use crate::gc::GcWorker;
use crate::heal::RepairWorker;
use crate::raft::Raft;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Faults, Network, RaftServer};
use crate::raft::state_machine::Machine;
use crate::servers::LivenessWorker;
use crate::service::Service;
use crate::state::{Meta, Shared};

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
    /// True while this master is the acting leader (for a process that
    /// runs several masters and serves the leader's status page).
    pub fn leader_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let weak = Arc::downgrade(&self.shared);
        move || weak.upgrade().is_some_and(|s| s.is_leader())
    }

    /// The handler of the status page ([`status_page::PATH`] on the
    /// admin port). It holds the master weakly and answers within 5 s.
    pub fn status_page(&self) -> gfs_common::admin_http::Handler {
        let weak = Arc::downgrade(&self.shared);
        let short = Arc::new(status_page::Recent::new(status_page::SHORT_FILES_TTL));
        Arc::new(move |_target: String| {
            let (weak, short) = (weak.clone(), short.clone());
            Box::pin(async move {
                let Some(shared) = weak.upgrade() else {
                    return ("503 Service Unavailable", "text/plain", "the master is stopping\n".to_string());
                };
                match tokio::time::timeout(Duration::from_secs(5), status_page::render(&shared, &short)).await {
                    Ok(html) => ("200 OK", "text/html; charset=utf-8", html),
                    Err(_) => ("503 Service Unavailable", "text/plain", "status not ready within 5 s\n".to_string()),
                }
            })
        })
    }

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

    /// A probe for `/readyz`: true once the group has a leader (this master
    /// or another), or while this master waits to be added to a group.
    pub fn readiness(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let weak = Arc::downgrade(&self.shared);
        move || {
            weak.upgrade().is_some_and(|s| {
                let m = s.raft.metrics().borrow().clone();
                m.current_leader.is_some() || !m.membership_config.membership().nodes().any(|(id, _)| *id == s.id)
            })
        }
    }

    /// Waits until this master is the acting leader.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.shared.is_leader() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!("master did not become leader within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Signs a chunk token with the group's current key, as GetChunks and
    /// leases do: for tests and tools that talk to replicas directly.
    pub fn token(&self, handle: u64, version: u64, rights: u32) -> Result<gfs_proto::ChunkToken> {
        self.shared.meta().token(handle, version, rights, "admin", self.shared.cfg.token_lifetime_ms)
    }

    /// Waits until the group has a chunk token key.
    pub async fn wait_token_key(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.shared.meta().token_keys.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!("no chunk token key within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// True while this master is the acting leader.
    pub fn is_leader(&self) -> bool {
        self.shared.is_leader()
    }

    /// Resolves after graceful shutdown finished: the server stopped,
    /// in-flight requests completed, the log was flushed, fsynced and
    /// checkpointed.
    pub async fn wait(self) -> Result<()> {
        self.task.await.map_err(|e| Error::Internal(format!("master task failed: {e}")))?
    }
}

/// Bit position of the epoch (Raft term) inside chunk handles: each
/// leader term can allocate 2^40 handles before reaching the next term's
/// range.
pub const HANDLE_EPOCH_SHIFT: u32 = 40;

/// Added to a restarted member's election grace: how long the leader may
/// spend on a connect to the member's old address before it dials again.
const CONNECT_GRACE_MS: u64 = 2_000;

/// Validates the config, recovers state, starts Raft, binds and serves
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
    let auth = config.admin_auth.clone();
    let mut handle = start_with_metrics(config, shutdown.clone(), metrics).await?;
    if let Some((listener, addr)) = admin {
        let token = shutdown.clone();
        let ready = handle.readiness();
        let admin = Admin::new(Arc::new(registry))
            .ready(move || !token.is_cancelled() && ready())
            .refresh(handle.metrics_refresher())
            .profiling(profiling)
            .auth(auth)
            .route(status_page::PATH, handle.status_page());
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
    // One process per data dir: held by the server task until the log is
    // closed, released on any earlier error.
    let lock = DirLock::acquire(&dir)?;
    refuse_pre_raft_layout(&dir)?;
    let meta = tokio::task::spawn_blocking(move || -> Result<Meta> {
        match oplog::load_checkpoint(&dir)? {
            Some(cp) => Meta::from_checkpoint(&cp),
            None => Ok(Meta::new()),
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("recovery task: {e}")))??;
    let mut log = LogStore::open(&config.data_dir, metrics.oplog_fsync.clone())?;
    let id = config.id;
    let mut peers = config.peers.clone();
    if peers.is_empty() {
        peers.insert(id, addr.to_string());
    }
    // A member missing from the initial group waits to be added.
    let join = config.join || !peers.contains_key(&id);
    let voters: Vec<u64> = match log.last_membership() {
        Some(m) => m.voter_ids().collect(),
        None => meta.membership.membership().voter_ids().collect(),
    };
    // The group as last known (log, then checkpoint), else the initial one.
    let voters = if voters.is_empty() { peers.keys().copied().collect() } else { voters };
    let single = voters == [id] && !join;
    if single {
        log.advance_term(id).await?;
    } else {
        log.forget_own_leadership(id).await?;
    }
    let meta = Arc::new(std::sync::Mutex::new(meta));
    let machine = Machine::new(meta.clone(), config.data_dir.clone(), id);
    let r = config.raft;
    let raft_cfg = openraft::Config {
        cluster_name: "gfs-masters".into(),
        heartbeat_interval: r.heartbeat_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        install_snapshot_timeout: config.rpc_timeout_ms.max(r.election_timeout_min_ms),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.checkpoint_every),
        // Entries kept after a snapshot for followers that are slightly
        // behind; one further behind installs the snapshot.
        max_in_snapshot_log_to_keep: config.checkpoint_every.min(1_000),
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::InvalidArgument(format!("raft config: {e}")))?;
    let faults = Faults::new(config.fault_injection);
    let network =
        Network::new(faults.clone(), Duration::from_millis(config.rpc_timeout_ms.min(2_000)), &config.security);
    let raft = Raft::new(id, Arc::new(raft_cfg), network, log.clone(), machine.state_machine())
        .await
        .map_err(|e| Error::Internal(format!("start raft: {e}")))?;
    let initialized = raft.is_initialized().await.map_err(|e| Error::Internal(format!("raft: {e}")))?;
    // Only the lowest id of the initial group initializes it (the others
    // get the membership from it), so members that start later, or whose
    // data is gone, never found a second group.
    let founder = peers.keys().next() == Some(&id) && peers.contains_key(&id);
    let existing = match &config.discover {
        Some(d) if !initialized && !join && founder => {
            group::group_exists(d, &addr.to_string(), &config.security).await
        }
        _ => false,
    };
    if existing {
        warn!(id, "this founder has no log but its group exists: waiting for the leader instead of founding a group");
    }
    if !initialized && !join && founder && !existing {
        let members: BTreeMap<u64, BasicNode> =
            peers.iter().map(|(i, a)| (*i, BasicNode { addr: a.clone() })).collect();
        info!(id, members = ?peers, "initializing a new master group");
        if let Err(e) = raft.initialize(members).await {
            // Another member may have initialized first; its log wins.
            warn!(error = %e, "raft initialize");
        }
    }
    if single {
        // A group of one need not wait for an election timeout.
        let _ = raft.trigger().elect().await;
    }
    // A member of a running group that restarts (a pod recreated with a new
    // address, a crash) first gives the leader time to find it: until the
    // leader's connection to its old address times out and its name is
    // resolved again, it hears nothing, and campaigning after one election
    // timeout would depose a healthy leader (seen on Kubernetes: every
    // follower restart of a rollout forced an election). If no leader
    // shows up within the grace, it campaigns as usual. This holds for a
    // member that once joined (`join`, or not in `--peers`) as much as for
    // a founder: what counts is that its log already holds the group.
    if initialized && !single {
        let grace = Duration::from_millis(r.heartbeat_ms.saturating_mul(4).saturating_add(CONNECT_GRACE_MS));
        raft.runtime_config().elect(false);
        let (raft, shutdown) = (raft.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(grace) => raft.runtime_config().elect(true),
            }
        });
        info!(grace_ms = grace.as_millis() as u64, "restarted group member: no campaign before the grace ends");
    }
    // A stopping master stops heartbeating and campaigning at once: while it
    // finishes its in-flight requests, its followers stop hearing from it
    // and elect a new leader after the lease and one election timeout
    // (about 3.5 s), instead of after the whole drain and then that. A
    // deposed leader commits nothing: its appends find a higher term.
    {
        let (raft, shutdown) = (raft.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            raft.runtime_config().heartbeat(false);
            raft.runtime_config().elect(false);
            info!("stopping: heartbeats and elections off, so the group elects a leader without this master");
        });
    }
    let shared = Arc::new(Shared::new(config.clone(), id, meta, machine, raft.clone(), log, metrics));
    info!(%addr, id, peers = ?peers, data_dir = %config.data_dir.display(), "master listening");

    let worker_stop = CancellationToken::new();
    tokio::spawn(shared.clone().watch_leadership(worker_stop.clone()));
    tokio::spawn(LivenessWorker::new(shared.clone()).run(worker_stop.clone()));
    tokio::spawn(RepairWorker::new(shared.clone()).run(worker_stop.clone()));
    tokio::spawn(GcWorker::new(shared.clone()).run(worker_stop.clone()));
    tokio::spawn(crate::tokens::KeyWorker::new(shared.clone()).run(worker_stop.clone()));
    tokio::spawn(crate::shadow::ShadowSync::new(shared.clone()).run(worker_stop.clone()));
    let svc = MasterServiceServer::new(Service::new(shared.clone()))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let raft_svc = RaftServiceServer::new(RaftServer::new(raft, faults))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let limits = config.limits;
    let conns = incoming(listener, &limits, &config.security);
    let handle_shared = shared.clone();
    let task = tokio::spawn(async move {
        let served = server_builder(&limits)
            .add_service(svc)
            .add_service(raft_svc)
            .serve_with_incoming_shutdown(conns, shutdown.cancelled())
            .await
            .map_err(|e| Error::Internal(format!("master server: {e}")));
        worker_stop.cancel();
        // A checkpoint of the applied state makes the next start replay
        // less; the log itself is already durable.
        if let Err(e) = shared.machine.build().await {
            error!(error = %e, "final checkpoint failed");
        }
        if let Err(e) = shared.raft.shutdown().await {
            error!(error = %e, "raft shutdown failed");
        }
        shared.log.close().await;
        info!("master stopped");
        drop(lock);
        served
    });
    let handle = MasterHandle { addr, admin_addr: None, shared: handle_shared, task };
    if single {
        // A group of one elects itself at once; return when it serves
        // (with a token key, so that reads and writes work at once).
        handle.wait_leader(Duration::from_secs(10)).await?;
        handle.wait_token_key(Duration::from_secs(10)).await?;
    }
    Ok(handle)
}

/// Refuses a data directory written by the single-master log format.
fn refuse_pre_raft_layout(dir: &std::path::Path) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(format!("read dir {}", dir.display()), e))?;
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.strip_prefix("log.").is_some_and(|n| n.parse::<u64>().is_ok()) {
            return Err(Error::InvalidArgument(format!(
                "{} holds a pre-Raft operation log ({name}); this master cannot read it. Start from an empty data dir",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Starts the master and waits until it has shut down.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    start(config, shutdown).await?.wait().await
}
