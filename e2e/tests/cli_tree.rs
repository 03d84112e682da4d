//! The tree and glob forms of the `gfs` CLI run as the real binary against
//! an in-process cluster (testkit): `put -r`/`get -r` and several sources,
//! remote globs (`ls`, `rm`, no match), and the trash (`trash list`,
//! `restore`, `empty`, `rm --skip-trash`), each checked through the client.

use std::collections::BTreeMap;
use std::path::Path;

use gfs_client::Client;
use gfs_common::path::HIDDEN_PREFIX;
use gfs_e2e::gfs_cli::{fails, ok};
use gfs_testkit::{Cluster, ClusterOptions};

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(seed) * 7) as u8).collect()
}

async fn cluster() -> Cluster {
    let opts = ClusterOptions { chunkservers: 2, replication: 2, ..Default::default() };
    Cluster::start(opts).await.unwrap()
}

/// Every file below `top` by its path relative to `top`, with its bytes.
fn local_tree(top: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut dirs = vec![top.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let rel = p.strip_prefix(top).unwrap().to_str().unwrap().to_string();
                all.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    all
}

/// Names in `dir` (hidden ones too), sorted.
async fn names(c: &Client, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = c
        .list_with(dir, true)
        .await
        .unwrap()
        .into_iter()
        .map(|e| gfs_common::path::file_name(&e.path).to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_and_get_trees_and_several_sources() {
    let cluster = cluster().await;
    let m = cluster.master_addr().to_string();
    let c = cluster.client();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    let files = [("top.bin", 3000), ("a/one", 1), ("a/b/two", 70_000), ("a/b/c/three", 0), ("a/b/c/four", 5)];
    for (i, (rel, len)) in files.iter().enumerate() {
        std::fs::write(src.join(rel), data(i as u8, *len)).unwrap();
    }
    let s = src.to_str().unwrap();

    let (_, err) = fails(&m, &["put", s, "/t"]);
    assert!(err.contains("local") && err.contains("use -r"), "{err}");
    ok(&m, &["put", "-r", s, "/t"]);
    assert_eq!(c.read_all("/t/a/b/two").await.unwrap(), data(2, 70_000));
    assert!(c.stat("/t/empty").await.is_ok(), "empty directories come along");

    let back = tmp.path().join("back");
    ok(&m, &["get", "-r", "/t", back.to_str().unwrap()]);
    let (want, got) = (local_tree(&src), local_tree(&back));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    assert_eq!(got, want, "every file byte-equal");
    assert!(back.join("empty").is_dir());

    // Several sources into an existing directory.
    c.mkdir("/many", false).await.unwrap();
    let (one, two) = (src.join("a/one"), src.join("a/b/two"));
    ok(&m, &["put", one.to_str().unwrap(), two.to_str().unwrap(), "/many"]);
    assert_eq!(names(&c, "/many").await, ["one", "two"]);
    assert_eq!(c.read_all("/many/two").await.unwrap(), data(2, 70_000));
    // ... and never into a file, nor a missing directory.
    let (_, err) = fails(&m, &["put", one.to_str().unwrap(), two.to_str().unwrap(), "/many/one"]);
    assert!(err.contains("remote /many/one: not an existing directory"), "{err}");
    let (_, err) = fails(&m, &["put", one.to_str().unwrap(), two.to_str().unwrap(), "/nodir"]);
    assert!(err.contains("not an existing directory"), "{err}");
    assert!(c.stat("/nodir").await.is_err());

    // get: several sources (a glob) into a local directory, not into a file.
    let dl = tmp.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    ok(&m, &["get", "/many/*", dl.to_str().unwrap()]);
    assert_eq!(std::fs::read(dl.join("two")).unwrap(), data(2, 70_000));
    assert_eq!(std::fs::read(dl.join("one")).unwrap(), data(1, 1));
    let (_, err) = fails(&m, &["get", "/many/one", "/many/two", dl.join("one").to_str().unwrap()]);
    assert!(err.contains("local") && err.contains("not an existing directory"), "{err}");
    let (code, err) = fails(&m, &["get", "/many/one", dl.join("one").to_str().unwrap()]);
    assert_eq!(code, 4, "an existing local file needs -f: {err}");
    ok(&m, &["get", "-f", "/many/two", dl.join("one").to_str().unwrap()]);
    assert_eq!(std::fs::read(dl.join("one")).unwrap(), data(2, 70_000));
    assert!(!dl.join("one._COPYING_").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_globs_select_exactly_the_matches() {
    let cluster = cluster().await;
    let m = cluster.master_addr().to_string();
    let c = cluster.client();
    c.mkdir("/g/sub", true).await.unwrap();
    for f in ["a.log", "ab.txt", "b.log", "c.dat", "sub/d.log"] {
        c.put(&format!("/g/{f}"), &b"x"[..], None).await.unwrap();
    }
    assert_eq!(ok(&m, &["ls", "/g/*.log"]), "/g/a.log\n/g/b.log\n");
    assert_eq!(ok(&m, &["ls", "/g/[ab]*"]), "/g/a.log\n/g/ab.txt\n/g/b.log\n");
    let json: serde_json::Value = serde_json::from_str(&ok(&m, &["ls", "--json", "/g/*.log"])).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(2), "one array for every match: {json}");
    assert_eq!(ok(&m, &["ls", "/?/s*/*.log"]), "/g/sub/d.log\n");
    assert_eq!(ok(&m, &["cat", "/g/s?b/d.*"]), "x");
    let (code, err) = fails(&m, &["ls", "/g/*.none"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("remote /g/*.none: no match"), "{err}");
    assert_eq!(fails(&m, &["rm", "/nope*/x"]).0, 3);
    ok(&m, &["rm", "-f", "/g/*.none"]);

    ok(&m, &["rm", "/g/a*"]);
    let left: Vec<String> = c.list("/g").await.unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(left, ["/g/b.log", "/g/c.dat", "/g/sub"]);
    let hidden = names(&c, "/g").await.into_iter().filter(|n| n.starts_with(HIDDEN_PREFIX)).count();
    assert_eq!(hidden, 2, "both went to the trash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trash_list_restore_empty_and_skip_trash() {
    let cluster = cluster().await;
    let m = cluster.master_addr().to_string();
    let c = cluster.client();
    c.mkdir("/d/e", true).await.unwrap();
    let bytes = data(9, 5000);
    c.put("/d/e/keep.bin", &bytes[..], None).await.unwrap();
    c.put("/d/other", &b"o"[..], None).await.unwrap();
    ok(&m, &["rm", "/d/e/keep.bin"]);
    ok(&m, &["rm", "/d/other"]);

    let listed = ok(&m, &["trash", "list", "/d"]);
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    // `YYYY-MM-DD HH:MM:SS  file  ORIGINAL  HIDDEN`
    let row = rows.iter().find(|r| r[3] == "/d/e/keep.bin").unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(row[2], "file", "{listed}");
    let hidden = row[4].to_string();
    assert!(hidden.starts_with(&format!("/d/e/{HIDDEN_PREFIX}")) && hidden.ends_with(".keep.bin"), "{hidden}");
    assert_eq!(ok(&m, &["trash", "list", "/d/e"]).lines().count(), 1, "only below PATH");

    ok(&m, &["trash", "restore", &hidden]);
    assert_eq!(c.read_all("/d/e/keep.bin").await.unwrap(), bytes);
    let (code, _) = fails(&m, &["trash", "restore", "/d/e/keep.bin"]);
    assert_eq!(code, 2, "not a deleted entry");

    ok(&m, &["trash", "empty", "/"]);
    for dir in ["/", "/d", "/d/e"] {
        let n = names(&c, dir).await;
        assert!(n.iter().all(|x| !x.starts_with(HIDDEN_PREFIX)), "{dir}: {n:?}");
    }
    assert_eq!(ok(&m, &["trash", "list"]), "");

    ok(&m, &["rm", "--skip-trash", "/d/e/keep.bin"]);
    assert_eq!(names(&c, "/d/e").await, Vec::<String>::new(), "nothing hidden left");
    ok(&m, &["rm", "-r", "--skip-trash", "/d"]);
    assert!(names(&c, "/").await.iter().all(|x| !x.starts_with(HIDDEN_PREFIX)));
    assert!(c.stat("/d").await.is_err());
}
