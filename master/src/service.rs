//! The `MasterService` gRPC handlers.

use std::sync::Arc;
use std::time::Duration;

use gfs_common::auth::{Caller, Role};
use gfs_common::path::{normalize, quote};
use gfs_common::token::READ;
use gfs_common::{Error, MAX_LOCATIONS_PER_REPLY, Result};
use gfs_proto::log_record::Op;
use gfs_proto::master_service_server::MasterService;
use gfs_proto::*;
use gfs_proto::{
    AddMasterRequest, AddMasterResponse, MasterStatusRequest, MasterStatusResponse, RemoveMasterRequest,
    RemoveMasterResponse,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::config::MAX_REPLICATION;
use crate::grant::{append_target, write_target};
use crate::hidden::{check_user_path, is_hidden_name};
use crate::locks::{for_mutation, for_read};
use crate::namespace::Node;
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

/// The gRPC service over the shared master state.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

type Reply<T> = std::result::Result<Response<T>, Status>;

// Who may call what (mTLS roles; see docs/SECURITY.md). An admin may also
// do what a client may; an `--insecure` master lets everyone call everything.
const CLIENT: &[Role] = &[Role::Client];
const CHUNKSERVER: &[Role] = &[Role::Chunkserver];
const MASTER: &[Role] = &[Role::Master];
const ADMIN: &[Role] = &[Role::Admin];
const ANY: &[Role] = &Role::ALL;

/// Checks that the caller of `req` holds one of `roles` for `method`.
fn allow<T>(req: &Request<T>, method: &str, roles: &[Role]) -> Result<Caller> {
    gfs_common::auth::require(req, method, roles)
}

impl Service {
    /// Runs a handler as a task of its own ([`gfs_common::net::detached`]):
    /// a lease grant cut off between telling the chunkservers and logging
    /// the version would leave the chunk mid-bump (`bumping_from` set),
    /// which keeps repair away from it until its next grant.
    async fn detached<T, Fut>(&self, f: impl FnOnce(Arc<Shared>) -> Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        gfs_common::net::detached(f(self.shared.clone())).await
    }
}

impl Service {
    /// Wraps the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Service { shared }
    }

    async fn do_mkdir(&self, req: MkdirRequest) -> Result<MkdirResponse> {
        let path = normalize(&req.path)?;
        check_user_path(&path)?;
        let (r, w) = for_mutation(&path);
        let _g = self.shared.locks.lock(&r, &w).await;
        // A retry of a call that already took effect gets its outcome.
        if let Some(done) = self.shared.meta().retries.outcome(req.call.as_ref()) {
            return done.map(|()| MkdirResponse {});
        }
        if self.shared.meta().ns.check_mkdir(&path, req.parents)? {
            self.shared.commit_call(req.call.as_ref(), vec![Op::Mkdir(MkdirOp { path })]).await?;
        }
        Ok(MkdirResponse {})
    }

    async fn do_create(&self, req: CreateRequest) -> Result<CreateResponse> {
        let path = normalize(&req.path)?;
        check_user_path(&path)?;
        if req.replication > MAX_REPLICATION {
            return Err(Error::InvalidArgument(format!(
                "replication {} is above the maximum {MAX_REPLICATION}",
                req.replication
            )));
        }
        let replication = if req.replication == 0 { self.shared.cfg.replication } else { req.replication };
        let (r, w) = for_mutation(&path);
        let _g = self.shared.locks.lock(&r, &w).await;
        let replay = self.shared.meta().retries.outcome(req.call.as_ref());
        match replay {
            // The call already created the file: answer with it.
            Some(done) => done?,
            None => {
                let exists = self.shared.meta().ns.check_create(&path, req.exclusive)?.is_some();
                if !exists && !req.allow_under_replicated {
                    check_replication(&self.shared, replication)?;
                }
                if !exists {
                    let op = CreateOp { path: path.clone(), replication, chunk_size: self.shared.cfg.chunk_size };
                    self.shared.commit_call(req.call.as_ref(), vec![Op::Create(op)]).await?;
                }
            }
        }
        let meta = self.shared.meta();
        let node = meta.ns.lookup(&path)?;
        Ok(CreateResponse { info: Some(meta.file_info(&path, node)) })
    }

    async fn do_delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        let path = normalize(&req.path)?;
        self.shared.delete_path(&path, req.recursive, req.immediate, req.call.as_ref()).await?;
        Ok(DeleteResponse {})
    }

    async fn do_rename(&self, req: RenameRequest) -> Result<RenameResponse> {
        // The source may be hidden (that is the undelete), the destination
        // may not; the limits hold for every path the rename moves.
        let src = normalize(&req.src)?;
        let dst = normalize(&req.dst)?;
        check_user_path(&dst)?;
        if req.overwrite {
            self.shared.rename_over(&src, &dst, req.call.as_ref()).await?;
            return Ok(RenameResponse {});
        }
        let (mut reads, _) = for_mutation(&src);
        reads.extend(for_mutation(&dst).0);
        let _g = self.shared.locks.lock(&reads, &[src.clone(), dst.clone()]).await;
        if let Some(done) = self.shared.meta().retries.outcome(req.call.as_ref()) {
            return done.map(|()| RenameResponse {});
        }
        self.shared.meta().ns.check_rename(&src, &dst)?;
        self.shared.meta().ns.check_moved_limits(&src, &dst)?;
        self.shared.commit_call(req.call.as_ref(), vec![Op::Rename(RenameOp { src, dst })]).await?;
        Ok(RenameResponse {})
    }

    async fn do_list(&self, req: ListRequest) -> Result<ListResponse> {
        let path = normalize(&req.path)?;
        let _g = self.shared.locks.lock(&for_read(&path), &[]).await;
        let warming = self.shared.warming_up();
        let meta = self.shared.meta();
        let node = meta.ns.lookup(&path)?;
        if warming
            && (!meta.reported(node)
                || meta.ns.children(&path).iter().any(|c| meta.ns.get(c).is_some_and(|n| !meta.reported(n))))
        {
            return Err(warming_up(&path));
        }
        let entries = match node {
            Node::File(_) => vec![meta.file_info(&path, node)],
            Node::Dir { .. } => {
                let children = meta.ns.children(&path);
                let shown = children.iter().filter(|c| req.include_hidden || !is_hidden_name(c));
                shown.filter_map(|c| meta.ns.get(c).map(|n| meta.file_info(c, n))).collect()
            }
        };
        Ok(ListResponse { entries })
    }

    /// Info and chunk locations [start, start+count) (count 0 = all).
    /// A directory gives `IsADirectory` when `file_only`, else no chunks.
    async fn chunks(
        &self,
        path: &str,
        start: u64,
        count: u64,
        file_only: bool,
        stale_ok: bool,
        user: &str,
    ) -> Result<(FileInfo, Vec<ChunkLocation>)> {
        let path = normalize(path)?;
        let _g = self.shared.locks.lock(&for_read(&path), &[]).await;
        // A shadow read accepts sizes and locations not reported yet.
        let warming = !stale_ok && self.shared.warming_up();
        let mut meta = self.shared.meta();
        let node = meta.ns.lookup(&path)?;
        if warming && !meta.reported(node) {
            return Err(warming_up(&path));
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
                l.token = Some(meta.token(l.handle, l.version, READ, user, lifetime)?);
            }
        }
        Ok((info, locs))
    }

    /// A writer's hint of a chunk's new length. Only a chunk under a lease
    /// (a writer may have just extended it) takes one, up to its chunk
    /// size; the length of any other chunk comes from its replicas'
    /// reports alone, so a stray or hostile report cannot grow a file.
    async fn do_report_length(&self, req: ReportLengthRequest) -> Result<ReportLengthResponse> {
        let mut meta = self.shared.meta();
        let c = meta.chunks.get(req.handle).ok_or(Error::ChunkNotFound { handle: req.handle })?;
        let grace = Duration::from_millis(self.shared.cfg.rpc_timeout_ms);
        if !c.lease.as_ref().is_some_and(|l| l.is_held(Instant::now(), grace)) {
            return Err(Error::InvalidArgument(format!(
                "chunk {:#x} has no lease: its length comes from its replicas' reports",
                req.handle
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

#[tonic::async_trait]
impl MasterService for Service {
    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn mkdir(&self, req: Request<MkdirRequest>) -> Reply<MkdirResponse> {
        let t = self.shared.metrics.rpc("Mkdir");
        if let Err(e) = allow(&req, "Mkdir", CLIENT) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_mkdir(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn create(&self, req: Request<CreateRequest>) -> Reply<CreateResponse> {
        let t = self.shared.metrics.rpc("Create");
        if let Err(e) = allow(&req, "Create", CLIENT) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_create(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn delete(&self, req: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        let t = self.shared.metrics.rpc("Delete");
        if let Err(e) = allow(&req, "Delete", CLIENT) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_delete(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(src = %quote(&req.get_ref().src), dst = %quote(&req.get_ref().dst)))]
    async fn rename(&self, req: Request<RenameRequest>) -> Reply<RenameResponse> {
        let t = self.shared.metrics.rpc("Rename");
        if let Err(e) = allow(&req, "Rename", CLIENT) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_rename(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn list(&self, req: Request<ListRequest>) -> Reply<ListResponse> {
        let t = self.shared.metrics.rpc("List");
        if let Err(e) = allow(&req, "List", CLIENT) {
            return t.reply(Err(e));
        }
        if !req.get_ref().allow_stale
            && let Err(e) = self.shared.require_leader()
        {
            return t.reply(Err(e));
        }
        t.reply(self.do_list(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn stat(&self, req: Request<StatRequest>) -> Reply<StatResponse> {
        let t = self.shared.metrics.rpc("Stat");
        if let Err(e) = allow(&req, "Stat", CLIENT) {
            return t.reply(Err(e));
        }
        if !req.get_ref().allow_stale
            && let Err(e) = self.shared.require_leader()
        {
            return t.reply(Err(e));
        }
        let r = self.chunks(&req.get_ref().path, 0, 0, false, req.get_ref().allow_stale, "").await;
        t.reply(r.map(|(info, chunks)| StatResponse { info: Some(info), chunks }))
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn get_chunks(&self, req: Request<GetChunksRequest>) -> Reply<GetChunksResponse> {
        let t = self.shared.metrics.rpc("GetChunks");
        let caller = match allow(&req, "GetChunks", CLIENT) {
            Ok(c) => c,
            Err(e) => return t.reply(Err(e)),
        };
        if !req.get_ref().allow_stale
            && let Err(e) = self.shared.require_leader()
        {
            return t.reply(Err(e));
        }
        let q = req.into_inner();
        // A reply is bounded whatever the caller asks (0 = all remaining).
        let count = if q.count == 0 { MAX_LOCATIONS_PER_REPLY } else { q.count.min(MAX_LOCATIONS_PER_REPLY) };
        let r = self.chunks(&q.path, q.start_index, count, true, q.allow_stale, &caller.user).await;
        t.reply(r.map(|(info, chunks)| GetChunksResponse { info: Some(info), chunks }))
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path), index = req.get_ref().index))]
    async fn get_write_lease(&self, req: Request<GetWriteLeaseRequest>) -> Reply<GetWriteLeaseResponse> {
        let t = self.shared.metrics.rpc("GetWriteLease");
        if let Err(e) = allow(&req, "GetWriteLease", CLIENT) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let q = req.into_inner();
        let r = self
            .detached(move |shared| async move {
                let path = normalize(&q.path)?;
                shared.lease_at(&path, |c| write_target(c, q.index, q.create_missing)).await
            })
            .await;
        t.reply(r.map(|(lease, chunk_size)| GetWriteLeaseResponse { lease: Some(lease), chunk_size }))
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn get_append_lease(&self, req: Request<GetAppendLeaseRequest>) -> Reply<GetAppendLeaseResponse> {
        let t = self.shared.metrics.rpc("GetAppendLease");
        if let Err(e) = allow(&req, "GetAppendLease", CLIENT) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let q = req.into_inner();
        let r = self
            .detached(move |shared| async move {
                let path = normalize(&q.path)?;
                shared.lease_at(&path, |c| append_target(c, q.after_index)).await
            })
            .await;
        t.reply(r.map(|(lease, chunk_size)| GetAppendLeaseResponse { lease: Some(lease), chunk_size }))
    }

    #[instrument(skip_all, fields(chunk = req.get_ref().handle))]
    async fn report_length(&self, req: Request<ReportLengthRequest>) -> Reply<ReportLengthResponse> {
        let t = self.shared.metrics.rpc("ReportLength");
        if let Err(e) = allow(&req, "ReportLength", CLIENT) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_report_length(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(chunk = req.get_ref().handle))]
    async fn report_corrupt(&self, req: Request<ReportCorruptRequest>) -> Reply<ReportCorruptResponse> {
        let t = self.shared.metrics.rpc("ReportCorrupt");
        if let Err(e) = allow(&req, "ReportCorrupt", CHUNKSERVER) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.shared.report_corrupt(req.into_inner()).await.map(|()| ReportCorruptResponse {}))
    }

    #[instrument(skip_all)]
    async fn register(&self, req: Request<RegisterRequest>) -> Reply<RegisterResponse> {
        let t = self.shared.metrics.rpc("Register");
        if let Err(e) = allow(&req, "Register", CHUNKSERVER) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.shared.register(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(server = %quote(&req.get_ref().server_id)))]
    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Reply<HeartbeatResponse> {
        let t = self.shared.metrics.rpc("Heartbeat");
        if let Err(e) = allow(&req, "Heartbeat", CHUNKSERVER) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.shared.heartbeat(req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn leader_epoch(&self, req: Request<LeaderEpochRequest>) -> Reply<LeaderEpochResponse> {
        let t = self.shared.metrics.rpc("LeaderEpoch");
        if let Err(e) = allow(&req, "LeaderEpoch", CHUNKSERVER) {
            return t.reply(Err(e));
        }
        t.reply(self.shared.require_leader().map(|epoch| LeaderEpochResponse { epoch }))
    }

    #[instrument(skip_all)]
    async fn cluster_status(&self, req: Request<ClusterStatusRequest>) -> Reply<ClusterStatusResponse> {
        let t = self.shared.metrics.rpc("ClusterStatus");
        if let Err(e) = allow(&req, "ClusterStatus", ANY) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let mut st = self.shared.cluster_status();
        st.masters = self.shared.masters().await;
        st.leader_id = self.shared.id;
        t.reply(Ok(st))
    }

    #[instrument(skip_all, fields(server = %quote(&req.get_ref().server)))]
    async fn decommission(&self, req: Request<DecommissionRequest>) -> Reply<DecommissionResponse> {
        let t = self.shared.metrics.rpc("Decommission");
        if let Err(e) = allow(&req, "Decommission", ADMIN) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let r = self.shared.decommission(&req.get_ref().server).await;
        t.reply(r.map(|s| DecommissionResponse { server: Some(s) }))
    }

    #[instrument(skip_all, fields(server = %quote(&req.get_ref().server)))]
    async fn recommission(&self, req: Request<RecommissionRequest>) -> Reply<RecommissionResponse> {
        let t = self.shared.metrics.rpc("Recommission");
        if let Err(e) = allow(&req, "Recommission", ADMIN) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let r = self.shared.recommission(&req.get_ref().server).await;
        t.reply(r.map(|s| RecommissionResponse { server: Some(s) }))
    }

    #[instrument(skip_all, fields(server = %quote(&req.get_ref().server)))]
    async fn mark_lost(&self, req: Request<MarkLostRequest>) -> Reply<MarkLostResponse> {
        let t = self.shared.metrics.rpc("MarkLost");
        if let Err(e) = allow(&req, "MarkLost", ADMIN) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let r = self.shared.mark_lost(&req.get_ref().server);
        t.reply(r.map(|(s, n)| MarkLostResponse { server: Some(s), chunks_queued: n }))
    }

    #[instrument(skip_all)]
    async fn repair_events(&self, req: Request<RepairEventsRequest>) -> Reply<RepairEventsResponse> {
        let t = self.shared.metrics.rpc("RepairEvents");
        if let Err(e) = allow(&req, "RepairEvents", ANY) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(Ok(self.shared.repair_events()))
    }

    #[instrument(skip_all)]
    async fn master_status(&self, req: Request<MasterStatusRequest>) -> Reply<MasterStatusResponse> {
        let t = self.shared.metrics.rpc("MasterStatus");
        if let Err(e) = allow(&req, "MasterStatus", ANY) {
            return t.reply(Err(e));
        }
        t.reply(Ok(self.shared.master_status()))
    }

    #[instrument(skip_all, fields(id = req.get_ref().id, address = %quote(&req.get_ref().address)))]
    async fn add_master(&self, req: Request<AddMasterRequest>) -> Reply<AddMasterResponse> {
        let t = self.shared.metrics.rpc("AddMaster");
        if let Err(e) = allow(&req, "AddMaster", ADMIN) {
            return t.reply(Err(e));
        }
        let q = req.into_inner();
        let r = self.shared.add_master(q.id, &q.address).await;
        let members = self.shared.masters().await;
        t.reply(r.map(|()| AddMasterResponse { members }))
    }

    #[instrument(skip_all, fields(id = req.get_ref().id))]
    async fn remove_master(&self, req: Request<RemoveMasterRequest>) -> Reply<RemoveMasterResponse> {
        let t = self.shared.metrics.rpc("RemoveMaster");
        if let Err(e) = allow(&req, "RemoveMaster", ADMIN) {
            return t.reply(Err(e));
        }
        let r = self.shared.remove_master(req.get_ref().id).await;
        let members = self.shared.masters().await;
        t.reply(r.map(|()| RemoveMasterResponse { members }))
    }

    #[instrument(skip_all)]
    async fn chunk_locations(&self, req: Request<ChunkLocationsRequest>) -> Reply<ChunkLocationsResponse> {
        let t = self.shared.metrics.rpc("ChunkLocations");
        if let Err(e) = allow(&req, "ChunkLocations", MASTER) {
            return t.reply(Err(e));
        }
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let q = req.into_inner();
        t.reply(Ok(self.shared.meta().shadow_page(q.stream, q.after_seq, q.limit)))
    }
}
