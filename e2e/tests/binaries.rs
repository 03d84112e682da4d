//! Tests that drive the real binaries (`gfs`, `gfs-master`,
//! `gfs-chunkserver`) as processes on loopback.
//!
//! The binaries are looked up next to this test executable (cargo puts
//! both under `target/<profile>/`); `scripts/test.sh` builds them first.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gfs_client::Client;
use gfs_e2e::{Proc, bin};
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

/// Waits for a ready file to appear and returns its content.
fn wait_ready(path: &Path, log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return s.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not ready in 60 s; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

/// Starts `gfs server` on DIR with 1 MiB chunks and returns it with the
/// master address.
fn start_server(dir: &Path, tag: &str) -> (Proc, String) {
    start_server_with(dir, tag, &[])
}

/// As [`start_server`], with more `gfs server` arguments.
fn start_server_with(dir: &Path, tag: &str, extra: &[&str]) -> (Proc, String) {
    let ready = dir.join(format!("ready-{tag}"));
    let log = dir.join(format!("server-{tag}.log"));
    let _ = std::fs::remove_file(&ready);
    gfs_e2e::seed_ca(&dir.join("data"));
    let proc = Proc::spawn(
        Command::new(bin("gfs"))
            .args(["server", "--listen", "127.0.0.1:0", "--chunk-size", "1MiB"])
            .args(extra)
            .args(["--data-dir".as_ref(), dir.join("data").as_os_str(), "--ready-file".as_ref(), ready.as_os_str()]),
        &log,
    );
    let addr = wait_ready(&ready, &log);
    (proc, addr)
}

fn gfs(master: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(bin("gfs"));
    gfs_e2e::secured(&mut cmd);
    cmd.arg("--master").arg(master).args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn gfs");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().expect("gfs output")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "gfs failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Asserts a failed command printed exactly one `gfs: ...` line containing
/// `needle` and exited non-zero.
fn fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got {err:?}");
    assert!(lines[0].starts_with("gfs: ") && lines[0].contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn cli_verbs_round_trip_and_report_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, m) = start_server(dir.path(), "cli");
    let mut rng = StdRng::seed_from_u64(5);
    let mut data = vec![0u8; 3 * 1024 * 1024 + 12345];
    rng.fill_bytes(&mut data);
    let local = dir.path().join("in.bin");
    std::fs::write(&local, &data).unwrap();

    ok(&gfs(&m, &["mkdir", "-p", "/a/b"], None));
    ok(&gfs(&m, &["put", local.to_str().unwrap(), "/a/b/f"], None));
    let out = dir.path().join("out.bin");
    ok(&gfs(&m, &["get", "/a/b/f", out.to_str().unwrap()], None));
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(gfs(&m, &["cat", "/a/b/f"], None).stdout, data);

    // stdin/stdout with '-'.
    ok(&gfs(&m, &["put", "-", "/a/stdin"], Some(b"from stdin")));
    assert_eq!(ok(&gfs(&m, &["get", "/a/stdin", "-"], None)), "from stdin");

    let st: serde_json::Value = serde_json::from_str(&ok(&gfs(&m, &["stat", "--json", "/a/b/f"], None))).unwrap();
    assert_eq!(st["size"], data.len() as u64);
    assert_eq!(st["replication"], 3);
    let chunks = st["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 4);
    for c in chunks {
        assert!(c["handle"].as_u64().is_some() && c["version"].as_u64().unwrap() >= 1);
        assert_eq!(c["replicas"].as_array().unwrap().len(), 3);
    }

    let rec = dir.path().join("rec");
    std::fs::write(&rec, b"record-one").unwrap();
    let off1: u64 = ok(&gfs(&m, &["append", "/a/log", rec.to_str().unwrap()], None)).trim().parse().unwrap();
    let off2: u64 = ok(&gfs(&m, &["append", "/a/log", rec.to_str().unwrap()], None)).trim().parse().unwrap();
    assert_eq!((off1, off2), (0, 10));
    assert_eq!(gfs(&m, &["cat", "/a/log"], None).stdout, b"record-onerecord-one");

    ok(&gfs(&m, &["mv", "/a/log", "/a/log2"], None));
    let ls: serde_json::Value = serde_json::from_str(&ok(&gfs(&m, &["ls", "--json", "/a"], None))).unwrap();
    let names: Vec<_> = ls.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, vec!["b", "log2", "stdin"]);
    assert!(ok(&gfs(&m, &["ls", "-l", "/a/b"], None)).contains('f'));

    // Errors: one line, non-zero, nothing created or changed.
    let missing_out = dir.path().join("never");
    fails_with(&gfs(&m, &["get", "/missing", missing_out.to_str().unwrap()], None), "/missing");
    assert!(!missing_out.exists(), "failed get created its output file");
    fails_with(&gfs(&m, &["rm", "/a"], None), "not empty");
    fails_with(&gfs(&m, &["mkdir", "/a/b/f"], None), "/a/b/f");
    fails_with(&gfs(&m, &["stat", "/a/../b"], None), "..");
    fails_with(&gfs(&m, &["put", local.to_str().unwrap(), "/a/b/f"], None), "exists");
    fails_with(&gfs(&m, &["put", "/no/such/local", "/a/x"], None), "/no/such/local");
    fails_with(&gfs("127.0.0.1:1", &["ls", "/"], None), "127.0.0.1:1");
    let big = dir.path().join("big-record");
    std::fs::write(&big, vec![1u8; 300 * 1024]).unwrap();
    fails_with(&gfs(&m, &["append", "/a/log2", big.to_str().unwrap()], None), "large");

    ok(&gfs(&m, &["rm", "-r", "/a"], None));
    assert_eq!(ok(&gfs(&m, &["ls", "--json", "/"], None)).trim(), "[]");

    // SIGTERM: a clean exit.
    assert!(server.sigterm().success());
}

/// `gfs put` of a file whose replication is above the live chunkservers:
/// refused with a clear message, accepted with `--allow-under-replicated`,
/// and `gfs stat` shows it under-replicated.
#[test]
fn put_above_the_live_chunkservers_needs_allow_under_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, m) = start_server_with(dir.path(), "under", &["--chunkservers", "2", "--replication", "3"]);
    let local = dir.path().join("in.bin");
    let mut data = vec![0u8; 1024 * 1024 + 7];
    StdRng::seed_from_u64(6).fill_bytes(&mut data);
    std::fs::write(&local, &data).unwrap();
    let src = local.to_str().unwrap();
    // The client retries through the master's warm-up; then the refusal stands.
    fails_with(&gfs(&m, &["put", src, "/f"], None), "replication 3 but only 2 chunkservers are live");
    fails_with(&gfs(&m, &["stat", "/f"], None), "not found");
    ok(&gfs(&m, &["put", "--allow-under-replicated", src, "/f"], None));
    let st = ok(&gfs(&m, &["stat", "/f"], None));
    assert!(st.contains("under-replicated: 2 chunk(s) with fewer than 3 replicas"), "{st}");
    assert_eq!(gfs(&m, &["cat", "/f"], None).stdout, data);
    assert!(ok(&gfs(&m, &["admin", "status"], None)).contains("under-replicated: 2"));
    assert!(server.sigterm().success());
}

/// Files acknowledged by writers: path -> content.
type Acked = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

async fn writer(master: String, id: u32, acked: Acked, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut cfg = gfs_e2e::client_config(master);
    cfg.max_attempts = 1;
    cfg.rpc_timeout = Duration::from_secs(3);
    // The only master dies for good: fail at once instead of waiting out a
    // leader election that cannot happen.
    cfg.failover_timeout = Duration::ZERO;
    let client = Client::new(cfg).unwrap();
    let mut rng = StdRng::seed_from_u64(id as u64);
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let path = format!("/crash/w{id}-{n}");
        n += 1;
        let mut data = vec![0u8; rng.random_range(0..1_500_000)];
        rng.fill_bytes(&mut data);
        if client.create(&path, None).await.is_err() {
            continue;
        }
        if client.write_at(&path, 0, &data).await.is_ok() {
            acked.lock().unwrap().insert(path, data);
        } else {
            // Created but not written: an empty file is what was acked.
            acked.lock().unwrap().insert(path, Vec::new());
        }
    }
}

#[test]
fn kill9_all_in_one_server_keeps_every_acknowledged_operation() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, m) = start_server(dir.path(), "first");
    ok(&gfs(&m, &["mkdir", "/crash"], None));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..3).map(|i| rt.spawn(writer(m.clone(), i, acked.clone(), stop.clone()))).collect();
    // Let the writers get going, then crash the server mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40, "only {} operations acknowledged before the crash", acked.len());

    let (_server, m2) = start_server(dir.path(), "second");
    let client = Client::new(gfs_e2e::client_config(m2)).unwrap();
    rt.block_on(async {
        for (path, data) in &acked {
            // An acked empty file may since have been written by an
            // in-flight write; only content that was acked must match.
            let got = client.read_all(path).await.unwrap_or_else(|e| panic!("{path}: {e}"));
            if !data.is_empty() {
                assert_eq!(got.len(), data.len(), "{path} length");
                assert!(got == *data, "{path} content differs");
            }
        }
    });
}

#[test]
fn separate_binaries_form_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    // Pick a free port for the master; chunkservers need it up front.
    let master = gfs_e2e::free_addr().to_string();
    let _m = Proc::spawn(
        Command::new(bin("gfs-master"))
            .args(["--listen", &master, "--chunk-size", "1MiB", "--data-dir"])
            .arg(dir.path().join("master")),
        &dir.path().join("master.log"),
    );
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(Proc::spawn(
            Command::new(bin("gfs-chunkserver"))
                .args(["--master", &master, "--listen", "127.0.0.1:0", "--zone", &format!("z{i}"), "--data-dir"])
                .arg(dir.path().join(format!("cs{i}"))),
            &dir.path().join(format!("cs{i}.log")),
        ));
    }
    // Wait for three live chunkservers.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = gfs(&master, &["admin", "status", "--json"], None);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let live = v["servers"].as_array().map(|s| s.iter().filter(|x| x["alive"] == true).count());
            if live == Some(3) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "chunkservers did not register");
        std::thread::sleep(Duration::from_millis(100));
    }
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    ok(&gfs(&master, &["put", "-", "/x"], Some(&data)));
    assert_eq!(gfs(&master, &["cat", "/x"], None).stdout, data);
    let st: serde_json::Value = serde_json::from_str(&ok(&gfs(&master, &["stat", "--json", "/x"], None))).unwrap();
    let zones_used = st["chunks"][0]["replicas"].as_array().unwrap().len();
    assert_eq!(zones_used, 3);
}

#[test]
fn all_in_one_server_runs_a_three_master_group() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let log = dir.path().join("server.log");
    gfs_e2e::seed_ca(&dir.path().join("data"));
    let mut server = Proc::spawn(
        Command::new(bin("gfs"))
            .args(["server", "--masters", "3", "--listen", "127.0.0.1:0", "--chunk-size", "1MiB", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready),
        &log,
    );
    let spec = wait_ready(&ready, &log);
    assert_eq!(spec.split(',').count(), 3, "ready file lists every master: {spec}");
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    ok(&gfs(&spec, &["put", "-", "/x"], Some(&data)));
    assert_eq!(gfs(&spec, &["cat", "/x"], None).stdout, data);
    let st: serde_json::Value = serde_json::from_str(&ok(&gfs(&spec, &["admin", "status", "--json"], None))).unwrap();
    let masters = st["masters"].as_array().unwrap();
    assert_eq!(masters.len(), 3);
    assert_eq!(masters.iter().filter(|m| m["role"] == "leader").count(), 1, "{masters:?}");
    assert!(masters.iter().all(|m| m["voter"] == true && m["reachable"] == true && m["term"].as_u64() > Some(0)));
    // Every master is in the data dir, and the data dirs survive a restart.
    for i in 1..=3 {
        assert!(dir.path().join(format!("data/master-{i}/raft-vote")).exists());
    }
    assert!(server.sigterm().success());
    // A restart on the same data dir listens where the group's membership
    // says its masters are, and serves what was written.
    let _ = std::fs::remove_file(&ready);
    let mut again = Proc::spawn(
        Command::new(bin("gfs"))
            .args(["server", "--masters", "3", "--listen", "127.0.0.1:0", "--chunk-size", "1MiB", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready),
        &dir.path().join("server-2.log"),
    );
    assert_eq!(wait_ready(&ready, &log), spec, "the group came back at other addresses");
    assert_eq!(gfs(&spec, &["cat", "/x"], None).stdout, data);
    ok(&gfs(&spec, &["put", "-", "/y"], Some(&data[..1000])));
    assert!(again.sigterm().success());
    // Another group size on that data dir is refused, saying why.
    let out = Command::new(bin("gfs"))
        .args(["server", "--masters", "5", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("holds a group of 3 masters"), "{err}");
}
