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
//! Each sink owns one worker (a dedicated OS thread for file and stdout, whose writes block; a
//! tokio task for the webhook) fed by a bounded channel. Workers take everything queued at once,
//! write it with one system call, sync once and then answer every waiter: concurrent requests
//! share one fsync (group commit).
//!
//! `emit` serializes the event once ([`Prepared`]); all sinks share those bytes. When a chained
//! (file) sink is present, the canonical bytes for the hash chain are also computed there
//! (`canonical.rs`), on the caller's task, so the single writer thread only hashes and writes.
//!
//! Accepts any [`Event`]; an event's own `portcullis.io/chain` annotation is discarded (only the
//! file sink sets it). Rejects: nothing at emit time except what the delivery mode says.

pub mod file;
pub mod stdout;
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

use super::{chain, event::Event};

pub use file::FileSinkConfig;
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

/// Per-sink counters: plain atomics, read by `metrics.rs` at scrape time.
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
}

impl SinkCounters {
    fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A snapshot, for tests and logs.
    pub fn snapshot(&self) -> [(&'static str, u64); 7] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("events_written", g(&self.events_written)),
            ("events_dropped", g(&self.events_dropped)),
            ("events_failed", g(&self.events_failed)),
            ("fsyncs", g(&self.fsyncs)),
            ("checkpoints", g(&self.checkpoints)),
            ("rotations", g(&self.rotations)),
            ("retries", g(&self.retries)),
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
    /// The event could not be serialized.
    #[error("audit event cannot be encoded: {0}")]
    Encode(String),
}

/// An event serialized once for every sink.
pub struct Prepared {
    /// Compact JSON of the event (Go field order, `annotations` last), no newline.
    line: Vec<u8>,
    has_annotations: bool,
    /// Canonical bytes for the hash chain (only when a chained sink exists).
    canonical: Option<Vec<u8>>,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("line", &String::from_utf8_lossy(&self.line))
            .finish()
    }
}

impl Prepared {
    /// Serialize `event`; `chained` also computes its canonical bytes.
    pub fn new(mut event: Event, chained: bool) -> Result<Prepared, AuditError> {
        event.annotations.remove(chain::CHAIN_ANNOTATION);
        let enc = |e: serde_json::Error| AuditError::Encode(e.to_string());
        let line = serde_json::to_vec(&event).map_err(enc)?;
        let canonical = if chained {
            // The fast path always applies to serde_json's own output; the Value path is the
            // safety net should it ever not.
            match super::canonical::from_compact(&line) {
                Some(c) => Some(c),
                None => Some(super::canonical::via_value(&event).map_err(enc)?),
            }
        } else {
            None
        };
        Ok(Prepared {
            line,
            has_annotations: !event.annotations.is_empty(),
            canonical,
        })
    }

    /// The event's JSON (without a chain annotation), no newline.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// Append the line with `"portcullis.io/chain": link` added to its annotations, and `\n`.
    /// Relies on `annotations` being the last field of a serialized [`Event`].
    pub(crate) fn write_chained(&self, link: &chain::Link, out: &mut Vec<u8>) {
        let (body, open) = if self.has_annotations {
            // …,"annotations":{…}}  → cut "}}" and add ,"portcullis.io/chain":"…"}}
            (&self.line[..self.line.len().saturating_sub(2)], &b","[..])
        } else {
            // …}  → cut "}" and add ,"annotations":{"portcullis.io/chain":"…"}}
            (
                &self.line[..self.line.len().saturating_sub(1)],
                &b",\"annotations\":{"[..],
            )
        };
        out.extend_from_slice(body);
        out.extend_from_slice(open);
        out.extend_from_slice(b"\"");
        out.extend_from_slice(chain::CHAIN_ANNOTATION.as_bytes());
        out.extend_from_slice(b"\":\"");
        link.write_hex(out);
        out.extend_from_slice(b"\"}}\n");
    }

    /// The canonical bytes (empty when not computed).
    pub(crate) fn canonical(&self) -> &[u8] {
        self.canonical.as_deref().unwrap_or_default()
    }
}

/// A waiter's answer: `Err` carries the reason in words.
pub(crate) type AckResult = Result<(), String>;
pub(crate) type Ack = oneshot::Sender<AckResult>;

/// What a sink worker receives.
pub(crate) enum Msg {
    Event(Arc<Prepared>, Option<Ack>),
    /// Finish everything queued before this, close cleanly, then answer.
    Shutdown(oneshot::Sender<()>),
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
    counters: Arc<SinkCounters>,
}

impl SinkHandle {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn mode(&self) -> DeliveryMode {
        self.mode
    }
    pub fn counters(&self) -> &Arc<SinkCounters> {
        &self.counters
    }
}

/// Fans events out to the configured sinks.
pub struct Auditor {
    sinks: Vec<SinkHandle>,
    chained: bool,
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
            match spec.kind {
                SinkKind::File(cfg) => {
                    chained = true;
                    file::spawn(&spec.name, cfg, rx, Arc::clone(&counters), durable)?;
                }
                SinkKind::Stdout => stdout::spawn(&spec.name, rx, Arc::clone(&counters))?,
                SinkKind::Webhook(cfg) => {
                    webhook::spawn(&spec.name, cfg, spec.mode, rx, Arc::clone(&counters))?
                }
            }
            sinks.push(SinkHandle {
                name: spec.name,
                mode: spec.mode,
                tx,
                counters,
            });
        }
        Ok(Auditor { sinks, chained })
    }

    /// The running sinks (names, modes, counters).
    pub fn sinks(&self) -> &[SinkHandle] {
        &self.sinks
    }

    /// Record one event in every sink, waiting as each sink's mode says. `Err` only when a
    /// `BlockingStrict` sink could not make the event durable.
    pub async fn emit(&self, event: Event) -> Result<(), AuditError> {
        if self.sinks.is_empty() {
            return Ok(());
        }
        let prepared = Arc::new(Prepared::new(event, self.chained)?);
        self.emit_prepared(prepared).await
    }

    /// [`emit`](Self::emit) for an already prepared event (prepare with `chained` =
    /// [`Auditor::needs_canonical`]).
    pub async fn emit_prepared(&self, prepared: Arc<Prepared>) -> Result<(), AuditError> {
        // Enqueue everywhere first, then wait: sinks work in parallel.
        let mut waits: Vec<(&SinkHandle, oneshot::Receiver<AckResult>)> = Vec::new();
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
                } => {
                    if sink
                        .tx
                        .send(Msg::Event(Arc::clone(&prepared), None))
                        .await
                        .is_err()
                    {
                        SinkCounters::add(&c.events_failed, 1);
                    }
                }
                DeliveryMode::Blocking | DeliveryMode::BlockingStrict => {
                    let (ack, rx) = oneshot::channel();
                    if sink
                        .tx
                        .send(Msg::Event(Arc::clone(&prepared), Some(ack)))
                        .await
                        .is_err()
                    {
                        SinkCounters::add(&c.events_failed, 1);
                        if sink.mode == DeliveryMode::BlockingStrict {
                            first_err.get_or_insert(AuditError::Closed {
                                sink: sink.name.clone(),
                            });
                        } else {
                            tracing::warn!(sink = %sink.name, "audit sink is not running; event lost");
                        }
                    } else {
                        waits.push((sink, rx));
                    }
                }
            }
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

    /// Whether events must be prepared with canonical bytes (a file sink is configured).
    pub fn needs_canonical(&self) -> bool {
        self.chained
    }

    /// Emit without waiting, from anywhere (e.g. a `Drop`): spawns [`emit`](Self::emit) on the
    /// current runtime; a strict failure is only logged, since nobody is left to answer 503.
    pub fn emit_detached(self: &Arc<Self>, event: Event) {
        let me = Arc::clone(self);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(err) = me.emit(event).await {
                    tracing::error!(%err, "audit event lost");
                }
            });
        } else {
            tracing::error!("audit event lost: no runtime to emit it on");
        }
    }

    /// Finish queued events, write final checkpoints, sync and stop every sink (waits at most
    /// `timeout` per sink). Later `emit`s fail (strict) or are counted as failed.
    pub async fn shutdown(&self, timeout: Duration) {
        for sink in &self.sinks {
            let (tx, rx) = oneshot::channel();
            if sink.tx.send(Msg::Shutdown(tx)).await.is_ok()
                && tokio::time::timeout(timeout, rx).await.is_err()
            {
                tracing::warn!(sink = %sink.name, "audit sink did not finish in time");
            }
        }
    }
}

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

/// At most this many events per write (bounds the buffer; a backlog takes several rounds).
const MAX_BATCH: usize = 4096;

/// Run `backend` on a dedicated thread fed by `rx`: take everything queued (up to
/// [`MAX_BATCH`]), write it in one go, then answer every waiter.
pub(crate) fn spawn_thread<B: LineBackend>(
    name: &str,
    mut backend: B,
    mut rx: mpsc::Receiver<Msg>,
    counters: Arc<SinkCounters>,
    durable: bool,
) -> anyhow::Result<()> {
    let sink = name.to_string();
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
            let mut msgs: Vec<Msg> = Vec::with_capacity(MAX_BATCH);
            let mut events: Vec<Arc<Prepared>> = Vec::with_capacity(MAX_BATCH);
            let mut acks: Vec<Option<Ack>> = Vec::with_capacity(MAX_BATCH);
            loop {
                let timer = backend.next_timer();
                let got = rt.block_on(async {
                    match timer {
                        Some(d) => tokio::time::timeout(d, rx.recv_many(&mut msgs, MAX_BATCH))
                            .await
                            .ok(),
                        None => Some(rx.recv_many(&mut msgs, MAX_BATCH).await),
                    }
                });
                match got {
                    None => {
                        backend.on_timer();
                        continue;
                    }
                    Some(0) => {
                        // Every sender is gone: the Auditor was dropped without shutdown.
                        backend.close();
                        return;
                    }
                    Some(_) => {}
                }
                let mut shutdown = None;
                for m in msgs.drain(..) {
                    match m {
                        Msg::Event(ev, ack) => {
                            events.push(ev);
                            acks.push(ack);
                        }
                        Msg::Shutdown(done) => shutdown = Some(done),
                    }
                }
                if !events.is_empty() {
                    let n = events.len();
                    let wants_sync = durable && acks.iter().any(Option::is_some);
                    let (ok, err) = match backend.write(&events, wants_sync) {
                        Ok(()) => (n, None),
                        Err((ok, e)) => (ok.min(n), Some(e)),
                    };
                    SinkCounters::add(&counters.events_written, ok);
                    if let Some(e) = &err {
                        SinkCounters::add(&counters.events_failed, n - ok);
                        tracing::error!(sink = %sink, err = %e, lost = n - ok, "audit write failed");
                    }
                    for (i, ack) in acks.drain(..).enumerate() {
                        if let Some(ack) = ack {
                            let r = match &err {
                                Some(e) if i >= ok => Err(e.clone()),
                                _ => Ok(()),
                            };
                            // The waiter may have gone (client disconnected); the event stays.
                            let _ = ack.send(r);
                        }
                    }
                    events.clear();
                }
                if let Some(done) = shutdown {
                    backend.close();
                    let _ = done.send(());
                    // Anything sent after shutdown finds the channel closed.
                    rx.close();
                    while let Ok(m) = rx.try_recv() {
                        if let Msg::Event(_, Some(ack)) = m {
                            let _ = ack.send(Err("audit is shutting down".into()));
                        }
                    }
                    return;
                }
            }
        })?;
    ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("audit sink {name}: writer thread died at start"))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{Level, Stage};

    fn event(annotations: &[(&str, &str)]) -> Event {
        Event {
            level: Level::Metadata,
            audit_id: "id".into(),
            stage: Stage::ResponseComplete,
            request_uri: "/api".into(),
            verb: "get".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Event::default()
        }
    }

    /// A backend that takes `delay` per batch and fails every batch when `fail` is set.
    struct Mock {
        delay: Duration,
        fail: bool,
    }

    impl LineBackend for Mock {
        fn write(&mut self, _: &[Arc<Prepared>], _: bool) -> Result<(), (usize, String)> {
            std::thread::sleep(self.delay);
            if self.fail {
                Err((0, "disk on fire".into()))
            } else {
                Ok(())
            }
        }
    }

    fn mock_auditor(mode: DeliveryMode, mock: Mock) -> Auditor {
        let counters = Arc::new(SinkCounters::default());
        let (tx, rx) = mpsc::channel(mode.queue_len());
        let durable = mode == DeliveryMode::BlockingStrict;
        spawn_thread("mock", mock, rx, counters.clone(), durable).unwrap();
        Auditor {
            sinks: vec![SinkHandle {
                name: "mock".into(),
                mode,
                tx,
                counters,
            }],
            chained: false,
        }
    }

    fn count(a: &Auditor, f: fn(&SinkCounters) -> &AtomicU64) -> u64 {
        f(a.sinks()[0].counters()).load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn batch_drop_counts_and_batch_block_waits() {
        let slow = || Mock {
            delay: Duration::from_millis(20),
            fail: false,
        };
        let drop_mode = DeliveryMode::Batch {
            queue: 2,
            overflow: Overflow::Drop,
        };
        let a = mock_auditor(drop_mode, slow());
        for _ in 0..50 {
            a.emit(event(&[])).await.unwrap();
        }
        a.shutdown(Duration::from_secs(5)).await;
        let (written, dropped) = (
            count(&a, |c| &c.events_written),
            count(&a, |c| &c.events_dropped),
        );
        assert!(dropped > 0, "a full queue drops");
        assert_eq!(written + dropped, 50);

        let block_mode = DeliveryMode::Batch {
            queue: 2,
            overflow: Overflow::Block,
        };
        let a = mock_auditor(block_mode, slow());
        for _ in 0..10 {
            a.emit(event(&[])).await.unwrap();
        }
        a.shutdown(Duration::from_secs(5)).await;
        assert_eq!(count(&a, |c| &c.events_written), 10);
        assert_eq!(count(&a, |c| &c.events_dropped), 0);
    }

    #[tokio::test]
    async fn failures_surface_only_in_strict_mode() {
        let failing = || Mock {
            delay: Duration::ZERO,
            fail: true,
        };
        let a = mock_auditor(DeliveryMode::BlockingStrict, failing());
        let err = a.emit(event(&[])).await.unwrap_err();
        assert_eq!(
            err,
            AuditError::Sink {
                sink: "mock".into(),
                message: "disk on fire".into()
            }
        );
        a.shutdown(Duration::from_secs(5)).await;
        assert!(
            matches!(a.emit(event(&[])).await, Err(AuditError::Closed { .. })),
            "after shutdown, strict emits fail"
        );

        let a = mock_auditor(DeliveryMode::Blocking, failing());
        a.emit(event(&[])).await.unwrap();
        assert_eq!(count(&a, |c| &c.events_failed), 1);
        a.shutdown(Duration::from_secs(5)).await;
    }

    #[test]
    fn chained_line_is_valid_json_with_the_link_and_canonical_matches() {
        for ann in [
            &[][..],
            &[("a", "b")][..],
            &[(chain::CHAIN_ANNOTATION, "forged")][..],
        ] {
            let p = Prepared::new(event(ann), true).unwrap();
            let link = chain::GENESIS.next(p.canonical());
            let mut out = Vec::new();
            p.write_chained(&link, &mut out);
            assert_eq!(out.last(), Some(&b'\n'));
            let mut v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                v["annotations"][chain::CHAIN_ANNOTATION],
                serde_json::json!(link.to_hex())
            );
            // What verify recomputes from the line equals what the writer hashed.
            chain::strip_chain(&mut v);
            let mut canon = Vec::new();
            chain::write_canonical(&v, &mut canon);
            assert_eq!(canon, p.canonical(), "{ann:?}");
        }
    }

    #[test]
    fn canonical_survives_awkward_bodies() {
        let mut e = event(&[("k", "v\"\n\u{2028}é")]);
        e.request_object = Some(serde_json::json!({
            "f": 0.1, "big": 1e300, "neg": -5, "u": u64::MAX, "z": [1.5, -0.0, "\u{0}"],
            "nested": {"b": {}, "a": []}
        }));
        let p = Prepared::new(e, true).unwrap();
        let link = chain::GENESIS.next(p.canonical());
        let mut out = Vec::new();
        p.write_chained(&link, &mut out);
        let mut v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        chain::strip_chain(&mut v);
        let mut canon = Vec::new();
        chain::write_canonical(&v, &mut canon);
        assert_eq!(canon, p.canonical());
    }
}
