//! Strict body parsing cost (`portcullis::sanitize::parse`): parse + canonicalize a typical
//! ~3 KB Deployment as JSON and as YAML, and a 1 MB ConfigMap as JSON; `serde_json::from_slice`
//! into a `Value` plus `to_vec` is the non-strict baseline.
//!
//! Before the timings it checks that depth-limit-deep JSON and YAML bodies are parsed within a
//! small thread stack (`SANITIZE_PROBE_STACK_KIB`, default 512 KiB; tokio workers have 2 MiB).
//!
//! Run: `cargo bench --bench sanitize_parse`.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis::sanitize::parse::{canonical_bytes, parse_body, Limits};

const DEPLOYMENT_JSON: &str = include_str!("../src/sanitize/parse/testdata/deployment.json");
const DEPLOYMENT_YAML: &str = include_str!("../src/sanitize/parse/testdata/deployment.yaml");

fn configmap_1mb() -> Vec<u8> {
    let mut data = serde_json::Map::new();
    for i in 0..100 {
        let line = format!("setting.{i} = \"some value with \\\"quotes\\\" and text\"\n");
        let mut s = String::new();
        while s.len() < 10_300 {
            s.push_str(&line);
        }
        data.insert(format!("app-{i}.properties"), serde_json::Value::String(s));
    }
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "team-a", "labels": {"app": "big"}},
        "data": data,
    });
    serde_json::to_vec(&cm).expect("serialize")
}

fn stack_probe(limits: &Limits) {
    let kib: usize = std::env::var("SANITIZE_PROBE_STACK_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let depth = limits.max_depth;
    let limits = limits.clone();
    std::thread::Builder::new()
        .stack_size(kib * 1024)
        .spawn(move || {
            let json = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let flow_ok = parse_body("application/json", json.as_bytes(), &limits).is_ok();
            let yaml_flow_ok = parse_body("application/yaml", json.as_bytes(), &limits).is_ok();
            let mut block = String::new();
            for i in 0..depth {
                block.push_str(&" ".repeat(i));
                block.push_str("k:\n");
            }
            let yaml_block_ok = parse_body("application/yaml", block.as_bytes(), &limits).is_ok();
            let bomb = "[".repeat(100_000);
            let json_bomb = parse_body("application/json", bomb.as_bytes(), &limits).is_err();
            let yaml_bomb = parse_body("application/yaml", bomb.as_bytes(), &limits).is_err();
            assert!(flow_ok && yaml_flow_ok && yaml_block_ok && json_bomb && yaml_bomb);
        })
        .expect("spawn")
        .join()
        .expect("probe");
    println!("stack probe: depth {depth} JSON and YAML parsed within a {kib} KiB stack");
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    stack_probe(&limits);
    let cm = configmap_1mb();
    println!(
        "inputs: deployment.json {} B, deployment.yaml {} B, configmap.json {} B",
        DEPLOYMENT_JSON.len(),
        DEPLOYMENT_YAML.len(),
        cm.len()
    );

    let mut g = c.benchmark_group("sanitize_parse");
    g.throughput(Throughput::Bytes(DEPLOYMENT_JSON.len() as u64));
    g.bench_function("deployment_json_strict", |b| {
        b.iter(|| {
            let p = parse_body(
                "application/json",
                black_box(DEPLOYMENT_JSON.as_bytes()),
                &limits,
            )
            .expect("parse");
            black_box(canonical_bytes(&p.value))
        })
    });
    g.bench_function("deployment_json_baseline_serde_json", |b| {
        b.iter(|| {
            let v: serde_json::Value =
                serde_json::from_slice(black_box(DEPLOYMENT_JSON.as_bytes())).expect("parse");
            black_box(serde_json::to_vec(&v).expect("ser"))
        })
    });
    g.throughput(Throughput::Bytes(DEPLOYMENT_YAML.len() as u64));
    g.bench_function("deployment_yaml_strict", |b| {
        b.iter(|| {
            let p = parse_body(
                "application/yaml",
                black_box(DEPLOYMENT_YAML.as_bytes()),
                &limits,
            )
            .expect("parse");
            black_box(canonical_bytes(&p.value))
        })
    });
    g.throughput(Throughput::Bytes(DEPLOYMENT_JSON.len() as u64));
    g.bench_function("deployment_json_as_apply_patch_yaml", |b| {
        b.iter(|| {
            let p = parse_body(
                "application/apply-patch+yaml",
                black_box(DEPLOYMENT_JSON.as_bytes()),
                &limits,
            )
            .expect("parse");
            black_box(canonical_bytes(&p.value))
        })
    });
    g.throughput(Throughput::Bytes(cm.len() as u64));
    g.sample_size(30);
    g.bench_function("configmap_1mb_json_strict", |b| {
        b.iter(|| {
            let p = parse_body("application/json", black_box(&cm), &limits).expect("parse");
            black_box(canonical_bytes(&p.value))
        })
    });
    g.bench_function("configmap_1mb_json_baseline_serde_json", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(black_box(&cm)).expect("parse");
            black_box(serde_json::to_vec(&v).expect("ser"))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
