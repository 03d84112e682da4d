//! Deletion and garbage collection.
//!
//! `Delete` renames the entry to a hidden, timestamped name (see
//! `hidden.rs`); the [`GcWorker`] deletes hidden entries for good once
//! `gc_delay_ms` has passed, which frees their chunks: the servers holding
//! them are told at their next heartbeat. Chunks a server reports that the
//! master does not know (orphans) are deleted through the same exchange.

use std::sync::Arc;
use std::time::Duration;

use gfs_common::Result;
use gfs_common::shutdown::CancellationToken;
use gfs_proto::log_record::Op;
use gfs_proto::{CallId, DeleteOp, RenameOp};
use tracing::{info, warn};

use crate::hidden::{deleted_at, hidden_path, is_hidden_name, is_within_hidden};
use crate::locks::for_mutation;
use crate::state::Shared;

impl Shared {
    /// Hides `path` (a deleted entry), or removes it at once when it is
    /// already hidden. A retry of a client `call` that already took effect
    /// gets its outcome (`crate::retry`).
    pub async fn delete_path(self: &Arc<Self>, path: &str, recursive: bool, call: Option<&CallId>) -> Result<()> {
        if is_within_hidden(path) {
            return self.purge(path, call).await.map(|_| ());
        }
        let mut ms = gfs_common::now_ms();
        let dst = loop {
            let d = hidden_path(path, ms);
            if self.meta().ns.get(&d).is_none() {
                break d;
            }
            ms += 1;
        };
        let (mut reads, _) = for_mutation(path);
        reads.extend(for_mutation(&dst).0);
        let _g = self.locks.lock(&reads, &[path.to_string(), dst.clone()]).await;
        if let Some(done) = self.meta().retries.outcome(call) {
            return done;
        }
        self.meta().ns.check_delete(path, recursive)?;
        self.meta().ns.check_rename(path, &dst)?;
        self.commit_call(call, vec![Op::Rename(RenameOp { src: path.to_string(), dst: dst.clone() })]).await?;
        info!(path, hidden = %dst, "deleted; hidden until garbage collection");
        Ok(())
    }

    /// Deletes `path` for good. Returns false when it no longer exists.
    async fn purge(self: &Arc<Self>, path: &str, call: Option<&CallId>) -> Result<bool> {
        let (r, w) = for_mutation(path);
        let _g = self.locks.lock(&r, &w).await;
        if let Some(done) = self.meta().retries.outcome(call) {
            return done.map(|()| true);
        }
        if self.meta().ns.get(path).is_none() {
            return Ok(false);
        }
        self.meta().ns.check_delete(path, true)?;
        self.commit_call(call, vec![Op::Delete(DeleteOp { path: path.to_string() })]).await?;
        Ok(true)
    }

    /// Hidden entries deleted at least `delay` ago.
    fn expired(&self, now_ms: i64, delay: Duration) -> Vec<String> {
        let meta = self.meta();
        meta.ns
            .iter()
            .map(|(p, _)| p)
            .filter(|p| is_hidden_name(p) && deleted_at(p).is_some_and(|t| now_ms - t >= delay.as_millis() as i64))
            .cloned()
            .collect()
    }
}

/// Background task that reclaims expired hidden entries.
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

    /// Deletes every expired hidden entry; returns how many.
    pub async fn step(&self) -> Result<usize> {
        if !self.shared.is_leader() {
            return Ok(0);
        }
        let delay = Duration::from_millis(self.shared.cfg.heal.gc_delay_ms);
        let mut n = 0;
        for path in self.shared.expired(gfs_common::now_ms(), delay) {
            if self.shared.purge(&path, None).await? {
                info!(path = %path, "garbage collected deleted entry");
                n += 1;
            }
        }
        Ok(n)
    }
}
