//! Chunkserver registration, heartbeats and chunk reports.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gfs_common::path::{is_forbidden_char, quote};
use gfs_common::{Error, Result};
use gfs_proto::log_record::Op;
use gfs_proto::{
    ChunkReport, HeartbeatRequest, HeartbeatResponse, LeaseExtension, RegisterRequest, RegisterResponse, ServerInfo,
    SetVersionOp,
};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::servers::new_session;
use crate::state::{Meta, Shared};

/// What a batch of chunk reports asks the master to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    /// Handles the master does not know: the server should delete them.
    pub delete: Vec<u64>,
    /// Handles whose reported version is behind.
    pub stale: Vec<u64>,
    /// (handle, version, length) reported above the master's version.
    pub adopt: Vec<(u64, u64, u64)>,
}

impl Meta {
    /// Folds chunk reports from `server`, built at its report sequence
    /// `seq`, into the chunk table. Entries older than a change the server
    /// acknowledged since are skipped: they would undo that change.
    pub fn process_reports(&mut self, server: &str, seq: u64, reports: &[ChunkReport], out: &mut ReportOutcome) {
        // Callers check the session first; a report naming a server the
        // registry does not hold must still never become a replica (no
        // heartbeat would ever expire it).
        if self.servers.get(server).is_none() {
            warn!(server = %quote(server), reports = reports.len(), "chunk reports from an unregistered server ignored");
            return;
        }
        for r in reports {
            if self.allocating.contains(&r.handle)
                || self.servers.get(server).is_some_and(|s| s.report_predates(r.handle, seq))
            {
                continue;
            }
            // Read first: a report that changes nothing (most of a periodic
            // full report) must not count as a change for shadow pulls.
            let Some(c) = self.chunks.get(r.handle) else {
                out.delete.push(r.handle);
                if let Some(s) = self.servers.get_mut(server) {
                    s.chunks.remove(&r.handle);
                }
                continue;
            };
            if c.bumping_from == Some(r.version) {
                continue; // A grant to this version is in flight.
            }
            if r.version < c.version {
                out.stale.push(r.handle);
                self.remove_replica(r.handle, server);
            } else if r.version > c.version {
                out.adopt.push((r.handle, r.version, r.length));
            } else {
                let length = r.length.min(c.chunk_size);
                if let Some(c) = self.chunks.get_mut_if(r.handle, |c| length > c.length) {
                    c.length = length;
                }
                self.add_replica(r.handle, server);
            }
        }
    }

    /// Replaces the chunk set of `server` with a full report built at
    /// `seq` (chunks changed after `seq` keep their state).
    pub fn replace_reports(&mut self, server: &str, seq: u64, reports: &[ChunkReport], out: &mut ReportOutcome) {
        let reported: HashSet<u64> = reports.iter().map(|r| r.handle).collect();
        let gone: Vec<u64> = self
            .servers
            .get(server)
            .map(|s| {
                s.chunks.iter().filter(|h| !reported.contains(h) && !s.report_predates(**h, seq)).copied().collect()
            })
            .unwrap_or_default();
        for h in gone {
            self.remove_replica(h, server);
        }
        self.process_reports(server, seq, reports, out);
    }
}

impl Shared {
    /// Handles Register: records the server and its full chunk report, and
    /// answers a new session secret. An id held by another live address
    /// is refused (see `ServerRegistry::check_claim`).
    pub async fn register(self: &Arc<Self>, req: RegisterRequest) -> Result<RegisterResponse> {
        let info = req.server.ok_or_else(|| Error::InvalidArgument("register without server info".into()))?;
        check_server_info(&info)?;
        if !gfs_common::disks::valid_disk_id(&req.disk_id) {
            return Err(Error::InvalidArgument(format!(
                "disk id: at most {} printable ASCII characters",
                gfs_common::disks::MAX_DISK_ID_LEN
            )));
        }
        if crate::sid::Sid::admit(&info.id).is_none() {
            warn!(server = %quote(&info.id), "registration refused: too many distinct chunkserver ids");
            return Err(Error::Busy(format!(
                "this master has seen {} distinct chunkserver ids; restart it to accept new ones",
                crate::sid::MAX_SERVER_IDS
            )));
        }
        let id = info.id.clone();
        let mut out = ReportOutcome::default();
        let session = new_session();
        {
            let mut meta = self.meta();
            let dead_after = Duration::from_millis(self.cfg.dead_after_ms);
            let talking = Duration::from_millis(self.cfg.heartbeat_ms.saturating_mul(3));
            if let Err(e) = meta.servers.check_claim(&info, Instant::now(), dead_after, talking) {
                warn!(server = %id, address = %quote(&info.address), error = %e, "registration refused");
                return Err(e);
            }
            // A silent predecessor at this address (a pod recreated with an
            // empty volume) is dead now: its replicas stop counting and
            // repair starts, instead of after dead_after.
            let retired = meta.servers.retire_at(&info.address, &id);
            for (old, chunks) in &retired {
                warn!(server = %old, successor = %id, chunks = chunks.len(), "chunkserver replaced at its address: declared dead");
            }
            meta.drop_replicas_of(retired);
            let seq = req.report_seq;
            let old: Vec<u64> = meta.servers.get(&id).map(|s| s.chunks.iter().copied().collect()).unwrap_or_default();
            let (recent, old): (Vec<u64>, Vec<u64>) =
                old.into_iter().partition(|h| meta.servers.get(&id).is_some_and(|s| s.report_predates(*h, seq)));
            for h in old {
                meta.remove_replica(h, &id);
            }
            let entry = meta.servers.register(info.clone(), req.capacity_bytes, req.used_bytes, Instant::now());
            entry.session = session.clone();
            entry.disk_id = req.disk_id.clone();
            meta.servers.note_disk(&id, req.capacity_bytes, req.used_bytes, req.free_bytes, req.full);
            // Replicas granted after the report was built stay counted.
            for h in recent {
                meta.add_replica(h, &id);
            }
            meta.process_reports(&id, seq, &req.chunks, &mut out);
            if let Some(s) = meta.servers.get_mut(&id) {
                s.prune_acks(seq);
            }
        }
        info!(server = %id, address = %info.address, zone = %info.zone, chunks = req.chunks.len(), "chunkserver registered");
        self.adopt(&id, &out.adopt).await?;
        Ok(RegisterResponse {
            heartbeat_ms: self.cfg.heartbeat_ms,
            epoch: self.epoch(),
            delete_chunks: out.delete,
            stale_chunks: out.stale,
            token_keys: self.meta().token_keys.values().cloned().collect(),
            session,
        })
    }

    /// Handles Heartbeat: stats, chunk changes, lease extensions, deletes.
    pub async fn heartbeat(self: &Arc<Self>, req: HeartbeatRequest) -> Result<HeartbeatResponse> {
        let id = req.server_id.as_str();
        let mut out = ReportOutcome::default();
        let mut resp = HeartbeatResponse { epoch: self.epoch(), ..Default::default() };
        {
            let mut meta = self.meta();
            resp.token_keys = meta.token_keys.values().cloned().collect();
            let now = Instant::now();
            if !meta.servers.session_ok(id, &req.session) {
                // Unknown, dead, or not this registration's secret: nothing
                // in the heartbeat is applied. A known live server with a
                // wrong secret is someone else speaking for it (or a reply
                // to an older registration).
                if meta.servers.is_alive(id) {
                    warn!(server = %quote(id), "heartbeat with a wrong session; told to re-register");
                }
                resp.reregister = true;
                return Ok(resp);
            }
            let Some(s) = meta.servers.get_mut(id) else { return Ok(resp) };
            s.load = req.load;
            s.last_heartbeat = now;
            resp.delete_chunks = std::mem::take(&mut s.pending_delete).into_iter().collect();
            meta.servers.note_disk(id, req.capacity_bytes, req.used_bytes, req.free_bytes, req.full);
            let seq = req.report_seq;
            if req.is_full_report {
                meta.replace_reports(id, seq, &req.full_report, &mut out);
            }
            meta.process_reports(id, seq, &req.changed, &mut out);
            if let Some(s) = meta.servers.get_mut(id) {
                s.prune_acks(seq);
            }
            resp.extended = self.extend_leases(&mut meta, id, &req.lease_extensions, now);
        }
        self.adopt(id, &out.adopt).await?;
        resp.delete_chunks.extend(out.delete);
        resp.stale_chunks = out.stale;
        Ok(resp)
    }

    /// Requires the secret of a live server's registration (see
    /// `HeartbeatRequest.session`) from a call that speaks for `id`.
    pub fn check_session(&self, id: &str, session: &str) -> Result<()> {
        if self.meta().servers.session_ok(id, session) {
            return Ok(());
        }
        Err(Error::Unauthenticated(format!(
            "chunkserver {} is not registered with this session; only the server itself may speak for it",
            quote(id)
        )))
    }

    fn extend_leases(&self, meta: &mut Meta, id: &str, handles: &[u64], now: Instant) -> Vec<LeaseExtension> {
        let dur = Duration::from_millis(self.cfg.lease_ms);
        let mut out = Vec::new();
        for &h in handles {
            let Some(c) = meta.chunks.get_mut(h) else { continue };
            let version = c.version;
            if let Some(l) = c.lease.as_mut()
                && l.primary == id
                && l.version == version
                && l.is_valid(now)
            {
                l.extend(now, dur);
                out.push(LeaseExtension { handle: h, version, lease_ms: self.cfg.lease_ms });
            }
        }
        out
    }

    /// Adopts versions reported above the master's (the master crashed
    /// after logging a bump it never answered): logs them and makes the
    /// reporting server the only up-to-date replica.
    async fn adopt(self: &Arc<Self>, server: &str, list: &[(u64, u64, u64)]) -> Result<()> {
        for &(handle, version, length) in list {
            let _c = self.chunk_lock(handle).lock().await;
            let needed =
                self.meta().chunks.get(handle).is_some_and(|c| c.version < version && c.bumping_from.is_none());
            if !needed {
                continue;
            }
            self.commit(vec![Op::SetVersion(SetVersionOp { handle, version })]).await?;
            let mut meta = self.meta();
            let Some(c) = meta.chunks.get_mut(handle) else { continue };
            warn!(chunk = handle, version, server, "adopted a chunk version above the master's");
            c.length = c.length.max(length.min(c.chunk_size));
            c.lease = None;
            let others: Vec<String> = c.replicas.iter().filter(|s| *s != server).map(str::to_string).collect();
            for s in others {
                meta.remove_replica(handle, &s);
            }
            meta.add_replica(handle, server);
        }
        Ok(())
    }
}

/// Longest chunkserver id, address and zone accepted.
const MAX_SERVER_FIELD: usize = 256;

/// Refuses server info that is empty, too long or has control characters
/// (it shows up in logs, status output and metric labels).
fn check_server_info(info: &ServerInfo) -> Result<()> {
    for (what, v) in [("id", &info.id), ("address", &info.address), ("zone", &info.zone)] {
        if (v.is_empty() && what != "zone") || v.len() > MAX_SERVER_FIELD || v.chars().any(is_forbidden_char) {
            return Err(Error::InvalidArgument(format!(
                "server {what} {:?} must be 1 to {MAX_SERVER_FIELD} bytes without control characters",
                quote(v)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_proto::{AddChunkOp, CreateOp};

    fn meta_with_chunk() -> Meta {
        let mut m = Meta::new();
        m.apply(&Op::Create(CreateOp { path: "/f".into(), replication: 3, chunk_size: 100, ..Default::default() }), 1)
            .unwrap();
        m.apply(&Op::AddChunk(AddChunkOp { path: "/f".into(), index: 0, handle: 1, version: 3 }), 1).unwrap();
        let info = ServerInfo { id: "s".into(), address: "a:1".into(), zone: "z".into() };
        m.servers.register(info, 1000, 0, Instant::now());
        m
    }

    fn rep(handle: u64, version: u64, length: u64) -> ChunkReport {
        ChunkReport { handle, version, length }
    }

    #[tokio::test]
    async fn report_classification() {
        let mut m = meta_with_chunk();
        let mut out = ReportOutcome::default();
        m.process_reports("s", 0, &[rep(1, 3, 500), rep(9, 1, 0)], &mut out);
        assert_eq!(out.delete, vec![9]);
        assert!(m.chunks.get(1).unwrap().replicas.contains("s"));
        assert_eq!(m.chunks.get(1).unwrap().length, 100, "length is capped at the chunk size");
        let mut out = ReportOutcome::default();
        m.process_reports("s", 0, &[rep(1, 2, 0)], &mut out);
        assert_eq!(out.stale, vec![1]);
        assert!(m.chunks.get(1).unwrap().replicas.is_empty());
        let mut out = ReportOutcome::default();
        m.process_reports("s", 0, &[rep(1, 5, 0)], &mut out);
        assert_eq!(out.adopt, vec![(1, 5, 0)]);
        m.process_reports("s", 0, &[rep(1, 3, 0)], &mut out);
        let mut out = ReportOutcome::default();
        m.replace_reports("s", 0, &[], &mut out);
        assert!(m.chunks.get(1).unwrap().replicas.is_empty());
        assert!(m.servers.get("s").unwrap().chunks.is_empty());
    }

    #[tokio::test]
    async fn a_report_that_changes_nothing_is_no_change_for_shadow_pulls() {
        let mut m = meta_with_chunk();
        let mut out = ReportOutcome::default();
        m.replace_reports("s", 0, &[rep(1, 3, 50)], &mut out);
        let last = |m: &Meta| m.chunks.changed_after(0).last().map(|(seq, _, _)| seq);
        let seq = last(&m);
        // The periodic full report repeats it: nothing changed.
        m.replace_reports("s", 1, &[rep(1, 3, 50)], &mut out);
        m.replace_reports("s", 2, &[rep(1, 3, 20)], &mut out);
        assert_eq!(last(&m), seq);
        // A longer length is a change.
        m.replace_reports("s", 3, &[rep(1, 3, 60)], &mut out);
        assert!(last(&m) > seq);
        assert_eq!(m.chunks.get(1).unwrap().length, 60);
    }

    #[tokio::test]
    async fn reports_older_than_an_acknowledged_grant_are_ignored() {
        let mut m = meta_with_chunk();
        let mut out = ReportOutcome::default();
        m.process_reports("s", 1, &[rep(1, 3, 0)], &mut out);
        assert!(m.chunks.get(1).unwrap().replicas.contains("s"));
        // The server acknowledged a bump to version 4 at its sequence 10.
        m.chunks.raise_version(1, 4);
        m.servers.get_mut("s").unwrap().note_ack(1, 10);
        // A heartbeat built at sequence 5 still says version 3, and a full
        // report built then lacks nothing the master must drop.
        m.process_reports("s", 5, &[rep(1, 3, 0)], &mut out);
        m.replace_reports("s", 5, &[], &mut out);
        assert!(out.stale.is_empty(), "{out:?}");
        assert!(m.chunks.get(1).unwrap().replicas.contains("s"));
        // A report built after the grant that still says 3 is really stale.
        m.process_reports("s", 11, &[rep(1, 3, 0)], &mut out);
        assert_eq!(out.stale, vec![1]);
        assert!(!m.chunks.get(1).unwrap().replicas.contains("s"));
        m.servers.get_mut("s").unwrap().prune_acks(11);
        assert!(m.servers.get("s").unwrap().acks.is_empty());
    }
}
