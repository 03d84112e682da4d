//! Tests of the log store: openraft's suite, recovery of torn tails,
//! refusal of damage, and `check-log` reports.

use super::*;
use crate::raft::state_machine::{Machine, StateMachine};
use crate::raft::{Request, log_id};
use crate::state::Meta;
use openraft::EntryPayload;
use openraft::testing::{StoreBuilder, Suite};

fn hist() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new([0.001])
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> std::result::Result<(tempfile::TempDir, LogStore, StateMachine), StoreError> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(dir.path(), hist()).unwrap();
        let meta = Arc::new(Mutex::new(Meta::new()));
        let sm = Machine::new(meta, dir.path().to_path_buf(), 1).state_machine();
        Ok((dir, log, sm))
    }
}

/// openraft's own conformance suite for log stores and state machines.
#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

/// Writes a segment of entries `range`; returns its path and the byte
/// offset of every frame.
fn write_segment_at(dir: &Path, first: u64, range: std::ops::RangeInclusive<u64>) -> (PathBuf, Vec<u64>) {
    let mut buf = Vec::new();
    let mut offsets = Vec::new();
    for i in range {
        offsets.push(buf.len() as u64);
        let e = Entry { log_id: log_id(1, 1, i), payload: EntryPayload::Normal(Request { group: vec![] }) };
        encode_frame(&entry_to_proto(&e).encode_to_vec(), &mut buf);
    }
    let p = segment_path(dir, first);
    std::fs::write(&p, buf).unwrap();
    (p, offsets)
}

fn write_segment(dir: &Path, first: u64, range: std::ops::RangeInclusive<u64>) -> PathBuf {
    write_segment_at(dir, first, range).0
}

fn empty_segment(dir: &Path, first: u64) -> PathBuf {
    let p = segment_path(dir, first);
    std::fs::write(&p, b"").unwrap();
    p
}

fn indexes(dir: &Path) -> Vec<u64> {
    let r = recover(dir).unwrap();
    r.mem.entries.keys().copied().collect()
}

/// Every file in `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().to_string(), std::fs::read(e.path()).unwrap()))
        .collect()
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_torn_tail_is_cut_at_the_last_valid_entry() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_segment(dir.path(), 1, 1..=5);
    assert_eq!(indexes(dir.path()), vec![1, 2, 3, 4, 5]);
    assert!(!recover(dir.path()).unwrap().cut, "a clean log is not cut");
    // Torn tail: the last frame cut short.
    let len = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 3).unwrap();
    assert!(recover(dir.path()).unwrap().cut, "a torn tail is reported as cut");
    assert_eq!(indexes(dir.path()), vec![1, 2, 3, 4]);
    let len4 = std::fs::metadata(&seg).unwrap().len();
    // Garbage and zeros (a file extended but not written) are cut back to
    // the last valid frame too, and an empty later segment goes.
    for tail in [[7u8; 40], [0u8; 40]] {
        OpenOptions::new().append(true).open(&seg).unwrap().write_all(&tail).unwrap();
        let empty = empty_segment(dir.path(), 9);
        assert_eq!(indexes(dir.path()), vec![1, 2, 3, 4]);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len4);
        assert!(!empty.exists());
    }
    // A damaged last frame cannot be told from a torn one: cut as well.
    let (seg2, offs) = write_segment_at(dir.path(), 5, 5..=6);
    flip(&seg2, offs[1] + 9);
    assert_eq!(indexes(dir.path()), vec![1, 2, 3, 4, 5]);
    assert_eq!(std::fs::metadata(&seg2).unwrap().len(), offs[1]);
}

#[test]
fn a_flipped_byte_in_a_middle_record_refuses_to_start_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, offs) = write_segment_at(dir.path(), 1, 1..=5);
    write_segment(dir.path(), 6, 6..=7);
    empty_segment(dir.path(), 8);
    // In the middle of a segment: the next frame is found.
    flip(&seg, offs[2] + 10);
    let before = files(dir.path());
    let err = LogStore::open(dir.path(), hist()).err().expect("a damaged log must not open").to_string();
    let want = format!("{} is damaged at byte offset {}", seg.display(), offs[2]);
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("last good index 2"), "{err}");
    assert!(err.contains(&format!("a valid entry (index 4) follows at byte offset {}", offs[3])), "{err}");
    assert!(err.contains("Refusing to start"), "{err}");
    assert_eq!(files(dir.path()), before, "recovery changed files of a damaged log");

    // The last frame of a segment, with a later segment holding entries.
    flip(&seg, offs[2] + 10);
    flip(&seg, offs[4] + 10);
    let before = files(dir.path());
    let err = LogStore::open(dir.path(), hist()).err().expect("a damaged log must not open").to_string();
    assert!(err.contains(&format!("{} is damaged at byte offset {}", seg.display(), offs[4])), "{err}");
    assert!(err.contains("last good index 4") && err.contains("raft-log.6 holds"), "{err}");
    assert_eq!(files(dir.path()), before);
}

#[test]
fn check_log_reports_a_torn_tail_and_damage_without_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, offs) = write_segment_at(dir.path(), 1, 1..=5);
    let clean = crate::raft::check::check_log(dir.path()).unwrap();
    assert!(clean.problems.is_empty() && !clean.is_damaged(), "{clean}");
    assert!(clean.to_string().contains("5 entries, index 1..=5"), "{clean}");

    // Torn tail: reported, not damage, and left for the next start to cut.
    let (seg2, offs2) = write_segment_at(dir.path(), 6, 6..=8);
    let len = std::fs::metadata(&seg2).unwrap().len();
    OpenOptions::new().write(true).open(&seg2).unwrap().set_len(len - 2).unwrap();
    let before = files(dir.path());
    let torn = crate::raft::check::check_log(dir.path()).unwrap();
    assert_eq!(files(dir.path()), before, "check-log changed files");
    assert!(!torn.is_damaged(), "{torn}");
    let text = torn.to_string();
    let want = format!("TORN TAIL: {} at byte offset {}", seg2.display(), offs2[2]);
    assert!(text.contains(&want), "{text}");
    assert!(text.contains("last good index 7") && text.contains("status: OK after the torn tail"), "{text}");

    // Damage in the first segment: every problem is listed, each segment
    // with its range.
    flip(&seg, offs[1] + 9);
    let before = files(dir.path());
    let report = crate::raft::check::check_log(dir.path()).unwrap();
    assert_eq!(files(dir.path()), before, "check-log changed files");
    assert!(report.is_damaged(), "{report}");
    let text = report.to_string();
    let want = format!("DAMAGE: {} at byte offset {}: checksum mismatch; last good index 1", seg.display(), offs[1]);
    assert!(text.contains(&want), "{text}");
    assert!(text.contains(&format!("a valid entry (index 3) follows at byte offset {}", offs[2])), "{text}");
    assert!(text.contains("4 entries, index 1..=5") && text.contains("2 entries, index 6..=7"), "{text}");
    assert!(text.contains("TORN TAIL") && text.contains("status: DAMAGED"), "{text}");
    assert_eq!(crate::raft::check::run(dir.path()), 1);
    assert_eq!(crate::raft::check::run(&dir.path().join("missing")), 2);
}

#[test]
fn a_gap_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    write_segment(dir.path(), 1, 1..=3);
    write_segment(dir.path(), 7, 7..=8);
    let err = recover(dir.path()).err().unwrap().to_string();
    assert!(err.contains("gap") && err.contains("expected index 4"), "{err}");
}
