//! The chunkserver's push buffer (PushData from clients and from the
//! previous server of the chain): pushes begun, fed, finished, taken and
//! discarded in any order, with any lengths and repeated ids. A model says
//! what each call must do; the bytes reserved always equal the live pushes
//! and never exceed the budget, and a taken push is exactly what was sent.
//!
//! Input: 6-byte operations: kind, slot or id, length u32 LE.
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use gfs_chunkserver::pushbuf::{PushBuffer, PushWriter};
use gfs_common::{Error, MAX_IO_SIZE};
use libfuzzer_sys::fuzz_target;

const BUDGET: u64 = 3 << 20;

struct Open {
    writer: PushWriter,
    id: u64,
    total: u64,
    sent: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let pb = PushBuffer::new(BUDGET, Duration::from_secs(600));
    let mut open: Vec<Open> = Vec::new();
    let mut stored: HashMap<u64, Vec<u8>> = HashMap::new();
    for (i, op) in data.chunks_exact(6).take(64).enumerate() {
        let which = u64::from(op[1] % 6);
        let n = u64::from(u32::from_le_bytes(op[2..6].try_into().unwrap()));
        match op[0] % 5 {
            0 => {
                let total = n % (MAX_IO_SIZE + (1 << 20));
                let live: u64 = open.iter().map(|o| o.total).sum::<u64>()
                    + stored.iter().filter(|(id, _)| **id != which).map(|(_, d)| d.len() as u64).sum::<u64>();
                match pb.begin(which, total) {
                    Ok(writer) => {
                        assert!(total <= MAX_IO_SIZE && live + total <= BUDGET, "begin over the limits");
                        stored.remove(&which);
                        open.push(Open { writer, id: which, total, sent: Vec::new() });
                    }
                    Err(Error::TooLarge { .. }) => assert!(total > MAX_IO_SIZE),
                    Err(Error::Busy(_)) => assert!(total <= MAX_IO_SIZE && live + total > BUDGET),
                    Err(e) => panic!("begin: {e}"),
                }
            }
            1 if !open.is_empty() => {
                let k = which as usize % open.len();
                let o = &mut open[k];
                let len = (n % (256 << 10)) as usize;
                let piece: Vec<u8> = (0..len).map(|j| (i as u8) ^ (j as u8).rotate_left(3)).collect();
                let fits = o.sent.len() as u64 + len as u64 <= o.total;
                assert_eq!(o.writer.append(&piece).is_ok(), fits);
                if fits {
                    o.sent.extend_from_slice(&piece);
                }
                assert_eq!(o.writer.received(), o.sent.len() as u64);
            }
            2 if !open.is_empty() => {
                let o = open.swap_remove(which as usize % open.len());
                let complete = o.sent.len() as u64 == o.total;
                assert_eq!(o.writer.finish().is_ok(), complete);
                if complete {
                    stored.insert(o.id, o.sent);
                }
            }
            3 => match (pb.take(which), stored.remove(&which)) {
                (Ok(got), Some(want)) => assert_eq!(&got[..], &want[..]),
                (Err(Error::DataNotFound { .. }), None) => {}
                (got, want) => {
                    panic!("take {which}: {:?} but the model has {:?}", got.map(|b| b.len()), want.map(|w| w.len()))
                }
            },
            _ => {
                pb.discard(which);
                stored.remove(&which);
            }
        }
        let live: u64 =
            open.iter().map(|o| o.total).sum::<u64>() + stored.values().map(|d| d.len() as u64).sum::<u64>();
        assert_eq!(pb.reserved(), live, "reserved bytes");
        assert!(live <= BUDGET);
    }
    drop(open);
    assert_eq!(pb.reserved(), stored.values().map(|d| d.len() as u64).sum::<u64>());
});
