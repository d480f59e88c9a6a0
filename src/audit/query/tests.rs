//! Query filters combined, table output with skipped lines, and time and code arguments.

use super::*;
use crate::audit::event::{Event, ObjectReference, ResponseStatus, Stage, UserInfo};

#[allow(clippy::too_many_arguments)] // a table row, read positionally
fn ev(
    user: &str,
    verb: &str,
    resource: &str,
    ns: &str,
    name: &str,
    code: u16,
    decision: &str,
    at: &str,
) -> String {
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let t: MicroTime = at.parse().unwrap();
    let e = Event {
        verb: verb.into(),
        user: UserInfo {
            username: user.into(),
            groups: vec![format!("{user}-group")],
            ..UserInfo::default()
        },
        object_ref: (!resource.is_empty()).then(|| ObjectReference {
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..ObjectReference::default()
        }),
        request_uri: "/healthz?verbose".into(),
        response_status: Some(ResponseStatus::code(code)),
        request_received_timestamp: t,
        stage_timestamp: t,
        annotations: if decision.is_empty() {
            BTreeMap::new()
        } else {
            BTreeMap::from([(DECISION.to_string(), decision.to_string())])
        },
        ..Event::default()
    };
    serde_json::to_string(&e).unwrap()
}

/// `name`'s allowed `get pods/p` in namespace `a`.
fn get_pods(name: &str) -> String {
    ev(
        name,
        "get",
        "pods",
        "a",
        "p",
        200,
        "allow",
        "2026-01-01T00:00:00Z",
    )
}

fn query(lines: &[String], f: &Filter, output: Output) -> (String, String, Stats) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    let (mut out, mut warn) = (Vec::new(), Vec::new());
    let stats = run(&[p], f, output, &mut out, &mut warn).unwrap();
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(warn).unwrap(),
        stats,
    )
}

fn sample() -> Vec<String> {
    vec![
        ev(
            "alice",
            "delete",
            "pods",
            "team-a",
            "web-1",
            200,
            "allow",
            "2026-11-26T23:10:00Z",
        ),
        ev(
            "bob",
            "delete",
            "pods",
            "team-a",
            "web-2",
            403,
            "forbid",
            "2026-11-26T23:20:00Z",
        ),
        ev(
            "alice",
            "get",
            "pods/log",
            "team-a",
            "web-1",
            200,
            "allow",
            "2026-11-27T01:00:00Z",
        ),
        ev(
            "alice",
            "list",
            "secrets",
            "team-b",
            "",
            200,
            "allow",
            "2026-11-27T02:00:00Z",
        ),
        ev("eve", "get", "", "", "", 401, "", "2026-11-27T03:00:00Z"),
    ]
}

#[test]
fn filters_combine() {
    let f = |filter: Filter| {
        let (out, _, _) = query(&sample(), &filter, Output::Json);
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{} {}",
                    v["user"]["username"].as_str().unwrap(),
                    v["verb"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(f(Filter::default()).len(), 5);
    assert_eq!(
        f(Filter {
            verbs: vec!["delete".into()],
            namespaces: vec!["team-a".into()],
            ..Filter::default()
        }),
        ["alice delete", "bob delete"]
    );
    assert_eq!(
        f(Filter {
            users: vec!["alice".into()],
            resources: vec!["pods".into()],
            ..Filter::default()
        }),
        ["alice delete", "alice get"],
        "pods includes its subresources"
    );
    assert_eq!(
        f(Filter {
            resources: vec!["pods/log".into()],
            ..Filter::default()
        }),
        ["alice get"]
    );
    assert_eq!(
        f(Filter {
            groups: vec!["bob-group".into(), "eve-group".into()],
            ..Filter::default()
        }),
        ["bob delete", "eve get"]
    );
    assert_eq!(
        f(Filter {
            decision: Some(Decision::Deny),
            ..Filter::default()
        }),
        ["bob delete"]
    );
    assert_eq!(
        f(Filter {
            decision: Some(Decision::Allow),
            codes: vec![CodeMatch::Exact(200)],
            names: vec!["web-1".into()],
            ..Filter::default()
        }),
        ["alice delete", "alice get"]
    );
    assert_eq!(
        f(Filter {
            codes: vec![CodeMatch::Class(4)],
            ..Filter::default()
        }),
        ["bob delete", "eve get"]
    );
    assert_eq!(
        f(Filter {
            since: Some("2026-11-26T23:15:00Z".parse().unwrap()),
            until: Some("2026-11-27T02:00:00Z".parse().unwrap()),
            ..Filter::default()
        }),
        ["bob delete", "alice get"],
        "since inclusive, until exclusive"
    );
}

#[test]
fn table_output_and_skipped_lines() {
    let mut lines = sample();
    lines.insert(1, "garbage".into());
    lines.insert(
        2,
        r#"{"kind":"PortcullisAuditCheckpoint","apiVersion":"portcullis.io/v1"}"#.into(),
    );
    let mut other_stage: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    other_stage["stage"] = serde_json::json!(Stage::ResponseStarted);
    lines.push(other_stage.to_string());
    let (out, warn, stats) = query(
        &lines,
        &Filter {
            users: vec!["alice".into(), "eve".into()],
            ..Filter::default()
        },
        Output::Table,
    );
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows[0], TABLE_HEADER);
    assert_eq!(
        rows[1].split_whitespace().collect::<Vec<_>>(),
        [
            "2026-11-26T23:10:00Z",
            "alice",
            "delete",
            "pods",
            "team-a",
            "web-1",
            "200",
            "allow"
        ]
    );
    assert_eq!(
        rows[2].split_whitespace().collect::<Vec<_>>(),
        [
            "2026-11-27T01:00:00Z",
            "alice",
            "get",
            "pods/log",
            "team-a",
            "web-1",
            "200",
            "allow"
        ]
    );
    assert_eq!(
        rows[4].split_whitespace().collect::<Vec<_>>(),
        [
            "2026-11-27T03:00:00Z",
            "eve",
            "get",
            "/healthz",
            "-",
            "-",
            "401",
            "-"
        ]
    );
    assert_eq!(rows.len(), 5, "ResponseStarted is not shown by default");
    assert!(
        warn.contains("audit.log:2: not a JSON audit event"),
        "{warn}"
    );
    assert_eq!(stats.skipped, 1);
    assert_eq!(stats.matched, 4);
    let (out, _, _) = query(
        &lines,
        &Filter {
            users: vec!["alice".into()],
            all_stages: true,
            ..Filter::default()
        },
        Output::Json,
    );
    assert_eq!(out.lines().count(), 4);
}

#[test]
fn time_and_code_args() {
    let now: MicroTime = "2026-11-27T12:00:00Z".parse().unwrap();
    assert_eq!(
        parse_time_arg("12h", now).unwrap().to_string(),
        "2026-11-27T00:00:00.000000Z"
    );
    assert_eq!(
        parse_time_arg("2026-11-27T08:00:00+01:00", now)
            .unwrap()
            .to_string(),
        "2026-11-27T07:00:00.000000Z"
    );
    assert!(parse_time_arg("yesterday", now).is_err());
    assert_eq!("403".parse(), Ok(CodeMatch::Exact(403)));
    assert_eq!("5xx".parse(), Ok(CodeMatch::Class(5)));
    assert!("9xx".parse::<CodeMatch>().is_err());
    assert!("x".parse::<CodeMatch>().is_err());
}

/// A name taken from a request body may hold a newline or a terminal escape: in the table it
/// is written escaped, so it can neither forge a row nor drive the terminal.
#[test]
fn table_cells_escape_control_characters() {
    let lines = vec![ev(
        "mallory",
        "create",
        "configmaps",
        "team-a",
        "x\n2026-11-26T23:10:00Z admin delete secrets kube-system all 200 allow\u{1b}[2J\u{202e}",
        201,
        "allow",
        "2026-11-26T23:10:00Z",
    )];
    let (out, _, _) = query(&lines, &Filter::default(), Output::Table);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{202e}'),
        "{out:?}"
    );
    assert!(rows[1].contains(r"x\u{a}2026"), "{}", rows[1]);
}

/// `kubectl --as=bob` ran as bob: `--user bob` and `--group` find it by either identity, and
/// the table names both.
#[test]
fn an_impersonated_request_is_found_by_either_user() {
    let plain = get_pods("bob");
    let mut e: Event = serde_json::from_str(&ev(
        "alice",
        "delete",
        "pods",
        "a",
        "p",
        200,
        "allow",
        "2026-01-01T00:00:01Z",
    ))
    .unwrap();
    e.impersonated_user = Some(UserInfo {
        username: "bob".into(),
        groups: vec!["oncall".into()],
        ..UserInfo::default()
    });
    let lines = [plain, serde_json::to_string(&e).unwrap()];
    let by = |users: &[&str], groups: &[&str]| {
        let f = Filter {
            users: users.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            ..Filter::default()
        };
        query(&lines, &f, Output::Table).2.matched
    };
    assert_eq!(by(&["bob"], &[]), 2);
    assert_eq!(by(&["alice"], &[]), 1);
    assert_eq!(by(&[], &["oncall"]), 1);
    assert_eq!(by(&[], &["alice-group"]), 1);
    let (out, _, _) = query(&lines, &Filter::default(), Output::Table);
    assert!(out.contains("alice as bob"), "{out}");
}

/// A line longer than `audit verify` reads (a corrupt region without a newline) is skipped
/// with a warning, and the lines after it are still read.
#[test]
fn an_overlong_line_is_skipped_and_the_rest_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let good = get_pods("bob");
    let mut data = vec![b'x'; (crate::audit::verify::MAX_LINE + 10) as usize];
    data.push(b'\n');
    data.extend_from_slice(good.as_bytes());
    data.push(b'\n');
    std::fs::write(&p, data).unwrap();
    let (mut out, mut warn) = (Vec::new(), Vec::new());
    let stats = run(&[p], &Filter::default(), Output::Json, &mut out, &mut warn).unwrap();
    let warn = String::from_utf8(warn).unwrap();
    assert!(warn.contains(":1: a line over 64 MiB; skipped"), "{warn}");
    assert_eq!((stats.matched, stats.skipped), (1, 1));
}

/// An event of user `name` as a line, for the `--follow` tests.
fn follow_line(name: &str) -> String {
    get_pods(name) + "\n"
}

/// Follow `p` (polling every `poll`) while `change` runs on this thread, then stop: the users
/// of the rows printed, in order, and the warnings.
fn followed(p: &std::path::Path, poll_ms: u64, change: impl FnOnce()) -> (Vec<String>, String) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    let (out, warn) = std::thread::scope(|s| {
        let follower = s.spawn(|| {
            let (mut out, mut warn) = (Vec::new(), Vec::new());
            follow::follow(
                p,
                &Filter::default(),
                Output::Json,
                &mut out,
                &mut warn,
                std::time::Duration::from_millis(poll_ms),
                &|| stop.load(Ordering::SeqCst),
            )
            .unwrap();
            (
                String::from_utf8(out).unwrap(),
                String::from_utf8(warn).unwrap(),
            )
        });
        change();
        stop.store(true, Ordering::SeqCst);
        follower.join().unwrap()
    });
    let users = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["user"]["username"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    (users, warn)
}

fn pause(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// The sink rolls back a write it could not complete (`set_len` to before it): `--follow`
/// goes on from the new end, with a warning, instead of printing the whole file again.
#[test]
fn follow_goes_on_after_a_rolled_back_write() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let three: String = ["u0", "u1", "u2"].map(follow_line).concat();
    std::fs::write(&p, &three).unwrap();
    let (users, warn) = followed(&p, 20, || {
        pause(200);
        // The last event rolled back, then the next one written.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len((three.len() - follow_line("u2").len()) as u64)
            .unwrap();
        pause(200);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(follow_line("u3").as_bytes()).unwrap();
        pause(200);
    });
    assert_eq!(users, ["u0", "u1", "u2", "u3"]);
    assert!(warn.contains("the file shrank"), "{warn}");
}

/// `copytruncate` empties the file and writes to it again: `--follow` reads it from its start
/// (as `tail -F`), the new lines included, rather than from where a rollback would leave it.
#[test]
fn follow_reads_a_copytruncated_file_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    std::fs::write(&p, ["u0", "u1", "u2"].map(follow_line).concat()).unwrap();
    let (users, warn) = followed(&p, 100, || {
        pause(300);
        // Emptied and written again in place (same inode), faster than a poll.
        std::fs::write(&p, ["user3", "user4"].map(follow_line).concat()).unwrap();
        pause(400);
    });
    assert_eq!(users, ["u0", "u1", "u2", "user3", "user4"]);
    assert!(warn.contains("reading it from its start"), "{warn}");
}

/// Two rollbacks within the file's first bytes (events this short are not the sink's, but the
/// first bytes kept must stay the file's): the second is still seen as a rollback, not as
/// `copytruncate`, so nothing is printed twice.
#[test]
fn follow_tells_a_second_rollback_within_the_first_bytes() {
    use std::io::Write as _;
    let short = |name: &str| {
        format!("{{\"user\":{{\"username\":\"{name}\"}},\"kind\":\"Event\",\"stage\":\"ResponseComplete\"}}\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let append = |name: &str| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(short(name).as_bytes()).unwrap();
    };
    let roll_back = |name: &str| {
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - short(name).len() as u64).unwrap();
    };
    std::fs::write(&p, ["s0", "s1", "s2"].map(short).concat()).unwrap();
    let (users, warn) = followed(&p, 20, || {
        pause(200);
        roll_back("s2");
        pause(200);
        append("s3");
        append("s4");
        pause(200);
        roll_back("s4");
        pause(200);
        append("s5");
        pause(200);
    });
    assert_eq!(users, ["s0", "s1", "s2", "s3", "s4", "s5"], "{warn}");
    assert!(!warn.contains("from its start"), "{warn}");
    assert_eq!(warn.matches("the file shrank").count(), 2, "{warn}");
}
