//! Namespace permissions through the real binaries with mTLS: a
//! `gfs-master` and a `gfs-chunkserver` process, and two users, alice and
//! bob, with client certificates from the test CA. Who a caller is comes
//! from its certificate: the user a client claims in its request metadata
//! (`gfs-user`, from `ClientConfig.user` or `$USER` for the CLI) is
//! ignored, even when it names the superuser or the other user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gfs_client::{Client, ClientConfig, Error};
use gfs_common::auth::Role;
use gfs_common::certs::{Authority, CertSpec};
use gfs_common::tls::{Security, Tls, TlsFiles};
use gfs_e2e::{Proc, bin, free_addr};

/// Issues a client certificate for `user` (group = the user's name) from
/// the test CA into `dir/user` (the `--tls-dir` layout).
fn issue(dir: &Path, user: &str) -> PathBuf {
    let root = gfs_e2e::pki_dir(Role::Admin).parent().expect("pki root").to_path_buf();
    let read = |f: &str| std::fs::read_to_string(root.join(f)).expect("test CA file");
    let ca = Authority::from_pem(&read("ca.crt"), &read("ca.key")).expect("test CA");
    let spec = CertSpec { group: Some(user.to_string()), ..CertSpec::new(user, Role::Client) };
    let issued = ca.issue(&spec).expect("issue");
    let out = dir.join(user);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("tls.crt"), issued.cert_pem).unwrap();
    std::fs::write(out.join("tls.key"), issued.key_pem).unwrap();
    std::fs::write(out.join("ca.crt"), ca.cert_pem()).unwrap();
    out
}

/// A client with the certificate in `tls_dir` that claims to be `claim`.
fn client(master: &str, tls_dir: &Path, claim: &str) -> Client {
    let mut cfg = ClientConfig::new(master);
    cfg.security = Security::Tls(Tls::load(TlsFiles::in_dir(tls_dir)).expect("certificate"));
    cfg.user = claim.to_string();
    cfg.groups = vec!["supergroup".into()];
    Client::new(cfg).unwrap()
}

/// The `gfs` CLI with the certificate in `tls_dir`, claiming `$USER=gfs`.
fn cli(master: &str, tls_dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("gfs"))
        .arg("--tls-dir")
        .arg(tls_dir)
        .args(["--master", master])
        .args(args)
        .env("USER", "gfs")
        .stdin(Stdio::null())
        .output()
        .expect("gfs")
}

fn denied<T: std::fmt::Debug>(r: Result<T, Error>, user: &str) -> String {
    match r {
        Err(Error::PermissionDenied(m)) => {
            assert!(m.contains(&format!("user={user}")), "{m}");
            m
        }
        other => panic!("expected a denial of {user}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_decides_who_may_do_what() {
    let dir = tempfile::tempdir().unwrap();
    let master = free_addr().to_string();
    let _m = Proc::spawn(
        Command::new(bin("gfs-master"))
            .args(["--listen", &master, "--chunk-size", "1MiB", "--replication", "1"])
            .arg("--data-dir")
            .arg(dir.path().join("master")),
        &dir.path().join("master.log"),
    );
    let _cs = Proc::spawn(
        Command::new(bin("gfs-chunkserver"))
            .args(["--master", &master, "--listen", "127.0.0.1:0", "--heartbeat-ms", "200", "--no-sync"])
            .arg("--data-dir")
            .arg(dir.path().join("cs")),
        &dir.path().join("cs.log"),
    );
    let admin = Client::new(gfs_e2e::client_config(&master)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !admin.cluster_status().await.is_ok_and(|s| s.servers.iter().any(|s| s.alive)) {
        assert!(Instant::now() < deadline, "no chunkserver registered; {}", logs(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (alice_dir, bob_dir) = (issue(dir.path(), "alice"), issue(dir.path(), "bob"));
    // Both claim to be someone else, in the supergroup: the master
    // believes the certificates only.
    let alice = client(&master, &alice_dir, "gfs");
    let bob = client(&master, &bob_dir, "alice");

    // The admin certificate is a superuser: it makes alice's home.
    admin.mkdir("/home/alice", true).await.unwrap();
    admin.set_owner("/home/alice", Some("alice"), Some("alice")).await.unwrap();
    denied(alice.mkdir("/mine", false).await, "alice");
    alice.mkdir("/home/alice/private", false).await.unwrap();
    alice.set_permission("/home/alice/private", 0o700).await.unwrap();
    let data = b"alice's secret".repeat(1000);
    alice.create("/home/alice/private/f", None).await.unwrap();
    alice.write_at("/home/alice/private/f", 0, &data).await.unwrap();
    let f = alice.stat("/home/alice/private/f").await.unwrap().info;
    assert_eq!((f.owner.as_str(), f.group.as_str(), f.mode), ("alice", "alice", 0o644), "not the claimed gfs");
    denied(alice.set_owner("/home/alice/private/f", Some("bob"), None).await, "alice");

    // bob, claiming alice, is bob: nothing of hers is open to him.
    let e = denied(bob.list("/home/alice/private").await, "bob");
    assert!(e.contains("inode=\"/home/alice/private\":alice:alice:drwx------"), "{e}");
    denied(bob.read_all("/home/alice/private/f").await, "bob");
    denied(bob.write_at("/home/alice/private/f", 0, b"bob was here").await, "bob");
    denied(bob.delete("/home/alice/private/f", false).await, "bob");
    denied(bob.rename("/home/alice/private", "/home/alice/p2").await, "bob");
    denied(bob.set_permission("/home/alice/private", 0o777).await, "bob");
    denied(bob.set_replication("/home/alice/private/f", 1, true).await, "bob");

    // The CLI too: the certificate decides, `$USER` does not.
    let out = cli(&master, &bob_dir, &["ls", "/home/alice/private"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.starts_with("gfs: permission denied: user=bob"), "{err}");
    let out = cli(&master, &alice_dir, &["chmod", "640", "/home/alice/private/f"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&master, &alice_dir, &["setrep", "-w", "1", "/home/alice/private"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said == "Replication 1 set: /home/alice/private/f\n", "{said}");
    let out = cli(&master, &alice_dir, &["ls", "-l", "/home/alice/private"]);
    let ls = String::from_utf8_lossy(&out.stdout);
    assert!(ls.starts_with("-rw-r-----   1 alice alice") && ls.trim_end().ends_with(" f"), "{ls}");
    let out = cli(&master, &alice_dir, &["chown", "bob", "/home/alice/private/f"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("only a superuser may change an owner"), "{err}");

    // Her data is intact, and the superuser may read it.
    assert!(alice.read_all("/home/alice/private/f").await.unwrap() == data);
    assert!(admin.read_all("/home/alice/private/f").await.unwrap() == data);
}

fn logs(dir: &Path) -> String {
    ["master.log", "cs.log"]
        .iter()
        .map(|f| format!("--- {f}\n{}", std::fs::read_to_string(dir.join(f)).unwrap_or_default()))
        .collect()
}
