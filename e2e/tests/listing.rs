//! Paged listings through the client and the `gfs ls` CLI, against an
//! in-process cluster (testkit): a directory larger than a page lists every
//! entry once and in order, deleted entries are skipped without breaking
//! the pages, and `ls -R` walks a tree.

use std::process::Command;

use futures::StreamExt;
use gfs_client::{Client, FileType};
use gfs_common::ErrorKind;
use gfs_testkit::{Cluster, ClusterOptions};

/// Entries of the big directory: two and a half pages of 1000.
const N: usize = 2_500;

fn name(i: usize) -> String {
    format!("f{i:04}")
}

fn names(entries: &[gfs_client::FileInfo]) -> Vec<String> {
    entries.iter().map(|e| e.path.rsplit('/').next().unwrap().to_string()).collect()
}

async fn cluster() -> Cluster {
    Cluster::start(ClusterOptions { chunkservers: 1, replication: 1, ..Default::default() }).await.unwrap()
}

/// `/big` with N empty files, of which `gone` are deleted (hidden).
async fn big_dir(c: &Client, gone: &[usize]) {
    c.mkdir("/big", false).await.unwrap();
    let creates = futures::stream::iter(0..N).map(|i| {
        let c = c.clone();
        async move { c.create(&format!("/big/{}", name(i)), None).await.map(|_| ()) }
    });
    let done: Vec<_> = creates.buffer_unordered(64).collect().await;
    assert!(done.iter().all(|r| r.is_ok()), "{:?}", done.iter().find(|r| r.is_err()));
    for &i in gone {
        c.delete(&format!("/big/{}", name(i)), false).await.unwrap();
    }
}

/// A small tree for `-R`: /t/{a/{x, y/{z}}, b, c/}, and a deleted
/// /t/c/gone (hidden, awaiting GC), which walks leave out.
async fn tree(c: &Client) {
    for d in ["/t/a/y", "/t/c"] {
        c.mkdir(d, true).await.unwrap();
    }
    for f in ["/t/a/x", "/t/a/y/z", "/t/b", "/t/c/gone"] {
        c.create(f, None).await.unwrap();
    }
    c.delete("/t/c/gone", false).await.unwrap();
}

fn gfs(master: &str, args: &[&str]) -> String {
    let out = Command::new(gfs_e2e::bin("gfs")).args(["--insecure", "--master", master]).args(args).output().unwrap();
    assert!(out.status.success(), "gfs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_directory_larger_than_a_page_lists_every_entry_once() {
    let cluster = cluster().await;
    let c = cluster.client();
    let gone: Vec<usize> = (995..1_005).chain([0, 1_999, 2_000, N - 1]).collect();
    big_dir(&c, &gone).await;
    let live: Vec<String> = (0..N).filter(|i| !gone.contains(i)).map(name).collect();

    assert_eq!(names(&c.list("/big").await.unwrap()), live, "all pages of 1000 followed");
    let mut pages = c.lister("/big", false).with_limit(7);
    let (mut seen, mut sizes) = (vec![], vec![]);
    while let Some(p) = pages.next_page().await.unwrap() {
        sizes.push(p.len());
        seen.extend(names(&p));
    }
    assert_eq!(seen, live);
    assert!(sizes.iter().all(|s| *s == 7) || sizes[..sizes.len() - 1].iter().all(|s| *s == 7));
    // The server's default and its cap.
    let first = c.list_page("/big", "", 0).await.unwrap();
    assert_eq!((first.entries.len(), first.has_more), (1000, true));
    let whole = c.list_page("/big", "", u32::MAX).await.unwrap();
    assert_eq!((names(&whole.entries), whole.has_more), (live.clone(), false));
    // A cursor that is no entry (here a deleted one) resumes after it.
    let p = c.list_page("/big", &name(996), 2).await.unwrap();
    assert_eq!((names(&p.entries), p.has_more), (vec![name(1_005), name(1_006)], true));
    let e = c.list_page("/big", "a/b", 0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // The count excludes the deleted; with them, every name is listed.
    assert_eq!(c.stat("/big").await.unwrap().info.children, live.len() as u64);
    assert_eq!(c.list_with("/big", true).await.unwrap().len(), N);

    // The CLI streams the same pages.
    let m = cluster.master_addr().to_string();
    let plain = gfs(&m, &["ls", "/big"]);
    assert_eq!(plain.lines().collect::<Vec<_>>(), live);
    let long = gfs(&m, &["ls", "-l", "/big"]);
    assert_eq!(long.lines().count(), live.len());
    assert!(long.lines().all(|l| l.starts_with("-rw-")), "{}", &long[..200]);
    let json: serde_json::Value = serde_json::from_str(&gfs(&m, &["ls", "--json", "/big"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), live.len());
    assert_eq!(json[live.len() - 1]["name"], *live.last().unwrap());
    assert_eq!(gfs(&m, &["ls", "-a", "/big"]).lines().count(), N);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recursive_listings_walk_the_tree_in_pre_order() {
    let cluster = cluster().await;
    let c = cluster.client();
    tree(&c).await;
    let pre_order = ["/t/a/", "/t/a/x", "/t/a/y/", "/t/a/y/z", "/t/b", "/t/c/"];

    let mut walk = c.tree_lister("/t", false);
    let mut got = vec![];
    while let Some(batch) = walk.next_batch().await.unwrap() {
        let dir = |e: &gfs_client::FileInfo| e.r#type() == FileType::Directory;
        got.extend(batch.iter().map(|e| format!("{}{}", e.path, if dir(e) { "/" } else { "" })));
    }
    assert_eq!(got, pre_order);

    let m = cluster.master_addr().to_string();
    assert_eq!(gfs(&m, &["ls", "-R", "/t"]).lines().collect::<Vec<_>>(), pre_order);
    let long = gfs(&m, &["ls", "-lR", "/t"]);
    let last: Vec<&str> = long.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert_eq!(last, pre_order, "{long}");
    let json: serde_json::Value = serde_json::from_str(&gfs(&m, &["ls", "-R", "--json", "/t"])).unwrap();
    let paths: Vec<&str> = json.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/t/a", "/t/a/x", "/t/a/y", "/t/a/y/z", "/t/b", "/t/c"]);
    // A file lists as itself; -a shows the deleted entry too.
    assert_eq!(gfs(&m, &["ls", "-R", "/t/b"]), "/t/b\n");
    let all = gfs(&m, &["ls", "-R", "-a", "/t/c"]);
    assert!(all.starts_with("/t/c/.gfs-deleted.") && all.ends_with(".gone\n"), "{all}");
    cluster.shutdown().await.unwrap();
}

/// The walk behind `chmod -R`, `chown -R` and `setrep`: every entry once,
/// each after everything below it, the top last, deleted entries left
/// out; a directory of more than a page is followed page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_order_walks_give_each_entry_after_all_below_it() {
    let cluster = cluster().await;
    let c = cluster.client();
    tree(&c).await;
    let all = |mut walk: gfs_client::TreeLister| async move {
        let mut got = vec![];
        while let Some(batch) = walk.next_batch().await.unwrap() {
            assert!(!batch.is_empty(), "an empty batch before the end");
            got.extend(batch.into_iter().map(|e| e.path));
        }
        got
    };
    let got = all(c.walk_post_order("/t").await.unwrap()).await;
    assert_eq!(got, ["/t/a/x", "/t/a/y/z", "/t/a/y", "/t/a", "/t/b", "/t/c", "/t"]);
    assert_eq!(all(c.walk_post_order("/t/b").await.unwrap()).await, ["/t/b"], "a file walks as itself");
    assert!(c.walk_post_order("/nope").await.is_err());

    // Two and a half pages, one deleted entry, under a subdirectory.
    big_dir(&c, &[7]).await;
    c.mkdir("/big/sub", false).await.unwrap();
    c.create("/big/sub/inner", None).await.unwrap();
    let got = all(c.walk_post_order("/big").await.unwrap()).await;
    assert_eq!(got.len(), N - 1 + 3, "every live entry once, plus sub, sub/inner and the top");
    let unique: std::collections::BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "an entry came twice");
    assert!(!got.contains(&format!("/big/{}", name(7))), "a deleted entry was walked");
    let at = |p: &str| got.iter().position(|g| g == p).unwrap();
    assert!(at("/big/sub/inner") < at("/big/sub"));
    assert_eq!(got.last().map(String::as_str), Some("/big"));

    // chmod -R through the CLI: the top loses its permissions last.
    let m = cluster.master_addr().to_string();
    gfs(&m, &["chmod", "-R", "700", "/t"]);
    for p in ["/t", "/t/a", "/t/a/y/z", "/t/c"] {
        assert_eq!(c.stat(p).await.unwrap().info.mode & 0o777, 0o700, "{p}");
    }
    cluster.shutdown().await.unwrap();
}
