//! Whole objects to and from the protobuf wire form, as kube-apiserver writes it: `k8s\0` then
//! a `runtime.Unknown` {typeMeta {apiVersion, kind}, raw, contentEncoding "", contentType ""}
//! whose raw bytes are the object's message; watch events as a 4-byte big-endian length then a
//! `meta.v1.WatchEvent` {type, object: RawExtension {raw: the enveloped object}} (client-go's
//! protobuf stream decoder reads exactly that). Any kind listed in the schema (`K` lines:
//! every built-in kind, its `*List`, `Status`, `Scale`, `Eviction`) is converted; anything
//! else (custom resources, Table) is [`Error::Unsupported`], and the caller answers JSON.

use k8s_pb::apimachinery::pkg::{
    apis::meta::v1::WatchEvent,
    runtime::{RawExtension, TypeMeta, Unknown},
};
use prost::Message;
use serde_json::Value;

use crate::{encode, json, schema, Error};

/// The Content-Type of a protobuf watch stream.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// The message of `obj`'s apiVersion and kind, when it has one.
pub fn message_for(obj: &Value) -> Option<&'static str> {
    schema::message_of(obj["apiVersion"].as_str()?, obj["kind"].as_str()?)
}

/// `obj` (with apiVersion and kind) as `k8s\0` + `runtime.Unknown`.
pub fn encode_object(obj: &Value) -> Result<Vec<u8>, Error> {
    let (Some(api_version), Some(kind)) = (obj["apiVersion"].as_str(), obj["kind"].as_str()) else {
        return Err(Error::Unsupported(
            "an object without apiVersion and kind".to_owned(),
        ));
    };
    let message = schema::message_of(api_version, kind).ok_or_else(|| {
        Error::Unsupported(format!("{api_version} {kind} has no protobuf encoding"))
    })?;
    let raw = encode::message(message, obj)?;
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    unknown
        .encode(&mut out)
        .map_err(|e| Error::Unsupported(e.to_string()))?;
    Ok(out)
}

/// Any enveloped object of a kind in the schema, as its JSON form (apiVersion and kind
/// included).
pub fn decode_object(bytes: &[u8]) -> Result<Value, Error> {
    decode_object_at(bytes, 0)
}

pub(crate) fn decode_object_at(bytes: &[u8], depth: usize) -> Result<Value, Error> {
    let env = crate::envelope(bytes)?;
    let message = schema::message_of(&env.api_version, &env.kind).ok_or_else(|| {
        Error::Unsupported(format!(
            "protobuf {} {} is not converted",
            env.api_version, env.kind
        ))
    })?;
    let mut v = json::read_message(message, &env.raw, depth)?;
    if let Value::Object(m) = &mut v {
        // apiVersion and kind first, as Go writes them.
        let mut out = serde_json::Map::new();
        out.insert("kind".to_owned(), Value::String(env.kind));
        out.insert("apiVersion".to_owned(), Value::String(env.api_version));
        out.append(m);
        return Ok(Value::Object(out));
    }
    Err(Error::Malformed("an object that is no message".to_owned()))
}

/// One frame of a protobuf watch stream.
pub fn watch_frame(event_type: &str, obj: &Value) -> Result<Vec<u8>, Error> {
    let ev = WatchEvent {
        r#type: Some(event_type.to_owned()),
        object: Some(RawExtension {
            raw: Some(encode_object(obj)?),
        }),
    };
    let body = ev.encode_to_vec();
    let len = u32::try_from(body.len())
        .map_err(|_| Error::Unsupported("a watch event over 4 GiB".to_owned()))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Split a protobuf watch stream into `{"type", "object"}` events; the bytes after the last
/// whole frame are returned unread.
pub fn read_watch_frames(mut stream: &[u8]) -> Result<(Vec<Value>, &[u8]), Error> {
    let mut out = Vec::new();
    while let Some((len, rest)) = stream.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some((frame, rest)) = rest.split_at_checked(len) else {
            break;
        };
        let ev = WatchEvent::decode(frame)
            .map_err(|e| Error::Malformed(format!("malformed watch event: {e}")))?;
        let raw = ev.object.and_then(|o| o.raw).unwrap_or_default();
        out.push(serde_json::json!({
            "type": ev.r#type.unwrap_or_default(),
            "object": decode_object(&raw)?,
        }));
        stream = rest;
    }
    Ok((out, stream))
}
