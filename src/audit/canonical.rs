//! Canonical bytes for the hash chain (`chain.rs`) of compact JSON that serde_json has just
//! written, by reordering object members — no re-parse into a `serde_json::Value`, no
//! re-escaping of strings. The event writer (`event/json.rs`) writes an event's own fields in
//! both orders itself and uses this only for the free-form JSON values an event carries
//! (`requestObject`, `responseObject`, `responseStatus.details`, …).
//!
//! The result is, byte for byte, what [`chain::write_canonical`](super::chain::write_canonical)
//! produces from the `Value` of the same line — the form `verify` recomputes — because for
//! serde_json's own output every leaf is already in serde_json's canonical form (its string
//! escaping, its shortest round-trip numbers), so only member order differs. Members are sorted
//! by their *unescaped* key bytes, as a `Value` map sorts them. Building the `Value` tree (one
//! String and one map node per field) made hashing cost more than serializing the event; this
//! is a single pass with one scratch buffer per object.
//!
//! Accepts: compact JSON as serde_json writes it (no whitespace between tokens). Returns `None`
//! for anything else, and the caller falls back to the `Value` path; the tests check both paths
//! agree. Not for untrusted input: it does not validate numbers, escapes or duplicate keys.

use std::{borrow::Cow, ops::Range};

/// The canonical bytes of `json`, which serde_json wrote compactly; `None` if it is not that.
pub fn from_compact(json: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(json.len());
    let mut pos = 0;
    let mut pool = Pool::default();
    value(json, &mut pos, &mut out, &mut pool)?;
    (pos == json.len()).then_some(out)
}

/// The canonical bytes of any serializable value, through `serde_json::Value` (the slow path,
/// and the reference the fast one is tested against).
pub fn via_value<T: serde::Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
    let value = serde_json::to_value(v)?;
    let mut out = Vec::with_capacity(512);
    super::chain::write_canonical(&value, &mut out);
    Ok(out)
}

fn value<'a>(s: &'a [u8], pos: &mut usize, out: &mut Vec<u8>, pool: &mut Pool<'a>) -> Option<()> {
    let start = *pos;
    match *s.get(start)? {
        b'{' => object(s, pos, out, pool),
        b'[' => array(s, pos, out, pool),
        b'"' => {
            skip_string(s, pos)?;
            out.extend_from_slice(s.get(start..*pos)?);
            Some(())
        }
        _ => {
            // A number, true, false or null: up to the next delimiter.
            while let Some(&c) = s.get(*pos) {
                if matches!(c, b',' | b'}' | b']') {
                    break;
                }
                if matches!(c, b' ' | b'\n' | b'\t' | b'\r' | b'"' | b'{' | b'[' | b':') {
                    return None;
                }
                *pos += 1;
            }
            if *pos == start {
                return None;
            }
            out.extend_from_slice(s.get(start..*pos)?);
            Some(())
        }
    }
}

/// `pos` at the opening quote; leaves it after the closing one.
fn skip_string(s: &[u8], pos: &mut usize) -> Option<()> {
    *pos += 1;
    loop {
        let rest = s.get(*pos..)?;
        let i = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
        *pos += i;
        if rest.get(i) == Some(&b'"') {
            *pos += 1;
            return Some(());
        }
        // A backslash: skip it and the character it escapes.
        *pos += 2;
    }
}

fn array<'a>(s: &'a [u8], pos: &mut usize, out: &mut Vec<u8>, pool: &mut Pool<'a>) -> Option<()> {
    *pos += 1;
    out.push(b'[');
    if s.get(*pos) == Some(&b']') {
        *pos += 1;
        out.push(b']');
        return Some(());
    }
    loop {
        value(s, pos, out, pool)?;
        match *s.get(*pos)? {
            b',' => {
                *pos += 1;
                out.push(b',');
            }
            b']' => {
                *pos += 1;
                out.push(b']');
                return Some(());
            }
            _ => return None,
        }
    }
}

struct Member<'a> {
    /// Unescaped key bytes (what a `Value` map sorts by).
    sort: Cow<'a, [u8]>,
    /// The key as written, quotes included.
    raw: Range<usize>,
    /// The canonical value, in the object's scratch buffer.
    value: Range<usize>,
}

/// The member lists and scratch buffers of one document's objects, reused (one pair per
/// nesting depth in use): an event's dozen objects cost a few allocations, not two each.
#[derive(Default)]
struct Pool<'a>(Vec<(Vec<Member<'a>>, Vec<u8>)>);

fn object<'a>(s: &'a [u8], pos: &mut usize, out: &mut Vec<u8>, pool: &mut Pool<'a>) -> Option<()> {
    *pos += 1;
    if s.get(*pos) == Some(&b'}') {
        *pos += 1;
        out.extend_from_slice(b"{}");
        return Some(());
    }
    let (mut members, mut scratch) = pool
        .0
        .pop()
        .unwrap_or_else(|| (Vec::with_capacity(16), Vec::with_capacity(512)));
    members.clear();
    scratch.clear();
    loop {
        if s.get(*pos) != Some(&b'"') {
            return None;
        }
        let key_start = *pos;
        skip_string(s, pos)?;
        let raw = key_start..*pos;
        let inner = s.get(key_start + 1..*pos - 1)?;
        let sort = if inner.contains(&b'\\') {
            // Rare (a key with a quote, backslash or control character): unescape properly.
            let k: String = serde_json::from_slice(s.get(raw.clone())?).ok()?;
            Cow::Owned(k.into_bytes())
        } else {
            Cow::Borrowed(inner)
        };
        if s.get(*pos) != Some(&b':') {
            return None;
        }
        *pos += 1;
        let v_start = scratch.len();
        value(s, pos, &mut scratch, pool)?;
        members.push(Member {
            sort,
            raw,
            value: v_start..scratch.len(),
        });
        match *s.get(*pos)? {
            b',' => *pos += 1,
            b'}' => {
                *pos += 1;
                break;
            }
            _ => return None,
        }
    }
    members.sort_unstable_by(|a, b| a.sort.cmp(&b.sort));
    out.push(b'{');
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(s.get(m.raw.clone())?);
        out.push(b':');
        out.extend_from_slice(scratch.get(m.value.clone())?);
    }
    out.push(b'}');
    pool.0.push((members, scratch));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{Event, ObjectReference, ResponseStatus, UserInfo};
    use serde::Serialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn both<T: Serialize>(v: &T) -> (String, String) {
        let line = serde_json::to_vec(v).unwrap();
        (
            String::from_utf8(from_compact(&line).expect("compact")).unwrap(),
            String::from_utf8(via_value(v).unwrap()).unwrap(),
        )
    }

    #[test]
    fn matches_the_value_path_on_events() {
        let full = Event {
            audit_id: "a\"b\\c\u{1}é\u{2028}".into(),
            request_uri: "/api/v1/namespaces/x/pods?labelSelector=a%3Db&watch=1".into(),
            verb: "create".into(),
            user: UserInfo {
                username: "alice".into(),
                uid: "u".into(),
                groups: vec!["b".into(), "a".into()],
                extra: BTreeMap::from([
                    ("scopes".into(), vec!["x".into()]),
                    ("Z".into(), vec![]),
                    ("a\"quote".into(), vec!["q".into()]),
                    ("a\\back".into(), vec![]),
                    ("a\u{7f}".into(), vec![]),
                    ("a\u{1}ctl".into(), vec![]),
                ]),
            },
            impersonated_user: Some(UserInfo::default()),
            source_ips: vec!["::1".into(), "10.0.0.1".into()],
            user_agent: "kubectl".into(),
            object_ref: Some(ObjectReference {
                resource: "pods".into(),
                subresource: "exec".into(),
                ..ObjectReference::default()
            }),
            response_status: Some(ResponseStatus {
                details: Some(json!({"retryAfterSeconds": 3, "causes": [{"field": "x"}]})),
                ..ResponseStatus::failure(429, "TooManyRequests", "slow down")
            }),
            request_object: Some(json!({
                "kind": "Pod", "spec": {"containers": [{"name": "c", "image": "i"}],
                "priority": -1, "weight": 0.5, "big": 1e300, "small": 1e-7, "max": u64::MAX,
                "neg0": -0.0, "nothing": null, "t": true, "f": false, "empty": {}, "list": [],
                "nested": [[], [{}], [[1, [2]]]]},
                "apiVersion": "v1", "ÿ": 1, "Ä": 2, "a": 3, "B": 4, "": 5, "a,b:c}": "]}"
            })),
            response_object: Some(json!([1, "two", {"3": 4}])),
            authentication_metadata: Some(json!({"impersonationConstraint": "x"})),
            annotations: BTreeMap::from([
                ("portcullis.io/tenant".into(), "team-a".into()),
                ("authorization.k8s.io/decision".into(), "allow".into()),
            ]),
            ..Event::default()
        };
        for e in [&full, &Event::default()] {
            let (fast, slow) = both(e);
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn scalars_and_containers() {
        for v in [
            json!(null),
            json!(true),
            json!(-12),
            json!(1.5),
            json!("x\"y"),
            json!([]),
            json!({}),
            json!({"b": [{"d": 1, "c": 2}], "a": {"z": {}, "y": []}}),
            json!({"\"": 1, "\\": 2, "\u{1f}": 3, "é": 4, "e": 5}),
        ] {
            let (fast, slow) = both(&v);
            assert_eq!(fast, slow, "{v}");
        }
    }

    #[test]
    fn refuses_what_serde_json_would_not_write() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\" : 1}",
            b"[1 ,2]",
            b"{\"a\":1,}",
            b"[1]x",
            b"{a:1}",
            b"\"open",
            b"[,]",
        ] {
            assert_eq!(
                from_compact(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
