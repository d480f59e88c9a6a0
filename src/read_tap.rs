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

/// `inner`, showing each read's bytes to `on_read` *before* they are handed on: a read it
/// answers `false` to is withheld (the buffer is left as it was) and fails with
/// `InvalidData`, so a copy loop never writes it on (session recording: a frame the recorder
/// cannot read must not reach the other side).
pub struct CheckedTap<T, F> {
    inner: T,
    on_read: F,
}

impl<T, F: FnMut(&[u8]) -> bool> CheckedTap<T, F> {
    pub fn new(inner: T, on_read: F) -> Self {
        CheckedTap { inner, on_read }
    }
}

impl<T: AsyncRead + Unpin, F: FnMut(&[u8]) -> bool + Unpin> AsyncRead for CheckedTap<T, F> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let this = &mut *self;
            if !(this.on_read)(&buf.filled()[before..]) {
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "read withheld by its tap",
                )));
            }
        }
        polled
    }
}

/// Writes pass through untouched (vectored included, so hyper's batched writes stay batched).
macro_rules! writes_through {
    ($tap:ident) => {
        impl<T: AsyncWrite + Unpin, F: Unpin> AsyncWrite for $tap<T, F> {
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

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

writes_through!(ReadTap);
writes_through!(CheckedTap);

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A read the tap refuses is neither delivered nor half-delivered: it fails, and the
    /// bytes before it in the stream were delivered as usual.
    #[tokio::test]
    async fn a_refused_read_is_withheld_and_fails() {
        let (mut w, r) = tokio::io::duplex(64);
        let mut tap = CheckedTap::new(r, |b: &[u8]| !b.contains(&b'X'));
        tokio::io::AsyncWriteExt::write_all(&mut w, b"fine")
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let n = tap.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"fine");
        tokio::io::AsyncWriteExt::write_all(&mut w, b"abXcd")
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let mut rb = ReadBuf::new(&mut buf);
        let err = std::future::poll_fn(|cx| Pin::new(&mut tap).poll_read(cx, &mut rb))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            rb.filled().is_empty(),
            "nothing of the refused read was handed on"
        );
    }
}
