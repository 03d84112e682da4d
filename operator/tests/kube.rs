//! The operator against a real etcd + kube-apiserver (see `common`), under
//! its own ServiceAccount RBAC, talking to a real gfs master on loopback.
//! No kubelet or controller-manager runs: the tests set StatefulSet status,
//! create Pods, PVCs and Nodes, and mark Nodes NotReady themselves.

mod common;

use common::*;
use gfs_operator::crd::GfsCluster;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::{Duration, Instant};

fn cond(gc: &GfsCluster, t: &str) -> Option<(String, String)> {
    let c = gc.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn get_sts(admin: &Client, ns: &str, name: &str) -> Option<StatefulSet> {
    Api::<StatefulSet>::namespaced(admin.clone(), ns).get_opt(name).await.unwrap()
}

async fn create_pvc(admin: &Client, ns: &str, cluster: &str, name: &str) {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), ns);
    let pvc = json!({"metadata": {"name": name, "labels": {"app.kubernetes.io/name": "gfs", "app.kubernetes.io/instance": cluster, "app.kubernetes.io/component": "chunkserver"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    api.create(&PostParams::default(), &serde_json::from_value(pvc).unwrap()).await.unwrap();
}

#[test]
fn crd_yaml_matches_crds_folder() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/gfscluster.yaml")).unwrap();
    assert_eq!(
        committed,
        gfs_operator::crd::crd_yaml(),
        "crds/gfscluster.yaml is stale: run `gfs-operator crd > crds/gfscluster.yaml`"
    );
}

#[tokio::test]
async fn invalid_clusters_are_refused_with_clear_messages() {
    let (admin, _) = setup().await;
    let ns = namespace(&admin, "invalid").await;
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    let cases = [
        (json!({"masters": {"replicas": 2}}), "masters.replicas must be odd"),
        (json!({"replication": 5}), "replication must not exceed chunkservers.replicas"),
        (json!({"chunkservers": {"storage": {"size": "lots"}}}), "storage size must be a positive quantity"),
        (json!({"masters": {"storage": {"size": "0"}}}), "storage size must be a positive quantity"),
        (
            json!({"autoscaling": {"enabled": true, "minReplicas": 5, "maxReplicas": 4}}),
            "autoscaling.minReplicas must not exceed maxReplicas",
        ),
        (
            json!({"autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 4}}),
            "autoscaling.minReplicas must be at least replication",
        ),
        (json!({"masters": {"replicas": 7}}), "should be less than or equal to 5"),
        (json!({"tls": {"enabled": false, "issuerRef": {"name": "corp-ca"}}}), "tls.issuerRef needs tls.enabled: true"),
        (json!({"tls": {"issuerRef": {"name": "Corp_CA"}}}), "issuerRef.name must be a DNS subdomain name"),
        (json!({"metrics": {"authTokenSecret": {"name": "scrape", "key": "a/b"}}}), "secret key may hold only letters"),
        (
            json!({"chunkservers": {"podTemplate": {"labels": {"app.kubernetes.io/component": "x"}}}}),
            "podTemplate.labels must not set app.kubernetes.io/ labels",
        ),
    ];
    for (i, (patch, msg)) in cases.into_iter().enumerate() {
        let mut v = cluster_json(&format!("bad-{i}"), 4);
        json_patch::merge(&mut v["spec"], &patch);
        let err = api.create(&PostParams::default(), &serde_json::from_value(v).unwrap()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(msg), "case {i}: {text} lacks {msg:?}");
    }
    // Names whose children would be too long, or would take the Services of
    // another cluster's masters (a cluster "demo-master" next to "demo").
    for (name, msg) in [
        ("x".repeat(41), "metadata.name must be at most 40 characters"),
        ("demo-master".to_string(), "must not end in -master or -chunkserver"),
        ("demo-chunkserver".to_string(), "must not end in -master or -chunkserver"),
    ] {
        let v = cluster_json(&name, 3);
        let err = api.create(&PostParams::default(), &serde_json::from_value(v).unwrap()).await.unwrap_err();
        assert!(err.to_string().contains(msg), "{name}: {err} lacks {msg:?}");
    }
    // And a valid one is accepted, with defaults filled in by the schema.
    let ok =
        api.create(&PostParams::default(), &serde_json::from_value(cluster_json("good", 3)).unwrap()).await.unwrap();
    assert_eq!(ok.spec.chunk_size, "64Mi");
    assert_eq!(ok.spec.node_loss.grace_period_seconds, 300);
    assert!(!ok.spec.tls.enabled, "cluster_json turns TLS off");
    // TLS cannot be switched on a running cluster: pods on both sides of
    // the switch could not talk during the rollout.
    let err = api
        .patch("good", &PatchParams::default(), &Patch::Merge(json!({"spec": {"tls": {"enabled": true}}})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tls.enabled cannot change on an existing cluster"), "{err}");
    // Left out, TLS is on by default.
    let mut v = cluster_json("default-tls", 3);
    v["spec"].as_object_mut().unwrap().remove("tls");
    let on = api.create(&PostParams::default(), &serde_json::from_value(v).unwrap()).await.unwrap();
    assert!(on.spec.tls.enabled);
}

mod json_patch {
    /// RFC 7386 merge of `patch` into `target`.
    pub fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                if v.is_object() && t.get(k).is_some_and(|x| x.is_object()) {
                    merge(t.get_mut(k).unwrap(), v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

#[tokio::test]
async fn cluster_becomes_children_status_events_and_cleans_up_by_policy() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "reconcile").await;
    let gfs = Gfs::start(3).await;
    let op = Operator::start(op_client, &ns, &gfs.master, "op-a");
    let spec = json!({
        "apiVersion": "gfs.dev/v1alpha1", "kind": "GfsCluster", "metadata": {"name": "alpha"},
        "spec": {
            "images": {"master": "example.com/gfs-master:v2", "chunkserver": "example.com/gfs-chunkserver:v2", "pullPolicy": "Always"},
            "replication": 3, "chunkSize": "32Mi",
            "masters": {"replicas": 3, "storage": {"size": "10Gi", "storageClassName": "standard"},
                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
            "chunkservers": {"replicas": 3, "storage": {"size": "100Gi", "storageClassName": "fast"},
                             "resources": {"limits": {"memory": "4Gi"}},
                             "topology": {"zoneLabelKey": "example.com/rack", "maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule"}},
            "pvcRetention": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            "tls": {"enabled": false},
        }
    });
    create_cluster(&admin, &ns, spec).await;
    let sts = wait("chunkserver sts", || async { get_sts(&admin, &ns, "alpha-chunkserver").await }).await;
    let master = wait("master sts", || async { get_sts(&admin, &ns, "alpha-master").await }).await;

    // Field-by-field mapping.
    let c = &sts.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(sts.spec.replicas, Some(3));
    assert_eq!(c.image.as_deref(), Some("example.com/gfs-chunkserver:v2"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0, "4Gi");
    let vct = &sts.spec.volume_claim_templates.as_ref().unwrap()[0];
    let vspec = vct.spec.as_ref().unwrap();
    assert_eq!(vspec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(vspec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0, "100Gi");
    let pod = sts.spec.template.spec.as_ref().unwrap();
    let tsc = &pod.topology_spread_constraints.as_ref().unwrap()[0];
    assert_eq!(
        (tsc.topology_key.as_str(), tsc.max_skew, tsc.when_unsatisfiable.as_str()),
        ("example.com/rack", 2, "DoNotSchedule")
    );
    assert!(
        pod.affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .is_some()
    );
    let retention = sts.spec.persistent_volume_claim_retention_policy.as_ref().unwrap();
    assert_eq!((retention.when_deleted.as_deref(), retention.when_scaled.as_deref()), (Some("Delete"), Some("Retain")));
    assert!(
        c.args.as_ref().unwrap().iter().any(|a| a.contains("alpha-chunkserver.") && a.contains(&ns)),
        "advertise pod DNS name"
    );

    let mc = &master.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(master.spec.replicas, Some(3));
    assert_eq!(mc.image.as_deref(), Some("example.com/gfs-master:v2"));
    assert_eq!(mc.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0, "500m");
    let margs = mc.args.as_ref().unwrap().join(" ");
    assert!(margs.contains("--admin-listen 0.0.0.0:9090"), "{margs}");
    // Metrics and probes on the admin port, for both components.
    for c in [mc, c] {
        let ports: Vec<_> =
            c.ports.as_ref().unwrap().iter().map(|p| (p.name.clone().unwrap(), p.container_port)).collect();
        assert!(ports.contains(&("metrics".to_string(), 9090)), "{ports:?}");
        let probe = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        assert!(c.liveness_probe.as_ref().unwrap().http_get.is_some());
    }
    assert!(c.args.as_ref().unwrap().join(" ").contains("--admin-listen 0.0.0.0:9090"));
    assert!(
        // Pod 0 founds the group; the others are added one by one.
        margs.contains(&format!("--peers 0=alpha-master-0.alpha-master.{ns}.svc:9700 ")),
        "{margs}"
    );
    // In bytes: gfs-master reads "32M" as MiB, a quantity as 10^6.
    assert!(margs.contains("--chunk-size 33554432 "), "{margs}");
    let mv = master.spec.volume_claim_templates.as_ref().unwrap()[0].spec.clone().unwrap();
    assert_eq!(mv.storage_class_name.as_deref(), Some("standard"));
    assert_eq!(mv.resources.unwrap().requests.unwrap()["storage"].0, "10Gi");

    // Services, ServiceAccount, PDBs, all owned by the cluster.
    let svcs: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let headless = svcs.get("alpha-master").await.unwrap();
    assert_eq!(headless.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
    assert!(svcs.get("alpha-chunkserver").await.is_ok());
    assert_eq!(svcs.get("alpha").await.unwrap().spec.unwrap().ports.unwrap()[0].port, 9700);
    // Settings reach the masters as arguments (32Mi in bytes); no
    // ConfigMap, which no binary read.
    let margs = master.spec.template.spec.as_ref().unwrap().containers[0].args.clone().unwrap();
    assert!(margs.windows(2).any(|w| w[0] == "--chunk-size" && w[1] == (32u64 << 20).to_string()), "{margs:?}");
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns).list(&Default::default()).await.unwrap();
    assert!(cms.items.iter().all(|c| c.name_any() != "alpha-config"), "a ConfigMap no binary reads");
    let sa = Api::<ServiceAccount>::namespaced(admin.clone(), &ns).get("alpha-gfs").await.unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), &ns);
    let mpdb = pdbs.get("alpha-master").await.unwrap();
    assert_eq!(
        mpdb.spec.as_ref().unwrap().min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2)),
        "quorum of 3"
    );
    let cpdb = pdbs.get("alpha-chunkserver").await.unwrap();
    assert_eq!(
        cpdb.spec.as_ref().unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    for owners in [
        sts.owner_references(),
        master.owner_references(),
        headless.owner_references(),
        sa.owner_references(),
        cpdb.owner_references(),
    ] {
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].name.as_str(), owners[0].controller),
            ("GfsCluster", "alpha", Some(true))
        );
    }
    let managers: Vec<_> = sts.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&"gfs-operator".to_string()), "server-side apply field manager: {managers:?}");

    // Not ready yet: Available=False. Then play the StatefulSet controller.
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    wait("status NotEnough", || async { cond(&api.get("alpha").await.ok()?, "Available").filter(|c| c.0 == "False") })
        .await;
    set_sts_status(&admin, &ns, "alpha-master", 3, 3).await;
    set_sts_status(&admin, &ns, "alpha-chunkserver", 3, 3).await;
    let gc = wait("Available", || async {
        let gc = api.get("alpha").await.ok()?;
        (cond(&gc, "Available")? == ("True".into(), "Ready".into())).then_some(gc)
    })
    .await;
    let st = gc.status.clone().unwrap();
    assert_eq!(st.observed_generation, gc.metadata.generation);
    assert_eq!((st.ready_masters, st.ready_chunkservers, st.masters_ready.as_str()), (3, 3, "3/3"));
    assert_eq!(st.leader.as_deref(), Some(gfs.master.as_str()));
    assert_eq!(cond(&gc, "Degraded"), Some(("False".into(), "Healthy".into())));
    assert_eq!(cond(&gc, "Progressing"), Some(("False".into(), "Stable".into())));
    assert!(st.capacity_bytes > 0);
    assert_eq!(
        st.chunkserver_selector,
        "app.kubernetes.io/component=chunkserver,app.kubernetes.io/instance=alpha,app.kubernetes.io/name=gfs"
    );

    // Printer columns, as `kubectl get gfsc` shows them (Table response).
    let req = http::Request::get(format!("/apis/gfs.dev/v1alpha1/namespaces/{ns}/gfsclusters/alpha"))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let table: serde_json::Value = serde_json::from_str(&admin.request_text(req).await.unwrap()).unwrap();
    let cols: Vec<&str> =
        table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(cols, ["Name", "Masters", "Chunkservers", "Leader", "Under-replicated", "Lag", "Available", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!((cells[1].as_str(), cells[2].as_str(), cells[6].as_str()), (Some("3/3"), Some("3/3"), Some("True")));

    // Events.
    let reasons = event_reasons(&admin, &ns, "alpha").await;
    assert!(reasons.contains(&"Created".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"Available".to_string()), "{reasons:?}");

    // Finalizer + retention: whenDeleted=Delete removes the PVCs.
    assert!(gc.finalizers().contains(&gfs_operator::FINALIZER.to_string()));
    for i in 0..3 {
        create_pvc(&admin, &ns, "alpha", &format!("data-alpha-chunkserver-{i}")).await;
    }
    // A second cluster that retains its PVCs.
    let mut keep = cluster_json("beta", 3);
    keep["spec"]["pvcRetention"] = json!({"whenDeleted": "Retain"});
    create_cluster(&admin, &ns, keep).await;
    wait("beta sts", || async { get_sts(&admin, &ns, "beta-chunkserver").await }).await;
    create_pvc(&admin, &ns, "beta", "data-beta-chunkserver-0").await;
    wait("beta finalizer", || async { api.get("beta").await.ok().filter(|g| !g.finalizers().is_empty()) }).await;

    api.delete("alpha", &DeleteParams::default()).await.unwrap();
    api.delete("beta", &DeleteParams::default()).await.unwrap();
    wait("clusters gone", || async {
        (api.get_opt("alpha").await.unwrap().is_none() && api.get_opt("beta").await.unwrap().is_none()).then_some(())
    })
    .await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &ns);
    let left: Vec<String> = pvcs.list(&Default::default()).await.unwrap().items.iter().map(|p| p.name_any()).collect();
    // Deleting a PVC with the pvc-protection finalizer leaves it terminating
    // without a controller-manager; count those as deleted.
    let live: Vec<String> = pvcs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    assert_eq!(live, vec!["data-beta-chunkserver-0".to_string()], "all PVCs: {left:?}");
    assert!(get_sts(&admin, &ns, "alpha-chunkserver").await.is_none());
    assert!(get_sts(&admin, &ns, "beta-master").await.is_none());
    op.shutdown().await;
}

// With data on the drained server the master must copy its chunks (issue 4
// repair clones, after revoking the idle write lease) before it reports
// DECOMMISSIONED.
#[tokio::test]
async fn scale_down_waits_for_decommission() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "scaledown").await;
    let gfs = Gfs::start(4).await;
    gfs.put("/data", 6 << 20);
    let op = Operator::start(op_client, &ns, &gfs.master, "op-a");
    let mut v = cluster_json("gamma", 4);
    v["spec"]["pvcRetention"] = json!({"whenScaled": "Delete"});
    create_cluster(&admin, &ns, v).await;
    wait("sts", || async { get_sts(&admin, &ns, "gamma-chunkserver").await }).await;
    set_sts_status(&admin, &ns, "gamma-chunkserver", 4, 4).await;
    set_sts_status(&admin, &ns, "gamma-master", 1, 1).await;
    create_pvc(&admin, &ns, "gamma", "data-gamma-chunkserver-3").await;

    // `kubectl scale gfsc/gamma --replicas 3` = a patch of the scale subresource.
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    let scale = api.get_scale("gamma").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(4));
    api.patch_scale("gamma", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();

    // While the drain runs, status says so (or it already finished).
    wait("draining status", || async {
        let gc = api.get("gamma").await.ok()?;
        let st = gc.status.as_ref()?;
        let draining = st.drain.as_ref().is_some_and(|d| d.ordinal == 3)
            && cond(&gc, "Progressing") == Some(("True".into(), "Draining".into()));
        (draining || st.chunkservers == 3).then_some(())
    })
    .await;
    // Invariant at every observation: the StatefulSet shrinks only once the
    // master reports the highest ordinal DECOMMISSIONED.
    wait("scaled down", || async {
        let sts = get_sts(&admin, &ns, "gamma-chunkserver").await?;
        let state = gfs.state(3).await;
        if sts.spec.replicas == Some(3) {
            assert_eq!(state, "DECOMMISSIONED", "pod removed before its drain finished");
            return Some(());
        }
        assert_eq!(sts.spec.replicas, Some(4));
        None
    })
    .await;
    let reasons = event_reasons(&admin, &ns, "gamma").await;
    let started = reasons.iter().position(|r| r == "DrainStarted").expect("DrainStarted event");
    let done = reasons.iter().position(|r| r == "ScaledDown").expect("ScaledDown event");
    assert!(started < done, "{reasons:?}");
    assert!(
        reasons.contains(&"ProgressingFalse".to_string()) || reasons.contains(&"Progressing".to_string()),
        "{reasons:?}"
    );
    // whenScaled=Delete removed the drained chunkserver's PVC.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &ns);
    wait("pvc deleted", || async {
        pvcs.get_opt("data-gamma-chunkserver-3")
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    let gc = wait("drain cleared", || async {
        api.get("gamma")
            .await
            .ok()
            .filter(|g| g.status.as_ref().is_some_and(|s| s.drain.is_none() && s.chunkservers == 3))
    })
    .await;
    assert_eq!(gc.spec.chunkservers.replicas, 3);
    op.shutdown().await;
}

#[tokio::test]
async fn scale_down_of_an_empty_chunkserver_completes_and_scale_up_is_immediate() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "scaleempty").await;
    let gfs = Gfs::start(4).await;
    let op = Operator::start(op_client, &ns, &gfs.master, "op-a");
    let mut v = cluster_json("iota", 4);
    v["spec"]["pvcRetention"] = json!({"whenScaled": "Retain"});
    create_cluster(&admin, &ns, v).await;
    set_sts_status(&admin, &ns, "iota-chunkserver", 4, 4).await;
    set_sts_status(&admin, &ns, "iota-master", 1, 1).await;
    create_pvc(&admin, &ns, "iota", "data-iota-chunkserver-3").await;
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    api.patch_scale("iota", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
    wait("scaled down", || async {
        let sts = get_sts(&admin, &ns, "iota-chunkserver").await?;
        let state = gfs.state(3).await;
        if sts.spec.replicas == Some(3) {
            assert_eq!(state, "DECOMMISSIONED", "pod removed before its drain finished");
            return Some(());
        }
        None
    })
    .await;
    assert_eq!(count_events(&admin, &ns, "iota", "DrainStarted").await, 1);
    assert_eq!(count_events(&admin, &ns, "iota", "ScaledDown").await, 1);
    // whenScaled=Retain keeps the PVC.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &ns);
    assert!(
        pvcs.get_opt("data-iota-chunkserver-3").await.unwrap().is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    );
    wait("drain cleared", || async {
        api.get("iota")
            .await
            .ok()
            .filter(|g| g.status.as_ref().is_some_and(|s| s.drain.is_none() && s.chunkservers == 3))
    })
    .await;
    let retired = api.get("iota").await.unwrap().status.unwrap().retired;
    assert_eq!(
        retired.iter().map(|r| r.ordinal).collect::<Vec<_>>(),
        [3],
        "{:?}",
        api.get("iota").await.unwrap().status
    );
    // Scale-up needs no drain: the StatefulSet follows at once.
    api.patch_scale("iota", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 5}}))).await.unwrap();
    wait("scaled up", || async {
        get_sts(&admin, &ns, "iota-chunkserver").await.filter(|s| s.spec.replicas == Some(5))
    })
    .await;
    // Ordinal 3 comes back on its kept PVC with its old server id: the
    // master takes it into service again, and the status forgets it.
    wait("recommissioned", || async { (gfs.state(3).await == "LIVE").then_some(()) }).await;
    wait("retired cleared", || async {
        api.get("iota").await.ok().filter(|g| g.status.as_ref().is_some_and(|s| s.retired.is_empty()))
    })
    .await;
    assert_eq!(count_events(&admin, &ns, "iota", "Recommissioned").await, 1);
    op.shutdown().await;
}

#[tokio::test]
async fn lag_above_target_scales_up_one_step_at_a_time() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "autoscale").await;
    let mut gfs = Gfs::start(3).await;
    gfs.put("/data", 4 << 20);
    // Three servers, replication 3: losing one leaves a backlog nobody can
    // take until the cluster grows.
    gfs.kill_chunkserver(0);
    let op = Operator::start(op_client, &ns, &gfs.master, "op-a");
    let mut v = cluster_json("delta", 3);
    v["spec"]["autoscaling"] = json!({"enabled": true, "minReplicas": 3, "maxReplicas": 5, "targetReplicationLag": "0", "scaleUpStabilizationSeconds": 1});
    create_cluster(&admin, &ns, v).await;
    wait("sts", || async { get_sts(&admin, &ns, "delta-chunkserver").await }).await;
    set_sts_status(&admin, &ns, "delta-master", 1, 1).await;
    set_sts_status(&admin, &ns, "delta-chunkserver", 3, 3).await;
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    wait("scaled to 4", || async {
        api.get("delta").await.ok().filter(|g| g.spec.chunkservers.replicas == 4).map(|_| ())
    })
    .await;
    let sts = wait("sts at 4", || async {
        get_sts(&admin, &ns, "delta-chunkserver").await.filter(|s| s.spec.replicas == Some(4))
    })
    .await;
    assert_eq!(sts.spec.replicas, Some(4));
    let gc = api.get("delta").await.unwrap();
    assert!(gc.status.unwrap().replication_lag_bytes > 0);
    // The new pod is not ready: no further step, however long the lag lasts.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(api.get("delta").await.unwrap().spec.chunkservers.replicas, 4, "one step at a time");
    set_sts_status(&admin, &ns, "delta-chunkserver", 4, 4).await;
    wait("scaled to 5", || async {
        api.get("delta").await.ok().filter(|g| g.spec.chunkservers.replicas == 5).map(|_| ())
    })
    .await;
    wait("sts at 5", || async {
        get_sts(&admin, &ns, "delta-chunkserver").await.filter(|s| s.spec.replicas == Some(5))
    })
    .await;
    set_sts_status(&admin, &ns, "delta-chunkserver", 5, 5).await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(api.get("delta").await.unwrap().spec.chunkservers.replicas, 5, "capped at maxReplicas");
    assert_eq!(count_events(&admin, &ns, "delta", "AutoscaledUp").await, 2);
    op.shutdown().await;
}

/// Creates the Node if needed and sets its Ready condition; a NotReady node
/// turned NotReady 120 s ago (past any grace the tests use).
async fn node(admin: &Client, name: &str, ready: bool) {
    node_since(admin, name, ready, if ready { 0 } else { 120 }).await
}

async fn node_since(admin: &Client, name: &str, ready: bool, secs_ago: i64) {
    let api: Api<Node> = Api::all(admin.clone());
    if api.get_opt(name).await.unwrap().is_none() {
        api.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap())
            .await
            .unwrap();
    }
    let since = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(secs_ago);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}, "reason": "Test",
            "lastHeartbeatTime": since.to_string(), "lastTransitionTime": since.to_string()}]}})),
    )
    .await
    .unwrap();
}

async fn pod_on(admin: &Client, ns: &str, name: &str, cluster: &str, node: &str) {
    let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let p = json!({"metadata": {"name": name, "labels": {"app.kubernetes.io/name": "gfs", "app.kubernetes.io/instance": cluster, "app.kubernetes.io/component": "chunkserver"}},
        "spec": {"nodeName": node, "containers": [{"name": "chunkserver", "image": "x"}]}});
    api.create(&PostParams::default(), &serde_json::from_value(p).unwrap()).await.unwrap();
}

#[tokio::test]
async fn node_loss_marks_lost_and_recovers_pods_without_duplicates_after_restart() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "nodeloss").await;
    let mut gfs = Gfs::start(4).await;
    gfs.put("/data", 4 << 20);
    let mut v = cluster_json("eps", 4);
    v["spec"]["nodeLoss"] = json!({"gracePeriodSeconds": 30, "pvcPolicy": "Delete"});
    create_cluster(&admin, &ns, v).await;
    let nodes: Vec<String> = (0..4).map(|i| format!("{ns}-n{i}")).collect();
    for (i, n) in nodes.iter().enumerate() {
        node(&admin, n, true).await;
        pod_on(&admin, &ns, &format!("eps-chunkserver-{i}"), "eps", n).await;
        create_pvc(&admin, &ns, "eps", &format!("data-eps-chunkserver-{i}")).await;
    }
    let op = Operator::start(op_client.clone(), &ns, &gfs.master, "op-a");
    wait("sts", || async { get_sts(&admin, &ns, "eps-chunkserver").await }).await;

    // Node 2 goes NotReady (past the 30 s grace: its transition was 120 s
    // ago) and its chunkserver process dies; node 3 is deleted.
    gfs.kill_chunkserver(2);
    node(&admin, &nodes[2], false).await;
    Api::<Node>::all(admin.clone()).delete(&nodes[3], &DeleteParams::default()).await.unwrap();

    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    wait("pods force-deleted", || async {
        (pods.get_opt("eps-chunkserver-2").await.unwrap().is_none()
            && pods.get_opt("eps-chunkserver-3").await.unwrap().is_none())
        .then_some(())
    })
    .await;
    assert!(pods.get_opt("eps-chunkserver-0").await.unwrap().is_some(), "pods on ready nodes stay");
    assert_eq!(gfs.state(2).await, "LOST");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &ns);
    for i in [2, 3] {
        let p = pvcs.get_opt(&format!("data-eps-chunkserver-{i}")).await.unwrap();
        assert!(p.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "PVC of lost pod {i} deleted");
    }
    assert!(
        pvcs.get_opt("data-eps-chunkserver-1").await.unwrap().is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    );
    wait("events", || async { (count_events(&admin, &ns, "eps", "PodForceDeleted").await == 2).then_some(()) }).await;
    assert_eq!(count_events(&admin, &ns, "eps", "MarkedLost").await, 2);
    assert!(count_events(&admin, &ns, "eps", "PvcDeleted").await >= 2);

    // Restart the operator: no action is repeated.
    op.shutdown().await;
    let op = Operator::start(op_client, &ns, &gfs.master, "op-b");
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    wait("new leader", || async {
        leases.get("gfs-operator").await.ok()?.spec?.holder_identity.filter(|h| h == "op-b")
    })
    .await;
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    // Trigger and wait for a reconcile by the new process.
    api.patch("eps", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": "1"}}})))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(count_events(&admin, &ns, "eps", "MarkedLost").await, 2, "no duplicate mark-lost after restart");
    assert_eq!(count_events(&admin, &ns, "eps", "PodForceDeleted").await, 2);
    op.shutdown().await;
}

/// Node loss comes from the Node watch and the grace-period timer: the
/// periodic requeue is 10 minutes here, far beyond any wait below.
#[tokio::test]
async fn node_watch_and_grace_timer_act_without_the_periodic_requeue() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "nodewatch").await;
    let mut gfs = Gfs::start(3).await;
    let mut v = cluster_json("iota", 3);
    v["spec"]["nodeLoss"] = json!({"gracePeriodSeconds": 5, "pvcPolicy": "Retain"});
    create_cluster(&admin, &ns, v).await;
    let nodes: Vec<String> = (0..3).map(|i| format!("{ns}-n{i}")).collect();
    for (i, n) in nodes.iter().enumerate() {
        node(&admin, n, true).await;
        pod_on(&admin, &ns, &format!("iota-chunkserver-{i}"), "iota", n).await;
    }
    let op = Operator::start_with_requeue(op_client, &ns, &gfs.master, "op-a", Duration::from_secs(600));
    wait("sts", || async { get_sts(&admin, &ns, "iota-chunkserver").await }).await;
    set_sts_status(&admin, &ns, "iota-master", 1, 1).await;
    set_sts_status(&admin, &ns, "iota-chunkserver", 3, 3).await;
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    wait("available", || async {
        let gc = api.get("iota").await.ok()?;
        let c = gc.status?.conditions.into_iter().find(|c| c.type_ == "Available")?;
        (c.status == "True").then_some(())
    })
    .await;

    // Node 1 turns NotReady now: nothing happens inside the 5 s grace, and
    // the pod goes once it ends, with no other trigger than the timer the
    // Node event started.
    gfs.kill_chunkserver(1);
    let down = Instant::now();
    node_since(&admin, &nodes[1], false, 0).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pods.get_opt("iota-chunkserver-1").await.unwrap().is_some(), "deleted inside the grace period");
    wait("pod 1 force-deleted", || async { pods.get_opt("iota-chunkserver-1").await.unwrap().is_none().then_some(()) })
        .await;
    // The API stores lastTransitionTime in whole seconds, so the grace may
    // start up to 1 s before `down`.
    assert!(down.elapsed() >= Duration::from_secs(4), "deleted after {:?}, before the grace ended", down.elapsed());
    assert_eq!(gfs.state(1).await, "LOST");
    assert_eq!(count_events(&admin, &ns, "iota", "MarkedLost").await, 1);

    // Node 2 is deleted: its pod goes on the watch event.
    Api::<Node>::all(admin.clone()).delete(&nodes[2], &DeleteParams::default()).await.unwrap();
    wait("pod 2 force-deleted", || async { pods.get_opt("iota-chunkserver-2").await.unwrap().is_none().then_some(()) })
        .await;
    assert!(pods.get_opt("iota-chunkserver-0").await.unwrap().is_some(), "the pod on the ready node stays");
    op.shutdown().await;
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_fail_over() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "leader").await;
    let gfs = Gfs::start(3).await;
    let a = Operator::start(op_client.clone(), &ns, &gfs.master, "op-a");
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    wait("a leads", || async { leases.get("gfs-operator").await.ok()?.spec?.holder_identity.filter(|h| h == "op-a") })
        .await;
    let b = Operator::start(op_client, &ns, &gfs.master, "op-b");
    create_cluster(&admin, &ns, cluster_json("zeta", 3)).await;
    wait("sts", || async { get_sts(&admin, &ns, "zeta-chunkserver").await }).await;
    let lease = leases.get("gfs-operator").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("op-a"), "b must not take a held lease");
    // The Event follows the StatefulSet; wait for it, then make sure no
    // second reconciler adds another.
    wait("Created event", || async { (count_events(&admin, &ns, "zeta", "Created").await >= 1).then_some(()) }).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(count_events(&admin, &ns, "zeta", "Created").await, 1, "only the leader reconciles");

    a.shutdown().await;
    wait("b leads", || async { leases.get("gfs-operator").await.ok()?.spec?.holder_identity.filter(|h| h == "op-b") })
        .await;
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    api.patch_scale("zeta", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}}))).await.unwrap();
    wait("b reconciles", || async {
        get_sts(&admin, &ns, "zeta-chunkserver").await.filter(|s| s.spec.replicas == Some(4))
    })
    .await;
    assert!(leases.get("gfs-operator").await.unwrap().spec.unwrap().lease_transitions.unwrap_or(0) >= 1);
    b.shutdown().await;
}

#[tokio::test]
async fn image_change_rolls_one_pod_at_a_time_gated_on_under_replication() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "upgrade").await;
    let mut gfs = Gfs::start(3).await;
    gfs.put("/data", 3 << 20);
    let op = Operator::start(op_client, &ns, &gfs.master, "op-a");
    create_cluster(&admin, &ns, cluster_json("eta", 3)).await;
    wait("sts", || async { get_sts(&admin, &ns, "eta-chunkserver").await }).await;
    set_sts_status(&admin, &ns, "eta-master", 1, 1).await;
    set_sts_status(&admin, &ns, "eta-chunkserver", 3, 3).await;
    let partition = |s: &StatefulSet| {
        s.spec.update_strategy.as_ref().and_then(|u| u.rolling_update.as_ref()).and_then(|r| r.partition)
    };
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    api.patch(
        "eta",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"images": {"chunkserver": "example.com/gfs-chunkserver:v3"}}})),
    )
    .await
    .unwrap();
    // The new template arrives with every pod held (partition 3).
    wait("partition 3", || async { get_sts(&admin, &ns, "eta-chunkserver").await.filter(|s| partition(s) == Some(3)) })
        .await;
    // The StatefulSet controller observes the new generation; nothing updated yet.
    set_sts_status(&admin, &ns, "eta-chunkserver", 3, 0).await;
    // First pod (highest ordinal) is let through: partition 2.
    wait("partition 2", || async { get_sts(&admin, &ns, "eta-chunkserver").await.filter(|s| partition(s) == Some(2)) })
        .await;
    // It came back updated and ready: next one.
    set_sts_status(&admin, &ns, "eta-chunkserver", 3, 1).await;
    wait("partition 1", || async { get_sts(&admin, &ns, "eta-chunkserver").await.filter(|s| partition(s) == Some(1)) })
        .await;
    // Now a chunkserver dies: chunks are under-replicated and the rollout holds.
    gfs.kill_chunkserver(0);
    wait("under-replicated", || async {
        api.get("eta").await.ok().filter(|g| g.status.as_ref().is_some_and(|s| s.under_replicated_chunks > 0))
    })
    .await;
    set_sts_status(&admin, &ns, "eta-chunkserver", 3, 2).await;
    let gc = wait("rollout waits", || async {
        let gc = api.get("eta").await.ok()?;
        let c = gc.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Progressing")?.clone();
        c.message.contains("under-replicated").then_some(gc)
    })
    .await;
    assert!(gc.status.is_some());
    assert_eq!(
        partition(&get_sts(&admin, &ns, "eta-chunkserver").await.unwrap()),
        Some(1),
        "held while chunks are under-replicated"
    );
    op.shutdown().await;
}

/// Changing `masters` changes the master group one member at a time: pods
/// first then members when growing, members first then pods when
/// shrinking. Real master processes play the pods.
#[tokio::test]
async fn master_count_changes_drive_membership_one_member_at_a_time() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "members").await;
    let pods = MasterPods::start(3).await;
    wait("founder leads", || async { (pods.voters().await? == vec![0]).then_some(()) }).await;
    let op = Operator::start_with_master_pods(op_client, &ns, &pods.addrs[&0], pods.addrs.clone(), "op-m");
    let spec = json!({
        "apiVersion": "gfs.dev/v1alpha1", "kind": "GfsCluster", "metadata": {"name": "mm"},
        "spec": {"masters": {"replicas": 1, "storage": {"size": "1Gi"}}, "chunkservers": {"replicas": 3, "storage": {"size": "1Gi"}},
                 "tls": {"enabled": false}},
    });
    create_cluster(&admin, &ns, spec).await;
    wait("master sts", || async { get_sts(&admin, &ns, "mm-master").await }).await;
    set_sts_status(&admin, &ns, "mm-master", 1, 1).await;

    // 1 -> 3: the pod count grows one at a time, and each member is added
    // only once its pod is ready.
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    api.patch("mm", &PatchParams::default(), &Patch::Merge(json!({"spec": {"masters": {"replicas": 3}}})))
        .await
        .unwrap();
    for want in [2, 3] {
        let sts = wait("master sts grows", || async {
            get_sts(&admin, &ns, "mm-master").await.filter(|s| s.spec.replicas == Some(want))
        })
        .await;
        assert_eq!(sts.spec.replicas, Some(want));
        assert_eq!(pods.voters().await.unwrap().len() as i32, want - 1, "member added before its pod was ready");
        set_sts_status(&admin, &ns, "mm-master", want, want).await;
        wait("member added", || async { (pods.voters().await?.len() as i32 == want).then_some(()) }).await;
    }
    assert_eq!(pods.voters().await.unwrap(), vec![0, 1, 2]);

    // 3 -> 1: the member goes first, then its pod.
    api.patch("mm", &PatchParams::default(), &Patch::Merge(json!({"spec": {"masters": {"replicas": 1}}})))
        .await
        .unwrap();
    for want in [2, 1] {
        wait("member removed", || async { (pods.voters().await?.len() as i32 <= want).then_some(()) }).await;
        let sts = wait("master sts shrinks", || async {
            get_sts(&admin, &ns, "mm-master").await.filter(|s| s.spec.replicas == Some(want))
        })
        .await;
        assert_eq!(sts.spec.replicas, Some(want));
        set_sts_status(&admin, &ns, "mm-master", want, want).await;
    }
    assert_eq!(pods.voters().await.unwrap(), vec![0]);
    // Two adds and two removes, each recorded once.
    assert_eq!(count_events(&admin, &ns, "mm", "MasterMembership").await, 4);
    op.shutdown().await;
}

/// A child the apiserver refuses (resources whose request exceeds their
/// limit pass the CRD schema but not StatefulSet validation) is reported in
/// the `Reconciled` condition, a Warning Event and the failure metric, and
/// does not stop the rest: the master StatefulSet and the status are still
/// written. Fixing the spec clears it.
#[tokio::test]
async fn a_refused_child_is_reported_and_the_rest_still_reconciles() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "refused").await;
    let gfs = Gfs::start(3).await;
    let op = Operator::start(op_client, &ns, &gfs.master, "op-refused");
    let mut v = cluster_json("rho", 3);
    v["spec"]["chunkservers"]["resources"] = json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}});
    // Pod overrides reach the StatefulSet that the apiserver accepts.
    v["spec"]["masters"]["podTemplate"] = json!({
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gfs", "effect": "NoSchedule"}],
        "labels": {"team": "storage"},
    });
    create_cluster(&admin, &ns, v).await;
    let gcs: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);

    let c = wait("Reconciled False", || async {
        let gc = gcs.get("rho").await.ok()?;
        let c = gc.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Reconciled")?.clone();
        (c.status == "False").then_some(c)
    })
    .await;
    assert_eq!(c.reason, "KubeInvalid");
    assert!(c.message.contains("apply StatefulSet rho-chunkserver"), "{}", c.message);
    assert!(c.message.contains("must be less than or equal to cpu limit"), "{}", c.message);
    let gc = gcs.get("rho").await.unwrap();
    assert_eq!(c.observed_generation, gc.metadata.generation);
    // The rest ran: the masters' StatefulSet, the Services, the status.
    let m = get_sts(&admin, &ns, "rho-master").await.unwrap();
    let pod = m.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "ssd");
    assert_eq!(pod.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
    assert_eq!(m.spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap()["team"], "storage");
    assert!(get_sts(&admin, &ns, "rho-chunkserver").await.is_none());
    assert!(Api::<Service>::namespaced(admin.clone(), &ns).get_opt("rho").await.unwrap().is_some());
    let st = gc.status.as_ref().unwrap();
    assert_eq!(st.observed_generation, gc.metadata.generation);
    assert!(st.conditions.iter().any(|c| c.type_ == "Available"), "{:?}", st.conditions);
    wait("ReconcileFailed event", || async {
        (count_events(&admin, &ns, "rho", "ReconcileFailed").await >= 1).then_some(())
    })
    .await;
    let failures = |label: &str| {
        op.metrics.failures.get_or_create(&gfs_operator::metrics::ErrorLabels { error: label.into() }).get()
    };
    assert!(failures("KubeInvalid") >= 1);

    // Fixed: the StatefulSet appears and the condition clears.
    gcs.patch(
        "rho",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"chunkservers": {"resources": {"limits": {"cpu": "4"}}}}})),
    )
    .await
    .unwrap();
    wait("chunkserver sts", || get_sts(&admin, &ns, "rho-chunkserver")).await;
    let gen_ = gcs.get("rho").await.unwrap().metadata.generation;
    wait("Reconciled True", || async {
        let gc = gcs.get("rho").await.ok()?;
        let c = gc.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Reconciled")?.clone();
        (c.status == "True" && c.observed_generation == gen_).then_some(())
    })
    .await;
    op.shutdown().await;
}

/// Plays the StatefulSet controller and the provisioner: a Bound PVC of
/// `size` in `class` for `component` pod `name`.
async fn bound_pvc(admin: &Client, ns: &str, cluster: &str, component: &str, name: &str, class: &str, size: &str) {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), ns);
    let pvc = json!({"metadata": {"name": name, "labels": {"app.kubernetes.io/name": "gfs", "app.kubernetes.io/instance": cluster, "app.kubernetes.io/component": component}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class, "resources": {"requests": {"storage": size}}}});
    api.create(&PostParams::default(), &serde_json::from_value(pvc).unwrap()).await.unwrap();
    pvc_capacity(admin, ns, name, size).await;
}

/// Plays the resizer: the volume now has `size`.
async fn pvc_capacity(admin: &Client, ns: &str, name: &str, size: &str) {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), ns);
    let st = json!({"status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&st)).await.unwrap();
}

fn requested(p: &PersistentVolumeClaim) -> String {
    p.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0.clone()
}

/// A larger storage size grows the bound PVCs whose StorageClass allows
/// it (the StatefulSet's claim template, which cannot change, is left as
/// it was) and the status follows them; a class that does not allow it is
/// named in the status and a Warning Event; shrinking or changing the
/// class is refused by the apiserver with a clear message.
#[tokio::test]
async fn storage_grows_where_the_class_allows_and_never_shrinks() {
    use k8s_openapi::api::storage::v1::StorageClass;
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "storage").await;
    let classes: Api<StorageClass> = Api::all(admin.clone());
    let (grow, fixed) = (format!("{ns}-grow"), format!("{ns}-fixed"));
    for (name, allow) in [(&grow, true), (&fixed, false)] {
        let sc = json!({"metadata": {"name": name}, "provisioner": "example.com/none", "allowVolumeExpansion": allow});
        classes.create(&PostParams::default(), &serde_json::from_value(sc).unwrap()).await.unwrap();
    }
    let gfs = Gfs::start(3).await;
    let op = Operator::start(op_client, &ns, &gfs.master, "op-storage");
    let mut v = cluster_json("sigma", 3);
    v["spec"]["masters"]["storage"] = json!({"size": "1Gi", "storageClassName": fixed});
    v["spec"]["chunkservers"]["storage"] = json!({"size": "1Gi", "storageClassName": grow});
    create_cluster(&admin, &ns, v).await;
    wait("chunkserver sts", || get_sts(&admin, &ns, "sigma-chunkserver")).await;
    bound_pvc(&admin, &ns, "sigma", "master", "data-sigma-master-0", &fixed, "1Gi").await;
    for i in 0..3 {
        bound_pvc(&admin, &ns, "sigma", "chunkserver", &format!("data-sigma-chunkserver-{i}"), &grow, "1Gi").await;
    }
    let gcs: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &ns);
    let grow_to = |path: &'static str, size: &'static str| {
        let gcs = gcs.clone();
        async move {
            let patch = json!({"spec": {path: {"storage": {"size": size}}}});
            gcs.patch("sigma", &PatchParams::default(), &Patch::Merge(patch)).await
        }
    };
    let resized = || async {
        let gc = gcs.get("sigma").await.ok()?;
        let c = gc.status.as_ref()?.conditions.iter().find(|c| c.type_ == "StorageResized")?.clone();
        Some((c.status, c.reason, c.message, c.observed_generation == gc.metadata.generation))
    };

    grow_to("chunkservers", "2Gi").await.unwrap();
    for i in 0..3 {
        let name = format!("data-sigma-chunkserver-{i}");
        wait("PVC request 2Gi", || async { (requested(&pvcs.get(&name).await.ok()?) == "2Gi").then_some(()) }).await;
    }
    let (status, _, msg, _) = wait("Resizing", || async { resized().await.filter(|r| r.1 == "Resizing" && r.3) }).await;
    assert_eq!(status, "False");
    assert!(msg.contains("data-sigma-chunkserver-0"), "{msg}");
    // The claim template is the one the StatefulSet was made with, and the
    // apply of the StatefulSet was not refused.
    let sts = get_sts(&admin, &ns, "sigma-chunkserver").await.unwrap();
    let vct = &sts.spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(vct.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0, "1Gi");
    for i in 0..3 {
        pvc_capacity(&admin, &ns, &format!("data-sigma-chunkserver-{i}"), "2Gi").await;
    }
    wait("AtRequestedSize", || async { resized().await.filter(|r| r.0 == "True" && r.1 == "AtRequestedSize") }).await;
    let gc = gcs.get("sigma").await.unwrap();
    let rec = gc.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Reconciled").unwrap();
    assert_eq!(rec.status, "True", "{}", rec.message);

    // The masters' class does not allow expansion: said, not attempted.
    grow_to("masters", "2Gi").await.unwrap();
    let (_, _, msg, _) =
        wait("ExpansionNotAllowed", || async { resized().await.filter(|r| r.1 == "ExpansionNotAllowed") }).await;
    assert!(msg.contains(&format!("StorageClass {fixed} does not allow volume expansion")), "{msg}");
    assert!(msg.contains("data-sigma-master-0"), "{msg}");
    assert_eq!(requested(&pvcs.get("data-sigma-master-0").await.unwrap()), "1Gi");
    wait("StorageResizedFalse warning", || async {
        (count_events(&admin, &ns, "sigma", "StorageResizedFalse").await >= 1).then_some(())
    })
    .await;

    // Shrinking and a new class are refused by the CRD's rules.
    let err = grow_to("chunkservers", "1Gi").await.unwrap_err().to_string();
    assert!(err.contains("storage size cannot shrink from 2Gi to 1Gi"), "{err}");
    let patch = json!({"spec": {"chunkservers": {"storage": {"storageClassName": fixed}}}});
    let err = gcs.patch("sigma", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap_err().to_string();
    assert!(err.contains("storageClassName cannot change"), "{err}");
    op.shutdown().await;
    for name in [&grow, &fixed] {
        classes.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

/// Fencing comes before replacing: with the master unreachable, a pod on a
/// lost node is left in place (the status says why) rather than
/// force-deleted while its old process may still count at the master. Once
/// the master answers, it is marked lost and then replaced. The node here
/// is lost through the out-of-service taint, which skips the grace period.
#[tokio::test]
async fn a_lost_pod_is_fenced_at_the_master_before_it_is_replaced() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "fence").await;
    let mut gfs = Gfs::start(4).await;
    let mut v = cluster_json("phi", 4);
    v["spec"]["nodeLoss"] = json!({"gracePeriodSeconds": 3600, "pvcPolicy": "Retain"});
    // A master address nobody listens on.
    v["metadata"]["annotations"] = json!({"gfs.dev/master-address": "127.0.0.1:1"});
    create_cluster(&admin, &ns, v).await;
    let nodes: Vec<String> = (0..4).map(|i| format!("{ns}-n{i}")).collect();
    for (i, n) in nodes.iter().enumerate() {
        node(&admin, n, true).await;
        pod_on(&admin, &ns, &format!("phi-chunkserver-{i}"), "phi", n).await;
    }
    let op = Operator::start(op_client, &ns, &gfs.master, "op-fence");
    wait("sts", || get_sts(&admin, &ns, "phi-chunkserver")).await;
    // Node 1 is shut down for good: NotReady for 5 s only (the grace is an
    // hour), but tainted out-of-service.
    node_since(&admin, &nodes[1], false, 5).await;
    let taint = json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]}});
    Api::<Node>::all(admin.clone()).patch(&nodes[1], &PatchParams::default(), &Patch::Merge(taint)).await.unwrap();
    let gcs: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    wait("the pod waits for the master", || async {
        let gc = gcs.get("phi").await.ok()?;
        let c = gc.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Progressing")?.clone();
        c.message.contains("wait for the master to fence them").then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    assert!(pods.get_opt("phi-chunkserver-1").await.unwrap().is_some(), "replaced before it was fenced");
    assert_eq!(gfs.state(1).await, "LIVE");

    // The node's shutdown took the process with it (were it still running,
    // its next heartbeat would register it again and undo LOST: the master
    // takes a registration as the server being back).
    gfs.kill_chunkserver(1);
    // The master is reachable again: fenced (LOST), then replaced.
    let patch = json!({"metadata": {"annotations": {"gfs.dev/master-address": gfs.master}}});
    gcs.patch("phi", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    wait("pod force-deleted", || async { pods.get_opt("phi-chunkserver-1").await.unwrap().is_none().then_some(()) })
        .await;
    assert_eq!(gfs.state(1).await, "LOST");
    assert_eq!(count_events(&admin, &ns, "phi", "MarkedLost").await, 1);
    assert!(pods.get_opt("phi-chunkserver-0").await.unwrap().is_some(), "pods on ready nodes stay");
    op.shutdown().await;
}
