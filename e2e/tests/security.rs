//! The security suite: real `gfs-master` and `gfs-chunkserver` processes
//! with mTLS, attacked with raw gRPC calls (not the client library). Every
//! forged call is refused with the right error, and every byte written
//! before the attack reads back intact afterwards on all its replicas.

use std::process::Command;
use std::time::Duration;

use gfs_client::Client;
use gfs_common::Error;
use gfs_common::auth::Role;
use gfs_common::certs::{Authority, CA_VALIDITY, CertSpec};
use gfs_common::tls::{Security, Tls};
use gfs_common::token::{READ, WRITE};
use gfs_e2e::{Proc, bin, free_addr};
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::raft_service_client::RaftServiceClient;
use gfs_proto::*;
use rand::{RngCore, SeedableRng, rngs::StdRng};
use tonic::transport::Channel;

/// One master and three chunkservers, each with its role's certificate.
struct Cluster {
    _dir: tempfile::TempDir,
    master: String,
    _procs: Vec<Proc>,
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_with(&[]).await
    }

    /// As `start`, with extra master flags.
    async fn start_with(master_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let master = free_addr().to_string();
        let mut procs = vec![Proc::spawn(
            Command::new(bin("gfs-master"))
                .args(["--listen", &master, "--chunk-size", "1MiB", "--heartbeat-ms", "200"])
                .args(master_args)
                .arg("--data-dir")
                .arg(dir.path().join("master")),
            &dir.path().join("master.log"),
        )];
        for i in 0..3 {
            procs.push(Proc::spawn(
                Command::new(bin("gfs-chunkserver"))
                    .args(["--master", &master, "--listen", "127.0.0.1:0", "--heartbeat-ms", "200"])
                    .args(["--zone", &format!("z{i}"), "--data-dir"])
                    .arg(dir.path().join(format!("cs{i}"))),
                &dir.path().join(format!("cs{i}.log")),
            ));
        }
        let c = Cluster { _dir: dir, master, _procs: procs };
        let client = c.admin();
        gfs_e2e::wait_for("3 chunkservers registered", 60, || async {
            client.cluster_status().await.is_ok_and(|s| s.servers.iter().filter(|x| x.alive).count() == 3)
        })
        .await;
        c
    }

    fn admin(&self) -> Client {
        Client::new(gfs_e2e::client_config(self.master.clone())).unwrap()
    }
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Files written before the attacks: path -> content.
async fn write_files(c: &Client) -> Vec<(String, Vec<u8>)> {
    c.mkdir("/kept", true).await.unwrap();
    let mut files = Vec::new();
    for (i, len) in [(0u64, 2_500_000usize), (1, 700_000), (2, 1)].into_iter() {
        let path = format!("/kept/f{i}");
        let bytes = data(i, len);
        c.create(&path, None).await.unwrap();
        c.write_at(&path, 0, &bytes).await.unwrap();
        files.push((path, bytes));
    }
    files
}

/// Every file reads back byte-equal, from each of its three replicas too.
async fn assert_intact(cluster: &Cluster, files: &[(String, Vec<u8>)]) {
    let c = cluster.admin();
    for (path, want) in files {
        assert!(c.read_all(path).await.unwrap() == *want, "{path} changed");
        let st = c.stat(path).await.unwrap();
        for ch in &st.chunks {
            assert_eq!(ch.replicas.len(), 3, "{path} chunk {} replicas", ch.index);
            // A fresh read token from the master, as any reader gets.
            let mut m = master(&cluster.master, &role(Role::Client));
            let req = GetChunksRequest { path: path.clone(), start_index: ch.index, count: 1, allow_stale: false };
            let loc = m.get_chunks(req).await.unwrap().into_inner().chunks.remove(0);
            for r in &ch.replicas {
                let got = read(&r.address, &role(Role::Client), loc.handle, loc.version, loc.token.clone()).await;
                let start = (ch.index * (1 << 20)) as usize;
                let end = (start + (1 << 20)).min(want.len());
                assert!(got.unwrap() == want[start..end], "{path} chunk {} differs on {}", ch.index, r.address);
            }
        }
    }
}

fn role(r: Role) -> Security {
    gfs_e2e::security(r)
}

/// One channel per address and identity, reused (like a real client): a
/// new connection per call would fill the per-peer connection limit.
fn channel(addr: &str, security: &Security) -> Channel {
    type Channels = std::sync::Mutex<std::collections::HashMap<(String, String), Channel>>;
    static CHANNELS: std::sync::OnceLock<Channels> = std::sync::OnceLock::new();
    let key = (addr.to_string(), format!("{security:?}"));
    let mut map = CHANNELS.get_or_init(Default::default).lock().unwrap();
    map.entry(key)
        .or_insert_with(|| {
            gfs_common::net::ChannelPool::new(1, Duration::from_secs(2), security, &[]).get(addr).unwrap()
        })
        .clone()
}

fn master(addr: &str, security: &Security) -> MasterServiceClient<Channel> {
    MasterServiceClient::new(channel(addr, security))
}

fn chunk(addr: &str, security: &Security) -> ChunkServiceClient<Channel> {
    ChunkServiceClient::new(channel(addr, security)).max_decoding_message_size(gfs_common::MAX_MESSAGE_SIZE)
}

async fn read(
    addr: &str,
    security: &Security,
    handle: u64,
    version: u64,
    token: Option<ChunkToken>,
) -> Result<Vec<u8>, Error> {
    let req = ReadRequest { handle, version, offset: 0, length: 1 << 20, token };
    let r = chunk(addr, security).read(req).await.map_err(Error::from)?;
    Ok(r.into_inner().data.to_vec())
}

/// Asserts `r` failed with `PermissionDenied` naming `method`.
fn denied<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>, method: &str) {
    let e = Error::from(r.expect_err(method));
    assert!(matches!(&e, Error::PermissionDenied(m) if m.contains(method)), "{method}: {e:?}");
}

fn unauthenticated<T: std::fmt::Debug>(r: Result<T, Error>, what: &str, needle: &str) {
    let e = r.expect_err(what);
    assert!(matches!(&e, Error::Unauthenticated(m) if m.contains(needle)), "{what}: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_without_the_role_are_refused_everywhere() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin();
    let files = write_files(&admin).await;
    let st = admin.cluster_status().await.unwrap();
    let server = st.servers[0].server.clone().unwrap();
    let cs_addr = server.address.clone();
    let victim = admin.stat("/kept/f0").await.unwrap().chunks[0].clone();

    // A client certificate: none of the chunkserver, master or admin RPCs.
    let client = role(Role::Client);
    let mut m = master(&cluster.master, &client);
    let reg = RegisterRequest { server: Some(server.clone()), report_seq: u64::MAX, ..Default::default() };
    denied(m.register(reg).await, "Register");
    denied(m.heartbeat(HeartbeatRequest { server_id: server.id.clone(), ..Default::default() }).await, "Heartbeat");
    let corrupt = ReportCorruptRequest { handle: victim.handle, server_id: server.id.clone(), session: "x".into() };
    denied(m.report_corrupt(corrupt).await, "ReportCorrupt");
    denied(m.leader_epoch(LeaderEpochRequest {}).await, "LeaderEpoch");
    denied(m.chunk_locations(ChunkLocationsRequest { limit: 10, ..Default::default() }).await, "ChunkLocations");
    denied(m.mark_lost(MarkLostRequest { server: server.id.clone() }).await, "MarkLost");
    denied(m.decommission(DecommissionRequest { server: server.id.clone() }).await, "Decommission");
    denied(m.recommission(RecommissionRequest { server: server.id.clone() }).await, "Recommission");
    denied(m.add_master(AddMasterRequest { id: 9, address: "127.0.0.1:1".into() }).await, "AddMaster");
    denied(m.remove_master(RemoveMasterRequest { id: 1 }).await, "RemoveMaster");
    let mut raft = RaftServiceClient::new(channel(&cluster.master, &client));
    let msg = RaftMessage { payload: vec![0u8; 16].into() };
    denied(raft.append_entries(msg.clone()).await, "AppendEntries");
    denied(raft.vote(msg.clone()).await, "Vote");
    denied(raft.install_snapshot(msg).await, "InstallSnapshot");
    denied(raft.set_partition(PartitionRequest { blocked: vec![2, 3] }).await, "SetPartition");
    let mut cs = chunk(&cs_addr, &client);
    let (h, v) = (victim.handle, victim.version);
    let grant = GrantLeaseRequest { handle: h, version: v + 1, lease_ms: 60_000, create: false, epoch: st.epoch };
    denied(cs.grant_lease(grant).await, "GrantLease");
    denied(cs.delete_chunks(DeleteChunksRequest { handles: vec![h], epoch: st.epoch }).await, "DeleteChunks");
    let clone = CloneChunkRequest { handle: h, version: v, sources: vec![cs_addr.clone()], ..Default::default() };
    denied(cs.clone_chunk(clone).await, "CloneChunk");
    denied(cs.verify_chunk(VerifyChunkRequest { handle: h, version: v, bytes_per_sec: 0 }).await, "VerifyChunk");
    let pad = ApplyMutationRequest {
        handle: h,
        version: v,
        serial: 2,
        kind: MutationKind::Pad as i32,
        offset: 1 << 20,
        epoch: st.epoch,
        ..Default::default()
    };
    denied(cs.apply_mutation(pad).await, "ApplyMutation");

    // A chunkserver certificate: no namespace or admin calls; a master
    // certificate: no client data calls.
    let mut as_cs = master(&cluster.master, &role(Role::Chunkserver));
    denied(as_cs.mkdir(MkdirRequest { path: "/x".into(), parents: true, ..Default::default() }).await, "Mkdir");
    denied(as_cs.delete(DeleteRequest { path: "/kept".into(), recursive: true, ..Default::default() }).await, "Delete");
    denied(as_cs.mark_lost(MarkLostRequest { server: server.id.clone() }).await, "MarkLost");
    let write = WriteRequest { handle: h, version: v, epoch: st.epoch, ..Default::default() };
    denied(chunk(&cs_addr, &role(Role::Master)).write(write).await, "Write");

    // Nothing changed: same servers, every byte on every replica.
    let after = admin.cluster_status().await.unwrap();
    assert_eq!(after.servers.iter().filter(|s| s.alive).count(), 3);
    assert!(after.servers.iter().all(|s| s.state == ServerState::Live as i32), "{:?}", after.servers);
    assert_eq!(admin.list("/").await.unwrap().len(), 1, "a refused mkdir made something");
    assert_intact(&cluster, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunk_access_needs_a_valid_token_for_that_chunk_and_right() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin();
    let files = write_files(&admin).await;
    let client = role(Role::Client);
    let mut m = master(&cluster.master, &client);
    let get = |path: &str| GetChunksRequest { path: path.into(), start_index: 0, count: 1, allow_stale: false };
    let a = m.get_chunks(get("/kept/f0")).await.unwrap().into_inner().chunks.remove(0);
    let b = m.get_chunks(get("/kept/f1")).await.unwrap().into_inner().chunks.remove(0);
    let addr = a.replicas[0].address.clone();
    let token = a.token.clone().expect("GetChunks hands out a read token");
    assert_eq!((token.handle, token.version, token.rights), (a.handle, a.version, READ));

    // The token works for its chunk, and for nothing else.
    let got = read(&addr, &client, a.handle, a.version, Some(token.clone())).await.unwrap();
    assert!(got == files[0].1[..1 << 20]);
    unauthenticated(read(&addr, &client, a.handle, a.version, None).await, "no token", "no access token");
    let b_addr =
        b.replicas.iter().find(|r| r.address == addr).map_or(b.replicas[0].address.clone(), |r| r.address.clone());
    unauthenticated(read(&b_addr, &client, b.handle, b.version, Some(token.clone())).await, "other chunk", "token");
    let mut forged = token.clone();
    forged.rights = READ | WRITE;
    unauthenticated(read(&addr, &client, a.handle, a.version, Some(forged.clone())).await, "forged", "signature");
    let mut later = token.clone();
    later.expires_ms = i64::MAX;
    unauthenticated(read(&addr, &client, a.handle, a.version, Some(later)).await, "extended", "signature");
    // A key of the attacker's own, under the group's key id.
    let rogue = gfs_common::token::new_key(token.key_id, 0, i64::MAX / 2).unwrap();
    let own = gfs_common::token::sign(&rogue, a.handle, a.version, READ | WRITE, i64::MAX / 2, "mallory");
    unauthenticated(read(&addr, &client, a.handle, a.version, Some(own.clone())).await, "rogue key", "signature");

    // Writes: a read token, or a forged one, commits nothing.
    let mut cs = chunk(&addr, &client);
    let frame = PushDataFrame { data_id: 77, total_len: 5, data: b"evil!".to_vec().into(), chain: vec![] };
    cs.push_data(futures::stream::iter(vec![frame])).await.unwrap();
    let write = |token: Option<ChunkToken>| WriteRequest {
        handle: a.handle,
        version: a.version,
        offset: 0,
        data_id: 77,
        length: 5,
        secondaries: vec![],
        epoch: 0,
        token,
    };
    for (what, t) in [("no token", None), ("read token", Some(token.clone())), ("rogue key", Some(own))] {
        let e = Error::from(cs.write(write(t)).await.expect_err(what));
        assert!(matches!(e, Error::Unauthenticated(_)), "{what}: {e:?}");
    }
    let append = AppendRequest {
        handle: a.handle,
        version: a.version,
        data_id: 77,
        length: 5,
        chunk_size: 1 << 20,
        token: Some(token),
        ..Default::default()
    };
    assert!(matches!(Error::from(cs.append(append).await.unwrap_err()), Error::Unauthenticated(_)));
    assert_intact(&cluster, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_outside_the_cluster_ca_get_nothing() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin();
    let files = write_files(&admin).await;

    // An admin certificate from another CA (trusting ours, so only its own
    // certificate can be the reason): the handshake fails.
    let rogue_ca = Authority::generate("rogue", CA_VALIDITY).unwrap();
    let cert = rogue_ca.issue(&CertSpec::new("mallory", Role::Admin)).unwrap();
    let ours = std::fs::read_to_string(gfs_e2e::pki_dir(Role::Admin).join("ca.crt")).unwrap();
    let rogue =
        Security::Tls(Tls::from_pem(&cert.cert_pem, &cert.key_pem, &format!("{}{ours}", rogue_ca.cert_pem())).unwrap());
    let e = Error::from(
        master(&cluster.master, &rogue).mark_lost(MarkLostRequest { server: "x".into() }).await.unwrap_err(),
    );
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");

    // Plaintext: refused with a reason.
    let plain = channel(&cluster.master, &Security::Insecure);
    let e = Error::from(MasterServiceClient::new(plain).cluster_status(ClusterStatusRequest {}).await.unwrap_err());
    assert!(matches!(&e, Error::Unauthenticated(m) if m.contains("accepts only mTLS")), "{e:?}");

    // The CLI without TLS, as a user would run it: one clear line.
    let out = Command::new(bin("gfs")).args(["--insecure", "--master", &cluster.master, "ls", "/"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().count() == 1 && err.starts_with("gfs: ") && err.contains("accepts only mTLS"), "{err}");

    // A client whose own CA does not sign the server (the server is not
    // who it should be): refused on the client side before any request.
    let elsewhere = rogue_ca.issue(&CertSpec::new("alice", Role::Client)).unwrap();
    let lost = Security::Tls(Tls::from_pem(&elsewhere.cert_pem, &elsewhere.key_pem, rogue_ca.cert_pem()).unwrap());
    let e = Error::from(master(&cluster.master, &lost).cluster_status(ClusterStatusRequest {}).await.unwrap_err());
    assert!(e.to_string().contains("TLS handshake"), "{e:?}");

    assert_intact(&cluster, &files).await;
}

/// True if the peer closed `s` (EOF or reset) within `within`.
async fn closed(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    let until_closed = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, until_closed).await.is_ok()
}

/// The inputs that must be refused even from a caller holding the right
/// role: each one of them was seen to lose data or take a process down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_inputs_from_callers_with_the_right_role_are_refused() {
    let cluster = Cluster::start_with(&["--max-connections-per-peer", "16"]).await;
    let admin = cluster.admin();
    let files = write_files(&admin).await;
    let st = admin.cluster_status().await.unwrap();
    let holder = st.servers[0].server.clone().unwrap();
    let other = st.servers[1].server.clone().unwrap();
    let chunks_before = st.chunk_count;
    let victim = admin.stat("/kept/f0").await.unwrap().chunks[0].clone();

    // A chunkserver reporting another server's replica corrupt (it cannot
    // know that server's session): refused, the replica stays.
    let mut as_cs = master(&cluster.master, &role(Role::Chunkserver));
    let held = victim.replicas[0].id.clone();
    let report = ReportCorruptRequest { handle: victim.handle, server_id: held, session: "guessed".into() };
    let e = Error::from(as_cs.report_corrupt(report).await.unwrap_err());
    assert!(matches!(e, Error::Unauthenticated(_)), "{e:?}");
    // Taking over a live chunkserver's id from another address.
    let thief = ServerInfo { id: holder.id.clone(), address: "127.0.0.1:1".into(), zone: "z9".into() };
    let reg = RegisterRequest { server: Some(thief), report_seq: u64::MAX, ..Default::default() };
    let e = Error::from(as_cs.register(reg).await.unwrap_err());
    assert!(matches!(&e, Error::ServerIdInUse { holder: h, .. } if *h == holder.address), "{e:?}");

    // A master command stamped with an epoch far ahead of the group's: not
    // adopted (the real master's next commands still pass).
    let mut cs = chunk(&holder.address, &role(Role::Master));
    let grant = GrantLeaseRequest {
        handle: victim.handle,
        version: victim.version + 5,
        lease_ms: 60_000,
        create: false,
        epoch: u64::MAX,
    };
    let e = Error::from(cs.grant_lease(grant).await.unwrap_err());
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("ahead of the master group's epoch")), "{e:?}");
    let delete = DeleteChunksRequest { handles: vec![victim.handle], epoch: u64::MAX };
    assert!(cs.delete_chunks(delete).await.is_err(), "a delete with a forged epoch went through");

    // A mutation far ahead of the expected serial, from a chunkserver with
    // a valid write token: refused, never applied as a gap.
    // (As the files' owner's admin: only the input itself may refuse.)
    let mut client_m = master(&cluster.master, &role(Role::Admin));
    let lease = GetWriteLeaseRequest { path: "/kept/f1".into(), index: 0, create_missing: false };
    let lease = client_m.get_write_lease(lease).await.unwrap().into_inner().lease.unwrap();
    let chunk_w = lease.chunk.unwrap();
    let secondary = lease.secondaries[0].address.clone();
    let mut sec = chunk(&secondary, &role(Role::Chunkserver));
    let frame = PushDataFrame { data_id: 99, total_len: 4, data: b"gap!".to_vec().into(), chain: vec![] };
    sec.push_data(futures::stream::iter(vec![frame])).await.unwrap();
    let far = ApplyMutationRequest {
        handle: chunk_w.handle,
        version: chunk_w.version,
        serial: 1_000_000,
        kind: MutationKind::Write as i32,
        offset: 0,
        data_id: 99,
        length: 4,
        epoch: lease.epoch,
        token: chunk_w.token.clone(),
        ..Default::default()
    };
    let e = Error::from(sec.apply_mutation(far).await.unwrap_err());
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("serial")), "{e:?}");

    // A lease far past the end of a file: no allocation storm.
    let storm = GetWriteLeaseRequest { path: "/kept/f2".into(), index: 10_000_000, create_missing: true };
    let e = Error::from(client_m.get_write_lease(storm).await.unwrap_err());
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    // Bad paths: reserved names, control characters, a 1 MiB path echoed
    // back in a short message only.
    for bad in ["/kept/.gfs-deleted.1.x", "/kept/a\u{7}b", "/kept/\u{202e}txt.exe"] {
        let e = Error::from(
            client_m.mkdir(MkdirRequest { path: bad.into(), parents: true, ..Default::default() }).await.unwrap_err(),
        );
        assert!(matches!(e, Error::InvalidPath { .. } | Error::InvalidArgument(_)), "{bad:?}: {e:?}");
    }
    let huge = format!("/{}", "a".repeat(1 << 20));
    let status = client_m.mkdir(MkdirRequest { path: huge, parents: true, ..Default::default() }).await.unwrap_err();
    assert!(status.message().len() < 512, "a {} byte error for a bad path", status.message().len());
    // More replicas than live chunkservers.
    // (A new leader answers Unavailable while chunkservers re-register.)
    let create = CreateRequest { path: "/kept/r5".into(), replication: 5, exclusive: true, ..Default::default() };
    let mut e = Error::from(client_m.create(create.clone()).await.unwrap_err());
    for _ in 0..100 {
        if !matches!(e, Error::Unavailable(_)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        e = Error::from(client_m.create(create.clone()).await.unwrap_err());
    }
    assert!(matches!(&e, Error::NoSpace { detail, .. } if detail.contains("only 3 chunkservers")), "{e:?}");

    // Idle sockets from one address fill only its own share: one more is
    // closed at once, and other addresses are still served.
    let addr: std::net::SocketAddr = cluster.master.parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..16 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        idle.push(sock.connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut over = sock.connect(addr).await.unwrap();
    assert!(closed(&mut over, Duration::from_secs(2)).await, "a 17th socket from one address was kept");
    assert_eq!(admin.list("/kept").await.unwrap().len(), 3, "another address was not served");
    drop(idle);

    // Nothing changed: same chunks, same servers, every byte everywhere.
    let after = admin.cluster_status().await.unwrap();
    assert_eq!(after.chunk_count, chunks_before, "a refused call allocated chunks");
    assert_eq!(after.servers.iter().filter(|s| s.alive).count(), 3);
    assert!(after.servers.iter().any(|s| s.server.as_ref() == Some(&holder)), "the id was taken over");
    assert!(after.servers.iter().any(|s| s.server.as_ref() == Some(&other)));
    assert_intact(&cluster, &files).await;
}
