//! Permission bits of namespace entries, in the HDFS (and POSIX) model:
//! read, write and execute for the owner, the group and everyone else,
//! plus the sticky bit on directories.
//!
//! The master enforces them (`gfs-master`'s `perm` and `access` modules);
//! this module holds what the master and the client share: the bit
//! constants, `ls -l` rendering and `chmod` mode parsing.

use crate::{Error, Result};

/// Read: a file's data; a directory's entry names (list).
pub const READ: u8 = 4;
/// Write: a file's data (leases); a directory's entries (create, delete,
/// rename in it).
pub const WRITE: u8 = 2;
/// Execute: on a directory, going through it to anything below.
pub const EXECUTE: u8 = 1;
/// Every access: what a recursive delete needs on each directory it empties.
pub const ALL: u8 = READ | WRITE | EXECUTE;

/// The sticky bit: in such a directory only the owner of an entry (or of
/// the directory, or the superuser) may delete or rename it, as in `/tmp`.
pub const STICKY: u32 = 0o1000;
/// Every bit a mode may hold.
pub const MODE_MASK: u32 = 0o1777;
/// Mode of a new directory before the umask.
pub const DIR_BASE: u32 = 0o777;
/// Mode of a new file before the umask.
pub const FILE_BASE: u32 = 0o666;
/// The client's umask unless configured otherwise (new files 0644,
/// directories 0755).
pub const DEFAULT_UMASK: u32 = 0o022;

/// Returns HDFS's name of an access set ("READ_EXECUTE", "ALL", ...), for
/// error messages.
pub fn access_name(want: u8) -> &'static str {
    match want & ALL {
        0 => "NONE",
        READ => "READ",
        WRITE => "WRITE",
        EXECUTE => "EXECUTE",
        x if x == READ | WRITE => "READ_WRITE",
        x if x == READ | EXECUTE => "READ_EXECUTE",
        x if x == WRITE | EXECUTE => "WRITE_EXECUTE",
        _ => "ALL",
    }
}

/// Checks a mode given by a caller (chmod): at most 0o1777.
pub fn check_mode(mode: u32) -> Result<()> {
    if mode & !MODE_MASK != 0 {
        return Err(Error::InvalidArgument(format!("mode {mode:#o} has bits beyond {MODE_MASK:#o}")));
    }
    Ok(())
}

/// Checks a umask given by a caller: at most 0o777.
pub fn check_umask(umask: u32) -> Result<()> {
    if umask & !0o777 != 0 {
        return Err(Error::InvalidArgument(format!("umask {umask:#o} has bits beyond 0o777")));
    }
    Ok(())
}

/// Renders a mode as `ls -l` does: `drwxr-xr-x`, `-rw-r--r--`; the sticky
/// bit shows as `t` (or `T` without the others' execute bit).
pub fn mode_string(is_dir: bool, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(if is_dir { 'd' } else { '-' });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        let c = match (shift == 0 && mode & STICKY != 0, x) {
            (true, true) => 't',
            (true, false) => 'T',
            (false, true) => 'x',
            (false, false) => '-',
        };
        s.push(c);
    }
    s
}

/// Renders a mode in octal with four digits (`0644`, `1777`).
pub fn octal(mode: u32) -> String {
    format!("{:04o}", mode & MODE_MASK)
}

/// Parses a chmod mode: octal (`755`, `1777`) or symbolic
/// (`u+x`, `go-w`, `a=rX`, `+t`, several joined by commas), the latter
/// applied to `current` (`X`: execute if `is_dir` or any execute bit is
/// set). A symbolic clause without `u`, `g`, `o` or `a` means `a` (the
/// umask plays no part, as in HDFS).
pub fn parse_mode(spec: &str, current: u32, is_dir: bool) -> Result<u32> {
    let bad = |why: &str| Error::InvalidArgument(format!("mode {spec:?}: {why}"));
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        if spec.len() > 4 || spec.bytes().any(|b| b > b'7') {
            return Err(bad("octal modes have at most 4 digits 0-7"));
        }
        let mode = u32::from_str_radix(spec, 8).map_err(|_| bad("not an octal number"))?;
        check_mode(mode)?;
        return Ok(mode);
    }
    let mut mode = current & MODE_MASK;
    for clause in spec.split(',') {
        mode = apply_clause(clause, mode, is_dir).map_err(|why| bad(&why))?;
    }
    Ok(mode)
}

/// Applies one symbolic clause (`[ugoa]*[+-=][rwxXt]*`, the operator part
/// repeatable) to `mode`.
fn apply_clause(clause: &str, mode: u32, is_dir: bool) -> std::result::Result<u32, String> {
    let who_end = clause.find(|c: char| !"ugoa".contains(c)).unwrap_or(clause.len());
    let (who, mut rest) = clause.split_at(who_end);
    let mut classes = 0u32;
    for c in who.chars() {
        classes |= match c {
            'u' => 0o700,
            'g' => 0o070,
            'o' => 0o007,
            _ => 0o777,
        };
    }
    if classes == 0 {
        classes = 0o777;
    }
    if rest.is_empty() {
        return Err("expected [ugoa]*[+-=][rwxXt]* (or an octal mode)".into());
    }
    let mut mode = mode;
    while !rest.is_empty() {
        let op = rest.as_bytes()[0];
        if !matches!(op, b'+' | b'-' | b'=') {
            return Err(format!("unexpected {:?}; expected +, - or =", op as char));
        }
        let perms_end = rest[1..].find(['+', '-', '=']).map_or(rest.len(), |i| i + 1);
        let (bits, sticky) = clause_bits(&rest[1..perms_end], mode, is_dir)?;
        let (bits, sticky) = (bits & classes, if sticky { STICKY } else { 0 });
        mode = match op {
            b'+' => mode | bits | sticky,
            b'-' => mode & !(bits | sticky),
            // `=` sets the sticky bit as named when it covers the others'
            // class (`o`, `a`), and leaves it alone otherwise.
            _ => {
                let kept = if classes & 0o007 != 0 { 0 } else { mode & STICKY };
                (mode & !classes & !STICKY) | bits | sticky | kept
            }
        };
        rest = &rest[perms_end..];
    }
    Ok(mode)
}

/// The bits of `rwxXt` for all three classes, and whether `t` was named.
fn clause_bits(perms: &str, mode: u32, is_dir: bool) -> std::result::Result<(u32, bool), String> {
    let (mut bits, mut sticky) = (0u32, false);
    for c in perms.chars() {
        match c {
            'r' => bits |= 0o444,
            'w' => bits |= 0o222,
            'x' => bits |= 0o111,
            'X' if is_dir || mode & 0o111 != 0 => bits |= 0o111,
            'X' => {}
            't' => sticky = true,
            other => return Err(format!("unknown permission {other:?}; use r, w, x, X or t")),
        }
    }
    Ok((bits, sticky))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_ls() {
        assert_eq!(mode_string(true, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(false, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(true, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(true, 0o1770), "drwxrwx--T");
        assert_eq!(mode_string(false, 0), "----------");
        assert_eq!(octal(0o644), "0644");
        assert_eq!(octal(0o1777), "1777");
        assert_eq!(access_name(READ | EXECUTE), "READ_EXECUTE");
        assert_eq!(access_name(ALL), "ALL");
        assert_eq!(access_name(WRITE), "WRITE");
    }

    #[test]
    fn parses_octal_and_symbolic_modes() {
        assert_eq!(parse_mode("755", 0, false).unwrap(), 0o755);
        assert_eq!(parse_mode("0640", 0o777, false).unwrap(), 0o640);
        assert_eq!(parse_mode("1777", 0, true).unwrap(), 0o1777);
        for bad in ["8", "17777", "", "u", "u+q", "z+x", "u*x", "7778"] {
            assert!(parse_mode(bad, 0o644, false).is_err(), "{bad:?}");
        }
        assert_eq!(parse_mode("u+x", 0o644, false).unwrap(), 0o744);
        assert_eq!(parse_mode("go-r", 0o644, false).unwrap(), 0o600);
        assert_eq!(parse_mode("a=r", 0o777, false).unwrap(), 0o444);
        assert_eq!(parse_mode("+x", 0o644, false).unwrap(), 0o755);
        assert_eq!(parse_mode("u=rwx,go=", 0o755, true).unwrap(), 0o700);
        assert_eq!(parse_mode("+t", 0o777, true).unwrap(), 0o1777);
        assert_eq!(parse_mode("-t", 0o1777, true).unwrap(), 0o777);
        assert_eq!(parse_mode("a+X", 0o644, true).unwrap(), 0o755, "X on a directory");
        assert_eq!(parse_mode("a+X", 0o644, false).unwrap(), 0o644, "X on a file without x");
        assert_eq!(parse_mode("a+X", 0o744, false).unwrap(), 0o755, "X on a file with x");
        assert_eq!(parse_mode("u+w-x", 0o555, false).unwrap(), 0o655);
        assert_eq!(parse_mode("o=", 0o1777, true).unwrap(), 0o770, "= on others clears the sticky bit");
        assert_eq!(parse_mode("u=rwx", 0o1755, true).unwrap(), 0o1755, "= on the owner keeps it");
    }

    #[test]
    fn limits() {
        assert!(check_mode(0o1777).is_ok());
        assert!(check_mode(0o2000).is_err());
        assert!(check_umask(0o777).is_ok());
        assert!(check_umask(0o1000).is_err());
    }
}
