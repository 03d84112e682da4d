//! Shadow state on followers: chunk lengths and replica locations pulled
//! from the leader, so that shadow reads (`allow_stale`) answer with sizes
//! and locations, possibly a little stale, like GFS's shadow masters.
//!
//! Chunkservers talk only to the leader. Every `heartbeat_ms * 2` a
//! follower asks the leader's `ChunkLocations` for the chunks changed since
//! its cursor (the chunk table's change stream, `chunks.rs`), a page at a
//! time, and applies them: lengths and replica sets are replaced, the
//! leader's live servers are marked alive (and expire after `dead_after_ms`
//! when the leader stops listing them). A steady pull costs the leader
//! O(changes), not O(chunks).
//!
//! The follower pulls everything again (a *full* pull, which replaces its
//! shadow state) when it has no cursor, when the leader's stream is not the
//! cursor's (a new leader, or the leader forgot its soft state), when its
//! own chunk table was replaced or reset (snapshot install, a term as
//! leader), and when its last pull is older than `dead_after_ms` (its own
//! liveness sweep may then have dropped replicas the leader still lists).
//! A master drops all soft state when it becomes leader (chunkservers
//! re-register), so none of this leaks into leader decisions.

use std::sync::Arc;
use std::time::Duration;

use gfs_common::net::with_deadline;
use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, Result};
use gfs_proto::{ChunkLocationsRequest, ChunkLocationsResponse, ServerInfo, ShadowChunk};
use tokio::time::Instant;
use tracing::debug;

use crate::sid::ServerSet;
use crate::state::{Meta, Shared};

/// Chunks per `ChunkLocations` page.
pub const PAGE: u32 = 10_000;

/// What a follower took from one pull.
#[derive(Debug)]
pub struct Applied {
    /// Sequence number of the last change applied (the next cursor), if any.
    pub last_seq: Option<u64>,
    /// Stopped at a chunk this follower's log does not have yet.
    pub stalled: bool,
}

impl Meta {
    /// One page of the chunks changed after `after_seq` in change stream
    /// `stream` (leader side); from the start of the current stream if
    /// `stream` is not it.
    pub fn shadow_page(&self, stream: u64, after_seq: u64, limit: u32) -> ChunkLocationsResponse {
        let limit = limit.clamp(1, PAGE) as usize;
        let from = if stream == self.chunks.stream() { after_seq } else { 0 };
        let mut changes = self.chunks.changed_after(from);
        let chunks: Vec<ShadowChunk> = changes
            .by_ref()
            .take(limit)
            .map(|(seq, handle, c)| ShadowChunk {
                seq,
                handle,
                length: c.length,
                replicas: c.replicas.iter().map(str::to_string).collect(),
            })
            .collect();
        ChunkLocationsResponse {
            stream: self.chunks.stream(),
            done: changes.next().is_none(),
            chunks,
            servers: self.servers.iter().filter(|s| s.alive).map(|s| s.info.clone()).collect(),
            applied_index: self.applied.map_or(0, |l| l.index),
        }
    }

    /// Applies what a follower pulled: `changes` in sequence order, taken
    /// when the leader had applied `leader_applied`. A `full` pull replaces
    /// all shadow state.
    pub fn apply_shadow(
        &mut self,
        full: bool,
        changes: Vec<ShadowChunk>,
        servers: Vec<ServerInfo>,
        leader_applied: u64,
        now: Instant,
    ) -> Applied {
        if full {
            self.servers = Default::default();
            self.chunks.clear_soft_state();
        }
        for info in servers {
            self.servers.refresh(info, now);
        }
        let behind = self.applied.map_or(0, |l| l.index) < leader_applied;
        let mut applied = Applied { last_seq: None, stalled: false };
        for sc in changes {
            let Some(c) = self.chunks.get_mut_untracked(sc.handle) else {
                if behind {
                    // Created in an entry this follower has not applied yet.
                    applied.stalled = true;
                    break;
                }
                // Deleted here already.
                applied.last_seq = Some(sc.seq);
                continue;
            };
            c.length = sc.length;
            let new: ServerSet = sc.replicas.into_iter().collect();
            let old = std::mem::replace(&mut c.replicas, new.clone());
            for id in old.iter().filter(|id| !new.contains(id)) {
                if let Some(s) = self.servers.get_mut(id) {
                    s.chunks.remove(&sc.handle);
                }
            }
            for id in new.iter().filter(|id| !old.contains(id)) {
                if let Some(s) = self.servers.get_mut(id) {
                    s.chunks.insert(sc.handle);
                }
            }
            applied.last_seq = Some(sc.seq);
        }
        applied
    }
}

/// One pull in progress: the pages taken so far, from a cursor.
#[derive(Debug)]
pub struct Pull {
    /// The cursor the pull started from, `(0, 0)` for none.
    pub start: (u64, u64),
    /// The leader's stream and the last change taken.
    pub stream: u64,
    pub after: u64,
    /// The pull restarted the stream: it replaces the shadow state.
    pub full: bool,
    pub changes: Vec<ShadowChunk>,
    /// The leader's live servers, from the last page.
    pub servers: Vec<ServerInfo>,
    pub leader_applied: u64,
}

impl Pull {
    /// A pull from cursor `(stream, seq)`.
    pub fn new(start: (u64, u64)) -> Self {
        Pull {
            start,
            stream: start.0,
            after: start.1,
            full: false,
            changes: Vec::new(),
            servers: Vec::new(),
            leader_applied: 0,
        }
    }

    /// The request for the next page.
    pub fn request(&self, limit: u32) -> ChunkLocationsRequest {
        ChunkLocationsRequest { limit, stream: self.stream, after_seq: self.after }
    }

    /// Takes a page; returns true once the last page is in. A page that
    /// is empty but not the last would make the pull ask for it forever,
    /// so it is refused.
    pub fn take(&mut self, page: ChunkLocationsResponse) -> Result<bool> {
        if page.chunks.is_empty() && !page.done {
            return Err(Error::Internal("the leader sent an empty shadow page that is not the last".into()));
        }
        if page.stream != self.stream {
            // The stream started over (or this is the first pull): the page
            // is its beginning, and every chunk follows.
            (self.full, self.stream, self.after) = (true, page.stream, 0);
            self.changes.clear();
        }
        if let Some(last) = page.chunks.last() {
            self.after = last.seq;
        }
        self.changes.extend(page.chunks);
        self.servers = page.servers;
        self.leader_applied = self.leader_applied.max(page.applied_index);
        Ok(page.done)
    }

    /// Applies the pull to a follower's state; returns what was applied and
    /// the cursor to continue from.
    pub fn apply(self, meta: &mut Meta, now: Instant) -> (Applied, (u64, u64)) {
        let base = if self.full { 0 } else { self.start.1 };
        let applied = meta.apply_shadow(self.full, self.changes, self.servers, self.leader_applied, now);
        let seq = applied.last_seq.unwrap_or(base);
        (applied, (self.stream, seq))
    }
}

/// Where a follower is in the leader's change stream.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// The leader's stream and the last change applied from it.
    stream: u64,
    seq: u64,
    /// This follower's own table stream when the cursor was taken: a new
    /// one means the table was replaced or reset.
    local_stream: u64,
    /// When the pull was applied.
    at: Instant,
}

/// Pulls the leader's chunk location changes while this master is a follower.
pub struct ShadowSync {
    shared: Arc<Shared>,
    cursor: Option<Cursor>,
}

impl ShadowSync {
    /// A sync task over the master state.
    pub fn new(shared: Arc<Shared>) -> Self {
        ShadowSync { shared, cursor: None }
    }

    /// Runs until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let period = Duration::from_millis(self.shared.cfg.heartbeat_ms * 2);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if self.shared.is_leader() {
                self.cursor = None;
                continue;
            }
            let Some(leader) = self.shared.leader_hint() else { continue };
            if let Err(e) = self.pull(&leader).await {
                debug!(leader, error = %e, "shadow sync from the leader failed");
            }
        }
    }

    /// The cursor to continue from, or none for a full pull.
    fn usable_cursor(&self, meta: &Meta, now: Instant) -> Option<Cursor> {
        let dead_after = Duration::from_millis(self.shared.cfg.dead_after_ms);
        self.cursor
            .filter(|c| c.local_stream == meta.chunks.stream() && now.saturating_duration_since(c.at) < dead_after)
    }

    async fn pull(&mut self, leader: &str) -> Result<()> {
        let timeout = Duration::from_millis(self.shared.cfg.rpc_timeout_ms);
        let mut c = crate::group::master_client(&self.shared.peers, leader)?;
        let start = {
            let meta = self.shared.meta();
            self.usable_cursor(&meta, Instant::now()).map_or((0, 0), |c| (c.stream, c.seq))
        };
        let mut pull = Pull::new(start);
        loop {
            let req = pull.request(PAGE);
            let page = match c.chunk_locations(with_deadline(req, timeout)).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    self.shared.peers.forget(leader);
                    return Err(e.into());
                }
            };
            if pull.take(page)? {
                break;
            }
        }
        if self.shared.is_leader() {
            return Ok(());
        }
        let now = Instant::now();
        let mut meta = self.shared.meta();
        // Checked again under the lock the liveness sweep also takes: a
        // cursor that no longer describes this follower's state still gets
        // the stream's latest changes, and everything is pulled next time.
        let keep = pull.full || self.usable_cursor(&meta, now).is_some();
        let (full, n) = (pull.full, pull.changes.len());
        let (applied, (stream, seq)) = pull.apply(&mut meta, now);
        let metrics = &self.shared.metrics;
        metrics.shadow_pulls.get_or_create(&crate::metrics::PullLabel::of(full)).inc();
        metrics.shadow_pulled_chunks.inc_by(n as u64);
        self.cursor = keep.then_some(Cursor { stream, seq, local_stream: meta.chunks.stream(), at: now });
        debug!(full, changes = n, stalled = applied.stalled, seq, keep, "shadow state pulled");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_proto::{AddChunkOp, CreateOp, log_record::Op};

    const CHUNK: u64 = 1 << 20;

    /// A master that applied `/f` with chunks `handles` at log index `index`.
    fn master(handles: &[u64], index: u64) -> Meta {
        let mut m = Meta::new();
        m.apply(
            &Op::Create(CreateOp { path: "/f".into(), replication: 2, chunk_size: CHUNK, ..Default::default() }),
            1,
        )
        .unwrap();
        for (i, h) in handles.iter().enumerate() {
            let op = Op::AddChunk(AddChunkOp { path: "/f".into(), index: i as u64, handle: *h, version: 1 });
            m.apply(&op, 1).unwrap();
        }
        m.applied = Some(crate::raft::log_id(1, 1, index));
        m
    }

    /// One pull in pages of 10, as `ShadowSync` does it over the wire.
    fn pull(leader: &Meta, follower: &mut Meta, cursor: &mut (u64, u64)) -> (bool, usize, Applied) {
        let mut p = Pull::new(*cursor);
        loop {
            let page = leader.shadow_page(p.stream, p.after, 10);
            assert!(page.chunks.len() <= 10);
            if p.take(page).unwrap() {
                break;
            }
        }
        let (full, n) = (p.full, p.changes.len());
        let (applied, next) = p.apply(follower, Instant::now());
        *cursor = next;
        (full, n, applied)
    }

    fn held(m: &Meta, id: &str) -> std::collections::BTreeSet<u64> {
        m.servers.get(id).map(|s| s.chunks.iter().copied().collect()).unwrap_or_default()
    }

    #[test]
    fn a_full_pull_then_only_changes_and_a_new_stream_starts_over() {
        let handles: Vec<u64> = (1..=25u64).map(|h| h * 7).collect();
        let mut leader = master(&handles, 30);
        let now = Instant::now();
        for id in ["a", "b"] {
            let info = ServerInfo { id: id.into(), address: format!("{id}:1"), zone: "z".into() };
            leader.servers.register(info, 10, 0, now);
        }
        for (i, h) in handles.iter().enumerate() {
            leader.add_replica(*h, "a");
            leader.chunks.get_mut(*h).unwrap().length = i as u64 + 1;
        }
        leader.add_replica(7, "b");

        let mut follower = master(&handles, 30);
        let mut cursor = (0, 0);
        let (full, n, applied) = pull(&leader, &mut follower, &mut cursor);
        assert!(full && !applied.stalled);
        assert_eq!(n, 25, "a full pull lists every chunk once");
        assert_eq!(follower.location(0, 7).replicas.len(), 2);
        assert_eq!(follower.location(24, 175).replicas.len(), 1);
        assert_eq!(follower.chunks.get(175).unwrap().length, 25);
        let f = follower.ns.lookup("/f").unwrap();
        assert_eq!(follower.file_info("/f", f).size, 24 * CHUNK + 25);
        assert_eq!(held(&follower, "a").len(), 25);
        assert_eq!(held(&follower, "b"), std::collections::BTreeSet::from([7]));

        // Nothing changed: nothing travels.
        assert_eq!(pull(&leader, &mut follower, &mut cursor).1, 0);

        // Three chunks change on the leader: exactly those travel.
        leader.add_replica(14, "b");
        leader.chunks.get_mut(21).unwrap().length = 99;
        leader.remove_replica(7, "b");
        let (full, n, _) = pull(&leader, &mut follower, &mut cursor);
        assert!(!full);
        assert_eq!(n, 3);
        assert_eq!(follower.location(1, 14).replicas.len(), 2);
        assert_eq!(follower.location(0, 7).replicas.len(), 1);
        assert_eq!(follower.chunks.get(21).unwrap().length, 99);
        assert_eq!(held(&follower, "b"), std::collections::BTreeSet::from([14]));
        assert_eq!(pull(&leader, &mut follower, &mut cursor).1, 0);

        // A server the leader no longer lists is not refreshed here.
        let before = follower.servers.get("b").unwrap().last_heartbeat;
        leader.servers.get_mut("b").unwrap().alive = false;
        pull(&leader, &mut follower, &mut cursor);
        assert_eq!(follower.servers.get("b").unwrap().last_heartbeat, before);

        // The leader forgets its soft state (a new term): a full pull
        // replaces the follower's.
        leader.chunks.clear_soft_state();
        leader.add_replica(28, "a");
        let (full, n, _) = pull(&leader, &mut follower, &mut cursor);
        assert!(full);
        assert_eq!(n, 25);
        assert_eq!(follower.location(3, 28).replicas.len(), 1);
        assert!(follower.location(0, 7).replicas.is_empty());
        assert_eq!(held(&follower, "a"), std::collections::BTreeSet::from([28]));
    }

    #[test]
    fn a_chunk_missing_from_a_lagging_follower_waits_for_its_log() {
        let mut leader = master(&[1, 2], 10);
        let mut follower = master(&[1, 2], 10);
        let mut cursor = (0, 0);
        pull(&leader, &mut follower, &mut cursor);

        // The leader applied chunk 3 (index 11); the follower has not yet.
        let add3 = Op::AddChunk(AddChunkOp { path: "/f".into(), index: 2, handle: 3, version: 1 });
        leader.apply(&add3, 1).unwrap();
        leader.applied = Some(crate::raft::log_id(1, 1, 11));
        leader.chunks.get_mut(3).unwrap().length = 5;
        leader.chunks.get_mut(2).unwrap().length = 6;
        let (_, n, applied) = pull(&leader, &mut follower, &mut cursor);
        assert_eq!(n, 2);
        assert!(applied.stalled, "chunk 3 taken for deleted: {applied:?}");
        // Chunk 3 changed before chunk 2, so the pull stopped before both.
        assert_eq!(follower.chunks.get(2).unwrap().length, 0);

        // Once the follower applied the entry, the same changes go through.
        follower.apply(&add3, 1).unwrap();
        follower.applied = Some(crate::raft::log_id(1, 1, 11));
        let (_, n, applied) = pull(&leader, &mut follower, &mut cursor);
        assert_eq!(n, 2);
        assert!(!applied.stalled);
        assert_eq!(follower.chunks.get(3).unwrap().length, 5);
        assert_eq!(follower.chunks.get(2).unwrap().length, 6);

        // A chunk this follower (caught up) no longer has is skipped.
        follower.chunks.remove(1);
        leader.chunks.get_mut(1).unwrap().length = 7;
        let (_, n, applied) = pull(&leader, &mut follower, &mut cursor);
        assert_eq!((n, applied.stalled), (1, false));
        assert_eq!(applied.last_seq, Some(cursor.1));
        assert_eq!(pull(&leader, &mut follower, &mut cursor).1, 0);
    }

    #[test]
    fn an_empty_page_that_is_not_the_last_is_refused() {
        let page = ChunkLocationsResponse { stream: 5, done: false, ..Default::default() };
        let err = Pull::new((0, 0)).take(page).unwrap_err();
        assert!(matches!(err, Error::Internal(ref m) if m.contains("empty shadow page")), "{err}");
        let last = ChunkLocationsResponse { stream: 5, done: true, ..Default::default() };
        assert!(Pull::new((0, 0)).take(last).unwrap());
    }

    #[test]
    fn the_change_stream_has_each_chunk_once_in_change_order() {
        let mut m = master(&[1, 2, 3], 1);
        let stream = m.chunks.stream();
        m.chunks.get_mut(1).unwrap();
        let order: Vec<u64> = m.chunks.changed_after(0).map(|(_, h, _)| h).collect();
        assert_eq!(order, [2, 3, 1]);
        let (s2, _, _) = m.chunks.changed_after(0).nth(1).unwrap();
        assert_eq!(m.chunks.changed_after(s2).map(|(_, h, _)| h).collect::<Vec<_>>(), [1]);
        m.chunks.remove(3);
        assert_eq!(m.chunks.changed_after(0).count(), 2);
        assert_eq!(m.chunks.stream(), stream);
        m.chunks.clear_soft_state();
        assert_ne!(m.chunks.stream(), stream);
    }
}
