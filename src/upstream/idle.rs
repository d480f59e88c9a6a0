//! The idle timeout of an upgraded session (exec, attach, port-forward): both byte streams of
//! the splice note when they last carried a byte, and a watchdog ends the session once neither
//! has for `upstream.stream_idle_timeout`. Off (no wrapper, no timer) when the key is unset.
//!
//! Accepts any bytes in either direction as activity — a keep-alive ping of the client or the
//! API server counts, as it does for kube-apiserver's own stream idle timeout. Ends the session
//! by returning, so the splice drops (and thereby closes) both connections.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::read_tap::ReadTap;

/// When a session last carried a byte, as milliseconds since it started (shared by both
/// directions of the splice, each wrapped by [`Activity::watch`]).
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

    /// `io`, noting every read as activity of this session.
    pub(crate) fn watch<T>(&self, io: T) -> ReadTap<T, impl FnMut(&[u8]) + Unpin> {
        let activity = self.clone();
        ReadTap::new(io, move |_: &[u8]| activity.touch())
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Only a lower bound is asserted (never "within"), so a loaded machine cannot fail it.
    #[tokio::test]
    async fn reading_bytes_postpones_the_idle_deadline() {
        let (a, mut b) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut watched = activity.watch(a);
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
