//! Runs the real `kubectl` against an in-process sandbox.
//!
//! Fails (never skips) when kubectl is missing: see `common::require_kubectl`.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use portcullis_sandbox as sandbox;

const KUBECTL: &str = "kubectl";

/// A sandbox (from the shared harness, no proxy) and a kubeconfig that talks to it directly.
struct Env {
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    cache: PathBuf,
    running: sandbox::Running,
}

async fn setup() -> Env {
    common::require_kubectl();
    let (ca, running) = common::Env::ca_and_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox::write_direct_kubeconfig(&kubeconfig, &running.url(), &ca.cert.cert_pem).unwrap();
    let cache = dir.path().join("cache");
    Env {
        _dir: dir,
        kubeconfig,
        cache,
        running,
    }
}

/// Collect a pipe on a thread, chunk by chunk.
fn pump(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).to_string())
                    .is_err()
            {
                break;
            }
        }
    });
    rx
}

fn drain(rx: &mpsc::Receiver<String>) -> String {
    rx.try_iter().collect()
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(KUBECTL);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args).spawn().unwrap()
    }

    /// Run to completion (bounded to 15 s); returns (success, stdout, stderr).
    async fn try_run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut c = self.cmd(args);
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let stdin = stdin.map(str::to_string);
        let label = format!("{args:?}");
        tokio::task::spawn_blocking(move || {
            let mut child = c.spawn().unwrap();
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(text.as_bytes()).unwrap();
            }
            let out = pump(child.stdout.take().unwrap());
            let err = pump(child.stderr.take().unwrap());
            let deadline = Instant::now() + Duration::from_secs(15);
            let status = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("kubectl {label} timed out; stderr: {}", drain(&err));
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            // The pumps end at EOF: iterating waits for everything kubectl wrote.
            (status.success(), out.iter().collect(), err.iter().collect())
        })
        .await
        .unwrap()
    }

    async fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.try_run(args, stdin).await;
        assert!(ok, "kubectl {args:?} failed: {err}\nstdout: {out}");
        out
    }

    async fn run(&self, args: &[&str]) -> String {
        self.run_stdin(args, None).await
    }
}

/// Read a streaming kubectl's stdout until `want` appears (bounded), then kill it.
async fn read_until(mut child: Child, want: &'static str) -> String {
    tokio::task::spawn_blocking(move || {
        let out = pump(child.stdout.take().unwrap());
        let err = pump(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = String::new();
        while !seen.contains(want) && Instant::now() < deadline {
            if let Ok(chunk) = out.recv_timeout(Duration::from_millis(100)) {
                seen.push_str(&chunk);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            seen.contains(want),
            "did not see {want:?}; stdout: {seen}\nstderr: {}",
            drain(&err)
        );
        seen
    })
    .await
    .unwrap()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
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
";

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  containers:
  - name: main
    image: busybox
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_against_sandbox() {
    let env = setup().await;

    let ns = env.run(&["get", "ns"]).await;
    assert!(ns.contains("default") && ns.contains("Active"), "{ns}");

    env.run(&["create", "configmap", "cfg", "--from-literal=k=v"])
        .await;
    let cm = env.run(&["get", "configmap", "cfg", "-o", "json"]).await;
    let cm: serde_json::Value = serde_json::from_str(&cm).unwrap();
    assert_eq!(cm["data"]["k"], "v");

    let applied = env.run_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT)).await;
    assert!(applied.contains("deployment.apps/web created"), "{applied}");
    let changed = DEPLOYMENT.replace("nginx:1.27", "nginx:1.28");
    let applied = env.run_stdin(&["apply", "-f", "-"], Some(&changed)).await;
    assert!(
        applied.contains("deployment.apps/web configured"),
        "{applied}"
    );
    let image = env
        .run(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, "nginx:1.28");

    // get -w sees a pod created after the watch started.
    let watcher = env.spawn(&["get", "pods", "-w"]);
    let watching = common::poll(Duration::from_secs(15), || {
        env.running
            .sandbox
            .recorded()
            .iter()
            .any(|r| r.query.as_deref().is_some_and(|q| q.contains("watch=true")))
            .then_some(())
    })
    .await;
    assert!(
        watching.is_some(),
        "kubectl get pods -w did not start its watch within 15 s"
    );
    env.run_stdin(&["create", "-f", "-"], Some(POD)).await;
    let seen = read_until(watcher, "shell").await;
    assert!(seen.contains("Running"), "{seen}");

    let logs = env.spawn(&["logs", "-f", "shell"]);
    read_until(logs, "line 4").await;

    let hi = env.run(&["exec", "shell", "--", "echo", "hi"]).await;
    assert_eq!(hi, "hi\n");

    let del = env.run(&["delete", "configmap", "cfg"]).await;
    assert!(del.contains("deleted"), "{del}");
    let (ok, _, err) = env.try_run(&["get", "configmap", "cfg"], None).await;
    assert!(!ok && err.contains("NotFound"), "{err}");

    // Every request was recorded with its headers, kubectl's bearer token included.
    let rec = env.running.sandbox.recorded();
    let post = rec
        .iter()
        .find(|r| r.method == "POST" && r.path == "/api/v1/namespaces/default/configmaps")
        .expect("configmap POST recorded");
    assert_eq!(post.headers["authorization"], "Bearer sandbox");
    assert!(post
        .query
        .as_deref()
        .unwrap_or("")
        .contains("fieldManager=kubectl-create"));
    assert!(rec
        .iter()
        .any(|r| r.path.ends_with("/pods/shell/exec") && !r.h2));
    env.running.sandbox.clear_recorded();
    assert!(env.running.sandbox.recorded().is_empty());

    env.running.stop().await;
}
