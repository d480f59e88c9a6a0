//! Kubernetes request classification: a port of kube-apiserver's `RequestInfoFactory`
//! (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`) plus the long-running predicate of
//! `pkg/server/filters/longrunning.go` as kube-apiserver configures it
//! (shared/reference/kubernetes-api.md §1, DESIGN.md decision 1: *one parse*).
//!
//! Pure: no I/O, no async. [`classify`] takes the method, URI and headers and returns the one
//! [`RequestInfo`] every later stage (authorization, limits, sanitiser, audit) reads.
//!
//! # What is accepted
//!
//! An origin-form path that starts with `/`, whose `/`-separated segments are each non-empty
//! (a single trailing `/` is tolerated, as the apiserver trims it; `/` alone is fine), contain
//! only well-formed percent-escapes, decode (once) to valid UTF-8 without control characters, and
//! are not `.` or `..`. Segments are percent-decoded exactly once after validation, which is what
//! the apiserver sees (`URL.Path`); [`RequestInfo::path`] is that decoded path.
//!
//! # What is rejected (before classification)
//!
//! Each of these is a [`PathError`]; the caller turns it into a **400 BadRequest `metav1.Status`**
//! whose message is the error's `Display`:
//!
//! * a path that does not start with `/` (authority form, `*`);
//! * `%2F`/`%2f` (encoded `/`) and `%5C`/`%5c` (encoded `\`) anywhere, and a raw `\`;
//! * `.` and `..` segments, literal or encoded (`%2e`, `%2E%2e`, `.%2E`, …);
//! * empty segments (`//`), except the one trailing slash;
//! * control characters (C0, DEL, and C1 such as U+0085), raw or percent-encoded;
//! * invalid percent-encoding (`%zz`, `%2`, a trailing `%`) in the path **or the query**;
//! * bytes that are not UTF-8 after decoding, in the path or the query;
//! * `/api/v1/watch` or `/api/v1/proxy` with nothing after it: the apiserver's parser fails on
//!   these too (it answers 500); we answer 400.
//!
//! # Query handling
//!
//! The query is split like Go's `url.ParseQuery`: `&`-separated, a pair containing a raw `;` is
//! dropped (Go ≥ 1.17), empty pairs are dropped, `+` is a space. Unlike Go, a pair with a bad
//! escape is not silently dropped: the whole request is rejected, so no layer can read the query
//! differently from us.
//!
//! # Deliberate differences from the apiserver
//!
//! * A GET/HEAD of core `pods/exec`, `pods/attach` or `pods/portforward` that asks for a connection
//!   upgrade (`Connection` contains the `upgrade` token, whatever the `Upgrade` header says) is
//!   classified as verb `create`, like the SPDY POST (KEP-4006, apiserver 1.35
//!   `AuthorizePodWebsocketUpgradeCreatePermission`). A GET upgrade is never a mere `get`.
//! * Of the ListOptions decoding the apiserver performs to find `watch` and the `metadata.name`
//!   field selector, we reproduce the field-selector grammar and the integer fields
//!   (`timeoutSeconds`, `limit`) exactly, but do not validate the label-selector grammar. A
//!   malformed `labelSelector` makes the apiserver ignore the field selector's name; we would still
//!   fill [`RequestInfo::name`]. That only narrows what we authorise; the apiserver then rejects
//!   the malformed selector itself.

use std::fmt;

use std::borrow::Cow;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, Method, Uri};

/// What the apiserver would put in its `RequestInfo`, plus what a proxy needs on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether this is a request for an API resource (`/api/v1/...`, `/apis/g/v/...`).
    pub is_resource_request: bool,
    /// The validated, percent-decoded URL path (Go's `URL.Path`), trailing slash kept.
    pub path: String,
    /// Kubernetes verb (`get list watch create update patch delete deletecollection proxy`,
    /// `""` for other methods on resources) or, for non-resource requests, the lower-cased method.
    pub verb: String,
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// `resource[/name[/subresource[/...]]]`, decoded. Empty for non-resource requests.
    pub parts: Vec<String>,
    /// First raw `fieldSelector` value, for `list`/`watch`/`deletecollection` not reached through
    /// the `/watch/` path prefix. An empty value is `None` (the apiserver treats it as unset).
    pub field_selector: Option<String>,
    /// First raw `labelSelector` value, same rules as `field_selector`.
    pub label_selector: Option<String>,
    /// The HTTP/1.1 upgrade the request asks for, if any.
    pub upgrade: Option<Upgrade>,
    /// kube-apiserver's long-running predicate: verbs {watch, proxy}, subresources
    /// {attach, exec, proxy, log, portforward}, non-resource paths under `/debug/pprof/`.
    pub long_running: bool,
}

/// The protocol an HTTP/1.1 upgrade request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    WebSocket,
    Spdy,
    Other,
}

/// Why a request was refused before classification. Every variant becomes a 400 BadRequest
/// `metav1.Status` whose message is the `Display` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/` (e.g. `*` or an authority-form target).
    NotAbsolute,
    /// `//` somewhere other than the single tolerated trailing slash.
    EmptySegment,
    /// A `.` or `..` segment, literal or percent-encoded.
    DotSegment,
    /// `%2F` / `%2f`.
    EncodedSlash,
    /// `%5C` / `%5c`.
    EncodedBackslash,
    /// A raw `\`.
    Backslash,
    /// A control character (C0, DEL or C1), raw or percent-encoded.
    ControlCharacter,
    /// A `%` not followed by two hex digits in the path.
    InvalidPercentEncoding,
    /// The decoded path is not UTF-8.
    InvalidUtf8,
    /// `/api/v1/watch` or `/api/v1/proxy` (or the `/apis/g/v/` forms) with nothing after it.
    MissingResourceAfterVerb(&'static str),
    /// A `%` not followed by two hex digits in the query.
    InvalidQueryEncoding,
    /// A decoded query key or value is not UTF-8.
    InvalidQueryUtf8,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotAbsolute => f.write_str("path must start with '/'"),
            PathError::EmptySegment => f.write_str("path contains an empty segment ('//')"),
            PathError::DotSegment => f.write_str("path contains a '.' or '..' segment"),
            PathError::EncodedSlash => f.write_str("path contains an encoded '/' (%2F)"),
            PathError::EncodedBackslash => f.write_str("path contains an encoded '\\' (%5C)"),
            PathError::Backslash => f.write_str("path contains a '\\'"),
            PathError::ControlCharacter => f.write_str("path contains a control character"),
            PathError::InvalidPercentEncoding => {
                f.write_str("path contains an invalid percent-encoding")
            }
            PathError::InvalidUtf8 => f.write_str("path is not valid UTF-8 after decoding"),
            PathError::MissingResourceAfterVerb(verb) => write!(
                f,
                "unable to determine kind and namespace from url: nothing follows '/{verb}'"
            ),
            PathError::InvalidQueryEncoding => {
                f.write_str("query contains an invalid percent-encoding")
            }
            PathError::InvalidQueryUtf8 => f.write_str("query is not valid UTF-8 after decoding"),
        }
    }
}

impl std::error::Error for PathError {}

/// Classify one request exactly as kube-apiserver's `RequestInfoFactory` would (with
/// `APIPrefixes = {api, apis}`, `GrouplessAPIPrefixes = {api}`), after refusing ambiguous paths.
pub fn classify(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<RequestInfo, PathError> {
    let (path, segments) = decode_path(uri.path())?;
    let query = parse_query(uri.query())?;
    let connection_upgrade = connection_has_upgrade(headers);
    let upgrade = if connection_upgrade {
        upgrade_kind(headers)
    } else {
        None
    };

    let mut info = RequestInfo {
        is_resource_request: false,
        path,
        verb: method.as_str().to_ascii_lowercase(),
        api_prefix: String::new(),
        api_group: String::new(),
        api_version: String::new(),
        namespace: String::new(),
        resource: String::new(),
        subresource: String::new(),
        name: String::new(),
        parts: Vec::new(),
        field_selector: None,
        label_selector: None,
        upgrade,
        long_running: false,
    };

    resolve(&mut info, method, &segments, &query)?;

    // KEP-4006 / AuthorizePodWebsocketUpgradeCreatePermission: an upgrade GET of these pod
    // subresources must be authorised as `create`, like the SPDY POST. We key on the
    // `Connection: upgrade` token alone (what the apiserver's upgrade handler keys on), so a
    // request cannot dodge this by omitting or mangling the `Upgrade` header.
    if connection_upgrade
        && info.verb == "get"
        && info.is_resource_request
        && info.api_prefix == "api"
        && info.api_group.is_empty()
        && info.resource == "pods"
        && matches!(info.subresource.as_str(), "exec" | "attach" | "portforward")
    {
        info.verb = "create".to_owned();
    }

    info.long_running = is_long_running(&info);
    Ok(info)
}

/// The `RequestInfoFactory.NewRequestInfo` algorithm on validated, decoded segments.
fn resolve(
    info: &mut RequestInfo,
    method: &Method,
    segments: &[Cow<'_, str>],
    query: &[QueryPair<'_>],
) -> Result<(), PathError> {
    if segments.len() < 3 {
        return Ok(());
    }
    let Some((prefix, mut cur)) = segments.split_first() else {
        return Ok(());
    };
    if prefix != "api" && prefix != "apis" {
        return Ok(());
    }
    // Like Go, APIPrefix is recorded even when `/apis/{group}/{version}` then turns out to be a
    // non-resource (discovery) request.
    info.api_prefix = prefix.to_string();

    if prefix == "apis" {
        // One part (the prefix) is consumed: "do we have four parts?"
        if cur.len() < 3 {
            return Ok(());
        }
        let Some((group, rest)) = cur.split_first() else {
            return Ok(());
        };
        info.api_group = group.to_string();
        cur = rest;
    }

    let Some((version, rest)) = cur.split_first() else {
        return Ok(());
    };
    info.is_resource_request = true;
    info.api_version = version.to_string();
    cur = rest;

    // /{specialVerb}/* (deprecated watch and proxy prefixes)
    let mut verb_via_path_prefix = false;
    let special = match cur.first().map(|s| s.as_ref()) {
        Some("watch") => Some("watch"),
        Some("proxy") => Some("proxy"),
        _ => None,
    };
    if let Some(verb) = special {
        if cur.len() < 2 {
            return Err(PathError::MissingResourceAfterVerb(verb));
        }
        info.verb = verb.to_owned();
        cur = cur.get(1..).unwrap_or_default();
        verb_via_path_prefix = true;
    } else {
        info.verb = match method.as_str() {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_owned();
    }

    // /namespaces/{namespace}/{resource}/*: re-base parts onto the resource, unless the third
    // segment is a namespace subresource.
    if cur.first().map(|s| s.as_ref()) == Some("namespaces") {
        if let Some(ns) = cur.get(1) {
            info.namespace = ns.to_string();
            if let Some(third) = cur.get(2) {
                if third != "status" && third != "finalize" {
                    cur = cur.get(2..).unwrap_or_default();
                }
            }
        }
    }

    info.parts = cur.iter().map(|s| s.to_string()).collect();
    // resource/name/subresource/other/stuff/we/don't/interpret; the proxy prefix takes no
    // subresource.
    if info.verb != "proxy" {
        if let Some(sub) = cur.get(2) {
            info.subresource = sub.to_string();
        }
    }
    if let Some(name) = cur.get(1) {
        info.name = name.to_string();
    }
    if let Some(resource) = cur.first() {
        info.resource = resource.to_string();
    }

    // No name and a get: it is a list or a watch.
    if info.name.is_empty() && info.verb == "get" {
        let watch_values = query_first(query, "watch");
        let (watch, name) = if list_options_decode(query) {
            let name = match query_first(query, "fieldSelector") {
                Some(sel) => match field_selector_exact_match(sel, "metadata.name") {
                    Ok(Some(name)) if is_valid_path_segment_name(&name) => Some(name),
                    _ => None,
                },
                None => None,
            };
            // runtime.Convert_Slice_string_To_bool: "0" or EqualFold "false" → false.
            let watch = watch_values.is_some_and(|v| v != "0" && !go_equal_fold_false(v));
            (watch, name)
        } else {
            // Decoding failed: opts are reset, but `watch` is still honoured, with
            // strings.ToLower instead of EqualFold.
            let watch = watch_values.is_some_and(|v| {
                let lower = v.to_lowercase();
                lower != "false" && lower != "0"
            });
            (watch, None)
        };
        info.verb = if watch { "watch" } else { "list" }.to_owned();
        if let Some(name) = name {
            info.name = name;
        }
    }

    // No name and a delete: it is a deletecollection.
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_owned();
    }

    // Selector-aware authorization (AuthorizeWithSelectors), not for the verb-via-path forms.
    if !verb_via_path_prefix && matches!(info.verb.as_str(), "list" | "watch" | "deletecollection")
    {
        info.field_selector = query_first(query, "fieldSelector")
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        info.label_selector = query_first(query, "labelSelector")
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
    }
    Ok(())
}

/// `BasicLongRunningRequestCheck(verbs={watch, proxy},
/// subresources={attach, exec, proxy, log, portforward})` plus `/debug/pprof/`.
fn is_long_running(info: &RequestInfo) -> bool {
    if matches!(info.verb.as_str(), "watch" | "proxy") {
        return true;
    }
    if info.is_resource_request
        && matches!(
            info.subresource.as_str(),
            "attach" | "exec" | "proxy" | "log" | "portforward"
        )
    {
        return true;
    }
    !info.is_resource_request && info.path.starts_with("/debug/pprof/")
}

impl RequestInfo {
    /// A closed label set for metrics: `read`, `write`, `watch` or `stream`.
    ///
    /// * `watch`: the verb is `watch`;
    /// * `stream`: a long-running resource request that is not a watch (exec, attach,
    ///   portforward, proxy, log — including a non-follow log GET, which the apiserver also
    ///   counts as long-running);
    /// * `read`: `get`/`list`, and non-resource `get`/`head` (including `/debug/pprof/`);
    /// * `write`: everything else, including the empty verb of e.g. OPTIONS on a resource.
    pub fn verb_class(&self) -> &'static str {
        if self.verb == "watch" {
            return "watch";
        }
        if self.is_resource_request {
            if self.long_running {
                return "stream";
            }
            match self.verb.as_str() {
                "get" | "list" => "read",
                _ => "write",
            }
        } else {
            match self.verb.as_str() {
                "get" | "head" => "read",
                _ => "write",
            }
        }
    }

    /// Whether this is `pods/log` with `follow` set, decoded as the apiserver decodes
    /// `PodLogOptions.Follow` (`Convert_Slice_string_To_bool`: any first value other than `0` or
    /// `false`, case-insensitively, is true — so `follow=true`, `follow=1`, and even `follow=`).
    /// A query that does not parse is not a follow.
    pub fn is_follow_log(&self, uri: &Uri) -> bool {
        if !(self.is_resource_request && self.resource == "pods" && self.subresource == "log") {
            return false;
        }
        let Ok(query) = parse_query(uri.query()) else {
            return false;
        };
        query_first(&query, "follow").is_some_and(|v| v != "0" && !go_equal_fold_false(v))
    }
}

// ---------------------------------------------------------------------------------------------
// Path validation and decoding

/// Validates the raw path and returns (decoded path, decoded segments).
fn decode_path(raw: &str) -> Result<(String, Vec<Cow<'_, str>>), PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut segments = Vec::new();
    let mut trailing_slash = false;
    if !rest.is_empty() {
        let mut iter = rest.split('/').peekable();
        while let Some(seg) = iter.next() {
            if seg.is_empty() {
                if iter.peek().is_none() && !segments.is_empty() {
                    // The one trailing slash the apiserver trims.
                    trailing_slash = true;
                    continue;
                }
                return Err(PathError::EmptySegment);
            }
            let decoded = decode_segment(seg)?;
            if decoded == "." || decoded == ".." {
                return Err(PathError::DotSegment);
            }
            segments.push(decoded);
        }
    }
    let mut path = String::with_capacity(raw.len());
    for seg in &segments {
        path.push('/');
        path.push_str(seg);
    }
    if trailing_slash || segments.is_empty() {
        path.push('/');
    }
    Ok((path, segments))
}

fn decode_segment(seg: &str) -> Result<Cow<'_, str>, PathError> {
    // Fast path: nothing to decode. (A `Uri` path is ASCII; anything unusual takes the slow path.)
    if seg
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'%' && b != b'\\')
    {
        return Ok(Cow::Borrowed(seg));
    }
    let mut out = Vec::with_capacity(seg.len());
    let mut bytes = seg.bytes();
    while let Some(b) = bytes.next() {
        let byte = if b == b'%' {
            let hi = bytes.next().and_then(hex_value);
            let lo = bytes.next().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::InvalidPercentEncoding);
            };
            let v = (hi << 4) | lo;
            match v {
                b'/' => return Err(PathError::EncodedSlash),
                b'\\' => return Err(PathError::EncodedBackslash),
                _ => {}
            }
            v
        } else {
            if b == b'\\' {
                return Err(PathError::Backslash);
            }
            b
        };
        if byte < 0x20 || byte == 0x7f {
            return Err(PathError::ControlCharacter);
        }
        out.push(byte);
    }
    let s = String::from_utf8(out).map_err(|_| PathError::InvalidUtf8)?;
    if s.chars().any(char::is_control) {
        // C1 controls such as U+0085 (NEL).
        return Err(PathError::ControlCharacter);
    }
    Ok(Cow::Owned(s))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Query parsing (Go url.ParseQuery, strict about escapes)

/// One decoded `key=value` pair of the query, borrowed when nothing needed decoding.
type QueryPair<'a> = (Cow<'a, str>, Cow<'a, str>);

fn parse_query(query: Option<&str>) -> Result<Vec<QueryPair<'_>>, PathError> {
    let mut pairs = Vec::new();
    let Some(query) = query else {
        return Ok(pairs);
    };
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
fn query_first<'a>(query: &'a [QueryPair<'_>], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.as_ref() == key)
        .map(|(_, v)| v.as_ref())
}

/// `strings.EqualFold(v, "false")`. Go folds Unicode simple case: besides ASCII case, `ſ`
/// (U+017F) folds to `s`. No other non-ASCII character folds to a letter of "false".
fn go_equal_fold_false(v: &str) -> bool {
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
fn list_options_decode(query: &[QueryPair<'_>]) -> bool {
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
fn field_selector_exact_match(sel: &str, field: &str) -> Result<Option<String>, ()> {
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
fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

// ---------------------------------------------------------------------------------------------
// Upgrade detection

/// Any `Connection` header value containing the comma-separated token `upgrade`
/// (case-insensitive, surrounding whitespace ignored).
fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    })
}

/// The kind of upgrade named by the `Upgrade` header(s), `None` without one. A `websocket`
/// token anywhere wins, then `SPDY/3.1`; any other value is `Other`.
fn upgrade_kind(headers: &HeaderMap) -> Option<Upgrade> {
    let mut values = headers.get_all(UPGRADE).iter().peekable();
    values.peek()?;
    let mut kind = Upgrade::Other;
    for v in values {
        for token in v.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"websocket") {
                return Some(Upgrade::WebSocket);
            }
            if token.eq_ignore_ascii_case(b"spdy/3.1") {
                kind = Upgrade::Spdy;
            }
        }
    }
    Some(kind)
}

#[cfg(test)]
mod tests;
