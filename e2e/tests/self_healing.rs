//! Self-healing with real processes: one `gfs-master` and several
//! `gfs-chunkserver`s on loopback, hundreds of 64 KiB chunks, `kill -9`.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gfs_client::{Client, ServerState};
use gfs_e2e::{Proc, bin};
use gfs_proto::RepairReason;
use rand::{RngCore, SeedableRng, rngs::StdRng};

const CHUNK: usize = 64 * 1024;

struct Procs {
    dir: tempfile::TempDir,
    master: String,
    _m: Proc,
    servers: Vec<Option<Proc>>,
}

impl Procs {
    fn start(n: usize, master_args: &[&str]) -> Procs {
        let dir = tempfile::tempdir().unwrap();
        let master = gfs_e2e::free_addr().to_string();
        let m = Proc::spawn(
            Command::new(bin("gfs-master"))
                .args(["--listen", &master, "--chunk-size", "64KiB", "--heartbeat-ms", "100"])
                .args(["--dead-after-ms", "3000", "--heal-scan-ms", "100", "--lease-ms", "2000"])
                .args(master_args)
                .arg("--data-dir")
                .arg(dir.path().join("master")),
            &dir.path().join("master.log"),
        );
        let mut p = Procs { dir, master, _m: m, servers: vec![] };
        for i in 0..n {
            let d = p.server_dir(i);
            let cs = Proc::spawn(
                Command::new(bin("gfs-chunkserver"))
                    .args(["--master", &p.master, "--listen", "127.0.0.1:0", "--heartbeat-ms", "100", "--no-sync"])
                    .args(["--zone", &format!("z{i}"), "--scrub-interval-ms", "0"])
                    .arg("--data-dir")
                    .arg(&d),
                &p.dir.path().join(format!("cs{i}.log")),
            );
            p.servers.push(Some(cs));
        }
        p
    }

    fn server_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("cs{i}"))
    }

    fn server_id(&self, i: usize) -> String {
        std::fs::read_to_string(self.server_dir(i).join("server-id")).unwrap().trim().to_string()
    }

    fn kill9(&mut self, i: usize) {
        drop(self.servers[i].take());
    }

    fn client(&self) -> Client {
        let mut cfg = gfs_e2e::client_config(self.master.clone());
        cfg.rpc_timeout = Duration::from_secs(5);
        Client::new(cfg).unwrap()
    }
}

/// Polls until `pred` holds on the cluster status (panics after 180 s).
async fn wait_status(c: &Client, what: &str, pred: impl Fn(&gfs_client::ClusterStatusResponse) -> bool) {
    for _ in 0..1800 {
        if let Ok(st) = c.cluster_status().await
            && pred(&st)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}: {:?}", c.cluster_status().await);
}

/// Writes `files` files of `chunks` chunks each; returns their contents.
async fn write_files(c: &Client, files: usize, chunks: usize) -> HashMap<String, Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(4);
    let mut out = HashMap::new();
    for f in 0..files {
        let mut data = vec![0u8; chunks * CHUNK - 100];
        rng.fill_bytes(&mut data);
        let p = format!("/f{f}");
        c.create(&p, None).await.unwrap();
        c.write_at(&p, 0, &data).await.unwrap();
        out.insert(p, data);
    }
    out
}

/// Replica ids of every chunk, by handle.
async fn replicas(c: &Client, files: &HashMap<String, Vec<u8>>) -> HashMap<u64, BTreeSet<String>> {
    let mut out = HashMap::new();
    for p in files.keys() {
        for ch in c.stat(p).await.unwrap().chunks {
            out.insert(ch.handle, ch.replicas.iter().map(|r| r.id.clone()).collect());
        }
    }
    out
}

async fn verify(c: &Client, files: &HashMap<String, Vec<u8>>, dead: &[String]) {
    for (h, reps) in replicas(c, files).await {
        assert_eq!(reps.len(), 3, "chunk {h} replicas {reps:?}");
        for d in dead {
            assert!(!reps.contains(d), "chunk {h} still counts a replica on dead server {d}");
        }
    }
    for (p, data) in files {
        assert!(c.read_all(p).await.unwrap() == *data, "{p} differs after repair");
    }
}

fn healthy(st: &gfs_client::ClusterStatusResponse) -> bool {
    st.replication_backlog_chunks == 0 && st.active_clones == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_one_chunkserver_every_chunk_returns_to_full_replication() {
    let mut p = Procs::start(5, &[]);
    let c = p.client();
    wait_status(&c, "5 live servers", |s| s.servers.iter().filter(|s| s.alive).count() == 5).await;
    let files = write_files(&c, 10, 25).await;
    wait_status(&c, "fully replicated before the kill", healthy).await;
    let before = replicas(&c, &files).await;
    let seen = c.repair_events().await.unwrap().len();
    assert!(before.len() >= 250);
    let victim = p.server_id(0);
    let held = before.values().filter(|r| r.contains(&victim)).count();
    assert!(held > 50, "victim holds {held} chunks");
    p.kill9(0);
    let v = victim.clone();
    wait_status(&c, "victim dead and backlog drained", move |s| {
        let dead =
            s.servers.iter().any(|x| x.server.as_ref().is_some_and(|i| i.id == v) && x.state() == ServerState::Dead);
        dead && healthy(s)
    })
    .await;
    verify(&c, &files, &[victim]).await;
    let events = &c.repair_events().await.unwrap()[seen..];
    let ok = events.iter().filter(|e| e.ok && e.reason() == RepairReason::Replicate).count();
    assert_eq!(ok, held, "one successful clone per chunk the victim held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_two_chunkservers_repairs_last_replicas_first() {
    // One clone at a time so the completion order is the priority order;
    // the repair delay lets both deaths be seen before the queue is ordered.
    let mut p = Procs::start(6, &["--max-clones", "1", "--repair-delay-ms", "1500"]);
    let c = p.client();
    wait_status(&c, "6 live servers", |s| s.servers.iter().filter(|s| s.alive).count() == 6).await;
    let files = write_files(&c, 12, 25).await;
    wait_status(&c, "fully replicated before the kill", healthy).await;
    let before = replicas(&c, &files).await;
    let seen = c.repair_events().await.unwrap().len();
    // Let the write leases run out (2 s lease + 5 s master grace): a chunk
    // under a lease cannot be cloned and would be repaired out of order.
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    let (a, b) = (p.server_id(1), p.server_id(2));
    let both: BTreeSet<u64> =
        before.iter().filter(|(_, r)| r.contains(&a) && r.contains(&b)).map(|(h, _)| *h).collect();
    let one = before.iter().filter(|(_, r)| r.contains(&a) != r.contains(&b)).count();
    assert!(both.len() > 10 && one > 10, "both {} one {one}", both.len());
    p.kill9(1);
    p.kill9(2);
    wait_status(&c, "a deficit of two replicas", |s| s.deficits.iter().any(|d| d.missing == 2 && d.chunks > 0)).await;
    wait_status(&c, "backlog drained", |s| healthy(s) && s.servers.iter().filter(|s| s.alive).count() == 4).await;
    verify(&c, &files, &[a, b]).await;
    let events: Vec<_> = c
        .repair_events()
        .await
        .unwrap()
        .into_iter()
        .skip(seen)
        .filter(|e| e.ok && e.reason() == RepairReason::Replicate)
        .collect();
    let twos: Vec<_> = events.iter().filter(|e| e.missing_at_start == 2).collect();
    let ones: Vec<_> = events.iter().filter(|e| e.missing_at_start == 1).collect();
    let two_handles: BTreeSet<u64> = twos.iter().map(|e| e.handle).collect();
    assert_eq!(two_handles, both, "every chunk left with one replica was repaired as missing two");
    let last_two = twos.iter().map(|e| e.seq).max().unwrap();
    let first_one = ones.iter().map(|e| e.seq).min().unwrap();
    assert!(
        last_two < first_one,
        "a chunk missing one replica was repaired (seq {first_one}) before one missing two (seq {last_two})"
    );
    assert_eq!(ones.len(), both.len() + one, "second copies plus single-loss chunks");
}
