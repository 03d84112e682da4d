//! Recursive and multi-path `gfs put` and `gfs get`, as `hdfs dfs
//! -put/-get`: several sources need the destination to be a directory
//! (existing; or, for one directory source, made as `cp -r` does); a
//! directory source needs `-r`, as `gfs cp`. Each file goes through the
//! single-file path (`put` through `REMOTE._COPYING_`, `get` through a
//! local `LOCAL._COPYING_` renamed once complete). Remote trees are walked
//! with [`crate::TreeLister`], local ones with `read_dir` a directory at a
//! time; symbolic links inside a tree and special files are skipped with
//! a message. A summary line (files, bytes, seconds) ends a copy of more
//! than one source or of a tree.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gfs_common::Error;
use gfs_common::path::{file_name, join, normalize};

use super::commands::{get_file, put_file};
use super::exit;
use super::expand::expand_all;
use super::verbs::remote;
use crate::{Client, FileType};

/// Files and bytes copied so far.
#[derive(Debug)]
struct Totals {
    files: u64,
    bytes: u64,
    start: Instant,
}

impl Totals {
    fn new() -> Totals {
        Totals { files: 0, bytes: 0, start: Instant::now() }
    }

    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }

    fn report(&self, verb: &str) {
        let secs = self.start.elapsed().as_secs_f64();
        eprintln!("{verb}: {} file(s), {} bytes in {secs:.1} s", self.files, self.bytes);
    }
}

/// The name of a local source, for the remote name it gets.
fn local_name(src: &str) -> anyhow::Result<String> {
    let p = std::fs::canonicalize(src).map_err(|e| exit::local_io(src, &e))?;
    match p.file_name().map(|n| n.to_str()) {
        Some(Some(n)) => Ok(n.to_string()),
        Some(None) => Err(exit::local(src, std::io::ErrorKind::InvalidData, "name is not UTF-8")),
        None => Err(exit::local(src, std::io::ErrorKind::InvalidInput, "has no name to copy under")),
    }
}

/// `gfs put [-f] [-r] LOCAL... REMOTE`.
pub async fn put(client: &Client, force: bool, recursive: bool, paths: &[String]) -> anyhow::Result<()> {
    let Some((dst, srcs)) = paths.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(exit::remote_text("put: give at least one LOCAL and a REMOTE".into(), exit::USAGE));
    };
    if srcs.iter().any(|s| s == "-") {
        if srcs.len() > 1 {
            return Err(exit::remote_text("put: stdin (-) must be the only source".into(), exit::USAGE));
        }
        return put_file(client, force, "-", dst).await.map(|_| ());
    }
    // A missing local source fails before any connection.
    for src in srcs {
        std::fs::metadata(src).map_err(|e| exit::local_io(src, &e))?;
    }
    let dst = normalize(dst).map_err(remote)?;
    let dst_is_dir = match client.stat(&dst).await {
        Ok(st) => st.info.r#type() == FileType::Directory,
        Err(Error::NotFound { .. }) => false,
        Err(e) => return Err(remote(e)),
    };
    if srcs.len() > 1 && !dst_is_dir {
        let text = format!("put: remote {dst}: not an existing directory (needed with several sources)");
        return Err(exit::remote_text(text, exit::FAILURE));
    }
    let mut totals = Totals::new();
    for src in srcs {
        let meta = std::fs::metadata(src).map_err(|e| exit::local_io(src, &e))?;
        let target = if dst_is_dir { join(&dst, &local_name(src)?) } else { dst.clone() };
        if meta.is_dir() {
            if !recursive {
                return Err(exit::local(src, std::io::ErrorKind::IsADirectory, "is a directory (use -r)"));
            }
            put_tree(client, force, Path::new(src), &target, &mut totals).await?;
        } else if meta.is_file() {
            totals.add(put_file(client, force, src, &target).await?);
        } else {
            return Err(exit::local(src, std::io::ErrorKind::InvalidInput, "not a regular file or directory"));
        }
    }
    if srcs.len() > 1 || recursive {
        totals.report("put");
    }
    Ok(())
}

/// Makes remote directory `path` (its parent exists); an existing
/// directory is fine, anything else there is an error.
async fn remote_dir(client: &Client, path: &str) -> anyhow::Result<()> {
    match client.mkdir(path, false).await {
        Ok(()) => Ok(()),
        Err(Error::AlreadyExists { .. }) => match client.stat(path).await.map_err(remote)?.info {
            i if i.r#type() == FileType::Directory => Ok(()),
            _ => Err(exit::remote_text(format!("remote {path}: exists and is not a directory"), exit::EXISTS)),
        },
        Err(e) => Err(remote(e)),
    }
}

/// Uploads the local tree `top` to `target`: each directory before what
/// is in it; links and special files are skipped with a message.
async fn put_tree(client: &Client, force: bool, top: &Path, target: &str, totals: &mut Totals) -> anyhow::Result<()> {
    remote_dir(client, target).await?;
    let mut dirs: Vec<(PathBuf, String)> = vec![(top.to_path_buf(), target.to_string())];
    while let Some((dir, to)) = dirs.pop() {
        let shown = dir.display().to_string();
        let entries = std::fs::read_dir(&dir).map_err(|e| exit::local_io(&shown, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| exit::local_io(&shown, &e))?;
            let path = entry.path();
            let shown = path.display().to_string();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                eprintln!("gfs: put: local {shown}: skipped (name is not UTF-8)");
                continue;
            };
            let kind = entry.file_type().map_err(|e| exit::local_io(&shown, &e))?;
            let remote_path = join(&to, &name);
            if kind.is_dir() {
                remote_dir(client, &remote_path).await?;
                dirs.push((path, remote_path));
            } else if kind.is_file() {
                totals.add(put_file(client, force, &shown, &remote_path).await?);
            } else if kind.is_symlink() {
                eprintln!("gfs: put: local {shown}: skipped (symbolic link)");
            } else {
                eprintln!("gfs: put: local {shown}: skipped (not a regular file or directory)");
            }
        }
    }
    Ok(())
}

/// `gfs get [-f] [-r] REMOTE... LOCAL` (remote globs expanded).
pub async fn get(client: &Client, force: bool, recursive: bool, paths: &[String]) -> anyhow::Result<()> {
    let Some((dst, patterns)) = paths.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(exit::remote_text("get: give at least one REMOTE and a LOCAL".into(), exit::USAGE));
    };
    let srcs = expand_all(client, patterns).await?;
    let dst_is_dir = dst != "-" && Path::new(dst).is_dir();
    if srcs.len() > 1 && dst != "-" && !dst_is_dir {
        let text = format!("get: local {dst}: not an existing directory (needed with several sources)");
        return Err(exit::remote_text(text, exit::FAILURE));
    }
    let mut totals = Totals::new();
    for src in &srcs {
        let info = client.stat(src).await.map_err(remote)?.info;
        let target = if dst_is_dir {
            Path::new(dst).join(local_component(&info.path)?).display().to_string()
        } else {
            dst.clone()
        };
        if info.r#type() == FileType::Directory {
            if !recursive || dst == "-" {
                let why = if dst == "-" { "is a directory" } else { "is a directory (use -r)" };
                return Err(exit::remote_text(format!("remote {}: {why}", info.path), exit::FAILURE));
            }
            get_tree(client, force, &info.path, &target, &mut totals).await?;
        } else {
            totals.add(get_file(client, force, &info.path, &target).await?);
        }
    }
    if srcs.len() > 1 || recursive {
        totals.report("get");
    }
    Ok(())
}

/// The last component of a remote path as a safe local name.
fn local_component(path: &str) -> anyhow::Result<&str> {
    match file_name(path) {
        "" | "." | ".." => Err(exit::remote_text(format!("remote {path}: no name to copy under"), exit::FAILURE)),
        n if n.contains('\0') => Err(exit::remote_text(format!("remote {path:?}: name has a NUL"), exit::FAILURE)),
        n => Ok(n),
    }
}

/// Makes local directory `path`; an existing directory is fine.
fn local_dir(path: &Path) -> anyhow::Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(exit::local_io(&path.display().to_string(), &e)),
    }
}

/// Downloads the remote tree `top` to local `target`, a page at a time.
async fn get_tree(client: &Client, force: bool, top: &str, target: &str, totals: &mut Totals) -> anyhow::Result<()> {
    local_dir(Path::new(target))?;
    let mut walk = client.tree_lister(top, false);
    while let Some(batch) = walk.next_batch().await.map_err(remote)? {
        for e in batch {
            let mut to = PathBuf::from(target);
            // The entry's components below `top`, each checked.
            for comp in e.path[top.len()..].split('/').filter(|c| !c.is_empty()) {
                to.push(local_component(comp)?);
            }
            if e.r#type() == FileType::Directory {
                local_dir(&to)?;
            } else {
                totals.add(get_file(client, force, &e.path, &to.display().to_string()).await?);
            }
        }
    }
    Ok(())
}
