//! Counting each disk once: chunkservers that share a file system (several
//! on one host, as `gfs server` and tests run them, or pods whose volumes
//! sit on one node disk) each report that file system's capacity and free
//! space, and a plain sum would count it once per server. A chunkserver
//! names its file system with a disk id; totals take each id once.

use std::collections::HashMap;
use std::path::Path;

/// Longest disk id a master accepts (a boot id is 36 bytes).
pub const MAX_DISK_ID_LEN: usize = 128;

/// The id of the file system holding `dir` on this host: the kernel's boot
/// id (the same in every container of a host, unlike `/etc/machine-id`)
/// and the file system's device number. `None` when either is unknown.
pub fn disk_id(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let boot = boot.trim();
    let dev = std::fs::metadata(dir).ok()?.dev();
    (!boot.is_empty()).then(|| format!("{boot}:{dev:x}"))
}

/// Whether a disk id from the network is acceptable: bounded, printable
/// ASCII (it is shown by `gfs admin status` and the status page).
pub fn valid_disk_id(id: &str) -> bool {
    id.len() <= MAX_DISK_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Capacity and free bytes of some servers' disks, each disk once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiskTotals {
    /// Sum of the disks' capacities.
    pub capacity: u64,
    /// Sum of the disks' free bytes.
    pub free: u64,
}

/// Totals over `(disk id, capacity, free)` of servers: servers with the
/// same non-empty id share a disk, counted once (the largest capacity and
/// the smallest free space reported for it, the reports being taken at
/// different times); an empty id is a disk of its own.
pub fn totals<'a>(servers: impl IntoIterator<Item = (&'a str, u64, u64)>) -> DiskTotals {
    let mut shared: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut out = DiskTotals::default();
    for (id, capacity, free) in servers {
        if id.is_empty() {
            out.capacity = out.capacity.saturating_add(capacity);
            out.free = out.free.saturating_add(free);
            continue;
        }
        let e = shared.entry(id).or_insert((capacity, free));
        *e = (e.0.max(capacity), e.1.min(free));
    }
    for (capacity, free) in shared.into_values() {
        out.capacity = out.capacity.saturating_add(capacity);
        out.free = out.free.saturating_add(free);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_disk_counts_once_and_unnamed_ones_each() {
        let t = totals([("a", 100, 40), ("a", 100, 38), ("b", 50, 10), ("", 70, 7), ("", 70, 7)]);
        assert_eq!(t, DiskTotals { capacity: 100 + 50 + 70 + 70, free: 38 + 10 + 7 + 7 });
        assert_eq!(totals([("x", u64::MAX, 1), ("", 5, 1)]).capacity, u64::MAX, "saturates");
        assert_eq!(totals([]), DiskTotals::default());
    }

    #[test]
    fn one_folder_and_its_subfolder_share_an_id_and_ids_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let (a, b) = (disk_id(dir.path()).unwrap(), disk_id(&dir.path().join("sub")).unwrap());
        assert_eq!(a, b);
        assert!(valid_disk_id(&a), "{a}");
        assert_eq!(disk_id(&dir.path().join("missing")), None);
        assert!(!valid_disk_id("has space"));
        assert!(!valid_disk_id(&"x".repeat(MAX_DISK_ID_LEN + 1)));
    }
}
