//! Repair decisions: pure and synchronous, separate from the RPCs.
//!
//! Given a view of every chunk and server, decide which chunks to clone
//! (re-replication, in GFS priority order), which extra replicas to drop,
//! and which replicas to move to even out disk use. The heal worker
//! (`heal.rs`) builds the views, runs these functions and does the calls.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use gfs_proto::RepairReason;

/// What the planner knows about one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkView {
    /// Chunk handle.
    pub handle: u64,
    /// Known length (bytes to copy).
    pub length: u64,
    /// The file's replication.
    pub base: u32,
    /// Wanted replicas now (base, plus extra while hot).
    pub target: u32,
    /// Live up-to-date replicas, draining servers included (clone sources).
    pub replicas: Vec<String>,
    /// Replicas on servers in service (live, not draining).
    pub in_service: Vec<String>,
    /// The chunk belongs to a deleted (hidden) file.
    pub hidden: bool,
    /// A client recently needed this chunk and found too few replicas.
    pub blocking: bool,
    /// A lease is held or a clone is running: do not touch now.
    pub busy: bool,
    /// Servers a clone of this chunk failed on recently: not a target
    /// until their backoff ends (no retry loop on one bad destination).
    pub avoid: Vec<String>,
}

impl ChunkView {
    /// Replicas missing from the target.
    pub fn missing(&self) -> u32 {
        self.target.saturating_sub(self.in_service.len() as u32)
    }
}

/// What the planner knows about one server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerView {
    /// Server id.
    pub id: String,
    /// Failure domain.
    pub zone: String,
    /// Disk capacity.
    pub capacity: u64,
    /// Bytes of the chunks it holds (master's view, updated as we plan).
    pub used: u64,
    /// Live and not draining: may receive replicas.
    pub in_service: bool,
    /// Clones in flight that use it, as source or destination.
    pub clones: u32,
    /// Reported full (or a clone to it just ran out of space): receives
    /// no replicas.
    pub full: bool,
    /// Free bytes as last reported (None: unknown), less what clones
    /// planned onto it will take.
    pub free: Option<u64>,
}

impl ServerView {
    fn fraction(&self) -> f64 {
        if self.capacity == 0 { 1.0 } else { self.used as f64 / self.capacity as f64 }
    }

    /// May receive a copy of `length` bytes: in service, not full, and
    /// with that much free space when known.
    fn takes(&self, length: u64) -> bool {
        self.in_service && !self.full && self.free.is_none_or(|f| f >= length)
    }
}

/// Concurrency caps on clones.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Cluster-wide clones in flight.
    pub total: u32,
    /// Clones per server (source or destination).
    pub per_server: u32,
}

/// One copy to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Chunk handle.
    pub handle: u64,
    /// Server id to copy from.
    pub source: String,
    /// Server id to copy to.
    pub target: String,
    /// Replicas missing when planned.
    pub missing: u32,
    /// Why.
    pub reason: RepairReason,
    /// Chunk of a deleted file.
    pub hidden: bool,
    /// Bytes to copy.
    pub length: u64,
}

/// Sort key of the repair queue, smallest first: chunks blocking a client,
/// then more replicas missing, then live files before deleted ones, then
/// handle order (stable).
pub fn priority(c: &ChunkView) -> (bool, Reverse<u32>, bool, u64) {
    (!c.blocking, Reverse(c.missing()), c.hidden, c.handle)
}

/// Chunks with a replica deficit, in repair order.
pub fn queue(chunks: &[ChunkView]) -> Vec<&ChunkView> {
    let mut q: Vec<&ChunkView> = chunks.iter().filter(|c| c.missing() > 0).collect();
    q.sort_by_key(|c| priority(c));
    q
}

/// Server views by id, with the planning helpers.
struct Pool<'a> {
    servers: &'a mut [ServerView],
    index: HashMap<String, usize>,
    caps: Caps,
    total: u32,
}

impl<'a> Pool<'a> {
    fn new(servers: &'a mut [ServerView], active: u32, caps: Caps) -> Self {
        let index = servers.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        Pool { servers, index, caps, total: active }
    }

    fn get(&self, id: &str) -> Option<&ServerView> {
        self.index.get(id).map(|&i| &self.servers[i])
    }

    fn free(&self, id: &str) -> bool {
        self.get(id).is_some_and(|s| s.clones < self.caps.per_server)
    }

    /// Least busy replica that can serve a copy.
    fn source(&self, replicas: &[String]) -> Option<String> {
        replicas.iter().filter(|r| self.free(r)).min_by_key(|r| (self.get(r).map_or(0, |s| s.clones), *r)).cloned()
    }

    /// In-service server with room for `c` that neither holds it nor is
    /// in its backoff: new zones first, then the emptiest.
    fn target(&self, c: &ChunkView) -> Option<String> {
        let holders = &c.replicas;
        let zones: HashSet<&str> = holders.iter().filter_map(|h| self.get(h)).map(|s| s.zone.as_str()).collect();
        self.servers
            .iter()
            .filter(|s| s.takes(c.length) && s.clones < self.caps.per_server)
            .filter(|s| !holders.contains(&s.id) && !c.avoid.contains(&s.id))
            .min_by(|a, b| {
                let ka = (zones.contains(a.zone.as_str()), a.fraction());
                let kb = (zones.contains(b.zone.as_str()), b.fraction());
                ka.partial_cmp(&kb).unwrap_or(std::cmp::Ordering::Equal).then_with(|| a.id.cmp(&b.id))
            })
            .map(|s| s.id.clone())
    }

    fn take(&mut self, source: &str, target: &str, length: u64) {
        for id in [source, target] {
            if let Some(&i) = self.index.get(id) {
                self.servers[i].clones += 1;
            }
        }
        if let Some(&i) = self.index.get(target) {
            let s = &mut self.servers[i];
            s.used += length;
            s.free = s.free.map(|f| f.saturating_sub(length));
        }
        self.total += 1;
    }

    fn full(&self) -> bool {
        self.total >= self.caps.total
    }
}

/// Picks clones for chunks with a deficit, in priority order, within the
/// caps. `active` is the number of clones already in flight.
pub fn plan_repairs(chunks: &[ChunkView], servers: &mut [ServerView], active: u32, caps: Caps) -> Vec<Task> {
    let mut pool = Pool::new(servers, active, caps);
    let mut out = Vec::new();
    for c in queue(chunks) {
        if pool.full() {
            break;
        }
        if c.busy {
            continue;
        }
        let Some(source) = pool.source(&c.replicas) else { continue };
        let Some(target) = pool.target(c) else { continue };
        pool.take(&source, &target, c.length);
        let reason = if c.in_service.len() as u32 >= c.base { RepairReason::Hot } else { RepairReason::Replicate };
        out.push(Task {
            handle: c.handle,
            source,
            target,
            missing: c.missing(),
            reason,
            hidden: c.hidden,
            length: c.length,
        });
    }
    out
}

/// Extra replicas to drop: (handle, server). Drops from the fullest
/// in-service server, never from draining ones, never while busy.
pub fn plan_trims(chunks: &[ChunkView], servers: &[ServerView]) -> Vec<(u64, String)> {
    let frac: HashMap<&str, f64> = servers.iter().map(|s| (s.id.as_str(), s.fraction())).collect();
    let mut out = Vec::new();
    for c in chunks.iter().filter(|c| !c.busy && c.in_service.len() as u32 > c.target) {
        let mut holders: Vec<&String> = c.in_service.iter().collect();
        holders.sort_by(|a, b| {
            let (fa, fb) = (frac.get(a.as_str()).unwrap_or(&0.0), frac.get(b.as_str()).unwrap_or(&0.0));
            fb.partial_cmp(fa).unwrap_or(std::cmp::Ordering::Equal).then_with(|| a.cmp(b))
        });
        let extra = c.in_service.len() - c.target as usize;
        out.extend(holders.into_iter().take(extra).map(|s| (c.handle, s.clone())));
    }
    out
}

/// Moves from the fullest to the emptiest in-service server while their
/// use fractions differ by more than `threshold`, within the caps.
pub fn plan_moves(
    chunks: &[ChunkView],
    servers: &mut [ServerView],
    active: u32,
    caps: Caps,
    threshold: f64,
) -> Vec<Task> {
    let mut pool = Pool::new(servers, active, caps);
    let mut out = Vec::new();
    let mut moved: HashSet<u64> = HashSet::new();
    while !pool.full() {
        let live: Vec<&ServerView> = pool.servers.iter().filter(|s| s.in_service).collect();
        let by_frac = |a: &&&ServerView, b: &&&ServerView| {
            a.fraction().partial_cmp(&b.fraction()).unwrap_or(std::cmp::Ordering::Equal).then_with(|| a.id.cmp(&b.id))
        };
        // A full server is never the destination of a move.
        let (Some(min), Some(max)) = (live.iter().filter(|s| !s.full).min_by(by_frac), live.iter().max_by(by_frac))
        else {
            break;
        };
        if max.fraction() - min.fraction() <= threshold || max.clones >= caps.per_server {
            break;
        }
        let (from, to) = (max.id.clone(), min.id.clone());
        let pick = chunks.iter().find(|c| {
            !c.busy
                && c.missing() == 0
                && c.length > 0
                && !moved.contains(&c.handle)
                && c.in_service.contains(&from)
                && !c.replicas.contains(&to)
                && !c.avoid.contains(&to)
                && pool.get(&to).is_some_and(|s| s.takes(c.length))
        });
        let Some(c) = pick else { break };
        if !pool.free(&to) {
            break;
        }
        pool.take(&from, &to, c.length);
        if let Some(&i) = pool.index.get(&from) {
            pool.servers[i].used = pool.servers[i].used.saturating_sub(c.length);
        }
        moved.insert(c.handle);
        out.push(Task {
            handle: c.handle,
            source: from,
            target: to,
            missing: 0,
            reason: RepairReason::Rebalance,
            hidden: c.hidden,
            length: c.length,
        });
    }
    out
}

/// Replicas wanted for a chunk with read score `score`: the base, plus
/// `extra` while the score is at least `hot_reads` (0 = off), at most
/// `servers`.
pub fn hot_target(base: u32, score: f64, hot_reads: u32, extra: u32, servers: u32) -> u32 {
    if hot_reads > 0 && score >= hot_reads as f64 { (base + extra).min(servers.max(base)) } else { base }
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
