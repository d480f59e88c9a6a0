//! `portcullis audit verify | query | keygen` through the real binary, on files written by the
//! library's file sink: verify passes, then names the line after each kind of tampering; the
//! chain holds across rotation; a torn last line is only a warning; an unsigned tail longer
//! than the checkpoint interval fails; query filters give exact
//! rows; and group commit in blocking-strict mode (fewer fsyncs than events, every acknowledged
//! event in the file).
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use portcullis::audit::{
    chain::{sidecar_path, SigningKey},
    sink::file::list_backups,
    Auditor, DeliveryMode, Event, FileSinkConfig, Level, MicroTime, ObjectReference,
    ResponseStatus, SinkKind, SinkSpec, Stage, UserInfo,
};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn run(args: &[&str], files: &[PathBuf]) -> (i32, String, String) {
    let out: Output = Command::new(BIN).args(args).args(files).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `audit keygen` in `dir`: (private key path, public key path).
fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let private = dir.join("audit-key.pem");
    let (code, out, err) = run(
        &["audit", "keygen", "--out", private.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let public = dir.join("audit-key.pub.pem");
    assert!(public.exists());
    (private, public)
}

struct Ev {
    user: &'static str,
    groups: &'static [&'static str],
    verb: &'static str,
    resource: &'static str,
    ns: &'static str,
    name: &'static str,
    code: u16,
    decision: &'static str,
    at: MicroTime,
}

fn event(e: &Ev, id: usize) -> Event {
    let (resource, sub) = e.resource.split_once('/').unwrap_or((e.resource, ""));
    let mut annotations = BTreeMap::new();
    if !e.decision.is_empty() {
        annotations.insert(
            "authorization.k8s.io/decision".to_string(),
            e.decision.to_string(),
        );
    }
    Event {
        level: Level::Metadata,
        audit_id: format!("00000000-0000-4000-8000-{id:012}"),
        stage: Stage::ResponseComplete,
        request_uri: format!("/api/v1/namespaces/{}/{}/{}", e.ns, resource, e.name),
        verb: e.verb.into(),
        user: UserInfo {
            username: e.user.into(),
            groups: e.groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        },
        source_ips: vec!["10.0.0.1".into()],
        object_ref: (!resource.is_empty()).then(|| ObjectReference {
            resource: resource.into(),
            subresource: sub.into(),
            namespace: e.ns.into(),
            name: e.name.into(),
            api_version: "v1".into(),
            ..ObjectReference::default()
        }),
        response_status: Some(if e.code < 400 {
            ResponseStatus::code(e.code)
        } else {
            ResponseStatus::failure(e.code, "Forbidden", "refused")
        }),
        request_received_timestamp: e.at,
        stage_timestamp: e.at,
        annotations,
        ..Event::default()
    }
}

fn simple(i: usize) -> Event {
    event(
        &Ev {
            user: "alice",
            groups: &["dev"],
            verb: "get",
            resource: "pods",
            ns: "team-a",
            name: "web",
            code: 200,
            decision: "allow",
            at: MicroTime::now(),
        },
        i,
    )
}

/// A blocking-strict file sink on `path`. Started again while the file's lock is still held
/// for up to 3 s: a sink just shut down has released it, but another test of this binary that
/// forks `portcullis` at that moment holds a copy of the lock's descriptor until its child
/// execs (`flock` goes with the open file, which a fork shares).
fn file_sink(path: &Path, key: &Path, tweak: impl FnOnce(&mut FileSinkConfig)) -> Auditor {
    let mut cfg = FileSinkConfig::new(path);
    cfg.signing_key = Some(Arc::new(SigningKey::load(key).unwrap()));
    cfg.checkpoint_every_events = 5;
    tweak(&mut cfg);
    let spec = || SinkSpec {
        name: "file".into(),
        kind: SinkKind::File(cfg.clone()),
        mode: DeliveryMode::BlockingStrict,
    };
    let mut tries = 0;
    loop {
        match Auditor::start(vec![spec()]) {
            Ok(auditor) => return auditor,
            Err(e) if tries < 60 && format!("{e:#}").contains("is in use by another process") => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e:#}"),
        }
    }
}

/// `portcullis audit verify EXTRA… --key KEY LOG`: exit code, stdout, stderr.
fn verify_with_key(log: &Path, key: &str, extra: &[&str]) -> (i32, String, String) {
    let args: Vec<&str> = ["audit", "verify"]
        .into_iter()
        .chain(extra.iter().copied())
        .chain(["--key", key])
        .collect();
    run(&args, std::slice::from_ref(&log.to_path_buf()))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn is_event(l: &str) -> bool {
    l.contains("\"kind\":\"Event\"")
}

#[tokio::test]
async fn verify_passes_then_names_the_line_of_each_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path());
    let log = dir.path().join("audit.log");
    let a = file_sink(&log, &private, |_| {});
    for i in 0..20 {
        a.emit(simple(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;

    let key = ["audit", "verify", "--key", public.to_str().unwrap()];
    let (code, out, err) = run(&key, std::slice::from_ref(&log));
    assert_eq!(code, 0, "{out}{err}");
    // Header + 20 events + a checkpoint every 5 events, and the clean stop's own (at the same
    // event as the fourth: it says the stop was clean).
    assert!(
        out.starts_with("OK: 20 events, 6 checkpoints, last link "),
        "{out}"
    );
    assert!(!out.contains("unsigned tail"), "{out}");
    // The signing key itself works as --key too (its public half is used).
    let (code, _, _) = run(
        &["audit", "verify", "--key", private.to_str().unwrap()],
        std::slice::from_ref(&log),
    );
    assert_eq!(code, 0);
    // Without a key: the chain only, and a loud warning.
    let (code, _, err) = run(&["audit", "verify"], std::slice::from_ref(&log));
    assert_eq!(code, 0);
    assert!(err.contains("signatures were NOT checked"), "{err}");

    let orig = lines(&log);
    let sidecar = sidecar_path(&log);
    let orig_side = lines(&sidecar);
    // Every line of the log is an event; the checkpoints are in the sidecar.
    assert_eq!(orig.len(), 20);
    assert!(orig.iter().all(|l| is_event(l)));
    assert_eq!(
        orig_side.len(),
        6,
        "the header's, four periodic, the clean stop's"
    );
    let events: Vec<usize> = (0..orig.len()).collect();
    let tampered = dir.path().join("tampered.log");
    let tampered_side = sidecar_path(&tampered);
    let check_in = |l: &[String], side: &[String], at: &Path, line: usize, what: &str| {
        write_lines(&tampered, l);
        write_lines(&tampered_side, side);
        let (code, out, err) = run(&key, std::slice::from_ref(&tampered));
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(
            err.contains(&format!("{}:{line}: ", at.display())),
            "{what}: wrong line: {err}"
        );
        err
    };
    let check =
        |l: &[String], line: usize, what: &str| check_in(l, &orig_side, &tampered, line, what);

    // An edited line.
    let mut l = orig.clone();
    let k = events[7];
    l[k] = l[k].replace("\"username\":\"alice\"", "\"username\":\"mallory\"");
    let err = check(&l, k + 1, "edit");
    assert!(err.contains("chain broken (expected "), "{err}");
    assert!(err.contains(", found "), "{err}");

    // A deleted line: the next event no longer links.
    let mut l = orig.clone();
    l.remove(events[3]);
    check(&l, events[4], "delete");

    // Two lines swapped.
    let mut l = orig.clone();
    l.swap(events[1], events[2]);
    check(&l, events[1] + 1, "reorder");

    // A truncated checkpoint signature.
    let mut s = orig_side.clone();
    let sig_end = s[2].rfind("\"}").unwrap();
    s[2] = format!("{}\"}}", &s[2][..sig_end - 8]);
    let err = check_in(&orig, &s, &tampered_side, 3, "signature");
    assert!(err.contains("signature invalid"), "{err}");

    // A checkpoint whose signed time was moved back a year.
    let mut s = orig_side.clone();
    let time_at = s[3].find("\"time\":\"").unwrap() + 8;
    let year: u32 = s[3][time_at..time_at + 4].parse().unwrap();
    s[3].replace_range(time_at..time_at + 4, &(year - 1).to_string());
    let err = check_in(&orig, &s, &tampered_side, 4, "forged time");
    assert!(err.contains("signature invalid"), "{err}");

    // The newest events cut off the log (its sidecar still signs event #20).
    let err = check_in(&orig[..17], &orig_side, &tampered_side, 5, "truncated tail");
    assert!(err.contains("truncated: this checkpoint"), "{err}");
    assert!(err.contains("3 events were removed"), "{err}");

    // Not JSON.
    let mut l = orig.clone();
    l[events[5]] = "}{".into();
    let err = check(&l, events[5] + 1, "garbage");
    assert!(err.contains("not JSON"), "{err}");
}

#[tokio::test]
async fn chain_continues_across_rotation_and_a_gap_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path());
    let log = dir.path().join("audit.log");
    let a = file_sink(&log, &private, |c| {
        c.max_size_bytes = 8 * 1024;
        c.max_backups = 0;
    });
    for i in 0..60 {
        a.emit(simple(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    assert!(a.sinks()[0].counters().rotations.load(Ordering::Relaxed) >= 3);
    let mut files: Vec<PathBuf> = list_backups(&log)
        .unwrap()
        .into_iter()
        .map(|b| b.path)
        .collect();
    assert!(files.len() >= 3);
    files.push(log.clone());
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 8 * 1024);
    }
    let key = ["audit", "verify", "--key", public.to_str().unwrap()];
    let (code, out, err) = run(&key, &files);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK: 60 events, "), "{out}");
    // A rotated file on its own verifies from its signed header …
    let (code, out, err) = run(&key, &files[1..2]);
    assert_eq!(code, 0, "{out}{err}");
    // … but leaving one out of the sequence breaks the chain at the next file's first event.
    let gap = [files[0].clone(), files[2].clone()];
    let (code, _, err) = run(&key, &gap);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "{}:1: this file continues from event #",
            sidecar_path(&files[2]).display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn torn_last_line_warns_and_unsigned_tail_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path());
    let log = dir.path().join("audit.log");
    let a = file_sink(&log, &private, |c| c.checkpoint_every_events = 100);
    for i in 0..7 {
        a.emit(simple(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    // As after a crash: the closing checkpoint never made it, and the last event is half
    // written.
    let sidecar = sidecar_path(&log);
    let mut s = lines(&sidecar);
    assert_eq!(s.len(), 2, "header and the closing checkpoint");
    s.pop();
    write_lines(&sidecar, &s);
    let mut l = lines(&log);
    let torn = l.pop().unwrap();
    let mut text = l.join("\n") + "\n";
    text.push_str(&torn[..torn.len() / 2]);
    std::fs::write(&log, text).unwrap();

    let (code, out, err) = run(
        &["audit", "verify", "--key", public.to_str().unwrap()],
        std::slice::from_ref(&log),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK: 6 events, 1 checkpoints"), "{out}");
    assert!(out.contains("unsigned tail: 6 events"), "{out}");
    assert!(
        err.contains(&format!("{}:7: truncated final line", log.display())),
        "{err}"
    );
    let (code, _, _) = run(
        &[
            "audit",
            "verify",
            "--max-unsigned-tail",
            "5",
            "--key",
            public.to_str().unwrap(),
        ],
        std::slice::from_ref(&log),
    );
    assert_eq!(code, 1, "--max-unsigned-tail");

    // A restarted sink keeps the torn file as a backup and continues the chain in a new one.
    let a = file_sink(&log, &private, |_| {});
    a.emit(simple(99)).await.unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    let mut files: Vec<PathBuf> = list_backups(&log)
        .unwrap()
        .into_iter()
        .map(|b| b.path)
        .collect();
    files.push(log);
    let (code, out, err) = run(
        &["audit", "verify", "--key", public.to_str().unwrap()],
        &files,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK: 7 events"), "{out}");
}

/// The newest events rewritten (links recomputed: that takes no key) and the sidecar cut back
/// to the checkpoint before them: every remaining line is consistent, so only time tells — the
/// sink signs unsigned events every `checkpoint_interval`, and these run on long after the
/// last checkpoint. verify fails by default; told the sink's interval is longer, it passes.
#[tokio::test]
async fn an_unsigned_tail_longer_than_the_checkpoint_interval_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path());
    let log = dir.path().join("audit.log");
    let a = file_sink(&log, &private, |c| {
        c.checkpoint_every_events = 100;
        c.checkpoint_interval = Duration::from_secs(3600);
    });
    // Stamped a minute apart, as on a quiet day: the sink here signs only at its end.
    let start = MicroTime::now().unix_micros();
    for i in 0..4 {
        let mut e = simple(i);
        e.stage_timestamp = MicroTime::from_unix_micros(start + i as i64 * 60_000_000);
        a.emit(e).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    let key = public.to_str().unwrap();
    let (code, out, err) = verify_with_key(&log, key, &[]);
    assert_eq!(code, 0, "signed at the end: {out}{err}");
    // The closing checkpoint removed: the header (signed before the first event) is the last.
    let sidecar = sidecar_path(&log);
    let mut s = lines(&sidecar);
    assert_eq!(s.len(), 2, "header and the closing checkpoint");
    s.pop();
    write_lines(&sidecar, &s);
    let (code, out, err) = verify_with_key(&log, key, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("the 4 unsigned events after the last checkpoint")
            && err.contains("--checkpoint-interval 10s"),
        "{err}"
    );
    let (code, out, err) = verify_with_key(&log, key, &["--checkpoint-interval", "1h"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("unsigned tail: 4 events"), "{out}");
    let (code, _, _) = verify_with_key(&log, key, &["--checkpoint-interval", "0"]);
    assert_eq!(code, 0, "0 skips the check");

    // A restart adopts that tail and signs it (a crash's tail is signed that way): the
    // removed checkpoints must not be laundered so. The adopted range's 3 minutes are judged
    // as the tail's were.
    let a = file_sink(&log, &private, |c| c.checkpoint_every_events = 100);
    a.emit(simple(9)).await.unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    let (code, out, err) = verify_with_key(&log, key, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("the events #1–#4 adopted at a restart")
            && err.contains("--checkpoint-interval 10s"),
        "{err}"
    );
    let (code, out, err) = verify_with_key(&log, key, &["--checkpoint-interval", "1h"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("adopted at a restart: events #1–#4"), "{out}");

    // An unsigned event whose stageTimestamp does not parse cannot be judged, so it fails: a
    // rewrite of the tail could drop the stamp to escape the check.
    let log = dir.path().join("untimed.log");
    let a = file_sink(&log, &private, |c| c.checkpoint_every_events = 100);
    a.emit(simple(0)).await.unwrap();
    let mut odd = simple(1);
    odd.stage_timestamp = MicroTime::from_unix_micros(i64::MAX);
    a.emit(odd).await.unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    let sidecar = sidecar_path(&log);
    let mut s = lines(&sidecar);
    s.pop();
    write_lines(&sidecar, &s);
    let (code, out, err) = verify_with_key(&log, key, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("1 of the 2 unsigned events after the last checkpoint have no stageTimestamp"),
        "{err}"
    );

    // Not a false alarm after an idle night: the sink stopped cleanly (everything signed), a
    // restart hours later writes one event and is killed before its checkpoint — a tail of
    // one event, hours after the last checkpoint, but spanning nothing.
    let log = dir.path().join("idle.log");
    let a = file_sink(&log, &private, |c| c.checkpoint_every_events = 100);
    a.emit(simple(0)).await.unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    let a = file_sink(&log, &private, |c| c.checkpoint_every_events = 100);
    let mut late = simple(1);
    late.stage_timestamp = MicroTime::from_unix_micros(start + 3 * 3600 * 1_000_000);
    a.emit(late).await.unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    let sidecar = sidecar_path(&log);
    let mut s = lines(&sidecar);
    s.pop();
    write_lines(&sidecar, &s);
    let (code, out, err) = verify_with_key(&log, key, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("unsigned tail: 1 events"), "{out}");

    // A crash loop: each run killed before its first timed checkpoint, a minute apart. Each
    // start signs the tail it adopts at once, so each adopted range is one run's events — not
    // all of them as one range spanning the restarts, a false failure.
    let log = dir.path().join("crashloop.log");
    let crash = |log: &Path| {
        let sidecar = sidecar_path(log);
        let mut s = lines(&sidecar);
        s.pop(); // the clean stop's checkpoint: a kill writes none
        write_lines(&sidecar, &s);
    };
    for run in 0..3i64 {
        let a = file_sink(&log, &private, |c| c.checkpoint_every_events = 100);
        let mut e = simple(run as usize);
        e.stage_timestamp = MicroTime::from_unix_micros(start + run * 60_000_000);
        a.emit(e).await.unwrap();
        a.shutdown(Duration::from_secs(5)).await;
        if run < 2 {
            crash(&log);
        }
    }
    let (code, out, err) = verify_with_key(&log, key, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("adopted at a restart: events #1–#1")
            && out.contains("adopted at a restart: events #2–#2"),
        "{out}"
    );

    // Signing turned on for a log written unsigned over the minutes before: what the first
    // signing run adopts was stamped before the file's first checkpoint — history, not a cut
    // tail (a sidecar cut back to that checkpoint leaves events stamped after it, as above).
    let log = dir.path().join("history.log");
    let a = file_sink(&log, &private, |c| c.signing_key = None);
    let earlier = MicroTime::now().unix_micros() - 600_000_000;
    for i in 0..4 {
        let mut e = simple(i);
        e.stage_timestamp = MicroTime::from_unix_micros(earlier + i as i64 * 60_000_000);
        a.emit(e).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    let a = file_sink(&log, &private, |c| c.checkpoint_every_events = 100);
    a.emit(simple(4)).await.unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    let (code, out, err) = verify_with_key(&log, key, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("adopted at a restart: events #1–#4"), "{out}");
}

#[tokio::test]
async fn query_filters_give_exact_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = keygen(dir.path());
    let log = dir.path().join("audit.log");
    let t = |s: &str| s.parse::<MicroTime>().unwrap();
    let now = MicroTime::now();
    let recent = MicroTime::from_unix_micros(now.unix_micros() - 30 * 60 * 1_000_000);
    let evs = [
        Ev {
            user: "alice",
            groups: &["team-a"],
            verb: "delete",
            resource: "deployments",
            ns: "team-a",
            name: "api",
            code: 200,
            decision: "allow",
            at: t("2026-11-26T22:30:00Z"),
        },
        Ev {
            user: "bob",
            groups: &["team-b"],
            verb: "delete",
            resource: "secrets",
            ns: "team-a",
            name: "db",
            code: 403,
            decision: "forbid",
            at: t("2026-11-26T23:45:00Z"),
        },
        Ev {
            user: "alice",
            groups: &["team-a"],
            verb: "get",
            resource: "pods/log",
            ns: "team-a",
            name: "api-1",
            code: 200,
            decision: "allow",
            at: t("2026-11-27T01:15:00Z"),
        },
        Ev {
            user: "carol",
            groups: &["ops", "team-a"],
            verb: "delete",
            resource: "pods",
            ns: "team-a",
            name: "api-2",
            code: 200,
            decision: "allow",
            at: t("2026-11-27T02:00:00Z"),
        },
        Ev {
            user: "bob",
            groups: &["team-b"],
            verb: "list",
            resource: "pods",
            ns: "team-b",
            name: "",
            code: 429,
            decision: "allow",
            at: t("2026-11-27T03:00:00Z"),
        },
        Ev {
            user: "anon",
            groups: &[],
            verb: "get",
            resource: "pods",
            ns: "team-a",
            name: "",
            code: 401,
            decision: "",
            at: t("2026-11-27T04:00:00Z"),
        },
        Ev {
            user: "alice",
            groups: &["team-a"],
            verb: "create",
            resource: "configmaps",
            ns: "team-a",
            name: "cfg",
            code: 201,
            decision: "allow",
            at: recent,
        },
    ];
    let a = file_sink(&log, &private, |_| {});
    for (i, e) in evs.iter().enumerate() {
        a.emit(event(e, i)).await.unwrap();
    }
    // A ResponseStarted event is only shown with --all-stages.
    let mut started = event(&evs[0], 100);
    started.stage = Stage::ResponseStarted;
    a.emit(started).await.unwrap();
    a.shutdown(Duration::from_secs(5)).await;

    let query = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["audit", "query"];
        full.extend_from_slice(args);
        let (code, out, err) = run(&full, std::slice::from_ref(&log));
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        let mut rows = out.lines();
        assert!(rows.next().unwrap().starts_with("TIME "), "{out}");
        rows.map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };

    // "Who deleted what in team-a last night?"
    assert_eq!(
        query(&[
            "--namespace",
            "team-a",
            "--verb",
            "delete",
            "--since",
            "2026-11-26T22:00:00Z",
            "--until",
            "2026-11-27T06:00:00Z",
        ]),
        [
            "2026-11-26T22:30:00Z alice delete deployments team-a api 200 allow",
            "2026-11-26T23:45:00Z bob delete secrets team-a db 403 forbid",
            "2026-11-27T02:00:00Z carol delete pods team-a api-2 200 allow",
        ]
    );
    assert_eq!(
        query(&["--decision", "deny"]),
        ["2026-11-26T23:45:00Z bob delete secrets team-a db 403 forbid"]
    );
    assert_eq!(
        query(&["--user", "alice", "--resource", "pods"]),
        ["2026-11-27T01:15:00Z alice get pods/log team-a api-1 200 allow"]
    );
    assert_eq!(
        query(&["--group", "ops"]),
        ["2026-11-27T02:00:00Z carol delete pods team-a api-2 200 allow"]
    );
    assert_eq!(
        query(&["--code", "4xx", "--since", "2026-11-27T00:00:00+01:00"]),
        [
            "2026-11-26T23:45:00Z bob delete secrets team-a db 403 forbid",
            "2026-11-27T03:00:00Z bob list pods team-b - 429 allow",
            "2026-11-27T04:00:00Z anon get pods team-a - 401 -",
        ]
    );
    assert_eq!(query(&["--code", "401,429", "--user", "bob"]).len(), 1);
    let recent_rows = query(&["--since", "1h"]);
    assert_eq!(recent_rows.len(), 1, "{recent_rows:?}");
    assert!(recent_rows[0].contains(" alice create configmaps team-a cfg 201 allow"));
    assert_eq!(query(&["--user", "nobody"]), Vec::<String>::new());

    // JSON output: the matching lines themselves (chain annotation included).
    let (code, out, _) = run(
        &[
            "audit",
            "query",
            "--output",
            "json",
            "--all-stages",
            "--user",
            "alice",
        ],
        std::slice::from_ref(&log),
    );
    assert_eq!(code, 0);
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["annotations"]["portcullis.io/chain"].is_string());
            v["auditID"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 4, "three ResponseComplete + one ResponseStarted");
    assert!(ids[3].ends_with("000000000100"));

    // Bad arguments are refused.
    let (code, _, err) = run(
        &["audit", "query", "--since", "yesterday"],
        std::slice::from_ref(&log),
    );
    assert_eq!(code, 1);
    assert!(err.contains("--since"), "{err}");
    let (code, _, _) = run(
        &["audit", "query", "--code", "4x"],
        std::slice::from_ref(&log),
    );
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_group_commit_shares_fsyncs_and_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path());
    let log = dir.path().join("audit.log");
    let a = Arc::new(file_sink(&log, &private, |c| {
        c.checkpoint_every_events = 100
    }));
    let mut tasks = Vec::new();
    for t in 0..64 {
        let a = Arc::clone(&a);
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..20 {
                let e = simple(t * 1000 + i);
                let id = e.audit_id.clone();
                if a.emit(e).await.is_ok() {
                    acked.push(id);
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len(), 64 * 20);
    let c = a.sinks()[0].counters();
    let fsyncs = c.fsyncs.load(Ordering::Relaxed);
    let written = c.events_written.load(Ordering::Relaxed);
    assert_eq!(written, 64 * 20);
    assert!(
        fsyncs < written,
        "group commit: {fsyncs} fsyncs for {written} events"
    );
    eprintln!("{written} events, {fsyncs} fsyncs");

    // Every acknowledged event is in the file already (before shutdown).
    let in_file: HashSet<String> = lines(&log)
        .iter()
        .filter(|l| is_event(l))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["auditID"].as_str().unwrap().to_string()
        })
        .collect();
    for id in &acked {
        assert!(
            in_file.contains(id),
            "{id} acknowledged but not in the file"
        );
    }
    a.shutdown(Duration::from_secs(5)).await;
    let (code, out, err) = run(
        &["audit", "verify", "--key", public.to_str().unwrap()],
        &[log],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK: 1280 events"), "{out}");
}

const CHILD_ENV: &str = "PORTCULLIS_AUDIT_KILL_CHILD_DIR";

/// Not a test on its own: the writer process that `kill_9_under_load_…` starts (and SIGKILLs).
/// Without the environment variable it returns at once.
#[test]
fn kill_9_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let a = Arc::new(file_sink(
            &dir.join("audit.log"),
            &dir.join("audit-key.pem"),
            |c| {
                c.checkpoint_every_events = 50;
            },
        ));
        let mut tasks = Vec::new();
        for t in 0..16 {
            let a = Arc::clone(&a);
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let e = simple(t * 1_000_000 + i);
                    let id = e.audit_id.clone();
                    a.emit(e).await.unwrap();
                    // Printed only once the event is durable: what a client's response means.
                    println!("ACK {id}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_event() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keygen(dir.path());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while acked.len() < 3000 {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the writer died early"
        );
        if let Some(id) = line.trim().strip_prefix("ACK ") {
            acked.push(id.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL: no shutdown, no final checkpoint
    child.wait().unwrap();
    // Acknowledgements already in the pipe count too.
    for l in out.lines() {
        if let Some(id) = l.unwrap().trim().strip_prefix("ACK ") {
            acked.push(id.to_string());
        }
    }
    let log = dir.path().join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let in_file: HashSet<String> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && is_event(l))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["auditID"].as_str().unwrap().to_string()
        })
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !in_file.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing: {missing:?}",
        missing.len()
    );
    let (code, out, err) = run(
        &["audit", "verify", "--key", public.to_str().unwrap()],
        &[log],
    );
    assert_eq!(code, 0, "{out}{err}");
    eprintln!(
        "{} acknowledged, {} in the file; {out}{err}",
        acked.len(),
        in_file.len()
    );
}

/// `audit query --follow --decision forbid --output json` on a file that keeps growing and
/// rotating (several times between two polls): every matching event, in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_follow_reads_a_growing_rotating_file() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = keygen(dir.path());
    let log = dir.path().join("audit.log");
    let a = file_sink(&log, &private, |c| {
        c.max_size_bytes = 4096;
        c.max_backups = 0;
    });
    let ev = |i: usize| {
        event(
            &Ev {
                user: "alice",
                groups: &["dev"],
                verb: "delete",
                resource: "pods",
                ns: "team-a",
                name: "web",
                code: if i.is_multiple_of(3) { 403 } else { 200 },
                decision: if i.is_multiple_of(3) {
                    "forbid"
                } else {
                    "allow"
                },
                at: MicroTime::now(),
            },
            i,
        )
    };
    for i in 0..3 {
        a.emit(ev(i)).await.unwrap();
    }
    let mut child = Command::new(BIN)
        .args([
            "audit",
            "query",
            "--follow",
            "--output",
            "json",
            "--decision",
            "forbid",
        ])
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if tx.send(v["auditID"].as_str().unwrap().to_string()).is_err() {
                return;
            }
        }
    });
    let mut got = vec![rx.recv_timeout(Duration::from_secs(20)).unwrap()];
    // The follower is reading: now grow the file through several rotations at full speed.
    for i in 3..90 {
        a.emit(ev(i)).await.unwrap();
    }
    let want: Vec<String> = (0..90)
        .filter(|i: &usize| i.is_multiple_of(3))
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    while got.len() < want.len() {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(id) => got.push(id),
            Err(_) => break,
        }
    }
    let rotations = a.sinks()[0].counters().rotations.load(Ordering::Relaxed);
    a.shutdown(Duration::from_secs(5)).await;
    // Nothing more arrives (no duplicates).
    std::thread::sleep(Duration::from_millis(600));
    got.extend(rx.try_iter());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(rotations >= 5, "only {rotations} rotations");
    assert_eq!(got, want);
}
