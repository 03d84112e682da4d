use super::*;
use gfs_common::ErrorKind;
use gfs_proto::{CreateOp, DeleteOp, MkdirOp, RenameOp};
use std::collections::BTreeSet;

fn mkdir(p: &str) -> Op {
    Op::Mkdir(MkdirOp { path: p.into(), ..Default::default() })
}
fn create(p: &str) -> Op {
    Op::Create(CreateOp { path: p.into(), replication: 3, chunk_size: 1 << 20, ..Default::default() })
}

#[test]
fn basic_tree_operations() {
    let mut ns = Namespace::new();
    assert!(ns.check_mkdir("/a", false).unwrap());
    ns.apply(&mkdir("/a/b/c"), 1).unwrap();
    assert!(ns.get("/a/b").unwrap().is_dir());
    assert!(!ns.check_mkdir("/a/b", true).unwrap());
    assert_eq!(ns.check_mkdir("/a/b", false).unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert_eq!(ns.check_mkdir("/x/y", false).unwrap_err().kind(), ErrorKind::NotFound);
    ns.apply(&create("/a/f"), 2).unwrap();
    assert_eq!(ns.check_mkdir("/a/f", true).unwrap_err().kind(), ErrorKind::NotADirectory);
    assert_eq!(ns.check_mkdir("/a/f/g", true).unwrap_err().kind(), ErrorKind::NotADirectory);
    assert_eq!(ns.check_create("/a/f/g", true).unwrap_err().kind(), ErrorKind::NotADirectory);
    assert_eq!(ns.check_create("/a/f", true).unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert!(ns.check_create("/a/f", false).unwrap().is_some());
    assert_eq!(ns.check_create("/a", false).unwrap_err().kind(), ErrorKind::IsADirectory);
    assert_eq!(ns.check_delete("/a", false).unwrap_err().kind(), ErrorKind::DirectoryNotEmpty);
    assert_eq!(ns.check_delete("/", true).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(ns.check_rename("/a", "/a/b/z").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(ns.check_rename("/", "/z").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(ns.check_rename("/a/f", "/a/b").unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert_eq!(ns.check_rename("/nope", "/z").unwrap_err().kind(), ErrorKind::NotFound);
    ns.apply(&Op::Rename(RenameOp { src: "/a".into(), dst: "/z".into() }), 3).unwrap();
    assert!(ns.get("/a").is_none());
    assert!(ns.get("/z/b/c").is_some());
    assert_eq!(ns.children("/z"), vec!["/z/b".to_string(), "/z/f".to_string()]);
    assert_eq!(ns.children("/"), vec!["/z".to_string()]);
    ns.apply(&Op::Delete(DeleteOp { path: "/z".into() }), 4).unwrap();
    assert_eq!(ns.counts(), (0, 1));
    assert!(ns.children("/").is_empty());
}

/// Random op sequences against a flat model: set of dirs + set of files.
#[test]
fn random_ops_match_model() {
    use rand::{Rng, SeedableRng};
    let names = ["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/q", "/b/x/q"];
    for seed in 0..50u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut ns = Namespace::new();
        let mut dirs: BTreeSet<String> = ["/".to_string()].into();
        let mut files: BTreeSet<String> = BTreeSet::new();
        for t in 0..60 {
            let p = names[rng.random_range(0..names.len())];
            let parent_ok = dirs.contains(parent(p).unwrap());
            let exists = dirs.contains(p) || files.contains(p);
            match rng.random_range(0..4) {
                0 => {
                    let ok = ns.check_mkdir(p, false).is_ok();
                    assert_eq!(ok, parent_ok && !exists, "mkdir {p}");
                    if ok {
                        ns.apply(&mkdir(p), t).unwrap();
                        dirs.insert(p.into());
                    }
                }
                1 => {
                    let ok = ns.check_create(p, true).is_ok();
                    assert_eq!(ok, parent_ok && !exists, "create {p}");
                    if ok {
                        ns.apply(&create(p), t).unwrap();
                        files.insert(p.into());
                    }
                }
                _ => {
                    let ok = ns.check_delete(p, true).is_ok();
                    assert_eq!(ok, exists, "delete {p}");
                    if ok {
                        ns.apply(&Op::Delete(DeleteOp { path: p.into() }), t).unwrap();
                        dirs.retain(|d| !is_within(d, p));
                        files.retain(|d| !is_within(d, p));
                    }
                }
            }
            let got: BTreeSet<String> = ns.iter().filter(|(_, n)| n.is_dir()).map(|(k, _)| k.to_string()).collect();
            assert_eq!(got, dirs);
            let got: BTreeSet<String> = ns.iter().filter(|(_, n)| !n.is_dir()).map(|(k, _)| k.to_string()).collect();
            assert_eq!(got, files);
        }
    }
}
