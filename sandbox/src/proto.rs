//! Just enough Kubernetes protobuf to accept what typed kubectl commands send
//! (`kubectl create configmap|secret|namespace|serviceaccount` post
//! `application/vnd.kubernetes.protobuf`).
//!
//! Accepts the `k8s\0` envelope (runtime.Unknown) carrying a ConfigMap, Secret, Namespace or
//! ServiceAccount; decodes ObjectMeta name / generateName / namespace / labels / annotations
//! and the ConfigMap / Secret data maps. Rejects everything else (the caller answers 415), and
//! silently drops fields it does not know.

use base64::Engine;
use serde_json::{json, Map, Value};

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Skip,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    /// Next `(field number, value)`; `Some(Err(()))` on malformed input.
    fn next(&mut self) -> Option<Result<(u64, Wire<'a>), ()>> {
        if self.0.is_empty() {
            return None;
        }
        let res = (|| {
            let tag = self.varint()?;
            let wire = match tag & 7 {
                0 => Wire::Varint(self.varint()?),
                1 => {
                    self.take(8)?;
                    Wire::Skip
                }
                2 => {
                    let n = usize::try_from(self.varint()?).ok()?;
                    Wire::Bytes(self.take(n)?)
                }
                5 => {
                    self.take(4)?;
                    Wire::Skip
                }
                _ => return None,
            };
            Some((tag >> 3, wire))
        })();
        Some(res.ok_or(()))
    }
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut r = Reader(buf);
    let mut out = Vec::new();
    while let Some(f) = r.next() {
        out.push(f.map_err(|_| "malformed protobuf".to_string())?);
    }
    Ok(out)
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "protobuf string is not UTF-8".to_string())
}

/// A map entry message (key = 1, value = 2).
fn entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let (mut k, mut v) = (String::new(), &b[..0]);
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(x)) => k = string(x)?,
            (2, Wire::Bytes(x)) => v = x,
            _ => {}
        }
    }
    Ok((k, v))
}

fn put_str(m: &mut Map<String, Value>, field: &str, b: &[u8]) -> Result<(), String> {
    let (k, v) = entry(b)?;
    let slot = m.entry(field).or_insert_with(|| json!({}));
    slot[k] = json!(string(v)?);
    Ok(())
}

fn put_b64(m: &mut Map<String, Value>, field: &str, b: &[u8]) -> Result<(), String> {
    let (k, v) = entry(b)?;
    let slot = m.entry(field).or_insert_with(|| json!({}));
    slot[k] = json!(base64::engine::general_purpose::STANDARD.encode(v));
    Ok(())
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, w) in fields(b)? {
        if let Wire::Bytes(x) = w {
            if x.is_empty() {
                continue;
            }
            match n {
                1 => drop(m.insert("name".into(), json!(string(x)?))),
                2 => drop(m.insert("generateName".into(), json!(string(x)?))),
                3 => drop(m.insert("namespace".into(), json!(string(x)?))),
                11 => put_str(&mut m, "labels", x)?,
                12 => put_str(&mut m, "annotations", x)?,
                _ => {}
            }
        }
    }
    Ok(Value::Object(m))
}

fn body(kind: &str, raw: &[u8]) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    for (n, w) in fields(raw)? {
        match (kind, n, w) {
            (_, 1, Wire::Bytes(x)) => drop(m.insert("metadata".into(), object_meta(x)?)),
            ("ConfigMap", 2, Wire::Bytes(x)) => put_str(&mut m, "data", x)?,
            ("ConfigMap", 3, Wire::Bytes(x)) => put_b64(&mut m, "binaryData", x)?,
            ("ConfigMap", 4, Wire::Varint(v)) | ("Secret", 5, Wire::Varint(v)) => {
                drop(m.insert("immutable".into(), json!(v != 0)))
            }
            ("Secret", 2, Wire::Bytes(x)) => put_b64(&mut m, "data", x)?,
            ("Secret", 3, Wire::Bytes(x)) => drop(m.insert("type".into(), json!(string(x)?))),
            ("Secret", 4, Wire::Bytes(x)) => put_str(&mut m, "stringData", x)?,
            _ => {}
        }
    }
    Ok(m)
}

/// Decode a `k8s\0`-enveloped object into JSON.
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    let unknown = bytes
        .strip_prefix(b"k8s\0")
        .ok_or("protobuf body lacks the k8s envelope")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &unknown[..0]);
    for (n, w) in fields(unknown)? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                for (n, w) in fields(tm)? {
                    match (n, w) {
                        (1, Wire::Bytes(x)) => api_version = string(x)?,
                        (2, Wire::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    if !matches!(
        kind.as_str(),
        "ConfigMap" | "Secret" | "Namespace" | "ServiceAccount"
    ) {
        return Err(format!(
            "the sandbox cannot decode protobuf {kind}; send application/json"
        ));
    }
    let mut m = body(&kind, raw)?;
    if kind == "Secret" {
        // The apiserver folds stringData into data.
        if let Some(Value::Object(sd)) = m.remove("stringData") {
            let data = m.entry("data").or_insert_with(|| json!({}));
            for (k, v) in sd {
                let s = v.as_str().unwrap_or_default();
                data[k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
            }
        }
    }
    m.insert("apiVersion".into(), json!(api_version));
    m.insert("kind".into(), json!(kind));
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![(n << 3) | 2, data.len() as u8];
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn configmap() {
        let meta = field(1, b"cfg");
        let entry = [field(1, b"k"), field(2, b"v")].concat();
        let cm = [field(1, &meta), field(2, &entry)].concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm), field(2, &cm)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["metadata"]["name"], "cfg");
        assert_eq!(v["data"]["k"], "v");
        assert_eq!(v["kind"], "ConfigMap");
        assert!(decode(b"nope").is_err());
        assert!(decode(b"k8s\0\x0a\xff").is_err());
    }
}
