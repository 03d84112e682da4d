//! Bounded buffer of pushed-but-uncommitted data, keyed by data id.
//!
//! A push reserves its whole `total_len` when its first frame arrives, so
//! the sum of buffered and in-progress pushes never exceeds the budget.
//! Complete entries expire after the push timeout (a sweeper removes them)
//! and are removed when a mutation takes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gfs_common::bufpool::{BufPool, PooledBuf};
use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, MAX_IO_SIZE, Result};

/// The push buffer. Cheap to clone.
#[derive(Clone)]
pub struct PushBuffer {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    pool: BufPool,
    budget: u64,
    timeout: Duration,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    reserved: u64,
}

struct Entry {
    data: Bytes,
    expires: Instant,
    _reservation: Reservation,
}

/// Bytes of budget held until dropped. Weak: finished pushes live inside
/// `Inner`, and a strong reference back would keep a dropped buffer and
/// every push in it alive forever (the push_buffer fuzz target's RSS grew
/// by each dropped buffer's pushes).
struct Reservation {
    inner: Weak<Inner>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut s = inner.state.lock().expect("pushbuf lock");
            s.reserved = s.reserved.saturating_sub(self.bytes);
        }
    }
}

/// An in-progress push: frames are appended, then `finish` publishes it.
pub struct PushWriter {
    inner: Arc<Inner>,
    data_id: u64,
    total_len: u64,
    buf: PooledBuf,
    reservation: Reservation,
}

impl PushBuffer {
    /// Returns a buffer holding at most `budget` bytes whose entries expire
    /// after `timeout`.
    pub fn new(budget: u64, timeout: Duration) -> Self {
        let pooled = (budget / MAX_IO_SIZE).clamp(1, 32) as usize;
        let pool = BufPool::new(MAX_IO_SIZE as usize, pooled);
        Self { inner: Arc::new(Inner { state: Mutex::new(State::default()), pool, budget, timeout }) }
    }

    /// Starts receiving `total_len` bytes under `data_id`, reserving them.
    pub fn begin(&self, data_id: u64, total_len: u64) -> Result<PushWriter> {
        if total_len > MAX_IO_SIZE {
            return Err(Error::TooLarge { what: "pushed data".into(), size: total_len, limit: MAX_IO_SIZE });
        }
        let mut s = self.inner.state.lock().expect("pushbuf lock");
        // A re-push of the same id replaces the old copy.
        let old = s.entries.remove(&data_id);
        let reserved = s.reserved - old.as_ref().map_or(0, |e| e._reservation.bytes);
        if reserved + total_len > self.inner.budget {
            if let Some(e) = old {
                s.entries.insert(data_id, e);
            }
            return Err(Error::Busy(format!(
                "push buffer full ({reserved} of {} bytes reserved, push needs {total_len})",
                self.inner.budget
            )));
        }
        s.reserved += total_len;
        drop(s);
        drop(old);
        let reservation = Reservation { inner: Arc::downgrade(&self.inner), bytes: total_len };
        Ok(PushWriter { inner: self.inner.clone(), data_id, total_len, buf: self.inner.pool.get(), reservation })
    }

    /// Removes and returns the data pushed under `data_id`.
    pub fn take(&self, data_id: u64) -> Result<Bytes> {
        let entry = self.inner.state.lock().expect("pushbuf lock").entries.remove(&data_id);
        entry.map(|e| e.data.clone()).ok_or(Error::DataNotFound { data_id })
    }

    /// Drops the data pushed under `data_id`, if any.
    pub fn discard(&self, data_id: u64) {
        let entry = self.inner.state.lock().expect("pushbuf lock").entries.remove(&data_id);
        drop(entry);
    }

    /// Returns the bytes currently reserved.
    pub fn reserved(&self) -> u64 {
        self.inner.state.lock().expect("pushbuf lock").reserved
    }

    /// Removes expired entries; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut s = self.inner.state.lock().expect("pushbuf lock");
        let expired: Vec<u64> = s.entries.iter().filter(|(_, e)| e.expires <= now).map(|(k, _)| *k).collect();
        let removed: Vec<Entry> = expired.iter().filter_map(|k| s.entries.remove(k)).collect();
        drop(s);
        let n = removed.len();
        drop(removed);
        if n > 0 {
            tracing::debug!(expired = n, "push buffer entries expired");
        }
        n
    }

    /// Sweeps expired entries periodically until `shutdown`.
    pub async fn run_sweeper(self, shutdown: CancellationToken) {
        let period = (self.inner.timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => { self.sweep(); }
            }
        }
    }
}

impl PushWriter {
    /// Appends a frame; more bytes than announced is an error.
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        let have = self.buf.len() as u64;
        if have + data.len() as u64 > self.total_len {
            return Err(Error::InvalidArgument(format!(
                "push {}: received more than total_len {} bytes",
                self.data_id, self.total_len
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Returns how many bytes were received so far.
    pub fn received(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Publishes the data under its id; fewer bytes than announced is an
    /// error (and the data is dropped).
    pub fn finish(self) -> Result<u64> {
        let got = self.buf.len() as u64;
        if got != self.total_len {
            return Err(Error::InvalidArgument(format!(
                "push {}: received {got} of {} bytes",
                self.data_id, self.total_len
            )));
        }
        let PushWriter { inner, data_id, buf, reservation, .. } = self;
        let entry = Entry { data: buf.freeze(), expires: Instant::now() + inner.timeout, _reservation: reservation };
        let old = inner.state.lock().expect("pushbuf lock").entries.insert(data_id, entry);
        drop(old);
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_frees_its_pushes() {
        let pb = PushBuffer::new(MAX_IO_SIZE, Duration::from_secs(60));
        let mut w = pb.begin(1, 3).unwrap();
        w.append(b"abc").unwrap();
        w.finish().unwrap();
        let _open = pb.begin(2, 10).unwrap();
        let inner = Arc::downgrade(&pb.inner);
        drop(pb);
        drop(_open);
        assert!(inner.upgrade().is_none(), "finished pushes kept the buffer alive");
    }

    #[test]
    fn budget_take_and_sizes() {
        let pb = PushBuffer::new(3 * MAX_IO_SIZE, Duration::from_secs(60));
        let mut w = pb.begin(1, 5).unwrap();
        w.append(b"hel").unwrap();
        w.append(b"lo").unwrap();
        assert!(w.append(b"!").is_err());
        w.finish().unwrap();
        assert_eq!(pb.reserved(), 5);
        assert_eq!(&pb.take(1).unwrap()[..], b"hello");
        assert_eq!(pb.reserved(), 0);
        assert_eq!(pb.take(1).unwrap_err(), Error::DataNotFound { data_id: 1 });
        assert!(matches!(pb.begin(2, MAX_IO_SIZE + 1), Err(Error::TooLarge { .. })));
        let _a = pb.begin(3, MAX_IO_SIZE).unwrap();
        let _b = pb.begin(4, MAX_IO_SIZE).unwrap();
        let _c = pb.begin(5, MAX_IO_SIZE).unwrap();
        assert!(matches!(pb.begin(6, 1), Err(Error::Busy(_))));
        drop(_a);
        assert!(pb.begin(6, 1).is_ok());
    }

    #[test]
    fn short_push_is_rejected_and_released() {
        let pb = PushBuffer::new(MAX_IO_SIZE, Duration::from_secs(60));
        let mut w = pb.begin(1, 10).unwrap();
        w.append(b"abc").unwrap();
        assert!(matches!(w.finish(), Err(Error::InvalidArgument(_))));
        assert_eq!(pb.reserved(), 0);
        assert!(pb.take(1).is_err());
    }

    #[test]
    fn entries_expire() {
        let pb = PushBuffer::new(MAX_IO_SIZE, Duration::from_millis(1));
        let mut w = pb.begin(1, 1).unwrap();
        w.append(b"x").unwrap();
        w.finish().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(pb.sweep(), 1);
        assert_eq!(pb.reserved(), 0);
        assert!(pb.take(1).is_err());
    }
}
