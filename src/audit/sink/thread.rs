//! The writer thread of a sink whose writes block (file, stdout): one dedicated OS thread per
//! sink, fed by a bounded channel. It takes everything queued at once (up to [`MAX_BATCH`]),
//! writes it in one go, syncs once when a waiter needs durability, and then answers every
//! waiter (group commit). A write failure is counted, logged, reported to the waiters of the
//! events it lost and kept as the sink's health until a write succeeds (`health.rs`, which
//! also hears when each write starts, to report one that hangs). After `Shutdown` it closes
//! the backend and refuses whatever slipped in.
//!
//! A backend wrapped in [`Shared`] is also written *inline*, by the outbox flusher of a file sink
//! in `blocking` mode: one buffered append per runtime turn costs less than handing the turn's
//! events to the thread and waking their tasks from it. Its thread then keeps the timers, the
//! work it is nudged for ([`Msg::Tick`]: checkpoints and their `fdatasync`), the batches the
//! flusher hands over while the thread holds the backend, and the shutdown.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError, TryLockError,
    },
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

use super::{Ack, Msg, Prepared, SinkCounters};

/// A sink whose writes block: runs on its own OS thread (see [`spawn_thread`]).
pub(crate) trait LineBackend: Send + 'static {
    /// Write `events` (sync when `durable`). On failure, return how many events from the start
    /// were nevertheless written (and synced when `durable`) and the reason.
    fn write(&mut self, events: &[Arc<Prepared>], durable: bool) -> Result<(), (usize, String)>;
    /// How long until [`on_timer`](Self::on_timer) is due (None: no timer).
    fn next_timer(&self) -> Option<Duration> {
        None
    }
    fn on_timer(&mut self) {}
    /// The work an inline writer left to the thread ([`Msg::Tick`]), e.g. a checkpoint, whose
    /// `fdatasync` must not stall a request task.
    fn on_tick(&mut self) {}
    /// After an inline write: does the thread need a [`Msg::Tick`] (work left, a timer to
    /// arm)? Answers yes once per new need.
    fn take_tick(&mut self) -> bool {
        false
    }
    /// Would writing `events` sync (a rotation, a reopen after a failed write)? Such a batch is
    /// left to the thread rather than written inline.
    fn would_sync(&self, _events: &[Arc<Prepared>]) -> bool {
        false
    }
    /// Clean shutdown.
    fn close(&mut self) {}
}

/// A backend written both by its thread and inline by a waiting sink's outbox flusher, under
/// one lock.
///
/// The flusher never waits for the lock and never syncs: while the thread holds the lock (a
/// checkpoint's `fdatasync`, a timer), or when writing a batch would sync (a rotation), the
/// batch goes to the thread through the channel instead, and so does every later batch until
/// the thread has written those — the file keeps the order in which events were emitted, and
/// the runtime never blocks on a sync.
pub(crate) struct Shared<B> {
    inner: Arc<SharedInner<B>>,
}

struct SharedInner<B> {
    state: Mutex<SharedState<B>>,
    /// Events handed to the thread and not yet written by it.
    at_thread: AtomicUsize,
}

struct SharedState<B> {
    backend: B,
    /// Closed by the shutdown: later inline writes are refused, as queued ones are.
    closed: bool,
}

impl<B: LineBackend> SharedState<B> {
    /// The backend's write, unless the shutdown closed it.
    fn write(&mut self, events: &[Arc<Prepared>], durable: bool) -> Result<(), (usize, String)> {
        if self.closed {
            return Err((0, "audit is shutting down".into()));
        }
        self.backend.write(events, durable)
    }
}

impl<B> Clone for Shared<B> {
    fn clone(&self) -> Self {
        Shared {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// One turn's events with their waiters.
pub(crate) type Batch = Vec<(Arc<Prepared>, Option<Ack>)>;

impl<B: LineBackend> Shared<B> {
    pub(crate) fn new(backend: B) -> Shared<B> {
        Shared {
            inner: Arc::new(SharedInner {
                state: Mutex::new(SharedState {
                    backend,
                    closed: false,
                }),
                at_thread: AtomicUsize::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SharedState<B>> {
        // A panic while writing leaves the backend's own state consistent enough to go on
        // (its failure paths roll back); refusing every later event would be worse.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Write a batch now, on the caller's thread (no sync), count it and answer its waiters as
    /// the thread would: `Ok(nudge)`, where `nudge` says the thread must be sent a
    /// [`Msg::Tick`]. `Err(batch)` when the thread holds the backend, still has events to
    /// write, or writing the batch would sync: the caller hands the batch to the thread
    /// ([`handed_over`](Self::handed_over)).
    pub(crate) fn try_write_batch(
        &self,
        batch: Batch,
        counters: &SinkCounters,
        sink: &str,
    ) -> Result<bool, Batch> {
        if self.inner.at_thread.load(Ordering::Acquire) > 0 {
            return Err(batch);
        }
        let mut s = match self.inner.state.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(batch),
        };
        let (events, acks): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        if !s.closed && s.backend.would_sync(&events) {
            return Err(events.into_iter().zip(acks).collect());
        }
        let result = s.write(&events, false);
        let nudge = s.backend.take_tick();
        drop(s);
        answer(events.len(), result, acks, counters, sink);
        Ok(nudge)
    }

    /// `n` events are on their way to the thread: inline writes wait until it wrote them.
    pub(crate) fn handed_over(&self, n: usize) {
        self.inner.at_thread.fetch_add(n, Ordering::AcqRel);
    }
}

impl<B: LineBackend> LineBackend for Shared<B> {
    fn write(&mut self, events: &[Arc<Prepared>], durable: bool) -> Result<(), (usize, String)> {
        let mut s = self.lock();
        let result = s.write(events, durable);
        // Only handed-over batches reach the thread: once written (or failed), inline writes
        // may go on. Released under the lock, so no inline write overtakes them.
        let _ = self
            .inner
            .at_thread
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(events.len()))
            });
        drop(s);
        result
    }
    fn next_timer(&self) -> Option<Duration> {
        self.lock().backend.next_timer()
    }
    fn on_timer(&mut self) {
        self.lock().backend.on_timer();
    }
    fn on_tick(&mut self) {
        self.lock().backend.on_tick();
    }
    fn close(&mut self) {
        let mut s = self.lock();
        s.backend.close();
        s.closed = true;
    }
}

/// At most this many messages per write (bounds the buffer; a backlog takes several rounds).
/// A message from a waiting sink's outbox carries one runtime turn's events, themselves
/// bounded by the requests in flight, each waiting for its own.
const MAX_BATCH: usize = 4096;

/// Run `backend` on a dedicated thread fed by `rx`: take everything queued (up to
/// [`MAX_BATCH`]), write it in one go, then answer every waiter.
pub(crate) fn spawn_thread<B: LineBackend>(
    name: &str,
    backend: B,
    rx: mpsc::Receiver<Msg>,
    counters: Arc<SinkCounters>,
    durable: bool,
) -> anyhow::Result<()> {
    let writer = Writer {
        sink: name.to_string(),
        backend,
        rx,
        counters,
        durable,
        msgs: Vec::with_capacity(MAX_BATCH),
        events: Vec::with_capacity(MAX_BATCH),
        acks: Vec::with_capacity(MAX_BATCH),
    };
    // Built (and later dropped) on the thread itself: a runtime may not be dropped inside the
    // caller's async context. Startup waits for it so a failure is reported here.
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
    std::thread::Builder::new()
        .name(format!("audit-{name}"))
        .spawn(move || {
            // A small runtime of its own gives the thread a receive-with-timeout for timed
            // checkpoints without touching the caller's workers.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => {
                    let _ = ready_tx.send(Ok(()));
                    rt
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            writer.run(&rt);
        })?;
    ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("audit sink {name}: writer thread died at start"))??;
    Ok(())
}

/// The state of one writer thread; the buffers are reused from round to round.
struct Writer<B> {
    sink: String,
    backend: B,
    rx: mpsc::Receiver<Msg>,
    counters: Arc<SinkCounters>,
    durable: bool,
    msgs: Vec<Msg>,
    events: Vec<Arc<Prepared>>,
    acks: Vec<Option<Ack>>,
}

impl<B: LineBackend> Writer<B> {
    /// Until shutdown, or until every sender is gone (the Auditor was dropped without
    /// shutdown): receive, write, answer.
    fn run(mut self, rt: &tokio::runtime::Runtime) {
        loop {
            let timer = self.backend.next_timer();
            let (rx, msgs) = (&mut self.rx, &mut self.msgs);
            let got = rt.block_on(async {
                match timer {
                    Some(d) => tokio::time::timeout(d, rx.recv_many(msgs, MAX_BATCH))
                        .await
                        .ok(),
                    None => Some(rx.recv_many(msgs, MAX_BATCH).await),
                }
            });
            match got {
                None => {
                    self.backend.on_timer();
                    continue;
                }
                Some(0) => {
                    // Every sender is gone: the Auditor was dropped without shutdown.
                    self.backend.close();
                    return;
                }
                Some(_) => {}
            }
            let (mut shutdown, mut tick) = (None, false);
            for m in self.msgs.drain(..) {
                match m {
                    Msg::Event(ev, ack) => {
                        self.events.push(ev);
                        self.acks.push(ack);
                    }
                    // Taken: its bytes leave the sink's budget (`_held` drops here).
                    Msg::Events(evs, _held) => {
                        for (ev, ack) in evs {
                            self.events.push(ev);
                            self.acks.push(ack);
                        }
                    }
                    Msg::Tick => tick = true,
                    Msg::Shutdown(done) => shutdown = Some(done),
                }
            }
            if !self.events.is_empty() {
                self.write_batch();
            }
            if tick {
                self.backend.on_tick();
            }
            if let Some(done) = shutdown {
                self.shut_down(done);
                return;
            }
        }
    }

    /// Write the gathered events (synced when a waiter needs durability), count them, and
    /// answer every waiter: an error for each event the failure lost.
    fn write_batch(&mut self) {
        let wants_sync = self.durable && self.acks.iter().any(Option::is_some);
        self.counters.health.writing();
        let result = self.backend.write(&self.events, wants_sync);
        answer(
            self.events.len(),
            result,
            self.acks.drain(..),
            &self.counters,
            &self.sink,
        );
        self.events.clear();
    }

    /// Close the backend, refuse what slipped in after the shutdown message, then answer it.
    fn shut_down(mut self, done: oneshot::Sender<()>) {
        self.backend.close();
        // Closed before answering, so every emit after `shutdown` returns finds
        // the channel closed; what slipped in meanwhile is refused.
        self.rx.close();
        while let Ok(m) = self.rx.try_recv() {
            m.refuse("audit is shutting down");
        }
        let _ = done.send(());
    }
}

/// Count a write of `n` events and answer their waiters: an error for each event the failure
/// lost (the backend reports how many from the start were written).
fn answer(
    n: usize,
    result: Result<(), (usize, String)>,
    acks: impl IntoIterator<Item = Option<Ack>>,
    counters: &SinkCounters,
    sink: &str,
) {
    let (ok, err) = match result {
        Ok(()) => (n, None),
        Err((ok, e)) => (ok.min(n), Some(e)),
    };
    SinkCounters::add(&counters.events_written, ok);
    counters.health.record(err.as_deref().map_or(Ok(()), Err));
    if let Some(e) = &err {
        SinkCounters::add(&counters.events_failed, n - ok);
        tracing::error!(sink = %sink, err = %e, lost = n - ok, "audit write failed");
    }
    for (i, ack) in acks.into_iter().enumerate() {
        if let Some(ack) = ack {
            let r = match &err {
                Some(e) if i >= ok => Err(e.clone()),
                _ => Ok(()),
            };
            // The waiter may have gone (client disconnected); the event stays.
            let _ = ack.send(r);
        }
    }
}
