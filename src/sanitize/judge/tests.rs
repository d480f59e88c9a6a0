//! `judge` on whole writes where a namespace's and a tenant's Pod Security policies both apply.

use serde_json::json;

use super::*;
use crate::{
    k8s::request::classify,
    sanitize::{
        parse::{BodyKind, Parsed},
        policy::{Modes, PodSecurity},
        pss::{Level, Policy, Version},
    },
};

fn info(uri: &str) -> RequestInfo {
    classify(
        &http::Method::POST,
        &uri.parse().unwrap(),
        &http::HeaderMap::new(),
    )
    .unwrap()
}

fn caller(tenant: Option<&str>) -> Identity {
    let mut id = crate::authz::tests::id("alice", &[]);
    id.tenant = tenant.map(str::to_owned);
    id
}

fn all(level: Level, version: Version) -> Modes {
    let p = Some(Policy::new(level, version));
    Modes {
        enforce: p,
        warn: p,
        audit: p,
    }
}

/// team-a: `baseline` at `latest`; the contractors tenant: `restricted` pinned to v1.18 (the
/// review's example).
/// `restricted:latest` enforced in team-a and nothing else (`user_namespaces` off).
fn restricted_team_a() -> Sanitizer {
    Sanitizer {
        pod_security: Some(PodSecurity {
            defaults: Modes::default(),
            namespaces: [(
                "team-a".to_string(),
                all(Level::Restricted, Version::Latest),
            )]
            .into(),
            tenants: Default::default(),
        }),
        ..Sanitizer::default()
    }
}

/// A restricted pod spec but for running as root in a user namespace (`hostUsers: false`).
fn root_in_userns_spec(image: &str) -> Value {
    json!({
        "hostUsers": false,
        "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": image, "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
    })
}

fn sanitizer() -> Sanitizer {
    Sanitizer {
        pod_security: Some(PodSecurity {
            defaults: Modes::default(),
            namespaces: [("team-a".to_string(), all(Level::Baseline, Version::Latest))].into(),
            tenants: [(
                "contractors".to_string(),
                all(Level::Restricted, Version::V1(18)),
            )]
            .into(),
        }),
        ..Sanitizer::default()
    }
}

/// Restricted in every respect restricted v1.18 reads, but with an unconfined seccomp profile
/// (v1.18 reads only the annotations) and a probe aimed at the metadata service (no host-probe
/// check before v1.34): both forbidden by baseline at `latest`.
fn contractor_pod(extra_container_field: Option<(&str, Value)>) -> Value {
    let mut c = json!({
        "name": "c", "image": "busybox",
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        "livenessProbe": {"httpGet": {"host": "169.254.169.254", "port": 80, "path": "/"}}
    });
    if let Some((k, v)) = extra_container_field {
        c["securityContext"][k] = v;
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Unconfined"}},
            "containers": [c]
        }
    })
}

fn run(obj: Value, tenant: Option<&str>) -> Result<Judged, Refusal> {
    judge(
        &sanitizer(),
        &info("/api/v1/namespaces/team-a/pods"),
        &caller(tenant),
        Parsed {
            value: obj,
            kind: BodyKind::Object,
        },
        Current::NotFetched,
        None,
        None,
    )
}

fn denial(r: Result<Judged, Refusal>) -> PodSecurityDenial {
    match r {
        Err(Refusal::PodSecurity(d)) => *d,
        Err(other) => panic!("refused otherwise: {other:?}"),
        Ok(j) => panic!("passed: warnings {:?}, audit {:?}", j.warnings, j.audit),
    }
}

/// The tenant's older, higher level does not replace the namespace's: the pod must pass both,
/// and the refusal names the one it failed.
#[test]
fn a_pod_must_pass_the_namespace_s_and_the_tenant_s_policy() {
    let d = denial(run(contractor_pod(None), Some("contractors")));
    assert_eq!(d.policy, "baseline:latest");
    assert!(
        d.detail.contains("seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")")
            && d.detail.contains("probe or lifecycle host"),
        "{}",
        d.detail
    );
    let fields: Vec<&str> = d.causes.iter().map(|c| c.field.as_str()).collect();
    assert!(
        fields.contains(&"spec.securityContext.seccompProfile.type"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.containers[0].livenessProbe.httpGet.host"),
        "{fields:?}"
    );
    assert!(
        d.causes.iter().all(|c| c
            .message
            .starts_with("Forbidden: violates PodSecurity \"baseline:latest\": ")),
        "{:?}",
        d.causes
    );
    // Without the tenant, the namespace's policy alone refuses it too.
    assert_eq!(
        denial(run(contractor_pod(None), None)).policy,
        "baseline:latest"
    );
}

/// Both violated: the stricter level (first) names the refusal; what only the other finds is a
/// cause under its own name, each field once.
#[test]
fn both_violated_name_the_stricter_and_list_every_field() {
    // Privileged fails both; the tenant's restricted comes first.
    let d = denial(run(
        contractor_pod(Some(("privileged", json!(true)))),
        Some("contractors"),
    ));
    assert_eq!(d.policy, "restricted:v1.18");
    let by: Vec<(&str, &str)> = d
        .causes
        .iter()
        .map(|c| {
            let named = if c.message.contains("\"restricted:v1.18\"") {
                "restricted:v1.18"
            } else {
                "baseline:latest"
            };
            (c.field.as_str(), named)
        })
        .collect();
    let privileged = "spec.containers[0].securityContext.privileged";
    assert_eq!(
        by.iter().filter(|(f, _)| *f == privileged).count(),
        1,
        "{by:?}"
    );
    assert!(by.contains(&(privileged, "restricted:v1.18")), "{by:?}");
    assert!(
        by.contains(&(
            "spec.securityContext.seccompProfile.type",
            "baseline:latest"
        )),
        "{by:?}"
    );
}

/// Warn and audit report what either policy finds, one text per policy as PodSecurity words a
/// level; a policy that finds nothing new adds nothing.
#[test]
fn warn_and_audit_report_either_policy() {
    let mut s = sanitizer();
    // Enforce nothing, so the write passes and its warnings and audit notes show.
    if let Some(ps) = s.pod_security.as_mut() {
        for m in ps.namespaces.values_mut().chain(ps.tenants.values_mut()) {
            m.enforce = None;
        }
    }
    let judged = judge(
        &s,
        &info("/api/v1/namespaces/team-a/pods"),
        &caller(Some("contractors")),
        Parsed {
            value: contractor_pod(None),
            kind: BodyKind::Object,
        },
        Current::NotFetched,
        None,
        None,
    )
    .unwrap();
    for texts in [&judged.warnings, &judged.audit] {
        assert_eq!(texts.len(), 1, "{texts:?}");
        assert!(
            texts[0].starts_with(
                "would violate PodSecurity \"baseline:latest\": probe or lifecycle host"
            ) && texts[0].contains("seccompProfile"),
            "{texts:?}"
        );
    }
    // Both find something: one text each, the stricter level first.
    let judged = judge(
        &s,
        &info("/api/v1/namespaces/team-a/pods"),
        &caller(Some("contractors")),
        Parsed {
            value: contractor_pod(Some(("allowPrivilegeEscalation", json!(true)))),
            kind: BodyKind::Object,
        },
        Current::NotFetched,
        None,
        None,
    )
    .unwrap();
    let named: Vec<&str> = judged
        .warnings
        .iter()
        .map(|w| w.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        named,
        [
            "would violate PodSecurity \"restricted:v1.18\"",
            "would violate PodSecurity \"baseline:latest\""
        ]
    );
}

/// An update of an object already stored with `hostUsers` (made before the proxy, or with the
/// gate on): the API server keeps the field whatever its feature gate (`hostUsersInUse`), so
/// its PodSecurity relaxes on it — and so does the proxy, though `user_namespaces` is off. The
/// stored object is fetched for such an update; a new object's `hostUsers` stays untrusted.
#[test]
fn an_update_keeps_trusting_host_users_the_stored_object_already_has() {
    let s = restricted_team_a();
    let root_in_userns = |image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": root_in_userns_spec(image)})
    };
    let put = classify(
        &http::Method::PUT,
        &"/api/v1/namespaces/team-a/pods/p".parse().unwrap(),
        &http::HeaderMap::new(),
    )
    .unwrap();
    let body = || Parsed {
        value: root_in_userns("busybox:2"),
        kind: BodyKind::Object,
    };
    assert!(
        needs_current(&s, &put, &caller(None), &body(), false),
        "the stored object decides"
    );
    let update = |current| judge(&s, &put, &caller(None), body(), current, None, None);
    assert!(update(Current::Found(root_in_userns("busybox:1"))).is_ok());
    let mut without = root_in_userns("busybox:1");
    without["spec"].as_object_mut().unwrap().remove("hostUsers");
    assert!(matches!(
        update(Current::Found(without)),
        Err(Refusal::PodSecurity(_))
    ));
    assert!(matches!(
        update(Current::Absent),
        Err(Refusal::PodSecurity(_))
    ));
    // A create has no stored object: untrusted.
    assert!(matches!(
        judge(
            &s,
            &info("/api/v1/namespaces/team-a/pods"),
            &caller(None),
            body(),
            Current::NotFetched,
            None,
            None
        ),
        Err(Refusal::PodSecurity(_))
    ));
}

/// A workload's template is not trusted by its stored `hostUsers`: the API server keeps the
/// field on the template, but each pod made from it is new and loses the field with the gate
/// off — a `runAsUser: 0` template would make pods running as root in the host user namespace.
/// So the update is refused with the stored Deployment carrying the field, and the stored
/// object is not even fetched for it.
#[test]
fn a_workload_template_is_not_trusted_by_its_stored_host_users() {
    let s = restricted_team_a();
    let deployment = |image: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": root_in_userns_spec(image)}}
        })
    };
    let put = classify(
        &http::Method::PUT,
        &"/apis/apps/v1/namespaces/team-a/deployments/d"
            .parse()
            .unwrap(),
        &http::HeaderMap::new(),
    )
    .unwrap();
    let body = || Parsed {
        value: deployment("busybox:2"),
        kind: BodyKind::Object,
    };
    assert!(!needs_current(&s, &put, &caller(None), &body(), false));
    assert!(matches!(
        judge(
            &s,
            &put,
            &caller(None),
            body(),
            Current::Found(deployment("busybox:1")),
            None,
            None
        ),
        Err(Refusal::PodSecurity(_))
    ));
}

/// A JSON patch whose indices were written plain against the object read is pinned to that
/// object even where nothing else is judged: `-1` counted on it names another element once a
/// concurrent write changed the list.
#[test]
fn a_patch_with_rewritten_indices_is_pinned_to_the_object_read() {
    let s = Sanitizer::default();
    let patch = classify(
        &http::Method::PATCH,
        &"/api/v1/namespaces/team-a/configmaps/c".parse().unwrap(),
        &http::HeaderMap::new(),
    )
    .unwrap();
    let cur = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "resourceVersion": "42", "finalizers": ["a", "b"]}});
    let sent = |path: &str| Parsed {
        value: json!([{"op": "remove", "path": path}]),
        kind: BodyKind::JsonPatch,
    };
    let judged = |path: &str| {
        judge(
            &s,
            &patch,
            &caller(None),
            sent(path),
            Current::Found(cur.clone()),
            None,
            None,
        )
        .unwrap()
    };
    let out = judged("/metadata/finalizers/-1");
    assert_eq!(out.body[0]["path"], "/metadata/finalizers/1");
    assert!(out.pins.version, "{}", out.body);
    assert_eq!(
        out.body[1],
        json!({"op": "add", "path": "/metadata/resourceVersion", "value": "42"})
    );
    // Plain already, and nothing judged: sent as it came.
    let out = judged("/metadata/finalizers/1");
    assert!(!out.pins.version);
    assert_eq!(out.body, sent("/metadata/finalizers/1").value);
}
