//! Helpers shared by the process-level tests in `tests/`: locating the
//! built binaries and running them as child processes that die with the
//! test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Returns the path of a workspace binary built next to the running test
/// executable (cargo puts both under `target/<profile>/`). `scripts/test.sh`
/// builds the binaries before the tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} not built; run `cargo build --workspace --bins` first", path.display());
    path
}

/// A child process with its stdout and stderr in a log file, killed
/// (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Spawns `cmd` with both output streams going to `log`.
    pub fn spawn(cmd: &mut Command, log: &Path) -> Proc {
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
