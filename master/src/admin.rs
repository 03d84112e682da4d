//! Maintenance RPCs: decommission, recommission, mark-lost, cluster status
//! and repair events.

use std::sync::Arc;

use gfs_common::{Error, Result};
use gfs_proto::log_record::Op;
use gfs_proto::*;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::state::{Meta, Shared};

impl Meta {
    /// Resolves a server id or address, or explains that it is unknown.
    fn known_server(&self, server: &str) -> Result<String> {
        self.servers.resolve(server).ok_or_else(|| {
            let mut known: Vec<String> = self.servers.iter().map(|s| s.info.id.clone()).collect();
            known.sort();
            Error::NotFound { path: format!("chunkserver {server:?} (known servers: {})", known.join(", ")) }
        })
    }

    /// Status of one server.
    pub fn server_status(&self, id: &str, now: Instant) -> ServerStatus {
        let Some(s) = self.servers.get(id) else {
            return ServerStatus { state: self.server_state(id) as i32, ..Default::default() };
        };
        ServerStatus {
            server: Some(s.info.clone()),
            alive: s.alive,
            capacity_bytes: s.capacity,
            used_bytes: s.used,
            chunk_count: s.chunks.len() as u64,
            last_heartbeat_ms_ago: now.saturating_duration_since(s.last_heartbeat).as_millis() as u64,
            load: s.load,
            state: self.server_state(id) as i32,
            full: s.full || self.heal.no_space(id, now),
            free_bytes: s.free.unwrap_or(0),
            disk_id: s.disk_id.clone(),
        }
    }

    /// Refuses a drain that could never finish: some chunk on `id` needs
    /// more replicas than servers would remain in service.
    fn check_drainable(&self, id: &str) -> Result<()> {
        let remaining = self.servers.iter().filter(|s| s.info.id != id && self.in_service(&s.info.id)).count();
        let held = self.servers.get(id).map(|s| s.chunks.clone()).unwrap_or_default();
        let mut worst: Option<(u64, u32)> = None;
        for h in held {
            if let Some(c) = self.chunks.get(h)
                && c.replication as usize > remaining
                && worst.is_none_or(|(_, r)| c.replication > r)
            {
                worst = Some((h, c.replication));
            }
        }
        match worst {
            Some((h, r)) => Err(Error::InvalidArgument(format!(
                "refusing to decommission {id}: chunk {h:#x} needs {r} replicas but only {remaining} other \
                 server(s) would remain in service, so the drain could never finish; add servers first"
            ))),
            None => Ok(()),
        }
    }
}

/// Most repair-index slices a status call takes in before answering.
const STATUS_SLICES: usize = 4;

impl Shared {
    /// Starts draining a server (logged, so a restart keeps draining).
    pub async fn decommission(self: &Arc<Self>, server: &str) -> Result<ServerStatus> {
        let id = {
            let meta = self.meta();
            let id = meta.known_server(server)?;
            match meta.admin.get(&id) {
                Some(_) => return Ok(meta.server_status(&id, Instant::now())),
                None => meta.check_drainable(&id)?,
            }
            id
        };
        let op = ServerStateOp { server_id: id.clone(), state: ServerState::Decommissioning as i32 };
        self.commit(vec![Op::ServerState(op)]).await?;
        info!(server = %id, "decommission started");
        Ok(self.meta().server_status(&id, Instant::now()))
    }

    /// Cancels or undoes a decommission; clears a lost mark.
    pub async fn recommission(self: &Arc<Self>, server: &str) -> Result<ServerStatus> {
        let (id, logged) = {
            let mut meta = self.meta();
            let id = meta.known_server(server)?;
            if let Some(s) = meta.servers.get_mut(&id) {
                s.lost = false;
            }
            let logged = meta.admin.contains_key(&id);
            (id, logged)
        };
        if logged {
            let op = ServerStateOp { server_id: id.clone(), state: ServerState::Live as i32 };
            self.commit(vec![Op::ServerState(op)]).await?;
        }
        info!(server = %id, "chunkserver recommissioned");
        Ok(self.meta().server_status(&id, Instant::now()))
    }

    /// Declares a server lost: its replicas stop counting at once. Returns
    /// its status and the number of its chunks now short of replicas.
    pub fn mark_lost(&self, server: &str) -> Result<(ServerStatus, u64)> {
        let mut meta = self.meta();
        let id = meta.known_server(server)?;
        let held = meta.servers.mark_lost(&id);
        for h in &held {
            if let Some(c) = meta.chunks.get_mut(*h) {
                c.replicas.remove(&id);
            }
        }
        let queued = held
            .iter()
            .filter_map(|h| meta.chunks.get(*h))
            .filter(|c| c.replicas.iter().filter(|s| meta.in_service(s)).count() < c.replication as usize)
            .count() as u64;
        warn!(server = %id, chunks = held.len(), queued, "chunkserver marked lost");
        Ok((meta.server_status(&id, Instant::now()), queued))
    }

    /// The cluster view for `gfs admin status`.
    pub fn cluster_status(&self) -> ClusterStatusResponse {
        let mut meta = self.meta();
        meta.index_catch_up(&self.cfg, STATUS_SLICES);
        let now = Instant::now();
        let mut servers: Vec<ServerStatus> = meta.servers.iter().map(|s| meta.server_status(&s.info.id, now)).collect();
        servers.sort_by(|a, b| a.server.as_ref().map(|s| &s.id).cmp(&b.server.as_ref().map(|s| &s.id)));
        let backlog = meta.heal.index.totals();
        let oldest_ms = meta.heal.index.oldest_ms(now);
        let (files, dirs) = meta.ns.counts();
        let live = || meta.servers.iter().filter(|s| s.alive);
        let disks = gfs_common::disks::totals(live().map(|s| (s.disk_id.as_str(), s.capacity, s.free.unwrap_or(0))));
        ClusterStatusResponse {
            servers,
            file_count: files,
            directory_count: dirs,
            chunk_count: meta.chunks.len() as u64,
            under_replicated_chunks: backlog.chunks,
            epoch: self.epoch(),
            chunk_size: self.cfg.chunk_size,
            deficits: backlog.deficits.iter().map(|(m, n)| DeficitCount { missing: *m, chunks: *n }).collect(),
            replication_backlog_chunks: backlog.chunks,
            replication_backlog_bytes: backlog.bytes,
            active_clones: meta.heal.active.len() as u32,
            oldest_pending_repair_ms: oldest_ms,
            capacity_bytes: disks.capacity,
            free_bytes: disks.free,
            used_bytes: live().map(|s| s.used).sum(),
            corrupt_replicas_kept: backlog.corrupt_kept,
            drain_backlog_chunks: backlog.drain_chunks,
            drain_backlog_bytes: backlog.drain_bytes,
            ..Default::default()
        }
    }

    /// Completed repairs, oldest first.
    pub fn repair_events(&self) -> RepairEventsResponse {
        RepairEventsResponse { events: self.meta().heal.events.iter().cloned().collect() }
    }
}
