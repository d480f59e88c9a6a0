//! [`ReadTap`]: a byte stream that reports how many bytes each read delivered, for code that
//! must notice a connection speaking without parsing it — the listener's preface watchdog
//! (`server::conn`) and the idle timeout of upgraded sessions (`upstream::idle`). Writes pass
//! through untouched (vectored included, so hyper's batched writes stay batched).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, calling `on_read(n)` after every read that delivered `n > 0` bytes.
pub struct ReadTap<T, F> {
    inner: T,
    on_read: F,
}

impl<T, F: FnMut(usize)> ReadTap<T, F> {
    pub fn new(inner: T, on_read: F) -> Self {
        ReadTap { inner, on_read }
    }
}

impl<T: AsyncRead + Unpin, F: FnMut(usize) + Unpin> AsyncRead for ReadTap<T, F> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            (self.on_read)(n);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin, F: Unpin> AsyncWrite for ReadTap<T, F> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
