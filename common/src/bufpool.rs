//! Reusable byte buffers for the data path.
//!
//! Pushed data, reads and writes each need a buffer up to a few MiB. Rather
//! than allocating per request, buffers come from a pool and return to it
//! when dropped, including after being frozen into `Bytes` and handed to
//! tonic.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A pool of `Vec<u8>` buffers with a fixed initial capacity.
#[derive(Clone)]
pub struct BufPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    free: Mutex<Vec<Vec<u8>>>,
    capacity: usize,
    max_pooled: usize,
}

impl BufPool {
    /// Returns a pool of buffers of `capacity` bytes that keeps at most
    /// `max_pooled` idle buffers.
    pub fn new(capacity: usize, max_pooled: usize) -> Self {
        Self { inner: Arc::new(PoolInner { free: Mutex::new(Vec::new()), capacity, max_pooled }) }
    }

    /// Returns an empty buffer, reused when one is idle.
    pub fn get(&self) -> PooledBuf {
        let buf = self.inner.free.lock().expect("bufpool lock").pop();
        let buf = buf.unwrap_or_else(|| Vec::with_capacity(self.inner.capacity));
        PooledBuf { buf, pool: Some(self.inner.clone()) }
    }

    /// Returns how many idle buffers the pool holds.
    pub fn idle(&self) -> usize {
        self.inner.free.lock().expect("bufpool lock").len()
    }
}

/// A buffer that goes back to its pool on drop.
pub struct PooledBuf {
    buf: Vec<u8>,
    pool: Option<Arc<PoolInner>>,
}

impl PooledBuf {
    /// Turns the buffer into `Bytes` without copying; the memory returns to
    /// the pool when the last `Bytes` clone is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Deref for PooledBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let mut buf = std::mem::take(&mut self.buf);
            // Oversized buffers (grown past the pool's size) are released
            // so that one huge request cannot pin memory forever.
            if buf.capacity() > pool.capacity * 2 {
                return;
            }
            buf.clear();
            let mut free = pool.free.lock().expect("bufpool lock");
            if free.len() < pool.max_pooled {
                free.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_after_freeze() {
        let pool = BufPool::new(1024, 4);
        let mut b = pool.get();
        b.extend_from_slice(b"hello");
        let ptr = b.as_ptr();
        let bytes = b.freeze();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(pool.idle(), 0);
        drop(bytes);
        assert_eq!(pool.idle(), 1);
        let again = pool.get();
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
    }
}
