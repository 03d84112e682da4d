//! Puts the commit into `gfs --version`: `GFS_COMMIT` and
//! `GFS_COMMIT_DATE` for the crate, from the environment variable
//! `GFS_COMMIT` (image builds without `.git`), else from git, else
//! "unknown". Reruns only when HEAD or the branch it points to moves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=GFS_COMMIT");
    println!("cargo:rerun-if-env-changed=GFS_COMMIT_DATE");
    // HEAD, the ref it names and packed-refs (a ref moved by `git gc`).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]).unwrap_or(dir);
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            for path in [format!("{common}/{r}"), format!("{common}/packed-refs")] {
                if std::path::Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
        }
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let commit = env("GFS_COMMIT").or_else(|| git(&["rev-parse", "--short", "HEAD"]));
    let date = match &commit {
        Some(_) if env("GFS_COMMIT").is_some() => env("GFS_COMMIT_DATE"),
        Some(_) => git(&["log", "-1", "--format=%cs", "HEAD"]),
        None => None,
    };
    let commit = commit.unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=GFS_COMMIT={commit}");
    println!("cargo:rustc-env=GFS_VERSION_SUFFIX={}", date.map(|d| format!(" {d}")).unwrap_or_default());
}
