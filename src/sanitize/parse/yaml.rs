//! Strict YAML → JSON `Value`, on serde-saphyr (pure Rust), resolving scalars as YAML 1.1.
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
//! Scalar resolution: YAML 1.1 as go-yaml v2 resolves plain scalars, which is what
//! kube-apiserver reads a YAML body with (sigs.k8s.io/yaml), so the JSON forwarded is the JSON
//! the API server would have made of the same body. Quoted scalars are strings.
//!
//! | plain scalar                            | becomes (as the API server)          |
//! |-----------------------------------------|--------------------------------------|
//! | `true` `True` `TRUE` `yes` `Yes` `YES` `y` `Y` `on` `On` `ON` | `true`         |
//! | `false` … `no` `No` `NO` `n` `N` `off` `Off` `OFF`             | `false`        |
//! | `~`, `null`, `Null`, `NULL`, empty      | null                                 |
//! | `0x10`, `0o10`, `010`, `0b10`, `1_000`, `+12` | 16, 8, 8, 2, 1000, 12          |
//! | `1.5`, `1e3`, `08`, `2.0`               | 1.5, 1000, 8, 2 (an integral float64 is written as Go writes it) |
//! | `2001-12-14`, `1:20`                    | string                               |
//! | `.inf`, `.nan`                          | refused (the API server cannot make JSON of them either: 400) |
//! | a key `on:`, `yes:`, `010:`, `08:`, `1e3:` | `"true"`, `"true"`, `"8"`, `"8"`, `"1000"` (sigs.k8s.io/yaml's key spelling) |
//!
//! Where serde-saphyr's YAML 1.1 differs from go-yaml v2 (rare spellings, written down in the
//! README): booleans in mixed case (`yEs`, `tRue`) are booleans here, strings there; upper-case
//! radix prefixes (`0X1F`, `0B1`) and numbers with an underscore anywhere but between two
//! digits of an integer (`1__0`, `1_`, `-_1`, `0.1_5`, `1_e3`, `1_000.5`) are strings here,
//! numbers there (go-yaml removes every `_` first); a float key that is not integral below 1e6
//! (`1.5:`) is refused here, spelt with Go's `%g` there; an integral float beyond 2^64 keeps an
//! exponent.
//!
//! Whatever a scalar resolves to, the proxy judges that value and forwards its canonical JSON,
//! never the YAML: the API server stores exactly what was judged, so no spelling can smuggle
//! e.g. `privileged: on` past a check for `privileged: true` — it *is* `true` here, and refused.

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
    // YAML 1.1, as go-yaml v2 (see the module doc).
    o.strict_booleans = false;
    o.legacy_octal_numbers = true;
    o.leading_zero_numbers_as_strings = false;
    o.underscored_numbers_as_strings = false;
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
    let ck = Checker::new(limits, true).go_floats();
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
