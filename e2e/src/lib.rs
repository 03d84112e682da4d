//! Helpers shared by the process-level tests in `tests/`: locating the
//! built binaries, running them as child processes that die with the
//! test, and the test PKI every process and client uses (the binaries run
//! with mTLS, as in production, unless a test passes `--insecure`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;

use gfs_client::ClientConfig;
use gfs_common::auth::Role;
use gfs_common::certs::{CertSpec, LocalPki};
use gfs_common::tls::{Security, Tls};

/// Returns the path of a workspace binary built next to the running test
/// executable (cargo puts both under `target/<profile>/`). `scripts/test.sh`
/// builds the binaries before the tests.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} not built; run `cargo build --workspace --bins` first", path.display());
    path
}

/// A child process with its stdout and stderr in a log file, killed
/// (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Spawns `cmd` with both output streams going to `log`; a gfs binary
    /// gets its role's certificates ([`secured`]).
    pub fn spawn(cmd: &mut Command, log: &Path) -> Proc {
        secured(cmd);
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        Proc(cmd.stdout(out).stderr(err).spawn().expect("spawn"))
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        self.0.wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub use gfs_testkit::free_addr;

/// The identities of the test processes: one CA and one certificate per
/// role under the target folder (`e2e-pki/<role>/`, the `--tls-dir`
/// layout), made once and reused by every test process (a file lock
/// keeps concurrent test binaries from racing on them).
pub fn pki_dir(role: Role) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let root = DIR.get_or_init(|| {
        let root = bin_dir().join("e2e-pki");
        std::fs::create_dir_all(&root).expect("pki dir");
        let lock = std::fs::File::create(root.join(".lock")).expect("pki lock file");
        lock.lock().expect("pki lock");
        let (pki, ca) = LocalPki::open(&root).expect("test CA");
        for role in Role::ALL {
            pki.component(&ca, role.name(), &CertSpec::new(format!("e2e-{}", role.name()), role)).expect("cert");
        }
        root
    });
    root.join(role.name())
}

/// The security of a test client acting as `role` (loaded once per role).
pub fn security(role: Role) -> Security {
    static LOADED: OnceLock<std::sync::Mutex<Vec<(Role, Security)>>> = OnceLock::new();
    let mut loaded = LOADED.get_or_init(Default::default).lock().expect("pki lock");
    if let Some((_, s)) = loaded.iter().find(|(r, _)| *r == role) {
        return s.clone();
    }
    let s = Security::Tls(Tls::load(gfs_common::tls::TlsFiles::in_dir(&pki_dir(role))).expect("test certificate"));
    loaded.push((role, s.clone()));
    s
}

/// A lazily connected mTLS channel to the gfs server at `addr`, with the
/// test identity of `role`, for raw gRPC clients.
pub fn channel(addr: &str, role: Role) -> tonic::transport::Channel {
    let pool = gfs_common::net::ChannelPool::new(1, std::time::Duration::from_secs(2), &security(role), &[]);
    pool.get(addr).expect("channel")
}

/// A client configuration for `master` with the admin test identity.
pub fn client_config(master: impl Into<String>) -> ClientConfig {
    let mut cfg = ClientConfig::new(master);
    cfg.security = security(Role::Admin);
    cfg
}

/// Gives a gfs binary's command its role's certificates (`GFS_TLS_DIR`):
/// `gfs-master` master, `gfs-chunkserver` chunkserver, `gfs` admin;
/// unless the command already chose (`--insecure`, `--tls-*`, `GFS_TLS_*`
/// or `GFS_INSECURE`).
pub fn secured(cmd: &mut Command) -> &mut Command {
    let name = Path::new(cmd.get_program()).file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    let role = match name.as_str() {
        "gfs-master" => Role::Master,
        "gfs-chunkserver" => Role::Chunkserver,
        "gfs" => Role::Admin,
        _ => return cmd,
    };
    let chose_arg = cmd.get_args().any(|a| a.to_str().is_some_and(|a| a == "--insecure" || a.starts_with("--tls-")));
    let chose_env =
        cmd.get_envs().any(|(k, _)| k.to_str().is_some_and(|k| k.starts_with("GFS_TLS_") || k == "GFS_INSECURE"));
    if !chose_arg && !chose_env {
        cmd.env("GFS_TLS_DIR", pki_dir(role));
    }
    cmd
}

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// Seeds `data_dir/tls/` with the test CA, so that `gfs server --data-dir
/// data_dir` issues its components' certificates from it and the test
/// identities ([`client_config`], the `gfs` CLI via [`secured`]) are
/// trusted by that cluster.
pub fn seed_ca(data_dir: &Path) {
    let root = pki_dir(Role::Admin).parent().expect("pki root").to_path_buf();
    let tls = data_dir.join("tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(root.join(f), tls.join(f)).expect("copy test CA");
    }
}

/// Polls `f` every 50 ms until it returns true; panics naming `what` after
/// `secs` seconds.
pub async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f().await {
        assert!(std::time::Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The `gfs` CLI run as a process against an `--insecure` test cluster.
pub mod gfs_cli {
    use std::process::{Command, Output};

    /// Runs `gfs --insecure --master MASTER ARGS...`.
    pub fn run(master: &str, args: &[&str]) -> Output {
        Command::new(super::bin("gfs")).args(["--insecure", "--master", master]).args(args).output().unwrap()
    }

    /// Runs a command expected to succeed; returns its stdout.
    pub fn ok(master: &str, args: &[&str]) -> String {
        let out = run(master, args);
        assert!(out.status.success(), "gfs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command expected to fail; returns its exit code and stderr.
    pub fn fails(master: &str, args: &[&str]) -> (i32, String) {
        let out = run(master, args);
        assert!(!out.status.success(), "gfs {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
