//! The `MasterService` gRPC handlers.

use std::sync::Arc;

use gfs_common::auth::{Caller, Role};
use gfs_common::path::{normalize, quote};
use gfs_common::{MAX_LOCATIONS_PER_REPLY, Result};
use gfs_proto::master_service_server::MasterService;
use gfs_proto::*;
use gfs_proto::{
    AddMasterRequest, AddMasterResponse, MasterStatusRequest, MasterStatusResponse, RemoveMasterRequest,
    RemoveMasterResponse,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::grant::{append_target, write_target};
use crate::perm::Requester;
use crate::state::Shared;

/// The gRPC service over the shared master state.
#[derive(Clone)]
pub struct Service {
    pub(crate) shared: Arc<Shared>,
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

    /// Checks a namespace call: the client role, then (unless a shadow
    /// read) this master's leadership; returns who asks, for the
    /// permission checks.
    fn user<T>(&self, req: &Request<T>, method: &str, needs_leader: bool) -> Result<Requester> {
        let caller = allow(req, method, CLIENT)?;
        if needs_leader {
            self.shared.require_leader()?;
        }
        Ok(self.shared.requester(&caller))
    }
}

#[tonic::async_trait]
impl MasterService for Service {
    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn mkdir(&self, req: Request<MkdirRequest>) -> Reply<MkdirResponse> {
        let t = self.shared.metrics.rpc("Mkdir");
        match self.user(&req, "Mkdir", true) {
            Ok(who) => t.reply(self.do_mkdir(req.into_inner(), &who).await),
            Err(e) => t.reply(Err(e)),
        }
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn create(&self, req: Request<CreateRequest>) -> Reply<CreateResponse> {
        let t = self.shared.metrics.rpc("Create");
        match self.user(&req, "Create", true) {
            Ok(who) => t.reply(self.do_create(req.into_inner(), &who).await),
            Err(e) => t.reply(Err(e)),
        }
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn delete(&self, req: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        let t = self.shared.metrics.rpc("Delete");
        match self.user(&req, "Delete", true) {
            Ok(who) => t.reply(self.do_delete(req.into_inner(), &who).await),
            Err(e) => t.reply(Err(e)),
        }
    }

    #[instrument(skip_all, fields(src = %quote(&req.get_ref().src), dst = %quote(&req.get_ref().dst)))]
    async fn rename(&self, req: Request<RenameRequest>) -> Reply<RenameResponse> {
        let t = self.shared.metrics.rpc("Rename");
        match self.user(&req, "Rename", true) {
            Ok(who) => t.reply(self.do_rename(req.into_inner(), &who).await),
            Err(e) => t.reply(Err(e)),
        }
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn list(&self, req: Request<ListRequest>) -> Reply<ListResponse> {
        let t = self.shared.metrics.rpc("List");
        match self.user(&req, "List", !req.get_ref().allow_stale) {
            Ok(who) => t.reply(self.do_list(req.into_inner(), &who).await),
            Err(e) => t.reply(Err(e)),
        }
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn stat(&self, req: Request<StatRequest>) -> Reply<StatResponse> {
        let t = self.shared.metrics.rpc("Stat");
        let q = req.get_ref();
        let who = match self.user(&req, "Stat", !q.allow_stale) {
            Ok(who) => who,
            Err(e) => return t.reply(Err(e)),
        };
        let r = self.chunks(&q.path, (0, 0), false, q.allow_stale, &who).await;
        t.reply(r.map(|(info, chunks)| StatResponse { info: Some(info), chunks }))
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn get_chunks(&self, req: Request<GetChunksRequest>) -> Reply<GetChunksResponse> {
        let t = self.shared.metrics.rpc("GetChunks");
        let who = match self.user(&req, "GetChunks", !req.get_ref().allow_stale) {
            Ok(who) => who,
            Err(e) => return t.reply(Err(e)),
        };
        let q = req.into_inner();
        // A reply is bounded whatever the caller asks (0 = all remaining).
        let count = if q.count == 0 { MAX_LOCATIONS_PER_REPLY } else { q.count.min(MAX_LOCATIONS_PER_REPLY) };
        let r = self.chunks(&q.path, (q.start_index, count), true, q.allow_stale, &who).await;
        t.reply(r.map(|(info, chunks)| GetChunksResponse { info: Some(info), chunks }))
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn set_permission(&self, req: Request<SetPermissionRequest>) -> Reply<SetPermissionResponse> {
        let t = self.shared.metrics.rpc("SetPermission");
        match self.user(&req, "SetPermission", true) {
            Ok(who) => t.reply(self.do_set_permission(req.into_inner(), &who).await),
            Err(e) => t.reply(Err(e)),
        }
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path), replication = req.get_ref().replication))]
    async fn set_replication(&self, req: Request<SetReplicationRequest>) -> Reply<SetReplicationResponse> {
        let t = self.shared.metrics.rpc("SetReplication");
        match self.user(&req, "SetReplication", true) {
            Ok(who) => t.reply(self.do_set_replication(req.into_inner(), &who).await),
            Err(e) => t.reply(Err(e)),
        }
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn set_owner(&self, req: Request<SetOwnerRequest>) -> Reply<SetOwnerResponse> {
        let t = self.shared.metrics.rpc("SetOwner");
        match self.user(&req, "SetOwner", true) {
            Ok(who) => t.reply(self.do_set_owner(req.into_inner(), &who).await),
            Err(e) => t.reply(Err(e)),
        }
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path), index = req.get_ref().index))]
    async fn get_write_lease(&self, req: Request<GetWriteLeaseRequest>) -> Reply<GetWriteLeaseResponse> {
        let t = self.shared.metrics.rpc("GetWriteLease");
        let who = match self.user(&req, "GetWriteLease", true) {
            Ok(who) => who,
            Err(e) => return t.reply(Err(e)),
        };
        let q = req.into_inner();
        let r = self
            .detached(move |shared| async move {
                let path = normalize(&q.path)?;
                shared.lease_at(&path, &who, |c| write_target(c, q.index, q.create_missing)).await
            })
            .await;
        t.reply(r.map(|(lease, chunk_size)| GetWriteLeaseResponse { lease: Some(lease), chunk_size }))
    }

    #[instrument(skip_all, fields(path = %quote(&req.get_ref().path)))]
    async fn get_append_lease(&self, req: Request<GetAppendLeaseRequest>) -> Reply<GetAppendLeaseResponse> {
        let t = self.shared.metrics.rpc("GetAppendLease");
        let who = match self.user(&req, "GetAppendLease", true) {
            Ok(who) => who,
            Err(e) => return t.reply(Err(e)),
        };
        let q = req.into_inner();
        let r = self
            .detached(move |shared| async move {
                let path = normalize(&q.path)?;
                shared.lease_at(&path, &who, |c| append_target(c, q.after_index)).await
            })
            .await;
        t.reply(r.map(|(lease, chunk_size)| GetAppendLeaseResponse { lease: Some(lease), chunk_size }))
    }

    #[instrument(skip_all, fields(chunk = req.get_ref().handle))]
    async fn report_length(&self, req: Request<ReportLengthRequest>) -> Reply<ReportLengthResponse> {
        let t = self.shared.metrics.rpc("ReportLength");
        match self.user(&req, "ReportLength", true) {
            Ok(who) => t.reply(self.do_report_length(req.into_inner(), &who).await),
            Err(e) => t.reply(Err(e)),
        }
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
        t.reply(Ok(self.shared.master_status().await))
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
