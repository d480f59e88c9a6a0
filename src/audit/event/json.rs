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
//! from its members' bytes, once in line order and once in canonical order (each member's
//! name has a fixed rank; members are visited by rank, never sorted or moved), and only objects
//! whose two orders differ (`user`, `objectRef`, `responseStatus`, the top level) pay for the
//! second.
//! A string that needs no escaping (no `"`, `\` or control character: nearly all of them) is
//! copied as it is; any other goes through serde_json, so escaping is serde_json's.

use std::{collections::BTreeMap, ops::Range};

use smallvec::SmallVec;

use super::{Event, MicroTime, ObjectReference, ResponseStatus, UserInfo};

/// A value written into the scratch buffer: where its line form and its canonical form are
/// (the same bytes unless it is an object whose member order differs).
#[derive(Clone)]
struct Two {
    line: Range<usize>,
    canon: Range<usize>,
}

/// A member's JSON name (plain ASCII: nothing to escape) and its rank among its object's
/// members sorted by name: canonical order is rank order, so no string is compared at run time.
type Key = (&'static str, u8);

/// One member of an object being assembled.
type Member = (Key, Two);

/// The members of a nested object (at most 8), kept on the stack.
type Members = SmallVec<[Member; 8]>;

/// The event's members: JSON name and rank in canonical (sorted) order.
mod top {
    use super::Key;
    pub const KIND: Key = ("kind", 5);
    pub const API_VERSION: Key = ("apiVersion", 1);
    pub const LEVEL: Key = ("level", 6);
    pub const AUDIT_ID: Key = ("auditID", 2);
    pub const STAGE: Key = ("stage", 14);
    pub const REQUEST_URI: Key = ("requestURI", 10);
    pub const VERB: Key = ("verb", 18);
    pub const USER: Key = ("user", 16);
    pub const IMPERSONATED_USER: Key = ("impersonatedUser", 4);
    pub const SOURCE_IPS: Key = ("sourceIPs", 13);
    pub const USER_AGENT: Key = ("userAgent", 17);
    pub const OBJECT_REF: Key = ("objectRef", 7);
    pub const RESPONSE_STATUS: Key = ("responseStatus", 12);
    pub const REQUEST_OBJECT: Key = ("requestObject", 8);
    pub const RESPONSE_OBJECT: Key = ("responseObject", 11);
    pub const REQUEST_RECEIVED_TIMESTAMP: Key = ("requestReceivedTimestamp", 9);
    pub const STAGE_TIMESTAMP: Key = ("stageTimestamp", 15);
    pub const AUTHENTICATION_METADATA: Key = ("authenticationMetadata", 3);
    pub const ANNOTATIONS: Key = ("annotations", 0);
    /// Every member, in line order (for the test of the ranks).
    #[cfg(test)]
    pub const ALL: [Key; 19] = [
        KIND,
        API_VERSION,
        LEVEL,
        AUDIT_ID,
        STAGE,
        REQUEST_URI,
        VERB,
        USER,
        IMPERSONATED_USER,
        SOURCE_IPS,
        USER_AGENT,
        OBJECT_REF,
        RESPONSE_STATUS,
        REQUEST_OBJECT,
        RESPONSE_OBJECT,
        REQUEST_RECEIVED_TIMESTAMP,
        STAGE_TIMESTAMP,
        AUTHENTICATION_METADATA,
        ANNOTATIONS,
    ];
}

/// `UserInfo`'s members.
mod user {
    use super::Key;
    pub const USERNAME: Key = ("username", 3);
    pub const UID: Key = ("uid", 2);
    pub const GROUPS: Key = ("groups", 1);
    pub const EXTRA: Key = ("extra", 0);
    /// Every member, in line order (for the test of the ranks).
    #[cfg(test)]
    pub const ALL: [Key; 4] = [USERNAME, UID, GROUPS, EXTRA];
}

/// `ObjectReference`'s members.
mod oref {
    use super::Key;
    pub const RESOURCE: Key = ("resource", 4);
    pub const NAMESPACE: Key = ("namespace", 3);
    pub const NAME: Key = ("name", 2);
    pub const UID: Key = ("uid", 7);
    pub const API_GROUP: Key = ("apiGroup", 0);
    pub const API_VERSION: Key = ("apiVersion", 1);
    pub const RESOURCE_VERSION: Key = ("resourceVersion", 5);
    pub const SUBRESOURCE: Key = ("subresource", 6);
    /// Every member, in line order (for the test of the ranks).
    #[cfg(test)]
    pub const ALL: [Key; 8] = [
        RESOURCE,
        NAMESPACE,
        NAME,
        UID,
        API_GROUP,
        API_VERSION,
        RESOURCE_VERSION,
        SUBRESOURCE,
    ];
}

/// `ResponseStatus`'s members.
mod status {
    use super::Key;
    pub const METADATA: Key = ("metadata", 3);
    pub const STATUS: Key = ("status", 5);
    pub const MESSAGE: Key = ("message", 2);
    pub const REASON: Key = ("reason", 4);
    pub const DETAILS: Key = ("details", 1);
    pub const CODE: Key = ("code", 0);
    /// Every member, in line order (for the test of the ranks).
    #[cfg(test)]
    pub const ALL: [Key; 6] = [METADATA, STATUS, MESSAGE, REASON, DETAILS, CODE];
}

/// An event's line and, when chained, its canonical bytes: one allocation, the line first.
pub struct Written {
    bytes: Vec<u8>,
    /// Where the line ends and the canonical bytes begin.
    line_end: usize,
    chained: bool,
}

impl Written {
    /// The JSON line, no newline.
    pub fn line(&self) -> &[u8] {
        self.bytes.get(..self.line_end).unwrap_or_default()
    }

    /// The canonical bytes, if they were asked for.
    pub fn canonical(&self) -> Option<&[u8]> {
        self.chained
            .then(|| self.bytes.get(self.line_end..).unwrap_or_default())
    }
}

thread_local! {
    /// The members' values of the event being written. Kept between events: a fresh 1 KiB
    /// buffer per event was two allocator calls and, with many requests in flight, memory
    /// that was cold in the cache when written.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A scratch buffer larger than this (an event with a large request or response object) is
/// not kept for the next event: the thread would hold the largest event's size forever.
const SCRATCH_KEPT: usize = 16 * 1024;

/// `event`'s line (no newline) and, when `chained`, its canonical bytes.
pub fn write(event: &Event, chained: bool) -> Written {
    let mut buf = SCRATCH.with(std::cell::Cell::take);
    buf.clear();
    buf.reserve(1024);
    let mut w = Writer { buf, chained };
    let mut members: SmallVec<[Member; 20]> = SmallVec::new();
    members.push((top::KIND, w.str(&event.kind)));
    members.push((top::API_VERSION, w.str(&event.api_version)));
    members.push((top::LEVEL, w.plain(event.level.as_str())));
    members.push((top::AUDIT_ID, w.str(&event.audit_id)));
    members.push((top::STAGE, w.plain(event.stage.as_str())));
    members.push((top::REQUEST_URI, w.str(&event.request_uri)));
    members.push((top::VERB, w.str(&event.verb)));
    members.push((top::USER, w.user(&event.user)));
    if let Some(u) = &event.impersonated_user {
        members.push((top::IMPERSONATED_USER, w.user(u)));
    }
    if !event.source_ips.is_empty() {
        members.push((top::SOURCE_IPS, w.strings(&event.source_ips)));
    }
    if !event.user_agent.is_empty() {
        members.push((top::USER_AGENT, w.str(&event.user_agent)));
    }
    if let Some(r) = &event.object_ref {
        members.push((top::OBJECT_REF, w.object_ref(r)));
    }
    if let Some(s) = &event.response_status {
        members.push((top::RESPONSE_STATUS, w.response_status(s)));
    }
    if let Some(v) = &event.request_object {
        members.push((top::REQUEST_OBJECT, w.value(v)));
    }
    if let Some(v) = &event.response_object {
        members.push((top::RESPONSE_OBJECT, w.value(v)));
    }
    members.push((
        top::REQUEST_RECEIVED_TIMESTAMP,
        w.time(event.request_received_timestamp),
    ));
    members.push((top::STAGE_TIMESTAMP, w.time(event.stage_timestamp)));
    if let Some(v) = &event.authentication_metadata {
        members.push((top::AUTHENTICATION_METADATA, w.value(v)));
    }
    if !event.annotations.is_empty() {
        members.push((top::ANNOTATIONS, w.string_map(&event.annotations)));
    }
    // Each form is about the values' bytes plus the members' names.
    let one = w.buf.len() + 16 * members.len();
    let mut bytes = Vec::with_capacity(if chained { 2 * one } else { one });
    object_into(&w.buf, &members, |t| &t.line, &mut bytes);
    let line_end = bytes.len();
    if chained {
        object_into(&w.buf, by_rank(&members), |t| &t.canon, &mut bytes);
    }
    if w.buf.capacity() <= SCRATCH_KEPT {
        SCRATCH.with(|s| s.set(w.buf));
    }
    Written {
        bytes,
        line_end,
        chained,
    }
}

/// Above every rank (a bit of a `u32` each): no object has this many members.
const RANKS: usize = 32;

/// `members` in rank (canonical) order, without moving them: each member's index is placed at
/// its rank, which is unique within its object, and the ranks present are visited lowest first
/// through a bit set (sorting the 56-byte members cost more).
fn by_rank(members: &[Member]) -> impl Iterator<Item = &Member> {
    let mut at = [0u8; RANKS];
    let mut present: u32 = 0;
    for (i, m) in members.iter().enumerate() {
        let rank = usize::from(m.0 .1);
        if let (Some(slot), Ok(i)) = (at.get_mut(rank), u8::try_from(i)) {
            *slot = i;
            present |= 1 << rank;
        }
    }
    std::iter::from_fn(move || {
        if present == 0 {
            return None;
        }
        let rank = present.trailing_zeros() as usize;
        present &= present - 1;
        Some(rank)
    })
    .filter_map(move |rank| at.get(rank).and_then(|&i| members.get(usize::from(i))))
}

/// `{"k":v,…}` appended to `out`; `value` appends one member's value.
fn assemble<'a>(
    out: &mut Vec<u8>,
    members: impl IntoIterator<Item = &'a Member>,
    mut value: impl FnMut(&mut Vec<u8>, &Two),
) {
    out.push(b'{');
    for (i, ((key, _), v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Keys are this module's field names: plain ASCII, nothing to escape.
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        value(out, v);
    }
    out.push(b'}');
}

/// An object from members whose values are in `buf`, appended to `out` (`form` picks line or
/// canonical).
fn object_into<'a>(
    buf: &[u8],
    members: impl IntoIterator<Item = &'a Member>,
    form: fn(&Two) -> &Range<usize>,
    out: &mut Vec<u8>,
) {
    assemble(out, members, |out, v| {
        out.extend_from_slice(buf.get(form(v).clone()).unwrap_or_default())
    });
}

/// [`object_into`] appending to the buffer that holds the members' values.
fn object_within<'a>(
    buf: &mut Vec<u8>,
    members: impl IntoIterator<Item = &'a Member>,
    form: fn(&Two) -> &Range<usize>,
) {
    assemble(buf, members, |buf, v| {
        let range = form(v).clone();
        // Ranges are of bytes already written, so always within; an empty one otherwise.
        if range.end <= buf.len() {
            buf.extend_from_within(range);
        }
    });
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
    fn object(&mut self, members: &[Member]) -> Two {
        let at = self.buf.len();
        object_within(&mut self.buf, members, |t| &t.line);
        let line = at..self.buf.len();
        if !self.chained {
            return Two {
                line: line.clone(),
                canon: line,
            };
        }
        let at = self.buf.len();
        object_within(&mut self.buf, by_rank(members), |t| &t.canon);
        Two {
            line,
            canon: at..self.buf.len(),
        }
    }

    fn user(&mut self, u: &UserInfo) -> Two {
        let mut m: Members = Members::new();
        if !u.username.is_empty() {
            m.push((user::USERNAME, self.str(&u.username)));
        }
        if !u.uid.is_empty() {
            m.push((user::UID, self.str(&u.uid)));
        }
        if !u.groups.is_empty() {
            m.push((user::GROUPS, self.strings(&u.groups)));
        }
        if !u.extra.is_empty() {
            m.push((
                user::EXTRA,
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
        self.object(&m)
    }

    fn object_ref(&mut self, r: &ObjectReference) -> Two {
        let mut m: Members = Members::new();
        for (key, value) in [
            (oref::RESOURCE, &r.resource),
            (oref::NAMESPACE, &r.namespace),
            (oref::NAME, &r.name),
            (oref::UID, &r.uid),
            (oref::API_GROUP, &r.api_group),
            (oref::API_VERSION, &r.api_version),
            (oref::RESOURCE_VERSION, &r.resource_version),
            (oref::SUBRESOURCE, &r.subresource),
        ] {
            if !value.is_empty() {
                m.push((key, self.str(value)));
            }
        }
        self.object(&m)
    }

    fn response_status(&mut self, s: &ResponseStatus) -> Two {
        let mut m: Members = Members::new();
        let metadata = if s.metadata.is_empty() {
            self.leaf(|b| b.extend_from_slice(b"{}"))
        } else {
            self.value(&s.metadata)
        };
        m.push((status::METADATA, metadata));
        for (key, value) in [
            (status::STATUS, &s.status),
            (status::MESSAGE, &s.message),
            (status::REASON, &s.reason),
        ] {
            if !value.is_empty() {
                m.push((key, self.str(value)));
            }
        }
        if let Some(d) = &s.details {
            m.push((status::DETAILS, self.value(d)));
        }
        if s.code != 0 {
            let code = s.code;
            m.push((
                status::CODE,
                self.leaf(|b| b.extend_from_slice(itoa::Buffer::new().format(code).as_bytes())),
            ));
        }
        self.object(&m)
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
    if needs_escape(s.as_bytes()) {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *b, s);
        return;
    }
    b.reserve(s.len() + 2);
    b.push(b'"');
    b.extend_from_slice(s.as_bytes());
    b.push(b'"');
}

/// Whether `s` holds a byte serde_json escapes: a control character, `"` or `\`. Eight bytes
/// at a time (the classic "has a byte less than n" word test, exact for n ≤ 128).
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(word);
        let v = u64::from_ne_bytes(b);
        let hit = below(v, 0x20)
            | below(v ^ (ONES * u64::from(b'"')), 1)
            | below(v ^ (ONES * u64::from(b'\\')), 1);
        if hit != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

#[cfg(test)]
mod tests;
