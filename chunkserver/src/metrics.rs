//! Prometheus metrics of the chunkserver (`gfs_chunkserver_*`).
//!
//! Every series carries `server` (the advertised address), so several
//! chunkservers in one process (`gfs server`, tests) share one set of
//! families in one registry.

use std::time::Instant;

use gfs_common::admin_http::{RPC_BUCKETS, code_label};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::{Response, Status};

/// Labels of the RPC counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Advertised address of the chunkserver.
    pub server: String,
    /// gRPC method name (`Read`, `Write`, ...).
    pub method: String,
    /// gRPC status (`OK`, `NotFound`, ...).
    pub code: String,
}

/// Labels of the RPC latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// Advertised address of the chunkserver.
    pub server: String,
    /// gRPC method name.
    pub method: String,
}

/// Label of per-server counters and gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    /// Advertised address of the chunkserver.
    pub server: String,
}

/// Families of the chunkserver. Cheap to clone; register once per registry.
#[derive(Clone)]
pub struct Metrics {
    /// RPCs handled, by method and status code.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// RPC latency by method.
    pub rpc_duration: Family<MethodLabels, Histogram>,
    /// Chunk bytes returned by `Read`.
    pub read_bytes: Family<ServerLabel, Counter>,
    /// Chunk bytes written (mutations as primary or secondary, clones).
    pub written_bytes: Family<ServerLabel, Counter>,
    /// Chunks held.
    pub chunks: Family<ServerLabel, Gauge>,
    /// 1 while registered with the master.
    pub registered: Family<ServerLabel, Gauge>,
    /// Capacity of the data volume (or the `--capacity` override).
    pub capacity_bytes: Family<ServerLabel, Gauge>,
    /// Bytes still free for chunks (bounded by the override).
    pub free_bytes: Family<ServerLabel, Gauge>,
    /// Records per group-committed append mutation (as primary).
    pub append_group_records: Family<ServerLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(|| Histogram::new(RPC_BUCKETS)),
            read_bytes: Family::default(),
            written_bytes: Family::default(),
            chunks: Family::default(),
            registered: Family::default(),
            capacity_bytes: Family::default(),
            free_bytes: Family::default(),
            append_group_records: Family::new_with_constructor(|| {
                Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
            }),
        }
    }
}

impl Metrics {
    /// Registers every family under `gfs_chunkserver`.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("gfs_chunkserver");
        r.register("rpc_requests", "RPCs handled by method and status code", self.rpc_requests.clone());
        r.register("rpc_duration_seconds", "RPC latency by method", self.rpc_duration.clone());
        r.register("read_bytes", "Chunk bytes returned by Read", self.read_bytes.clone());
        r.register("written_bytes", "Chunk bytes written", self.written_bytes.clone());
        r.register("chunks", "Chunks held", self.chunks.clone());
        r.register("registered", "1 while registered with the master", self.registered.clone());
        r.register("capacity_bytes", "Capacity of the data volume", self.capacity_bytes.clone());
        r.register("free_bytes", "Bytes of the data volume still free for chunks", self.free_bytes.clone());
        r.register(
            "append_group_records",
            "Records per group-committed append mutation (as primary)",
            self.append_group_records.clone(),
        );
        self
    }

    /// The view of one server.
    pub fn for_server(&self, server: &str) -> ServerMetrics {
        let label = ServerLabel { server: server.into() };
        ServerMetrics {
            read_bytes: self.read_bytes.get_or_create(&label).clone(),
            written_bytes: self.written_bytes.get_or_create(&label).clone(),
            chunks: self.chunks.get_or_create(&label).clone(),
            registered: self.registered.get_or_create(&label).clone(),
            capacity_bytes: self.capacity_bytes.get_or_create(&label).clone(),
            free_bytes: self.free_bytes.get_or_create(&label).clone(),
            append_group_records: self.append_group_records.get_or_create(&label).clone(),
            families: self.clone(),
            server: server.into(),
        }
    }
}

/// One server's series.
#[derive(Clone)]
pub struct ServerMetrics {
    families: Metrics,
    server: String,
    /// Chunk bytes returned by `Read`.
    pub read_bytes: Counter,
    /// Chunk bytes written.
    pub written_bytes: Counter,
    /// Chunks held.
    pub chunks: Gauge,
    /// 1 while registered.
    pub registered: Gauge,
    /// Capacity of the data volume.
    pub capacity_bytes: Gauge,
    /// Free bytes of the data volume.
    pub free_bytes: Gauge,
    /// Records per group-committed append mutation.
    pub append_group_records: Histogram,
}

impl ServerMetrics {
    /// Starts timing an RPC; finish it with [`RpcTimer::reply`].
    pub fn rpc(&self, method: &'static str) -> RpcTimer<'_> {
        RpcTimer { m: self, method, start: Instant::now(), code: None }
    }
}

/// Records one RPC's count and latency when dropped; an RPC dropped before
/// [`RpcTimer::reply`] (client gone) counts as `Canceled`.
pub struct RpcTimer<'a> {
    m: &'a ServerMetrics,
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
        let f = &self.m.families;
        let server = self.m.server.clone();
        f.rpc_requests
            .get_or_create(&RpcLabels { server: server.clone(), method: self.method.into(), code: code.into() })
            .inc();
        f.rpc_duration
            .get_or_create(&MethodLabels { server, method: self.method.into() })
            .observe(self.start.elapsed().as_secs_f64());
    }
}
