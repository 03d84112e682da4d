//! `gfs cert`: a cluster CA and certificates for running gfs components
//! by hand (separate processes, images), in the layout `--tls-dir` reads.
//! Kubernetes users get theirs from the operator or cert-manager.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gfs_common::auth::Role;
use gfs_common::certs::{Authority, CA_VALIDITY, CertSpec};

/// `gfs cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a cluster CA: DIR/ca.crt and DIR/ca.key (mode 0600).
    Ca {
        /// Where to write it.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing CA (every certificate it signed stops being
        /// trusted once the new CA replaces the old in `ca.crt`).
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate signed by the CA in --ca-dir into OUT
    /// (tls.crt, tls.key, ca.crt: what --tls-dir reads).
    Issue(IssueArgs),
}

/// Flags of `gfs cert issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA's folder (ca.crt, ca.key), from `gfs cert ca`.
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// Role: master, chunkserver, client or admin (the subject's OU).
    #[arg(long)]
    role: String,
    /// User (the subject's CN): a file owner name for clients and admins.
    #[arg(long)]
    user: String,
    /// A group the user belongs to (the subject's O).
    #[arg(long)]
    group: Option<String>,
    /// DNS names to add (gfs checks roles, not names; other tools may).
    #[arg(long = "dns", value_name = "NAME")]
    dns: Vec<String>,
    /// IP addresses to add.
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Runs a `gfs cert` command.
pub fn run(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Ca { dir, force } => {
            let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
            if !force && (crt.exists() || key.exists()) {
                bail!("{} already holds a CA; pass --force to replace it", dir.display());
            }
            let ca = Authority::generate("gfs cluster CA", CA_VALIDITY)?;
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
            write(&key, ca.key_pem(), true)?;
            write(&crt, ca.cert_pem(), false)?;
            println!("CA written to {} (keep ca.key secret)", dir.display());
            Ok(())
        }
        CertCommand::Issue(a) => issue(a),
    }
}

fn issue(a: IssueArgs) -> anyhow::Result<()> {
    let Some(role) = Role::parse(&a.role) else {
        bail!("--role must be master, chunkserver, client or admin, not {:?}", a.role);
    };
    if a.days == 0 {
        bail!("--days must be positive");
    }
    let read = |p: PathBuf| std::fs::read_to_string(&p).with_context(|| p.display().to_string());
    let ca = Authority::from_pem(&read(a.ca_dir.join("ca.crt"))?, &read(a.ca_dir.join("ca.key"))?)?;
    let mut spec = CertSpec::new(a.user, role);
    spec.group = a.group;
    spec.dns_names.extend(a.dns);
    spec.ips.extend(a.ips);
    spec.validity = Duration::from_secs(a.days * 24 * 3600);
    let issued = ca.issue(&spec)?;
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    write(&a.out.join("tls.key"), &issued.key_pem, true)?;
    write(&a.out.join("tls.crt"), &issued.cert_pem, false)?;
    write(&a.out.join("ca.crt"), ca.cert_pem(), false)?;
    println!("{} certificate for {} written to {}", role, spec.user, a.out.display());
    Ok(())
}

/// Writes a file, mode 0600 for secrets (0644 otherwise).
fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).with_context(|| path.display().to_string())?;
    f.write_all(text.as_bytes()).with_context(|| path.display().to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_common::tls::{Tls, TlsFiles};

    #[test]
    fn a_ca_and_the_certificates_it_issues_load_as_tls_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        run(CertCommand::Ca { dir: ca.clone(), force: false }).unwrap();
        let e = run(CertCommand::Ca { dir: ca.clone(), force: false }).unwrap_err();
        assert!(e.to_string().contains("already holds a CA"), "{e}");
        let out = dir.path().join("alice");
        let args = IssueArgs {
            ca_dir: ca.clone(),
            role: "client".into(),
            user: "alice".into(),
            group: Some("eng".into()),
            dns: vec!["a.example".into()],
            ips: vec![],
            days: 30,
            out: out.clone(),
        };
        issue(args).unwrap();
        let id = Tls::load(TlsFiles::in_dir(&out)).unwrap().identity();
        assert_eq!((id.user.as_str(), id.groups.as_slice()), ("alice", &["eng".to_string()][..]));
        assert!(id.roles.contains(Role::Client));
        let bad = IssueArgs {
            ca_dir: ca,
            role: "root".into(),
            user: "x".into(),
            group: None,
            dns: vec![],
            ips: vec![],
            days: 1,
            out: dir.path().join("x"),
        };
        assert!(issue(bad).unwrap_err().to_string().contains("--role must be"));
    }
}
