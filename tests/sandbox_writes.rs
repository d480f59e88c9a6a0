//! The sandbox's write and history semantics as clients see them: `dryRun` (query and
//! DeleteOptions), `stringData`, `generateName`, a Service's clusterIP, the status
//! subresource, and 410 Expired for watches / lists from a past the history no longer holds —
//! with kubectl and kube-rs, directly and through the proxy.
//!
//! Fails (never skips) when kubectl is missing.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use bytes::Bytes;
use common::direct::{admin, k, k_in, ok};
use common::Env;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_string_data_generate_name_and_cluster_ip() {
    common::require_kubectl();
    let env = Env::start().await;
    let direct = admin(&env);
    for kc in [&direct, &env.files.admin_kubeconfig] {
        let cm = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}}"#;
        ok(&k_in(kc, &env, &["apply", "-f", "-"], cm).await);
        let out = ok(&k(
            kc,
            &env,
            &["delete", "configmap", "keep", "--dry-run=server"],
        )
        .await);
        assert!(out.contains("(server dry run)"), "{out}");
        ok(&k(kc, &env, &["get", "configmap", "keep"]).await);
        ok(&k(kc, &env, &["delete", "configmap", "keep"]).await);
    }
    let recorded = env.sandbox.sandbox.recorded();
    let dry = recorded
        .iter()
        .find(|r| r.method == "DELETE" && r.query.is_none())
        .unwrap();
    assert!(String::from_utf8_lossy(dry.body.as_ref().unwrap()).contains(r#""dryRun":["All"]"#));

    let secret = r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "data": {"a": "eA=="}, "stringData": {"password": "hunter2"}}"#;
    ok(&k_in(&direct, &env, &["apply", "-f", "-"], secret).await);
    let got: Value = serde_json::from_str(&ok(&k(
        &direct,
        &env,
        &["get", "secret", "s", "-o", "json"],
    )
    .await))
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(got["data"]["password"], b64.encode("hunter2"));
    assert_eq!(got["data"]["a"], "eA==");
    assert!(got.get("stringData").is_none());

    let gen = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "job-"}}"#;
    let name = ok(&k_in(&direct, &env, &["create", "-f", "-", "-o", "name"], gen).await);
    let name = name.trim().trim_start_matches("configmap/");
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");

    let svc = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}"#;
    ok(&k_in(
        &env.files.admin_kubeconfig,
        &env,
        &["apply", "-f", "-"],
        svc,
    )
    .await);
    let ip = ok(&k(
        &direct,
        &env,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    )
    .await);
    assert!(ip.starts_with("10.96."), "{ip}");
    let headless = svc
        .replace(r#""name": "web"}"#, r#""name": "db"}"#)
        .replace(r#""ports""#, r#""clusterIP": "None", "ports""#);
    ok(&k_in(&direct, &env, &["apply", "-f", "-"], &headless).await);
    let ip = ok(&k(
        &direct,
        &env,
        &["get", "svc", "db", "-o", "jsonpath={.spec.clusterIP}"],
    )
    .await);
    assert_eq!(ip, "None");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_changes_only_status() {
    common::require_kubectl();
    let env = Env::start().await;
    let kc = admin(&env);
    let svc = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]}}"#;
    ok(&k_in(&kc, &env, &["apply", "-f", "-"], svc).await);
    let patch = r#"{"spec": {"type": "NodePort"}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}"#;
    ok(&k(
        &kc,
        &env,
        &[
            "patch",
            "svc",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
        ],
    )
    .await);
    let get = || async {
        let out = ok(&k(&kc, &env, &["get", "svc", "web", "-o", "json"]).await);
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let got = get().await;
    assert_eq!(got["spec"]["type"], "ClusterIP", "spec ignored on /status");
    assert_eq!(
        got["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.0.2.1"
    );
    let main = r#"{"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}, "metadata": {"labels": {"x": "y"}}}"#;
    ok(&k(
        &kc,
        &env,
        &["patch", "svc", "web", "--type=merge", "-p", main],
    )
    .await);
    let got = get().await;
    assert_eq!(got["metadata"]["labels"]["x"], "y");
    assert_eq!(
        got["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.1",
        "status ignored on the resource"
    );

    // Issue 17: a status write must not make a stored pod privileged.
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}"#;
    ok(&k_in(&kc, &env, &["apply", "-f", "-"], pod).await);
    let evil = r#"{"spec": {"hostPID": true, "containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]}}"#;
    ok(&k(
        &kc,
        &env,
        &[
            "patch",
            "pod",
            "p",
            "--subresource=status",
            "--type=strategic",
            "-p",
            evil,
        ],
    )
    .await);
    let out = ok(&k(&kc, &env, &["get", "pod", "p", "-o", "json"]).await);
    let got: Value = serde_json::from_str(&out).unwrap();
    assert!(got["spec"]["hostPID"].is_null(), "{got}");
    assert!(
        got["spec"]["containers"][0]["securityContext"].is_null(),
        "{got}"
    );
    env.stop().await;
}

fn raw(method: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_resource_versions_answer_410() {
    let env = Env::start().await;
    env.sandbox.sandbox.set_history_limit(5);
    let cert = Some(&env.admin_cert);
    let cms = "/api/v1/namespaces/default/configmaps";
    let list = env
        .request(raw("GET", &format!("{cms}?limit=1"), ""), cert, true)
        .await;
    let list: Value = serde_json::from_slice(list.body()).unwrap();
    let old_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..3 {
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("a{i}")}});
        let r = env
            .request(raw("POST", cms, &cm.to_string()), cert, true)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let page = env
        .request(raw("GET", &format!("{cms}?limit=1"), ""), cert, true)
        .await;
    let page: Value = serde_json::from_slice(page.body()).unwrap();
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    for i in 0..8 {
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("b{i}")}});
        env.request(raw("POST", cms, &cm.to_string()), cert, true)
            .await;
    }
    // Through the proxy: the watch gets an in-stream ERROR event (HTTP 200)...
    let watch = env
        .request(
            raw(
                "GET",
                &format!("{cms}?watch=1&resourceVersion={old_rv}"),
                "",
            ),
            cert,
            true,
        )
        .await;
    assert_eq!(watch.status(), StatusCode::OK);
    let ev: Value = serde_json::from_slice(watch.body()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(
        (ev["object"]["code"].clone(), ev["object"]["reason"].clone()),
        (json!(410), json!("Expired"))
    );
    let msg = ev["object"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("too old resource version: {old_rv} (")),
        "{msg}"
    );
    // ...an expired continue token a direct 410 with a fresh token.
    let r = env
        .request(
            raw("GET", &format!("{cms}?limit=1&continue={token}"), ""),
            cert,
            true,
        )
        .await;
    assert_eq!(r.status(), StatusCode::GONE);
    let st: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(st["reason"], "Expired");
    assert!(st["message"]
        .as_str()
        .unwrap()
        .starts_with("The provided continue parameter is too old"));
    let fresh = st["metadata"]["continue"].as_str().unwrap();
    let r = env
        .request(
            raw("GET", &format!("{cms}?limit=100&continue={fresh}"), ""),
            cert,
            true,
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the re-issued token continues at the latest state"
    );
    let exact = format!("{cms}?resourceVersion={old_rv}&resourceVersionMatch=Exact");
    assert_eq!(
        env.request(raw("GET", &exact, ""), cert, true)
            .await
            .status(),
        StatusCode::GONE
    );

    // kube-rs sees the 410 as a WatchEvent::Error and recovers by re-listing.
    use futures_util::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{ListParams, WatchEvent, WatchParams};
    let kc = kube::config::Kubeconfig::read_from(&env.files.admin_kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let api: kube::Api<ConfigMap> =
        kube::Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let mut stream = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    let relisted = api.list(&ListParams::default()).await.unwrap();
    let rv = relisted.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-relist"}});
    env.request(raw("POST", cms, &cm.to_string()), cert, true)
        .await;
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("after-relist")),
        other => panic!("expected the new object, got {other:?}"),
    }
    env.stop().await;
}
