//! Helpers shared by the master's gRPC tests: a master on a temporary
//! folder, a fake chunkserver that accepts every grant, and request
//! shorthands.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, ErrorKind};
use gfs_master::{Config, MasterHandle};
use gfs_proto::chunk_service_server::{ChunkService, ChunkServiceServer};
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::*;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// A raw master client whose requests claim a user (the test masters are
/// insecure, so the claim is who the caller is).
pub type Client = MasterServiceClient<InterceptedService<Channel, Claim>>;

/// The user and groups a [`Client`] claims.
#[derive(Clone)]
pub struct Claim {
    user: String,
    groups: Vec<String>,
}

impl Interceptor for Claim {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        gfs_common::auth::claim(&mut req, &self.user, &self.groups);
        Ok(req)
    }
}

/// A client of the master at `addr` as `user` in `groups`.
pub async fn connect_as(addr: std::net::SocketAddr, user: &str, groups: &[&str]) -> Client {
    let ch = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let claim = Claim { user: user.into(), groups: groups.iter().map(|g| g.to_string()).collect() };
    MasterServiceClient::with_interceptor(ch, claim)
}

pub fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        chunk_size: 1 << 20,
        dead_after_ms: 60_000,
        checkpoint_every: 7,
        leader_warmup_ms: 300,
        ..Default::default()
    }
}

/// Starts a master; the client acts as the superuser `gfs` (tests of
/// other features need no permissions in their way).
pub async fn start(cfg: Config) -> (MasterHandle, CancellationToken, Client) {
    let token = CancellationToken::new();
    let h = gfs_master::start(cfg, token.clone()).await.unwrap();
    let c = connect_as(h.addr, "gfs", &[]).await;
    (h, token, c)
}

pub async fn stop(h: MasterHandle, token: CancellationToken) {
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), h.wait()).await.unwrap().unwrap();
}

pub fn kind<T: std::fmt::Debug>(r: Result<T, Status>) -> ErrorKind {
    Error::from(r.unwrap_err()).kind()
}

pub async fn mkdir(c: &mut Client, p: &str, parents: bool) -> Result<(), Status> {
    c.mkdir(MkdirRequest { path: p.into(), parents, call: None, umask: None }).await.map(|_| ())
}

/// Creates a file; most tests run without chunkservers, so replication is
/// not checked against live ones.
pub async fn create(c: &mut Client, p: &str) -> Result<FileInfo, Status> {
    Ok(c.create(CreateRequest {
        path: p.into(),
        replication: 0,
        exclusive: true,
        call: None,
        allow_under_replicated: true,
        umask: None,
    })
    .await?
    .into_inner()
    .info
    .unwrap())
}

/// Recursive listing: (path, type, replication, chunk_count), sorted.
pub async fn tree(c: &mut Client) -> Vec<(String, i32, u32, u64)> {
    let mut out = vec![];
    let mut todo = vec!["/".to_string()];
    while let Some(d) = todo.pop() {
        let entries = c
            .list(ListRequest { path: d, include_hidden: false, allow_stale: false, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .entries;
        for e in entries {
            if e.r#type == FileType::Directory as i32 {
                todo.push(e.path.clone());
            }
            out.push((e.path, e.r#type, e.replication, e.chunk_count));
        }
    }
    out.sort();
    out
}

/// A chunkserver that accepts every GrantLease (after `grant_delay_ms`;
/// fails it with `grant_error` when set) and records it, and records every
/// CloneChunk and fails it with `clone_error` (unimplemented if unset),
/// and answers VerifyChunk with `corrupt`.
#[derive(Clone, Default)]
pub struct FakeChunkServer {
    pub grants: Arc<Mutex<Vec<GrantLeaseRequest>>>,
    pub grant_error: Arc<Mutex<Option<Error>>>,
    pub grant_delay_ms: Arc<std::sync::atomic::AtomicU64>,
    pub clones: Arc<Mutex<Vec<CloneChunkRequest>>>,
    pub clone_error: Arc<Mutex<Option<Error>>>,
    pub verifies: Arc<std::sync::atomic::AtomicU64>,
    pub corrupt: Arc<std::sync::atomic::AtomicBool>,
}

#[tonic::async_trait]
impl ChunkService for FakeChunkServer {
    async fn push_data(&self, _: Request<Streaming<PushDataFrame>>) -> Result<Response<PushDataResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn write(&self, _: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn append(&self, _: Request<AppendRequest>) -> Result<Response<AppendResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn apply_mutation(
        &self,
        _: Request<ApplyMutationRequest>,
    ) -> Result<Response<ApplyMutationResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn read(&self, _: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn grant_lease(&self, req: Request<GrantLeaseRequest>) -> Result<Response<GrantLeaseResponse>, Status> {
        let delay = self.grant_delay_ms.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if let Some(e) = self.grant_error.lock().unwrap().clone() {
            return Err(e.into());
        }
        self.grants.lock().unwrap().push(req.into_inner());
        Ok(Response::new(GrantLeaseResponse { chunk_length: 0, report_seq: 0 }))
    }
    async fn delete_chunks(&self, _: Request<DeleteChunksRequest>) -> Result<Response<DeleteChunksResponse>, Status> {
        Ok(Response::new(DeleteChunksResponse {}))
    }
    async fn clone_chunk(&self, req: Request<CloneChunkRequest>) -> Result<Response<CloneChunkResponse>, Status> {
        self.clones.lock().unwrap().push(req.into_inner());
        match self.clone_error.lock().unwrap().clone() {
            Some(e) => Err(e.into()),
            None => Err(Status::unimplemented("fake")),
        }
    }
    async fn verify_chunk(&self, _: Request<VerifyChunkRequest>) -> Result<Response<VerifyChunkResponse>, Status> {
        use std::sync::atomic::Ordering::SeqCst;
        self.verifies.fetch_add(1, SeqCst);
        let ok = !self.corrupt.load(SeqCst);
        let detail = if ok { String::new() } else { "block 0: crc32c mismatch".into() };
        Ok(Response::new(VerifyChunkResponse { ok, corrupt_block: 0, length: 0, detail }))
    }
}

pub async fn fake_server() -> (FakeChunkServer, String) {
    let fake = FakeChunkServer::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let svc = ChunkServiceServer::new(fake.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (fake, addr)
}

/// Sessions by (test thread, server id): tests of one binary run at the
/// same time, each with its own master, and reuse the same ids.
type Sessions = Mutex<std::collections::HashMap<(std::thread::ThreadId, String), String>>;

fn sessions() -> &'static Sessions {
    static S: std::sync::OnceLock<Sessions> = std::sync::OnceLock::new();
    S.get_or_init(Default::default)
}

/// The session secret this test's last `register` of `id` got (empty if none).
pub fn session(id: &str) -> String {
    let key = (std::thread::current().id(), id.to_string());
    sessions().lock().unwrap().get(&key).cloned().unwrap_or_default()
}

pub async fn register(c: &mut Client, id: &str, addr: &str, chunks: Vec<ChunkReport>) -> RegisterResponse {
    let server = ServerInfo { id: id.into(), address: addr.into(), zone: format!("zone-{id}") };
    let req = RegisterRequest {
        server: Some(server),
        capacity_bytes: 1 << 40,
        used_bytes: 0,
        chunks,
        report_seq: 0,
        ..Default::default()
    };
    let resp = c.register(req).await.unwrap().into_inner();
    sessions().lock().unwrap().insert((std::thread::current().id(), id.to_string()), resp.session.clone());
    resp
}

pub async fn write_lease(c: &mut Client, path: &str, index: u64) -> Result<LeaseInfo, Status> {
    let req = GetWriteLeaseRequest { path: path.into(), index, create_missing: false };
    Ok(c.get_write_lease(req).await?.into_inner().lease.unwrap())
}
