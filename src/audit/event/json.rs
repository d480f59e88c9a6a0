//! An [`Event`]'s JSON line and, in the same pass, its canonical bytes for the hash chain.
//!
//! The line is byte for byte what `serde_json::to_vec(&event)` writes (Go's field order, see the
//! parent module); the canonical bytes are byte for byte what
//! [`chain::write_canonical`](crate::audit::chain::write_canonical) makes of the event's
//! `Value` (members sorted by key, compact). The tests hold both to those references.
//!
//! Why not serialize with serde and then reorder: that was three passes over every byte (serde's
//! escaping, a scan of the whole line to find its members, and a copy per nesting level) and
//! cost more than the rest of the event's life (callgrind: ≈ 30 k instructions per event).
//! Here each value is written once into a scratch buffer; an object is then assembled twice
//! from its members' bytes, once in line order and once sorted, and only objects whose two
//! orders differ (`user`, `objectRef`, `responseStatus`, the top level) pay for the second.
//! A string that needs no escaping (no `"`, `\` or control character: nearly all of them) is
//! copied as it is; any other goes through serde_json, so escaping is serde_json's.

use std::{collections::BTreeMap, ops::Range};

use super::{Event, MicroTime, ObjectReference, ResponseStatus, UserInfo};

/// A value written into the scratch buffer: where its line form and its canonical form are
/// (the same bytes unless it is an object whose member order differs).
#[derive(Clone)]
struct Two {
    line: Range<usize>,
    canon: Range<usize>,
}

/// One member of an object being assembled.
type Member = (&'static str, Two);

/// `event`'s line (no newline) and, when `chained`, its canonical bytes.
pub fn write(event: &Event, chained: bool) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut w = Writer {
        buf: Vec::with_capacity(1024),
        chained,
    };
    let mut members: Vec<Member> = Vec::with_capacity(20);
    members.push(("kind", w.str(&event.kind)));
    members.push(("apiVersion", w.str(&event.api_version)));
    members.push(("level", w.plain(event.level.as_str())));
    members.push(("auditID", w.str(&event.audit_id)));
    members.push(("stage", w.plain(event.stage.as_str())));
    members.push(("requestURI", w.str(&event.request_uri)));
    members.push(("verb", w.str(&event.verb)));
    members.push(("user", w.user(&event.user)));
    if let Some(u) = &event.impersonated_user {
        members.push(("impersonatedUser", w.user(u)));
    }
    if !event.source_ips.is_empty() {
        members.push(("sourceIPs", w.strings(&event.source_ips)));
    }
    if !event.user_agent.is_empty() {
        members.push(("userAgent", w.str(&event.user_agent)));
    }
    if let Some(r) = &event.object_ref {
        members.push(("objectRef", w.object_ref(r)));
    }
    if let Some(s) = &event.response_status {
        members.push(("responseStatus", w.response_status(s)));
    }
    if let Some(v) = &event.request_object {
        members.push(("requestObject", w.value(v)));
    }
    if let Some(v) = &event.response_object {
        members.push(("responseObject", w.value(v)));
    }
    members.push((
        "requestReceivedTimestamp",
        w.time(event.request_received_timestamp),
    ));
    members.push(("stageTimestamp", w.time(event.stage_timestamp)));
    if let Some(v) = &event.authentication_metadata {
        members.push(("authenticationMetadata", w.value(v)));
    }
    if !event.annotations.is_empty() {
        members.push(("annotations", w.string_map(&event.annotations)));
    }
    let mut line = Vec::with_capacity(w.buf.len() + 16 * members.len());
    object_into(&w.buf, &members, |t| &t.line, &mut line);
    let canonical = chained.then(|| {
        members.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(line.len());
        object_into(&w.buf, &members, |t| &t.canon, &mut out);
        out
    });
    (line, canonical)
}

/// `{"k":v,…}` from members whose values are in `buf` (`form` picks line or canonical).
fn object_into(buf: &[u8], members: &[Member], form: fn(&Two) -> &Range<usize>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Keys are this module's field names: plain ASCII, nothing to escape.
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(buf.get(form(value).clone()).unwrap_or_default());
    }
    out.push(b'}');
}

struct Writer {
    buf: Vec<u8>,
    chained: bool,
}

impl Writer {
    /// A value whose line and canonical forms are the same bytes.
    fn leaf(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> Two {
        let start = self.buf.len();
        f(&mut self.buf);
        let r = start..self.buf.len();
        Two {
            line: r.clone(),
            canon: r,
        }
    }

    fn str(&mut self, s: &str) -> Two {
        self.leaf(|b| write_str(b, s))
    }

    /// A string known to need no escaping (the enums' names).
    fn plain(&mut self, s: &'static str) -> Two {
        self.leaf(|b| {
            b.push(b'"');
            b.extend_from_slice(s.as_bytes());
            b.push(b'"');
        })
    }

    fn strings(&mut self, items: &[String]) -> Two {
        self.leaf(|b| write_strings(b, items))
    }

    fn time(&mut self, t: MicroTime) -> Two {
        self.leaf(|b| match t.rfc3339() {
            Some(text) => {
                b.push(b'"');
                b.extend_from_slice(&text);
                b.push(b'"');
            }
            // Out of RFC 3339's range: as `Serialize` writes it (its Display form).
            None => write_str(b, &t.to_string()),
        })
    }

    /// A `BTreeMap` is already in key order, which is the canonical order.
    fn string_map(&mut self, map: &BTreeMap<String, String>) -> Two {
        self.leaf(|b| {
            b.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                write_str(b, k);
                b.push(b':');
                write_str(b, v);
            }
            b.push(b'}');
        })
    }

    /// Any JSON value as serde_json writes it; its canonical form is recomputed only when it
    /// holds an object (a map's member order is the one thing that can differ).
    fn value<T: serde::Serialize>(&mut self, v: &T) -> Two {
        let start = self.buf.len();
        // Writing a `Value` into a Vec cannot fail (no I/O, string keys only).
        let _ = serde_json::to_writer(&mut self.buf, v);
        let line = start..self.buf.len();
        let written = self.buf.get(line.clone()).unwrap_or_default();
        if !self.chained || !written.contains(&b'{') {
            return Two {
                line: line.clone(),
                canon: line,
            };
        }
        let canon = match crate::audit::canonical::from_compact(written) {
            Some(c) => c,
            // Never for serde_json's own output; the `Value` path is the safety net.
            None => crate::audit::canonical::via_value(v).unwrap_or_default(),
        };
        let at = self.buf.len();
        self.buf.extend_from_slice(&canon);
        Two {
            line,
            canon: at..self.buf.len(),
        }
    }

    /// An object from its members in line order; also sorted when the hash chain needs it.
    fn object(&mut self, mut members: Vec<Member>) -> Two {
        let mut line_bytes = Vec::with_capacity(64);
        object_into(&self.buf, &members, |t| &t.line, &mut line_bytes);
        let at = self.buf.len();
        self.buf.extend_from_slice(&line_bytes);
        let line = at..self.buf.len();
        if !self.chained {
            return Two {
                line: line.clone(),
                canon: line,
            };
        }
        members.sort_unstable_by(|a, b| a.0.cmp(b.0));
        line_bytes.clear();
        object_into(&self.buf, &members, |t| &t.canon, &mut line_bytes);
        let at = self.buf.len();
        self.buf.extend_from_slice(&line_bytes);
        Two {
            line,
            canon: at..self.buf.len(),
        }
    }

    fn user(&mut self, u: &UserInfo) -> Two {
        let mut m: Vec<Member> = Vec::with_capacity(4);
        if !u.username.is_empty() {
            m.push(("username", self.str(&u.username)));
        }
        if !u.uid.is_empty() {
            m.push(("uid", self.str(&u.uid)));
        }
        if !u.groups.is_empty() {
            m.push(("groups", self.strings(&u.groups)));
        }
        if !u.extra.is_empty() {
            m.push((
                "extra",
                self.leaf(|b| {
                    b.push(b'{');
                    for (i, (k, v)) in u.extra.iter().enumerate() {
                        if i > 0 {
                            b.push(b',');
                        }
                        write_str(b, k);
                        b.push(b':');
                        write_strings(b, v);
                    }
                    b.push(b'}');
                }),
            ));
        }
        self.object(m)
    }

    fn object_ref(&mut self, r: &ObjectReference) -> Two {
        let mut m: Vec<Member> = Vec::with_capacity(8);
        for (key, value) in [
            ("resource", &r.resource),
            ("namespace", &r.namespace),
            ("name", &r.name),
            ("uid", &r.uid),
            ("apiGroup", &r.api_group),
            ("apiVersion", &r.api_version),
            ("resourceVersion", &r.resource_version),
            ("subresource", &r.subresource),
        ] {
            if !value.is_empty() {
                m.push((key, self.str(value)));
            }
        }
        self.object(m)
    }

    fn response_status(&mut self, s: &ResponseStatus) -> Two {
        let mut m: Vec<Member> = Vec::with_capacity(6);
        let metadata = if s.metadata.is_empty() {
            self.leaf(|b| b.extend_from_slice(b"{}"))
        } else {
            self.value(&s.metadata)
        };
        m.push(("metadata", metadata));
        for (key, value) in [
            ("status", &s.status),
            ("message", &s.message),
            ("reason", &s.reason),
        ] {
            if !value.is_empty() {
                m.push((key, self.str(value)));
            }
        }
        if let Some(d) = &s.details {
            m.push(("details", self.value(d)));
        }
        if s.code != 0 {
            let code = s.code;
            m.push((
                "code",
                self.leaf(|b| b.extend_from_slice(itoa::Buffer::new().format(code).as_bytes())),
            ));
        }
        self.object(m)
    }
}

/// `["a","b"]`.
fn write_strings(b: &mut Vec<u8>, items: &[String]) {
    b.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        write_str(b, s);
    }
    b.push(b']');
}

/// A JSON string as serde_json writes it.
fn write_str(b: &mut Vec<u8>, s: &str) {
    // Without a short cut, so the compiler can check many bytes at a time.
    let needs_escape = s.bytes().fold(false, |acc, c| {
        acc | (c < 0x20) | (c == b'"') | (c == b'\\')
    });
    if needs_escape {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *b, s);
        return;
    }
    b.reserve(s.len() + 2);
    b.push(b'"');
    b.extend_from_slice(s.as_bytes());
    b.push(b'"');
}

#[cfg(test)]
mod tests;
