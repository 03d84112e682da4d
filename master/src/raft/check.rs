//! `gfs-master check-log --data-dir DIR`: reports the state of a master's
//! Raft log without changing anything, so an operator can tell a torn
//! tail (the next start cuts it) from damage (the master refuses to start
//! and must be rebuilt from its group) before acting.
//!
//! It reads every segment to its end, resynchronising after each bad
//! stretch as recovery does (`segments`), so it lists every problem, not
//! only the first. A master still running may show its newest frame as a
//! torn tail while it is being written.

use std::fmt;
use std::path::{Path, PathBuf};

use gfs_common::{Error, Result};
use openraft::{LogId, Vote};

use super::NodeId;
use super::log_store::read_json;
use super::segments::{Piece, Verdict, judge, later_with_bytes, list_segments, scan};
use crate::oplog;

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// Its length.
    pub bytes: u64,
    /// Valid frames in it.
    pub entries: u64,
    /// Index of its first and last valid entry.
    pub first: Option<u64>,
    /// See `first`.
    pub last: Option<u64>,
}

/// What kind of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The end of an append cut short: the next start truncates it.
    TornTail,
    /// Damaged entries: the master refuses to start.
    Damage,
    /// Entries missing between two valid ones: the master refuses to start.
    Gap,
    /// `raft-vote`, `raft-purged` or `checkpoint` unreadable: the master
    /// refuses to start.
    StateFile,
}

/// One problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// The file.
    pub path: PathBuf,
    /// Byte offset in the file, for log segments.
    pub offset: Option<u64>,
    /// What is wrong, the last good index and what the master does.
    pub detail: String,
}

/// The state of one master's Raft log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    /// The data directory.
    pub dir: PathBuf,
    /// The last purged index (`raft-purged`): entries up to it are in the
    /// checkpoint.
    pub purged: Option<u64>,
    /// The vote's term, if any.
    pub term: Option<u64>,
    /// Every segment, in index order.
    pub segments: Vec<SegmentReport>,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl LogReport {
    /// True when the master refuses to start on this directory: any
    /// problem other than a torn tail.
    pub fn is_damaged(&self) -> bool {
        self.problems.iter().any(|p| p.kind != ProblemKind::TornTail)
    }
}

fn opt(i: Option<u64>) -> String {
    i.map_or_else(|| "none".to_string(), |i| i.to_string())
}

impl fmt::Display for LogReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "raft log in {} (read only: nothing was changed)", self.dir.display())?;
        writeln!(f, "purged up to index {}; vote term {}", opt(self.purged), opt(self.term))?;
        writeln!(f, "segments: {}", self.segments.len())?;
        for s in &self.segments {
            let range = match (s.first, s.last) {
                (Some(a), Some(b)) => format!("index {a}..={b}"),
                _ => "no entries".to_string(),
            };
            writeln!(f, "  {}: {} bytes, {} entries, {range}", s.path.display(), s.bytes, s.entries)?;
        }
        writeln!(f, "problems: {}", self.problems.len())?;
        for p in &self.problems {
            let kind = match p.kind {
                ProblemKind::TornTail => "TORN TAIL",
                ProblemKind::Damage => "DAMAGE",
                ProblemKind::Gap => "GAP",
                ProblemKind::StateFile => "STATE FILE",
            };
            let at = p.offset.map(|o| format!(" at byte offset {o}")).unwrap_or_default();
            writeln!(f, "  {kind}: {}{at}: {}", p.path.display(), p.detail)?;
        }
        let status = if self.is_damaged() {
            "DAMAGED: gfs-master refuses to start on this directory; rebuild this master from its group (README: \
             Rebuilding a damaged master)"
        } else if self.problems.is_empty() {
            "OK"
        } else {
            "OK after the torn tail is cut (gfs-master does that at start)"
        };
        writeln!(f, "status: {status}")
    }
}

/// Reads a JSON state file, recording a problem if it is unreadable.
fn state_file<T: serde::de::DeserializeOwned>(dir: &Path, name: &str, problems: &mut Vec<Problem>) -> Option<T> {
    let path = dir.join(name);
    read_json(&path).unwrap_or_else(|e| {
        problems.push(Problem { kind: ProblemKind::StateFile, path, offset: None, detail: e.to_string() });
        None
    })
}

/// Checks the Raft log, vote and checkpoint in `dir` without changing
/// anything.
pub fn check_log(dir: &Path) -> Result<LogReport> {
    if !dir.is_dir() {
        return Err(Error::InvalidArgument(format!("{} is not a directory", dir.display())));
    }
    let mut problems = Vec::new();
    let vote: Option<Vote<NodeId>> = state_file(dir, "raft-vote", &mut problems);
    let purged: Option<LogId<NodeId>> = state_file(dir, "raft-purged", &mut problems);
    if let Err(e) = oplog::load_checkpoint(dir) {
        let path = dir.join("checkpoint");
        problems.push(Problem { kind: ProblemKind::StateFile, path, offset: None, detail: e.to_string() });
    }
    let listed = list_segments(dir)?;
    let mut segments = Vec::new();
    let mut last = purged.map(|p| p.index);
    for (i, (_, path)) in listed.iter().enumerate() {
        let buf = std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let mut seg =
            SegmentReport { path: path.clone(), bytes: buf.len() as u64, entries: 0, first: None, last: None };
        for piece in scan(&buf, last, false) {
            match piece {
                Piece::Frame(fr) => {
                    let index = fr.entry.log_id.index;
                    seg.entries += 1;
                    seg.first.get_or_insert(index);
                    seg.last = Some(index);
                    if purged.is_some_and(|p| index <= p.index) {
                        continue;
                    }
                    if let Some(l) = last
                        && index > l + 1
                    {
                        let detail = format!("expected index {} but found {index}", l + 1);
                        let p = Problem { kind: ProblemKind::Gap, path: path.clone(), offset: Some(fr.offset), detail };
                        problems.push(p);
                    }
                    last = Some(index);
                }
                Piece::Bad(b) => {
                    let later = later_with_bytes(&listed, i)?;
                    let (kind, what) = match judge(&b, later.as_ref().map(|(p, n)| (p.as_path(), *n))) {
                        Verdict::TornTail => (ProblemKind::TornTail, "the next start cuts the log here".to_string()),
                        Verdict::Damage(why) => (ProblemKind::Damage, format!("{why}: not a torn tail")),
                    };
                    let detail = format!("{}; last good index {}; {what}", b.reason, opt(last));
                    problems.push(Problem { kind, path: path.clone(), offset: Some(b.offset), detail });
                }
            }
        }
        segments.push(seg);
    }
    let term = vote.map(|v| v.leader_id.term);
    Ok(LogReport { dir: dir.to_path_buf(), purged: purged.map(|p| p.index), term, segments, problems })
}

/// Runs `gfs-master check-log`: prints the report to stdout and returns
/// the exit code: 0 when the master can start (a torn tail it cuts
/// included), 1 when the log is damaged, 2 when it cannot be read.
pub fn run(dir: &Path) -> i32 {
    match check_log(dir) {
        Ok(report) => {
            print!("{report}");
            i32::from(report.is_damaged())
        }
        Err(e) => {
            eprintln!("check-log: {e}");
            2
        }
    }
}
