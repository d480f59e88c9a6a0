//! The sanitize stage of the pipeline: headers, size, parse, judge, re-serialize.
//!
//! Accepts a request that passed authorization and rate limits. Requests without a body to
//! inspect pass untouched: reads, long-running requests (watch, exec, attach, port-forward,
//! proxy, logs — the upgrades among them), and non-resource requests. For every other resource request with a
//! body:
//!
//! | check | status |
//! |---|---|
//! | `Content-Length` or streamed bytes over the cap (`sanitize.max_body_bytes`, per resource) | 413 `RequestEntityTooLarge` |
//! | body not received within `upstream.request_timeout` | 408 `Timeout` |
//! | inspected and `Content-Encoding` other than identity | 415 `UnsupportedMediaType` |
//! | inspected and a media type other than JSON, YAML and the four patch types (text, ...), or no `Content-Type` on a PATCH | 415 |
//! | protobuf without its `k8s\0` envelope, malformed, or over the depth / string caps | 400 `BadRequest` |
//! | protobuf create / update that something judges, of another kind than its URL takes | 400 |
//! | protobuf create / update that something judges, not convertible without loss (a kind not converted, an unknown field number, a content encoding) | 415 |
//! | protobuf PATCH (no such patch type) | 415 |
//! | CBOR, unless `binary_bodies: forward-unjudged` and nothing would judge the write | 415 |
//! | a patch type on create/update, or an object type on patch | 415 |
//! | strict parse failure (duplicate key, depth, size, UTF-8, YAML anchors, patch ops) | 400 `BadRequest` naming the field |
//! | judging (`judge.rs`): Pod Security enforce | 403 `Forbidden` in PodSecurity's wording |
//! | judging: field rules, keys differing only in case from a Pod Security field | 422 `Invalid` with causes |
//! | judging: a Secret of type `kubernetes.io/service-account-token` for a service account the caller may not mint tokens for (`token_secret.rs`) | 403 `Forbidden` |
//!
//! A POST, PUT or DELETE body without a `Content-Type` is read as JSON, as kube-apiserver reads
//! it (the official Python client sends none), with every check above still applying. The
//! decoded object's `metadata` completes the audit event's `objectRef` (`Verdict::named`).
//!
//! What goes upstream is the canonical JSON of what was judged, with `Content-Length` set to its
//! length; YAML objects become `application/json`, apply patches keep their media type (JSON
//! is YAML). A protobuf body is judged as its JSON form (`parse/protobuf.rs`) and forwarded as
//! sent when the judge left that form unchanged (as the JSON it judged when a strip rule
//! changed it); protobuf that nothing judges (kinds without Pod Security or field rules,
//! DeleteOptions) is forwarded as sent once its envelope opens, named from its metadata.
//! Uninspected resources (`inspect: false`) are size-capped and forwarded as sent, except a
//! Secret write the authorize layer marked for the token-Secret check, which is always read.

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Method};
use http_body_util::{BodyExt, Limited};

use super::{
    judge::Pins,
    judge::{self, Current},
    parse::{
        self,
        protobuf::{self, ProtoError},
        BodyKind, ParseError, Parsed,
    },
    policy::{BinaryBodies, Sanitizer},
    pss::PodBearing,
    token_secret::TokenSecrets,
};
use crate::{
    audit::ObjectNames,
    body::{self, Body, BoxError},
    k8s::request::RequestInfo,
    refusal::{BodyRefusal, Refusal},
    upstream::{fetch, Outbound, Upstream},
};

/// What the stage found, for the response and the audit record.
#[derive(Debug, Default)]
pub struct Verdict {
    /// `Warning` header texts for the client.
    pub warnings: Vec<String>,
    /// Audit-mode Pod Security violations.
    pub audit: Vec<String>,
    /// The fields strip rules removed (their rules' paths).
    pub stripped: Vec<String>,
    /// True when the body was parsed and re-serialized.
    pub inspected: bool,
    /// True when a warn-mode Pod Security level found violations.
    pub pss_warned: bool,
    /// Whether Pod Security got to the write, also when it was then refused.
    pub pss: judge::PssSeen,
    /// Set by the caller: keep the judged body (for the audit `requestObject`).
    pub keep_body: bool,
    /// The judged body, when `keep_body` was set; for a write the judge refused, the body as
    /// received; for a body forwarded unjudged, the body as sent, decoded for the record only.
    pub body: Option<serde_json::Value>,
    /// Why a body `keep_body` asked for is not in `body` (for the audit
    /// `portcullis.io/request-object-omitted` annotation).
    pub body_omitted: Option<String>,
    /// The names in the decoded object of a create or update (for the audit `objectRef`), set
    /// as soon as the body parsed: a refused write is named too.
    pub named: Option<ObjectNames>,
    /// The judged write carries one of the proxy's own preconditions (`Judged::pins`): the
    /// body as received, so a conflict on it can be judged again and sent again.
    pub retry: Option<Bytes>,
    /// Which of the proxy's pins the body carries (which 409s are the proxy's doing).
    pub pins: Pins,
}

/// Whether this request carries a body the stage looks at; [`run`] is only for those. An
/// `Upgrade` header changes nothing here: the upgrades the API server serves (exec, attach,
/// port-forward, proxy) are long-running already, and on any other write it would only have
/// skipped the judge (the API server ignores it and applies the write).
pub fn has_body_to_check(parts: &Parts, info: &RequestInfo) -> bool {
    info.is_resource_request
        && !info.long_running
        && matches!(
            parts.method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        )
}

/// Run the stage on a request that [has a body to check](has_body_to_check). On success the
/// returned body replaces the request's; `parts` headers are adjusted to it. What the stage
/// learned goes into `verdict`, also when it refuses.
pub async fn run<B>(
    s: &Sanitizer,
    up: &Upstream,
    info: &RequestInfo,
    parts: &mut Parts,
    incoming: B,
    ob: &Outbound<'_>,
    verdict: &mut Verdict,
) -> Result<Body, Refusal>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (cap, inspect) = s.body_rule(info);
    // A write the token-Secret check applies to is read whatever `inspect` says.
    let inspect = inspect || marked(parts);
    check_headers(parts, cap, inspect)?;
    let bytes = collect(incoming, cap, up).await?;
    parts.headers.remove(header::TRANSFER_ENCODING);

    if !inspect {
        if verdict.keep_body {
            for_the_record(s, parts, &bytes, verdict);
            // Decoded anyway: a create or update is named from it, as an inspected one is
            // (the API server names a create from its decoded object at every level).
            if matches!(info.verb.as_str(), "create" | "update") {
                verdict.named = verdict.body.as_ref().and_then(ObjectNames::of);
            }
        }
        set_length(parts, bytes.len());
        return Ok(body::full(bytes));
    }
    if bytes.is_empty() && matches!(parts.method, Method::DELETE) {
        set_length(parts, 0);
        return Ok(body::empty());
    }
    let (parsed, protobuf) = match parse_inspected(s, info, ob, parts, &bytes)? {
        Inspected::AsSent(names) => {
            if matches!(info.verb.as_str(), "create" | "update") {
                verdict.named = names;
            }
            if verdict.keep_body {
                for_the_record(s, parts, &bytes, verdict);
            }
            set_length(parts, bytes.len());
            return Ok(body::full(bytes));
        }
        Inspected::Parsed(p) => (p, false),
        Inspected::Protobuf(p) => (p, true),
    };
    let is_patch = parsed.kind != BodyKind::Object;
    if !is_patch && matches!(info.verb.as_str(), "create" | "update") {
        // As the apiserver's create and update handlers log the decoded object before
        // admission; a patch is logged as the patch, DeleteOptions carry no names.
        verdict.named = ObjectNames::of(&parsed.value);
    }
    verdict.inspected = true;
    let decoded = protobuf.then(|| parsed.value.clone());
    let tokens = parts.extensions.get::<TokenSecrets>().cloned();
    // Only a server-side apply's manager matters (`judge/reapply.rs`).
    let manager = (parsed.kind == BodyKind::ApplyPatch)
        .then(|| field_manager(parts))
        .flatten();
    let marks = (tokens.as_ref(), manager.as_deref());
    let read = (up, fetch::limit(up, &parts.uri));
    let judged_body = match judge_write(s, read, info, ob, parsed, marks, verdict).await {
        Ok((body, pins)) => {
            verdict.retry = (pins.version || pins.uid).then(|| bytes.clone());
            verdict.pins = pins;
            body
        }
        Err(refusal) => {
            // A refused write's event carries the body as received (the apiserver logs the
            // decoded object before admission): parsed again from the bytes, on this rare
            // path, rather than a copy of every write's body kept in case it is refused.
            if verdict.keep_body {
                verdict.body = match parse_inspected(s, info, ob, parts, &bytes) {
                    Ok(Inspected::Parsed(p) | Inspected::Protobuf(p)) => Some(p.value),
                    _ => None,
                };
            }
            return Err(refusal);
        }
    };

    // A protobuf body the judge left as decoded goes upstream as sent: the bytes whose
    // conversion was judged. One the judge changed (a strip rule) goes as the JSON it judged.
    let as_sent = decoded.is_some_and(|d| d == judged_body);
    let out = (!as_sent).then(|| parse::canonical_bytes(&judged_body));
    if verdict.keep_body {
        verdict.body = Some(judged_body);
    }
    let Some(out) = out else {
        set_length(parts, bytes.len());
        return Ok(body::full(bytes));
    };
    if !is_patch {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    parts.headers.remove(header::CONTENT_ENCODING);
    set_length(parts, out.len());
    Ok(body::full(out))
}

/// Before reading the body: a declared `Content-Length` over the cap, and (when inspected) a
/// `Content-Encoding` other than identity.
fn check_headers(parts: &Parts, cap: usize, inspect: bool) -> Result<(), Refusal> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(BodyRefusal::TooLarge { limit: cap }.into());
    }
    if inspect {
        if let Some(enc) = parts.headers.get(header::CONTENT_ENCODING) {
            let enc = String::from_utf8_lossy(enc.as_bytes())
                .trim()
                .to_ascii_lowercase();
            if enc != "identity" && !enc.is_empty() {
                return Err(BodyRefusal::Encoded(enc).into());
            }
        }
    }
    Ok(())
}

/// What the stage does with an inspected body.
enum Inspected {
    /// Strictly parsed (JSON, YAML, patches): judged, its canonical JSON forwarded.
    Parsed(Parsed),
    /// Protobuf decoded into its JSON form: judged, forwarded as sent when the judge left it
    /// unchanged.
    Protobuf(Parsed),
    /// Forwarded as sent, with the object's names when known: protobuf that nothing judges,
    /// CBOR under `binary_bodies: forward-unjudged` where nothing judges it.
    AsSent(Option<ObjectNames>),
}

/// The strictly parsed body, its kind matching the method (a patch type on PATCH only); or a
/// binary body to forward as sent because nothing would judge it.
fn parse_inspected(
    s: &Sanitizer,
    info: &RequestInfo,
    ob: &Outbound<'_>,
    parts: &Parts,
    bytes: &[u8],
) -> Result<Inspected, Refusal> {
    let sent = sent_content_type(parts);
    let content_type = match media_type_or_default(&sent, &parts.method) {
        Some(ct) => ct,
        None => {
            return Err(BodyRefusal::UnknownFormat {
                patch: parts.method == Method::PATCH,
            }
            .into())
        }
    };
    if essence(content_type) == protobuf::MEDIA_TYPE {
        return protobuf_body(s, info, ob, parts, bytes);
    }
    let parsed = match parse::parse_body(content_type, bytes, &s.limits) {
        Ok(p) => p,
        Err(ParseError::UnsupportedMediaType(_)) if essence(content_type) == "application/cbor" => {
            if s.binary_bodies(info) == BinaryBodies::ForwardUnjudged
                && !judge::would_judge(s, info, ob.identity, marked(parts))
            {
                return Ok(Inspected::AsSent(None));
            }
            return Err(BodyRefusal::CannotJudge {
                media_type: essence(content_type),
                resource: judge::resource_path(info),
            }
            .into());
        }
        Err(e) => return Err(parse_refusal(&e, parts.method == Method::PATCH)),
    };
    let is_patch = parsed.kind != BodyKind::Object;
    if is_patch != (parts.method == Method::PATCH) {
        return Err(BodyRefusal::UnknownFormat {
            patch: parts.method == Method::PATCH,
        }
        .into());
    }
    Ok(Inspected::Parsed(parsed))
}

/// A body forwarded as sent (not inspected, or protobuf / CBOR nothing judges), decoded for the
/// audit `requestObject` only — as kube-apiserver logs any request object as JSON — or the
/// reason it is not (`body_omitted`). Nothing here refuses: the request goes on as sent.
fn for_the_record(s: &Sanitizer, parts: &Parts, bytes: &[u8], verdict: &mut Verdict) {
    if bytes.is_empty() {
        return;
    }
    let sent = sent_content_type(parts);
    let content_type = media_type_or_default(&sent, &parts.method).unwrap_or("");
    let decoded = if essence(content_type) == protobuf::MEDIA_TYPE {
        protobuf::open(bytes)
            .and_then(|env| protobuf::decode(env, &s.limits))
            .map_err(|e| match e {
                ProtoError::Parse(p) => format!("the protobuf body could not be read: {p}"),
                ProtoError::Unsupported(m) => format!("the protobuf body is not converted: {m}"),
            })
    } else if essence(content_type) == "application/cbor" {
        Err("the CBOR body is forwarded as sent, not decoded".to_owned())
    } else {
        parse::parse_body(content_type, bytes, &s.limits)
            .map(|p| p.value)
            .map_err(|e| format!("the body could not be read: {e}"))
    };
    match decoded {
        Ok(v) => verdict.body = Some(v),
        Err(why) => verdict.body_omitted = Some(why),
    }
}

/// A protobuf write. Its envelope must open (400 otherwise); a create or update that
/// something would judge is decoded (`parse/protobuf.rs`: 400 malformed or over a cap, 415
/// not convertible) and must hold the kind its URL takes (400); anything else (DeleteOptions,
/// kinds nothing judges) is forwarded as sent, named from its metadata for the audit. PATCH
/// has no protobuf form (415, as the API server answers).
fn protobuf_body(
    s: &Sanitizer,
    info: &RequestInfo,
    ob: &Outbound<'_>,
    parts: &Parts,
    bytes: &[u8],
) -> Result<Inspected, Refusal> {
    if parts.method == Method::PATCH {
        return Err(BodyRefusal::UnknownFormat { patch: true }.into());
    }
    let resource = judge::resource_path(info);
    let refusal = |e: ProtoError| proto_refusal(info, e);
    let env = protobuf::open(bytes).map_err(refusal)?;
    let judged = matches!(info.verb.as_str(), "create" | "update")
        && judge::would_judge(s, info, ob.identity, marked(parts));
    if !judged {
        let names = protobuf::names(&env);
        return Ok(Inspected::AsSent(names.as_ref().and_then(ObjectNames::of)));
    }
    if let Some(want) = PodBearing::from_group_resource(&info.api_group, &resource) {
        let group = env.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        if group != info.api_group || PodBearing::from_kind(&env.kind) != Some(want) {
            return Err(BodyRefusal::Parse {
                message: format!(
                    "the protobuf body holds {:?} {:?}, not the {} that {resource} takes",
                    env.api_version,
                    env.kind,
                    want.kind()
                ),
                field: None,
            }
            .into());
        }
    }
    let value = protobuf::decode(env, &s.limits).map_err(refusal)?;
    Ok(Inspected::Protobuf(Parsed {
        value,
        kind: BodyKind::Object,
    }))
}

/// Judge a create, update or patch (fetching the current object when the judge needs it, from
/// `up` within `limit`: the request's own deadline), noting warnings and audit violations in
/// `verdict`; other verbs pass as parsed. The body to forward.
async fn judge_write(
    s: &Sanitizer,
    (up, limit): (&Upstream, std::time::Duration),
    info: &RequestInfo,
    ob: &Outbound<'_>,
    parsed: Parsed,
    (tokens, manager): (Option<&TokenSecrets>, Option<&str>),
    verdict: &mut Verdict,
) -> Result<(serde_json::Value, Pins), Refusal> {
    if !matches!(info.verb.as_str(), "create" | "update" | "patch") {
        return Ok((parsed.value, Pins::default()));
    }
    let current = if judge::needs_current(s, info, ob.identity, &parsed, tokens.is_some()) {
        match fetch::current(up, info, ob, limit).await {
            // An update carries the whole object: the current one only lets an unchanged
            // denied field or token Secret through, so a caller who may not read it (RBAC
            // allows update without get) is judged on the body alone — stricter, not refused.
            Err(Refusal::Body(BodyRefusal::CurrentForbidden(_)))
                if judge::judges_update_without_current(info, &parsed) =>
            {
                Current::NotFetched
            }
            fetched => fetched?,
        }
    } else {
        Current::NotFetched
    };
    let judged = judge::judge_seen(
        s,
        info,
        ob.identity,
        parsed,
        current,
        (tokens, manager),
        &mut verdict.pss,
    )?;
    verdict.pss_warned = judged
        .warnings
        .iter()
        .any(|w| w.starts_with("would violate PodSecurity"));
    verdict.warnings = judged.warnings;
    verdict.audit = judged.audit;
    verdict.stripped = judged.stripped;
    Ok((judged.body, judged.pins))
}

/// The request's `Content-Type` as sent (empty when absent).
fn sent_content_type(parts: &Parts) -> String {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// The media type to read a body as. No (or an empty) `Content-Type` is read as JSON on
/// POST, PUT and DELETE, as kube-apiserver's `NegotiateInputSerializerForMediaType` takes the
/// first supported type (JSON) for an empty one; its patch handler has no such default, so a
/// PATCH without one is `None` (415).
fn media_type_or_default<'a>(sent: &'a str, method: &Method) -> Option<&'a str> {
    if !sent.trim().is_empty() {
        return Some(sent);
    }
    (method != Method::PATCH).then_some("application/json")
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

async fn collect<B>(incoming: B, cap: usize, up: &Upstream) -> Result<Bytes, Refusal>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match tokio::time::timeout(up.request_timeout, Limited::new(incoming, cap).collect()).await {
        Err(_) => Err(BodyRefusal::NotReceived.into()),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(BodyRefusal::TooLarge { limit: cap }.into())
        }
        Ok(Err(e)) => Err(BodyRefusal::Unreadable(e.to_string()).into()),
    }
}

/// The request's `fieldManager` query parameter, as the API server reads it.
fn field_manager(parts: &Parts) -> Option<String> {
    crate::k8s::request::Query::of(&parts.uri)
        .get("fieldManager")
        .map(str::to_owned)
}

/// Whether the authorize layer marked this write for the token-Secret check.
fn marked(parts: &Parts) -> bool {
    parts.extensions.get::<TokenSecrets>().is_some()
}

fn set_length(parts: &mut Parts, n: usize) {
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(n as u64));
}

/// A parse failure: a 400 naming the field (`details.causes`) where it has one.
/// A body that does not parse: 415 for a media type no parser takes, 400 (with the field,
/// when known) otherwise. Shared with the create guard, which re-reads judged bodies.
/// `patch`: the request is a PATCH (its 415 lists the patch types).
pub(crate) fn parse_refusal(e: &ParseError, patch: bool) -> Refusal {
    match e {
        ParseError::UnsupportedMediaType(_) => BodyRefusal::UnknownFormat { patch }.into(),
        e => BodyRefusal::Parse {
            message: e.to_string(),
            field: e.field_path().map(str::to_owned),
        }
        .into(),
    }
}

/// A protobuf body that does not open or decode (400), or cannot be converted without loss
/// (415, naming the resource `info` addresses).
pub(crate) fn proto_refusal(info: &RequestInfo, e: ProtoError) -> Refusal {
    match e {
        // Protobuf bodies are never patches (a protobuf PATCH is refused before).
        ProtoError::Parse(e) => parse_refusal(&e, false),
        ProtoError::Unsupported(reason) => BodyRefusal::Unconvertible {
            resource: judge::resource_path(info),
            reason,
        }
        .into(),
    }
}

/// `Warning` header values (`299 - "text"`), text reduced to printable ASCII and quoted.
pub fn warning_headers(warnings: &[String]) -> impl Iterator<Item = HeaderValue> + '_ {
    warnings.iter().filter_map(|w| {
        let mut v = String::with_capacity(w.len() + 10);
        v.push_str("299 - \"");
        for c in w.chars() {
            match c {
                '"' | '\\' => {
                    v.push('\\');
                    v.push(c);
                }
                ' '..='~' => v.push(c),
                _ => v.push('?'),
            }
        }
        v.push('"');
        HeaderValue::from_str(&v).ok()
    })
}
