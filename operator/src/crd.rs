//! The `GfsCluster` custom resource (`gfs.dev/v1alpha1`).
//!
//! The schema, its CEL rules, printer columns and the scale subresource are
//! all derived from these types; `gfs-operator crd` prints them and
//! `crds/gfscluster.yaml` must equal that output (checked by CI).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, PodSecurityContext, ResourceRequirements, SecurityContext, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::crd::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every gfs custom resource.
pub const GROUP: &str = "gfs.dev";

/// Desired state of a gfs cluster.
// The derive repeats `type_` per printer column, which clippy mistakes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gfs.dev",
    version = "v1alpha1",
    kind = "GfsCluster",
    namespaced,
    shortname = "gfsc",
    status = "GfsClusterStatus",
    doc = "A gfs cluster: masters and chunkservers run as StatefulSets managed by gfs-operator",
    // Children are named <name>-chunkserver-<n> and carry the StatefulSet
    // revision label <name>-chunkserver-<hash> (at most 63 characters).
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: the chunkserver pods and their revision labels add 23"),
    // The client Service is <name>; another cluster's headless Services are
    // <name>-master and <name>-chunkserver: a cluster named demo-master
    // would take the Service of the masters of a cluster named demo.
    validation = Rule::new("!self.metadata.name.endsWith('-master') && !self.metadata.name.endsWith('-chunkserver')").message("metadata.name must not end in -master or -chunkserver: those names belong to the Services of another cluster's masters and chunkservers"),
    scale(
        spec_replicas_path = ".spec.chunkservers.replicas",
        status_replicas_path = ".status.chunkservers",
        label_selector_path = ".status.chunkserverSelector"
    ),
    printcolumn(
        name = "Masters",
        type_ = "string",
        json_path = ".status.mastersReady",
        description = "ready/desired masters"
    ),
    printcolumn(
        name = "Chunkservers",
        type_ = "string",
        json_path = ".status.chunkserversReady",
        description = "ready/desired chunkservers"
    ),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Under-replicated", type_ = "integer", json_path = ".status.underReplicatedChunks"),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.replicationLagBytes",
        description = "replication backlog in bytes"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.replication <= self.chunkservers.replicas").message("replication must not exceed chunkservers.replicas"))]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || !self.autoscaling.enabled || self.autoscaling.minReplicas >= self.replication").message("autoscaling.minReplicas must be at least replication"))]
#[serde(rename_all = "camelCase")]
pub struct GfsClusterSpec {
    /// Container images and their pull policy.
    #[serde(default)]
    pub images: Images,
    /// Replicas of each chunk (default 3); between 1 and chunkservers.replicas.
    #[serde(default = "default_replication")]
    #[schemars(range(min = 1, max = 16))]
    pub replication: i32,
    /// Chunk size of new files, as a quantity (default 64Mi).
    #[serde(default = "default_chunk_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("chunkSize must be a positive quantity such as 64Mi"))]
    pub chunk_size: String,
    /// The masters (operation log on a PVC each).
    pub masters: MasterSpec,
    /// The chunkservers (chunks on a PVC each).
    pub chunkservers: ChunkserverSpec,
    /// Scaling the chunkservers by replication lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// What happens to PVCs when the cluster is deleted or scaled down.
    #[serde(default)]
    pub pvc_retention: PvcRetention,
    /// Handling of Nodes that go NotReady or disappear.
    #[serde(default)]
    pub node_loss: NodeLossSpec,
    /// mTLS between every component and from the operator to the masters.
    #[serde(default)]
    pub tls: TlsSpec,
    /// Access to the pods' admin port (`/metrics`, `/debug/pprof`).
    #[serde(default)]
    pub metrics: MetricsSpec,
}

fn default_replication() -> i32 {
    3
}

fn default_chunk_size() -> String {
    "64Mi".into()
}

/// Images of the two server binaries.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Images {
    /// Image running `gfs-master`.
    #[serde(default = "default_master_image")]
    pub master: String,
    /// Image running `gfs-chunkserver`.
    #[serde(default = "default_chunkserver_image")]
    pub chunkserver: String,
    /// Pull policy of both images.
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            master: default_master_image(),
            chunkserver: default_chunkserver_image(),
            pull_policy: PullPolicy::default(),
        }
    }
}

fn default_master_image() -> String {
    "ghcr.io/gfs/gfs-master:0.1.0".into()
}

fn default_chunkserver_image() -> String {
    "ghcr.io/gfs/gfs-chunkserver:0.1.0".into()
}

/// Kubernetes image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull only if the image is missing on the node.
    #[default]
    IfNotPresent,
    /// Always pull.
    Always,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// Returns the value Kubernetes expects in a container spec.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Always => "Always",
            PullPolicy::Never => "Never",
        }
    }
}

/// A PVC request: a size and an optional storage class.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
// A PVC only grows, and keeps its class: a change the volumes cannot follow
// is refused here, not left to wedge the reconcile.
#[x_kube(validation = Rule::new("quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0").message(Message::Expression("'storage size cannot shrink from ' + oldSelf.size + ' to ' + self.size + ': volumes only grow'".into())))]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("storageClassName cannot change on an existing cluster: its PVCs keep their class"))]
pub struct StorageSpec {
    /// Requested size, as a quantity (e.g. 10Gi).
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("storage size must be a positive quantity such as 10Gi"))]
    pub size: String,
    /// Storage class; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// The master replicas.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MasterSpec {
    /// Number of masters: 1, 3 or 5 (odd, for a Raft quorum).
    #[schemars(range(min = 1, max = 5))]
    #[x_kube(validation = Rule::new("self % 2 == 1").message("masters.replicas must be odd (1, 3 or 5)"))]
    pub replicas: i32,
    /// PVC of the operation log.
    pub storage: StorageSpec,
    /// CPU and memory of each master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Additions to the pods (scheduling, pull secrets, labels, security).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
}

/// What a user may add to the pods of one component, like Strimzi's
/// `template.pod` or Stackable's `podOverrides`, typed so that the
/// apiserver checks it. Labels and annotations are added to the operator's
/// own (which win); tolerations and pod anti-affinity terms are added to
/// the operator's; the security contexts override the restricted defaults
/// field by field.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.labels) || !self.labels.exists(k, k.startsWith('app.kubernetes.io/'))").message("podTemplate.labels must not set app.kubernetes.io/ labels: the operator's selectors use them"))]
#[x_kube(validation = Rule::new("!has(self.annotations) || !self.annotations.exists(k, k.startsWith('gfs.dev/'))").message("podTemplate.annotations must not set gfs.dev/ annotations: the operator sets them"))]
pub struct PodOverrides {
    /// Labels added to the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Nodes the pods may run on, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations added to the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod affinity; pod anti-affinity terms are added to the
    /// operator's spreading of the component over hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Secrets for pulling the images from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Pod security context: fields set here replace the restricted
    /// default's (user and group 65532, fsGroup, seccomp RuntimeDefault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Container security context: fields set here replace the restricted
    /// default's (non-root, read-only root filesystem, no capabilities, no
    /// privilege escalation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
}

/// The chunkserver replicas.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChunkserverSpec {
    /// Number of chunkservers (the scale subresource drives this field).
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// PVC holding the chunks.
    pub storage: StorageSpec,
    /// CPU and memory of each chunkserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Additions to the pods (scheduling, pull secrets, labels, security).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
    /// How chunkservers are spread over failure domains.
    #[serde(default)]
    pub topology: TopologySpec,
}

/// Spreading chunkservers over zones and hosts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpec {
    /// Node label naming the zone; also passed to chunkservers as their
    /// failure domain.
    #[serde(default = "default_zone_key")]
    pub zone_label_key: String,
    /// Maximum skew of chunkservers between zones.
    #[serde(default = "default_max_skew")]
    #[schemars(range(min = 1))]
    pub max_skew: i32,
    /// `DoNotSchedule` or `ScheduleAnyway` when the skew cannot be met.
    #[serde(default)]
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// Never put two chunkservers of this cluster on one host.
    #[serde(default = "default_true")]
    pub one_per_host: bool,
}

impl Default for TopologySpec {
    fn default() -> Self {
        Self {
            zone_label_key: default_zone_key(),
            max_skew: default_max_skew(),
            when_unsatisfiable: WhenUnsatisfiable::default(),
            one_per_host: true,
        }
    }
}

fn default_zone_key() -> String {
    "topology.kubernetes.io/zone".into()
}

fn default_max_skew() -> i32 {
    1
}

fn default_true() -> bool {
    true
}

/// Topology spread behaviour when the skew cannot be met.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhenUnsatisfiable {
    /// Keep the pod pending.
    DoNotSchedule,
    /// Schedule anyway, preferring low skew.
    #[default]
    ScheduleAnyway,
}

/// Autoscaling of chunkservers by replication lag.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed maxReplicas"))]
pub struct AutoscalingSpec {
    /// Turns the autoscaler on.
    #[serde(default)]
    pub enabled: bool,
    /// Never scale below this.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Never scale above this.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Replication backlog (bytes still to copy) above which the cluster
    /// grows, as a quantity (e.g. 10Gi; "0" = any backlog).
    #[serde(default = "default_target_lag")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("targetReplicationLag must be a quantity such as 10Gi"))]
    pub target_replication_lag: String,
    /// The lag must stay above target this long before each added chunkserver.
    #[serde(default = "default_up_window")]
    #[schemars(range(min = 0))]
    pub scale_up_stabilization_seconds: i32,
    /// Used space must stay below `scaleDownBelowUtilizationPercent`, with no
    /// lag, this long before the autoscaler removes a chunkserver.
    #[serde(default = "default_down_window")]
    #[schemars(range(min = 0))]
    pub scale_down_stabilization_seconds: i32,
    /// Remove chunkservers when used/capacity stays below this percentage;
    /// absent = the autoscaler never scales down on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub scale_down_below_utilization_percent: Option<i32>,
}

fn default_target_lag() -> String {
    "1Gi".into()
}

fn default_up_window() -> i32 {
    60
}

fn default_down_window() -> i32 {
    600
}

/// Kept or deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RetentionPolicy {
    /// Keep the PVCs (and the data on them).
    #[default]
    Retain,
    /// Delete the PVCs.
    Delete,
}

impl RetentionPolicy {
    /// Returns the StatefulSet spelling of this policy.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionPolicy::Retain => "Retain",
            RetentionPolicy::Delete => "Delete",
        }
    }
}

/// PVC retention, mirroring the StatefulSet policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetention {
    /// When the GfsCluster is deleted.
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
    /// When a chunkserver is removed by a scale-down (after its drain).
    #[serde(default)]
    pub when_scaled: RetentionPolicy,
}

/// What to do with a PVC bound to a lost node.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LostNodePvcPolicy {
    /// Delete the PVC so the recreated pod starts empty elsewhere and the
    /// master re-replicates onto it (node-local volumes).
    #[default]
    Delete,
    /// Keep the PVC: the pod waits for its volume (network-attached volumes
    /// that can follow the pod).
    Retain,
}

/// Node-loss handling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeLossSpec {
    /// How long a Node may be NotReady before its chunkservers count as lost.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 0))]
    pub grace_period_seconds: i32,
    /// What to do with PVCs of pods on the lost node.
    #[serde(default)]
    pub pvc_policy: LostNodePvcPolicy,
}

impl Default for NodeLossSpec {
    fn default() -> Self {
        Self { grace_period_seconds: default_grace(), pvc_policy: LostNodePvcPolicy::default() }
    }
}

fn default_grace() -> i32 {
    300
}

/// Certificates of the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.enabled || !has(self.issuerRef)").message("tls.issuerRef needs tls.enabled: true"))]
// Old (plaintext) and new (TLS) pods cannot talk to each other, so a pod
// by pod rollout across the switch would stall half way.
#[x_kube(validation = Rule::new("self.enabled == oldSelf.enabled").message("tls.enabled cannot change on an existing cluster; create a new cluster"))]
pub struct TlsSpec {
    /// mTLS on every connection (default true): certificates come from
    /// cert-manager when it is installed, else from a CA the operator keeps
    /// in the Secret `<cluster>-ca`. False: plaintext, nobody authenticated.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A cert-manager issuer that signs the component certificates instead
    /// of the cluster's own CA. It must fill `ca.crt` (a CA or Vault
    /// issuer, not ACME).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self { enabled: true, issuer_ref: None }
    }
}

/// A cert-manager issuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the Issuer (in the cluster's namespace) or ClusterIssuer.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("issuerRef.name must be a DNS subdomain name"))]
    pub name: String,
    /// `Issuer` or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// API group of the issuer (default cert-manager.io; external issuers
    /// have their own).
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1, max = 253))]
    pub group: String,
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

/// Kind of a cert-manager issuer.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IssuerKind {
    /// Namespaced, in the cluster's namespace.
    #[default]
    Issuer,
    /// Cluster-wide.
    ClusterIssuer,
}

impl IssuerKind {
    /// Returns the kind as cert-manager spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Issuer => "Issuer",
            IssuerKind::ClusterIssuer => "ClusterIssuer",
        }
    }
}

/// The pods' admin port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// A Secret key holding a bearer token that `/metrics` and
    /// `/debug/pprof/*` require (`--admin-auth-token-file`); absent: open.
    /// Probes (`/healthz`, `/readyz`) stay open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token_secret: Option<SecretKeyRef>,
}

/// A key of a Secret in the cluster's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("secret name must be a DNS subdomain name"))]
    pub name: String,
    /// Key in the Secret (default `token`).
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')").message("secret key may hold only letters, digits, '-', '_' and '.'"))]
    pub key: String,
}

fn default_token_key() -> String {
    "token".into()
}

/// Observed state, written through the status subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GfsClusterStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Available, Progressing, Degraded, StorageResized (PVCs at the spec's
    /// size) and Reconciled (the last pass applied everything; else what failed).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Ready master pods.
    #[serde(default)]
    pub ready_masters: i32,
    /// "ready/desired" masters, for printing.
    #[serde(default)]
    pub masters_ready: String,
    /// Address of the master that answered (the leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Chunkserver replicas of the StatefulSet (the scale subresource's status).
    #[serde(default)]
    pub chunkservers: i32,
    /// Ready chunkserver pods.
    #[serde(default)]
    pub ready_chunkservers: i32,
    /// "ready/desired" chunkservers, for printing.
    #[serde(default)]
    pub chunkservers_ready: String,
    /// Label selector of the chunkserver pods (for the scale subresource).
    #[serde(default)]
    pub chunkserver_selector: String,
    /// Chunks with fewer live replicas than their goal.
    #[serde(default)]
    pub under_replicated_chunks: i64,
    /// Replication lag in bytes: chunks short of live replicas, not
    /// counting copies that planned drains owe (nothing is at risk there).
    /// What the autoscaler and KEDA's trigger read.
    #[serde(default)]
    pub replication_lag_bytes: i64,
    /// Bytes that drains (a decommission, a scale-down) still have to copy.
    #[serde(default)]
    pub drain_backlog_bytes: i64,
    /// Total capacity of live chunkservers in bytes.
    #[serde(default)]
    pub capacity_bytes: i64,
    /// Used bytes on live chunkservers.
    #[serde(default)]
    pub used_bytes: i64,
    /// The chunkserver being drained before a scale-down, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStatus>,
    /// Chunkservers a scale-down drained and removed: their PVC may be
    /// kept (`whenScaled: Retain`), and when a scale-up brings the ordinal
    /// back on it, the server is recommissioned (it keeps its id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub retired: Vec<RetiredServer>,
    /// Autoscaler memory, so an operator restart keeps its windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
}

/// A chunkserver being decommissioned.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DrainStatus {
    /// StatefulSet ordinal of the chunkserver.
    pub ordinal: i32,
    /// Server id or address passed to the master.
    pub server: String,
    /// Last state the master reported (DECOMMISSIONING, DECOMMISSIONED).
    pub state: String,
    /// RFC 3339 time the drain started.
    pub started: String,
}

/// A chunkserver removed by a scale-down after its drain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetiredServer {
    /// StatefulSet ordinal it ran at.
    pub ordinal: i32,
    /// Its server id at the master.
    pub server: String,
}

/// Autoscaler state persisted in status.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    /// RFC 3339 time the lag went above target (absent when below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_above_since: Option<String>,
    /// RFC 3339 time utilisation went below the scale-down threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_usage_since: Option<String>,
    /// RFC 3339 time of the last scale decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// The last decision, e.g. "up 4->5: lag 3Gi > 1Gi".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
}

/// Returns the CRD as YAML, exactly what `crds/gfscluster.yaml` holds.
pub fn crd_yaml() -> String {
    let mut crd = GfsCluster::crd();
    // The chart installs the CRD as a template so `helm upgrade` updates
    // it; this keeps it (and every GfsCluster) through `helm uninstall`.
    crd.metadata.annotations = Some([("helm.sh/resource-policy".to_string(), "keep".to_string())].into());
    serde_saphyr::to_string(&crd).expect("CRD serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_scale_status_and_short_name() {
        let crd = GfsCluster::crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["gfsc".to_string()]));
        let v = &crd.spec.versions[0];
        let sub = v.subresources.as_ref().unwrap();
        assert!(sub.status.is_some());
        assert_eq!(sub.scale.as_ref().unwrap().spec_replicas_path, ".spec.chunkservers.replicas");
        let yaml = crd_yaml();
        for msg in [
            "masters.replicas must be odd",
            "replication must not exceed chunkservers.replicas",
            "minReplicas must not exceed maxReplicas",
            "tls.issuerRef needs tls.enabled: true",
            "tls.enabled cannot change on an existing cluster",
        ] {
            assert!(yaml.contains(msg), "{msg}");
        }
    }

    #[test]
    fn committed_crd_is_current() {
        let committed = include_str!("../../crds/gfscluster.yaml");
        assert_eq!(committed, crd_yaml(), "run `gfs-operator crd > crds/gfscluster.yaml`");
    }
}
