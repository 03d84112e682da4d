//! Applies the certificate decisions of [`crate::certs`]: picks who signs
//! a cluster's certificates (cert-manager or the operator's own CA), keeps
//! the operator-signed Secrets current, and builds the operator's mTLS
//! client for each cluster from its admin certificate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gfs_common::certs::{Authority, CA_VALIDITY};
use gfs_common::tls::{Security, Tls};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};

use crate::FIELD_MANAGER;
use crate::admin::MasterAdmin;
use crate::certmanager;
use crate::certs::{self, CertRole, LeafPlan, Material};
use crate::controller::Context;
use crate::crd::{GfsCluster, TlsSpec};
use crate::error::{Error, Result};
use crate::render::Names;

/// Whether the operator uses cert-manager (`--cert-manager`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CertManagerMode {
    /// When its API (`cert-manager.io/v1` Certificates and Issuers) is served.
    #[default]
    Auto,
    /// Always (e.g. discovery is restricted); certificates wait for it.
    Always,
    /// Never: the operator signs every certificate itself.
    Never,
}

/// How long a discovery answer about cert-manager is reused.
const DETECT_TTL: Duration = Duration::from_secs(60);

/// Remembers whether cert-manager is installed, asked at most every
/// [`DETECT_TTL`].
#[derive(Default)]
pub struct CertManagerProbe {
    last: Mutex<Option<(Instant, bool)>>,
}

impl CertManagerProbe {
    /// True if certificates should come from cert-manager under `mode`. A
    /// failed discovery call is an error, not a "no": a blip must not
    /// switch a cluster to other certificates.
    pub async fn installed(&self, client: &Client, mode: CertManagerMode) -> Result<bool> {
        match mode {
            CertManagerMode::Always => return Ok(true),
            CertManagerMode::Never => return Ok(false),
            CertManagerMode::Auto => {}
        }
        if let Some((at, v)) = *self.last.lock().expect("probe lock")
            && at.elapsed() < DETECT_TTL
        {
            return Ok(v);
        }
        let v = certmanager::installed(client).await?;
        *self.last.lock().expect("probe lock") = Some((Instant::now(), v));
        Ok(v)
    }
}

/// Who signs a cluster's certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// TLS is off.
    Off,
    /// The operator, with the CA in `<cluster>-ca`.
    Operator,
    /// cert-manager.
    CertManager,
}

/// Picks the provider. `foreign_ca`: a CA Secret exists that cert-manager
/// did not write (the operator's own, or one the user brought); it is kept,
/// since cert-manager would overwrite it with a new CA and cut every pod off.
pub fn provider(tls: &TlsSpec, cert_manager: bool, foreign_ca: bool) -> Result<Provider, String> {
    if !tls.enabled {
        return Ok(Provider::Off);
    }
    if let Some(r) = &tls.issuer_ref {
        return if cert_manager {
            Ok(Provider::CertManager)
        } else {
            Err(format!(
                "tls.issuerRef names the cert-manager {} {:?}, but cert-manager is not installed",
                r.kind.as_str(),
                r.name
            ))
        };
    }
    Ok(if cert_manager && !foreign_ca { Provider::CertManager } else { Provider::Operator })
}

/// What one pass over a cluster's certificates found.
#[derive(Debug, Default)]
pub struct TlsPass {
    /// A problem a person must fix: (condition reason, message).
    pub problem: Option<(&'static str, String)>,
    /// Certificates not issued yet.
    pub waiting: Vec<String>,
    /// Time until the next renewal the operator must do itself.
    pub renew_in: Option<Duration>,
}

impl TlsPass {
    fn problem(reason: &'static str, msg: String) -> Self {
        TlsPass { problem: Some((reason, msg)), ..Default::default() }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Makes sure the cluster's certificates exist and are current.
pub async fn ensure(gc: &GfsCluster, ctx: &Context) -> Result<TlsPass> {
    if !gc.spec.tls.enabled {
        return Ok(TlsPass::default());
    }
    let n = Names::of(gc);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &n.namespace);
    let cm = ctx.cert_manager.installed(&ctx.client, ctx.config.cert_manager).await?;
    // A read error propagates: never decide on a guess.
    let ca = secrets.get_opt(&n.ca_secret()).await?;
    let foreign_ca = ca.as_ref().is_some_and(|s| !s.annotations().contains_key("cert-manager.io/certificate-name"));
    match provider(&gc.spec.tls, cm, foreign_ca) {
        Ok(Provider::Off) => Ok(TlsPass::default()),
        Ok(Provider::CertManager) => {
            Ok(TlsPass { waiting: certmanager::apply(&ctx.client, gc).await?, ..Default::default() })
        }
        Ok(Provider::Operator) => self_signed(gc, ctx, &secrets, ca).await,
        Err(msg) => Ok(TlsPass::problem("CertManagerMissing", msg)),
    }
}

/// The operator's own CA: created once, then only read.
async fn self_signed(gc: &GfsCluster, ctx: &Context, secrets: &Api<Secret>, ca: Option<Secret>) -> Result<TlsPass> {
    let n = Names::of(gc);
    let ca = match ca {
        Some(s) => match certs::load_ca(&Material::of(&s)) {
            Ok(ca) => ca,
            Err(why) => {
                return Ok(TlsPass::problem(
                    "CertificateAuthorityInvalid",
                    format!(
                        "Secret {} cannot be used as the cluster CA: {why}; fix it (tls.crt and tls.key of a CA), \
                         or delete it for a new CA (every pod then needs its new certificate)",
                        n.ca_secret()
                    ),
                ));
            }
        },
        None => {
            let ca = Authority::generate(&format!("gfs {}/{} CA", n.namespace, n.cluster), CA_VALIDITY)
                .map_err(Error::Certificate)?;
            let secret = certs::tls_secret(gc, n.ca_secret(), ca.cert_pem(), ca.key_pem(), ca.cert_pem());
            // Create, never overwrite: if another writer got there first,
            // its CA wins and this pass starts over.
            let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            match secrets.create(&pp, &secret).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(TlsPass {
                        waiting: vec![format!("Secret {} appeared meanwhile", n.ca_secret())],
                        ..Default::default()
                    });
                }
                Err(e) => return Err(e.into()),
            }
            let note = format!("created the cluster CA in Secret {}", n.ca_secret());
            ctx.event(gc, EventType::Normal, "CertificateAuthorityCreated", "Certificates", note).await;
            ca
        }
    };
    let now = unix_now();
    let mut pass = TlsPass::default();
    for r in CertRole::ALL {
        let name = n.tls_secret(r);
        let want = certs::cert_spec(&n, r);
        let cur = secrets.get_opt(&name).await?;
        let m = cur.as_ref().map(|s| (Material::of(s), certs::managed(s)));
        let next = match certs::leaf_plan(m.as_ref().map(|(m, o)| (m, *o)), ca.cert_pem(), &want, now) {
            LeafPlan::Keep { renew_at } => renew_at,
            LeafPlan::Issue(why) => {
                let issued = ca.issue(&want).map_err(Error::Certificate)?;
                let s = certs::tls_secret(gc, name.clone(), &issued.cert_pem, &issued.key_pem, ca.cert_pem());
                secrets.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&s)).await?;
                let note = format!("issued {} ({}) because {why}", name, r.role().name());
                ctx.event(gc, EventType::Normal, "CertificateIssued", "Certificates", note).await;
                let validity = want.validity.as_secs() as i64;
                certs::renew_at(now, now + validity)
            }
            LeafPlan::Foreign(why) => {
                pass.problem = Some((
                    "CertificateInvalid",
                    format!(
                        "Secret {name} was not written by gfs-operator and cannot be used: {why}; \
                         fix it or delete it so the operator issues one"
                    ),
                ));
                continue;
            }
        };
        let wait = certs::until(now, next);
        pass.renew_in = Some(pass.renew_in.map_or(wait, |w| w.min(wait)));
    }
    Ok(pass)
}

/// Why the metrics token Secret cannot be mounted (missing Secret or
/// key, empty token), so the pods would hang in ContainerCreating or
/// refuse to start; `None` when it is fine or not asked for.
pub async fn token_secret_problem(gc: &GfsCluster, client: &Client) -> Result<Option<String>> {
    let Some(r) = &gc.spec.metrics.auth_token_secret else { return Ok(None) };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &Names::of(gc).namespace);
    let Some(s) = secrets.get_opt(&r.name).await? else {
        return Ok(Some(format!("metrics.authTokenSecret: Secret {} does not exist", r.name)));
    };
    let value = s.data.as_ref().and_then(|d| d.get(&r.key));
    Ok(match value {
        None => Some(format!("metrics.authTokenSecret: Secret {} has no key {:?}", r.name, r.key)),
        Some(v) if v.0.trim_ascii().is_empty() => {
            Some(format!("metrics.authTokenSecret: key {:?} of Secret {} is empty", r.key, r.name))
        }
        Some(_) => None,
    })
}

/// The operator's master clients, one per cluster with TLS, rebuilt when
/// the admin Secret changes (its resourceVersion).
#[derive(Default)]
pub struct AdminClients {
    plain: MasterAdmin,
    by_cluster: Mutex<HashMap<String, (String, MasterAdmin)>>,
}

impl AdminClients {
    /// The client for `gc`: plaintext with TLS off, else mTLS with the
    /// cluster's admin certificate. Without a usable certificate the
    /// client fails every call and says why (no plaintext fallback).
    pub async fn for_cluster(&self, client: &Client, gc: &GfsCluster) -> Result<MasterAdmin> {
        if !gc.spec.tls.enabled {
            return Ok(self.plain.clone());
        }
        let n = Names::of(gc);
        let name = n.tls_secret(CertRole::Admin);
        let key = format!("{}/{}", n.namespace, n.cluster);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &n.namespace);
        let Some(s) = secrets.get_opt(&name).await? else {
            self.forget(&key);
            return Ok(MasterAdmin::unavailable(format!("no admin certificate yet (Secret {name})")));
        };
        let rv = s.resource_version().unwrap_or_default();
        if let Some((v, a)) = self.by_cluster.lock().expect("admins lock").get(&key)
            && *v == rv
        {
            return Ok(a.clone());
        }
        let m = Material::of(&s);
        let tls = match (&m.cert, &m.key, &m.ca) {
            (Some(c), Some(k), Some(ca)) => Tls::from_pem(c, k, ca).map_err(|e| e.to_string()),
            _ => Err("it lacks tls.crt, tls.key or ca.crt".to_string()),
        };
        let admin = match tls {
            Ok(t) => MasterAdmin::new(&Security::Tls(t)),
            Err(why) => MasterAdmin::unavailable(format!("admin certificate in Secret {name} is unusable: {why}")),
        };
        self.by_cluster.lock().expect("admins lock").insert(key, (rv, admin.clone()));
        Ok(admin)
    }

    /// Drops the cached client of `ns/name` (cluster deleted).
    pub fn forget(&self, key: &str) {
        self.by_cluster.lock().expect("admins lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IssuerKind, IssuerRef};

    #[test]
    fn provider_follows_the_spec_cert_manager_and_an_existing_ca() {
        let on = TlsSpec::default();
        assert_eq!(provider(&on, false, false), Ok(Provider::Operator));
        assert_eq!(provider(&on, true, false), Ok(Provider::CertManager));
        // A CA the operator (or the user) made stays in charge.
        assert_eq!(provider(&on, true, true), Ok(Provider::Operator));
        let off = TlsSpec { enabled: false, issuer_ref: None };
        assert_eq!(provider(&off, true, false), Ok(Provider::Off));
        let with_issuer = TlsSpec {
            enabled: true,
            issuer_ref: Some(IssuerRef {
                name: "corp".into(),
                kind: IssuerKind::Issuer,
                group: "cert-manager.io".into(),
            }),
        };
        assert_eq!(provider(&with_issuer, true, true), Ok(Provider::CertManager));
        let e = provider(&with_issuer, false, false).unwrap_err();
        assert!(e.contains("cert-manager is not installed"), "{e}");
    }
}
