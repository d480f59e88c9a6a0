//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) → the JSON the
//! store holds, through kube-rs' prost-generated `k8s-pb` types.
//!
//! Accepts the `k8s\0` magic followed by a `runtime.Unknown` (typeMeta, raw, contentEncoding,
//! contentType) whose raw bytes are one of the kinds in [`kinds::decode`]: Deployment,
//! ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, Pod, ConfigMap, Secret, Service, Namespace,
//! ServiceAccount. Decoding follows protobuf's rules as Go does (prost: a repeated singular
//! field, last wins). Rejects (the caller answers 415 UnsupportedMediaType): a missing magic,
//! malformed protobuf, a content encoding, any other kind, and any field set in the body that
//! the conversion does not carry over (nothing is dropped silently; see `conv::done`).
//! `status` and server-set metadata (creationTimestamp, managedFields, ...) are read and not
//! kept, as the apiserver does on create.
//!
//! Free of sandbox internals on purpose: bytes in, `(apiVersion, kind, JSON)` out, so the proxy
//! can judge protobuf bodies with the same code later. Responses stay JSON: kubectl and
//! client-go send `Accept: application/vnd.kubernetes.protobuf, application/json`.

mod conv;
mod kinds;
mod pod;

use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{json, Value};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// A decoded body.
#[derive(Debug)]
pub struct Decoded {
    pub api_version: String,
    pub kind: String,
    /// The object as its JSON form, `apiVersion` and `kind` included.
    pub object: Value,
}

/// Decode a `k8s\0`-enveloped object.
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let inner = bytes
        .strip_prefix(b"k8s\0")
        .ok_or("protobuf body lacks the k8s\\0 envelope")?;
    let unknown = Unknown::decode(inner).map_err(|e| format!("malformed protobuf: {e}"))?;
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err("protobuf bodies with a content encoding are not supported".into());
    }
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut object = kinds::decode(&api_version, &kind, &raw).ok_or_else(|| {
        format!("the sandbox cannot decode protobuf {api_version} {kind}; send application/json")
    })??;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(Decoded {
        api_version,
        kind,
        object,
    })
}

#[cfg(test)]
mod tests;
