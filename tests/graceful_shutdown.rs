//! The real `portcullis serve` binary: SIGTERM stops accepting but lets an in-flight request
//! finish, then the process exits 0. Once on the default multi-thread runtime, once with
//! `TOKIO_WORKER_THREADS=1`, which runs tokio's current-thread runtime (`src/main.rs`). An
//! exec session (an upgraded connection, which outlives its connection's task) gets the same
//! grace.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use portcullis::server::tls;
use portcullis_sandbox::{self as sandbox, demo, pki::Ca};

/// Whether `addr` refuses new connections within about 2 s (the listener closed at shutdown).
async fn listener_closed(addr: std::net::SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_request_finish() {
    sigterm_run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_request_finish_on_one_thread() {
    sigterm_run(Some("1")).await;
}

/// The scenario, with `TOKIO_WORKER_THREADS` set to `threads` for the proxy when given.
async fn sigterm_run(threads: Option<&str>) {
    tls::install_crypto_provider();
    let ca = Ca::new("test CA").unwrap();
    let sandbox = sandbox::start("127.0.0.1:0".parse().unwrap(), &ca)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (common::free_port(), common::free_port());
    let files = demo::write(dir.path(), &ca, &sandbox.url(), listen, admin).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.args(["serve", "--config"]).arg(&files.config);
    if let Some(n) = threads {
        command.env("TOKIO_WORKER_THREADS", n);
    }
    let mut child = command.kill_on_drop(true).spawn().unwrap();

    // Wait until the proxy accepts connections.
    let mut up = false;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            up = true;
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("proxy exited before listening: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "proxy did not listen on {listen} within 30 s");

    // An in-flight request that lasts ~2 s: a watch with timeoutSeconds.
    let client_cert = ca.client_cert("admin", &["demo:admins"]).unwrap();
    let mut sender = common::h2_sender(listen, &ca, Some(&client_cert)).await;
    let resp = sender
        .send_request(
            http::Request::get(
                "https://localhost/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=2",
            )
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());

    // New connections are refused once the listener is closed.
    let refused = listener_closed(listen).await;
    assert!(refused, "proxy still accepted connections after SIGTERM");

    // The in-flight watch still completes normally.
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await;
    assert!(
        matches!(body, Ok(Ok(_))),
        "in-flight request was cut: {body:?}"
    );

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    sandbox.stop().await;
}

/// `kubectl exec -i POD -- cat` through the proxy: after SIGTERM the session still echoes
/// (within `shutdown.grace`, 30 s by default), and the process exits once it has ended — with
/// the session's `ResponseComplete` in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_exec_session_finish() {
    exec_through_sigterm(None).await;
}

/// The same for a recorded session (team-a's recorded grant): its recording is synced after
/// the client's socket has gone, and its `ResponseComplete`, naming the recording, is still
/// written before the audit sinks stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_recorded_exec_session_finish_with_its_event() {
    let sessions = tempfile::tempdir().unwrap();
    exec_through_sigterm(Some(sessions.path())).await;
}

/// `kubectl exec -i shell -- cat` with `kubeconfig`, once it has echoed a first line (its
/// stdin open: the session goes on).
async fn echoing_session(
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
) -> common::EchoSession {
    let mut session = common::EchoSession::start(kubeconfig, home, "shell");
    assert_eq!(session.echo("before").await.as_deref(), Some("before"));
    session
}

/// The `ResponseComplete` events in audit log text `log` that `keep` selects.
fn completes(log: &str, keep: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete" && keep(e))
        .collect()
}

/// The `ResponseComplete` events of `pods/shell/exec` in the proxy's audit log.
fn exec_completes(b: &common::binary::Binary) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(b.files.dir.join("audit.log")).unwrap();
    completes(&log, |e| {
        e["requestURI"]
            .as_str()
            .is_some_and(|u| u.contains("/pods/shell/exec"))
    })
}

/// An exec session open across SIGTERM; recorded into `sessions` when given.
async fn exec_through_sigterm(sessions: Option<&std::path::Path>) {
    common::require_kubectl();
    let mut b = common::binary::Binary::start(&[], |c| {
        if let Some(dir) = sessions {
            common::session::recording_config(c, dir, "");
        }
    })
    .await;
    // A recorded session is team-a's, in its namespace (Pod Security restricted).
    let (who, out) = match sessions {
        Some(_) => {
            let file = common::session::shell_pod_file(b.dir.path());
            let create = ["create", "-n", "team-a", "-f", file.to_str().unwrap()];
            let out = b.kubectl(&b.files.admin_kubeconfig, &create).await;
            (b.files.team_a_kubeconfig.clone(), out)
        }
        None => {
            let run = ["run", "shell", "--image=busybox", "--restart=Never"];
            let out = b.kubectl(&b.files.admin_kubeconfig, &run).await;
            (b.files.admin_kubeconfig.clone(), out)
        }
    };
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mut exec = common::EchoSession::start(&who, b.dir.path(), "shell");
    assert_eq!(exec.echo("before").await.as_deref(), Some("before"));

    b.signal("TERM");
    // The listener closes; the session goes on.
    listener_closed(b.listen).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        exec.echo("during shutdown").await.as_deref(),
        Some("during shutdown")
    );
    assert!(
        b.child.try_wait().unwrap().is_none(),
        "the proxy exited with a session open"
    );
    // The session ends (stdin closed): the proxy exits.
    exec.close();
    let ended = tokio::time::timeout(Duration::from_secs(20), exec.child.wait()).await;
    assert!(
        matches!(ended, Ok(Ok(s)) if s.success()),
        "kubectl exec: {ended:?}"
    );
    let status = b
        .exit_status(
            Duration::from_secs(20),
            "the proxy did not exit after the session ended",
        )
        .await;
    assert!(status.success(), "exit status {status:?}");
    let completes = exec_completes(&b);
    assert_eq!(
        completes.len(),
        1,
        "the session's ResponseComplete: {completes:?}"
    );
    if sessions.is_some() {
        assert!(
            completes[0]["annotations"][common::session::ANNOTATION].is_string(),
            "{}",
            completes[0]
        );
    }
    b.sandbox.stop().await;
}

/// A recorded session still open when `shutdown.grace` (5 s in the demo) runs out is ended by
/// the proxy, not left to be cut unrecorded at exit: its recording is finished and its
/// `ResponseComplete` — marked `response-aborted: shutdown`, naming the recording and its
/// digest — is in the audit log before the sinks stop. Before, the event was lost (the
/// session's task outlived the sinks) and the recording's digest with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outliving_the_grace_is_ended_with_its_event() {
    common::require_kubectl();
    let sessions = tempfile::tempdir().unwrap();
    let mut b = common::binary::Binary::start(&[], |c| {
        common::session::recording_config(c, sessions.path(), "");
    })
    .await;
    let file = common::session::shell_pod_file(b.dir.path());
    let create = ["create", "-n", "team-a", "-f", file.to_str().unwrap()];
    let out = b.kubectl(&b.files.admin_kubeconfig, &create).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mut exec = echoing_session(&b.files.team_a_kubeconfig, b.dir.path()).await;
    b.signal("TERM");
    // The session stays open: the proxy ends it at the end of the 5 s grace, then exits.
    let status = b
        .exit_status(
            Duration::from_secs(30),
            "the proxy did not exit after the grace",
        )
        .await;
    assert!(status.success(), "exit status {status:?}");
    let completes = exec_completes(&b);
    assert_eq!(
        completes.len(),
        1,
        "the session's ResponseComplete: {completes:?}\n{}",
        b.log()
    );
    let a = &completes[0]["annotations"];
    assert_eq!(a["portcullis.io/response-aborted"], "shutdown", "{a}");
    let recording: serde_json::Value =
        serde_json::from_str(a[common::session::ANNOTATION].as_str().unwrap()).unwrap();
    assert!(recording["sha256"].is_string(), "{recording}");
    exec.close();
    let _ = exec.child.kill().await;
    b.sandbox.stop().await;
}

/// A watch still open when `shutdown.grace` (5 s in the demo) runs out ends with its
/// connection, and its `ResponseComplete` is in the audit log before the sinks stop (the
/// auditor waits for the streams the drain cut), annotated `response-aborted: shutdown`.
/// Meanwhile the admin listener still answers: the drain can be watched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_outliving_the_grace_still_leaves_its_event() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    common::require_kubectl();
    let mut b = common::binary::Binary::start(&[], |_| {}).await;
    let out = b
        .kubectl(
            &b.files.admin_kubeconfig,
            &["create", "configmap", "seen", "-n", "default"],
        )
        .await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mut watch = common::kubectl_spawn(
        &b.files.admin_kubeconfig,
        b.dir.path(),
        &[
            "get",
            "configmaps",
            "-n",
            "default",
            "--watch",
            "-o",
            "name",
        ],
    );
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // The list's line, then the watch is open.
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the watch printed nothing")
        .unwrap();
    assert_eq!(first.as_deref(), Some("configmap/seen"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.signal("TERM");
    // The drain can be watched: the admin listener answers through it, `/readyz` with 503,
    // `/metrics` with the watch's connection still open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ready, _) = common::admin_get(b.admin, "/readyz").await;
    assert_eq!(ready, 503, "ready during the drain");
    let (code, metrics) = common::admin_get(b.admin, "/metrics").await;
    assert_eq!(code, 200);
    let open: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_listener_connections_open"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(open >= 1.0, "{metrics}");
    let status = b
        .exit_status(
            Duration::from_secs(30),
            "the proxy did not exit after the grace",
        )
        .await;
    assert!(status.success(), "exit status {status:?}");
    let log = std::fs::read_to_string(b.files.dir.join("audit.log")).unwrap();
    let completes = completes(&log, |e| {
        e["verb"] == "watch" && e["objectRef"]["resource"] == "configmaps"
    });
    assert_eq!(completes.len(), 1, "{}", b.log());
    // Ended by the drain, and said so, as an upgraded stream cut then says.
    assert_eq!(
        completes[0]["annotations"]["portcullis.io/response-aborted"], "shutdown",
        "{}",
        completes[0]
    );
    let _ = watch.kill().await;
    b.sandbox.stop().await;
}

/// `shutdown.delay`: after SIGTERM `/readyz` fails at once while the listener still accepts
/// and serves new connections (load balancers and kube-proxy stop sending first, as with
/// kube-apiserver's `--shutdown-delay-duration`); the drain begins once the delay is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_delay_fails_readiness_but_keeps_serving() {
    common::require_kubectl();
    let mut b = common::binary::Binary::start(&[], |c| {
        assert!(c.contains("shutdown:\n  grace: 5s\n"), "{c}");
        *c = c.replace(
            "shutdown:\n  grace: 5s\n",
            "shutdown:\n  grace: 5s\n  delay: 8s\n",
        );
    })
    .await;
    assert_eq!(common::admin_get(b.admin, "/readyz").await.0, 200);
    b.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = common::admin_get(b.admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    // A new connection during the delay is served.
    let out = b
        .kubectl(
            &b.files.admin_kubeconfig,
            &["get", "namespaces", "-o", "name"],
        )
        .await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    // Then the drain: the listener closes and the process exits.
    let status = b
        .exit_status(
            Duration::from_secs(30),
            "the proxy did not exit after the delay and the drain",
        )
        .await;
    assert!(status.success(), "exit status {status:?}");
    let log = b
        .log_when(|l| l.contains("still accepting until the delay ends"))
        .await;
    assert!(
        log.contains("still accepting until the delay ends"),
        "{log}"
    );
    b.sandbox.stop().await;
}

/// A second SIGTERM during the drain is the operator saying not to wait: the proxy exits at
/// once (status 130) although a session is still open, where one signal waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_exits_at_once() {
    common::require_kubectl();
    let mut b = common::binary::Binary::start(&[], |_| {}).await;
    let run = ["run", "shell", "--image=busybox", "--restart=Never"];
    let out = b.kubectl(&b.files.admin_kubeconfig, &run).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mut exec = echoing_session(&b.files.admin_kubeconfig, b.dir.path()).await;
    b.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        b.child.try_wait().unwrap().is_none(),
        "one signal waits for the open session"
    );
    b.signal("TERM");
    let status = b
        .exit_status(
            Duration::from_secs(10),
            "the second signal did not end the proxy",
        )
        .await;
    assert_eq!(status.code(), Some(130), "{status:?}");
    exec.close();
    let _ = exec.child.kill().await;
    b.sandbox.stop().await;
}

/// A client that connected just before SIGTERM and sends its request just after is answered,
/// not cut (as Go's `Server.Shutdown` gives a new connection 5 s): over HTTP/1.1 with
/// `Connection: close`, over HTTP/2 before the GOAWAY closes the connection (a request the
/// client sends after that GOAWAY is refused unprocessed, which clients retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_sigterm_gets_its_first_request_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut b = common::binary::Binary::start(&[], |_| {}).await;
    let cert = b.ca.client_cert("admin", &["demo:admins"]).unwrap();
    // Both handshaken, neither has sent a byte of HTTP yet.
    let mut h1 = common::tls_connect(b.listen, &b.ca, Some(&cert), &[b"http/1.1"]).await;
    let h2 = common::tls_connect(b.listen, &b.ca, Some(&cert), &[b"h2"]).await;
    b.signal("TERM");
    let closed = listener_closed(b.listen).await;
    assert!(closed, "the listener is closed: shutdown has begun");

    h1.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Everything until the close (with or without TLS close_notify).
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = h1.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the connection was neither answered nor closed");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");

    // The preface and the request leave together (the h2 crate writes both at the
    // connection's first poll), as a client's first flight does.
    let (mut sender, conn) = h2::client::handshake(h2).await.unwrap();
    let (resp, _) = sender
        .send_request(
            http::Request::get("https://localhost/version")
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    let conn = tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("no answer over HTTP/2")
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Then the proxy closes the connection gracefully (GOAWAY, NO_ERROR) — the client still
    // holds its sender, so only the proxy can have ended it.
    drop(resp);
    let closed = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the HTTP/2 connection stayed open after shutdown")
        .unwrap();
    assert!(closed.is_ok(), "{closed:?}");
    drop(sender);

    let status = b
        .exit_status(Duration::from_secs(20), "the proxy did not exit")
        .await;
    assert!(status.success(), "exit status {status:?}");
    b.sandbox.stop().await;
}

/// An ordinary request still waiting on the API server when `shutdown.grace` runs out (a
/// write behind a slow admission webhook, a large list) is cut with its connection, and its
/// `ResponseComplete` is in the audit log, annotated `response-aborted: shutdown`: the proxy's
/// drain ended it, not the client. Over HTTP/2, as kubectl and client-go send it, where the
/// request's task sees its connection dropped only after the listener has stopped waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_grace_cuts_leaves_its_event_marked_shutdown() {
    use tokio::io::AsyncWriteExt;
    let (ca, sandbox) = common::Env::ca_and_sandbox().await;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(4);
    let fake = common::fake_upstream(&ca, move |mut s| {
        let seen_tx = seen_tx.clone();
        async move {
            while let Some(head) = common::read_head(&mut s).await {
                if head.contains("/configmaps/slow") {
                    let _ = seen_tx.send(()).await;
                    // Never answered while the proxy runs.
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    return;
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                if s.write_all(ok).await.is_err() || s.flush().await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let env = common::Env::start_against(ca, sandbox, fake, |c| {
        let five = "shutdown:\n  grace: 5s\n";
        assert!(c.contains(five), "the demo's grace moved");
        *c = c.replace(five, "shutdown:\n  grace: 1s\n");
    })
    .await;
    let audit_log = env.files.dir.join("audit.log");
    let mut sender = common::h2_sender(env.proxy_addr, &env.ca, Some(&env.admin_cert)).await;
    let request = tokio::spawn(async move {
        sender
            .send_request(common::get("/api/v1/namespaces/default/configmaps/slow"))
            .await
    });
    tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
        .await
        .expect("the request never reached the upstream");
    let _kept = env.stop_keeping_files().await;
    let log = std::fs::read_to_string(&audit_log).unwrap();
    let completes = completes(&log, |e| {
        e["requestURI"] == "/api/v1/namespaces/default/configmaps/slow"
    });
    assert_eq!(completes.len(), 1, "{log}");
    assert_eq!(
        completes[0]["annotations"]["portcullis.io/response-aborted"], "shutdown",
        "{}",
        completes[0]
    );
    request.abort();
}
