//! Master-group benchmark (issue 3), with real `gfs-master` processes on
//! loopback:
//!
//! 1. failover: `kill -9` of the leader of a 3-master group, time until a
//!    client's next create succeeds; median and max over N trials (the
//!    killed master is restarted and rejoins between trials);
//! 2. create/s and stat/s with 1 master and with 3 masters in the same run
//!    (the 1-master figure is the baseline of the ratio).
//!
//! Run: `cargo build --release --bins -p gfs-master && cargo run --release
//! -p gfs-e2e --example ha_bench -- [trials] [ops]`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gfs_client::Client;
use gfs_e2e::{bin, free_addr};
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::{MasterRole, MasterStatusRequest};

struct Group {
    dir: PathBuf,
    addrs: Vec<String>,
    procs: Vec<Option<Child>>,
}

impl Group {
    fn start(dir: &Path, n: usize) -> Group {
        let addrs: Vec<String> = (0..n).map(|_| free_addr().to_string()).collect();
        let mut g = Group { dir: dir.to_path_buf(), addrs, procs: Vec::new() };
        for id in 1..=n as u64 {
            let c = g.spawn(id);
            g.procs.push(Some(c));
        }
        g
    }

    fn spawn(&self, id: u64) -> Child {
        let peers = self.addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>();
        let log = std::fs::File::create(self.dir.join(format!("m{id}.log"))).unwrap();
        gfs_e2e::secured(&mut Command::new(bin("gfs-master")))
            .args(["--id", &id.to_string(), "--listen", &self.addrs[id as usize - 1]])
            .args(["--peers", &peers.join(","), "--data-dir"])
            .arg(self.dir.join(format!("m{id}")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn spec(&self) -> String {
        self.addrs.join(",")
    }

    fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.procs[id as usize - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn leader(&self) -> Option<u64> {
        for a in &self.addrs {
            let mut c = MasterServiceClient::new(gfs_e2e::channel(a, gfs_common::auth::Role::Admin));
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(500), c.master_status(MasterStatusRequest {})).await
            {
                let s = s.into_inner();
                let me = s.this.unwrap_or_default();
                if me.role == MasterRole::Leader as i32 {
                    return Some(me.id);
                }
            }
        }
        None
    }

    async fn wait_leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.leader().await {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for id in 1..=self.procs.len() as u64 {
            self.kill9(id);
        }
    }
}

fn client(spec: &str) -> Client {
    let mut cfg = gfs_e2e::client_config(spec.to_string());
    cfg.rpc_timeout = Duration::from_secs(2);
    Client::new(cfg).unwrap()
}

async fn rate(c: &Arc<Client>, prefix: &str, ops: usize, stat: bool) -> f64 {
    let workers = 32;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let c = c.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (w..ops).step_by(workers) {
                let p = format!("{prefix}/f{i}");
                if stat {
                    c.stat(&p).await.unwrap();
                } else {
                    c.create(&p, None).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    ops as f64 / t.elapsed().as_secs_f64()
}

async fn throughput(dir: &Path, n: usize, ops: usize) -> (f64, f64) {
    let g = Group::start(&dir.join(format!("tp{n}")), n);
    std::fs::create_dir_all(&g.dir).ok();
    g.wait_leader().await;
    let c = Arc::new(client(&g.spec()));
    c.mkdir("/bench", true).await.unwrap();
    let creates = rate(&c, "/bench", ops, false).await;
    let stats = rate(&c, "/bench", ops, true).await;
    (creates, stats)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trials: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let ops: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        for n in [1usize, 3] {
            std::fs::create_dir_all(dir.path().join(format!("tp{n}"))).unwrap();
        }
        let (c1, s1) = throughput(dir.path(), 1, ops).await;
        let (c3, s3) = throughput(dir.path(), 3, ops).await;
        println!("creates/s: 1 master {c1:.0}, 3 masters {c3:.0} (ratio {:.2})", c3 / c1);
        println!("stats/s:   1 master {s1:.0}, 3 masters {s3:.0} (ratio {:.2})", s3 / s1);

        let fdir = dir.path().join("failover");
        std::fs::create_dir_all(&fdir).unwrap();
        let mut g = Group::start(&fdir, 3);
        g.wait_leader().await;
        let c = client(&g.spec());
        c.mkdir("/fo", true).await.unwrap();
        let mut times = Vec::new();
        for t in 0..trials {
            let leader = g.wait_leader().await;
            // Make sure the group is healthy and the client knows the leader.
            c.create(&format!("/fo/warm{t}"), None).await.unwrap();
            let start = Instant::now();
            g.kill9(leader);
            let mut i = 0;
            loop {
                i += 1;
                if c.create(&format!("/fo/t{t}-{i}"), None).await.is_ok() {
                    break;
                }
            }
            let took = start.elapsed();
            println!("trial {t}: leader {leader} killed, first create after {:.0} ms", took.as_secs_f64() * 1000.0);
            times.push(took);
            let p = g.spawn(leader);
            g.procs[leader as usize - 1] = Some(p);
            // Let it rejoin before the next trial.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "failover (kill -9 leader -> first successful create), {} trials: median {:.0} ms, max {:.0} ms, min {:.0} ms",
            times.len(),
            ms(times[times.len() / 2]),
            ms(*times.last().unwrap()),
            ms(times[0])
        );
    });
}
