//! The sandbox's OpenAPI with real clients: `kubectl explain` straight to the sandbox and
//! through the proxy, `kubectl apply`'s strategic merge patches built from the served schemas
//! (equal to those from kubectl's compiled-in types), and `/openapi/v2` (JSON with `kubectl get
//! --raw` and the Python client, protobuf with `kubectl explain --output plaintext-openapiv2`).
//!
//! Fails (never skips) when kubectl is missing: see `common::require_kubectl`.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::{direct, stderr, Env};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_directly_and_through_the_proxy() {
    common::require_kubectl();
    let env = Env::start().await;
    let admin = direct::admin(&env);

    for via in ["sandbox", "proxy"] {
        let explain = |what: &'static str| {
            let (env, admin) = (&env, &admin);
            async move {
                let out = if via == "proxy" {
                    env.kubectl(&["explain", what]).await
                } else {
                    direct::k(admin, env, &["explain", what]).await
                };
                assert!(
                    out.status.success(),
                    "{via}: explain {what}: {}",
                    stderr(&out)
                );
                // kubectl wraps descriptions at 80 columns: compare words, not lines.
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            }
        };
        let spec = explain("deployment.spec").await;
        for want in [
            "GROUP: apps",
            "KIND: Deployment",
            "VERSION: v1",
            "FIELD: spec <DeploymentSpec>",
            // The field's and its type's descriptions, which only the served schema carries.
            "Specification of the desired behavior of the Deployment.",
            "Template describes the pods that will be created.",
            "template <PodTemplateSpec> -required-",
            "strategy <DeploymentStrategy>",
        ] {
            assert!(spec.contains(want), "{via}: no {want:?} in: {spec}");
        }
        let sc = explain("pods.spec.containers.securityContext").await;
        for want in [
            "KIND: Pod",
            "FIELD: securityContext <SecurityContext>",
            "allowPrivilegeEscalation <boolean>",
            "runAsNonRoot <boolean>",
            "capabilities <Capabilities>",
        ] {
            assert!(sc.contains(want), "{via}: no {want:?} in: {sc}");
        }
        let ru = explain("deployment.spec.strategy.rollingUpdate").await;
        for want in ["maxSurge <IntOrString>", "maxUnavailable <IntOrString>"] {
            assert!(ru.contains(want), "{via}: no {want:?} in: {ru}");
        }
        // The same from the v2 document (protobuf, as kubectl asks for it).
        let out = if via == "proxy" {
            env.kubectl(&[
                "explain",
                "--output",
                "plaintext-openapiv2",
                "deployment.spec",
            ])
            .await
        } else {
            direct::k(
                &admin,
                &env,
                &[
                    "explain",
                    "--output",
                    "plaintext-openapiv2",
                    "deployment.spec",
                ],
            )
            .await
        };
        let v2 = direct::ok(&out)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for want in [
            "KIND: Deployment",
            "RESOURCE: spec <Object>",
            "Template describes the pods that will be created.",
            "template <Object> -required-",
        ] {
            assert!(v2.contains(want), "{via}: no {want:?} in: {v2}");
        }
        let missing = if via == "proxy" {
            env.kubectl(&["explain", "deployment.spec.nosuchfield"])
                .await
        } else {
            direct::k(&admin, &env, &["explain", "deployment.spec.nosuchfield"]).await
        };
        assert!(!missing.status.success());
        assert!(
            stderr(&missing).contains("field \"nosuchfield\" does not exist"),
            "{via}: {}",
            stderr(&missing)
        );
    }
    // Through the proxy, the documents came from the sandbox (kubectl's cache is per test dir,
    // shared by both runs, so the proxy's fetch is the one recorded after the direct run's).
    let rec = env.sandbox.sandbox.recorded();
    assert!(
        rec.iter().any(|r| r.path == "/openapi/v3/apis/apps/v1"),
        "the apps/v1 document was fetched from the sandbox"
    );
    env.stop().await;
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
";

/// The same Deployment changed where strategic merge needs the schema's merge keys: a
/// container's image and env, a port added (merge key `containerPort`), a container added
/// (merge key `name`).
const CHANGED: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.28
        env:
        - {name: MODE, value: blue}
        ports:
        - containerPort: 80
        - containerPort: 443
      - name: sidecar
        image: busybox
";

/// The PATCH body kubectl sent for `web` in `ns`, with its Content-Type.
fn recorded_patch(env: &Env, ns: &str) -> (String, Value) {
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
    let rec = env.sandbox.sandbox.recorded();
    let r = rec
        .iter()
        .rev()
        .find(|r| r.method == "PATCH" && r.path == path)
        .unwrap_or_else(|| panic!("no PATCH of {path} recorded"));
    let ct = r.headers["content-type"].to_str().unwrap().to_string();
    (
        ct,
        serde_json::from_slice(r.body.as_ref().unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_patches_match_compiled_in_types() {
    common::require_kubectl();
    let env = Env::start().await;
    let admin = direct::admin(&env);
    for ns in ["default", "team-a"] {
        let out = direct::k_in(&admin, &env, &["apply", "-n", ns, "-f", "-"], DEPLOYMENT).await;
        assert!(direct::ok(&out).contains("deployment.apps/web created"));
    }
    // From the served OpenAPI v3 schema (the default); -v=5 shows why kubectl would not use it.
    let out = direct::k_in(
        &admin,
        &env,
        &["apply", "-v=5", "-n", "default", "-f", "-"],
        CHANGED,
    )
    .await;
    let log = stderr(&out);
    assert!(
        direct::ok(&out).contains("deployment.apps/web configured"),
        "{log}"
    );
    for not in [
        "does not support strategic merge patch",
        "OpenAPI V3 path does not exist",
        "error calculating patch",
    ] {
        assert!(
            !log.contains(not),
            "kubectl did not use the v3 schema: {not:?} in {log}"
        );
    }
    // From kubectl's compiled-in Go types.
    let out = direct::k_in(
        &admin,
        &env,
        &["apply", "--openapi-patch=false", "-n", "team-a", "-f", "-"],
        CHANGED,
    )
    .await;
    assert!(direct::ok(&out).contains("deployment.apps/web configured"));

    let (ct_schema, mut from_schema) = recorded_patch(&env, "default");
    let (ct_types, mut from_types) = recorded_patch(&env, "team-a");
    assert_eq!(ct_schema, "application/strategic-merge-patch+json");
    assert_eq!(ct_types, ct_schema);
    // The last-applied annotation names the namespace; apart from that, byte-equal.
    let last = |p: &mut Value| {
        p["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("kubectl.kubernetes.io/last-applied-configuration")
            .unwrap()
    };
    let (a, b) = (last(&mut from_schema), last(&mut from_types));
    assert_eq!(
        a.as_str()
            .unwrap()
            .replace("\"namespace\":\"default\"", "\"namespace\":\"team-a\""),
        b.as_str().unwrap()
    );
    assert_eq!(from_schema, from_types, "the two patches differ");
    // A patch that merged the lists by their keys (a schema without merge keys would replace
    // the lists and carry no `$setElementOrder`).
    let pod = &from_schema["spec"]["template"]["spec"];
    assert_eq!(
        pod["$setElementOrder/containers"],
        serde_json::json!([{"name": "nginx"}, {"name": "sidecar"}]),
        "{from_schema}"
    );
    assert_eq!(
        pod["containers"][0]["$setElementOrder/ports"],
        serde_json::json!([{"containerPort": 80}, {"containerPort": 443}]),
        "{from_schema}"
    );

    let got = direct::ok(
        &direct::k(
            &admin,
            &env,
            &["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].ports[*].containerPort}"],
        )
        .await,
    );
    assert_eq!(got, "nginx sidecar 80 443");
    env.stop().await;
}

/// `(group, version, kind)` of every `x-kubernetes-group-version-kind` in a v2 document.
fn v2_kinds(doc: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for def in doc["definitions"].as_object().unwrap().values() {
        for g in def["x-kubernetes-group-version-kind"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let s = |k: &str| g[k].as_str().unwrap().to_string();
            out.insert((s("group"), s("version"), s("kind")));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_v2_holds_every_served_kind() {
    common::require_kubectl();
    let env = Env::start().await;
    let admin = direct::admin(&env);
    let raw = |path: &'static str| {
        let (env, admin) = (&env, &admin);
        async move {
            let out = direct::k(admin, env, &["get", "--raw", path]).await;
            serde_json::from_str::<Value>(&direct::ok(&out)).unwrap()
        }
    };
    let doc = raw("/openapi/v2").await;
    assert_eq!(doc["swagger"], "2.0");
    let kinds = v2_kinds(&doc);
    // Every kind discovery lists has its schema (subresources aside).
    let index = raw("/openapi/v3").await;
    let gvs: Vec<String> = index["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(gvs.contains(&"apis/apps/v1".to_string()), "{gvs:?}");
    let mut checked = 0;
    for gv in &gvs {
        let out = direct::k(&admin, &env, &["get", "--raw", &format!("/{gv}")]).await;
        let list: Value = serde_json::from_str(&direct::ok(&out)).unwrap();
        let (group, version) = match list["groupVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                list["groupVersion"].as_str().unwrap().to_string(),
            ),
        };
        for r in list["resources"].as_array().unwrap() {
            if r["name"].as_str().unwrap().contains('/') {
                continue;
            }
            let kind = r["kind"].as_str().unwrap().to_string();
            let gvk = (group.clone(), version.clone(), kind);
            assert!(kinds.contains(&gvk), "no v2 schema for {gvk:?}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} kinds checked");

    // kubectl's own v2 request asks protobuf only, and gets it (kubectl parses it in
    // `explain --output plaintext-openapiv2`); a type it cannot serve gets 406.
    let v2 = |accept: &'static str| {
        let env = &env;
        async move {
            let mut req = common::get("/openapi/v2");
            req.headers_mut().insert("accept", accept.parse().unwrap());
            req.headers_mut()
                .insert("authorization", "Bearer sandbox".parse().unwrap());
            common::https_request(env.sandbox.addr, &env.ca, req, None, false).await
        }
    };
    let pb = v2("application/com.github.proto-openapi.spec.v2@v1.0+protobuf").await;
    assert_eq!(pb.status(), http::StatusCode::OK);
    assert_eq!(
        pb.headers()["content-type"],
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    assert_eq!(
        v2("text/html").await.status(),
        http::StatusCode::NOT_ACCEPTABLE
    );

    // The Python client (JSON) reads the same document through the proxy, and its typed
    // calls are unaffected.
    let script = r#"
import json, sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
api = client.ApiClient()
accept = {"Accept": "application/json"}
if hasattr(api, "param_serialize"):  # clients generated since v31
    req = api.param_serialize("GET", "/openapi/v2", header_params=accept, auth_settings=["BearerToken"])
    data = api.call_api(*req).read()
else:
    data = api.call_api("/openapi/v2", "GET", header_params=accept, auth_settings=["BearerToken"],
                        _preload_content=False)[0].data
doc = json.loads(data)
gvks = {(g["group"], g["version"], g["kind"])
        for d in doc["definitions"].values() for g in d.get("x-kubernetes-group-version-kind", [])}
print(("apps", "v1", "Deployment") in gvks, ("", "v1", "Pod") in gvks,
      client.AppsV1Api().list_namespaced_deployment("default").kind)
"#;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&env.files.admin_kubeconfig)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed: {}",
        stderr(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "True True DeploymentList"
    );
    env.stop().await;
}
