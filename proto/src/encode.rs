//! JSON → protobuf for every message of [`crate::schema`], the inverse of [`crate::json`].
//!
//! Walks the JSON object by the schema: each field the object has is written under its number
//! (`null` is absent, as in Go); keys the schema does not know are left out, as the API server
//! prunes unknown fields; an embedded Go struct (`VolumeSource` in `Volume`) is written from
//! the parent's own keys. Maps are written in key order, as Go's generated marshallers do.
//! Refuses, with [`Error::Unsupported`] (the caller answers JSON instead): a value of the wrong
//! JSON type, an integer out of its field's range, bad base64, time or duration text, a kind
//! without a message, a type Go marshals by hand (apiextensions' `JSONSchemaPropsOr*`), and
//! nesting deeper than [`MAX_DEPTH`].

use base64::Engine;
use prost::encoding::{self, encode_key, encode_varint, WireType};
use serde_json::{Map, Value};

use crate::{
    schema::{self, Card, Field, Msg, Ty},
    special, Error,
};

/// As deep as prost's recursion limit, which readers of our output apply.
pub const MAX_DEPTH: usize = 100;

type R<T> = Result<T, Error>;

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("cannot encode as protobuf: {what}"))
}

/// Encode `v` as the message `message`.
pub fn message(message: &str, v: &Value) -> R<Vec<u8>> {
    let mut out = Vec::new();
    write_message(message, v, &mut out, 0)?;
    Ok(out)
}

fn msg_of(name: &str) -> R<&'static Msg> {
    if special::unsupported(name) {
        return Err(bad(format!("{name} is not converted")));
    }
    schema::get()
        .messages
        .get(name)
        .ok_or_else(|| bad(format!("no protobuf message {name}")))
}

fn write_message(name: &str, v: &Value, out: &mut Vec<u8>, depth: usize) -> R<()> {
    if depth >= MAX_DEPTH {
        return Err(bad(format!("nesting deeper than {MAX_DEPTH} levels")));
    }
    if let Some(()) = special_message(name, v, out)? {
        return Ok(());
    }
    let msg = msg_of(name)?;
    if msg.array {
        let items = Value::Object(Map::from_iter([("items".to_owned(), v.clone())]));
        return write_fields(name, msg, &items, out, depth);
    }
    write_fields(name, msg, v, out, depth)
}

fn write_fields(name: &str, msg: &Msg, v: &Value, out: &mut Vec<u8>, depth: usize) -> R<()> {
    let Value::Object(obj) = v else {
        return Err(bad(format!("{name} is not a JSON object")));
    };
    for f in &msg.fields {
        match f.json {
            None => {
                // An embedded Go struct: its keys are the parent's.
                let Ty::Message(inner) = f.ty else {
                    return Err(bad(format!(
                        "{name}: embedded field {} is no message",
                        f.number
                    )));
                };
                let mut buf = Vec::new();
                write_message(inner, v, &mut buf, depth + 1)?;
                if !buf.is_empty() {
                    nested(f.number, &buf, out);
                }
            }
            Some(key) => match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(val) => write_field(f, key, val, out, depth)?,
            },
        }
    }
    Ok(())
}

fn nested(number: u32, buf: &[u8], out: &mut Vec<u8>) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(buf.len() as u64, out);
    out.extend_from_slice(buf);
}

fn write_field(f: &Field, key: &str, v: &Value, out: &mut Vec<u8>, depth: usize) -> R<()> {
    match f.card {
        Card::One => write_value(f.number, f.ty, key, v, out, depth),
        Card::Many => {
            let Value::Array(items) = v else {
                return Err(bad(format!("{key} is not a JSON array")));
            };
            items
                .iter()
                .try_for_each(|i| write_value(f.number, f.ty, key, i, out, depth))
        }
        Card::Map => {
            let Value::Object(m) = v else {
                return Err(bad(format!("{key} is not a JSON object")));
            };
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                let mut entry = Vec::new();
                encoding::string::encode(1, k, &mut entry);
                if let Some(val) = m.get(k).filter(|v| !v.is_null()) {
                    write_value(2, f.ty, key, val, &mut entry, depth)?;
                }
                nested(f.number, &entry, out);
            }
            Ok(())
        }
    }
}

fn int(key: &str, v: &Value) -> R<i64> {
    v.as_i64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| bad(format!("{key} is not an integer")))
}

fn write_value(n: u32, ty: Ty, key: &str, v: &Value, out: &mut Vec<u8>, depth: usize) -> R<()> {
    match ty {
        Ty::String => {
            let s = v
                .as_str()
                .ok_or_else(|| bad(format!("{key} is not a string")))?;
            encoding::string::encode(n, &s.to_owned(), out);
        }
        Ty::Int32 => {
            let i =
                i32::try_from(int(key, v)?).map_err(|_| bad(format!("{key} is out of range")))?;
            encoding::int32::encode(n, &i, out);
        }
        Ty::Int64 => encoding::int64::encode(n, &int(key, v)?, out),
        Ty::Bool => {
            let b = v
                .as_bool()
                .ok_or_else(|| bad(format!("{key} is not a boolean")))?;
            encoding::bool::encode(n, &b, out);
        }
        Ty::Double => {
            let d = v
                .as_f64()
                .ok_or_else(|| bad(format!("{key} is not a number")))?;
            encoding::double::encode(n, &d, out);
        }
        Ty::Bytes => {
            let s = v
                .as_str()
                .ok_or_else(|| bad(format!("{key} is not base64 text")))?;
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| bad(format!("{key} is not base64")))?;
            encoding::bytes::encode(n, &b, out);
        }
        Ty::Message(m) => {
            let mut buf = Vec::new();
            write_message(m, v, &mut buf, depth + 1)?;
            nested(n, &buf, out);
        }
    }
    Ok(())
}

/// The types whose JSON is not their fields; `None` for every other message.
fn special_message(name: &str, v: &Value, out: &mut Vec<u8>) -> R<Option<()>> {
    match name {
        special::TIME | special::MICRO_TIME => {
            let s = v
                .as_str()
                .ok_or_else(|| bad(format!("{name} is not a string")))?;
            let (secs, nanos) =
                special::parse_time(s).ok_or_else(|| bad(format!("{s:?} is not RFC 3339")))?;
            // Go writes both fields (non-pointer).
            encoding::int64::encode(1, &secs, out);
            encoding::int32::encode(2, &nanos, out);
        }
        special::DURATION => {
            let s = v
                .as_str()
                .ok_or_else(|| bad("a duration is not a string"))?;
            let d = special::parse_duration(s)
                .ok_or_else(|| bad(format!("{s:?} is not a duration")))?;
            encoding::int64::encode(1, &d, out);
        }
        special::INT_OR_STRING => match v {
            Value::String(s) => {
                encoding::int64::encode(1, &1, out);
                encoding::int32::encode(2, &0, out);
                encoding::string::encode(3, s, out);
            }
            _ => {
                let i = i32::try_from(int("int-or-string", v)?)
                    .map_err(|_| bad("an int-or-string is out of range"))?;
                encoding::int64::encode(1, &0, out);
                encoding::int32::encode(2, &i, out);
                encoding::string::encode(3, &String::new(), out);
            }
        },
        special::QUANTITY => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad("a quantity is neither a string nor a number")),
            };
            encoding::string::encode(1, &s, out);
        }
        special::RAW_EXTENSION | special::FIELDS_V1 | special::EXT_JSON => {
            let raw = serde_json::to_vec(v).map_err(bad)?;
            encoding::bytes::encode(1, &raw, out);
        }
        _ => return Ok(None),
    }
    Ok(Some(()))
}
