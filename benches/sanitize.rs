//! The whole sanitize stage minus I/O: strict parse + Pod Security / field-rule judging +
//! canonical re-serialization, as one write costs it in the proxy.
//!
//! * a typical ~3 KB Deployment, JSON and YAML, created in a namespace that enforces
//!   `restricted` and warns `restricted` (every check runs twice, nothing reported);
//! * a strategic merge patch of that Deployment, judged on the merged object;
//! * a 1 MB ConfigMap (parsed and canonicalized; nothing pod-shaped to judge);
//! * attacker-sized bodies, which must stay linear: a pod of 10 000 bare containers refused at
//!   `restricted` (violations per container), and a strategic merge patch adding an `env` list
//!   of 20 000 entries (a keyed list merge).
//!
//! Run: `cargo bench --bench sanitize`.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::{
    authn::{identity::Method, Identity},
    k8s::request::classify,
    sanitize::{
        judge::{self, Current},
        parse,
        policy::{Modes, PodSecurity, Sanitizer},
        pss::{Level, Policy},
    },
};

const DEPLOYMENT_JSON: &str = include_str!("../src/sanitize/parse/testdata/deployment.json");
const DEPLOYMENT_YAML: &str = include_str!("../src/sanitize/parse/testdata/deployment.yaml");

fn sanitizer() -> Sanitizer {
    let restricted = Some(Policy::latest(Level::Restricted));
    Sanitizer {
        pod_security: Some(PodSecurity {
            defaults: Modes {
                enforce: restricted,
                warn: restricted,
                audit: None,
            },
            ..PodSecurity::default()
        }),
        ..Sanitizer::default()
    }
}

fn caller() -> Identity {
    Identity {
        user: "bench".into(),
        uid: String::new(),
        groups: vec![],
        extra: Default::default(),
        tenant: None,
        scope: None,
        method: Method::ClientCertificate {
            fingerprint: String::new(),
        },
    }
}

fn one(
    s: &Sanitizer,
    id: &Identity,
    method: &str,
    path: &str,
    ct: &str,
    body: &[u8],
    cur: Option<&serde_json::Value>,
) -> usize {
    let judged = judged(s, id, method, path, ct, body, cur).unwrap();
    parse::canonical_bytes(&judged.body).len()
}

/// The judge's verdict on one body, as the sanitize stage asks for it.
fn judged(
    s: &Sanitizer,
    id: &Identity,
    method: &str,
    path: &str,
    ct: &str,
    body: &[u8],
    cur: Option<&serde_json::Value>,
) -> Result<judge::Judged, portcullis::refusal::Refusal> {
    let info = classify(
        &method.parse().unwrap(),
        &path.parse().unwrap(),
        &http::HeaderMap::new(),
    )
    .unwrap();
    let parsed = parse::parse_body(ct, body, &s.limits).unwrap();
    let current = match cur {
        Some(v) => Current::Found(v.clone()),
        None => Current::NotFetched,
    };
    judge::judge(s, &info, id, parsed, current, None, None)
}

fn bench(c: &mut Criterion) {
    let s = sanitizer();
    let id = caller();
    let deps = "/apis/apps/v1/namespaces/team-a/deployments";
    // The fixture must pass restricted, or the bench measures refusals.
    assert!(
        one(
            &s,
            &id,
            "POST",
            deps,
            "application/json",
            DEPLOYMENT_JSON.as_bytes(),
            None
        ) > 2000
    );

    let mut g = c.benchmark_group("sanitize");
    g.bench_function("deployment_3kb_json", |b| {
        b.iter(|| {
            one(
                &s,
                &id,
                "POST",
                deps,
                "application/json",
                black_box(DEPLOYMENT_JSON.as_bytes()),
                None,
            )
        })
    });
    g.bench_function("deployment_3kb_yaml", |b| {
        b.iter(|| {
            one(
                &s,
                &id,
                "POST",
                deps,
                "application/yaml",
                black_box(DEPLOYMENT_YAML.as_bytes()),
                None,
            )
        })
    });
    let current: serde_json::Value = serde_json::from_str(DEPLOYMENT_JSON).unwrap();
    let name = current["metadata"]["name"].as_str().unwrap().to_owned();
    let image = current["spec"]["template"]["spec"]["containers"][0]["name"].clone();
    let patch = serde_json::to_vec(&serde_json::json!(
        {"spec": {"template": {"spec": {"containers": [{"name": image, "image": "registry.example/web:1.5.0"}]}}}}
    ))
    .unwrap();
    let target = format!("{deps}/{name}");
    g.bench_function("deployment_strategic_patch", |b| {
        b.iter(|| {
            one(
                &s,
                &id,
                "PATCH",
                &target,
                "application/strategic-merge-patch+json",
                black_box(&patch),
                Some(&current),
            )
        })
    });
    let cm = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
        "data": (0..1000).map(|i| (format!("key-{i:04}"), serde_json::Value::from("x".repeat(1000)))).collect::<serde_json::Map<_, _>>()
    }))
    .unwrap();
    g.bench_function("configmap_1mb_json", |b| {
        b.iter(|| {
            one(
                &s,
                &id,
                "POST",
                "/api/v1/namespaces/team-a/configmaps",
                "application/json",
                black_box(&cm),
                None,
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("sanitize_attacker_sized");
    g.sample_size(10);
    let containers: Vec<serde_json::Value> = (0..10_000)
        .map(|i| serde_json::json!({"name": format!("c{i}"), "image": "x"}))
        .collect();
    let pod = serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"}, "spec": {"containers": containers}}))
    .unwrap();
    g.bench_function("pod_10k_containers_refused", |b| {
        b.iter(|| {
            judged(
                &s,
                &id,
                "POST",
                "/api/v1/namespaces/team-a/pods",
                "application/json",
                black_box(&pod),
                None,
            )
            .is_err()
        })
    });
    let env: Vec<serde_json::Value> = (0..20_000)
        .map(|i| serde_json::json!({"name": format!("V{i:06}"), "value": "x"}))
        .collect();
    let big_env = serde_json::to_vec(&serde_json::json!(
        {"spec": {"template": {"spec": {"containers": [{"name": image, "env": env}]}}}}
    ))
    .unwrap();
    g.bench_function("strategic_patch_20k_env", |b| {
        b.iter(|| {
            one(
                &s,
                &id,
                "PATCH",
                &target,
                "application/strategic-merge-patch+json",
                black_box(&big_env),
                Some(&current),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
