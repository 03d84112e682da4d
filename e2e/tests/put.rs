//! `gfs put` as a process against `gfs server`: an upload goes through
//! `DST._COPYING_`, so a killed one never leaves a truncated file under
//! the final name, an interrupted or failed one leaves nothing, and its
//! chunks go at once.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gfs_e2e::{Proc, bin};
use gfs_testkit::Tmpfs;
use rand::{RngCore, SeedableRng, rngs::StdRng};

const MIB: usize = 1024 * 1024;

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Starts `gfs server` on `dir/data` with `extra` flags; returns it and the
/// master address.
fn start_server(dir: &Path, extra: &[&str]) -> (Proc, String) {
    let ready = dir.join("ready");
    let log = dir.join("server.log");
    gfs_e2e::seed_ca(&dir.join("data"));
    let proc = Proc::spawn(
        Command::new(bin("gfs"))
            .args(["server", "--listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--ready-file")
            .arg(&ready),
        &log,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(&ready)
            && !s.trim().is_empty()
        {
            return (proc, s.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gfs server not ready in 60 s; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}

fn gfs(master: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = spawn_gfs(master, args);
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("gfs output")
}

fn spawn_gfs(master: &str, args: &[&str]) -> Child {
    gfs_e2e::secured(&mut Command::new(bin("gfs")))
        .arg("--master")
        .arg(master)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gfs")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "gfs failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(master: &str, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(&gfs(master, args, None))).unwrap()
}

/// Entry names under `/`, hidden (deleted) ones included.
fn names(master: &str) -> Vec<String> {
    let v = json(master, &["ls", "--all", "--json", "/"]);
    let mut n: Vec<String> = v.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    n.sort();
    n
}

fn missing(master: &str, path: &str) -> bool {
    let out = gfs(master, &["stat", path], None);
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not found")
}

/// The master's chunk count equals the chunks of the files that exist:
/// nothing of a removed upload is left.
fn chunks_match_files(master: &str) {
    let total = json(master, &["admin", "status", "--json"])["chunk_count"].as_u64().unwrap();
    let of_files: u64 = names(master)
        .iter()
        .map(|n| json(master, &["stat", "--json", &format!("/{n}")])["chunks"].as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(total, of_files, "chunks left behind by a removed upload");
}

/// Starts `gfs put - DST`, feeds it `first` bytes and keeps its input open
/// until the temporary file holds at least `upto` bytes.
fn put_in_progress(master: &str, dst: &str, first: &[u8], upto: u64) -> Child {
    let mut child = spawn_gfs(master, &["put", "-", dst]);
    child.stdin.as_mut().unwrap().write_all(first).unwrap();
    let tmp = format!("{dst}._COPYING_");
    let deadline = Instant::now() + Duration::from_secs(60);
    let size = |out: Output| {
        let v: Option<serde_json::Value> = out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap());
        v.and_then(|v| v["size"].as_u64()).unwrap_or(0)
    };
    while size(gfs(master, &["stat", "--json", &tmp], None)) < upto {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tmp} never reached {upto} bytes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn an_interrupted_put_never_leaves_a_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, m) = start_server(dir.path(), &["--chunk-size", "1MiB"]);

    // A normal put: byte-equal, and no temporary name left.
    let whole = data(1, 3 * MIB + 12_345);
    ok(&gfs(&m, &["put", "-", "/ok"], Some(&whole)));
    assert!(gfs(&m, &["cat", "/ok"], None).stdout == whole);
    assert_eq!(names(&m), vec!["ok"]);

    // SIGKILL mid-way: the final name does not exist; the temporary one
    // does, and `ls` shows it as it is.
    let mut killed = put_in_progress(&m, "/killed", &data(2, 5 * MIB / 2), 2 * MIB as u64);
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(missing(&m, "/killed"), "a killed put left its final name");
    assert_eq!(names(&m), vec!["killed._COPYING_", "ok"]);

    // SIGINT mid-way: neither name exists, nothing in the trash, and the
    // chunks are gone.
    let interrupted = put_in_progress(&m, "/int", &data(3, 5 * MIB / 2), 2 * MIB as u64);
    Command::new("kill").args(["-INT", &interrupted.id().to_string()]).status().unwrap();
    let out = interrupted.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr: {err}");
    assert!(err.contains("interrupted") && err.contains("/int._COPYING_ removed"), "{err}");
    assert!(missing(&m, "/int") && missing(&m, "/int._COPYING_"));
    assert_eq!(names(&m), vec!["killed._COPYING_", "ok"]);
    chunks_match_files(&m);

    // Putting to the killed name again: the leftover is explained, and
    // replaced with -f.
    let out = gfs(&m, &["put", "-", "/killed"], Some(b"again"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted put left it"), "{out:?}");
    ok(&gfs(&m, &["put", "-f", "-", "/killed"], Some(b"again")));
    assert_eq!(gfs(&m, &["cat", "/killed"], None).stdout, b"again");

    // -f over an existing file: the new content, the old one in the trash.
    let newer = data(4, MIB + 7);
    ok(&gfs(&m, &["put", "-f", "-", "/ok"], Some(&newer)));
    assert!(gfs(&m, &["cat", "/ok"], None).stdout == newer);
    let all = names(&m);
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all[0].starts_with(".gfs-deleted.") && all[0].ends_with(".ok"), "{all:?}");
    assert_eq!(&all[1..], ["killed", "ok"]);
    chunks_match_files(&m);
}

#[test]
fn a_put_on_a_full_disk_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Chunkserver 0's data dir is a 3 MiB disk; chunks are 4 MiB, so one
    // chunk can outgrow it before its heartbeats say it is full.
    let fs = Tmpfs::mount_at(3 << 20, &dir.path().join("data/chunkserver-0"));
    let (_server, m) = start_server(dir.path(), &["--chunk-size", "4MiB", "--disk-reserve", "512KiB"]);
    let st = json(&m, &["admin", "status", "--json"]);
    let servers = st["servers"].as_array().unwrap();
    let small_addr = servers.iter().find(|s| s["zone"] == "zone-0").unwrap()["address"].as_str().unwrap().to_string();

    let a = data(5, MIB);
    ok(&gfs(&m, &["put", "-", "/a"], Some(&a)));
    let out = gfs(&m, &["put", "-", "/huge"], Some(&data(6, 3 * MIB)));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with(&format!("gfs: no space on {small_addr}: ")), "{err}");
    assert!(missing(&m, "/huge") && missing(&m, "/huge._COPYING_"));
    assert_eq!(names(&m), vec!["a"]);
    chunks_match_files(&m);
    // Its replicas leave the disks at the next heartbeats.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(fs.path().join("chunks")).unwrap().count() != 2 {
        assert!(Instant::now() < deadline, "the failed put's replica stays on the full disk");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gfs(&m, &["cat", "/a"], None).stdout == a);
}

/// What a terminal shows after `raw` was written to it: the lines left on
/// screen. Plain characters overwrite at the cursor; `\r`, `\n` and the
/// CSI sequences a progress bar uses (cursor up/down/column, erase line,
/// erase below) move or clear; other sequences are dropped.
fn screen(raw: &str) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                row += 1;
                col = 0;
            }
            '\r' => col = 0,
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut param = String::new();
                let mut fin = ' ';
                for p in chars.by_ref() {
                    if p.is_ascii_alphabetic() || p == '@' || p == '~' {
                        fin = p;
                        break;
                    }
                    param.push(p);
                }
                let n: usize = param.trim_start_matches('?').parse().unwrap_or(0);
                match fin {
                    'A' => row = row.saturating_sub(n.max(1)),
                    'B' => row += n.max(1),
                    'G' => col = n.saturating_sub(1),
                    'K' if n == 2 => lines[row].clear(),
                    'K' => lines[row].truncate(col),
                    'J' => {
                        lines[row].truncate(col);
                        lines.truncate(row + 1);
                    }
                    _ => {}
                }
            }
            '\u{1b}' => {
                chars.next();
            }
            c => {
                let line = &mut lines[row];
                if line.len() <= col {
                    line.resize(col, ' ');
                    line.push(c);
                } else {
                    line[col] = c;
                }
                col += 1;
            }
        }
        while lines.len() <= row {
            lines.push(Vec::new());
        }
    }
    lines.into_iter().map(|l| l.into_iter().collect::<String>().trim_end().to_string()).collect()
}

#[test]
fn the_screen_model_follows_a_bar_being_redrawn() {
    let shown = screen("a 10% [==  ]\r\u{1b}[2Klog line\na 50% [===]\r\u{1b}[2Kdone: 8 MiB\n");
    assert_eq!(shown, ["log line", "done: 8 MiB", ""]);
}

/// On a terminal, `gfs put` and `gfs get` draw a bar with the file's name
/// and the percent, clear it and leave one summary line; log lines written
/// meanwhile (here h2's, at debug) never share a line with the bar. The
/// server's log, a file, holds no colour codes.
#[test]
fn on_a_terminal_transfers_show_a_named_bar_and_leave_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, master) = start_server(dir.path(), &[]);
    let src = dir.path().join("big.bin");
    let body = data(9, 24 * MIB);
    std::fs::write(&src, &body).unwrap();
    let back = dir.path().join("back.bin");
    let on_tty = |args: String| {
        let gfs = bin("gfs");
        let line = format!("{} --master {master} {args}", gfs.display());
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("GFS_TLS_DIR", gfs_e2e::pki_dir(gfs_common::auth::Role::Admin))
            .env("RUST_LOG", "warn,h2=debug")
            .env_remove("NO_COLOR")
            .output()
            .expect("script (util-linux) runs gfs on a pseudo-terminal");
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "gfs {args} on a terminal failed:\n{raw}");
        raw
    };
    for (raw, name) in [
        (on_tty(format!("put {} /big.bin", src.display())), src.display().to_string()),
        (on_tty(format!("get /big.bin {}", back.display())), "/big.bin".to_string()),
    ] {
        assert!(raw.contains("% ["), "no bar was drawn:\n{raw}");
        let shown = screen(&raw);
        let logs = shown.iter().filter(|l| l.contains("DEBUG")).count();
        assert!(logs > 0, "no log line was written during the copy (h2=debug):\n{}", shown.join("\n"));
        for l in &shown {
            assert!(!(l.contains("% [") && l.contains("DEBUG")), "a log line was written onto the bar: {l:?}");
            assert!(!l.contains("% ["), "the bar was left on screen: {l:?}");
        }
        let summary = format!("{name}: 24.00 MiB in ");
        assert_eq!(shown.iter().filter(|l| l.starts_with(&summary)).count(), 1, "{summary:?} once in:\n{shown:?}");
    }
    assert!(std::fs::read(&back).unwrap() == body, "bytes read back differ");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(!log.is_empty() && !log.contains('\u{1b}'), "colour codes in a log written to a file");
}
