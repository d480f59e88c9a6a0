//! Audit cost: (1) events per second into the file sink in `Batch` mode (serialize + canonical
//! bytes on the emitting task, hash + write on the writer thread; target ≥ 100k/s), and (2) the
//! latency `emit` adds in `BlockingStrict` mode with 64 concurrent emitters (group-committed
//! fsync; target p99 ≤ 2 ms), printed as p50 / p90 / p99 / max with the fsyncs per event.
//!
//! Run: `cargo bench --bench audit`. Files go to a temporary folder under the system temp dir
//! (the same disk as the repository on our CI machines); numbers depend on that disk's fsync.
//! Numbers go in `src/audit/sink/file.rs`'s module doc.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    hint::black_box,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use criterion::{BatchSize, Criterion, Throughput};
use portcullis::audit::{
    canonical,
    chain::{SigningKey, GENESIS},
    sink::Prepared,
    Auditor, DeliveryMode, Event, FileSinkConfig, Level, MicroTime, ObjectReference, Overflow,
    ResponseStatus, SinkKind, SinkSpec, Stage, UserInfo,
};

/// A typical Metadata-level event (~700 bytes as a line).
fn event(i: u64) -> Event {
    let now = MicroTime::now();
    Event {
        level: Level::Metadata,
        audit_id: format!("6f1c1f0e-8f6a-4f57-9d2a-{i:012}"),
        stage: Stage::ResponseComplete,
        request_uri: "/api/v1/namespaces/team-a/pods?limit=500".into(),
        verb: "list".into(),
        user: UserInfo {
            username: "alice@example.com".into(),
            uid: "8d2f".into(),
            groups: vec!["team-a".into(), "system:authenticated".into()],
            extra: BTreeMap::new(),
        },
        source_ips: vec!["10.1.2.3".into()],
        user_agent: "kubectl/v1.35.0 (linux/amd64) kubernetes/abcdef".into(),
        object_ref: Some(ObjectReference {
            resource: "pods".into(),
            namespace: "team-a".into(),
            api_version: "v1".into(),
            ..ObjectReference::default()
        }),
        response_status: Some(ResponseStatus::code(200)),
        request_received_timestamp: now,
        stage_timestamp: now,
        annotations: BTreeMap::from([
            ("authorization.k8s.io/decision".into(), "allow".into()),
            (
                "authorization.k8s.io/reason".into(),
                "grant team-a-readers".into(),
            ),
            ("portcullis.io/method".into(), "jwt".into()),
            ("portcullis.io/tenant".into(), "team-a".into()),
        ]),
        ..Event::default()
    }
}

fn file_auditor(dir: &std::path::Path, mode: DeliveryMode) -> Auditor {
    let mut cfg = FileSinkConfig::new(dir.join("audit.log"));
    cfg.signing_key = Some(Arc::new(SigningKey::generate().expect("key").2));
    cfg.max_backups = 2;
    Auditor::start(vec![SinkSpec {
        name: "file".into(),
        kind: SinkKind::File(cfg),
        mode,
    }])
    .expect("start")
}

/// Where an event's cost goes on the emitting task.
fn per_event_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit_event");
    g.bench_function("build_event", |b| b.iter(|| black_box(event(black_box(7)))));
    g.bench_function("prepare_unchained", |b| {
        b.iter_batched(
            || event(7),
            |e| black_box(Prepared::new(e, false)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("prepare_chained", |b| {
        b.iter_batched(
            || event(7),
            |e| black_box(Prepared::new(e, true)),
            BatchSize::SmallInput,
        )
    });
    let e = event(7);
    g.bench_function("serialize_line", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&e)).expect("json")))
    });
    let line = serde_json::to_vec(&e).expect("json");
    g.bench_function("canonical_from_line", |b| {
        b.iter(|| black_box(canonical::from_compact(black_box(&line)).expect("canon")))
    });
    g.bench_function("canonical_via_value", |b| {
        b.iter(|| black_box(canonical::via_value(black_box(&e)).expect("canon")))
    });
    let p = Prepared::new(event(7), true);
    g.bench_function("sha256_link", |b| {
        b.iter(|| black_box(GENESIS.next(black_box(p.line()))))
    });
    g.finish();
}

fn batch_throughput(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    let auditor = Arc::new(rt.block_on(async {
        file_auditor(
            dir.path(),
            DeliveryMode::Batch {
                queue: 65_536,
                overflow: Overflow::Block,
            },
        )
    }));
    let counters = Arc::clone(auditor.sinks()[0].counters());
    const N: u64 = 10_000;
    let mut g = c.benchmark_group("audit_file_batch");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    // One emitting task is the worst case (all serialization on one core); in the proxy every
    // request task emits its own event, so several tasks share the work.
    for tasks in [1u64, 4] {
        g.bench_function(format!("10k_events_{tasks}_emitters"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for it in 0..iters {
                        let target = counters.events_written.load(Ordering::Relaxed) + N;
                        let mut handles = Vec::new();
                        for t in 0..tasks {
                            let a = Arc::clone(&auditor);
                            handles.push(tokio::spawn(async move {
                                for i in 0..N / tasks {
                                    let id = (it * N) + t * (N / tasks) + i;
                                    a.emit(black_box(event(id))).await.expect("batch emit");
                                }
                            }));
                        }
                        for h in handles {
                            h.await.expect("emitter");
                        }
                        // Until the writer thread has written them all.
                        while counters.events_written.load(Ordering::Relaxed) < target {
                            tokio::time::sleep(Duration::from_micros(100)).await;
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
    rt.block_on(auditor.shutdown(Duration::from_secs(10)));
    let dropped = counters.events_dropped.load(Ordering::Relaxed);
    println!(
        "batch: {} events written, {dropped} dropped, {} fsyncs, {} checkpoints, {} rotations",
        counters.events_written.load(Ordering::Relaxed),
        counters.fsyncs.load(Ordering::Relaxed),
        counters.checkpoints.load(Ordering::Relaxed),
        counters.rotations.load(Ordering::Relaxed),
    );
}

/// Per-emit latency with `emitters` concurrent emitters, each emitting `per_task` events.
fn strict_latency(rt: &tokio::runtime::Runtime, mode: DeliveryMode, label: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let auditor = Arc::new(rt.block_on(async { file_auditor(dir.path(), mode) }));
    let emitters = 64u64;
    let per_task = 300u64;
    let (mut lat, elapsed) = rt.block_on(async {
        // Warm up (file open, page cache).
        for i in 0..200 {
            auditor.emit(event(i)).await.expect("warm-up");
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..emitters {
            let a = Arc::clone(&auditor);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task as usize);
                for i in 0..per_task {
                    let e = event(1_000_000 + t * per_task + i);
                    let t0 = Instant::now();
                    a.emit(e).await.expect("strict emit");
                    lat.push(t0.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        (all, start.elapsed())
    });
    let c = auditor.sinks()[0].counters();
    let events = emitters * per_task;
    let fsyncs = c.fsyncs.load(Ordering::Relaxed);
    rt.block_on(auditor.shutdown(Duration::from_secs(10)));
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{label}: {emitters} concurrent emitters, {events} events in {:.2?} ({:.0} events/s): \
         p50 {:.3?}  p90 {:.3?}  p99 {:.3?}  max {:.3?}; {fsyncs} fsyncs ({:.1} events per fsync)",
        elapsed,
        events as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
        events as f64 / fsyncs.max(1) as f64,
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut c = Criterion::default().configure_from_args();
    per_event_cost(&mut c);
    batch_throughput(&mut c, &rt);
    c.final_summary();
    strict_latency(&rt, DeliveryMode::BlockingStrict, "blocking-strict");
    strict_latency(&rt, DeliveryMode::Blocking, "blocking (no fsync)");
}
