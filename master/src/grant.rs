//! Chunk allocation and lease granting (GetWriteLease / GetAppendLease).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use gfs_common::perm::WRITE as WRITE_ACCESS;
use gfs_common::token::{READ, WRITE};
use gfs_common::{Error, MAX_FILE_CHUNKS, MAX_NEW_CHUNKS_PER_LEASE, Result};
use gfs_proto::log_record::Op;
use gfs_proto::{AddChunkOp, GrantLeaseRequest, LeaseInfo, SetVersionOp};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::lease::Lease;
use crate::locks::{for_mutation, for_read};
use crate::perm::Requester;
use crate::placement;
use crate::state::{Meta, Shared};

/// Which chunk a lease request resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An existing chunk: (index, handle).
    Existing(u64, u64),
    /// Chunks `from..=to` must be created; the lease is for `to`.
    Allocate { from: u64, to: u64 },
}

/// Resolves GetWriteLease(index, create_missing) against a file's chunks.
///
/// A new chunk may be at most one past the last, or, with
/// `create_missing`, up to [`MAX_NEW_CHUNKS_PER_LEASE`] past it (the gap is
/// created with it); never at or beyond [`MAX_FILE_CHUNKS`]. A caller
/// asking for more would make the master place, create and log that many
/// chunks in one request.
pub fn write_target(chunks: &[u64], index: u64, create_missing: bool) -> Result<Target> {
    let count = chunks.len() as u64;
    if let Some(h) = usize::try_from(index).ok().and_then(|i| chunks.get(i)) {
        return Ok(Target::Existing(index, *h));
    }
    if index >= MAX_FILE_CHUNKS {
        return Err(Error::InvalidArgument(format!(
            "chunk index {index} is beyond the largest file ({MAX_FILE_CHUNKS} chunks)"
        )));
    }
    if index > count && !create_missing {
        return Err(Error::InvalidArgument(format!(
            "chunk index {index} is past the end of the file ({count} chunks); set create_missing to fill the gap"
        )));
    }
    let new = index - count + 1;
    if new > MAX_NEW_CHUNKS_PER_LEASE {
        return Err(Error::InvalidArgument(format!(
            "chunk index {index} would create {new} chunks after the file's {count}; one lease request creates \
             at most {MAX_NEW_CHUNKS_PER_LEASE} (fill a larger gap in steps)"
        )));
    }
    Ok(Target::Allocate { from: count, to: index })
}

/// Resolves GetAppendLease(after_index) against a file's chunks:
/// `after_index` must name the file's last chunk (or an earlier one).
pub fn append_target(chunks: &[u64], after: Option<u64>) -> Result<Target> {
    let Some(&last_h) = chunks.last() else {
        return match after {
            None => Ok(Target::Allocate { from: 0, to: 0 }),
            Some(a) => Err(Error::InvalidArgument(format!("after_index {a} but the file has no chunk"))),
        };
    };
    let last = chunks.len() as u64 - 1;
    match after {
        Some(a) if a == last && last + 1 >= MAX_FILE_CHUNKS => {
            Err(Error::InvalidArgument(format!("the file has the most chunks a file may have ({MAX_FILE_CHUNKS})")))
        }
        Some(a) if a == last => Ok(Target::Allocate { from: last + 1, to: last + 1 }),
        Some(a) if a > last => {
            Err(Error::InvalidArgument(format!("after_index {a} is past the last chunk {last} of the file")))
        }
        _ => Ok(Target::Existing(last, last_h)),
    }
}

/// Result of sending GrantLease to a set of replicas.
struct Granted {
    primary: Option<(String, Instant)>,
    ok: Vec<String>,
    length: u64,
}

impl Shared {
    /// Lease for a file chunk chosen by `target`, allocating chunks first
    /// when needed. `who` needs WRITE on the file; the lease records it as
    /// a writer (see `ReportLength`).
    pub async fn lease_at(
        self: &Arc<Self>,
        path: &str,
        who: &Requester,
        target: impl Fn(&[u64]) -> Result<Target>,
    ) -> Result<(LeaseInfo, u64)> {
        {
            let _g = self.locks.lock(&for_read(path), &[]).await;
            let t = {
                let meta = self.meta();
                meta.ns.allow_access(who, path, WRITE_ACCESS)?;
                target(&meta.ns.file(path)?.chunks)?
            };
            if let Target::Existing(index, handle) = t {
                return self.lease_for(handle, index, &who.user).await;
            }
        }
        let (reads, writes) = for_mutation(path);
        let _g = self.locks.lock(&reads, &writes).await;
        let (t, replication) = {
            let meta = self.meta();
            meta.ns.allow_access(who, path, WRITE_ACCESS)?;
            let f = meta.ns.file(path)?;
            (target(&f.chunks)?, f.replication)
        };
        match t {
            Target::Existing(index, handle) => self.lease_for(handle, index, &who.user).await,
            Target::Allocate { from, to } => self.allocate(path, from, to, replication, &who.user).await,
        }
    }

    /// Places and creates chunks `from..=to` of `path`, then logs them;
    /// returns the lease of chunk `to`. The caller holds the write lock on
    /// `path`.
    ///
    /// Chunkservers are told first and the log written second: a master
    /// crash in between leaves only replicas the master does not know, which
    /// the next chunk report deletes as orphans. The handles are never reused
    /// (their high bits are the master's epoch), so such an orphan cannot be
    /// mistaken for a later chunk.
    async fn allocate(
        self: &Arc<Self>,
        path: &str,
        from: u64,
        to: u64,
        replication: u32,
        writer: &str,
    ) -> Result<(LeaseInfo, u64)> {
        let now = Instant::now();
        let mut plans = Vec::new();
        {
            let mut meta = self.meta();
            for index in from..=to {
                let cands = meta.placement_candidates(now);
                if cands.is_empty() {
                    return Err(meta.no_room(now));
                }
                let servers =
                    placement::choose(&cands, replication as usize, self.cfg.max_recent_creations, &mut rand::rng())?;
                if servers.len() < replication as usize {
                    warn!(path, index, want = replication, got = servers.len(), "new chunk is under-replicated");
                }
                servers.iter().for_each(|s| meta.servers.note_creation(s, now));
                let handle = meta.chunks.allocate_handle();
                meta.allocating.insert(handle);
                plans.push((index, handle, servers));
            }
        }
        let res = self.create_and_log(path, plans.clone(), writer).await;
        let mut meta = self.meta();
        plans.iter().for_each(|(_, h, _)| {
            meta.allocating.remove(h);
        });
        res
    }

    /// Sends the creating grant round of every planned chunk (the last one
    /// gets the primary lease), then logs them all and records the grants
    /// under one metadata lock, so no other task sees a logged chunk without
    /// its replicas.
    async fn create_and_log(
        self: &Arc<Self>,
        path: &str,
        plans: Vec<(u64, u64, Vec<String>)>,
        writer: &str,
    ) -> Result<(LeaseInfo, u64)> {
        let last = plans.len() - 1;
        let mut rounds = Vec::with_capacity(plans.len());
        for (i, (_, handle, servers)) in plans.iter().enumerate() {
            let primary = (i == last).then(|| servers[0].clone());
            rounds.push(self.grant_round(*handle, 1, servers, primary, true).await?);
        }
        let ops = plans
            .iter()
            .map(|(index, handle, _)| {
                Op::AddChunk(AddChunkOp { path: path.into(), index: *index, handle: *handle, version: 1 })
            })
            .collect();
        let to = plans[last].0;
        let (me, path, writer) = (self.clone(), path.to_string(), writer.to_string());
        self.commit_then(ops, move |meta| {
            let mut out = None;
            for ((index, handle, servers), g) in plans.iter().zip(rounds) {
                out = Some(me.record_grant(meta, (*handle, *index, 1), servers, g, &writer));
            }
            info!(path, index = to, chunks = plans.len(), "chunks allocated");
            out.expect("at least one chunk")
        })
        .await?
    }

    /// Returns a valid lease on `handle`, granting one (with a version bump)
    /// when none is held.
    ///
    /// The replicas get the new version before the master logs it: a master
    /// crash in between leaves replicas *ahead* of the log, and the master
    /// adopts a reported version above its own. The other order would leave
    /// every replica behind the log, and so stale, after such a crash.
    async fn lease_for(self: &Arc<Self>, handle: u64, index: u64, writer: &str) -> Result<(LeaseInfo, u64)> {
        // A new leader knows no replica until chunkservers re-register; a
        // grant now would leave every unreported replica stale.
        // Chunks allocated in this term (the handle's high bits) were
        // created by this leader, which knows their replicas.
        let warm = Duration::from_millis(self.cfg.leader_warmup_ms);
        if handle >> crate::HANDLE_EPOCH_SHIFT != self.epoch() && self.leader_for().is_none_or(|t| t < warm) {
            return Err(Error::Unavailable(format!(
                "chunk {handle}: this master just became leader and is collecting chunk reports; retry shortly"
            )));
        }
        let _c = self.chunk_lock(handle).lock().await;
        let now = Instant::now();
        let grace = Duration::from_millis(self.cfg.rpc_timeout_ms);
        let (live, primary, new_version) = {
            let mut meta = self.meta();
            let c = meta.chunks.get(handle).ok_or(Error::ChunkNotFound { handle })?;
            if let Some(l) = &c.lease
                && l.is_valid(now)
                && l.version == c.version
                && c.replicas.contains(&l.primary)
                && meta.servers.is_alive(&l.primary)
                && l.holders.iter().all(|s| meta.servers.is_alive(s))
            {
                return lease_info(&mut meta, self.epoch(), (index, handle), self.cfg.token_lifetime_ms, writer);
            }
            let live: Vec<String> =
                c.replicas.iter().filter(|s| meta.servers.is_alive(s)).map(str::to_string).collect();
            let short = live.len() < c.replication as usize;
            let c = c.clone();
            if short {
                meta.heal.note_blocked(handle);
            }
            if live.is_empty() {
                return Err(Error::Unavailable(format!("chunk {handle} has no live replica")));
            }
            let primary = match &c.lease {
                Some(l) if l.is_held(now, grace) && live.contains(&l.primary) => l.primary.clone(),
                Some(l) if l.is_held(now, grace) => {
                    return Err(Error::Unavailable(format!(
                        "chunk {handle}: lease still held by unreachable primary {}; retry after it expires",
                        l.primary
                    )));
                }
                _ => least_loaded(&meta, &live),
            };
            meta.chunks.get_mut(handle).expect("present").bumping_from = Some(c.version);
            (live, primary, c.version + 1)
        };
        let clear = |meta: &mut Meta| {
            if let Some(c) = meta.chunks.get_mut(handle) {
                c.bumping_from = None;
            }
        };
        let g = match self.grant_round(handle, new_version, &live, Some(primary), false).await {
            Ok(g) => g,
            Err(e) => {
                clear(&mut self.meta());
                return Err(e);
            }
        };
        let op = Op::SetVersion(SetVersionOp { handle, version: new_version });
        let (me, writer) = (self.clone(), writer.to_string());
        let record = move |meta: &mut Meta| me.record_grant(meta, (handle, index, new_version), &live, g, &writer);
        match self.commit_then(vec![op], record).await {
            Ok(r) => r,
            Err(e) => {
                // Replicas that took the new version report it; the master
                // adopts it then (see `adopt`).
                clear(&mut self.meta());
                Err(e)
            }
        }
    }

    /// Takes the lease on `handle` back from its (live) primary so that the
    /// chunk can be repaired: a clone is only counted if no mutation can
    /// reach the old replica set meanwhile. The primary drops the lease after
    /// any mutation in progress (GrantLease with `lease_ms` 0 at the current
    /// version); the next writer gets a new lease with a version bump, which
    /// also discards a clone still in flight.
    pub async fn revoke_lease(self: &Arc<Self>, handle: u64) -> Result<()> {
        let _c = self.chunk_lock(handle).lock().await;
        let (addr, version, primary) = {
            let meta = self.meta();
            let Some(c) = meta.chunks.get(handle) else { return Ok(()) };
            let Some(l) = &c.lease else { return Ok(()) };
            // A dead primary cannot be told; its lease runs out by itself.
            let Some(info) = meta.servers.live_info(&l.primary) else { return Ok(()) };
            (info.address, c.version, l.primary.clone())
        };
        let req = GrantLeaseRequest { handle, version, lease_ms: 0, create: false, epoch: self.epoch() };
        self.rpc.grant_lease(&addr, req).await?;
        let mut meta = self.meta();
        if let Some(c) = meta.chunks.get_mut(handle)
            && c.lease.as_ref().is_some_and(|l| l.primary == primary && l.version == version)
        {
            c.lease = None;
            info!(chunk = handle, primary = %primary, "lease revoked for repair");
        }
        Ok(())
    }

    /// Applies a successful grant round of chunk `handle` (index `index`)
    /// at `version` to the chunk table.
    fn record_grant(
        &self,
        meta: &mut Meta,
        (handle, index, version): (u64, u64, u64),
        sent: &[String],
        g: Granted,
        writer: &str,
    ) -> Result<(LeaseInfo, u64)> {
        let Some(c) = meta.chunks.get_mut(handle) else { return Err(Error::ChunkNotFound { handle }) };
        c.bumping_from = None;
        c.length = c.length.max(g.length.min(c.chunk_size));
        for s in sent.iter().filter(|s| !g.ok.contains(s)) {
            warn!(chunk = handle, server = %s, version, "replica did not accept the grant; it is now stale");
            meta.remove_replica(handle, s);
        }
        g.ok.iter().for_each(|s| meta.add_replica(handle, s));
        if let Some((primary, sent_at)) = g.primary {
            info!(chunk = handle, version, primary = %primary, "lease granted");
            self.metrics.lease_grants.inc();
            let mut lease = Lease::new(primary, version, sent_at, Duration::from_millis(self.cfg.lease_ms));
            lease.holders = g.ok.iter().collect();
            meta.chunks.grant_lease(handle, lease);
        }
        lease_info(meta, self.epoch(), (index, handle), self.cfg.token_lifetime_ms, writer)
    }

    /// Sends GrantLease(version) to `servers` in parallel; `primary` gets the
    /// lease. If the primary fails, another server that accepted is tried.
    async fn grant_round(
        &self,
        handle: u64,
        version: u64,
        servers: &[String],
        primary: Option<String>,
        create: bool,
    ) -> Result<Granted> {
        let addrs: Vec<(String, String)> = {
            let meta = self.meta();
            servers.iter().filter_map(|s| meta.servers.live_info(s).map(|i| (s.clone(), i.address))).collect()
        };
        let sent_at = Instant::now();
        let calls = addrs.iter().map(|(id, addr)| {
            let lease_ms = if primary.as_ref() == Some(id) { self.cfg.lease_ms } else { 0 };
            self.send_grant(id, addr, handle, version, lease_ms, create)
        });
        let results = join_all(calls).await;
        let mut ok = Vec::new();
        let mut length = 0;
        let mut no_space = None;
        for ((id, _), r) in addrs.iter().zip(results) {
            match r {
                Ok(len) => {
                    ok.push(id.clone());
                    length = length.max(len);
                }
                Err(e @ Error::NoSpace { .. }) => no_space = Some(e),
                Err(_) => {}
            }
        }
        if ok.is_empty() {
            // Every server out of space: say so (and which), not "unavailable".
            return Err(no_space.unwrap_or_else(|| {
                Error::Unavailable(format!("no replica of chunk {handle} accepted version {version}"))
            }));
        }
        let Some(want) = primary else { return Ok(Granted { primary: None, ok, length }) };
        if ok.contains(&want) {
            return Ok(Granted { primary: Some((want, sent_at)), ok, length });
        }
        for (id, addr) in addrs.iter().filter(|(id, _)| ok.contains(id)) {
            let sent_at = Instant::now();
            if self.send_grant(id, addr, handle, version, self.cfg.lease_ms, create).await.is_ok() {
                return Ok(Granted { primary: Some((id.clone(), sent_at)), ok, length });
            }
        }
        Err(Error::Unavailable(format!("no replica of chunk {handle} accepted the lease")))
    }

    async fn send_grant(
        &self,
        id: &str,
        addr: &str,
        handle: u64,
        version: u64,
        lease_ms: u64,
        create: bool,
    ) -> Result<u64> {
        let req = GrantLeaseRequest { handle, version, lease_ms, create, epoch: self.epoch() };
        match self.rpc.grant_lease(addr, req).await {
            Ok(r) => {
                if let Some(s) = self.meta().servers.get_mut(id) {
                    s.note_ack(handle, r.report_seq);
                }
                Ok(r.chunk_length)
            }
            Err(e) => {
                warn!(chunk = handle, server = %id, address = %addr, error = %e, "grant lease failed");
                if matches!(e, Error::NoSpace { .. }) {
                    let hold = Duration::from_millis(self.cfg.heal.clone_retry_ms);
                    self.meta().heal.backoff.out_of_space(id, Instant::now(), hold);
                }
                Err(e.on_server(addr))
            }
        }
    }
}

impl Meta {
    /// The error for a chunk that no server can take: names the live
    /// servers that are full, if that is why.
    fn no_room(&self, now: Instant) -> Error {
        let mut full: Vec<String> = self
            .servers
            .iter()
            .filter(|s| s.alive && (s.full || self.heal.no_space(&s.info.id, now)))
            .map(|s| s.info.address.clone())
            .collect();
        full.sort();
        let detail = if full.is_empty() {
            "no live chunkserver can take a new chunk".to_string()
        } else {
            format!("no chunkserver can take a new chunk: every live one is full ({})", full.join(", "))
        };
        Error::NoSpace { server: None, detail }
    }
}

fn least_loaded(meta: &Meta, live: &[String]) -> String {
    live.iter()
        .min_by_key(|s| (meta.servers.get(s).map_or(u32::MAX, |e| e.load), s.as_str()))
        .cloned()
        .expect("non-empty")
}

/// Builds the LeaseInfo of a chunk with a lease, with a write token for the
/// leased version, and its chunk size.
/// The lease of chunk `handle` (index `index`) as handed to `writer`,
/// who is recorded as one of the lease's writers.
fn lease_info(
    meta: &mut Meta,
    epoch: u64,
    (index, handle): (u64, u64),
    token_ms: u64,
    writer: &str,
) -> Result<(LeaseInfo, u64)> {
    // Untracked: writers are the leader's own soft state, not something
    // followers' shadow copies need.
    if let Some(l) = meta.chunks.get_mut_untracked(handle).and_then(|c| c.lease.as_mut()) {
        l.add_writer(writer);
    }
    let c = meta.chunks.get(handle).expect("caller checked");
    let now = Instant::now();
    let (primary, remaining) = match &c.lease {
        Some(l) => (meta.servers.live_info(&l.primary), l.remaining(now).as_millis() as u64),
        None => (None, 0),
    };
    let pid = primary.as_ref().map(|p| p.id.clone()).unwrap_or_default();
    let secondaries = c.replicas.iter().filter(|s| **s != pid).filter_map(|s| meta.servers.live_info(s)).collect();
    let mut chunk = meta.location(index, handle);
    chunk.token = Some(meta.token(handle, chunk.version, READ | WRITE, writer, token_ms)?);
    let info = LeaseInfo { chunk: Some(chunk), primary, secondaries, lease_ms: remaining, epoch };
    Ok((info, c.chunk_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(write_target(&[5, 6], 1, false).unwrap(), Target::Existing(1, 6));
        assert_eq!(write_target(&[5, 6], 2, false).unwrap(), Target::Allocate { from: 2, to: 2 });
        assert!(write_target(&[5, 6], 4, false).is_err());
        assert_eq!(write_target(&[5, 6], 4, true).unwrap(), Target::Allocate { from: 2, to: 4 });
        assert_eq!(append_target(&[], None).unwrap(), Target::Allocate { from: 0, to: 0 });
        assert_eq!(append_target(&[5, 6], None).unwrap(), Target::Existing(1, 6));
        assert_eq!(append_target(&[5, 6], Some(1)).unwrap(), Target::Allocate { from: 2, to: 2 });
        assert_eq!(append_target(&[5, 6], Some(0)).unwrap(), Target::Existing(1, 6));
        assert!(append_target(&[5, 6], Some(3)).is_err());
    }

    #[test]
    fn targets_far_past_the_end_are_refused() {
        let last_ok = MAX_NEW_CHUNKS_PER_LEASE + 1;
        assert_eq!(write_target(&[5, 6], last_ok, true).unwrap(), Target::Allocate { from: 2, to: last_ok });
        for index in [last_ok + 1, MAX_FILE_CHUNKS, 1 << 40, u64::MAX] {
            let e = write_target(&[5, 6], index, true).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{index}: {e:?}");
        }
        assert!(write_target(&[5, 6], u64::MAX, false).is_err());
        assert!(append_target(&[], Some(0)).is_err());
        assert!(append_target(&[5], Some(u64::MAX)).is_err());
    }
}
