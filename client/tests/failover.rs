//! The client against fake master groups: following `NotLeader` hints,
//! waiting out an election, shadow reads from a follower, and the error
//! when no master can be reached.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gfs_client::{Client, ClientConfig, Error};
use gfs_common::shutdown::CancellationToken;
use gfs_proto::master_service_server::{MasterService, MasterServiceServer};
use gfs_proto::*;
use tonic::{Request, Response, Status};

/// How a fake master answers.
#[derive(Debug, Clone, PartialEq)]
enum Role {
    /// Serves everything.
    Leader,
    /// Answers `NotLeader { leader }` to everything except shadow reads
    /// (`allow_stale`), which it serves like a follower does.
    Follower(Option<String>),
}

/// A fake master: records every call as `(method, allow_stale)`.
#[derive(Clone)]
struct Fake {
    name: &'static str,
    role: Arc<Mutex<Role>>,
    calls: Arc<Mutex<Vec<(&'static str, bool)>>>,
}

impl Fake {
    fn new(name: &'static str, role: Role) -> Fake {
        Fake { name, role: Arc::new(Mutex::new(role)), calls: Arc::default() }
    }

    fn set_role(&self, role: Role) {
        *self.role.lock().unwrap() = role;
    }

    fn calls(&self) -> Vec<(&'static str, bool)> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self, method: &str) -> usize {
        self.calls().iter().filter(|(m, _)| *m == method).count()
    }

    /// Records the call; `Err` when this master must not serve it.
    fn enter(&self, method: &'static str, allow_stale: bool) -> Result<(), Status> {
        self.calls.lock().unwrap().push((method, allow_stale));
        match &*self.role.lock().unwrap() {
            Role::Leader => Ok(()),
            Role::Follower(_) if allow_stale => Ok(()),
            Role::Follower(leader) => Err(Error::NotLeader { leader: leader.clone() }.into()),
        }
    }

    fn file(&self, path: &str) -> FileInfo {
        // The size tells which master answered.
        let size = if self.name == "a" { 1 } else { 2 };
        FileInfo {
            path: path.to_string(),
            r#type: FileType::File as i32,
            size,
            replication: 1,
            chunk_size: 1 << 20,
            ..Default::default()
        }
    }
}

fn unimpl<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("fake master"))
}

fn members() -> Vec<MasterInfo> {
    vec![
        MasterInfo {
            id: 1,
            address: "m1:1".into(),
            role: MasterRole::Leader as i32,
            voter: true,
            ..Default::default()
        },
        MasterInfo { id: 4, address: "m4:4".into(), role: MasterRole::Learner as i32, ..Default::default() },
    ]
}

#[tonic::async_trait]
impl MasterService for Fake {
    async fn mkdir(&self, _: Request<MkdirRequest>) -> Result<Response<MkdirResponse>, Status> {
        self.enter("mkdir", false)?;
        Ok(Response::new(MkdirResponse {}))
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
    async fn list(&self, r: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let r = r.into_inner();
        self.enter("list", r.allow_stale)?;
        Ok(Response::new(ListResponse {
            entries: vec![self.file(&format!("{}/x", r.path.trim_end_matches('/')))],
            has_more: false,
        }))
    }
    async fn stat(&self, r: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        let r = r.into_inner();
        self.enter("stat", r.allow_stale)?;
        Ok(Response::new(StatResponse { info: Some(self.file(&r.path)), chunks: vec![] }))
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
    async fn get_chunks(&self, r: Request<GetChunksRequest>) -> Result<Response<GetChunksResponse>, Status> {
        let r = r.into_inner();
        self.enter("get_chunks", r.allow_stale)?;
        // An empty file: reads need no chunkserver.
        let info = FileInfo { size: 0, ..self.file(&r.path) };
        Ok(Response::new(GetChunksResponse { info: Some(info), chunks: vec![] }))
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
    async fn add_master(&self, r: Request<AddMasterRequest>) -> Result<Response<AddMasterResponse>, Status> {
        self.enter("add_master", false)?;
        let r = r.into_inner();
        assert_eq!((r.id, r.address.as_str()), (4, "m4:4"));
        Ok(Response::new(AddMasterResponse { members: members() }))
    }
    async fn remove_master(&self, r: Request<RemoveMasterRequest>) -> Result<Response<RemoveMasterResponse>, Status> {
        self.enter("remove_master", false)?;
        assert_eq!(r.into_inner().id, 4);
        Ok(Response::new(RemoveMasterResponse { members: members()[..1].to_vec() }))
    }
    async fn report_corrupt(
        &self,
        _: Request<ReportCorruptRequest>,
    ) -> Result<Response<ReportCorruptResponse>, Status> {
        unimpl()
    }
    async fn register(&self, _: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        unimpl()
    }
    async fn heartbeat(&self, _: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        unimpl()
    }
    async fn leader_epoch(&self, _: Request<LeaderEpochRequest>) -> Result<Response<LeaderEpochResponse>, Status> {
        unimpl()
    }
    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        self.enter("cluster_status", false)?;
        Ok(Response::new(ClusterStatusResponse { masters: members(), leader_id: 1, ..Default::default() }))
    }
    async fn chunk_locations(
        &self,
        _: Request<ChunkLocationsRequest>,
    ) -> Result<Response<ChunkLocationsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `fake` on a free port until `token` is cancelled.
async fn serve(fake: Fake, token: CancellationToken) -> String {
    serve_until(fake, token).await.0
}

/// As [`serve`]; the task ends once the server stopped and closed its
/// connections.
async fn serve_until(fake: Fake, token: CancellationToken) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(MasterServiceServer::new(fake))
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
                token.cancelled().await
            })
            .await
            .unwrap();
    });
    (addr.to_string(), task)
}

/// Stops a master served by [`serve_until`]: afterwards connects are refused.
async fn kill(token: CancellationToken, task: tokio::task::JoinHandle<()>) {
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("fake master stops").unwrap();
}

/// A local address nothing listens on.
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `n` distinct unused addresses (all bound at once, so the OS cannot hand
/// out the same free port twice).
fn dead_addrs(n: usize) -> Vec<String> {
    let ls: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    ls.iter().map(|l| l.local_addr().unwrap().to_string()).collect()
}

fn client(spec: &str, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut cfg = ClientConfig::new(spec);
    cfg.rpc_timeout = Duration::from_secs(3);
    tweak(&mut cfg);
    Client::new(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_hint_is_followed_and_remembered() {
    let token = CancellationToken::new();
    let b = Fake::new("b", Role::Leader);
    let b_addr = serve(b.clone(), token.clone()).await;
    let a = Fake::new("a", Role::Follower(Some(b_addr.clone())));
    let a_addr = serve(a.clone(), token.clone()).await;

    let c = client(&format!("{a_addr},{b_addr}"), |_| {});
    c.mkdir("/d", false).await.unwrap();
    assert_eq!((a.count("mkdir"), b.count("mkdir")), (1, 1));
    assert_eq!(c.masters().leader().as_deref(), Some(b_addr.as_str()));
    // Later calls go straight to the leader.
    c.mkdir("/e", false).await.unwrap();
    let st = c.stat("/d").await.unwrap();
    assert_eq!(st.info.size, 2, "answered by b");
    assert_eq!((a.count("mkdir"), b.count("mkdir")), (1, 2));
    assert_eq!(a.count("stat"), 0);
    // Without --stale nothing asks for a shadow read.
    assert!(b.calls().iter().all(|(_, stale)| !stale), "{:?}", b.calls());
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hint_to_a_master_outside_the_spec_is_added() {
    let token = CancellationToken::new();
    let b = Fake::new("b", Role::Leader);
    let b_addr = serve(b.clone(), token.clone()).await;
    let a = Fake::new("a", Role::Follower(Some(b_addr.clone())));
    let a_addr = serve(a.clone(), token.clone()).await;

    // Only a is configured; b joined the group later.
    let c = client(&a_addr, |_| {});
    let st = c.cluster_status().await.unwrap();
    assert_eq!(st.leader_id, 1);
    assert_eq!((a.count("cluster_status"), b.count("cluster_status")), (1, 1));
    assert_eq!(c.masters().all(), vec![a_addr.clone(), b_addr.clone()]);
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_master_is_skipped() {
    let token = CancellationToken::new();
    let b = Fake::new("b", Role::Leader);
    let b_addr = serve(b.clone(), token.clone()).await;
    let dead = dead_addr();

    let c = client(&format!("{dead},{b_addr}"), |_| {});
    c.mkdir("/d", false).await.unwrap();
    assert_eq!(b.count("mkdir"), 1);
    assert_eq!(c.masters().current(), b_addr);
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_out_an_election() {
    let token = CancellationToken::new();
    let a = Fake::new("a", Role::Follower(None));
    let a_addr = serve(a.clone(), token.clone()).await;
    let b = Fake::new("b", Role::Follower(None));
    let b_addr = serve(b.clone(), token.clone()).await;

    // No leader for 1.5 s, then b wins and a learns it.
    let (a2, b2, b_addr2) = (a.clone(), b.clone(), b_addr.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        b2.set_role(Role::Leader);
        a2.set_role(Role::Follower(Some(b_addr2)));
    });
    let c = client(&format!("{a_addr},{b_addr}"), |cfg| cfg.failover_timeout = Duration::from_secs(10));
    let started = Instant::now();
    c.mkdir("/d", false).await.unwrap();
    let elapsed = started.elapsed();
    // It cannot succeed before b leads: the call waited the election out.
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    assert!(a.count("mkdir") >= 1 && b.count("mkdir") >= 2, "both asked: {:?} {:?}", a.calls(), b.calls());
    assert_eq!(c.masters().leader().as_deref(), Some(b_addr.as_str()));
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_longer_than_the_failover_timeout_fails_naming_the_masters() {
    let token = CancellationToken::new();
    let a = Fake::new("a", Role::Follower(None));
    let a_addr = serve(a.clone(), token.clone()).await;
    let dead = dead_addr();

    let c = client(&format!("{a_addr},{dead}"), |cfg| cfg.failover_timeout = Duration::from_secs(1));
    let started = Instant::now();
    let e = c.mkdir("/d", false).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "gave up before the failover timeout: {elapsed:?}");
    match &e {
        Error::Unavailable(m) => {
            assert!(m.starts_with("cannot reach a leader master (tried "), "{m}");
            assert!(m.contains(&a_addr) && m.contains(&dead), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(a.count("mkdir") >= 2, "retried: {:?}", a.calls());
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_masters_unreachable_error_names_every_one() {
    let dead = dead_addrs(3);
    // Never reached: no waiting for the failover timeout (an hour here; the
    // guard is only there so a regression fails instead of hanging).
    let c = client(&dead.join(","), |cfg| cfg.failover_timeout = Duration::from_secs(3600));
    let e = tokio::time::timeout(Duration::from_secs(600), c.stat("/x"))
        .await
        .expect("waited for the failover timeout although no master ever answered")
        .unwrap_err();
    match &e {
        Error::Unavailable(m) => {
            let want = format!("cannot reach a gfs master at {}, {}, {}: ", dead[0], dead[1], dead[2]);
            assert!(m.starts_with(&want), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_reads_are_served_by_a_follower() {
    let token = CancellationToken::new();
    let b = Fake::new("b", Role::Leader);
    let b_addr = serve(b.clone(), token.clone()).await;
    let a = Fake::new("a", Role::Follower(Some(b_addr.clone())));
    let a_addr = serve(a.clone(), token.clone()).await;

    let c = client(&format!("{a_addr},{b_addr}"), |cfg| cfg.allow_stale_reads = true);
    let st = c.stat("/f").await.unwrap();
    assert_eq!(st.info.size, 1, "answered by the follower a");
    let entries = c.list("/").await.unwrap();
    assert_eq!(entries[0].path, "/x");
    assert!(c.read_all("/f").await.unwrap().is_empty());
    assert_eq!(a.calls(), vec![("stat", true), ("list", true), ("get_chunks", true)]);
    assert!(b.calls().is_empty(), "{:?}", b.calls());
    // Mutations still need the leader.
    c.mkdir("/d", false).await.unwrap();
    assert_eq!((a.count("mkdir"), b.count("mkdir")), (1, 1));

    // Without shadow reads the same follower redirects reads too.
    let strict = client(&a_addr, |_| {});
    assert_eq!(strict.stat("/f").await.unwrap().info.size, 2);
    assert_eq!(a.calls().last(), Some(&("stat", false)));
    assert_eq!(b.calls().last(), Some(&("stat", false)));
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_go_to_the_leader() {
    let token = CancellationToken::new();
    let b = Fake::new("b", Role::Leader);
    let b_addr = serve(b.clone(), token.clone()).await;
    let a = Fake::new("a", Role::Follower(Some(b_addr.clone())));
    let a_addr = serve(a.clone(), token.clone()).await;

    let c = client(&a_addr, |_| {});
    let members = c.add_master(4, "m4:4").await.unwrap();
    assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 4]);
    let members = c.remove_master(4).await.unwrap();
    assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1]);
    assert_eq!((b.count("add_master"), b.count("remove_master")), (1, 1));
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_death_is_waited_out() {
    let token = CancellationToken::new();
    let a_token = CancellationToken::new();
    let a = Fake::new("a", Role::Leader);
    let (a_addr, a_task) = serve_until(a.clone(), a_token.clone()).await;
    let b = Fake::new("b", Role::Follower(Some(a_addr.clone())));
    let b_addr = serve(b.clone(), token.clone()).await;

    let c = client(&format!("{a_addr},{b_addr}"), |cfg| cfg.failover_timeout = Duration::from_secs(10));
    c.mkdir("/d", false).await.unwrap();
    assert_eq!(a.count("mkdir"), 1);

    // a dies; b runs an election for 1 s and wins.
    kill(a_token, a_task).await;
    b.set_role(Role::Follower(None));
    let b2 = b.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        b2.set_role(Role::Leader);
    });
    let started = Instant::now();
    c.mkdir("/e", false).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "succeeded before b led: {elapsed:?}");
    assert_eq!(a.count("mkdir"), 1);
    assert!(b.count("mkdir") >= 2, "{:?}", b.calls());
    assert_eq!(c.masters().leader().as_deref(), Some(b_addr.as_str()));
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_gone_after_contact_are_retried_for_the_failover_timeout() {
    let a_token = CancellationToken::new();
    let a = Fake::new("a", Role::Leader);
    let (a_addr, a_task) = serve_until(a.clone(), a_token.clone()).await;
    let dead = dead_addr();

    let c = client(&format!("{a_addr},{dead}"), |cfg| cfg.failover_timeout = Duration::from_millis(1500));
    c.mkdir("/d", false).await.unwrap();
    kill(a_token, a_task).await;
    let started = Instant::now();
    let e = c.stat("/d").await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1500), "gave up before the failover timeout: {elapsed:?}");
    match &e {
        Error::Unavailable(m) => {
            let want = format!("cannot reach a leader master (tried {a_addr}, {dead}): ");
            assert!(m.starts_with(&want), "{m}");
        }
        other => panic!("{other:?}"),
    }
}
