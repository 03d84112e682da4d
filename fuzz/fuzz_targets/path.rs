//! Caller-supplied names: paths (every namespace RPC), chmod mode specs,
//! user and group names, and master lists. The input is two strings split
//! at the first newline.
#![no_main]

use gfs_common::auth::check_name;
use gfs_common::masters::MasterSet;
use gfs_common::path::{
    ERROR_QUOTE_CHARS, ancestors, check_limits, file_name, is_forbidden_char, is_within, join, normalize, parent, quote,
};
use gfs_common::perm::{check_mode, parse_mode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (a, b) = s.split_once('\n').unwrap_or((s, ""));
    // Error messages quote a bounded prefix only.
    assert!(quote(a).chars().count() <= ERROR_QUOTE_CHARS + 40, "quote too long");
    if let Ok(n) = normalize(a) {
        assert_eq!(normalize(&n).as_deref().ok(), Some(n.as_str()), "normalize is not idempotent");
        check_limits(&n).expect("a normalized path is within limits");
        assert!(!n.chars().any(is_forbidden_char));
        if let Some(p) = parent(&n) {
            assert!(is_within(&n, p));
            assert_eq!(join(p, file_name(&n)), n);
        } else {
            assert_eq!(n, "/");
        }
        for anc in ancestors(&n) {
            assert!(is_within(&n, &anc), "{anc} is not an ancestor of {n}");
        }
    }
    for (current, is_dir) in [(0, false), (0o755, true), (0o7777, false)] {
        if let Ok(mode) = parse_mode(b, current, is_dir) {
            check_mode(mode).expect("a parsed mode is valid");
        }
    }
    let _ = check_name("user", a);
    let _ = MasterSet::parse(a);
});
