//! The review objects as kubectl sends them (`kubectl auth whoami|can-i` post
//! `application/vnd.kubernetes.protobuf`): the `k8s\0` runtime.Unknown envelope around a
//! SelfSubjectReview, (Self|Local)SubjectAccessReview or SelfSubjectRulesReview, decoded into
//! the JSON the review handlers read ([`decode`]); and the answer encoded the same way
//! ([`encode`]) for a client that accepts nothing else. Shared by the proxy (which answers the
//! self-reviews) and the sandbox (which answers them all). Pure.
//!
//! Accepts the fields the reviews use (the spec's attributes, user, groups, uid, namespace);
//! drops the rest (metadata, extra, selectors). Rejects malformed protobuf or an unknown envelope
//! (an error string; the caller answers 415). Field numbers are those of
//! `k8s.io/api/{authentication,authorization}/v1/generated.proto`.

use serde_json::{json, Map, Value};

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The length-delimited fields of a message, `(number, bytes)`; other wire types skipped.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    let bad = || "malformed protobuf".to_string();
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = varint(&mut buf).ok_or_else(bad)?;
        let skip = match tag & 7 {
            0 => {
                varint(&mut buf).ok_or_else(bad)?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let n = usize::try_from(varint(&mut buf).ok_or_else(bad)?).map_err(|_| bad())?;
                let (v, rest) = buf.split_at_checked(n).ok_or_else(bad)?;
                out.push((tag >> 3, v));
                buf = rest;
                0
            }
            _ => return Err(bad()),
        };
        buf = buf.get(skip..).ok_or_else(bad)?;
    }
    Ok(out)
}

fn text(b: &[u8]) -> Value {
    json!(String::from_utf8_lossy(b))
}

/// A message of string fields, named by number (`names[n-1]`).
fn strings(buf: &[u8], names: &[&str]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, v) in fields(buf)? {
        if let Some(name) = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| names.get(i))
        {
            m.insert(name.to_string(), text(v));
        }
    }
    Ok(Value::Object(m))
}

const RESOURCE_ATTRIBUTES: &[&str] = &[
    "namespace",
    "verb",
    "group",
    "version",
    "resource",
    "subresource",
    "name",
];

fn access_spec(buf: &[u8], self_review: bool) -> Result<Value, String> {
    let mut spec = json!({});
    let mut groups = Vec::new();
    for (n, v) in fields(buf)? {
        match (n, self_review) {
            (1, _) => spec["resourceAttributes"] = strings(v, RESOURCE_ATTRIBUTES)?,
            (2, _) => spec["nonResourceAttributes"] = strings(v, &["path", "verb"])?,
            (3, false) => spec["user"] = text(v),
            (4, false) => groups.push(text(v)),
            (6, false) => spec["uid"] = text(v),
            _ => {}
        }
    }
    if !groups.is_empty() {
        spec["groups"] = json!(groups);
    }
    Ok(spec)
}

/// Decode a protobuf review body into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let inner = body
        .strip_prefix(b"k8s\0")
        .ok_or("the protobuf body lacks the k8s envelope")?;
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, v) in fields(inner)? {
        match n {
            1 => {
                for (m, w) in fields(v)? {
                    if m == 2 {
                        kind = String::from_utf8_lossy(w).into_owned();
                    }
                }
            }
            2 => raw = v,
            _ => {}
        }
    }
    let spec_bytes = fields(raw)?
        .into_iter()
        .find(|(n, _)| *n == 2)
        .map(|(_, v)| v);
    let spec = match (kind.as_str(), spec_bytes) {
        ("SelfSubjectReview", _) => json!({}),
        (_, None) => json!({}),
        ("SelfSubjectAccessReview", Some(s)) => access_spec(s, true)?,
        ("SubjectAccessReview" | "LocalSubjectAccessReview", Some(s)) => access_spec(s, false)?,
        ("SelfSubjectRulesReview", Some(s)) => strings(s, &["namespace"])?,
        (other, _) => return Err(format!("a protobuf {other} is not a review")),
    };
    Ok(json!({"kind": kind, "spec": spec}))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (string, bytes, message).
fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A string field, omitted when empty (proto2 optional, as Go's generated code writes it
/// always; an empty string decodes the same either way).
fn put_str(out: &mut Vec<u8>, field: u64, v: &Value) {
    if let Some(s) = v.as_str() {
        put_bytes(out, field, s.as_bytes());
    }
}

fn put_strs(out: &mut Vec<u8>, field: u64, v: &Value) {
    for s in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
        put_bytes(out, field, s.as_bytes());
    }
}

fn put_bool(out: &mut Vec<u8>, field: u64, v: &Value) {
    put_varint(out, field << 3);
    put_varint(out, u64::from(v.as_bool().unwrap_or(false)));
}

fn message(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut m = Vec::new();
    f(&mut m);
    m
}

fn attributes(a: &Value, names: &[&str]) -> Vec<u8> {
    message(|m| {
        for (i, n) in (1u64..).zip(names) {
            put_str(m, i, &a[*n]);
        }
    })
}

/// Encode a review answer (`kind`, `apiVersion`, `spec`, `status` as JSON) as kubectl's
/// protobuf: `k8s\0` + runtime.Unknown{typeMeta, raw}. `None` for a kind this does not know.
pub fn encode(obj: &Value) -> Option<Vec<u8>> {
    let (spec, status) = (&obj["spec"], &obj["status"]);
    let meta = message(|_| {});
    let raw = match obj["kind"].as_str()? {
        "SelfSubjectReview" => message(|m| {
            put_bytes(m, 1, &meta);
            let u = &status["userInfo"];
            let user = message(|m| {
                put_str(m, 1, &u["username"]);
                put_str(m, 2, &u["uid"]);
                put_strs(m, 3, &u["groups"]);
                for (k, vs) in u["extra"].as_object().into_iter().flatten() {
                    let entry = message(|m| {
                        put_bytes(m, 1, k.as_bytes());
                        put_bytes(m, 2, &message(|m| put_strs(m, 1, vs)));
                    });
                    put_bytes(m, 4, &entry);
                }
            });
            put_bytes(m, 2, &message(|m| put_bytes(m, 1, &user)));
        }),
        "SelfSubjectAccessReview" => message(|m| {
            put_bytes(m, 1, &meta);
            put_bytes(
                m,
                2,
                &message(|m| {
                    if spec["resourceAttributes"].is_object() {
                        put_bytes(
                            m,
                            1,
                            &attributes(&spec["resourceAttributes"], RESOURCE_ATTRIBUTES),
                        );
                    }
                    if spec["nonResourceAttributes"].is_object() {
                        put_bytes(
                            m,
                            2,
                            &attributes(&spec["nonResourceAttributes"], &["path", "verb"]),
                        );
                    }
                }),
            );
            put_bytes(
                m,
                3,
                &message(|m| {
                    put_bool(m, 1, &status["allowed"]);
                    put_str(m, 2, &status["reason"]);
                    put_str(m, 3, &status["evaluationError"]);
                    put_bool(m, 4, &status["denied"]);
                }),
            );
        }),
        "SelfSubjectRulesReview" => message(|m| {
            put_bytes(m, 1, &meta);
            put_bytes(m, 2, &message(|m| put_str(m, 1, &spec["namespace"])));
            put_bytes(
                m,
                3,
                &message(|m| {
                    for r in status["resourceRules"].as_array().into_iter().flatten() {
                        put_bytes(
                            m,
                            1,
                            &message(|m| {
                                put_strs(m, 1, &r["verbs"]);
                                put_strs(m, 2, &r["apiGroups"]);
                                put_strs(m, 3, &r["resources"]);
                                put_strs(m, 4, &r["resourceNames"]);
                            }),
                        );
                    }
                    for r in status["nonResourceRules"].as_array().into_iter().flatten() {
                        put_bytes(
                            m,
                            2,
                            &message(|m| {
                                put_strs(m, 1, &r["verbs"]);
                                put_strs(m, 2, &r["nonResourceURLs"]);
                            }),
                        );
                    }
                    put_bool(m, 3, &status["incomplete"]);
                    put_str(m, 4, &status["evaluationError"]);
                }),
            );
        }),
        _ => return None,
    };
    let type_meta = message(|m| {
        put_str(m, 1, &obj["apiVersion"]);
        put_str(m, 2, &obj["kind"]);
    });
    let mut out = b"k8s\0".to_vec();
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, &raw);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u8, v: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3) | 2, v.len() as u8];
        out.extend_from_slice(v);
        out
    }

    #[test]
    fn self_subject_access_review() {
        let attrs = [field(1, b"team-a"), field(2, b"create"), field(5, b"pods")].concat();
        let spec = field(1, &attrs);
        let raw = field(2, &spec);
        let type_meta = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(
            v["spec"]["resourceAttributes"],
            json!({"namespace": "team-a", "verb": "create", "resource": "pods"})
        );
        assert!(decode(b"k8s\0\xff").is_err());
        // What we encode, we (and so kubectl's decoder, same field numbers) read back.
        let answer = json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "spec": {"resourceAttributes": {"namespace": "team-a", "verb": "create", "resource": "pods"}},
            "status": {"allowed": true, "reason": "r"}});
        let back = decode(&encode(&answer).unwrap()).unwrap();
        assert_eq!(
            back["spec"]["resourceAttributes"],
            answer["spec"]["resourceAttributes"]
        );
        let encoded = encode(&answer).unwrap();
        let envelope = fields(encoded.get(4..).unwrap()).unwrap();
        let raw = fields(envelope[1].1)
            .unwrap()
            .into_iter()
            .find(|(n, _)| *n == 3)
            .map(|(_, v)| v.to_vec())
            .unwrap();
        assert_eq!(raw, [8, 1, 18, 1, b'r', 32, 0]);
        assert!(decode(b"{}").is_err());
    }
}
