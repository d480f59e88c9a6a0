//! The property both the cargo-fuzz target (`fuzz_targets/sanitize_body.rs`) and the mutation
//! test below check, on arbitrary bytes:
//!
//! * parsing and judging never panic, whatever the media type and body;
//! * an accepted body's canonical bytes re-parse (as JSON, strictly) to the same value, so what
//!   is forwarded means exactly what was judged;
//! * judging is deterministic.
//!
//! Input layout: byte 0 picks the media type and the verb, the rest is the body.
//!
//! Uses only portcullis's public API. The main crate's `tests/sanitize_fuzz_oracle.rs` includes
//! this file by path, so the mutation test also runs under the main crate's `cargo test` (on
//! stable, without cargo-fuzz).

use portcullis::{
    authn::{identity::Method, Identity},
    k8s::request::classify,
    sanitize::{
        judge::{self, Current},
        parse::{self, BodyKind},
        policy::{Modes, PodSecurity, Sanitizer},
        pss::{Level, Policy},
    },
};
use serde_json::{json, Value};

const TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

fn sanitizer() -> Sanitizer {
    Sanitizer {
        pod_security: Some(PodSecurity {
            defaults: Modes {
                enforce: Some(Policy::latest(Level::Restricted)),
                warn: Some(Policy::latest(Level::Baseline)),
                audit: None,
            },
            ..PodSecurity::default()
        }),
        ..Sanitizer::default()
    }
}

fn caller() -> Identity {
    Identity {
        user: "fuzz".into(),
        uid: String::new(),
        groups: Vec::new(),
        extra: Default::default(),
        tenant: None,
        scope: None,
        method: Method::ClientCertificate {
            fingerprint: String::new(),
        },
    }
}

fn current() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "7"},
        "spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "x", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}}}]}})
}

/// Check the property on `data`; panics (as a fuzz finding) when it does not hold.
pub fn check(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ct = TYPES[usize::from(sel) % TYPES.len()];
    let s = sanitizer();
    let Ok(parsed) = parse::parse_body(ct, body, &s.limits) else {
        return;
    };
    // Forwarded bytes mean what was parsed.
    let out = parse::canonical_bytes(&parsed.value);
    let again = parse::json::parse_json(&out, &s.limits)
        .unwrap_or_else(|e| panic!("canonical bytes do not re-parse: {e}"));
    assert_eq!(again, parsed.value, "canonical bytes changed the value");

    let (method, path) = if parsed.kind == BodyKind::Object {
        (http::Method::POST, "/api/v1/namespaces/ns/pods")
    } else {
        (http::Method::PATCH, "/api/v1/namespaces/ns/pods/p")
    };
    let Ok(info) = classify(
        &method,
        &http::Uri::from_static(path),
        &http::HeaderMap::new(),
    ) else {
        return;
    };
    let id = caller();
    let verdict = |p: parse::Parsed| {
        let cur = if judge::needs_current(&s, &info, &id, &p, false) {
            Current::Found(current())
        } else {
            Current::NotFetched
        };
        match judge::judge(&s, &info, &id, p, cur, None, None) {
            Ok(j) => Ok((parse::canonical_bytes(&j.body), j.warnings)),
            Err(st) => Err(st.status().to_json()),
        }
    };
    let a = verdict(parsed.clone());
    let b = verdict(parsed);
    assert_eq!(a, b, "judging is not deterministic");
    if let Ok((bytes, _)) = a {
        parse::json::parse_json(&bytes, &s.limits)
            .unwrap_or_else(|e| panic!("judged body does not re-parse: {e}"));
    }
}

#[cfg(test)]
mod tests {
    /// A deterministic stand-in for the fuzzer where nightly Rust is unavailable: byte-level
    /// mutations (flip, insert, delete, splice) of seed bodies, 3000 per seed.
    /// Found by cargo-fuzz: a 25-digit YAML integer becomes a float whose shortest form
    /// serde_json re-read 1 ulp off until `float_roundtrip` was enabled.
    #[test]
    fn fuzz_regressions() {
        super::check(b"\x01apiVersio.: v0\nkind: 4444444444444444444444444");
    }

    #[test]
    fn mutated_bodies_hold_the_property() {
        let seeds: &[(u8, &str)] = &[
            (0, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"hostPID":true,"containers":[{"name":"c","securityContext":{"privileged":true,"capabilities":{"add":["NET_RAW"]}}}],"volumes":[{"name":"v","hostPath":{"path":"/"}}]}}"#),
            (1, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: x\n"),
            (2, r#"[{"op":"add","path":"/spec/hostPID","value":true},{"op":"replace","path":"/spec/containers/0/securityContext","value":{"privileged":true}}]"#),
            (3, r#"{"spec":{"containers":[{"name":"c","securityContext":{"privileged":true}}]}}"#),
            (4, r#"{"spec":{"$retainKeys":["containers"],"containers":[{"name":"c","$patch":"delete"}],"securityContext":{"$patch":"replace"}}}"#),
            (5, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"hostNetwork":true}}"#),
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (sel, seed) in seeds {
            for _ in 0..3000 {
                let mut b: Vec<u8> = seed.as_bytes().to_vec();
                for _ in 0..(next() % 4 + 1) {
                    let r = next();
                    let at = (r >> 8) as usize % (b.len() + 1);
                    match r % 4 {
                        0 if at < b.len() => b[at] ^= 1 << ((r >> 40) % 8),
                        1 => {
                            const BYTES: &[u8] = b"{}[]\":,$\\u0-1 a";
                            b.insert(at, BYTES[(r >> 32) as usize % BYTES.len()])
                        }
                        2 if at < b.len() => {
                            b.remove(at);
                        }
                        _ => {
                            let from = (r >> 24) as usize % (b.len() + 1);
                            let piece: Vec<u8> = b[from..(from + 8).min(b.len())].to_vec();
                            b.splice(at..at, piece);
                        }
                    }
                }
                let mut data = vec![*sel];
                data.extend_from_slice(&b);
                super::check(&data);
            }
        }
    }
}
