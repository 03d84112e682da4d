//! Wrappers around local readers and writers that remember the first I/O
//! error, so that the CLI can name the local path in its message.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first error seen by a [`Tracked`] stream.
#[derive(Clone, Default)]
pub struct ErrorSlot(Arc<Mutex<Option<(io::ErrorKind, String)>>>);

impl ErrorSlot {
    fn record(&self, e: &io::Error) {
        let mut s = self.0.lock().expect("error slot");
        if s.is_none() {
            *s = Some((e.kind(), e.to_string()));
        }
    }

    /// The recorded error, if any.
    pub fn take(&self) -> Option<(io::ErrorKind, String)> {
        self.0.lock().expect("error slot").take()
    }
}

/// A stream that records its first error in an [`ErrorSlot`].
pub struct Tracked<T> {
    inner: T,
    slot: ErrorSlot,
}

impl<T> Tracked<T> {
    /// Wraps `inner`; errors go to the returned slot.
    pub fn new(inner: T) -> (Self, ErrorSlot) {
        let slot = ErrorSlot::default();
        (Self { inner, slot: slot.clone() }, slot)
    }
}

fn track<T>(slot: &ErrorSlot, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
    if let Poll::Ready(Err(e)) = &p {
        slot.record(e);
    }
    p
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        track(&me.slot, Pin::new(&mut me.inner).poll_read(cx, buf))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        track(&me.slot, Pin::new(&mut me.inner).poll_write(cx, buf))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        track(&me.slot, Pin::new(&mut me.inner).poll_flush(cx))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        track(&me.slot, Pin::new(&mut me.inner).poll_shutdown(cx))
    }
}
