//! Verbs that walk a tree or sum the cluster: `gfs du`, `gfs count`,
//! `gfs find` and `gfs df`. Trees are walked with [`crate::TreeLister`],
//! a page at a time, so a tree of millions of entries is summed in
//! bounded memory; nothing collects a whole tree.

use anyhow::bail;

use super::glob::Glob;
use super::verbs::{Out, remote};
use crate::{Client, FileInfo, FileType, size::format_size};

fn is_dir(e: &FileInfo) -> bool {
    e.r#type() == FileType::Directory
}

/// What a subtree holds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Directories, the top one included (when it is one).
    pub dirs: u64,
    /// Files.
    pub files: u64,
    /// Bytes of the files.
    pub bytes: u64,
    /// Bytes counting every replica (`size * replication` per file).
    pub raw_bytes: u64,
}

impl Summary {
    fn add(&mut self, e: &FileInfo) {
        if is_dir(e) {
            self.dirs += 1;
        } else {
            self.files += 1;
            self.bytes = self.bytes.saturating_add(e.size);
            self.raw_bytes = self.raw_bytes.saturating_add(e.size.saturating_mul(u64::from(e.replication)));
        }
    }
}

/// Sums `top` (already stat'ed) and everything below it.
async fn summarize(client: &Client, top: &FileInfo) -> anyhow::Result<Summary> {
    let mut sum = Summary::default();
    sum.add(top);
    if is_dir(top) {
        let mut walk = client.tree_lister(&top.path, false);
        while let Some(batch) = walk.next_batch().await.map_err(remote)? {
            batch.iter().for_each(|e| sum.add(e));
        }
    }
    Ok(sum)
}

fn size_text(n: u64, human: bool) -> String {
    if human { format_size(n) } else { n.to_string() }
}

fn du_line(sum: &Summary, path: &str, human: bool) -> String {
    format!("{}  {}  {path}\n", size_text(sum.bytes, human), size_text(sum.raw_bytes, human))
}

/// `gfs du [-s] [-h] PATH...`: as `hdfs dfs -du`, the size and the size
/// counting replication of each entry of a directory (each argument
/// itself with `-s`, or when it is a file).
pub async fn du(client: &Client, summary: bool, human: bool, paths: &[String]) -> anyhow::Result<()> {
    let mut out = Out::default();
    for path in paths {
        let top = client.stat(path).await.map_err(remote)?.info;
        if summary || !is_dir(&top) {
            let sum = summarize(client, &top).await?;
            if !out.print(&du_line(&sum, &top.path, human))? {
                return Ok(());
            }
            continue;
        }
        let mut pages = client.lister(&top.path, false);
        while let Some(page) = pages.next_page().await.map_err(remote)? {
            for e in &page {
                let sum = summarize(client, e).await?;
                if !out.print(&du_line(&sum, &e.path, human))? {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// `gfs count [-q] [-h] PATH...`: `DIR_COUNT FILE_COUNT CONTENT_SIZE PATH`
/// as `hdfs dfs -count` (a directory counts itself). gfs has no quotas:
/// `-q` prints the four quota columns as HDFS does for a directory without
/// any (`none inf none inf`).
pub async fn count(client: &Client, quotas: bool, human: bool, paths: &[String]) -> anyhow::Result<()> {
    let mut out = Out::default();
    for path in paths {
        let top = client.stat(path).await.map_err(remote)?.info;
        let sum = summarize(client, &top).await?;
        let q =
            if quotas { format!("{:>12} {:>15} {:>15} {:>15} ", "none", "inf", "none", "inf") } else { String::new() };
        let line = format!("{q}{:>12} {:>12} {:>18} {}\n", sum.dirs, sum.files, size_text(sum.bytes, human), top.path);
        if !out.print(&line)? {
            return Ok(());
        }
    }
    Ok(())
}

/// What `gfs find` selects.
#[derive(Debug, Default)]
pub struct FindFilter {
    name: Option<Glob>,
    kind: Option<FileType>,
}

impl FindFilter {
    /// Parses the expression after PATH: `-name GLOB`, `-type f|d` (also
    /// spelled `--name`, `--type`), each at most once.
    pub fn parse(expr: &[String]) -> anyhow::Result<FindFilter> {
        let mut f = FindFilter::default();
        let mut it = expr.iter();
        while let Some(opt) = it.next() {
            let value = |it: &mut std::slice::Iter<'_, String>| match it.next() {
                Some(v) => Ok(v.clone()),
                None => bail!("find: {opt} needs a value"),
            };
            match opt.as_str() {
                "-name" | "--name" if f.name.is_none() => f.name = Some(Glob::new(&value(&mut it)?)?),
                "-type" | "--type" if f.kind.is_none() => {
                    f.kind = Some(match value(&mut it)?.as_str() {
                        "f" => FileType::File,
                        "d" => FileType::Directory,
                        other => bail!("find: -type {other:?}: use f (file) or d (directory)"),
                    })
                }
                "-name" | "--name" | "-type" | "--type" => bail!("find: {opt} given twice"),
                other => bail!("find: unknown expression {other:?} (use -name GLOB, -type f|d)"),
            }
        }
        Ok(f)
    }

    fn accepts(&self, e: &FileInfo) -> bool {
        self.kind.is_none_or(|k| e.r#type() == k)
            && self.name.as_ref().is_none_or(|g| g.matches(gfs_common::path::file_name(&e.path)))
    }
}

/// `gfs find PATH [-name GLOB] [-type f|d]`: prints the full path of each
/// match at or below PATH as the walk reaches it.
pub async fn find(client: &Client, path: &str, filter: &FindFilter) -> anyhow::Result<()> {
    let top = client.stat(path).await.map_err(remote)?.info;
    let mut out = Out::default();
    if filter.accepts(&top) && !out.print(&format!("{}\n", top.path))? {
        return Ok(());
    }
    if !is_dir(&top) {
        return Ok(());
    }
    let mut walk = client.tree_lister(&top.path, false);
    while let Some(batch) = walk.next_batch().await.map_err(remote)? {
        let text: String = batch.iter().filter(|e| filter.accepts(e)).map(|e| format!("{}\n", e.path)).collect();
        if !text.is_empty() && !out.print(&text)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Cluster space as `gfs df` shows it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Space {
    /// Sum of live servers' capacity.
    pub capacity: u64,
    /// Sum of live servers' chunk bytes.
    pub used: u64,
    /// Sum of live servers' reported free bytes.
    pub free: u64,
}

impl Space {
    /// The live servers' totals of a ClusterStatus, as the master sums them:
    /// capacity and free space of each disk once (servers sharing a file
    /// system report the same one), chunk bytes of every server.
    pub fn of(st: &crate::ClusterStatusResponse) -> Space {
        Space { capacity: st.capacity_bytes, used: st.used_bytes, free: st.free_bytes }
    }

    /// Used as a percentage of capacity (0 with no capacity).
    pub fn use_percent(&self) -> f64 {
        if self.capacity == 0 { 0.0 } else { self.used as f64 * 100.0 / self.capacity as f64 }
    }
}

/// `gfs df [-h]`: capacity, used, free and use% of the live chunkservers.
pub async fn df(client: &Client, human: bool) -> anyhow::Result<()> {
    let st = client.cluster_status().await?;
    let s = Space::of(&st);
    let fs = format!("gfs://{}", client.config().master);
    let text = format!(
        "{:<24} {:>16} {:>16} {:>16} {:>6}\n{:<24} {:>16} {:>16} {:>16} {:>5.0}%\n",
        "Filesystem",
        "Size",
        "Used",
        "Available",
        "Use%",
        fs,
        size_text(s.capacity, human),
        size_text(s.used, human),
        size_text(s.free, human),
        s.use_percent(),
    );
    Out::default().print(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gfs_proto::ClusterStatusResponse;

    fn file(path: &str, size: u64, replication: u32) -> FileInfo {
        FileInfo { path: path.into(), r#type: FileType::File as i32, size, replication, ..Default::default() }
    }

    #[test]
    fn summary_counts_dirs_files_and_replicated_bytes() {
        let mut s = Summary::default();
        s.add(&FileInfo { path: "/d".into(), r#type: FileType::Directory as i32, ..Default::default() });
        s.add(&file("/d/a", 10, 3));
        s.add(&file("/d/b", 5, 2));
        assert_eq!(s, Summary { dirs: 1, files: 2, bytes: 15, raw_bytes: 40 });
        s.add(&file("/d/huge", u64::MAX, 3));
        assert_eq!((s.bytes, s.raw_bytes), (u64::MAX, u64::MAX), "saturates");
    }

    #[test]
    fn find_expressions() {
        let p = |v: &[&str]| FindFilter::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let f = p(&["-name", "*.log", "-type", "f"]).unwrap();
        assert!(f.accepts(&file("/x/a.log", 0, 1)));
        assert!(!f.accepts(&file("/x/a.txt", 0, 1)));
        let d = FileInfo { path: "/x/b.log".into(), r#type: FileType::Directory as i32, ..Default::default() };
        assert!(!f.accepts(&d));
        assert!(p(&[]).unwrap().accepts(&d));
        for bad in [&["-name"][..], &["-type", "x"], &["-size", "1"], &["-name", "a", "-name", "b"], &["-name", "[a"]] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn use_percent_of_the_cluster_totals() {
        let st = ClusterStatusResponse { capacity_bytes: 300, used_bytes: 60, free_bytes: 180, ..Default::default() };
        let s = Space::of(&st);
        assert_eq!(s, Space { capacity: 300, used: 60, free: 180 });
        assert_eq!(s.use_percent(), 20.0);
        assert_eq!(Space::default().use_percent(), 0.0);
    }
}
