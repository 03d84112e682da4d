//! Self-healing against an in-process cluster (testkit): decommission
//! under writes, scrubbing, garbage collection, stale replicas, bad input.

use gfs_client::{Client, ClusterStatusResponse, ServerState};
use gfs_proto::ReadRequest;
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_testkit::{Cluster, ClusterOptions};
use rand::{RngCore, SeedableRng, rngs::StdRng};

const CHUNK: u64 = 64 * 1024;

fn opts(servers: usize) -> ClusterOptions {
    let mut o = ClusterOptions {
        chunkservers: servers,
        chunk_size: CHUNK,
        heartbeat_ms: 100,
        dead_after_ms: 1_000,
        lease_ms: 1_000,
        ..Default::default()
    };
    o.heal.scan_ms = 100;
    o
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

async fn status(c: &Client) -> ClusterStatusResponse {
    c.cluster_status().await.unwrap()
}

fn state_of(st: &ClusterStatusResponse, id: &str) -> ServerState {
    st.servers.iter().find(|s| s.server.as_ref().is_some_and(|i| i.id == id)).map(|s| s.state()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decommission_drains_while_a_client_writes_then_refuses_the_last_servers() {
    let cluster = Cluster::start(opts(4)).await.unwrap();
    let c = cluster.client();
    let mut files = vec![];
    for i in 0..4 {
        let d = data(i, (20 * CHUNK - 7) as usize);
        c.create(&format!("/old{i}"), None).await.unwrap();
        c.write_at(&format!("/old{i}"), 0, &d).await.unwrap();
        files.push((format!("/old{i}"), d));
    }
    let writer = {
        let c = cluster.client();
        tokio::spawn(async move {
            let mut out = vec![];
            for i in 0..8 {
                let d = data(100 + i, (10 * CHUNK + 3) as usize);
                let p = format!("/new{i}");
                c.create(&p, None).await?;
                c.write_at(&p, 0, &d).await?;
                out.push((p, d));
            }
            Ok::<_, gfs_client::Error>(out)
        })
    };
    let victim = cluster.chunkserver_id(0).unwrap();
    let st = c.decommission(&victim).await.unwrap();
    assert_eq!(st.state(), ServerState::Decommissioning);
    files.extend(writer.await.unwrap().expect("the client saw no error during the drain"));
    gfs_e2e::wait_for("decommissioned", 60, || async {
        state_of(&status(&c).await, &victim) == ServerState::Decommissioned
    })
    .await;
    for (p, d) in &files {
        assert!(c.read_all(p).await.unwrap() == *d, "{p} differs");
        for ch in c.stat(p).await.unwrap().chunks {
            let others = ch.replicas.iter().filter(|r| r.id != victim).count();
            assert!(others >= 3, "chunk {} has {others} replicas besides the drained server", ch.handle);
        }
    }
    // Bad input: unknown server; the drain of the last three servers.
    let err = c.decommission("no-such-server").await.unwrap_err().to_string();
    assert!(err.contains("no-such-server") && err.contains("not found"), "{err}");
    let other = cluster.chunkserver_id(1).unwrap();
    let err = c.decommission(&other).await.unwrap_err().to_string();
    assert!(err.contains("refusing") && err.contains("needs 3 replicas"), "{err}");
    assert_eq!(c.recommission(&victim).await.unwrap().state(), ServerState::Live);
    let err = c.mark_lost("nope").await.unwrap_err().to_string();
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scrubber_finds_a_corrupt_replica_and_it_is_replaced_without_a_read() {
    let mut o = opts(4);
    o.scrub_interval_ms = 20;
    o.scrub_idle_ms = 200;
    let cluster = Cluster::start(o).await.unwrap();
    let c = cluster.client();
    let d = data(9, (4 * CHUNK) as usize);
    c.create("/s", None).await.unwrap();
    c.write_at("/s", 0, &d).await.unwrap();
    let ch = c.stat("/s").await.unwrap().chunks[2].clone();
    let addr = ch.replicas[0].address.clone();
    let bad = cluster.chunkserver_index(&addr).unwrap();
    let path = cluster.chunk_path(bad, ch.handle).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let h = ch.handle;
    gfs_e2e::wait_for("the corrupt replica replaced", 60, || async {
        let ev = c.repair_events().await.unwrap();
        ev.iter().any(|e| e.handle == h && e.ok) && status(&c).await.replication_backlog_chunks == 0
    })
    .await;
    let now = c.stat("/s").await.unwrap().chunks[2].clone();
    assert_eq!(now.replicas.len(), 3);
    assert!(c.read_all("/s").await.unwrap() == d);
}

fn on_disk(cluster: &Cluster, handle: u64) -> usize {
    (0..cluster.chunkserver_count())
        .filter(|i| cluster.chunkserver_dir(*i).join("chunks").join(format!("{handle:016x}.chunk")).exists())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_file_is_restorable_until_the_delay_then_leaves_every_disk() {
    let mut o = opts(3);
    o.heal.gc_delay_ms = 3_000;
    let cluster = Cluster::start(o).await.unwrap();
    let c = cluster.client();
    let d = data(5, (3 * CHUNK) as usize);
    c.mkdir("/dir", false).await.unwrap();
    c.create("/dir/g", None).await.unwrap();
    c.write_at("/dir/g", 0, &d).await.unwrap();
    let handles: Vec<u64> = c.stat("/dir/g").await.unwrap().chunks.iter().map(|ch| ch.handle).collect();
    c.delete("/dir/g", false).await.unwrap();
    assert!(c.list("/dir").await.unwrap().is_empty());
    let hidden = c.list_hidden("/dir").await.unwrap();
    assert_eq!(hidden.len(), 1);
    assert!(hidden[0].path.starts_with("/dir/.gfs-deleted."), "{}", hidden[0].path);
    c.rename(&hidden[0].path, "/dir/g").await.unwrap();
    assert!(c.read_all("/dir/g").await.unwrap() == d, "restored file reads back");
    c.delete("/dir", true).await.unwrap();
    assert!(c.list("/").await.unwrap().is_empty());
    assert!(handles.iter().all(|h| on_disk(&cluster, *h) == 3), "chunks kept until the delay passes");
    gfs_e2e::wait_for("chunks gone from every disk", 60, || async {
        handles.iter().all(|h| on_disk(&cluster, *h) == 0)
    })
    .await;
    assert!(c.list_hidden("/").await.unwrap().is_empty());
    let err = c.create("/.gfs-deleted.1.x", None).await.unwrap_err().to_string();
    assert!(err.contains("reserved"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_replicas_of_a_restarted_server_are_deleted_and_never_served() {
    let mut cluster = Cluster::start(opts(3)).await.unwrap();
    let c = cluster.client();
    c.create("/st", None).await.unwrap();
    c.write_at("/st", 0, &data(1, (3 * CHUNK) as usize)).await.unwrap();
    let old = c.stat("/st").await.unwrap().chunks;
    let addr = cluster.chunkserver_addr(0).unwrap();
    let id = cluster.chunkserver_id(0).unwrap();
    cluster.stop_chunkserver(0).await.unwrap();
    gfs_e2e::wait_for("server dead", 60, || async { state_of(&status(&c).await, &id) == ServerState::Dead }).await;
    let new = data(2, (3 * CHUNK) as usize);
    // A lease held by the stopped primary must run out first (documented).
    gfs_e2e::wait_for("the write to succeed", 60, || async { c.write_at("/st", 0, &new).await.is_ok() }).await;
    cluster.start_chunkserver(0).await.unwrap();
    gfs_e2e::wait_for("full replication at the new version", 60, || async {
        let st = c.stat("/st").await.unwrap();
        st.chunks.iter().all(|ch| ch.replicas.len() == 3) && status(&c).await.replication_backlog_chunks == 0
    })
    .await;
    let mut cs = ChunkServiceClient::connect(format!("http://{addr}")).await.unwrap();
    for (o, n) in old.iter().zip(c.stat("/st").await.unwrap().chunks) {
        assert!(n.version > o.version);
        // A valid token for the old version: only the version may refuse it.
        let token = Some(cluster.token(o.handle, o.version, gfs_common::token::READ));
        let r = cs.read(ReadRequest { handle: o.handle, version: o.version, offset: 0, length: 10, token }).await;
        assert!(r.is_err(), "old version {} of chunk {} still served", o.version, o.handle);
    }
    for _ in 0..5 {
        assert!(c.read_all("/st").await.unwrap() == new);
    }
}

/// Live replicas of each chunk of `path`, as the master lists them.
async fn replica_counts(c: &Client, path: &str) -> Vec<usize> {
    c.stat(path).await.unwrap().chunks.iter().map(|ch| ch.replicas.len()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setrep_adds_and_drops_replicas_and_refuses_what_cannot_be_held() {
    let cluster = Cluster::start(opts(4)).await.unwrap();
    let c = cluster.client();
    let d = data(9, (3 * CHUNK + 11) as usize);
    c.create("/r", None).await.unwrap();
    c.write_at("/r", 0, &d).await.unwrap();
    let handles: Vec<u64> = c.stat("/r").await.unwrap().chunks.iter().map(|ch| ch.handle).collect();
    assert_eq!(replica_counts(&c, "/r").await, vec![3; 4]);

    // Up: repair makes a fourth replica of every chunk, on disk too.
    assert_eq!(c.set_replication("/r", 4, false).await.unwrap().replication, 4);
    gfs_e2e::wait_for("4 replicas of every chunk", 60, || async {
        replica_counts(&c, "/r").await == vec![4; 4] && handles.iter().all(|h| on_disk(&cluster, *h) == 4)
    })
    .await;
    // Down: the extra replicas are dropped from the table and the disks.
    assert_eq!(c.set_replication("/r", 2, false).await.unwrap().replication, 2);
    gfs_e2e::wait_for("2 replicas of every chunk", 60, || async {
        replica_counts(&c, "/r").await == vec![2; 4] && handles.iter().all(|h| on_disk(&cluster, *h) == 2)
    })
    .await;
    assert!(c.read_all("/r").await.unwrap() == d, "reads back after setrep");

    // Above the chunkservers in service: refused, and nothing changes...
    let err = c.set_replication("/r", 5, false).await.unwrap_err().to_string();
    assert!(err.contains("only 4 chunkservers"), "{err}");
    assert_eq!(c.stat("/r").await.unwrap().info.replication, 2);
    // ...unless asked for: the file is then under-replicated, and says so.
    c.set_replication("/r", 5, true).await.unwrap();
    gfs_e2e::wait_for("4 of 5 replicas, backlog counted", 60, || async {
        let st = status(&c).await;
        replica_counts(&c, "/r").await == vec![4; 4] && st.under_replicated_chunks == 4
    })
    .await;
    // Bad input: a directory, a goal outside 1..=16, a missing file.
    c.mkdir("/dir", false).await.unwrap();
    let err = c.set_replication("/dir", 2, false).await.unwrap_err().to_string();
    assert!(err.contains("not a file"), "{err}");
    for bad in [0, 17] {
        let err = c.set_replication("/r", bad, true).await.unwrap_err().to_string();
        assert!(err.contains("outside 1..=16"), "{err}");
    }
    let err = c.set_replication("/nope", 2, false).await.unwrap_err().to_string();
    assert!(err.contains("/nope"), "{err}");
    assert!(c.read_all("/r").await.unwrap() == d, "nothing lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_master_never_answers_a_read_with_a_short_size() {
    let mut cluster = Cluster::start(opts(3)).await.unwrap();
    let c = cluster.client();
    let d = data(11, (2 * CHUNK + 500) as usize);
    c.create("/s", None).await.unwrap();
    c.write_at("/s", 0, &d).await.unwrap();
    // Chunk lengths are soft state: a restarted master learns them from
    // reports, and here no chunkserver is there to report.
    for i in 0..3 {
        cluster.stop_chunkserver(i).await.unwrap();
    }
    cluster.restart_master().await.unwrap();
    // Past the warm-up (1 s here), the read is refused, not served short.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let mut cfg = gfs_client::ClientConfig::new(cluster.master_addr());
    cfg.failover_timeout = std::time::Duration::from_secs(2);
    let impatient = Client::new(cfg).unwrap();
    let err = impatient.read_all("/s").await.expect_err("a read with unknown chunk lengths");
    assert!(err.to_string().contains("has no live replica known to this master"), "{err}");
    // Metadata still answers.
    assert_eq!(c.stat("/s").await.unwrap().chunks.len(), 3);
    // A reader that started before the chunkservers came back waits for
    // them (within the client's failover timeout) and gets every byte.
    let reader = tokio::spawn(async move { c.read_all("/s").await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for i in 0..3 {
        cluster.start_chunkserver(i).await.unwrap();
    }
    let back = reader.await.unwrap().expect("read after the reports");
    assert!(back == d, "read {} bytes, wrote {}", back.len(), d.len());
}
