//! Strict YAML → JSON `Value`, on serde-saphyr (pure Rust, YAML 1.2).
//!
//! Refused, whatever the content:
//! * more than one document (`---` separating two), and an empty document;
//! * any anchor (`&a`) or alias (`*a`): serde-saphyr's budget is set to zero anchors and zero
//!   aliases, so a billion-laughs body (CVE-2019-11253) fails at its first anchor, before any
//!   expansion;
//! * merge keys (`<<`), via `MergeKeyPolicy::Error`;
//! * duplicate keys, reported by our own visitor with their field path (`0x1` and `1` are the
//!   same key: scalar keys are rendered to their JSON string form before the comparison);
//! * tags serde-saphyr does not know (`!foo`), NaN / infinities, integers outside 64 bits,
//!   null / float / collection keys — none has a JSON form the apiserver would agree on;
//!   `!!binary` is decoded: UTF-8 content becomes that string, other bytes are refused (go-yaml
//!   would produce the base64 string; we forward what we judged, so no differential upstream);
//! * invalid UTF-8; nesting, string-length caps as for JSON.
//!
//! Scalar resolution (YAML 1.2 core schema, with the YAML 1.1 ambiguities made strings):
//!
//! | plain scalar            | becomes           | go-yaml v2 (apiserver) would say |
//! |-------------------------|-------------------|-----------------------------------|
//! | `true`, `False`, `TRUE` | boolean           | boolean                           |
//! | `yes`, `no`, `on`, `off`, `y`, `n` | **string** | boolean                      |
//! | `0x10`                  | 16                | 16                                |
//! | `010`                   | **string `"010"`**| 8 (octal)                         |
//! | `0o10`                  | 8                 | string                            |
//! | `1_000`                 | **string**        | 1000                              |
//! | `~`, `null`, empty      | null              | null                              |
//! | `.inf`, `.nan`          | refused           | float                             |
//!
//! Where the two differ we never guess towards the 1.1 meaning: the value becomes a string,
//! and because the proxy forwards the canonical JSON of what it judged (never the YAML), the
//! apiserver sees exactly that string — for a boolean or integer field it then rejects the
//! type, which fails closed. No YAML spelling can therefore smuggle e.g. `privileged: yes` past
//! a check for `privileged: true`.

use serde::de::DeserializeSeed;
use serde_json::Value;
use serde_saphyr::options::{DuplicateKeyPolicy, MergeKeyPolicy};

use super::strict::{Checker, PathNode, ValueSeed};
use super::{Limits, ParseError};

fn options(limits: &Limits) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_anchors = 0;
    budget.max_aliases = 0;
    budget.max_merge_keys = 0;
    budget.max_documents = 1;
    budget.max_inclusion_depth = 0;
    // One more than ours, so our visitor reports the depth breach with its path.
    budget.max_depth = limits.max_depth.saturating_add(1);
    budget.flow_nesting_limit = limits.max_depth.saturating_add(1);

    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    // Our visitor sees each repeated key and names its path.
    o.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    o.merge_keys = MergeKeyPolicy::Error;
    o.strict_booleans = true;
    o.legacy_octal_numbers = false;
    o.leading_zero_numbers_as_strings = true;
    o.underscored_numbers_as_strings = true;
    o.reject_unsupported_tags = true;
    o.emit_comments = false;
    o.with_snippet = false;
    o
}

/// Parse exactly one YAML document strictly into a JSON value.
pub fn parse_yaml(text: &[u8], limits: &Limits) -> Result<Value, ParseError> {
    let Ok(s) = std::str::from_utf8(text) else {
        return Err(ParseError::InvalidUtf8);
    };
    if is_blank_yaml(s) {
        return Err(ParseError::Empty);
    }
    let ck = Checker::new(limits, true);
    let result = serde_saphyr::with_deserializer_from_str_with_options(s, options(limits), |de| {
        ValueSeed {
            ck: &ck,
            path: &PathNode::ROOT,
            depth: 0,
        }
        .deserialize(de)
    });
    match result {
        Ok(v) => Ok(v),
        Err(e) => Err(ck
            .take_error()
            .unwrap_or_else(|| ParseError::Yaml(e.to_string()))),
    }
}

/// Only whitespace, comments and document markers: no content at all.
fn is_blank_yaml(s: &str) -> bool {
    s.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}
