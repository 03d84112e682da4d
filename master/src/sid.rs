//! Chunkserver ids as small integers in the per-chunk structures.
//!
//! A chunk names the servers holding it (replicas, lease holders, corrupt
//! copies). As `BTreeSet<String>` that cost a B-tree node and a heap string
//! per replica, about 400 bytes per chunk; a [`ServerSet`] is a sorted inline
//! array of [`Sid`]s (four 4-byte ids before it spills to the heap), 24
//! bytes in all for a chunk of up to four replicas.
//!
//! A [`Sid`] is the index of a server id in a process-wide table that only
//! grows: ids are never reused, so a `Sid` names the same server for the
//! life of the process (it is never persisted: replica locations are
//! rebuilt from chunk reports, as in GFS). New ids enter the table when a
//! chunkserver registers, where [`Sid::admit`] bounds it at
//! [`MAX_SERVER_IDS`]; every other path looks ids up and treats an unknown
//! one as held by no chunk.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use smallvec::SmallVec;

/// Distinct chunkserver ids one master process accepts over its life.
/// Registration of a new id beyond it is refused (a flood of forged ids
/// must not grow the table without end).
pub const MAX_SERVER_IDS: usize = 1 << 20;

#[derive(Default)]
struct Table {
    index: HashMap<&'static str, u32>,
    names: Vec<&'static str>,
}

static TABLE: LazyLock<RwLock<Table>> = LazyLock::new(Default::default);

fn read() -> std::sync::RwLockReadGuard<'static, Table> {
    TABLE.read().unwrap_or_else(|p| p.into_inner())
}

/// A chunkserver id, interned.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid(u32);

impl Sid {
    /// The id of `name`, entering it in the table if new (any size).
    pub fn of(name: &str) -> Sid {
        if let Some(s) = Sid::get(name) {
            return s;
        }
        let mut t = TABLE.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = t.index.get(name) {
            return Sid(*i);
        }
        let i = t.names.len() as u32;
        let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
        t.names.push(leaked);
        t.index.insert(leaked, i);
        Sid(i)
    }

    /// As [`Sid::of`], but refuses a new id once the table holds
    /// [`MAX_SERVER_IDS`]: for registration, where ids come from outside.
    pub fn admit(name: &str) -> Option<Sid> {
        match Sid::get(name) {
            Some(s) => Some(s),
            None if read().names.len() >= MAX_SERVER_IDS => None,
            None => Some(Sid::of(name)),
        }
    }

    /// The id of `name` if it was ever entered.
    pub fn get(name: &str) -> Option<Sid> {
        read().index.get(name).map(|i| Sid(*i))
    }

    /// The server id it stands for.
    pub fn as_str(self) -> &'static str {
        read().names[self.0 as usize]
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// A set of chunkservers, kept sorted by server id (the order a
/// `BTreeSet<String>` had, so choices among replicas stay the same).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServerSet(SmallVec<[Sid; 4]>);

impl ServerSet {
    /// An empty set.
    pub fn new() -> ServerSet {
        ServerSet::default()
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        let names = read();
        self.0.binary_search_by(|s| names.names[s.0 as usize].cmp(name))
    }

    /// True if `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        Sid::get(name).is_some_and(|s| self.0.contains(&s))
    }

    /// Adds `name`; false if it was there.
    pub fn insert(&mut self, name: impl AsRef<str>) -> bool {
        let name = name.as_ref();
        match self.find(name) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, Sid::of(name));
                true
            }
        }
    }

    /// Removes `name`; false if it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(s) = Sid::get(name) else { return false };
        match self.0.iter().position(|x| *x == s) {
            Some(i) => {
                self.0.remove(i);
                true
            }
            None => false,
        }
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every server.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The server ids, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|s| s.as_str())
    }
}

/// A [`ServerSet`] that is nearly always empty (a chunk's replicas confirmed
/// corrupt but kept): 8 bytes inline, the set boxed once it holds one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RareServerSet(Option<Box<ServerSet>>);

impl RareServerSet {
    /// True if `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(name))
    }

    /// Adds `name`; false if it was there.
    pub fn insert(&mut self, name: impl AsRef<str>) -> bool {
        self.0.get_or_insert_with(Default::default).insert(name)
    }

    /// Removes `name`; false if it was not there. The box goes with the
    /// last server.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(set) = self.0.as_mut() else { return false };
        let removed = set.remove(name);
        if set.is_empty() {
            self.0 = None;
        }
        removed
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Removes every server.
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// The server ids, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().flat_map(|s| s.iter())
    }
}

impl std::fmt::Debug for RareServerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl std::fmt::Debug for ServerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a ServerSet {
    type Item = &'static str;
    type IntoIter = Box<dyn Iterator<Item = &'static str> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<S: AsRef<str>> FromIterator<S> for ServerSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> ServerSet {
        let mut set = ServerSet::new();
        for s in iter {
            set.insert(s);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_keeps_server_ids_sorted_and_unique() {
        let mut s = ServerSet::new();
        assert!(s.insert("sid-test-c"));
        assert!(s.insert("sid-test-a"));
        assert!(s.insert(String::from("sid-test-b")));
        assert!(!s.insert("sid-test-a"), "a second insert of the same id");
        assert_eq!(s.iter().collect::<Vec<_>>(), ["sid-test-a", "sid-test-b", "sid-test-c"]);
        assert!(s.contains("sid-test-b") && !s.contains("sid-test-never-seen"));
        assert!(s.remove("sid-test-b") && !s.remove("sid-test-b") && !s.remove("sid-test-unknown"));
        assert_eq!(s.len(), 2);
        let t: ServerSet = ["sid-test-c", "sid-test-a"].into_iter().collect();
        assert_eq!(s, t, "equal sets whatever the insert order");
        // Beyond four servers the set spills to the heap and stays sorted.
        for i in (0..8).rev() {
            s.insert(format!("sid-test-z{i}"));
        }
        assert_eq!(s.len(), 10);
        let v: Vec<&str> = s.iter().collect();
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
        s.clear();
        assert!(s.is_empty());
    }

    #[test]
    fn a_chunk_of_four_replicas_holds_them_inline() {
        assert_eq!(std::mem::size_of::<ServerSet>(), 24);
        let s: ServerSet = (0..4).map(|i| format!("sid-test-inline{i}")).collect();
        assert!(!s.0.spilled());
        assert_eq!(Sid::of("sid-test-inline2"), Sid::get("sid-test-inline2").unwrap());
        assert_eq!(Sid::of("sid-test-inline2").as_str(), "sid-test-inline2");
        // What every chunk pays inline (the table adds its own slot).
        let entry = std::mem::size_of::<crate::chunks::ChunkEntry>();
        assert!(entry <= 96, "ChunkEntry grew to {entry} bytes");
    }

    #[test]
    fn a_rare_set_is_a_pointer_until_it_holds_a_server_and_after_its_last() {
        assert_eq!(std::mem::size_of::<RareServerSet>(), 8);
        let mut s = RareServerSet::default();
        assert!(s.is_empty() && !s.contains("sid-test-rare1") && !s.remove("sid-test-rare1"));
        assert!(s.insert("sid-test-rare2") && s.insert("sid-test-rare1") && !s.insert("sid-test-rare1"));
        assert_eq!(s.iter().collect::<Vec<_>>(), ["sid-test-rare1", "sid-test-rare2"]);
        assert!(s.remove("sid-test-rare1") && s.contains("sid-test-rare2") && !s.is_empty());
        assert!(s.remove("sid-test-rare2"));
        assert_eq!(s, RareServerSet::default(), "the box went with the last server");
        s.insert("sid-test-rare1");
        s.clear();
        assert!(s.is_empty());
    }
}
