//! Shadow state on followers: chunk lengths and replica locations pulled
//! from the leader, so that shadow reads (`allow_stale`) answer with sizes
//! and locations, possibly a little stale, like GFS's shadow masters.
//!
//! Chunkservers talk only to the leader. Every `heartbeat_ms * 2` a
//! follower pages through the leader's `ChunkLocations` and records what it
//! got as its soft state: servers seen are registered as alive (and expire
//! after `dead_after_ms` when the leader stops listing them), replica sets
//! and lengths are replaced. A master drops all soft state when it becomes
//! leader (chunkservers re-register), so none of this leaks into leader
//! decisions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use gfs_common::Result;
use gfs_common::net::with_deadline;
use gfs_common::shutdown::CancellationToken;
use gfs_proto::{ChunkLocation, ChunkLocationsRequest, ChunkLocationsResponse, ServerInfo};
use tokio::time::Instant;
use tracing::debug;

use crate::state::{Meta, Shared};

/// Chunks per `ChunkLocations` page.
pub const PAGE: u32 = 10_000;

impl Meta {
    /// One page of chunk locations after `after` (leader side).
    pub fn location_page(&self, after: u64, limit: u32) -> ChunkLocationsResponse {
        let limit = limit.clamp(1, PAGE) as usize;
        let mut handles: Vec<u64> = self.chunks.iter().map(|(h, _)| *h).filter(|h| *h > after).collect();
        let done = handles.len() <= limit;
        if !done {
            handles.select_nth_unstable(limit - 1);
            handles.truncate(limit);
        }
        handles.sort_unstable();
        ChunkLocationsResponse { chunks: handles.into_iter().map(|h| self.location(0, h)).collect(), done }
    }

    /// Replaces this follower's soft state with what the leader listed.
    pub fn apply_shadow(&mut self, chunks: Vec<ChunkLocation>, now: Instant) {
        let mut servers: BTreeMap<String, ServerInfo> = BTreeMap::new();
        let mut held: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for c in &chunks {
            for r in &c.replicas {
                servers.insert(r.id.clone(), r.clone());
                held.entry(r.id.clone()).or_default().insert(c.handle);
            }
        }
        for (id, info) in servers {
            let e = self.servers.register(info, 0, 0, now);
            e.chunks = held.remove(&id).unwrap_or_default().into_iter().collect();
        }
        for c in chunks {
            if let Some(e) = self.chunks.get_mut(c.handle) {
                e.length = c.length;
                e.replicas = c.replicas.into_iter().map(|r| r.id).collect();
            }
        }
    }
}

/// Pulls the leader's chunk locations while this master is a follower.
pub struct ShadowSync {
    shared: Arc<Shared>,
}

impl ShadowSync {
    /// A sync task over the master state.
    pub fn new(shared: Arc<Shared>) -> Self {
        ShadowSync { shared }
    }

    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let period = Duration::from_millis(self.shared.cfg.heartbeat_ms * 2);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if self.shared.is_leader() {
                continue;
            }
            let Some(leader) = self.shared.leader_hint() else { continue };
            if let Err(e) = self.pull(&leader).await {
                debug!(leader, error = %e, "shadow sync from the leader failed");
            }
        }
    }

    async fn pull(&self, leader: &str) -> Result<()> {
        let timeout = Duration::from_millis(self.shared.cfg.rpc_timeout_ms);
        let mut c = crate::group::master_client(&self.shared.peers, leader)?;
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let req = ChunkLocationsRequest { after_handle: after, limit: PAGE };
            let page = match c.chunk_locations(with_deadline(req, timeout)).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    self.shared.peers.forget(leader);
                    return Err(e.into());
                }
            };
            if let Some(last) = page.chunks.last() {
                after = last.handle;
            }
            all.extend(page.chunks);
            if page.done {
                break;
            }
        }
        if !self.shared.is_leader() {
            self.shared.meta().apply_shadow(all, Instant::now());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_proto::{AddChunkOp, CreateOp, log_record::Op};

    #[test]
    fn pages_cover_every_chunk_once_and_shadow_state_is_applied() {
        let mut leader = Meta::new();
        leader.apply(&Op::Create(CreateOp { path: "/f".into(), replication: 2, chunk_size: 1 << 20 }), 1).unwrap();
        for h in 1..=25u64 {
            let op = Op::AddChunk(AddChunkOp { path: "/f".into(), index: h - 1, handle: h * 7, version: 1 });
            leader.apply(&op, 1).unwrap();
        }
        let now = Instant::now();
        for id in ["a", "b"] {
            let info = ServerInfo { id: id.into(), address: format!("{id}:1"), zone: "z".into() };
            leader.servers.register(info, 10, 0, now);
        }
        for h in 1..=25u64 {
            leader.add_replica(h * 7, "a");
            leader.chunks.get_mut(h * 7).unwrap().length = h;
        }
        leader.add_replica(7, "b");
        let (mut seen, mut after) = (Vec::new(), 0);
        loop {
            let p = leader.location_page(after, 10);
            assert!(p.chunks.len() <= 10);
            after = p.chunks.last().map_or(after, |c| c.handle);
            seen.extend(p.chunks);
            if p.done {
                break;
            }
        }
        assert_eq!(seen.iter().map(|c| c.handle).collect::<Vec<_>>(), (1..=25).map(|h| h * 7).collect::<Vec<_>>());
        let mut follower = Meta::new();
        follower.apply(&Op::Create(CreateOp { path: "/f".into(), replication: 2, chunk_size: 1 << 20 }), 1).unwrap();
        for h in 1..=25u64 {
            let op = Op::AddChunk(AddChunkOp { path: "/f".into(), index: h - 1, handle: h * 7, version: 1 });
            follower.apply(&op, 1).unwrap();
        }
        follower.apply_shadow(seen, now);
        assert_eq!(follower.location(0, 7).replicas.len(), 2);
        assert_eq!(follower.location(24, 175).replicas.len(), 1);
        assert_eq!(follower.chunks.get(175).unwrap().length, 25);
        let f = follower.ns.lookup("/f").unwrap();
        assert_eq!(follower.file_info("/f", f).size, 24 * (1 << 20) + 25);
    }
}
