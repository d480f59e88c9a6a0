//! The real `kubectl` binary through the proxy to the sandbox: discovery, create, apply, watch,
//! logs -f, exec over WebSocket, delete, and errors kubectl prints as `Error from server`.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{kubectl_spawn, stderr, stdout, Env};
use tokio::io::{AsyncBufReadExt, BufReader};

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  replicas: 2
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
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_tour_through_the_proxy() {
    common::require_kubectl();
    let env = Env::start().await;

    // get ns (discovery + Table output)
    let out = env.kubectl(&["get", "ns"]).await;
    assert!(out.status.success(), "get ns: {}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("default") && text.contains("kube-system"),
        "{text}"
    );

    // create configmap, and the upstream saw the caller impersonated, not the proxy's power
    env.sandbox.sandbox.clear_recorded();
    let out = env
        .kubectl(&[
            "create",
            "configmap",
            "greeting",
            "--from-literal=hello=world",
        ])
        .await;
    assert!(out.status.success(), "create cm: {}", stderr(&out));
    assert!(
        stdout(&out).contains("configmap/greeting created"),
        "{}",
        stdout(&out)
    );
    let post = env
        .sandbox
        .sandbox
        .recorded()
        .into_iter()
        .find(|r| r.method == http::Method::POST)
        .expect("upstream saw the POST");
    assert_eq!(post.headers["impersonate-user"], "admin");
    assert!(post.headers.get("audit-id").is_some());

    let out = env
        .kubectl(&[
            "get",
            "configmap",
            "greeting",
            "-o",
            "jsonpath={.data.hello}",
        ])
        .await;
    assert!(out.status.success(), "get cm: {}", stderr(&out));
    assert_eq!(stdout(&out), "world");

    // apply -f a Deployment (client-side apply), then again (no change → patch path)
    let manifest = env.dir.path().join("deploy.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    let m = manifest.to_str().unwrap();
    let out = env.kubectl(&["apply", "-f", m]).await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    assert!(
        stdout(&out).contains("deployment.apps/web created"),
        "{}",
        stdout(&out)
    );
    let out = env.kubectl(&["apply", "-f", m]).await;
    assert!(out.status.success(), "re-apply: {}", stderr(&out));
    let out = env
        .kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
        .await;
    assert_eq!(stdout(&out), "2", "{}", stderr(&out));

    // get pods -w sees a new pod within a second of its creation
    let mut watch = kubectl_spawn(
        &env.files.admin_kubeconfig,
        env.dir.path(),
        &["get", "pods", "-w", "--no-headers"],
    );
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // Let the watch get established: wait until the sandbox has seen the watch request.
    for _ in 0..200 {
        if env
            .sandbox
            .sandbox
            .recorded()
            .iter()
            .any(|r| r.query.as_deref().is_some_and(|q| q.contains("watch=true")))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let out = env
        .kubectl(&["run", "web-1", "--image=nginx", "--restart=Never"])
        .await;
    let created = Instant::now();
    assert!(out.status.success(), "run: {}", stderr(&out));
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(l) if l.contains("web-1") => return l,
                Some(_) => continue,
                None => panic!("watch ended"),
            }
        }
    })
    .await
    .expect("watch never printed the new pod");
    let latency = created.elapsed();
    assert!(
        latency < Duration::from_secs(1),
        "watch event took {latency:?}: {line}"
    );
    let _ = watch.kill().await;

    // logs -f streams (the sandbox keeps emitting lines while following)
    let mut logs = kubectl_spawn(
        &env.files.admin_kubeconfig,
        env.dir.path(),
        &["logs", "-f", "web-1"],
    );
    let mut lines = BufReader::new(logs.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while got.len() < 5 {
            match lines.next_line().await.unwrap() {
                Some(l) => got.push(l),
                None => break,
            }
        }
    })
    .await
    .expect("logs -f did not stream");
    assert!(got.len() >= 5, "logs -f printed only {got:?}");
    let _ = logs.kill().await;

    // exec over WebSocket through the proxy's upgrade splice
    let out = env.kubectl(&["exec", "web-1", "--", "echo", "hi"]).await;
    assert!(out.status.success(), "exec: {}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    let out = env
        .kubectl(&["exec", "web-1", "--", "sh", "-c", "exit 3"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit status travels back: {}",
        stderr(&out)
    );

    // delete, then NotFound printed the way kubectl prints server errors
    let out = env.kubectl(&["delete", "configmap", "greeting"]).await;
    assert!(out.status.success(), "delete: {}", stderr(&out));
    let out = env.kubectl(&["get", "configmap", "greeting"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"Error from server (NotFound): configmaps "greeting" not found"#),
        "{}",
        stderr(&out)
    );

    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_prints_the_proxys_own_status_errors() {
    common::require_kubectl();
    let env = Env::start().await;
    // An identity the proxy refuses: kubectl must show the 401 as kubectl shows Unauthorized.
    let evil = env.ca.client_cert("mallory", &["system:masters"]).unwrap();
    let kc = env.dir.path().join("evil.kubeconfig");
    portcullis::kubeconfig::Kubeconfig::single(
        "evil",
        &format!("https://{}", env.proxy_addr),
        &env.ca.cert.cert_pem,
        portcullis::kubeconfig::Kubeconfig::cert_user(&evil.cert_pem, &evil.key_pem),
    )
    .write(&kc)
    .unwrap();
    env.sandbox.sandbox.clear_recorded();
    let out = common::kubectl(&kc, env.dir.path(), &["get", "ns"]).await;
    assert!(!out.status.success());
    // kubectl's wording for a 401 Status (on discovery client-go words the reason itself).
    assert!(
        stderr(&out).contains("error: You must be logged in to the server"),
        "{}",
        stderr(&out)
    );
    assert!(
        env.sandbox.sandbox.recorded().is_empty(),
        "the upstream saw a refused caller"
    );
    env.stop().await;
}
