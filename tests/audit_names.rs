//! Issue 18 and issue 12 item 1 through the proxy, with real clients: a create names the object
//! it made in its audit event (`objectRef` completed from the decoded body, as kube-apiserver's
//! `LogRequestObject` does) whether kubectl, the official Python client or a raw YAML body
//! made it, also when the body is not recorded and when Pod Security refused it; `audit query
//! --name` finds the create; the Python client (which sends POST / PUT / DELETE bodies without
//! a Content-Type) creates, replaces, patches and deletes through the proxy, and is still judged.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use bytes::Bytes;
use common::Env;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn events(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "Event" && v["stage"] == "ResponseComplete")
        .collect()
}

/// The ResponseComplete events of `verb` on `resource`.
fn completed(dir: &Path, verb: &str, resource: &str) -> Vec<Value> {
    events(dir)
        .into_iter()
        .filter(|e| e["verb"] == verb && e["objectRef"]["resource"] == resource)
        .collect()
}

/// Writes (anything but GET) the upstream saw since the last clear.
fn writes(env: &Env) -> Vec<String> {
    env.sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.method != http::Method::GET)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Run a Python script with the official `kubernetes` client against the proxy as team-a
/// (alice); its stdout.
async fn python(env: &Env, script: &str) -> String {
    let prelude = format!(
        "import json, sys\nfrom kubernetes import client, config\nfrom kubernetes.client.rest import ApiException\nconfig.load_kube_config(config_file={:?})\nv1 = client.CoreV1Api()\n",
        env.files.team_a_kubeconfig.display().to_string()
    );
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_s_create_names_its_object_in_the_audit_log() {
    common::require_kubectl();
    let env = Env::start().await;
    let dir = env.files.dir.clone();
    let home = env.dir.path();

    // kubectl create -f (JSON on the wire).
    let file = home.join("cm.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: made-by-kubectl\ndata:\n  a: b\n",
    )
    .unwrap();
    let out = common::kubectl(
        &env.files.team_a_kubeconfig,
        home,
        &["create", "-n", "team-a", "-f", file.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", common::stderr(&out));

    // The Python client: no Content-Type on its POST.
    python(
        &env,
        "v1.create_namespaced_config_map('team-a', client.V1ConfigMap(metadata=client.V1ObjectMeta(name='made-by-python'), data={'a': 'b'}))\n",
    )
    .await;

    // A raw YAML body.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: made-by-yaml\ndata:\n  a: b\n";
    let r = Request::builder()
        .method("POST")
        .uri("https://localhost/api/v1/namespaces/team-a/configmaps")
        .header("content-type", "application/yaml")
        .body(Full::new(Bytes::from_static(yaml.as_bytes())))
        .unwrap();
    let resp = env.request(r, Some(&env.admin_cert), true).await;
    assert_eq!(resp.status(), 201, "{:?}", resp.body());

    // A Secret: named at Metadata level, its body never recorded.
    let r = Request::builder()
        .method("POST")
        .uri("https://localhost/api/v1/namespaces/team-a/secrets")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db-password"},"stringData":{"p":"hunter2-value"}}"#,
        )))
        .unwrap();
    let resp = env.request(r, Some(&env.admin_cert), true).await;
    assert_eq!(resp.status(), 201);

    // generateName: the name only the API server chooses is not in the event, exactly as
    // kube-apiserver records it (LogRequestObject runs before the name is generated, and
    // LogResponseObject never touches objectRef).
    let r = Request::builder()
        .method("POST")
        .uri("https://localhost/api/v1/namespaces/team-a/configmaps")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"gen-"}}"#,
        )))
        .unwrap();
    let resp = env.request(r, Some(&env.admin_cert), true).await;
    assert_eq!(resp.status(), 201);

    let creates = completed(&dir, "create", "configmaps");
    for name in ["made-by-kubectl", "made-by-python", "made-by-yaml"] {
        let e = creates
            .iter()
            .find(|e| e["objectRef"]["name"] == name)
            .unwrap_or_else(|| panic!("no create event naming {name}: {creates:?}"));
        assert_eq!(e["objectRef"]["namespace"], "team-a", "{e}");
        assert_eq!(e["responseStatus"]["code"], 201, "{e}");
    }
    let generated: Vec<&Value> = creates
        .iter()
        .filter(|e| e["requestObject"].is_null() && e["objectRef"].get("name").is_none())
        .collect();
    assert_eq!(generated.len(), 1, "{creates:?}");
    let secret = completed(&dir, "create", "secrets");
    assert_eq!(secret.len(), 1, "{secret:?}");
    assert_eq!(secret[0]["objectRef"]["name"], "db-password");
    assert_eq!(secret[0]["level"], "Metadata");
    let log = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(
        !log.contains("hunter2-value"),
        "the secret's data was recorded"
    );

    // audit query --name finds the create.
    let out = std::process::Command::new(BIN)
        .args([
            "audit",
            "query",
            "--name",
            "made-by-python",
            "--verb",
            "create",
        ])
        .arg(dir.join("audit.log"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(
        rows[0].contains("made-by-python") && rows[0].contains("configmaps"),
        "{table}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_writes_through_the_proxy_and_is_judged() {
    let env = Env::start().await;
    let dir = env.files.dir.clone();
    // Create, replace, patch and delete (with DeleteOptions), as the client sends them.
    let out = python(
        &env,
        r#"
cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name='py'), data={'k': 'v1'})
v1.create_namespaced_config_map('team-a', cm)
cur = v1.read_namespaced_config_map('py', 'team-a')
cur.data = {'k': 'v2'}
v1.replace_namespaced_config_map('py', 'team-a', cur)
v1.patch_namespaced_config_map('py', 'team-a', {'data': {'k': 'v3'}})
print(v1.read_namespaced_config_map('py', 'team-a').data['k'])
v1.delete_namespaced_config_map('py', 'team-a', body=client.V1DeleteOptions(grace_period_seconds=0))
try:
    v1.read_namespaced_config_map('py', 'team-a')
    print('still there')
except ApiException as e:
    print(e.status)
"#,
    )
    .await;
    assert_eq!(out.lines().collect::<Vec<_>>(), ["v3", "404"], "{out}");
    let replace = completed(&dir, "update", "configmaps");
    assert_eq!(replace.len(), 1, "{replace:?}");
    assert_eq!(replace[0]["objectRef"]["name"], "py");
    assert_eq!(
        replace[0]["annotations"]["portcullis.io/sanitize"],
        "inspected"
    );

    // A privileged pod in a Pod Security namespace: PodSecurity's 403, never forwarded, and
    // its audit event names the pod.
    env.sandbox.sandbox.clear_recorded();
    let out = python(
        &env,
        r#"
pod = client.V1Pod(metadata=client.V1ObjectMeta(name='py-priv'), spec=client.V1PodSpec(containers=[
    client.V1Container(name='c', image='busybox', security_context=client.V1SecurityContext(privileged=True))]))
try:
    v1.create_namespaced_pod('team-a', pod)
    print('created')
except ApiException as e:
    print(e.status)
    print(json.loads(e.body)['message'])
"#,
    )
    .await;
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("403"), "{out}");
    let message = lines.next().unwrap_or_default();
    assert!(
        message.starts_with(
            "pods \"py-priv\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"
        ),
        "{message}"
    );
    assert!(writes(&env).is_empty(), "{:?}", writes(&env));
    let refused = completed(&dir, "create", "pods");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["objectRef"]["name"], "py-priv");
    assert_eq!(refused[0]["responseStatus"]["code"], 403);
    env.stop().await;
}
