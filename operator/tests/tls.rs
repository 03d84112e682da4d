//! Certificates of GfsClusters against the real kube-apiserver: the
//! operator's own CA and Secrets, a real master and chunkservers run with
//! the certificates the operator issued, the operator's mTLS calls to
//! them, renewal, refusal to replace what it did not write, and the
//! cert-manager objects when cert-manager's API is served.

mod common;

use std::path::Path;

use common::*;
use gfs_common::certs::{Authority, CA_VALIDITY, CertInfo};
use gfs_common::tls::Tls;
use gfs_operator::crd::GfsCluster;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// No master listens here: clusters get their master address through the
/// `gfs.dev/master-address` annotation once the test started one.
const NOWHERE: &str = "127.0.0.1:1";

fn tls_cluster(name: &str, chunkservers: i32) -> serde_json::Value {
    let mut v = cluster_json(name, chunkservers);
    v["spec"].as_object_mut().unwrap().remove("tls");
    v
}

async fn secret(admin: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(admin.clone(), ns).get_opt(name).await.unwrap()
}

fn key(s: &Secret, k: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[k].0.clone()).unwrap()
}

fn condition(gc: &GfsCluster, t: &str) -> Option<(String, String, String)> {
    let c = gc.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Writes a TLS Secret as the kubelet would mount it.
fn mount(s: &Secret, dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for k in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::write(dir.join(k), key(s, k)).unwrap();
    }
    dir.to_path_buf()
}

async fn annotate_master(admin: &Client, ns: &str, name: &str, addr: &str) {
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), ns);
    let patch = json!({"metadata": {"annotations": {"gfs.dev/master-address": addr}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
}

fn tls_secret(name: &str, cert: &str, key: &str, ca: &str, ours: bool) -> Secret {
    let data = [("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let mut s = Secret { data: Some(data), type_: Some("kubernetes.io/tls".into()), ..Default::default() };
    s.metadata.name = Some(name.into());
    if ours {
        s.metadata.labels = Some([("app.kubernetes.io/managed-by".to_string(), "gfs-operator".to_string())].into());
    }
    s
}

// The operator makes a CA and one certificate per role; a real master and
// chunkservers run with them (so they accept each other), and the
// operator reads status and drains a chunkserver through mTLS with its
// admin certificate. A cluster whose CA is another one fails with a clear
// condition instead.
#[tokio::test]
async fn operator_certificates_run_a_real_cluster_and_its_admin_calls_use_mtls() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "tls").await;
    let op = Operator::start(op_client, &ns, NOWHERE, "op-tls");
    create_cluster(&admin, &ns, tls_cluster("sec", 4)).await;

    let names = ["sec-ca", "sec-master-tls", "sec-chunkserver-tls", "sec-admin-tls"];
    for n in names {
        wait(n, || async { secret(&admin, &ns, n).await }).await;
    }
    let ca = secret(&admin, &ns, "sec-ca").await.unwrap();
    let ca_pem = key(&ca, "tls.crt");
    for (n, role) in names[1..].iter().zip(["master", "chunkserver", "admin"]) {
        let s = secret(&admin, &ns, n).await.unwrap();
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"), "{n}");
        assert_eq!(key(&s, "ca.crt"), ca_pem, "{n} carries the cluster CA");
        let info = CertInfo::parse(&key(&s, "tls.crt")).unwrap();
        assert_eq!(info.org_units, vec![role.to_string()], "{n}");
        Tls::from_pem(&key(&s, "tls.crt"), &key(&s, "tls.key"), &ca_pem).expect("chains to the CA, key fits");
        assert_eq!(s.owner_references()[0].kind, "GfsCluster", "{n}");
    }
    // The pods mount them.
    let sts = wait("master sts", || async {
        Api::<StatefulSet>::namespaced(admin.clone(), &ns).get_opt("sec-master").await.unwrap()
    })
    .await;
    let pod = sts.spec.template.spec.unwrap();
    let vol = pod.volumes.unwrap().into_iter().find(|v| v.name == "tls").expect("tls volume");
    assert_eq!(vol.secret.unwrap().secret_name.as_deref(), Some("sec-master-tls"));

    // Processes with exactly this material: chunkservers register with the
    // master only if the handshakes both ways succeed.
    let dir = tempfile::tempdir().unwrap();
    let dirs = TlsDirs {
        master: mount(&secret(&admin, &ns, "sec-master-tls").await.unwrap(), &dir.path().join("master")),
        chunkserver: mount(&secret(&admin, &ns, "sec-chunkserver-tls").await.unwrap(), &dir.path().join("cs")),
        admin: mount(&secret(&admin, &ns, "sec-admin-tls").await.unwrap(), &dir.path().join("admin")),
    };
    let gfs = Gfs::start_with_tls(4, Some(dirs)).await;
    // Plaintext is refused by the TLS master: the harness really talks TLS.
    assert!(gfs_operator::admin::MasterAdmin::default().status(&gfs.master).await.is_err());

    annotate_master(&admin, &ns, "sec", &gfs.master).await;
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    wait("status from the master over mTLS", || async {
        let gc = api.get("sec").await.ok()?;
        (gc.status.as_ref()?.leader.as_deref() == Some(gfs.master.as_str())).then_some(())
    })
    .await;
    // Decommission through mTLS: scale 4 -> 3.
    set_sts_status(&admin, &ns, "sec-chunkserver", 4, 4).await;
    set_sts_status(&admin, &ns, "sec-master", 1, 1).await;
    api.patch_scale("sec", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
    wait("drain of ordinal 3", || async {
        let s = gfs.state(3).await;
        (s == "DECOMMISSIONING" || s == "DECOMMISSIONED").then_some(())
    })
    .await;

    // Another cluster, another CA: the operator's certificate is not valid
    // for this master (nor the master's for it). Status says why.
    create_cluster(&admin, &ns, tls_cluster("other", 3)).await;
    wait("other-admin-tls", || async { secret(&admin, &ns, "other-admin-tls").await }).await;
    annotate_master(&admin, &ns, "other", &gfs.master).await;
    let (_, reason, msg) = wait("a TLS failure in the Degraded condition", || async {
        let gc = api.get("other").await.ok()?;
        condition(&gc, "Degraded")
            .filter(|(s, r, m)| s == "True" && r == "MasterUnreachable" && m.contains(&gfs.master))
    })
    .await;
    eprintln!("wrong CA: {reason}: {msg}");
    let lower = msg.to_lowercase();
    assert!(lower.contains("tls handshake") && lower.contains("certificate"), "{msg}");
    assert!(api.get("other").await.unwrap().status.unwrap().leader.is_none());
    op.shutdown().await;
}

// A CA the user brought is used, not replaced; a certificate the operator
// wrote that is due is issued again from it; a Secret it did not write
// is reported, not touched; a deleted certificate comes back; an unusable
// CA Secret is reported and left as it is.
#[tokio::test]
async fn operator_keeps_the_ca_renews_its_certificates_and_reports_what_it_cannot_use() {
    let (admin, op_client) = setup().await;
    let ns = namespace(&admin, "renew").await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let pp = PostParams::default();
    let ca = Authority::generate("user CA", CA_VALIDITY).unwrap();
    secrets.create(&pp, &tls_secret("ren-ca", ca.cert_pem(), ca.key_pem(), ca.cert_pem(), false)).await.unwrap();
    // Exactly what the operator would issue, valid 20 more minutes: with
    // the hour of backdating, less than a third is left, so it is due for
    // renewal though it does not expire while the test runs.
    let names = gfs_operator::render::Names { cluster: "ren".into(), namespace: ns.clone() };
    let mut short = gfs_operator::certs::cert_spec(&names, gfs_operator::certs::CertRole::Master);
    short.validity = std::time::Duration::from_secs(20 * 60);
    let old = ca.issue(&short).unwrap();
    secrets.create(&pp, &tls_secret("ren-master-tls", &old.cert_pem, &old.key_pem, ca.cert_pem(), true)).await.unwrap();
    let junk = tls_secret("ren-chunkserver-tls", "junk", "junk", "junk", false);
    secrets.create(&pp, &junk).await.unwrap();
    let junk_ca = tls_secret("bad-ca", "not a CA", "no key", "", false);
    secrets.create(&pp, &junk_ca).await.unwrap();

    let op = Operator::start(op_client, &ns, NOWHERE, "op-renew");
    create_cluster(&admin, &ns, tls_cluster("ren", 3)).await;
    create_cluster(&admin, &ns, tls_cluster("bad", 3)).await;

    let renewed = wait("renewed master certificate", || async {
        let s = secret(&admin, &ns, "ren-master-tls").await?;
        (key(&s, "tls.crt") != old.cert_pem).then_some(s)
    })
    .await;
    let info = CertInfo::parse(&key(&renewed, "tls.crt")).unwrap();
    assert!(info.not_after - info.not_before > 300 * 24 * 3600, "a full validity again");
    Tls::from_pem(&key(&renewed, "tls.crt"), &key(&renewed, "tls.key"), ca.cert_pem()).expect("from the user's CA");
    assert_eq!(key(&secret(&admin, &ns, "ren-ca").await.unwrap(), "tls.key"), ca.key_pem(), "CA untouched");

    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    let (_, _, msg) = wait("CertificateInvalid", || async {
        condition(&api.get("ren").await.ok()?, "Degraded").filter(|c| c.1 == "CertificateInvalid")
    })
    .await;
    assert!(msg.contains("ren-chunkserver-tls") && msg.contains("not written by gfs-operator"), "{msg}");
    let (_, _, msg) = wait("CertificateAuthorityInvalid", || async {
        condition(&api.get("bad").await.ok()?, "Degraded").filter(|c| c.1 == "CertificateAuthorityInvalid")
    })
    .await;
    assert!(msg.contains("bad-ca"), "{msg}");
    // Several passes later (requeue 1 s) neither Secret was replaced.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(secret(&admin, &ns, "ren-chunkserver-tls").await.unwrap().data, junk.data);
    assert_eq!(secret(&admin, &ns, "bad-ca").await.unwrap().data, junk_ca.data);
    assert!(secret(&admin, &ns, "bad-master-tls").await.is_none(), "nothing issued from an unusable CA");

    // A deleted certificate is issued again.
    let before = wait("ren-admin-tls", || async { secret(&admin, &ns, "ren-admin-tls").await }).await;
    secrets.delete("ren-admin-tls", &DeleteParams::default()).await.unwrap();
    wait("ren-admin-tls again", || async {
        let s = secret(&admin, &ns, "ren-admin-tls").await?;
        (s.uid() != before.uid()).then_some(())
    })
    .await;
    op.shutdown().await;
}

fn cert_manager_crd(plural: &str, kind: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.cert-manager.io")},
        "spec": {
            "group": "cert-manager.io", "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        }
    })
}

// With cert-manager's API served (its CRDs, no controller), the operator
// writes Issuers and Certificates instead of signing, and says it waits
// for them.
#[tokio::test]
async fn with_cert_manager_installed_the_operator_writes_issuers_and_certificates() {
    let (admin, op_client) = setup().await;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for (plural, kind) in [("certificates", "Certificate"), ("issuers", "Issuer")] {
        let crd: CustomResourceDefinition = serde_json::from_value(cert_manager_crd(plural, kind)).unwrap();
        crds.patch(&crd.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd)).await.unwrap();
    }
    let ns = namespace(&admin, "certmanager").await;
    let certs = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"));
    let issuers = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("cert-manager.io", "v1", "Issuer"));
    let cert_api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &certs);
    let issuer_api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &issuers);
    wait("cert-manager API served", || async { cert_api.list(&Default::default()).await.ok() }).await;

    let op = Operator::start_cfg(op_client, &ns, NOWHERE, "op-cm", |c| {
        c.controller.cert_manager = gfs_operator::pki::CertManagerMode::Auto;
    });
    create_cluster(&admin, &ns, tls_cluster("cm", 3)).await;
    let master = wait("Certificate cm-master", || async { cert_api.get_opt("cm-master").await.unwrap() }).await;
    assert_eq!(master.data["spec"]["secretName"], "cm-master-tls");
    assert_eq!(master.data["spec"]["subject"]["organizationalUnits"], json!(["master"]));
    assert_eq!(master.data["spec"]["issuerRef"]["name"], "cm-ca");
    for n in ["cm-ca", "cm-chunkserver", "cm-admin"] {
        wait(n, || async { cert_api.get_opt(n).await.unwrap() }).await;
    }
    let ca = cert_api.get("cm-ca").await.unwrap();
    assert_eq!(ca.data["spec"]["isCA"], true);
    for n in ["cm-selfsigned", "cm-ca"] {
        wait(n, || async { issuer_api.get_opt(n).await.unwrap() }).await;
    }
    assert!(secret(&admin, &ns, "cm-ca").await.is_none(), "cert-manager writes the CA, not the operator");
    let api: Api<GfsCluster> = Api::namespaced(admin.clone(), &ns);
    let (_, _, msg) = wait("waiting for cert-manager", || async {
        condition(&api.get("cm").await.ok()?, "Progressing").filter(|c| c.2.contains("cert-manager Certificate"))
    })
    .await;
    assert!(msg.contains("cm-master"), "{msg}");
    op.shutdown().await;
    for plural in ["certificates", "issuers"] {
        let _ = crds.delete(&format!("{plural}.cert-manager.io"), &DeleteParams::default()).await;
    }
}

// The admin-port token on real processes: gfs-master through the env var
// and gfs-chunkserver through the flag refuse /metrics without the token,
// serve it with the token, and keep the probes open.
#[tokio::test]
async fn admin_port_token_guards_metrics_of_real_processes() {
    use gfs_common::admin_http::get_with;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "process-token\n").unwrap();
    let (m_admin, c_admin) = (gfs_testkit::free_addr(), gfs_testkit::free_addr());
    let master_addr = gfs_testkit::free_addr().to_string();
    let log = |n: &str| std::fs::File::create(dir.path().join(n)).unwrap();
    let mut master = std::process::Command::new(bin_path("gfs-master"))
        .args(["--insecure", "--listen", &master_addr, "--admin-listen", &m_admin.to_string(), "--data-dir"])
        .arg(dir.path().join("m"))
        .env("GFS_ADMIN_AUTH_TOKEN_FILE", &token)
        .stdout(std::process::Stdio::null())
        .stderr(log("master.log"))
        .spawn()
        .unwrap();
    let mut cs = std::process::Command::new(bin_path("gfs-chunkserver"))
        .args(["--insecure", "--master", &master_addr, "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", &c_admin.to_string(), "--admin-auth-token-file"])
        .arg(&token)
        .arg("--data-dir")
        .arg(dir.path().join("c"))
        .stdout(std::process::Stdio::null())
        .stderr(log("cs.log"))
        .spawn()
        .unwrap();
    let good = [("Authorization", "Bearer process-token")];
    for addr in [m_admin, c_admin] {
        let (code, _, body) =
            wait("metrics with the token", || async { get_with(addr, "/metrics", &good).await.ok() }).await;
        assert_eq!(code, 200, "{addr}");
        assert!(body.contains("# EOF"), "{body}");
        let (code, head, _) = get_with(addr, "/metrics", &[]).await.unwrap();
        assert_eq!(code, 401, "{addr}");
        assert!(head.to_lowercase().contains("www-authenticate: bearer"), "{head}");
        assert_eq!(get_with(addr, "/metrics", &[("Authorization", "Bearer nope")]).await.unwrap().0, 401);
        assert_eq!(get_with(addr, "/healthz", &[]).await.unwrap().0, 200, "{addr}");
    }
    // An unreadable token file stops the process at start, not later.
    let out = std::process::Command::new(bin_path("gfs-master"))
        .args(["--insecure", "--admin-listen", "127.0.0.1:0", "--admin-auth-token-file"])
        .arg(dir.path().join("missing"))
        .arg("--data-dir")
        .arg(dir.path().join("m2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read admin token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in [&mut master, &mut cs] {
        let _ = p.kill();
        let _ = p.wait();
    }
}
