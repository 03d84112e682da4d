//! Corruption reports and their verification.
//!
//! A chunkserver whose read or scrub hits a checksum mismatch in its own
//! replica reports it (`ReportCorrupt`). No report is believed by itself:
//! - only the holder may report its replica: the report carries the
//!   session secret of the holder's registration;
//! - the master then asks the holder to re-read the whole replica through
//!   the checksummed path (`VerifyChunk`: paced, one per chunk at a time,
//!   at most [`MAX_VERIFICATIONS`] cluster-wide, with a deadline scaled to
//!   the chunk length), and drops the replica only when the holder
//!   confirms a bad block;
//! - a confirmed replica is dropped only while its chunk keeps another live
//!   replica that is not confirmed corrupt. Otherwise it is kept and
//!   counted (`ClusterStatus.corrupt_replicas_kept`, log, metric): its
//!   other blocks may be the only copy of their data. It is dropped later,
//!   once a good replica is back (`Meta::drop_recovered_corrupt`).
//!
//! A report for a chunk already being verified, or beyond the cap, is
//! answered `Busy`: the chunkserver keeps it and sends it again at its next
//! heartbeat tick, which paces reports.

use std::sync::Arc;
use std::time::Duration;

use gfs_common::{Error, Result};
use gfs_proto::{ReportCorruptRequest, VerifyChunkRequest, VerifyChunkResponse};
use tracing::{error, info, warn};

use crate::heal::drop_replica;
use crate::state::{Meta, Shared};

/// Verifications in flight at once, cluster-wide.
pub const MAX_VERIFICATIONS: usize = 4;
/// Extra tries of a verification whose holder was busy or unreachable.
const VERIFY_RETRIES: u32 = 3;
/// Pause between those tries.
const VERIFY_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What became of a confirmed corrupt replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Dropped: another live replica that is not corrupt remains.
    Dropped,
    /// Kept: it is among the last copies of the chunk.
    Kept,
}

impl Meta {
    /// Records that `server`'s replica of `handle` is corrupt (its holder
    /// confirmed it) and drops it unless that would leave the chunk without
    /// a live replica that is not corrupt.
    pub fn confirm_corrupt(&mut self, handle: u64, server: &str) -> Option<Confirmed> {
        let c = self.chunks.get_mut_if(handle, |c| c.replicas.contains(server))?;
        c.corrupt.insert(server);
        let c = self.chunks.get(handle)?;
        let good = c.replicas.iter().any(|s| !c.corrupt.contains(s) && self.servers.is_alive(s));
        if good {
            drop_replica(self, handle, server);
            return Some(Confirmed::Dropped);
        }
        Some(Confirmed::Kept)
    }

    /// Replicas confirmed corrupt and kept (last copies).
    /// Exact for the leader's repair index as of its last step; counted
    /// over the chunks the index knows to have corrupt replicas.
    pub fn corrupt_kept(&self) -> u64 {
        let known = self.heal.index.corrupt().filter_map(|h| self.chunks.get(h));
        known.map(|c| c.corrupt.iter().filter(|s| c.replicas.contains(s)).count() as u64).sum()
    }

    /// Drops kept corrupt replicas of chunks that have a live replica that
    /// is not corrupt again (a server came back, a clone finished).
    pub fn drop_recovered_corrupt(&mut self) {
        let mut drop = vec![];
        for h in self.heal.index.corrupt() {
            let Some(c) = self.chunks.get(h) else { continue };
            if c.replicas.iter().any(|s| !c.corrupt.contains(s) && self.servers.is_alive(s)) {
                drop.extend(c.corrupt.iter().map(|s| (h, s)));
            }
        }
        for (h, s) in drop {
            info!(chunk = h, server = %s, "dropping a corrupt replica: the chunk has a good replica again");
            drop_replica(self, h, s);
        }
    }
}

impl Shared {
    /// Handles ReportCorrupt: checks that the caller is the holder, then
    /// starts a verification by the holder (see the module docs). Returns
    /// once the verification is started, not done.
    pub async fn report_corrupt(self: &Arc<Self>, req: ReportCorruptRequest) -> Result<()> {
        let res = self.start_verification(&req);
        if let Err(e) = &res
            && !matches!(e, Error::Busy(_))
        {
            self.metrics.corrupt_report("refused");
        }
        res
    }

    fn start_verification(self: &Arc<Self>, req: &ReportCorruptRequest) -> Result<()> {
        self.check_session(&req.server_id, &req.session)?;
        let (handle, server) = (req.handle, req.server_id.clone());
        let (addr, version, length) = {
            let mut meta = self.meta();
            let c = meta.chunks.get(handle).ok_or(Error::ChunkNotFound { handle })?;
            if !c.replicas.contains(&server) {
                return Err(Error::InvalidArgument(format!(
                    "chunk {handle:#x}: {server} holds no current replica of it"
                )));
            }
            if c.corrupt.contains(&server) {
                return Ok(()); // Confirmed already; kept as a last copy.
            }
            let (version, length) = (c.version, c.length);
            if meta.heal.verifying.contains(&handle) || meta.heal.verifying.len() >= MAX_VERIFICATIONS {
                return Err(Error::Busy(format!("chunk {handle:#x}: verifications in progress; report again later")));
            }
            let addr = meta.servers.live_info(&server).map(|i| i.address);
            let addr = addr.ok_or_else(|| Error::Unavailable(format!("{server} is not live")))?;
            meta.heal.verifying.insert(handle);
            (addr, version, length)
        };
        warn!(chunk = handle, server = %server, "replica reported corrupt; asking its holder to verify it");
        let me = self.clone();
        let epoch = self.epoch();
        tokio::spawn(async move { me.verify_reported(handle, server, addr, version, length, epoch).await });
        Ok(())
    }

    /// Asks the holder to verify its replica, then applies the answer.
    async fn verify_reported(
        self: Arc<Self>,
        handle: u64,
        server: String,
        addr: String,
        version: u64,
        length: u64,
        epoch: u64,
    ) {
        let req = VerifyChunkRequest { handle, version, bytes_per_sec: self.cfg.heal.clone_bytes_per_sec };
        let deadline = crate::heal::clone_deadline(&self.cfg, length);
        let mut res = self.rpc.verify_chunk(&addr, req, deadline).await;
        for _ in 0..VERIFY_RETRIES {
            if !matches!(res, Err(Error::Busy(_) | Error::Unavailable(_))) {
                break;
            }
            tokio::time::sleep(VERIFY_RETRY_PAUSE).await;
            res = self.rpc.verify_chunk(&addr, req, deadline).await;
        }
        // A new leadership started over with fresh soft state.
        if self.epoch() != epoch {
            return;
        }
        let mut meta = self.meta();
        meta.heal.verifying.remove(&handle);
        let outcome = apply_verification(&mut meta, handle, &server, version, res);
        self.metrics.corrupt_report(outcome);
    }
}

/// Applies a holder's verification answer; returns the outcome label.
fn apply_verification(
    meta: &mut Meta,
    handle: u64,
    server: &str,
    version: u64,
    res: Result<VerifyChunkResponse>,
) -> &'static str {
    let current = meta.chunks.get(handle).is_some_and(|c| c.version == version);
    match res {
        Ok(r) if r.ok => {
            info!(chunk = handle, server, length = r.length, "replica reported corrupt verified intact; kept");
            "intact"
        }
        Ok(_) if !current => "changed",
        Ok(r) => match meta.confirm_corrupt(handle, server) {
            Some(Confirmed::Dropped) => {
                warn!(chunk = handle, server, block = r.corrupt_block, detail = %r.detail, "corrupt replica confirmed; dropped");
                "dropped"
            }
            Some(Confirmed::Kept) => {
                error!(
                    chunk = handle,
                    server,
                    block = r.corrupt_block,
                    detail = %r.detail,
                    "corrupt replica confirmed but kept: no other good replica of the chunk"
                );
                "kept"
            }
            None => "changed",
        },
        Err(e) => {
            warn!(chunk = handle, server, error = %e, "replica reported corrupt could not be verified; kept");
            "failed"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_proto::log_record::Op;
    use gfs_proto::{AddChunkOp, CreateOp, ServerInfo};
    use tokio::time::Instant;

    fn meta() -> Meta {
        let mut m = Meta::new();
        m.apply(&Op::Create(CreateOp { path: "/f".into(), replication: 3, chunk_size: 100, ..Default::default() }), 1)
            .unwrap();
        m.apply(&Op::AddChunk(AddChunkOp { path: "/f".into(), index: 0, handle: 1, version: 1 }), 1).unwrap();
        for s in ["a", "b", "c"] {
            let info = ServerInfo { id: s.into(), address: format!("{s}:1"), zone: "z".into() };
            m.servers.register(info, 1000, 0, Instant::now());
            m.add_replica(1, s);
        }
        m
    }

    fn corrupt() -> Result<VerifyChunkResponse> {
        Ok(VerifyChunkResponse { ok: false, corrupt_block: 3, length: 100, detail: "crc".into() })
    }

    #[tokio::test]
    async fn only_confirmed_replicas_go_and_never_the_last_good_one() {
        let mut m = meta();
        let intact = Ok(VerifyChunkResponse { ok: true, length: 100, ..Default::default() });
        assert_eq!(apply_verification(&mut m, 1, "a", 1, intact), "intact");
        let unreachable = Err(Error::Unavailable("down".into()));
        assert_eq!(apply_verification(&mut m, 1, "a", 1, unreachable), "failed");
        assert_eq!(apply_verification(&mut m, 1, "a", 0, corrupt()), "changed", "an older version's answer");
        assert_eq!(m.chunks.get(1).unwrap().replicas.len(), 3);
        assert_eq!(apply_verification(&mut m, 1, "a", 1, corrupt()), "dropped");
        assert_eq!(apply_verification(&mut m, 1, "b", 1, corrupt()), "dropped");
        assert_eq!(apply_verification(&mut m, 1, "c", 1, corrupt()), "kept");
        assert_eq!(m.chunks.get(1).unwrap().replicas.iter().collect::<Vec<_>>(), ["c"]);
        m.refresh_index_now(&crate::config::Config::default());
        assert_eq!(m.corrupt_kept(), 1);
        assert!(m.servers.get("a").unwrap().pending_delete.contains(&1));
        assert!(!m.servers.get("c").unwrap().pending_delete.contains(&1));
        // A good replica back (a server returned): the corrupt one goes.
        m.add_replica(1, "b");
        m.refresh_index_now(&crate::config::Config::default());
        m.drop_recovered_corrupt();
        assert_eq!(m.chunks.get(1).unwrap().replicas.iter().collect::<Vec<_>>(), ["b"]);
        m.refresh_index_now(&crate::config::Config::default());
        assert_eq!(m.corrupt_kept(), 0);
    }

    #[tokio::test]
    async fn a_dead_good_replica_does_not_count() {
        let mut m = meta();
        m.servers.mark_lost("b");
        m.servers.mark_lost("c");
        assert_eq!(apply_verification(&mut m, 1, "a", 1, corrupt()), "kept");
    }
}
