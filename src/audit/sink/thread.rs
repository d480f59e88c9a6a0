//! The writer thread of a sink whose writes block (file, stdout): one dedicated OS thread per
//! sink, fed by a bounded channel. It takes everything queued at once (up to [`MAX_BATCH`]),
//! writes it in one go, syncs once when a waiter needs durability, and then answers every
//! waiter (group commit). A write failure is counted, logged and reported to the waiters of
//! the events it lost. After `Shutdown` it closes the backend and refuses whatever slipped in.

use std::{sync::Arc, time::Duration};

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
    /// Clean shutdown.
    fn close(&mut self) {}
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
            let mut shutdown = None;
            for m in self.msgs.drain(..) {
                match m {
                    Msg::Event(ev, ack) => {
                        self.events.push(ev);
                        self.acks.push(ack);
                    }
                    Msg::Events(evs) => {
                        for (ev, ack) in evs {
                            self.events.push(ev);
                            self.acks.push(ack);
                        }
                    }
                    Msg::Shutdown(done) => shutdown = Some(done),
                }
            }
            if !self.events.is_empty() {
                self.write_batch();
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
        let n = self.events.len();
        let wants_sync = self.durable && self.acks.iter().any(Option::is_some);
        let (ok, err) = match self.backend.write(&self.events, wants_sync) {
            Ok(()) => (n, None),
            Err((ok, e)) => (ok.min(n), Some(e)),
        };
        SinkCounters::add(&self.counters.events_written, ok);
        if let Some(e) = &err {
            SinkCounters::add(&self.counters.events_failed, n - ok);
            tracing::error!(sink = %self.sink, err = %e, lost = n - ok, "audit write failed");
        }
        for (i, ack) in self.acks.drain(..).enumerate() {
            if let Some(ack) = ack {
                let r = match &err {
                    Some(e) if i >= ok => Err(e.clone()),
                    _ => Ok(()),
                };
                // The waiter may have gone (client disconnected); the event stays.
                let _ = ack.send(r);
            }
        }
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
