//! The one-pass writer against its two references: serde_json's line and the `Value` path's
//! canonical bytes, over typical events, every optional field, awkward strings and random ones.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{by_rank, needs_escape, oref, status, top, user, write, Key, Member, Two, RANKS};
use crate::audit::{
    canonical,
    event::{Event, Level, MicroTime, ObjectReference, ResponseStatus, Stage, UserInfo},
};

fn check(event: &Event) {
    let written = write(event, true);
    let (line, canonical) = (written.line(), written.canonical());
    let want_line = serde_json::to_vec(event).unwrap();
    assert_eq!(
        String::from_utf8_lossy(line),
        String::from_utf8_lossy(&want_line),
        "line"
    );
    let want_canon = canonical::via_value(event).unwrap();
    assert_eq!(
        String::from_utf8_lossy(canonical.unwrap()),
        String::from_utf8_lossy(&want_canon),
        "canonical"
    );
    let unchained = write(event, false);
    let (unchained, none) = (unchained.line(), unchained.canonical());
    assert_eq!(
        unchained,
        &want_line[..],
        "the line does not depend on the chain"
    );
    assert!(none.is_none());
}

fn typical() -> Event {
    let mut e = Event {
        level: Level::Metadata,
        audit_id: "dbd358d7-1c9b-4610-9f5a-4401d4fcca3d".into(),
        stage: Stage::RequestReceived,
        request_uri: "/api/v1/namespaces/team-a/pods".into(),
        verb: "list".into(),
        user: UserInfo {
            username: "bench".into(),
            groups: vec!["bench".into()],
            ..UserInfo::default()
        },
        source_ips: vec!["127.0.0.1".into()],
        user_agent: "h2load nghttp2/1.52.0".into(),
        object_ref: Some(ObjectReference {
            resource: "pods".into(),
            namespace: "team-a".into(),
            api_version: "v1".into(),
            ..ObjectReference::default()
        }),
        ..Event::default()
    };
    e.annotations
        .insert("authorization.k8s.io/decision".into(), "allow".into());
    e.annotations
        .insert("portcullis.io/method".into(), "jwt".into());
    e
}

#[test]
fn a_typical_event() {
    check(&typical());
    let mut done = typical();
    done.stage = Stage::ResponseComplete;
    done.response_status = Some(ResponseStatus::code(200));
    check(&done);
}

#[test]
fn every_optional_field_and_awkward_strings() {
    let awkward = "quote \" backslash \\ tab \t newline \n nul \u{0} bell \u{7} del \u{7f} é ✓ 🦀 </script> \u{2028}";
    let mut extra = BTreeMap::new();
    extra.insert(
        "b-key".to_string(),
        vec!["x".to_string(), awkward.to_string()],
    );
    extra.insert("a \"quoted\" key".to_string(), vec![]);
    let mut metadata = serde_json::Map::new();
    metadata.insert("resourceVersion".into(), json!("12"));
    metadata.insert("continue".into(), json!("abc"));
    let e = Event {
        kind: "Event".into(),
        level: Level::RequestResponse,
        audit_id: awkward.into(),
        stage: Stage::Panic,
        request_uri: format!("/api?q={awkward}"),
        verb: "patch".into(),
        user: UserInfo {
            username: awkward.into(),
            uid: "u-1".into(),
            groups: vec!["g1".into(), awkward.into(), String::new()],
            extra,
        },
        impersonated_user: Some(UserInfo::default()),
        source_ips: vec!["10.0.0.1".into(), "::1".into()],
        user_agent: awkward.into(),
        object_ref: Some(ObjectReference {
            resource: "deployments".into(),
            namespace: "n".into(),
            name: awkward.into(),
            uid: "uid".into(),
            api_group: "apps".into(),
            api_version: "v1".into(),
            resource_version: "7".into(),
            subresource: "scale".into(),
        }),
        response_status: Some(ResponseStatus {
            metadata,
            status: "Failure".into(),
            message: awkward.into(),
            reason: "Invalid".into(),
            details: Some(
                json!({"name": "x", "causes": [{"reason": "FieldValueInvalid", "field": "spec"}], "retryAfterSeconds": 3}),
            ),
            code: 422,
        }),
        request_object: Some(json!({
            "z": 1, "a": [1.5, -0.0, 1e300, 12345678901234567890u64, -7, true, null],
            "m": {"\"q": 1, "b": {"y": "é", "x": awkward}, "A": []},
            "": "empty key"
        })),
        response_object: Some(json!([{"b": 2, "a": 1}, "s", 3])),
        request_received_timestamp: MicroTime::from_unix_micros(1_764_000_000_123_456),
        stage_timestamp: MicroTime::from_unix_micros(-1),
        authentication_metadata: Some(
            json!({"impersonationConstraint": "x", "a": {"c": 1, "b": 2}}),
        ),
        annotations: BTreeMap::from([
            ("zeta".to_string(), awkward.to_string()),
            ("a\"b".to_string(), String::new()),
            ("é".to_string(), "v".to_string()),
        ]),
        ..Event::default()
    };
    check(&e);
}

#[test]
fn empty_objects_and_a_time_out_of_range() {
    let e = Event {
        user: UserInfo::default(),
        object_ref: Some(ObjectReference::default()),
        response_status: Some(ResponseStatus::default()),
        request_object: Some(json!({})),
        response_object: Some(Value::Null),
        request_received_timestamp: MicroTime::from_unix_micros(i64::MAX),
        ..Event::default()
    };
    check(&e);
}

/// A small deterministic generator (no extra dependency): strings drawn from an alphabet with
/// every class of character the writer treats differently.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn string(&mut self) -> String {
        const ALPHABET: &[&str] = &[
            "a", "Z", "0", "-", "/", " ", "\"", "\\", "\n", "\u{1}", "\u{1f}", "é", "✓", "🦀",
            "\u{7f}", ":", ",", "{", "}", "[", "]",
        ];
        let len = (self.next() % 12) as usize;
        (0..len)
            .map(|_| ALPHABET[(self.next() as usize) % ALPHABET.len()])
            .collect()
    }
    fn maybe(&mut self) -> String {
        if self.next().is_multiple_of(3) {
            String::new()
        } else {
            self.string()
        }
    }
}

/// The members' scratch buffer is kept per thread between events: an event after a large one
/// (whose buffer is not kept) and after a small one (whose buffer is) is written from its own
/// values only.
#[test]
fn an_event_after_a_large_or_a_small_one_holds_only_its_own_bytes() {
    let mut large = typical();
    large.request_object = Some(json!({ "data": "x".repeat(64 * 1024) }));
    let small = typical();
    for e in [&small, &large, &small, &small, &large, &small] {
        check(e);
    }
}

#[test]
fn random_events_match_both_references() {
    let mut r = Lcg(0x5eed);
    for _ in 0..500 {
        let mut e = typical();
        e.audit_id = r.string();
        e.request_uri = r.string();
        e.verb = r.maybe();
        e.user_agent = r.maybe();
        e.user = UserInfo {
            username: r.maybe(),
            uid: r.maybe(),
            groups: (0..r.next() % 3).map(|_| r.string()).collect(),
            extra: (0..r.next() % 3)
                .map(|_| (r.string(), (0..r.next() % 3).map(|_| r.string()).collect()))
                .collect(),
        };
        if r.next().is_multiple_of(2) {
            e.impersonated_user = Some(UserInfo {
                username: r.string(),
                ..UserInfo::default()
            });
        }
        e.source_ips = (0..r.next() % 3).map(|_| r.string()).collect();
        e.object_ref = (!r.next().is_multiple_of(4)).then(|| ObjectReference {
            resource: r.maybe(),
            namespace: r.maybe(),
            name: r.maybe(),
            uid: r.maybe(),
            api_group: r.maybe(),
            api_version: r.maybe(),
            resource_version: r.maybe(),
            subresource: r.maybe(),
        });
        e.response_status = (r.next().is_multiple_of(2)).then(|| ResponseStatus {
            status: r.maybe(),
            message: r.maybe(),
            reason: r.maybe(),
            code: (r.next() % 600) as i32 - 50,
            ..ResponseStatus::default()
        });
        if r.next().is_multiple_of(3) {
            let (k1, k2, v) = (r.string(), r.string(), r.string());
            e.request_object = Some(json!({ k1: { k2: v, "n": r.next() }, "list": [r.string()] }));
        }
        e.annotations = (0..r.next() % 5)
            .map(|_| (r.string(), r.string()))
            .collect();
        check(&e);
    }
}

#[test]
fn ranks_are_the_sorted_order_of_the_names() {
    for all in [
        &top::ALL[..],
        &user::ALL[..],
        &oref::ALL[..],
        &status::ALL[..],
    ] {
        let mut by_name: Vec<Key> = all.to_vec();
        by_name.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let ranks: Vec<u8> = by_name.iter().map(|k| k.1).collect();
        let want: Vec<u8> = (0..all.len() as u8).collect();
        assert_eq!(ranks, want, "{by_name:?}");
        // `by_rank` places members in an array of RANKS slots.
        assert!(all.len() <= RANKS, "{} members", all.len());
    }
}

#[test]
fn by_rank_orders_any_subset_of_members_by_rank() {
    let two = |n: usize| Two {
        line: n..n,
        canon: n..n,
    };
    // Every other field of the top level, pushed in reverse order.
    let members: Vec<Member> = top::ALL
        .iter()
        .rev()
        .step_by(2)
        .enumerate()
        .map(|(i, k)| (*k, two(i)))
        .collect();
    let mut want: Vec<&str> = members.iter().map(|m| m.0 .0).collect();
    want.sort();
    let got: Vec<&str> = by_rank(&members).map(|m| m.0 .0).collect();
    assert_eq!(got, want);
}

#[test]
fn the_escape_test_agrees_with_a_byte_by_byte_one_at_every_position() {
    for len in 0..20 {
        for at in 0..len {
            for c in 0u8..=255 {
                let mut s = vec![b'a'; len];
                s[at] = c;
                let want = c < 0x20 || c == b'"' || c == b'\\';
                assert_eq!(needs_escape(&s), want, "byte {c:#x} at {at} of {len}");
            }
        }
        assert!(!needs_escape(&vec![b'a'; len]));
    }
}

#[test]
fn the_escape_test_agrees_on_random_bytes() {
    let mut r = Lcg(7);
    for _ in 0..20_000 {
        let len = (r.next() % 40) as usize;
        // Mostly high and printable bytes, with a rare special one.
        let s: Vec<u8> = (0..len)
            .map(|_| match r.next() % 64 {
                0 => (r.next() % 0x20) as u8,
                1 => b'"',
                2 => b'\\',
                n if n < 40 => 0x80 + (r.next() % 0x80) as u8,
                _ => 0x20 + (r.next() % 0x60) as u8,
            })
            .collect();
        let want = s.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        assert_eq!(needs_escape(&s), want, "{s:?}");
    }
}
