//! The children of a directory (`Node::Dir`): their names in order, with
//! a count of the hidden (deleted) ones, and pages of them for `List`.
//!
//! Hidden names all start with [`PREFIX`], so in name order they are one
//! contiguous run: a page that skips them jumps over the run in one range
//! seek instead of walking it, and the count of visible children is the
//! length minus the hidden count, kept by [`insert`] and [`remove`] (the
//! only ways the namespace changes a directory's names). Both are derived
//! from the names, so nothing about them is logged or checkpointed.
//!
//! The names live in the namespace's persistent map (`namespace.rs`), which
//! a checkpoint freezes in O(1) and encodes outside the metadata lock; a
//! change to a directory while a frozen view shares it copies what it
//! touches. [`Kids`] keeps that copy small at every size: a small
//! directory is a plain set (copied whole: at most [`SMALL`] names), a
//! large one a persistent B+tree (copied along one path).

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use gfs_common::path::{HIDDEN_PREFIX as PREFIX, MAX_NAME_LEN, is_forbidden_char, quote};
use gfs_common::{Error, Result};

/// Entries of a `List` page when the request names no limit (HDFS's
/// `dfs.ls.limit`).
pub const DEFAULT_PAGE: usize = 1000;
/// Most entries of a `List` page; a larger limit is clamped to it.
pub const MAX_PAGE: usize = 10_000;
/// A page ends once its entries' encoded size reaches this, whatever the
/// limit: 10 000 entries of 4 KiB paths would be over the message limit.
/// Half of tonic's default 4 MiB decode limit, so a client built with
/// tonic's defaults reads any page too.
pub const PAGE_BYTES: usize = 2 << 20;
/// The first name after every name that starts with [`PREFIX`]: the prefix
/// with its last byte (`.`) raised by one.
const PAST_HIDDEN: &str = ".gfs-deleted/";
/// Longest cursor: a name plus the prefix a delete adds (`.gfs-deleted.`,
/// up to 20 digits of time and a dot), as a listing with hidden entries
/// returns them.
const MAX_CURSOR_LEN: usize = MAX_NAME_LEN + PREFIX.len() + 21;

/// Most names of a directory kept as a plain set; one more makes it a
/// persistent tree.
pub const SMALL: usize = 128;
/// A persistent tree with fewer names than this becomes a plain set again
/// (well below [`SMALL`], so a directory at the boundary does not flap).
const SHRINK: usize = SMALL / 4;

/// A child's name: up to 24 bytes inline, no heap allocation (most
/// names), longer ones on the heap.
type Name = compact_str::CompactString;

/// The names of a directory's children, in order.
///
/// Not a persistent tree at every size: its leaves hold 64 names inline,
/// 1.6 KB for a directory of one file, where a plain set holds 11.
#[derive(Debug, Clone)]
pub enum Kids {
    /// Up to [`SMALL`] names (or a few more until a removal).
    Small(Arc<BTreeSet<Name>>),
    /// More: a change under a frozen view copies one root-to-leaf path.
    Large(imbl::OrdSet<Name>),
}

impl Default for Kids {
    /// No names (and no allocation).
    fn default() -> Self {
        Kids::Large(imbl::OrdSet::new())
    }
}

impl PartialEq for Kids {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Kids {}

impl Kids {
    /// Number of names, hidden ones included.
    pub fn len(&self) -> usize {
        match self {
            Kids::Small(s) => s.len(),
            Kids::Large(s) => s.len(),
        }
    }

    /// True when the directory has no children at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names in order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        self.after(Bound::Unbounded)
    }

    /// The names after `from`, in order.
    fn after<'a>(&'a self, from: Bound<&str>) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        let range = (from, Bound::Unbounded);
        match self {
            Kids::Small(s) => Box::new(s.range::<str, _>(range).map(Name::as_str)),
            Kids::Large(s) => Box::new(s.range::<_, str>(range).map(Name::as_str)),
        }
    }

    /// Adds a name; false when it was there already.
    fn add(&mut self, name: String) -> bool {
        let name = Name::from(name);
        if let Kids::Large(s) = self
            && s.len() < SHRINK
        {
            *self = Kids::Small(Arc::new(s.iter().cloned().collect()));
        }
        match self {
            Kids::Small(s) => {
                let added = Arc::make_mut(s).insert(name);
                if s.len() > SMALL {
                    *self = Kids::Large(s.iter().cloned().collect());
                }
                added
            }
            Kids::Large(s) => s.insert(name).is_none(),
        }
    }

    /// Removes a name; false when it was not there.
    fn take(&mut self, name: &str) -> bool {
        match self {
            Kids::Small(s) => {
                if !s.contains(name) {
                    return false;
                }
                Arc::make_mut(s).remove(name);
                if s.is_empty() {
                    *self = Kids::default();
                }
                true
            }
            Kids::Large(s) => {
                let removed = s.remove(name).is_some();
                if removed && s.len() < SHRINK {
                    *self = Kids::Small(Arc::new(s.iter().cloned().collect()));
                }
                removed
            }
        }
    }
}

/// True for a name of a deleted entry awaiting garbage collection (any
/// name with the reserved prefix: callers cannot make one).
fn is_hidden(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Adds a child's name to a directory's `names`, counting it in `hidden`
/// when it is hidden; returns false when it was there already.
///
/// The count is a field of `Node::Dir` next to the names rather than a
/// wrapper type around both: a wrapper's padding would grow every node
/// from 56 to 64 bytes (`perm_tests::memory_per_entry`). A u32 is enough:
/// 4 billion entries of one directory would not fit in memory anyway.
pub fn insert(names: &mut Kids, hidden: &mut u32, name: String) -> bool {
    let is = is_hidden(&name);
    let added = names.add(name);
    if added && is {
        *hidden += 1;
    }
    added
}

/// Removes a child's name, keeping the hidden count; returns false when
/// it was not there.
pub fn remove(names: &mut Kids, hidden: &mut u32, name: &str) -> bool {
    let removed = names.take(name);
    if removed && is_hidden(name) {
        *hidden -= 1;
    }
    removed
}

/// Number of children that are not hidden, in O(1).
pub fn visible(names: &Kids, hidden: u32) -> usize {
    names.len() - hidden as usize
}

/// Up to `limit` names after `start_after` (all from the start when
/// empty) in name order, hidden ones only when `include_hidden`; and
/// whether more follow. O(log n + limit): the run of hidden names is
/// skipped with one seek.
pub fn page<'a>(names: &'a Kids, start_after: &str, include_hidden: bool, limit: usize) -> (Vec<&'a str>, bool) {
    let mut out = Vec::with_capacity(limit.min(names.len()));
    let mut from = match start_after {
        "" => Bound::Unbounded,
        s => Bound::Excluded(s),
    };
    'seek: loop {
        for name in names.after(from) {
            if !include_hidden && is_hidden(name) {
                // Every later hidden name is before PAST_HIDDEN: one jump.
                from = Bound::Included(PAST_HIDDEN);
                continue 'seek;
            }
            if out.len() == limit {
                return (out, true);
            }
            out.push(name);
        }
        return (out, false);
    }
}

/// The entries of a page for a request's `limit`: 0 is the default, and
/// anything above the maximum is the maximum.
pub fn page_limit(limit: u32) -> usize {
    match limit as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// Checks a `List` cursor: empty, or one name component (no `/`, not `.`
/// or `..`, no control characters, not longer than a name can be).
pub fn check_cursor(start_after: &str) -> Result<()> {
    let bad = |why: String| {
        Err(Error::InvalidArgument(format!("list: start_after '{}' is not a name: {why}", quote(start_after))))
    };
    if start_after.len() > MAX_CURSOR_LEN {
        return bad(format!("{} bytes, longer than any name ({MAX_CURSOR_LEN})", start_after.len()));
    }
    if start_after.contains('/') {
        return bad("it contains '/' (give the name of the last entry listed, not its path)".into());
    }
    if start_after == "." || start_after == ".." {
        return bad("'.' and '..' are not names".into());
    }
    if start_after.chars().any(is_forbidden_char) {
        return bad("it contains a control character".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory's names and hidden count, changed as the namespace does.
    #[derive(Default)]
    struct Dir {
        names: Kids,
        hidden: u32,
    }

    impl Dir {
        fn of(names: &[&str]) -> Dir {
            let mut d = Dir::default();
            for n in names {
                assert!(d.insert(n));
            }
            d
        }
        fn insert(&mut self, n: &str) -> bool {
            insert(&mut self.names, &mut self.hidden, n.to_string())
        }
        fn remove(&mut self, n: &str) -> bool {
            remove(&mut self.names, &mut self.hidden, n)
        }
        fn visible(&self) -> usize {
            visible(&self.names, self.hidden)
        }
        fn page(&self, after: &str, all: bool, limit: usize) -> (Vec<&str>, bool) {
            page(&self.names, after, all, limit)
        }
    }

    #[test]
    fn past_hidden_follows_every_hidden_name() {
        let (head, last) = PREFIX.split_at(PREFIX.len() - 1);
        assert_eq!(PAST_HIDDEN, format!("{head}{}", (last.as_bytes()[0] + 1) as char));
        for n in [".gfs-deleted.", ".gfs-deleted.9.x", ".gfs-deleted.\u{10FFFF}"] {
            assert!(n < PAST_HIDDEN && is_hidden(n));
        }
        assert!(!is_hidden(PAST_HIDDEN));
    }

    #[test]
    fn counts_and_pages_skip_hidden_names() {
        let mut c = Dir::of(&["-a", ".gfs-deleted.1.b", ".gfs-deleted.2.c", ".x", "a", "b", "c"]);
        assert_eq!((c.names.len(), c.visible()), (7, 5));
        assert!(!c.insert(".gfs-deleted.1.b"));
        assert_eq!(c.visible(), 5);
        assert_eq!(c.page("", false, 100), (vec!["-a", ".x", "a", "b", "c"], false));
        assert_eq!(c.page("", false, 2), (vec!["-a", ".x"], true));
        assert_eq!(c.page("-a", false, 1), (vec![".x"], true));
        assert_eq!(c.page(".gfs-deleted.1.b", false, 9), (vec![".x", "a", "b", "c"], false));
        assert_eq!(c.page("", true, 3), (vec!["-a", ".gfs-deleted.1.b", ".gfs-deleted.2.c"], true));
        // A cursor that is not a child resumes at the next greater name.
        assert_eq!(c.page("aa", false, 9), (vec!["b", "c"], false));
        assert_eq!(c.page("c", false, 9), (vec![], false));
        assert_eq!(c.page("b", false, 1), (vec!["c"], false), "exactly the last one: no more");
        assert!(c.remove(".gfs-deleted.2.c") && !c.remove(".gfs-deleted.2.c"));
        assert!(c.remove("a") && !c.remove("a"));
        assert_eq!((c.names.len(), c.visible()), (5, 4));
        let only_hidden = Dir::of(&[".gfs-deleted.1.a", ".gfs-deleted.2.b"]);
        assert_eq!((only_hidden.visible(), only_hidden.page("", false, 5)), (0, (vec![], false)));
    }

    #[test]
    fn limits_and_cursors() {
        assert_eq!((page_limit(0), page_limit(7), page_limit(u32::MAX)), (DEFAULT_PAGE, 7, MAX_PAGE));
        for ok in ["", "a", ".gfs-deleted.1700000000000.x", &"n".repeat(MAX_NAME_LEN)] {
            check_cursor(ok).unwrap();
        }
        for bad in ["a/b", "/a", ".", "..", "a\nb", &"n".repeat(MAX_CURSOR_LEN + 1)] {
            let e = check_cursor(bad).unwrap_err();
            assert_eq!(e.kind(), gfs_common::ErrorKind::InvalidArgument, "{bad:?}");
            assert!(e.to_string().contains("start_after"), "{e}");
        }
    }

    #[test]
    fn kids_change_form_by_size_and_keep_their_names() {
        let mut kids = Kids::default();
        let mut model = BTreeSet::new();
        let mut hidden = 0;
        let check = |kids: &Kids, model: &BTreeSet<String>| {
            assert_eq!(kids.len(), model.len());
            assert!(kids.iter().eq(model.iter().map(String::as_str)));
        };
        // Grow past SMALL (a tree), shrink below SHRINK (a set), grow again.
        for i in 0..SMALL + 10 {
            let n = format!("n{i:04}");
            assert!(insert(&mut kids, &mut hidden, n.clone()) && model.insert(n));
        }
        assert!(matches!(kids, Kids::Large(_)));
        check(&kids, &model);
        let frozen = kids.clone();
        for i in 0..SMALL {
            let n = format!("n{i:04}");
            assert!(remove(&mut kids, &mut hidden, &n) && model.remove(&n));
            assert!(!remove(&mut kids, &mut hidden, &n));
        }
        assert!(matches!(kids, Kids::Small(_)));
        check(&kids, &model);
        // The clone taken before is as it was.
        assert_eq!(frozen.len(), SMALL + 10);
        assert_eq!(page(&frozen, "n0126", false, 3), (vec!["n0127", "n0128", "n0129"], true));
        assert_eq!(page(&kids, "", false, 100), (model.iter().map(String::as_str).collect(), false));
        for i in 0..10 {
            remove(&mut kids, &mut hidden, &format!("n{:04}", SMALL + i));
        }
        assert!(kids.is_empty() && kids == Kids::default());
        // Equal names are equal kids whatever their form.
        let small = Kids::Small(Arc::new(["a".into()].into()));
        let large = Kids::Large(["a".to_string()].into_iter().collect());
        assert_eq!(small, large);
    }
}
