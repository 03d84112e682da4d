//! A fake master and helpers to run chunkservers in tests.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gfs_chunkserver::{ChunkserverHandle, Config};
use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, MAX_MESSAGE_SIZE, PUSH_FRAME_SIZE};
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::master_service_server::{MasterService, MasterServiceServer};
use gfs_proto::*;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// What the fake master saw.
#[derive(Default)]
pub struct Seen {
    pub registers: Vec<RegisterRequest>,
    pub heartbeats: Vec<HeartbeatRequest>,
    pub corrupt: Vec<ReportCorruptRequest>,
    /// Chunkserver RPCs answered with `NotLeader`.
    pub redirected: Vec<&'static str>,
    /// LeaderEpoch calls answered.
    pub leader_epochs: usize,
}

#[derive(Clone, Default)]
pub struct FakeMaster {
    pub seen: Arc<Mutex<Seen>>,
    pub epoch: u64,
    /// When set, Register, Heartbeat and ReportCorrupt answer
    /// `NotLeader { leader }` with this (a follower master).
    pub not_leader: Arc<Mutex<Option<Option<String>>>>,
    /// Answer `reregister` to heartbeats of servers that did not register
    /// here (as a new leader master does).
    pub known_only: bool,
    /// The epoch LeaderEpoch answers with, when nonzero (else `epoch`): a
    /// new leader whose heartbeat replies have not reached a server yet.
    pub vouch: Arc<AtomicU64>,
}

impl FakeMaster {
    /// Makes this master a follower pointing at `leader`, or the leader (None).
    pub fn set_not_leader(&self, leader: Option<Option<String>>) {
        *self.not_leader.lock().unwrap() = leader;
    }

    fn redirect(&self, rpc: &'static str) -> Result<(), Status> {
        match self.not_leader.lock().unwrap().clone() {
            Some(leader) => {
                self.seen.lock().unwrap().redirected.push(rpc);
                Err(Error::NotLeader { leader }.into())
            }
            None => Ok(()),
        }
    }
}

fn unimpl<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("fake master"))
}

#[tonic::async_trait]
impl MasterService for FakeMaster {
    async fn mkdir(&self, _: Request<MkdirRequest>) -> Result<Response<MkdirResponse>, Status> {
        unimpl()
    }
    async fn create(&self, _: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        unimpl()
    }
    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        unimpl()
    }
    async fn rename(&self, _: Request<RenameRequest>) -> Result<Response<RenameResponse>, Status> {
        unimpl()
    }
    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        unimpl()
    }
    async fn stat(&self, _: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        unimpl()
    }
    async fn set_permission(
        &self,
        _: Request<SetPermissionRequest>,
    ) -> Result<Response<SetPermissionResponse>, Status> {
        unimpl()
    }
    async fn set_owner(&self, _: Request<SetOwnerRequest>) -> Result<Response<SetOwnerResponse>, Status> {
        unimpl()
    }
    async fn set_replication(
        &self,
        _: Request<SetReplicationRequest>,
    ) -> Result<Response<SetReplicationResponse>, Status> {
        unimpl()
    }
    async fn get_chunks(&self, _: Request<GetChunksRequest>) -> Result<Response<GetChunksResponse>, Status> {
        unimpl()
    }
    async fn get_write_lease(
        &self,
        _: Request<GetWriteLeaseRequest>,
    ) -> Result<Response<GetWriteLeaseResponse>, Status> {
        unimpl()
    }
    async fn get_append_lease(
        &self,
        _: Request<GetAppendLeaseRequest>,
    ) -> Result<Response<GetAppendLeaseResponse>, Status> {
        unimpl()
    }
    async fn report_length(&self, _: Request<ReportLengthRequest>) -> Result<Response<ReportLengthResponse>, Status> {
        unimpl()
    }
    async fn decommission(&self, _: Request<DecommissionRequest>) -> Result<Response<DecommissionResponse>, Status> {
        unimpl()
    }
    async fn recommission(&self, _: Request<RecommissionRequest>) -> Result<Response<RecommissionResponse>, Status> {
        unimpl()
    }
    async fn mark_lost(&self, _: Request<MarkLostRequest>) -> Result<Response<MarkLostResponse>, Status> {
        unimpl()
    }
    async fn repair_events(&self, _: Request<RepairEventsRequest>) -> Result<Response<RepairEventsResponse>, Status> {
        unimpl()
    }
    async fn master_status(&self, _: Request<MasterStatusRequest>) -> Result<Response<MasterStatusResponse>, Status> {
        unimpl()
    }
    async fn add_master(&self, _: Request<AddMasterRequest>) -> Result<Response<AddMasterResponse>, Status> {
        unimpl()
    }
    async fn remove_master(&self, _: Request<RemoveMasterRequest>) -> Result<Response<RemoveMasterResponse>, Status> {
        unimpl()
    }
    async fn chunk_locations(
        &self,
        _: Request<ChunkLocationsRequest>,
    ) -> Result<Response<ChunkLocationsResponse>, Status> {
        unimpl()
    }
    async fn report_corrupt(
        &self,
        r: Request<ReportCorruptRequest>,
    ) -> Result<Response<ReportCorruptResponse>, Status> {
        self.redirect("report_corrupt")?;
        self.seen.lock().unwrap().corrupt.push(r.into_inner());
        Ok(Response::new(ReportCorruptResponse {}))
    }
    async fn register(&self, r: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        self.redirect("register")?;
        self.seen.lock().unwrap().registers.push(r.into_inner());
        Ok(Response::new(RegisterResponse {
            heartbeat_ms: 100,
            epoch: self.epoch,
            token_keys: vec![test_key().clone()],
            ..Default::default()
        }))
    }
    async fn heartbeat(&self, r: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        self.redirect("heartbeat")?;
        let r = r.into_inner();
        let mut seen = self.seen.lock().unwrap();
        let reregister =
            self.known_only && !seen.registers.iter().any(|g| g.server.as_ref().is_some_and(|s| s.id == r.server_id));
        seen.heartbeats.push(r);
        Ok(Response::new(HeartbeatResponse {
            epoch: self.epoch,
            reregister,
            token_keys: vec![test_key().clone()],
            ..Default::default()
        }))
    }
    async fn leader_epoch(&self, _: Request<LeaderEpochRequest>) -> Result<Response<LeaderEpochResponse>, Status> {
        self.redirect("leader_epoch")?;
        self.seen.lock().unwrap().leader_epochs += 1;
        let vouch = self.vouch.load(Ordering::Relaxed);
        Ok(Response::new(LeaderEpochResponse { epoch: if vouch == 0 { self.epoch } else { vouch } }))
    }
    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        unimpl()
    }
}

/// The token key the fake master hands its chunkservers.
pub fn test_key() -> &'static TokenKey {
    static KEY: std::sync::OnceLock<TokenKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| gfs_common::token::new_key(1, 0, i64::MAX / 2).unwrap())
}

/// A token for `handle` at `version` with `rights`, as the master issues.
pub fn token(handle: u64, version: u64, rights: u32) -> Option<ChunkToken> {
    Some(gfs_common::token::sign(test_key(), handle, version, rights, gfs_common::now_ms() + 600_000, "test"))
}

/// Read and write rights.
pub const RW: u32 = gfs_common::token::READ | gfs_common::token::WRITE;

/// Starts the fake master on a free port; returns its address.
pub async fn start_master(master: FakeMaster, token: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(MasterServiceServer::new(master))
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
                token.cancelled().await
            })
            .await
            .unwrap();
    });
    addr.to_string()
}

/// A test cluster: fake master + N chunkservers.
pub struct TestCluster {
    pub master: FakeMaster,
    pub master_addr: String,
    pub servers: Vec<ChunkserverHandle>,
    pub dirs: Vec<tempfile::TempDir>,
    pub tokens: Vec<CancellationToken>,
    pub master_token: CancellationToken,
}

pub fn config(master: &str, dir: &std::path::Path) -> Config {
    Config {
        master: master.to_string(),
        data_dir: dir.to_path_buf(),
        heartbeat_ms: 100,
        sync_writes: false,
        rpc_timeout_ms: 3000,
        ..Default::default()
    }
}

impl TestCluster {
    pub async fn start(n: usize, tweak: impl Fn(usize, &mut Config)) -> TestCluster {
        let master = FakeMaster { epoch: 1, ..Default::default() };
        let master_token = CancellationToken::new();
        let master_addr = start_master(master.clone(), master_token.clone()).await;
        let mut c = TestCluster {
            master,
            master_addr,
            servers: Vec::new(),
            dirs: Vec::new(),
            tokens: Vec::new(),
            master_token,
        };
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = config(&c.master_addr, dir.path());
            tweak(i, &mut cfg);
            let token = CancellationToken::new();
            c.servers.push(gfs_chunkserver::start(cfg, token.clone()).await.unwrap());
            c.dirs.push(dir);
            c.tokens.push(token);
        }
        // Registered: the servers hold the token key.
        let seen = c.master.seen.clone();
        assert!(eventually(|| seen.lock().unwrap().registers.len() >= n).await, "chunkservers did not register");
        c
    }

    pub fn addr(&self, i: usize) -> String {
        self.servers[i].addr.to_string()
    }

    pub async fn client(&self, i: usize) -> ChunkServiceClient<Channel> {
        client(&self.addr(i)).await
    }
}

pub async fn client(addr: &str) -> ChunkServiceClient<Channel> {
    ChunkServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// Pushes `data` to `c` under `data_id` with the given chain, in 1 MiB frames.
pub async fn push(
    c: &mut ChunkServiceClient<Channel>,
    data_id: u64,
    chain: Vec<String>,
    data: &Bytes,
) -> Result<u64, Error> {
    let mut frames = Vec::new();
    let mut off = 0;
    loop {
        let end = (off + PUSH_FRAME_SIZE).min(data.len());
        let mut f = PushDataFrame { data: data.slice(off..end), ..Default::default() };
        if off == 0 {
            f.data_id = data_id;
            f.chain = chain.clone();
            f.total_len = data.len() as u64;
        }
        frames.push(f);
        off = end;
        if off >= data.len() {
            break;
        }
    }
    let r = c.push_data(tokio_stream::iter(frames)).await.map_err(Error::from)?;
    Ok(r.into_inner().received)
}

/// Grants version `version` on every server; `primary` gets a lease.
pub async fn grant_all(c: &TestCluster, handle: u64, version: u64, primary: usize, epoch: u64) {
    for i in 0..c.servers.len() {
        let lease_ms = if i == primary { 60_000 } else { 0 };
        let req = GrantLeaseRequest { handle, version, lease_ms, create: true, epoch };
        c.client(i).await.grant_lease(req).await.unwrap();
    }
}

pub async fn read(
    c: &mut ChunkServiceClient<Channel>,
    handle: u64,
    version: u64,
    offset: u64,
    length: u64,
) -> Result<Bytes, Error> {
    let req = ReadRequest { handle, version, offset, length, token: token(handle, version, gfs_common::token::READ) };
    c.read(req).await.map(|r| r.into_inner().data).map_err(Error::from)
}

pub fn random_bytes(n: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Bytes::from(v)
}

/// Polls `f` until it returns true or 5 s pass.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A tmpfs mounted for one test: a real file system that fills up (ENOSPC),
/// unmounted when dropped. Needs root (CAP_SYS_ADMIN); tests run as root,
/// also in CI. Without it the test panics saying so instead of passing.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on a new temporary folder.
    pub fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs { dir },
            Ok(o) => panic!(
                "cannot mount a {bytes}-byte tmpfs on {} ({}): this test needs root (CAP_SYS_ADMIN) to get a \
                 real full disk and proves nothing without one",
                dir.path().display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run mount ({e}): this test needs a tmpfs to get a real full disk"),
        }
    }

    /// The mount point.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills the file system with a plain file `name` until it is full;
    /// returns that file's path.
    pub fn fill(&self, name: &str) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join(name);
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        for block in [64 * 1024, 4096] {
            while f.write_all(&vec![0x5a; block]).and_then(|_| f.flush()).is_ok() {}
        }
        // A failed write may have stored part of its block; keep what is
        // on disk as the file's length.
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = std::process::Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(self.dir.path()).status().is_ok_and(|s| s.success())
        };
        // Busy (a file still open): detach it now, freed when closed.
        if !umount(false) && !umount(true) {
            eprintln!("cannot unmount the test tmpfs at {}", self.dir.path().display());
        }
    }
}
