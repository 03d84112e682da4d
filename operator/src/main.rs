//! `gfs-operator`: parses flags, sets up tracing and runs the operator, or
//! prints the CRD.

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gfs_common::shutdown;
use gfs_common::telemetry::{self, LogFormat};
use gfs_operator::{RunConfig, crd, http, metrics::Metrics};

/// gfs Kubernetes operator.
#[derive(Parser, Debug)]
#[command(name = "gfs-operator", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the GfsCluster CRD as YAML (what crds/gfscluster.yaml holds).
    Crd,
    /// Run the controller with the ambient kubeconfig or in-cluster config.
    // Boxed: the flags dwarf the data-less `crd` variant.
    Run(Box<RunArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Talk to this master address for every cluster (local runs and tests).
    #[arg(long, env = "GFS_OPERATOR_MASTER_OVERRIDE")]
    master_override: Option<String>,
    /// Master pod addresses by ordinal, ORDINAL=HOST:PORT,... (with
    /// --master-override: lets the operator change master membership
    /// outside a cluster; in a cluster the pods' DNS names are used).
    #[arg(long, env = "GFS_OPERATOR_MASTER_POD_ADDRESSES")]
    master_pod_addresses: Option<String>,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "GFS_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "GFS_OPERATOR_LEASE", default_value = "gfs-operator")]
    lease_name: String,
    /// Identity in the Lease (default: $POD_NAME or hostname + pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Requeue period of a healthy cluster, in seconds.
    #[arg(long, env = "GFS_OPERATOR_REQUEUE_SECONDS", default_value_t = 10)]
    requeue_seconds: u64,
    /// Serve /metrics, /healthz, /readyz and the scaling figures
    /// (/scaling/namespaces/NS/gfsclusters/NAME, for KEDA) here
    /// (`--metrics-listen` is the older name; `/health` stays an alias of
    /// `/healthz`).
    #[arg(long, alias = "metrics-listen", env = "GFS_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    admin_listen: String,
    /// Serve a CPU profile (flame graph) at /debug/pprof/profile?seconds=N
    /// on the admin port.
    #[arg(long, env = "GFS_PROFILING")]
    profiling: bool,
    #[command(flatten)]
    admin_auth: gfs_common::admin_auth::AdminAuthArgs,
    /// Certificates of clusters with TLS on: from cert-manager when its API
    /// is served (auto), always from cert-manager, or never (the operator
    /// signs them with a CA of its own per cluster).
    #[arg(long, env = "GFS_OPERATOR_CERT_MANAGER", value_enum, default_value = "auto")]
    cert_manager: gfs_operator::pki::CertManagerMode,
    /// Log format: text or json.
    #[arg(long, env = "GFS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Crd => {
            print!("{}", crd::crd_yaml());
            Ok(())
        }
        Cmd::Run(a) => {
            telemetry::init(a.log_format, "info");
            let identity = a.identity.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
            let mut cfg = RunConfig::new(&a.lease_namespace, &identity);
            cfg.lease.name = a.lease_name;
            cfg.controller.master_override = a.master_override;
            if let Some(p) = &a.master_pod_addresses {
                cfg.controller.master_pod_addresses = Some(gfs_master_peers(p)?);
            }
            cfg.controller.namespace = a.namespace;
            cfg.controller.cert_manager = a.cert_manager;
            cfg.controller.requeue = Duration::from_secs(a.requeue_seconds.max(1));
            let mut registry = prometheus_client::registry::Registry::default();
            let metrics = Metrics::default().register(&mut registry);
            let shutdown = shutdown::on_signals();
            let auth = a.admin_auth.open()?;
            let listener = tokio::net::TcpListener::bind(&a.admin_listen).await?;
            let ready = http::Readiness::default();
            let client = kube::Client::try_default().await?;
            let scaling = http::Scaling { client: client.clone(), namespace: cfg.controller.namespace.clone() };
            tokio::spawn(http::serve(
                listener,
                Arc::new(registry),
                ready.clone(),
                a.profiling,
                auth,
                Some(scaling),
                shutdown.clone(),
            ));
            gfs_operator::run_with_readiness(client, cfg, metrics, shutdown, ready).await
        }
    }
}

/// Parses ORDINAL=HOST:PORT,... .
fn gfs_master_peers(spec: &str) -> anyhow::Result<std::collections::BTreeMap<u64, String>> {
    let mut out = std::collections::BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (o, a) = part
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--master-pod-addresses entry {part:?}: want ORDINAL=HOST:PORT"))?;
        let o: u64 =
            o.trim().parse().map_err(|_| anyhow::anyhow!("--master-pod-addresses entry {part:?}: bad ordinal"))?;
        out.insert(o, a.trim().to_string());
    }
    Ok(out)
}
