//! The GfsCluster reconciler: children by server-side apply, drain-gated
//! scale-down, autoscaling, node loss, gated rollouts, status and Events.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gfs_proto::{ClusterStatusResponse, ServerState};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Span, field, info, instrument, warn};

use crate::admin::MasterAdmin;
use crate::crd::{DrainStatus, GfsCluster, GfsClusterStatus, RetentionPolicy, RetiredServer};
use crate::error::{Error, Fault, Result};
use crate::metrics::Metrics;
use crate::pki::{self, AdminClients, CertManagerMode, CertManagerProbe};
use crate::render::{self, Component, Names, StsPlan};
use crate::scaling::{self, AutoscaleInput, Rollout, StsObserved};
use crate::status::{self, Observed};
use crate::{FIELD_MANAGER, nodeloss, storage};

/// Finalizer that runs the PVC retention policy before a GfsCluster goes.
pub static FINALIZER: &str = "gfs.dev/cleanup";

/// Annotation overriding the master address of one cluster.
pub static MASTER_ADDRESS_ANNOTATION: &str = "gfs.dev/master-address";

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Master address for every cluster (tests and local runs); also turns
    /// on the positional ordinal -> server mapping.
    pub master_override: Option<String>,
    /// Addresses of master pods by ordinal, for out-of-cluster runs and
    /// tests (in a cluster: the pods' DNS names). With `master_override`
    /// set and this unset, master membership is left alone.
    pub master_pod_addresses: Option<std::collections::BTreeMap<u64, String>>,
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Requeue period of a healthy cluster (node-loss and autoscaler clocks).
    pub requeue: Duration,
    /// Name reported in Events.
    pub instance: String,
    /// Whether certificates come from cert-manager.
    pub cert_manager: CertManagerMode,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            master_override: None,
            master_pod_addresses: None,
            namespace: None,
            requeue: Duration::from_secs(10),
            instance: "gfs-operator".into(),
            cert_manager: CertManagerMode::Auto,
        }
    }
}

/// Shared state of the reconciler.
pub struct Context {
    /// Kubernetes client (the operator's ServiceAccount).
    pub client: Client,
    /// Event publisher.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Master admin clients, one per cluster (its admin certificate).
    pub admins: AdminClients,
    /// Whether cert-manager is installed (asked once a minute).
    pub cert_manager: CertManagerProbe,
    /// Settings.
    pub config: ControllerConfig,
    /// Consecutive failures per cluster (`ns/name`), for exponential backoff.
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl Context {
    /// Returns a context for `client`.
    pub fn new(client: Client, metrics: Metrics, config: ControllerConfig) -> Arc<Self> {
        let reporter = Reporter { controller: "gfs-operator".into(), instance: Some(config.instance.clone()) };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            admins: AdminClients::default(),
            cert_manager: CertManagerProbe::default(),
            config,
            failures: Default::default(),
        })
    }

    /// Publishes an Event on the cluster; failures are logged, not fatal.
    pub async fn event(&self, gc: &GfsCluster, type_: EventType, reason: &str, action: &str, note: String) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&ev, &gc.object_ref(&())).await {
            warn!(error = %e, reason, "publishing event failed");
        }
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run_controller(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (clusters, sts, pods): (Api<GfsCluster>, Api<StatefulSet>, Api<Pod>) = match &ctx.config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone())),
    };
    // The operator's own certificate Secrets: a deleted or edited one is
    // issued again at once, not at the next periodic pass.
    let secrets: Api<Secret> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Node loss is noticed from a Node watch, not only on the periodic
    // requeue: a Node event reconciles the clusters with pods on that node,
    // found in a store of gfs pods.
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let pod_watch = tokio::spawn(
        reflector(pod_writer, watcher(pods, watcher::Config::default().labels(nodeloss::GFS_PODS).any_semantic()))
            .default_backoff()
            .for_each(|_| futures::future::ready(())),
    );
    let nodes: Api<Node> = Api::all(client);
    let on_node = move |node: Node| {
        let state = pod_store.state();
        nodeloss::clusters_on_node(&state, &node.name_any())
            .into_iter()
            .map(|(ns, name)| ObjectRef::<GfsCluster>::new(&name).within(&ns))
    };
    Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(sts, watcher::Config::default().labels("app.kubernetes.io/managed-by=gfs-operator").any_semantic())
        .owns(secrets, watcher::Config::default().labels("app.kubernetes.io/managed-by=gfs-operator").any_semantic())
        .watches(nodes, watcher::Config::default().any_semantic(), on_node)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .filter_map(|x| async move { x.ok() })
        .for_each(|_| futures::future::ready(()))
        .await;
    pod_watch.abort();
}

/// Reconciles one GfsCluster.
#[instrument(skip(gc, ctx), fields(cluster = %gc.name_any(), namespace = field::Empty))]
pub async fn reconcile(gc: Arc<GfsCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure();
    let ns = gc.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    Span::current().record("namespace", field::display(&ns));
    let name = gc.name_any();
    let api: Api<GfsCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let action = finalizer(&api, FINALIZER, gc, |event| async {
        match event {
            Finalizer::Apply(gc) => apply(gc, ctx.clone()).await,
            Finalizer::Cleanup(gc) => cleanup(gc, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.failures.lock().expect("failures lock").remove(&format!("{ns}/{name}"));
    Ok(action)
}

/// Counts the failure and retries with exponential backoff per cluster
/// (1 s doubling up to 5 min; a success resets it).
pub fn error_policy(gc: Arc<GfsCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(cluster = %gc.name_any(), error = %error, "reconcile failed");
    ctx.metrics.reconcile_failure(error.metric_label());
    let key = format!("{}/{}", gc.namespace().unwrap_or_default(), gc.name_any());
    let n = {
        let mut f = ctx.failures.lock().expect("failures lock");
        let n = f.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    // A partial failure ran everything else: the node-loss and autoscaler
    // clocks must keep their pace while the refused object waits for a fix.
    let delay = if error.is_partial() { backoff(n).min(ctx.config.requeue) } else { backoff(n) };
    Action::requeue(delay)
}

/// Returns the delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

async fn ssa<K>(client: &Client, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().ok_or(Error::MissingField("metadata.name"))?;
    Ok(api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj)).await?)
}

/// Master address of a cluster: annotation, then the operator-wide
/// override, then the in-cluster client Service.
pub fn master_address(gc: &GfsCluster, ctx: &Context) -> (String, bool) {
    if let Some(a) = gc.annotations().get(MASTER_ADDRESS_ANNOTATION) {
        return (a.clone(), true);
    }
    match &ctx.config.master_override {
        Some(a) => (a.clone(), true),
        None => (Names::of(gc).master_address(), false),
    }
}

/// Steps of one reconcile that failed without stopping the others: a
/// child the apiserver refuses (say a StatefulSet whose resources it finds
/// invalid) must not keep the status, the masters or the autoscaler from
/// being reconciled.
#[derive(Default)]
struct Faults(Vec<Fault>);

impl Faults {
    /// Runs `step`; its failure is kept and `None` returned.
    async fn run<T>(
        &mut self,
        what: impl Into<String>,
        step: impl std::future::Future<Output = Result<T>>,
    ) -> Option<T> {
        match step.await {
            Ok(v) => Some(v),
            Err(e) => {
                let what = what.into();
                warn!(step = %what, error = %e, "reconcile step failed");
                self.0.push(Fault { what, reason: e.reason(), message: e.to_string() });
                None
            }
        }
    }
}

/// Applies the spec; an error that stopped the pass before the status was
/// written still reaches the status (condition `Reconciled`) and an Event.
async fn apply(gc: Arc<GfsCluster>, ctx: Arc<Context>) -> Result<Action> {
    match apply_spec(gc.clone(), ctx.clone()).await {
        Err(e) if !e.is_partial() => {
            report_failure(&gc, &ctx, &e).await;
            Err(e)
        }
        r => r,
    }
}

/// Writes a failed pass into the `Reconciled` condition (other status
/// fields keep their values) and publishes a Warning Event. Best effort:
/// the apiserver may be what failed.
async fn report_failure(gc: &GfsCluster, ctx: &Context, e: &Error) {
    let fault = Fault { what: "reconcile".into(), reason: e.reason(), message: e.to_string() };
    ctx.event(gc, EventType::Warning, "ReconcileFailed", "Reconcile", format!("{}: {}", fault.reason, fault.message))
        .await;
    let prev = gc.status.clone().unwrap_or_default();
    let conditions = status::with_reconciled(&prev.conditions, &[fault], gc.metadata.generation, Timestamp::now());
    let api: Api<GfsCluster> = Api::namespaced(ctx.client.clone(), &Names::of(gc).namespace);
    if let Err(e) = api
        .patch_status(
            &gc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": { "conditions": conditions } })),
        )
        .await
    {
        warn!(error = %e, "writing the failure into the status failed");
    }
}

async fn apply_spec(gc: Arc<GfsCluster>, ctx: Arc<Context>) -> Result<Action> {
    let client = &ctx.client;
    let n = Names::of(&gc);
    let ns = n.namespace.clone();
    let mut faults = Faults::default();
    for obj in [
        render::headless_service(&gc, Component::Master),
        render::headless_service(&gc, Component::Chunkserver),
        render::client_service(&gc),
    ] {
        faults.run(format!("apply Service {}", obj.name_any()), ssa::<Service>(client, &ns, &obj)).await;
    }
    let sa = render::service_account(&gc);
    faults.run(format!("apply ServiceAccount {}", sa.name_any()), ssa(client, &ns, &sa)).await;
    for c in [Component::Master, Component::Chunkserver] {
        let pdb = render::pdb(&gc, c);
        faults.run(format!("apply PodDisruptionBudget {}", pdb.name_any()), ssa(client, &ns, &pdb)).await;
    }

    let mut notes = status::Notes::default();
    let tls = pki::ensure(&gc, &ctx).await?;
    notes.progress.extend(tls.waiting);
    notes.security = tls.problem.map(|(r, m)| (r.to_string(), m));
    if let Some(why) = pki::token_secret_problem(&gc, client).await? {
        notes.security.get_or_insert(("MetricsTokenSecretInvalid".into(), why));
    }
    let admin = ctx.admins.for_cluster(client, &gc).await?;

    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let cur_master = sts_api.get_opt(&n.sts(Component::Master)).await?;
    let cur_chunk = sts_api.get_opt(&n.sts(Component::Chunkserver)).await?;
    let (addr, positional) = master_address(&gc, &ctx);
    let master = match admin.status(&addr).await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "master status unavailable");
            notes.master_error = Some(match &e {
                // The status's message says what failed (e.g. the TLS
                // handshake and why); its source chain repeats it.
                Error::Master { status, .. } => status.message().to_string(),
                e => e.to_string(),
            });
            None
        }
    };
    // The status memory (drain, retired servers, autoscaler windows) is read
    // from the apiserver, not the watch cache: a requeue may start before
    // the cache has seen the last pass's status write, and building on that
    // would forget what the last pass recorded.
    let gcs: Api<GfsCluster> = Api::namespaced(client.clone(), &ns);
    let prev = gcs.get(&gc.name_any()).await?.status.unwrap_or_default();
    let mut st = GfsClusterStatus {
        drain: prev.drain.clone(),
        retired: prev.retired.clone(),
        autoscaler: prev.autoscaler.clone(),
        ..Default::default()
    };

    let lost = faults
        .run("node loss", nodeloss::handle(&gc, &ctx, &admin, master.as_ref(), &addr, positional))
        .await
        .unwrap_or_default();
    notes.lost_pods = lost.removed;
    if !lost.waiting.is_empty() {
        notes.progress.push(format!(
            "pods on lost nodes wait for the master to fence them before they are replaced: {}",
            lost.waiting.join(", ")
        ));
    }

    // Chunkservers: scale-up at once, scale-down only after the drain.
    let desired = gc.spec.chunkservers.replicas;
    let current = cur_chunk.as_ref().and_then(|s| s.spec.replicas).unwrap_or(desired);
    let replicas = faults
        .run(
            "chunkserver scale-down",
            chunk_replicas(
                &gc,
                &ctx,
                &admin,
                &mut st,
                &mut notes,
                master.as_ref(),
                &addr,
                positional,
                desired,
                current,
            ),
        )
        .await
        .unwrap_or(current);

    let under = master.as_ref().map(|m| m.under_replicated_chunks);
    let chunk_plan = plan_rollout(
        &gc,
        &ctx,
        cur_chunk.as_ref(),
        &render::chunkserver_sts(&gc, StsPlan { replicas, partition: 0 }),
        replicas,
        under,
        &mut notes,
        Component::Chunkserver,
    )
    .await;
    let mut want = render::chunkserver_sts(&gc, StsPlan { replicas, partition: chunk_plan });
    render::keep_claim_templates(&mut want, cur_chunk.as_ref());
    let chunk_sts = faults
        .run(format!("apply StatefulSet {}", want.name_any()), async {
            replace_if_immutable_changed(&gc, &ctx, cur_chunk.as_ref(), &want).await?;
            ssa(client, &ns, &want).await
        })
        .await
        .or_else(|| cur_chunk.clone())
        .unwrap_or_default();

    let m_pods = pods_of(cur_master.as_ref());
    let m_cur = cur_master.as_ref().and_then(|s| s.spec.replicas);
    let m_replicas =
        master_members(&gc, &ctx, &admin, master.as_ref(), &addr, positional, m_cur, m_pods, &mut notes).await;
    if m_cur.is_some_and(|c| c != m_replicas) {
        notes.progress.push(format!(
            "master membership {} -> {m_replicas} (target {})",
            m_cur.unwrap_or(0),
            gc.spec.masters.replicas
        ));
        ctx.event(
            &gc,
            EventType::Normal,
            "MasterMembershipStep",
            "Scale",
            format!("masters {} -> {m_replicas}", m_cur.unwrap_or(0)),
        )
        .await;
    }
    // OnDelete: the partition is unused; `rollout::roll_masters` restarts them.
    let mut want = render::master_sts(&gc, StsPlan { replicas: m_replicas, partition: 0 });
    render::keep_claim_templates(&mut want, cur_master.as_ref());
    let master_sts = faults
        .run(format!("apply StatefulSet {}", want.name_any()), ssa(client, &ns, &want))
        .await
        .or_else(|| cur_master.clone())
        .unwrap_or_default();
    faults
        .run(
            format!("roll StatefulSet {}", want.name_any()),
            crate::rollout::roll_masters(&gc, &ctx, &master_sts, master.as_ref(), &mut notes),
        )
        .await;

    if cur_chunk.is_none() && chunk_sts.metadata.uid.is_some() {
        ctx.event(
            &gc,
            EventType::Normal,
            "Created",
            "Reconcile",
            format!("created StatefulSets {} and {}", n.sts(Component::Master), n.sts(Component::Chunkserver)),
        )
        .await;
    }

    faults.run("autoscaling", autoscale(&gc, &ctx, &mut st, master.as_ref(), &chunk_sts)).await;
    for c in [Component::Master, Component::Chunkserver] {
        let step = format!("expand {} PVCs", c.as_str());
        if let Some(r) = faults.run(step, storage::reconcile(&gc, &ctx, c)).await.flatten() {
            if r.reason == "Resizing" {
                notes.progress.push(r.message.clone());
            }
            notes.resize.push(r);
        }
    }
    notes.faults = faults.0;

    // The Leader column names the master that answered as leader (the
    // address the operator dialled may be a Service in front of all).
    let leader = master
        .as_ref()
        // By role: ids start at 0, so leader_id 0 cannot tell pod 0 from none.
        .and_then(|m| m.masters.iter().find(|x| x.role() == gfs_proto::MasterRole::Leader).map(|x| x.address.clone()))
        .unwrap_or_else(|| addr.clone());
    let obs = Observed {
        gc: &gc,
        master: master.as_ref(),
        leader: &leader,
        master_sts: &master_sts,
        chunk_sts: &chunk_sts,
        notes: &notes,
    };
    let new = status::build(&obs, st, &prev, Timestamp::now());
    for (reason, msg, warning) in status::transitions(&prev, &new) {
        let t = if warning { EventType::Warning } else { EventType::Normal };
        ctx.event(&gc, t, &reason, "Status", msg).await;
    }
    let api: Api<GfsCluster> = Api::namespaced(client.clone(), &ns);
    api.patch_status(
        &gc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status_patch(&new) })),
    )
    .await?;
    if !notes.faults.is_empty() {
        for f in &notes.faults {
            let note = format!("{}: {}", f.what, f.message);
            ctx.event(&gc, EventType::Warning, "ReconcileFailed", "Reconcile", note).await;
        }
        // The status says what failed; the error policy counts it and
        // comes back (no later than the periodic requeue).
        return Err(Error::Partial { faults: std::mem::take(&mut notes.faults) });
    }

    let busy = new.drain.is_some() || !notes.progress.is_empty();
    let mut next = if busy { ctx.config.requeue.min(Duration::from_secs(2)) } else { ctx.config.requeue };
    // A NotReady node's grace ends before the next periodic pass: come back then.
    if let Some(r) = lost.recheck_in {
        next = next.min(r);
    }
    // A certificate the operator signs is due for renewal before then.
    if let Some(r) = tls.renew_in {
        next = next.min(r);
    }
    Ok(Action::requeue(next))
}

/// The status as a merge patch: optional fields that are now absent are
/// sent as `null`, or the merge would keep their old values (a finished
/// drain would linger).
pub fn status_patch(st: &GfsClusterStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(st).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for k in ["observedGeneration", "leader", "drain", "retired", "autoscaler"] {
            m.entry(k).or_insert(serde_json::Value::Null);
        }
    }
    v
}

/// Drives the master group toward `spec.masters.replicas`, one member at a
/// time (see `scaling::member_step`); returns the master StatefulSet's
/// replica count for this pass.
#[allow(clippy::too_many_arguments)]
async fn master_members(
    gc: &GfsCluster,
    ctx: &Context,
    admin: &MasterAdmin,
    master: Option<&gfs_proto::ClusterStatusResponse>,
    addr: &str,
    positional: bool,
    current: Option<i32>,
    pods_now: scaling::PodCounts,
    notes: &mut status::Notes,
) -> i32 {
    let desired = gc.spec.masters.replicas;
    let pods = &ctx.config.master_pod_addresses;
    let manage = !positional || pods.is_some();
    let voters: Option<Vec<u64>> = master
        .filter(|m| manage && !m.masters.is_empty())
        .map(|m| m.masters.iter().filter(|x| x.voter).map(|x| x.id).collect());
    let (replicas, change) = scaling::member_step(desired, current, pods_now, voters.as_deref());
    let Some(change) = change else { return replicas };
    let n = Names::of(gc);
    let pod_addr = |o: u64| match pods {
        Some(p) => p.get(&o).cloned(),
        None => Some(n.pod_address(Component::Master, o as i32)),
    };
    let (res, what) = match change {
        scaling::MemberChange::Add(o) => match pod_addr(o) {
            Some(a) => (admin.add_master(addr, o, &a).await.map(|_| ()), format!("add master {o} ({a})")),
            None => return replicas,
        },
        scaling::MemberChange::Remove(o) => {
            (admin.remove_master(addr, o).await.map(|_| ()), format!("remove master {o}"))
        }
    };
    match res {
        Ok(()) => {
            info!(cluster = %gc.name_any(), change = %what, "master membership changed");
            ctx.event(gc, EventType::Normal, "MasterMembership", "Scale", what.clone()).await;
        }
        Err(e) => {
            warn!(cluster = %gc.name_any(), change = %what, error = %e, "master membership change not done yet");
        }
    }
    notes.progress.push(format!("master membership: {what} (target {desired})"));
    replicas
}

fn ready_of(s: Option<&StatefulSet>) -> i32 {
    s.and_then(|s| s.status.as_ref()).and_then(|s| s.ready_replicas).unwrap_or(0)
}

/// Ready and existing pods of a StatefulSet, from its status.
fn pods_of(s: Option<&StatefulSet>) -> scaling::PodCounts {
    let existing = s.and_then(|s| s.status.as_ref()).map(|s| s.replicas).unwrap_or(0);
    scaling::PodCounts::new(ready_of(s), existing)
}

#[allow(clippy::too_many_arguments)]
async fn chunk_replicas(
    gc: &GfsCluster,
    ctx: &Context,
    admin: &MasterAdmin,
    st: &mut GfsClusterStatus,
    notes: &mut status::Notes,
    master: Option<&ClusterStatusResponse>,
    addr: &str,
    positional: bool,
    desired: i32,
    current: i32,
) -> Result<i32> {
    let n = Names::of(gc);
    if desired >= current {
        // The spec grew back while a drain ran: undo it (the drained ordinal
        // is below the new size).
        if let Some(d) = st.drain.take()
            && d.ordinal < desired
        {
            admin.recommission(addr, &d.server).await?;
            ctx.metrics.scale_decision("drain_cancelled");
            ctx.event(
                gc,
                EventType::Normal,
                "DrainCancelled",
                "Recommission",
                format!("scale-up cancelled the drain of {} ({})", n.pod(Component::Chunkserver, d.ordinal), d.server),
            )
            .await;
        }
        recommission_returning(gc, ctx, admin, st, notes, addr, desired).await;
        return Ok(desired);
    }
    let ordinal = current - 1;
    let pod = n.pod(Component::Chunkserver, ordinal);
    let Some(server) = master.and_then(|m| {
        scaling::server_for_ordinal(m, &n.pod_address(Component::Chunkserver, ordinal), ordinal, positional)
    }) else {
        notes.progress.push(format!("scale-down blocked: master does not report chunkserver {pod}"));
        notes.drain_blocked = true;
        return Ok(current);
    };
    let id = server.server.as_ref().map(|s| s.id.clone()).unwrap_or_default();
    let state = scaling::state_of(server);
    let started = st.drain.as_ref().filter(|d| d.ordinal == ordinal).map(|d| d.started.clone());
    match state {
        ServerState::Decommissioned => {
            st.drain = None;
            st.retired.retain(|r| r.ordinal != ordinal);
            // A deleted PVC brings a new server id back; only a kept one
            // brings this one.
            if gc.spec.pvc_retention.when_scaled == RetentionPolicy::Retain {
                st.retired.push(RetiredServer { ordinal, server: id.clone() });
            }
            ctx.metrics.scale_decision("drain_finished");
            ctx.event(
                gc,
                EventType::Normal,
                "ScaledDown",
                "Scale",
                format!("{pod} ({id}) is decommissioned; removing it ({current} -> {})", current - 1),
            )
            .await;
            if gc.spec.pvc_retention.when_scaled == RetentionPolicy::Delete {
                delete_pvc(gc, ctx, &n.pvc(Component::Chunkserver, ordinal)).await?;
            }
            Ok(current - 1)
        }
        ServerState::Decommissioning => {
            st.drain = Some(DrainStatus {
                ordinal,
                server: id.clone(),
                state: "DECOMMISSIONING".into(),
                started: started.unwrap_or_else(|| Timestamp::now().to_string()),
            });
            notes.progress.push(format!("draining {pod} ({id}) before scale-down"));
            Ok(current)
        }
        _ => {
            match admin.decommission(addr, &id).await {
                Ok(_) => {}
                // The master refuses a drain that would lose replicas (e.g.
                // fewer servers left than the replication): scale-down waits
                // and says why.
                Err(Error::Master { status, .. }) if status.code() != tonic::Code::Unavailable => {
                    let why = format!(
                        "scale-down blocked: master refused to decommission {pod} ({id}): {}",
                        status.message()
                    );
                    ctx.event(gc, EventType::Warning, "DrainRefused", "Decommission", why.clone()).await;
                    notes.progress.push(why);
                    notes.drain_blocked = true;
                    return Ok(current);
                }
                Err(e) => return Err(e),
            }
            ctx.metrics.scale_decision("drain_started");
            st.drain = Some(DrainStatus {
                ordinal,
                server: id.clone(),
                state: "DECOMMISSIONING".into(),
                started: Timestamp::now().to_string(),
            });
            notes.progress.push(format!("draining {pod} ({id}) before scale-down"));
            ctx.event(
                gc,
                EventType::Normal,
                "DrainStarted",
                "Decommission",
                format!("decommissioning {pod} ({id}) before removing it"),
            )
            .await;
            Ok(current)
        }
    }
}

/// A scale-up brings back ordinals that a scale-down drained: a pod on a
/// retained PVC keeps its server id, which the master still holds
/// DECOMMISSIONED and would never give new chunks. Recommission each such
/// server (once; a server the master no longer knows is forgotten). Drains
/// an admin started by hand are not the operator's and are left alone.
async fn recommission_returning(
    gc: &GfsCluster,
    ctx: &Context,
    admin: &MasterAdmin,
    st: &mut GfsClusterStatus,
    notes: &mut status::Notes,
    addr: &str,
    desired: i32,
) {
    let n = Names::of(gc);
    let back: Vec<RetiredServer> = st.retired.iter().filter(|r| r.ordinal < desired).cloned().collect();
    for r in back {
        let pod = n.pod(Component::Chunkserver, r.ordinal);
        match admin.recommission(addr, &r.server).await {
            Ok(_) => {
                st.retired.retain(|x| x != &r);
                ctx.metrics.scale_decision("recommissioned");
                let note = format!("{pod} is back: recommissioned {} (it kept its PVC)", r.server);
                ctx.event(gc, EventType::Normal, "Recommissioned", "Recommission", note).await;
            }
            Err(Error::Master { status, .. }) if status.code() == tonic::Code::NotFound => {
                st.retired.retain(|x| x != &r);
            }
            Err(e) => notes.progress.push(format!("recommissioning {pod} ({}): {e}", r.server)),
        }
    }
}

/// A StatefulSet's `podManagementPolicy` cannot change in place (the
/// apiserver refuses the apply). When an older operator made it with
/// another policy, delete it with `propagationPolicy: Orphan`: its pods and
/// PVCs stay, and the apply that follows adopts them under the new object.
async fn replace_if_immutable_changed(
    gc: &GfsCluster,
    ctx: &Context,
    live: Option<&StatefulSet>,
    want: &StatefulSet,
) -> Result<()> {
    let Some(live) = live else { return Ok(()) };
    let had = live.spec.pod_management_policy.clone();
    let wants = want.spec.pod_management_policy.clone();
    if had.is_none() || had == wants {
        return Ok(());
    }
    let name = live.name_any();
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &Names::of(gc).namespace);
    api.delete(&name, &DeleteParams::orphan()).await?;
    // The garbage collector releases the pods, then the object goes; the
    // apply that follows must create a new one, not patch this one.
    for _ in 0..40 {
        if api.get_opt(&name).await?.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let note = format!(
        "recreating StatefulSet {name} (podManagementPolicy {} -> {}); its pods and PVCs are kept",
        had.as_deref().unwrap_or_default(),
        wants.as_deref().unwrap_or_default()
    );
    ctx.event(gc, EventType::Normal, "StatefulSetReplaced", "Reconcile", note).await;
    Ok(())
}

/// Deletes a PVC if it exists, with an Event.
pub async fn delete_pvc(gc: &GfsCluster, ctx: &Context, name: &str) -> Result<()> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &Names::of(gc).namespace);
    if api.get_opt(name).await?.is_some() {
        api.delete(name, &DeleteParams::default()).await?;
        ctx.event(gc, EventType::Normal, "PvcDeleted", "Delete", format!("deleted PVC {name}")).await;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn plan_rollout(
    gc: &GfsCluster,
    ctx: &Context,
    cur: Option<&StatefulSet>,
    desired: &StatefulSet,
    replicas: i32,
    under_replicated: Option<u64>,
    notes: &mut status::Notes,
    c: Component,
) -> i32 {
    let Some(cur) = cur else { return 0 };
    let template = |s: &StatefulSet| serde_json::to_value(&s.spec.template).unwrap_or_default();
    let changed = rendered_differs(&template(cur), &template(desired));
    let stat = cur.status.as_ref();
    let obs = StsObserved {
        replicas,
        partition: cur
            .spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0),
        updated: stat.and_then(|s| s.updated_replicas).unwrap_or(0),
        ready: stat.and_then(|s| s.ready_replicas).unwrap_or(0),
        observed: stat.and_then(|s| s.observed_generation).unwrap_or(0) >= cur.metadata.generation.unwrap_or(0),
    };
    let (p, what) = scaling::rollout(obs, changed, under_replicated);
    let sts = Names::of(gc).sts(c);
    match what {
        Rollout::Start => {
            notes.progress.push(format!("rolling {sts} one pod at a time"));
            ctx.event(
                gc,
                EventType::Normal,
                "RolloutStarted",
                "Rollout",
                format!("{sts}: new pod template; updating one pod at a time"),
            )
            .await;
        }
        Rollout::Step => {
            notes.progress.push(format!("rolling {sts}: updating pod {p}"));
            ctx.event(gc, EventType::Normal, "RolloutStep", "Rollout", format!("{sts}: updating {sts}-{p}")).await;
        }
        Rollout::Wait(why) => notes.progress.push(format!("rolling {sts}: {why}")),
        Rollout::Idle | Rollout::Done => {}
    }
    p
}

/// Whether the desired template differs from the live one in a field we set
/// (the apiserver adds defaults, so compare only what we render).
fn rendered_differs(live: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, want) {
        (Value::Object(l), Value::Object(w)) => w.iter().any(|(k, v)| match l.get(k) {
            Some(lv) => rendered_differs(lv, v),
            None => !v.is_null(),
        }),
        (Value::Array(l), Value::Array(w)) => {
            l.len() != w.len() || l.iter().zip(w).any(|(a, b)| rendered_differs(a, b))
        }
        (l, w) => l != w,
    }
}

async fn autoscale(
    gc: &GfsCluster,
    ctx: &Context,
    st: &mut GfsClusterStatus,
    master: Option<&ClusterStatusResponse>,
    chunk_sts: &StatefulSet,
) -> Result<()> {
    let Some(spec) = &gc.spec.autoscaling else {
        st.autoscaler = None;
        return Ok(());
    };
    let Some(m) = master else { return Ok(()) };
    let input = AutoscaleInput {
        spec,
        desired: gc.spec.chunkservers.replicas,
        current: chunk_sts.spec.replicas.unwrap_or(0),
        ready: ready_of(Some(chunk_sts)),
        lag_bytes: crate::status::replication_lag(m),
        used_bytes: m.used_bytes,
        capacity_bytes: m.capacity_bytes,
        draining: st.drain.is_some(),
        now: Timestamp::now(),
    };
    let d = scaling::autoscale(&input, st.autoscaler.as_ref())?;
    st.autoscaler = Some(d.state.clone()).filter(|_| spec.enabled);
    if let Some(to) = d.replicas {
        // Through the scale subresource with a merge patch: the autoscaler
        // must not become an SSA owner of spec.chunkservers.replicas, which
        // `kubectl scale` and KEDA also write.
        let api: Api<GfsCluster> = Api::namespaced(ctx.client.clone(), &Names::of(gc).namespace);
        api.patch_scale(
            &gc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": to } })),
        )
        .await?;
        let up = to > input.desired;
        ctx.metrics.scale_decision(if up { "up" } else { "down" });
        let why = d.state.last_decision.clone().unwrap_or_default();
        info!(from = input.desired, to, "autoscaler decision");
        ctx.event(gc, EventType::Normal, if up { "AutoscaledUp" } else { "AutoscaledDown" }, "Scale", why).await;
    }
    Ok(())
}

async fn cleanup(gc: Arc<GfsCluster>, ctx: Arc<Context>) -> Result<Action> {
    let n = Names::of(&gc);
    ctx.admins.forget(&format!("{}/{}", n.namespace, n.cluster));
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &n.namespace);
    // Owner references let the garbage collector remove the other children;
    // the StatefulSets go now so no pod outlives the cluster, and the PVCs
    // follow the retention policy (StatefulSets never delete PVCs on their
    // own when the owner is deleted with them).
    for c in [Component::Chunkserver, Component::Master] {
        if sts_api.get_opt(&n.sts(c)).await?.is_some() {
            sts_api.delete(&n.sts(c), &DeleteParams::background()).await?;
        }
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &n.namespace);
    let lp =
        ListParams::default().labels(&format!("app.kubernetes.io/instance={},app.kubernetes.io/name=gfs", n.cluster));
    let claims = pvcs.list(&lp).await?;
    let policy = gc.spec.pvc_retention.when_deleted;
    if policy == RetentionPolicy::Delete {
        for pvc in &claims {
            pvcs.delete(&pvc.name_any(), &DeleteParams::default()).await?;
        }
    }
    let what = if policy == RetentionPolicy::Delete { "deleted" } else { "retained" };
    ctx.event(
        &gc,
        EventType::Normal,
        "Cleanup",
        "Delete",
        format!("{what} {} PVCs (whenDeleted: {})", claims.items.len(), policy.as_str()),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_patch_clears_a_finished_drain() {
        let v = status_patch(&GfsClusterStatus::default());
        assert!(v["drain"].is_null() && v.as_object().unwrap().contains_key("drain"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), Duration::from_secs(256));
    }

    #[test]
    fn rendered_differs_ignores_apiserver_defaults() {
        let live = serde_json::json!({"spec": {"containers": [{"image": "a", "terminationMessagePath": "/dev/termination-log"}]}});
        assert!(!rendered_differs(&live, &serde_json::json!({"spec": {"containers": [{"image": "a"}]}})));
        assert!(rendered_differs(&live, &serde_json::json!({"spec": {"containers": [{"image": "b"}]}})));
    }
}
