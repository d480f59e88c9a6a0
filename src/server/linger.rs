//! [`Linger`]: a client connection's byte stream that, when the proxy closes it, goes on reading
//! — and discarding — what the client still sends, for a moment, before the socket is dropped.
//!
//! Why: a socket closed with bytes unread in its receive buffer, or that receives bytes after
//! it is closed, is answered with a TCP RST; the client's kernel, on that RST, discards what it
//! has received and its program has not read yet — the end of an answer, the GOAWAY — and its
//! next write fails (`EPIPE`). HTTP/2 clients write late as a matter of course (a
//! `WINDOW_UPDATE` while reading, the PING ack of a graceful close, `RST_STREAM` for a stream
//! they dropped, their TLS `close_notify`), so without this a connection the proxy closes
//! gracefully — idle timeout, shutdown, `Connection: close` — can end for the client in a reset
//! instead of its answer. Go's servers do the same: net/http's HTTP/1.1 server shuts its write
//! side and waits (`closeWriteAndWait`, 500 ms), x/net/http2 closes 1 s after its GOAWAY
//! (`goAwayTimeout`).
//!
//! How: hyper ends a connection it closes with `poll_shutdown` (TLS `close_notify`, TCP FIN);
//! after that, reads are drained until the client closes too (end of stream or an error), for
//! at most [`LINGER`] and [`LINGER_BYTES`] — a client that keeps sending has had its chance and
//! gets the reset. An upgraded session (exec, attach, port-forward) lingers too when its splice
//! ends and closes the client side: a client still sending stdin must not have the session's
//! last frames (the exit status) reset away. Every client connection lingers: the listener
//! wraps each one (`conn::tracked`).

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a closed connection is read after the proxy's close: x/net/http2's `goAwayTimeout`.
pub const LINGER: Duration = Duration::from_secs(1);

/// How much a closed connection may still send before it is dropped anyway.
pub const LINGER_BYTES: usize = 64 * 1024;

/// `inner`, lingering at shutdown.
pub struct Linger<T> {
    inner: T,
    state: State,
}

enum State {
    Open,
    /// Shut down; reading what the client still sends until `deadline`, `left` bytes at most.
    Draining {
        deadline: Pin<Box<tokio::time::Sleep>>,
        left: usize,
    },
    Done,
}

impl<T> Linger<T> {
    pub fn new(inner: T) -> Self {
        Linger {
            inner,
            state: State::Open,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Linger<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Linger<T> {
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

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Open => {
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    this.state = State::Draining {
                        deadline: Box::pin(tokio::time::sleep(LINGER)),
                        left: LINGER_BYTES,
                    };
                }
                State::Draining { deadline, left } => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.state = State::Done;
                        continue;
                    }
                    let mut scratch = [0u8; 2048];
                    let mut read = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if (1..*left).contains(&read.filled().len()) => {
                            *left -= read.filled().len();
                        }
                        // The client closed (end of stream, or an error: a reset, a TLS alert),
                        // or sent too much: our side was shut already, so the shutdown is done.
                        Poll::Ready(_) => this.state = State::Done,
                    }
                }
                State::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    /// A connected pair: (the server's end, the client's).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    /// A connected pair: the server's end wrapped in `Linger`.
    async fn pair() -> (Linger<TcpStream>, TcpStream) {
        let (server, client) = tcp_pair().await;
        (Linger::new(server), client)
    }

    /// The server (`server`: the bare socket or `Linger` over it) answers and closes; the
    /// client reads the answer to its end, then writes twice, 100 ms apart (late frames).
    /// Returns the second write's result.
    async fn late_writes_after_close<S>(
        server: impl FnOnce(TcpStream) -> S,
    ) -> (Vec<u8>, io::Result<()>)
    where
        S: AsyncWrite + Unpin + Send + 'static,
    {
        let (server_end, mut client) = tcp_pair().await;
        let mut server = server(server_end);
        let closing = tokio::spawn(async move {
            server.write_all(b"answer").await.unwrap();
            server.shutdown().await
        });
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        // Let the server's close complete (without lingering it has by now).
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"late window update").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = client.write_all(b"late close_notify").await;
        drop(client);
        closing.await.unwrap().unwrap();
        (answer, second)
    }

    #[tokio::test]
    async fn a_client_writing_after_the_close_is_not_reset() {
        let (answer, second) = late_writes_after_close(Linger::new).await;
        assert_eq!(answer, b"answer");
        second.unwrap();
    }

    /// What the lingering prevents: without it, the first late write is answered with a reset
    /// and the second fails.
    #[tokio::test]
    async fn without_lingering_a_late_write_is_reset() {
        let (answer, second) = late_writes_after_close(|s| s).await;
        assert_eq!(answer, b"answer");
        let err = second.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_client_that_closes_ends_the_linger_at_once() {
        let (mut server, client) = pair().await;
        drop(client);
        let started = Instant::now();
        server.shutdown().await.unwrap();
        assert!(started.elapsed() < LINGER, "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stays_silent_is_dropped_after_the_linger() {
        let (mut server, _client) = pair().await;
        let started = tokio::time::Instant::now();
        server.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), LINGER);
    }

    #[tokio::test]
    async fn a_client_that_keeps_sending_is_dropped_after_the_byte_cap() {
        let (mut server, mut client) = pair().await;
        let flood = tokio::spawn(async move {
            let chunk = [b'x'; 4096];
            let mut sent = 0;
            while client.write_all(&chunk).await.is_ok() {
                sent += chunk.len();
            }
            sent
        });
        let started = Instant::now();
        server.shutdown().await.unwrap();
        assert!(started.elapsed() < LINGER, "{:?}", started.elapsed());
        drop(server);
        let sent = flood.await.unwrap();
        assert!(sent >= LINGER_BYTES, "{sent}");
    }
}
