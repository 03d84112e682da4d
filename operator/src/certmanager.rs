//! Certificates through cert-manager, when it is installed: the operator
//! writes cert-manager objects and cert-manager writes the Secrets, in the
//! same names and layout as the operator's own CA would
//! ([`crate::certs`]), so pods do not care who signed.
//!
//! Without `spec.tls.issuerRef`: a self-signed Issuer `<cluster>-selfsigned`
//! bootstraps the CA Certificate `<cluster>-ca` (isCA, Secret `<cluster>-ca`),
//! and the CA Issuer `<cluster>-ca` signs the component Certificates
//! `<cluster>-master`, `<cluster>-chunkserver` and `<cluster>-admin`. With
//! an issuerRef, only the component Certificates are written, signed by it.
//!
//! Dynamic objects (`cert-manager.io/v1`), so no cert-manager crate is
//! needed; renewal is cert-manager's (`renewBefore` = a third of the
//! validity, as the operator's own CA does).

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::FIELD_MANAGER;
use crate::certs::{CertRole, cert_spec};
use crate::crd::GfsCluster;
use crate::error::Result;
use crate::render::{Names, cluster_labels, owner};

/// API group of cert-manager.
pub const GROUP: &str = "cert-manager.io";
/// Validity asked for component certificates (one year, as the
/// operator's own CA issues).
pub const DURATION: &str = "8760h";
/// Renewal a third of the validity before expiry.
pub const RENEW_BEFORE: &str = "2920h";

/// The API resource of a cert-manager kind (`Issuer`, `Certificate`).
pub fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", kind))
}

fn object(gc: &GfsCluster, kind: &str, name: String, spec: Value) -> DynamicObject {
    let n = Names::of(gc);
    let mut o = DynamicObject::new(&name, &resource(kind)).within(&n.namespace).data(json!({ "spec": spec }));
    o.metadata.labels = Some(cluster_labels(&n.cluster));
    o.metadata.owner_references = Some(vec![owner(gc)]);
    o
}

/// Name of the component Certificate of `r` (its Secret is
/// `Names::tls_secret`).
pub fn certificate_name(n: &Names, r: CertRole) -> String {
    format!("{}-{}", n.cluster, r.role().name())
}

/// Returns the cert-manager objects of the cluster, in apply order.
pub fn objects(gc: &GfsCluster) -> Vec<DynamicObject> {
    let n = Names::of(gc);
    let mut out = Vec::new();
    let issuer = match &gc.spec.tls.issuer_ref {
        Some(r) => json!({ "name": r.name, "kind": r.kind.as_str(), "group": r.group }),
        None => {
            let selfsigned = format!("{}-selfsigned", n.cluster);
            out.push(object(gc, "Issuer", selfsigned.clone(), json!({ "selfSigned": {} })));
            out.push(object(
                gc,
                "Certificate",
                n.ca_secret(),
                json!({
                    "isCA": true,
                    "commonName": format!("gfs {}/{} CA", n.namespace, n.cluster),
                    "secretName": n.ca_secret(),
                    "duration": "87600h",
                    "privateKey": { "algorithm": "ECDSA", "size": 256 },
                    "issuerRef": { "name": selfsigned, "kind": "Issuer", "group": GROUP },
                }),
            ));
            out.push(object(gc, "Issuer", n.ca_secret(), json!({ "ca": { "secretName": n.ca_secret() } })));
            json!({ "name": n.ca_secret(), "kind": "Issuer", "group": GROUP })
        }
    };
    for r in CertRole::ALL {
        let spec = cert_spec(&n, r);
        let mut cert = json!({
            "secretName": n.tls_secret(r),
            "commonName": spec.user,
            "subject": { "organizationalUnits": [spec.role.name()] },
            "duration": DURATION,
            "renewBefore": RENEW_BEFORE,
            "usages": ["digital signature", "server auth", "client auth"],
            // A new key with every renewal.
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
            "secretTemplate": { "labels": cluster_labels(&n.cluster) },
            "issuerRef": issuer,
        });
        if !spec.dns_names.is_empty() {
            cert["dnsNames"] = json!(spec.dns_names);
        }
        out.push(object(gc, "Certificate", certificate_name(&n, r), cert));
    }
    out
}

/// Why a Certificate is not ready yet (`None` when its Ready condition is
/// True).
pub fn not_ready(cert: &DynamicObject) -> Option<String> {
    let conds = cert.data.pointer("/status/conditions").and_then(Value::as_array);
    let ready = conds.and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    match ready {
        Some(c) if c["status"] == "True" => None,
        Some(c) => Some(format!(
            "{}: {}",
            c["reason"].as_str().unwrap_or("NotReady"),
            c["message"].as_str().unwrap_or("not issued yet")
        )),
        None => Some("not issued yet".into()),
    }
}

/// Applies the objects; returns a note per component Certificate that
/// cert-manager has not issued yet.
pub async fn apply(client: &Client, gc: &GfsCluster) -> Result<Vec<String>> {
    let n = Names::of(gc);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut waiting = Vec::new();
    for o in objects(gc) {
        let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &n.namespace, &resource(&kind));
        let live = api.patch(&o.name_any(), &pp, &Patch::Apply(&o)).await?;
        let leaf = CertRole::ALL.iter().any(|r| certificate_name(&n, *r) == o.name_any());
        if kind == "Certificate"
            && leaf
            && let Some(why) = not_ready(&live)
        {
            waiting.push(format!("cert-manager Certificate {}: {why}", o.name_any()));
        }
    }
    Ok(waiting)
}

/// True if cert-manager's API (Certificates and Issuers) is served.
pub async fn installed(client: &Client) -> Result<bool> {
    match client.list_api_group_resources(&format!("{GROUP}/v1")).await {
        Ok(list) => {
            let has = |r: &str| list.resources.iter().any(|x| x.name == r);
            Ok(has("certificates") && has("issuers"))
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{GfsClusterSpec, IssuerKind, IssuerRef};

    fn cluster() -> GfsCluster {
        let spec: GfsClusterSpec = serde_json::from_value(json!({
            "masters": {"replicas": 1, "storage": {"size": "1Gi"}},
            "chunkservers": {"replicas": 3, "storage": {"size": "1Gi"}},
        }))
        .unwrap();
        let mut gc = GfsCluster::new("demo", spec);
        gc.metadata.namespace = Some("prod".into());
        gc.metadata.uid = Some("u".into());
        gc
    }

    fn find<'a>(objs: &'a [DynamicObject], kind: &str, name: &str) -> &'a DynamicObject {
        objs.iter()
            .find(|o| o.types.as_ref().unwrap().kind == kind && o.name_any() == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
    }

    #[test]
    fn bootstraps_a_ca_and_issues_one_certificate_per_component() {
        let objs = objects(&cluster());
        assert_eq!(objs.len(), 6);
        assert!(find(&objs, "Issuer", "demo-selfsigned").data["spec"]["selfSigned"].is_object());
        let ca = &find(&objs, "Certificate", "demo-ca").data["spec"];
        assert_eq!((ca["isCA"].as_bool(), ca["secretName"].as_str()), (Some(true), Some("demo-ca")));
        assert_eq!(find(&objs, "Issuer", "demo-ca").data["spec"]["ca"]["secretName"], "demo-ca");
        let m = &find(&objs, "Certificate", "demo-master").data["spec"];
        assert_eq!(m["secretName"], "demo-master-tls");
        assert_eq!(m["subject"]["organizationalUnits"], json!(["master"]));
        assert_eq!(m["issuerRef"]["name"], "demo-ca");
        assert!(m["dnsNames"].as_array().unwrap().contains(&json!("*.demo-master.prod.svc")));
        let c = &find(&objs, "Certificate", "demo-chunkserver").data["spec"];
        assert_eq!(c["subject"]["organizationalUnits"], json!(["chunkserver"]));
        let a = &find(&objs, "Certificate", "demo-admin").data["spec"];
        assert_eq!(
            (a["commonName"].as_str(), a["secretName"].as_str()),
            (Some("gfs-operator"), Some("demo-admin-tls"))
        );
        assert!(a.get("dnsNames").is_none());
        for o in &objs {
            assert_eq!(o.metadata.owner_references.as_ref().unwrap()[0].kind, "GfsCluster");
            assert_eq!(o.types.as_ref().unwrap().api_version, "cert-manager.io/v1");
        }
    }

    #[test]
    fn an_issuer_ref_replaces_the_bootstrap() {
        let mut gc = cluster();
        gc.spec.tls.issuer_ref =
            Some(IssuerRef { name: "corp-ca".into(), kind: IssuerKind::ClusterIssuer, group: GROUP.into() });
        let objs = objects(&gc);
        assert_eq!(objs.len(), 3, "component certificates only");
        let m = &find(&objs, "Certificate", "demo-master").data["spec"];
        assert_eq!(m["issuerRef"], json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}));
    }

    #[test]
    fn readiness_comes_from_the_ready_condition() {
        let mut o = DynamicObject::new("x", &resource("Certificate"));
        assert_eq!(not_ready(&o).as_deref(), Some("not issued yet"));
        o.data = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending", "message": "waiting"}]}});
        assert_eq!(not_ready(&o).as_deref(), Some("Pending: waiting"));
        o.data = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(not_ready(&o), None);
    }
}
