//! kubectl and helm as a user runs them, against the cluster of
//! `e2e/cluster`, with errors that quote what the tool said.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// The repository root (the e2e crate's parent).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e has a parent").to_path_buf()
}

/// kubectl + helm bound to one kubeconfig.
pub struct Kube {
    pub kubeconfig: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
}

fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Kube {
    /// Starts (or reuses) the cluster unless `GFS_CLUSTER_KUBECONFIG` names one.
    pub fn connect() -> Result<Kube> {
        let kubeconfig = match std::env::var_os("GFS_CLUSTER_KUBECONFIG") {
            Some(k) => PathBuf::from(k),
            None => {
                let out = output(Command::new(repo().join("e2e/cluster")).arg("up"), "e2e/cluster up")?;
                PathBuf::from(out.lines().last().ok_or_else(|| anyhow!("e2e/cluster up printed nothing"))?)
            }
        };
        let kubectl = kubeconfig.parent().expect("kubeconfig in a folder").join("kubectl");
        let helm = PathBuf::from(output(&mut Command::new(repo().join("scripts/helm.sh")), "scripts/helm.sh")?.trim());
        Ok(Kube { kubeconfig, kubectl, helm })
    }

    /// `kubectl ARGS`: stdout, or an error with stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        output(
            Command::new(&self.kubectl).arg("--kubeconfig").arg(&self.kubeconfig).args(args),
            &format!("kubectl {}", args.join(" ")),
        )
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let text = self.kubectl(&a)?;
        serde_json::from_str(&text).with_context(|| format!("kubectl {} gave no JSON", args.join(" ")))
    }

    /// `kubectl apply -f -` of a manifest.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("kubectl apply failed: {}\n{yaml}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// `helm ARGS` with the cluster's kubeconfig.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        output(
            Command::new(&self.helm).env("KUBECONFIG", &self.kubeconfig).args(args),
            &format!("helm {}", args.join(" ")),
        )
    }

    /// `e2e/cluster ARGS` (node power, links).
    pub fn cluster(&self, args: &[&str]) -> Result<String> {
        output(Command::new(repo().join("e2e/cluster")).args(args), &format!("e2e/cluster {}", args.join(" ")))
    }

    /// Runs `sh -c SCRIPT` in a pod's first container.
    pub fn sh(&self, ns: &str, pod: &str, script: &str) -> Result<String> {
        self.kubectl(&["-n", ns, "exec", pod, "--", "sh", "-c", script])
    }
}

/// Polls `f` every second until it returns `Some`, or fails after
/// `timeout` quoting the last error.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    let mut last = String::from("not yet");
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?} (last: {last})");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The condition `type_` of an object's status, if present.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// Whether a pod is Running with every container ready.
pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
}

/// The items of a list.
pub fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The name of an object.
pub fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_string()
}
