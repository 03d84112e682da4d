//! Smoke tests of the client against an in-process cluster.

use gfs_client::{Client, Error, LocalCluster, LocalClusterOptions};
use gfs_common::shutdown::CancellationToken;

const CHUNK: u64 = 64 * 1024;

async fn cluster(dir: &std::path::Path) -> (LocalCluster, Client) {
    let mut opts = LocalClusterOptions::new(dir);
    opts.chunk_size = CHUNK;
    let c = LocalCluster::start(opts, CancellationToken::new()).await.unwrap();
    let mut cfg = c.client_config();
    cfg.zone = Some("zone-1".into());
    let client = Client::new(cfg).unwrap();
    (c, client)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_read_append_and_holes() {
    let dir = tempfile::tempdir().unwrap();
    let (c, client) = cluster(dir.path()).await;

    client.mkdir("/d", false).await.unwrap();
    let info = client.create("/d/f", None).await.unwrap();
    assert_eq!(info.chunk_size, CHUNK);
    assert!(matches!(client.create("/d/f", None).await, Err(Error::AlreadyExists { .. })));

    // A write spanning three chunks, then reads of arbitrary ranges.
    let data = pattern(150_000, 1);
    client.write_at("/d/f", 10_000, &data).await.unwrap();
    let st = client.stat("/d/f").await.unwrap();
    assert_eq!(st.info.size, 160_000);
    assert_eq!(st.chunks.len(), 3);
    let all = client.read_all("/d/f").await.unwrap();
    assert_eq!(all.len(), 160_000);
    assert!(all[..10_000].iter().all(|b| *b == 0));
    assert_eq!(&all[10_000..], &data[..]);
    assert_eq!(client.read_at("/d/f", 65_000, 2_000).await.unwrap(), &data[55_000..57_000]);
    // Reads stop at the end of the file.
    assert_eq!(client.read_at("/d/f", 159_990, 100).await.unwrap().len(), 10);
    assert!(client.read_at("/d/f", 170_000, 100).await.unwrap().is_empty());

    // A hole: write into chunk 5 only; chunks 3 and 4 read as zeros.
    client.write_at("/d/f", 5 * CHUNK + 7, b"tail").await.unwrap();
    let all = client.read_all("/d/f").await.unwrap();
    assert_eq!(all.len() as u64, 5 * CHUNK + 11);
    assert!(all[160_000..(5 * CHUNK + 7) as usize].iter().all(|b| *b == 0));
    assert_eq!(&all[(5 * CHUNK + 7) as usize..], b"tail");

    // Record appends from several tasks: every record lands whole.
    client.create("/d/log", None).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..4u8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut offs = Vec::new();
            for _ in 0..20 {
                let rec = pattern(3_000, t);
                offs.push((client.append("/d/log", &rec).await.unwrap(), t));
            }
            offs
        }));
    }
    let mut offsets = Vec::new();
    for t in tasks {
        offsets.extend(t.await.unwrap());
    }
    let log = client.read_all("/d/log").await.unwrap();
    for (off, t) in &offsets {
        let off = *off as usize;
        assert_eq!(&log[off..off + 3_000], &pattern(3_000, *t)[..]);
        assert_eq!(off as u64 / CHUNK, (off as u64 + 2_999) / CHUNK, "record crosses a chunk");
    }
    let too_big = vec![0u8; (CHUNK / 4 + 1) as usize];
    assert!(matches!(client.append("/d/log", &too_big).await, Err(Error::TooLarge { .. })));

    // put/get streaming.
    let big = pattern(1_000_000, 9);
    assert_eq!(client.put("/d/big", &big[..], None).await.unwrap(), 1_000_000);
    assert!(matches!(client.put("/d/big", &big[..], None).await, Err(Error::AlreadyExists { .. })));
    let mut out = Vec::new();
    assert_eq!(client.get("/d/big", &mut out, None).await.unwrap(), 1_000_000);
    assert_eq!(out, big);
    assert_eq!(client.put("/d/empty", &b""[..], None).await.unwrap(), 0);
    assert!(client.read_all("/d/empty").await.unwrap().is_empty());

    // Namespace.
    let names: Vec<_> = client.list("/d").await.unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    client.rename("/d/big", "/d/big2").await.unwrap();
    assert!(matches!(client.read_all("/d/big").await, Err(Error::NotFound { .. })));
    assert_eq!(client.read_all("/d/big2").await.unwrap(), big);
    assert!(matches!(client.delete("/d", false).await, Err(Error::DirectoryNotEmpty { .. })));
    client.delete("/d", true).await.unwrap();
    assert!(matches!(client.stat("/d").await, Err(Error::NotFound { .. })));
    assert!(matches!(client.write_at("/nope", 0, b"x").await, Err(Error::NotFound { .. })));
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.servers.iter().filter(|s| s.alive).count(), 3);

    c.stop().await.unwrap();
}
