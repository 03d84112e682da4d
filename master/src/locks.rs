//! Per-path read/write locks.
//!
//! A mutation read-locks every ancestor and write-locks its leaf; a read
//! read-locks the ancestors and the leaf. All locks of one request are taken
//! in one global order (depth, then path bytes), so requests never deadlock.
//! Entries exist only while someone holds or waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gfs_common::path::ancestors;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

type Table = Arc<Mutex<HashMap<String, Arc<RwLock<()>>>>>;

/// The lock table.
#[derive(Default, Clone)]
pub struct LockManager {
    table: Table,
}

enum Held {
    Read(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Write(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// Locks held by one request; released (and unused entries removed) on drop.
pub struct PathGuard {
    held: Vec<Held>,
    paths: Vec<String>,
    table: Table,
}

impl Drop for PathGuard {
    fn drop(&mut self) {
        self.held.clear();
        let mut t = self.table.lock().expect("lock table");
        for p in &self.paths {
            if t.get(p).is_some_and(|e| Arc::strong_count(e) == 1) {
                t.remove(p);
            }
        }
    }
}

fn depth(p: &str) -> usize {
    if p == "/" { 0 } else { p.matches('/').count() }
}

/// Returns (reads, writes) for a mutation of `path`: ancestors read, leaf written.
pub fn for_mutation(path: &str) -> (Vec<String>, Vec<String>) {
    (ancestors(path), vec![path.to_string()])
}

/// Returns the read set for a lookup of `path`: ancestors and leaf.
pub fn for_read(path: &str) -> Vec<String> {
    let mut r = ancestors(path);
    r.push(path.to_string());
    r
}

impl LockManager {
    /// Returns an empty lock table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Acquires read locks on `reads` and write locks on `writes`, in the
    /// global order. A path in both sets is written.
    pub async fn lock(&self, reads: &[String], writes: &[String]) -> PathGuard {
        let mut want: Vec<(String, bool)> =
            reads.iter().map(|p| (p.clone(), false)).chain(writes.iter().map(|p| (p.clone(), true))).collect();
        want.sort_by(|a, b| (depth(&a.0), a.0.as_bytes(), !a.1).cmp(&(depth(&b.0), b.0.as_bytes(), !b.1)));
        // After sorting, a written path comes before its read duplicate.
        want.dedup_by(|later, earlier| later.0 == earlier.0);
        let entries: Vec<(Arc<RwLock<()>>, bool)> = {
            let mut t = self.table.lock().expect("lock table");
            want.iter().map(|(p, w)| (t.entry(p.clone()).or_default().clone(), *w)).collect()
        };
        let mut guard =
            PathGuard { held: Vec::with_capacity(entries.len()), paths: Vec::new(), table: self.table.clone() };
        guard.paths = want.into_iter().map(|(p, _)| p).collect();
        for (lock, write) in entries {
            let h = if write { Held::Write(lock.write_owned().await) } else { Held::Read(lock.read_owned().await) };
            guard.held.push(h);
        }
        guard
    }

    /// Number of live entries (for tests).
    pub fn len(&self) -> usize {
        self.table.lock().expect("lock table").len()
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn creates_in_same_dir_run_concurrently() {
        let m = LockManager::new();
        let (r1, w1) = for_mutation("/d/a");
        let (r2, w2) = for_mutation("/d/b");
        let g1 = m.lock(&r1, &w1).await;
        let g2 = tokio::time::timeout(Duration::from_secs(1), m.lock(&r2, &w2)).await.expect("not blocked");
        drop((g1, g2));
        assert!(m.is_empty(), "entries are removed when unused");
    }

    #[tokio::test]
    async fn create_blocks_while_parent_is_deleted() {
        let m = LockManager::new();
        let (r, w) = for_mutation("/d");
        let del = m.lock(&r, &w).await;
        let m2 = m.clone();
        let create = tokio::spawn(async move {
            let (r, w) = for_mutation("/d/f");
            let _g = m2.lock(&r, &w).await;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!create.is_finished());
        drop(del);
        tokio::time::timeout(Duration::from_secs(1), create).await.unwrap().unwrap();
        assert!(m.is_empty());
    }

    #[tokio::test]
    async fn rename_both_ways_does_not_deadlock() {
        let m = LockManager::new();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let m = m.clone();
            tasks.push(tokio::spawn(async move {
                let (a, b) = if i % 2 == 0 { ("/x/a", "/y/b") } else { ("/y/b", "/x/a") };
                let mut reads = ancestors(a);
                reads.extend(ancestors(b));
                let _g = m.lock(&reads, &[a.to_string(), b.to_string(), "/x".to_string()]).await;
                tokio::task::yield_now().await;
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t).await.unwrap().unwrap();
        }
        assert!(m.is_empty());
    }
}
