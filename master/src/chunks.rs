//! The chunk table: handle -> version, known length, up-to-date replicas and
//! lease. Versions and handles are persisted (log + checkpoint); replica
//! locations and lengths are rebuilt from chunkserver reports.
//!
//! The table also keeps a *change stream* for followers' shadow state
//! (`shadow.rs`): every access for update (`get_mut`, `insert`) gives the
//! chunk the next sequence number, so the chunks changed after a cursor are
//! a range of an ordered index. The entries are private, so no change can
//! bypass it (except a follower's shadow state, `get_mut_untracked`). An
//! update that may change nothing goes through `get_mut_if`, so it is not
//! sent to followers for nothing. A stream has a random id; forgetting the
//! soft state starts a new one, which makes followers pull everything again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::lease::Lease;
use crate::sid::{RareServerSet, ServerSet};

/// Master state of one chunk.
#[derive(Debug, Clone)]
pub struct ChunkEntry {
    /// Current version.
    pub version: u64,
    /// Largest length reported by a replica or a client.
    pub length: u64,
    /// Servers holding the current version.
    pub replicas: ServerSet,
    /// Current lease, if any.
    /// (Boxed: most chunks have none, and the inline size is paid by all.)
    pub lease: Option<Box<Lease>>,
    /// Target replica count (of the owning file).
    pub replication: u32,
    /// Chunk size of the owning file.
    pub chunk_size: u64,
    /// Set while a version bump is being pushed to the replicas: reports of
    /// this (old) version are neither stale nor up to date yet.
    pub bumping_from: Option<u64>,
    /// Replicas their holder confirmed corrupt (`VerifyChunk`) but that
    /// are kept: the chunk had no other live replica that is not corrupt.
    pub corrupt: RareServerSet,
    /// The owning file is deleted (within a hidden entry, awaiting GC):
    /// its repairs come after those of live files.
    pub hidden: bool,
    /// Sequence number of this chunk's last change in the table's stream.
    changed: u64,
}

/// Chunk handle -> version, in a persistent map: the part of the table a
/// checkpoint holds, frozen in O(1) (`frozen.rs`).
pub type Versions = imbl::OrdMap<u64, u64>;

/// All chunks plus the handle counter.
///
/// Entries live in a slab (`slots`, reused through `free`) indexed by
/// handle: a hash table of 12-byte (handle, slot) pairs rather than of
/// whole entries, whose empty buckets (up to half of them after a
/// doubling) would each cost an entry's size.
#[derive(Debug)]
pub struct ChunkTable {
    index: HashMap<u64, u32>,
    slots: Vec<Option<(u64, ChunkEntry)>>,
    free: Vec<u32>,
    /// Every chunk's version, as in `chunks` (kept by `insert`, `remove`
    /// and `raise_version`, the only ways a version changes).
    versions: Versions,
    next_handle: u64,
    /// Change stream: sequence number -> handle, one entry per chunk.
    changes: BTreeMap<u64, u64>,
    /// Last sequence number handed out.
    change_seq: u64,
    /// Id of the change stream (never 0).
    stream: u64,
    /// Leases by end (as granted; an extended one is found later and put
    /// back at its new end), so ended ones are dropped without a walk.
    lease_ends: BTreeSet<(Instant, u64)>,
}

impl Default for ChunkTable {
    fn default() -> Self {
        ChunkTable {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            versions: Versions::new(),
            next_handle: 0,
            changes: BTreeMap::new(),
            change_seq: 0,
            stream: new_stream(),
            lease_ends: BTreeSet::new(),
        }
    }
}

/// A fresh, non-zero change stream id.
fn new_stream() -> u64 {
    rand::random::<u64>() | 1
}

impl ChunkTable {
    /// An empty table whose first handle is 1.
    pub fn new() -> Self {
        ChunkTable { next_handle: 1, ..Default::default() }
    }

    fn entry(&self, handle: u64) -> Option<&ChunkEntry> {
        let slot = *self.index.get(&handle)?;
        self.slots[slot as usize].as_ref().map(|(_, e)| e)
    }

    fn entry_mut(&mut self, handle: u64) -> Option<&mut ChunkEntry> {
        let slot = *self.index.get(&handle)?;
        self.slots[slot as usize].as_mut().map(|(_, e)| e)
    }

    /// Gives `handle` the next sequence number of the change stream.
    fn touch(changes: &mut BTreeMap<u64, u64>, seq: &mut u64, entry: &mut ChunkEntry, handle: u64) {
        changes.remove(&entry.changed);
        *seq += 1;
        entry.changed = *seq;
        changes.insert(*seq, handle);
    }

    /// Returns a fresh handle (persisted through the `AddChunk` record that
    /// uses it, or the checkpoint's `next_handle`).
    pub fn allocate_handle(&mut self) -> u64 {
        let h = self.next_handle;
        self.next_handle += 1;
        h
    }

    /// The next handle to hand out.
    pub fn next_handle(&self) -> u64 {
        self.next_handle
    }

    /// Raises the handle counter (checkpoint load).
    pub fn bump_next_handle(&mut self, at_least: u64) {
        self.next_handle = self.next_handle.max(at_least);
    }

    /// Adds a chunk with no known replicas.
    pub fn insert(&mut self, handle: u64, version: u64, replication: u32, chunk_size: u64) {
        self.bump_next_handle(handle + 1);
        let mut entry = ChunkEntry {
            version,
            length: 0,
            replicas: ServerSet::new(),
            lease: None,
            replication,
            chunk_size,
            bumping_from: None,
            corrupt: RareServerSet::default(),
            hidden: false,
            changed: 0,
        };
        if let Some(old) = self.entry(handle) {
            entry.changed = old.changed;
        }
        Self::touch(&mut self.changes, &mut self.change_seq, &mut entry, handle);
        match self.index.get(&handle) {
            Some(slot) => self.slots[*slot as usize] = Some((handle, entry)),
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot as usize] = Some((handle, entry));
                        slot
                    }
                    None => {
                        self.slots.push(Some((handle, entry)));
                        (self.slots.len() - 1) as u32
                    }
                };
                self.index.insert(handle, slot);
            }
        }
        self.versions.insert(handle, version);
    }

    /// Raises a chunk's version to `version` (a logged `SetVersion`); a
    /// lower one changes nothing.
    pub fn raise_version(&mut self, handle: u64, version: u64) {
        if let Some(c) = self.get_mut_if(handle, |c| c.version < version) {
            c.version = version;
            self.versions.insert(handle, version);
        }
    }

    /// Every chunk's version as of now, in O(1) (see [`Versions`]).
    pub fn freeze_versions(&self) -> Versions {
        self.versions.clone()
    }

    /// Returns a chunk.
    pub fn get(&self, handle: u64) -> Option<&ChunkEntry> {
        self.entry(handle)
    }

    /// Returns a chunk for update; it counts as changed.
    pub fn get_mut(&mut self, handle: u64) -> Option<&mut ChunkEntry> {
        let slot = *self.index.get(&handle)?;
        let (_, entry) = self.slots[slot as usize].as_mut()?;
        Self::touch(&mut self.changes, &mut self.change_seq, entry, handle);
        Some(entry)
    }

    /// Returns a chunk for update only if `would_change` says the update
    /// changes it; only then does it count as changed.
    pub fn get_mut_if(
        &mut self,
        handle: u64,
        would_change: impl FnOnce(&ChunkEntry) -> bool,
    ) -> Option<&mut ChunkEntry> {
        if !self.entry(handle).is_some_and(would_change) {
            return None;
        }
        self.get_mut(handle)
    }

    /// Returns a chunk for update *without* counting it as changed. Only
    /// for a follower's shadow state (`shadow.rs`): a follower serves no
    /// change stream, and the one it starts as leader begins with every
    /// chunk anyway; and for what shadow pulls do not carry (the users a
    /// lease was handed to, `Lease::writers`).
    pub(crate) fn get_mut_untracked(&mut self, handle: u64) -> Option<&mut ChunkEntry> {
        self.entry_mut(handle)
    }

    /// Removes a chunk (its file was deleted).
    pub fn remove(&mut self, handle: u64) -> Option<ChunkEntry> {
        let slot = self.index.remove(&handle)?;
        let (_, entry) = self.slots[slot as usize].take()?;
        self.free.push(slot);
        self.versions.remove(&handle);
        self.changes.remove(&entry.changed);
        Some(entry)
    }

    /// Gives a chunk `lease` (a change).
    pub fn grant_lease(&mut self, handle: u64, lease: Lease) {
        let end = lease.expires_at;
        if let Some(c) = self.get_mut(handle) {
            c.lease = Some(Box::new(lease));
            self.lease_ends.insert((end, handle));
        }
    }

    /// Drops the leases that are no longer held at `now` (past their end
    /// and `grace`), at most `max` of them; returns how many. An ended
    /// lease tells nothing (the next grant bumps the version anyway) and
    /// would keep its primary, writers and holders for the chunk's life.
    pub fn drop_ended_leases(&mut self, now: Instant, grace: Duration, max: usize) -> usize {
        let mut dropped = 0;
        for _ in 0..max {
            let Some(&(end, handle)) = self.lease_ends.first() else { break };
            if end + grace > now {
                break;
            }
            self.lease_ends.pop_first();
            let Some(lease) = self.get(handle).and_then(|c| c.lease.as_deref()) else { continue };
            if lease.is_held(now, grace) {
                // Extended since: look again at its new end.
                self.lease_ends.insert((lease.expires_at, handle));
            } else if let Some(c) = self.get_mut(handle) {
                c.lease = None;
                dropped += 1;
            }
        }
        dropped
    }

    /// Entries of the lease-end queue (a revoked lease's stays until its
    /// end comes).
    pub fn lease_ends(&self) -> usize {
        self.lease_ends.len()
    }

    /// Marks a chunk's file deleted or restored; a change only if it is one.
    pub fn set_hidden(&mut self, handle: u64, hidden: bool) {
        if let Some(c) = self.get_mut_if(handle, |c| c.hidden != hidden) {
            c.hidden = hidden;
        }
    }

    /// The last sequence number handed out by the change stream.
    pub fn last_seq(&self) -> u64 {
        self.change_seq
    }

    /// The change stream's id.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Chunks whose last change is after `seq`, in change order.
    pub fn changed_after(&self, seq: u64) -> impl Iterator<Item = (u64, u64, &ChunkEntry)> {
        self.changes.range(seq + 1..).filter_map(|(s, h)| self.entry(*h).map(|c| (*s, *h, c)))
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when there are no chunks.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Forgets everything learned from chunkservers and grants (replicas,
    /// lengths, leases), keeping the replicated handle/version table.
    pub fn clear_soft_state(&mut self) {
        self.stream = new_stream();
        self.lease_ends.clear();
        for (_, c) in self.slots.iter_mut().flatten() {
            c.replicas.clear();
            c.lease = None;
            c.bumping_from = None;
            c.corrupt.clear();
        }
    }

    /// Iterates over all chunks.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &ChunkEntry)> {
        self.slots.iter().flatten().map(|(h, c)| (h, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ended_leases_are_dropped_and_extended_ones_kept() {
        let (grace, dur) = (Duration::from_secs(1), Duration::from_secs(10));
        let mut t = ChunkTable::new();
        for h in 1..=3 {
            t.insert(h, 1, 3, 64);
            let mut l = Lease::new(format!("s{h}"), 1, Instant::now(), dur);
            l.holders.insert(format!("s{h}"));
            t.grant_lease(h, l);
        }
        t.get_mut(3).unwrap().lease.as_mut().unwrap().extend(Instant::now(), Duration::from_secs(30));
        t.remove(2);
        // Still held within the grace: nothing goes.
        tokio::time::advance(dur + grace / 2).await;
        assert_eq!(t.drop_ended_leases(Instant::now(), grace, 100), 0);
        assert!(t.get(1).unwrap().lease.is_some());
        tokio::time::advance(grace).await;
        let seq = t.last_seq();
        assert_eq!(t.drop_ended_leases(Instant::now(), grace, 100), 1, "only chunk 1's lease ended");
        assert!(t.get(1).unwrap().lease.is_none());
        assert!(t.changed_after(seq).any(|(_, h, _)| h == 1), "a dropped lease is a change");
        assert!(t.get(3).unwrap().lease.is_some(), "an extended lease was dropped");
        assert_eq!(t.lease_ends(), 1, "the extended lease waits at its new end");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(t.drop_ended_leases(Instant::now(), grace, 100), 1);
        assert_eq!(t.lease_ends(), 0);
    }

    #[test]
    fn removed_slots_are_reused_and_handles_stay_apart() {
        let mut t = ChunkTable::new();
        for h in 1..=4 {
            t.insert(h, h * 10, 3, 64);
        }
        t.get_mut(2).unwrap().length = 7;
        assert_eq!(t.remove(2).map(|c| c.length), Some(7));
        assert!(t.get(2).is_none() && t.remove(2).is_none());
        assert_eq!(t.len(), 3);
        // The freed slot takes the next chunk; nothing else moves.
        t.insert(9, 90, 2, 64);
        assert_eq!(t.slots.len(), 4, "the freed slot was not reused");
        let mut seen: Vec<(u64, u64)> = t.iter().map(|(h, c)| (*h, c.version)).collect();
        seen.sort();
        assert_eq!(seen, [(1, 10), (3, 30), (4, 40), (9, 90)]);
        assert_eq!(t.get(9).map(|c| c.replication), Some(2));
        // Inserting an existing handle replaces it in place.
        t.insert(3, 31, 3, 64);
        assert_eq!((t.len(), t.slots.len(), t.get(3).unwrap().version), (4, 4, 31));
        assert_eq!(t.freeze_versions().get(&3), Some(&31));
        assert_eq!(t.changed_after(0).map(|(_, h, _)| h).collect::<Vec<_>>(), [1, 4, 9, 3]);
    }

    #[test]
    fn handles_are_unique_and_counter_follows_inserts() {
        let mut t = ChunkTable::new();
        assert_eq!(t.allocate_handle(), 1);
        t.insert(10, 1, 3, 1 << 20);
        assert_eq!(t.allocate_handle(), 11);
        assert_eq!(t.get(10).unwrap().version, 1);
        assert!(t.remove(10).is_some());
        assert!(t.is_empty());
    }
}
