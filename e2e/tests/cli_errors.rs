//! `gfs` pointed at something that is not a gfs master: one line that
//! says so, without transport internals, and the "unavailable" exit code.
//! Real sockets on loopback; the binary as a user runs it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use gfs_e2e::bin;

/// Exit code of an unreachable or foreign master (`gfs --help`).
const UNAVAILABLE: i32 = 6;

/// A listener on loopback that answers every connection with `reply`
/// after reading what the client sent first, and keeps it open a while.
fn serve(reply: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(reply);
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    addr
}

/// Runs `gfs --insecure --master ADDR ls /`; returns (exit code, stderr).
fn ls(addr: &str) -> (Option<i32>, String) {
    let started = Instant::now();
    let out = Command::new(bin("gfs")).args(["--insecure", "--master", addr, "ls", "/"]).output().unwrap();
    // No waiting for the failover timeout: nothing here ever answered.
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    for internal in ["h2", "transport error", "tonic", "hyper", "os error"] {
        assert!(!err.contains(internal), "{internal:?} in {err:?}");
    }
    (out.status.code(), err)
}

#[test]
fn a_plain_http_server_is_not_a_gfs_master() {
    let addr = serve(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let (code, err) = ls(&addr);
    assert!(err.starts_with(&format!("gfs: {addr} is not a gfs master (")), "{err}");
    assert_eq!(code, Some(UNAVAILABLE), "{err}");
}

#[test]
fn a_garbage_writer_is_not_a_gfs_master() {
    let addr = serve(b"garbage garbage garbage garbage garbage garbage\n");
    let (code, err) = ls(&addr);
    assert!(err.starts_with(&format!("gfs: {addr} is not a gfs master (")), "{err}");
    assert_eq!(code, Some(UNAVAILABLE), "{err}");
}

#[test]
fn a_closed_port_cannot_be_reached() {
    // Bound, then closed: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (code, err) = ls(&addr);
    assert_eq!(err.trim_end(), format!("gfs: cannot reach a gfs master at {addr}: connection refused"));
    assert_eq!(code, Some(UNAVAILABLE));
}

#[test]
fn usage_errors_exit_2_and_completions_and_man_print() {
    let out = Command::new(bin("gfs")).args(["put"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin("gfs")).args(["completions", "bash"]).output().unwrap();
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && script.contains("gfs") && script.contains("mkdir"), "{script}");
    let out = Command::new(bin("gfs")).arg("man").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(".TH gfs 1"));
    let out = Command::new(bin("gfs")).arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with("gfs ") && v.contains(" (") && v.trim_end().ends_with(')'), "{v}");
    // A missing local source of put: local, before any connection.
    let mut put = Command::new(bin("gfs"));
    let out = put.args(["--insecure", "--master", "127.0.0.1:1", "put", "./no-such", "/x"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end(), "gfs: local ./no-such: No such file or directory");
    assert_eq!(out.status.code(), Some(3));
}
