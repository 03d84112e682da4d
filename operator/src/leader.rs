//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator
//! replicas are safe: only the holder reconciles. Writes use the Lease's
//! resourceVersion (optimistic concurrency), so two candidates cannot both
//! take an expired lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// Renewal period (well below `duration`).
    pub renew_every: Duration,
}

/// Acquires and renews one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

impl LeaderElector {
    /// Returns an elector for `cfg`.
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &cfg.namespace), cfg }
    }

    /// Takes or renews the lease once; returns whether this replica holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.cfg.duration.as_secs()).unwrap_or(i32::MAX).max(1);
        let Some(lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.cfg.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(Error::Kube(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.cfg.identity;
        let expired = match spec.renew_time.as_ref() {
            Some(t) => {
                now.duration_since(t.0)
                    > SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(secs)))
            }
            None => true,
        };
        if !mine && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let mut next = lease.clone();
        let s = next.spec.get_or_insert_with(Default::default);
        if !mine {
            s.acquire_time = Some(MicroTime(now));
            s.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            s.holder_identity = Some(self.cfg.identity.clone());
        }
        s.renew_time = Some(MicroTime(now));
        s.lease_duration_seconds = Some(secs);
        match self.api.replace(&self.cfg.name, &PostParams::default(), &next).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::Kube(e)),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "lease acquire failed"),
            }
            tokio::time::sleep(self.cfg.renew_every).await;
        }
    }

    /// Renews until a renewal fails for longer than the lease lasts; returns
    /// then (the caller must stop reconciling: another replica may lead).
    pub async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.cfg.name, "lost the lease to another replica");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "lease renewal failed");
                    // Stop before the lease can expire under us.
                    if last_ok.elapsed() + self.cfg.renew_every >= self.cfg.duration {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up so another replica takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await {
            let s = lease.spec.get_or_insert_with(Default::default);
            if s.holder_identity.as_deref() == Some(self.cfg.identity.as_str()) {
                s.holder_identity = None;
                s.renew_time = None;
                if let Err(e) = self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
                    warn!(error = %e, "lease release failed");
                }
            }
        }
    }
}
