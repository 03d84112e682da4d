//! The scrubber: verifies the checksums of idle chunks at a bounded rate
//! and reports corrupt replicas to the master, which replaces them.

use std::sync::Arc;
use std::time::Duration;

use gfs_common::shutdown::CancellationToken;
use gfs_common::throttle::Throttle;
use gfs_common::{Error, MAX_IO_SIZE};

use crate::service::Shared;

/// Scrubber settings.
#[derive(Debug, Clone, Copy)]
pub struct ScrubConfig {
    /// Pause between two chunks.
    pub interval: Duration,
    /// Only chunks not mutated for this long are checked.
    pub idle: Duration,
    /// Read rate, bytes/s (0 = unlimited).
    pub bytes_per_sec: u64,
}

/// Background task that walks the chunks in handle order, one per step.
pub(crate) struct Scrubber {
    pub shared: Arc<Shared>,
    pub cfg: ScrubConfig,
    /// Next handle to look at.
    next: u64,
}

impl Scrubber {
    pub fn new(shared: Arc<Shared>, cfg: ScrubConfig) -> Self {
        Scrubber { shared, cfg, next: 0 }
    }

    /// Verifies one chunk per interval until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.interval) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.step() => {}
            }
        }
    }

    /// Checks the next idle, published chunk; returns its handle if one was
    /// checked.
    pub async fn step(&mut self) -> Option<u64> {
        let chunks = self.shared.store.all();
        let eligible = |c: &&Arc<crate::store::ChunkState>| c.is_published() && c.is_idle(self.cfg.idle);
        let pick = chunks
            .iter()
            .filter(eligible)
            .find(|c| c.handle() >= self.next)
            .or_else(|| chunks.iter().find(eligible))?
            .clone();
        self.next = pick.handle() + 1;
        let (handle, version) = (pick.handle(), pick.version());
        let mut throttle = Throttle::new(self.cfg.bytes_per_sec);
        let mut off = 0;
        loop {
            match self.shared.store.read(handle, version, off, MAX_IO_SIZE).await {
                Ok((data, len)) => {
                    off += data.len() as u64;
                    throttle.consume(data.len() as u64).await;
                    if data.is_empty() || off >= len {
                        break;
                    }
                }
                Err(e @ Error::Corrupt { .. }) => {
                    tracing::error!(handle, error = %e, "scrubber found a corrupt replica");
                    if self.shared.corrupt_tx.try_send(handle).is_err() {
                        tracing::warn!(handle, "corruption report queue full, report dropped");
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(handle, error = %e, "scrub read skipped");
                    break;
                }
            }
        }
        Some(handle)
    }
}
