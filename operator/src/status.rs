//! Builds the GfsCluster status and its conditions from what the reconciler
//! observed. Pure, so unit tests check each condition.

use gfs_proto::ClusterStatusResponse;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{GfsCluster, GfsClusterStatus};
use crate::render::{Component, selector_string};

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
        st.replication_lag_bytes = m.replication_backlog_bytes as i64;
        st.capacity_bytes = m.capacity_bytes as i64;
        st.used_bytes = m.used_bytes as i64;
    } else {
        // Keep the last known figures; Degraded says the master is unreachable.
        st.under_replicated_chunks = prev.under_replicated_chunks;
        st.replication_lag_bytes = prev.replication_lag_bytes;
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
    st.conditions = vec![available, progressing, degraded];
    st
}

/// Condition changes worth an Event: (reason, message, warning).
pub fn transitions(prev: &GfsClusterStatus, new: &GfsClusterStatus) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for c in &new.conditions {
        let old = prev.conditions.iter().find(|p| p.type_ == c.type_);
        if old.is_some_and(|o| o.status == c.status && o.reason == c.reason) {
            continue;
        }
        let warning = (c.type_ == "Degraded" && c.status == "True")
            || (c.type_ == "Available" && c.status == "False" && old.is_some());
        out.push((
            format!("{}{}", c.type_, if c.status == "True" { "" } else { "False" }),
            format!("{}: {}", c.reason, c.message),
            warning,
        ));
    }
    out
}
