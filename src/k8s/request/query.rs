//! Query parsing (Go `url.ParseQuery`, strict about escapes: a bad escape or non-UTF-8 is a
//! [`PathError`] rather than a dropped pair) and the parts of `ListOptions` decoding the
//! classifier needs: `watch`, the integer fields, and a `metadata.name` field selector.

use std::borrow::Cow;

use super::{path::hex_value, PathError};

/// One decoded `key=value` pair of the query, borrowed when nothing needed decoding.
pub(super) type QueryPair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Most `&`-separated parts a query may have. Go's `net/url` (GODEBUG `urlmaxqueryparams`,
/// 10 000 by default, lower if an operator sets it) parses a query over its limit as *empty*
/// and `URL.Query()` drops the error: the API server would then run a request without the
/// `fieldSelector`, `watch` or `limit` the proxy authorized it by. Far below that limit, and
/// far above what any client sends, such a query is refused (400) instead.
pub(super) const MAX_QUERY_PARTS: usize = 1000;

pub(super) fn parse_query(query: Option<&str>) -> Result<Vec<QueryPair<'_>>, PathError> {
    let mut pairs = Vec::new();
    let Some(query) = query else {
        return Ok(pairs);
    };
    // Counted as Go counts (`&`s plus one), empty parts included.
    if query.bytes().filter(|b| *b == b'&').count() >= MAX_QUERY_PARTS {
        return Err(PathError::TooManyQueryParameters);
    }
    for part in query.split('&') {
        // Go >= 1.17 drops a pair containing ';' (and reports an error Query() ignores).
        if part.is_empty() || part.contains(';') {
            continue;
        }
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        pairs.push((query_unescape(key)?, query_unescape(value)?));
    }
    Ok(pairs)
}

fn query_unescape(s: &str) -> Result<Cow<'_, str>, PathError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = bytes.next().and_then(hex_value);
                let lo = bytes.next().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::InvalidQueryEncoding);
                };
                out.push((hi << 4) | lo);
            }
            b'+' => out.push(b' '),
            _ => out.push(b),
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::InvalidQueryUtf8)
}

/// Go's `url.Values[key][0]`.
pub(super) fn query_first<'a>(query: &'a [QueryPair<'_>], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.as_ref() == key)
        .map(|(_, v)| v.as_ref())
}

/// `strings.EqualFold(v, "false")`. Go folds Unicode simple case: besides ASCII case, `ſ`
/// (U+017F) folds to `s`. No other non-ASCII character folds to a letter of "false".
pub(super) fn go_equal_fold_false(v: &str) -> bool {
    let mut chars = v.chars();
    for want in "false".chars() {
        match chars.next() {
            Some(c) if c.to_ascii_lowercase() == want => {}
            Some('\u{17F}') if want == 's' => {}
            _ => return false,
        }
    }
    chars.next().is_none()
}

/// Whether `metainternalversionscheme.ParameterCodec.DecodeParameters` into `ListOptions` would
/// succeed, as far as we model it: the field selector must parse, `timeoutSeconds` and `limit`
/// must be 64-bit integers. (The label-selector grammar is not modelled; see the module doc.)
pub(super) fn list_options_decode(query: &[QueryPair<'_>]) -> bool {
    if let Some(sel) = query_first(query, "fieldSelector") {
        if field_selector_exact_match(sel, "metadata.name").is_err() {
            return false;
        }
    }
    for key in ["timeoutSeconds", "limit"] {
        if let Some(v) = query_first(query, key) {
            if v.parse::<i64>().is_err() {
                return false;
            }
        }
    }
    true
}

/// `fields.ParseSelector(sel)` followed by `RequiresExactMatch(field)`.
///
/// Terms are split on unescaped `,`, sorted, empty ones skipped; each splits at the first `!=`,
/// `==` or `=`; the value is unescaped (`\\`, `\,`, `\=`). `=` and `==` are exact-match terms.
/// Like Go's `andTerm`, the first exact-match term for `field` in sorted order wins.
/// `Err(())` when the selector does not parse.
pub(super) fn field_selector_exact_match(sel: &str, field: &str) -> Result<Option<String>, ()> {
    let mut terms = split_terms(sel);
    terms.sort_unstable();
    let mut found = None;
    for term in terms {
        if term.is_empty() {
            continue;
        }
        let (lhs, op, rhs) = split_term(term).ok_or(())?;
        let value = unescape_selector_value(rhs)?;
        if found.is_none() && op != "!=" && lhs == field {
            found = Some(value);
        }
    }
    Ok(found)
}

fn split_terms(sel: &str) -> Vec<&str> {
    if sel.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in sel.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(sel.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    terms.push(sel.get(start..).unwrap_or_default());
    terms
}

fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let remaining = term.get(i..)?;
        for op in ["!=", "==", "="] {
            if remaining.starts_with(op) {
                return Some((term.get(..i)?, op, term.get(i + op.len()..)?));
            }
        }
    }
    None
}

fn unescape_selector_value(s: &str) -> Result<String, ()> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => return Err(()),
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(()),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(());
    }
    Ok(out)
}

/// `path.IsValidPathSegmentName`: not `.` or `..`, no `/` or `%`.
pub(super) fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}
