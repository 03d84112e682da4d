//! Master rollouts, the leader last.
//!
//! The master StatefulSet uses `updateStrategy: OnDelete`: a new pod
//! template (an image tag, a flag) changes nothing until the operator
//! deletes a pod, and the StatefulSet recreates it from the new revision.
//! Each pass deletes at most one outdated master, and only while every
//! master pod is Ready and the group is whole (every member answers and
//! has applied the leader's log to within `MAX_APPLY_LAG`), so a quorum
//! stays up throughout. Followers go first; the leader goes once every
//! follower runs the new revision, so the group changes leader once,
//! not once per pod as an ordinal-order rollout may.

use gfs_proto::{ClusterStatusResponse, MasterRole};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use crate::controller::Context;
use crate::crd::GfsCluster;
use crate::error::Result;
use crate::render::{Component, Names, selector_string};
use crate::status::Notes;

/// A follower this many entries behind the leader has not caught up.
pub const MAX_APPLY_LAG: u64 = 64;

/// Pod label holding the StatefulSet revision a pod was made from.
const REVISION_LABEL: &str = "controller-revision-hash";

/// A master pod as the rollout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterPod {
    pub ordinal: i32,
    /// Its `controller-revision-hash`.
    pub revision: String,
    pub ready: bool,
    /// Has a deletion timestamp.
    pub terminating: bool,
}

/// What the next pass of a master rollout does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterStep {
    /// Every master runs the StatefulSet's update revision.
    Idle,
    /// Outdated masters remain, but deleting one now could cost the
    /// quorum; the reason.
    Wait(String),
    /// Delete this master's pod (`leader`: it leads, and every other
    /// master is up to date).
    Delete { ordinal: i32, leader: bool },
}

/// The group as the leader reports it: the leader's ordinal, or why the
/// group is not whole.
pub fn group_view(m: Option<&ClusterStatusResponse>, n: &Names, replicas: i32) -> Result<i32, String> {
    let m = m.ok_or("the master does not answer")?;
    let ordinal_of = |address: &str| n.ordinal(Component::Master, address.split('.').next().unwrap_or_default());
    let leader = m.masters.iter().find(|x| x.role() == MasterRole::Leader).ok_or("no master leads")?;
    let leader_ordinal =
        ordinal_of(&leader.address).ok_or_else(|| format!("leader {} is not a pod", leader.address))?;
    if m.masters.len() != replicas as usize {
        return Err(format!("the group has {} members (want {replicas})", m.masters.len()));
    }
    for x in &m.masters {
        if !x.reachable {
            return Err(format!("master {} does not answer", x.address));
        }
        let behind = leader.last_applied.saturating_sub(x.last_applied);
        if behind > MAX_APPLY_LAG {
            return Err(format!("master {} is {behind} entries behind the leader", x.address));
        }
    }
    Ok(leader_ordinal)
}

/// Decides the next step: wait unless every one of `replicas` pods exists,
/// is Ready and not terminating, and the group is whole; then the
/// outdated follower with the highest ordinal, or the leader last.
pub fn next_master_step(
    pods: &[MasterPod],
    update_revision: &str,
    replicas: i32,
    group: &Result<i32, String>,
) -> MasterStep {
    let outdated: Vec<&MasterPod> = pods.iter().filter(|p| p.revision != update_revision).collect();
    if outdated.is_empty() && pods.len() == replicas as usize {
        return MasterStep::Idle;
    }
    if outdated.is_empty() {
        // A pod is being recreated: it comes from the update revision.
        return MasterStep::Wait(format!("{} of {replicas} master pods exist", pods.len()));
    }
    if pods.len() != replicas as usize || pods.iter().any(|p| p.terminating || !p.ready) {
        let ready = pods.iter().filter(|p| p.ready && !p.terminating).count();
        return MasterStep::Wait(format!("waiting for every master pod to be Ready ({ready}/{replicas})"));
    }
    let leader = match group {
        Ok(l) => *l,
        Err(why) => return MasterStep::Wait(why.clone()),
    };
    match outdated.iter().filter(|p| p.ordinal != leader).max_by_key(|p| p.ordinal) {
        Some(p) => MasterStep::Delete { ordinal: p.ordinal, leader: false },
        None => MasterStep::Delete { ordinal: leader, leader: true },
    }
}

fn master_pod(pod: &Pod, n: &Names) -> Option<MasterPod> {
    let ordinal = n.ordinal(Component::Master, &pod.name_any())?;
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(MasterPod {
        ordinal,
        revision: pod.labels().get(REVISION_LABEL).cloned().unwrap_or_default(),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

/// One pass of the master rollout: at most one pod deleted.
pub async fn roll_masters(
    gc: &GfsCluster,
    ctx: &Context,
    sts: &StatefulSet,
    master: Option<&ClusterStatusResponse>,
    notes: &mut Notes,
) -> Result<()> {
    let status = sts.status.as_ref();
    let Some(update) = status.and_then(|s| s.update_revision.clone()) else { return Ok(()) };
    // The StatefulSet controller has not seen the latest template yet: its
    // update revision is the old one.
    if status.and_then(|s| s.observed_generation).unwrap_or(0) < sts.metadata.generation.unwrap_or(0) {
        return Ok(());
    }
    let replicas = sts.spec.replicas.unwrap_or(0);
    // Every pod already runs the update revision: no pod listing needed.
    // (`updatedReplicas` counts pods of the update revision; with OnDelete
    // `currentRevision` does not follow.)
    if status.is_some_and(|s| s.updated_replicas == Some(replicas) && s.replicas == replicas) {
        return Ok(());
    }
    let n = Names::of(gc);
    let name = n.sts(Component::Master);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &n.namespace);
    let lp = ListParams::default().labels(&selector_string(&n.cluster, Component::Master));
    let listed = api.list(&lp).await?;
    let pods: Vec<MasterPod> = listed.items.iter().filter_map(|p| master_pod(p, &n)).collect();
    let step = next_master_step(&pods, &update, replicas, &group_view(master, &n, replicas));
    match step {
        MasterStep::Idle => Ok(()),
        MasterStep::Wait(why) => {
            notes.progress.push(format!("rolling {name}: {why}"));
            Ok(())
        }
        MasterStep::Delete { ordinal, leader } => {
            let pod = n.pod(Component::Master, ordinal);
            // The pod seen above, not a replacement made meanwhile.
            let uid = listed.items.iter().find(|p| p.name_any() == pod).and_then(|p| p.metadata.uid.clone());
            let dp = DeleteParams {
                preconditions: Some(Preconditions { uid, resource_version: None }),
                ..Default::default()
            };
            api.delete(&pod, &dp).await?;
            let what = if leader { format!("{pod} (the leader, last)") } else { pod.clone() };
            notes.progress.push(format!("rolling {name}: restarting {what}"));
            ctx.event(
                gc,
                EventType::Normal,
                "RolloutStep",
                "Rollout",
                format!("{name}: restarting {what} on revision {update}"),
            )
            .await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_proto::MasterInfo;

    fn pods(revs: &[&str]) -> Vec<MasterPod> {
        revs.iter()
            .enumerate()
            .map(|(i, r)| MasterPod { ordinal: i as i32, revision: r.to_string(), ready: true, terminating: false })
            .collect()
    }

    #[test]
    fn followers_first_then_the_leader_one_at_a_time() {
        let leader = Ok(2);
        assert_eq!(next_master_step(&pods(&["new", "new", "new"]), "new", 3, &leader), MasterStep::Idle);
        // Pod 2 leads: the highest outdated follower goes first.
        let all_old = pods(&["old", "old", "old"]);
        assert_eq!(next_master_step(&all_old, "new", 3, &leader), MasterStep::Delete { ordinal: 1, leader: false });
        let one_done = pods(&["old", "new", "old"]);
        assert_eq!(next_master_step(&one_done, "new", 3, &leader), MasterStep::Delete { ordinal: 0, leader: false });
        let followers_done = pods(&["new", "new", "old"]);
        assert_eq!(
            next_master_step(&followers_done, "new", 3, &leader),
            MasterStep::Delete { ordinal: 2, leader: true }
        );
        // A single master is its own leader.
        assert_eq!(
            next_master_step(&pods(&["old"]), "new", 1, &Ok(0)),
            MasterStep::Delete { ordinal: 0, leader: true }
        );
    }

    #[test]
    fn waits_while_a_pod_is_down_or_the_group_is_not_whole() {
        let mut p = pods(&["new", "old", "old"]);
        p[0].ready = false;
        assert!(matches!(next_master_step(&p, "new", 3, &Ok(2)), MasterStep::Wait(w) if w.contains("2/3")));
        p[0].ready = true;
        p[1].terminating = true;
        assert!(matches!(next_master_step(&p, "new", 3, &Ok(2)), MasterStep::Wait(_)));
        // A pod missing (being recreated), with or without outdated ones.
        assert!(matches!(next_master_step(&pods(&["old", "old"]), "new", 3, &Ok(0)), MasterStep::Wait(_)));
        assert!(matches!(next_master_step(&pods(&["new", "new"]), "new", 3, &Ok(0)), MasterStep::Wait(_)));
        let why = "master x is 100 entries behind the leader".to_string();
        let step = next_master_step(&pods(&["new", "old", "old"]), "new", 3, &Err(why.clone()));
        assert_eq!(step, MasterStep::Wait(why));
    }

    #[test]
    fn the_group_view_names_the_leader_or_what_is_missing() {
        let gc: GfsCluster = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo", "namespace": "gfs"},
            "spec": {"masters": {"replicas": 3, "storage": {"size": "1Gi"}},
                     "chunkservers": {"replicas": 3, "storage": {"size": "1Gi"}}},
        }))
        .unwrap();
        let n = Names::of(&gc);
        let member = |o: i32, role: MasterRole, applied: u64| MasterInfo {
            id: o as u64,
            address: n.pod_address(Component::Master, o),
            role: role as i32,
            last_applied: applied,
            reachable: true,
            ..Default::default()
        };
        let mut st = ClusterStatusResponse {
            masters: vec![
                member(0, MasterRole::Follower, 990),
                member(1, MasterRole::Leader, 1000),
                member(2, MasterRole::Follower, 1000 - MAX_APPLY_LAG),
            ],
            ..Default::default()
        };
        assert_eq!(group_view(Some(&st), &n, 3), Ok(1));
        assert!(group_view(Some(&st), &n, 5).unwrap_err().contains("3 members"));
        st.masters[2].last_applied -= 1;
        assert!(group_view(Some(&st), &n, 3).unwrap_err().contains("65 entries behind"));
        st.masters[2].last_applied = 1000;
        st.masters[0].reachable = false;
        assert!(group_view(Some(&st), &n, 3).unwrap_err().contains("does not answer"));
        st.masters[1].role = MasterRole::Follower as i32;
        assert!(group_view(Some(&st), &n, 3).unwrap_err().contains("no master leads"));
        assert!(group_view(None, &n, 3).is_err());
    }
}
