//! Pod Security Standards cost: `check_object` on a typical ~3 KB restricted-compliant
//! Deployment at `restricted` (every check runs, nothing is reported), the same at `baseline`,
//! and a privileged pod reporting several violations.
//!
//! Run: `cargo bench --bench sanitize_pss`.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::sanitize::pss::{check_object, Level, Policy};
use serde_json::{json, Value};

fn deployment() -> Value {
    json!({
      "apiVersion": "apps/v1", "kind": "Deployment",
      "metadata": {"name": "web", "namespace": "team-a", "labels": {"app": "web", "tier": "frontend"},
                   "annotations": {"deployment.kubernetes.io/revision": "3"}},
      "spec": {
        "replicas": 3, "revisionHistoryLimit": 5,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
          "metadata": {"labels": {"app": "web", "tier": "frontend"},
                       "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}},
          "spec": {
            "serviceAccountName": "web", "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"},
                                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
            "initContainers": [{
              "name": "migrate", "image": "registry.example/web-migrate:1.4.2",
              "command": ["/bin/migrate", "--up"],
              "envFrom": [{"secretRef": {"name": "web-db"}}],
              "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
              "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                  "capabilities": {"drop": ["ALL"]}}
            }],
            "containers": [{
              "name": "web", "image": "registry.example/web:1.4.2", "imagePullPolicy": "IfNotPresent",
              "args": ["--listen=:8080", "--metrics=:9090"],
              "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
              "env": [{"name": "LOG_LEVEL", "value": "info"},
                      {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                      {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "web-db", "key": "password"}}}],
              "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
              "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
              "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
              "startupProbe": {"tcpSocket": {"port": 8080}, "failureThreshold": 30},
              "lifecycle": {"preStop": {"exec": {"command": ["/bin/sleep", "5"]}}},
              "volumeMounts": [{"name": "config", "mountPath": "/etc/web", "readOnly": true},
                               {"name": "tmp", "mountPath": "/tmp"},
                               {"name": "token", "mountPath": "/var/run/secrets/tokens"}],
              "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                  "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}
            }, {
              "name": "proxy", "image": "registry.example/envoy:1.30",
              "ports": [{"containerPort": 15001}],
              "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
              "securityContext": {"allowPrivilegeEscalation": false, "runAsUser": 10002,
                                  "seccompProfile": {"type": "RuntimeDefault"},
                                  "capabilities": {"drop": ["ALL"]}}
            }],
            "volumes": [
              {"name": "config", "configMap": {"name": "web-config"}},
              {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
              {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3600, "audience": "vault"}}]}}
            ],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
              {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app": "web"}}}}]}},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
              "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]
          }
        }
      }
    })
}

fn bench(c: &mut Criterion) {
    let deploy = deployment();
    let size = serde_json::to_vec(&deploy).map(|v| v.len()).unwrap_or(0);
    eprintln!("deployment JSON size: {size} bytes");
    let restricted = Policy::latest(Level::Restricted);
    let baseline = Policy::latest(Level::Baseline);
    assert!(check_object(&restricted, "apps", "deployments", &deploy).is_empty());
    c.bench_function("pss_restricted_deployment_3kb", |b| {
        b.iter(|| {
            check_object(
                black_box(&restricted),
                "apps",
                "deployments",
                black_box(&deploy),
            )
        })
    });
    c.bench_function("pss_baseline_deployment_3kb", |b| {
        b.iter(|| {
            check_object(
                black_box(&baseline),
                "apps",
                "deployments",
                black_box(&deploy),
            )
        })
    });
    let bad = json!({"kind": "Pod", "spec": {
        "hostNetwork": true, "hostPID": true,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [{"name": "shell", "image": "busybox",
            "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN"]}}}]}});
    let n = check_object(&restricted, "", "pods", &bad).len();
    eprintln!("privileged pod: {n} violations at restricted");
    c.bench_function("pss_restricted_privileged_pod_violations", |b| {
        b.iter(|| check_object(black_box(&restricted), "", "pods", black_box(&bad)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
