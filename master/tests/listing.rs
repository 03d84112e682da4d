//! Paged `List` (HDFS getListing): a cursor and a bounded page, deleted
//! entries skipped without breaking pages, bad cursors refused, and the
//! directory's entry count without its deleted entries.

mod common;

use common::*;
use gfs_common::ErrorKind;
use gfs_proto::*;

/// Entries of the big directory: more than one maximum page (10 000).
const N: usize = 10_050;

fn name(i: usize) -> String {
    format!("f{i:05}")
}

fn req(path: &str, start_after: &str, limit: u32) -> ListRequest {
    ListRequest { path: path.into(), start_after: start_after.into(), limit, ..Default::default() }
}

async fn page(c: &mut Client, r: ListRequest) -> (Vec<String>, bool) {
    let resp = c.list(r).await.unwrap().into_inner();
    (resp.entries.into_iter().map(|e| e.path.rsplit('/').next().unwrap().to_string()).collect(), resp.has_more)
}

/// Follows every page of `r` (its cursor and limit as the first request's);
/// returns the names and the size of each page.
async fn all_pages(c: &mut Client, mut r: ListRequest) -> (Vec<String>, Vec<usize>) {
    let (mut names, mut sizes) = (vec![], vec![]);
    loop {
        let (got, more) = page(c, r.clone()).await;
        sizes.push(got.len());
        names.extend(got);
        if !more {
            return (names, sizes);
        }
        r.start_after = names.last().unwrap().clone();
    }
}

/// Creates `/big/f00000`.. in parallel (grouped into few Raft entries).
async fn fill(c: &Client) {
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let mut c = c.clone();
            tokio::spawn(async move {
                for i in (w..N).step_by(64) {
                    create(&mut c, &format!("/big/{}", name(i))).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
}

async fn hide(c: &mut Client, path: &str) {
    c.delete(DeleteRequest { path: path.into(), recursive: false, call: None, immediate: false }).await.unwrap();
}

async fn children(c: &mut Client, path: &str) -> u64 {
    let r = StatRequest { path: path.into(), allow_stale: false };
    c.stat(r).await.unwrap().into_inner().info.unwrap().children
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_list_every_entry_once_in_order_around_deleted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    mkdir(&mut c, "/big", false).await.unwrap();
    fill(&c).await;
    let every: Vec<String> = (0..N).map(name).collect();

    // An old client (neither field): the first page of 1000, more follow.
    let (first, more) = page(&mut c, req("/big", "", 0)).await;
    assert_eq!((first.as_slice(), more), (&every[..1000], true));
    // The default page all the way; a huge limit is clamped to 10 000.
    let (names, sizes) = all_pages(&mut c, req("/big", "", 0)).await;
    assert_eq!(names, every);
    assert_eq!(sizes, [vec![1000; 10], vec![50]].concat());
    let (names, sizes) = all_pages(&mut c, req("/big", "", u32::MAX)).await;
    assert_eq!((names, sizes), (every.clone(), vec![10_000, 50]));
    // Shadow reads page the same way.
    let stale = ListRequest { allow_stale: true, ..req("/big", &name(9_990), 7) };
    assert_eq!(all_pages(&mut c, stale).await.0, every[9_991..]);

    // Delete a run in the middle (across page boundaries of 7) and a few
    // others; the cursor may even be a deleted name.
    let gone: Vec<usize> = (500..530).chain([0, 8, 4_999, N - 1]).collect();
    for &i in &gone {
        hide(&mut c, &format!("/big/{}", name(i))).await;
    }
    let live: Vec<String> = (0..N).filter(|i| !gone.contains(i)).map(name).collect();
    let (names, sizes) = all_pages(&mut c, req("/big", "", 7)).await;
    assert_eq!(names, live, "every live name once, in order");
    assert!(sizes[..sizes.len() - 1].iter().all(|s| *s == 7), "full pages until the last");
    let (after_deleted, _) = page(&mut c, req("/big", &name(510), 3)).await;
    assert_eq!(after_deleted, [name(530), name(531), name(532)]);
    assert_eq!(children(&mut c, "/big").await, (N - gone.len()) as u64);
    assert_eq!(children(&mut c, "/").await, 1);
    // With the deleted ones: all N, the hidden names first (".gfs-…").
    let (names, _) = all_pages(&mut c, ListRequest { include_hidden: true, ..req("/big", "", 999) }).await;
    assert_eq!(names.len(), N);
    assert!(names[..gone.len()].iter().all(|n| n.starts_with(".gfs-deleted.")), "{:?}", &names[..3]);
    assert_eq!(names[gone.len()..], live);
    // Undelete one (rename it back) and purge another (delete the hidden
    // path): the count follows both.
    let back =
        RenameRequest { src: format!("/big/{}", names[0]), dst: "/big/back".into(), call: None, overwrite: false };
    c.rename(back).await.unwrap();
    hide(&mut c, &format!("/big/{}", names[1])).await;
    assert_eq!(children(&mut c, "/big").await, (N - gone.len() + 1) as u64);
    let (names, _) = all_pages(&mut c, ListRequest { include_hidden: true, ..req("/big", "", 0) }).await;
    assert_eq!(names.len(), N - 1);
    stop(h, token).await;
}

#[tokio::test]
async fn cursors_resume_after_any_name_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    mkdir(&mut c, "/d/sub", true).await.unwrap();
    for n in ["a", "b", "c", "e"] {
        create(&mut c, &format!("/d/{n}")).await.unwrap();
    }
    // A name that is not there resumes at the next greater one.
    assert_eq!(page(&mut c, req("/d", "bb", 0)).await, (vec!["c".into(), "e".into(), "sub".into()], false));
    assert_eq!(page(&mut c, req("/d", "d", 1)).await, (vec!["e".into()], true));
    assert_eq!(page(&mut c, req("/d", "zz", 0)).await, (vec![], false));
    assert_eq!(page(&mut c, req("/d", "c", 2)).await, (vec!["e".into(), "sub".into()], false), "exact fit");
    // A file lists as itself, whatever the cursor.
    let (one, more) = page(&mut c, req("/d/a", "x", 0)).await;
    assert_eq!((one, more), (vec!["a".to_string()], false));
    // Not a name: refused, saying why.
    let long = "n".repeat(400);
    for bad in ["sub/x", "/d/a", "..", "a\u{1b}b", &long] {
        let e = c.list(req("/d", bad, 0)).await.unwrap_err();
        assert_eq!(gfs_common::Error::from(e.clone()).kind(), ErrorKind::InvalidArgument, "{bad:?}");
        assert!(e.message().contains("start_after"), "{}", e.message());
    }
    // Permissions are checked as before paging: no READ on the directory.
    c.set_permission(SetPermissionRequest { path: "/d".into(), mode: 0o711, call: None }).await.unwrap();
    let mut bob = connect_as(h.addr, "bob", &[]).await;
    assert_eq!(kind(bob.list(req("/d", "a", 1)).await), ErrorKind::PermissionDenied);
    stop(h, token).await;
}

/// Entries with 4 KiB paths: a page ends at about 2 MiB of them whatever
/// the limit, so 10 000 such entries never make a reply over the message
/// limit (this raw client has tonic's default 4 MiB one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_of_long_paths_end_at_two_mib() {
    let dir = tempfile::tempdir().unwrap();
    let (h, token, mut c) = start(config(dir.path())).await;
    let deep: String = (0..15).map(|i| format!("/{}", format!("{i:02}").repeat(125))).collect();
    mkdir(&mut c, &deep, true).await.unwrap();
    let long = |i: usize| format!("{i:04}{}", "n".repeat(246));
    let workers: Vec<_> = (0..32)
        .map(|w| {
            let (mut c, deep) = (c.clone(), deep.clone());
            tokio::spawn(async move {
                for i in (w..700).step_by(32) {
                    create(&mut c, &format!("{deep}/{}", long(i))).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let first = c.list(req(&deep, "", 10_000)).await.unwrap().into_inner();
    let bytes: usize = first.entries.iter().map(prost::Message::encoded_len).sum();
    assert!(first.has_more && first.entries.len() < 700, "{} entries", first.entries.len());
    assert!((2 << 20..(2 << 20) + 8192).contains(&bytes), "{bytes} bytes");
    let (names, sizes) = all_pages(&mut c, req(&deep, "", 10_000)).await;
    assert_eq!(names, (0..700).map(long).collect::<Vec<_>>());
    assert_eq!(sizes.len(), 2);
    stop(h, token).await;
}
