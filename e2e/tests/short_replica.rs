//! A replica that lags (fewer bytes than the master knows the chunk has,
//! same version, consistent metadata) is never read as zeros: the client
//! takes the data from another replica, or fails clearly when none has it.

use gfs_chunkserver::meta::{self, Meta};
use gfs_client::{Client, ClientConfig, Error};
use gfs_common::BLOCK_SIZE;
use gfs_testkit::{Cluster, ClusterOptions};
use rand::{RngCore, SeedableRng, rngs::StdRng};

const KIB: u64 = 1024;

fn data(seed: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Leaves replica `handle` of chunkserver `i` (stopped) as a replica that
/// missed every write past `keep` bytes has it: the data file cut there
/// and metadata (same version) whose length and checksums say so.
fn make_lagging(cluster: &Cluster, i: usize, handle: u64, keep: u64) {
    let chunks = cluster.chunkserver_dir(i).join("chunks");
    let data_path = chunks.join(format!("{handle:016x}.chunk"));
    let meta_path = chunks.join(format!("{handle:016x}.meta"));
    let old = meta::load(&std::fs::File::open(&meta_path).unwrap()).unwrap();
    let mut bytes = std::fs::read(&data_path).unwrap();
    assert!(bytes.len() as u64 > keep, "the replica is not longer than {keep} bytes");
    bytes.truncate(keep as usize);
    std::fs::write(&data_path, &bytes).unwrap();
    let crcs = bytes.chunks(BLOCK_SIZE as usize).map(crc32c::crc32c).collect();
    let lagging = Meta { version: old.version, length: keep, crcs, seq: 1 };
    let mut slot = vec![0u8; meta::slot_offset(1) as usize];
    slot.extend(meta::encode_slot(&lagging));
    std::fs::write(&meta_path, slot).unwrap();
}

async fn replicas(c: &Client, path: &str) -> Vec<String> {
    c.stat(path).await.unwrap().chunks[0].replicas.iter().map(|r| r.address.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_is_never_read_as_zeros() {
    let o = ClusterOptions { heartbeat_ms: 100, dead_after_ms: 1_000, ..Default::default() };
    let mut cluster = Cluster::start(o).await.unwrap();
    let c = cluster.client();
    let want = data(1, 700 * KIB);
    c.put("/f", &want[..], None).await.unwrap();
    // A file with a hole inside its chunk (written at an offset): zeros
    // there are data every replica has.
    c.create("/holes", None).await.unwrap();
    c.write_at("/holes", 300 * KIB, b"tail").await.unwrap();
    let handle = c.stat("/f").await.unwrap().chunks[0].handle;

    // Chunkserver 0 lags: it has the first 200 KiB only, at the same version.
    let lagging = cluster.chunkserver_addr(0).unwrap();
    cluster.stop_chunkserver(0).await.unwrap();
    make_lagging(&cluster, 0, handle, 200 * KIB);
    cluster.start_chunkserver(0).await.unwrap();
    gfs_e2e::wait_for("the lagging replica to be listed again", 30, || async {
        replicas(&c, "/f").await.contains(&lagging)
    })
    .await;
    assert_eq!(c.stat("/f").await.unwrap().info.size, 700 * KIB, "the master's length is the full one");

    // A client in chunkserver 0's zone reads it first: the short answer is
    // refused and another replica serves the rest.
    let mut cfg = ClientConfig::new(cluster.master_addr());
    cfg.zone = Some("zone-0".into());
    let near = Client::new(cfg).unwrap();
    assert!(near.read_all("/f").await.unwrap() == want, "the read came back wrong (padded with zeros?)");
    assert!(near.read_at("/f", 650 * KIB, 100 * KIB).await.unwrap() == want[650 * 1024..], "tail read");
    let mut holes = vec![0u8; 300 * 1024];
    holes.extend_from_slice(b"tail");
    assert_eq!(near.read_all("/holes").await.unwrap(), holes);
    assert!(near.read_at("/f", 700 * KIB, 10).await.unwrap().is_empty(), "past the end is short");

    // Only the lagging replica left: what it has still reads; what it
    // lacks is a clear error, not zeros.
    cluster.stop_chunkserver(1).await.unwrap();
    cluster.stop_chunkserver(2).await.unwrap();
    gfs_e2e::wait_for("the other replicas to be declared dead", 30, || async {
        replicas(&c, "/f").await == vec![lagging.clone()]
    })
    .await;
    assert!(near.read_at("/f", 0, 200 * KIB).await.unwrap() == want[..200 * 1024]);
    let e = near.read_all("/f").await.unwrap_err();
    match &e {
        Error::Unavailable(m) => {
            assert!(m.contains("no replica has the") && m.contains(&format!("{lagging} has")), "{m}")
        }
        other => panic!("expected a clear error, got {other:?}"),
    }
    cluster.shutdown().await.unwrap();
}
