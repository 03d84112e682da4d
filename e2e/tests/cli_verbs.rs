//! The HDFS-style verbs of the `gfs` CLI (du, df, count, find, touch,
//! test, tail, cp, rm -f, checksum) run as the real binary against an
//! in-process cluster (testkit): each asserts what was written through
//! the client, byte for byte and entry for entry.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gfs_client::Client;
use gfs_e2e::gfs_cli::{fails, ok, run};
use gfs_testkit::{Cluster, ClusterOptions};

/// Capacity each chunkserver reports, so that df's numbers are exact.
const CAPACITY: u64 = 1 << 30;

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(seed) * 7) as u8).collect()
}

async fn cluster() -> Cluster {
    let opts = ClusterOptions { chunkservers: 2, replication: 2, capacity_bytes: Some(CAPACITY), ..Default::default() };
    Cluster::start(opts).await.unwrap()
}

fn lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn fields(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// /v/a.log (1000 B), /v/sub/b.log (3000 B), /v/sub/c.txt (empty),
/// /v/sub/deep/ (empty directory). Returns a's and b's bytes.
async fn tree(c: &Client) -> (Vec<u8>, Vec<u8>) {
    let (a, b) = (data(1, 1000), data(2, 3000));
    c.mkdir("/v/sub/deep", true).await.unwrap();
    c.put("/v/a.log", &a[..], None).await.unwrap();
    c.put("/v/sub/b.log", &b[..], None).await.unwrap();
    c.create("/v/sub/c.txt", None).await.unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn du_count_find_and_df_report_what_was_written() {
    let cluster = cluster().await;
    let m = cluster.master_addr().to_string();
    let c = cluster.client();
    tree(&c).await;

    assert_eq!(ok(&m, &["du", "-s", "/v"]), "4000  8000  /v\n", "size and size x replication 2");
    assert_eq!(lines(&ok(&m, &["du", "/v"])), ["1000  2000  /v/a.log", "3000  6000  /v/sub"]);
    assert_eq!(ok(&m, &["du", "/v/a.log"]), "1000  2000  /v/a.log\n");
    assert_eq!(ok(&m, &["du", "-s", "-h", "/v"]), "3.9 KiB  7.8 KiB  /v\n");
    assert_eq!(ok(&m, &["du", "/v/sub/deep"]), "", "an empty directory has no entries");
    let (_, err) = fails(&m, &["du", "/nope"]);
    assert!(err.contains("remote /nope: not found"), "{err}");
    let (_, err) = fails(&m, &["du", "relative"]);
    assert!(err.contains("remote invalid path"), "{err}");

    assert_eq!(fields(&ok(&m, &["count", "/v"])), ["3", "3", "4000", "/v"], "/v, sub, deep; a, b, c");
    assert_eq!(fields(&ok(&m, &["count", "/v/sub/b.log"])), ["0", "1", "3000", "/v/sub/b.log"]);
    assert_eq!(fields(&ok(&m, &["count", "-q", "/v"])), ["none", "inf", "none", "inf", "3", "3", "4000", "/v"]);

    assert_eq!(lines(&ok(&m, &["find", "/v", "-name", "*.log"])), ["/v/a.log", "/v/sub/b.log"]);
    assert_eq!(lines(&ok(&m, &["find", "/v", "-type", "d"])), ["/v", "/v/sub", "/v/sub/deep"]);
    assert_eq!(lines(&ok(&m, &["find", "/v", "-name", "[bc].*", "-type", "f"])), ["/v/sub/b.log", "/v/sub/c.txt"]);
    assert_eq!(lines(&ok(&m, &["find", "/v/sub", "-name", "?.txt"])), ["/v/sub/c.txt"]);
    assert_eq!(lines(&ok(&m, &["find", "/v"])).len(), 6, "everything, /v included");
    let (_, err) = fails(&m, &["find", "/v", "-type", "x"]);
    assert!(err.contains("-type"), "{err}");

    // A heartbeat can change the used bytes between two reads: compare df
    // with the cluster status only when a status read before and one after
    // df agree.
    let totals = |st: gfs_proto::ClusterStatusResponse| {
        assert_eq!(st.servers.iter().filter(|s| s.alive).count(), 2);
        (st.capacity_bytes, st.used_bytes)
    };
    let (df, want) = 'settled: {
        for _ in 0..50 {
            let before = totals(c.cluster_status().await.unwrap());
            let df = ok(&m, &["df"]);
            if totals(c.cluster_status().await.unwrap()) == before {
                break 'settled (df, before);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the chunkservers' used bytes never held still across one df");
    };
    let row = fields(df.lines().nth(1).unwrap()).into_iter().skip(1).take(3).map(|n| n.parse().unwrap());
    let [size, used, free]: [u64; 3] = row.collect::<Vec<u64>>().try_into().unwrap();
    assert_eq!(size, 2 * CAPACITY, "{df}");
    assert_eq!((size, used), want, "df against the cluster status: {df}");
    assert!(size >= used && free > 0 && free <= size, "{df}");
    assert!(df.lines().nth(1).unwrap().ends_with('%'), "{df}");
}

/// Size of the file system holding `dir` as statvfs gives it (blocks x
/// fundamental block size), read with `stat -f`.
fn fs_size(dir: &std::path::Path) -> u64 {
    let out = Command::new("stat").args(["-f", "-c", "%b %S"]).arg(dir).output().expect("run stat -f");
    let text = String::from_utf8(out.stdout).unwrap();
    let [blocks, size]: [u64; 2] =
        fields(&text).iter().map(|n| n.parse().unwrap()).collect::<Vec<u64>>().try_into().unwrap();
    blocks * size
}

/// Chunkservers whose data dirs share a disk report it each; df and the
/// cluster status count it once (and a disk of its own, a tmpfs, once too).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn df_counts_a_disk_that_chunkservers_share_once() {
    let fs = gfs_testkit::Tmpfs::mount(64 << 20);
    let mut opts = ClusterOptions { chunkservers: 3, ..Default::default() };
    opts.chunkserver_dirs.insert(2, fs.path().to_path_buf());
    let cluster = Cluster::start(opts).await.unwrap();
    let m = cluster.master_addr().to_string();
    let (shared, own) = (fs_size(cluster.chunkserver_dir(0)), fs_size(fs.path()));
    assert_eq!(fs_size(cluster.chunkserver_dir(1)), shared);
    assert_eq!(own, 64 << 20);

    let st = cluster.client().cluster_status().await.unwrap();
    let ids: Vec<&str> = st.servers.iter().map(|s| s.disk_id.as_str()).collect();
    assert!(ids.iter().all(|id| !id.is_empty()), "{ids:?}");
    assert_eq!(st.servers.iter().map(|s| s.capacity_bytes).sum::<u64>(), 2 * shared + own, "each reports its disk");
    assert_eq!(st.capacity_bytes, shared + own, "the shared disk counts once");
    assert!(st.free_bytes > 0 && st.free_bytes <= st.capacity_bytes);

    let df = ok(&m, &["df"]);
    let size: u64 = fields(df.lines().nth(1).unwrap())[1].parse().unwrap();
    assert_eq!(size, shared + own, "{df}");
}

/// `gfs test`: 0 true, 1 false (silent), 2 a bad path, 6 master unreachable.
fn test_exit_codes(m: &str) {
    let code = |args: &[&str]| {
        let out = run(m, args);
        (out.status.code().unwrap(), out.stdout.is_empty())
    };
    for (args, want) in [
        (&["test", "-e", "/v/a.log"][..], 0),
        (&["test", "-e", "/v/missing"], 1),
        (&["test", "-e", "/v/a.log/below"], 1),
        (&["test", "-d", "/v"], 0),
        (&["test", "-d", "/v/a.log"], 1),
        (&["test", "-f", "/v/a.log"], 0),
        (&["test", "-f", "/v"], 1),
        (&["test", "-z", "/v/new"], 0),
        (&["test", "-z", "/v/a.log"], 1),
        (&["test", "-e", "relative"], 2),
    ] {
        assert_eq!(code(args), (want, true), "{args:?}");
    }
    let out = run(m, &["test", "-e", "/v/missing"]);
    assert!(out.stderr.is_empty(), "a false test prints nothing");
    let out = Command::new(gfs_e2e::bin("gfs"))
        .args(["--insecure", "--master", "127.0.0.1:1", "test", "-e", "/v"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "an unreachable master is not 'false'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn touch_test_cp_rm_checksum_and_tail_act_on_real_bytes() {
    let cluster = cluster().await;
    let m = cluster.master_addr().to_string();
    let c = cluster.client();
    let (a, b) = tree(&c).await;

    // touch: a new empty file; an existing file keeps its bytes.
    ok(&m, &["touch", "/v/new", "/v/a.log"]);
    let st = c.stat("/v/new").await.unwrap().info;
    assert_eq!((st.r#type(), st.size), (gfs_client::FileType::File, 0));
    assert_eq!(c.read_all("/v/a.log").await.unwrap(), a);
    let (_, err) = fails(&m, &["touch", "/v/sub"]);
    assert!(err.contains("remote /v/sub: is a directory"), "{err}");

    test_exit_codes(&m);

    // cp: the same bytes; an existing destination only with -f.
    ok(&m, &["cp", "/v/a.log", "/v/copy"]);
    assert_eq!(c.read_all("/v/copy").await.unwrap(), a);
    let (_, err) = fails(&m, &["cp", "/v/sub/b.log", "/v/copy"]);
    assert!(err.contains("already exists") && err.contains("-f"), "{err}");
    assert_eq!(c.read_all("/v/copy").await.unwrap(), a, "refused: unchanged");
    ok(&m, &["cp", "-f", "/v/sub/b.log", "/v/copy"]);
    assert_eq!(c.read_all("/v/copy").await.unwrap(), b);
    let (_, err) = fails(&m, &["cp", "/v/sub", "/v/sub2"]);
    assert!(err.contains("-r"), "{err}");
    ok(&m, &["cp", "-r", "/v/sub", "/v/sub2"]);
    assert_eq!(c.read_all("/v/sub2/b.log").await.unwrap(), b);
    assert_eq!(c.stat("/v/sub2/c.txt").await.unwrap().info.size, 0);
    assert_eq!(c.stat("/v/sub2/deep").await.unwrap().info.r#type(), gfs_client::FileType::Directory);
    c.mkdir("/w", false).await.unwrap();
    ok(&m, &["cp", "/v/a.log", "/v/sub/b.log", "/w"]);
    assert_eq!((c.read_all("/w/a.log").await.unwrap(), c.read_all("/w/b.log").await.unwrap()), (a.clone(), b.clone()));
    let (_, err) = fails(&m, &["cp", "/v/a.log", "/v/sub/b.log", "/v/copy"]);
    assert!(err.contains("not an existing directory"), "{err}");
    let (_, err) = fails(&m, &["cp", "-r", "/v", "/v/sub/inside"]);
    assert!(err.contains("into itself"), "{err}");
    let (_, err) = fails(&m, &["cp", "/v/nope", "/w/x"]);
    assert!(err.contains("remote /v/nope: not found"), "{err}");
    assert_eq!(ok(&m, &["find", "/", "-name", "*._COPYING_"]), "", "no temporary file left");

    // rm -f: a missing path is fine; without -f it is an error.
    let out = run(&m, &["rm", "-f", "/v/missing"]);
    assert!(out.status.success() && out.stderr.is_empty() && out.stdout.is_empty());
    fails(&m, &["rm", "/v/missing"]);
    ok(&m, &["rm", "-f", "/v/new"]);
    assert!(c.stat("/v/new").await.is_err(), "rm -f still removes");

    // checksum: CRC32C of the bytes written.
    let want = format!("/v/sub/b.log  CRC32C  {:08x}  3000\n", crc32c::crc32c(&b));
    assert_eq!(ok(&m, &["checksum", "/v/sub/b.log"]), want);
    let (_, err) = fails(&m, &["checksum", "/v/sub"]);
    assert!(err.contains("is a directory"), "{err}");

    // tail: the last KiB.
    assert_eq!(run(&m, &["tail", "/v/sub/b.log"]).stdout, b[b.len() - 1024..]);
    assert_eq!(run(&m, &["tail", "/v/a.log"]).stdout, a, "a short file whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_f_prints_appends_and_stops_cleanly_on_sigterm() {
    let cluster = cluster().await;
    let m = cluster.master_addr().to_string();
    let c = cluster.client();
    c.create("/log", None).await.unwrap();
    c.append("/log", b"first\n").await.unwrap();
    let mut child = Command::new(gfs_e2e::bin("gfs"))
        .args(["--insecure", "--master", &m, "tail", "-f", "/log"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.append("/log", b"second\n").await.unwrap();
    c.append("/log", b"third\n").await.unwrap();
    // Until tail has had time to see the growth (it looks every second).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if c.stat("/log").await.unwrap().info.size == 19 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "SIGTERM ends tail -f cleanly: {status:?} {err}");
    assert_eq!(String::from_utf8(reader.join().unwrap()).unwrap(), "first\nsecond\nthird\n");
}
