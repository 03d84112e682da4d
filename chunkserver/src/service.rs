//! The `ChunkService` gRPC implementation.
//!
//! The state shared by every handler lives in [`Shared`]; the data pipeline
//! is in `push.rs`, mutation ordering and master commands in `mutation.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gfs_common::auth::Role;
use gfs_common::token::READ;
use gfs_common::{Error, MAX_IO_SIZE, Result};
use gfs_proto::chunk_service_server::ChunkService;
use gfs_proto::*;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::lease::{Epoch, Leases};
use crate::pushbuf::PushBuffer;
use crate::rpc::Rpc;
use crate::store::Store;

/// State shared by the RPC handlers, the heartbeat loop and shutdown.
pub(crate) struct Shared {
    pub store: Store,
    pub pushbuf: PushBuffer,
    pub leases: Leases,
    pub epoch: Epoch,
    /// Confirms epochs ahead of `epoch` with the leader, one at a time.
    pub fence: crate::fence::Confirmer,
    pub rpc: Rpc,
    pub push_timeout: Duration,
    /// Handles of corrupt replicas to report to the master.
    pub corrupt_tx: mpsc::Sender<u64>,
    /// Requests in flight (the heartbeat's `load`).
    pub load: AtomicU32,
    /// Bounds concurrent clones on this server.
    pub clones: tokio::sync::Semaphore,
    /// Chunks with a clone running here, or its cleanup (one at a time per
    /// chunk: a cleanup must never delete a later clone's copy).
    pub cloning: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// This server's metric series.
    pub metrics: crate::metrics::ServerMetrics,
    /// True while registered with the master (`/readyz`).
    pub registered: std::sync::atomic::AtomicBool,
    /// The master's token keys: every client read and mutation needs a
    /// token signed with one of them.
    pub tokens: gfs_common::token::Verifier,
    /// Chunks being verified (`VerifyChunk`), at most a few at once.
    pub verifying: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// Free space was below the reserve at the last heartbeat.
    pub full: std::sync::atomic::AtomicBool,
    /// The address this server advertises; named in its `NoSpace` errors.
    pub address: String,
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    fn new(c: &'a AtomicU32) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Self(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Records whether the master knows this server.
    pub(crate) fn set_registered(&self, yes: bool) {
        self.registered.store(yes, Ordering::Relaxed);
        self.metrics.registered.set(yes as i64);
    }

    /// Checks that `token` allows `right` on `handle` at `version`.
    pub(crate) fn check_token(&self, token: Option<&ChunkToken>, handle: u64, version: u64, right: u32) -> Result<()> {
        self.tokens.check(token, handle, version, right, gfs_common::now_ms())
    }

    /// Reads from a replica; a checksum mismatch is also queued for the
    /// master.
    pub(crate) async fn read(&self, req: ReadRequest) -> Result<ReadResponse> {
        self.check_token(req.token.as_ref(), req.handle, req.version, READ)?;
        if req.length > MAX_IO_SIZE {
            return Err(Error::TooLarge { what: "read".into(), size: req.length, limit: MAX_IO_SIZE });
        }
        match self.store.read(req.handle, req.version, req.offset, req.length).await {
            Ok((data, chunk_length)) => {
                self.metrics.read_bytes.inc_by(data.len() as u64);
                Ok(ReadResponse { data, chunk_length })
            }
            Err(e @ Error::Corrupt { .. }) => {
                tracing::error!(handle = req.handle, error = %e, "corrupt chunk replica");
                if self.corrupt_tx.try_send(req.handle).is_err() {
                    tracing::warn!(handle = req.handle, "corruption report queue full, report dropped");
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

// Who may call what (mTLS roles; see docs/SECURITY.md). An admin may also
// do what a client may; an `--insecure` server lets everyone call everything.
const CLIENT: &[Role] = &[Role::Client];
const CHUNKSERVER: &[Role] = &[Role::Chunkserver];
const MASTER: &[Role] = &[Role::Master];
/// Clients push to the first replica, which forwards along the chain.
const PUSHERS: &[Role] = &[Role::Client, Role::Chunkserver];
/// Clients read; a chunkserver cloning a chunk reads from its source.
const READERS: &[Role] = &[Role::Client, Role::Chunkserver];

/// The gRPC service; cheap to clone.
#[derive(Clone)]
pub struct ChunkServer {
    pub(crate) shared: Arc<Shared>,
}

impl ChunkServer {
    /// Runs a state-changing handler as a task of its own
    /// ([`gfs_common::net::detached`]): a mutation cut off when its caller
    /// goes away would leave the replica inconsistent, and a later mutation
    /// could reuse a serial that the secondaries already applied.
    ///
    /// A `NoSpace` from this server's disk is given its address, so the
    /// client learns which server is full.
    async fn detached<T, Fut>(&self, f: impl FnOnce(Arc<Shared>) -> Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        gfs_common::net::detached(f(self.shared.clone())).await.map_err(|e| e.on_server(&self.shared.address))
    }
}

#[tonic::async_trait]
impl ChunkService for ChunkServer {
    async fn push_data(
        &self,
        request: Request<Streaming<PushDataFrame>>,
    ) -> Result<Response<PushDataResponse>, Status> {
        let t = self.shared.metrics.rpc("PushData");
        if let Err(e) = gfs_common::auth::require(&request, "PushData", PUSHERS) {
            return t.reply(Err(e));
        }
        let _f = InFlight::new(&self.shared.load);
        t.reply(self.shared.push_data(request.into_inner()).await)
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let t = self.shared.metrics.rpc("Write");
        if let Err(e) = gfs_common::auth::require(&request, "Write", CLIENT) {
            return t.reply(Err(e));
        }
        let _f = InFlight::new(&self.shared.load);
        let req = request.into_inner();
        t.reply(self.detached(|s| async move { s.write(req).await }).await)
    }

    async fn append(&self, request: Request<AppendRequest>) -> Result<Response<AppendResponse>, Status> {
        let t = self.shared.metrics.rpc("Append");
        if let Err(e) = gfs_common::auth::require(&request, "Append", CLIENT) {
            return t.reply(Err(e));
        }
        let _f = InFlight::new(&self.shared.load);
        let req = request.into_inner();
        t.reply(self.detached(|s| async move { s.append(req).await }).await)
    }

    async fn apply_mutation(
        &self,
        request: Request<ApplyMutationRequest>,
    ) -> Result<Response<ApplyMutationResponse>, Status> {
        let t = self.shared.metrics.rpc("ApplyMutation");
        if let Err(e) = gfs_common::auth::require(&request, "ApplyMutation", CHUNKSERVER) {
            return t.reply(Err(e));
        }
        let _f = InFlight::new(&self.shared.load);
        let req = request.into_inner();
        t.reply(self.detached(|s| async move { s.apply_mutation(req).await }).await)
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let t = self.shared.metrics.rpc("Read");
        if let Err(e) = gfs_common::auth::require(&request, "Read", READERS) {
            return t.reply(Err(e));
        }
        let _f = InFlight::new(&self.shared.load);
        t.reply(self.shared.read(request.into_inner()).await)
    }

    async fn grant_lease(&self, request: Request<GrantLeaseRequest>) -> Result<Response<GrantLeaseResponse>, Status> {
        let t = self.shared.metrics.rpc("GrantLease");
        if let Err(e) = gfs_common::auth::require(&request, "GrantLease", MASTER) {
            return t.reply(Err(e));
        }
        let _f = InFlight::new(&self.shared.load);
        let req = request.into_inner();
        t.reply(self.detached(|s| async move { s.grant_lease(req).await }).await)
    }

    async fn clone_chunk(&self, request: Request<CloneChunkRequest>) -> Result<Response<CloneChunkResponse>, Status> {
        let t = self.shared.metrics.rpc("CloneChunk");
        if let Err(e) = gfs_common::auth::require(&request, "CloneChunk", MASTER) {
            return t.reply(Err(e));
        }
        let _f = InFlight::new(&self.shared.load);
        let res = Shared::clone_chunk(&self.shared, request.into_inner()).await;
        t.reply(res.map_err(|e| e.on_server(&self.shared.address)))
    }

    async fn verify_chunk(
        &self,
        request: Request<VerifyChunkRequest>,
    ) -> Result<Response<VerifyChunkResponse>, Status> {
        let t = self.shared.metrics.rpc("VerifyChunk");
        if let Err(e) = gfs_common::auth::require(&request, "VerifyChunk", MASTER) {
            return t.reply(Err(e));
        }
        let _f = InFlight::new(&self.shared.load);
        t.reply(self.shared.verify_chunk(request.into_inner()).await)
    }

    async fn delete_chunks(
        &self,
        request: Request<DeleteChunksRequest>,
    ) -> Result<Response<DeleteChunksResponse>, Status> {
        let t = self.shared.metrics.rpc("DeleteChunks");
        if let Err(e) = gfs_common::auth::require(&request, "DeleteChunks", MASTER) {
            return t.reply(Err(e));
        }
        let _f = InFlight::new(&self.shared.load);
        let req = request.into_inner();
        let res = match self.shared.admit_epoch(req.epoch).await {
            Ok(()) => {
                self.shared.delete_chunks(&req.handles).await;
                Ok(DeleteChunksResponse {})
            }
            Err(e) => Err(e),
        };
        t.reply(res)
    }
}
