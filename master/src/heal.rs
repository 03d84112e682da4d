//! Self-healing: the repair worker and its soft state.
//!
//! Each step the worker builds views of every chunk and server from the
//! metadata, asks the pure planner (`repair.rs`) for clones, trims and
//! moves, and runs the clones as tasks bounded by the caps. A clone counts
//! as a replica only after the destination verified it and the chunk's
//! version did not change meanwhile (a new lease bumps the version, so a
//! copy that may have missed a mutation is stale and is deleted).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use gfs_common::Result;
use gfs_common::shutdown::CancellationToken;
use gfs_common::token::READ;
use gfs_proto::log_record::Op;
use gfs_proto::{CloneChunkRequest, CloneChunkResponse, RepairEvent, RepairReason, ServerState, ServerStateOp};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::backoff::CloneBackoff;
use crate::heal_index::HealIndex;
use crate::repair::{self, Caps, ChunkView, Task};
use crate::state::{Meta, Shared};

/// Repair events kept for `RepairEvents`.
pub const MAX_EVENTS: usize = 4096;
/// Most index slices per repair step once the index is complete.
const MAX_SLICES_PER_STEP: usize = 64;
/// How long a client's need keeps a chunk at the head of the queue.
const BLOCKING_FOR: Duration = Duration::from_secs(30);

/// Soft repair state (rebuilt empty at master start).
#[derive(Debug, Default)]
pub struct HealState {
    /// Clones in flight by chunk handle.
    pub active: HashMap<u64, Task>,
    /// Chunks a client needed and found under-replicated, with the time.
    pub blocked: HashMap<u64, Instant>,
    /// Which chunks need repair or trims, and the backlog totals.
    pub index: HealIndex,
    /// Completed repairs, oldest first.
    pub events: VecDeque<RepairEvent>,
    next_seq: u64,
    /// Decaying read score per chunk (GetChunks lookups).
    pub reads: HashMap<u64, f64>,
    /// Chunks whose replica reported corrupt is being verified by its
    /// holder (one verification per chunk at a time; `corrupt.rs`).
    pub verifying: HashSet<u64>,
    last_decay: Option<Instant>,
    /// Failed clone destinations and servers out of space, held back.
    pub backoff: CloneBackoff,
}

impl HealState {
    /// True while `server` is held back after a clone to it ran out of
    /// space (its next heartbeats may not show it full yet).
    pub fn no_space(&self, server: &str, now: Instant) -> bool {
        self.backoff.no_space(server, now)
    }

    /// Boosts a chunk a client is waiting on.
    pub fn note_blocked(&mut self, handle: u64) {
        self.blocked.insert(handle, Instant::now());
    }

    /// Counts a read lookup of a chunk.
    pub fn note_read(&mut self, handle: u64) {
        *self.reads.entry(handle).or_default() += 1.0;
    }

    /// Halves read scores every half-life; drops old boosts.
    fn decay(&mut self, now: Instant, half_life: Duration) {
        let last = *self.last_decay.get_or_insert(now);
        let dt = now.saturating_duration_since(last).as_secs_f64();
        if dt > 0.0 {
            let f = 0.5f64.powf(dt / half_life.as_secs_f64());
            let mut cooled = vec![];
            self.reads.retain(|h, v| {
                *v *= f;
                let keep = *v >= 0.5;
                if !keep {
                    cooled.push(*h);
                }
                keep
            });
            self.index.mark(cooled);
            self.last_decay = Some(now);
        }
        let mut ended = vec![];
        self.blocked.retain(|h, t| {
            let keep = now.saturating_duration_since(*t) < BLOCKING_FOR;
            if !keep {
                ended.push(*h);
            }
            keep
        });
        self.index.mark(ended);
    }

    fn record(&mut self, mut e: RepairEvent) {
        self.next_seq += 1;
        e.seq = self.next_seq;
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}

impl Meta {
    /// Live and not draining or drained: may hold counted replicas.
    pub fn in_service(&self, id: &str) -> bool {
        self.servers.is_alive(id) && !self.admin.contains_key(id)
    }

    /// Number of in-service servers (where new replicas may go).
    pub fn in_service_count(&self) -> usize {
        self.servers.iter().filter(|s| self.in_service(&s.info.id)).count()
    }

    /// Placement candidates for new chunks: in-service servers with room
    /// (not reported full, not held back after running out of space).
    pub fn placement_candidates(&mut self, now: Instant) -> Vec<crate::placement::Candidate> {
        let (admin, heal) = (&self.admin, &self.heal);
        self.servers
            .candidates(now)
            .into_iter()
            .filter(|c| !admin.contains_key(&c.id) && !heal.no_space(&c.id, now))
            .collect()
    }

    /// The state shown for a server.
    pub fn server_state(&self, id: &str) -> ServerState {
        match (self.admin.get(id), self.servers.get(id)) {
            (Some(st), _) => *st,
            (None, Some(s)) if s.alive => ServerState::Live,
            (None, Some(s)) if s.lost => ServerState::Lost,
            _ => ServerState::Dead,
        }
    }

    /// Servers draining whose every chunk is fully replicated elsewhere.
    pub fn drained(&self) -> Vec<String> {
        let draining = self.admin.iter().filter(|(_, st)| **st == ServerState::Decommissioning).map(|(id, _)| id);
        draining
            .filter(|id| {
                let held = self.servers.get(id).map(|s| s.chunks.iter().copied().collect::<Vec<_>>());
                held.unwrap_or_default().iter().all(|h| {
                    self.chunks.get(*h).is_none_or(|c| {
                        c.replicas.iter().filter(|s| self.in_service(s)).count() >= c.replication as usize
                    })
                })
            })
            .cloned()
            .collect()
    }
}

/// The background repair worker.
pub struct RepairWorker {
    shared: Arc<Shared>,
    clones: JoinSet<(Task, u64, Result<CloneChunkResponse>)>,
}

impl RepairWorker {
    /// A worker over the master state.
    pub fn new(shared: Arc<Shared>) -> Self {
        RepairWorker { shared, clones: JoinSet::new() }
    }

    /// Runs one step per scan period, and one more after each clone ends.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let period = Duration::from_millis(self.shared.cfg.heal.scan_ms);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
                Some(Ok((task, version, res))) = self.clones.join_next(), if !self.clones.is_empty() => {
                    self.finish(task, version, res);
                }
            }
            if let Err(e) = self.step().await {
                warn!(error = %e, "repair step failed");
            }
        }
        self.clones.abort_all();
    }

    /// Plans and starts clones, drops extra replicas, finishes drains.
    pub async fn step(&mut self) -> Result<()> {
        // Only the acting leader repairs, and only once every live
        // chunkserver had time to report to it (a new leader starts with
        // no replica locations at all).
        let warm = Duration::from_millis(self.shared.cfg.leader_warmup_ms);
        if !self.shared.is_leader() || self.shared.leader_for().is_none_or(|t| t < warm) {
            return Ok(());
        }
        // Not during the warm-up: every chunk would be queued as short of
        // every replica until its holders report.
        self.refresh_index().await;
        let now = Instant::now();
        let cfg = &self.shared.cfg;
        let caps = Caps { total: cfg.heal.max_clones, per_server: cfg.heal.max_clones_per_server };
        let (starts, drained, revoke) = {
            let mut meta = self.shared.meta();
            meta.drop_recovered_corrupt();
            meta.heal.backoff.prune(now, Duration::from_millis(cfg.heal.clone_retry_ms));
            let mut views = meta.queue_views(cfg, now);
            let mut servers = meta.server_views(now);
            let delay = Duration::from_millis(cfg.heal.repair_delay_ms);
            let revoke = leases_blocking_repair(&meta, &views, now, delay);
            for v in views.iter_mut().filter(|v| v.missing() > 0 && !v.blocking) {
                let since = meta.heal.index.pending_since(v.handle).unwrap_or(now);
                v.busy |= now.saturating_duration_since(since) < delay;
            }
            let active = meta.heal.active.len() as u32;
            let mut tasks = repair::plan_repairs(&views, &mut servers, active, caps);
            if tasks.is_empty() && meta.heal.index.queue_is_empty() {
                let excess = meta.excess_views(cfg, now);
                for (h, s) in repair::plan_trims(&excess, &servers) {
                    info!(chunk = h, server = %s, "dropping extra replica");
                    drop_replica(&mut meta, h, &s);
                }
                if cfg.heal.rebalance_threshold > 0.0 {
                    let views = meta.move_views(cfg, now);
                    tasks = repair::plan_moves(&views, &mut servers, active, caps, cfg.heal.rebalance_threshold);
                }
            }
            let starts: Vec<(Task, CloneChunkRequest, String)> =
                tasks.into_iter().filter_map(|t| self.prepare(&mut meta, t)).collect();
            (starts, meta.drained(), revoke)
        };
        for h in revoke {
            if let Err(e) = self.shared.revoke_lease(h).await {
                warn!(chunk = h, error = %e, "cannot revoke lease for repair");
            }
        }
        for (task, req, addr) in starts {
            let rpc = self.shared.rpc.clone();
            let version = req.version;
            let deadline = clone_deadline(cfg, task.length);
            self.clones.spawn(async move {
                let res = rpc.clone_chunk(&addr, req, deadline).await;
                (task, version, res)
            });
        }
        for id in drained {
            self.shared
                .commit(vec![Op::ServerState(ServerStateOp {
                    server_id: id.clone(),
                    state: ServerState::Decommissioned as i32,
                })])
                .await?;
            info!(server = %id, "chunkserver decommissioned: every chunk is fully replicated elsewhere");
        }
        Ok(())
    }

    /// Brings the repair index up to date, a slice at a time with the
    /// metadata lock released in between (see `heal_index.rs`).
    async fn refresh_index(&self) {
        let cfg = &self.shared.cfg;
        let first = {
            let mut meta = self.shared.meta();
            let now = Instant::now();
            meta.heal.decay(now, Duration::from_millis(cfg.heal.hot_half_life_ms));
            meta.index_begin(cfg, true);
            meta.index_slice(cfg, now)
        };
        let mut more = first;
        let mut slices = 1;
        while more {
            tokio::task::yield_now().await;
            let mut meta = self.shared.meta();
            // Catch-up (a new leader's first pass) runs to the end; steady
            // work under a stream of changes stops after a bounded number
            // of slices and goes on next step.
            if meta.heal.index.complete && slices >= MAX_SLICES_PER_STEP {
                break;
            }
            more = meta.index_slice(cfg, Instant::now());
            slices += 1;
        }
    }

    /// Marks the task active and builds its request.
    fn prepare(&self, meta: &mut Meta, t: Task) -> Option<(Task, CloneChunkRequest, String)> {
        let c = meta.chunks.get(t.handle)?;
        let version = c.version;
        let addr = meta.servers.live_info(&t.target)?.address;
        let mut sources = vec![meta.servers.live_info(&t.source)?.address];
        for r in c.replicas.iter().filter(|r| **r != t.source) {
            sources.extend(meta.servers.live_info(r).map(|i| i.address));
        }
        // The destination shows the sources a read token, like a client.
        let token = meta.token(t.handle, version, READ, "master", self.shared.cfg.token_lifetime_ms).ok()?;
        let req = CloneChunkRequest {
            handle: t.handle,
            version,
            sources,
            epoch: self.shared.epoch(),
            bytes_per_sec: self.shared.cfg.heal.clone_bytes_per_sec,
            token: Some(token),
        };
        info!(chunk = t.handle, source = %t.source, target = %t.target, missing = t.missing, reason = ?t.reason, "clone started");
        meta.heal.active.insert(t.handle, t.clone());
        Some((t, req, addr))
    }

    /// Applies a finished clone: the copy counts only if the chunk kept
    /// its version and no grant is in flight. A failed destination is
    /// backed off (see `backoff.rs`), so the next plan goes elsewhere.
    fn finish(&mut self, t: Task, version: u64, res: Result<CloneChunkResponse>) {
        let mut meta = self.shared.meta();
        meta.heal.active.remove(&t.handle);
        let base = Duration::from_millis(self.shared.cfg.heal.clone_retry_ms);
        match &res {
            Ok(_) => meta.heal.backoff.succeeded(t.handle, &t.target),
            Err(e) => {
                let no_space = matches!(e, gfs_common::Error::NoSpace { .. });
                let wait = meta.heal.backoff.failed(t.handle, &t.target, no_space, Instant::now(), base);
                warn!(chunk = t.handle, target = %t.target, no_space, wait_ms = wait.as_millis() as u64,
                    "clone destination backed off");
            }
        }
        let current = meta.chunks.get(t.handle).is_some_and(|c| c.version == version && c.bumping_from.is_none());
        let ok = match &res {
            Ok(_) if current && meta.servers.is_alive(&t.target) => true,
            Ok(_) => {
                warn!(chunk = t.handle, target = %t.target, "clone finished but the chunk changed; discarding it");
                false
            }
            Err(e) => {
                warn!(chunk = t.handle, source = %t.source, target = %t.target, error = %e, "clone failed");
                false
            }
        };
        let bytes = res.as_ref().map_or(0, |r| r.length);
        if ok {
            if let Some(c) = meta.chunks.get_mut(t.handle) {
                c.length = c.length.max(bytes.min(c.chunk_size));
            }
            meta.add_replica(t.handle, &t.target);
            meta.heal.index.adjust_used(&t.target, true, bytes);
            if let (Some(s), Ok(r)) = (meta.servers.get_mut(&t.target), &res) {
                s.note_ack(t.handle, r.report_seq);
            }
            if t.reason == RepairReason::Rebalance {
                drop_replica(&mut meta, t.handle, &t.source);
            }
            info!(chunk = t.handle, target = %t.target, bytes, "clone done; replica counts");
        }
        let e = RepairEvent {
            seq: 0,
            handle: t.handle,
            missing_at_start: t.missing,
            reason: t.reason as i32,
            source: t.source,
            target: t.target,
            ok,
            bytes,
            hidden_file: t.hidden,
        };
        meta.heal.record(e);
    }
}

/// Removes a replica from the table and tells its server to delete it.
pub(crate) fn drop_replica(meta: &mut Meta, handle: u64, server: &str) {
    let length = meta.chunks.get(handle).map_or(0, |c| c.length);
    meta.heal.index.adjust_used(server, false, length);
    meta.remove_replica(handle, server);
    if let Some(s) = meta.servers.get_mut(server) {
        s.pending_delete.insert(handle);
    }
}

/// Most leases revoked per repair step.
const MAX_REVOKES_PER_STEP: usize = 8;

/// Chunks short of replicas whose repair waits only on a lease held by a
/// live primary (past the repair delay, no grant or clone in flight).
fn leases_blocking_repair(meta: &Meta, views: &[ChunkView], now: Instant, delay: Duration) -> Vec<u64> {
    // A chunk without a usable replica cannot be cloned: its lease stays.
    views
        .iter()
        .filter(|v| v.missing() > 0 && !v.replicas.is_empty() && !meta.heal.active.contains_key(&v.handle))
        .filter(|v| {
            let since = meta.heal.index.pending_since(v.handle).unwrap_or(now);
            now.saturating_duration_since(since) >= delay
        })
        .filter(|v| {
            meta.chunks.get(v.handle).is_some_and(|c| {
                c.bumping_from.is_none()
                    && c.lease.as_ref().is_some_and(|l| l.is_valid(now) && meta.servers.is_alive(&l.primary))
            })
        })
        .map(|v| v.handle)
        .take(MAX_REVOKES_PER_STEP)
        .collect()
}

/// Deadline of one clone: the throttled copy time twice over, plus the RPC
/// timeout.
pub(crate) fn clone_deadline(cfg: &crate::config::Config, length: u64) -> Duration {
    let base = Duration::from_millis(cfg.rpc_timeout_ms);
    match cfg.heal.clone_bytes_per_sec {
        0 => base * 2,
        bps => base + Duration::from_secs_f64(2.0 * length.max(cfg.chunk_size) as f64 / bps as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heal_index::Standing;

    fn view(handle: u64, length: u64, replicas: &[&str], in_service: &[&str]) -> ChunkView {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ChunkView {
            handle,
            length,
            base: 3,
            target: 3,
            replicas: ids(replicas),
            in_service: ids(in_service),
            hidden: false,
            blocking: false,
            busy: false,
            avoid: vec![],
        }
    }

    #[test]
    fn a_planned_drain_is_backlog_but_not_at_risk() {
        let views = [
            // c is draining: its replica still counts as live.
            view(1, 100, &["a", "b", "c"], &["a", "b"]),
            // a replica was lost.
            view(2, 50, &["a", "b"], &["a", "b"]),
            // lost one and draining another: at risk.
            view(3, 20, &["a", "c"], &["a"]),
            view(4, 10, &["a", "b", "d"], &["a", "b", "d"]),
        ];
        let mut ix = HealIndex::default();
        let now = Instant::now();
        for v in &views {
            ix.set(v.handle, Some(Standing::of(v, 0, false)), now);
        }
        let b = ix.totals();
        assert_eq!((b.chunks, b.bytes), (3, 170));
        assert_eq!((b.drain_chunks, b.drain_bytes), (1, 100));
        assert_eq!(b.deficits.iter().map(|(m, n)| (*m, *n)).collect::<Vec<_>>(), [(1, 2), (2, 1)]);
        // Repaired and deleted chunks leave the totals.
        ix.set(2, Some(Standing::of(&view(2, 50, &["a", "b", "d"], &["a", "b", "d"]), 0, false)), now);
        ix.set(3, None, now);
        let b = ix.totals();
        assert_eq!((b.chunks, b.bytes, b.drain_chunks), (1, 100, 1));
        assert_eq!(ix.queue().collect::<Vec<_>>(), [1]);
    }
}
