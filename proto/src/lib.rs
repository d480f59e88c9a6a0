//! Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`) → their JSON form, through
//! kube-rs' prost-generated `k8s-pb` types; and the way back for answers: [`encode_object`] /
//! [`decode_object`] / [`watch_frame`] convert any built-in kind generically through the schema
//! in `schema/k8s.schema` (see [`schema`], [`encode`], [`json`], [`response`]), and [`accept`]
//! negotiates JSON or protobuf from `Accept`. Shared by the proxy (which judges the JSON form and
//! forwards the original bytes) and the sandbox (which stores the JSON form).
//!
//! Accepts the `k8s\0` magic followed by a `runtime.Unknown` (typeMeta, raw, contentEncoding,
//! contentType) whose raw bytes are one of the kinds in [`kinds::decode`]: every pod-bearing
//! kind (Pod, PodTemplate, ReplicationController, Deployment, ReplicaSet, StatefulSet,
//! DaemonSet, Job, CronJob) and ConfigMap, Secret, Service, Namespace, ServiceAccount.
//! Decoding follows protobuf's rules as Go does (prost: a repeated singular scalar, last wins;
//! a repeated embedded message, merged).
//!
//! Rejects, with an [`Error`] the caller turns into a Status:
//! - [`Error::Malformed`] (400 BadRequest, as kube-apiserver answers a body it cannot decode):
//!   a missing magic, malformed protobuf, nesting past prost's recursion limit (100, the JSON
//!   depth cap);
//! - [`Error::Unsupported`] (415 UnsupportedMediaType): a content encoding, a kind not
//!   converted here, a field number the generated types do not know (prost would skip it, the
//!   API server may not: see [`unknown`]), and a known field the conversion does not carry
//!   over (see `conv::done`). Nothing a client sent is ever dropped silently, so the JSON form
//!   holds everything the API server would store.
//!
//! `status` and server-set metadata (creationTimestamp, managedFields, ...) are read and not
//! kept, as the apiserver resets them on create. Go writes every non-pointer field, zero or
//! not; those zeros become absent keys, as Go's `omitempty` JSON has them.

pub mod accept;
mod conv;
pub mod encode;
pub mod json;
mod kinds;
mod pod;
mod podmore;
pub mod response;
pub mod schema;
mod special;
pub mod unknown;
mod volume;

pub use response::{decode_object, encode_object, watch_frame, WATCH_MEDIA_TYPE};
/// RFC 3339 as Go writes and reads `metav1.Time` (shared with the sandbox's clock).
pub use special::{format_time, parse_time};

use k8s_pb::apimachinery::pkg::{apis::meta::v1::ObjectMeta, runtime::Unknown};
use prost::Message;
use serde_json::{json, Value};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why a body could not be turned into its JSON form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not a well-formed `k8s\0` + `runtime.Unknown` protobuf body (400).
    Malformed(String),
    /// Well-formed, but not something converted here without loss (415).
    Unsupported(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Malformed(m) | Error::Unsupported(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// The `runtime.Unknown` around an object: its type and the still-encoded object.
#[derive(Debug)]
pub struct Envelope {
    pub api_version: String,
    pub kind: String,
    pub raw: Vec<u8>,
}

/// A decoded body.
#[derive(Debug)]
pub struct Decoded {
    pub api_version: String,
    pub kind: String,
    /// The object as its JSON form, `apiVersion` and `kind` included.
    pub object: Value,
}

/// Open the `k8s\0` envelope (cheap: the object itself stays encoded).
pub fn envelope(bytes: &[u8]) -> Result<Envelope, Error> {
    let inner = bytes.strip_prefix(b"k8s\0").ok_or_else(|| {
        Error::Malformed("the protobuf body lacks the k8s\\0 envelope".to_owned())
    })?;
    let unknown =
        Unknown::decode(inner).map_err(|e| Error::Malformed(format!("malformed protobuf: {e}")))?;
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(Error::Unsupported(
            "protobuf bodies with a content encoding are not supported".to_owned(),
        ));
    }
    let tm = unknown.type_meta.unwrap_or_default();
    Ok(Envelope {
        api_version: tm.api_version.unwrap_or_default(),
        kind: tm.kind.unwrap_or_default(),
        raw: unknown.raw.unwrap_or_default(),
    })
}

/// Whether [`decode`] converts this kind.
pub fn converts(api_version: &str, kind: &str) -> bool {
    kinds::decode(api_version, kind, &[]).is_some()
}

/// Decode a `k8s\0`-enveloped object.
pub fn decode(bytes: &[u8]) -> Result<Decoded, Error> {
    decode_envelope(envelope(bytes)?)
}

/// Decode the object inside an opened envelope.
pub fn decode_envelope(env: Envelope) -> Result<Decoded, Error> {
    let Envelope {
        api_version,
        kind,
        raw,
    } = env;
    let mut object = kinds::decode(&api_version, &kind, &raw).ok_or_else(|| {
        Error::Unsupported(format!(
            "protobuf {api_version} {kind} is not converted; send application/json"
        ))
    })??;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(Decoded {
        api_version,
        kind,
        object,
    })
}

/// Every Kubernetes object carries its `ObjectMeta` as field 1: enough to name an object of a
/// kind that is not converted (for the audit `objectRef`), without converting it.
#[derive(Clone, PartialEq, Message)]
struct MetaOnly {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

/// `{"metadata": {"name", "namespace", "uid", "resourceVersion"}}` of any enveloped object, or
/// `None` when field 1 is not an `ObjectMeta`.
pub fn metadata_names(env: &Envelope) -> Option<Value> {
    let m = MetaOnly::decode(env.raw.as_slice()).ok()?.metadata?;
    let mut out = serde_json::Map::new();
    for (k, v) in [
        ("name", m.name),
        ("namespace", m.namespace),
        ("uid", m.uid),
        ("resourceVersion", m.resource_version),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.insert(k.to_owned(), json!(v));
        }
    }
    Some(json!({ "metadata": out }))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_encode;
#[cfg(test)]
mod tests_pod;
