//! The repair index: which chunks are short of replicas, which have extra
//! ones, and the backlog totals, kept current by events instead of a walk
//! over every chunk per repair step.
//!
//! A chunk is evaluated again when something that decides its standing
//! changes:
//! - the chunk itself (replicas, replication, length, lease, corruption,
//!   deletion): every such change goes through the chunk table's change
//!   stream (`chunks.rs`), which the index follows with a cursor;
//! - a server holding it enters or leaves service (death, return, drain):
//!   the index compares each server's standing with the last step's and
//!   takes that server's chunks;
//! - its read score or a client's need (hot chunks, blocked clients), and
//!   clones in flight: these small sets are evaluated every step.
//!
//! A background sweep walks the handles in slices as a safety net and to
//! sum each server's bytes for placement; after a reset (a new leader, a
//! new change stream) it walks everything once before planning. All of it
//! runs in slices of [`SLICE`] chunks: the heal worker releases the
//! metadata lock between slices, so no request waits on a walk of the
//! whole chunk table.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::repair::{self, ChunkView, ServerView};
use crate::state::Meta;

/// Chunks evaluated per hold of the metadata lock.
pub const SLICE: usize = 1024;
/// A full background sweep should take about this long.
const SWEEP_PERIOD: Duration = Duration::from_secs(60);
/// Fewest chunks the background sweep walks per step.
const MIN_SWEEP: usize = 256;
/// Most chunks from the head of the queue the planner looks at per step.
pub const PLAN_WINDOW: usize = 4096;
/// Most chunks per server offered to the rebalancer per step.
pub const MOVE_WINDOW: usize = 1024;

/// Sort key of the repair queue (see `repair::priority`).
type Key = (bool, Reverse<u32>, bool, u64);

/// What one chunk adds to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Replicas missing from the target, extra replicas of a hot chunk
    /// included (orders the queue).
    pub missing: u32,
    /// Replicas missing from the file's replication (the backlog).
    pub base_missing: u32,
    /// Bytes to copy.
    pub length: u64,
    /// The deficit is only replicas on draining servers.
    pub drain: bool,
    /// More in-service replicas than the target.
    pub excess: bool,
    /// Corrupt replicas kept (last copies).
    pub corrupt_kept: u32,
    /// Has replicas marked corrupt (kept or not yet dropped).
    pub corrupt: bool,
    /// Queue order fields.
    pub blocking: bool,
    pub hidden: bool,
}

impl Standing {
    /// The standing of a chunk whose view is `v`.
    pub fn of(v: &ChunkView, corrupt_kept: u32, corrupt: bool) -> Self {
        Standing {
            missing: v.missing(),
            base_missing: v.base.saturating_sub(v.in_service.len() as u32),
            length: v.length,
            drain: v.replicas.len() >= v.base as usize && v.in_service.len() < v.base as usize,
            excess: v.in_service.len() as u32 > v.target,
            corrupt_kept,
            corrupt,
            blocking: v.blocking,
            hidden: v.hidden,
        }
    }

    fn counts(&self) -> bool {
        self.missing > 0 || self.base_missing > 0 || self.excess || self.corrupt
    }
}

/// Backlog totals (for `ClusterStatus` and metrics).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Chunks by replicas missing from the base replication.
    pub deficits: BTreeMap<u32, u64>,
    /// Chunks with a deficit.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks whose deficit is only replicas on draining servers.
    pub drain_chunks: u64,
    /// Their bytes.
    pub drain_bytes: u64,
    /// Corrupt replicas kept as last copies.
    pub corrupt_kept: u64,
}

/// The index (soft state of the acting leader).
#[derive(Debug, Default)]
pub struct HealIndex {
    /// Change stream followed (0: none yet: reset on the next step).
    stream: u64,
    /// Last change sequence evaluated.
    cursor: u64,
    /// Change sequence of the last chunk the background sweep evaluated.
    sweep: u64,
    /// Chunks the sweep still walks in this step.
    sweep_budget: usize,
    /// A full sweep finished since the last reset.
    pub complete: bool,
    /// Bytes per server summed by the sweep in progress, and by the last
    /// complete one (adjusted by clones and trims since).
    pass_used: HashMap<String, u64>,
    used: HashMap<String, u64>,
    /// Each server's standing at the last look: (usable, in service).
    servers: HashMap<String, (bool, bool)>,
    /// Handles waiting to be evaluated.
    pending: Vec<u64>,
    /// Every chunk that counts for something, with what it counts.
    standing: HashMap<u64, (Standing, Key)>,
    /// Chunks with a deficit, in repair order.
    queue: BTreeSet<Key>,
    /// Chunks with extra replicas.
    excess: BTreeSet<u64>,
    /// Chunks with corrupt replicas.
    corrupt: BTreeSet<u64>,
    /// When each chunk with a deficit was first seen with it.
    since: HashMap<u64, Instant>,
    by_age: BTreeSet<(Instant, u64)>,
    totals: Totals,
}

impl HealIndex {
    /// Forgets everything; the next steps evaluate every chunk again.
    pub fn reset(&mut self) {
        *self = HealIndex::default();
    }

    /// The totals.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Age of the oldest pending repair.
    pub fn oldest_ms(&self, now: Instant) -> u64 {
        self.by_age.first().map_or(0, |(t, _)| now.saturating_duration_since(*t).as_millis() as u64)
    }

    /// When `handle`'s deficit was first seen, if it has one.
    pub fn pending_since(&self, handle: u64) -> Option<Instant> {
        self.since.get(&handle).copied()
    }

    /// True when no chunk has a deficit.
    pub fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Chunks with a deficit, in repair order.
    pub fn queue(&self) -> impl Iterator<Item = u64> + '_ {
        self.queue.iter().map(|k| k.3)
    }

    /// Chunks with extra replicas.
    pub fn excess(&self) -> impl Iterator<Item = u64> + '_ {
        self.excess.iter().copied()
    }

    /// Chunks with corrupt replicas.
    pub fn corrupt(&self) -> impl Iterator<Item = u64> + '_ {
        self.corrupt.iter().copied()
    }

    /// Bytes on `server` as of the last sweep.
    pub fn used(&self, server: &str) -> Option<u64> {
        self.used.get(server).copied()
    }

    /// Adjusts a server's bytes for a copy added (clone) or dropped.
    pub fn adjust_used(&mut self, server: &str, added: bool, length: u64) {
        if let Some(u) = self.used.get_mut(server) {
            *u = if added { u.saturating_add(length) } else { u.saturating_sub(length) };
        }
    }

    /// Queues handles to evaluate.
    pub fn mark(&mut self, handles: impl IntoIterator<Item = u64>) {
        self.pending.extend(handles);
    }

    /// Records what `handle` counts for now (None: the chunk is gone).
    pub fn set(&mut self, handle: u64, new: Option<Standing>, now: Instant) {
        let new = new.filter(Standing::counts);
        if self.standing.get(&handle).map(|(s, _)| *s) == new {
            return;
        }
        if let Some((old, key)) = self.standing.remove(&handle) {
            self.count(&old, key, false);
        }
        if let Some(s) = new {
            let key = (!s.blocking, Reverse(s.missing), s.hidden, handle);
            self.count(&s, key, true);
            self.standing.insert(handle, (s, key));
        }
        self.track_age(handle, new.is_some_and(|s| s.missing > 0), now);
    }

    fn count(&mut self, s: &Standing, key: Key, add: bool) {
        let t = &mut self.totals;
        let step = |v: &mut u64, by: u64| *v = if add { *v + by } else { v.saturating_sub(by) };
        if s.missing > 0 {
            if add {
                self.queue.insert(key)
            } else {
                self.queue.remove(&key)
            };
        }
        if s.base_missing > 0 {
            let e = t.deficits.entry(s.base_missing).or_default();
            step(e, 1);
            if *e == 0 {
                t.deficits.remove(&s.base_missing);
            }
            step(&mut t.chunks, 1);
            step(&mut t.bytes, s.length);
            if s.drain {
                step(&mut t.drain_chunks, 1);
                step(&mut t.drain_bytes, s.length);
            }
        }
        step(&mut t.corrupt_kept, u64::from(s.corrupt_kept));
        let h = key.3;
        if s.excess {
            if add {
                self.excess.insert(h)
            } else {
                self.excess.remove(&h)
            };
        }
        if s.corrupt {
            if add {
                self.corrupt.insert(h)
            } else {
                self.corrupt.remove(&h)
            };
        }
    }

    fn track_age(&mut self, handle: u64, deficit: bool, now: Instant) {
        match (deficit, self.since.get(&handle).copied()) {
            (true, None) => {
                self.since.insert(handle, now);
                self.by_age.insert((now, handle));
            }
            (false, Some(t)) => {
                self.since.remove(&handle);
                self.by_age.remove(&(t, handle));
            }
            _ => {}
        }
    }
}

impl Meta {
    /// The planner's view of one chunk, or None when it is not in the
    /// table. `servers` is the number of in-service servers.
    pub fn chunk_view(&self, h: u64, cfg: &crate::config::Config, now: Instant, servers: u32) -> Option<ChunkView> {
        let c = self.chunks.get(h)?;
        let grace = Duration::from_millis(cfg.rpc_timeout_ms);
        // A replica confirmed corrupt (kept as the last copy) is neither
        // counted nor a clone source.
        let usable = |s: &&str| self.servers.is_alive(s) && !c.corrupt.contains(s);
        let replicas: Vec<String> = c.replicas.iter().filter(usable).map(str::to_string).collect();
        let in_service = replicas.iter().filter(|s| !self.admin.contains_key(*s)).cloned().collect();
        let score = self.heal.reads.get(&h).copied().unwrap_or(0.0);
        let heal = &cfg.heal;
        let held = c.lease.as_ref().is_some_and(|l| l.is_held(now, grace));
        Some(ChunkView {
            handle: h,
            length: c.length,
            base: c.replication,
            target: repair::hot_target(c.replication, score, heal.hot_reads, heal.hot_extra_replicas, servers),
            replicas,
            in_service,
            hidden: c.hidden,
            blocking: self.heal.blocked.contains_key(&h),
            busy: held || c.bumping_from.is_some() || self.heal.active.contains_key(&h),
            avoid: self.heal.backoff.avoid(h, now),
        })
    }

    /// Evaluates one chunk again (counts only: nothing is allocated).
    fn evaluate(&mut self, h: u64, cfg: &crate::config::Config, now: Instant, servers: u32) {
        let standing = self.chunks.get(h).map(|c| {
            let usable = |s: &&str| self.servers.is_alive(s) && !c.corrupt.contains(s);
            let (mut replicas, mut in_service) = (0u32, 0u32);
            for s in c.replicas.iter().filter(usable) {
                replicas += 1;
                in_service += u32::from(!self.admin.contains_key(s));
            }
            let score = self.heal.reads.get(&h).copied().unwrap_or(0.0);
            let heal = &cfg.heal;
            let target = repair::hot_target(c.replication, score, heal.hot_reads, heal.hot_extra_replicas, servers);
            let base = c.replication;
            Standing {
                missing: target.saturating_sub(in_service),
                base_missing: base.saturating_sub(in_service),
                length: c.length,
                drain: replicas >= base && in_service < base,
                excess: in_service > target,
                corrupt_kept: c.corrupt.iter().filter(|s| c.replicas.contains(s)).count() as u32,
                corrupt: !c.corrupt.is_empty(),
                blocking: self.heal.blocked.contains_key(&h),
                hidden: c.hidden,
            }
        });
        self.heal.index.set(h, standing, now);
    }

    /// Starts a repair step's index work: resets the index after a change
    /// of stream, queues the chunks of servers whose standing changed and
    /// the small per-step sets. Cost: the number of servers plus those sets.
    /// With `sweep` (a repair step, not a status call), this also takes
    /// the small per-step sets and walks its share of the background sweep.
    pub fn index_begin(&mut self, cfg: &crate::config::Config, sweep: bool) {
        if sweep {
            let share = self.chunks.len() as f64 * cfg.heal.scan_ms as f64 / SWEEP_PERIOD.as_millis() as f64;
            self.heal.index.sweep_budget = (share as usize).max(MIN_SWEEP);
        }
        let stream = self.chunks.stream();
        if self.heal.index.stream != stream {
            self.heal.index.reset();
            self.heal.index.stream = stream;
            self.heal.index.cursor = self.chunks.last_seq();
            self.heal.index.sweep = 0;
        }
        let mut changed = vec![];
        for s in self.servers.iter() {
            let id = &s.info.id;
            let now = (self.servers.is_alive(id), self.in_service(id));
            if self.heal.index.servers.insert(id.clone(), now) != Some(now) {
                changed.push(id.clone());
            }
        }
        let known: HashSet<&str> = self.servers.iter().map(|s| s.info.id.as_str()).collect();
        self.heal.index.servers.retain(|id, _| known.contains(id.as_str()));
        let mut marks: Vec<u64> = vec![];
        // Until the first sweep completes, it evaluates every chunk anyway.
        if !self.heal.index.complete {
            changed.clear();
        }
        for id in &changed {
            marks.extend(self.servers.get(id).into_iter().flat_map(|s| s.chunks.iter().copied()));
        }
        // Hot targets depend on read scores and the number of servers in
        // service; the queue order on clients' needs. Once per repair step
        // (not per status call: they would pile up between steps).
        if sweep {
            marks.extend(self.heal.reads.keys());
            marks.extend(self.heal.blocked.keys());
            marks.extend(self.heal.active.keys());
        }
        self.heal.index.mark(marks);
    }

    /// Evaluates up to [`SLICE`] chunks: queued ones, then changed ones,
    /// then the next ones of the sweep (all of them until the first sweep
    /// after a reset completes, else this step's share). Returns true
    /// while work remains.
    pub fn index_slice(&mut self, cfg: &crate::config::Config, now: Instant) -> bool {
        let servers = self.in_service_count() as u32;
        let mut budget = SLICE;
        while budget > 0 {
            let Some(h) = self.heal.index.pending.pop() else { break };
            self.evaluate(h, cfg, now, servers);
            budget -= 1;
        }
        let changed: Vec<(u64, u64)> =
            self.chunks.changed_after(self.heal.index.cursor).take(budget).map(|(s, h, _)| (s, h)).collect();
        budget -= changed.len();
        for (seq, h) in changed {
            self.evaluate(h, cfg, now, servers);
            self.heal.index.cursor = seq;
        }
        let ix = &mut self.heal.index;
        let n = if ix.complete { budget.min(ix.sweep_budget) } else { budget };
        ix.sweep_budget -= n.min(ix.sweep_budget);
        if n > 0 {
            self.sweep_slice(cfg, now, servers, n);
        }
        let ix = &self.heal.index;
        !ix.pending.is_empty()
            || !ix.complete
            || ix.sweep_budget > 0
            || self.chunks.changed_after(ix.cursor).next().is_some()
    }

    /// Evaluates the next `n` chunks of the sweep and sums their bytes per
    /// server; at the end of the table, publishes the sums. The sweep goes
    /// in change-stream order, which holds every chunk once: a chunk that
    /// changes meanwhile moves ahead and is seen again, none is skipped.
    fn sweep_slice(&mut self, cfg: &crate::config::Config, now: Instant, servers: u32, n: usize) {
        let next: Vec<(u64, u64)> =
            self.chunks.changed_after(self.heal.index.sweep).take(n).map(|(s, h, _)| (s, h)).collect();
        let done = next.len() < n;
        for (seq, h) in next {
            if let Some(c) = self.chunks.get(h) {
                let used = &mut self.heal.index.pass_used;
                for s in &c.replicas {
                    match used.get_mut(s) {
                        Some(u) => *u += c.length,
                        None => {
                            used.insert(s.to_string(), c.length);
                        }
                    }
                }
            }
            self.evaluate(h, cfg, now, servers);
            self.heal.index.sweep = seq;
        }
        if done {
            let ix = &mut self.heal.index;
            ix.used = std::mem::take(&mut ix.pass_used);
            ix.sweep = 0;
            ix.complete = true;
        }
    }

    /// Takes in what changed since the last repair step, at most
    /// `slices` slices, under the caller's hold of the lock (status calls:
    /// their figures follow events between steps). A new index may not be
    /// complete after that: the figures are then partial until the repair
    /// worker's first sweep ends.
    pub fn index_catch_up(&mut self, cfg: &crate::config::Config, slices: usize) {
        self.index_begin(cfg, false);
        let now = Instant::now();
        for _ in 0..slices {
            if !self.index_slice(cfg, now) {
                break;
            }
        }
    }

    /// Brings the index fully up to date under one hold of the lock (tests
    /// and tools; the heal worker goes a slice at a time).
    pub fn refresh_index_now(&mut self, cfg: &crate::config::Config) {
        self.index_begin(cfg, true);
        let now = Instant::now();
        while self.index_slice(cfg, now) {}
    }

    /// Views of the chunks at the head of the repair queue.
    pub fn queue_views(&self, cfg: &crate::config::Config, now: Instant) -> Vec<ChunkView> {
        let servers = self.in_service_count() as u32;
        let q = self.heal.index.queue().take(PLAN_WINDOW);
        q.filter_map(|h| self.chunk_view(h, cfg, now, servers)).collect()
    }

    /// Views of the chunks with extra replicas.
    pub fn excess_views(&self, cfg: &crate::config::Config, now: Instant) -> Vec<ChunkView> {
        let servers = self.in_service_count() as u32;
        let q = self.heal.index.excess().take(PLAN_WINDOW);
        q.filter_map(|h| self.chunk_view(h, cfg, now, servers)).collect()
    }

    /// Views of some chunks of every in-service server (for moves).
    pub fn move_views(&self, cfg: &crate::config::Config, now: Instant) -> Vec<ChunkView> {
        let servers = self.in_service_count() as u32;
        let mut seen = HashSet::new();
        let mut out = vec![];
        for s in self.servers.iter().filter(|s| self.in_service(&s.info.id)) {
            let mine = s.chunks.iter().filter(|h| seen.insert(**h)).take(MOVE_WINDOW);
            out.extend(mine.filter_map(|h| self.chunk_view(*h, cfg, now, servers)));
        }
        out.sort_by_key(|v| v.handle);
        out
    }

    /// Views of every server for the planner.
    pub fn server_views(&self, now: Instant) -> Vec<ServerView> {
        let mut clones: HashMap<&str, u32> = HashMap::new();
        for t in self.heal.active.values() {
            *clones.entry(&t.source).or_default() += 1;
            *clones.entry(&t.target).or_default() += 1;
        }
        let mut v: Vec<ServerView> = self
            .servers
            .iter()
            .map(|s| ServerView {
                id: s.info.id.clone(),
                zone: s.info.zone.clone(),
                capacity: s.capacity,
                used: self.heal.index.used(&s.info.id).unwrap_or(0),
                in_service: self.in_service(&s.info.id),
                clones: clones.get(s.info.id.as_str()).copied().unwrap_or(0),
                full: s.full || self.heal.no_space(&s.info.id, now),
                free: s.free,
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

#[cfg(test)]
#[path = "heal_index_tests.rs"]
mod tests;
