//! gfs-operator: the GfsCluster CRD and its controller.
//!
//! `run` elects a leader on a Lease and, while it leads, runs the
//! controller of [`controller`]. Everything that decides is pure and lives
//! in [`scaling`], [`status`], [`render`], [`podsec`] and [`certs`]; I/O
//! lives in [`controller`], [`nodeloss`], [`storage`], [`pki`], [`certmanager`],
//! [`admin`] and [`leader`].
pub mod admin;
pub mod certmanager;
pub mod certs;
pub mod controller;
pub mod crd;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod nodeloss;
pub mod pki;
pub mod podsec;
pub mod render;
pub mod rollout;
pub mod scaling;
pub mod status;
pub mod storage;

use std::time::Duration;

use gfs_common::shutdown::CancellationToken;
use kube::Client;

pub use controller::{Context, ControllerConfig, FINALIZER};
pub use error::{Error, Result};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "gfs-operator";

/// Settings of `gfs-operator run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Controller settings.
    pub controller: ControllerConfig,
    /// Lease used for leader election.
    pub lease: leader::LeaseConfig,
}

impl RunConfig {
    /// Returns a config with a lease `gfs-operator` in `namespace`.
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            controller: ControllerConfig { instance: identity.into(), ..Default::default() },
            lease: leader::LeaseConfig {
                name: "gfs-operator".into(),
                namespace: namespace.into(),
                identity: identity.into(),
                duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
            },
        }
    }
}

/// Runs the operator until `shutdown`: waits for the Lease, reconciles while
/// leading, and releases the Lease on the way out. Returns an error if
/// leadership is lost (the process should exit and start over).
pub async fn run(
    client: Client,
    cfg: RunConfig,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_readiness(client, cfg, metrics, shutdown, http::Readiness::default()).await
}

/// As [`run`], reporting readiness: true from the start of leader election
/// (standing by or leading) until the operator stops.
pub async fn run_with_readiness(
    client: Client,
    cfg: RunConfig,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
    ready: http::Readiness,
) -> anyhow::Result<()> {
    ready.set(true);
    let res = lead(client, cfg, metrics, shutdown).await;
    ready.set(false);
    res
}

async fn lead(
    client: Client,
    cfg: RunConfig,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let elector = leader::LeaderElector::new(client.clone(), cfg.lease.clone());
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown.cancelled() => return Ok(()),
    }
    let ctx = Context::new(client, metrics, cfg.controller.clone());
    let stop = CancellationToken::new();
    let stop2 = stop.clone();
    let mut controller = tokio::spawn(controller::run_controller(ctx, async move { stop2.cancelled().await }));
    let lost = tokio::select! {
        _ = elector.keep() => true,
        _ = shutdown.cancelled() => false,
        _ = &mut controller => false,
    };
    stop.cancel();
    let _ = controller.await;
    elector.release().await;
    if lost {
        anyhow::bail!("lost leadership of lease {}/{}", cfg.lease.namespace, cfg.lease.name);
    }
    Ok(())
}
