//! A damaged Raft log with real `gfs-master` processes: a flipped byte in
//! the middle of a stopped master's log makes the next start exit with an
//! error naming the file and offset (changing nothing), `check-log`
//! reports it, and a damaged member of a group is rebuilt from the others
//! (remove it, wipe its data dir, start it with `--join`, add it again: it
//! installs a snapshot).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use gfs_client::Client;
use gfs_e2e::{Proc, bin, free_addr};
use gfs_proto::master_service_client::MasterServiceClient;
use gfs_proto::{MasterRole, MasterStatusRequest, MasterStatusResponse};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The master's state files (log segments, vote, purged, checkpoint) with
/// their bytes; the lock file is left out (it records the pid).
fn state_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
        .filter(|(n, _)| n.starts_with("raft-") || n == "checkpoint")
        .map(|(n, p)| (n, std::fs::read(p).unwrap()))
        .collect()
}

/// Byte offsets of the frames of a segment (`u32 len | u32 crc | payload`).
fn frames(seg: &Path) -> Vec<(u64, u32)> {
    let b = std::fs::read(seg).unwrap();
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 8 <= b.len() {
        let len = u32::from_le_bytes(b[off..off + 4].try_into().unwrap());
        out.push((off as u64, len));
        off += 8 + len as usize;
    }
    out
}

/// Flips a payload byte of a frame in the middle of the segment holding
/// the most frames; returns (segment, frame offset).
fn damage_a_middle_record(dir: &Path) -> (PathBuf, u64) {
    let seg = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("raft-log."))
        .max_by_key(|p| frames(p).len())
        .unwrap();
    let fr = frames(&seg);
    assert!(fr.len() >= 3, "{} holds {} frames", seg.display(), fr.len());
    let (off, len) = fr[fr.len() / 2];
    let mut b = std::fs::read(&seg).unwrap();
    b[(off + 8 + u64::from(len) / 2) as usize] ^= 0x20;
    std::fs::write(&seg, b).unwrap();
    (seg, off)
}

/// Waits for a process to exit by itself; its output is in `log`.
fn exit_status(p: &mut Proc, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return s;
        }
        let out = std::fs::read_to_string(log).unwrap_or_default();
        assert!(Instant::now() < deadline, "the master did not exit on a damaged log:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn master(id: u64, addr: &str, peers: &str, dir: &Path, extra: &[&str], log: &Path) -> Proc {
    Proc::spawn(
        Command::new(bin("gfs-master"))
            .args(["--id", &id.to_string(), "--listen", addr, "--peers", peers])
            .args(extra)
            .arg("--data-dir")
            .arg(dir),
        log,
    )
}

#[test]
fn a_flipped_byte_in_a_stopped_masters_log_stops_it_and_check_log_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let addr = free_addr().to_string();
    let log = tmp.path().join("m.log");
    let mut p = master(1, &addr, &format!("1={addr}"), &dir, &[], &log);
    rt().block_on(async {
        let client = Client::new(gfs_e2e::client_config(addr.clone())).unwrap();
        for i in 0..30 {
            client.mkdir(&format!("/d/{i}"), true).await.unwrap();
        }
    });
    assert!(p.sigterm().success());
    let (seg, off) = damage_a_middle_record(&dir);
    let before = state_files(&dir);

    let log2 = tmp.path().join("m2.log");
    let mut p = master(1, &addr, &format!("1={addr}"), &dir, &[], &log2);
    let status = exit_status(&mut p, &log2);
    let out = std::fs::read_to_string(&log2).unwrap();
    assert!(!status.success(), "{out}");
    assert!(out.contains(&format!("{} is damaged at byte offset {off}", seg.display())), "{out}");
    assert!(out.contains("last good index") && out.contains("not a torn tail"), "{out}");
    assert_eq!(state_files(&dir), before, "a refused start changed the log");

    let check = Command::new(bin("gfs-master")).args(["check-log", "--data-dir"]).arg(&dir).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("DAMAGE: {} at byte offset {off}: checksum mismatch", seg.display())), "{text}");
    assert!(text.contains("status: DAMAGED"), "{text}");
    assert_eq!(state_files(&dir), before, "check-log changed the log");
}

async fn status(addr: &str) -> Option<MasterStatusResponse> {
    let call = async {
        let mut c = MasterServiceClient::new(gfs_e2e::channel(addr, gfs_common::auth::Role::Admin));
        Some(c.master_status(MasterStatusRequest {}).await.ok()?.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(2), call).await.ok().flatten()
}

/// Waits until every master at `addrs` applied the same index with the
/// same namespace digest, with a leader among them; returns the leader's id.
async fn converged(addrs: &[String]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut seen = Vec::new();
        let mut leader = 0;
        for a in addrs {
            if let Some(s) = status(a).await {
                let me = s.this.unwrap();
                if me.role == MasterRole::Leader as i32 {
                    leader = me.id;
                }
                seen.push((me.last_applied, s.namespace_digest));
            }
        }
        if leader != 0 && seen.len() == addrs.len() && seen.iter().all(|x| *x == seen[0]) {
            return leader;
        }
        assert!(Instant::now() < deadline, "masters did not converge: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_damaged_member_is_rebuilt_from_its_group() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3).map(|_| free_addr().to_string()).collect();
    let peers = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
    let dir = |id: u64| tmp.path().join(format!("master-{id}"));
    let log = |id: u64, n: u32| tmp.path().join(format!("master-{id}.{n}.log"));
    // Checkpoints every 20 entries, so the rebuilt member needs a snapshot.
    let spawn = |id: u64, extra: &[&str], n: u32| {
        let mut args = vec!["--checkpoint-every", "20"];
        args.extend_from_slice(extra);
        master(id, &addrs[id as usize - 1], &peers, &dir(id), &args, &log(id, n))
    };
    let mut procs: Vec<Proc> = (1..=3).map(|id| spawn(id, &[], 0)).collect();
    let spec = addrs.join(",");
    let rt = rt();
    let leader = rt.block_on(converged(&addrs));
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    rt.block_on(async {
        // openraft purges in batches of 256 entries: write well past that.
        let mut tasks = Vec::new();
        for t in 0..4 {
            let spec = spec.clone();
            tasks.push(tokio::spawn(async move {
                let client = Client::new(gfs_e2e::client_config(spec)).unwrap();
                for i in 0..175 {
                    client.mkdir(&format!("/s/{t}/{i}"), true).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        converged(&addrs).await;
    });
    procs[victim as usize - 1].kill9();
    let (seg, off) = damage_a_middle_record(&dir(victim));
    let mut p = spawn(victim, &[], 1);
    let status = exit_status(&mut p, &log(victim, 1));
    let out = std::fs::read_to_string(log(victim, 1)).unwrap();
    assert!(!status.success(), "{out}");
    assert!(out.contains(&format!("{} is damaged at byte offset {off}", seg.display())), "{out}");

    // Rebuild: remove it from the group, wipe its data dir, start it empty
    // with --join and add it back under the same id.
    rt.block_on(async {
        let client = Client::new(gfs_e2e::client_config(spec.clone())).unwrap();
        client.remove_master(victim).await.unwrap();
        std::fs::remove_dir_all(dir(victim)).unwrap();
        procs[victim as usize - 1] = spawn(victim, &["--join"], 2);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match client.add_master(victim, &addrs[victim as usize - 1]).await {
                Ok(members) => {
                    assert_eq!(members.iter().filter(|m| m.voter).count(), 3, "{members:?}");
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "add-master {victim}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        converged(&addrs).await;
        for t in 0..4 {
            client.stat(&format!("/s/{t}/174")).await.unwrap();
        }
    });
    let out = std::fs::read_to_string(log(victim, 2)).unwrap();
    assert!(out.contains("installed snapshot from the leader"), "no snapshot install:\n{out}");
    drop(procs);
}
