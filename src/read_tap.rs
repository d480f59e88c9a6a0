//! [`ReadTap`]: a byte stream that shows each read's bytes to a callback, for code that must
//! notice a connection speaking — the listener's preface watchdog (`server::conn`), the idle
//! timeout of upgraded sessions (`upstream::idle`) — or read along (session recording,
//! `upstream::upgrade`). Writes pass
//! through untouched (vectored included, so hyper's batched writes stay batched).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, calling `on_read(bytes)` after every read that delivered bytes.
pub struct ReadTap<T, F> {
    inner: T,
    on_read: F,
}

impl<T, F: FnMut(&[u8])> ReadTap<T, F> {
    pub fn new(inner: T, on_read: F) -> Self {
        ReadTap { inner, on_read }
    }
}

impl<T: AsyncRead + Unpin, F: FnMut(&[u8]) + Unpin> AsyncRead for ReadTap<T, F> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let this = &mut *self;
            (this.on_read)(&buf.filled()[before..]);
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
