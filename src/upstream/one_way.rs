//! One direction of an upgraded session's byte copy (exec, attach, port-forward; WebSocket or
//! SPDY): what `tokio::io::copy` does — read, write on everything read, flush the writer when
//! the reader has nothing more for now, and at the reader's end flush and return the count —
//! with a buffer held only while bytes are in flight.
//!
//! Why: `tokio::io::copy` allocates a zero-filled 8 KiB buffer per direction and keeps it for
//! the copy's whole life, so an open session held 16 KiB of buffers, resident, however idle it
//! was — and an interactive shell (`kubectl exec -it`) is idle nearly all its life. Here the
//! buffer is given back whenever the reader has nothing and everything read has been written.
//! The next read takes a [`SMALL`] one (a keystroke, a prompt, a resize message); a read that
//! fills it makes the following reads [`LARGE`], `tokio::io::copy`'s size, until the next
//! pause, so a bulk transfer (`kubectl cp`, a busy port-forward) streams as before once under
//! way. A buffer is zero-filled when taken (no `unsafe` here): 1 KiB, or 8 KiB per burst.
//!
//! Errors are the reader's or the writer's, unchanged; a writer that accepts no bytes ends the
//! copy with `WriteZero`, as `tokio::io::copy` does.

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[cfg(test)]
mod tests;

/// The buffer of the first read after a pause.
const SMALL: usize = 1024;
/// The buffer while bytes keep coming (`tokio::io::copy`'s).
const LARGE: usize = 8 * 1024;

/// Copy `reader` to `writer` until the reader ends (then flush), as `tokio::io::copy`; the
/// bytes copied.
pub(crate) async fn copy<R, W>(reader: &mut R, writer: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut state = OneWay::new();
    poll_fn(|cx| state.poll_copy(cx, Pin::new(&mut *reader), Pin::new(&mut *writer))).await
}

/// The copy's state between polls.
struct OneWay {
    /// `buf[pos..filled]` has been read and not yet written. No allocation between bursts.
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    /// The size of the buffer the next read takes.
    next: usize,
    /// The reader has ended.
    done: bool,
    /// Bytes were written since the last flush.
    need_flush: bool,
    copied: u64,
}

impl OneWay {
    fn new() -> OneWay {
        OneWay {
            buf: Vec::new(),
            pos: 0,
            filled: 0,
            next: SMALL,
            done: false,
            need_flush: false,
            copied: 0,
        }
    }

    /// The bytes of buffer held now (what an idle session costs here).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.buf.capacity()
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.filled && !self.done {
                (self.pos, self.filled) = (0, 0);
                if self.buf.len() != self.next {
                    self.buf = vec![0; self.next];
                }
                let mut read = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut read) {
                    Poll::Pending => {
                        // Nothing to read for now and nothing left to write: no buffer while
                        // waiting, and a small one for what comes next.
                        self.buf = Vec::new();
                        self.next = SMALL;
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n == 0 {
                            self.done = true;
                        } else if n == self.buf.len() {
                            // More is probably waiting: read it in larger pieces.
                            self.next = LARGE;
                        }
                        self.filled = n;
                    }
                }
            }
            while self.pos < self.filled {
                let n = ready!(writer
                    .as_mut()
                    .poll_write(cx, &self.buf[self.pos..self.filled]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write zero byte into writer",
                    )));
                }
                self.pos += n;
                self.copied += n as u64;
                self.need_flush = true;
            }
            if self.done {
                ready!(writer.as_mut().poll_flush(cx))?;
                self.buf = Vec::new();
                return Poll::Ready(Ok(self.copied));
            }
        }
    }
}
