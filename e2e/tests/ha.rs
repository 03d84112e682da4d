//! Master high availability with real processes on loopback: a group of
//! three `gfs-master`s (Raft), chunkservers and clients given the list of
//! master addresses. Partitions use the masters' fault-injection switch
//! (`--fault-injection`, `RaftService.SetPartition`), which drops Raft
//! traffic in both directions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gfs_client::Client;
use gfs_common::Error;
use gfs_common::admin_http::{get, sample_sum};
use gfs_common::auth::Role;
use gfs_e2e::{Proc, bin, free_addr};
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::raft_service_client::RaftServiceClient;
use gfs_proto::{
    CreateRequest, GrantLeaseRequest, MasterRole, MasterStatusRequest, MasterStatusResponse, MkdirRequest,
    PartitionRequest, StatRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// A master group plus optional chunkservers, all killed on drop.
struct Group {
    dir: PathBuf,
    addrs: Vec<String>,
    /// Each master's admin port (`/metrics`).
    admin: Vec<std::net::SocketAddr>,
    masters: Vec<Option<Proc>>,
    chunkservers: Vec<Proc>,
}

impl Group {
    fn new(dir: &Path, n: usize) -> Group {
        let addrs: Vec<String> = (0..n).map(|_| free_addr().to_string()).collect();
        let mut g = Group::unstarted(dir, addrs);
        for id in 1..=n as u64 {
            let p = g.spawn_master(id);
            g.masters.push(Some(p));
        }
        g
    }

    /// A group of masters at `addrs`, none started yet.
    fn unstarted(dir: &Path, addrs: Vec<String>) -> Group {
        let admin = addrs.iter().map(|_| free_addr()).collect();
        Group { dir: dir.to_path_buf(), addrs, admin, masters: Vec::new(), chunkservers: Vec::new() }
    }

    fn peers(&self) -> String {
        self.addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",")
    }

    /// The client/chunkserver form: every master address.
    fn spec(&self) -> String {
        self.addrs.join(",")
    }

    fn master_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("master-{id}"))
    }

    fn spawn_master(&self, id: u64) -> Proc {
        let addr = &self.addrs[id as usize - 1];
        // The log of the current process life (replaced on restart).
        Proc::spawn(
            Command::new(bin("gfs-master"))
                .args(["--id", &id.to_string(), "--listen", addr, "--peers", &self.peers()])
                .args(["--admin-listen", &self.admin[id as usize - 1].to_string()])
                .args(["--chunk-size", "1MiB", "--fault-injection", "--data-dir"])
                .arg(self.master_dir(id))
                .env("RUST_LOG", "info"),
            &self.dir.join(format!("master-{id}.log.cur")),
        )
    }

    fn restart(&mut self, id: u64) {
        let p = self.spawn_master(id);
        self.masters[id as usize - 1] = Some(p);
    }

    fn kill9(&mut self, id: u64) {
        if let Some(mut p) = self.masters[id as usize - 1].take() {
            p.kill9();
        }
    }

    fn add_chunkservers(&mut self, n: usize) {
        for i in 0..n {
            let i = self.chunkservers.len() + i;
            self.chunkservers.push(Proc::spawn(
                Command::new(bin("gfs-chunkserver"))
                    .args(["--master", &self.spec(), "--listen", "127.0.0.1:0", "--zone", &format!("z{i}")])
                    .arg("--data-dir")
                    .arg(self.dir.join(format!("cs{i}"))),
                &self.dir.join(format!("cs{i}.log")),
            ));
        }
    }

    fn master_log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("master-{id}.log.cur"))).unwrap_or_default()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the whole logs for a post-mortem when asked to.
            if let Ok(keep) = std::env::var("GFS_KEEP_LOGS") {
                let to = std::path::Path::new(&keep).join(format!("{}", std::process::id()));
                let _ = std::fs::create_dir_all(&to);
                for id in 1..=self.addrs.len() as u64 {
                    let _ = std::fs::copy(
                        self.dir.join(format!("master-{id}.log.cur")),
                        to.join(format!("master-{id}.log")),
                    );
                }
            }
            for id in 1..=self.addrs.len() as u64 {
                let log = self.master_log(id);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- master {id} log (last 40 lines) ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

async fn status(addr: &str) -> Option<MasterStatusResponse> {
    let call = async {
        let mut c = MasterServiceClient::new(gfs_e2e::channel(addr, Role::Admin));
        Some(c.master_status(MasterStatusRequest {}).await.ok()?.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(2), call).await.ok().flatten()
}

/// Waits until a master among `ids` is leader and the others there agree;
/// returns its id.
async fn wait_leader(g: &Group, ids: &[u64], timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let mut leaders = BTreeMap::new();
        let mut agree = 0;
        for id in ids {
            if let Some(s) = status(&g.addrs[*id as usize - 1]).await {
                let me = s.this.unwrap();
                if me.role == MasterRole::Leader as i32 {
                    leaders.insert(me.term, me.id);
                }
                if s.leader_id != 0 {
                    agree += 1;
                }
            }
        }
        if let Some((_, id)) = leaders.iter().next_back()
            && agree * 2 > ids.len()
        {
            return *id;
        }
        assert!(Instant::now() < deadline, "no leader among {ids:?} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every master in `ids` applied the same index with the same
/// namespace digest; returns (index, digest).
async fn wait_converged(g: &Group, ids: &[u64], timeout: Duration) -> (u64, u32) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen = Vec::new();
        for id in ids {
            if let Some(s) = status(&g.addrs[*id as usize - 1]).await {
                seen.push((s.this.unwrap().last_applied, s.namespace_digest));
            }
        }
        if seen.len() == ids.len() && seen.iter().all(|x| *x == seen[0]) {
            return seen[0];
        }
        assert!(Instant::now() < deadline, "masters {ids:?} did not converge: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the leader sees `n` live chunkservers.
async fn wait_chunkservers(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(st) = client.cluster_status().await
            && st.servers.iter().filter(|s| s.alive).count() >= n
        {
            return;
        }
        assert!(Instant::now() < deadline, "{n} chunkservers did not register with the leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn raw(addr: &str) -> MasterServiceClient<tonic::transport::Channel> {
    MasterServiceClient::new(gfs_e2e::channel(addr, Role::Admin))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn partitioned_leader_acknowledges_nothing_and_the_group_converges() {
    let dir = tempfile::tempdir().unwrap();
    let g = Group::new(dir.path(), 3);
    rt().block_on(async {
        let leader = wait_leader(&g, &[1, 2, 3], Duration::from_secs(30)).await;
        let l_addr = g.addrs[leader as usize - 1].clone();
        let mut c = raw(&l_addr).await;
        for i in 0..20 {
            c.mkdir(MkdirRequest { path: format!("/before/{i}"), parents: true, call: None, umask: None })
                .await
                .unwrap();
        }
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
        // Cut the leader off from the other two, both directions.
        RaftServiceClient::new(gfs_e2e::channel(&l_addr, Role::Master))
            .set_partition(PartitionRequest { blocked: others.clone() })
            .await
            .unwrap();
        // The minority side acknowledges nothing: every mutation fails.
        let mut refused = 0;
        for i in 0..3 {
            let r =
                c.mkdir(MkdirRequest { path: format!("/minority/{i}"), parents: true, call: None, umask: None }).await;
            let e = Error::from(r.expect_err("a partitioned leader acknowledged a mutation"));
            assert!(matches!(e, Error::Unavailable(_) | Error::NotLeader { .. }), "{e}");
            refused += 1;
        }
        assert_eq!(refused, 3);
        // The majority elects a leader and keeps serving.
        let new_leader = wait_leader(&g, &others, Duration::from_secs(30)).await;
        assert_ne!(new_leader, leader);
        let mut c2 = raw(&g.addrs[new_leader as usize - 1]).await;
        c2.mkdir(MkdirRequest { path: "/majority".into(), parents: true, call: None, umask: None }).await.unwrap();
        for i in 0..20 {
            c2.create(CreateRequest {
                path: format!("/majority/f{i}"),
                replication: 0,
                exclusive: true,
                // Metadata only: this group has no chunkservers.
                allow_under_replicated: true,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        // The old leader, still cut off, no longer answers as leader.
        let r = c.stat(StatRequest { path: "/before/0".into(), allow_stale: false }).await;
        assert!(matches!(Error::from(r.unwrap_err()), Error::NotLeader { .. }));
        // Shadow reads still work there (possibly stale).
        c.stat(StatRequest { path: "/before/0".into(), allow_stale: true }).await.unwrap();

        // Heal: all three converge to the same state.
        RaftServiceClient::new(gfs_e2e::channel(&l_addr, Role::Master))
            .set_partition(PartitionRequest { blocked: vec![] })
            .await
            .unwrap();
        let (index, digest) = wait_converged(&g, &[1, 2, 3], Duration::from_secs(30)).await;
        assert!(index > 40, "applied index {index}");
        assert_ne!(digest, 0);
        let leader_now = wait_leader(&g, &[1, 2, 3], Duration::from_secs(30)).await;
        let mut c3 = raw(&g.addrs[leader_now as usize - 1]).await;
        for i in 0..20 {
            c3.stat(StatRequest { path: format!("/majority/f{i}"), allow_stale: false }).await.unwrap();
            c3.stat(StatRequest { path: format!("/before/{i}"), allow_stale: false }).await.unwrap();
        }
        // Nothing the minority tried survived.
        let r = c3.stat(StatRequest { path: "/minority".into(), allow_stale: false }).await;
        assert!(matches!(Error::from(r.unwrap_err()), Error::NotFound { .. }));
    });
}

#[test]
fn corrupt_log_tail_on_one_master_is_cut_and_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Group::new(dir.path(), 3);
    let rt = rt();
    let leader = rt.block_on(wait_leader(&g, &[1, 2, 3], Duration::from_secs(30)));
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    // A client that follows the leader: a leader change under load (CI)
    // must not fail the test, only lost or wrong data may.
    let client = Client::new(gfs_e2e::client_config(g.spec())).unwrap();
    rt.block_on(async {
        for i in 0..50 {
            client.mkdir(&format!("/d/{i}"), true).await.unwrap();
        }
        wait_converged(&g, &[1, 2, 3], Duration::from_secs(30)).await;
    });
    // A follower's log gets garbage, then a cut tail; then the leader's:
    // it restarts as a follower (not resuming leadership on a cut log).
    for (damage, leader_too) in [("garbage", false), ("truncate", false), ("leader-truncate", true)] {
        let victim =
            if leader_too { rt.block_on(wait_leader(&g, &[1, 2, 3], Duration::from_secs(30))) } else { follower };
        g.kill9(victim);
        // Damage the newest segment holding entries.
        let mdir = g.master_dir(victim);
        let mut segs: Vec<(u64, PathBuf)> = std::fs::read_dir(&mdir)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                let i = n.strip_prefix("raft-log.")?.parse().ok()?;
                (e.metadata().unwrap().len() > 0).then(|| (i, e.path()))
            })
            .collect();
        segs.sort();
        let (_, seg) = segs.last().unwrap().clone();
        let len = std::fs::metadata(&seg).unwrap().len();
        match damage {
            "garbage" => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
                f.write_all(&[0xAB; 77]).unwrap();
            }
            _ => std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 5).unwrap(),
        }
        rt.block_on(async {
            // More acknowledged writes while it is down.
            for i in 0..10 {
                client.mkdir(&format!("/{damage}/{i}"), true).await.unwrap();
            }
        });
        g.restart(victim);
        rt.block_on(wait_converged(&g, &[1, 2, 3], Duration::from_secs(60)));
        let log = g.master_log(victim);
        assert!(log.contains("raft log tail is torn"), "{damage}: no recovery line in the log:\n{log}");
        assert!(log.contains("last_good_index"), "{log}");
    }
}

#[test]
fn restarting_every_master_returns_the_acknowledged_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Group::new(dir.path(), 3);
    g.add_chunkservers(3);
    let rt = rt();
    let mut files = BTreeMap::new();
    let before = rt.block_on(async {
        wait_leader(&g, &[1, 2, 3], Duration::from_secs(30)).await;
        let client = Client::new(gfs_e2e::client_config(g.spec())).unwrap();
        wait_chunkservers(&client, 3).await;
        client.mkdir("/data", true).await.unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        for i in 0..6 {
            let mut data = vec![0u8; rng.random_range(1..2_500_000)];
            rng.fill_bytes(&mut data);
            let path = format!("/data/f{i}");
            client.create(&path, None).await.unwrap();
            client.write_at(&path, 0, &data).await.unwrap();
            files.insert(path, data);
        }
        wait_converged(&g, &[1, 2, 3], Duration::from_secs(30)).await;
        client.list("/data").await.unwrap()
    });
    for id in 1..=3 {
        g.kill9(id);
    }
    for id in 1..=3 {
        g.restart(id);
    }
    rt.block_on(async {
        wait_leader(&g, &[1, 2, 3], Duration::from_secs(30)).await;
        // Every master has the same state again...
        wait_converged(&g, &[1, 2, 3], Duration::from_secs(30)).await;
        let client = Client::new(gfs_e2e::client_config(g.spec())).unwrap();
        // ...and it is the acknowledged one: same entries, sizes, chunk
        // counts and times. (Chunk versions may legitimately move up: a
        // version a chunkserver took from a grant whose log entry did not
        // commit, e.g. across a leader change under load, is adopted when it
        // reports.)
        let after = client.list("/data").await.unwrap();
        assert_eq!(after, before, "namespace after restarting every master differs");
        for (path, data) in &files {
            let got = client.read_all(path).await.unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(got == *data, "{path}: content differs after restart");
        }

        // Shadow reads: a client that talks only to a follower reads the
        // files too (sizes and locations the follower pulled from the
        // leader).
        let leader = wait_leader(&g, &[1, 2, 3], Duration::from_secs(30)).await;
        let follower = [1u64, 2, 3].into_iter().find(|i| *i != leader).unwrap();
        let mut cfg = gfs_e2e::client_config(g.addrs[follower as usize - 1].clone());
        cfg.allow_stale_reads = true;
        let shadow = Client::new(cfg).unwrap();
        let shadow_reads_match = |files: BTreeMap<String, Vec<u8>>| {
            let shadow = &shadow;
            async move {
                let deadline = Instant::now() + Duration::from_secs(20);
                for (path, data) in &files {
                    loop {
                        match shadow.read_all(path).await {
                            Ok(got) if got == *data => break,
                            other => {
                                assert!(
                                    Instant::now() < deadline,
                                    "{path}: shadow read never matched: {:?}",
                                    other.map(|g| g.len())
                                );
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                }
            }
        };
        shadow_reads_match(files.clone()).await;
        // Changes after the follower caught up reach it too: its later
        // pulls carry only the chunks changed since its cursor. The first
        // file grows inside its last 1 MiB chunk, so only that chunk's
        // length changes (and with it the file's size).
        let mut changed = BTreeMap::new();
        let (path, old) = files.iter().next().unwrap();
        let room = (1 << 20) - old.len() % (1 << 20);
        let mut grown = old.clone();
        grown.extend((0..(room / 2).max(1) as u32).map(|i| (i % 253) as u8));
        client.write_at(path, old.len() as u64, &grown[old.len()..]).await.unwrap();
        changed.insert(path.clone(), grown);
        let late: Vec<u8> = (0..1_500_000u32).map(|i| (i % 241) as u8).collect();
        client.create("/data/late", None).await.unwrap();
        client.write_at("/data/late", 0, &late).await.unwrap();
        changed.insert("/data/late".to_string(), late);
        shadow_reads_match(changed).await;
        // The follower's metrics show it: a full pull after the restart,
        // then pulls of changes.
        let (code, body) = get(g.admin[follower as usize - 1], "/metrics").await.expect("scrape the follower");
        assert_eq!(code, 200);
        let pulls = |kind: &str| sample_sum(&body, "gfs_master_shadow_pulls_total", &[kind]).unwrap_or(0.0);
        assert!(pulls("kind=\"full\"") >= 1.0, "no full pull:\n{body}");
        assert!(pulls("kind=\"changes\"") >= 1.0, "no pull of changes:\n{body}");
        assert!(sample_sum(&body, "gfs_master_shadow_pulled_chunks_total", &[]).unwrap_or(0.0) > 0.0);
        // Without allow_stale the follower refuses and names the leader.
        let mut c = raw(&g.addrs[follower as usize - 1]).await;
        let e = Error::from(c.stat(StatRequest { path: "/data/f0".into(), allow_stale: false }).await.unwrap_err());
        assert_eq!(e, Error::NotLeader { leader: Some(g.addrs[leader as usize - 1].clone()) });
    });
}

/// Files acknowledged by writers: path -> content; records acknowledged by
/// appenders.
type Acked = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

async fn writer(
    spec: String,
    id: u32,
    acked: Acked,
    after_kill: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
) {
    let client = Client::new(gfs_e2e::client_config(spec)).unwrap();
    let mut rng = StdRng::seed_from_u64(id as u64);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let path = format!("/load/w{id}-{n}");
        n += 1;
        let mut data = vec![0u8; rng.random_range(0..300_000)];
        rng.fill_bytes(&mut data);
        match client.create(&path, None).await {
            Ok(_) => {}
            // Every path is new: only a create that ran twice (a retry
            // after a lost reply) could say this. The retry cache answers
            // such a retry with the first run's outcome.
            Err(e @ gfs_client::Error::AlreadyExists { .. }) => panic!("{path}: a retried create ran twice: {e}"),
            Err(_) => continue,
        }
        let ok = client.write_at(&path, 0, &data).await.is_ok();
        acked.lock().unwrap().insert(path, if ok { data } else { Vec::new() });
        if killed.load(Ordering::Relaxed) {
            *after_kill.lock().unwrap() += 1;
        }
    }
}

async fn appender(spec: String, id: u32, acked: Arc<Mutex<Vec<Vec<u8>>>>, stop: Arc<AtomicBool>) {
    let client = Client::new(gfs_e2e::client_config(spec)).unwrap();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let rec = format!("rec-{id}-{n}-{}\n", "x".repeat((n % 50) as usize)).into_bytes();
        n += 1;
        if client.append("/load/log", &rec).await.is_ok() {
            acked.lock().unwrap().push(rec);
        }
    }
}

#[test]
fn kill9_of_the_leader_under_load_loses_no_acknowledged_operation() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Group::new(dir.path(), 3);
    g.add_chunkservers(3);
    let rt = rt();
    let leader = rt.block_on(async {
        let leader = wait_leader(&g, &[1, 2, 3], Duration::from_secs(30)).await;
        let client = Client::new(gfs_e2e::client_config(g.spec())).unwrap();
        wait_chunkservers(&client, 3).await;
        client.mkdir("/load", true).await.unwrap();
        client.create("/load/log", None).await.unwrap();
        leader
    });
    let acked: Acked = Arc::default();
    let records: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let after_kill = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..3 {
        tasks.push(rt.spawn(writer(g.spec(), i, acked.clone(), after_kill.clone(), stop.clone(), killed.clone())));
    }
    for i in 0..2 {
        tasks.push(rt.spawn(appender(g.spec(), i, records.clone(), stop.clone())));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(acked.lock().unwrap().len() >= 30, "writers did not get going");
    let old_term = rt.block_on(status(&g.addrs[leader as usize - 1])).unwrap().this.unwrap().term;
    g.kill9(leader);
    killed.store(true, Ordering::Relaxed);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new_leader = rt.block_on(wait_leader(&g, &others, Duration::from_secs(30)));
    assert_ne!(new_leader, leader);
    // The clients continue after retrying: more acknowledged operations.
    let deadline = Instant::now() + Duration::from_secs(90);
    while *after_kill.lock().unwrap() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let n_after = *after_kill.lock().unwrap();
    assert!(n_after >= 20, "only {n_after} operations acknowledged after the leader died");
    let acked = acked.lock().unwrap().clone();
    let records = records.lock().unwrap().clone();
    assert!(!records.is_empty());
    rt.block_on(async {
        let client = Client::new(gfs_e2e::client_config(g.spec())).unwrap();
        for (path, data) in &acked {
            let got = client.read_all(path).await.unwrap_or_else(|e| panic!("{path}: {e}"));
            if !data.is_empty() {
                assert!(got == *data, "{path}: content differs ({} vs {} bytes)", got.len(), data.len());
            }
        }
        let log = client.read_all("/load/log").await.unwrap();
        for rec in &records {
            assert!(
                log.windows(rec.len()).any(|w| w == rec.as_slice()),
                "acknowledged record {:?} missing",
                String::from_utf8_lossy(rec)
            );
        }
        wait_converged(&g, &others, Duration::from_secs(30)).await;

        // Fencing: every chunkserver has seen the new leader's term, so a
        // grant stamped with the dead leader's term is refused.
        let st = client.cluster_status().await.unwrap();
        assert_eq!(st.servers.iter().filter(|s| s.alive).count(), 3);
        for s in &st.servers {
            let addr = &s.server.as_ref().unwrap().address;
            // With the master role: only the epoch may refuse it.
            let mut cs = ChunkServiceClient::new(gfs_e2e::channel(addr, Role::Master));
            let req = GrantLeaseRequest { handle: 1, version: 1, lease_ms: 60_000, create: false, epoch: old_term };
            let err = Error::from(cs.grant_lease(req).await.unwrap_err());
            assert!(
                matches!(err, Error::StaleEpoch { have, seen } if have == old_term && seen > old_term),
                "{addr}: {err:?}"
            );
        }
    });
}

#[test]
fn masters_are_added_and_removed_one_at_a_time_without_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..5).map(|_| free_addr().to_string()).collect();
    let mut g = Group::unstarted(dir.path(), addrs.clone());
    let spawn = |g: &Group, id: u64, join: bool| {
        let addr = &g.addrs[id as usize - 1];
        let mut cmd = Command::new(bin("gfs-master"));
        cmd.args(["--id", &id.to_string(), "--listen", addr, "--peers", &format!("{id}={addr}")])
            .args(["--chunk-size", "1MiB", "--data-dir"])
            .arg(g.master_dir(id));
        if join {
            cmd.arg("--join");
        }
        Proc::spawn(&mut cmd, &g.dir.join(format!("master-{id}.log.cur")))
    };
    // Start with a group of one; the others start empty and wait to be added.
    g.masters.push(Some(spawn(&g, 1, false)));
    for id in 2..=5 {
        let p = spawn(&g, id, true);
        g.masters.push(Some(p));
    }
    let rt = rt();
    let stop = Arc::new(AtomicBool::new(false));
    // Held while the test compares the members' states: with a create
    // every 20 ms, five status reads rarely see one applied index.
    let pause = Arc::new(AtomicBool::new(false));
    let done: Arc<Mutex<Vec<String>>> = Arc::default();
    let spec = g.spec();
    let writer = {
        let (stop, pause, done, spec) = (stop.clone(), pause.clone(), done.clone(), spec.clone());
        rt.spawn(async move {
            // Metadata only: this group has no chunkservers.
            let mut cfg = gfs_e2e::client_config(spec);
            cfg.allow_under_replicated = true;
            let client = Client::new(cfg).unwrap();
            client.mkdir("/m", true).await.unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if pause.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let p = format!("/m/f{i}");
                i += 1;
                // Every create must succeed (after retries): no downtime.
                client.create(&p, None).await.unwrap_or_else(|e| panic!("{p}: {e}"));
                done.lock().unwrap().push(p);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    rt.block_on(async {
        let client = Client::new(gfs_e2e::client_config(spec.clone())).unwrap();
        let voters = |members: &[gfs_proto::MasterInfo]| {
            let mut v: Vec<u64> = members.iter().filter(|m| m.voter).map(|m| m.id).collect();
            v.sort();
            v
        };
        // Let the writer get going first.
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.lock().unwrap().len() < 3 {
            assert!(Instant::now() < deadline, "the writer made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = done.lock().unwrap().len();
        for id in 2..=5u64 {
            let members = client.add_master(id, &addrs[id as usize - 1]).await.unwrap();
            assert_eq!(voters(&members), (1..=id).collect::<Vec<_>>());
        }
        pause.store(true, Ordering::Relaxed);
        wait_converged(&g, &[1, 2, 3, 4, 5], Duration::from_secs(30)).await;
        pause.store(false, Ordering::Relaxed);
        // An existing voter cannot be added twice.
        assert!(client.add_master(3, &addrs[2]).await.is_err());
        for id in [5u64, 4, 3, 2] {
            let members = client.remove_master(id).await.unwrap();
            assert!(!voters(&members).contains(&id), "{id} still a voter: {members:?}");
        }
        let st = client.cluster_status().await.unwrap();
        assert_eq!(voters(&st.masters), vec![1]);
        assert!(done.lock().unwrap().len() > n, "no create succeeded while the group changed");
        // The last voter cannot be removed.
        assert!(client.remove_master(1).await.is_err());
        // The writer kept going through every change.
        let before = done.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(done.lock().unwrap().len() > before, "creates stopped after the membership changes");
    });
    stop.store(true, Ordering::Relaxed);
    rt.block_on(writer).unwrap();
    rt.block_on(async {
        let client = Client::new(gfs_e2e::client_config(addrs[0].clone())).unwrap();
        let done = done.lock().unwrap().clone();
        for p in &done {
            client.stat(p).await.unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    });
    drop(g);
}

#[test]
fn a_follower_far_behind_catches_up_by_installing_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3).map(|_| free_addr().to_string()).collect();
    let mut g = Group::unstarted(dir.path(), addrs);
    // Snapshot (checkpoint) every 20 entries, keeping only 20 after it.
    let spawn = |g: &Group, id: u64| {
        Proc::spawn(
            Command::new(bin("gfs-master"))
                .args(["--id", &id.to_string(), "--listen", &g.addrs[id as usize - 1], "--peers", &g.peers()])
                .args(["--checkpoint-every", "20", "--data-dir"])
                .arg(g.master_dir(id)),
            &g.dir.join(format!("master-{id}.log.cur")),
        )
    };
    for id in 1..=3 {
        let p = spawn(&g, id);
        g.masters.push(Some(p));
    }
    let rt = rt();
    let leader = rt.block_on(wait_leader(&g, &[1, 2, 3], Duration::from_secs(30)));
    let behind = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    g.kill9(behind);
    rt.block_on(async {
        let client = Client::new(gfs_e2e::client_config(g.spec())).unwrap();
        // openraft purges in batches of 256 entries: write well past that.
        for i in 0..700 {
            client.mkdir(&format!("/s/{i}"), true).await.unwrap();
        }
    });
    let p = spawn(&g, behind);
    g.masters[behind as usize - 1] = Some(p);
    rt.block_on(wait_converged(&g, &[1, 2, 3], Duration::from_secs(60)));
    let log = g.master_log(behind);
    assert!(log.contains("installed snapshot from the leader"), "no snapshot install in the log:\n{log}");
    // Its checkpoint file is the snapshot it installed.
    assert!(g.master_dir(behind).join("checkpoint").exists());
}

/// One master as the operator runs it on Kubernetes: id = pod ordinal,
/// `--peers` names pod 0 only, `--discover` names every pod.
fn spawn_pod(dir: &Path, addrs: &[String], ordinal: usize) -> Proc {
    Proc::spawn(
        Command::new(bin("gfs-master"))
            .args(["--id", &ordinal.to_string(), "--listen", &addrs[ordinal], "--peers", &format!("0={}", addrs[0])])
            .args(["--discover", &addrs.join(","), "--data-dir"])
            .arg(dir.join(format!("pod-{ordinal}")))
            .env("RUST_LOG", "info"),
        &dir.join(format!("master-{}.log.cur", ordinal + 1)),
    )
}

/// Three masters started the operator's way: pod 0 founds the group, the
/// other two are added; returns with 20 directories written and every
/// member converged. `Group`'s helpers count ids from 1 (pod 0 is id 1).
fn pod_group(dir: &Path, rt: &tokio::runtime::Runtime) -> Group {
    let addrs: Vec<String> = (0..3).map(|_| free_addr().to_string()).collect();
    let mut g = Group::unstarted(dir, addrs.clone());
    for o in 0..3 {
        g.masters.push(Some(spawn_pod(dir, &addrs, o)));
    }
    rt.block_on(async {
        // The founder (pod 0) leads its one-member group before it grows;
        // a client finds nothing to retry for until some master answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        while status(&addrs[0]).await.is_none_or(|s| s.this.is_none_or(|m| m.role != MasterRole::Leader as i32)) {
            assert!(Instant::now() < deadline, "the founder never led its group");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let client = Client::new(gfs_e2e::client_config(g.spec())).unwrap();
        client.add_master(1, &addrs[1]).await.unwrap();
        let members = client.add_master(2, &addrs[2]).await.unwrap();
        assert_eq!(members.iter().filter(|m| m.voter).count(), 3);
        for i in 0..20 {
            client.mkdir(&format!("/keep/{i}"), true).await.unwrap();
        }
        wait_converged(&g, &[1, 2, 3], Duration::from_secs(30)).await;
    });
    g
}

/// The founder's failure on Kubernetes (`--peers` names only the first
/// group): pod 0 recreated with an empty volume rejoins its group instead
/// of founding a second one (split brain).
#[test]
fn a_founder_that_lost_its_data_rejoins_instead_of_founding_a_second_group() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut g = pod_group(dir.path(), &rt);
    let addrs = g.addrs.clone();
    // Pod 0 comes back on a fresh volume.
    g.kill9(1);
    std::fs::remove_dir_all(dir.path().join("pod-0")).unwrap();
    g.masters[0] = Some(spawn_pod(dir.path(), &addrs, 0));
    rt.block_on(async {
        // It never leads a group of its own (that would acknowledge writes
        // the real group never sees).
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Some(st) = status(&addrs[0]).await {
                let role = st.this.as_ref().unwrap().role;
                assert_ne!(role, MasterRole::Leader as i32, "the wiped founder leads a group of its own: {st:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, digest) = wait_converged(&g, &[1, 2, 3], Duration::from_secs(60)).await;
        let client = Client::new(gfs_e2e::client_config(g.spec())).unwrap();
        for i in 0..20 {
            client.stat(&format!("/keep/{i}")).await.unwrap();
        }
        assert_ne!(digest, 0);
    });
    let log = g.master_log(1);
    assert!(log.contains("waiting for the leader instead of founding a group"), "{log}");
}

/// A rollout restarts followers one by one; each restarted pod was added
/// to the group (it is not in `--peers`), and must wait for the leader to
/// reach it rather than campaign and depose a healthy leader.
#[test]
fn restarted_followers_that_joined_do_not_depose_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut g = pod_group(dir.path(), &rt);
    let addrs = g.addrs.clone();
    // (Raft ids here are pod ordinals, so 0 is a member: find the leader
    // by each master's own role.)
    let (leader, term) = rt.block_on(async {
        for (i, a) in addrs.iter().enumerate() {
            if let Some(me) = status(a).await.and_then(|s| s.this)
                && me.role == MasterRole::Leader as i32
            {
                return (i as u64 + 1, me.term);
            }
        }
        panic!("no master leads after the group converged");
    });
    for id in [1u64, 2, 3].into_iter().filter(|id| *id != leader) {
        g.kill9(id);
        // Long enough for an election timeout of the others to pass.
        std::thread::sleep(Duration::from_secs(2));
        g.masters[id as usize - 1] = Some(spawn_pod(dir.path(), &addrs, id as usize - 1));
        rt.block_on(async {
            let (_, digest) = wait_converged(&g, &[1, 2, 3], Duration::from_secs(60)).await;
            assert_ne!(digest, 0);
            // Past the restarted member's grace (4 heartbeats + 2 s): a
            // campaign would have happened by now.
            tokio::time::sleep(Duration::from_secs(7)).await;
            let st = status(&addrs[leader as usize - 1]).await.expect("the leader answers");
            let me = st.this.unwrap();
            assert_eq!(
                (me.role, me.term),
                (MasterRole::Leader as i32, term),
                "restarting master {id} changed the leader or its term"
            );
        });
        let log = g.master_log(id);
        assert!(log.contains("restarted group member: no campaign before the grace ends"), "{log}");
    }
}
