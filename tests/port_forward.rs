//! `kubectl port-forward` end to end, straight to the sandbox and through the proxy, over both
//! transports kubectl has: SPDY/3.1 tunnelled in WebSocket (its default since 1.31) and the
//! plain SPDY/3.1 upgrade (`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`); and the Python client's
//! `portforward()` (the WebSocket channel protocol). Behind every pod port the
//! sandbox answers HTTP with the pod and port, and echoes other bytes. A tenant without
//! `pods/portforward` is refused by the proxy: kubectl prints the Status, the sandbox sees nothing.
//!
//! Fails (never skips) when kubectl is missing: see `common::require_kubectl`.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{path::Path, time::Duration};

use bytes::Bytes;
use common::{direct, Env};
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::Child,
};

/// kubectl's two transports, and what the API server sees of each.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// `Upgrade: websocket`, subprotocol `SPDY/3.1+portforward.k8s.io`.
    Tunnel,
    /// `Upgrade: SPDY/3.1`.
    Spdy,
}

impl Transport {
    fn env(self) -> &'static str {
        match self {
            Transport::Tunnel => "true",
            Transport::Spdy => "false",
        }
    }
}

/// A running `kubectl port-forward` and the local ports it listens on, in argument order.
struct Forward {
    _child: Child,
    ports: Vec<u16>,
}

async fn port_forward(env: &Env, kubeconfig: &Path, t: Transport, args: &[&str]) -> Forward {
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(env.dir.path().join("kube-cache"))
        .arg("port-forward")
        .args(args)
        .env("HOME", env.dir.path())
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", t.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let wanted = args.iter().filter(|a| a.starts_with(':')).count();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ports = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while ports.len() < wanted {
            let Some(line) = lines.next_line().await.unwrap() else {
                break;
            };
            // "Forwarding from 127.0.0.1:41234 -> 80"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                ports.push(rest.split(' ').next().unwrap().parse().unwrap());
            }
        }
    })
    .await;
    if found.is_err() || ports.len() < wanted {
        let _ = child.start_kill();
        let out = child.wait_with_output().await.unwrap();
        panic!(
            "kubectl port-forward {args:?} ({t:?}) did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // kubectl logs "Handling connection" lines; keep its stdout drained.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Forward {
        _child: child,
        ports,
    }
}

/// Send `bytes` to a forwarded local port and half-close, while reading until the pod side
/// closes (written and read at once, so a `kubectl cp`-sized stream that fills every buffer on
/// the way cannot stall on itself).
async fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        wr.write_all(&bytes).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut out))
        .await
        .expect("no answer through the forward within 60 s")
        .unwrap();
    writer.await.unwrap();
    out
}

/// An HTTP GET through the forward (the request alone, no half-close: like curl).
async fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: test\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("no HTTP answer through the forward within 20 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn with_pod(env: &Env) {
    let admin = direct::admin(env);
    direct::ok(
        &direct::k(
            &admin,
            env,
            &["run", "web", "--image=nginx", "--port=80", "-n", "team-a"],
        )
        .await,
    );
}

/// The port-forward requests the sandbox received.
fn forwards_seen(env: &Env) -> Vec<portcullis_sandbox::Recorded> {
    env.sandbox
        .sandbox
        .recorded()
        .into_iter()
        .filter(|r| r.path.ends_with("/portforward"))
        .collect()
}

fn header<'a>(r: &'a portcullis_sandbox::Recorded, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// HTTP and raw bytes through one `kubectl port-forward` of two ports, then check which
/// transport reached the sandbox (and as whom).
async fn forward_and_check(env: &Env, kubeconfig: &Path, t: Transport, user: Option<&str>) {
    env.sandbox.sandbox.clear_recorded();
    let fwd = port_forward(
        env,
        kubeconfig,
        t,
        &["-n", "team-a", "pod/web", ":80", ":5432"],
    )
    .await;
    let resp = http_get(fwd.ports[0], "/hello?x=1").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{t:?}: {resp}");
    assert!(
        resp.ends_with("\r\n\r\npod team-a/web port 80: GET /hello?x=1\n"),
        "{t:?}: {resp}"
    );
    // A second connection on the same session, to the other port: raw bytes come back.
    let echoed = exchange(fwd.ports[1], b"\x00\x01binary\xffbytes").await;
    assert_eq!(echoed, b"\x00\x01binary\xffbytes", "{t:?}");
    // And a third, concurrently with a fourth.
    let (a, b) = tokio::join!(http_get(fwd.ports[0], "/a"), exchange(fwd.ports[1], b"b"));
    assert!(
        a.ends_with("port 80: GET /a\n") && b == b"b",
        "{t:?}: {a} / {b:?}"
    );
    // A bulk stream (what `kubectl cp` or a database dump moves): every byte back, in order.
    let bulk: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let back = exchange(fwd.ports[1], &bulk).await;
    assert!(
        back == bulk,
        "{t:?}: {} of {} bytes came back, or not in order",
        back.len(),
        bulk.len()
    );

    let seen = forwards_seen(env);
    assert_eq!(seen.len(), 1, "{t:?}: one session for all connections");
    let r = &seen[0];
    assert_eq!(r.path, "/api/v1/namespaces/team-a/pods/web/portforward");
    match t {
        Transport::Tunnel => {
            assert_eq!(header(r, "upgrade").to_lowercase(), "websocket");
            assert!(
                header(r, "sec-websocket-protocol").contains("SPDY/3.1+portforward.k8s.io"),
                "{:?}",
                r.headers
            );
        }
        Transport::Spdy => {
            assert_eq!(header(r, "upgrade"), "SPDY/3.1");
            assert_eq!(header(r, "x-stream-protocol-version"), "portforward.k8s.io");
        }
    }
    assert_eq!(header(r, "impersonate-user"), user.unwrap_or(""), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_straight_to_the_sandbox() {
    common::require_kubectl();
    let env = Env::start().await;
    with_pod(&env).await;
    let admin = direct::admin(&env);
    for t in [Transport::Tunnel, Transport::Spdy] {
        forward_and_check(&env, &admin, t, None).await;
    }
    // An unknown pod: kubectl reports the API server's NotFound.
    let out = direct::k(
        &admin,
        &env,
        &["port-forward", "-n", "team-a", "pod/nope", ":80"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains(r#"pods "nope" not found"#),
        "{}",
        common::stderr(&out)
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_through_the_proxy_as_the_tenant() {
    common::require_kubectl();
    let env = Env::start().await;
    with_pod(&env).await;
    let team_a = env.files.team_a_kubeconfig.clone();
    for t in [Transport::Tunnel, Transport::Spdy] {
        forward_and_check(&env, &team_a, t, Some("alice")).await;
    }
    env.stop().await;
}

/// The bearer token of a demo kubeconfig, as kubectl reads it.
async fn token_of(env: &Env, kubeconfig: &Path) -> String {
    let out = direct::k(
        kubeconfig,
        env,
        &[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.users[0].user.token}",
        ],
    )
    .await;
    let token = direct::ok(&out).trim().to_string();
    assert!(!token.is_empty(), "no token in {kubeconfig:?}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_without_the_grant_is_refused_and_never_reaches_the_sandbox() {
    common::require_kubectl();
    // Refused requests spend the write bucket too (the limiter sits before authorization), and
    // kubectl tries each transport: room for the refusals below.
    let env = Env::start_with(|c| {
        *c = c.replace(
            "writes: {rate: 1/s, burst: 3}, watches: 2, sessions: 1",
            "writes: {rate: 1/s, burst: 30}, watches: 2, sessions: 1",
        )
    })
    .await;
    with_pod(&env).await;
    // ci may get and list pods in team-a, but has no pods/portforward.
    let ci = env.files.ci_kubeconfig.clone();
    for t in [Transport::Tunnel, Transport::Spdy] {
        env.sandbox.sandbox.clear_recorded();
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&ci)
                .arg("--cache-dir")
                .arg(env.dir.path().join("kube-cache"))
                .args(["port-forward", "-n", "team-a", "pod/web", ":80"])
                .env("HOME", env.dir.path())
                .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", t.env())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("kubectl port-forward as ci did not give up within 60 s")
        .unwrap();
        let err = common::stderr(&out);
        assert!(!out.status.success(), "{t:?}: {err}");
        assert!(
            err.contains(r#"cannot create resource "pods/portforward""#),
            "{t:?}: {err}"
        );
        let seen = forwards_seen(&env);
        assert!(seen.is_empty(), "{t:?}: reached the sandbox: {seen:?}");
    }

    // The same refusal on the wire, for both upgrade kinds: a Forbidden Status.
    let token = token_of(&env, &ci).await;
    let path = "/api/v1/namespaces/team-a/pods/web/portforward";
    let upgrades: [(&str, &[(&str, &str)]); 2] = [
        (
            "GET",
            &[
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
            ],
        ),
        (
            "POST",
            &[
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", "portforward.k8s.io"),
            ],
        ),
    ];
    for (method, headers) in upgrades {
        env.sandbox.sandbox.clear_recorded();
        let mut b = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("connection", "Upgrade");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = env
            .request(b.body(Full::new(Bytes::new())).unwrap(), None, false)
            .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method}");
        let s: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(
            (s["kind"].as_str(), s["reason"].as_str()),
            (Some("Status"), Some("Forbidden"))
        );
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .contains(r#"cannot create resource "pods/portforward""#),
            "{s}"
        );
        assert!(
            env.sandbox.sandbox.recorded().is_empty(),
            "{method} reached the sandbox"
        );
    }
    env.stop().await;
}

/// The Python client's `portforward()`: the WebSocket channel protocol (`v4.channel.k8s.io`).
const PYTHON: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
pf = portforward(api.connect_get_namespaced_pod_portforward, "web", "team-a", ports="80,5432")
s = pf.socket(80)
s.sendall(b"GET /py HTTP/1.1\r\nHost: web\r\n\r\n")
data = b""
while not data.endswith(b"GET /py\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode().split("\r\n")[0])
print(data.decode().split("\r\n\r\n", 1)[1], end="")
e = pf.socket(5432)
e.sendall(b"echo me")
got = b""
while len(got) < 7:
    got += e.recv(4096)
print(got.decode())
pf.close()
"#;

async fn python_port_forward(kubeconfig: &Path) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(PYTHON)
            .arg(kubeconfig)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the python client did not finish within 60 s")
    .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed (is `pip install kubernetes` done?): {}",
        common::stderr(&out)
    );
    common::stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_port_forward_directly_and_through_the_proxy() {
    let env = Env::start().await;
    with_pod(&env).await;
    let want = "HTTP/1.1 200 OK\npod team-a/web port 80: GET /py\necho me\n";
    for (kubeconfig, user) in [
        (direct::admin(&env), ""),
        (env.files.team_a_kubeconfig.clone(), "alice"),
    ] {
        env.sandbox.sandbox.clear_recorded();
        assert_eq!(python_port_forward(&kubeconfig).await, want);
        let seen = forwards_seen(&env);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(header(&seen[0], "upgrade").to_lowercase(), "websocket");
        assert_eq!(seen[0].query.as_deref(), Some("ports=80%2C5432"));
        assert_eq!(header(&seen[0], "impersonate-user"), user);
    }
    env.stop().await;
}
