//! A chunkserver whose disk fills up, in an in-process cluster (testkit):
//! one chunkserver's data dir is a small tmpfs.

use std::time::Duration;

use gfs_client::{Client, ClusterStatusResponse, Error, ServerStatus};
use gfs_proto::ReadRequest;
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_testkit::{Cluster, ClusterOptions, Tmpfs};
use rand::{RngCore, SeedableRng, rngs::StdRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn data(seed: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn server<'a>(st: &'a ClusterStatusResponse, id: &str) -> &'a ServerStatus {
    st.servers.iter().find(|s| s.server.as_ref().is_some_and(|i| i.id == id)).expect("server listed")
}

async fn replicas(c: &Client, path: &str) -> Vec<String> {
    let st = c.stat(path).await.unwrap();
    let mut v: Vec<String> = st.chunks.iter().flat_map(|l| l.replicas.iter().map(|r| r.address.clone())).collect();
    v.sort();
    v
}

fn chunk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("chunks")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_chunkserver_fails_the_put_cleanly_reports_full_and_gets_no_new_chunks() {
    // 4 MiB chunks on a 3 MiB disk: one chunk can outgrow it.
    let fs = Tmpfs::mount(3 * MIB);
    let small_dir = fs.path().join("cs0");
    let mut o = ClusterOptions { chunk_size: 4 * MIB, heartbeat_ms: 100, ..Default::default() };
    o.disk_reserve_bytes = Some(512 * KIB);
    o.heal.scan_ms = 100;
    o.chunkserver_dirs.insert(0, small_dir.clone());
    let cluster = Cluster::start(o).await.unwrap();
    let c = cluster.client();
    let (small, small_id) = (cluster.chunkserver_addr(0).unwrap(), cluster.chunkserver_id(0).unwrap());

    // Acknowledged data on every server, the small one included.
    let a = data(1, MIB);
    c.put("/a", &a[..], None).await.unwrap();
    assert!(replicas(&c, "/a").await.contains(&small));

    // More than the small disk holds: the put fails naming it, and leaves
    // neither name, no hidden entry and no chunk behind.
    let e = c.put("/big", &data(2, 3 * MIB)[..], None).await.unwrap_err();
    assert!(matches!(&e, Error::NoSpace { server: Some(s), .. } if *s == small), "{e:?}");
    assert!(e.to_string().starts_with(&format!("no space on {small}: ")), "{e}");
    for p in ["/big", "/big._COPYING_"] {
        assert!(matches!(c.stat(p).await, Err(Error::NotFound { .. })), "{p} exists");
    }
    let names: Vec<String> = c.list_with("/", true).await.unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(names, vec!["/a".to_string()]);
    let st = c.cluster_status().await.unwrap();
    assert_eq!(st.chunk_count, 1, "the failed put's chunk is still known");
    for i in 0..3 {
        assert_eq!(server(&st, &cluster.chunkserver_id(i).unwrap()).chunk_count, 1, "chunkserver {i}");
    }
    // Its replicas are deleted at the next heartbeats (on the small disk:
    // only /a's data and metadata files remain).
    gfs_e2e::wait_for("the failed put's replica to leave the small disk", 30, || async {
        chunk_files(&small_dir) == 2
    })
    .await;

    // /a still reads back, straight from the small server too (verified).
    let loc = c.stat("/a").await.unwrap().chunks[0].clone();
    let mut cs = ChunkServiceClient::connect(format!("http://{small}")).await.unwrap();
    let token = Some(cluster.token(loc.handle, loc.version, gfs_common::token::READ));
    let req = ReadRequest { handle: loc.handle, version: loc.version, offset: 0, length: 2 * MIB, token };
    assert!(cs.read(req).await.unwrap().into_inner().data == a[..]);

    // Acknowledged data that leaves it below its reserve: it reports full.
    c.put("/fill", &data(3, 1600 * KIB)[..], None).await.unwrap();
    assert!(replicas(&c, "/fill").await.contains(&small));
    gfs_e2e::wait_for("the small server to report itself full", 30, || async {
        server(&c.cluster_status().await.unwrap(), &small_id).full
    })
    .await;

    // New files go to the others only, and no repair copies to it.
    let new = data(4, MIB);
    c.put("/new", &new[..], None).await.unwrap();
    let placed = replicas(&c, "/new").await;
    assert_eq!(placed.len(), 2, "{placed:?}");
    assert!(!placed.contains(&small), "a new chunk went to the full server");
    assert_eq!(c.read_all("/new").await.unwrap(), new);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let events = c.repair_events().await.unwrap();
    assert!(!events.iter().any(|e| e.target == small_id), "a clone went to the full server: {events:?}");

    // Space freed (an immediate delete frees it at the next heartbeat):
    // no longer full, repair completes /new there, and puts use it again.
    c.delete_now("/fill", false).await.unwrap();
    gfs_e2e::wait_for("the small server to have room again", 30, || async {
        !server(&c.cluster_status().await.unwrap(), &small_id).full
    })
    .await;
    gfs_e2e::wait_for("/new to be re-replicated to the small server", 30, || async {
        replicas(&c, "/new").await.contains(&small)
    })
    .await;
    let again = data(5, 256 * KIB);
    c.put("/again", &again[..], None).await.unwrap();
    assert!(replicas(&c, "/again").await.contains(&small));
    assert_eq!(c.read_all("/again").await.unwrap(), again);
    assert_eq!(c.read_all("/a").await.unwrap(), a);
    cluster.shutdown().await.unwrap();
}
