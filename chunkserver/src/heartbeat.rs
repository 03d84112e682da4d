//! Registration and heartbeats with the master, plus corruption reports.
//!
//! Everything goes to the leader of the master group (`Rpc` follows it).
//! When the leader changes, the new one usually does not know this server
//! and answers `reregister`, so the loop registers again with a full chunk
//! report. If it does know this server (it led before), the first
//! heartbeat to it carries a full report anyway, since the deltas in
//! between went to another master. A higher epoch in a reply (the new
//! leader's term) is adopted; older epochs are then fenced (`fence.rs`:
//! requests never raise it themselves).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gfs_common::Result;
use gfs_common::shutdown::CancellationToken;
use gfs_proto::*;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use crate::service::Shared;
use crate::space::DiskSpace;

/// Most corruption reports kept while the master is unreachable.
const MAX_PENDING_REPORTS: usize = 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The background task that keeps this server known to the master.
pub(crate) struct Heartbeat {
    pub shared: Arc<Shared>,
    pub server: ServerInfo,
    pub data_dir: PathBuf,
    pub capacity_override: Option<u64>,
    /// Free bytes below which this server reports itself full.
    pub disk_reserve: u64,
    pub interval: Duration,
    pub full_report_every: u32,
    pub corrupt_rx: mpsc::Receiver<u64>,
    /// The master that answered last (registration or heartbeat).
    pub master: Option<String>,
    /// Secret of the current registration: heartbeats and corruption
    /// reports carry it so the master knows they come from this server.
    pub session: String,
}

/// Disk figures of one report.
struct Disk {
    capacity: u64,
    used: u64,
    free: Option<u64>,
    full: bool,
}

/// Logs one warning per streak of master failures, not one per attempt.
#[derive(Default)]
struct Streak {
    failing: bool,
}

impl Streak {
    fn failed(&mut self, what: &'static str, e: &gfs_common::Error) {
        if !self.failing {
            tracing::warn!(rpc = what, error = %e, "master unreachable, retrying");
        } else {
            tracing::debug!(rpc = what, error = %e, "master still unreachable");
        }
        self.failing = true;
    }

    fn ok(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("master reachable again");
        }
    }
}

fn ticker(period: Duration) -> Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

impl Heartbeat {
    /// Registers, then heartbeats until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut streak = Streak::default();
        let mut registered = false;
        let mut backoff = Duration::from_millis(100);
        let mut beats: u32 = 0;
        let mut force_full = false;
        let mut pending: Vec<u64> = Vec::new();
        let mut tick = ticker(self.interval);
        loop {
            if !registered {
                match self.register().await {
                    Ok(()) => {
                        streak.ok();
                        registered = true;
                        backoff = Duration::from_millis(100);
                        beats = 0;
                        tick = ticker(self.interval);
                        tick.reset();
                    }
                    Err(e) => {
                        streak.failed("register", &e);
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                Some(h) = self.corrupt_rx.recv() => {
                    if pending.len() < MAX_PENDING_REPORTS {
                        pending.push(h);
                    }
                    self.flush_reports(&mut pending).await;
                    continue;
                }
            }
            beats = beats.wrapping_add(1);
            // About to talk to another master than last time: it has not
            // seen our recent changes.
            let switching = self.master.as_deref() != Some(self.shared.rpc.masters().current().as_str());
            let full = force_full || switching || beats.is_multiple_of(self.full_report_every.max(1));
            match self.beat(full).await {
                Ok((resp, from)) => {
                    streak.ok();
                    // The reply came from another master than the one the
                    // report was meant for (followed a leader hint): the
                    // next heartbeat carries a full report.
                    force_full = !full && self.master.as_deref() != Some(from.as_str());
                    if self.master.as_deref() != Some(from.as_str()) {
                        tracing::info!(
                            from = self.master.as_deref().unwrap_or("-"),
                            to = %from,
                            epoch = resp.epoch,
                            reregister = resp.reregister,
                            "leader master changed"
                        );
                        self.master = Some(from);
                    }
                    registered = !resp.reregister;
                    self.shared.set_registered(registered);
                    self.shared.metrics.chunks.set(self.shared.store.published_count() as i64);
                    self.process(resp).await;
                }
                Err(e) => {
                    streak.failed("heartbeat", &e);
                    force_full = true;
                }
            }
            self.flush_reports(&mut pending).await;
        }
    }

    /// The disk figures a report carries: capacity, free bytes (None if
    /// statvfs failed) and whether free space is below the reserve. With
    /// a capacity override, free space is also bounded by what is left of
    /// that capacity.
    fn disk(&self) -> Disk {
        let space = match DiskSpace::of(&self.data_dir) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the data dir's free space");
                None
            }
        };
        let used = self.shared.store.used_bytes();
        let capacity = self.capacity_override.or(space.map(|s| s.capacity)).unwrap_or(0);
        let free = space.map(|s| match self.capacity_override {
            Some(c) => s.free.min(c.saturating_sub(used)),
            None => s.free,
        });
        let full = free.is_some_and(|f| DiskSpace { capacity, free: f }.is_full(self.disk_reserve));
        self.shared.metrics.capacity_bytes.set(capacity as i64);
        if let Some(f) = free {
            self.shared.metrics.free_bytes.set(f as i64);
        }
        Disk { capacity, used, free, full }
    }

    /// The data dir's file system id for the master to count shared disks
    /// once; none with a capacity override (a quota of this server's own).
    fn disk_id(&self) -> String {
        match self.capacity_override {
            Some(_) => String::new(),
            None => gfs_common::disks::disk_id(&self.data_dir).unwrap_or_default(),
        }
    }

    async fn register(&mut self) -> Result<()> {
        // Changes made before the full report are included in it.
        let report_seq = self.shared.store.report_seq();
        self.shared.store.take_changed();
        let disk = self.disk();
        let req = RegisterRequest {
            report_seq,
            server: Some(self.server.clone()),
            capacity_bytes: disk.capacity,
            used_bytes: disk.used,
            chunks: self.shared.store.list(),
            free_bytes: disk.free,
            full: disk.full,
            disk_id: self.disk_id(),
        };
        let chunks = req.chunks.len();
        let (resp, master) = self.shared.rpc.register(req).await?;
        self.shared.epoch.observe(resp.epoch);
        self.shared.tokens.set(&resp.token_keys);
        self.session = resp.session;
        if resp.heartbeat_ms > 0 {
            self.interval = Duration::from_millis(resp.heartbeat_ms);
        }
        tracing::info!(server_id = %self.server.id, %master, epoch = resp.epoch, chunks, "registered with master");
        self.master = Some(master);
        self.shared.set_registered(true);
        let mut doomed = resp.delete_chunks;
        doomed.extend(resp.stale_chunks);
        self.shared.delete_chunks(&doomed).await;
        Ok(())
    }

    async fn beat(&self, full: bool) -> Result<(HeartbeatResponse, String)> {
        let store = &self.shared.store;
        let report_seq = store.report_seq();
        let disk = self.disk();
        if disk.full != self.shared.full.swap(disk.full, Ordering::Relaxed) {
            tracing::warn!(full = disk.full, free = disk.free, reserve = self.disk_reserve, "disk full state changed");
        }
        let req = HeartbeatRequest {
            report_seq,
            server_id: self.server.id.clone(),
            capacity_bytes: disk.capacity,
            used_bytes: disk.used,
            free_bytes: disk.free,
            full: disk.full,
            load: self.shared.load.load(Ordering::Relaxed),
            changed: store.take_changed(),
            full_report: if full { store.list() } else { Vec::new() },
            is_full_report: full,
            lease_extensions: self.shared.leases.wanting_extension(),
            session: self.session.clone(),
        };
        self.shared.rpc.heartbeat(req).await
    }

    async fn process(&self, resp: HeartbeatResponse) {
        self.shared.epoch.observe(resp.epoch);
        self.shared.tokens.set(&resp.token_keys);
        for ext in &resp.extended {
            self.shared.leases.extend(ext.handle, ext.version, ext.lease_ms);
        }
        let mut doomed = resp.delete_chunks;
        doomed.extend(resp.stale_chunks);
        if !doomed.is_empty() {
            tracing::info!(count = doomed.len(), "master asked to delete replicas");
            self.shared.delete_chunks(&doomed).await;
        }
    }

    /// Sends queued corruption reports; keeps the ones that failed.
    async fn flush_reports(&mut self, pending: &mut Vec<u64>) {
        while let Ok(h) = self.corrupt_rx.try_recv() {
            if pending.len() < MAX_PENDING_REPORTS {
                pending.push(h);
            }
        }
        pending.sort_unstable();
        pending.dedup();
        while let Some(&handle) = pending.first() {
            let req = ReportCorruptRequest { handle, server_id: self.server.id.clone(), session: self.session.clone() };
            match self.shared.rpc.report_corrupt(req).await {
                Ok(()) => {
                    tracing::info!(handle, "reported corrupt replica to master");
                    pending.remove(0);
                }
                // Busy (a verification of the chunk is running), no leader,
                // or not registered yet: the report waits for the next tick.
                Err(e) if e.is_retryable() || matches!(e, gfs_common::Error::Unauthenticated(_)) => {
                    tracing::warn!(handle, error = %e, "cannot report corrupt replica yet");
                    return;
                }
                Err(e) => {
                    tracing::warn!(handle, error = %e, "master refused the corruption report; dropping it");
                    pending.remove(0);
                }
            }
        }
    }
}
