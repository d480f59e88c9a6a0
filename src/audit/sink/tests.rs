//! Delivery modes, counters, and the chained line / canonical bytes of a prepared event.

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
    Auditor {
        sinks: vec![mock_sink("mock", mode, mock, budget::MAX_QUEUED_BYTES)],
        chained: false,
        pending: Arc::default(),
        emitting: Arc::default(),
    }
}

/// A sink named `name` writing through `mock` on its own thread, with a budget of `max` bytes.
fn mock_sink(name: &str, mode: DeliveryMode, mock: Mock, max: usize) -> SinkHandle {
    let counters = Arc::new(SinkCounters {
        queued: budget::Queued::new(max),
        ..SinkCounters::default()
    });
    let (tx, rx) = mpsc::channel(mode.queue_len());
    let durable = mode == DeliveryMode::BlockingStrict;
    spawn_thread(name, mock, rx, counters.clone(), durable).unwrap();
    let mut sink = SinkHandle::new::<Mock>(name.into(), mode, tx, counters, None);
    sink.local = true;
    sink
}

/// A backend that records each write's events (their audit IDs), in order.
struct Recording(Arc<std::sync::Mutex<Vec<Vec<String>>>>);

impl LineBackend for Recording {
    fn write(&mut self, events: &[Arc<Prepared>], _: bool) -> Result<(), (usize, String)> {
        let ids = events
            .iter()
            .map(|p| {
                let v: serde_json::Value = serde_json::from_slice(p.line()).unwrap();
                v["auditID"].as_str().unwrap().to_owned()
            })
            .collect();
        self.0.lock().unwrap().push(ids);
        Ok(())
    }
}

/// Each write's audit IDs, in order ([`Recording`]).
type Writes = Arc<std::sync::Mutex<Vec<Vec<String>>>>;

/// An auditor in `mode` whose one sink records each write's audit IDs, and those writes.
fn recording_auditor(mode: DeliveryMode) -> (Arc<Auditor>, Writes) {
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = Arc::new(Auditor::with_backend(mode, Recording(writes.clone())));
    (a, writes)
}

fn numbered(i: usize) -> Event {
    Event {
        audit_id: format!("e{i}"),
        ..event(&[])
    }
}

#[tokio::test]
async fn waiting_emits_of_one_turn_share_a_write_and_keep_their_order() {
    for mode in [DeliveryMode::Blocking, DeliveryMode::BlockingStrict] {
        let (a, writes) = recording_auditor(mode);
        // 200 requests emitting in the same turn, each waiting for its own event.
        let emits = (0..200).map(|i| {
            let a = a.clone();
            async move { a.emit(numbered(i)).await }
        });
        for r in futures_util::future::join_all(emits).await {
            r.unwrap();
        }
        // Then one more, alone, and a shutdown behind an event still gathering.
        a.emit(numbered(200)).await.unwrap();
        let last = {
            let a = a.clone();
            tokio::spawn(async move { a.emit(numbered(201)).await })
        };
        tokio::task::yield_now().await;
        a.shutdown(Duration::from_secs(5)).await;
        let written: Vec<String> = writes.lock().unwrap().concat();
        let expected: Vec<String> = (0..202).map(|i| format!("e{i}")).collect();
        assert_eq!(written, expected, "{mode:?}: every event, in emit order");
        let batches = writes.lock().unwrap().len();
        assert!(batches <= 5, "{mode:?}: 202 events took {batches} writes");
        last.await.unwrap().unwrap();
        assert_eq!(count(&a, |c| &c.events_written), 202);
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

/// An emit dropped after its first poll (its request's client went away) still gets its event
/// written, in every waiting mode and when a `block` batch queue is full.
#[tokio::test]
async fn an_emit_dropped_while_waiting_loses_no_event() {
    use std::future::Future;
    let slow = || Mock {
        delay: Duration::from_millis(50),
        fail: false,
    };
    let full_block = DeliveryMode::Batch {
        queue: 1,
        overflow: Overflow::Block,
    };
    for mode in [
        DeliveryMode::Blocking,
        DeliveryMode::BlockingStrict,
        full_block,
    ] {
        let a = mock_auditor(mode, slow());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..5 {
            let mut emit = Box::pin(a.emit(event(&[])));
            // One poll, then the request is gone.
            let _ = emit.as_mut().poll(&mut cx);
        }
        // Written by the sink (before a shutdown, which events still waiting for room in a
        // full queue would not get ahead of).
        for _ in 0..250 {
            if count(&a, |c| &c.events_written) == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(count(&a, |c| &c.events_written), 5, "{mode:?}");
        a.shutdown(Duration::from_secs(5)).await;
    }
}

/// Emits dropped while one of two sinks hangs (a webhook receiver that stopped answering; each
/// request's client went away at once) hold their events until that sink takes them: at most
/// its budget's bytes. Past it an event goes to no place of that sink — counted as its mode
/// says, a strict emit failing at once and strict requests held back — while the other sink
/// gets every event. Without the budget all 100 were held; with one budget shared by the
/// sinks, the healthy one lost events too.
#[tokio::test]
async fn a_hung_sink_holds_no_more_than_its_budget_and_refuses_only_its_own_events() {
    use std::future::Future;
    let size = Prepared::of(&event(&[]), false).footprint();
    let block = DeliveryMode::Batch {
        queue: 1,
        overflow: Overflow::Block,
    };
    for mode in [DeliveryMode::Blocking, DeliveryMode::BlockingStrict, block] {
        let hung = Mock {
            delay: Duration::from_secs(3600),
            fail: false,
        };
        let fine = Mock {
            delay: Duration::ZERO,
            fail: false,
        };
        let a = Auditor {
            sinks: vec![
                mock_sink("hung", mode, hung, 10 * size),
                mock_sink(
                    "fine",
                    DeliveryMode::Blocking,
                    fine,
                    budget::MAX_QUEUED_BYTES,
                ),
            ],
            chained: false,
            pending: Arc::default(),
            emitting: Arc::default(),
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..100 {
            let mut emit = Box::pin(a.emit(event(&[])));
            let _ = emit.as_mut().poll(&mut cx);
        }
        let hung = a.sinks()[0].counters();
        assert!(
            hung.queued.held() <= 10 * size,
            "{mode:?}: {}",
            hung.queued.held()
        );
        let refused = match mode {
            DeliveryMode::Batch { .. } => hung.events_dropped.load(Ordering::Relaxed),
            _ => hung.events_failed.load(Ordering::Relaxed),
        };
        match mode {
            // The queue of one may take one event without the budget (its worker may have
            // taken another meanwhile): the rest wait against it.
            DeliveryMode::Batch { .. } => assert!((88..=90).contains(&refused), "{refused}"),
            _ => {
                assert_eq!(hung.queued.held(), 10 * size, "{mode:?}");
                assert_eq!(refused, 90, "{mode:?}");
            }
        }
        // The other sink writes all 100.
        let fine = a.sinks()[1].counters();
        for _ in 0..250 {
            if fine.events_written.load(Ordering::Relaxed) == 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fine.events_written.load(Ordering::Relaxed), 100, "{mode:?}");
        if mode == DeliveryMode::BlockingStrict {
            // The hung worker took the first turn and writes it for good; the next turns wait
            // in its queue, their bytes still held: once they fill the budget, strict
            // requests are held back.
            for _ in 0..20 {
                let mut emit = Box::pin(a.emit(event(&[])));
                let _ = emit.as_mut().poll(&mut cx);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(hung.queued.held(), 10 * size);
            let why = a.strict_failure().expect("held back while over budget");
            assert!(why.contains("audit sink hung is not keeping up"), "{why}");
            let next = tokio::time::timeout(Duration::from_secs(5), a.emit(event(&[])))
                .await
                .expect("an emit over the budget waits for nothing");
            assert_eq!(
                next,
                Err(AuditError::Overloaded {
                    sink: "hung".into()
                })
            );
        } else {
            assert_eq!(a.strict_failure(), None, "{mode:?}");
        }
    }
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
        let p = Prepared::new(event(ann), true);
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
    let p = Prepared::new(e, true);
    let link = chain::GENESIS.next(p.canonical());
    let mut out = Vec::new();
    p.write_chained(&link, &mut out);
    let mut v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    chain::strip_chain(&mut v);
    let mut canon = Vec::new();
    chain::write_canonical(&v, &mut canon);
    assert_eq!(canon, p.canonical());
}

/// A `Blocking` sink over `shared`, written inline by its outbox's flusher, with its thread.
fn inline_auditor<B: LineBackend>(name: &str, shared: Shared<B>) -> (Auditor, Arc<SinkCounters>) {
    let counters = Arc::new(SinkCounters::default());
    let mode = DeliveryMode::Blocking;
    let (tx, rx) = mpsc::channel(mode.queue_len());
    spawn_thread(name, shared.clone(), rx, counters.clone(), false).unwrap();
    let sink = SinkHandle::new(name.into(), mode, tx, counters.clone(), Some(shared));
    let a = Auditor {
        sinks: vec![sink],
        chained: false,
        pending: Arc::default(),
        emitting: Arc::default(),
    };
    (a, counters)
}

/// [`Recording`]; after its first write it asks for a nudge, and its nudged work (a stand-in
/// for a checkpoint's `fdatasync`) takes `stall` while the thread holds the backend.
struct SlowTick {
    rec: Recording,
    stall: Duration,
    asked: bool,
}

impl LineBackend for SlowTick {
    fn write(&mut self, events: &[Arc<Prepared>], durable: bool) -> Result<(), (usize, String)> {
        self.rec.write(events, durable)
    }
    fn take_tick(&mut self) -> bool {
        !std::mem::replace(&mut self.asked, true)
    }
    fn on_tick(&mut self) {
        std::thread::sleep(self.stall);
    }
}

/// A blocking file-like sink is written by the outbox's flusher itself; while its thread holds
/// the backend (a checkpoint), turns go to the thread instead: the runtime never waits on the
/// lock, and the events keep their order.
#[tokio::test]
async fn inline_writes_hand_over_while_the_thread_holds_the_backend() {
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = Shared::new(SlowTick {
        rec: Recording(writes.clone()),
        stall: Duration::from_millis(400),
        asked: false,
    });
    let (a, counters) = inline_auditor("slow", shared);
    assert!(a.sinks()[0].writes_inline());

    // Written inline; the nudge sends the thread into its long tick, holding the backend.
    a.emit(numbered(0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // This single-threaded runtime keeps running while e1 and e2 wait for the thread.
    let ticks = Arc::new(AtomicU64::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            t.fetch_add(1, Ordering::Relaxed);
        }
    });
    let (rb, rc) = tokio::join!(a.emit(numbered(1)), a.emit(numbered(2)));
    rb.unwrap();
    rc.unwrap();
    assert!(
        ticks.load(Ordering::Relaxed) >= 5,
        "the runtime ran while the thread held the backend"
    );
    // The thread wrote e1 and e2: inline again, after them.
    a.emit(numbered(3)).await.unwrap();
    ticker.abort();
    let order: Vec<String> = writes.lock().unwrap().iter().flatten().cloned().collect();
    assert_eq!(order, ["e0", "e1", "e2", "e3"]);
    assert_eq!(counters.events_written.load(Ordering::Relaxed), 4);
    a.shutdown(Duration::from_secs(5)).await;
}

/// [`Recording`], noting which thread wrote each batch; a batch holding `syncs` (its audit ID)
/// would sync, like a file's rotation.
struct Rotating {
    rec: Recording,
    threads: Arc<std::sync::Mutex<Vec<String>>>,
    syncs: String,
}

impl LineBackend for Rotating {
    fn write(&mut self, events: &[Arc<Prepared>], durable: bool) -> Result<(), (usize, String)> {
        let name = std::thread::current().name().unwrap_or_default().to_owned();
        self.threads.lock().unwrap().push(name);
        self.rec.write(events, durable)
    }
    fn would_sync(&self, events: &[Arc<Prepared>]) -> bool {
        events
            .iter()
            .any(|p| String::from_utf8_lossy(p.line()).contains(&self.syncs))
    }
}

/// A turn whose write would sync is written by the sink's thread, never on the runtime; the
/// turns after it are inline again, in order.
#[tokio::test]
async fn a_turn_that_would_sync_is_left_to_the_thread() {
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = Shared::new(Rotating {
        rec: Recording(writes.clone()),
        threads: threads.clone(),
        syncs: "\"e1\"".into(),
    });
    let (a, counters) = inline_auditor("rot", shared);
    for i in 0..3 {
        a.emit(numbered(i)).await.unwrap();
    }
    let order: Vec<String> = writes.lock().unwrap().iter().flatten().cloned().collect();
    assert_eq!(order, ["e0", "e1", "e2"]);
    let here = std::thread::current().name().unwrap_or_default().to_owned();
    assert_eq!(
        *threads.lock().unwrap(),
        [here.clone(), "audit-rot".into(), here]
    );
    assert_eq!(counters.events_written.load(Ordering::Relaxed), 3);
    a.shutdown(Duration::from_secs(5)).await;
}

/// Shutdown of a sink whose queue is full behind a slow backend waits at most its timeout,
/// the wait for room in the queue included; sinks are stopped together, so another one is
/// not held up behind it.
#[tokio::test]
async fn shutdown_of_a_stuck_batch_sink_is_bounded() {
    let mode = DeliveryMode::Batch {
        queue: 4,
        overflow: Overflow::Block,
    };
    let slow = Mock {
        delay: Duration::from_secs(5),
        fail: false,
    };
    let a = Arc::new(mock_auditor(mode, slow));
    // Fill the queue (the backend holds one batch, the queue the rest).
    for _ in 0..12 {
        let a = a.clone();
        tokio::spawn(async move {
            let _ = a.emit(event(&[])).await;
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.shutdown(Duration::from_millis(200)).await;
    // The backend is still in its first 5 s batch: the timeout, not the queue, ended the
    // wait (nothing was written yet).
    assert_eq!(
        a.sinks()[0]
            .counters()
            .events_written
            .load(Ordering::Relaxed),
        0
    );
}

/// Shutdown waits (bounded) for an open stream's `ResponseComplete`: a stream ending while the
/// proxy drains — its guard dropped after the listener let go — still has its event written,
/// instead of an emit refused by sinks already stopped.
#[tokio::test]
async fn shutdown_waits_for_an_open_stream_s_event() {
    let (a, writes) = recording_auditor(DeliveryMode::BlockingStrict);
    // A watch or exec session still open when shutdown begins.
    let open = a.pending_event();
    let stopping = {
        let a = a.clone();
        tokio::spawn(async move { a.shutdown(Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown did not wait for the stream"
    );
    // The stream ends: its event goes out detached, then the stream's guard goes.
    a.emit_detached(numbered(1));
    drop(open);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown finished once the stream ended")
        .unwrap();
    assert_eq!(writes.lock().unwrap().concat(), ["e1"]);
    assert_eq!(count(&a, |c| &c.events_written), 1);
}

/// After a drain that ran out of time the streams it cut (a connection's at its grace, a
/// session ending itself at `shutdown::Cutoff`) are ending: their events are waited for as
/// after a full drain — before, they were not, and a session cut at the end of the grace lost
/// its `ResponseComplete` — and a stream that never ends is given up after the bounded wait,
/// so the sinks still get their time for their final checkpoints. A detached emit already on
/// its way is waited for either way.
#[tokio::test]
async fn a_timed_out_drain_waits_for_the_streams_it_cut_within_bounds() {
    let (a, writes) = recording_auditor(DeliveryMode::BlockingStrict);
    let cut = a.pending_event();
    a.emit_detached(numbered(7));
    {
        let a = a.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            a.emit_detached(numbered(8));
            drop(cut);
        });
    }
    tokio::time::timeout(
        Duration::from_secs(15),
        a.shutdown_after_drain(Duration::from_secs(10), false),
    )
    .await
    .expect("shutdown finished once the cut stream ended");
    assert_eq!(writes.lock().unwrap().concat(), ["e7", "e8"]);

    let (a, writes) = recording_auditor(DeliveryMode::BlockingStrict);
    let _never = a.pending_event();
    a.emit_detached(numbered(9));
    tokio::time::timeout(
        Duration::from_secs(30),
        a.shutdown_after_drain(Duration::from_secs(10), false),
    )
    .await
    .expect("a stream that never ends is given up");
    assert_eq!(writes.lock().unwrap().concat(), ["e9"]);
}

/// The readiness lines of `a` with the default `admin.ready_window`.
fn not_ready(a: &Auditor) -> Vec<String> {
    a.not_ready(Duration::from_secs(30))
}

/// A real file sink in `mode` whose file is `/dev/full` (every write: ENOSPC) behind a link in
/// a temporary folder; removing the link lets the next write start a real file there.
fn full_disk_sink(mode: DeliveryMode) -> (Auditor, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let a = Auditor::start(vec![SinkSpec {
        name: "file".into(),
        kind: SinkKind::File(FileSinkConfig::new(&path)),
        mode,
    }])
    .unwrap();
    (a, dir, path)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_strict_file_sink_that_cannot_write_fails_readiness_until_a_write_succeeds() {
    let (a, _dir, path) = full_disk_sink(DeliveryMode::BlockingStrict);
    assert_eq!(not_ready(&a), Vec::<String>::new(), "nothing written yet");
    assert!(a.sinks()[0].counters().health.healthy());
    let err = a.emit(event(&[])).await.unwrap_err();
    assert!(matches!(err, AuditError::Sink { .. }), "{err}");
    let lines = not_ready(&a);
    assert_eq!(
        lines,
        [format!(
            "audit sink file failing: write {}: No space left on device (os error 28)",
            path.display()
        )]
    );
    assert!(!a.sinks()[0].counters().health.healthy());
    // The disk has room again (here: the link gone, a real file is started in its place).
    std::fs::remove_file(&path).unwrap();
    a.emit(event(&[])).await.unwrap();
    assert_eq!(
        not_ready(&a),
        Vec::<String>::new(),
        "ready once a write succeeds"
    );
    assert!(a.sinks()[0].counters().health.healthy());
    a.shutdown(Duration::from_secs(5)).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failing_sink_that_refuses_nothing_leaves_readiness_alone() {
    for mode in [
        DeliveryMode::Blocking,
        DeliveryMode::Batch {
            queue: 10,
            overflow: Overflow::Block,
        },
    ] {
        let (a, _dir, _path) = full_disk_sink(mode);
        a.emit(event(&[])).await.unwrap();
        // The batch sink's thread writes after the emit returned.
        for _ in 0..200 {
            if count(&a, |c| &c.events_failed) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(count(&a, |c| &c.events_failed), 1, "{mode:?}");
        assert!(!a.sinks()[0].counters().health.healthy(), "{mode:?}");
        assert_eq!(
            not_ready(&a),
            Vec::<String>::new(),
            "{mode:?}: the replica keeps serving"
        );
        a.shutdown(Duration::from_secs(5)).await;
    }
}

/// A backend whose writes panic: its thread dies.
struct Panics;

impl LineBackend for Panics {
    fn write(&mut self, _: &[Arc<Prepared>], _: bool) -> Result<(), (usize, String)> {
        panic!("test: the writer thread dies");
    }
}

#[tokio::test]
async fn a_strict_sink_whose_writer_died_fails_readiness() {
    let a = Auditor::with_backend(DeliveryMode::BlockingStrict, Panics);
    assert!(a.emit(event(&[])).await.is_err());
    assert_eq!(not_ready(&a), ["audit sink test is not running"]);
}

/// A backend whose writes hang until the test lets them go (a hung volume).
struct Hangs(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl LineBackend for Hangs {
    fn write(&mut self, _: &[Arc<Prepared>], _: bool) -> Result<(), (usize, String)> {
        let _ = self.0.lock().unwrap().recv();
        Ok(())
    }
}

/// A strict write that does not return (a hung NFS volume: no error, every audited request
/// waits) fails readiness once it has run for `STUCK_WRITE`, and stops failing it when it
/// returns.
#[tokio::test]
async fn a_strict_sink_whose_write_hangs_fails_readiness() {
    let (go, wait) = std::sync::mpsc::channel();
    let a = Arc::new(Auditor::with_backend(
        DeliveryMode::BlockingStrict,
        Hangs(std::sync::Mutex::new(wait)),
    ));
    let emitting = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.emit(event(&[])).await }
    });
    let window = Duration::from_secs(30);
    let later = || std::time::Instant::now() + super::health::STUCK_WRITE + Duration::from_secs(1);
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = a.not_ready_at(window, later());
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("audit sink test stuck: a write has not returned for "),
        "{lines:?}"
    );
    assert_eq!(
        a.not_ready(window),
        Vec::<String>::new(),
        "not yet stuck now"
    );
    go.send(()).unwrap();
    assert!(emitting.await.unwrap().is_ok());
    assert_eq!(a.not_ready_at(window, later()), Vec::<String>::new());
}

/// An event whose line would be over the limit `audit verify` reads is written without its
/// objects and annotated `audit.k8s.io/truncated`, so the log stays verifiable past it; one
/// within the limit, or one with no object to leave out, is written whole.
#[test]
fn an_event_too_long_for_one_line_is_written_without_its_objects() {
    let mut big = event(&[("a", "b")]);
    big.request_object = Some(serde_json::json!({"data": {"blob": "\u{1}".repeat(1000)}}));
    big.response_object = Some(serde_json::json!({"kind": "ConfigMap"}));
    let whole = Prepared::within(&big, true, 100_000);
    assert!(whole.line().len() > 6000, "escaped: six bytes per \\u0001");
    let back: Event = serde_json::from_slice(whole.line()).unwrap();
    assert!(back.request_object.is_some() && back.response_object.is_some());

    let cut = Prepared::within(&big, true, 6000);
    assert!(cut.line().len() < 6000);
    let back: Event = serde_json::from_slice(cut.line()).unwrap();
    assert_eq!(back.request_object, None);
    assert_eq!(back.response_object, None);
    assert_eq!(back.annotations["audit.k8s.io/truncated"], "true");
    assert_eq!(back.annotations["a"], "b");
    assert_eq!(back.audit_id, big.audit_id);
    assert!(
        !cut.canonical().is_empty(),
        "chained: its canonical bytes too"
    );
    // The limit the sinks use stays well under what verify reads.
    const { assert!(MAX_EVENT_LINE * 2 <= 64 << 20) };
}
