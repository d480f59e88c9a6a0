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
//! * A WebSocket upgrade GET (`Connection: upgrade`, `Upgrade: websocket`) of an aggregated
//!   API's own subresource of a named object (not in a built-in group; not `status` or
//!   `scale`) is long-running. The apiserver's list leaves these out, yet its aggregator
//!   splices their upgrades (KubeVirt's `virtctl console` / `vnc` on
//!   `virtualmachineinstances/console`), and a hijacked connection outlives the request timeout
//!   there. Here it takes the upgrade path: spliced, a `sessions` permit, no deadline once
//!   switched. Its verb stays `get`, as RBAC sees it.
//! * Of the ListOptions decoding the apiserver performs to find `watch` and the `metadata.name`
//!   field selector, we reproduce the field-selector grammar and the integer fields
//!   (`timeoutSeconds`, `limit`) exactly, but do not validate the label-selector grammar. A
//!   malformed `labelSelector` makes the apiserver ignore the field selector's name; we would still
//!   fill [`RequestInfo::name`] — so a grant limited to that name by `resource_names` allows here
//!   what the apiserver's authorizer would judge as a list of everything. Nothing is listed for
//!   it: the list handler decodes the same `ListOptions` again and answers 400 before any read
//!   (true of every backend built on `k8s.io/apiserver`), and upstream RBAC judges the
//!   impersonated caller without the name first.
//!
//! Parts: `path.rs` validates and decodes the path, `query.rs` parses the query and the
//! `ListOptions` fields; this file resolves them into a [`RequestInfo`].

use std::{borrow::Cow, fmt};

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, Method, Uri};

mod path;
mod query;

use path::decode_path;
use query::{
    field_selector_exact_match, go_equal_fold_false, is_valid_path_segment_name,
    list_options_decode, parse_query, query_first, QueryPair,
};

/// What the apiserver would put in its `RequestInfo`, plus what a proxy needs on top. The
/// default is an empty non-resource request (no verb: nothing is allowed for it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// {attach, exec, proxy, log, portforward}, non-resource paths under `/debug/pprof/` —
    /// plus a WebSocket GET of an aggregated API's own subresource (`aggregated_subresource`),
    /// which its aggregator splices.
    pub long_running: bool,
    /// A WebSocket GET of exec / attach / port-forward (or of `nodes/proxy`, which reaches
    /// the kubelet's), authorized as `create` (`verb`) while
    /// the API server's RequestInfo — what its audit events and policy see — keeps `get`.
    pub create_for_upgrade: bool,
}

impl RequestInfo {
    /// The verb as the API server's RequestInfo has it (audit events, audit policy): `verb`,
    /// except `get` for an upgrade GET this proxy authorizes as `create`.
    pub fn audited_verb(&self) -> &str {
        if self.create_for_upgrade {
            "get"
        } else {
            &self.verb
        }
    }
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
    /// More `&`-separated parts than `query::MAX_QUERY_PARTS`.
    TooManyQueryParameters,
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
            PathError::TooManyQueryParameters => write!(
                f,
                "query has more than {} parameters",
                query::MAX_QUERY_PARTS
            ),
        }
    }
}

impl std::error::Error for PathError {}

/// A request's query parameters as the API server reads them (`URL.Query()`: pairs with a
/// raw `;` dropped, escapes decoded; `Values.Get`: the first value of a key), parsed once for
/// several lookups. A query that does not parse is empty (classification refused it already).
pub struct Query<'a>(Vec<QueryPair<'a>>);

impl<'a> Query<'a> {
    pub fn of(uri: &'a Uri) -> Query<'a> {
        Query(parse_query(uri.query()).unwrap_or_default())
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        query_first(&self.0, key)
    }

    /// Every value of `key`, in order (`Values[key]`).
    pub fn all<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.0
            .iter()
            .filter(move |(k, _)| k.as_ref() == key)
            .map(|(_, v)| v.as_ref())
    }

    /// A boolean as the API server converts it (`Convert_Slice_string_To_bool`): present and
    /// neither `"0"` nor `false` in any case.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v != "0" && !go_equal_fold_false(v))
    }
}

/// Classify one request exactly as kube-apiserver's `RequestInfoFactory` would (with
/// `APIPrefixes = {api, apis}`, `GrouplessAPIPrefixes = {api}`), after refusing ambiguous paths.
pub fn classify(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<RequestInfo, PathError> {
    // An HTTP/2 `:path` of only a query (`?watch=1`) is a `PathAndQuery` the `http` crate
    // accepts, and `Uri::path` stands `/` in for its missing path: classified as `/` while
    // `?watch=1` would be forwarded. What is forwarded is what is judged, so it is refused.
    if uri
        .path_and_query()
        .is_some_and(|p| !p.as_str().starts_with('/'))
    {
        return Err(PathError::NotAbsolute);
    }
    let (path, segments) = decode_path(uri.path())?;
    let query = parse_query(uri.query())?;
    let connection_upgrade = connection_has_upgrade(headers);
    let upgrade = if connection_upgrade {
        upgrade_kind(headers)
    } else {
        None
    };

    let mut info = RequestInfo {
        path,
        verb: method.as_str().to_ascii_lowercase(),
        upgrade,
        ..RequestInfo::default()
    };

    resolve(&mut info, method, &segments, &query)?;

    // KEP-4006 / AuthorizePodWebsocketUpgradeCreatePermission: an upgrade GET of these pod
    // subresources must be authorised as `create`, like the SPDY POST. We key on the
    // `Connection: upgrade` token alone (what the apiserver's upgrade handler keys on), so a
    // request cannot dodge this by omitting or mangling the `Upgrade` header.
    // Beyond the gate, which leaves `nodes/proxy` a `get`: an upgrade there reaches the
    // kubelet's own `/exec`, `/attach`, `/portforward` (a shell in any pod of the node, with
    // the API server's kubelet credentials), so the proxy's grants see it as the `create` it
    // is. Stricter than the API server: a `get nodes/proxy` grant no longer opens one.
    if connection_upgrade
        && info.verb == "get"
        && info.is_resource_request
        && info.api_prefix == "api"
        && info.api_group.is_empty()
        && ((info.resource == "pods"
            && matches!(info.subresource.as_str(), "exec" | "attach" | "portforward"))
            || (info.resource == "nodes" && info.subresource == "proxy"))
    {
        info.verb = "create".to_owned();
        info.create_for_upgrade = true;
    }

    info.long_running = is_long_running(&info)
        || (*method == Method::GET
            && info.upgrade == Some(Upgrade::WebSocket)
            && aggregated_subresource(&info));
    Ok(info)
}

/// The `RequestInfoFactory.NewRequestInfo` algorithm on validated, decoded segments.
fn resolve(
    info: &mut RequestInfo,
    method: &Method,
    segments: &[Cow<'_, str>],
    query: &[QueryPair<'_>],
) -> Result<(), PathError> {
    let Some(cur) = api_version(info, segments) else {
        return Ok(());
    };
    let (cur, verb_via_path_prefix) = verb(info, method, cur)?;
    let cur = namespace(info, cur);
    resource_name_subresource(info, cur);

    // No name and a get: it is a list or a watch.
    if info.name.is_empty() && info.verb == "get" {
        list_or_watch(info, query);
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

/// `/api/{version}` or `/apis/{group}/{version}`: records prefix, group and version and returns
/// the segments after them; `None` for a non-resource request.
fn api_version<'s, 'a>(
    info: &mut RequestInfo,
    segments: &'s [Cow<'a, str>],
) -> Option<&'s [Cow<'a, str>]> {
    if segments.len() < 3 {
        return None;
    }
    let (prefix, mut cur) = segments.split_first()?;
    if prefix != "api" && prefix != "apis" {
        return None;
    }
    // Like Go, APIPrefix is recorded even when `/apis/{group}/{version}` then turns out to be a
    // non-resource (discovery) request.
    info.api_prefix = prefix.to_string();

    if prefix == "apis" {
        // One part (the prefix) is consumed: "do we have four parts?"
        if cur.len() < 3 {
            return None;
        }
        let (group, rest) = cur.split_first()?;
        info.api_group = group.to_string();
        cur = rest;
    }

    let (version, rest) = cur.split_first()?;
    info.is_resource_request = true;
    info.api_version = version.to_string();
    Some(rest)
}

/// The verb: from a deprecated `/watch/` or `/proxy/` prefix (consumed; true returned with the
/// rest), or else from the method.
fn verb<'s, 'a>(
    info: &mut RequestInfo,
    method: &Method,
    cur: &'s [Cow<'a, str>],
) -> Result<(&'s [Cow<'a, str>], bool), PathError> {
    // /{specialVerb}/* (deprecated watch and proxy prefixes)
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
        return Ok((cur.get(1..).unwrap_or_default(), true));
    }
    info.verb = match method.as_str() {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
    .to_owned();
    Ok((cur, false))
}

/// `/namespaces/{namespace}/{resource}/*`: records the namespace and re-bases the parts onto
/// the resource, unless the third segment is a namespace subresource.
fn namespace<'s, 'a>(info: &mut RequestInfo, cur: &'s [Cow<'a, str>]) -> &'s [Cow<'a, str>] {
    if cur.first().map(|s| s.as_ref()) == Some("namespaces") {
        if let Some(ns) = cur.get(1) {
            info.namespace = ns.to_string();
            if let Some(third) = cur.get(2) {
                if third != "status" && third != "finalize" {
                    return cur.get(2..).unwrap_or_default();
                }
            }
        }
    }
    cur
}

/// resource/name/subresource/other/stuff/we/don't/interpret; the proxy prefix takes no
/// subresource.
fn resource_name_subresource(info: &mut RequestInfo, cur: &[Cow<'_, str>]) {
    info.parts = cur.iter().map(|s| s.to_string()).collect();
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
}

/// A get without a name: `watch` or `list` as the apiserver decodes `ListOptions`, with the
/// name from a `metadata.name` field selector.
fn list_or_watch(info: &mut RequestInfo, query: &[QueryPair<'_>]) {
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

/// A named object's subresource in an API group kube-apiserver does not serve itself, other
/// than the `status` and `scale` a custom resource may have: an aggregated API's own
/// subresource (KubeVirt's `virtualmachineinstances/console`), which the aggregator splices
/// when asked for a WebSocket. Built-in resources and custom resources' subresources stay
/// ordinary reads: a WebSocket header there changes nothing the API server does, and must not
/// change how the proxy limits, times and audits them.
fn aggregated_subresource(info: &RequestInfo) -> bool {
    info.is_resource_request
        && !info.name.is_empty()
        && !matches!(info.subresource.as_str(), "" | "status" | "scale")
        && !info.api_group.is_empty()
        && !super::BUILT_IN_GROUPS.contains(&info.api_group.as_str())
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
        if self.is_self_review() {
            // Asking about oneself changes nothing: counted and rate limited as a read.
            return "read";
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

    /// Whether this is a self-review the proxy answers itself: a create of
    /// `selfsubjectreviews` (`authentication.k8s.io` v1 / v1beta1, `kubectl auth whoami`),
    /// `selfsubjectaccessreviews` (`kubectl auth can-i`) or `selfsubjectrulesreviews`
    /// (`kubectl auth can-i --list`) (`authorization.k8s.io/v1`).
    pub fn is_self_review(&self) -> bool {
        self.is_resource_request
            && self.verb == "create"
            && self.namespace.is_empty()
            && self.name.is_empty()
            && self.subresource.is_empty()
            && match (self.api_group.as_str(), self.api_version.as_str()) {
                ("authentication.k8s.io", "v1" | "v1beta1") => {
                    self.resource == "selfsubjectreviews"
                }
                ("authorization.k8s.io", "v1") => matches!(
                    self.resource.as_str(),
                    "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
                ),
                _ => false,
            }
    }

    /// Whether this is a `log` subresource with `follow` set, decoded as the apiserver decodes
    /// `PodLogOptions.Follow` (`Convert_Slice_string_To_bool`: any first value other than `0` or
    /// `false`, case-insensitively, is true — so `follow=true`, `follow=1`, and even `follow=`).
    /// A query that does not parse is not a follow. Any resource's `log`, not only pods': an
    /// extension API's followed log (OpenShift's `builds/log`, `deploymentconfigs/log`, with
    /// the same `follow` option) lasts as long as the log grows, as a pod's does.
    pub fn is_follow_log(&self, uri: &Uri) -> bool {
        if !(self.is_resource_request && self.subresource == "log") {
            return false;
        }
        Query::of(uri).flag("follow")
    }
}

// ---------------------------------------------------------------------------------------------
// Upgrade detection

/// A WebSocket upgrade request: a `Connection` token `upgrade` and `websocket` in `Upgrade`
/// (as [`classify`] reads them).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    connection_has_upgrade(headers) && upgrade_kind(headers) == Some(Upgrade::WebSocket)
}

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
