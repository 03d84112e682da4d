//! Counts and indexes the namespace keeps as it changes, so that nothing
//! on a timer or in a status call walks every entry: the visible (not
//! deleted) files and directories, and the deleted entries awaiting
//! garbage collection by deletion time.

use std::collections::BTreeSet;

use crate::hidden::{deleted_at, is_within_hidden};
use crate::namespace::Node;

/// Kept by `Namespace` on every insert and remove of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsIndex {
    /// Visible files.
    pub files: u64,
    /// Visible directories (the root included).
    pub dirs: u64,
    /// Entries whose own name is hidden: (deletion time, path).
    deleted: BTreeSet<(i64, String)>,
}

impl NsIndex {
    /// Counts a node inserted at `path`.
    pub fn added(&mut self, path: &str, node: &Node) {
        self.count(path, node, true);
    }

    /// Uncounts a node removed from `path`.
    pub fn removed(&mut self, path: &str, node: &Node) {
        self.count(path, node, false);
    }

    fn count(&mut self, path: &str, node: &Node, add: bool) {
        if let Some(t) = deleted_at(path) {
            if add {
                self.deleted.insert((t, path.to_string()));
            } else {
                self.deleted.remove(&(t, path.to_string()));
            }
        }
        if is_within_hidden(path) {
            return;
        }
        let n = if node.is_dir() { &mut self.dirs } else { &mut self.files };
        *n = if add { *n + 1 } else { n.saturating_sub(1) };
    }

    /// Deleted entries whose deletion time is at or before `cutoff_ms`,
    /// oldest first, at most `max`.
    pub fn deleted_before(&self, cutoff_ms: i64, max: usize) -> Vec<String> {
        self.deleted.range(..(cutoff_ms.saturating_add(1), String::new())).take(max).map(|(_, p)| p.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use gfs_proto::log_record::Op;
    use gfs_proto::{CreateOp, DeleteOp, MkdirOp, RenameOp};
    use rand::{Rng, SeedableRng};

    use crate::hidden::{deleted_at, hidden_path, is_within_hidden};
    use crate::namespace::Namespace;

    /// What the index must say, by walking every entry.
    fn walked(ns: &Namespace) -> ((u64, u64), Vec<String>) {
        let visible: Vec<_> = ns.iter().filter(|(p, _)| !is_within_hidden(p)).collect();
        let dirs = visible.iter().filter(|(_, n)| n.is_dir()).count() as u64;
        let mut deleted: Vec<(i64, String)> =
            ns.iter().filter_map(|(p, _)| deleted_at(p).map(|t| (t, p.to_string()))).collect();
        deleted.sort();
        ((visible.len() as u64 - dirs, dirs), deleted.into_iter().map(|(_, p)| p).collect())
    }

    /// Random creates, deletes (renames to hidden names), undeletes,
    /// renames and purges: the index always matches a walk.
    #[test]
    fn the_index_matches_a_walk_after_random_ops() {
        let names = ["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/q"];
        for seed in 0..40u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut ns = Namespace::new();
            for t in 1..80i64 {
                let p = names[rng.random_range(0..names.len())];
                let q = names[rng.random_range(0..names.len())];
                let op = match rng.random_range(0..6) {
                    0 => Op::Mkdir(MkdirOp { path: p.into(), ..Default::default() }),
                    1 => Op::Create(CreateOp { path: p.into(), replication: 1, chunk_size: 1, ..Default::default() }),
                    2 => Op::Rename(RenameOp { src: p.into(), dst: hidden_path(p, t) }),
                    3 => Op::Rename(RenameOp { src: p.into(), dst: q.into() }),
                    4 => match ns.deleted_before(i64::MAX, 1).first() {
                        Some(h) => Op::Rename(RenameOp { src: h.clone(), dst: p.into() }),
                        None => continue,
                    },
                    _ => match ns.deleted_before(t, 1).first() {
                        Some(h) => Op::Delete(DeleteOp { path: h.clone() }),
                        None => Op::Delete(DeleteOp { path: p.into() }),
                    },
                };
                let valid = match &op {
                    Op::Mkdir(m) => ns.check_mkdir(&m.path, false).is_ok(),
                    Op::Create(c) => ns.check_create(&c.path, true).is_ok(),
                    Op::Rename(r) => ns.check_rename(&r.src, &r.dst).is_ok(),
                    Op::Delete(d) => ns.check_delete(&d.path, true).is_ok(),
                    _ => false,
                };
                if valid {
                    ns.apply(&op, t).unwrap();
                }
                let (counts, deleted) = walked(&ns);
                assert_eq!(ns.counts(), counts, "seed {seed} step {t} {op:?}");
                assert_eq!(ns.deleted_before(i64::MAX, usize::MAX), deleted, "seed {seed} step {t} {op:?}");
            }
        }
    }
}
