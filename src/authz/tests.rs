//! Decision table (real request parsing through `classify`), config validation, and golden 403
//! messages.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::*;
use crate::authn::identity::{Identity, Method as AuthMethod};
use crate::k8s::request::{classify, RequestInfo};

const POLICY: &str = r#"
authorization:
  tenants:
    - name: team-a
      namespaces: [team-a, "team-a-*"]
      subjects: [{group: "tenant:team-a"}, {user: alice}]
    - name: team-b
      namespaces: [team-b]
      subjects: [{group: "tenant:team-b"}]
    - name: team-c
      namespaces: [team-c]
      subjects: [{user: carol}]
      rules:
        - {verbs: ["*"], api_groups: [""], resources: [namespaces, configmaps]}
  grants:
    - name: ci-deployers
      subjects: [{group: ci}]
      rules:
        - namespaces: [team-a, team-b]
          verbs: [get, list, watch, patch]
          api_groups: [apps]
          resources: [deployments]
        - namespaces: [team-a, team-b]
          verbs: [get, list]
          api_groups: [""]
          resources: [pods]
    - name: exec-get-only
      subjects: [{user: eve}]
      rules:
        - {namespaces: [team-a], verbs: [get], api_groups: [""], resources: [pods/exec]}
    - name: metrics
      subjects: [{group: monitoring}]
      rules:
        - {non_resource_urls: ["/metrics", "/debug/*"], verbs: [get]}
    - name: scalers
      subjects: [{extra: {key: example.com/team, value: ops}}]
      rules:
        - {namespaces: ["*"], verbs: [get, update, patch], api_groups: ["*"], resources: ["*/scale"]}
    - name: log-readers
      subjects: [{group: log-readers}]
      rules:
        - {namespaces: [team-a], verbs: [get], api_groups: [""], resources: ["pods/*"]}
    - name: app-config
      subjects: [{user: dana}]
      rules:
        - namespaces: [team-b]
          verbs: [get, list, update]
          api_groups: [""]
          resources: [configmaps]
          resource_names: [app-config]
    - name: node-viewers
      subjects: [{group: node-viewers}]
      rules:
        - {verbs: [get, list], api_groups: [""], resources: [nodes, namespaces]}
    - name: auditors
      subjects: [{group: auditors}]
      rules:
        - {namespaces: ["*"], verbs: [get, list, watch], api_groups: ["*"], resources: ["*"]}
"#;

#[derive(serde::Deserialize)]
struct File {
    authorization: AuthorizationConfig,
}

pub(crate) fn parse(yaml: &str) -> AuthorizationConfig {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).expect("yaml");
    serde_json::from_value::<File>(v)
        .expect("schema")
        .authorization
}

pub(crate) fn authorizer() -> Authorizer {
    build(&parse(POLICY), "authorization").expect("valid policy")
}

pub(crate) fn id(user: &str, groups: &[&str]) -> Identity {
    Identity {
        user: user.into(),
        uid: String::new(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        extra: BTreeMap::new(),
        tenant: None,
        scope: None,
        method: AuthMethod::ClientCertificate {
            fingerprint: "00".into(),
        },
    }
}

fn scoped(mut i: Identity, scope_json: &str) -> Identity {
    i.scope = Some(serde_json::from_str(scope_json).expect("scope"));
    i
}

pub(crate) fn req(method: &str, uri: &str, hdrs: &[(&str, &str)]) -> RequestInfo {
    let mut h = HeaderMap::new();
    for (k, v) in hdrs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    let m = Method::from_bytes(method.as_bytes()).expect("method");
    let u: Uri = uri.parse().expect("uri");
    classify(&m, &u, &h).expect("classify")
}

const NO: &[(&str, &str)] = &[];
pub(crate) const WS: &[(&str, &str)] = &[("connection", "Upgrade"), ("upgrade", "websocket")];
pub(crate) const SPDY: &[(&str, &str)] = &[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")];

#[derive(Clone, Copy)]
enum Who {
    Alice,
    Carol,
    Ci,
    Eve,
    Mallory,
    Mon,
    Ops,
    Logger,
    Dana,
    NodeViewer,
    Auditor,
    Both,
    /// alice with a scope of `get pods` in team-a
    AliceScoped,
    /// alice with an empty scope
    AliceEmptyScope,
    /// ci with a scope wider than its grants
    CiWideScope,
    /// monitoring with a scope of `get /metrics`
    MonScoped,
}

fn who(w: Who) -> Identity {
    match w {
        Who::Alice => id("alice", &[]),
        Who::Carol => id("carol", &[]),
        Who::Ci => id("ci-bot", &["ci"]),
        Who::Eve => id("eve", &[]),
        Who::Mallory => id("mallory", &["nobody"]),
        Who::Mon => id("prom", &["monitoring"]),
        Who::Ops => {
            let mut i = id("olga", &["staff"]);
            i.extra
                .insert("example.com/team".into(), vec!["dev".into(), "ops".into()]);
            i
        }
        Who::Logger => id("lou", &["log-readers"]),
        Who::Dana => id("dana", &[]),
        Who::NodeViewer => id("nina", &["node-viewers"]),
        Who::Auditor => id("audrey", &["auditors"]),
        Who::Both => id("zed", &["tenant:team-b", "tenant:team-a"]),
        Who::AliceScoped => scoped(
            id("alice", &[]),
            r#"[{"namespaces":["team-a"],"verbs":["get"],"apiGroups":[""],"resources":["pods"]}]"#,
        ),
        Who::AliceEmptyScope => scoped(id("alice", &[]), "[]"),
        Who::CiWideScope => scoped(
            id("ci-bot", &["ci"]),
            r#"[{"verbs":["*"],"resources":["*"]}]"#,
        ),
        Who::MonScoped => scoped(
            id("prom", &["monitoring"]),
            r#"[{"verbs":["get"],"nonResourceURLs":["/metrics"]}]"#,
        ),
    }
}

/// (who, method, uri, headers, allowed, reason)
type Row = (
    Who,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    bool,
    &'static str,
);

const ALLOW: bool = true;
const DENY: bool = false;

use Who::*;

#[rustfmt::skip]
const TABLE: &[Row] = &[
    // --- tenant team-a -----------------------------------------------------------------------
    (Alice, "GET", "/api/v1/namespaces/team-a/pods", NO, ALLOW, "tenant team-a"),
    (Alice, "GET", "/api/v1/namespaces/team-a-dev/pods/web", NO, ALLOW, "tenant team-a"),
    (Alice, "GET", "/api/v1/namespaces/team-b/pods", NO, DENY, "no grant"),
    (Alice, "GET", "/api/v1/namespaces/team-ab/pods", NO, DENY, "no grant"),
    (Alice, "GET", "/api/v1/pods", NO, DENY, "no grant"),
    (Alice, "GET", "/api/v1/pods?watch=true", NO, DENY, "no grant"),
    (Alice, "DELETE", "/api/v1/namespaces/team-b/pods", NO, DENY, "no grant"),
    (Alice, "DELETE", "/api/v1/namespaces/team-a/pods", NO, ALLOW, "tenant team-a"),
    (Alice, "POST", "/apis/apps/v1/namespaces/team-a/deployments", NO, ALLOW, "tenant team-a"),
    (Alice, "GET", "/apis/apps/v1/namespaces/team-a/deployments?watch=1", NO, ALLOW, "tenant team-a"),
    (Alice, "POST", "/api/v1/namespaces/team-a/pods/web/exec?command=sh", SPDY, ALLOW, "tenant team-a"),
    (Alice, "GET", "/api/v1/namespaces/team-a/pods/web/exec?command=sh", WS, ALLOW, "tenant team-a"),
    // the namespace object: get yes, write no
    (Alice, "GET", "/api/v1/namespaces/team-a", NO, ALLOW, "tenant team-a"),
    (Alice, "DELETE", "/api/v1/namespaces/team-a", NO, DENY, "no grant"),
    (Alice, "PATCH", "/api/v1/namespaces/team-a", NO, DENY, "no grant"),
    (Alice, "PUT", "/api/v1/namespaces/team-a/finalize", NO, DENY, "no grant"),
    (Alice, "GET", "/api/v1/namespaces/team-a/status", NO, DENY, "no grant"),
    (Alice, "GET", "/api/v1/namespaces/team-b", NO, DENY, "no grant"),
    (Alice, "GET", "/api/v1/namespaces", NO, DENY, "no grant"),
    (Alice, "POST", "/api/v1/namespaces", NO, DENY, "no grant"),
    (Alice, "GET", "/api/v1/nodes", NO, DENY, "no grant"),
    // a tenant rule naming `namespaces` reaches the namespace object, and only its own
    (Carol, "DELETE", "/api/v1/namespaces/team-c", NO, ALLOW, "tenant team-c"),
    (Carol, "DELETE", "/api/v1/namespaces/team-a", NO, DENY, "no grant"),
    (Carol, "GET", "/api/v1/namespaces/team-c/configmaps", NO, ALLOW, "tenant team-c"),
    (Carol, "GET", "/api/v1/namespaces/team-c/secrets", NO, DENY, "no grant"),
    // member of two tenants: the union
    (Both, "GET", "/api/v1/namespaces/team-a/pods", NO, ALLOW, "tenant team-a"),
    (Both, "GET", "/api/v1/namespaces/team-b/pods", NO, ALLOW, "tenant team-b"),
    // --- CI grant ------------------------------------------------------------------------------
    (Ci, "GET", "/apis/apps/v1/namespaces/team-a/deployments", NO, ALLOW, "grant ci-deployers"),
    (Ci, "GET", "/apis/apps/v1/namespaces/team-b/deployments/web", NO, ALLOW, "grant ci-deployers"),
    (Ci, "GET", "/apis/apps/v1/namespaces/team-b/deployments?watch=true", NO, ALLOW, "grant ci-deployers"),
    (Ci, "PATCH", "/apis/apps/v1/namespaces/team-b/deployments/web", NO, ALLOW, "grant ci-deployers"),
    (Ci, "DELETE", "/apis/apps/v1/namespaces/team-a/deployments/web", NO, DENY, "no grant"),
    (Ci, "PUT", "/apis/apps/v1/namespaces/team-a/deployments/web", NO, DENY, "no grant"),
    (Ci, "POST", "/apis/apps/v1/namespaces/team-a/deployments", NO, DENY, "no grant"),
    (Ci, "DELETE", "/apis/apps/v1/namespaces/team-a/deployments", NO, DENY, "no grant"),
    (Ci, "GET", "/apis/apps/v1/namespaces/team-c/deployments", NO, DENY, "no grant"),
    (Ci, "GET", "/apis/apps/v1/deployments", NO, DENY, "no grant"),
    (Ci, "GET", "/apis/extensions/v1beta1/namespaces/team-a/deployments", NO, DENY, "no grant"),
    (Ci, "PATCH", "/apis/apps/v1/namespaces/team-a/deployments/web/scale", NO, DENY, "no grant"),
    (Ci, "GET", "/api/v1/namespaces/team-a/pods", NO, ALLOW, "grant ci-deployers"),
    (Ci, "GET", "/api/v1/namespaces/team-b/pods/web", NO, ALLOW, "grant ci-deployers"),
    (Ci, "GET", "/api/v1/namespaces/team-a/pods/web/log", NO, DENY, "no grant"),
    (Ci, "POST", "/api/v1/namespaces/team-a/pods/web/exec?command=sh", SPDY, DENY, "no grant"),
    (Ci, "GET", "/api/v1/namespaces/team-a/pods/web/exec?command=sh", WS, DENY, "no grant"),
    (Ci, "GET", "/api/v1/pods", NO, DENY, "no grant"),
    // --- exec: `get pods/exec` is not enough for an upgrade ---------------------------------
    (Eve, "GET", "/api/v1/namespaces/team-a/pods/web/exec?command=sh", WS, DENY, "no grant"),
    (Eve, "POST", "/api/v1/namespaces/team-a/pods/web/exec?command=sh", SPDY, DENY, "no grant"),
    (Eve, "GET", "/api/v1/namespaces/team-a/pods/web/exec?command=sh", NO, ALLOW, "grant exec-get-only"),
    // --- token scope narrows, never widens ------------------------------------------------
    (AliceScoped, "GET", "/api/v1/namespaces/team-a/pods/web", NO, ALLOW, "tenant team-a"),
    (AliceScoped, "GET", "/api/v1/namespaces/team-a/pods", NO, DENY, "outside token scope"),
    (AliceScoped, "DELETE", "/api/v1/namespaces/team-a/pods/web", NO, DENY, "outside token scope"),
    (AliceScoped, "GET", "/api/v1/namespaces/team-a/configmaps/x", NO, DENY, "outside token scope"),
    (AliceScoped, "GET", "/api/v1/namespaces/team-b/pods/web", NO, DENY, "no grant"),
    (AliceEmptyScope, "GET", "/api/v1/namespaces/team-a/pods/web", NO, DENY, "outside token scope"),
    (CiWideScope, "DELETE", "/apis/apps/v1/namespaces/team-a/deployments/web", NO, DENY, "no grant"),
    (CiWideScope, "GET", "/apis/apps/v1/deployments", NO, DENY, "no grant"),
    (CiWideScope, "GET", "/apis/apps/v1/namespaces/team-a/deployments", NO, ALLOW, "grant ci-deployers"),
    (MonScoped, "GET", "/metrics", NO, ALLOW, "grant metrics"),
    (MonScoped, "GET", "/debug/pprof/heap", NO, DENY, "outside token scope"),
    // --- public discovery, for everyone authenticated, scoped or not -----------------------
    (Mallory, "GET", "/api", NO, ALLOW, "public non-resource URL"),
    (Mallory, "GET", "/api/v1", NO, ALLOW, "public non-resource URL"),
    (Mallory, "GET", "/apis/apps/v1", NO, ALLOW, "public non-resource URL"),
    (Mallory, "GET", "/version", NO, ALLOW, "public non-resource URL"),
    (Mallory, "HEAD", "/healthz", NO, ALLOW, "public non-resource URL"),
    (AliceScoped, "GET", "/apis", NO, ALLOW, "public non-resource URL"),
    (AliceEmptyScope, "GET", "/openapi/v3/apis/apps/v1?hash=abc", NO, ALLOW, "public non-resource URL"),
    (Mallory, "POST", "/version", NO, DENY, "no grant"),
    (Mallory, "GET", "/metrics", NO, DENY, "no grant"),
    (Mallory, "GET", "/healthz/etcd", NO, DENY, "no grant"),
    (Mallory, "GET", "/api/v1/namespaces/default/pods", NO, DENY, "no grant"),
    (Mallory, "GET", "/apis/apps/v1/namespaces/team-a/deployments", NO, DENY, "no grant"),
    // --- non-resource grants: exact and prefix ------------------------------------------------
    (Mon, "GET", "/metrics", NO, ALLOW, "grant metrics"),
    (Mon, "GET", "/debug/pprof/heap", NO, ALLOW, "grant metrics"),
    (Mon, "GET", "/debug", NO, DENY, "no grant"),
    (Mon, "GET", "/metricsz", NO, DENY, "no grant"),
    (Mon, "HEAD", "/metrics", NO, DENY, "no grant"),
    (Mon, "POST", "/metrics", NO, DENY, "no grant"),
    (Mon, "GET", "/api/v1/namespaces/team-a/pods", NO, DENY, "no grant"),
    // --- subresource patterns -----------------------------------------------------------------
    (Logger, "GET", "/api/v1/namespaces/team-a/pods/web/log?follow=true", NO, ALLOW, "grant log-readers"),
    (Logger, "GET", "/api/v1/namespaces/team-a/pods/web", NO, DENY, "no grant"),
    (Logger, "GET", "/api/v1/namespaces/team-a/services/s/proxy", NO, DENY, "no grant"),
    (Ops, "PUT", "/apis/apps/v1/namespaces/team-b/deployments/web/scale", NO, ALLOW, "grant scalers"),
    (Ops, "PATCH", "/apis/apps/v1/namespaces/x/statefulsets/db/scale", NO, ALLOW, "grant scalers"),
    (Ops, "GET", "/apis/apps/v1/namespaces/team-b/deployments/web", NO, DENY, "no grant"),
    (Ops, "PUT", "/apis/apps/v1/namespaces/team-b/deployments/web/status", NO, DENY, "no grant"),
    // --- resource names ------------------------------------------------------------------------
    (Dana, "GET", "/api/v1/namespaces/team-b/configmaps/app-config", NO, ALLOW, "grant app-config"),
    (Dana, "PUT", "/api/v1/namespaces/team-b/configmaps/app-config", NO, ALLOW, "grant app-config"),
    (Dana, "GET", "/api/v1/namespaces/team-b/configmaps?fieldSelector=metadata.name%3Dapp-config", NO, ALLOW, "grant app-config"),
    (Dana, "GET", "/api/v1/namespaces/team-b/configmaps/other", NO, DENY, "no grant"),
    (Dana, "GET", "/api/v1/namespaces/team-b/configmaps", NO, DENY, "no grant"),
    (Dana, "GET", "/api/v1/namespaces/team-a/configmaps/app-config", NO, DENY, "no grant"),
    // --- cluster-scoped rules (namespaces omitted) ----------------------------------------
    (NodeViewer, "GET", "/api/v1/nodes", NO, ALLOW, "grant node-viewers"),
    (NodeViewer, "GET", "/api/v1/nodes/n1", NO, ALLOW, "grant node-viewers"),
    (NodeViewer, "GET", "/api/v1/namespaces", NO, ALLOW, "grant node-viewers"),
    (NodeViewer, "GET", "/api/v1/namespaces/team-a", NO, ALLOW, "grant node-viewers"),
    (NodeViewer, "DELETE", "/api/v1/nodes/n1", NO, DENY, "no grant"),
    (NodeViewer, "GET", "/api/v1/nodes/n1/proxy/metrics", NO, DENY, "no grant"),
    (NodeViewer, "GET", "/api/v1/pods", NO, DENY, "no grant"),
    (NodeViewer, "GET", "/api/v1/namespaces/team-a/pods", NO, DENY, "no grant"),
    // --- namespaces: ["*"] is the only road to cluster-wide lists -------------------------
    (Auditor, "GET", "/api/v1/pods", NO, ALLOW, "grant auditors"),
    (Auditor, "GET", "/apis/apps/v1/deployments?watch=true", NO, ALLOW, "grant auditors"),
    (Auditor, "GET", "/apis/example.com/v1/widgets", NO, ALLOW, "grant auditors"),
    (Auditor, "GET", "/api/v1/nodes/n1", NO, ALLOW, "grant auditors"),
    (Auditor, "GET", "/api/v1/namespaces/kube-system/secrets/x", NO, ALLOW, "grant auditors"),
    (Auditor, "DELETE", "/api/v1/namespaces/team-a/pods/x", NO, DENY, "no grant"),
    (Auditor, "OPTIONS", "/api/v1/namespaces/team-a/pods", NO, DENY, "no grant"),
];

#[test]
fn decision_table() {
    let a = authorizer();
    assert!(TABLE.len() >= 40);
    let mut failures = Vec::new();
    for (i, (w, method, uri, hdrs, allowed, reason)) in TABLE.iter().enumerate() {
        let d = a.authorize(&who(*w), &req(method, uri, hdrs));
        if d.allowed != *allowed || d.reason != *reason {
            failures.push(format!(
                "row {i}: {method} {uri}: got ({}, {:?}), want ({allowed}, {reason:?})",
                d.allowed, d.reason
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn tenant_of_is_first_matching_tenant() {
    let a = authorizer();
    assert_eq!(a.tenant_of(&who(Alice)).as_deref(), Some("team-a"));
    assert_eq!(
        a.tenant_of(&id("x", &["tenant:team-a"])).as_deref(),
        Some("team-a")
    );
    assert_eq!(a.tenant_of(&who(Carol)).as_deref(), Some("team-c"));
    // config order, not group order
    assert_eq!(a.tenant_of(&who(Both)).as_deref(), Some("team-a"));
    assert_eq!(a.tenant_of(&who(Ci)), None);
    assert_eq!(a.tenant_of(&who(Mallory)), None);
}

#[test]
fn identity_tenant_field_is_not_trusted() {
    let a = authorizer();
    let mut m = who(Mallory);
    m.tenant = Some("team-a".into());
    let d = a.authorize(&m, &req("GET", "/api/v1/namespaces/team-a/pods", NO));
    assert!(!d.allowed);
}

#[test]
fn empty_policy_denies_everything_but_public() {
    let a = build(&AuthorizationConfig::default(), "authorization").expect("valid");
    let al = who(Alice);
    assert!(a.authorize(&al, &req("GET", "/api", NO)).allowed);
    assert!(a.authorize(&al, &req("GET", "/livez", NO)).allowed);
    assert!(
        !a.authorize(&al, &req("GET", "/api/v1/namespaces/a/pods", NO))
            .allowed
    );
    assert!(!a.authorize(&al, &req("GET", "/metrics", NO)).allowed);
}

#[test]
fn public_urls_default_when_absent_and_disabled_by_empty_list() {
    let cfg = parse("authorization: {}");
    assert_eq!(
        cfg.public_non_resource_urls,
        config::DEFAULT_PUBLIC_NON_RESOURCE_URLS
    );
    let none = parse("authorization: {public_non_resource_urls: []}");
    let a = build(&none, "authorization").expect("valid");
    let d = a.authorize(&who(Alice), &req("GET", "/api", NO));
    assert_eq!(
        d,
        Decision {
            allowed: false,
            reason: "no grant".into()
        }
    );
}

#[test]
fn cluster_scoped_custom_resources_can_be_declared() {
    let yaml = r#"
authorization:
  cluster_scoped_resources: [clusterwidgets.example.com]
  grants:
    - name: w
      subjects: [{group: g}]
      rules:
        - {verbs: [get, list], api_groups: [example.com], resources: [clusterwidgets]}
"#;
    let a = build(&parse(yaml), "authorization").expect("valid");
    let g = id("u", &["g"]);
    assert!(
        a.authorize(&g, &req("GET", "/apis/example.com/v1/clusterwidgets", NO))
            .allowed
    );
    assert!(
        !a.authorize(
            &g,
            &req(
                "GET",
                "/apis/example.com/v1/namespaces/x/clusterwidgets",
                NO
            )
        )
        .allowed
    );
}

fn problems(yaml: &str) -> Vec<String> {
    match build(&parse(yaml), "authorization") {
        Ok(_) => Vec::new(),
        Err(ps) => ps.into_iter().map(|p| p.path).collect(),
    }
}

/// `/*` matches every path as `*` does: refused alike, so a config cannot make `/metrics`,
/// `/debug/pprof/` and `/logs/` public to every caller (token scopes included) by spelling it
/// as a prefix.
#[test]
fn a_public_url_pattern_covering_every_path_is_refused() {
    for everything in ["*", "/*"] {
        let yaml = format!(
            "authorization:\n  public_non_resource_urls: [\"/healthz\", \"{everything}\"]\n"
        );
        assert_eq!(
            problems(&yaml),
            ["authorization.public_non_resource_urls[1]"],
            "{everything}"
        );
    }
    assert!(
        problems("authorization:\n  public_non_resource_urls: [\"/\", \"/version*\"]\n").is_empty()
    );
}

#[test]
fn validation_reports_every_problem_with_its_path() {
    let yaml = r#"
authorization:
  public_non_resource_urls: ["*", "healthz", "/a*b"]
  cluster_scoped_resources: ["Bad*"]
  tenants:
    - name: team-a
      namespaces: []
      subjects: []
    - name: team-a
      namespaces: ["*", "Team_B", "shared"]
      subjects: [{group: ""}]
      rules:
        - {verbs: [get, escalate], resources: ["pods/x/y"]}
    - name: team-z
      namespaces: [shared]
      subjects: [{user: z}]
  grants:
    - name: "bad name"
      subjects: [{extra: {key: "", value: x}}]
      rules: []
    - name: ok
      subjects: [{user: u}]
      rules:
        - {verbs: [get], api_groups: [apps], resources: [deployments]}
        - {verbs: [GET], namespaces: [], api_groups: [], resources: [Pods], resource_names: ["*"]}
        - {verbs: [get], non_resource_urls: ["/x"], resources: [pods]}
        - {verbs: [list], non_resource_urls: ["/x"], namespaces: [a]}
        - {verbs: [get]}
    - name: ok
      subjects: [{user: u}]
      rules:
        - {verbs: [], namespaces: [a], api_groups: [""], resources: [pods]}
"#;
    let got = problems(yaml);
    // A pattern of one tenant over another's namespace: both would claim it.
    let overlapping = problems(
        "authorization:\n  tenants:\n    - {name: a, namespaces: [\"team-*\"], subjects: [{group: ga}]}\n    - {name: b, namespaces: [team-b, ops], subjects: [{group: gb}]}\n    - {name: c, namespaces: [\"x*\", \"o*\"], subjects: [{group: gc}]}\n",
    );
    assert_eq!(
        overlapping,
        [
            "authorization.tenants[1].namespaces[0]",
            "authorization.tenants[2].namespaces[1]"
        ],
        "{overlapping:?}"
    );
    let want = [
        "authorization.public_non_resource_urls[0]",
        "authorization.public_non_resource_urls[1]",
        "authorization.public_non_resource_urls[2]",
        "authorization.cluster_scoped_resources[0]",
        "authorization.tenants[0].subjects",
        "authorization.tenants[0].namespaces",
        "authorization.tenants[1].name",
        "authorization.tenants[1].subjects[0].group",
        "authorization.tenants[1].namespaces[0]",
        "authorization.tenants[1].namespaces[1]",
        "authorization.tenants[1].rules[0].verbs[1]",
        "authorization.tenants[1].rules[0].api_groups",
        "authorization.tenants[1].rules[0].resources[0]",
        "authorization.tenants[2].namespaces[0]",
        "authorization.grants[0].name",
        "authorization.grants[0].subjects[0].extra.key",
        "authorization.grants[0].rules",
        // deployments is namespaced: a rule without namespaces could never match it
        "authorization.grants[1].rules[0].resources[0]",
        "authorization.grants[1].rules[1].verbs[0]",
        "authorization.grants[1].rules[1].namespaces",
        "authorization.grants[1].rules[1].api_groups",
        "authorization.grants[1].rules[1].resources[0]",
        "authorization.grants[1].rules[1].resource_names[0]",
        "authorization.grants[1].rules[2]",
        "authorization.grants[1].rules[3].verbs[0]",
        "authorization.grants[1].rules[3].namespaces",
        "authorization.grants[1].rules[4]",
        "authorization.grants[2].name",
        "authorization.grants[2].rules[0].verbs",
    ];
    for w in want {
        assert!(got.iter().any(|g| g == w), "missing {w}; got {got:#?}");
    }
    assert_eq!(got.len(), want.len(), "got {got:#?}");
}

#[test]
fn schema_rejects_unknown_keys_and_tenant_rule_namespaces() {
    let bad = [
        "authorization: {grant: []}",
        "authorization: {tenants: [{name: a, namespaces: [a], subjects: [{user: u}], rules: [{namespaces: [b], verbs: [get], api_groups: [''], resources: [pods]}]}]}",
        "authorization: {grants: [{name: a, subjects: [{user: u, group: g}], rules: []}]}",
        "authorization: {grants: [{name: a, subjects: [{serviceaccount: u}], rules: []}]}",
        "authorization: {grants: [{name: a, subjects: [{extra: {key: k, value: v, x: 1}}], rules: []}]}",
    ];
    for yaml in bad {
        let v: serde_json::Value = serde_saphyr::from_str(yaml).expect("yaml");
        assert!(serde_json::from_value::<File>(v).is_err(), "{yaml}");
    }
}

#[test]
fn example_from_the_docs_builds() {
    let yaml = r#"
authorization:
  public_non_resource_urls: ["/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/openapi/*", "/healthz", "/livez", "/readyz"]
  tenants:
    - name: team-a
      namespaces: [team-a]
      subjects: [{group: "tenant:team-a"}, {user: alice}, {extra: {key: example.com/team, value: a}}]
      rules:
        - {verbs: ["*"], api_groups: ["*"], resources: ["*"]}
  grants:
    - name: ci-deployers
      subjects: [{group: ci}]
      rules:
        - namespaces: [team-a, team-b]
          verbs: [get, list, watch, patch]
          api_groups: [apps]
          resources: [deployments]
          resource_names: []
        - non_resource_urls: ["/healthz", "/metrics"]
          verbs: [get]
"#;
    assert!(problems(yaml).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Golden 403 bodies

fn message(user: &str, method: &str, uri: &str, hdrs: &[(&str, &str)], reason: &str) -> String {
    forbidden_status_of(&id(user, &[]), &req(method, uri, hdrs), reason).message
}

#[test]
fn forbidden_full_body_matches_apiserver_bytes() {
    let s = forbidden_status_of(
        &id("alice", &[]),
        &req("GET", "/api/v1/namespaces/default/pods", NO),
        "",
    );
    assert_eq!(
        String::from_utf8(s.to_json()).expect("utf8"),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"","reason":"Forbidden","details":{"kind":"pods"},"code":403}"#
    );
    assert_eq!(s.status_code(), http::StatusCode::FORBIDDEN);
}

#[test]
fn forbidden_messages() {
    // cluster scope, reason appended
    assert_eq!(
        message("alice", "GET", "/api/v1/pods", NO, "no grant"),
        r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" at the cluster scope: no grant"#
    );
    // named object in a group
    let s = forbidden_status_of(
        &id("ci-bot", &[]),
        &req(
            "DELETE",
            "/apis/apps/v1/namespaces/team-a/deployments/web",
            NO,
        ),
        "no grant",
    );
    assert_eq!(
        s.message,
        r#"deployments.apps "web" is forbidden: User "ci-bot" cannot delete resource "deployments" in API group "apps" in the namespace "team-a": no grant"#
    );
    let v: serde_json::Value = serde_json::from_slice(&s.to_json()).expect("json");
    assert_eq!(
        v["details"],
        serde_json::json!({"name": "web", "group": "apps", "kind": "deployments"})
    );
    // subresource, WebSocket exec is a create
    assert_eq!(
        message(
            "eve",
            "GET",
            "/api/v1/namespaces/team-a/pods/web/exec?command=sh",
            WS,
            ""
        ),
        r#"pods "web" is forbidden: User "eve" cannot create resource "pods/exec" in API group "" in the namespace "team-a""#
    );
    // cluster-scoped named object
    assert_eq!(
        message("nina", "DELETE", "/api/v1/nodes/n1", NO, ""),
        r#"nodes "n1" is forbidden: User "nina" cannot delete resource "nodes" in API group "" at the cluster scope"#
    );
    // the namespace object is addressed "in the namespace" itself
    assert_eq!(
        message("alice", "DELETE", "/api/v1/namespaces/team-a", NO, ""),
        r#"namespaces "team-a" is forbidden: User "alice" cannot delete resource "namespaces" in API group "" in the namespace "team-a""#
    );
    // a cluster-wide list in a group
    assert_eq!(
        message(
            "ci-bot",
            "GET",
            "/apis/apps/v1/deployments?watch=1",
            NO,
            "outside token scope"
        ),
        r#"deployments.apps is forbidden: User "ci-bot" cannot watch resource "deployments" in API group "apps" at the cluster scope: outside token scope"#
    );
}

#[test]
fn forbidden_non_resource_path() {
    let s = forbidden_status_of(&id("mallory", &[]), &req("GET", "/metrics", NO), "");
    assert_eq!(
        s.message,
        r#"forbidden: User "mallory" cannot get path "/metrics""#
    );
    let json = String::from_utf8(s.to_json()).expect("utf8");
    assert!(json.contains(r#""details":{}"#), "{json}");
    assert_eq!(
        message("m", "POST", "/apis/apps/v1", NO, "no grant"),
        r#"forbidden: User "m" cannot post path "/apis/apps/v1": no grant"#
    );
}

#[test]
fn forbidden_escapes_html_and_quotes_like_go() {
    // user: quoted with %q, then HTML-escaped
    assert_eq!(
        message("<script>&\"x\"", "GET", "/healthz", NO, ""),
        r#"forbidden: User "&lt;script&gt;&amp;\"x\"" cannot get path "/healthz""#
    );
    // the path, decoded, is escaped too
    assert_eq!(
        message("u", "GET", "/x%3Cy%3E&z", NO, ""),
        r#"forbidden: User "u" cannot get path "/x&lt;y&gt;&amp;z""#
    );
    // the name in the NewForbidden prefix and the reason are not escaped (as in Go)
    assert_eq!(
        message(
            "u",
            "GET",
            "/api/v1/namespaces/a/configmaps/%3Cb%3E",
            NO,
            "a<b"
        ),
        r#"configmaps "<b>" is forbidden: User "u" cannot get resource "configmaps" in API group "" in the namespace "a": a<b"#
    );
    // non-printable characters in the user name
    assert_eq!(
        message("a\tb\u{200b}", "GET", "/healthz", NO, ""),
        r#"forbidden: User "a\tb\u200b" cannot get path "/healthz""#
    );
}

#[test]
fn scope_rule_semantics() {
    let s = |json: &str| -> Scope { serde_json::from_str(json).expect("scope") };
    let r = |m: &str, u: &str| req(m, u, NO);
    // omitted namespaces: any namespace, cluster-wide included
    let any_ns = s(r#"[{"verbs":["list"],"resources":["pods"]}]"#);
    assert!(any_ns.allows(&r("GET", "/api/v1/pods")));
    assert!(any_ns.allows(&r("GET", "/api/v1/namespaces/x/pods")));
    // explicit namespaces (globs too) never match a request without a namespace
    let team = s(r#"[{"namespaces":["team-*"],"verbs":["list"],"resources":["pods"]}]"#);
    assert!(team.allows(&r("GET", "/api/v1/namespaces/team-a/pods")));
    assert!(!team.allows(&r("GET", "/api/v1/pods")));
    assert!(!team.allows(&r("GET", "/api/v1/namespaces/other/pods")));
    // "*" namespaces: like omitted
    let star = s(r#"[{"namespaces":["*"],"verbs":["list"],"resources":["pods"]}]"#);
    assert!(star.allows(&r("GET", "/api/v1/pods")));
    // apiGroups, subresources, names
    let apps = s(
        r#"[{"verbs":["get"],"apiGroups":["apps"],"resources":["*/scale","pods/*"],"resourceNames":["web"]}]"#,
    );
    assert!(apps.allows(&r(
        "GET",
        "/apis/apps/v1/namespaces/a/deployments/web/scale"
    )));
    assert!(!apps.allows(&r("GET", "/apis/apps/v1/namespaces/a/deployments/db/scale")));
    assert!(!apps.allows(&r("GET", "/apis/apps/v1/namespaces/a/deployments/web")));
    assert!(!apps.allows(&r("GET", "/api/v1/namespaces/a/pods/web/log")));
    // non-resource rules match only non-resource requests
    let urls = s(r#"[{"verbs":["get"],"nonResourceURLs":["/healthz*"]}]"#);
    assert!(urls.allows(&r("GET", "/healthz/etcd")));
    assert!(!urls.allows(&r("GET", "/api/v1/namespaces/a/pods")));
    // a rule without resources or URLs, and an empty scope, match nothing
    assert!(!s(r#"[{"verbs":["*"]}]"#).allows(&r("GET", "/api/v1/namespaces/a/pods")));
    assert!(!s("[]").allows(&r("GET", "/healthz")));
}

/// The rendered 403 Status, as the client gets it.
fn forbidden_status_of(
    id: &crate::authn::Identity,
    req: &crate::k8s::request::RequestInfo,
    reason: &str,
) -> crate::k8s::Status {
    crate::refusal::Refusal::Forbidden(Box::new(super::forbidden(id, req, reason))).status()
}

/// `cluster_scoped_resources` cannot make a built-in namespaced resource cluster-scoped: a
/// grant rule without namespaces would then cover it in every namespace (all Secrets).
#[test]
fn a_builtin_namespaced_resource_cannot_be_declared_cluster_scoped() {
    for entry in [
        "secrets",
        "deployments.apps",
        "roles.rbac.authorization.k8s.io",
    ] {
        let yaml = format!("authorization:\n  cluster_scoped_resources: [{entry}]\n");
        assert_eq!(
            problems(&yaml),
            ["authorization.cluster_scoped_resources[0]"],
            "{entry}"
        );
    }
    // Custom ones, and built-in cluster-scoped ones newer than the proxy's list, are accepted.
    for entry in ["clusterwidgets.example.com", "newthings.storage.k8s.io"] {
        let yaml = format!("authorization:\n  cluster_scoped_resources: [{entry}]\n");
        assert!(problems(&yaml).is_empty(), "{entry}");
    }
}

/// A grant rule without namespaces whose wildcards reach `impersonate` on users, groups, uids
/// or extras is reported (its subjects may act as others, in any namespace); one naming the
/// verb and the target (`userextras/*` included: an extra's key is its subresource), one with
/// resource_names, one confined to namespaces, one over every namespace already, one whose
/// resource cannot match an extra (`userextras` alone), or one without `impersonate` is not.
#[test]
fn grant_wildcards_reaching_impersonation_are_reported() {
    let policy = build(
        &parse(
            r#"
authorization:
  grants:
    - name: infra
      subjects: [{group: infra}]
      rules:
        - {verbs: ["*"], api_groups: ["*"], resources: ["*"]}
        - {verbs: [impersonate], api_groups: [""], resources: ["*"]}
        - {verbs: [impersonate], api_groups: [""], resources: [users]}
        - {verbs: [impersonate], api_groups: [""], resources: [groups], resource_names: [ops]}
        - {verbs: [get, list, watch], api_groups: ["*"], resources: ["*"]}
        - {namespaces: [team-a], verbs: ["*"], api_groups: ["*"], resources: ["*"]}
        - {verbs: ["*"], api_groups: [apps], resources: ["*"]}
        - {verbs: [impersonate], api_groups: ["*"], resources: [users]}
        - {verbs: [impersonate], api_groups: [""], resources: [users, "*"]}
        - {verbs: [impersonate], api_groups: ["*"], resources: ["*"]}
        - {verbs: ["*"], api_groups: [authentication.k8s.io], resources: [userextras]}
        - {verbs: [impersonate], api_groups: [authentication.k8s.io], resources: ["userextras/*"]}
        - {verbs: ["*"], api_groups: [authentication.k8s.io], resources: ["userextras/*"]}
    - name: root
      subjects: [{user: root}]
      rules:
        - {verbs: ["*"], api_groups: [""], resources: [groups]}
    - name: admins
      subjects: [{group: admins}]
      rules:
        - {namespaces: ["*"], verbs: ["*"], api_groups: ["*"], resources: ["*"]}
"#,
        ),
        "authorization",
    )
    .expect("valid policy");
    let found = policy.wildcard_impersonation();
    let at: Vec<&str> = found
        .iter()
        .map(|f| f.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        at,
        [
            "authorization.grants[0] (infra) rules[0]",
            "authorization.grants[0] (infra) rules[1]",
            "authorization.grants[0] (infra) rules[8]",
            "authorization.grants[0] (infra) rules[9]",
            "authorization.grants[0] (infra) rules[12]",
            "authorization.grants[1] (root) rules[0]",
        ],
        "{found:#?}"
    );
    // What the message says: the first rule lets its subjects impersonate any group.
    let as_group = RequestInfo {
        is_resource_request: true,
        verb: "impersonate".into(),
        resource: "groups".into(),
        name: "tenant:team-b".into(),
        ..RequestInfo::default()
    };
    assert!(
        policy
            .authorize_impersonation(&id("ian", &["infra"]), &as_group, false)
            .allowed
    );
}
