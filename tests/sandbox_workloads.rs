//! Workloads on the sandbox with real clients: kubectl's typed (protobuf) `create deployment |
//! job | cronjob | service`, the deployment controller behind `rollout status | restart | undo`,
//! `scale` and `wait --for=condition=Available`, and `kubectl cp` both ways; directly against
//! the sandbox and through the proxy (as the demo admin in `default`, a namespace whose Pod
//! Security level is `privileged`; the proxy judges the protobuf bodies and forwards them as
//! sent, see `tests/sanitize_protobuf.rs` for the refusals). The Python `kubernetes` client
//! creates a Deployment and reads its status.
//!
//! Fails (never skips) when kubectl or the Python client is missing.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use portcullis_sandbox as sandbox;

/// Runs kubectl with one kubeconfig; every call must succeed unless said otherwise.
struct Kubectl {
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    async fn ok(&self, args: &[&str]) -> String {
        let out = common::kubectl(&self.kubeconfig, &self.home, args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            common::stdout(&out),
            common::stderr(&out)
        );
        common::stdout(&out)
    }

    async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a).await).unwrap()
    }
}

/// The same tour, whichever way kubectl reaches the sandbox.
async fn deployment_tour(k: &Kubectl) {
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ])
    .await;
    let out = k
        .ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    k.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=20s",
    ])
    .await;
    let d = k.json(&["get", "deployment", "web"]).await;
    assert_eq!(d["status"]["readyReplicas"], 2);
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    let pods = k.json(&["get", "pods", "-l", "app=web"]).await;
    assert_eq!(pods["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        pods["items"][0]["metadata"]["ownerReferences"][0]["kind"],
        "ReplicaSet"
    );

    k.ok(&["scale", "deployment/web", "--replicas=3"]).await;
    let pods = k.json(&["get", "pods", "-l", "app=web"]).await;
    assert_eq!(pods["items"].as_array().unwrap().len(), 3);

    k.ok(&["rollout", "restart", "deployment/web"]).await;
    k.ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    let rs = k.json(&["get", "replicasets", "-l", "app=web"]).await;
    let revisions = |rs: &serde_json::Value| {
        let mut v: Vec<(String, i64)> = rs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    r["spec"]["replicas"].as_i64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(revisions(&rs), [("1".into(), 0), ("2".into(), 3)]);

    // Undo brings the first ReplicaSet back as revision 3 (no third ReplicaSet).
    k.ok(&["rollout", "undo", "deployment/web"]).await;
    k.ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    let rs = k.json(&["get", "replicasets", "-l", "app=web"]).await;
    assert_eq!(revisions(&rs), [("2".into(), 0), ("3".into(), 3)]);

    k.ok(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ])
    .await;
    k.ok(&[
        "create",
        "cronjob",
        "nightly",
        "--image=busybox",
        "--schedule=0 1 * * *",
        "--",
        "echo",
        "hi",
    ])
    .await;
    let cj = k.json(&["get", "cronjob", "nightly"]).await;
    assert_eq!(cj["spec"]["schedule"], "0 1 * * *");
    let job = k.json(&["get", "job", "once"]).await;
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["echo", "hi"])
    );
    k.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"])
        .await;

    // Deleting the Deployment takes its ReplicaSets and Pods along.
    k.ok(&["delete", "deployment", "web"]).await;
    let pods = k.json(&["get", "pods", "-l", "app=web"]).await;
    assert_eq!(pods["items"], serde_json::json!([]));
}

/// `kubectl cp` into a pod and back out, a file and a directory.
async fn cp_tour(k: &Kubectl, work: &Path) {
    k.ok(&["run", "box", "--image=busybox"]).await;
    let src = work.join("in");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/a.txt"), "hello from the laptop\n").unwrap();
    std::fs::write(work.join("one.txt"), "one\n").unwrap();
    let one = work.join("one.txt");
    k.ok(&["cp", one.to_str().unwrap(), "box:/tmp/one.txt"])
        .await;
    k.ok(&["cp", src.to_str().unwrap(), "box:/tmp/in"]).await;
    let back = work.join("back");
    k.ok(&["cp", "box:/tmp/in", back.to_str().unwrap()]).await;
    assert_eq!(
        std::fs::read_to_string(back.join("sub/a.txt")).unwrap(),
        "hello from the laptop\n"
    );
    let one_back = work.join("one-back.txt");
    k.ok(&["cp", "box:/tmp/one.txt", one_back.to_str().unwrap()])
        .await;
    assert_eq!(std::fs::read_to_string(&one_back).unwrap(), "one\n");
    let host = work.join("hostname");
    k.ok(&["cp", "box:/etc/hostname", host.to_str().unwrap()])
        .await;
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "box\n");
    // A missing source: kubectl relays tar's complaint and fails, copying nothing.
    let missing = work.join("missing");
    let out = common::kubectl(
        &k.kubeconfig,
        &k.home,
        &["cp", "box:/nope", missing.to_str().unwrap()],
    )
    .await;
    assert!(!missing.exists());
    assert!(!out.status.success());
    assert!(common::stdout(&out).contains("No such file"), "{out:?}");
    assert!(common::stderr(&out).contains("exit code 2"), "{out:?}");
}

async fn direct() -> (tempfile::TempDir, Kubectl, sandbox::Running) {
    common::require_kubectl();
    let (ca, running) = common::Env::ca_and_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox::write_direct_kubeconfig(&kubeconfig, &running.url(), &ca.cert.cert_pem).unwrap();
    let k = Kubectl {
        kubeconfig,
        home: dir.path().to_path_buf(),
    };
    (dir, k, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_jobs_and_cp_directly() {
    let (dir, k, running) = direct().await;
    deployment_tour(&k).await;
    cp_tour(&k, dir.path()).await;
    // kubectl really sent protobuf (the path under test), and the sandbox decoded it.
    let proto = running.sandbox.recorded().into_iter().any(|r| {
        r.path.ends_with("/deployments")
            && r.headers
                .get("content-type")
                .is_some_and(|v| v == "application/vnd.kubernetes.protobuf")
    });
    assert!(proto, "kubectl create deployment did not send protobuf");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_jobs_and_cp_through_the_proxy() {
    common::require_kubectl();
    let env = common::Env::start().await;
    let k = Kubectl {
        kubeconfig: env.files.admin_kubeconfig.clone(),
        home: env.dir.path().to_path_buf(),
    };
    deployment_tour(&k).await;
    cp_tour(&k, env.dir.path()).await;
    let recorded = env.sandbox.sandbox.recorded();
    let create = recorded
        .iter()
        .find(|r| r.path == "/apis/apps/v1/namespaces/default/deployments" && r.method == "POST")
        .expect("the create reached the sandbox");
    assert_eq!(
        create.headers.get("content-type").unwrap(),
        "application/vnd.kubernetes.protobuf"
    );
    assert!(create.headers.contains_key("impersonate-user"));
    env.stop().await;
}

/// The official Python client: create a Deployment (JSON), read its status back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_creates_and_reads_a_deployment() {
    let (_dir, k, running) = direct().await;
    let script = r#"
import sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
apps = client.AppsV1Api()
labels = {"app": "py"}
body = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="py"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels=labels),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels=labels),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]))))
apps.create_namespaced_deployment("default", body)
d = apps.read_namespaced_deployment_status("py", "default")
conds = {c.type: c.reason for c in d.status.conditions}
print(d.status.ready_replicas, d.status.observed_generation, conds["Available"], conds["Progressing"])
"#;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&k.kubeconfig)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed (is `pip install kubernetes` done?): {}",
        common::stderr(&out)
    );
    assert_eq!(
        common::stdout(&out).trim(),
        "2 1 MinimumReplicasAvailable NewReplicaSetAvailable"
    );
    let rs = k.json(&["get", "replicasets", "-l", "app=py"]).await;
    assert_eq!(rs["items"].as_array().unwrap().len(), 1);
    running.stop().await;
}
