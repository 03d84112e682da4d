//! Prometheus metrics of the operator (`gfs_operator_*`).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `Error::metric_label()`.
    pub error: String,
}

/// Label of the scale-decision counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabels {
    /// `up`, `down`, `drain_started`, `drain_finished`.
    pub decision: String,
}

/// Counters and histograms of the reconciler.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles that failed, by error kind.
    pub failures: Family<ErrorLabels, Counter>,
    /// Reconcile duration in seconds.
    pub duration: Histogram,
    /// Scale decisions, by kind.
    pub scale_decisions: Family<ScaleLabels, Counter>,
    /// Chunkservers declared lost to the master.
    pub marked_lost: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
            scale_decisions: Family::default(),
            marked_lost: Counter::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `gfs_operator` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("gfs_operator");
        r.register("reconciles", "Reconciles started", self.reconciles.clone());
        r.register("reconcile_failures", "Failed reconciles by error", self.failures.clone());
        r.register("reconcile_duration_seconds", "Reconcile duration", self.duration.clone());
        r.register("scale_decisions", "Scale decisions by kind", self.scale_decisions.clone());
        r.register("marked_lost", "Chunkservers declared lost", self.marked_lost.clone());
        self
    }

    /// Counts a reconcile and returns a guard that records its duration.
    pub fn count_and_measure(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer { start: Instant::now(), histogram: self.duration.clone() }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failure(&self, label: String) {
        self.failures.get_or_create(&ErrorLabels { error: label }).inc();
    }

    /// Counts a scale decision.
    pub fn scale_decision(&self, decision: &str) {
        self.scale_decisions.get_or_create(&ScaleLabels { decision: decision.into() }).inc();
    }
}

/// Records the reconcile duration when dropped.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
