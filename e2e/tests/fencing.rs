//! Forged master commands against an in-process cluster with a real master
//! (testkit): GrantLease, DeleteChunks, CloneChunk and ApplyMutation
//! stamped with a huge epoch are refused by every chunkserver instead of
//! fencing the real master, whose grants and deletes keep working, and the
//! data written before reads back byte-equal.

use std::time::Duration;

use gfs_common::Error;
use gfs_proto::chunk_service_client::ChunkServiceClient;
use gfs_proto::{ApplyMutationRequest, CloneChunkRequest, DeleteChunksRequest, GrantLeaseRequest, MutationKind};
use gfs_testkit::{Cluster, ClusterOptions};
use rand::{RngCore, SeedableRng, rngs::StdRng};

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn on_disk(cluster: &Cluster, handle: u64) -> usize {
    (0..cluster.chunkserver_count())
        .filter(|i| cluster.chunkserver_dir(*i).join("chunks").join(format!("{handle:016x}.chunk")).exists())
        .count()
}

fn refused_as_ahead(r: Result<impl std::fmt::Debug, tonic::Status>, epoch: u64, what: &str) {
    let e = Error::from(r.expect_err(what));
    let want = format!("ahead of the master group's epoch {epoch}");
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains(&want)), "{what}: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_huge_epochs_are_refused_and_the_real_master_keeps_working() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let c = cluster.client();
    let first = data(1, 1_500_000);
    c.create("/f", None).await.unwrap();
    c.write_at("/f", 0, &first).await.unwrap();
    let epoch = c.cluster_status().await.unwrap().epoch;
    assert!(epoch > 0);
    let chunks = c.stat("/f").await.unwrap().chunks;
    assert_eq!(chunks.len(), 2);
    for ch in &chunks {
        assert_eq!(ch.replicas.len(), 3);
        for (i, r) in ch.replicas.iter().enumerate() {
            let mut cs = ChunkServiceClient::connect(format!("http://{}", r.address)).await.unwrap();
            let (handle, version) = (ch.handle, ch.version);
            let grant =
                GrantLeaseRequest { handle, version: version + 5, lease_ms: 60_000, create: false, epoch: u64::MAX };
            refused_as_ahead(cs.grant_lease(grant).await, epoch, "forged grant");
            let delete = DeleteChunksRequest { handles: vec![handle], epoch: u64::MAX - 1 };
            refused_as_ahead(cs.delete_chunks(delete).await, epoch, "forged delete");
            let other = ch.replicas[(i + 1) % 3].address.clone();
            let clone =
                CloneChunkRequest { handle, version, sources: vec![other], epoch: u64::MAX, ..Default::default() };
            refused_as_ahead(cs.clone_chunk(clone).await, epoch, "forged clone");
            let pad = ApplyMutationRequest {
                handle,
                version,
                serial: 1,
                kind: MutationKind::Pad as i32,
                offset: 1 << 20,
                epoch: u64::MAX,
                // A valid token: only the epoch may refuse it.
                token: Some(cluster.token(handle, version, gfs_common::token::WRITE)),
                ..Default::default()
            };
            refused_as_ahead(cs.apply_mutation(pad).await, epoch, "forged pad");
            // The forged epochs were not adopted: the real one still passes
            // (an empty delete changes nothing).
            cs.delete_chunks(DeleteChunksRequest { handles: vec![], epoch }).await.unwrap();
        }
        assert_eq!(on_disk(&cluster, ch.handle), 3);
    }
    assert!(c.read_all("/f").await.unwrap() == first, "data written before reads back");

    // The real master's grants: a new file (new chunks), and more writes.
    let second = data(2, 700_000);
    c.create("/g", None).await.unwrap();
    c.write_at("/g", 0, &second).await.unwrap();
    c.write_at("/f", 1_000, b"still the real master").await.unwrap();
    let mut want = first.clone();
    want[1_000..1_021].copy_from_slice(b"still the real master");
    assert!(c.read_all("/f").await.unwrap() == want);
    assert!(c.read_all("/g").await.unwrap() == second);

    // Its deletes: a deleted file's hidden entry deleted too leaves every disk.
    let handles: Vec<u64> = c.stat("/g").await.unwrap().chunks.iter().map(|ch| ch.handle).collect();
    c.delete("/g", false).await.unwrap();
    let hidden: Vec<String> = c
        .list_hidden("/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .filter(|p| p.starts_with("/.gfs-deleted."))
        .collect();
    assert_eq!(hidden.len(), 1, "{hidden:?}");
    c.delete(&hidden[0], false).await.unwrap();
    let mut gone = false;
    for _ in 0..200 {
        if handles.iter().all(|h| on_disk(&cluster, *h) == 0) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the real master's deletes did not reach the chunkservers");
    assert!(c.read_all("/f").await.unwrap() == want);
    cluster.shutdown().await.unwrap();
}
