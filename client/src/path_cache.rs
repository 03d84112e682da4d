//! Client caches keyed by file path (and chunk index) that can drop a
//! whole subtree cheaply.
//!
//! moka's predicate invalidation (`invalidate_entries_if`) keeps every
//! predicate until a background scan has checked it against every entry,
//! and checks pending predicates on every read. The client registered three
//! per create, delete or rename, so metadata-heavy work spent most of its
//! CPU scanning (creates: 24% of the bench client's samples in
//! `scan_and_invalidate`, the client slower than the master). Here a
//! sorted index of the cached keys turns "everything at or under /a/b"
//! into a range walk over exactly those keys.

use std::collections::BTreeSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gfs_common::path::is_within;
use moka::notification::RemovalCause;
use moka::sync::Cache;

/// A cache key that names a path.
pub trait PathKey: Clone + Eq + Hash + Ord + Send + Sync + 'static {
    /// The path the key belongs to.
    fn path(&self) -> &str;
    /// The smallest key of `path`, where a range walk over it starts.
    fn first_of(path: &str) -> Self;
}

impl PathKey for String {
    fn path(&self) -> &str {
        self
    }
    fn first_of(path: &str) -> Self {
        path.to_string()
    }
}

impl PathKey for (String, u64) {
    fn path(&self) -> &str {
        &self.0
    }
    fn first_of(path: &str) -> Self {
        (path.to_string(), 0)
    }
}

/// A bounded, expiring cache with an index of its keys by path.
pub struct PathCache<K: PathKey, V: Clone + Send + Sync + 'static> {
    cache: Cache<K, V>,
    /// Every key in `cache`, plus keys evicted since the last drain of
    /// `evicted`. Locked before `evicted`.
    index: Mutex<BTreeSet<K>>,
    /// Keys moka evicted (expired, over capacity, invalidated). Its eviction
    /// listener only pushes here: it may run inside a cache call made while
    /// `index` is held.
    evicted: Arc<Mutex<Vec<K>>>,
}

impl<K: PathKey, V: Clone + Send + Sync + 'static> PathCache<K, V> {
    /// A cache of at most `capacity` entries, each kept for `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let evicted: Arc<Mutex<Vec<K>>> = Arc::default();
        let sink = evicted.clone();
        let cache = Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(move |k: Arc<K>, _v: V, cause| {
                if cause != RemovalCause::Replaced {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push((*k).clone());
                }
            })
            .build();
        PathCache { cache, index: Mutex::default(), evicted }
    }

    /// The index with evicted keys removed.
    fn index(&self) -> std::sync::MutexGuard<'_, BTreeSet<K>> {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let gone = std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|p| p.into_inner()));
        for k in gone {
            // A key evicted and inserted again since is still cached.
            if !self.cache.contains_key(&k) {
                index.remove(&k);
            }
        }
        index
    }

    /// The cached value of `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        self.cache.get(key)
    }

    /// Caches `value` under `key`.
    pub fn insert(&self, key: K, value: V) {
        // Under the index lock, so a concurrent `invalidate_under` sees the
        // key in both or in neither.
        let mut index = self.index();
        index.insert(key.clone());
        self.cache.insert(key, value);
    }

    /// Drops `key`.
    pub fn invalidate(&self, key: &K) {
        let mut index = self.index();
        self.cache.invalidate(key);
        index.remove(key);
    }

    /// Drops every key of `path` and of anything below it.
    pub fn invalidate_under(&self, path: &str) {
        let mut index = self.index();
        let doomed: Vec<K> = if path == "/" {
            index.iter().cloned().collect()
        } else {
            index.range(K::first_of(path)..).take_while(|k| k.path().starts_with(path)).cloned().collect()
        };
        for k in doomed {
            if is_within(k.path(), path) {
                self.cache.invalidate(&k);
                index.remove(&k);
            }
        }
    }

    /// Keys in the index (it must not outgrow the cache).
    #[cfg(test)]
    fn indexed(&self) -> usize {
        self.index().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_goes_and_its_neighbours_stay() {
        let c: PathCache<(String, u64), u32> = PathCache::new(100, Duration::from_secs(60));
        for p in ["/a", "/a/b", "/a/b/c", "/ab", "/a-b", "/b"] {
            for i in 0..3 {
                c.insert((p.to_string(), i), 1);
            }
        }
        c.invalidate_under("/a/b");
        for (p, kept) in [("/a", true), ("/a/b", false), ("/a/b/c", false), ("/ab", true), ("/a-b", true), ("/b", true)]
        {
            for i in 0..3 {
                assert_eq!(c.get(&(p.to_string(), i)).is_some(), kept, "{p} {i}");
            }
        }
        c.invalidate_under("/a");
        assert!(c.get(&("/a".into(), 0)).is_none());
        assert!(c.get(&("/ab".into(), 0)).is_some() && c.get(&("/a-b".into(), 2)).is_some());
        c.invalidate(&("/b".into(), 1));
        assert!(c.get(&("/b".into(), 1)).is_none() && c.get(&("/b".into(), 0)).is_some());
        c.invalidate_under("/");
        assert!(c.get(&("/ab".into(), 0)).is_none());
        assert_eq!(c.indexed(), 0);
    }

    #[test]
    fn the_index_follows_expiry_and_capacity() {
        let c: PathCache<String, u32> = PathCache::new(10, Duration::from_millis(50));
        for i in 0..1000 {
            c.insert(format!("/f{i}"), i);
        }
        c.cache.run_pending_tasks();
        assert!(c.indexed() <= 10 + 1, "index holds {} keys for a 10-entry cache", c.indexed());
        std::thread::sleep(Duration::from_millis(120));
        c.cache.run_pending_tasks();
        assert_eq!(c.indexed(), 0, "expired keys leave the index");
        c.insert("/g".into(), 1);
        assert_eq!(c.get(&"/g".into()), Some(1));
    }
}
