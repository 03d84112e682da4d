//! The in-memory namespace tree.
//!
//! Pure and synchronous: `check_*` functions validate an operation against
//! the current state without changing it, and [`Namespace::apply`] mutates
//! the tree for a logged operation. Keys are canonical paths (see
//! `gfs_common::path`); the root `/` always exists. Every entry carries its
//! permissions (`perm.rs`); the checks against them are in `access.rs`.

use gfs_common::path::{ancestors, check_limits, file_name, is_within, join, normalize, parent, quote};
use gfs_common::{Error, Result};
use gfs_proto::log_record::Op;
use gfs_proto::{MkdirOp, SetAttrOp};

use crate::perm::{LEGACY_DIR_MODE, LEGACY_FILE_MODE, Names, Perm, SUPERGROUP, SUPERUSER};

/// Metadata of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Target number of replicas per chunk.
    pub replication: u32,
    /// Chunk size of this file, in bytes.
    pub chunk_size: u64,
    /// Chunk handles in index order.
    pub chunks: Vec<u64>,
    /// Unix ms of the last namespace change.
    pub mtime_ms: i64,
    /// Owner, group and mode.
    pub perm: Perm,
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory, the names of its direct children, and how many of
    /// them are hidden (deleted): kept by `children::insert`/`remove`.
    Dir { mtime_ms: i64, perm: Perm, children: crate::children::Kids, hidden: u32 },
    /// A regular file.
    File(FileMeta),
}

impl Node {
    /// An empty directory.
    pub fn new_dir(mtime_ms: i64, perm: Perm) -> Self {
        Node::Dir { mtime_ms, perm, children: Default::default(), hidden: 0 }
    }

    /// Returns the owner, group and mode.
    pub fn perm(&self) -> Perm {
        match self {
            Node::Dir { perm, .. } => *perm,
            Node::File(f) => f.perm,
        }
    }

    fn perm_mut(&mut self) -> &mut Perm {
        match self {
            Node::Dir { perm, .. } => perm,
            Node::File(f) => &mut f.perm,
        }
    }

    /// Returns true for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Dir { .. })
    }

    /// Returns the modification time.
    pub fn mtime_ms(&self) -> i64 {
        match self {
            Node::Dir { mtime_ms, .. } => *mtime_ms,
            Node::File(f) => f.mtime_ms,
        }
    }
}

/// The nodes by canonical path, in a persistent map: a clone is O(1)
/// and shares every node until one side changes it (a checkpoint's
/// frozen view, `frozen.rs`).
pub type Nodes = imbl::OrdMap<compact_str::CompactString, Node>;

/// The namespace: canonical path -> node, and the names the nodes'
/// owners and groups refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    nodes: Nodes,
    names: Names,
    index: crate::ns_index::NsIndex,
}

/// Permissions of entries an op creates.
#[derive(Debug, Clone, Copy)]
enum NewPerm {
    /// An op logged before permissions: the pre-permission defaults.
    Legacy,
    /// Owned by `owner` (an id) with `mode`; the group is the parent's.
    Owned { owner: u32, mode: u16 },
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

fn internal(op: &str, e: Error) -> Error {
    Error::Internal(format!("cannot apply {op}: {e}"))
}

impl Namespace {
    /// Returns a namespace holding only the root directory, owned by the
    /// superuser with mode 0755.
    pub fn new() -> Self {
        let mut nodes = Nodes::new();
        let root = Node::new_dir(0, Perm::root());
        let mut index = crate::ns_index::NsIndex::default();
        index.added("/", &root);
        nodes.insert("/".into(), root);
        Self { nodes, names: Names::default(), index }
    }

    /// Returns the table of user and group names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Replaces the name table (loading a checkpoint, before its entries).
    pub fn set_names(&mut self, names: Names) {
        self.names = names;
    }

    /// The pre-permission defaults (see `perm::LEGACY_DIR_MODE`): for
    /// entries of ops and checkpoints from before permissions.
    pub fn legacy_perm(&mut self, is_dir: bool) -> Result<Perm> {
        let mode = if is_dir { LEGACY_DIR_MODE } else { LEGACY_FILE_MODE };
        Ok(Perm { owner: self.names.intern(SUPERUSER)?, group: self.names.intern(SUPERGROUP)?, mode })
    }

    /// Checks that `perm` refers to names the table holds (a checkpoint
    /// entry).
    pub fn check_perm_ids(&self, path: &str, perm: Perm) -> Result<()> {
        let n = self.names.len() as u32;
        if perm.owner >= n || perm.group >= n {
            return Err(Error::Internal(format!(
                "checkpoint entry {path}: owner {} or group {} is not in its name table ({n} names)",
                perm.owner, perm.group
            )));
        }
        Ok(())
    }

    /// Returns the node at a canonical path.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Iterates over every node, parents before children.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Every node as of now, in O(1): later changes copy what they touch
    /// and leave this view as it is.
    pub fn freeze(&self) -> Nodes {
        self.nodes.clone()
    }

    /// Returns (file count, directory count), root included in directories.
    pub fn counts(&self) -> (u64, u64) {
        // Deleted entries awaiting garbage collection are not counted.
        (self.index.files, self.index.dirs)
    }

    /// Deleted entries whose deletion time is at or before `cutoff_ms`,
    /// oldest first, at most `max` (the garbage collector's work).
    pub fn deleted_before(&self, cutoff_ms: i64, max: usize) -> Vec<String> {
        self.index.deleted_before(cutoff_ms, max)
    }

    /// The error for a path that does not resolve: `NotADirectory` when an
    /// ancestor is a file, else `NotFound`.
    fn missing(&self, path: &str) -> Error {
        for a in ancestors(path) {
            match self.nodes.get(a.as_str()) {
                Some(Node::File(_)) => return Error::NotADirectory { path: a },
                Some(Node::Dir { .. }) => {}
                None => return Error::NotFound { path: path.to_string() },
            }
        }
        Error::NotFound { path: path.to_string() }
    }

    /// Returns the node at `path` or a NotFound/NotADirectory error.
    pub fn lookup(&self, path: &str) -> Result<&Node> {
        self.nodes.get(path).ok_or_else(|| self.missing(path))
    }

    /// Returns the file at `path`; directories give `IsADirectory`.
    pub fn file(&self, path: &str) -> Result<&FileMeta> {
        match self.lookup(path)? {
            Node::File(f) => Ok(f),
            Node::Dir { .. } => Err(Error::IsADirectory { path: path.to_string() }),
        }
    }

    /// Requires the parent of `path` to exist as a directory.
    fn check_parent_dir(&self, path: &str) -> Result<()> {
        let p = parent(path).ok_or_else(|| Error::InvalidArgument("the root has no parent".into()))?;
        match self.lookup(p)? {
            Node::Dir { .. } => Ok(()),
            Node::File(_) => Err(Error::NotADirectory { path: p.to_string() }),
        }
    }

    /// Validates a mkdir; returns false when nothing needs to be done
    /// (`parents` and the directory exists).
    pub fn check_mkdir(&self, path: &str, parents: bool) -> Result<bool> {
        match self.nodes.get(path) {
            Some(Node::Dir { .. }) if parents => return Ok(false),
            Some(Node::File(_)) if parents => return Err(Error::NotADirectory { path: path.to_string() }),
            Some(_) => return Err(Error::AlreadyExists { path: path.to_string() }),
            None => {}
        }
        if !parents {
            return self.check_parent_dir(path).map(|_| true);
        }
        for a in ancestors(path) {
            if let Some(Node::File(_)) = self.nodes.get(a.as_str()) {
                return Err(Error::NotADirectory { path: a });
            }
        }
        Ok(true)
    }

    /// Validates a create. Returns the existing file when `exclusive` is
    /// false and a file is already there.
    pub fn check_create(&self, path: &str, exclusive: bool) -> Result<Option<&FileMeta>> {
        match self.nodes.get(path) {
            Some(_) if exclusive => Err(Error::AlreadyExists { path: path.to_string() }),
            Some(Node::File(f)) => Ok(Some(f)),
            Some(Node::Dir { .. }) => Err(Error::IsADirectory { path: path.to_string() }),
            None => self.check_parent_dir(path).map(|_| None),
        }
    }

    /// Validates a delete.
    pub fn check_delete(&self, path: &str, recursive: bool) -> Result<()> {
        if path == "/" {
            return Err(Error::InvalidArgument("cannot delete the root directory".into()));
        }
        match self.lookup(path)? {
            Node::Dir { children, hidden, .. } if !recursive && crate::children::visible(children, *hidden) > 0 => {
                Err(Error::DirectoryNotEmpty { path: path.to_string() })
            }
            _ => Ok(()),
        }
    }

    /// Validates a rename.
    pub fn check_rename(&self, src: &str, dst: &str) -> Result<()> {
        if src == "/" || dst == "/" {
            return Err(Error::InvalidArgument("cannot rename the root directory".into()));
        }
        let node = self.lookup(src)?;
        if self.nodes.contains_key(dst) {
            return Err(Error::AlreadyExists { path: dst.to_string() });
        }
        if node.is_dir() && is_within(dst, src) {
            return Err(Error::InvalidArgument(format!("cannot move {src} into its own subtree {dst}")));
        }
        self.check_parent_dir(dst)
    }

    /// Checks that moving `src` to `dst` keeps every moved path within the
    /// path limits (`gfs_common::path`): `dst` plus the longest and the
    /// deepest path below `src`. Not part of `check_rename`, which also
    /// runs at apply, where renames logged before the limits must replay.
    pub fn check_moved_limits(&self, src: &str, dst: &str) -> Result<()> {
        check_limits(dst)?;
        let (grow_len, grow_depth) = (dst.len() > src.len(), dst.matches('/').count() > src.matches('/').count());
        if !grow_len && !grow_depth {
            return Ok(());
        }
        for k in self.subtree_keys(src) {
            check_limits(&format!("{dst}{}", &k[src.len()..])).map_err(|e| match e {
                Error::InvalidPath { path, reason } => {
                    Error::InvalidPath { path, reason: format!("{reason} (once {} is moved there)", quote(src)) }
                }
                other => other,
            })?;
        }
        Ok(())
    }

    /// Applies a logged operation. `AddChunk` only appends the handle to the
    /// file; `SetVersion` does not touch the namespace. Returns the chunk
    /// handles of files removed by a delete.
    pub fn apply(&mut self, op: &Op, time_ms: i64) -> Result<Vec<u64>> {
        // The leader logs canonical paths only; a log entry with any other
        // (damage the CRC missed, a bug) must not add an entry that no
        // lookup reaches and no checkpoint can load.
        let paths: &[&str] = match op {
            Op::Mkdir(m) => &[&m.path],
            Op::Create(c) => &[&c.path],
            Op::SetAttr(a) => &[&a.path],
            Op::Delete(d) => &[&d.path],
            Op::Rename(r) => &[&r.src, &r.dst],
            Op::AddChunk(a) => &[&a.path],
            Op::SetVersion(_) | Op::ServerState(_) | Op::TokenKey(_) => &[],
        };
        for p in paths {
            if normalize(p).ok().as_deref() != Some(*p) {
                return Err(Error::Internal(format!("logged operation on a non-canonical path {}", quote(p))));
            }
        }
        match op {
            Op::Mkdir(m) => self.apply_mkdir(m, time_ms).map_err(|e| internal("mkdir", e))?,
            Op::Create(c) => {
                self.check_create(&c.path, true).map_err(|e| internal("create", e))?;
                let new = self.new_perm(&c.owner, c.mode).map_err(|e| internal("create", e))?;
                let perm = match new {
                    NewPerm::Legacy => self.legacy_perm(false)?,
                    NewPerm::Owned { owner, mode } => Perm { owner, group: self.parent_group(&c.path), mode },
                };
                let f = FileMeta {
                    replication: c.replication,
                    chunk_size: c.chunk_size,
                    chunks: vec![],
                    mtime_ms: time_ms,
                    perm,
                };
                self.insert_child(&c.path, Node::File(f), time_ms);
            }
            Op::SetAttr(a) => self.apply_set_attr(a).map_err(|e| internal("set attributes", e))?,
            Op::Delete(d) => {
                self.check_delete(&d.path, true).map_err(|e| internal("delete", e))?;
                return Ok(self.apply_delete(&d.path, time_ms));
            }
            Op::Rename(r) => {
                self.check_rename(&r.src, &r.dst).map_err(|e| internal("rename", e))?;
                self.apply_rename(&r.src, &r.dst, time_ms);
            }
            Op::AddChunk(a) => {
                let f = match self.nodes.get_mut(a.path.as_str()) {
                    Some(Node::File(f)) => f,
                    _ => return Err(Error::Internal(format!("add chunk: {} is not a file", a.path))),
                };
                if f.chunks.len() as u64 != a.index {
                    return Err(Error::Internal(format!("add chunk: {} index {} out of order", a.path, a.index)));
                }
                f.chunks.push(a.handle);
                f.mtime_ms = time_ms;
            }
            Op::SetVersion(_) | Op::ServerState(_) | Op::TokenKey(_) => {}
        }
        Ok(vec![])
    }

    /// Creates `m.path` and any missing ancestors as directories. The
    /// ancestors get the mode with u+wx added, so that their creator can
    /// create below them (as HDFS does); each takes its parent's group.
    fn apply_mkdir(&mut self, m: &MkdirOp, time_ms: i64) -> Result<()> {
        self.check_mkdir(&m.path, true)?;
        let new = self.new_perm(&m.owner, m.mode)?;
        let legacy = self.legacy_perm(true)?;
        let mut all = ancestors(&m.path);
        all.push(m.path.clone());
        for p in all {
            if self.nodes.contains_key(p.as_str()) {
                continue;
            }
            let perm = match new {
                NewPerm::Legacy => legacy,
                NewPerm::Owned { owner, mode } => {
                    let mode = if p == m.path { mode } else { mode | 0o300 };
                    Perm { owner, group: self.parent_group(&p), mode }
                }
            };
            self.insert_child(&p, Node::new_dir(time_ms, perm), time_ms);
        }
        Ok(())
    }

    /// The permissions an op's new entries get: `mode` unset is an op from
    /// before permissions.
    fn new_perm(&mut self, owner: &str, mode: Option<u32>) -> Result<NewPerm> {
        let Some(mode) = mode else { return Ok(NewPerm::Legacy) };
        gfs_common::perm::check_mode(mode)?;
        Ok(NewPerm::Owned { owner: self.names.intern(owner)?, mode: mode as u16 })
    }

    /// The group of the parent directory of `path` (HDFS: a new entry
    /// takes its parent's group).
    fn parent_group(&self, path: &str) -> u32 {
        parent(path).and_then(|p| self.nodes.get(p)).map_or(Perm::root().group, |n| n.perm().group)
    }

    /// chmod / chown / setrep: sets the mode, the owner and group, and a
    /// file's replication that are given.
    fn apply_set_attr(&mut self, a: &SetAttrOp) -> Result<()> {
        let node = self.lookup(&a.path)?;
        if let Some(m) = a.mode {
            gfs_common::perm::check_mode(m)?;
        }
        if let Some(r) = a.replication {
            if !matches!(node, Node::File(_)) {
                return Err(Error::InvalidArgument(format!("replication of {}: not a file", quote(&a.path))));
            }
            if !(1..=crate::config::MAX_REPLICATION).contains(&r) {
                return Err(Error::InvalidArgument(format!(
                    "replication {r} is outside 1..={}",
                    crate::config::MAX_REPLICATION
                )));
            }
        }
        let owner = (!a.owner.is_empty()).then(|| self.names.intern(&a.owner)).transpose()?;
        let group = (!a.group.is_empty()).then(|| self.names.intern(&a.group)).transpose()?;
        let perm = self.nodes.get_mut(a.path.as_str()).expect("looked up").perm_mut();
        if let Some(m) = a.mode {
            perm.mode = m as u16;
        }
        perm.owner = owner.unwrap_or(perm.owner);
        perm.group = group.unwrap_or(perm.group);
        if let (Some(r), Some(Node::File(f))) = (a.replication, self.nodes.get_mut(a.path.as_str())) {
            f.replication = r;
        }
        Ok(())
    }

    fn insert_child(&mut self, path: &str, node: Node, time_ms: i64) {
        if let Some(p) = parent(path)
            && let Some(Node::Dir { mtime_ms, children, hidden, .. }) = self.nodes.get_mut(p)
        {
            crate::children::insert(children, hidden, file_name(path).to_string());
            *mtime_ms = time_ms;
        }
        self.put(path.to_string(), node);
    }

    /// Inserts a node, keeping the index.
    fn put(&mut self, path: String, node: Node) {
        self.index.added(&path, &node);
        if let Some(old) = self.nodes.insert(path.as_str().into(), node) {
            self.index.removed(&path, &old);
        }
    }

    /// Removes a node, keeping the index.
    fn take(&mut self, path: &str) -> Option<Node> {
        let node = self.nodes.remove(path)?;
        self.index.removed(path, &node);
        Some(node)
    }

    fn detach_from_parent(&mut self, path: &str, time_ms: i64) {
        if let Some(p) = parent(path)
            && let Some(Node::Dir { mtime_ms, children, hidden, .. }) = self.nodes.get_mut(p)
        {
            crate::children::remove(children, hidden, file_name(path));
            *mtime_ms = time_ms;
        }
    }

    /// Iterates over `path` and every node below it.
    pub fn subtree(&self, path: &str) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes
            .range::<_, str>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(path))
            .filter(move |(k, _)| is_within(k, path))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Returns every key equal to or below `path`.
    fn subtree_keys(&self, path: &str) -> Vec<String> {
        self.subtree(path).map(|(k, _)| k.to_string()).collect()
    }

    fn apply_delete(&mut self, path: &str, time_ms: i64) -> Vec<u64> {
        let mut handles = Vec::new();
        for k in self.subtree_keys(path) {
            if let Some(Node::File(f)) = self.take(&k) {
                handles.extend(f.chunks);
            }
        }
        self.detach_from_parent(path, time_ms);
        handles
    }

    fn apply_rename(&mut self, src: &str, dst: &str, time_ms: i64) {
        let keys = self.subtree_keys(src);
        self.detach_from_parent(src, time_ms);
        let mut moved = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(n) = self.take(&k) {
                moved.push((format!("{dst}{}", &k[src.len()..]), n));
            }
        }
        let mut iter = moved.into_iter();
        if let Some((top, mut node)) = iter.next() {
            match &mut node {
                Node::Dir { mtime_ms, .. } => *mtime_ms = time_ms,
                Node::File(f) => f.mtime_ms = time_ms,
            }
            self.insert_child(&top, node, time_ms);
        }
        for (k, n) in iter {
            self.put(k, n);
        }
    }

    /// Inserts a node while loading a checkpoint (parents come first).
    pub fn load_entry(&mut self, path: &str, node: Node) -> Result<()> {
        if path == "/" {
            // The root exists from the start: a checkpoint entry replaces
            // its times and permissions, never its type or its children.
            let Node::Dir { mtime_ms, perm, .. } = node else {
                return Err(Error::Internal("checkpoint entry /: the root is not a directory".into()));
            };
            if let Some(Node::Dir { mtime_ms: m, perm: p, .. }) = self.nodes.get_mut("/") {
                (*m, *p) = (mtime_ms, perm);
            }
            return Ok(());
        }
        if normalize(path).ok().as_deref() != Some(path) {
            return Err(Error::Internal(format!("checkpoint entry {}: not a canonical path", quote(path))));
        }
        self.check_parent_dir(path).map_err(|e| Error::Internal(format!("checkpoint entry {path}: {e}")))?;
        if self.nodes.contains_key(path) {
            return Err(Error::Internal(format!("checkpoint entry {path}: duplicate")));
        }
        if let Some(p) = parent(path)
            && let Some(Node::Dir { children, hidden, .. }) = self.nodes.get_mut(p)
        {
            crate::children::insert(children, hidden, file_name(path).to_string());
        }
        self.put(path.to_string(), node);
        Ok(())
    }

    /// Returns the names of the children of a directory.
    pub fn children(&self, path: &str) -> Vec<String> {
        match self.nodes.get(path) {
            Some(Node::Dir { children, .. }) => children.iter().map(|c| join(path, c)).collect(),
            _ => vec![],
        }
    }
}

#[cfg(test)]
#[path = "namespace_tests.rs"]
mod tests;
