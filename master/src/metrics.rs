//! Prometheus metrics of the master (`gfs_master_*`).
//!
//! Counters and histograms are updated where things happen; the gauges
//! derived from the chunk table (chunks, backlog, deficits, clones,
//! heartbeat ages) are refreshed from [`Shared::cluster_status`] by
//! [`Metrics::refresh`], which the admin port runs before every scrape.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use gfs_common::admin_http::{RPC_BUCKETS, code_label};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tonic::{Response, Status};

use crate::state::Shared;

/// Labels of the RPC counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// gRPC method name (`Create`, `Heartbeat`, ...).
    pub method: &'static str,
    /// gRPC status (`OK`, `NotFound`, ...).
    pub code: &'static str,
}

/// Label of the RPC latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// gRPC method name.
    pub method: &'static str,
}

/// Label of the deficit gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MissingLabel {
    /// Replicas missing.
    pub missing: String,
}

/// Label of per-chunkserver gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    /// Advertised address of the chunkserver.
    pub server: String,
}

/// Label of the shadow-pull counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PullLabel {
    /// `full` (the follower's shadow state replaced) or `changes`.
    pub kind: String,
}

impl PullLabel {
    /// The label of a full pull (`true`) or a pull of changes.
    pub fn of(full: bool) -> Self {
        PullLabel { kind: if full { "full" } else { "changes" }.into() }
    }
}

/// Label of the corruption-report counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `refused` (not the holder, unknown chunk...), `intact`, `dropped`,
    /// `kept` (confirmed, last copy), `failed` (not verified), `changed`
    /// (the chunk changed meanwhile).
    pub outcome: String,
}

/// Families of the master. Cheap to clone (every family is an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    /// RPCs handled, by method and status code.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// RPC latency by method.
    pub rpc_duration: Family<MethodLabel, Histogram>,
    /// Leases granted (a primary was chosen).
    pub lease_grants: Counter,
    /// Operation-log group fsync latency.
    pub oplog_fsync: Histogram,
    /// Chunks in the chunk table.
    pub chunks: Gauge,
    /// Chunks short of replicas, by replicas missing.
    pub under_replicated: Family<MissingLabel, Gauge>,
    /// Bytes of the chunks short of replicas (replication lag).
    pub backlog_bytes: Gauge,
    /// Chunks short of replicas.
    pub backlog_chunks: Gauge,
    /// The part of `backlog_bytes` that planned drains owe (no replica at
    /// risk): backlog minus this is the lag a scaler should read.
    pub drain_backlog_bytes: Gauge,
    /// Clones in flight.
    pub active_clones: Gauge,
    /// Chunkservers alive.
    pub chunkservers_alive: Gauge,
    /// Seconds since each chunkserver's last heartbeat.
    pub heartbeat_age: Family<ServerLabel, Gauge<f64, AtomicU64>>,
    /// Current Raft term as this master sees it.
    pub raft_term: Gauge,
    /// 1 while this master is the acting leader.
    pub raft_is_leader: Gauge,
    /// Times this master became the acting leader.
    pub leader_changes: Counter,
    /// Last Raft index applied to the metadata.
    pub raft_applied_index: Gauge,
    /// Callers' batches per proposed Raft entry (proposal grouping).
    pub raft_entry_batches: Histogram,
    /// Shadow pulls this follower applied, full or of changes.
    pub shadow_pulls: Family<PullLabel, Counter>,
    /// Chunk entries this follower took from shadow pulls.
    pub shadow_pulled_chunks: Counter,
    /// Corruption reports by what became of them.
    pub corrupt_reports: Family<OutcomeLabel, Counter>,
    /// Replicas confirmed corrupt but kept as last copies.
    pub corrupt_kept: Gauge,
    /// Deficit sizes reported so far (kept at 0 once repaired).
    seen_missing: Arc<Mutex<BTreeSet<u32>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(|| Histogram::new(RPC_BUCKETS)),
            lease_grants: Counter::default(),
            oplog_fsync: Histogram::new([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5]),
            chunks: Gauge::default(),
            under_replicated: Family::default(),
            backlog_bytes: Gauge::default(),
            backlog_chunks: Gauge::default(),
            drain_backlog_bytes: Gauge::default(),
            active_clones: Gauge::default(),
            chunkservers_alive: Gauge::default(),
            heartbeat_age: Family::default(),
            raft_term: Gauge::default(),
            raft_is_leader: Gauge::default(),
            leader_changes: Counter::default(),
            raft_applied_index: Gauge::default(),
            raft_entry_batches: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
            shadow_pulls: Family::default(),
            shadow_pulled_chunks: Counter::default(),
            corrupt_reports: Family::default(),
            corrupt_kept: Gauge::default(),
            seen_missing: Arc::new(Mutex::new(BTreeSet::from([1]))),
        }
    }
}

impl Metrics {
    /// Registers every family under `gfs_master`.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("gfs_master");
        r.register("rpc_requests", "RPCs handled by method and status code", self.rpc_requests.clone());
        r.register("rpc_duration_seconds", "RPC latency by method", self.rpc_duration.clone());
        r.register("lease_grants", "Leases granted to a primary", self.lease_grants.clone());
        r.register("oplog_fsync_seconds", "Operation-log group fsync latency", self.oplog_fsync.clone());
        r.register("chunks", "Chunks in the chunk table", self.chunks.clone());
        r.register(
            "under_replicated_chunks",
            "Chunks short of replicas by replicas missing",
            self.under_replicated.clone(),
        );
        r.register("replication_backlog_bytes", "Bytes of under-replicated chunks", self.backlog_bytes.clone());
        r.register("replication_backlog_chunks", "Under-replicated chunks", self.backlog_chunks.clone());
        r.register(
            "drain_backlog_bytes",
            "Bytes of the backlog that planned drains owe (replicas still live on decommissioning servers)",
            self.drain_backlog_bytes.clone(),
        );
        r.register("active_clones", "Chunk clones in flight", self.active_clones.clone());
        r.register("chunkservers_alive", "Chunkservers alive", self.chunkservers_alive.clone());
        r.register("raft_term", "Current Raft term of the master group", self.raft_term.clone());
        r.register("raft_is_leader", "1 while this master is the acting leader", self.raft_is_leader.clone());
        r.register("raft_leader_changes", "Times this master became the leader", self.leader_changes.clone());
        r.register("raft_applied_index", "Last Raft log index applied", self.raft_applied_index.clone());
        r.register(
            "raft_entry_batches",
            "Callers' metadata batches grouped into each proposed Raft entry",
            self.raft_entry_batches.clone(),
        );
        // Both kinds are listed from the start (at 0).
        for full in [true, false] {
            self.shadow_pulls.get_or_create(&PullLabel::of(full)).inc_by(0);
        }
        r.register("shadow_pulls", "Shadow pulls applied by this follower, by kind", self.shadow_pulls.clone());
        r.register(
            "shadow_pulled_chunks",
            "Chunk entries this follower took from shadow pulls",
            self.shadow_pulled_chunks.clone(),
        );
        // The outcomes an operator alerts on are listed from the start (at 0).
        for outcome in ["dropped", "kept", "refused"] {
            self.corrupt_reports.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc_by(0);
        }
        r.register("corrupt_reports", "Corruption reports by outcome", self.corrupt_reports.clone());
        r.register(
            "corrupt_replicas_kept",
            "Replicas confirmed corrupt but kept: no other good replica of their chunk",
            self.corrupt_kept.clone(),
        );
        r.register(
            "chunkserver_heartbeat_age_seconds",
            "Seconds since the chunkserver's last heartbeat",
            self.heartbeat_age.clone(),
        );
        self
    }

    /// Counts a corruption report's outcome.
    pub fn corrupt_report(&self, outcome: &str) {
        self.corrupt_reports.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    }

    /// Starts timing an RPC; finish it with [`RpcTimer::reply`].
    pub fn rpc(&self, method: &'static str) -> RpcTimer<'_> {
        RpcTimer { metrics: self, method, start: Instant::now(), code: None }
    }

    /// Sets the gauges derived from the master state.
    /// Only the acting leader knows chunkservers and replicas: a follower
    /// reports the cluster gauges as 0, so `sum()` over every master is
    /// right.
    pub fn refresh(&self, shared: &Shared) {
        let applied = shared.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        self.raft_applied_index.set(applied as i64);
        let st = if shared.is_leader() { shared.cluster_status() } else { Default::default() };
        self.chunks.set(st.chunk_count as i64);
        self.backlog_bytes.set(st.replication_backlog_bytes as i64);
        self.backlog_chunks.set(st.replication_backlog_chunks as i64);
        self.drain_backlog_bytes.set(st.drain_backlog_bytes as i64);
        self.active_clones.set(st.active_clones as i64);
        self.corrupt_kept.set(st.corrupt_replicas_kept as i64);
        self.chunkservers_alive.set(st.servers.iter().filter(|s| s.alive).count() as i64);
        let mut seen = self.seen_missing.lock().unwrap_or_else(|e| e.into_inner());
        for m in seen.iter() {
            self.under_replicated.get_or_create(&MissingLabel { missing: m.to_string() }).set(0);
        }
        for d in &st.deficits {
            seen.insert(d.missing);
            self.under_replicated.get_or_create(&MissingLabel { missing: d.missing.to_string() }).set(d.chunks as i64);
        }
        drop(seen);
        self.heartbeat_age.clear();
        for s in &st.servers {
            if let Some(info) = &s.server {
                let age = s.last_heartbeat_ms_ago as f64 / 1000.0;
                self.heartbeat_age.get_or_create(&ServerLabel { server: info.address.clone() }).set(age);
            }
        }
    }
}

/// Records one RPC's count and latency when dropped; an RPC dropped before
/// [`RpcTimer::reply`] (client gone) counts as `Canceled`. Borrows the
/// families and allocates nothing: it runs on every RPC.
pub struct RpcTimer<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    start: Instant,
    code: Option<tonic::Code>,
}

impl RpcTimer<'_> {
    /// Maps the handler result to a reply and records its status.
    pub fn reply<T>(mut self, r: gfs_common::Result<T>) -> Result<Response<T>, Status> {
        let r = r.map(Response::new).map_err(Status::from);
        self.code = Some(r.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok));
        r
    }
}

impl Drop for RpcTimer<'_> {
    fn drop(&mut self) {
        let code = code_label(self.code.unwrap_or(tonic::Code::Cancelled));
        self.metrics.rpc_requests.get_or_create(&RpcLabels { method: self.method, code }).inc();
        self.metrics
            .rpc_duration
            .get_or_create(&MethodLabel { method: self.method })
            .observe(self.start.elapsed().as_secs_f64());
    }
}
