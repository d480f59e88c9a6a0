//! Events still to come: the `ResponseComplete` of every request whose audit record is still
//! held (an ordinary request until it is answered or dropped, a long-running one — a watch,
//! `logs -f`, an exec / attach / port-forward session — until its stream ends), and detached
//! emits on their way to the sinks. The auditor's shutdown waits (bounded) until none is left,
//! so a request or stream that the drain cuts, or that ends while the proxy drains — its client
//! socket can be gone before the audit record is dropped, e.g. while a session recording is
//! synced; over HTTP/2 a stream's task sees its connection dropped only after the listener
//! has stopped waiting — still has its event written before the sinks stop, instead of being
//! refused as "audit event lost".

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::Notify;

/// How many events are still to come.
#[derive(Debug, Default)]
pub struct Pending {
    count: AtomicUsize,
    settled: Notify,
}

/// One event still to come; dropped when it was handed to the sinks (or will never be).
#[derive(Debug)]
pub struct PendingGuard(Arc<Pending>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

impl Pending {
    /// One more event to come.
    pub fn enter(self: &Arc<Self>) -> PendingGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        PendingGuard(Arc::clone(self))
    }

    /// Wait until no event is still to come, at most `within`; how many are left then.
    pub async fn settled(&self, within: Duration) -> usize {
        let wait = async {
            loop {
                let settled = self.settled.notified();
                tokio::pin!(settled);
                // Registered before the count is read, so a drop to 0 in between wakes it.
                settled.as_mut().enable();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                settled.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settles_when_the_last_guard_goes_and_not_before() {
        let pending = Arc::new(Pending::default());
        assert_eq!(pending.settled(Duration::from_millis(10)).await, 0);
        let (a, b) = (pending.enter(), pending.enter());
        assert_eq!(pending.settled(Duration::from_millis(50)).await, 2);
        drop(a);
        let waiting = {
            let pending = pending.clone();
            tokio::spawn(async move { pending.settled(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "one is still to come");
        drop(b);
        let left = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("settled as the last guard went")
            .unwrap();
        assert_eq!(left, 0);
    }
}
