//! The `MasterService` gRPC handlers.

use std::sync::Arc;

use gfs_common::path::normalize;
use gfs_common::{Error, Result};
use gfs_proto::log_record::Op;
use gfs_proto::master_service_server::MasterService;
use gfs_proto::*;
use gfs_proto::{
    AddMasterRequest, AddMasterResponse, MasterStatusRequest, MasterStatusResponse, RemoveMasterRequest,
    RemoveMasterResponse,
};
use tonic::{Request, Response, Status};
use tracing::{instrument, warn};

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

/// The gRPC service over the shared master state.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

type Reply<T> = std::result::Result<Response<T>, Status>;

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
        let locs = match node {
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
        }
        Ok((info, locs))
    }

    async fn do_report_length(&self, req: ReportLengthRequest) -> Result<ReportLengthResponse> {
        let mut meta = self.shared.meta();
        let c = meta.chunks.get(req.handle).ok_or(Error::ChunkNotFound { handle: req.handle })?;
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

    async fn do_report_corrupt(&self, req: ReportCorruptRequest) -> Result<ReportCorruptResponse> {
        let mut meta = self.shared.meta();
        if meta.chunks.get(req.handle).is_none() {
            return Err(Error::ChunkNotFound { handle: req.handle });
        }
        warn!(chunk = req.handle, server = %req.server_id, "replica reported corrupt; dropping it");
        meta.remove_replica(req.handle, &req.server_id);
        if let Some(s) = meta.servers.get_mut(&req.server_id) {
            s.pending_delete.insert(req.handle);
        }
        Ok(ReportCorruptResponse {})
    }
}

#[tonic::async_trait]
impl MasterService for Service {
    #[instrument(skip_all, fields(path = %req.get_ref().path))]
    async fn mkdir(&self, req: Request<MkdirRequest>) -> Reply<MkdirResponse> {
        let t = self.shared.metrics.rpc("Mkdir");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_mkdir(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(path = %req.get_ref().path))]
    async fn create(&self, req: Request<CreateRequest>) -> Reply<CreateResponse> {
        let t = self.shared.metrics.rpc("Create");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_create(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(path = %req.get_ref().path))]
    async fn delete(&self, req: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        let t = self.shared.metrics.rpc("Delete");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_delete(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(src = %req.get_ref().src, dst = %req.get_ref().dst))]
    async fn rename(&self, req: Request<RenameRequest>) -> Reply<RenameResponse> {
        let t = self.shared.metrics.rpc("Rename");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_rename(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(path = %req.get_ref().path))]
    async fn list(&self, req: Request<ListRequest>) -> Reply<ListResponse> {
        let t = self.shared.metrics.rpc("List");
        if !req.get_ref().allow_stale
            && let Err(e) = self.shared.require_leader()
        {
            return t.reply(Err(e));
        }
        t.reply(self.do_list(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(path = %req.get_ref().path))]
    async fn stat(&self, req: Request<StatRequest>) -> Reply<StatResponse> {
        let t = self.shared.metrics.rpc("Stat");
        if !req.get_ref().allow_stale
            && let Err(e) = self.shared.require_leader()
        {
            return t.reply(Err(e));
        }
        let r = self.chunks(&req.get_ref().path, 0, 0, false, req.get_ref().allow_stale).await;
        t.reply(r.map(|(info, chunks)| StatResponse { info: Some(info), chunks }))
    }

    #[instrument(skip_all, fields(path = %req.get_ref().path))]
    async fn get_chunks(&self, req: Request<GetChunksRequest>) -> Reply<GetChunksResponse> {
        let t = self.shared.metrics.rpc("GetChunks");
        if !req.get_ref().allow_stale
            && let Err(e) = self.shared.require_leader()
        {
            return t.reply(Err(e));
        }
        let q = req.into_inner();
        let r = self.chunks(&q.path, q.start_index, q.count, true, q.allow_stale).await;
        t.reply(r.map(|(info, chunks)| GetChunksResponse { info: Some(info), chunks }))
    }

    #[instrument(skip_all, fields(path = %req.get_ref().path, index = req.get_ref().index))]
    async fn get_write_lease(&self, req: Request<GetWriteLeaseRequest>) -> Reply<GetWriteLeaseResponse> {
        let t = self.shared.metrics.rpc("GetWriteLease");
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

    #[instrument(skip_all, fields(path = %req.get_ref().path))]
    async fn get_append_lease(&self, req: Request<GetAppendLeaseRequest>) -> Reply<GetAppendLeaseResponse> {
        let t = self.shared.metrics.rpc("GetAppendLease");
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
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_report_length(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(chunk = req.get_ref().handle))]
    async fn report_corrupt(&self, req: Request<ReportCorruptRequest>) -> Reply<ReportCorruptResponse> {
        let t = self.shared.metrics.rpc("ReportCorrupt");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.do_report_corrupt(req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn register(&self, req: Request<RegisterRequest>) -> Reply<RegisterResponse> {
        let t = self.shared.metrics.rpc("Register");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.shared.register(req.into_inner()).await)
    }

    #[instrument(skip_all, fields(server = %req.get_ref().server_id))]
    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Reply<HeartbeatResponse> {
        let t = self.shared.metrics.rpc("Heartbeat");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(self.shared.heartbeat(req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn cluster_status(&self, _req: Request<ClusterStatusRequest>) -> Reply<ClusterStatusResponse> {
        let t = self.shared.metrics.rpc("ClusterStatus");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let mut st = self.shared.cluster_status();
        st.masters = self.shared.masters().await;
        st.leader_id = self.shared.id;
        t.reply(Ok(st))
    }

    #[instrument(skip_all, fields(server = %req.get_ref().server))]
    async fn decommission(&self, req: Request<DecommissionRequest>) -> Reply<DecommissionResponse> {
        let t = self.shared.metrics.rpc("Decommission");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let r = self.shared.decommission(&req.get_ref().server).await;
        t.reply(r.map(|s| DecommissionResponse { server: Some(s) }))
    }

    #[instrument(skip_all, fields(server = %req.get_ref().server))]
    async fn recommission(&self, req: Request<RecommissionRequest>) -> Reply<RecommissionResponse> {
        let t = self.shared.metrics.rpc("Recommission");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let r = self.shared.recommission(&req.get_ref().server).await;
        t.reply(r.map(|s| RecommissionResponse { server: Some(s) }))
    }

    #[instrument(skip_all, fields(server = %req.get_ref().server))]
    async fn mark_lost(&self, req: Request<MarkLostRequest>) -> Reply<MarkLostResponse> {
        let t = self.shared.metrics.rpc("MarkLost");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let r = self.shared.mark_lost(&req.get_ref().server);
        t.reply(r.map(|(s, n)| MarkLostResponse { server: Some(s), chunks_queued: n }))
    }

    #[instrument(skip_all)]
    async fn repair_events(&self, _req: Request<RepairEventsRequest>) -> Reply<RepairEventsResponse> {
        let t = self.shared.metrics.rpc("RepairEvents");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        t.reply(Ok(self.shared.repair_events()))
    }

    #[instrument(skip_all)]
    async fn master_status(&self, _req: Request<MasterStatusRequest>) -> Reply<MasterStatusResponse> {
        let t = self.shared.metrics.rpc("MasterStatus");
        t.reply(Ok(self.shared.master_status()))
    }

    #[instrument(skip_all, fields(id = req.get_ref().id, address = %req.get_ref().address))]
    async fn add_master(&self, req: Request<AddMasterRequest>) -> Reply<AddMasterResponse> {
        let t = self.shared.metrics.rpc("AddMaster");
        let q = req.into_inner();
        let r = self.shared.add_master(q.id, &q.address).await;
        let members = self.shared.masters().await;
        t.reply(r.map(|()| AddMasterResponse { members }))
    }

    #[instrument(skip_all, fields(id = req.get_ref().id))]
    async fn remove_master(&self, req: Request<RemoveMasterRequest>) -> Reply<RemoveMasterResponse> {
        let t = self.shared.metrics.rpc("RemoveMaster");
        let r = self.shared.remove_master(req.get_ref().id).await;
        let members = self.shared.masters().await;
        t.reply(r.map(|()| RemoveMasterResponse { members }))
    }

    #[instrument(skip_all)]
    async fn chunk_locations(&self, req: Request<ChunkLocationsRequest>) -> Reply<ChunkLocationsResponse> {
        let t = self.shared.metrics.rpc("ChunkLocations");
        if let Err(e) = self.shared.require_leader() {
            return t.reply(Err(e));
        }
        let q = req.into_inner();
        t.reply(Ok(self.shared.meta().shadow_page(q.stream, q.after_seq, q.limit)))
    }
}
