//! Strict JSON: serde_json's tokenizer (RFC 8259, rejects invalid UTF-8, lone surrogate escapes
//! and trailing data) driving the checking seed of [`super::strict`], plus one linear pre-scan
//! that caps the length of number literals (serde_json's `Value` does not expose them).

use serde::de::DeserializeSeed;
use serde_json::Value;

use super::strict::{Checker, PathNode, ValueSeed};
use super::{Limits, ParseError};

/// Parse one JSON document strictly. See the module docs of [`super`] for what is refused.
pub fn parse_json(bytes: &[u8], limits: &Limits) -> Result<Value, ParseError> {
    parse(bytes, Checker::new(limits, false))
}

/// [`parse_json`] for a YAML body shaped as JSON: its numbers as the API server's YAML reading
/// makes them (an integral float is an integer; [`Checker::go_floats`]).
pub fn parse_json_as_yaml(bytes: &[u8], limits: &Limits) -> Result<Value, ParseError> {
    parse(bytes, Checker::new(limits, false).go_floats())
}

fn parse(bytes: &[u8], ck: Checker<'_>) -> Result<Value, ParseError> {
    let limits = ck.limits;
    if bytes
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Err(ParseError::Empty);
    }
    check_number_lengths(bytes, limits.max_number_digits)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = ValueSeed {
        ck: &ck,
        path: &PathNode::ROOT,
        depth: 0,
    };
    let result = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match result {
        Ok(v) => Ok(v),
        Err(e) => Err(ck.take_error().unwrap_or_else(|| json_error(bytes, &e))),
    }
}

fn json_error(bytes: &[u8], e: &serde_json::Error) -> ParseError {
    // serde_json reports bad UTF-8 as "invalid unicode code point"; say it plainly.
    if std::str::from_utf8(bytes).is_err() {
        return ParseError::InvalidUtf8;
    }
    ParseError::Json(e.to_string())
}

/// Refuse any run of number characters outside strings longer than `max`. Runs are counted on
/// raw bytes; anything that is not valid JSON is left for the parser to report.
fn check_number_lengths(bytes: &[u8], max: usize) -> Result<(), ParseError> {
    let mut i = 0usize;
    let mut run = 0usize;
    while let Some(&b) = bytes.get(i) {
        if b == b'"' {
            run = 0;
            i = skip_string(bytes, i + 1);
            continue;
        }
        if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            run += 1;
            if run > max {
                return Err(ParseError::NumberTooLong {
                    max,
                    offset: i + 1 - run,
                });
            }
        } else {
            run = 0;
        }
        i += 1;
    }
    Ok(())
}

/// Index just past the string whose contents start at `i` (or `bytes.len()` if unterminated).
fn skip_string(bytes: &[u8], mut i: usize) -> usize {
    loop {
        let rest = bytes.get(i..).unwrap_or_default();
        match rest.iter().position(|&b| b == b'"' || b == b'\\') {
            None => return bytes.len(),
            Some(p) => {
                let at = i + p;
                if bytes.get(at) == Some(&b'"') {
                    return at + 1;
                }
                // a backslash: skip it and the escaped byte
                i = at + 2;
            }
        }
    }
}
