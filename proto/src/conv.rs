//! The building blocks of the protobuf → JSON conversion: the `fields!` macro that moves each
//! set field of a k8s-pb message into a JSON object under its Kubernetes JSON name, the scalar /
//! list / map converters, and the shared apimachinery types (ObjectMeta, LabelSelector,
//! OwnerReference, IntOrString, Quantity).
//!
//! Every message converter takes its fields *out* of the message and then calls [`done`]: a
//! field set in the body that no converter took makes the whole decode fail
//! ([`Error::Unsupported`], 415), so nothing a client sent is ever silently dropped.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_pb::apimachinery::pkg::{
    api::resource::Quantity,
    apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference},
    util::intstr::IntOrString,
};
use serde_json::{json, Map, Value};

use crate::Error;

pub type R<T> = Result<T, Error>;

/// Move fields of a message into a JSON object: `fields!(msg; "jsonName" => field: conv, ...)`.
macro_rules! fields {
    ($src:ident; $($json:literal => $field:ident : $conv:expr),* $(,)?) => {{
        let mut m = serde_json::Map::new();
        $(
            if let Some(v) = ($conv)(std::mem::take(&mut $src.$field))? {
                m.insert($json.to_string(), v);
            }
        )*
        m
    }};
}
pub(crate) use fields;

/// The message after its converter took what it knows: anything left was sent but not
/// understood.
pub fn done<M: prost::Message + Default + PartialEq>(
    rest: M,
    what: &str,
    m: Map<String, Value>,
) -> R<Value> {
    // Go encodes every non-pointer field, zero or not: zeros left over mean "unset".
    if rest != M::default() {
        let left = rest.encode_to_vec();
        if let Some(n) = first_set(&left) {
            return Err(Error::Unsupported(format!(
                "field {n} of the protobuf {what} is not converted; send application/json"
            )));
        }
    }
    Ok(Value::Object(m))
}

/// The number of the first field of an encoded message that holds a non-zero value.
fn first_set(mut buf: &[u8]) -> Option<u32> {
    use prost::encoding::{decode_key, skip_field, DecodeContext};
    while !buf.is_empty() {
        let Ok((n, wire)) = decode_key(&mut buf) else {
            return Some(0);
        };
        let before = buf;
        if skip_field(wire, n, &mut buf, DecodeContext::default()).is_err() {
            return Some(n);
        }
        let taken = before.get(..before.len() - buf.len()).unwrap_or_default();
        if !all_zero(&[encode_key(n, wire), taken.to_vec()].concat(), 0) {
            return Some(n);
        }
    }
    None
}

fn encode_key(n: u32, wire: prost::encoding::WireType) -> Vec<u8> {
    let mut k = Vec::new();
    prost::encoding::encode_key(n, wire, &mut k);
    k
}

/// Whether an encoded message holds only zero values (0, empty strings, messages of zeros).
fn all_zero(mut buf: &[u8], depth: u8) -> bool {
    use prost::encoding::{decode_key, decode_varint, WireType};
    if depth > 32 {
        return false;
    }
    while !buf.is_empty() {
        let Ok((_, wire)) = decode_key(&mut buf) else {
            return false;
        };
        let zero = match wire {
            WireType::Varint => decode_varint(&mut buf).is_ok_and(|v| v == 0),
            WireType::LengthDelimited => match decode_varint(&mut buf) {
                Ok(n) if usize::try_from(n).is_ok_and(|n| n <= buf.len()) => {
                    let (inner, rest) = buf.split_at(n as usize);
                    buf = rest;
                    inner.is_empty() || all_zero(inner, depth + 1)
                }
                _ => false,
            },
            _ => false,
        };
        if !zero {
            return false;
        }
    }
    true
}

/// A scalar behind a Go pointer (`*int32`, `*bool`): encoded only when set, so a zero is
/// meaningful (`replicas: 0`) and kept.
pub fn scalar<T: Into<Value>>(v: Option<T>) -> R<Option<Value>> {
    Ok(v.map(Into::into))
}

/// A Go non-pointer scalar: always encoded, and its zero is what the JSON form omits.
pub fn value<T: Into<Value> + Default + PartialEq>(v: Option<T>) -> R<Option<Value>> {
    Ok(v.filter(|v| *v != T::default()).map(Into::into))
}

/// A string; Go encodes non-pointer strings even when empty, JSON omits them.
pub fn string(v: Option<String>) -> R<Option<Value>> {
    Ok(v.filter(|s| !s.is_empty()).map(Value::String))
}

pub fn strings(v: Vec<String>) -> R<Option<Value>> {
    Ok((!v.is_empty()).then(|| json!(v)))
}

pub fn ints(v: Vec<i64>) -> R<Option<Value>> {
    Ok((!v.is_empty()).then(|| json!(v)))
}

pub fn ints32(v: Vec<i32>) -> R<Option<Value>> {
    Ok((!v.is_empty()).then(|| json!(v)))
}

pub fn str_map(v: BTreeMap<String, String>) -> R<Option<Value>> {
    Ok((!v.is_empty()).then(|| json!(v)))
}

/// `[]byte` values: base64, as Go's JSON encoding writes them.
pub fn bytes_map(v: BTreeMap<String, Vec<u8>>) -> R<Option<Value>> {
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(b);
    Ok((!v.is_empty())
        .then(|| Value::Object(v.into_iter().map(|(k, b)| (k, json!(b64(b)))).collect())))
}

pub fn quantity(v: Option<Quantity>) -> R<Option<Value>> {
    Ok(v.and_then(|q| q.string).map(Value::String))
}

pub fn quantity_map(v: BTreeMap<String, Quantity>) -> R<Option<Value>> {
    Ok((!v.is_empty()).then(|| {
        Value::Object(
            v.into_iter()
                .map(|(k, q)| (k, json!(q.string.unwrap_or_default())))
                .collect(),
        )
    }))
}

/// A nested message through `f`.
pub fn msg<M>(f: fn(M) -> R<Value>) -> impl Fn(Option<M>) -> R<Option<Value>> {
    move |v| v.map(f).transpose()
}

/// A repeated message through `f`.
pub fn list<M>(f: fn(M) -> R<Value>) -> impl Fn(Vec<M>) -> R<Option<Value>> {
    move |v| {
        if v.is_empty() {
            return Ok(None);
        }
        v.into_iter()
            .map(f)
            .collect::<R<Vec<_>>>()
            .map(|a| Some(Value::Array(a)))
    }
}

/// Fields the server sets itself (status, timestamps, managedFields): read and not kept, as
/// the apiserver resets them on create.
pub fn server_set<T>(_: T) -> R<Option<Value>> {
    Ok(None)
}

pub fn int_or_string(v: Option<IntOrString>) -> R<Option<Value>> {
    Ok(v.map(|v| match v.r#type {
        Some(1) => json!(v.str_val.unwrap_or_default()),
        _ => json!(v.int_val.unwrap_or_default()),
    }))
}

/// An embedded `LocalObjectReference`: its `name` is inlined into the parent in JSON.
pub fn inline_name(r: Option<k8s_pb::api::core::v1::LocalObjectReference>) -> R<Option<Value>> {
    string(r.and_then(|r| r.name))
}

pub fn object_meta(mut o: ObjectMeta) -> R<Value> {
    let m = fields!(o;
        "name" => name: string, "generateName" => generate_name: string,
        "namespace" => namespace: string, "selfLink" => self_link: server_set,
        "uid" => uid: string, "resourceVersion" => resource_version: string,
        "generation" => generation: value, "creationTimestamp" => creation_timestamp: server_set,
        "deletionTimestamp" => deletion_timestamp: server_set,
        "deletionGracePeriodSeconds" => deletion_grace_period_seconds: scalar,
        "labels" => labels: str_map, "annotations" => annotations: str_map,
        "ownerReferences" => owner_references: list(owner_reference),
        "finalizers" => finalizers: strings, "managedFields" => managed_fields: server_set,
    );
    done(o, "ObjectMeta", m)
}

fn owner_reference(mut o: OwnerReference) -> R<Value> {
    let m = fields!(o;
        "apiVersion" => api_version: string, "kind" => kind: string, "name" => name: string,
        "uid" => uid: string, "controller" => controller: scalar,
        "blockOwnerDeletion" => block_owner_deletion: scalar,
    );
    done(o, "OwnerReference", m)
}

pub fn label_selector(mut o: LabelSelector) -> R<Value> {
    let m = fields!(o;
        "matchLabels" => match_labels: str_map,
        "matchExpressions" => match_expressions: list(requirement),
    );
    done(o, "LabelSelector", m)
}

fn requirement(mut o: LabelSelectorRequirement) -> R<Value> {
    let m = fields!(o;
        "key" => key: string, "operator" => operator: string, "values" => values: strings,
    );
    done(o, "LabelSelectorRequirement", m)
}
