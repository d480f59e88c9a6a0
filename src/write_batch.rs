//! [`WriteBatch`]: a byte stream whose first write of a burst waits one pass of the scheduler,
//! so that what other tasks queue for the same connection in that pass leaves in the same
//! `writev` and the same TLS record.
//!
//! Why: an HTTP/2 connection is driven by one task, and every request task that opens a stream
//! or finishes a response wakes it. tokio runs a task woken by the running task next (its LIFO
//! slot), so without this the connection task ran after each request task and flushed one
//! frame at a time: one TLS record (and its AEAD tag) and one system call per frame. Deferring
//! the first write by a self-wake (which tokio schedules behind every task already runnable,
//! not in the LIFO slot) lets the runnable request tasks queue their frames first. The price is
//! one scheduler pass of latency per burst, not per frame: a write in the same burst (until
//! the next flush completes) is not deferred again.
//!
//! Reads, flush and shutdown pass through; only the first `poll_write` / `poll_write_vectored`
//! after a completed flush is deferred.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, with the first write of each burst deferred by one scheduler pass.
pub struct WriteBatch<T> {
    inner: T,
    /// The current burst has waited its pass: writes go through until a flush completes.
    waited: bool,
}

impl<T> WriteBatch<T> {
    pub fn new(inner: T) -> Self {
        WriteBatch {
            inner,
            waited: false,
        }
    }

    /// `Pending` once per burst, after waking the task so it runs again behind the tasks that
    /// are already runnable.
    fn defer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.waited {
            return Poll::Ready(());
        }
        self.waited = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteBatch<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteBatch<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.defer(cx));
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.defer(cx));
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if flushed.is_ready() {
            // The burst is out: the next write starts a new one.
            self.waited = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_pass_through_in_order_and_each_burst_waits_once() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = WriteBatch::new(a);
        w.write_all(b"one ").await.unwrap();
        // Within the burst, no more waiting.
        assert!(w.waited);
        w.write_all(b"two ").await.unwrap();
        w.flush().await.unwrap();
        assert!(!w.waited, "a completed flush ends the burst");
        w.write_all(b"three").await.unwrap();
        w.shutdown().await.unwrap();
        let mut got = String::new();
        b.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "one two three");
    }

    #[tokio::test]
    async fn a_deferred_write_lets_runnable_tasks_run_first() {
        // Current-thread runtime: the writer is spawned first, the marker second. Without the
        // deferral the writer would finish before the marker ran.
        use std::sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        };
        let (a, _b) = tokio::io::duplex(1 << 16);
        let ran = Arc::new(AtomicBool::new(false));
        let seen = ran.clone();
        let writer = tokio::spawn(async move {
            let mut w = WriteBatch::new(a);
            w.write_all(b"x").await.unwrap();
            seen.load(Ordering::SeqCst)
        });
        let r = ran.clone();
        tokio::spawn(async move { r.store(true, Ordering::SeqCst) });
        assert!(
            writer.await.unwrap(),
            "the marker task ran before the write went out"
        );
    }
}
