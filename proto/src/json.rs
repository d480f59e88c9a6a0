//! Protobuf → JSON for every message of [`crate::schema`], the inverse of [`crate::encode`]:
//! the JSON form Go's `encoding/json` gives the same object, for any kind of the API (the
//! hand-written, strict decoders of `kinds` remain what judges request bodies).
//!
//! Go writes every non-pointer field, zero or not. Empty strings are left out (Go's
//! `omitempty` drops them from JSON, and no pointer-to-string field carries meaning when
//! empty); zero numbers and `false` are kept, because a pointer field's zero is meaningful
//! (`replicas: 0`) and the schema does not say which fields are pointers. A zero `Time` is
//! `null`, as Go writes it. A field number the schema does not know is skipped (a newer API
//! server's field). Refuses, with [`Error::Malformed`]: malformed protobuf, a wire type that
//! does not match the field, invalid UTF-8 in a string, nesting deeper than
//! [`crate::encode::MAX_DEPTH`].

use std::collections::BTreeMap;

use base64::Engine;
use prost::encoding::{decode_key, decode_varint, WireType};
use serde_json::{json, Map, Value};

use crate::{
    encode::MAX_DEPTH,
    schema::{self, Card, Msg, Ty},
    special, Error,
};

type R<T> = Result<T, Error>;

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Malformed(format!("malformed protobuf: {what}"))
}

/// One wire value.
enum Wire<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    /// Not used by any Kubernetes field (no float / fixed32 in the API).
    Fixed32,
    Len(&'a [u8]),
}

/// The fields of a message by number, in order of appearance.
fn fields(mut buf: &[u8]) -> R<BTreeMap<u32, Vec<Wire<'_>>>> {
    let mut out: BTreeMap<u32, Vec<Wire<'_>>> = BTreeMap::new();
    while !buf.is_empty() {
        let (n, wire) = decode_key(&mut buf).map_err(bad)?;
        let w = match wire {
            WireType::Varint => Wire::Varint(decode_varint(&mut buf).map_err(bad)?),
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).map_err(bad)?).map_err(bad)?;
                let (v, rest) = (buf.get(..len), buf.get(len..));
                let (Some(v), Some(rest)) = (v, rest) else {
                    return Err(bad("a length past the end"));
                };
                buf = rest;
                Wire::Len(v)
            }
            WireType::SixtyFourBit => {
                let (v, rest) = buf.split_at_checked(8).ok_or_else(|| bad("truncated"))?;
                buf = rest;
                Wire::Fixed64(v.try_into().map_err(bad)?)
            }
            WireType::ThirtyTwoBit => {
                let (_, rest) = buf.split_at_checked(4).ok_or_else(|| bad("truncated"))?;
                buf = rest;
                Wire::Fixed32
            }
            WireType::StartGroup | WireType::EndGroup => return Err(bad("groups are not used")),
        };
        out.entry(n).or_default().push(w);
    }
    Ok(out)
}

/// Decode `buf` as the message `message`.
pub fn message(message: &str, buf: &[u8]) -> R<Value> {
    read_message(message, buf, 0)
}

/// The same, `depth` levels down (an object embedded in a `RawExtension` counts its parents,
/// so envelopes nested in envelopes cannot recurse without bound).
pub(crate) fn read_message(name: &str, buf: &[u8], depth: usize) -> R<Value> {
    if depth >= MAX_DEPTH {
        return Err(bad(format!("nesting deeper than {MAX_DEPTH} levels")));
    }
    let fs = fields(buf)?;
    if let Some(v) = special_message(name, &fs, depth)? {
        return Ok(v);
    }
    let msg: &Msg = schema::get()
        .messages
        .get(name)
        .ok_or_else(|| Error::Unsupported(format!("no protobuf message {name}")))?;
    let mut obj = Map::new();
    for (n, occ) in &fs {
        let Some(f) = msg.by_number(*n) else {
            continue;
        };
        let value = match f.card {
            Card::Many => Value::Array(
                occ.iter()
                    .map(|w| read_value(f.ty, w, depth))
                    .collect::<R<Vec<_>>>()?,
            ),
            Card::Map => {
                let mut m = Map::new();
                for w in occ {
                    let Wire::Len(entry) = w else {
                        return Err(bad("a map entry is no message"));
                    };
                    let e = fields(entry)?;
                    let key = match e.get(&1).and_then(|v| v.last()) {
                        Some(w) => read_value(Ty::String, w, depth)?,
                        None => json!(""),
                    };
                    let val = match e.get(&2).and_then(|v| v.last()) {
                        Some(w) => read_value(f.ty, w, depth)?,
                        None => read_value(f.ty, &Wire::Len(&[]), depth)?,
                    };
                    m.insert(key.as_str().unwrap_or_default().to_owned(), val);
                }
                Value::Object(m)
            }
            Card::One => match f.ty {
                // A message sent several times is merged: protobuf reads the concatenation.
                Ty::Message(m) => {
                    let mut all = Vec::new();
                    for w in occ {
                        let Wire::Len(b) = w else {
                            return Err(bad(format!("field {n} of {name} is no message")));
                        };
                        all.extend_from_slice(b);
                    }
                    read_message(m, &all, depth + 1)?
                }
                _ => match occ.last() {
                    Some(w) => read_value(f.ty, w, depth)?,
                    None => continue,
                },
            },
        };
        match (f.json, value) {
            (_, Value::String(s)) if s.is_empty() => {}
            (Some(key), v) => {
                obj.insert(key.to_owned(), v);
            }
            // An embedded Go struct: its fields are the parent's.
            (None, Value::Object(inner)) => obj.extend(inner),
            (None, _) => return Err(bad(format!("field {n} of {name} is no message"))),
        }
    }
    if msg.array {
        return Ok(obj.remove("items").unwrap_or_else(|| json!([])));
    }
    Ok(Value::Object(obj))
}

fn read_value(ty: Ty, w: &Wire<'_>, depth: usize) -> R<Value> {
    Ok(match (ty, w) {
        (Ty::Int32, Wire::Varint(v)) => json!(*v as i64 as i32),
        (Ty::Int64, Wire::Varint(v)) => json!(*v as i64),
        (Ty::Bool, Wire::Varint(v)) => json!(*v != 0),
        (Ty::Double, Wire::Fixed64(b)) => json!(f64::from_le_bytes(*b)),
        (Ty::String, Wire::Len(b)) => {
            json!(std::str::from_utf8(b).map_err(|_| bad("a string is not UTF-8"))?)
        }
        (Ty::Bytes, Wire::Len(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        (Ty::Message(m), Wire::Len(b)) => read_message(m, b, depth + 1)?,
        // Packed repeated scalars (proto3 writers): Go's readers accept them too.
        (Ty::Int32 | Ty::Int64 | Ty::Bool, Wire::Len(_)) => {
            return Err(bad("packed scalars are not used by Kubernetes"))
        }
        _ => return Err(bad("a wire type does not match its field")),
    })
}

fn varint(fs: &BTreeMap<u32, Vec<Wire<'_>>>, n: u32) -> i64 {
    match fs.get(&n).and_then(|v| v.last()) {
        Some(Wire::Varint(v)) => *v as i64,
        _ => 0,
    }
}

fn bytes<'a>(fs: &'a BTreeMap<u32, Vec<Wire<'_>>>, n: u32) -> &'a [u8] {
    match fs.get(&n).and_then(|v| v.last()) {
        Some(Wire::Len(b)) => b,
        _ => &[],
    }
}

fn text(fs: &BTreeMap<u32, Vec<Wire<'_>>>, n: u32) -> R<String> {
    String::from_utf8(bytes(fs, n).to_vec()).map_err(|_| bad("a string is not UTF-8"))
}

/// The types whose JSON is not their fields; `None` for every other message.
fn special_message(
    name: &str,
    fs: &BTreeMap<u32, Vec<Wire<'_>>>,
    depth: usize,
) -> R<Option<Value>> {
    Ok(Some(match name {
        special::TIME | special::MICRO_TIME => {
            let (secs, nanos) = (varint(fs, 1), varint(fs, 2) as i32);
            if secs == 0 && nanos == 0 {
                Value::Null
            } else {
                json!(special::format_time(
                    secs,
                    nanos,
                    name == special::MICRO_TIME
                ))
            }
        }
        special::DURATION => json!(special::format_duration(varint(fs, 1))),
        special::INT_OR_STRING => match varint(fs, 1) {
            1 => json!(text(fs, 3)?),
            _ => json!(varint(fs, 2) as i32),
        },
        special::QUANTITY => json!(text(fs, 1)?),
        special::RAW_EXTENSION | special::FIELDS_V1 | special::EXT_JSON => {
            let raw = bytes(fs, 1);
            if raw.is_empty() {
                Value::Null
            } else if raw.starts_with(b"k8s\0") {
                // An object embedded as protobuf (a watch event's object).
                crate::response::decode_object_at(raw, depth + 1)?
            } else {
                serde_json::from_slice(raw).map_err(|e| bad(format!("embedded JSON: {e}")))?
            }
        }
        _ => return Ok(None),
    }))
}
