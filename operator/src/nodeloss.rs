//! Node loss: a Node holding gfs pods is NotReady past the grace period, or
//! gone. The master is told (mark-lost) so repair starts at once, PVCs are
//! handled per `spec.nodeLoss.pvcPolicy`, and the stuck pods are
//! force-deleted so the StatefulSet recreates them elsewhere.

use std::collections::HashMap;

use gfs_proto::ClusterStatusResponse;
use k8s_openapi::api::core::v1::{Node, Pod};
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

/// Why a node counts as lost, or `None` if it does not.
pub fn node_lost(node: Option<&Node>, grace: SignedDuration, now: Timestamp) -> Option<String> {
    let Some(node) = node else { return Some("node deleted".into()) };
    let ready =
        node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let c = ready?;
    if c.status == "True" {
        return None;
    }
    let since = c.last_transition_time.as_ref().map(|t| t.0)?;
    let down = now.duration_since(since);
    (down >= grace).then(|| format!("node NotReady for {}s", down.as_secs()))
}

fn ordinal(pod: &str, sts: &str) -> Option<i32> {
    pod.strip_prefix(sts)?.strip_prefix('-')?.parse().ok()
}

/// Handles pods of `gc` on lost nodes; returns the pods it removed.
pub async fn handle(
    gc: &GfsCluster,
    ctx: &Context,
    master: Option<&ClusterStatusResponse>,
    addr: &str,
    positional: bool,
) -> Result<Vec<String>> {
    let n = Names::of(gc);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &n.namespace);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let lp =
        ListParams::default().labels(&format!("app.kubernetes.io/name=gfs,app.kubernetes.io/instance={}", n.cluster));
    let grace = SignedDuration::from_secs(i64::from(gc.spec.node_loss.grace_period_seconds));
    let now = Timestamp::now();
    let mut seen: HashMap<String, Option<Node>> = HashMap::new();
    let mut removed = Vec::new();
    for pod in pods.list(&lp).await? {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        if !seen.contains_key(&node_name) {
            seen.insert(node_name.clone(), nodes.get_opt(&node_name).await?);
        }
        let Some(why) = node_lost(seen[&node_name].as_ref(), grace, now) else { continue };
        let name = pod.name_any();
        let chunk_sts = n.sts(Component::Chunkserver);
        if let Some(ord) = ordinal(&name, &chunk_sts) {
            let server = master.and_then(|m| {
                scaling::server_for_ordinal(m, &n.pod_address(Component::Chunkserver, ord), ord, positional)
            });
            match server.and_then(|s| s.server.as_ref()) {
                Some(info) => match ctx.admin.mark_lost(addr, &info.id).await {
                    Ok(r) => {
                        ctx.metrics.marked_lost.inc();
                        ctx.event(gc, EventType::Warning, "MarkedLost", "MarkLost", format!("{name} on {node_name} ({why}): told the master chunkserver {} is lost; {} chunks queued for repair", info.id, r.chunks_queued)).await;
                    }
                    Err(e) => {
                        warn!(error = %e, pod = %name, "mark-lost failed");
                        return Err(e);
                    }
                },
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
                delete_pvc(gc, ctx, &n.pvc(Component::Chunkserver, ord)).await?;
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
        removed.push(name);
    }
    Ok(removed)
}
