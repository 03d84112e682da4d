//! `gfs fsck [PATH] [--json]`: the health of every file below PATH, as
//! `hdfs fsck`: files with a chunk no live server holds (missing: the data
//! cannot be read) and files with chunks short of their replication
//! (under-replicated: the master is repairing them). The tree is walked a
//! page at a time and files are looked at with a bounded number of `Stat`
//! calls in flight, so a tree of any size is checked in bounded memory.

use futures::StreamExt;
use gfs_proto::{FileInfo, FileType};
use serde::Serialize;

use crate::Client;
use crate::cli::exit;
use crate::cli::verbs::{Exit, remote};

/// `Stat` calls in flight.
const STATS_IN_FLIGHT: usize = 16;
/// Problem files listed in the report (the counts go on).
const MAX_LISTED: usize = 10_000;

/// What one file's chunks say.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct FileHealth {
    pub path: String,
    pub replication: u32,
    pub chunks: u64,
    /// Chunks no live server holds.
    pub missing_chunks: Vec<u64>,
    /// Chunks with fewer live replicas than the replication.
    pub under_replicated_chunks: Vec<u64>,
}

/// The report.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    pub path: String,
    pub directories: u64,
    pub files: u64,
    pub chunks: u64,
    pub bytes: u64,
    pub missing_files: u64,
    pub under_replicated_files: u64,
    /// Files with a problem (at most [`MAX_LISTED`]).
    pub problems: Vec<FileHealth>,
    /// HEALTHY, or CORRUPT when a file has a missing chunk.
    pub status: &'static str,
}

impl Report {
    fn add(&mut self, h: FileHealth, size: u64) {
        self.files += 1;
        self.chunks += h.chunks;
        self.bytes += size;
        self.missing_files += u64::from(!h.missing_chunks.is_empty());
        self.under_replicated_files += u64::from(!h.under_replicated_chunks.is_empty());
        let bad = !h.missing_chunks.is_empty() || !h.under_replicated_chunks.is_empty();
        if bad && self.problems.len() < MAX_LISTED {
            self.problems.push(h);
        }
    }
}

/// The health of one file from its chunk locations.
pub fn health(info: &FileInfo, chunks: &[gfs_proto::ChunkLocation]) -> FileHealth {
    let mut h = FileHealth { path: info.path.clone(), replication: info.replication, ..Default::default() };
    h.chunks = chunks.len() as u64;
    for c in chunks {
        match c.replicas.len() as u32 {
            0 => h.missing_chunks.push(c.index),
            n if n < info.replication => h.under_replicated_chunks.push(c.index),
            _ => {}
        }
    }
    h
}

/// Checks every file at or below `path` and prints the report.
pub async fn fsck(client: &Client, path: &str, json: bool) -> anyhow::Result<()> {
    let mut report = Report { path: path.to_string(), ..Default::default() };
    let top = client.stat(path).await.map_err(remote)?;
    if top.info.r#type() == FileType::File {
        report.add(health(&top.info, &top.chunks), top.info.size);
    } else {
        let mut walk = client.tree_lister(path, false);
        report.directories += 1;
        while let Some(batch) = walk.next_batch().await.map_err(remote)? {
            let (dirs, files): (Vec<FileInfo>, Vec<FileInfo>) =
                batch.into_iter().partition(|e| e.r#type() == FileType::Directory);
            report.directories += dirs.len() as u64;
            let stats = futures::stream::iter(files).map(|f| async move { client.stat(&f.path).await });
            let mut stats = stats.buffer_unordered(STATS_IN_FLIGHT);
            while let Some(st) = stats.next().await {
                match st {
                    Ok(st) => report.add(health(&st.info, &st.chunks), st.info.size),
                    // Deleted while the walk went on: not a problem.
                    Err(gfs_common::Error::NotFound { .. }) => {}
                    Err(e) => return Err(remote(e)),
                }
            }
        }
    }
    report.status = if report.missing_files > 0 { "CORRUPT" } else { "HEALTHY" };
    print(&report, json)?;
    if report.missing_files > 0 {
        return Err(Exit(exit::CORRUPT).into());
    }
    Ok(())
}

fn print(r: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    for p in &r.problems {
        if !p.missing_chunks.is_empty() {
            println!("{}: MISSING chunks {:?} (no live replica)", p.path, p.missing_chunks);
        }
        if !p.under_replicated_chunks.is_empty() {
            println!("{}: under-replicated chunks {:?} (target {})", p.path, p.under_replicated_chunks, p.replication);
        }
    }
    let listed = r.problems.len() as u64;
    if listed < r.missing_files.max(r.under_replicated_files) {
        println!("(first {listed} problem files listed)");
    }
    println!("Status: {}", r.status);
    println!(" Total size:\t{} B", r.bytes);
    println!(" Total dirs:\t{}", r.directories);
    println!(" Total files:\t{}", r.files);
    println!(" Total chunks:\t{}", r.chunks);
    println!(" Missing files:\t{}", r.missing_files);
    println!(" Under-replicated files:\t{}", r.under_replicated_files);
    println!("The filesystem under path '{}' is {}", r.path, r.status);
    Ok(())
}

#[cfg(test)]
mod tests {
    use gfs_proto::{ChunkLocation, ServerInfo};

    use super::*;

    fn chunk(index: u64, replicas: usize) -> ChunkLocation {
        let replicas = (0..replicas).map(|i| ServerInfo { id: format!("s{i}"), ..Default::default() }).collect();
        ChunkLocation { index, replicas, ..Default::default() }
    }

    #[test]
    fn missing_and_short_chunks_are_told_apart() {
        let info = FileInfo { path: "/f".into(), replication: 3, ..Default::default() };
        let h = health(&info, &[chunk(0, 3), chunk(1, 0), chunk(2, 2), chunk(3, 4)]);
        assert_eq!((h.chunks, &h.missing_chunks, &h.under_replicated_chunks), (4, &vec![1], &vec![2]));
        let mut r = Report::default();
        r.add(h, 10);
        r.add(health(&info, &[chunk(0, 3)]), 5);
        assert_eq!((r.files, r.chunks, r.bytes, r.missing_files, r.under_replicated_files), (2, 5, 15, 1, 1));
        assert_eq!(r.problems.len(), 1, "a healthy file is not listed");
    }
}
