//! Fuzz `k8s::request::classify`: arbitrary bytes become a method, a request target and headers.
//! Invariants: no panic; the same input classifies identically twice; an accepted path has no
//! empty, `.` or `..` segment and no control character after decoding.
//!
//! Layout of the input: byte 0 picks the method (or, when >= 0xF0, the method is the bytes up to
//! the first 0x00), then the request target up to the next 0x00, then header lines
//! `name:value` separated by 0x00.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use portcullis::k8s::request::classify;

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut fields = rest.split(|b| *b == 0);
    let method = if selector >= 0xF0 {
        match fields.next().map(Method::from_bytes) {
            Some(Ok(m)) => m,
            _ => return,
        }
    } else {
        let name = METHODS
            .get(usize::from(selector) % METHODS.len())
            .copied()
            .unwrap_or("GET");
        match Method::from_bytes(name.as_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        }
    };
    let Some(Ok(uri)) = fields.next().map(Uri::try_from) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in fields {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default();
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }

    let first = classify(&method, &uri, &headers);
    let second = classify(&method, &uri, &headers);
    assert_eq!(first, second, "classification is not deterministic");

    match first {
        Ok(info) => {
            let body = info
                .path
                .strip_prefix('/')
                .expect("accepted path is absolute");
            let body = body.strip_suffix('/').unwrap_or(body);
            if !body.is_empty() {
                for seg in body.split('/') {
                    assert!(!seg.is_empty(), "empty segment accepted: {:?}", info.path);
                    assert!(
                        seg != "." && seg != "..",
                        "dot segment accepted: {:?}",
                        info.path
                    );
                    assert!(!seg.chars().any(char::is_control), "control char accepted");
                }
            }
            assert!(matches!(
                info.verb_class(),
                "read" | "write" | "watch" | "stream"
            ));
            let _ = info.is_follow_log(&uri);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
