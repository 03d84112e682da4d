//! A chunkserver and a group of fake masters: Register and Heartbeat follow
//! `NotLeader` hints and failures to the leader, re-register at a new leader
//! and adopt its higher epoch.

mod common;

use common::*;
use gfs_common::Error;
use gfs_common::shutdown::CancellationToken;
use gfs_proto::*;

fn registered_at(m: &FakeMaster, id: &str) -> usize {
    m.seen.lock().unwrap().registers.iter().filter(|r| r.server.as_ref().is_some_and(|s| s.id == id)).count()
}

fn heartbeats(m: &FakeMaster) -> usize {
    m.seen.lock().unwrap().heartbeats.len()
}

fn redirected(m: &FakeMaster) -> Vec<&'static str> {
    m.seen.lock().unwrap().redirected.clone()
}

async fn grant(addr: &str, handle: u64, epoch: u64) -> Result<(), Error> {
    let req = GrantLeaseRequest { handle, version: 1, lease_ms: 0, create: true, epoch };
    client(addr).await.grant_lease(req).await.map(|_| ()).map_err(Error::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_follows_the_not_leader_hint() {
    let token = CancellationToken::new();
    let b = FakeMaster { epoch: 3, ..Default::default() };
    let b_addr = start_master(b.clone(), token.clone()).await;
    let a = FakeMaster { epoch: 3, ..Default::default() };
    a.set_not_leader(Some(Some(b_addr.clone())));
    let a_addr = start_master(a.clone(), token.clone()).await;

    // Only the follower is configured: the leader comes from its hint.
    let dir = tempfile::tempdir().unwrap();
    let cs = gfs_chunkserver::start(config(&a_addr, dir.path()), token.clone()).await.unwrap();
    assert!(eventually(|| registered_at(&b, &cs.id) == 1 && heartbeats(&b) >= 3).await, "not registered at b");
    assert!(cs.is_registered());
    assert!(a.seen.lock().unwrap().registers.is_empty());
    // One redirect, then every call goes straight to the leader.
    assert_eq!(redirected(&a), vec!["register"]);
    assert!(a.seen.lock().unwrap().heartbeats.is_empty());
    // The registration's epoch is adopted: older grants are fenced.
    assert_eq!(grant(&cs.addr.to_string(), 1, 2).await.unwrap_err(), Error::StaleEpoch { have: 2, seen: 3 });
    token.cancel();
    cs.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_gets_a_full_report_and_its_higher_epoch_is_adopted() {
    let token = CancellationToken::new();
    let a = FakeMaster { epoch: 1, known_only: true, ..Default::default() };
    let a_addr = start_master(a.clone(), token.clone()).await;
    let b = FakeMaster { epoch: 2, known_only: true, ..Default::default() };
    b.set_not_leader(Some(Some(a_addr.clone())));
    let b_addr = start_master(b.clone(), token.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let cs = gfs_chunkserver::start(config(&format!("{a_addr},{b_addr}"), dir.path()), token.clone()).await.unwrap();
    let cs_addr = cs.addr.to_string();
    assert!(eventually(|| registered_at(&a, &cs.id) == 1).await, "not registered at a");
    grant(&cs_addr, 7, 1).await.unwrap();
    assert!(eventually(|| heartbeats(&a) >= 2).await);

    // Leadership moves to b (new term 2); a now redirects to it.
    b.set_not_leader(None);
    a.set_not_leader(Some(Some(b_addr.clone())));
    assert!(eventually(|| registered_at(&b, &cs.id) == 1).await, "not registered at b");
    let report = b.seen.lock().unwrap().registers[0].clone();
    assert_eq!(report.chunks.iter().map(|c| c.handle).collect::<Vec<_>>(), vec![7], "full chunk report");
    // b did not know the server: its first heartbeat got `reregister`.
    assert!(heartbeats(&b) >= 1);
    assert!(redirected(&a).contains(&"heartbeat"));
    assert!(eventually(|| heartbeats(&b) >= 4).await, "heartbeats go on at b");
    assert!(cs.is_registered());
    // Term 2 is adopted: grants stamped by the old leader are fenced.
    assert_eq!(grant(&cs_addr, 8, 1).await.unwrap_err(), Error::StaleEpoch { have: 1, seen: 2 });
    grant(&cs_addr, 8, 2).await.unwrap();
    token.cancel();
    cs.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_leader_is_replaced_by_the_next_master() {
    let a_token = CancellationToken::new();
    let token = CancellationToken::new();
    let a = FakeMaster { epoch: 1, known_only: true, ..Default::default() };
    let a_addr = start_master(a.clone(), a_token.clone()).await;
    let b = FakeMaster { epoch: 2, known_only: true, ..Default::default() };
    // An election is going on at b: no leader known.
    b.set_not_leader(Some(None));
    let b_addr = start_master(b.clone(), token.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let cs = gfs_chunkserver::start(config(&format!("{a_addr},{b_addr}"), dir.path()), token.clone()).await.unwrap();
    assert!(eventually(|| registered_at(&a, &cs.id) == 1 && heartbeats(&a) >= 1).await);

    // a dies; b keeps answering NotLeader(None) for a while, then wins.
    a_token.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(registered_at(&b, &cs.id), 0);
    b.set_not_leader(None);
    assert!(eventually(|| registered_at(&b, &cs.id) == 1 && heartbeats(&b) >= 2).await, "not registered at b");
    assert!(redirected(&b).iter().any(|r| *r == "heartbeat" || *r == "register"), "b was tried during the election");
    assert!(cs.is_registered());
    token.cancel();
    cs.wait().await.unwrap();
}

fn leader_epochs(m: &FakeMaster) -> usize {
    m.seen.lock().unwrap().leader_epochs
}

fn is_ahead(e: &Error, known: u64) -> bool {
    matches!(e, Error::InvalidArgument(m) if m.contains(&format!("ahead of the master group's epoch {known}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_epoch_is_adopted_only_once_the_leader_vouches_for_it() {
    let token = CancellationToken::new();
    // Heartbeat replies keep saying 1: a new leader's grant is faster.
    let m = FakeMaster { epoch: 1, ..Default::default() };
    let m_addr = start_master(m.clone(), token.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cs = gfs_chunkserver::start(config(&m_addr, dir.path()), token.clone()).await.unwrap();
    let cs_addr = cs.addr.to_string();
    // Registered on the chunkserver's side too: the fake master counts the
    // request before the chunkserver has read the epoch in its answer.
    assert!(eventually(|| registered_at(&m, &cs.id) == 1 && cs.is_registered()).await);
    grant(&cs_addr, 1, 1).await.unwrap();
    assert_eq!(leader_epochs(&m), 0, "the known epoch needs no confirmation");

    // The leader vouches for 2: adopted, and 1 is fenced from then on.
    m.vouch.store(2, std::sync::atomic::Ordering::Relaxed);
    grant(&cs_addr, 2, 2).await.unwrap();
    assert_eq!(leader_epochs(&m), 1);
    assert_eq!(grant(&cs_addr, 3, 1).await.unwrap_err(), Error::StaleEpoch { have: 1, seen: 2 });
    // 3 is ahead of the leader's epoch: refused, and 2 stays current.
    let e = grant(&cs_addr, 4, 3).await.unwrap_err();
    assert!(is_ahead(&e, 2), "{e:?}");
    grant(&cs_addr, 5, 2).await.unwrap();
    token.cancel();
    cs.wait().await.unwrap();
}

/// A forged GrantLease/DeleteChunks with a huge epoch is refused instead
/// of fencing the real master; a flood of them costs the leader a bounded
/// number of confirmations; the real master's grants, writes and deletes
/// go on and the data reads back byte-equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_huge_epoch_is_refused_and_the_real_master_keeps_working() {
    let c = TestCluster::start(2, |_, _| {}).await;
    assert!(eventually(|| c.master.seen.lock().unwrap().registers.len() == 2).await);
    grant_all(&c, 5, 1, 0, 1).await;
    let data = random_bytes(200_000, 5);
    push(&mut c.client(0).await, 1, vec![c.addr(1)], &data).await.unwrap();
    let len = data.len() as u64;
    let w = WriteRequest {
        handle: 5,
        version: 1,
        offset: 0,
        data_id: 1,
        length: len,
        secondaries: vec![c.addr(1)],
        epoch: 1,
        token: token(5, 1, RW),
    };
    c.client(0).await.write(w).await.unwrap();

    for i in 0..2 {
        let forged = GrantLeaseRequest { handle: 5, version: 9, lease_ms: 60_000, create: false, epoch: u64::MAX };
        let e = Error::from(c.client(i).await.grant_lease(forged).await.unwrap_err());
        assert!(is_ahead(&e, 1), "{e:?}");
        let forged = DeleteChunksRequest { handles: vec![5], epoch: u64::MAX };
        let e = Error::from(c.client(i).await.delete_chunks(forged).await.unwrap_err());
        assert!(is_ahead(&e, 1), "{e:?}");
        assert!(c.servers[i].chunk_path(5).exists());
    }
    // A flood: at most one confirmation per server per 200 ms.
    let before = leader_epochs(&c.master);
    let started = std::time::Instant::now();
    let calls = (0..64u64).map(|i| {
        let addr = c.addr(i as usize % 2);
        async move {
            let forged = GrantLeaseRequest { handle: 5, version: 9, lease_ms: 0, create: false, epoch: u64::MAX - i };
            client(&addr).await.grant_lease(forged).await
        }
    });
    let results = futures::future::join_all(calls).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|r| r.is_err()), "a forged grant was accepted");
    let asked = leader_epochs(&c.master) - before;
    let bound = 2 * (1 + elapsed.as_millis() / 200) as usize;
    assert!(asked <= bound, "{asked} confirmations for 64 forged requests in {elapsed:?}");

    // The real master (epoch 1): a new version with server 1 as primary,
    // a write, then a delete.
    grant_all(&c, 5, 2, 1, 1).await;
    let more = random_bytes(50_000, 6);
    push(&mut c.client(1).await, 2, vec![c.addr(0)], &more).await.unwrap();
    let w = WriteRequest {
        handle: 5,
        version: 2,
        offset: len,
        data_id: 2,
        length: more.len() as u64,
        secondaries: vec![c.addr(0)],
        epoch: 1,
        token: token(5, 2, RW),
    };
    c.client(1).await.write(w).await.unwrap();
    let want = [&data[..], &more[..]].concat();
    for i in 0..2 {
        assert_eq!(read(&mut c.client(i).await, 5, 2, 0, 1 << 20).await.unwrap(), want, "server {i}");
    }
    c.client(0).await.delete_chunks(DeleteChunksRequest { handles: vec![5], epoch: 1 }).await.unwrap();
    assert!(!c.servers[0].chunk_path(5).exists());
    assert_eq!(read(&mut c.client(1).await, 5, 2, 0, 10).await.unwrap().len(), 10);
}
