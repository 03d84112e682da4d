//! Node loss: a Node holding gfs pods is NotReady past the grace period, or
//! gone. The master is told (mark-lost) so repair starts at once, PVCs are
//! handled per `spec.nodeLoss.pvcPolicy`, and the stuck pods are
//! force-deleted so the StatefulSet recreates them elsewhere.

use std::collections::HashMap;

use gfs_proto::ClusterStatusResponse;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::events::EventType;
use tracing::warn;

use crate::controller::{Context, delete_pvc};
use crate::crd::{GfsCluster, LostNodePvcPolicy};
use crate::error::Result;
use crate::render::{Component, Names};
use crate::scaling;

/// The taint an admin puts on a node that is shut down and will not come
/// back soon (Kubernetes' non-graceful node shutdown).
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// What a node's state means for the pods on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// Ready, or no Ready condition reported yet.
    Fine,
    /// NotReady, but the grace period has this much left.
    Suspect(SignedDuration),
    /// Lost, and why.
    Lost(String),
}

/// Classifies a node (`None`: deleted) against the grace period.
pub fn node_state(node: Option<&Node>, grace: SignedDuration, now: Timestamp) -> NodeState {
    let Some(node) = node else { return NodeState::Lost("node deleted".into()) };
    // An admin's word that the node is down for good (non-graceful node
    // shutdown): no grace to wait out.
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    if taints.into_iter().flatten().any(|t| t.key == OUT_OF_SERVICE) {
        return NodeState::Lost(format!("node tainted {OUT_OF_SERVICE}"));
    }
    let ready =
        node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let Some(c) = ready else { return NodeState::Fine };
    if c.status == "True" {
        return NodeState::Fine;
    }
    let Some(since) = c.last_transition_time.as_ref().map(|t| t.0) else { return NodeState::Fine };
    let down = now.duration_since(since);
    if down >= grace {
        NodeState::Lost(format!("node NotReady for {}s", down.as_secs()))
    } else {
        NodeState::Suspect(grace - down)
    }
}

/// Result of one node-loss pass over a cluster's pods.
#[derive(Debug, Default)]
pub struct NodeLossPass {
    /// Pods force-deleted in this pass.
    pub removed: Vec<String>,
    /// Chunkserver pods on lost nodes left in place because the master did
    /// not answer: they are force-deleted only after it is told (fenced).
    pub waiting: Vec<String>,
    /// The soonest a NotReady node holding pods runs out of grace: the
    /// reconcile comes back then rather than at the periodic requeue.
    pub recheck_in: Option<std::time::Duration>,
}

/// Handles pods of `gc` on lost nodes.
pub async fn handle(
    gc: &GfsCluster,
    ctx: &Context,
    admin: &crate::admin::MasterAdmin,
    master: Option<&ClusterStatusResponse>,
    addr: &str,
    positional: bool,
) -> Result<NodeLossPass> {
    let n = Names::of(gc);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &n.namespace);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let lp = ListParams::default().labels(&format!("{GFS_PODS},{INSTANCE_LABEL}={}", n.cluster));
    let grace = SignedDuration::from_secs(i64::from(gc.spec.node_loss.grace_period_seconds));
    let now = Timestamp::now();
    let mut seen: HashMap<String, Option<Node>> = HashMap::new();
    let mut pass = NodeLossPass::default();
    for pod in pods.list(&lp).await? {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        if !seen.contains_key(&node_name) {
            seen.insert(node_name.clone(), nodes.get_opt(&node_name).await?);
        }
        let why = match node_state(seen[&node_name].as_ref(), grace, now) {
            NodeState::Fine => continue,
            NodeState::Suspect(left) => {
                // Rounded up so the recheck lands after the grace ends.
                let left = std::time::Duration::from_millis(left.as_millis().max(0) as u64 + 500);
                pass.recheck_in = Some(pass.recheck_in.map_or(left, |r| r.min(left)));
                continue;
            }
            NodeState::Lost(why) => why,
        };
        let name = pod.name_any();
        if let Some(ord) = n.ordinal(Component::Chunkserver, &name) {
            let server = master.and_then(|m| {
                scaling::server_for_ordinal(m, &n.pod_address(Component::Chunkserver, ord), ord, positional)
            });
            match server.and_then(|s| s.server.as_ref()) {
                Some(info) => match admin.mark_lost(addr, &info.id).await {
                    Ok(r) => {
                        ctx.metrics.marked_lost.inc();
                        ctx.event(gc, EventType::Warning, "MarkedLost", "MarkLost", format!("{name} on {node_name} ({why}): told the master chunkserver {} is lost; {} chunks queued for repair", info.id, r.chunks_queued)).await;
                    }
                    Err(e) => {
                        warn!(error = %e, pod = %name, "mark-lost failed");
                        return Err(e);
                    }
                },
                // Fence first: with no master to tell, the old process could
                // still count as a live replica holder while a new pod takes
                // its place. Wait for the master.
                None if master.is_none() => {
                    pass.waiting.push(name.clone());
                    continue;
                }
                None => {
                    ctx.event(
                        gc,
                        EventType::Warning,
                        "MarkLostSkipped",
                        "MarkLost",
                        format!("{name} on {node_name} ({why}): the master does not report this chunkserver"),
                    )
                    .await;
                }
            }
            if gc.spec.node_loss.pvc_policy == LostNodePvcPolicy::Delete {
                let pvc = n.pvc(Component::Chunkserver, ord);
                match volume_of(ctx, &n.namespace, &pvc).await? {
                    Some(pv) if !node_local(&pv) => {
                        let note = format!(
                            "kept PVC {pvc} of {name}: its volume {} is not node-local, so the pod reattaches it elsewhere",
                            pv.name_any()
                        );
                        ctx.event(gc, EventType::Normal, "PvcKept", "Delete", note).await;
                    }
                    _ => delete_pvc(gc, ctx, &pvc).await?,
                }
            }
        }
        pods.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await?;
        ctx.event(
            gc,
            EventType::Warning,
            "PodForceDeleted",
            "Delete",
            format!("force-deleted {name} from {node_name} ({why}) so the StatefulSet recreates it elsewhere"),
        )
        .await;
        pass.removed.push(name);
    }
    Ok(pass)
}

/// Names of the GfsClusters (namespace, name) with a pod on `node`, from a
/// store of gfs pods: the Node watch reconciles only those.
pub fn clusters_on_node(pods: &[std::sync::Arc<Pod>], node: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter_map(|p| {
            let cluster = p.labels().get(INSTANCE_LABEL)?.clone();
            Some((p.namespace()?, cluster))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Pod label naming the GfsCluster a pod belongs to.
/// The volume bound to PVC `name`, if any.
async fn volume_of(ctx: &Context, ns: &str, name: &str) -> Result<Option<PersistentVolume>> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let Some(volume) = pvcs.get_opt(name).await?.and_then(|c| c.spec?.volume_name) else { return Ok(None) };
    Ok(Api::<PersistentVolume>::all(ctx.client.clone()).get_opt(&volume).await?)
}

/// Whether a volume lives on one node's disk (a local or hostPath volume,
/// or one pinned to a host name, as the local-path provisioner's are):
/// its data went with the node, so only a new PVC lets the pod move. A
/// network volume is never node-local and its PVC is never deleted.
pub fn node_local(pv: &PersistentVolume) -> bool {
    let Some(spec) = pv.spec.as_ref() else { return false };
    if spec.local.is_some() || spec.host_path.is_some() {
        return true;
    }
    let terms = spec.node_affinity.as_ref().and_then(|a| a.required.as_ref()).map(|r| &r.node_selector_terms);
    terms
        .into_iter()
        .flatten()
        .any(|t| t.match_expressions.iter().flatten().any(|e| e.key == "kubernetes.io/hostname" && e.operator == "In"))
}

pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Selector of every pod the operator manages.
pub const GFS_PODS: &str = "app.kubernetes.io/name=gfs";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(spec: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "v"}, "spec": spec})).unwrap()
    }

    #[test]
    fn only_node_local_volumes_count_as_lost_with_their_node() {
        let pinned = json!({"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node2"]}]}]}}});
        assert!(node_local(&pv(pinned)), "local-path: hostPath pinned by host name");
        assert!(node_local(&pv(json!({"local": {"path": "/mnt/disk"}}))));
        assert!(node_local(&pv(json!({"hostPath": {"path": "/var/x"}}))));
        let zonal = json!({"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}]}]}}});
        assert!(!node_local(&pv(zonal)), "a zonal network volume survives the node");
        assert!(!node_local(&pv(json!({"nfs": {"server": "s", "path": "/"}}))));
    }

    fn node(ready: &str, since: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since}]},
        }))
        .unwrap()
    }

    #[test]
    fn nodes_are_fine_suspect_or_lost() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let grace = SignedDuration::from_secs(30);
        assert_eq!(node_state(Some(&node("True", "2026-01-01T00:00:00Z")), grace, now), NodeState::Fine);
        assert_eq!(
            node_state(Some(&node("False", "2026-01-01T00:00:50Z")), grace, now),
            NodeState::Suspect(SignedDuration::from_secs(20))
        );
        assert_eq!(
            node_state(Some(&node("Unknown", "2026-01-01T00:00:00Z")), grace, now),
            NodeState::Lost("node NotReady for 60s".into())
        );
        assert_eq!(node_state(None, grace, now), NodeState::Lost("node deleted".into()));
        let fresh: Node = serde_json::from_value(json!({"metadata": {"name": "n2"}})).unwrap();
        assert_eq!(node_state(Some(&fresh), grace, now), NodeState::Fine, "no Ready condition yet");
    }

    #[test]
    fn the_out_of_service_taint_skips_the_grace() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let mut n = node("False", "2026-01-01T00:00:55Z");
        n.spec = Some(
            serde_json::from_value(
                json!({"taints": [{"key": OUT_OF_SERVICE, "value": "nodeshutdown", "effect": "NoExecute"}]}),
            )
            .unwrap(),
        );
        let lost = node_state(Some(&n), SignedDuration::from_secs(300), now);
        assert_eq!(lost, NodeState::Lost(format!("node tainted {OUT_OF_SERVICE}")));
    }

    #[test]
    fn a_node_maps_to_the_clusters_with_pods_on_it() {
        let pod = |ns: &str, cluster: &str, node: &str| {
            std::sync::Arc::new(
                serde_json::from_value::<Pod>(json!({
                    "metadata": {"name": "p", "namespace": ns, "labels": {INSTANCE_LABEL: cluster}},
                    "spec": {"nodeName": node, "containers": []},
                }))
                .unwrap(),
            )
        };
        let pods = vec![pod("a", "x", "n1"), pod("a", "x", "n1"), pod("b", "y", "n1"), pod("a", "z", "n2")];
        assert_eq!(clusters_on_node(&pods, "n1"), vec![("a".into(), "x".into()), ("b".into(), "y".into())]);
        assert_eq!(clusters_on_node(&pods, "n2"), vec![("a".into(), "z".into())]);
        assert!(clusters_on_node(&pods, "n3").is_empty());
    }
}
