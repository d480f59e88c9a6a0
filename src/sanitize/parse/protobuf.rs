//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`, what kubectl's typed
//! `create deployment|job|cronjob|configmap` and client-go programs send) into the JSON value
//! the judge reads, through the shared `portcullis-proto` crate (kube-rs' `k8s-pb` types).
//!
//! Accepts the `k8s\0` envelope around a `runtime.Unknown`. [`open`] reads only the envelope;
//! [`decode`] converts the object, for every pod-bearing kind (but ControllerRevision: 415,
//! its `data` a `RawExtension` of JSON not converted) and ConfigMap, Secret, Service,
//! Namespace, ServiceAccount, and then applies the same caps as the JSON parser ([`Limits`]:
//! nesting depth, string length). Decoding follows Go's protobuf rules (a singular scalar sent
//! twice: the last wins; an embedded message sent twice: merged), so the value judged is the
//! one the API server stores.
//!
//! Rejects: a missing envelope or malformed protobuf → [`ProtoError::Parse`] (400, as the API
//! server answers a body it cannot decode); a depth or string over the caps → `Parse` naming
//! the field; a content encoding, a kind not converted, a field number the generated types do
//! not know or a field the conversion does not carry over → [`ProtoError::Unsupported`] (415),
//! so nothing the API server would store is left unjudged.

use portcullis_proto as proto;
use serde_json::Value;

use super::{Limits, ParseError};

pub use proto::{Envelope, MEDIA_TYPE};

/// Why a protobuf body cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// Malformed, or over a cap: 400.
    Parse(ParseError),
    /// Well-formed but not convertible without loss: 415 with this reason.
    Unsupported(String),
}

impl From<proto::Error> for ProtoError {
    fn from(e: proto::Error) -> Self {
        match e {
            proto::Error::Malformed(m) => ProtoError::Parse(ParseError::Protobuf(m)),
            proto::Error::Unsupported(m) => ProtoError::Unsupported(m),
        }
    }
}

/// Open the envelope: the object's `apiVersion` and `kind`, the object still encoded.
pub fn open(bytes: &[u8]) -> Result<Envelope, ProtoError> {
    Ok(proto::envelope(bytes)?)
}

/// `{"metadata": {name, namespace, uid, resourceVersion}}` of an object that is not decoded
/// (for the audit `objectRef`).
pub fn names(env: &Envelope) -> Option<Value> {
    proto::metadata_names(env)
}

/// The object's JSON form, `apiVersion` and `kind` included, within `limits`.
pub fn decode(env: Envelope, limits: &Limits) -> Result<Value, ProtoError> {
    let decoded = proto::decode_envelope(env)?;
    within(&decoded.object, limits, 1, &mut String::new()).map_err(ProtoError::Parse)?;
    Ok(decoded.object)
}

/// The JSON parser's caps on a converted value: depth (the root object is 1) and string length
/// (keys and values).
fn within(v: &Value, limits: &Limits, depth: usize, path: &mut String) -> Result<(), ParseError> {
    let too_long = |s: &str, path: &str| {
        (s.len() > limits.max_string).then(|| ParseError::StringTooLong {
            len: s.len(),
            max: limits.max_string,
            path: path.to_owned(),
        })
    };
    match v {
        Value::String(s) => too_long(s, path).map_or(Ok(()), Err),
        Value::Array(_) | Value::Object(_) if depth > limits.max_depth => {
            Err(ParseError::TooDeep {
                max: limits.max_depth,
                path: path.clone(),
            })
        }
        Value::Array(a) => a.iter().enumerate().try_for_each(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let r = within(v, limits, depth + 1, path);
            path.truncate(len);
            r
        }),
        Value::Object(m) => m.iter().try_for_each(|(k, v)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k);
            let r = too_long(k, path)
                .map_or(Ok(()), Err)
                .and_then(|()| within(v, limits, depth + 1, path));
            path.truncate(len);
            r
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn caps_apply_to_the_converted_value() {
        let limits = Limits {
            max_depth: 3,
            max_string: 8,
            ..Limits::default()
        };
        let ok = json!({"metadata": {"name": "web"}});
        assert!(within(&ok, &limits, 1, &mut String::new()).is_ok());
        let deep = json!({"spec": {"template": {"spec": {}}}});
        assert_eq!(
            within(&deep, &limits, 1, &mut String::new()),
            Err(ParseError::TooDeep {
                max: 3,
                path: "spec.template.spec".into()
            })
        );
        let long = json!({"data": {"k": "123456789"}});
        assert_eq!(
            within(&long, &limits, 1, &mut String::new()),
            Err(ParseError::StringTooLong {
                len: 9,
                max: 8,
                path: "data.k".into()
            })
        );
    }

    #[test]
    fn envelope_errors_are_400_and_unconverted_kinds_415() {
        assert!(matches!(
            open(b"{\"kind\":\"Pod\"}"),
            Err(ProtoError::Parse(ParseError::Protobuf(_)))
        ));
        assert!(matches!(
            open(b"k8s\0\x0a\xff"),
            Err(ProtoError::Parse(ParseError::Protobuf(_)))
        ));
        let env = open(b"k8s\0").unwrap();
        assert!(matches!(
            decode(env, &Limits::default()),
            Err(ProtoError::Unsupported(_))
        ));
    }
}
