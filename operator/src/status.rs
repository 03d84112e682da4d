//! Builds the GfsCluster status and its conditions from what the reconciler
//! observed. Pure, so unit tests check each condition.

use gfs_proto::ClusterStatusResponse;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{GfsCluster, GfsClusterStatus};
use crate::error::Fault;
use crate::render::{Component, selector_string};
use crate::storage::Resize;

/// Things the reconcile loop noticed on the way.
#[derive(Debug, Default)]
pub struct Notes {
    /// Operations in flight (drain, rollout, membership), for Progressing.
    pub progress: Vec<String>,
    /// Scale-down could not start a drain.
    pub drain_blocked: bool,
    /// Pods removed from lost nodes in this pass.
    pub lost_pods: Vec<String>,
    /// A certificate or Secret problem a person must fix: (reason, message).
    pub security: Option<(String, String)>,
    /// Why the master did not answer (a TLS failure says so here).
    pub master_error: Option<String>,
    /// Steps of this pass that failed (the others ran).
    pub faults: Vec<Fault>,
    /// PVCs growing to a new size, or refused it, per component.
    pub resize: Vec<Resize>,
}

/// Inputs of [`build`].
pub struct Observed<'a> {
    /// The cluster.
    pub gc: &'a GfsCluster,
    /// ClusterStatus of the master, if it answered.
    pub master: Option<&'a ClusterStatusResponse>,
    /// Address the operator talked to.
    pub leader: &'a str,
    /// Master StatefulSet after apply.
    pub master_sts: &'a StatefulSet,
    /// Chunkserver StatefulSet after apply.
    pub chunk_sts: &'a StatefulSet,
    /// Notes of this pass.
    pub notes: &'a Notes,
}

fn ready(s: &StatefulSet) -> i32 {
    s.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)
}

fn cond(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    gen_: Option<i64>,
    prev: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time unless the status flips.
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: gen_,
        last_transition_time: since,
    }
}

/// Bytes waiting for re-replication with a replica at risk: the master's
/// backlog without what planned drains owe (a scale-down's own drain must
/// never ask for a scale-up).
pub fn replication_lag(m: &ClusterStatusResponse) -> u64 {
    m.replication_backlog_bytes.saturating_sub(m.drain_backlog_bytes)
}

/// Returns the new status.
pub fn build(o: &Observed<'_>, mut st: GfsClusterStatus, prev: &GfsClusterStatus, now: Timestamp) -> GfsClusterStatus {
    let spec = &o.gc.spec;
    let gen_ = o.gc.metadata.generation;
    st.observed_generation = gen_;
    st.ready_masters = ready(o.master_sts);
    st.masters_ready = format!("{}/{}", st.ready_masters, spec.masters.replicas);
    st.chunkservers = o.chunk_sts.spec.replicas.unwrap_or(0);
    st.ready_chunkservers = ready(o.chunk_sts);
    st.chunkservers_ready = format!("{}/{}", st.ready_chunkservers, spec.chunkservers.replicas);
    st.chunkserver_selector = selector_string(&o.gc.metadata.name.clone().unwrap_or_default(), Component::Chunkserver);
    if let Some(m) = o.master {
        st.leader = Some(o.leader.to_string());
        st.under_replicated_chunks = m.under_replicated_chunks as i64;
        st.replication_lag_bytes = replication_lag(m) as i64;
        st.drain_backlog_bytes = m.drain_backlog_bytes as i64;
        st.capacity_bytes = m.capacity_bytes as i64;
        st.used_bytes = m.used_bytes as i64;
    } else {
        // Keep the last known figures; Degraded says the master is unreachable.
        st.under_replicated_chunks = prev.under_replicated_chunks;
        st.replication_lag_bytes = prev.replication_lag_bytes;
        st.drain_backlog_bytes = prev.drain_backlog_bytes;
        st.capacity_bytes = prev.capacity_bytes;
        st.used_bytes = prev.used_bytes;
    }
    let quorum = spec.masters.replicas / 2 + 1;
    let unreachable = match &o.notes.master_error {
        Some(e) => format!("master {} does not answer: {e}", o.leader),
        None => format!("master {} does not answer", o.leader),
    };
    let (avail, reason, msg) = if o.master.is_none() {
        (false, "MasterUnreachable", unreachable.clone())
    } else if st.ready_masters < quorum {
        (
            false,
            "MastersNotReady",
            format!("{} of {} masters ready, quorum is {quorum}", st.ready_masters, spec.masters.replicas),
        )
    } else if st.ready_chunkservers < spec.replication {
        (
            false,
            "NotEnoughChunkservers",
            format!("{} chunkservers ready, replication is {}", st.ready_chunkservers, spec.replication),
        )
    } else {
        (true, "Ready", format!("{} masters and {} chunkservers ready", st.ready_masters, st.ready_chunkservers))
    };
    let pc = &prev.conditions;
    let available = cond("Available", avail, reason, msg, gen_, pc, now);

    let progressing = if let Some(d) = &st.drain {
        cond(
            "Progressing",
            true,
            "Draining",
            format!("decommissioning chunkserver ordinal {} ({}) before scale-down", d.ordinal, d.server),
            gen_,
            pc,
            now,
        )
    } else if o.notes.drain_blocked {
        cond("Progressing", true, "DrainBlocked", o.notes.progress.join("; "), gen_, pc, now)
    } else if !o.notes.progress.is_empty() {
        cond("Progressing", true, "Reconciling", o.notes.progress.join("; "), gen_, pc, now)
    } else if st.ready_chunkservers < st.chunkservers || st.ready_masters < spec.masters.replicas {
        cond(
            "Progressing",
            true,
            "PodsStarting",
            format!("waiting for pods: {} masters, {} chunkservers ready", st.masters_ready, st.chunkservers_ready),
            gen_,
            pc,
            now,
        )
    } else {
        cond("Progressing", false, "Stable", "nothing in progress".into(), gen_, pc, now)
    };

    let degraded = if let Some((reason, msg)) = &o.notes.security {
        cond("Degraded", true, reason, msg.clone(), gen_, pc, now)
    } else if o.master.is_none() {
        cond("Degraded", true, "MasterUnreachable", unreachable, gen_, pc, now)
    } else if !o.notes.lost_pods.is_empty() {
        cond(
            "Degraded",
            true,
            "NodeLost",
            format!("recovering pods from lost nodes: {}", o.notes.lost_pods.join(", ")),
            gen_,
            pc,
            now,
        )
    } else if st.under_replicated_chunks > 0 {
        cond(
            "Degraded",
            true,
            "UnderReplicated",
            format!(
                "{} chunks under-replicated, {} bytes to copy",
                st.under_replicated_chunks, st.replication_lag_bytes
            ),
            gen_,
            pc,
            now,
        )
    } else {
        cond("Degraded", false, "Healthy", "every chunk has its replicas".into(), gen_, pc, now)
    };
    let resized = match o.notes.resize.iter().find(|r| r.reason != "Resizing").or(o.notes.resize.first()) {
        None => {
            cond("StorageResized", true, "AtRequestedSize", "every PVC has the size of the spec".into(), gen_, pc, now)
        }
        Some(r) => {
            let msg = o.notes.resize.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; ");
            cond("StorageResized", false, r.reason, msg, gen_, pc, now)
        }
    };
    st.conditions = vec![available, progressing, degraded, resized, reconciled(&o.notes.faults, gen_, pc, now)];
    st
}

/// Longest condition message written (the API allows 32 KiB; a person
/// reads the first failures).
const MAX_MESSAGE: usize = 2048;

/// The `Reconciled` condition: True when every step of the pass worked,
/// else False with the first failure's reason and every failure listed.
fn reconciled(faults: &[Fault], gen_: Option<i64>, prev: &[Condition], now: Timestamp) -> Condition {
    let Some(first) = faults.first() else {
        return cond("Reconciled", true, "Applied", "every step of the last pass worked".into(), gen_, prev, now);
    };
    let mut msg = faults.iter().map(|f| format!("{}: {}", f.what, f.message)).collect::<Vec<_>>().join("; ");
    if msg.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push_str("...");
    }
    cond("Reconciled", false, &first.reason, msg, gen_, prev, now)
}

/// `prev` with its `Reconciled` condition replaced by one for `faults`
/// (for a pass that failed before it could build the whole status).
pub fn with_reconciled(prev: &[Condition], faults: &[Fault], gen_: Option<i64>, now: Timestamp) -> Vec<Condition> {
    let mut out: Vec<Condition> = prev.iter().filter(|c| c.type_ != "Reconciled").cloned().collect();
    out.push(reconciled(faults, gen_, prev, now));
    out
}

/// Condition changes worth an Event: (reason, message, warning).
pub fn transitions(prev: &GfsClusterStatus, new: &GfsClusterStatus) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for c in &new.conditions {
        let old = prev.conditions.iter().find(|p| p.type_ == c.type_);
        if old.is_some_and(|o| o.status == c.status && o.reason == c.reason) {
            continue;
        }
        // Failed steps publish their own Warning Events on every pass.
        if c.type_ == "Reconciled" && (c.status == "False" || old.is_none()) {
            continue;
        }
        let warning = (c.type_ == "Degraded" && c.status == "True")
            || (c.type_ == "StorageResized" && c.reason == "ExpansionNotAllowed")
            || (c.type_ == "Available" && c.status == "False" && old.is_some());
        out.push((
            format!("{}{}", c.type_, if c.status == "True" { "" } else { "False" }),
            format!("{}: {}", c.reason, c.message),
            warning,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(what: &str, reason: &str) -> Fault {
        Fault { what: what.into(), reason: reason.into(), message: format!("{what} was refused") }
    }

    #[test]
    fn reconciled_names_the_first_failure_and_lists_all() {
        let now = Timestamp::now();
        let c = reconciled(
            &[fault("apply StatefulSet a", "KubeInvalid"), fault("autoscaling", "KubeConflict")],
            Some(7),
            &[],
            now,
        );
        assert_eq!((c.status.as_str(), c.reason.as_str(), c.observed_generation), ("False", "KubeInvalid", Some(7)));
        assert!(c.message.contains("apply StatefulSet a") && c.message.contains("autoscaling"), "{}", c.message);
        let ok = reconciled(&[], Some(8), std::slice::from_ref(&c), now);
        assert_eq!((ok.status.as_str(), ok.reason.as_str()), ("True", "Applied"));
    }

    #[test]
    fn a_long_failure_is_cut_at_a_char_boundary() {
        let mut f = fault("x", "KubeInvalid");
        f.message = "é".repeat(3000);
        let c = reconciled(&[f], None, &[], Timestamp::now());
        assert!(c.message.len() <= MAX_MESSAGE + 3 && c.message.ends_with("..."));
    }

    #[test]
    fn with_reconciled_keeps_the_other_conditions() {
        let now = Timestamp::now();
        let avail = cond("Available", true, "Ready", "ok".into(), Some(1), &[], now);
        let old = reconciled(&[], Some(1), &[], now);
        let out = with_reconciled(&[avail.clone(), old], &[fault("reconcile", "CertificateError")], Some(2), now);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], avail);
        assert_eq!((out[1].status.as_str(), out[1].reason.as_str()), ("False", "CertificateError"));
    }

    #[test]
    fn only_a_recovery_of_reconciled_is_an_event_of_its_own() {
        let now = Timestamp::now();
        let st = |c: Condition| GfsClusterStatus { conditions: vec![c], ..Default::default() };
        let failed = st(reconciled(&[fault("a", "KubeInvalid")], None, &[], now));
        let fine = st(reconciled(&[], None, &[], now));
        assert!(transitions(&fine, &failed).is_empty(), "failures publish their own Warning Events");
        let back = transitions(&failed, &fine);
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].0.as_str(), back[0].2), ("Reconciled", false));
    }
}
