//! Per-stream flow-control decoupling: the upstream response body is read by a task of its own
//! into a bounded buffer, so the upstream connection's flow-control window is given back as
//! fast as the API server sends, whatever the client does.
//!
//! Bounds: [`PER_STREAM`] bytes per response, and a budget of [`PER_IDENTITY`] bytes shared by
//! every response of one identity (user name). When either is full the pump stops reading —
//! the upstream stream's own window (`pool::STREAM_WINDOW`) then fills and the API server
//! pauses that stream only. A response whose buffer stays full for
//! `upstream.stalled_stream_timeout` (its client read nothing in that time) is *stalled*: the
//! upstream stream is cancelled (RST_STREAM) and the client's response ends with an error
//! (HTTP/2: its stream is reset; HTTP/1.1: its connection is closed) — logged with the audit
//! ID and counted in `portcullis_upstream_stalled_streams_total`. A client that goes away
//! stops the pump at once.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, Weak},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::Body as _;
use http_body::Frame;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::body::{Body, BoxError};

/// The most one response holds in the pump's buffer.
pub const PER_STREAM: usize = 1024 * 1024;
/// The most all responses of one identity hold in their pumps' buffers together.
pub const PER_IDENTITY: usize = 16 * 1024 * 1024;

/// The per-identity budgets (one semaphore per identity with a response in flight).
#[derive(Default)]
pub struct Budgets {
    by_identity: Mutex<HashMap<String, Weak<Semaphore>>>,
}

impl Budgets {
    /// The budget of `user`, shared by all its responses in flight.
    pub fn of(&self, user: &str) -> Arc<Semaphore> {
        let mut map = self
            .by_identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = map.get(user).and_then(Weak::upgrade) {
            return s;
        }
        // Forget identities with nothing in flight before adding one, so the map stays as
        // large as the set of identities with responses in flight.
        if map.len() >= 64 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let s = Arc::new(Semaphore::new(PER_IDENTITY));
        map.insert(user.to_owned(), Arc::downgrade(&s));
        s
    }
}

/// What a stalled stream is reported with.
pub struct StallReport {
    pub endpoint: String,
    pub user: String,
    pub audit_id: String,
    pub counter: Counter,
    /// Told at the reset (the audit layer writes the request's `ResponseComplete` then).
    pub on_stall: Option<OnStall>,
}

/// A request extension: called once when the pump resets that request's stalled response.
#[derive(Clone)]
pub struct OnStall(pub Arc<dyn Fn() + Send + Sync>);

type Item = Result<(Frame<Bytes>, [OwnedSemaphorePermit; 2]), BoxError>;
type Shared = Arc<Mutex<mpsc::UnboundedReceiver<Item>>>;

/// Read `inner` on a task of its own into a buffer bounded by [`PER_STREAM`] and `budget`
/// (see the module doc).
pub fn decouple(inner: Body, budget: Arc<Semaphore>, stall: Duration, report: StallReport) -> Body {
    if inner.is_end_stream() {
        return inner;
    }
    let (tx, rx) = mpsc::unbounded_channel::<Item>();
    let rx: Shared = Arc::new(Mutex::new(rx));
    tokio::spawn(pump(inner, tx, Arc::downgrade(&rx), budget, stall, report));
    Decoupled { rx }.boxed_unsync()
}

/// The client's side of the buffer. The pump holds only a weak handle to it, so dropping this
/// body (the client went away) closes the channel and stops the pump.
struct Decoupled {
    rx: Shared,
}

impl http_body::Body for Decoupled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut rx = self.rx.lock().unwrap_or_else(PoisonError::into_inner);
        // The permits are released as the frame is handed to the client side.
        rx.poll_recv(cx)
            .map(|item| item.map(|r| r.map(|(frame, _permits)| frame)))
    }
}

async fn pump(
    mut inner: Body,
    tx: mpsc::UnboundedSender<Item>,
    rx: Weak<Mutex<mpsc::UnboundedReceiver<Item>>>,
    budget: Arc<Semaphore>,
    stall: Duration,
    report: StallReport,
) {
    let mine = Arc::new(Semaphore::new(PER_STREAM));
    loop {
        let frame = tokio::select! {
            f = inner.frame() => f,
            () = tx.closed() => return,
        };
        let frame = match frame {
            None => return,
            Some(Err(err)) => {
                let _ = tx.send(Err(err));
                return;
            }
            Some(Ok(frame)) => frame,
        };
        // At least one permit per frame, so a flood of empty frames is bounded too.
        let size = frame.data_ref().map_or(0, Bytes::len).max(1);
        let own = u32::try_from(size.min(PER_STREAM)).unwrap_or(u32::MAX);
        let shared = u32::try_from(size.min(PER_IDENTITY)).unwrap_or(u32::MAX);
        let room = async {
            let a = mine.clone().acquire_many_owned(own).await;
            let b = budget.clone().acquire_many_owned(shared).await;
            a.ok().zip(b.ok())
        };
        let permits = tokio::select! {
            r = tokio::time::timeout(stall, room) => r,
            () = tx.closed() => return,
        };
        match permits {
            Ok(Some((a, b))) => {
                if tx.send(Ok((frame, [a, b]))).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(_) => {
                report.counter.inc();
                if let Some(on_stall) = &report.on_stall {
                    (on_stall.0)();
                }
                tracing::warn!(
                    endpoint = %report.endpoint,
                    user = %report.user,
                    audit_id = %report.audit_id,
                    timeout = ?stall,
                    "the client read nothing of this response for the stalled-stream timeout; resetting the stream"
                );
                // Free what the client never read (its identity's budget with it): the client
                // gets the error as soon as it reads again, and nothing else.
                if let Some(rx) = rx.upgrade() {
                    let mut rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
                    while rx.try_recv().is_ok() {}
                }
                let _ = tx.send(Err(
                    "stalled: the client read nothing within upstream.stalled_stream_timeout"
                        .into(),
                ));
                // Dropping `inner` cancels the upstream stream.
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StallReport {
        StallReport {
            endpoint: "https://a".into(),
            user: "u".into(),
            audit_id: "id".into(),
            counter: Counter::default(),
            on_stall: None,
        }
    }

    #[tokio::test]
    async fn everything_arrives_in_order_when_the_client_reads() {
        let (tx, inner) = crate::body::channel(4);
        let body = decouple(
            inner,
            Budgets::default().of("u"),
            Duration::from_secs(5),
            report(),
        );
        tokio::spawn(async move {
            for i in 0..100u8 {
                tx.send(Bytes::from(vec![i; 50_000])).await.unwrap();
            }
        });
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 100 * 50_000);
        assert_eq!(got[50_000 * 42], 42);
    }

    #[tokio::test]
    async fn a_stream_nobody_reads_is_reset_after_the_stall_timeout() {
        let (tx, inner) = crate::body::channel(1);
        let r = report();
        let counter = r.counter.clone();
        let budgets = Budgets::default();
        let budget = budgets.of("u");
        let mut body = decouple(inner, budget.clone(), Duration::from_millis(600), r);
        // More than the per-stream buffer, and nobody reads.
        let writer = tokio::spawn(async move {
            for _ in 0..40 {
                if tx.send(Bytes::from(vec![0u8; 64 * 1024])).await.is_err() {
                    return false;
                }
            }
            true
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(counter.get(), 0);
        // Only the per-stream bound is buffered, charged to the identity too.
        assert!(PER_IDENTITY - budget.available_permits() <= PER_STREAM);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(counter.get(), 1);
        // The writer (the upstream) was cut off rather than drained.
        assert!(!writer.await.unwrap());
        // What the client never read is freed at once, the identity's budget with it.
        assert_eq!(budget.available_permits(), PER_IDENTITY);
        // The client, reading at last, gets the error and no data.
        assert!(body.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn one_identity_s_budget_is_shared_by_its_responses() {
        let budgets = Budgets::default();
        let a = budgets.of("alice");
        assert!(Arc::ptr_eq(&a, &budgets.of("alice")));
        assert!(!Arc::ptr_eq(&a, &budgets.of("bob")));
    }
}
