//! Tables of permission decisions: one entry (`permits`, the sticky bit,
//! chown rules) and paths of a tree (`access.rs`).

use super::*;
use crate::namespace::Namespace;
use gfs_common::ErrorKind;
use gfs_common::perm::{ALL, EXECUTE, READ, WRITE};
use gfs_proto::log_record::Op;
use gfs_proto::{CreateOp, MkdirOp, SetAttrOp};

fn req(user: &str, groups: &[&str], superuser: bool) -> Requester {
    Requester { user: user.into(), groups: groups.iter().map(|g| g.to_string()).collect(), superuser }
}

/// A table with alice (2), bob (3) and the groups eng (4), ops (5).
fn names() -> Names {
    let mut n = Names::default();
    for name in ["alice", "bob", "eng", "ops"] {
        n.intern(name).unwrap();
    }
    n
}

#[test]
fn one_entry() {
    let n = names();
    let (alice, bob, eng) = (n.id("alice").unwrap(), n.id("bob").unwrap(), n.id("eng").unwrap());
    let p = |owner, group, mode| Perm { owner, group, mode };
    let alice_eng = req("alice", &["eng"], false);
    let bob_eng = req("bob", &["eng"], false);
    let bob_ops = req("bob", &["ops"], false);
    let carol = req("carol", &[], false); // not in the table: owns nothing
    let root = req("root", &[], true);
    // (perm, who, want, allowed, why)
    let cases: Vec<(Perm, &Requester, u8, bool, &str)> = vec![
        (p(alice, eng, 0o700), &alice_eng, ALL, true, "owner rwx"),
        (p(alice, eng, 0o700), &bob_eng, READ, false, "group has nothing"),
        (p(alice, eng, 0o750), &bob_eng, READ | EXECUTE, true, "group r-x"),
        (p(alice, eng, 0o750), &bob_eng, WRITE, false, "group no w"),
        (p(alice, eng, 0o750), &bob_ops, READ, false, "not in the group: other"),
        (p(alice, eng, 0o755), &bob_ops, READ | EXECUTE, true, "other r-x"),
        (p(alice, eng, 0o755), &carol, READ, true, "unknown user is other"),
        (p(alice, eng, 0o755), &carol, WRITE, false, "unknown user is other, no w"),
        (p(alice, eng, 0o077), &alice_eng, READ, false, "owner class only, even if group/other allow"),
        (p(bob, eng, 0o707), &bob_eng, READ, true, "owner bits for the owner"),
        (p(alice, eng, 0o707), &bob_eng, READ, false, "group class only, even if other allows"),
        (p(alice, eng, 0o000), &root, ALL, true, "superuser bypasses"),
        (p(alice, eng, 0o644), &alice_eng, EXECUTE, false, "no x on a 0644 file"),
        (p(alice, eng, 0o1777), &bob_ops, ALL, true, "sticky does not hide the rwx bits"),
    ];
    for (perm, r, want, allowed, why) in cases {
        assert_eq!(permits(perm, &n.who(r), want), allowed, "{why}: {perm:?} {} {want}", r.user);
    }
}

#[test]
fn sticky_bit() {
    let n = names();
    let (gfs, alice, bob, eng) = (0, n.id("alice").unwrap(), n.id("bob").unwrap(), n.id("eng").unwrap());
    let tmp = Perm { owner: gfs, group: 1, mode: 0o1777 };
    let plain = Perm { mode: 0o777, ..tmp };
    let alices = Perm { owner: alice, group: eng, mode: 0o644 };
    let (a, b, root) = (req("alice", &[], false), req("bob", &[], false), req("root", &[], true));
    let gfs_user = req("gfs", &[], false);
    assert!(sticky_permits(tmp, alices, &n.who(&a)), "the entry's owner");
    assert!(!sticky_permits(tmp, alices, &n.who(&b)), "someone else's entry");
    assert!(sticky_permits(tmp, alices, &n.who(&gfs_user)), "the directory's owner");
    assert!(sticky_permits(tmp, alices, &n.who(&root)), "a superuser");
    assert!(sticky_permits(plain, alices, &n.who(&b)), "no sticky bit");
    let bobs_dir = Perm { owner: bob, group: eng, mode: 0o1777 };
    assert!(sticky_permits(bobs_dir, alices, &n.who(&b)), "bob owns the sticky directory");
}

#[test]
fn chown_rules() {
    let n = names();
    let alices = Perm { owner: n.id("alice").unwrap(), group: n.id("eng").unwrap(), mode: 0o644 };
    let alice = req("alice", &["eng", "ops"], false);
    let bob = req("bob", &["eng", "ops"], false);
    let root = req("root", &[], true);
    let ok = |r: &Requester, o: Option<&str>, g: Option<&str>| check_set_owner(alices, &n.who(r), &n, o, g);
    assert!(ok(&root, Some("bob"), Some("x")).is_ok(), "a superuser sets anything");
    assert!(ok(&alice, None, Some("ops")).is_ok(), "the owner sets one of her groups");
    assert!(ok(&alice, Some("alice"), Some("ops")).is_ok(), "naming herself changes no owner");
    let e = ok(&alice, None, Some("wheel")).unwrap_err();
    assert!(e.to_string().contains("does not belong to group wheel"), "{e}");
    let e = ok(&alice, Some("bob"), None).unwrap_err();
    assert!(e.to_string().contains("only a superuser may change an owner"), "{e}");
    let e = ok(&bob, None, Some("ops")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "not the owner: {e}");
}

fn mkdir(ns: &mut Namespace, path: &str, owner: &str, mode: u32) {
    ns.apply(&Op::Mkdir(MkdirOp { path: path.into(), owner: owner.into(), mode: Some(mode) }), 1).unwrap();
}

fn create(ns: &mut Namespace, path: &str, owner: &str, mode: u32) {
    let op = CreateOp { path: path.into(), replication: 1, chunk_size: 1 << 20, owner: owner.into(), mode: Some(mode) };
    ns.apply(&Op::Create(op), 1).unwrap();
}

fn chmod(ns: &mut Namespace, path: &str, mode: u32) {
    ns.apply(&Op::SetAttr(SetAttrOp { path: path.into(), mode: Some(mode), ..Default::default() }), 1).unwrap();
}

/// /home (gfs 0755), /home/alice (alice 0700) with a file and a subtree,
/// /tmp (gfs 1777) with a file of alice's, /pub (alice 0755, group eng).
fn tree() -> Namespace {
    let mut ns = Namespace::new();
    mkdir(&mut ns, "/home", "gfs", 0o755);
    mkdir(&mut ns, "/home/alice", "alice", 0o700);
    create(&mut ns, "/home/alice/f", "alice", 0o644);
    mkdir(&mut ns, "/home/alice/d/e", "alice", 0o755);
    mkdir(&mut ns, "/tmp", "gfs", 0o1777);
    create(&mut ns, "/tmp/a", "alice", 0o644);
    mkdir(&mut ns, "/pub", "alice", 0o775);
    ns.apply(&Op::SetAttr(SetAttrOp { path: "/pub".into(), group: "eng".into(), ..Default::default() }), 1).unwrap();
    create(&mut ns, "/pub/f", "alice", 0o664);
    ns
}

fn denied(r: Result<()>) -> bool {
    matches!(r, Err(Error::PermissionDenied(_)))
}

#[test]
fn paths_of_a_tree() {
    let mut ns = tree();
    let (alice, bob, eng_bob, root) =
        (req("alice", &[], false), req("bob", &[], false), req("bob", &["eng"], false), req("r", &[], true));
    // Ancestors without x hide everything below, even what does not exist.
    assert!(denied(ns.allow_lookup(&bob, "/home/alice/f")));
    assert!(denied(ns.allow_lookup(&bob, "/home/alice/missing/x")));
    assert!(denied(ns.allow_access(&bob, "/home/alice/f", READ)));
    assert!(ns.allow_lookup(&bob, "/home/alice").is_ok(), "the directory itself: x on /home");
    assert!(denied(ns.allow_list(&bob, "/home/alice")), "list needs r-x on it");
    assert!(ns.allow_list(&alice, "/home/alice").is_ok());
    assert!(ns.allow_lookup(&root, "/home/alice/f").is_ok());
    assert!(ns.allow_access(&alice, "/home/alice/f", READ | WRITE).is_ok());
    assert!(ns.allow_lookup(&bob, "/nope/deeper").is_ok(), "missing ancestors are the lookup's to report");
    // Create: w on the parent; mkdir -p: on the deepest existing ancestor.
    assert!(denied(ns.allow_create(&bob, "/home/bob", false)), "/home is 0755 gfs");
    assert!(denied(ns.allow_create(&bob, "/home/bob/x/y", true)));
    assert!(ns.allow_create(&bob, "/tmp/b", false).is_ok());
    assert!(ns.allow_create(&bob, "/tmp/x/y/z", true).is_ok());
    assert!(ns.allow_create(&bob, "/home", true).is_ok(), "exists: nothing to create");
    assert!(denied(ns.allow_create(&bob, "/pub/g", false)), "bob is not in eng");
    assert!(ns.allow_create(&eng_bob, "/pub/g", false).is_ok(), "the group has w");
    // Delete: w on the parent, the sticky bit.
    assert!(denied(ns.allow_delete(&bob, "/tmp/a")), "sticky: alice's file");
    assert!(ns.allow_delete(&alice, "/tmp/a").is_ok());
    assert!(ns.allow_delete(&eng_bob, "/pub/f").is_ok(), "no sticky bit on /pub");
    chmod(&mut ns, "/pub", 0o1775);
    assert!(denied(ns.allow_delete(&eng_bob, "/pub/f")), "now sticky");
    assert!(denied(ns.allow_rename(&eng_bob, "/pub/f", "/tmp/f")), "sticky holds for renames");
    // Recursive delete: rwx on every non-empty directory below.
    assert!(ns.allow_delete(&alice, "/home/alice/d").is_ok());
    chmod(&mut ns, "/home/alice/d", 0o555);
    assert!(denied(ns.allow_delete(&alice, "/home/alice/d")), "d is not writable");
    chmod(&mut ns, "/home/alice/d", 0o755);
    chmod(&mut ns, "/home/alice/d/e", 0o000);
    assert!(ns.allow_delete(&alice, "/home/alice/d").is_ok(), "an empty directory needs nothing");
    create(&mut ns, "/home/alice/d/e/f", "alice", 0o644);
    let e = ns.allow_delete(&alice, "/home/alice/d").unwrap_err();
    assert!(e.to_string().contains("access=ALL, inode=\"/home/alice/d/e\":alice:supergroup:d---------"), "{e}");
    // Rename: w on both parents.
    assert!(ns.allow_rename(&alice, "/home/alice/f", "/tmp/f").is_ok());
    assert!(denied(ns.allow_rename(&alice, "/home/alice/f", "/home/f")), "no w on /home");
    assert!(denied(ns.allow_rename(&bob, "/tmp/a", "/tmp/b")), "sticky source");
    // chmod: the owner only.
    assert!(ns.allow_chmod(&alice, "/home/alice/f").is_ok());
    assert!(denied(ns.allow_chmod(&bob, "/tmp/a")));
    assert!(ns.allow_chmod(&root, "/tmp/a").is_ok());
}

#[test]
fn denials_say_who_what_and_where() {
    let ns = tree();
    let e = ns.allow_list(&req("bob", &[], false), "/home/alice").unwrap_err();
    assert_eq!(
        e.to_string(),
        "permission denied: user=bob, access=READ_EXECUTE, inode=\"/home/alice\":alice:supergroup:drwx------"
    );
    let long = format!("/home/alice/{}", "x".repeat(300));
    let e = ns.allow_lookup(&req("bob", &[], false), &format!("{long}/y")).unwrap_err();
    assert!(e.to_string().contains("access=EXECUTE, inode=\"/home/alice\""), "{e}");
    let e = ns.allow_delete(&req("bob", &[], false), "/tmp/a").unwrap_err();
    assert!(e.to_string().contains("sticky bit: user=bob"), "{e}");
}

#[test]
fn new_entries_take_owner_parent_group_and_mode() {
    let mut ns = tree();
    mkdir(&mut ns, "/pub/x/y", "bob", 0o700);
    let (x, y) = (ns.get("/pub/x").unwrap().perm(), ns.get("/pub/x/y").unwrap().perm());
    let (bob, eng) = (ns.names().id("bob").unwrap(), ns.names().id("eng").unwrap());
    assert_eq!((x.owner, x.group, x.mode), (bob, eng, 0o700 | 0o300), "ancestors of mkdir -p get u+wx");
    assert_eq!((y.owner, y.group, y.mode), (bob, eng, 0o700));
    assert_eq!(ns.get("/").unwrap().perm(), Perm::root());
    // Ops from before permissions: the defaults that keep everyone's access.
    ns.apply(&Op::Mkdir(MkdirOp { path: "/old".into(), ..Default::default() }), 1).unwrap();
    ns.apply(&Op::Create(CreateOp { path: "/old/f".into(), ..Default::default() }), 1).unwrap();
    assert_eq!(ns.get("/old").unwrap().perm(), Perm { owner: 0, group: 1, mode: 0o777 });
    assert_eq!(ns.get("/old/f").unwrap().perm(), Perm { owner: 0, group: 1, mode: 0o666 });
    // A bad op fails at apply on every master alike.
    let bad = Op::SetAttr(SetAttrOp { path: "/old".into(), mode: Some(0o7777), ..Default::default() });
    assert!(ns.apply(&bad, 1).is_err());
    let bad = Op::SetAttr(SetAttrOp { path: "/old".into(), owner: "a b".into(), ..Default::default() });
    assert!(ns.apply(&bad, 1).is_err());
}

#[test]
fn the_name_table_is_bounded_and_checked() {
    let mut n = Names::default();
    assert_eq!((n.id(SUPERUSER), n.id(SUPERGROUP)), (Some(0), Some(1)));
    assert!(n.intern("no spaces").is_err());
    assert_eq!(n.intern("alice").unwrap(), 2);
    assert_eq!(n.intern("alice").unwrap(), 2);
    assert_eq!(Names::from_list(&n.to_list()).unwrap(), n);
    assert!(Names::from_list(&["a".into(), "a".into()]).is_err(), "duplicates");
    assert_eq!(Names::from_list(&[]).unwrap(), Names::default(), "pre-permission checkpoint");
    assert!(n.check_room_for(&["alice", "x", "x"]).is_ok());
    assert!(n.check_room(MAX_NAMES - n.len()).is_ok());
    assert!(n.check_room(MAX_NAMES - n.len() + 1).is_err());
}

#[test]
fn memory_per_entry() {
    // Permissions are 12 bytes (two name ids and the mode); a node grows
    // from 48 to 56 bytes (a file's had 4 bytes of padding).
    assert_eq!(std::mem::size_of::<Perm>(), 12);
    let node = std::mem::size_of::<crate::namespace::Node>();
    assert!(node <= 56, "Node is {node} bytes");
}
