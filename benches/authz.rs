//! Authorization cost: `classify` + `authorize` for a typical request against a policy of ~20
//! grants and 4 tenants, and `authorize` alone (allowed late in the list, denied after scanning
//! everything, scoped token, public discovery).
//!
//! Run: `cargo bench --bench authz`. Numbers go in the README.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method, Uri};
use portcullis::authn::identity::{Identity, Method as AuthMethod};
use portcullis::authz::{build, AuthorizationConfig, Authorizer};
use portcullis::k8s::request::classify;

fn policy() -> Authorizer {
    let mut yaml = String::from("tenants:\n");
    for t in ["a", "b", "c", "d"] {
        yaml.push_str(&format!(
            "  - name: team-{t}\n    namespaces: [team-{t}, \"team-{t}-*\"]\n    subjects: [{{group: \"tenant:team-{t}\"}}]\n"
        ));
    }
    yaml.push_str("grants:\n");
    for i in 0..19 {
        yaml.push_str(&format!(
            "  - name: grant-{i}\n    subjects: [{{group: g{i}}}, {{user: u{i}}}]\n    rules:\n      - namespaces: [ns-{i}, \"team-{i}-*\"]\n        verbs: [get, list, watch]\n        api_groups: [\"\", apps]\n        resources: [pods, pods/log, deployments, configmaps]\n      - namespaces: [ns-{i}]\n        verbs: [patch]\n        api_groups: [apps]\n        resources: [deployments, \"*/scale\"]\n      - non_resource_urls: [\"/metrics\"]\n        verbs: [get]\n"
        ));
    }
    yaml.push_str(
        "  - name: ci-deployers\n    subjects: [{group: ci}]\n    rules:\n      - namespaces: [team-a, team-b]\n        verbs: [get, list, watch, patch]\n        api_groups: [apps]\n        resources: [deployments]\n",
    );
    let v: serde_json::Value = serde_saphyr::from_str(&yaml).expect("yaml");
    let cfg: AuthorizationConfig = serde_json::from_value(v).expect("schema");
    build(&cfg, "authorization").expect("valid policy")
}

fn identity(user: &str, groups: &[&str]) -> Identity {
    Identity {
        user: user.into(),
        uid: String::new(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        extra: BTreeMap::new(),
        tenant: None,
        scope: None,
        method: AuthMethod::ClientCertificate {
            fingerprint: String::new(),
        },
    }
}

fn bench(c: &mut Criterion) {
    let authz = policy();
    let headers = HeaderMap::new();
    let ci = identity("ci-bot", &["system:authenticated", "ci", "builders"]);
    let mut scoped = ci.clone();
    scoped.scope = Some(
        serde_json::from_str(
            r#"[{"namespaces":["team-a"],"verbs":["get","list"],"apiGroups":["apps"],"resources":["deployments"]}]"#,
        )
        .expect("scope"),
    );
    let tenant = identity("alice", &["system:authenticated", "tenant:team-d"]);
    let nobody = identity("mallory", &["system:authenticated", "x", "y"]);

    let get: Uri = "/apis/apps/v1/namespaces/team-a/deployments/web"
        .parse()
        .expect("uri");
    let list: Uri = "/api/v1/namespaces/team-d-dev/pods?limit=500"
        .parse()
        .expect("uri");
    let disco: Uri = "/apis/apps/v1".parse().expect("uri");

    let req_get = classify(&Method::GET, &get, &headers).expect("classify");
    let req_list = classify(&Method::GET, &list, &headers).expect("classify");
    let req_disco = classify(&Method::GET, &disco, &headers).expect("classify");
    assert!(authz.authorize(&ci, &req_get).allowed);
    assert!(authz.authorize(&scoped, &req_get).allowed);
    assert!(authz.authorize(&tenant, &req_list).allowed);
    assert!(!authz.authorize(&nobody, &req_get).allowed);
    assert!(authz.authorize(&nobody, &req_disco).allowed);

    let mut g = c.benchmark_group("authz");
    g.bench_function("classify+authorize (grant #20 allows)", |b| {
        b.iter(|| {
            let r = classify(&Method::GET, black_box(&get), &headers).expect("classify");
            black_box(authz.authorize(black_box(&ci), &r))
        })
    });
    g.bench_function("classify only", |b| {
        b.iter(|| black_box(classify(&Method::GET, black_box(&get), &headers)))
    });
    g.bench_function("authorize: grant #20 allows", |b| {
        b.iter(|| black_box(authz.authorize(black_box(&ci), black_box(&req_get))))
    });
    g.bench_function("authorize: scoped token", |b| {
        b.iter(|| black_box(authz.authorize(black_box(&scoped), black_box(&req_get))))
    });
    g.bench_function("authorize: tenant glob namespace", |b| {
        b.iter(|| black_box(authz.authorize(black_box(&tenant), black_box(&req_list))))
    });
    g.bench_function("authorize: denied, no grant", |b| {
        b.iter(|| black_box(authz.authorize(black_box(&nobody), black_box(&req_get))))
    });
    g.bench_function("authorize: public discovery", |b| {
        b.iter(|| black_box(authz.authorize(black_box(&nobody), black_box(&req_disco))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
