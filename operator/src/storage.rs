//! Growing the volumes of a running cluster.
//!
//! A StatefulSet's `volumeClaimTemplates` cannot change, so a larger
//! `storage.size` is carried out on the PVCs themselves: each bound claim
//! below the size is patched to it when its StorageClass allows expansion,
//! and the `StorageResized` condition follows the claims until their
//! capacity reaches it. New pods' claims start at the template's size and
//! are grown the same way on the next pass. A smaller size or another
//! class is refused by the CRD's CEL rules before it reaches here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;

use crate::controller::Context;
use crate::crd::GfsCluster;
use crate::error::Result;
use crate::render::{Component, Names};
use crate::scaling::parse_quantity;

/// What the planner needs of one PVC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// PVC name.
    pub name: String,
    /// `spec.resources.requests.storage` in bytes.
    pub requested: u64,
    /// `status.capacity.storage` in bytes, once provisioned.
    pub capacity: Option<u64>,
    /// Whether the claim is Bound (only bound claims may grow).
    pub bound: bool,
    /// Its StorageClass.
    pub class: Option<String>,
}

/// What to do with a component's claims.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResizePlan {
    /// Claims to patch to the new size.
    pub grow: Vec<String>,
    /// Claims asked to grow whose capacity has not caught up, or not yet
    /// bound: (name, why).
    pub waiting: Vec<(String, String)>,
    /// Claims that cannot grow: (name, why).
    pub blocked: Vec<(String, String)>,
}

/// Decides, for a wanted size of `want` bytes, which claims grow;
/// `expandable(class)` says whether a StorageClass allows expansion (`None`:
/// no such class).
pub fn plan(claims: &[Claim], want: u64, expandable: impl Fn(&str) -> Option<bool>) -> ResizePlan {
    let mut p = ResizePlan::default();
    for c in claims {
        if c.requested >= want {
            if c.capacity.is_some_and(|cap| cap < want) {
                p.waiting.push((c.name.clone(), "the volume is being expanded".into()));
            }
            continue;
        }
        let Some(class) = c.class.as_deref() else {
            p.blocked.push((c.name.clone(), "it has no StorageClass".into()));
            continue;
        };
        match expandable(class) {
            None => p.blocked.push((c.name.clone(), format!("its StorageClass {class} does not exist"))),
            Some(false) => p.blocked.push((
                c.name.clone(),
                format!("its StorageClass {class} does not allow volume expansion (allowVolumeExpansion is not true)"),
            )),
            Some(true) if !c.bound => p.waiting.push((c.name.clone(), "not bound yet".into())),
            Some(true) => p.grow.push(c.name.clone()),
        }
    }
    p
}

/// The outcome for the status: `None` when every claim has the size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resize {
    /// `Resizing` or `ExpansionNotAllowed`.
    pub reason: &'static str,
    /// What waits or is refused, claim by claim.
    pub message: String,
}

fn claim_of(pvc: &PersistentVolumeClaim) -> Option<Claim> {
    let spec = pvc.spec.as_ref()?;
    let requested = spec.resources.as_ref()?.requests.as_ref()?.get("storage")?;
    let status = pvc.status.as_ref();
    Some(Claim {
        name: pvc.name_any(),
        requested: parse_quantity(&requested.0).ok()?,
        capacity: status
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .and_then(|q| parse_quantity(&q.0).ok()),
        bound: status.and_then(|s| s.phase.as_deref()) == Some("Bound"),
        class: spec.storage_class_name.clone(),
    })
}

/// Grows the claims of component `c` to the spec's size; returns what is
/// still under way or refused.
pub async fn reconcile(gc: &GfsCluster, ctx: &Context, c: Component) -> Result<Option<Resize>> {
    let n = Names::of(gc);
    let spec = match c {
        Component::Master => &gc.spec.masters.storage,
        Component::Chunkserver => &gc.spec.chunkservers.storage,
    };
    let want = parse_quantity(&spec.size)?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &n.namespace);
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/name=gfs,app.kubernetes.io/instance={},app.kubernetes.io/component={}",
        n.cluster,
        c.as_str()
    ));
    let claims: Vec<Claim> = pvcs.list(&lp).await?.items.iter().filter_map(claim_of).collect();
    if claims.iter().all(|x| x.requested >= want && x.capacity.is_none_or(|cap| cap >= want)) {
        return Ok(None);
    }
    // Only the classes of claims that must grow are read.
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let mut allow: BTreeMap<String, Option<bool>> = BTreeMap::new();
    for class in claims.iter().filter(|x| x.requested < want).filter_map(|x| x.class.clone()) {
        if let std::collections::btree_map::Entry::Vacant(e) = allow.entry(class) {
            let sc = classes.get_opt(e.key()).await?;
            e.insert(sc.map(|s| s.allow_volume_expansion == Some(true)));
        }
    }
    let p = plan(&claims, want, |class| allow.get(class).copied().flatten());
    for name in &p.grow {
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": spec.size}}}});
        pvcs.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        ctx.event(
            gc,
            EventType::Normal,
            "VolumeExpansion",
            "Resize",
            format!("PVC {name}: storage request set to {}", spec.size),
        )
        .await;
    }
    let list = |v: &[(String, String)]| v.iter().map(|(n, why)| format!("{n}: {why}")).collect::<Vec<_>>().join("; ");
    Ok(Some(if p.blocked.is_empty() {
        let mut growing: Vec<String> = p.grow.iter().map(|n| format!("{n}: expansion requested")).collect();
        growing.extend(p.waiting.iter().map(|(n, why)| format!("{n}: {why}")));
        Resize {
            reason: "Resizing",
            message: format!("{} PVCs growing to {}: {}", c.as_str(), spec.size, growing.join("; ")),
        }
    } else {
        Resize {
            reason: "ExpansionNotAllowed",
            message: format!("{} PVCs cannot grow to {}: {}", c.as_str(), spec.size, list(&p.blocked)),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn claim(name: &str, requested: u64, capacity: Option<u64>, class: Option<&str>) -> Claim {
        Claim { name: name.into(), requested, capacity, bound: true, class: class.map(Into::into) }
    }

    #[test]
    fn claims_below_the_size_grow_when_their_class_allows() {
        let claims = [
            claim("a", GI, Some(GI), Some("fast")),
            claim("b", 2 * GI, Some(GI), Some("fast")),
            claim("c", 2 * GI, Some(2 * GI), Some("fast")),
        ];
        let p = plan(&claims, 2 * GI, |_| Some(true));
        assert_eq!(p.grow, ["a"]);
        assert_eq!(p.waiting.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(), ["b"]);
        assert!(p.blocked.is_empty());
    }

    #[test]
    fn a_class_without_expansion_or_none_at_all_blocks_with_a_reason() {
        let claims =
            [claim("a", GI, None, Some("local-path")), claim("b", GI, None, None), claim("c", GI, None, Some("gone"))];
        let p = plan(&claims, 2 * GI, |c| match c {
            "local-path" => Some(false),
            _ => None,
        });
        assert!(p.grow.is_empty());
        let why: Vec<&str> = p.blocked.iter().map(|b| b.1.as_str()).collect();
        assert!(why[0].contains("local-path does not allow volume expansion"), "{why:?}");
        assert!(why[1].contains("no StorageClass"));
        assert!(why[2].contains("gone does not exist"));
    }

    #[test]
    fn an_unbound_claim_waits_and_a_larger_one_is_left_alone() {
        let mut pending = claim("a", GI, None, Some("fast"));
        pending.bound = false;
        let p = plan(&[pending, claim("big", 4 * GI, Some(4 * GI), Some("fast"))], 2 * GI, |_| Some(true));
        assert!(p.grow.is_empty() && p.blocked.is_empty());
        assert_eq!(p.waiting, [("a".to_string(), "not bound yet".to_string())]);
    }
}
