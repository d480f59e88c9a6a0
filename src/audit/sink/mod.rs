//! Where events go: the [`Auditor`] fans each event out to several sinks (file, webhook,
//! stdout), each with its own [`DeliveryMode`].
//!
//! * `BlockingStrict`: [`Auditor::emit`] returns only when the event is durable in that sink
//!   (file: written and `fdatasync`ed; webhook: acknowledged with 2xx; stdout: flushed), and
//!   returns `Err` if it cannot be — the caller answers 503 rather than serve an unaudited
//!   request (DESIGN.md decision 2).
//! * `Blocking`: `emit` waits until the sink has written the event (no fsync), but a failure is
//!   only logged and counted, never returned.
//! * `Batch { queue, overflow }`: `emit` only enqueues into a bounded queue. When it is full,
//!   `Drop` discards the event and counts it; `Block` waits for room.
//!
//! A `BlockingStrict` sink written on this replica (file, stdout) whose last write failed makes
//! the replica unready ([`Auditor::not_ready`], `health.rs`), since it refuses every audited
//! request; a webhook's failure never does (every replica shares its receiver), though a
//! failing strict webhook holds requests back like a local sink ([`Auditor::strict_failure`]).
//!
//! Each sink owns one worker (a dedicated OS thread for file and stdout, whose writes block; a
//! tokio task for the webhook) fed by a bounded channel. Workers take everything queued at once,
//! write it with one system call, sync once and then answer every waiter: concurrent requests
//! share one fsync (group commit). For the waiting modes, the events emitted during one turn of
//! the runtime reach the channel together, as one message (`outbox.rs`), so the worker wakes
//! once per turn rather than once per event. A file sink in `Blocking` mode is written by the
//! outbox's flusher itself instead, one append per turn on the runtime (no sync), which costs
//! less than handing the turn to the thread and waking every waiter from there; the thread
//! keeps the checkpoints and their `fdatasync`, the timers and the shutdown, and takes a turn's
//! batch whenever it holds the file or the write would sync (a rotation) (`thread.rs`,
//! `Shared`), so the runtime never blocks on a sync.
//!
//! `emit` serializes the event once ([`Prepared`]); all sinks share those bytes. When a chained
//! (file) sink is present, the canonical bytes for the hash chain are also computed there
//! (`canonical.rs`), on the caller's task, so the single writer thread only hashes and writes.
//!
//! Accepts any [`Event`]; an event's own `portcullis.io/chain` annotation is discarded (only the
//! file sink sets it). Rejects at emit time: what the delivery mode says, and an event past a
//! sink's budget of bytes not yet taken (`budget.rs`: dropped, failed, or a strict error — for
//! that sink only).

pub mod budget;
pub mod file;
pub mod health;
mod outbox;
pub mod pending;
pub mod stdout;
mod thread;
pub mod webhook;

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

/// Longest wait at shutdown for the requests and streams still held to end and emit their
/// `ResponseComplete`.
const OPEN_STREAMS_WAIT: Duration = Duration::from_secs(5);

use super::{
    chain,
    event::{json::Written, Event},
};

pub use file::FileSinkConfig;
pub(crate) use thread::{spawn_thread, LineBackend, Shared};
pub use webhook::WebhookConfig;

/// How `emit` waits for one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Wait until durable; a failure is returned to the caller (→ 503).
    BlockingStrict,
    /// Wait until written; a failure is logged and counted only.
    Blocking,
    /// Enqueue into a bounded queue of `queue` events.
    Batch { queue: usize, overflow: Overflow },
}

/// What a full batch queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Discard the event and count it in `events_dropped`.
    Drop,
    /// Wait for room (the request waits too).
    Block,
}

impl DeliveryMode {
    fn waits(self) -> bool {
        matches!(self, DeliveryMode::BlockingStrict | DeliveryMode::Blocking)
    }

    fn queue_len(self) -> usize {
        match self {
            DeliveryMode::Batch { queue, .. } => queue.max(1),
            // Emitters wait for their ack, so this only bounds bursts of concurrent requests.
            _ => 16_384,
        }
    }
}

/// Per-sink counters: plain atomics, read by `metrics.rs` at scrape time; and the sink's
/// [`health`](health::SinkHealth), recorded with them by the writer of a file or stdout sink.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Events written (file/stdout) or delivered (webhook).
    pub events_written: AtomicU64,
    /// Events discarded because a `Batch { overflow: Drop }` queue was full.
    pub events_dropped: AtomicU64,
    /// Events that could not be written or delivered (after retries).
    pub events_failed: AtomicU64,
    /// `fdatasync` calls (file sink).
    pub fsyncs: AtomicU64,
    /// Checkpoint lines written (file sink).
    pub checkpoints: AtomicU64,
    /// File rotations (file sink).
    pub rotations: AtomicU64,
    /// Retried deliveries (webhook sink).
    pub retries: AtomicU64,
    /// Events sent without their objects because of `max_event_size` (webhook sink).
    pub events_truncated: AtomicU64,
    /// The outcome of the last event write (file and stdout sinks: written by `thread.rs`'s
    /// `answer`; a webhook by each delivery).
    pub health: health::SinkHealth,
    /// Bytes of events in this sink's unbounded places (`budget.rs`).
    pub queued: budget::Queued,
}

impl SinkCounters {
    fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A snapshot, for tests and logs.
    pub fn snapshot(&self) -> [(&'static str, u64); 8] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("events_written", g(&self.events_written)),
            ("events_dropped", g(&self.events_dropped)),
            ("events_failed", g(&self.events_failed)),
            ("fsyncs", g(&self.fsyncs)),
            ("checkpoints", g(&self.checkpoints)),
            ("rotations", g(&self.rotations)),
            ("retries", g(&self.retries)),
            ("events_truncated", g(&self.events_truncated)),
        ]
    }
}

/// Why an event was not recorded by a `BlockingStrict` sink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The sink tried and failed (I/O error, webhook refused after retries).
    #[error("audit sink {sink}: {message}")]
    Sink { sink: String, message: String },
    /// The sink's worker has stopped (after `shutdown`, or it died).
    #[error("audit sink {sink} is not running")]
    Closed { sink: String },
    /// The sink holds its budget of events not yet taken (`budget.rs`): it is not keeping up.
    #[error("audit sink {sink}: too many events are waiting to be written; event refused")]
    Overloaded { sink: String },
}

/// An event serialized once for every sink.
pub struct Prepared {
    /// Compact JSON of the event (Go field order, `annotations` last), no newline; and the
    /// canonical bytes for the hash chain (only when a chained sink exists).
    written: Written,
    has_annotations: bool,
}

/// The longest event line a sink is handed: `audit verify` and `audit query` read lines up to
/// 64 MiB, and JSON escaping can make a line several times the object it holds
/// (`max_body_bytes` may be raised to 64 MiB). A longer event is written without
/// `requestObject` / `responseObject`, annotated `audit.k8s.io/truncated` — as kube-apiserver's
/// truncating backend does — so that every line of the log stays verifiable.
pub const MAX_EVENT_LINE: usize = 32 << 20;

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("line", &String::from_utf8_lossy(self.line()))
            .finish()
    }
}

impl Prepared {
    /// Serialize `event`; `chained` also computes its canonical bytes.
    pub fn new(mut event: Event, chained: bool) -> Prepared {
        event.annotations.remove(chain::CHAIN_ANNOTATION);
        Prepared::written(&event, chained)
    }

    /// [`new`](Self::new) from a borrowed event: no copy unless it carries a chain annotation
    /// (then a copy without it).
    pub fn of(event: &Event, chained: bool) -> Prepared {
        if event.annotations.contains_key(chain::CHAIN_ANNOTATION) {
            return Prepared::new(event.clone(), chained);
        }
        Prepared::written(event, chained)
    }

    /// `event` has no chain annotation.
    fn written(event: &Event, chained: bool) -> Prepared {
        Prepared::within(event, chained, MAX_EVENT_LINE)
    }

    /// [`written`](Self::written), an event over `limit` bytes without its objects.
    fn within(event: &Event, chained: bool, limit: usize) -> Prepared {
        // One pass writes the line and the canonical bytes (`event/json.rs`).
        let written = super::event::json::write(event, chained);
        let has_objects = event.request_object.is_some() || event.response_object.is_some();
        if written.line().len() <= limit || !has_objects {
            return Prepared {
                written,
                has_annotations: !event.annotations.is_empty(),
            };
        }
        tracing::warn!(audit_id = %event.audit_id, bytes = written.line().len(), "audit event too long for one line; written without its request and response objects");
        drop(written);
        let mut cut = event.clone();
        cut.request_object = None;
        cut.response_object = None;
        cut.annotations.insert(
            webhook::limits::TRUNCATED_ANNOTATION.to_owned(),
            "true".to_owned(),
        );
        Prepared {
            written: super::event::json::write(&cut, chained),
            has_annotations: true,
        }
    }

    /// The event's JSON (without a chain annotation), no newline.
    pub fn line(&self) -> &[u8] {
        self.written.line()
    }

    /// Append the line with `"portcullis.io/chain": link` added to its annotations, and `\n`.
    /// Relies on `annotations` being the last field of a serialized [`Event`].
    pub(crate) fn write_chained(&self, link: &chain::Link, out: &mut Vec<u8>) {
        chain::link_line(self.line(), self.has_annotations, link, out);
    }

    /// The canonical bytes (empty when not computed).
    pub(crate) fn canonical(&self) -> &[u8] {
        self.written.canonical().unwrap_or_default()
    }

    /// The bytes it holds (its line and its canonical bytes).
    pub(crate) fn footprint(&self) -> usize {
        self.line().len() + self.canonical().len()
    }
}

/// A waiter's answer: `Err` carries the reason in words.
pub(crate) type AckResult = Result<(), String>;
pub(crate) type Ack = oneshot::Sender<AckResult>;

/// What a sink worker receives.
pub(crate) enum Msg {
    Event(Arc<Prepared>, Option<Ack>),
    /// The waiting events of one runtime turn, in order (`outbox.rs`), and their bytes held
    /// against the sink's budget until the worker has taken them.
    Events(thread::Batch, budget::Held),
    /// An inline writer left work to the thread (see [`LineBackend::take_tick`]).
    Tick,
    /// Finish everything queued before this, close cleanly, then answer.
    Shutdown(oneshot::Sender<()>),
}

impl Msg {
    /// Answer this message's waiters with `why`: it will never be written.
    pub(crate) fn refuse(self, why: &str) {
        let answer = |ack: Option<Ack>| {
            if let Some(ack) = ack {
                let _ = ack.send(Err(why.into()));
            }
        };
        match self {
            Msg::Event(_, ack) => answer(ack),
            Msg::Events(events, _held) => events.into_iter().for_each(|(_, ack)| answer(ack)),
            // Dropping the sender answers the shutdown's waiter; a nudge has none.
            Msg::Shutdown(_) | Msg::Tick => {}
        }
    }
}

/// What kind of sink, with its settings.
#[derive(Debug)]
pub enum SinkKind {
    File(FileSinkConfig),
    Webhook(WebhookConfig),
    Stdout,
}

/// One configured sink.
#[derive(Debug)]
pub struct SinkSpec {
    /// A name for logs and metrics (e.g. `file`, `siem`).
    pub name: String,
    pub kind: SinkKind,
    pub mode: DeliveryMode,
}

/// A running sink.
pub struct SinkHandle {
    name: String,
    mode: DeliveryMode,
    tx: mpsc::Sender<Msg>,
    /// For a waiting mode: where emits gather (`outbox.rs`).
    outbox: Option<Arc<outbox::Outbox>>,
    counters: Arc<SinkCounters>,
    /// Written by the outbox's flusher (a file sink in `Blocking` mode).
    inline: bool,
    /// A webhook sink's receiver, which a reload may re-point.
    receiver: Option<webhook::Slot>,
    /// Written on this replica (file, stdout): its failure is this replica's alone, so it may
    /// fail readiness ([`Auditor::not_ready`]).
    local: bool,
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        if let Some(o) = &self.outbox {
            o.close();
        }
    }
}

impl SinkHandle {
    fn new<B: LineBackend>(
        name: String,
        mode: DeliveryMode,
        tx: mpsc::Sender<Msg>,
        counters: Arc<SinkCounters>,
        inline: Option<Shared<B>>,
    ) -> SinkHandle {
        let writes_inline = inline.is_some();
        // Written on the flusher's task: one append per turn, the thread nudged for the
        // checkpoints the backend leaves it.
        let inline = inline.map(|shared| {
            let (tx, counters, sink) = (tx.clone(), Arc::clone(&counters), name.clone());
            Box::new(move |batch: thread::Batch| {
                match shared.try_write_batch(batch, &counters, &sink) {
                    // A full queue already holds a nudge the thread has yet to see.
                    Ok(nudge) => {
                        if nudge {
                            let _ = tx.try_send(Msg::Tick);
                        }
                        None
                    }
                    Err(batch) => {
                        shared.handed_over(batch.len());
                        Some(batch)
                    }
                }
            }) as outbox::InlineWrite
        });
        let outbox = mode
            .waits()
            .then(|| outbox::Outbox::start(&tx, inline, Arc::clone(&counters)));
        SinkHandle {
            name,
            mode,
            tx,
            outbox,
            counters,
            inline: writes_inline,
            receiver: None,
            local: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn mode(&self) -> DeliveryMode {
        self.mode
    }
    pub fn counters(&self) -> &Arc<SinkCounters> {
        &self.counters
    }
    /// Whether the outbox's flusher writes this sink itself (a file sink in `Blocking` mode).
    pub fn writes_inline(&self) -> bool {
        self.inline
    }
    /// Whether this replica writes the sink itself (file, stdout), rather than a receiver
    /// every replica shares (webhook).
    pub fn is_local(&self) -> bool {
        self.local
    }
}

/// Fans events out to the configured sinks.
pub struct Auditor {
    sinks: Vec<SinkHandle>,
    chained: bool,
    /// Events still to come from open streams ([`pending`]).
    pending: Arc<pending::Pending>,
    /// Detached emits on their way to the sinks.
    emitting: Arc<pending::Pending>,
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.sinks.iter().map(|s| s.name.as_str()).collect();
        write!(f, "Auditor{names:?}")
    }
}

impl Auditor {
    /// Start every sink. File sinks open (and resume) their file here, so a bad path or key
    /// fails at startup. Must be called inside a tokio runtime (the webhook worker is a task).
    pub fn start(specs: Vec<SinkSpec>) -> anyhow::Result<Auditor> {
        let mut sinks = Vec::with_capacity(specs.len());
        let mut chained = false;
        for spec in specs {
            let counters = Arc::new(SinkCounters::default());
            let (tx, rx) = mpsc::channel(spec.mode.queue_len());
            let durable = spec.mode == DeliveryMode::BlockingStrict;
            let mut inline = None;
            let mut receiver = None;
            let local = matches!(spec.kind, SinkKind::File(_) | SinkKind::Stdout);
            match spec.kind {
                SinkKind::File(cfg) => {
                    chained = true;
                    let write_inline = spec.mode == DeliveryMode::Blocking;
                    inline = file::spawn(
                        &spec.name,
                        cfg,
                        rx,
                        Arc::clone(&counters),
                        durable,
                        write_inline,
                    )?;
                }
                SinkKind::Stdout => stdout::spawn(&spec.name, rx, Arc::clone(&counters))?,
                SinkKind::Webhook(cfg) => {
                    receiver = Some(webhook::spawn(
                        &spec.name,
                        cfg,
                        spec.mode,
                        rx,
                        Arc::clone(&counters),
                    )?);
                }
            }
            let mut sink = SinkHandle::new(spec.name, spec.mode, tx, counters, inline);
            sink.receiver = receiver;
            sink.local = local;
            sinks.push(sink);
        }
        Ok(Auditor {
            sinks,
            chained,
            pending: Arc::default(),
            emitting: Arc::default(),
        })
    }

    /// For a reload whose sinks are the running ones (`reload::fixed` refuses any other):
    /// every webhook sink's kubeconfig read again, and a new receiver built where it resolves
    /// differently — to be applied once the reload commits. `Err` names the sink's index in
    /// `specs` (that is, in `audit.sinks`) and why its kubeconfig cannot be used; nothing
    /// changes then.
    pub(crate) fn retarget(
        &self,
        specs: &[SinkSpec],
    ) -> Result<Vec<webhook::Retarget>, (usize, anyhow::Error)> {
        let mut out = Vec::new();
        for (i, (sink, spec)) in self.sinks.iter().zip(specs).enumerate() {
            if let (Some(slot), SinkKind::Webhook(cfg)) = (&sink.receiver, &spec.kind) {
                out.extend(webhook::retarget(slot, cfg).map_err(|e| (i, e))?);
            }
        }
        Ok(out)
    }

    /// The running sinks (names, modes, counters).
    pub fn sinks(&self) -> &[SinkHandle] {
        &self.sinks
    }

    /// Why this replica cannot serve audited requests, for `/readyz` (empty: it can): a
    /// `blocking-strict` sink written on this replica (file, stdout) whose last event write
    /// failed within `window`, with nothing written since — every audited request is then
    /// refused with 503 — whose write under way has not returned for
    /// [`health::STUCK_WRITE`] (a hung volume: every audited request waits), or whose writer
    /// is gone.
    ///
    /// Deliberately not here: a webhook sink (its receiver is shared by every replica, so its
    /// failure would take them all out of the load balancer at once — an outage amplifier for
    /// a failure no other replica can avoid either; it stays visible in
    /// `portcullis_audit_events_failed_total`), and sinks in `blocking` / `batch` mode, whose
    /// failures refuse nothing (the replica keeps serving).
    pub fn not_ready(&self, window: Duration) -> Vec<String> {
        self.not_ready_at(window, std::time::Instant::now())
    }

    /// [`not_ready`](Self::not_ready) as of `now`.
    pub(crate) fn not_ready_at(&self, window: Duration, now: std::time::Instant) -> Vec<String> {
        self.strict_problems(window, now, false).collect()
    }

    /// Why a `blocking-strict` sink cannot take events now: its writer is gone, a write has
    /// hung for [`health::STUCK_WRITE`], or its last event write (a webhook's: its last
    /// delivery) failed and none has succeeded since — without `not_ready`'s window: the
    /// events of the requests this refuses are what try the sink again. Unlike readiness, a
    /// webhook counts here: a write forwarded while it fails would be carried out unrecorded
    /// and answered 500 after the delivery's retries. `None` when every such sink can take
    /// events (atomic loads, no lock).
    pub fn strict_failure(&self) -> Option<String> {
        self.strict_problems(Duration::MAX, std::time::Instant::now(), true)
            .next()
    }

    /// Each strict sink's problem, if it has one (a failure counts within `window`): the local
    /// ones (file, stdout), and the webhooks too when `remote`.
    fn strict_problems(
        &self,
        window: Duration,
        now: std::time::Instant,
        remote: bool,
    ) -> impl Iterator<Item = String> + '_ {
        self.sinks
            .iter()
            .filter(move |s| (s.local || remote) && s.mode == DeliveryMode::BlockingStrict)
            .filter_map(move |s| {
                if s.tx.is_closed() {
                    // Only its thread's end closes the channel before shutdown (a panic):
                    // every strict emit fails from then on, and nothing will recover it.
                    return Some(format!("audit sink {} is not running", s.name));
                }
                if let Some(d) = s.counters.health.stuck_at(now) {
                    // A hung volume: every strict request waits on this write.
                    return Some(format!(
                        "audit sink {} stuck: a write has not returned for {} s",
                        s.name,
                        d.as_secs()
                    ));
                }
                if s.counters.queued.full() {
                    // Events it has not taken fill its budget: every strict emit would fail.
                    return Some(format!(
                        "audit sink {} is not keeping up: {} MiB of events wait to be written",
                        s.name,
                        s.counters.queued.held() >> 20
                    ));
                }
                let why = s.counters.health.failing_at(now, window)?;
                Some(format!("audit sink {} failing: {why}", s.name))
            })
    }

    /// Record one event in every sink, waiting as each sink's mode says. `Err` only when a
    /// `BlockingStrict` sink could not make the event durable.
    pub async fn emit(&self, event: Event) -> Result<(), AuditError> {
        if self.sinks.is_empty() {
            return Ok(());
        }
        let prepared = Arc::new(Prepared::new(event, self.chained));
        self.emit_prepared(prepared).await
    }

    /// `event` prepared for [`emit_prepared`](Self::emit_prepared), without taking it; `None`
    /// when there is no sink (nothing to write).
    pub fn prepare(&self, event: &Event) -> Option<Arc<Prepared>> {
        (!self.sinks.is_empty()).then(|| Arc::new(Prepared::of(event, self.chained)))
    }

    /// [`emit`](Self::emit) for an already prepared event (prepare with `chained` =
    /// [`Auditor::needs_canonical`]).
    ///
    /// The event is handed to every sink on the first poll, before anything is awaited, so
    /// dropping the future afterwards (its request's client went away) loses nothing: the
    /// sinks write it, only the answer goes unread. A `batch` sink with `overflow: block` whose
    /// queue is full waits for room on a task of its own for the same reason.
    pub async fn emit_prepared(&self, prepared: Arc<Prepared>) -> Result<(), AuditError> {
        let size = prepared.footprint();
        // Enqueue everywhere first, then wait: sinks work in parallel.
        let mut waits: Vec<(&SinkHandle, oneshot::Receiver<AckResult>)> = Vec::new();
        let mut full: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        let mut first_err: Option<AuditError> = None;
        for sink in &self.sinks {
            let c = &sink.counters;
            match sink.mode {
                DeliveryMode::Batch {
                    overflow: Overflow::Drop,
                    ..
                } => match sink.tx.try_send(Msg::Event(Arc::clone(&prepared), None)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        SinkCounters::add(&c.events_dropped, 1)
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        SinkCounters::add(&c.events_failed, 1)
                    }
                },
                DeliveryMode::Batch {
                    overflow: Overflow::Block,
                    ..
                } => match sink.tx.try_send(Msg::Event(Arc::clone(&prepared), None)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(msg)) => {
                        // Waiting for room, on a task of its own: held against the sink's
                        // budget until it is in the queue (`budget.rs`).
                        if !c.queued.take(size, &sink.name) {
                            SinkCounters::add(&c.events_dropped, 1);
                            continue;
                        }
                        let (tx, c) = (sink.tx.clone(), Arc::clone(c));
                        full.push(tokio::spawn(async move {
                            if tx.send(msg).await.is_err() {
                                SinkCounters::add(&c.events_failed, 1);
                            }
                            c.queued.give_back(size);
                        }));
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        SinkCounters::add(&c.events_failed, 1)
                    }
                },
                DeliveryMode::Blocking | DeliveryMode::BlockingStrict => {
                    let (ack, rx) = oneshot::channel();
                    // A worker already gone fails here, as a send on its channel would.
                    match sink.outbox.as_ref().filter(|_| !sink.tx.is_closed()) {
                        // The outbox holds it against the sink's budget until its flusher has
                        // put it in the sink's queue (`budget.rs`).
                        Some(_) if !c.queued.take(size, &sink.name) => {
                            SinkCounters::add(&c.events_failed, 1);
                            if sink.mode == DeliveryMode::BlockingStrict {
                                first_err.get_or_insert(AuditError::Overloaded {
                                    sink: sink.name.clone(),
                                });
                            }
                        }
                        Some(outbox) => {
                            outbox.push_event(Arc::clone(&prepared), ack);
                            waits.push((sink, rx));
                        }
                        None => {
                            SinkCounters::add(&c.events_failed, 1);
                            if sink.mode == DeliveryMode::BlockingStrict {
                                first_err.get_or_insert(AuditError::Closed {
                                    sink: sink.name.clone(),
                                });
                            } else {
                                tracing::warn!(sink = %sink.name, "audit sink is not running; event lost");
                            }
                        }
                    }
                }
            }
        }
        for wait in full {
            // Backpressure as before: the emit returns once the event is queued.
            let _ = wait.await;
        }
        for (sink, rx) in waits {
            debug_assert!(sink.mode.waits());
            let result = rx
                .await
                .unwrap_or_else(|_| Err("the sink stopped before answering".into()));
            if let Err(message) = result {
                if sink.mode == DeliveryMode::BlockingStrict {
                    first_err.get_or_insert(AuditError::Sink {
                        sink: sink.name.clone(),
                        message,
                    });
                } else {
                    tracing::warn!(sink = %sink.name, %message, "audit event not recorded");
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// One more event to come (a request's `ResponseComplete`, held by its `Recorder` until the
    /// record is gone): shutdown waits for it until the guard is dropped.
    pub fn pending_event(&self) -> pending::PendingGuard {
        self.pending.enter()
    }

    /// Whether events must be prepared with canonical bytes (a file sink is configured).
    pub fn needs_canonical(&self) -> bool {
        self.chained
    }

    /// Emit without waiting, from anywhere (e.g. a `Drop`): spawns [`emit`](Self::emit) on the
    /// current runtime; a strict failure is only logged, since nobody is left to answer 503.
    pub fn emit_detached(self: &Arc<Self>, event: Event) {
        let me = Arc::clone(self);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            // Counted until the sinks have it: shutdown waits for it.
            let pending = self.emitting.enter();
            handle.spawn(async move {
                if let Err(err) = me.emit(event).await {
                    tracing::error!(%err, "audit event lost");
                }
                drop(pending);
            });
        } else {
            tracing::error!("audit event lost: no runtime to emit it on");
        }
    }

    /// Finish queued events, write final checkpoints, sync and stop every sink, all at once
    /// (a webhook behind a full queue must not keep a file sink from its final checkpoint);
    /// each gets at most `timeout`, its wait for room in a full queue included; a sink whose
    /// time is up is logged with what it still held. Later `emit`s fail (strict) or are
    /// counted as failed.
    pub async fn shutdown(&self, timeout: Duration) {
        self.shutdown_after_drain(timeout, true).await
    }

    /// [`shutdown`](Self::shutdown) once the listener's drain has ended: `drained` when every
    /// connection had ended within its grace. Streams still ending (their socket gone, their
    /// `ResponseComplete` on its way) are waited for, up to 5 s — after a drain that ran out of
    /// time too: the streams it cut at the end of the grace (a connection's with it; a session
    /// spliced off its connection ends itself then, `shutdown::Cutoff`) are ending now, and
    /// their events, a session's recording digest among them, must reach the sinks before they
    /// stop. Detached emits already on their way are waited for either way.
    pub async fn shutdown_after_drain(&self, timeout: Duration, drained: bool) {
        let wait = timeout.min(OPEN_STREAMS_WAIT);
        let open = self.pending.settled(wait).await;
        if open > 0 {
            tracing::warn!(
                open,
                drained,
                "requests or streams still open at shutdown: the ResponseComplete events of those the policy records are not written"
            );
        }
        self.emitting.settled(wait).await;
        let stops = self.sinks.iter().map(|sink| async move {
            let (tx, rx) = oneshot::channel();
            let finished = tokio::time::timeout(timeout, async {
                let sent = match &sink.outbox {
                    // Behind the events still gathered there.
                    Some(outbox) => {
                        outbox.push_shutdown(tx);
                        true
                    }
                    None => sink.tx.send(Msg::Shutdown(tx)).await.is_ok(),
                };
                if sent {
                    let _ = rx.await;
                }
            })
            .await;
            if finished.is_err() {
                // Messages, not events: a queued batch holds several, the outbox more.
                let queued_messages = sink.tx.max_capacity() - sink.tx.capacity();
                tracing::warn!(sink = %sink.name, queued_messages, "audit sink did not finish in time; what it still held is lost");
            }
        });
        futures_util::future::join_all(stops).await;
    }
}

#[cfg(test)]
impl Auditor {
    /// One sink named `test` writing through `backend` on its own thread (for tests of the
    /// layers above, with a backend that records, stalls or fails on command).
    pub(crate) fn with_backend<B: LineBackend>(mode: DeliveryMode, backend: B) -> Auditor {
        let counters = Arc::new(SinkCounters::default());
        let (tx, rx) = mpsc::channel(mode.queue_len());
        let durable = mode == DeliveryMode::BlockingStrict;
        if let Err(e) = spawn_thread("test", backend, rx, Arc::clone(&counters), durable) {
            panic!("test sink: {e}");
        }
        let mut sink = SinkHandle::new::<B>("test".into(), mode, tx, counters, None);
        // Written on a thread of this process, as a file sink is.
        sink.local = true;
        Auditor {
            sinks: vec![sink],
            chained: false,
            pending: Arc::default(),
            emitting: Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests;
