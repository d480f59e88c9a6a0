//! The chain and its sidecar checkpoints: clean files verify; an edit, a deletion, a reorder,
//! a forged signature or time, a truncated tail (with or without its sidecar, caught by an
//! anchor) each fail at the right `file:line`.

use super::*;
use crate::audit::{
    chain::{Checkpoint, SigningKey},
    event::{Event, MicroTime},
    sink::Prepared,
};
use std::io::Write;

/// Write `n` chained events to `path` and a checkpoint to its sidecar after every `every`
/// events (and a header); every checkpoint is also appended to `copy` when given.
fn write_file(path: &Path, key: &SigningKey, n: usize, every: usize, copy: Option<&Path>) -> Link {
    let mut out = Vec::new();
    let mut side = Vec::new();
    let mut link = GENESIS;
    side.extend_from_slice(&Checkpoint::sign(key, 0, &link).to_line());
    side.push(b'\n');
    for i in 0..n {
        let p = Prepared::new(
            Event {
                audit_id: format!("a{i}"),
                ..Event::default()
            },
            true,
        );
        link = link.next(p.canonical());
        p.write_chained(&link, &mut out);
        if (i + 1) % every == 0 {
            side.extend_from_slice(&Checkpoint::sign(key, (i + 1) as u64, &link).to_line());
            side.push(b'\n');
        }
    }
    std::fs::write(path, out).unwrap();
    std::fs::write(sidecar_path(path), &side).unwrap();
    if let Some(c) = copy {
        std::fs::write(c, &side).unwrap();
    }
    link
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn put(path: &Path, lines: &[String]) {
    let mut f = File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn fail_at(path: &Path, keys: &[VerifyingKey]) -> (PathBuf, u64, String) {
    let r = verify_files(&[path.to_path_buf()], keys).unwrap();
    let f = r.failure.unwrap();
    (f.file, f.line, f.message)
}

#[test]
fn clean_file_verifies_with_counts() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let (_, _, key) = SigningKey::generate().unwrap();
    let last = write_file(&p, &key, 10, 4, None);
    let r = verify_files(&[p], &[key.verifying_key()]).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        (r.events, r.checkpoints, r.unsigned_tail, r.last_link),
        (10, 3, 2, Some(last))
    );
    assert_eq!(r.last_checkpoint.map(|c| c.0), Some(8));
}

#[test]
fn every_tampering_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let side = sidecar_path(&p);
    let (_, _, key) = SigningKey::generate().unwrap();
    let keys = [key.verifying_key()];
    write_file(&p, &key, 10, 4, None);
    let orig = lines(&p);
    let orig_side = lines(&side);
    // Every line is an event (a0 … a9); the sidecar holds seq 0, 4, 8.
    assert_eq!(orig.len(), 10);
    assert_eq!(orig_side.len(), 3);

    let mut l = orig.clone();
    l[1] = l[1].replace("\"a1\"", "\"a1x\"");
    put(&p, &l);
    let (file, line, msg) = fail_at(&p, &keys);
    assert_eq!((file, line), (p.clone(), 2));
    assert!(msg.starts_with("chain broken (expected "), "{msg}");

    let mut l = orig.clone();
    l.remove(2);
    put(&p, &l);
    assert_eq!(fail_at(&p, &keys).1, 3, "deleted line: the next one breaks");

    let mut l = orig.clone();
    l.swap(1, 2);
    put(&p, &l);
    assert_eq!(fail_at(&p, &keys).1, 2, "reordered");

    // The same parsed value spelt differently: a duplicate key (the last wins when parsed,
    // so a reader taking the first sees "get"), an escaped letter. The hash alone would pass.
    for forged in [
        orig[2].replacen("{", r#"{"verb":"get","#, 1),
        orig[2].replace("\"a2\"", r#""\u0061\u0032""#),
    ] {
        let mut l = orig.clone();
        l[2] = forged;
        put(&p, &l);
        let (_, line, msg) = fail_at(&p, &keys);
        assert_eq!(line, 3, "{msg}");
        assert!(msg.contains("not the event its link covers"), "{msg}");
    }

    let mut l = orig.clone();
    l[7] = "{not json".into();
    put(&p, &l);
    let (_, line, msg) = fail_at(&p, &keys);
    assert_eq!(line, 8);
    assert!(msg.starts_with("not JSON"), "{msg}");
    put(&p, &orig);

    // A damaged signature, and a checkpoint moved in time: both fail at the sidecar line.
    let mut s = orig_side.clone();
    let cp = s[1].clone();
    let cut = cp.rfind("\"}").unwrap();
    s[1] = format!("{}\"}}", &cp[..cut - 10]);
    put(&side, &s);
    let (file, line, msg) = fail_at(&p, &keys);
    assert_eq!((file, line), (side.clone(), 2));
    assert!(msg.contains("signature invalid"), "{msg}");
    let mut s = orig_side.clone();
    let mut cp: Checkpoint = serde_json::from_str(&s[2]).unwrap();
    cp.time = "2026-01-01T00:00:00.000000Z".into();
    s[2] = String::from_utf8(cp.to_line()).unwrap();
    put(&side, &s);
    let (file, line, msg) = fail_at(&p, &keys);
    assert_eq!((file, line), (side.clone(), 3));
    assert!(msg.contains("signature invalid"), "forged time: {msg}");

    // Deleting a checkpoint only shrinks the coverage.
    let mut s = orig_side.clone();
    s.remove(1);
    put(&side, &s);
    assert!(verify_files(std::slice::from_ref(&p), &keys).unwrap().ok());

    // Checkpoints out of order.
    let mut s = orig_side.clone();
    s.swap(1, 2);
    put(&side, &s);
    let (file, line, msg) = fail_at(&p, &keys);
    assert_eq!((file, line), (side.clone(), 3));
    assert!(msg.contains("goes back"), "{msg}");

    // Another key's signatures are refused.
    put(&side, &orig_side);
    let (_, _, other) = SigningKey::generate().unwrap();
    let (file, line, msg) = fail_at(&p, &[other.verifying_key()]);
    assert_eq!((file, line), (side.clone(), 1));
    assert!(msg.contains("signed by key"), "{msg}");
}

#[test]
fn a_truncated_tail_is_caught_by_the_sidecar_or_by_an_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let side = sidecar_path(&p);
    let anchor = dir.path().join("anchor.log");
    let (_, _, key) = SigningKey::generate().unwrap();
    let keys = [key.verifying_key()];
    write_file(&p, &key, 10, 4, Some(&anchor));
    let orig = lines(&p);
    let orig_side = lines(&side);

    // The log loses its last 3 events; the sidecar still signs event #8.
    put(&p, &orig[..7]);
    let (file, line, msg) = fail_at(&p, &keys);
    assert_eq!((file, line), (side.clone(), 3));
    assert!(
        msg.starts_with("truncated: this checkpoint (time 20")
            && msg.contains("1 events were removed"),
        "{msg}"
    );

    // Log and sidecar both cut back to event #4: consistent on their own…
    put(&p, &orig[..4]);
    put(&side, &orig_side[..2]);
    let r = verify_files(std::slice::from_ref(&p), &keys).unwrap();
    assert!(r.ok(), "{r:?}");
    // …but the anchor copy signs event #8.
    let r = verify_with_anchors(
        std::slice::from_ref(&p),
        &keys,
        std::slice::from_ref(&anchor),
    )
    .unwrap();
    let f = r.failure.unwrap();
    assert_eq!((f.file, f.line), (anchor.clone(), 3));
    assert!(
        f.message
            .contains("signs event #8, but the files end at event #4"),
        "{}",
        f.message
    );

    // Intact files pass with the anchor; foreign lines in it are skipped, a forged one fails.
    put(&p, &orig);
    put(&side, &orig_side);
    let mut a = vec![
        "some other log line".to_string(),
        // An event of a request that named the checkpoint kind (anyone can send one).
        r#"2026-12-02T10:00:00.0Z stdout F {"kind":"Event","apiVersion":"audit.k8s.io/v1","requestURI":"/PortcullisAuditCheckpoint","verb":"get"}"#.to_string(),
    ];
    a.extend(
        orig_side
            .iter()
            .map(|l| format!("2026-12-02T10:00:00.1Z stderr F {l}")),
    );
    put(&anchor, &a);
    let r = verify_with_anchors(
        std::slice::from_ref(&p),
        &keys,
        std::slice::from_ref(&anchor),
    )
    .unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.anchors_matched, 3);
    a[3] = a[3].replace("\"time\":\"20", "\"time\":\"19");
    put(&anchor, &a);
    let r = verify_with_anchors(&[p], &keys, std::slice::from_ref(&anchor)).unwrap();
    let f = r.failure.unwrap();
    assert_eq!((f.file, f.line), (anchor, 4));
    assert!(f.message.contains("signature invalid"), "{}", f.message);
}

/// The sidecar's checkpoints as a log collector keeps them: Docker's json-file driver (and
/// Fluent Bit, Vector) wraps each line as a JSON string. They anchor the chain as the bare
/// lines do — with them the cut-back files fail — and an anchor file in which no checkpoint can
/// be found fails instead of anchoring nothing in silence.
#[test]
fn checkpoints_wrapped_by_a_log_collector_anchor_and_an_empty_anchor_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let side = sidecar_path(&p);
    let anchor = dir.path().join("anchor.log");
    let (_, _, key) = SigningKey::generate().unwrap();
    let keys = [key.verifying_key()];
    write_file(&p, &key, 10, 4, Some(&anchor));
    let orig = lines(&p);
    let orig_side = lines(&side);
    let wrapped: Vec<String> = orig_side
        .iter()
        .map(|l| {
            serde_json::json!({"log": format!("{l}\n"), "stream": "stderr", "time": "2026-12-02T10:00:00.1Z"})
                .to_string()
        })
        .chain(std::iter::once(
            serde_json::json!({"message": "some other line", "stream": "stdout"}).to_string(),
        ))
        .collect();
    put(&anchor, &wrapped);
    let r = verify_with_anchors(
        std::slice::from_ref(&p),
        &keys,
        std::slice::from_ref(&anchor),
    )
    .unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.anchors_matched, 3);
    // Log and sidecar cut back together: the wrapped anchors still sign event #8.
    put(&p, &orig[..4]);
    put(&side, &orig_side[..2]);
    let r = verify_with_anchors(
        std::slice::from_ref(&p),
        &keys,
        std::slice::from_ref(&anchor),
    )
    .unwrap();
    let f = r.failure.unwrap();
    assert!(
        f.message
            .contains("signs event #8, but the files end at event #4"),
        "{}",
        f.message
    );
    // One anchor file of several without a checkpoint (a container log's chunk written while
    // audit was idle) is a warning; anchors with none at all (the wrong file, or one that
    // names the kind only in an event) fail.
    put(&p, &orig);
    put(&side, &orig_side);
    let empty = dir.path().join("empty-anchor.log");
    put(
        &empty,
        &[r#"{"kind":"Event","requestURI":"/PortcullisAuditCheckpoint"}"#.to_string()],
    );
    let r = verify_with_anchors(
        std::slice::from_ref(&p),
        &keys,
        &[empty.clone(), anchor.clone()],
    )
    .unwrap();
    assert!(r.ok(), "{r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("no checkpoint found")),
        "{:?}",
        r.warnings
    );
    let r = verify_with_anchors(&[p], &keys, std::slice::from_ref(&empty)).unwrap();
    let f = r.failure.unwrap();
    assert_eq!(f.file, empty);
    assert!(f.message.contains("no checkpoint found"), "{}", f.message);
}

/// The anchor file is the proxy's own container log, which holds what clients send: the
/// authorization layer logs the path of every refused request, so anyone can put the checkpoint
/// kind on a line of it (`GET /api/v1/namespaces/default/pods/PortcullisAuditCheckpoint`). Such
/// lines — text with the request span's `{…}` prefix, JSON, or wrapped by a collector — are
/// skipped with a warning naming them; the real checkpoints around them still anchor the chain
/// (a log cut back with its sidecar fails) and a forged one still fails.
#[test]
fn anchor_lines_naming_the_checkpoint_kind_without_a_checkpoint_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let side = sidecar_path(&p);
    let anchor = dir.path().join("anchor.log");
    let (_, _, key) = SigningKey::generate().unwrap();
    let keys = [key.verifying_key()];
    write_file(&p, &key, 10, 4, Some(&anchor));
    let orig = lines(&p);
    let orig_side = lines(&side);
    let cri = |l: &str| format!("2026-12-02T10:00:00.1Z stderr F {l}");
    let path = "/api/v1/namespaces/default/pods/PortcullisAuditCheckpoint";
    let text = format!(
        "2026-12-02T10:00:00.123456Z  INFO request{{audit_id=5f0c7a0e-2b1d-4f6e-9a57-0d3c1e2f4a5b}}: portcullis::authz::layer: forbidden user=alice verb=get path={path} reason=\"no grant allows get pods\""
    );
    let json = serde_json::json!({
        "timestamp": "2026-12-02T10:00:00.123456Z", "level": "INFO",
        "fields": {"message": "forbidden", "user": "alice", "verb": "get", "path": path},
        "target": "portcullis::authz::layer",
        "span": {"audit_id": "5f0c7a0e-2b1d-4f6e-9a57-0d3c1e2f4a5b", "name": "request"},
    })
    .to_string();
    let wrapped = serde_json::json!({"log": format!("{text}\n"), "stream": "stderr"}).to_string();
    let mut a = vec![
        cri(&orig_side[0]),
        cri(&text),
        cri(&orig_side[1]),
        json,
        wrapped,
        cri(&orig_side[2]),
    ];
    put(&anchor, &a);
    let r = verify_with_anchors(
        std::slice::from_ref(&p),
        &keys,
        std::slice::from_ref(&anchor),
    )
    .unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.anchors_matched, 3);
    let warning = format!(
        "{}: 3 line(s) name PortcullisAuditCheckpoint but hold no checkpoint",
        anchor.display()
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.starts_with(&warning) && w.ends_with("skipped: line 2, 4, 5")),
        "{:?}",
        r.warnings
    );

    // Still an anchor: log and sidecar cut back to event #4 fail on the checkpoint of event #8.
    put(&p, &orig[..4]);
    put(&side, &orig_side[..2]);
    let r = verify_with_anchors(
        std::slice::from_ref(&p),
        &keys,
        std::slice::from_ref(&anchor),
    )
    .unwrap();
    let f = r.failure.unwrap();
    assert_eq!((f.file, f.line), (anchor.clone(), 6));
    assert!(
        f.message
            .contains("signs event #8, but the files end at event #4"),
        "{}",
        f.message
    );

    // A checkpoint that parses but does not verify still fails, among skipped lines.
    put(&p, &orig);
    put(&side, &orig_side);
    a[2] = a[2].replace("\"time\":\"20", "\"time\":\"19");
    put(&anchor, &a);
    let r = verify_with_anchors(&[p], &keys, std::slice::from_ref(&anchor)).unwrap();
    let f = r.failure.unwrap();
    assert_eq!((f.file, f.line), (anchor, 3));
    assert!(f.message.contains("signature invalid"), "{}", f.message);
}

#[test]
fn rewriting_the_whole_chain_is_caught_by_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let (_, _, key) = SigningKey::generate().unwrap();
    let (_, _, attacker) = SigningKey::generate().unwrap();
    write_file(&p, &key, 6, 3, None);
    // The attacker rewrites everything with a recomputed chain and their own key.
    let forged = dir.path().join("b.log");
    write_file(&forged, &attacker, 6, 3, None);
    assert!(
        !verify_files(std::slice::from_ref(&forged), &[key.verifying_key()])
            .unwrap()
            .ok()
    );
    // …or without checkpoints at all.
    std::fs::remove_file(sidecar_path(&forged)).unwrap();
    let r = verify_files(std::slice::from_ref(&forged), &[key.verifying_key()]).unwrap();
    assert!(r.failure.unwrap().message.contains("no checkpoint"));
    // Without keys only the chain is checked, and the report says so.
    let r = verify_files(&[forged], &[]).unwrap();
    assert!(r.ok() && !r.signatures_checked);
}

#[test]
fn truncated_final_line_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let (_, _, key) = SigningKey::generate().unwrap();
    write_file(&p, &key, 5, 10, None);
    let mut bytes = std::fs::read(&p).unwrap();
    let keep = bytes.len() - 40;
    bytes.truncate(keep);
    std::fs::write(&p, &bytes).unwrap();
    let r = verify_files(&[p], &[key.verifying_key()]).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.events, 4);
    assert_eq!(r.unsigned_tail, 4);
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].contains(":5: truncated final line"),
        "{:?}",
        r.warnings
    );
}

#[test]
fn other_lines_fail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let (_, _, key) = SigningKey::generate().unwrap();
    let old_style = Checkpoint::sign_at(&key, 0, &GENESIS, MicroTime::now());
    for (content, want) in [
        ("{\"kind\":\"Pod\"}\n".to_string(), "kind \"Pod\""),
        ("[]\n".into(), "no kind"),
        ("\n".into(), "not JSON"),
        (
            "{\"kind\":\"Event\",\"auditID\":\"x\"}\n".into(),
            "without a portcullis.io/chain",
        ),
        (
            format!("{}\n", String::from_utf8(old_style.to_line()).unwrap()),
            "a checkpoint line inside the log",
        ),
    ] {
        std::fs::write(&p, &content).unwrap();
        let (_, line, msg) = fail_at(&p, &[]);
        assert_eq!(line, 1);
        assert!(msg.contains(want), "{content:?}: {msg}");
    }
    std::fs::write(&p, "").unwrap();
    std::fs::write(
        sidecar_path(&p),
        "{\"kind\":\"PortcullisAuditCheckpoint\",\"seq\":1}\n",
    )
    .unwrap();
    let (file, line, msg) = fail_at(&p, &[]);
    assert_eq!((file, line), (sidecar_path(&p), 1));
    assert!(msg.contains("not a valid checkpoint"), "{msg}");
}

/// A file whose first events (and the checkpoints before a later one) were cut verifies from
/// that checkpoint on, as the oldest backup left by retention does — but says where the chain
/// starts, so a log that was never rotated shows its missing start.
#[test]
fn a_cut_start_is_reported_where_the_chain_begins() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let side = sidecar_path(&p);
    let (_, _, key) = SigningKey::generate().unwrap();
    write_file(&p, &key, 10, 4, None);
    let r = verify_files(std::slice::from_ref(&p), &[key.verifying_key()]).unwrap();
    assert_eq!((r.starts_after, r.warnings.len()), (0, 0), "{r:?}");
    let (orig, orig_side) = (lines(&p), lines(&side));
    put(&p, &orig[4..]);
    put(&side, &orig_side[1..]);
    let r = verify_files(std::slice::from_ref(&p), &[key.verifying_key()]).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.events, r.starts_after), (6, 4));
    assert!(
        r.warnings[0].starts_with("the chain starts after event #4"),
        "{:?}",
        r.warnings
    );
}

/// A line over 64 MiB (no event is that long) fails at its line, read no further into memory;
/// the lines after it are not needed to say so.
#[test]
fn an_oversized_line_fails_without_being_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let (_, _, key) = SigningKey::generate().unwrap();
    write_file(&p, &key, 3, 3, None);
    let mut l = lines(&p);
    l.insert(1, "x".repeat((64 << 20) + 1));
    put(&p, &l);
    let (file, line, msg) = fail_at(&p, &[key.verifying_key()]);
    assert_eq!((file, line), (p, 2));
    assert!(msg.starts_with("a line longer than 64 MiB"), "{msg}");
}

/// A start checkpoint claiming to have adopted more events than it signs is refused, not
/// counted backwards past event #1.
#[test]
fn an_adopted_count_beyond_the_start_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let side = sidecar_path(&p);
    let (_, _, key) = SigningKey::generate().unwrap();
    write_file(&p, &key, 10, 4, None);
    let (orig, orig_side) = (lines(&p), lines(&side));
    put(&p, &orig[4..]);
    let cp: Checkpoint = serde_json::from_str(&orig_side[1]).unwrap();
    let link = Link::from_hex(&cp.chain).unwrap();
    let forged = Checkpoint::sign_adopting(&key, cp.seq, &link, MicroTime::now(), cp.seq + 5);
    let mut s = vec![String::from_utf8(forged.to_line()).unwrap()];
    s.extend(orig_side[2..].iter().cloned());
    put(&side, &s);
    let (_, _, msg) = fail_at(&p, &[key.verifying_key()]);
    assert!(msg.contains("but it signs event #4"), "{msg}");
}

/// A log without sidecars (written without a key) has its unsigned run summed as read (no
/// stamp kept per event: its memory is measured in `benches/PERFORMANCE-LOG.md`, not here).
/// The summary is what it was: first and last in file order.
#[test]
fn an_unsigned_log_sums_its_tail_stamps_as_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("unsigned.log");
    let mut out = Vec::new();
    let mut link = GENESIS;
    // Stamped 1 000 010 µs, …, and a last event stamped before the others (a clock step back).
    let stamps = [1_000_010, 1_000_020, 1_000_030, 1_000_005];
    for (i, t) in stamps.iter().enumerate() {
        let p = Prepared::new(
            Event {
                audit_id: format!("u{i}"),
                stage_timestamp: MicroTime::from_unix_micros(*t),
                ..Event::default()
            },
            true,
        );
        link = link.next(p.canonical());
        p.write_chained(&link, &mut out);
    }
    std::fs::write(&p, out).unwrap();
    let r = verify_files(&[p], &[]).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.events, r.unsigned_tail), (4, 4));
    assert_eq!(
        r.tail_stamps,
        Stamps {
            first: Some(1_000_010),
            last: Some(1_000_005),
            untimed: 0
        }
    );
}
