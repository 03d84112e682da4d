//! The security part of the master and chunkserver pods: the user they
//! run as, their certificate Secret (or `--insecure` when the cluster has
//! TLS off) and the admin port's bearer token. Pure, called by
//! [`crate::render`].

use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, KeyToPath, PodSecurityContext, PodSpec, SeccompProfile, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};

use crate::certs::CertRole;
use crate::crd::GfsCluster;
use crate::render::{Component, Names};

/// Where a pod finds its certificate (`tls.crt`, `tls.key`, `ca.crt`).
pub const TLS_DIR: &str = "/etc/gfs/tls";
/// Where a pod finds the admin port's bearer token.
pub const TOKEN_DIR: &str = "/etc/gfs/metrics-auth";
/// User and group of the images (`images/Dockerfile`).
pub const USER: i64 = 65532;
/// Mode of mounted Secret files: owner read only. With the pod's fsGroup
/// the kubelet adds group read and gives the files that group, so the
/// non-root user reads them and nobody else.
pub const SECRET_MODE: i32 = 0o400;

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

fn secret_volume(name: &str, secret: String, items: Option<Vec<KeyToPath>>) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(SECRET_MODE),
            items,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(true), ..Default::default() }
}

/// The container settings of the Pod Security Standard "restricted": the
/// binaries write only their data volume, need no capability and never
/// gain privileges.
pub fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// Adds the security settings of component `c` to `pod` (one container).
pub fn secure(gc: &GfsCluster, c: Component, pod: &mut PodSpec) {
    let n = Names::of(gc);
    pod.security_context = Some(PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(USER),
        run_as_group: Some(USER),
        fs_group: Some(USER),
        // Only a volume whose root has another group is walked.
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    });
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut envs = Vec::new();
    if gc.spec.tls.enabled {
        volumes.push(secret_volume("tls", n.tls_secret(CertRole::of(c)), None));
        mounts.push(mount("tls", TLS_DIR));
        envs.push(env("GFS_TLS_DIR", TLS_DIR));
    } else {
        envs.push(env("GFS_INSECURE", "true"));
    }
    if let Some(t) = &gc.spec.metrics.auth_token_secret {
        let items = vec![KeyToPath { key: t.key.clone(), path: "token".into(), ..Default::default() }];
        volumes.push(secret_volume("metrics-auth", t.name.clone(), Some(items)));
        mounts.push(mount("metrics-auth", TOKEN_DIR));
        envs.push(env("GFS_ADMIN_AUTH_TOKEN_FILE", format!("{TOKEN_DIR}/token")));
    }
    // None rather than an empty list, which the API server does not keep:
    // a template compared with the stored one must come out the same.
    if !volumes.is_empty() {
        pod.volumes.get_or_insert_with(Vec::new).extend(volumes);
    }
    if let Some(container) = pod.containers.first_mut() {
        container.security_context = Some(restricted());
        container.volume_mounts.get_or_insert_with(Vec::new).extend(mounts);
        container.env.get_or_insert_with(Vec::new).extend(envs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{GfsClusterSpec, SecretKeyRef};
    use crate::render::{StsPlan, chunkserver_sts, master_sts};

    fn cluster() -> GfsCluster {
        let spec: GfsClusterSpec = serde_json::from_value(serde_json::json!({
            "masters": {"replicas": 1, "storage": {"size": "1Gi"}},
            "chunkservers": {"replicas": 3, "storage": {"size": "1Gi"}},
        }))
        .unwrap();
        let mut gc = GfsCluster::new("demo", spec);
        gc.metadata.namespace = Some("prod".into());
        gc.metadata.uid = Some("u".into());
        gc
    }

    fn env_of(pod: &PodSpec, name: &str) -> Option<String> {
        pod.containers[0].env.as_ref()?.iter().find(|e| e.name == name)?.value.clone()
    }

    fn pods(gc: &GfsCluster) -> [PodSpec; 2] {
        let plan = StsPlan { replicas: 1, partition: 0 };
        [master_sts(gc, plan).spec.template.spec.unwrap(), chunkserver_sts(gc, plan).spec.template.spec.unwrap()]
    }

    #[test]
    fn every_pod_meets_the_restricted_pod_security_standard() {
        for pod in pods(&cluster()) {
            let p = pod.security_context.as_ref().unwrap();
            assert_eq!(p.run_as_non_root, Some(true));
            assert_eq!(p.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
            let c = pod.containers[0].security_context.as_ref().unwrap();
            assert_eq!((c.allow_privilege_escalation, c.read_only_root_filesystem), (Some(false), Some(true)));
            assert_eq!(c.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
        }
    }

    #[test]
    fn tls_on_mounts_each_component_its_own_secret_read_only() {
        let gc = cluster();
        for (pod, secret) in pods(&gc).iter().zip(["demo-master-tls", "demo-chunkserver-tls"]) {
            let v = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "tls").unwrap();
            let s = v.secret.as_ref().unwrap();
            assert_eq!((s.secret_name.as_deref(), s.default_mode), (Some(secret), Some(0o400)));
            let m = pod.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "tls").unwrap();
            assert_eq!((m.mount_path.as_str(), m.read_only), (TLS_DIR, Some(true)));
            assert_eq!(env_of(pod, "GFS_TLS_DIR").as_deref(), Some(TLS_DIR));
            assert_eq!(env_of(pod, "GFS_INSECURE"), None);
            let sc = pod.security_context.as_ref().unwrap();
            assert_eq!((sc.fs_group, sc.run_as_user, sc.run_as_non_root), (Some(USER), Some(USER), Some(true)));
        }
    }

    #[test]
    fn tls_off_runs_insecure_without_a_secret() {
        let mut gc = cluster();
        gc.spec.tls.enabled = false;
        for pod in pods(&gc) {
            assert_eq!(env_of(&pod, "GFS_INSECURE").as_deref(), Some("true"));
            // No volume but the PVC's: no list at all, as the API server
            // stores an empty one (an empty list here made the rendered
            // template differ from the stored one, so the operator saw a
            // rollout that never ended: "rolling ... one pod at a time").
            assert_eq!(pod.volumes, None);
            assert_eq!(env_of(&pod, "GFS_TLS_DIR"), None);
        }
    }

    #[test]
    fn a_metrics_token_secret_becomes_the_token_file() {
        let mut gc = cluster();
        assert!(pods(&gc).iter().all(|p| env_of(p, "GFS_ADMIN_AUTH_TOKEN_FILE").is_none()));
        gc.spec.metrics.auth_token_secret = Some(SecretKeyRef { name: "scrape".into(), key: "bearer".into() });
        for pod in pods(&gc) {
            assert_eq!(env_of(&pod, "GFS_ADMIN_AUTH_TOKEN_FILE").as_deref(), Some("/etc/gfs/metrics-auth/token"));
            let v = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "metrics-auth").unwrap();
            let s = v.secret.as_ref().unwrap();
            assert_eq!(s.secret_name.as_deref(), Some("scrape"));
            assert_eq!(s.items.as_ref().unwrap()[0].key, "bearer");
            // Probes stay on the open endpoints.
            let probe = pod.containers[0].readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(probe.path.as_deref(), Some("/readyz"));
        }
    }
}
