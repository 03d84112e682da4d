//! Renders the child objects of a GfsCluster. Pure: no I/O, so unit tests
//! check the mapping field by field.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec,
    Probe, Service, ServiceAccount, ServicePort, ServiceSpec, TopologySpreadConstraint, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{GfsCluster, PodOverrides, WhenUnsatisfiable};

/// Port of the master's gRPC service.
pub const MASTER_PORT: i32 = 9700;
/// Port of the chunkserver's gRPC service.
pub const CHUNK_PORT: i32 = 9800;
/// Admin HTTP port (`/metrics`, `/healthz`, `/readyz`) of masters and
/// chunkservers.
pub const ADMIN_PORT: i32 = 9090;
/// Name of the data volume (and PVC template) in both StatefulSets.
pub const DATA_VOLUME: &str = "data";

/// The two server roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// `gfs-master`.
    Master,
    /// `gfs-chunkserver`.
    Chunkserver,
}

impl Component {
    /// Returns the `app.kubernetes.io/component` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Master => "master",
            Component::Chunkserver => "chunkserver",
        }
    }
}

/// Names of the children of one cluster.
#[derive(Clone, Debug)]
pub struct Names {
    /// The GfsCluster's name.
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
}

impl Names {
    /// Returns the names for `gc`.
    pub fn of(gc: &GfsCluster) -> Self {
        Self { cluster: gc.name_any(), namespace: gc.namespace().unwrap_or_else(|| "default".into()) }
    }
    /// StatefulSet (and headless Service) of a component.
    pub fn sts(&self, c: Component) -> String {
        format!("{}-{}", self.cluster, c.as_str())
    }
    /// The client Service (masters): `<cluster>`.
    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }
    /// ServiceAccount name of the pods.
    pub fn service_account(&self) -> String {
        format!("{}-gfs", self.cluster)
    }
    /// PDB name of a component.
    pub fn pdb(&self, c: Component) -> String {
        format!("{}-{}", self.cluster, c.as_str())
    }
    /// Pod name of an ordinal.
    pub fn pod(&self, c: Component, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.sts(c))
    }
    /// Ordinal of a pod of component `c` (the inverse of [`Names::pod`]);
    /// `None` for any other name.
    pub fn ordinal(&self, c: Component, pod: &str) -> Option<i32> {
        pod.strip_prefix(&self.sts(c))?.strip_prefix('-')?.parse().ok()
    }
    /// PVC name of an ordinal (`<template>-<pod>`, as the StatefulSet names it).
    pub fn pvc(&self, c: Component, ordinal: i32) -> String {
        format!("{DATA_VOLUME}-{}", self.pod(c, ordinal))
    }
    /// Stable DNS address of a pod, as the chunkserver advertises it.
    pub fn pod_address(&self, c: Component, ordinal: i32) -> String {
        let port = if c == Component::Master { MASTER_PORT } else { CHUNK_PORT };
        format!("{}.{}.{}.svc:{port}", self.pod(c, ordinal), self.sts(c), self.namespace)
    }
    /// In-cluster address of the client Service.
    pub fn master_address(&self) -> String {
        format!("{}.{}.svc:{MASTER_PORT}", self.client_service(), self.namespace)
    }
}

/// Labels shared by every child of the cluster.
pub fn cluster_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "gfs".into()),
        ("app.kubernetes.io/instance".into(), cluster.into()),
        ("app.kubernetes.io/managed-by".into(), "gfs-operator".into()),
    ])
}

/// Selector labels of one component's pods.
pub fn selector_labels(cluster: &str, c: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "gfs".into()),
        ("app.kubernetes.io/instance".into(), cluster.into()),
        ("app.kubernetes.io/component".into(), c.as_str().into()),
    ])
}

/// Label selector string of one component's pods.
pub fn selector_string(cluster: &str, c: Component) -> String {
    selector_labels(cluster, c).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn component_labels(cluster: &str, c: Component) -> BTreeMap<String, String> {
    let mut l = cluster_labels(cluster);
    l.extend(selector_labels(cluster, c));
    l
}

fn meta(gc: &GfsCluster, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: gc.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner(gc)]),
        ..Default::default()
    }
}

/// Returns the controller owner reference to `gc`.
pub fn owner(gc: &GfsCluster) -> OwnerReference {
    gc.controller_owner_ref(&()).expect("GfsCluster has a name and uid")
}

/// `--peers` value: pod 0 only (ids are pod ordinals). Pod 0 founds a
/// group of one on first start; every other pod starts empty and waits
/// until the operator adds it (`AddMaster`), one member at a time. The
/// value never depends on the replica count, so scaling does not change
/// the pod template.
pub fn master_peers(n: &Names) -> String {
    format!("0={}", n.pod_address(Component::Master, 0))
}

/// Returns the ServiceAccount the gfs pods run as.
pub fn service_account(gc: &GfsCluster) -> ServiceAccount {
    let n = Names::of(gc);
    ServiceAccount { metadata: meta(gc, n.service_account(), cluster_labels(&n.cluster)), ..Default::default() }
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// Returns the headless Service of a component (peer discovery, stable pod DNS).
pub fn headless_service(gc: &GfsCluster, c: Component) -> Service {
    let n = Names::of(gc);
    let p = if c == Component::Master { port("grpc", MASTER_PORT) } else { port("grpc", CHUNK_PORT) };
    Service {
        metadata: meta(gc, n.sts(c), component_labels(&n.cluster, c)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&n.cluster, c)),
            ports: Some(vec![p]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Returns the client Service in front of the masters.
pub fn client_service(gc: &GfsCluster) -> Service {
    let n = Names::of(gc);
    Service {
        metadata: meta(gc, n.client_service(), component_labels(&n.cluster, Component::Master)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&n.cluster, Component::Master)),
            ports: Some(vec![port("grpc", MASTER_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Returns the PDB of a component: masters keep a quorum (a single master
/// may go), chunkservers lose at most one at a time.
pub fn pdb(gc: &GfsCluster, c: Component) -> PodDisruptionBudget {
    let n = Names::of(gc);
    let (min_available, max_unavailable) = match c {
        // A single master has no quorum to keep: a budget of "1 available"
        // would block every node drain forever, so it may go (the cluster
        // pauses while it moves).
        Component::Master if gc.spec.masters.replicas < 3 => (None, Some(IntOrString::Int(1))),
        Component::Master => (Some(IntOrString::Int(gc.spec.masters.replicas / 2 + 1)), None),
        Component::Chunkserver => (None, Some(IntOrString::Int(1))),
    };
    PodDisruptionBudget {
        metadata: meta(gc, n.pdb(c), component_labels(&n.cluster, c)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available,
            max_unavailable,
            selector: Some(LabelSelector { match_labels: Some(selector_labels(&n.cluster, c)), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pvc_template(cluster: &str, c: Component, size: &str, class: &Option<String>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(component_labels(cluster, c)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Keeps the live StatefulSet's claim template in `want`: the apiserver
/// refuses any change to `volumeClaimTemplates`, so a new size is carried
/// out on the PVCs (`storage::reconcile`), not by the template.
pub fn keep_claim_templates(want: &mut StatefulSet, live: Option<&StatefulSet>) {
    let Some(live) = live.and_then(|l| l.spec.volume_claim_templates.as_ref()) else { return };
    let Some(want) = want.spec.volume_claim_templates.as_mut() else { return };
    for w in want.iter_mut() {
        let Some(l) = live.iter().find(|l| l.metadata.name == w.metadata.name) else { continue };
        let (Some(ws), Some(ls)) = (w.spec.as_mut(), l.spec.as_ref()) else { continue };
        ws.resources = ls.resources.clone();
        ws.storage_class_name = ls.storage_class_name.clone();
    }
}

/// Settings of a StatefulSet that the reconciler decides (not the spec alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StsPlan {
    /// `.spec.replicas`.
    pub replicas: i32,
    /// Rolling-update partition: pods with an ordinal >= this are updated.
    pub partition: i32,
}

/// Returns the master StatefulSet.
pub fn master_sts(gc: &GfsCluster, plan: StsPlan) -> StatefulSet {
    let n = Names::of(gc);
    let s = &gc.spec;
    let c = Component::Master;
    let container = Container {
        name: "master".into(),
        image: Some(s.images.master.clone()),
        image_pull_policy: Some(s.images.pull_policy.as_str().into()),
        args: Some(vec![
            "--id".into(),
            "$(GFS_POD_INDEX)".into(),
            "--listen".into(),
            format!("0.0.0.0:{MASTER_PORT}"),
            "--peers".into(),
            master_peers(&n),
            // A recreated pod 0 with a fresh volume must rejoin, not found.
            "--discover".into(),
            n.master_address(),
            "--data-dir".into(),
            "/data".into(),
            "--replication".into(),
            s.replication.to_string(),
            "--chunk-size".into(),
            // In bytes: a quantity's decimal units ("64M") are not the
            // binary ones gfs-master reads for the same letter.
            crate::scaling::parse_quantity(&s.chunk_size).map_or_else(|_| s.chunk_size.clone(), |b| b.to_string()),
            "--admin-listen".into(),
            format!("0.0.0.0:{ADMIN_PORT}"),
        ]),
        env: Some(vec![env_field("GFS_POD_INDEX", "metadata.labels['apps.kubernetes.io/pod-index']")]),
        ports: Some(container_ports(MASTER_PORT)),
        resources: s.masters.resources.clone(),
        volume_mounts: Some(mounts()),
        readiness_probe: Some(http_probe("/readyz")),
        liveness_probe: Some(Probe { failure_threshold: Some(6), ..http_probe("/healthz") }),
        ..Default::default()
    };
    let mut pod = PodSpec {
        service_account_name: Some(n.service_account()),
        containers: vec![container],
        affinity: Some(host_anti_affinity(&n.cluster, c, false)),
        ..Default::default()
    };
    crate::podsec::secure(gc, c, &mut pod);
    let pvc = pvc_template(&n.cluster, c, &s.masters.storage.size, &s.masters.storage.storage_class_name);
    let mut out = sts(gc, c, plan, pod, pvc);
    if let Some(o) = &s.masters.pod_template {
        apply_overrides(o, &mut out.spec.template);
    }
    out
}

/// Returns the chunkserver StatefulSet.
pub fn chunkserver_sts(gc: &GfsCluster, plan: StsPlan) -> StatefulSet {
    let n = Names::of(gc);
    let s = &gc.spec;
    let c = Component::Chunkserver;
    let t = &s.chunkservers.topology;
    let container = Container {
        name: "chunkserver".into(),
        image: Some(s.images.chunkserver.clone()),
        image_pull_policy: Some(s.images.pull_policy.as_str().into()),
        args: Some(vec![
            "--master".into(),
            n.master_address(),
            "--listen".into(),
            format!("0.0.0.0:{CHUNK_PORT}"),
            "--advertise".into(),
            format!("$(GFS_POD_NAME).{}.{}.svc:{CHUNK_PORT}", n.sts(c), n.namespace),
            "--data-dir".into(),
            "/data".into(),
            "--zone".into(),
            "$(GFS_ZONE)".into(),
            "--admin-listen".into(),
            format!("0.0.0.0:{ADMIN_PORT}"),
        ]),
        env: Some(vec![
            env_field("GFS_POD_NAME", "metadata.name"),
            // Pods get the node's zone label copied by the
            // PodTopologyLabels admission plugin (Kubernetes >= 1.33).
            env_field("GFS_ZONE", &format!("metadata.labels['{}']", t.zone_label_key)),
        ]),
        ports: Some(container_ports(CHUNK_PORT)),
        resources: s.chunkservers.resources.clone(),
        volume_mounts: Some(mounts()),
        readiness_probe: Some(http_probe("/readyz")),
        liveness_probe: Some(Probe { failure_threshold: Some(6), ..http_probe("/healthz") }),
        ..Default::default()
    };
    let selector = LabelSelector { match_labels: Some(selector_labels(&n.cluster, c)), ..Default::default() };
    let mut pod = PodSpec {
        service_account_name: Some(n.service_account()),
        containers: vec![container],
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: t.max_skew,
            topology_key: t.zone_label_key.clone(),
            when_unsatisfiable: match t.when_unsatisfiable {
                WhenUnsatisfiable::DoNotSchedule => "DoNotSchedule".into(),
                WhenUnsatisfiable::ScheduleAnyway => "ScheduleAnyway".into(),
            },
            label_selector: Some(selector),
            ..Default::default()
        }]),
        affinity: Some(host_anti_affinity(&n.cluster, c, t.one_per_host)),
        // Give a chunkserver time to finish in-flight mutations.
        termination_grace_period_seconds: Some(60),
        ..Default::default()
    };
    crate::podsec::secure(gc, c, &mut pod);
    let pvc = pvc_template(&n.cluster, c, &s.chunkservers.storage.size, &s.chunkservers.storage.storage_class_name);
    let mut out = sts(gc, c, plan, pod, pvc);
    if let Some(o) = &s.chunkservers.pod_template {
        apply_overrides(o, &mut out.spec.template);
    }
    out
}

/// Adds a user's pod overrides to a rendered pod template: labels and
/// annotations join the operator's (the operator's win), scheduling fields
/// and pull secrets are set, tolerations and pod anti-affinity terms are
/// added, and the security contexts are overridden field by field.
pub fn apply_overrides(o: &PodOverrides, t: &mut PodTemplateSpec) {
    let meta = t.metadata.get_or_insert_with(Default::default);
    for (ours, theirs) in [(&mut meta.labels, &o.labels), (&mut meta.annotations, &o.annotations)] {
        if let Some(theirs) = theirs {
            let ours = ours.get_or_insert_with(Default::default);
            for (k, v) in theirs {
                ours.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    let Some(pod) = t.spec.as_mut() else { return };
    if o.node_selector.is_some() {
        pod.node_selector = o.node_selector.clone();
    }
    append(&mut pod.tolerations, &o.tolerations);
    if o.image_pull_secrets.is_some() {
        pod.image_pull_secrets = o.image_pull_secrets.clone();
    }
    if o.priority_class_name.is_some() {
        pod.priority_class_name = o.priority_class_name.clone();
    }
    if let Some(a) = &o.affinity {
        let ours = pod.affinity.get_or_insert_with(Default::default);
        if a.node_affinity.is_some() {
            ours.node_affinity = a.node_affinity.clone();
        }
        if a.pod_affinity.is_some() {
            ours.pod_affinity = a.pod_affinity.clone();
        }
        if let Some(anti) = &a.pod_anti_affinity {
            let mine = ours.pod_anti_affinity.get_or_insert_with(Default::default);
            append(
                &mut mine.required_during_scheduling_ignored_during_execution,
                &anti.required_during_scheduling_ignored_during_execution,
            );
            append(
                &mut mine.preferred_during_scheduling_ignored_during_execution,
                &anti.preferred_during_scheduling_ignored_during_execution,
            );
        }
    }
    if let Some(sc) = &o.security_context {
        pod.security_context = Some(merged(pod.security_context.take().unwrap_or_default(), sc));
    }
    if let (Some(sc), Some(container)) = (&o.container_security_context, pod.containers.first_mut()) {
        container.security_context = Some(merged(container.security_context.take().unwrap_or_default(), sc));
    }
}

/// Adds `theirs` (when set) after `ours`.
fn append<T: Clone>(ours: &mut Option<Vec<T>>, theirs: &Option<Vec<T>>) {
    if let Some(t) = theirs {
        ours.get_or_insert_with(Vec::new).extend(t.iter().cloned());
    }
}

/// `base` with every field that `over` sets replaced by `over`'s.
fn merged<T: serde::Serialize + serde::de::DeserializeOwned>(base: T, over: &T) -> T {
    let (Ok(mut b), Ok(o)) = (serde_json::to_value(&base), serde_json::to_value(over)) else { return base };
    if let (Some(b), Some(o)) = (b.as_object_mut(), o.as_object()) {
        for (k, v) in o {
            if !v.is_null() {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(b).unwrap_or(base)
}

fn sts(gc: &GfsCluster, c: Component, plan: StsPlan, pod: PodSpec, pvc: PersistentVolumeClaim) -> StatefulSet {
    let n = Names::of(gc);
    let r = &gc.spec.pvc_retention;
    StatefulSet {
        metadata: meta(gc, n.sts(c), component_labels(&n.cluster, c)),
        spec: StatefulSetSpec {
            replicas: Some(plan.replicas),
            service_name: Some(n.sts(c)),
            selector: LabelSelector { match_labels: Some(selector_labels(&n.cluster, c)), ..Default::default() },
            // Masters join one at a time (pod 0 founds the group); chunkservers
            // are independent, so a stuck one never holds back the others.
            pod_management_policy: Some(if c == Component::Master { "OrderedReady" } else { "Parallel" }.into()),
            // Masters: the operator restarts them itself, the leader last
            // (`rollout.rs`). Chunkservers: one at a time from the highest
            // ordinal, each step gated by the operator (the partition).
            update_strategy: Some(if c == Component::Master {
                StatefulSetUpdateStrategy { type_: Some("OnDelete".into()), rolling_update: None }
            } else {
                StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateStatefulSetStrategy {
                        partition: Some(plan.partition),
                        ..Default::default()
                    }),
                }
            }),
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(r.when_deleted.as_str().into()),
                when_scaled: Some(r.when_scaled.as_str().into()),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(component_labels(&n.cluster, c)), ..Default::default() }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![pvc]),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn mounts() -> Vec<VolumeMount> {
    vec![VolumeMount { name: DATA_VOLUME.into(), mount_path: "/data".into(), ..Default::default() }]
}

/// The gRPC port plus the admin port `metrics` (scraped by a PodMonitor).
fn container_ports(grpc: i32) -> Vec<ContainerPort> {
    vec![
        ContainerPort { name: Some("grpc".into()), container_port: grpc, ..Default::default() },
        ContainerPort { name: Some("metrics".into()), container_port: ADMIN_PORT, ..Default::default() },
    ]
}

/// `/readyz` is true for a master once its group has a leader (or while it
/// waits to be added), for a chunkserver once registered.
fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    }
}

fn host_anti_affinity(cluster: &str, c: Component, required: bool) -> Affinity {
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector { match_labels: Some(selector_labels(cluster, c)), ..Default::default() }),
        topology_key: "kubernetes.io/hostname".into(),
        ..Default::default()
    };
    let anti = if required {
        PodAntiAffinity { required_during_scheduling_ignored_during_execution: Some(vec![term]), ..Default::default() }
    } else {
        PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: term,
            }]),
            ..Default::default()
        }
    };
    Affinity { pod_anti_affinity: Some(anti), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::GfsClusterSpec;

    fn cluster() -> GfsCluster {
        let spec: GfsClusterSpec = serde_json::from_value(serde_json::json!({
            "masters": {"replicas": 3, "storage": {"size": "10Gi", "storageClassName": "standard"}},
            "chunkservers": {"replicas": 4, "storage": {"size": "100Gi", "storageClassName": "fast"}},
        }))
        .unwrap();
        let mut gc = GfsCluster::new("demo", spec);
        gc.metadata.namespace = Some("prod".into());
        gc.metadata.uid = Some("uid-1".into());
        gc
    }

    #[test]
    fn pod_overrides_join_the_operators_settings() {
        let mut gc = cluster();
        gc.spec.chunkservers.pod_template = Some(
            serde_json::from_value(serde_json::json!({
                "labels": {"team": "storage"},
                "annotations": {"example.com/owner": "ops"},
                "nodeSelector": {"disk": "nvme"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gfs", "effect": "NoSchedule"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "example.com/rack", "labelSelector": {"matchLabels": {"app": "db"}}}]}},
                "imagePullSecrets": [{"name": "registry"}],
                "priorityClassName": "storage-critical",
                "securityContext": {"runAsUser": 1000, "fsGroup": 1000},
                "containerSecurityContext": {"readOnlyRootFilesystem": false},
            }))
            .unwrap(),
        );
        let s = chunkserver_sts(&gc, StsPlan { replicas: 4, partition: 0 });
        let meta = s.spec.template.metadata.as_ref().unwrap();
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "storage");
        assert_eq!(labels["app.kubernetes.io/component"], "chunkserver", "the selector labels stay");
        assert_eq!(meta.annotations.as_ref().unwrap()["example.com/owner"], "ops");
        let pod = s.spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "nvme");
        assert_eq!(pod.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
        assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "registry");
        assert_eq!(pod.priority_class_name.as_deref(), Some("storage-critical"));
        // The operator's one-per-host term is kept; the user's is added.
        let anti = pod.affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
        let keys: Vec<&str> = anti
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| t.topology_key.as_str())
            .collect();
        assert_eq!(keys, ["kubernetes.io/hostname", "example.com/rack"]);
        // Field by field: the rest of the restricted defaults stay.
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!((psc.run_as_user, psc.fs_group, psc.run_as_non_root), (Some(1000), Some(1000), Some(true)));
        assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let csc = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(csc.read_only_root_filesystem, Some(false));
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(csc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
        // The masters got none of it.
        let m = master_sts(&gc, StsPlan { replicas: 3, partition: 0 });
        assert!(m.spec.template.spec.as_ref().unwrap().node_selector.is_none());
    }

    #[test]
    fn the_live_claim_template_is_kept() {
        let live = chunkserver_sts(&cluster(), StsPlan { replicas: 4, partition: 0 });
        let mut grown = cluster();
        grown.spec.chunkservers.storage.size = "200Gi".into();
        let mut want = chunkserver_sts(&grown, StsPlan { replicas: 4, partition: 0 });
        keep_claim_templates(&mut want, Some(&live));
        assert_eq!(want.spec.volume_claim_templates, live.spec.volume_claim_templates);
        // With nothing live (a new StatefulSet), the spec's size is used.
        let mut fresh = chunkserver_sts(&grown, StsPlan { replicas: 4, partition: 0 });
        keep_claim_templates(&mut fresh, None);
        let spec = fresh.spec.volume_claim_templates.unwrap()[0].spec.clone().unwrap();
        assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"].0, "200Gi");
    }

    #[test]
    fn ordinals_come_back_from_pod_names_of_that_component_only() {
        let n = Names::of(&cluster());
        assert_eq!(n.ordinal(Component::Master, &n.pod(Component::Master, 2)), Some(2));
        for other in ["demo-chunkserver-2", "demo-master-", "demo-master-x", "demo-masterx-1", "demo-master"] {
            assert_eq!(n.ordinal(Component::Master, other), None, "{other}");
        }
    }

    #[test]
    fn master_peers_name_the_founding_pod() {
        let gc = cluster();
        assert_eq!(master_peers(&Names::of(&gc)), "0=demo-master-0.demo-master.prod.svc:9700");
    }

    #[test]
    fn statefulsets_map_the_spec() {
        let gc = cluster();
        let s = chunkserver_sts(&gc, StsPlan { replicas: 4, partition: 1 });
        assert_eq!(s.spec.replicas, Some(4));
        assert_eq!(s.spec.service_name.as_deref(), Some("demo-chunkserver"));
        let ru = s.spec.update_strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
        assert_eq!(ru.partition, Some(1));
        let pvc = &s.spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(pvc.spec.as_ref().unwrap().storage_class_name.as_deref(), Some("fast"));
        let args = s.spec.template.spec.as_ref().unwrap().containers[0].args.clone().unwrap().join(" ");
        assert!(args.contains("--master demo.prod.svc:9700"), "{args}");
        assert!(args.contains("--advertise $(GFS_POD_NAME).demo-chunkserver.prod.svc:9800"), "{args}");
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("GfsCluster", Some(true)));
        let m = master_sts(&gc, StsPlan { replicas: 3, partition: 0 });
        assert_eq!(m.spec.replicas, Some(3));
        let mpvc = &m.spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(
            mpvc.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "10Gi"
        );
    }

    #[test]
    fn pdbs_keep_a_quorum_and_one_chunkserver_down() {
        let gc = cluster();
        assert_eq!(pdb(&gc, Component::Master).spec.unwrap().min_available, Some(IntOrString::Int(2)));
        assert_eq!(pdb(&gc, Component::Chunkserver).spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    }

    #[test]
    fn a_single_master_never_blocks_a_node_drain() {
        let mut gc = cluster();
        gc.spec.masters.replicas = 1;
        let spec = pdb(&gc, Component::Master).spec.unwrap();
        assert_eq!((spec.min_available, spec.max_unavailable), (None, Some(IntOrString::Int(1))));
        gc.spec.masters.replicas = 5;
        assert_eq!(pdb(&gc, Component::Master).spec.unwrap().min_available, Some(IntOrString::Int(3)));
    }

    #[test]
    fn chunkservers_start_in_parallel_masters_in_order() {
        let gc = cluster();
        let plan = StsPlan { replicas: 3, partition: 0 };
        assert_eq!(chunkserver_sts(&gc, plan).spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(master_sts(&gc, plan).spec.pod_management_policy.as_deref(), Some("OrderedReady"));
    }

    #[test]
    fn settings_reach_the_pods_as_arguments_and_roll_only_those_that_take_them() {
        let a = cluster();
        let mut b = cluster();
        b.spec.replication = 2;
        let plan = StsPlan { replicas: 3, partition: 0 };
        let args = |s: StatefulSet| s.spec.template.spec.unwrap().containers[0].args.clone().unwrap();
        let pair = |v: &[String], flag: &str| v.iter().position(|x| x == flag).map(|i| v[i + 1].clone());
        assert_eq!(pair(&args(master_sts(&b, plan)), "--replication").as_deref(), Some("2"));
        assert_eq!(pair(&args(master_sts(&a, plan)), "--chunk-size").as_deref(), Some("67108864"));
        // Chunkservers take neither: a replication change leaves them be.
        assert_eq!(chunkserver_sts(&a, plan).spec.template, chunkserver_sts(&b, plan).spec.template);
        assert_ne!(master_sts(&a, plan).spec.template, master_sts(&b, plan).spec.template);
        let pod = chunkserver_sts(&a, plan).spec.template.spec.unwrap();
        let env: Vec<&str> = pod.containers[0].env.iter().flatten().map(|e| e.name.as_str()).collect();
        // Two that the arguments name, one the binary reads (TLS on).
        assert_eq!(env, ["GFS_POD_NAME", "GFS_ZONE", "GFS_TLS_DIR"], "no variable nothing reads");
        assert!(pod.volumes.iter().flatten().all(|v| v.config_map.is_none()), "no ConfigMap: no binary reads one");
    }
}
