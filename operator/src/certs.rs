//! Certificates of a GfsCluster: which ones exist, what they must say, and
//! when the operator issues one again. Pure: the apply part is in
//! [`crate::pki`] (Secrets the operator signs itself) and
//! [`crate::certmanager`] (cert-manager objects).
//!
//! Every cluster has a CA (Secret `<cluster>-ca`) and three certificates,
//! each a `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and `ca.crt`
//! (cert-manager's layout, which `--tls-dir` reads): masters
//! (`<cluster>-master-tls`, OU=master), chunkservers
//! (`<cluster>-chunkserver-tls`, OU=chunkserver) and the operator's own
//! admin identity (`<cluster>-admin-tls`, OU=admin). gfs checks roles, not
//! host names; the DNS names are there for other tools.

use std::collections::BTreeMap;
use std::time::Duration;

use gfs_common::auth::Role;
use gfs_common::certs::{Authority, CERT_VALIDITY, CertInfo, CertSpec};
use gfs_common::tls::Tls;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::crd::GfsCluster;
use crate::render::{Component, Names, cluster_labels, owner};

/// Secret keys of the Kubernetes TLS layout.
pub const TLS_CRT: &str = "tls.crt";
/// Private key.
pub const TLS_KEY: &str = "tls.key";
/// The CA that peers must chain to.
pub const CA_CRT: &str = "ca.crt";

/// One identity of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertRole {
    /// Every master pod.
    Master,
    /// Every chunkserver pod.
    Chunkserver,
    /// The operator calling the masters' admin RPCs.
    Admin,
}

impl CertRole {
    /// Every certificate a cluster has.
    pub const ALL: [CertRole; 3] = [CertRole::Master, CertRole::Chunkserver, CertRole::Admin];

    /// Returns the gfs role (the certificate's OU).
    pub fn role(self) -> Role {
        match self {
            CertRole::Master => Role::Master,
            CertRole::Chunkserver => Role::Chunkserver,
            CertRole::Admin => Role::Admin,
        }
    }

    /// Returns the subject CN. Fixed rather than derived from the cluster
    /// name, which may be longer than a CN (64 bytes) allows.
    pub fn common_name(self) -> &'static str {
        match self {
            CertRole::Master => "gfs-master",
            CertRole::Chunkserver => "gfs-chunkserver",
            CertRole::Admin => "gfs-operator",
        }
    }

    /// The certificate of a pod component.
    pub fn of(c: Component) -> CertRole {
        match c {
            Component::Master => CertRole::Master,
            Component::Chunkserver => CertRole::Chunkserver,
        }
    }
}

impl Names {
    /// Secret holding the cluster CA (`tls.crt`, `tls.key`, `ca.crt`).
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.cluster)
    }

    /// Secret holding the certificate of `r`.
    pub fn tls_secret(&self, r: CertRole) -> String {
        format!("{}-{}-tls", self.cluster, r.role().name())
    }

    /// DNS names of the certificate of `r`: every pod of the component
    /// (wildcard under its headless Service) and, for masters, the client
    /// Service.
    pub fn dns_names(&self, r: CertRole) -> Vec<String> {
        let (c, ns) = (&self.cluster, &self.namespace);
        let pods = |sts: String| vec![format!("*.{sts}.{ns}.svc"), format!("*.{sts}.{ns}.svc.cluster.local")];
        match r {
            CertRole::Master => {
                let mut v = pods(self.sts(Component::Master));
                v.extend([format!("{c}.{ns}.svc"), format!("{c}.{ns}.svc.cluster.local")]);
                v
            }
            CertRole::Chunkserver => pods(self.sts(Component::Chunkserver)),
            CertRole::Admin => Vec::new(),
        }
    }
}

/// What the certificate of `r` must say.
pub fn cert_spec(n: &Names, r: CertRole) -> CertSpec {
    CertSpec {
        user: r.common_name().into(),
        group: None,
        role: r.role(),
        dns_names: n.dns_names(r),
        ips: Vec::new(),
        validity: CERT_VALIDITY,
    }
}

/// The PEM values of a TLS Secret (absent keys are `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Material {
    /// `tls.crt`.
    pub cert: Option<String>,
    /// `tls.key`.
    pub key: Option<String>,
    /// `ca.crt`.
    pub ca: Option<String>,
}

impl Material {
    /// Reads the keys of `secret`; a value that is not UTF-8 counts as absent.
    pub fn of(secret: &Secret) -> Material {
        let get =
            |k: &str| secret.data.as_ref().and_then(|d| d.get(k)).and_then(|b| String::from_utf8(b.0.clone()).ok());
        Material { cert: get(TLS_CRT), key: get(TLS_KEY), ca: get(CA_CRT) }
    }
}

/// Whether the operator wrote `secret` (its label), so may replace it.
pub fn managed(secret: &Secret) -> bool {
    secret.labels().get("app.kubernetes.io/managed-by").map(String::as_str) == Some(crate::FIELD_MANAGER)
}

/// Returns the CA in the CA Secret's material, or why it cannot be used.
/// An unusable CA is reported, never replaced: a new CA would cut every
/// pod off its peers.
pub fn load_ca(m: &Material) -> Result<Authority, String> {
    let cert = m.cert.as_deref().ok_or("it has no tls.crt")?;
    let key = m.key.as_deref().ok_or("it has no tls.key")?;
    Authority::from_pem(cert, key).map_err(|e| e.to_string())
}

/// Moment (Unix seconds) a certificate valid from `not_before` to
/// `not_after` is issued again: when a third of its validity is left.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_after - (not_after - not_before).max(0) / 3
}

/// What to do with one certificate Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafPlan {
    /// Good until `renew_at` (Unix seconds).
    Keep {
        /// When to issue it again.
        renew_at: i64,
    },
    /// Issue it (again), for this reason.
    Issue(String),
    /// Unusable, but not the operator's to replace (a Secret someone else
    /// made): the reason, for a condition.
    Foreign(String),
}

/// Decides whether the certificate Secret `existing` (with `managed`: the
/// operator wrote it) still does for `want` under the CA `ca_pem` at `now`
/// (Unix seconds).
pub fn leaf_plan(existing: Option<(&Material, bool)>, ca_pem: &str, want: &CertSpec, now: i64) -> LeafPlan {
    let Some((m, managed)) = existing else { return LeafPlan::Issue("it does not exist".into()) };
    match check_leaf(m, ca_pem, want, now) {
        Ok(renew_at) => LeafPlan::Keep { renew_at },
        Err(why) if managed => LeafPlan::Issue(why),
        Err(why) => LeafPlan::Foreign(why),
    }
}

fn check_leaf(m: &Material, ca_pem: &str, want: &CertSpec, now: i64) -> Result<i64, String> {
    let (Some(cert), Some(key), Some(ca)) = (&m.cert, &m.key, &m.ca) else {
        return Err("it lacks tls.crt, tls.key or ca.crt".into());
    };
    if ca.trim() != ca_pem.trim() {
        return Err("its ca.crt is not the cluster CA".into());
    }
    let info = CertInfo::parse(cert).map_err(|e| e.to_string())?;
    if info.common_name != want.user || info.org_units != [want.role.name()] {
        return Err(format!(
            "its subject is CN={} OU={:?}, not CN={} OU={}",
            info.common_name,
            info.org_units,
            want.user,
            want.role.name()
        ));
    }
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    if sorted(&info.dns_names) != sorted(&want.dns_names) {
        return Err("its DNS names changed".into());
    }
    // Key pair, chain to the CA and validity now.
    Tls::from_pem(cert, key, ca).map_err(|e| e.to_string())?;
    let at = renew_at(info.not_before, info.not_after);
    if now >= at {
        return Err(format!("less than a third of its validity is left (expires at {})", info.not_after));
    }
    Ok(at)
}

/// Seconds from `now` until `at`, for a requeue (at least 1 s).
pub fn until(now: i64, at: i64) -> Duration {
    Duration::from_secs(at.saturating_sub(now).max(1) as u64)
}

/// A `kubernetes.io/tls` Secret named `name` of the cluster, owned by it.
pub fn tls_secret(gc: &GfsCluster, name: String, cert: &str, key: &str, ca: &str) -> Secret {
    let n = Names::of(gc);
    let data = BTreeMap::from([
        (TLS_CRT.to_string(), ByteString(cert.as_bytes().to_vec())),
        (TLS_KEY.to_string(), ByteString(key.as_bytes().to_vec())),
        (CA_CRT.to_string(), ByteString(ca.as_bytes().to_vec())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(n.namespace),
            labels: Some(cluster_labels(&n.cluster)),
            owner_references: Some(vec![owner(gc)]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use gfs_common::certs::CA_VALIDITY;

    use super::*;

    fn names() -> Names {
        Names { cluster: "demo".into(), namespace: "prod".into() }
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn issued(ca: &Authority, spec: &CertSpec) -> Material {
        let c = ca.issue(spec).unwrap();
        Material { cert: Some(c.cert_pem), key: Some(c.key_pem), ca: Some(ca.cert_pem().into()) }
    }

    #[test]
    fn secret_names_subjects_and_dns_names() {
        let n = names();
        assert_eq!(n.ca_secret(), "demo-ca");
        assert_eq!(n.tls_secret(CertRole::Master), "demo-master-tls");
        assert_eq!(n.tls_secret(CertRole::Chunkserver), "demo-chunkserver-tls");
        assert_eq!(n.tls_secret(CertRole::Admin), "demo-admin-tls");
        let m = cert_spec(&n, CertRole::Master);
        assert_eq!((m.user.as_str(), m.role), ("gfs-master", Role::Master));
        assert!(m.dns_names.contains(&"*.demo-master.prod.svc".to_string()));
        assert!(m.dns_names.contains(&"demo.prod.svc".to_string()));
        assert_eq!(cert_spec(&n, CertRole::Chunkserver).dns_names[0], "*.demo-chunkserver.prod.svc");
        assert!(cert_spec(&n, CertRole::Admin).dns_names.is_empty());
    }

    #[test]
    fn a_fresh_certificate_is_kept_until_a_third_of_it_is_left() {
        let ca = Authority::generate("t", CA_VALIDITY).unwrap();
        let want = cert_spec(&names(), CertRole::Master);
        let m = issued(&ca, &want);
        let LeafPlan::Keep { renew_at } = leaf_plan(Some((&m, true)), ca.cert_pem(), &want, now()) else {
            panic!("a fresh certificate is kept")
        };
        let info = CertInfo::parse(m.cert.as_deref().unwrap()).unwrap();
        assert_eq!(renew_at, info.not_after - (info.not_after - info.not_before) / 3);
        // At the renewal time it is issued again, before it expires.
        let plan = leaf_plan(Some((&m, true)), ca.cert_pem(), &want, renew_at);
        assert!(matches!(&plan, LeafPlan::Issue(w) if w.contains("third")), "{plan:?}");
        assert_eq!(super::renew_at(0, 300), 200);
    }

    #[test]
    fn missing_broken_or_mismatched_certificates_are_issued_again() {
        let ca = Authority::generate("t", CA_VALIDITY).unwrap();
        let other = Authority::generate("other", CA_VALIDITY).unwrap();
        let n = names();
        let want = cert_spec(&n, CertRole::Chunkserver);
        let plan = |m: Option<&Material>| leaf_plan(m.map(|m| (m, true)), ca.cert_pem(), &want, now());
        let why = |p: LeafPlan| match p {
            LeafPlan::Issue(w) => w,
            p => panic!("expected Issue, got {p:?}"),
        };
        assert!(why(plan(None)).contains("does not exist"));
        let good = issued(&ca, &want);
        assert!(why(plan(Some(&Material { key: None, ..good.clone() }))).contains("lacks"));
        // Signed by another CA (the CA Secret was replaced).
        let foreign = Material { ca: Some(ca.cert_pem().into()), ..issued(&other, &want) };
        assert!(why(plan(Some(&foreign))).contains("not valid under the CA"));
        assert!(why(plan(Some(&Material { ca: Some(other.cert_pem().into()), ..good.clone() }))).contains("ca.crt"));
        // Another role or other names.
        assert!(why(plan(Some(&issued(&ca, &cert_spec(&n, CertRole::Master))))).contains("OU=chunkserver"));
        let mut renamed = want.clone();
        renamed.dns_names.pop();
        assert!(why(plan(Some(&issued(&ca, &renamed)))).contains("DNS names"));
        // A key that does not fit the certificate.
        let wrong_key = Material { key: issued(&ca, &want).key, ..good.clone() };
        assert!(why(plan(Some(&wrong_key))).contains("does not match"));
        assert!(matches!(plan(Some(&good)), LeafPlan::Keep { .. }));
    }

    #[test]
    fn secrets_the_operator_did_not_write_are_reported_not_replaced() {
        let ca = Authority::generate("t", CA_VALIDITY).unwrap();
        let want = cert_spec(&names(), CertRole::Admin);
        let broken = Material { cert: Some("junk".into()), ..issued(&ca, &want) };
        assert!(matches!(leaf_plan(Some((&broken, false)), ca.cert_pem(), &want, now()), LeafPlan::Foreign(_)));
        let good = issued(&ca, &want);
        assert!(matches!(leaf_plan(Some((&good, false)), ca.cert_pem(), &want, now()), LeafPlan::Keep { .. }));
    }

    #[test]
    fn an_unusable_ca_is_explained() {
        assert_eq!(load_ca(&Material::default()).err().unwrap(), "it has no tls.crt");
        let ca = Authority::generate("t", CA_VALIDITY).unwrap();
        let no_key = Material { cert: Some(ca.cert_pem().into()), ..Default::default() };
        assert_eq!(load_ca(&no_key).err().unwrap(), "it has no tls.key");
        let junk = Material { cert: Some("junk".into()), key: Some(ca.key_pem().into()), ca: None };
        assert!(load_ca(&junk).err().unwrap().contains("CA certificate"));
        let ok = Material { cert: Some(ca.cert_pem().into()), key: Some(ca.key_pem().into()), ca: None };
        assert_eq!(load_ca(&ok).unwrap().cert_pem(), ca.cert_pem());
    }

    #[test]
    fn tls_secrets_have_the_layout_pods_read() {
        let spec: crate::crd::GfsClusterSpec = serde_json::from_value(serde_json::json!({
            "masters": {"replicas": 1, "storage": {"size": "1Gi"}},
            "chunkservers": {"replicas": 3, "storage": {"size": "1Gi"}},
        }))
        .unwrap();
        let mut gc = GfsCluster::new("demo", spec);
        gc.metadata.namespace = Some("prod".into());
        gc.metadata.uid = Some("u".into());
        let s = tls_secret(&gc, "demo-master-tls".into(), "C", "K", "A");
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(Material::of(&s), Material { cert: Some("C".into()), key: Some("K".into()), ca: Some("A".into()) });
        assert!(managed(&s));
        assert_eq!(s.metadata.owner_references.unwrap()[0].kind, "GfsCluster");
    }
}
