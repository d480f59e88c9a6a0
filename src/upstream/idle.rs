//! The idle timeout of an upgraded session (exec, attach, port-forward): both byte streams of
//! the splice note when they last carried a byte, and a watchdog ends the session once neither
//! has for `upstream.stream_idle_timeout`. Off (no wrapper, no timer) when the key is unset.
//!
//! Accepts any bytes in either direction as activity — a keep-alive ping of the client or the
//! API server counts, as it does for kube-apiserver's own stream idle timeout. Ends the session
//! by returning, so the splice drops (and thereby closes) both connections.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

/// When a session last carried a byte, as milliseconds since it started (shared by both
/// directions; an atomic, since each direction is polled by the same task but through two
/// wrappers).
#[derive(Clone)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once the session has carried nothing for `idle`.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A byte stream that touches its session's [`Activity`] whenever it reads bytes.
pub(crate) struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, activity: Activity) -> Self {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Only a lower bound is asserted (never "within"), so a loaded machine cannot fail it.
    #[tokio::test]
    async fn reading_bytes_postpones_the_idle_deadline() {
        let (a, mut b) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut watched = Watched::new(a, activity.clone());
        let idle = Duration::from_millis(300);

        tokio::time::sleep(Duration::from_millis(200)).await;
        b.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        watched.read_exact(&mut buf).await.unwrap();
        let read_at = Instant::now();
        activity.idle_for(idle).await;
        // Idle counts from the read, not from the start of the session.
        assert!(read_at.elapsed() >= idle - Duration::from_millis(5));
        assert!(activity.start.elapsed() >= Duration::from_millis(495));
    }
}
