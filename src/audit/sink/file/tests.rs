//! Backup names, reverse line reading, group commit and resume, rotation and retention, a torn
//! tail, an unwritable path, and recovery from a failed write.

use super::*;
use crate::audit::{
    event::{Event, Level, Stage},
    sink::{Auditor, DeliveryMode, Overflow, SinkKind, SinkSpec},
    verify,
};
use std::sync::atomic::Ordering;

fn event(i: usize) -> Event {
    Event {
        level: Level::Metadata,
        audit_id: format!("id-{i}"),
        stage: Stage::ResponseComplete,
        request_uri: format!("/api/v1/namespaces/ns/pods/p{i}"),
        verb: "get".into(),
        ..Event::default()
    }
}

fn auditor(cfg: FileSinkConfig, mode: DeliveryMode) -> Auditor {
    Auditor::start(vec![SinkSpec {
        name: "file".into(),
        kind: SinkKind::File(cfg),
        mode,
    }])
    .unwrap()
}

fn key() -> Arc<SigningKey> {
    Arc::new(SigningKey::generate().unwrap().2)
}

/// A file sink at `path` whose checkpoints `key` signs.
fn signed(path: &Path, key: &Arc<SigningKey>) -> FileSinkConfig {
    let mut cfg = FileSinkConfig::new(path);
    cfg.signing_key = Some(key.clone());
    cfg
}

fn verify_files(files: &[PathBuf], key: &SigningKey) -> verify::Report {
    verify::verify_files(files, &[key.verifying_key()]).unwrap()
}

/// A crash mid-write: `path` ends in a torn line.
fn tear(path: &Path) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(br#"{"kind":"Eve"#)
        .unwrap();
}

/// The backups of `path`, oldest first.
fn backup_paths(path: &Path) -> Vec<PathBuf> {
    list_backups(path)
        .unwrap()
        .into_iter()
        .map(|b| b.path)
        .collect()
}

/// 30 events written with a key to `dir/audit.log` in 4 KiB files (backups kept): the path
/// and the key.
async fn signed_rotated_history(dir: &Path) -> (PathBuf, Arc<SigningKey>) {
    let path = dir.join("audit.log");
    let key = key();
    let mut cfg = signed(&path, &key);
    cfg.max_size_bytes = 4096;
    cfg.max_backups = 0;
    write_events(cfg, 0..30).await;
    (path, key)
}

/// A blocking file sink with `cfg` that writes `events` and stops cleanly.
async fn write_events(cfg: FileSinkConfig, events: std::ops::Range<usize>) {
    let a = auditor(cfg, DeliveryMode::Blocking);
    for i in events {
        a.emit(event(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn names_and_stamps() {
    assert_eq!(
        split_name(Path::new("/x/audit.log")),
        ("audit".into(), ".log".into())
    );
    assert_eq!(split_name(Path::new("audit")), ("audit".into(), "".into()));
    assert_eq!(
        split_name(Path::new(".hidden")),
        (".hidden".into(), "".into())
    );
    let t: MicroTime = "2026-11-27T07:25:09.123456Z".parse().unwrap();
    assert_eq!(backup_stamp(t), "2026-11-27T07-25-09.123");
    assert_eq!(
        parse_backup_stamp("2026-11-27T07-25-09.123").map(|t| t.to_string()),
        Some("2026-11-27T07:25:09.123000Z".into())
    );
    assert_eq!(parse_backup_stamp("2026-11-27T07:25:09.123"), None);
}

#[test]
fn reverse_lines_segments() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    for (content, want) in [
        ("", vec![""]),
        ("a\n", vec!["", "a"]),
        ("a\nbb\ntorn", vec!["torn", "bb", "a"]),
        ("\n\n", vec!["", "", ""]),
    ] {
        std::fs::write(&p, content).unwrap();
        let mut r = ReverseLines::open(&p).unwrap();
        let mut got = Vec::new();
        while let Some(s) = r.prev().unwrap() {
            got.push(String::from_utf8(s).unwrap());
        }
        assert_eq!(got, want, "{content:?}");
    }
    // Lines longer than a chunk.
    let long = "x".repeat(200_000);
    std::fs::write(&p, format!("{long}\nshort\n{long}\n")).unwrap();
    let mut r = ReverseLines::open(&p).unwrap();
    let lens: Vec<usize> = std::iter::from_fn(|| r.prev().unwrap())
        .map(|s| s.len())
        .collect();
    assert_eq!(lens, [0, 200_000, 5, 200_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_group_commit_verifies_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = key();
    let mut cfg = signed(&path, &key);
    cfg.checkpoint_every_events = 50;
    let a = Arc::new(auditor(cfg.clone(), DeliveryMode::BlockingStrict));
    let mut tasks = Vec::new();
    for t in 0..64 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                a.emit(event(t * 100 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let c = a.sinks()[0].counters().clone();
    assert_eq!(c.events_written.load(Ordering::Relaxed), 640);
    let fsyncs = c.fsyncs.load(Ordering::Relaxed);
    assert!(fsyncs < 640, "group commit: {fsyncs} fsyncs for 640 events");
    a.shutdown(Duration::from_secs(5)).await;
    let r = verify_files(std::slice::from_ref(&path), &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.events, 640);
    assert_eq!(r.unsigned_tail, 0, "shutdown signs the tail");

    // A new process resumes the chain.
    let a = auditor(cfg, DeliveryMode::Blocking);
    for i in 0..5 {
        a.emit(event(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    let r = verify_files(&[path], &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.events, 645);
}

/// Polls until every event in `path` is signed (10 s at most); the report.
async fn signed_soon(path: &Path, key: &SigningKey) -> verify::Report {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = verify_files(&[path.to_path_buf()], key);
        assert!(r.ok(), "{r:?}");
        if r.unsigned_tail == 0 {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tail never signed: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_mode_writes_inline_and_leaves_checkpoints_to_the_thread() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();

    // By count only: the inline writer nudges the thread, which signs.
    let path = dir.path().join("count.log");
    let mut cfg = signed(&path, &key);
    cfg.checkpoint_every_events = 10;
    cfg.checkpoint_interval = Duration::ZERO;
    let a = auditor(cfg, DeliveryMode::Blocking);
    assert!(
        a.sinks()[0].writes_inline(),
        "a blocking file sink is written inline"
    );
    for i in 0..10 {
        a.emit(event(i)).await.unwrap();
        // Written (not synced) before emit returns, as `blocking` promises.
        assert_eq!(lines(&path), i + 1);
    }
    assert_eq!(signed_soon(&path, &key).await.events, 10);
    for i in 10..15 {
        a.emit(event(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = verify_files(std::slice::from_ref(&path), &key);
    assert_eq!((r.events, r.unsigned_tail), (15, 5), "nothing signs early");
    let c = a.sinks()[0].counters().clone();
    assert_eq!(c.events_written.load(Ordering::Relaxed), 15);
    a.shutdown(Duration::from_secs(5)).await;
    let r = verify_files(std::slice::from_ref(&path), &key);
    assert_eq!(
        (r.events, r.unsigned_tail),
        (15, 0),
        "shutdown signs the tail"
    );
    // After the shutdown an inline write is refused and counted, never appended.
    a.emit(event(99)).await.unwrap();
    assert_eq!(c.events_failed.load(Ordering::Relaxed), 1);
    assert_eq!(lines(&path), 15);

    // By time only: the first unsigned event arms the thread's timer.
    let path = dir.path().join("time.log");
    let mut cfg = signed(&path, &key);
    cfg.checkpoint_every_events = 0;
    cfg.checkpoint_interval = Duration::from_millis(200);
    let a = auditor(cfg, DeliveryMode::Blocking);
    for i in 0..3 {
        a.emit(event(i)).await.unwrap();
    }
    assert_eq!(signed_soon(&path, &key).await.events, 3);
    a.shutdown(Duration::from_secs(5)).await;
}

/// An Auditor dropped without `shutdown` still closes its sinks: the flusher ends, the worker
/// sees its last sender go and signs the tail. (The flusher used to decide by counting the
/// outbox's owners, which raced the handle's drop; this runs the drop many times.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_blocking_auditor_signs_its_tail() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    for round in 0..20 {
        let path = dir.path().join(format!("dropped-{round}.log"));
        let mut cfg = signed(&path, &key);
        cfg.checkpoint_every_events = 0;
        cfg.checkpoint_interval = Duration::ZERO;
        let a = auditor(cfg, DeliveryMode::Blocking);
        for i in 0..3 {
            a.emit(event(i)).await.unwrap();
        }
        drop(a);
        assert_eq!(signed_soon(&path, &key).await.events, 3, "round {round}");
    }
}

/// Without a signing key there is nothing to checkpoint, so `blocking` never syncs: the count
/// of unsigned events used to reach `checkpoint_every_events` and then ask the thread for a
/// checkpoint after every write, which it answered with an `fdatasync` each time (and held the
/// lock through it, sending later turns to the thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_without_a_signing_key_never_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unsigned.log");
    let mut cfg = FileSinkConfig::new(&path);
    cfg.checkpoint_every_events = 10;
    let a = auditor(cfg, DeliveryMode::Blocking);
    for i in 0..50 {
        a.emit(event(i)).await.unwrap();
        // Room for a nudged thread to act before the next write.
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = a.sinks()[0].counters().clone();
    assert_eq!(c.events_written.load(Ordering::Relaxed), 50);
    assert_eq!(
        c.fsyncs.load(Ordering::Relaxed),
        0,
        "blocking, unsigned: no fdatasync"
    );
    assert_eq!(c.checkpoints.load(Ordering::Relaxed), 0);
    a.shutdown(Duration::from_secs(5)).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_chain_and_applies_retention() {
    // Batch: the thread writes everything. Blocking: the flusher writes inline and leaves the
    // turns that rotate to the thread.
    let modes = [
        DeliveryMode::Batch {
            queue: 1000,
            overflow: Overflow::Block,
        },
        DeliveryMode::Blocking,
    ];
    for mode in modes {
        rotation_in(mode).await;
    }
}

async fn rotation_in(mode: DeliveryMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = key();
    let mut cfg = signed(&path, &key);
    cfg.max_size_bytes = 4096;
    cfg.max_backups = 3;
    let a = auditor(cfg.clone(), mode);
    // (60 events: the files hold only events now, no checkpoint lines.)
    for i in 0..60 {
        a.emit(event(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    let c = a.sinks()[0].counters();
    assert!(c.rotations.load(Ordering::Relaxed) >= 4);
    let backups = list_backups(&path).unwrap();
    assert_eq!(backups.len(), 3, "max_backups");
    for b in &backups {
        assert!(std::fs::metadata(&b.path).unwrap().len() <= 4096);
    }
    // Each file has its sidecar, rotated and retained with it; no line of a log is anything
    // but an event.
    let sidecars: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".checkpoints"))
        .collect();
    assert_eq!(sidecars.len(), backups.len() + 1, "{sidecars:?}");
    for b in &backups {
        assert!(sidecar_path(&b.path).exists());
        let text = std::fs::read_to_string(&b.path).unwrap();
        assert!(text.lines().all(|l| l.contains("\"kind\":\"Event\"")));
    }
    // The retained history verifies on its own: the oldest kept file's sidecar starts with a
    // signed checkpoint of the state it continues from.
    let mut files: Vec<PathBuf> = backups.iter().map(|b| b.path.clone()).collect();
    files.push(path.clone());
    let r = verify_files(&files, &key);
    assert!(r.ok(), "{r:?}");
    // Skipping a middle file breaks the chain.
    let gap = [files[0].clone(), files[2].clone()];
    assert!(!verify_files(&gap, &key).ok());
}

#[tokio::test]
async fn torn_tail_is_moved_away_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = key();
    let cfg = signed(&path, &key);
    let a = auditor(cfg.clone(), DeliveryMode::BlockingStrict);
    for i in 0..3 {
        a.emit(event(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    // A crash in the middle of a write leaves a torn line.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"kind":"Event","apiVer"#).unwrap();
    drop(f);
    let a = auditor(cfg, DeliveryMode::BlockingStrict);
    a.emit(event(3)).await.unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    let mut files: Vec<PathBuf> = backup_paths(&path);
    assert_eq!(files.len(), 1);
    files.push(path);
    let r = verify_files(&files, &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.events, 4);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
}

#[tokio::test]
async fn unwritable_path_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let cfg = FileSinkConfig::new(blocker.join("audit.log"));
    assert!(Auditor::start(vec![SinkSpec {
        name: "file".into(),
        kind: SinkKind::File(cfg),
        mode: DeliveryMode::BlockingStrict,
    }])
    .is_err());
}

#[tokio::test]
async fn failed_write_is_undone_then_a_new_file_is_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = key();
    let cfg = signed(&path, &key);
    let counters = Arc::new(SinkCounters::default());
    let mut w = FileBackend::open(cfg, counters.clone()).unwrap();
    let p = |i| Arc::new(Prepared::new(event(i), true));
    w.write(&[p(0), p(1)], true).unwrap();
    // Swap in a read-only handle: the next write fails, and so does the truncation.
    w.file = File::open(&path).unwrap();
    let (ok, err) = w.write(&[p(2), p(3)], true).unwrap_err();
    assert_eq!(ok, 0);
    assert!(err.contains("audit.log"), "{err}");
    assert!(w.needs_reopen);
    assert_eq!(w.seq, 2, "chain state rolled back");
    // The next batch starts a new file that continues the chain.
    w.write(&[p(4)], true).unwrap();
    w.close();
    let mut files: Vec<PathBuf> = backup_paths(&path);
    files.push(path);
    let r = verify_files(&files, &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.events, 3);
}

#[tokio::test]
async fn a_rotation_stopped_between_its_renames_is_finished_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = key();
    let cfg = signed(&path, &key);
    let a = auditor(cfg.clone(), DeliveryMode::BlockingStrict);
    for i in 0..3 {
        a.emit(event(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    // The log was renamed to a backup, then the process died before moving its sidecar.
    let backup = backup_path(&path).unwrap();
    std::fs::rename(&path, &backup).unwrap();
    let a = auditor(cfg, DeliveryMode::BlockingStrict);
    a.emit(event(3)).await.unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    assert!(
        sidecar_path(&backup).exists(),
        "the sidecar followed its log"
    );
    let r = verify_files(&[backup, path], &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.events, 4);
    assert_eq!(r.unsigned_tail, 0);
}

/// A running sink whose rotation stopped between its renames (the log moved, its sidecar not:
/// the second rename failed) finishes it at the next attempt: the new log does not start with
/// the backup's checkpoints, and both files verify.
#[tokio::test]
async fn a_rotation_stopped_between_its_renames_is_finished_by_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = key();
    let mut w = FileBackend::open(signed(&path, &key), Arc::new(SinkCounters::default())).unwrap();
    let p = |i| Arc::new(Prepared::new(event(i), true));
    w.write(&[p(0), p(1)], true).unwrap();
    let backup = backup_path(&path).unwrap();
    std::fs::rename(&path, &backup).unwrap();
    w.needs_reopen = true;
    w.write(&[p(2)], true).unwrap();
    w.close();
    assert!(
        sidecar_path(&backup).exists(),
        "the sidecar followed its log"
    );
    let r = verify_files(&[backup, path], &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.events, r.unsigned_tail), (3, 0));
}

/// A signed sink started and stopped without an event leaves an empty log whose sidecar holds
/// the start checkpoint. Starting again keeps that pair as it is: no "sidecar without its log"
/// warning, no orphaned sidecar moved aside on every idle restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_restart_keeps_the_empty_log_and_its_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = key();
    let cfg = signed(&path, &key);
    for _ in 0..2 {
        auditor(cfg.clone(), DeliveryMode::BlockingStrict)
            .shutdown(Duration::from_secs(5))
            .await;
    }
    let a = auditor(cfg, DeliveryMode::BlockingStrict);
    for i in 0..2 {
        a.emit(event(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["audit.log", "audit.log.checkpoints", "audit.log.lock"]
    );
    let r = verify_files(&[path], &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.events, r.unsigned_tail), (2, 0));
}

/// A second writer of the same log (the proxy started twice on one volume) is refused at
/// start, naming the lock; once the first has shut down, a new one starts.
#[tokio::test]
async fn a_second_writer_of_the_same_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let cfg = FileSinkConfig::new(&path);
    let first = auditor(cfg.clone(), DeliveryMode::BlockingStrict);
    let err = Auditor::start(vec![SinkSpec {
        name: "file".into(),
        kind: SinkKind::File(cfg.clone()),
        mode: DeliveryMode::BlockingStrict,
    }])
    .expect_err("a second writer started");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("is in use by another process") && msg.contains("audit.log.lock"),
        "{msg}"
    );
    first.emit(event(0)).await.unwrap();
    first.shutdown(Duration::from_secs(5)).await;
    let again = auditor(cfg, DeliveryMode::BlockingStrict);
    again.emit(event(1)).await.unwrap();
    again.shutdown(Duration::from_secs(5)).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
}

/// An empty log whose sidecar holds the checkpoint it starts from (a rotation, then a restart
/// before any event), with its backups gone (shipped and deleted): the chain continues from
/// that checkpoint — it never restarts from the beginning, which `verify` would report as a
/// checkpoint whose seq goes back.
#[tokio::test]
async fn an_empty_log_continues_from_its_sidecar_when_its_backups_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = key();
    let cfg = signed(&path, &key);
    write_events(cfg.clone(), 0..5).await;
    // As a rotation leaves it: the full file (and its checkpoints) a backup, a new empty log
    // whose sidecar starts where the backup ends.
    let backup = backup_path(&path).unwrap();
    std::fs::rename(&path, &backup).unwrap();
    std::fs::rename(sidecar_path(&path), sidecar_path(&backup)).unwrap();
    auditor(cfg.clone(), DeliveryMode::BlockingStrict)
        .shutdown(Duration::from_secs(5))
        .await;
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    // The backup shipped and deleted; the proxy restarts and writes.
    std::fs::remove_file(&backup).unwrap();
    std::fs::remove_file(sidecar_path(&backup)).unwrap();
    write_events(cfg, 5..7).await;
    let r = verify_files(&[path], &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.events, r.unsigned_tail), (2, 0));
}

/// Lines appended while the proxy was stopped (links recomputed: that takes no key) are not
/// vouched for by the restarted proxy: its first checkpoint says how many events it found
/// unsigned. After a clean stop — its last checkpoint says so — there is no unsigned tail to
/// take over, so verify fails on them; after a crash (no clean-stop checkpoint) they are
/// reported as adopted, as the crash's own unsigned tail would be.
/// The clean stop's line deleted from the sidecar does not pass the lines off as a crash's
/// tail when the checkpoint copy (an anchor) still has it.
#[tokio::test]
async fn a_restart_does_not_vouch_for_lines_it_did_not_write() {
    for (crashed, hidden) in [(false, false), (true, false), (true, true)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let copy = dir.path().join("checkpoints.copy");
        let key = key();
        let mut cfg = signed(&path, &key);
        if hidden {
            cfg.checkpoint_copy = Some(copy.clone());
        }
        let a = auditor(cfg.clone(), DeliveryMode::Blocking);
        for i in 0..3 {
            a.emit(event(i)).await.unwrap();
        }
        a.shutdown(Duration::from_secs(5)).await;
        let r = verify_files(std::slice::from_ref(&path), &key);
        assert!(
            r.ok() && r.unsigned_tail == 0 && r.adopted.is_empty(),
            "{r:?}"
        );
        let sidecar = crate::audit::chain::sidecar_path(&path);
        let text = std::fs::read_to_string(&sidecar).unwrap();
        let last = text.lines().last().unwrap();
        assert!(last.contains("\"cleanStop\":true"), "{text}");
        if crashed {
            // As if killed before its last checkpoint: none says the stop was clean (or, when
            // `hidden`, its line deleted from the sidecar while the copy keeps it).
            let kept: String = text
                .lines()
                .take(text.lines().count() - 1)
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&sidecar, kept).unwrap();
        }
        // Someone with write access appends a forged event with a correct link.
        let r = verify_files(std::slice::from_ref(&path), &key);
        let last = r.last_link.unwrap();
        let forged = crate::audit::sink::Prepared::new(event(99), true);
        let link = last.next(forged.canonical());
        let mut line = Vec::new();
        forged.write_chained(&link, &mut line);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&line)
            .unwrap();
        // The proxy starts again, writes one event and stops.
        let a = auditor(cfg, DeliveryMode::Blocking);
        a.emit(event(3)).await.unwrap();
        a.shutdown(Duration::from_secs(5)).await;
        let r = verify_files(std::slice::from_ref(&path), &key);
        if hidden {
            let anchored = verify::verify_with_anchors(
                std::slice::from_ref(&path),
                &[key.verifying_key()],
                std::slice::from_ref(&copy),
            )
            .unwrap();
            let failure = anchored
                .failure
                .as_ref()
                .map(|f| f.message.as_str())
                .unwrap_or_default();
            assert!(
                failure.contains("found unsigned at a start after the clean stop"),
                "{anchored:?}"
            );
        }
        if crashed {
            assert!(r.ok(), "{r:?}");
            assert_eq!((r.events, r.unsigned_tail), (5, 0));
            assert_eq!(r.adopted, [(1, 4)], "{r:?}");
            assert!(
                r.warnings
                    .iter()
                    .any(|w| w.contains("events #1–#4 were found unsigned")),
                "{:?}",
                r.warnings
            );
        } else {
            let failure = r
                .failure
                .as_ref()
                .map(|f| f.message.as_str())
                .unwrap_or_default();
            assert!(
                failure
                    .contains("events #4–#4 were found unsigned at a start after the clean stop"),
                "{r:?}"
            );
        }
    }
}

/// A crash's unsigned tail taken over into a *new* file (the old one ends torn): the new
/// file's header says how many events it adopted, and the log verifies — with the backup, and
/// alone once retention deleted it — reporting them as adopted.
#[tokio::test]
async fn adopted_events_before_a_new_file_verify_with_and_without_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = key();
    let mut cfg = signed(&path, &key);
    cfg.checkpoint_every_events = 1000;
    let a = auditor(cfg.clone(), DeliveryMode::Blocking);
    for i in 0..3 {
        a.emit(event(i)).await.unwrap();
    }
    // A crash: no final checkpoint (the auditor is leaked, never shut down), and a torn line.
    // A crashed process's lock goes with it; the leaked writer's here stays: its file is
    // removed, so the restarted sink locks a new one.
    std::mem::forget(a);
    std::fs::remove_file(dir.path().join("audit.log.lock")).unwrap();
    let r = verify_files(std::slice::from_ref(&path), &key);
    let tail = r.unsigned_tail;
    assert!(tail > 0, "{r:?}");
    tear(&path);
    let a = auditor(cfg, DeliveryMode::Blocking);
    a.emit(event(3)).await.unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    let backups: Vec<PathBuf> = backup_paths(&path);
    assert_eq!(backups.len(), 1);
    let both = [backups[0].clone(), path.clone()];
    let r = verify_files(&both, &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.adopted, [(4 - tail, 3)], "{r:?}");
    // Retention took the backup: the new file still verifies, its adopted events before it.
    let r = verify_files(std::slice::from_ref(&path), &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.adopted, [(4 - tail, 3)], "{r:?}");
}

/// Signing turned on over a history written without a key (rotated backups, and a current
/// file with events, none, or a torn last line): the restarted sink signs the state the
/// current file continues from, counted from the chain's start, and every event before it as
/// adopted — the whole history verifies, and so does the current file alone.
#[tokio::test]
async fn signing_turned_on_over_an_unsigned_history_verifies() {
    for (current_file_has_events, torn) in [(true, false), (false, false), (true, true)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = FileSinkConfig::new(&path);
        cfg.max_size_bytes = 4096;
        cfg.max_backups = 0;
        write_events(cfg.clone(), 0..60).await;
        assert!(list_backups(&path).unwrap().len() >= 2);
        if !current_file_has_events {
            // As a rotation leaves it: the current file moved to a backup, none in its place.
            std::fs::rename(&path, backup_path(&path).unwrap()).unwrap();
        }
        if torn {
            // A crash mid-line: the file is kept as a backup and a new one started.
            tear(&path);
        }
        let key = key();
        cfg.signing_key = Some(key.clone());
        write_events(cfg, 60..65).await;
        let mut files: Vec<PathBuf> = backup_paths(&path);
        files.push(path.clone());
        let r = verify_files(&files, &key);
        assert!(r.ok(), "{current_file_has_events}: {r:?}");
        assert_eq!((r.events, r.unsigned_tail), (65, 0), "{r:?}");
        let adopted: u64 = r.adopted.iter().map(|(a, b)| b - a + 1).sum();
        assert_eq!(
            (r.adopted.first().map(|a| a.0), adopted),
            (Some(1), 60),
            "{r:?}"
        );
        // The newest file alone: its header says where it continues from.
        let r = verify_files(std::slice::from_ref(&path), &key);
        assert!(r.ok(), "{current_file_has_events}: {r:?}");
        assert_eq!(r.events + r.starts_after, 65, "{r:?}");
    }
}

/// With keys, a file after signed ones must be signed too: the newest file rewritten (its
/// links recomputed from where the file before it ends — that takes no key) with its sidecar
/// deleted or emptied fails verify, where it used to pass as an unsigned tail.
#[tokio::test]
async fn a_rewritten_newest_file_without_its_checkpoints_fails() {
    for empty_sidecar in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = signed_rotated_history(dir.path()).await;
        let mut files: Vec<PathBuf> = backup_paths(&path);
        let before = verify_files(&files, &key);
        files.push(path.clone());
        assert!(verify_files(&files, &key).ok());
        let mut link = before.last_link.unwrap();
        let mut forged = Vec::new();
        for i in 100..103 {
            let p = crate::audit::sink::Prepared::new(event(i), true);
            link = link.next(p.canonical());
            p.write_chained(&link, &mut forged);
        }
        std::fs::write(&path, forged).unwrap();
        if empty_sidecar {
            std::fs::write(sidecar_path(&path), b"").unwrap();
        } else {
            std::fs::remove_file(sidecar_path(&path)).unwrap();
        }
        let r = verify_files(&files, &key);
        let f = r
            .failure
            .clone()
            .unwrap_or_else(|| panic!("{empty_sidecar}: passed: {r:?}"));
        assert_eq!(f.file, path);
        assert!(
            f.message.contains("no checkpoint signs this file"),
            "{}",
            f.message
        );
        // The files before it still verify.
        assert!(verify_files(&files[..files.len() - 1], &key).ok());
        // A restart (any rollout) does not sign the forged events, even as adopted: the file
        // is kept aside unsigned, and the history still fails.
        write_events(signed(&path, &key), 200..201).await;
        let mut after = backup_paths(&path);
        after.push(path.clone());
        let r = verify_files(&after, &key);
        let f = r
            .failure
            .clone()
            .unwrap_or_else(|| panic!("{empty_sidecar}: passed after a restart: {r:?}"));
        assert!(
            f.message.contains("no checkpoint signs this file"),
            "{}",
            f.message
        );
    }
}

/// A current file that is empty, its sidecar missing or empty, after signed backups (a start
/// that a crash or a full disk interrupted before its first checkpoint) holds nothing to vouch
/// for: the history verifies.
#[tokio::test]
async fn an_empty_file_without_checkpoints_after_signed_ones_verifies() {
    for sidecar_left in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = signed_rotated_history(dir.path()).await;
        std::fs::rename(&path, backup_path(&path).unwrap()).unwrap();
        let side = sidecar_path(&path);
        if side.exists() {
            std::fs::rename(&side, sidecar_path(&backup_paths(&path).pop().unwrap())).unwrap();
        }
        std::fs::write(&path, b"").unwrap();
        if sidecar_left {
            std::fs::write(&side, b"").unwrap();
        }
        let mut files = backup_paths(&path);
        files.push(path.clone());
        let r = verify_files(&files, &key);
        assert!(r.ok(), "{sidecar_left}: {r:?}");
        assert_eq!(r.events, 30);
    }
}
