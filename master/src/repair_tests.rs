use super::*;

fn chunk(handle: u64, replicas: &[&str], base: u32) -> ChunkView {
    let r: Vec<String> = replicas.iter().map(|s| s.to_string()).collect();
    ChunkView {
        handle,
        length: 100,
        base,
        target: base,
        replicas: r.clone(),
        in_service: r,
        hidden: false,
        blocking: false,
        busy: false,
        avoid: Vec::new(),
    }
}

fn server(id: &str, zone: &str, used: u64) -> ServerView {
    ServerView {
        id: id.into(),
        zone: zone.into(),
        capacity: 10_000,
        used,
        in_service: true,
        clones: 0,
        full: false,
        free: None,
    }
}

fn servers(n: usize) -> Vec<ServerView> {
    (0..n).map(|i| server(&format!("s{i}"), &format!("z{i}"), 0)).collect()
}

const WIDE: Caps = Caps { total: 100, per_server: 100 };

#[test]
fn two_missing_before_one_live_before_hidden_blocking_first() {
    let mut one = chunk(1, &["s0", "s1"], 3);
    one.handle = 1;
    let two = chunk(2, &["s0"], 3);
    let mut hidden_two = chunk(3, &["s1"], 3);
    hidden_two.hidden = true;
    let full = chunk(4, &["s0", "s1", "s2"], 3);
    let cs = vec![one.clone(), two.clone(), hidden_two.clone(), full];
    let order: Vec<u64> = queue(&cs).iter().map(|c| c.handle).collect();
    assert_eq!(order, vec![2, 3, 1]);
    let mut blocking = one;
    blocking.blocking = true;
    let cs = vec![two, hidden_two, blocking];
    let order: Vec<u64> = queue(&cs).iter().map(|c| c.handle).collect();
    assert_eq!(order, vec![1, 2, 3]);
}

#[test]
fn repairs_respect_caps_and_pick_new_servers_and_zones() {
    let cs: Vec<ChunkView> = (0..10).map(|h| chunk(h, &["s0", "s1"], 3)).collect();
    let mut sv = servers(4);
    let tasks = plan_repairs(&cs, &mut sv, 0, Caps { total: 3, per_server: 100 });
    assert_eq!(tasks.len(), 3, "cluster cap");
    for t in &tasks {
        assert!(t.target == "s2" || t.target == "s3", "{t:?}");
        assert!(t.source == "s0" || t.source == "s1");
        assert_eq!(t.missing, 1);
    }
    let mut sv = servers(4);
    let tasks = plan_repairs(&cs, &mut sv, 0, Caps { total: 100, per_server: 1 });
    // Sources s0, s1 and targets s2, s3 can each take one clone: two clones.
    assert_eq!(tasks.len(), 2);
    let mut sv = servers(4);
    assert!(plan_repairs(&cs, &mut sv, 100, WIDE).is_empty(), "already at the cap");
    // Zone spread: s2 shares a zone with s0, so s3 wins.
    let mut sv = servers(4);
    sv[2].zone = "z0".into();
    let t = plan_repairs(&cs[..1], &mut sv, 0, WIDE);
    assert_eq!(t[0].target, "s3");
}

#[test]
fn busy_draining_and_unrepairable_chunks() {
    let mut busy = chunk(1, &["s0"], 3);
    busy.busy = true;
    let none = chunk(2, &[], 3);
    let mut draining = chunk(3, &["s0", "s1", "s2"], 3);
    draining.in_service = vec!["s1".into(), "s2".into()];
    let mut sv = servers(4);
    sv[0].in_service = false;
    let t = plan_repairs(&[busy, none, draining], &mut sv, 0, WIDE);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].handle, t[0].target.as_str()), (3, "s3"));
    assert_eq!(t[0].reason, RepairReason::Replicate);
}

#[test]
fn trims_extra_from_fullest_in_service() {
    let mut c = chunk(1, &["s0", "s1", "s2", "s3"], 3);
    c.in_service = vec!["s1".into(), "s2".into(), "s3".into()]; // s0 draining
    let mut sv = servers(4);
    sv[2].used = 5000;
    assert!(plan_trims(std::slice::from_ref(&c), &sv).is_empty(), "draining copies do not count");
    c.in_service.push("s0".into());
    assert_eq!(plan_trims(std::slice::from_ref(&c), &sv), vec![(1, "s2".to_string())]);
    c.busy = true;
    assert!(plan_trims(&[c], &sv).is_empty());
}

#[test]
fn moves_from_fullest_to_emptiest_until_even() {
    let cs: Vec<ChunkView> = (0..20).map(|h| chunk(h, &["s0", "s1"], 2)).collect();
    let mut sv = servers(3);
    sv[0].used = 2000;
    sv[1].used = 2000;
    let tasks = plan_moves(&cs, &mut sv, 0, WIDE, 0.05);
    assert!(!tasks.is_empty());
    assert!(tasks.iter().all(|t| t.target == "s2" && t.reason == RepairReason::Rebalance));
    let fr: Vec<f64> = sv.iter().map(|s| s.fraction()).collect();
    let spread = fr.iter().cloned().fold(0.0, f64::max) - fr.iter().cloned().fold(1.0, f64::min);
    assert!(spread <= 0.05 + 0.01, "{fr:?}");
    let mut even = servers(3);
    assert!(plan_moves(&cs, &mut even, 0, WIDE, 0.05).is_empty());
}

#[test]
fn hot_chunks_get_extra_replicas() {
    assert_eq!(hot_target(3, 10.0, 100, 1, 5), 3);
    assert_eq!(hot_target(3, 150.0, 100, 1, 5), 4);
    assert_eq!(hot_target(3, 150.0, 100, 4, 5), 5);
    assert_eq!(hot_target(3, 150.0, 0, 1, 5), 3, "off");
    let mut c = chunk(1, &["s0", "s1", "s2"], 3);
    c.target = 4;
    let mut sv = servers(4);
    let t = plan_repairs(&[c], &mut sv, 0, WIDE);
    assert_eq!(t[0].reason, RepairReason::Hot);
}

#[test]
fn full_servers_and_backed_off_targets_get_no_copies() {
    // s2 is the emptiest, so the natural target; it is full.
    let cs = vec![chunk(1, &["s0", "s1"], 3)];
    let mut sv = servers(4);
    sv[3].used = 3000;
    sv[2].full = true;
    assert_eq!(plan_repairs(&cs, &mut sv, 0, WIDE)[0].target, "s3");
    // Not full, but a recent clone of this chunk to s3 failed: s2 is
    // then the only one left, and when it is full too nothing is planned.
    let mut avoided = cs[0].clone();
    avoided.avoid = vec!["s3".into()];
    assert!(plan_repairs(std::slice::from_ref(&avoided), &mut sv, 0, WIDE).is_empty());
    sv[2].full = false;
    assert_eq!(plan_repairs(&[avoided], &mut sv, 0, WIDE)[0].target, "s2");
    // Free space below the chunk's length (100): not a target; the space
    // of clones planned onto a server counts too.
    let mut sv = servers(3);
    sv[2].free = Some(99);
    assert!(plan_repairs(&cs, &mut sv, 0, WIDE).is_empty());
    sv[2].free = Some(150);
    let two = vec![chunk(1, &["s0", "s1"], 3), chunk(2, &["s0", "s1"], 3)];
    let t = plan_repairs(&two, &mut sv, 0, WIDE);
    assert_eq!(t.len(), 1, "150 free bytes take one 100-byte chunk, not two");
    assert_eq!(sv[2].free, Some(50));
}

#[test]
fn moves_never_go_to_full_servers() {
    let cs: Vec<ChunkView> = (0..20).map(|h| chunk(h, &["s0", "s1"], 2)).collect();
    let mut sv = servers(3);
    sv[0].used = 2000;
    sv[1].used = 2000;
    sv[2].full = true;
    assert!(plan_moves(&cs, &mut sv, 0, WIDE, 0.05).is_empty());
    sv[2].full = false;
    let mut avoided = cs.clone();
    avoided.iter_mut().for_each(|c| c.avoid = vec!["s2".into()]);
    assert!(plan_moves(&avoided, &mut sv, 0, WIDE, 0.05).is_empty());
}
