//! Pure decisions: quantities, ordinal -> server mapping, the autoscaler,
//! the rollout gate and master membership steps. No I/O, so unit tests
//! cover each rule.

use gfs_proto::{ClusterStatusResponse, ServerState, ServerStatus};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{AutoscalerStatus, AutoscalingSpec};
use crate::error::{Error, Result};

/// Parses a Kubernetes quantity ("64Mi", "1.5Gi", "10G", "500") into bytes.
pub fn parse_quantity(q: &str) -> Result<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        _ => return Err(Error::Quantity(q.into())),
    };
    let n: f64 = num.parse().map_err(|_| Error::Quantity(q.into()))?;
    Ok((n * mult) as u64)
}

/// Returns the master's view of the chunkserver at `ordinal`.
///
/// In a cluster, chunkservers advertise their pod DNS address, so the match
/// is by address. With a master override (tests, local runs against a
/// `gfs server` on loopback) addresses are loopback ports, and the mapping is
/// positional: ordinal `i` is the `i`-th server of ClusterStatus sorted by
/// address.
pub fn server_for_ordinal<'a>(
    status: &'a ClusterStatusResponse,
    pod_address: &str,
    ordinal: i32,
    positional: bool,
) -> Option<&'a ServerStatus> {
    let by_addr = status.servers.iter().find(|s| s.server.as_ref().is_some_and(|i| i.address == pod_address));
    if by_addr.is_some() || !positional {
        return by_addr;
    }
    let mut sorted: Vec<&ServerStatus> = status.servers.iter().collect();
    sorted.sort_by(|a, b| addr(a).cmp(addr(b)));
    sorted.get(usize::try_from(ordinal).ok()?).copied()
}

fn addr(s: &ServerStatus) -> &str {
    s.server.as_ref().map(|i| i.address.as_str()).unwrap_or("")
}

/// Returns the server's admin state.
pub fn state_of(s: &ServerStatus) -> ServerState {
    ServerState::try_from(s.state).unwrap_or(ServerState::Unspecified)
}

/// What the autoscaler sees.
#[derive(Debug, Clone)]
pub struct AutoscaleInput<'a> {
    /// The spec's autoscaling block.
    pub spec: &'a AutoscalingSpec,
    /// `.spec.chunkservers.replicas`.
    pub desired: i32,
    /// Replicas of the chunkserver StatefulSet now.
    pub current: i32,
    /// Ready chunkserver pods.
    pub ready: i32,
    /// Replication backlog in bytes.
    pub lag_bytes: u64,
    /// Used and total bytes of live chunkservers.
    pub used_bytes: u64,
    /// Capacity of live chunkservers.
    pub capacity_bytes: u64,
    /// A drain is running.
    pub draining: bool,
    /// Now.
    pub now: Timestamp,
}

/// The autoscaler's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscaleDecision {
    /// State to persist in status.
    pub state: AutoscalerStatus,
    /// New `.spec.chunkservers.replicas`, if it changes.
    pub replicas: Option<i32>,
}

fn since(t: &Option<String>, now: Timestamp) -> Option<SignedDuration> {
    t.as_deref().and_then(|s| s.parse::<Timestamp>().ok()).map(|t| now.duration_since(t))
}

/// Decides one autoscaling step: at most one chunkserver per decision, and
/// each decision needs the condition to hold for its stabilization window
/// (the window restarts after every step).
pub fn autoscale(input: &AutoscaleInput<'_>, prev: Option<&AutoscalerStatus>) -> Result<AutoscaleDecision> {
    let spec = input.spec;
    let mut state = prev.cloned().unwrap_or_default();
    let now_s = input.now.to_string();
    if !spec.enabled {
        return Ok(AutoscaleDecision { state: AutoscalerStatus::default(), replicas: None });
    }
    if input.desired < spec.min_replicas {
        state.last_scale_time = Some(now_s);
        state.last_decision = Some(format!("up {}->{}: below minReplicas", input.desired, spec.min_replicas));
        return Ok(AutoscaleDecision { state, replicas: Some(spec.min_replicas) });
    }
    let target = parse_quantity(&spec.target_replication_lag)?;
    // Settled: the StatefulSet has what the spec asks, every pod is ready,
    // no drain runs. Only then is another step taken (one at a time).
    let settled = input.current == input.desired && input.ready >= input.desired && !input.draining;
    if input.lag_bytes > target {
        state.low_usage_since = None;
        let above = since(&state.lag_above_since, input.now);
        if above.is_none() {
            state.lag_above_since = Some(now_s.clone());
        }
        let window = SignedDuration::from_secs(i64::from(spec.scale_up_stabilization_seconds));
        if settled && input.desired < spec.max_replicas && above.is_some_and(|d| d >= window) {
            let to = input.desired + 1;
            state.lag_above_since = Some(now_s.clone());
            state.last_scale_time = Some(now_s);
            state.last_decision =
                Some(format!("up {}->{to}: replication lag {} B > target {target} B", input.desired, input.lag_bytes));
            return Ok(AutoscaleDecision { state, replicas: Some(to) });
        }
        return Ok(AutoscaleDecision { state, replicas: None });
    }
    state.lag_above_since = None;
    let low = spec.scale_down_below_utilization_percent.is_some_and(|pct| {
        input.lag_bytes == 0
            && input.capacity_bytes > 0
            && u128::from(input.used_bytes) * 100 < u128::from(input.capacity_bytes) * pct as u128
    });
    if !low {
        state.low_usage_since = None;
        return Ok(AutoscaleDecision { state, replicas: None });
    }
    let below = since(&state.low_usage_since, input.now);
    if below.is_none() {
        state.low_usage_since = Some(now_s.clone());
    }
    let window = SignedDuration::from_secs(i64::from(spec.scale_down_stabilization_seconds));
    if settled && input.desired > spec.min_replicas && below.is_some_and(|d| d >= window) {
        let to = input.desired - 1;
        state.low_usage_since = Some(now_s.clone());
        state.last_scale_time = Some(now_s);
        state.last_decision = Some(format!(
            "down {}->{to}: used {} of {} B, no lag",
            input.desired, input.used_bytes, input.capacity_bytes
        ));
        return Ok(AutoscaleDecision { state, replicas: Some(to) });
    }
    Ok(AutoscaleDecision { state, replicas: None })
}

/// What a StatefulSet looks like now, for the rollout gate.
#[derive(Debug, Clone, Copy, Default)]
pub struct StsObserved {
    /// `.spec.replicas`.
    pub replicas: i32,
    /// Current rolling-update partition.
    pub partition: i32,
    /// `.status.updatedReplicas`.
    pub updated: i32,
    /// `.status.readyReplicas`.
    pub ready: i32,
    /// The StatefulSet controller has seen the latest spec.
    pub observed: bool,
}

/// Rollout gate result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Nothing to roll.
    Idle,
    /// A new template arrived: hold every pod until the gate opens.
    Start,
    /// Let the next pod (ordinal `partition`) update.
    Step,
    /// Waiting, with the reason.
    Wait(String),
    /// Every pod runs the new template.
    Done,
}

/// Decides the next partition of a one-pod-at-a-time rollout. A pod is let
/// through only when every pod already updated is ready and the master
/// reports no under-replicated chunks. Returns the partition and why.
pub fn rollout(obs: StsObserved, template_changed: bool, under_replicated: Option<u64>) -> (i32, Rollout) {
    if template_changed {
        return (obs.replicas, Rollout::Start);
    }
    if obs.partition <= 0 {
        return (0, Rollout::Idle);
    }
    let p = obs.partition.min(obs.replicas);
    if !obs.observed || obs.updated < obs.replicas - p || obs.ready < obs.replicas {
        return (
            p,
            Rollout::Wait(format!("waiting for updated pods to be ready ({}/{} ready)", obs.ready, obs.replicas)),
        );
    }
    match under_replicated {
        None => (p, Rollout::Wait("master unreachable".into())),
        Some(n) if n > 0 => (p, Rollout::Wait(format!("waiting for {n} under-replicated chunks"))),
        Some(_) if p == 0 => (0, Rollout::Done),
        Some(_) => {
            let next = p - 1;
            (next, Rollout::Step)
        }
    }
}

/// Pods of a StatefulSet as its status reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodCounts {
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.replicas`: pods that exist, terminating ones included.
    pub existing: i32,
}

impl PodCounts {
    pub fn new(ready: i32, existing: i32) -> Self {
        Self { ready, existing }
    }
}

/// Returns the next master replica count: one member at a time. Growing
/// waits until every current master is ready; shrinking waits until the
/// pod removed by the previous step is gone.
pub fn master_step(desired: i32, current: Option<i32>, pods: PodCounts) -> i32 {
    let Some(cur) = current else { return desired };
    if desired == cur || pods.ready < cur.min(desired) {
        return cur;
    }
    if desired > cur {
        cur + 1
    } else if pods.existing > cur {
        cur
    } else {
        cur - 1
    }
}

/// A change of the master group the operator makes through the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// `AddMaster(ordinal)`: its pod is ready.
    Add(u64),
    /// `RemoveMaster(ordinal)`, before its pod goes away.
    Remove(u64),
}

/// Next step of the master group toward `desired` members, one member at
/// a time: the StatefulSet replica count and the membership change to make
/// now. `voters` are the master group's voter ids (= pod ordinals) as the
/// leader reports them; `None` when unknown (master unreachable).
///
/// Growing: the pod comes first (`master_step`), then the member, once the
/// pod is ready. Shrinking: the member goes first (highest ordinal), then
/// its pod.
pub fn member_step(
    desired: i32,
    current: Option<i32>,
    pods: PodCounts,
    voters: Option<&[u64]>,
) -> (i32, Option<MemberChange>) {
    let Some(voters) = voters else { return (master_step(desired, current, pods), None) };
    let Some(cur) = current else { return (desired, None) };
    let n = voters.len() as i32;
    if n > desired {
        let victim = voters.iter().copied().filter(|v| *v >= desired as u64).max().or(voters.iter().copied().max());
        return (cur, victim.map(MemberChange::Remove));
    }
    if n < desired {
        // Pods are ordered: ordinals below `ready` are ready.
        if let Some(o) = (0..desired as u64).find(|o| !voters.contains(o))
            && (o as i32) < pods.ready.min(cur)
        {
            return (cur, Some(MemberChange::Add(o)));
        }
        return (master_step(desired, Some(cur), pods).max(cur.min(desired)), None);
    }
    // The group has the right size; bring the pods in line.
    (master_step(desired, Some(cur), pods), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AutoscalingSpec {
        AutoscalingSpec {
            enabled: true,
            min_replicas: 3,
            max_replicas: 5,
            target_replication_lag: "1Mi".into(),
            scale_up_stabilization_seconds: 30,
            scale_down_stabilization_seconds: 60,
            scale_down_below_utilization_percent: Some(20),
        }
    }

    fn input(spec: &AutoscalingSpec, desired: i32, lag: u64, now: Timestamp) -> AutoscaleInput<'_> {
        AutoscaleInput {
            spec,
            desired,
            current: desired,
            ready: desired,
            lag_bytes: lag,
            used_bytes: 50,
            capacity_bytes: 100,
            draining: false,
            now,
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_quantity("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(parse_quantity("10G").unwrap(), 10_000_000_000);
        assert_eq!(parse_quantity("0").unwrap(), 0);
        assert!(parse_quantity("10 apples").is_err());
    }

    #[test]
    fn lag_scales_up_one_step_per_window() {
        let s = spec();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let d = autoscale(&input(&s, 3, 2 << 20, t0), None).unwrap();
        assert_eq!(d.replicas, None, "window just opened");
        let t1 = t0 + SignedDuration::from_secs(31);
        let d = autoscale(&input(&s, 3, 2 << 20, t1), Some(&d.state)).unwrap();
        assert_eq!(d.replicas, Some(4));
        // The window restarts after a step.
        let t2 = t1 + SignedDuration::from_secs(5);
        let d2 = autoscale(&input(&s, 4, 2 << 20, t2), Some(&d.state)).unwrap();
        assert_eq!(d2.replicas, None);
        // Not settled: the new pod is not ready yet.
        let mut i = input(&s, 4, 2 << 20, t2 + SignedDuration::from_secs(60));
        i.ready = 3;
        assert_eq!(autoscale(&i, Some(&d2.state)).unwrap().replicas, None);
        // Capped at max.
        let d5 = autoscale(&input(&s, 5, 2 << 20, t2 + SignedDuration::from_secs(600)), Some(&d2.state)).unwrap();
        assert_eq!(d5.replicas, None);
    }

    #[test]
    fn lag_below_target_resets_the_window() {
        let s = spec();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let d = autoscale(&input(&s, 3, 2 << 20, t0), None).unwrap();
        let d = autoscale(&input(&s, 3, 10, t0 + SignedDuration::from_secs(10)), Some(&d.state)).unwrap();
        assert!(d.state.lag_above_since.is_none());
        let d = autoscale(&input(&s, 3, 2 << 20, t0 + SignedDuration::from_secs(35)), Some(&d.state)).unwrap();
        assert_eq!(d.replicas, None);
    }

    #[test]
    fn low_usage_scales_down_to_min() {
        let s = spec();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut i = input(&s, 4, 0, t0);
        i.used_bytes = 10;
        let d = autoscale(&i, None).unwrap();
        assert_eq!(d.replicas, None);
        i.now = t0 + SignedDuration::from_secs(61);
        let d = autoscale(&i, Some(&d.state)).unwrap();
        assert_eq!(d.replicas, Some(3));
        let mut i = input(&s, 3, 0, t0 + SignedDuration::from_secs(1000));
        i.used_bytes = 10;
        assert_eq!(autoscale(&i, Some(&d.state)).unwrap().replicas, None, "at min");
    }

    #[test]
    fn rollout_waits_for_under_replicated_chunks() {
        let obs = StsObserved { replicas: 3, partition: 3, updated: 0, ready: 3, observed: true };
        assert_eq!(rollout(obs, true, Some(0)), (3, Rollout::Start));
        assert_eq!(rollout(obs, false, Some(0)), (2, Rollout::Step));
        assert!(matches!(rollout(obs, false, Some(4)).1, Rollout::Wait(m) if m.contains("4 under-replicated")));
        let obs = StsObserved { replicas: 3, partition: 2, updated: 1, ready: 2, observed: true };
        assert!(matches!(rollout(obs, false, Some(0)), (2, Rollout::Wait(_))));
        let obs = StsObserved { replicas: 3, partition: 1, updated: 2, ready: 3, observed: true };
        assert_eq!(rollout(obs, false, Some(0)), (0, Rollout::Step));
        let obs = StsObserved { replicas: 3, partition: 0, updated: 3, ready: 3, observed: true };
        assert_eq!(rollout(obs, false, Some(0)), (0, Rollout::Idle));
    }

    /// Pod counts of a settled StatefulSet: every existing pod ready.
    fn p(ready: i32) -> PodCounts {
        PodCounts::new(ready, ready)
    }

    #[test]
    fn member_changes_follow_pods_one_at_a_time() {
        use MemberChange::*;
        // Creation: all pods at once; members are added as pods get ready.
        assert_eq!(member_step(3, None, p(0), Some(&[])), (3, None));
        assert_eq!(member_step(3, Some(3), p(1), Some(&[0])), (3, None), "pod 1 not ready");
        assert_eq!(member_step(3, Some(3), p(2), Some(&[0])), (3, Some(Add(1))));
        assert_eq!(member_step(3, Some(3), p(3), Some(&[0, 1])), (3, Some(Add(2))));
        assert_eq!(member_step(3, Some(3), p(3), Some(&[0, 1, 2])), (3, None));
        // 3 -> 5: one more pod, then its member, then the next pod.
        assert_eq!(member_step(5, Some(3), p(3), Some(&[0, 1, 2])), (4, None));
        assert_eq!(member_step(5, Some(4), p(3), Some(&[0, 1, 2])), (4, None), "waits for pod 3");
        assert_eq!(member_step(5, Some(4), p(4), Some(&[0, 1, 2])), (4, Some(Add(3))));
        assert_eq!(member_step(5, Some(4), p(4), Some(&[0, 1, 2, 3])), (5, None));
        // 5 -> 3: the member goes first, then its pod.
        assert_eq!(member_step(3, Some(5), p(5), Some(&[0, 1, 2, 3, 4])), (5, Some(Remove(4))));
        assert_eq!(member_step(3, Some(5), p(5), Some(&[0, 1, 2, 3])), (5, Some(Remove(3))));
        assert_eq!(member_step(3, Some(5), p(5), Some(&[0, 1, 2])), (4, None));
        assert_eq!(member_step(3, Some(4), p(4), Some(&[0, 1, 2])), (3, None));
        // 3 -> 1: the next pod goes only once the previous one is gone.
        assert_eq!(member_step(1, Some(3), p(3), Some(&[0])), (2, None));
        assert_eq!(member_step(1, Some(2), PodCounts::new(3, 3), Some(&[0])), (2, None), "pod 2 still there");
        assert_eq!(member_step(1, Some(2), PodCounts::new(2, 2), Some(&[0])), (1, None));
        // Unknown group: pods only.
        assert_eq!(member_step(5, Some(3), p(3), None), (4, None));
    }

    #[test]
    fn masters_change_one_member_at_a_time() {
        assert_eq!(master_step(3, None, p(0)), 3);
        assert_eq!(master_step(5, Some(3), p(3)), 4);
        assert_eq!(master_step(5, Some(4), p(3)), 4, "waits for the new member");
        assert_eq!(master_step(1, Some(3), p(3)), 2);
        assert_eq!(master_step(3, Some(3), p(0)), 3);
        assert_eq!(master_step(1, Some(2), PodCounts::new(2, 3)), 2, "waits until the removed pod is gone");
    }
}
