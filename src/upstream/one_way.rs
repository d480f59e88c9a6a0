//! One direction of an upgraded session's byte copy (exec, attach, port-forward; WebSocket or
//! SPDY): what `tokio::io::copy` does — read, write on everything read, flush the writer when
//! the reader has nothing more for now, and at the reader's end flush and return the count —
//! with no buffer held across polls unless the writer left bytes unwritten.
//!
//! Why: `tokio::io::copy` allocates a zero-filled 8 KiB buffer per direction and keeps it for
//! the copy's whole life, so an open session held 16 KiB of buffers, resident, however idle it
//! was — and an interactive shell (`kubectl exec -it`) is idle nearly all its life. Here each
//! read goes into an 8 KiB buffer on the polling thread's stack (uninitialised, through
//! `ReadBuf::uninit`: no zeroing, no `unsafe`), is written on from there, and only what the
//! writer does not take at once (it pushes back) is copied to the heap, exactly that many
//! bytes, until written. Reads and writes are as large as `tokio::io::copy`'s, so a bulk
//! transfer (`kubectl cp`, a busy port-forward) is cut into the same pieces.
//!
//! As `tokio::io::copy`: an `Interrupted` read or write is retried, a writer that accepts no
//! bytes ends the copy with `WriteZero`, every other error ends it as it came, and the task's
//! cooperative budget is spent as tokio's copy spends it. Unlike it, no read is made while
//! written-back bytes wait for the writer (tokio's reads more into the rest of its buffer then).

use std::{
    future::poll_fn,
    io,
    mem::MaybeUninit,
    pin::Pin,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[cfg(test)]
mod tests;

/// The most one read takes (`tokio::io::copy`'s buffer).
const READ: usize = 8 * 1024;

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
    /// Bytes read that the writer has not taken yet (`held[pos..]`); empty, unallocated, unless
    /// the writer pushed back.
    held: Vec<u8>,
    pos: usize,
    /// The reader has ended.
    done: bool,
    /// Bytes were written since the last flush.
    need_flush: bool,
    copied: u64,
}

/// What one write attempt did.
enum Wrote {
    /// This many bytes (at least one, at most what was offered).
    Took(usize),
    /// The writer cannot take more now: the caller's task will be woken.
    Later,
}

impl OneWay {
    fn new() -> OneWay {
        OneWay {
            held: Vec::new(),
            pos: 0,
            done: false,
            need_flush: false,
            copied: 0,
        }
    }

    /// The bytes of buffer held now (what an idle session costs here).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.capacity()
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
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            // Bytes the writer pushed back last time go first.
            while self.pos < self.held.len() {
                match self.write(cx, writer.as_mut(), Source::Held)? {
                    Wrote::Took(n) => self.pos += n,
                    Wrote::Later => return Poll::Pending,
                }
                coop.made_progress();
            }
            if !self.held.is_empty() {
                (self.held, self.pos) = (Vec::new(), 0);
            }
            if self.done {
                ready!(writer.as_mut().poll_flush(cx))?;
                coop.made_progress();
                return Poll::Ready(Ok(self.copied));
            }
            let mut space = [MaybeUninit::<u8>::uninit(); READ];
            let mut read = ReadBuf::uninit(&mut space);
            match reader.as_mut().poll_read(cx, &mut read) {
                Poll::Pending => {
                    // The reader has nothing for now: flush what was written, so a peer
                    // waiting for it is not kept waiting by a buffering writer.
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx))?;
                        coop.made_progress();
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => coop.made_progress(),
            }
            let bytes = read.filled();
            if bytes.is_empty() {
                self.done = true;
                continue;
            }
            let mut at = 0;
            while at < bytes.len() {
                match self.write(cx, writer.as_mut(), Source::Read(&bytes[at..]))? {
                    Wrote::Took(n) => at += n,
                    Wrote::Later => {
                        // Kept on the heap, exactly as many bytes as are left, until written.
                        self.held = bytes[at..].to_vec();
                        self.pos = 0;
                        return Poll::Pending;
                    }
                }
                coop.made_progress();
            }
        }
    }

    /// Offer the writer the held bytes or a read's: how many it took (counted), or that it
    /// will wake the task later. `Interrupted` is retried; 0 bytes taken is `WriteZero`.
    fn write<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut writer: Pin<&mut W>,
        from: Source<'_>,
    ) -> io::Result<Wrote> {
        let offered = match from {
            Source::Held => &self.held[self.pos..],
            Source::Read(bytes) => bytes,
        };
        loop {
            return match writer.as_mut().poll_write(cx, offered) {
                Poll::Pending => Ok(Wrote::Later),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Poll::Ready(Err(e)) => Err(e),
                Poll::Ready(Ok(0)) => Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "write zero byte into writer",
                )),
                Poll::Ready(Ok(n)) => {
                    // A writer claiming more than it was offered would otherwise make the
                    // loop skip bytes; take it at its word only as far as it was offered.
                    debug_assert!(n <= offered.len(), "writer took more than it was offered");
                    let n = n.min(offered.len());
                    self.copied += n as u64;
                    self.need_flush = true;
                    Ok(Wrote::Took(n))
                }
            };
        }
    }
}

/// Where the bytes offered to the writer come from.
enum Source<'a> {
    /// `held[pos..]`.
    Held,
    /// A read just made, on the stack.
    Read(&'a [u8]),
}
