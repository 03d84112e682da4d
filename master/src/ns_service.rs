//! The namespace handlers of `MasterService` (mkdir, create, delete,
//! rename, list, stat, chunk lookups, chmod, chown, setrep, length reports). Each
//! takes the path locks of its call, then checks the caller's permissions
//! (`access.rs`) before the namespace checks, then commits.

use std::time::Duration;

use gfs_common::path::{join, normalize};
use gfs_common::perm::{DEFAULT_UMASK, DIR_BASE, FILE_BASE, READ, WRITE, check_mode, check_umask};
use gfs_common::token::READ as READ_TOKEN;
use gfs_common::{Error, Result};
use gfs_proto::log_record::Op;
use gfs_proto::*;
use tokio::time::Instant;
use tracing::info;

use crate::children::{PAGE_BYTES, check_cursor, page, page_limit};
use crate::config::MAX_REPLICATION;
use crate::hidden::check_user_path;
use crate::locks::{for_mutation, for_read};
use crate::namespace::Node;
use crate::perm::{Requester, check_set_owner};
use crate::service::Service;
use crate::state::{Meta, Shared};

/// Counts read lookups (hot chunks) and boosts chunks a reader finds
/// short of replicas.
fn note_reads(meta: &mut Meta, locs: &[ChunkLocation]) {
    for l in locs {
        meta.heal.note_read(l.handle);
        let want = meta.chunks.get(l.handle).map_or(0, |c| c.replication as usize);
        if l.replicas.len() < want {
            meta.heal.note_blocked(l.handle);
        }
    }
}

/// Sizes come from chunkserver reports: a new leader answers for a file
/// only once a replica of each of its chunks reported (or its warm-up
/// ended), never with a size that is short for lack of reports.
fn warming_up(path: &str) -> Error {
    Error::Unavailable(format!("{path}: this master just became leader and is collecting chunk reports; retry shortly"))
}

/// Refuses a new file whose replication no set of in-service chunkservers
/// can hold now: its chunks would be placed short of replicas from the
/// start. During a new leader's warm-up, chunkservers are still
/// re-registering, so the refusal is `Unavailable` (retried) rather than
/// `NoSpace`: a create right after a failover does not fail for lack of
/// registrations.
fn check_replication(shared: &Shared, replication: u32) -> Result<()> {
    let live = shared.meta().in_service_count();
    if replication as usize <= live {
        return Ok(());
    }
    if shared.warming_up() {
        return Err(Error::Unavailable(format!(
            "replication {replication} but only {live} chunkservers have registered with this new leader so far; \
             retry shortly"
        )));
    }
    Err(Error::NoSpace {
        server: None,
        detail: format!(
            "replication {replication} but only {live} chunkservers are live; add chunkservers, lower the \
             replication, or allow an under-replicated file (--allow-under-replicated)"
        ),
    })
}

/// The mode of a new entry: `base` without the request's umask (022 when
/// the caller sent none, e.g. an older client).
fn new_mode(base: u32, umask: Option<u32>) -> Result<u32> {
    let umask = umask.unwrap_or(DEFAULT_UMASK);
    check_umask(umask)?;
    Ok(base & !umask)
}

impl Service {
    pub(crate) async fn do_mkdir(&self, req: MkdirRequest, who: &Requester) -> Result<MkdirResponse> {
        let path = normalize(&req.path)?;
        check_user_path(&path)?;
        let mode = new_mode(DIR_BASE, req.umask)?;
        let (r, w) = for_mutation(&path);
        let _g = self.shared.locks.lock(&r, &w).await;
        // A retry of a call that already took effect gets its outcome.
        if let Some(done) = self.shared.meta().retries.outcome(req.call.as_ref()) {
            return done.map(|()| MkdirResponse {});
        }
        let create = {
            let meta = self.shared.meta();
            meta.ns.allow_create(who, &path, req.parents)?;
            let create = meta.ns.check_mkdir(&path, req.parents)?;
            meta.ns.names().check_room_for(&[&who.user])?;
            create
        };
        if create {
            let op = MkdirOp { path, owner: who.user.clone(), mode: Some(mode) };
            self.shared.commit_call(req.call.as_ref(), vec![Op::Mkdir(op)]).await?;
        }
        Ok(MkdirResponse {})
    }

    pub(crate) async fn do_create(&self, req: CreateRequest, who: &Requester) -> Result<CreateResponse> {
        let path = normalize(&req.path)?;
        check_user_path(&path)?;
        if req.replication > MAX_REPLICATION {
            return Err(Error::InvalidArgument(format!(
                "replication {} is above the maximum {MAX_REPLICATION}",
                req.replication
            )));
        }
        let mode = new_mode(FILE_BASE, req.umask)?;
        let replication = if req.replication == 0 { self.shared.cfg.replication } else { req.replication };
        let (r, w) = for_mutation(&path);
        let _g = self.shared.locks.lock(&r, &w).await;
        let replay = self.shared.meta().retries.outcome(req.call.as_ref());
        match replay {
            // The call already created the file: answer with it.
            Some(done) => done?,
            None => {
                let exists = {
                    let meta = self.shared.meta();
                    meta.ns.allow_create(who, &path, false)?;
                    let exists = meta.ns.check_create(&path, req.exclusive)?.is_some();
                    meta.ns.names().check_room_for(&[&who.user])?;
                    exists
                };
                if !exists && !req.allow_under_replicated {
                    check_replication(&self.shared, replication)?;
                }
                if !exists {
                    let (owner, chunk_size) = (who.user.clone(), self.shared.cfg.chunk_size);
                    let op = CreateOp { path: path.clone(), replication, chunk_size, owner, mode: Some(mode) };
                    self.shared.commit_call(req.call.as_ref(), vec![Op::Create(op)]).await?;
                }
            }
        }
        let meta = self.shared.meta();
        meta.ns.allow_lookup(who, &path)?;
        let node = meta.ns.lookup(&path)?;
        Ok(CreateResponse { info: Some(meta.file_info(&path, node)) })
    }

    pub(crate) async fn do_delete(&self, req: DeleteRequest, who: &Requester) -> Result<DeleteResponse> {
        let path = normalize(&req.path)?;
        self.shared.delete_path(&path, req.recursive, req.immediate, req.call.as_ref(), Some(who)).await?;
        Ok(DeleteResponse {})
    }

    pub(crate) async fn do_rename(&self, req: RenameRequest, who: &Requester) -> Result<RenameResponse> {
        // The source may be hidden (that is the undelete), the destination
        // may not; the limits hold for every path the rename moves.
        let src = normalize(&req.src)?;
        let dst = normalize(&req.dst)?;
        check_user_path(&dst)?;
        if req.overwrite {
            self.shared.rename_over(&src, &dst, req.call.as_ref(), Some(who)).await?;
            return Ok(RenameResponse {});
        }
        let (mut reads, _) = for_mutation(&src);
        reads.extend(for_mutation(&dst).0);
        let _g = self.shared.locks.lock(&reads, &[src.clone(), dst.clone()]).await;
        if let Some(done) = self.shared.meta().retries.outcome(req.call.as_ref()) {
            return done.map(|()| RenameResponse {});
        }
        {
            let meta = self.shared.meta();
            meta.ns.allow_rename(who, &src, &dst)?;
            meta.ns.check_rename(&src, &dst)?;
            meta.ns.check_moved_limits(&src, &dst)?;
        }
        self.shared.commit_call(req.call.as_ref(), vec![Op::Rename(RenameOp { src, dst })]).await?;
        Ok(RenameResponse {})
    }

    /// One page of a listing (HDFS getListing): the directory's children
    /// after `start_after` in name order, at most the bounded limit and
    /// about [`PAGE_BYTES`] of entries; a file lists as itself. The
    /// metadata lock is held for O(log n + page), never for the whole
    /// directory.
    pub(crate) async fn do_list(&self, req: ListRequest, who: &Requester) -> Result<ListResponse> {
        let path = normalize(&req.path)?;
        check_cursor(&req.start_after)?;
        let limit = page_limit(req.limit);
        let _g = self.shared.locks.lock(&for_read(&path), &[]).await;
        let warming = self.shared.warming_up();
        let meta = self.shared.meta();
        meta.ns.allow_list(who, &path)?;
        let node = meta.ns.lookup(&path)?;
        let children = match node {
            Node::File(_) if warming && !meta.reported(node) => return Err(warming_up(&path)),
            Node::File(_) => return Ok(ListResponse { entries: vec![meta.file_info(&path, node)], has_more: false }),
            Node::Dir { children, .. } => children,
        };
        let (names, mut has_more) = page(children, &req.start_after, req.include_hidden, limit);
        let mut entries = Vec::with_capacity(names.len());
        let mut bytes = 0;
        for (i, name) in names.iter().enumerate() {
            let child = join(&path, name);
            let Some(n) = meta.ns.get(&child) else { continue };
            // Sizes come from reports: only this page's files need them.
            if warming && !meta.reported(n) {
                return Err(warming_up(&path));
            }
            let info = meta.file_info(&child, n);
            bytes += prost::Message::encoded_len(&info);
            entries.push(info);
            if bytes >= PAGE_BYTES && i + 1 < names.len() {
                has_more = true;
                break;
            }
        }
        Ok(ListResponse { entries, has_more })
    }

    /// Info and chunk locations [start, start+count) (count 0 = all).
    /// A directory gives `IsADirectory` when `file_only`, else no chunks.
    /// `file_only` is a read (GetChunks: READ on the file, read tokens);
    /// otherwise a stat (only the lookup is checked, and no token given).
    pub(crate) async fn chunks(
        &self,
        path: &str,
        (start, count): (u64, u64),
        file_only: bool,
        stale_ok: bool,
        who: &Requester,
    ) -> Result<(FileInfo, Vec<ChunkLocation>)> {
        let path = normalize(path)?;
        let _g = self.shared.locks.lock(&for_read(&path), &[]).await;
        // A shadow read accepts sizes and locations not reported yet.
        let warming = !stale_ok && self.shared.warming_up();
        let mut meta = self.shared.meta();
        match file_only {
            true => meta.ns.allow_access(who, &path, READ)?,
            false => meta.ns.allow_lookup(who, &path)?,
        }
        let node = meta.ns.lookup(&path)?;
        if warming && !meta.reported(node) {
            return Err(warming_up(&path));
        }
        // A read needs the file's size, the sum of its chunks' lengths,
        // which only replicas report: with a chunk no live replica has
        // reported (all its holders down, or not registered yet with a new
        // leader past its warm-up) the size here is short, and a reader
        // would take a short file for the whole one. Refuse instead.
        if file_only && let Some((index, handle)) = meta.unreported(node) {
            return Err(Error::Unavailable(format!(
                "{}: chunk {index} ({handle:#x}) has no live replica known to this master, so the file's size \
                 is not known; retry once a chunkserver holding it reports",
                gfs_common::path::quote(&path)
            )));
        }
        let info = meta.file_info(&path, node);
        let mut locs: Vec<ChunkLocation> = match node {
            Node::File(f) => {
                let take = if count == 0 { usize::MAX } else { count as usize };
                f.chunks
                    .iter()
                    .enumerate()
                    .skip(start as usize)
                    .take(take)
                    .map(|(i, h)| meta.location(i as u64, *h))
                    .collect()
            }
            Node::Dir { .. } if file_only => return Err(Error::IsADirectory { path }),
            Node::Dir { .. } => vec![],
        };
        if file_only {
            note_reads(&mut meta, &locs);
            // Readers get a read token per chunk (a shadow read too: a
            // follower has the group's keys).
            let lifetime = self.shared.cfg.token_lifetime_ms;
            for l in &mut locs {
                l.token = Some(meta.token(l.handle, l.version, READ_TOKEN, &who.user, lifetime)?);
            }
        }
        Ok((info, locs))
    }

    /// The shape of chmod, chown and setrep: under the path's locks, a
    /// retried call gets its first outcome; otherwise `decide` checks the
    /// caller and returns the change to log, with what to log about it
    /// (`None`: nothing to change). Answers the entry's info.
    async fn set_attr(
        &self,
        path: &str,
        call: Option<&CallId>,
        who: &Requester,
        decide: impl FnOnce() -> Result<Option<(SetAttrOp, String)>>,
    ) -> Result<FileInfo> {
        let (r, w) = for_mutation(path);
        let _g = self.shared.locks.lock(&r, &w).await;
        let replay = self.shared.meta().retries.outcome(call);
        match replay {
            Some(done) => done?,
            None => {
                if let Some((op, what)) = decide()? {
                    self.shared.commit_call(call, vec![Op::SetAttr(op)]).await?;
                    info!(path = %gfs_common::path::quote(path), user = %who.user, "{what}");
                }
            }
        }
        let meta = self.shared.meta();
        meta.ns.allow_lookup(who, path)?;
        let node = meta.ns.lookup(path)?;
        Ok(meta.file_info(path, node))
    }

    /// chmod: the owner or a superuser sets the mode (at most 0o1777).
    pub(crate) async fn do_set_permission(
        &self,
        req: SetPermissionRequest,
        who: &Requester,
    ) -> Result<SetPermissionResponse> {
        let path = normalize(&req.path)?;
        check_mode(req.mode)?;
        let info = self
            .set_attr(&path, req.call.as_ref(), who, || {
                let meta = self.shared.meta();
                meta.ns.allow_chmod(who, &path)?;
                meta.ns.lookup(&path)?;
                let op = SetAttrOp { path: path.clone(), mode: Some(req.mode), ..Default::default() };
                Ok(Some((op, format!("permission set to {:o}", req.mode))))
            })
            .await?;
        Ok(SetPermissionResponse { info: Some(info) })
    }

    /// setrep: WRITE on the file (HDFS's setReplication) sets its
    /// replication and the goal of each of its chunks. Repair then adds
    /// replicas, or drops the extra ones.
    pub(crate) async fn do_set_replication(
        &self,
        req: SetReplicationRequest,
        who: &Requester,
    ) -> Result<SetReplicationResponse> {
        let path = normalize(&req.path)?;
        let to = req.replication;
        if !(1..=MAX_REPLICATION).contains(&to) {
            return Err(Error::InvalidArgument(format!("replication {to} is outside 1..={MAX_REPLICATION}")));
        }
        let info = self
            .set_attr(&path, req.call.as_ref(), who, || {
                let from = {
                    let meta = self.shared.meta();
                    meta.ns.allow_access(who, &path, WRITE)?;
                    match meta.ns.lookup(&path)? {
                        Node::File(f) => f.replication,
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "setrep {}: not a file (set the replication of each file below it)",
                                gfs_common::path::quote(&path)
                            )));
                        }
                    }
                };
                if to > from && !req.allow_under_replicated {
                    check_replication(&self.shared, to)?;
                }
                let op = SetAttrOp { path: path.clone(), replication: Some(to), ..Default::default() };
                Ok((to != from).then(|| (op, format!("replication set from {from} to {to}"))))
            })
            .await?;
        Ok(SetReplicationResponse { info: Some(info) })
    }

    /// chown: a superuser sets the owner and/or group; the owner may set
    /// the group to one of their own groups (HDFS's rule).
    pub(crate) async fn do_set_owner(&self, req: SetOwnerRequest, who: &Requester) -> Result<SetOwnerResponse> {
        let path = normalize(&req.path)?;
        let owner = (!req.owner.is_empty()).then_some(req.owner.as_str());
        let group = (!req.group.is_empty()).then_some(req.group.as_str());
        if owner.is_none() && group.is_none() {
            return Err(Error::InvalidArgument("set owner: give an owner, a group or both".into()));
        }
        for (what, name) in [("owner", owner), ("group", group)] {
            if let Some(n) = name
                && !gfs_common::auth::is_valid_name(n)
            {
                return Err(Error::InvalidArgument(gfs_common::auth::bad_name(what, n)));
            }
        }
        let info = self
            .set_attr(&path, req.call.as_ref(), who, || {
                let meta = self.shared.meta();
                meta.ns.allow_lookup(who, &path)?;
                let node = meta.ns.lookup(&path)?;
                check_set_owner(node.perm(), &meta.ns.names().who(who), meta.ns.names(), owner, group)?;
                let new: Vec<&str> = owner.into_iter().chain(group).collect();
                meta.ns.names().check_room_for(&new)?;
                let op = SetAttrOp {
                    path: path.clone(),
                    mode: None,
                    owner: req.owner.clone(),
                    group: req.group.clone(),
                    replication: None,
                };
                Ok(Some((op, format!("owner set to {}:{}", req.owner, req.group))))
            })
            .await?;
        Ok(SetOwnerResponse { info: Some(info) })
    }

    /// A writer's hint of a chunk's new length. Only a chunk under a lease
    /// (a writer may have just extended it) takes one, up to its chunk
    /// size, and only from a caller the lease was handed to (who passed
    /// the WRITE check on the file) or a superuser; the length of any
    /// other chunk comes from its replicas' reports alone, so a stray or
    /// hostile report cannot grow a file (and make its replicas look
    /// short to readers).
    pub(crate) async fn do_report_length(
        &self,
        req: ReportLengthRequest,
        who: &Requester,
    ) -> Result<ReportLengthResponse> {
        let mut meta = self.shared.meta();
        let c = meta.chunks.get(req.handle).ok_or(Error::ChunkNotFound { handle: req.handle })?;
        let grace = Duration::from_millis(self.shared.cfg.rpc_timeout_ms);
        let Some(lease) = c.lease.as_ref().filter(|l| l.is_held(Instant::now(), grace)) else {
            return Err(Error::InvalidArgument(format!(
                "chunk {:#x} has no lease: its length comes from its replicas' reports",
                req.handle
            )));
        };
        if !who.superuser && !lease.writers.contains(&who.user) {
            return Err(Error::PermissionDenied(format!(
                "user={}, chunk {:#x}: only a writer the chunk's lease was given to may report its length",
                who.user, req.handle
            )));
        }
        if req.length > c.chunk_size {
            return Err(Error::InvalidArgument(format!(
                "length {} of chunk {} is above the chunk size {}",
                req.length, req.handle, c.chunk_size
            )));
        }
        // Only a longer length is a change (for shadow pulls too).
        if let Some(c) = meta.chunks.get_mut_if(req.handle, |c| req.length > c.length) {
            c.length = req.length;
        }
        Ok(ReportLengthResponse {})
    }
}
