//! Table tests for the RequestInfo port, reject classes, upgrades, and a property-style run.

use super::*;
use http::{HeaderName, HeaderValue};

/// Expected outcome of one table row.
enum Want {
    Ok(Exp),
    Err(PathError),
}

/// Expected fields of an accepted request.
struct Exp {
    resource_request: bool,
    verb: &'static str,
    group: &'static str,
    ns: &'static str,
    resource: &'static str,
    name: &'static str,
    sub: &'static str,
    long_running: bool,
    class: &'static str,
}

struct Case {
    method: &'static str,
    uri: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: Want,
}

/// A resource request.
#[allow(clippy::too_many_arguments)]
const fn res(
    verb: &'static str,
    group: &'static str,
    ns: &'static str,
    resource: &'static str,
    name: &'static str,
    sub: &'static str,
    long_running: bool,
    class: &'static str,
) -> Want {
    Want::Ok(Exp {
        resource_request: true,
        verb,
        group,
        ns,
        resource,
        name,
        sub,
        long_running,
        class,
    })
}

/// A non-resource request.
const fn nonres(verb: &'static str, long_running: bool, class: &'static str) -> Want {
    Want::Ok(Exp {
        resource_request: false,
        verb,
        group: "",
        ns: "",
        resource: "",
        name: "",
        sub: "",
        long_running,
        class,
    })
}

const fn err(e: PathError) -> Want {
    Want::Err(e)
}

const fn case(
    method: &'static str,
    uri: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: Want,
) -> Case {
    Case {
        method,
        uri,
        headers,
        want,
    }
}

const NO: &[(&str, &str)] = &[];
const WS: &[(&str, &str)] = &[("connection", "Upgrade"), ("upgrade", "websocket")];
const SPDY: &[(&str, &str)] = &[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")];

use PathError as E;

#[rustfmt::skip]
const CASES: &[Case] = &[
    // --- §1.2 worked examples -------------------------------------------------------------
    case("GET", "/api/v1/namespaces", NO, res("list", "", "", "namespaces", "", "", false, "read")),
    case("GET", "/api/v1/namespaces/foo", NO, res("get", "", "foo", "namespaces", "foo", "", false, "read")),
    case("PUT", "/api/v1/namespaces/foo/status", NO, res("update", "", "foo", "namespaces", "foo", "status", false, "write")),
    case("PUT", "/api/v1/namespaces/foo/finalize", NO, res("update", "", "foo", "namespaces", "foo", "finalize", false, "write")),
    case("GET", "/api/v1/namespaces/foo/pods", NO, res("list", "", "foo", "pods", "", "", false, "read")),
    case("GET", "/api/v1/pods", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("GET", "/api/v1/namespaces/foo/pods?watch=1", NO, res("watch", "", "foo", "pods", "", "", true, "watch")),
    case("GET", "/api/v1/watch/namespaces/foo/pods/bar", NO, res("watch", "", "foo", "pods", "bar", "", true, "watch")),
    case("GET", "/api/v1/namespaces/foo/pods?fieldSelector=metadata.name%3Dbar", NO, res("list", "", "foo", "pods", "bar", "", false, "read")),
    case("DELETE", "/apis/apps/v1/namespaces/foo/deployments", NO, res("deletecollection", "apps", "foo", "deployments", "", "", false, "write")),
    case("POST", "/api/v1/namespaces/foo/pods/bar/exec?command=ls&stdout=true", SPDY, res("create", "", "foo", "pods", "bar", "exec", true, "stream")),
    // WebSocket exec: the apiserver's RequestInfo says `get`; we say `create` (KEP-4006).
    case("GET", "/api/v1/namespaces/foo/pods/bar/exec?command=ls&stdout=true", WS, res("create", "", "foo", "pods", "bar", "exec", true, "stream")),
    case("GET", "/api/v1/namespaces/foo/pods/bar/log?follow=true", NO, res("get", "", "foo", "pods", "bar", "log", true, "stream")),
    case("GET", "/api/v1/namespaces/foo/services/s:80/proxy/x/y", NO, res("get", "", "foo", "services", "s:80", "proxy", true, "stream")),
    case("GET", "/apis/apps/v1", NO, nonres("get", false, "read")),
    // --- non-resource URLs and discovery ----------------------------------------------------
    case("GET", "/", NO, nonres("get", false, "read")),
    case("GET", "/healthz", NO, nonres("get", false, "read")),
    case("GET", "/readyz/etcd?verbose", NO, nonres("get", false, "read")),
    case("HEAD", "/livez", NO, nonres("head", false, "read")),
    case("GET", "/version/", NO, nonres("get", false, "read")),
    case("GET", "/api", NO, nonres("get", false, "read")),
    case("GET", "/api/v1", NO, nonres("get", false, "read")),
    case("GET", "/apis", NO, nonres("get", false, "read")),
    case("GET", "/apis/apps", NO, nonres("get", false, "read")),
    case("GET", "/openapi/v3/apis/apps/v1?hash=abc", NO, nonres("get", false, "read")),
    case("GET", "/.well-known/openid-configuration", NO, nonres("get", false, "read")),
    case("GET", "/debug/pprof/profile?seconds=30", NO, nonres("get", true, "read")),
    case("GET", "/debug/pprof", NO, nonres("get", false, "read")),
    case("POST", "/version", NO, nonres("post", false, "write")),
    case("OPTIONS", "/healthz", NO, nonres("options", false, "write")),
    case("GET", "/foo/bar/baz/qux", NO, nonres("get", false, "read")),
    // --- verbs from methods ---------------------------------------------------------------
    case("HEAD", "/api/v1/namespaces/foo/pods/bar", NO, res("get", "", "foo", "pods", "bar", "", false, "read")),
    case("HEAD", "/api/v1/pods", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("OPTIONS", "/api/v1/pods", NO, res("", "", "", "pods", "", "", false, "write")),
    case("PATCH", "/apis/apps/v1/namespaces/foo/deployments/d", NO, res("patch", "apps", "foo", "deployments", "d", "", false, "write")),
    case("POST", "/api/v1/namespaces/foo/pods", NO, res("create", "", "foo", "pods", "", "", false, "write")),
    case("DELETE", "/api/v1/namespaces/foo/pods/bar", NO, res("delete", "", "foo", "pods", "bar", "", false, "write")),
    case("PUT", "/apis/apps/v1/namespaces/foo/deployments/d/scale", NO, res("update", "apps", "foo", "deployments", "d", "scale", false, "write")),
    case("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", NO, res("list", "rbac.authorization.k8s.io", "", "clusterroles", "", "", false, "read")),
    case("GET", "/api/v1/pods/", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("POST", "/api/v1/namespaces/foo/pods/bar/eviction", NO, res("create", "", "foo", "pods", "bar", "eviction", false, "write")),
    case("GET", "/api/v1/namespaces/foo/pods/bar/status", NO, res("get", "", "foo", "pods", "bar", "status", false, "read")),
    case("GET", "/api/v1/namespaces/foo/status", NO, res("get", "", "foo", "namespaces", "foo", "status", false, "read")),
    case("GET", "/api/v1/namespaces/status", NO, res("get", "", "status", "namespaces", "status", "", false, "read")),
    case("GET", "/api/v1/nodes/n1/proxy/metrics", NO, res("get", "", "", "nodes", "n1", "proxy", true, "stream")),
    case("GET", "/api/v1/namespaces/foo/pods/bar/log", NO, res("get", "", "foo", "pods", "bar", "log", true, "stream")),
    // --- watch detection (runtime.Convert_Slice_string_To_bool) ---------------------------
    case("GET", "/api/v1/pods?watch=true", NO, res("watch", "", "", "pods", "", "", true, "watch")),
    case("GET", "/api/v1/pods?watch=false", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("GET", "/api/v1/pods?watch=0", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("GET", "/api/v1/pods?watch=FALSE", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("GET", "/api/v1/pods?watch=", NO, res("watch", "", "", "pods", "", "", true, "watch")),
    case("GET", "/api/v1/pods?watch", NO, res("watch", "", "", "pods", "", "", true, "watch")),
    case("GET", "/api/v1/pods?watch=yes", NO, res("watch", "", "", "pods", "", "", true, "watch")),
    case("GET", "/api/v1/pods?watch=0&watch=1", NO, res("list", "", "", "pods", "", "", false, "read")),
    // EqualFold: U+017F (long s) folds to 's'.
    case("GET", "/api/v1/pods?watch=fal%C5%BFe", NO, res("list", "", "", "pods", "", "", false, "read")),
    // ...but when ListOptions decoding fails the apiserver uses ToLower, which does not fold it.
    case("GET", "/api/v1/pods?watch=fal%C5%BFe&limit=x", NO, res("watch", "", "", "pods", "", "", true, "watch")),
    // A pair containing ';' is dropped, as Go's url.ParseQuery does.
    case("GET", "/api/v1/pods?watch=1;x=y", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("GET", "/api/v1/pods?watch=1&timeoutSeconds=abc", NO, res("watch", "", "", "pods", "", "", true, "watch")),
    case("GET", "/api/v1/watch/pods", NO, res("watch", "", "", "pods", "", "", true, "watch")),
    case("GET", "/apis/apps/v1/watch/namespaces/foo/deployments", NO, res("watch", "apps", "foo", "deployments", "", "", true, "watch")),
    case("GET", "/api/v1/namespaces/foo/pods/bar?watch=1", NO, res("get", "", "foo", "pods", "bar", "", false, "read")),
    // --- special verb prefixes ------------------------------------------------------------
    case("GET", "/api/v1/watch", NO, err(E::MissingResourceAfterVerb("watch"))),
    case("GET", "/api/v1/watch/", NO, err(E::MissingResourceAfterVerb("watch"))),
    case("GET", "/apis/apps/v1/proxy", NO, err(E::MissingResourceAfterVerb("proxy"))),
    case("GET", "/api/v1/proxy/namespaces/foo/pods/bar/x/y", NO, res("proxy", "", "foo", "pods", "bar", "", true, "stream")),
    case("GET", "/api/v1/proxy/nodes/n1", NO, res("proxy", "", "", "nodes", "n1", "", true, "stream")),
    // --- fieldSelector metadata.name ------------------------------------------------------
    case("GET", "/api/v1/namespaces/foo/pods?fieldSelector=metadata.name==bar", NO, res("list", "", "foo", "pods", "bar", "", false, "read")),
    case("GET", "/api/v1/namespaces/foo/pods?fieldSelector=metadata.name!=bar", NO, res("list", "", "foo", "pods", "", "", false, "read")),
    case("GET", "/api/v1/pods?fieldSelector=status.phase%3DRunning,metadata.name%3Dbar", NO, res("list", "", "", "pods", "bar", "", false, "read")),
    case("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da%2Fb", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("GET", "/api/v1/pods?fieldSelector=metadata.name%3D..", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dbar&watch=true", NO, res("watch", "", "", "pods", "bar", "", true, "watch")),
    case("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dbar&limit=x", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da%3Db", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da%5C%3Db", NO, res("list", "", "", "pods", "a=b", "", false, "read")),
    case("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", NO, res("list", "", "", "pods", "", "", false, "read")),
    case("DELETE", "/api/v1/namespaces/foo/pods?fieldSelector=metadata.name%3Dbar", NO, res("deletecollection", "", "foo", "pods", "", "", false, "write")),
    case("GET", "/api/v1/watch/pods?fieldSelector=metadata.name%3Dbar", NO, res("watch", "", "", "pods", "", "", true, "watch")),
    // --- upgrades -------------------------------------------------------------------------
    case("GET", "/api/v1/namespaces/foo/pods/bar/attach?stdout=1", WS, res("create", "", "foo", "pods", "bar", "attach", true, "stream")),
    case("GET", "/api/v1/namespaces/foo/pods/bar/portforward?ports=80", WS, res("create", "", "foo", "pods", "bar", "portforward", true, "stream")),
    case("POST", "/api/v1/namespaces/foo/pods/bar/portforward", SPDY, res("create", "", "foo", "pods", "bar", "portforward", true, "stream")),
    case("GET", "/api/v1/namespaces/foo/pods/bar/exec", &[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")], res("create", "", "foo", "pods", "bar", "exec", true, "stream")),
    // A node's proxy upgraded reaches the kubelet's exec: never a mere `get` for our grants.
    case("GET", "/api/v1/nodes/n1/proxy/exec/kube-system/etcd-n1/etcd?command=sh&tty=1", WS, res("create", "", "", "nodes", "n1", "proxy", true, "stream")),
    case("GET", "/api/v1/nodes/n1/proxy/metrics", NO, res("get", "", "", "nodes", "n1", "proxy", true, "stream")),
    // Connection: upgrade without an Upgrade header still cannot be a mere `get`.
    case("GET", "/api/v1/namespaces/foo/pods/bar/exec", &[("connection", "upgrade")], res("create", "", "foo", "pods", "bar", "exec", true, "stream")),
    case("GET", "/api/v1/namespaces/foo/pods/bar/exec", &[("connection", "UPGRADE"), ("upgrade", "h2c")], res("create", "", "foo", "pods", "bar", "exec", true, "stream")),
    // No Connection token: not an upgrade; the apiserver will refuse it anyway.
    case("GET", "/api/v1/namespaces/foo/pods/bar/exec", &[("upgrade", "websocket")], res("get", "", "foo", "pods", "bar", "exec", true, "stream")),
    // The 1.35 gate does not cover proxy subresources or non-core groups.
    case("GET", "/api/v1/namespaces/foo/pods/bar/proxy/ws", WS, res("get", "", "foo", "pods", "bar", "proxy", true, "stream")),
    case("GET", "/apis/example.com/v1/namespaces/foo/pods/bar/exec", WS, res("get", "example.com", "foo", "pods", "bar", "exec", true, "stream")),
    case("GET", "/api/v1/pods?watch=1", WS, res("watch", "", "", "pods", "", "", true, "watch")),
    // A WebSocket GET of an aggregated API's own subresource is long-running (the aggregator
    // splices it: KubeVirt's console), its verb unchanged. Not a built-in resource, a custom
    // resource's status or scale, a collection, an `h2c` upgrade, nor a write.
    case("GET", "/apis/subresources.kubevirt.io/v1/namespaces/foo/virtualmachineinstances/vm/console", WS, res("get", "subresources.kubevirt.io", "foo", "virtualmachineinstances", "vm", "console", true, "stream")),
    case("GET", "/api/v1/namespaces/foo/secrets/s", WS, res("get", "", "foo", "secrets", "s", "", false, "read")),
    case("GET", "/apis/apps/v1/namespaces/foo/deployments/d/scale", WS, res("get", "apps", "foo", "deployments", "d", "scale", false, "read")),
    case("GET", "/apis/example.com/v1/namespaces/foo/widgets/w/status", WS, res("get", "example.com", "foo", "widgets", "w", "status", false, "read")),
    case("GET", "/apis/example.com/v1/namespaces/foo/widgets", WS, res("list", "example.com", "foo", "widgets", "", "", false, "read")),
    case("GET", "/apis/subresources.kubevirt.io/v1/namespaces/foo/virtualmachineinstances/vm/console", &[("connection", "Upgrade"), ("upgrade", "h2c")], res("get", "subresources.kubevirt.io", "foo", "virtualmachineinstances", "vm", "console", false, "read")),
    case("POST", "/apis/subresources.kubevirt.io/v1/namespaces/foo/virtualmachineinstances/vm/console", WS, res("create", "subresources.kubevirt.io", "foo", "virtualmachineinstances", "vm", "console", false, "write")),
    // --- rejects: encoded separators ------------------------------------------------------
    case("GET", "/api/v1/namespaces/a%2Fb/pods", NO, err(E::EncodedSlash)),
    case("GET", "/api/v1/namespaces/a%2fb/pods", NO, err(E::EncodedSlash)),
    case("GET", "/healthz%2F..", NO, err(E::EncodedSlash)),
    case("GET", "/api/v1/namespaces/a%5Cb/pods", NO, err(E::EncodedBackslash)),
    case("GET", "/api/v1/namespaces/a%5cb/pods", NO, err(E::EncodedBackslash)),
    // --- rejects: dot segments ------------------------------------------------------------
    case("GET", "/api/v1/./pods", NO, err(E::DotSegment)),
    case("GET", "/api/v1/namespaces/../pods", NO, err(E::DotSegment)),
    case("GET", "/api/v1/namespaces/foo/pods/..", NO, err(E::DotSegment)),
    case("GET", "/api/v1/%2e/pods", NO, err(E::DotSegment)),
    case("GET", "/api/v1/%2E%2e/pods", NO, err(E::DotSegment)),
    case("GET", "/api/v1/.%2E/pods", NO, err(E::DotSegment)),
    // --- rejects: empty segments ----------------------------------------------------------
    case("GET", "//", NO, err(E::EmptySegment)),
    case("GET", "/api//v1/pods", NO, err(E::EmptySegment)),
    case("GET", "//api/v1/pods", NO, err(E::EmptySegment)),
    case("GET", "/api/v1/pods//", NO, err(E::EmptySegment)),
    // --- rejects: control characters (raw ones cannot be built into a Uri, see decode_path tests)
    case("GET", "/api/v1/namespaces/a%00/pods", NO, err(E::ControlCharacter)),
    case("GET", "/api/v1/namespaces/a%0Ab/pods", NO, err(E::ControlCharacter)),
    case("GET", "/healthz%7f", NO, err(E::ControlCharacter)),
    case("GET", "/healthz%C2%85", NO, err(E::ControlCharacter)),
    // --- rejects: bad escapes and bad UTF-8 -----------------------------------------------
    case("GET", "/api/v1/namespaces/%zz/pods", NO, err(E::InvalidPercentEncoding)),
    case("GET", "/api/v1/namespaces/a%2/pods", NO, err(E::InvalidPercentEncoding)),
    case("GET", "/healthz%", NO, err(E::InvalidPercentEncoding)),
    case("GET", "/api/v1/namespaces/%ff/pods", NO, err(E::InvalidUtf8)),
    case("GET", "/api/v1/namespaces/%c0%af/pods", NO, err(E::InvalidUtf8)),
    case("GET", "/api/v1/namespaces/caf%C3%A9/pods", NO, res("list", "", "café", "pods", "", "", false, "read")),
    // --- rejects: not absolute, query ------------------------------------------------------
    case("OPTIONS", "*", NO, err(E::NotAbsolute)),
    case("GET", "/api/v1/pods?watch=%zz", NO, err(E::InvalidQueryEncoding)),
    case("GET", "/api/v1/pods?labelSelector=%ff", NO, err(E::InvalidQueryUtf8)),
];

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("test header name"),
            HeaderValue::from_str(v).expect("test header value"),
        );
    }
    map
}

fn run(method: &str, uri: &str, hdrs: &[(&str, &str)]) -> Result<RequestInfo, PathError> {
    let method = Method::from_bytes(method.as_bytes()).expect("test method");
    let uri: Uri = uri.parse().expect("test uri");
    classify(&method, &uri, &headers(hdrs))
}

#[test]
fn table() {
    assert!(CASES.len() >= 60, "only {} cases", CASES.len());
    let mut failures = Vec::new();
    for c in CASES {
        let got = run(c.method, c.uri, c.headers);
        let ok = match (&c.want, &got) {
            (Want::Err(e), Err(g)) => e == g,
            (Want::Ok(w), Ok(g)) => {
                g.is_resource_request == w.resource_request
                    && g.verb == w.verb
                    && g.api_group == w.group
                    && g.namespace == w.ns
                    && g.resource == w.resource
                    && g.name == w.name
                    && g.subresource == w.sub
                    && g.long_running == w.long_running
                    && g.verb_class() == w.class
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{} {} -> {:?}", c.method, c.uri, got));
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn full_record_of_a_namespaced_list() {
    let got = run(
        "GET",
        "/apis/apps/v1/namespaces/foo/deployments?labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dd",
        NO,
    )
    .expect("accepted");
    assert_eq!(
        got,
        RequestInfo {
            is_resource_request: true,
            path: "/apis/apps/v1/namespaces/foo/deployments".into(),
            verb: "list".into(),
            api_prefix: "apis".into(),
            api_group: "apps".into(),
            api_version: "v1".into(),
            namespace: "foo".into(),
            resource: "deployments".into(),
            subresource: String::new(),
            name: "d".into(),
            parts: vec!["deployments".into()],
            field_selector: Some("metadata.name=d".into()),
            label_selector: Some("app=web".into()),
            upgrade: None,
            long_running: false,
            create_for_upgrade: false,
        }
    );
}

/// A WebSocket exec is authorized as `create`; the API server's RequestInfo — its audit
/// events and policy — keeps `get`. The SPDY POST is `create` for both.
#[test]
fn a_websocket_exec_is_create_to_authorize_and_get_to_audit() {
    let ws = run("GET", "/api/v1/namespaces/foo/pods/bar/exec?command=ls", WS).expect("ok");
    assert_eq!((ws.verb.as_str(), ws.audited_verb()), ("create", "get"));
    let spdy = run(
        "POST",
        "/api/v1/namespaces/foo/pods/bar/exec?command=ls",
        SPDY,
    )
    .expect("ok");
    assert_eq!(
        (spdy.verb.as_str(), spdy.audited_verb()),
        ("create", "create")
    );
}

#[test]
fn parts_and_prefixes() {
    let got = run("GET", "/api/v1/namespaces/foo/services/s:80/proxy/x/y", NO).expect("ok");
    assert_eq!(got.parts, ["services", "s:80", "proxy", "x", "y"]);
    assert_eq!(
        (got.api_prefix.as_str(), got.api_version.as_str()),
        ("api", "v1")
    );

    let ns = run("PUT", "/api/v1/namespaces/foo/finalize", NO).expect("ok");
    assert_eq!(ns.parts, ["namespaces", "foo", "finalize"]);

    // Discovery: non-resource, but APIPrefix is recorded as the apiserver does.
    let disc = run("GET", "/apis/apps/v1", NO).expect("ok");
    assert_eq!(disc.api_prefix, "apis");
    assert!(disc.parts.is_empty());
    assert_eq!(disc.path, "/apis/apps/v1");
}

#[test]
fn path_is_decoded_once() {
    let got = run(
        "GET",
        "/api/v1/namespaces/caf%C3%A9/configmaps/a%253Fb/",
        NO,
    )
    .expect("ok");
    assert_eq!(got.path, "/api/v1/namespaces/café/configmaps/a%3Fb/");
    assert_eq!(got.name, "a%3Fb");
    assert_eq!(run("GET", "/", NO).expect("ok").path, "/");
}

#[test]
fn selectors_copied_only_for_collection_verbs() {
    let q = "?fieldSelector=spec.nodeName%3Dn&labelSelector=a%3Db";
    let list = run("GET", &format!("/api/v1/pods{q}"), NO).expect("ok");
    assert_eq!(list.field_selector.as_deref(), Some("spec.nodeName=n"));
    assert_eq!(list.label_selector.as_deref(), Some("a=b"));

    let dc = run("DELETE", &format!("/api/v1/namespaces/x/pods{q}"), NO).expect("ok");
    assert_eq!(dc.verb, "deletecollection");
    assert_eq!(dc.label_selector.as_deref(), Some("a=b"));

    let get = run("GET", &format!("/api/v1/namespaces/x/pods/p{q}"), NO).expect("ok");
    assert_eq!((get.field_selector, get.label_selector), (None, None));

    let prefixed = run("GET", &format!("/api/v1/watch/pods{q}"), NO).expect("ok");
    assert_eq!(prefixed.verb, "watch");
    assert_eq!(
        (prefixed.field_selector, prefixed.label_selector),
        (None, None)
    );

    let empty = run("GET", "/api/v1/pods?labelSelector=", NO).expect("ok");
    assert_eq!(empty.label_selector, None);
}

#[test]
fn upgrade_detection() {
    type Headers = &'static [(&'static str, &'static str)];
    let cases: &[(Headers, Option<Upgrade>)] = &[
        (WS, Some(Upgrade::WebSocket)),
        (SPDY, Some(Upgrade::Spdy)),
        (
            &[("connection", "Upgrade"), ("upgrade", "spdy/3.1")],
            Some(Upgrade::Spdy),
        ),
        (
            &[
                ("connection", "  keep-alive ,\tupgrade "),
                ("upgrade", "WebSocket"),
            ],
            Some(Upgrade::WebSocket),
        ),
        (
            &[
                ("connection", "close"),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
            ],
            Some(Upgrade::WebSocket),
        ),
        (
            &[("connection", "Upgrade"), ("upgrade", "h2c")],
            Some(Upgrade::Other),
        ),
        (
            &[("connection", "Upgrade"), ("upgrade", "")],
            Some(Upgrade::Other),
        ),
        (
            &[("connection", "Upgrade"), ("upgrade", "foo, websocket")],
            Some(Upgrade::WebSocket),
        ),
        (&[("connection", "Upgrade")], None),
        (&[("upgrade", "websocket")], None),
        (
            &[("connection", "upgraded"), ("upgrade", "websocket")],
            None,
        ),
        (
            &[("connection", "keep-alive"), ("upgrade", "websocket")],
            None,
        ),
        (NO, None),
    ];
    for (hdrs, want) in cases {
        let got = run("GET", "/api/v1/namespaces/foo/pods/bar/exec", hdrs).expect("ok");
        assert_eq!(got.upgrade, *want, "{hdrs:?}");
    }
}

#[test]
fn follow_log() {
    let check = |uri: &str| {
        let u: Uri = uri.parse().expect("uri");
        run("GET", uri, NO).expect("ok").is_follow_log(&u)
    };
    assert!(check("/api/v1/namespaces/foo/pods/bar/log?follow=true"));
    assert!(check("/api/v1/namespaces/foo/pods/bar/log?follow=1"));
    assert!(check(
        "/api/v1/namespaces/foo/pods/bar/log?container=c&follow=True"
    ));
    assert!(!check("/api/v1/namespaces/foo/pods/bar/log"));
    assert!(!check("/api/v1/namespaces/foo/pods/bar/log?follow=false"));
    assert!(!check("/api/v1/namespaces/foo/pods/bar/log?follow=0"));
    assert!(!check("/api/v1/namespaces/foo/pods/bar/status?follow=true"));
    // Another resource's log follows the same way (OpenShift's builds/log).
    assert!(check(
        "/apis/build.openshift.io/v1/namespaces/foo/builds/bar/log?follow=true"
    ));
    assert!(!check(
        "/apis/build.openshift.io/v1/namespaces/foo/builds/bar/log"
    ));
}

#[test]
fn raw_path_rejects() {
    // Raw bytes http::Uri would refuse to build; decode_path must refuse them too.
    let cases: &[(&str, PathError)] = &[
        ("/api/v1/a\0b", E::ControlCharacter),
        ("/api/v1/a\tb", E::ControlCharacter),
        ("/api/v1/a\nb", E::ControlCharacter),
        ("/api/v1/a\x7fb", E::ControlCharacter),
        ("/api/v1/a\u{85}b", E::ControlCharacter),
        ("/api/v1/a\\b", E::Backslash),
        ("/api/v1\\..\\secrets", E::Backslash),
        ("api/v1/pods", E::NotAbsolute),
        ("", E::NotAbsolute),
        ("*", E::NotAbsolute),
    ];
    for (raw, want) in cases {
        assert_eq!(decode_path(raw).map(|_| ()), Err(want.clone()), "{raw:?}");
    }
}

/// A path-and-query that is only a query (an HTTP/2 `:path` of `?watch=1`, which the `http`
/// crate accepts; `#x` leaves the path empty and was refused already) is refused: `Uri::path` would stand `/` in for it and classify a request that
/// is not the one forwarded.
#[test]
fn a_query_without_a_path_is_refused() {
    for pq in ["?watch=1", "?"] {
        let uri = Uri::from_parts({
            let mut p = http::uri::Parts::default();
            p.path_and_query = Some(pq.parse().unwrap());
            p
        })
        .unwrap();
        assert_eq!(uri.path(), "/", "{pq}");
        assert_eq!(
            classify(&Method::GET, &uri, &HeaderMap::new()).map(|_| ()),
            Err(E::NotAbsolute),
            "{pq}"
        );
    }
}

#[test]
fn display_messages() {
    assert_eq!(
        E::EncodedSlash.to_string(),
        "path contains an encoded '/' (%2F)"
    );
    assert_eq!(
        E::EncodedBackslash.to_string(),
        "path contains an encoded '\\' (%5C)"
    );
    assert!(E::MissingResourceAfterVerb("watch")
        .to_string()
        .contains("/watch"));
    for e in [
        E::NotAbsolute,
        E::EmptySegment,
        E::DotSegment,
        E::Backslash,
        E::ControlCharacter,
        E::InvalidPercentEncoding,
        E::InvalidUtf8,
        E::InvalidQueryEncoding,
        E::InvalidQueryUtf8,
    ] {
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn field_selector_grammar() {
    let m = |s: &str| field_selector_exact_match(s, "metadata.name");
    assert_eq!(m("metadata.name=a"), Ok(Some("a".into())));
    assert_eq!(m("metadata.name==a"), Ok(Some("a".into())));
    assert_eq!(m("metadata.name!=a"), Ok(None));
    assert_eq!(m(""), Ok(None));
    assert_eq!(m(","), Ok(None));
    assert_eq!(m("metadata.name=a,"), Ok(Some("a".into())));
    // Sorted before matching: the smallest term wins.
    assert_eq!(m("metadata.name=b,metadata.name=a"), Ok(Some("a".into())));
    assert_eq!(m("x=1,metadata.name=a"), Ok(Some("a".into())));
    assert_eq!(m(" metadata.name=a"), Ok(None));
    assert_eq!(m("metadata.name=a\\,b"), Ok(Some("a,b".into())));
    assert_eq!(m("metadata.name=a,bogus"), Err(()));
    assert_eq!(m("metadata.name=a\\"), Err(()));
    assert_eq!(m("metadata.name=a\\x"), Err(()));
    assert_eq!(m("metadata.name"), Err(()));
}

#[test]
fn go_equal_fold() {
    assert!(go_equal_fold_false("false"));
    assert!(go_equal_fold_false("FaLsE"));
    assert!(go_equal_fold_false("fal\u{17F}e"));
    assert!(!go_equal_fold_false("fals"));
    assert!(!go_equal_fold_false("falsee"));
    assert!(!go_equal_fold_false(""));
}

// ---------------------------------------------------------------------------------------------
// Property-style run: deterministic xorshift over an alphabet of segments and escapes.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let i = (self.next() % items.len() as u64) as usize;
        items[i]
    }
}

const SEGMENTS: &[&str] = &[
    "api",
    "apis",
    "v1",
    "apps",
    "namespaces",
    "ns",
    "pods",
    "p",
    "watch",
    "proxy",
    "exec",
    "attach",
    "portforward",
    "log",
    "status",
    "finalize",
    "debug",
    "pprof",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    ".%2e",
    "%2F",
    "%2f",
    "%5C",
    "%5c",
    "%00",
    "%0a",
    "%7F",
    "%C2%85",
    "%zz",
    "%",
    "%2",
    "%ff",
    "%c0%af",
    "%C3%A9",
    "a%20b",
    "a%253Fb",
    "",
    "x",
    "s:80",
    "..a",
    ".well-known",
    "%25",
    "%2e%2e%2f",
];

const QUERIES: &[&str] = &[
    "",
    "?watch=1",
    "?watch=false",
    "?watch",
    "?fieldSelector=metadata.name%3Dx",
    "?fieldSelector=metadata.name%3D..",
    "?fieldSelector=metadata.name%3Dx&limit=z",
    "?labelSelector=a%3Db&fieldSelector=a%3D1,metadata.name==q",
    "?watch=1;a",
    "?follow=true",
    "?x=%zz",
    "?x=%ff",
    "?&&=&",
];

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WATCH",
];

const HEADER_SETS: &[&[(&str, &str)]] = &[
    NO,
    WS,
    SPDY,
    &[("connection", "upgrade")],
    &[("connection", "close, Upgrade"), ("upgrade", "h2c")],
];

#[test]
fn property_never_panics_deterministic_and_clean() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0usize;
    let mut rejected = 0usize;
    for _ in 0..20_000 {
        let n = (rng.next() % 8) as usize;
        let mut path = String::new();
        if !rng.next().is_multiple_of(16) {
            path.push('/');
        }
        for i in 0..n {
            if i > 0 {
                path.push('/');
            }
            path.push_str(rng.pick(SEGMENTS));
        }
        if rng.next().is_multiple_of(8) {
            path.push('/');
        }
        if path.is_empty() {
            path.push('/');
        }
        let full = format!("{path}{}", rng.pick(QUERIES));
        let Ok(uri) = full.parse::<Uri>() else {
            continue;
        };
        let method = Method::from_bytes(rng.pick(METHODS).as_bytes()).expect("method");
        let hdrs = headers(HEADER_SETS[(rng.next() % HEADER_SETS.len() as u64) as usize]);

        let first = classify(&method, &uri, &hdrs);
        let second = classify(&method, &uri, &hdrs);
        assert_eq!(first, second, "not deterministic for {full}");

        match first {
            Ok(info) => {
                accepted += 1;
                let body = info.path.strip_prefix('/').expect("absolute");
                let body = body.strip_suffix('/').unwrap_or(body);
                if !body.is_empty() {
                    for seg in body.split('/') {
                        assert!(
                            !seg.is_empty() && seg != "." && seg != "..",
                            "{full} accepted as {:?}",
                            info.path
                        );
                        assert!(!seg.chars().any(char::is_control), "{full}");
                        assert!(!seg.contains('\\'), "{full}");
                    }
                }
                for p in &info.parts {
                    assert!(!p.is_empty() && p != "." && p != "..", "{full}");
                }
                let raw = uri.path().to_ascii_lowercase();
                assert!(!raw.contains("%2f") && !raw.contains("%5c"), "{full}");
                assert!(matches!(
                    info.verb_class(),
                    "read" | "write" | "watch" | "stream"
                ));
                if info.verb == "get"
                    && info.resource == "pods"
                    && matches!(info.subresource.as_str(), "exec" | "attach" | "portforward")
                    && info.api_group.is_empty()
                {
                    assert!(
                        !connection_has_upgrade(&hdrs),
                        "upgrade GET {full} stayed get"
                    );
                }
            }
            Err(e) => {
                rejected += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert!(
        accepted > 1_000 && rejected > 1_000,
        "{accepted} accepted, {rejected} rejected"
    );
}

/// A query the API server's Go would parse as empty (over `urlmaxqueryparams`) is refused
/// before anything is authorized on its `fieldSelector`; one part fewer than the cap still
/// classifies.
#[test]
fn a_query_with_too_many_parameters_is_refused() {
    let get = |uri: &str| classify(&Method::GET, &uri.parse().unwrap(), &HeaderMap::new());
    let base = "/api/v1/namespaces/a/secrets?fieldSelector=metadata.name%3Dx";
    let over = format!("{base}{}", "&".repeat(query::MAX_QUERY_PARTS));
    assert_eq!(get(&over), Err(PathError::TooManyQueryParameters));
    let under = format!("{base}{}", "&".repeat(query::MAX_QUERY_PARTS - 1));
    let info = get(&under).unwrap();
    assert_eq!((info.verb.as_str(), info.name.as_str()), ("list", "x"));
    assert_eq!(
        PathError::TooManyQueryParameters.to_string(),
        "query has more than 1000 parameters"
    );
}
