//! Deletion and garbage collection.
//!
//! `Delete` renames the entry to a hidden, timestamped name (see
//! `hidden.rs`); the [`GcWorker`] deletes hidden entries for good once
//! `gc_delay_ms` has passed, which frees their chunks: the servers holding
//! them are told at their next heartbeat. Chunks a server reports that the
//! master does not know (orphans) are deleted through the same exchange.

use std::sync::Arc;
use std::time::Duration;

use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, Result};
use gfs_proto::log_record::Op;
use gfs_proto::{CallId, DeleteOp, RenameOp};
use tracing::{info, warn};

use crate::hidden::{hidden_path, is_within_hidden};
use crate::locks::for_mutation;
use crate::perm::Requester;
use crate::state::Shared;

impl Shared {
    /// Hides `path` (a deleted entry), or removes it at once when it is
    /// already hidden or `immediate` (a file that never was complete, such
    /// as a failed upload, has nothing worth keeping in the trash, and its
    /// chunks should free their space now). A retry of a client `call`
    /// that already took effect gets its outcome (`crate::retry`). `who`
    /// must be allowed the delete (`Namespace::allow_delete`); None for the
    /// master's own work.
    pub async fn delete_path(
        self: &Arc<Self>,
        path: &str,
        recursive: bool,
        immediate: bool,
        call: Option<&CallId>,
        who: Option<&Requester>,
    ) -> Result<()> {
        if is_within_hidden(path) {
            return self.purge(path, true, call, who).await.map(|_| ());
        }
        if immediate {
            return match self.purge(path, recursive, call, who).await? {
                true => {
                    info!(path, "deleted at once; chunks freed at the next heartbeats");
                    Ok(())
                }
                false => Err(Error::NotFound { path: path.to_string() }),
            };
        }
        let dst = self.free_hidden_name(path);
        let (mut reads, _) = for_mutation(path);
        reads.extend(for_mutation(&dst).0);
        let _g = self.locks.lock(&reads, &[path.to_string(), dst.clone()]).await;
        if let Some(done) = self.meta().retries.outcome(call) {
            return done;
        }
        {
            let meta = self.meta();
            if let Some(who) = who {
                meta.ns.allow_delete(who, path)?;
            }
            meta.ns.check_delete(path, recursive)?;
            meta.ns.check_rename(path, &dst)?;
        }
        self.commit_call(call, vec![Op::Rename(RenameOp { src: path.to_string(), dst: dst.clone() })]).await?;
        info!(path, hidden = %dst, "deleted; hidden until garbage collection");
        Ok(())
    }

    /// Renames file `src` to `dst`, replacing a file already at `dst` in
    /// the same logged batch: the old `dst` is hidden as by Delete (kept
    /// until garbage collection), then `src` takes its name. The batch
    /// applies as a whole, so a reader finds the old file or the new one
    /// at `dst`, never nothing. A directory is never replaced. `who` must
    /// be allowed the rename (`Namespace::allow_rename`).
    pub async fn rename_over(
        self: &Arc<Self>,
        src: &str,
        dst: &str,
        call: Option<&CallId>,
        who: Option<&Requester>,
    ) -> Result<()> {
        if src == dst {
            return Err(Error::InvalidArgument(format!("cannot replace {dst} with itself")));
        }
        let hidden = self.free_hidden_name(dst);
        let (mut reads, _) = for_mutation(src);
        reads.extend(for_mutation(dst).0);
        reads.extend(for_mutation(&hidden).0);
        let _g = self.locks.lock(&reads, &[src.to_string(), dst.to_string(), hidden.clone()]).await;
        if let Some(done) = self.meta().retries.outcome(call) {
            return done;
        }
        let ops = {
            let meta = self.meta();
            if let Some(who) = who {
                meta.ns.allow_rename(who, src, dst)?;
            }
            if meta.ns.lookup(src)?.is_dir() {
                return Err(Error::IsADirectory { path: src.to_string() });
            }
            match meta.ns.get(dst) {
                None => {
                    meta.ns.check_rename(src, dst)?;
                    vec![Op::Rename(RenameOp { src: src.to_string(), dst: dst.to_string() })]
                }
                Some(n) if n.is_dir() => return Err(Error::IsADirectory { path: dst.to_string() }),
                Some(_) => {
                    meta.ns.check_rename(dst, &hidden)?;
                    vec![
                        Op::Rename(RenameOp { src: dst.to_string(), dst: hidden.clone() }),
                        Op::Rename(RenameOp { src: src.to_string(), dst: dst.to_string() }),
                    ]
                }
            }
        };
        let replaced = ops.len() > 1;
        self.commit_call(call, ops).await?;
        info!(src, dst, replaced, "renamed over");
        Ok(())
    }

    /// A hidden name for deleting `path` now that no entry has yet.
    fn free_hidden_name(&self, path: &str) -> String {
        let mut ms = gfs_common::now_ms();
        loop {
            let d = hidden_path(path, ms);
            if self.meta().ns.get(&d).is_none() {
                return d;
            }
            ms += 1;
        }
    }

    /// Deletes `path` for good (a directory only with `recursive`).
    /// Returns false when it no longer exists.
    async fn purge(
        self: &Arc<Self>,
        path: &str,
        recursive: bool,
        call: Option<&CallId>,
        who: Option<&Requester>,
    ) -> Result<bool> {
        let (r, w) = for_mutation(path);
        let _g = self.locks.lock(&r, &w).await;
        if let Some(done) = self.meta().retries.outcome(call) {
            return done.map(|()| true);
        }
        {
            let meta = self.meta();
            if let Some(who) = who {
                meta.ns.allow_delete(who, path)?;
            }
            if meta.ns.get(path).is_none() {
                return Ok(false);
            }
            meta.ns.check_delete(path, recursive)?;
        }
        self.commit_call(call, vec![Op::Delete(DeleteOp { path: path.to_string() })]).await?;
        Ok(true)
    }

    /// Hidden entries deleted at least `delay` ago, oldest first, at most
    /// [`GC_BATCH`] (from the namespace's index: no walk of the tree).
    fn expired(&self, now_ms: i64, delay: Duration) -> Vec<String> {
        let cutoff = now_ms.saturating_sub(delay.as_millis() as i64);
        self.meta().ns.deleted_before(cutoff, GC_BATCH)
    }
}

/// Most entries one garbage collection step purges (the rest next step).
const GC_BATCH: usize = 1000;

/// Ended leases dropped per step at most (one lock hold).
pub const LEASES_PER_STEP: usize = 10_000;

/// Background task that reclaims expired hidden entries and ended leases.
pub struct GcWorker {
    shared: Arc<Shared>,
}

impl GcWorker {
    /// A worker over the master state.
    pub fn new(shared: Arc<Shared>) -> Self {
        GcWorker { shared }
    }

    /// Runs one collection per scan period until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let period = Duration::from_millis(self.shared.cfg.heal.scan_ms);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if let Err(e) = self.step().await {
                warn!(error = %e, "garbage collection step failed");
            }
        }
    }

    /// Drops ended leases (at most [`LEASES_PER_STEP`]), then deletes
    /// every expired hidden entry; returns how many entries.
    pub async fn step(&self) -> Result<usize> {
        if !self.shared.is_leader() {
            return Ok(0);
        }
        let grace = Duration::from_millis(self.shared.cfg.rpc_timeout_ms);
        self.shared.meta().chunks.drop_ended_leases(tokio::time::Instant::now(), grace, LEASES_PER_STEP);
        let delay = Duration::from_millis(self.shared.cfg.heal.gc_delay_ms);
        let mut n = 0;
        for path in self.shared.expired(gfs_common::now_ms(), delay) {
            // The master's own work: no user, no permission check.
            if self.shared.purge(&path, true, None, None).await? {
                info!(path = %path, "garbage collected deleted entry");
                n += 1;
            }
        }
        Ok(n)
    }
}
