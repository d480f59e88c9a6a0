//! Upstream sources and timeouts: kubeconfig and client-certificate upstreams, the request
//! timeout (504) that long-running requests are exempt from, the slowloris guard, readiness,
//! and pass-through of the headers discovery caching depends on.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{get, Env};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis_sandbox::{self as sandbox, pki::Ca};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

use common::replace_upstream_source;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_upstream_uses_its_server_ca_and_token_file() {
    let env = Env::start_with(|c| {
        replace_upstream_source(c, "  kubeconfig:\n    path: upstream.kubeconfig\n")
    })
    .await;
    let resp = env
        .request(get("/api/v1/namespaces"), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = env.sandbox.sandbox.recorded();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers["authorization"].to_str().unwrap(),
        format!("Bearer {}", env.proxy_token())
    );
    assert_eq!(seen[0].headers["impersonate-user"], "admin");
    assert!(seen[0].h2, "the pooled upstream connection negotiated h2");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_upstream_sends_no_token() {
    let ca = Ca::new("test CA").unwrap();
    let proxy_id = ca.client_cert("portcullis-proxy", &[]).unwrap();
    let sandbox = sandbox::start("127.0.0.1:0".parse().unwrap(), &ca)
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("c.crt"), tmp.path().join("c.key"));
    std::fs::write(&cert, &proxy_id.cert_pem).unwrap();
    std::fs::write(&key, &proxy_id.key_pem).unwrap();
    let block = format!(
        "  url: {}\n  ca_file: ca.crt\n  credentials:\n    client_cert_file: {}\n    client_key_file: {}\n",
        sandbox.url(),
        cert.display(),
        key.display()
    );
    let env = Env::start_in_front_of(ca, sandbox, |c| replace_upstream_source(c, &block)).await;
    let resp = env
        .request(get("/api/v1/namespaces"), Some(&env.admin_cert), false)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = env.sandbox.sandbox.recorded();
    assert!(
        seen[0].headers.get("authorization").is_none(),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(seen[0].headers["impersonate-user"], "admin");
    env.stop().await;
}

/// The proxy trusts an upstream CA only within its validity period, as client-go does (Go
/// checks the root's dates): an API server whose certificate chains only to an expired CA in
/// `upstream.ca_file` is never talked to — the client gets the unreachable-upstream 502 and
/// the server never completes a handshake, let alone sees a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_ca_has_expired_is_not_trusted() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let retired = Ca::expired("retired upstream CA").unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    let fake = common::fake_upstream(&retired, move |mut s| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = common::read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .await;
            let _ = s.flush().await;
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("upstream-cas.crt");
    std::fs::write(
        &bundle,
        format!("{}{}", ca.cert.cert_pem, retired.cert.cert_pem),
    )
    .unwrap();
    let env = Env::start_against(ca, sandbox, fake, |c| {
        *c = c.replace(
            "  ca_file: ca.crt\n",
            &format!("  ca_file: {}\n", bundle.display()),
        );
    })
    .await;
    let resp = env
        .request(
            get("/api/v1/namespaces/default/configmaps"),
            Some(&env.admin_cert),
            true,
        )
        .await;
    let s = json(resp.body());
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{s}");
    assert_eq!(s["kind"], "Status", "{s}");
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "the upstream's handshake completed"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_times_out_with_504_but_watches_do_not() {
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    // Reads the request and never answers.
    let silent = common::fake_upstream(&ca, |mut s| async move {
        let _ = common::read_head(&mut s).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let env = Env::start_against(ca, sandbox, silent, |c| {
        *c = c.replace(
            "upstream:\n",
            "upstream:\n  request_timeout: 300ms\n  upgrade_timeout: 500ms\n",
        );
    })
    .await;
    let resp = env
        .request(
            get("/api/v1/namespaces/default/configmaps"),
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let s = json(resp.body());
    assert_eq!(s["reason"], "Timeout");
    assert_eq!(
        s["message"],
        "Timeout: request did not complete within the allotted timeout"
    );

    // A watch is long-running: still waiting well past the request timeout.
    let watch = env.request(
        get("/api/v1/namespaces/default/configmaps?watch=1"),
        Some(&env.admin_cert),
        true,
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), watch)
            .await
            .is_err(),
        "a watch was cut by the request timeout"
    );
    // An upgrade (exec) whose answer never comes is not held for ever either: its 101 or
    // refusal is awaited for `upgrade_timeout`.
    let exec = env.request(
        common::websocket_get("/api/v1/namespaces/default/pods/p/exec?command=sh&stdout=1"),
        Some(&env.admin_cert),
        false,
    );
    let resp = tokio::time::timeout(Duration::from_secs(10), exec)
        .await
        .expect("an unanswered upgrade was held past upgrade_timeout");
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json(resp.body())["reason"], "Timeout");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_is_disconnected() {
    let env =
        Env::start_with(|c| *c = c.replace("  tls:\n", "  header_read_timeout: 500ms\n  tls:\n"))
            .await;
    let mut s = env.admin_http1().await;
    s.write_all(b"GET /api HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    s.flush().await.unwrap();
    // The proxy must hang up (possibly after a 408) instead of waiting forever.
    let mut buf = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        ended.is_ok(),
        "connection still open 10 s after a 500 ms header timeout"
    );
    assert!(env.sandbox.sandbox.recorded().is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_upstream_is_unreachable() {
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let dead = common::dead_addr();
    let env = Env::start_against(ca, sandbox, dead, |_| {}).await;
    let (status, body) = common::admin_get(env.admin_addr, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("upstream has not answered"), "{body}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_etag_vary_and_accept_pass_through() {
    let env = Env::start().await;
    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let req = || {
        Request::get("https://localhost/apis")
            .header("accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let via_proxy = env.request(req(), Some(&env.admin_cert), true).await;
    let direct = common::https_request(env.sandbox.addr, &env.ca, req(), None, true).await;
    assert_eq!(via_proxy.status(), StatusCode::OK);
    for h in ["etag", "vary", "content-type"] {
        assert!(direct.headers().contains_key(h), "sandbox sent no {h}");
        assert_eq!(
            via_proxy.headers().get(h),
            direct.headers().get(h),
            "{h} changed by the proxy"
        );
    }
    assert_eq!(via_proxy.body(), direct.body());
    let seen = env.sandbox.sandbox.recorded();
    assert_eq!(
        seen[0].headers["accept"], accept,
        "Accept parameters reach the upstream intact"
    );
    env.stop().await;
}

/// A fake upstream's side of a spliced session: send back whatever arrives, until either end
/// closes.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The client's side: each message sent through the splice comes back whole.
async fn echoes<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    msgs: &[&[u8]],
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for msg in msgs {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], *msg);
    }
}

/// A fake upstream that accepts SPDY upgrades and then echoes bytes, and answers plain GETs
/// with the headers a real API server adds. Proves the splice and the header pass-through for
/// what the sandbox cannot produce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_upgrade_is_spliced_and_upstream_headers_pass_through() {
    use tokio::io::AsyncWriteExt;
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let fake = common::fake_upstream(&ca, |mut s| async move {
        let Some(head) = common::read_head(&mut s).await else { return };
        let lower = head.to_lowercase();
        if lower.contains("upgrade: spdy/3.1") {
            assert!(lower.contains("x-stream-protocol-version: v4.channel.k8s.io"), "{head}");
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
                .await;
            echo(&mut s).await;
            return;
        }
        let body = b"{}";
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nwarning: 299 - \"v1beta1 is deprecated\"\r\n\
             x-kubernetes-pf-flowschema-uid: fs-1\r\nx-kubernetes-pf-prioritylevel-uid: pl-1\r\n\
             content-encoding: identity\r\naudit-id: from-upstream\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(resp.as_bytes()).await;
        let _ = s.write_all(body).await;
        let _ = s.flush().await;
    })
    .await;
    let env = Env::start_against(ca, sandbox, fake, |_| {}).await;

    // Plain GET: upstream headers arrive unchanged.
    let resp = env
        .request(get("/apis/batch/v1beta1"), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h["warning"], r#"299 - "v1beta1 is deprecated""#);
    assert_eq!(h["x-kubernetes-pf-flowschema-uid"], "fs-1");
    assert_eq!(h["x-kubernetes-pf-prioritylevel-uid"], "pl-1");
    assert_eq!(h["content-encoding"], "identity");
    assert_ne!(
        h["audit-id"], "from-upstream",
        "the client sees the proxy's Audit-ID"
    );

    // SPDY exec: 101 with the negotiated protocol, then bytes both ways.
    let mut s = env.admin_http1().await;
    s.write_all(
        b"POST /api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true HTTP/1.1\r\nHost: localhost\r\n\
          Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
          X-Stream-Protocol-Version: channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), common::read_head(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    echoes(&mut s, &[b"hello through the splice", b"second frame"]).await;
    env.stop().await;
}

/// An aggregated API's WebSocket subresource that is not on the API server's long-running list
/// (KubeVirt's `virtctl console` on `virtualmachineinstances/console`): the API server's
/// aggregator splices it, so the proxy does too — 101, then bytes both ways — with a `sessions`
/// permit: past the identity's cap the next one is 429 and never reaches the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregated_apis_websocket_console_is_spliced_under_the_sessions_cap() {
    use tokio::io::AsyncWriteExt;
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let consoles = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = consoles.clone();
    let fake = common::fake_upstream(&ca, move |mut s| {
        let seen = seen.clone();
        async move {
            let Some(head) = common::read_head(&mut s).await else { return };
            // Every console request, upgrade or not (the proxy's own probes aside).
            if head.contains("/virtualmachineinstances/vm/console") {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let lower = head.to_lowercase();
            if !lower.contains("upgrade: websocket") {
                // What virt-api answers a console request that is not an upgrade.
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                .await;
            echo(&mut s).await;
        }
    })
    .await;
    let env = Env::start_against(ca, sandbox, fake, |c| {
        *c = c.replace("watches: 500, sessions: 50,", "watches: 500, sessions: 1,");
    })
    .await;
    let console =
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/vm/console";
    let open = || async {
        let mut s = env.admin_http1().await;
        s.write_all(
            format!(
                "GET {console} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let head = tokio::time::timeout(Duration::from_secs(10), common::read_head(&mut s))
            .await
            .unwrap()
            .unwrap();
        (s, head)
    };
    let (mut session, head) = open().await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echoes(&mut session, &[b"console input", b"more"]).await;
    // The session holds the admin's one `sessions` permit.
    let (_refused, head) = open().await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert_eq!(
        consoles.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the refused upgrade reached the API server"
    );
    env.stop().await;
}

/// An upgrade request that announces a body (bytes the API server would read as the first
/// frames of the hijacked session, outside the recorder) is refused with 400, and the API
/// server never sees it; `Content-Length: 0` (kubectl's SPDY POST) is fine (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_with_a_body_is_refused_before_the_upstream() {
    let env = Env::start().await;
    let exec = "/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true&stdout=true";
    let frame = b"\x82\x8a\x00\x00\x00\x00\x00rm -rf /\n";
    for (framing, body) in [
        (
            format!("Content-Length: {}\r\n", frame.len()),
            frame.to_vec(),
        ),
        (
            "Transfer-Encoding: chunked\r\n".to_owned(),
            [
                format!("{:x}\r\n", frame.len()).into_bytes(),
                frame.to_vec(),
                b"\r\n0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
    ] {
        env.sandbox.sandbox.clear_recorded();
        let mut s = env.admin_http1().await;
        let head = format!(
            "GET {exec} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n{framing}\r\n"
        );
        s.write_all(&[head.into_bytes(), body].concat())
            .await
            .unwrap();
        // The answer's head and its Status (the connection may stay open).
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            while !answer.ends_with(b"}") && !answer.ends_with(b"}\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{framing}: {answer}");
        assert!(
            answer
                .contains("an upgrade request (exec, attach, port-forward) must not carry a body"),
            "{answer}"
        );
        assert!(
            !env.sandbox
                .sandbox
                .recorded()
                .iter()
                .any(|r| r.path.contains("/exec")),
            "{framing}: the upgrade reached the API server"
        );
    }
    env.stop().await;
}

/// The API server refusing the proxy's own credentials (401) when the proxy reads the current
/// object to judge a patch is the proxy's trouble, answered 503 — not the caller's "may not
/// get" 403 — and the patch is not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_object_read_refused_as_unauthorized_is_a_503() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let patches = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = patches.clone();
    let fake = fake_api(&ca, move |head, _| {
        if head.starts_with("PATCH") {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        (401, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#.to_owned())
    })
    .await;
    let env = Env::start_against(ca, sandbox, fake, |_| {}).await;
    let req = pod_p1_patch(
        "",
        r#"{"spec":{"containers":[{"name":"c","securityContext":{"privileged":true}}]}}"#,
    );
    let resp = env.request(req, Some(&env.admin_cert), true).await;
    assert_unavailable_saying(&resp, "did not accept the proxy's credentials");
    assert_eq!(patches.load(Ordering::SeqCst), 0);
    env.stop().await;
}

/// The read of the current object before a judged patch is bounded by the client's
/// `?timeout=`, as the request itself is (kube-apiserver bounds the whole request by it, its
/// own read of the object included): with an API server that never answers that read, a patch
/// asking for 1 s gets the proxy's 503 then, not after `upstream.request_timeout` (60 s here) —
/// and the patch is not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_before_a_judged_patch_keeps_the_clients_timeout() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let patches = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = patches.clone();
    let fake = fake_api_or_silent(&ca, move |head, _| {
        if head.starts_with("GET /api/v1/namespaces/team-a/pods/p1 ") {
            // Never answered while the test runs.
            return None;
        }
        if head.starts_with("PATCH") {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        Some((200, "{}".to_owned()))
    })
    .await;
    let env = Env::start_against(ca, sandbox, fake, |c| {
        let up = "\nupstream:\n";
        assert!(c.contains(up), "the demo's upstream section moved");
        *c = c.replacen(up, "\nupstream:\n  request_timeout: 60s\n", 1);
    })
    .await;
    let req = pod_p1_patch(
        "?timeout=1s",
        r#"{"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}"#,
    );
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        env.request(req, Some(&env.admin_cert), true),
    )
    .await
    .expect("the patch waited past the client's timeout for its object's read");
    assert_unavailable_saying(&resp, "upstream timeout");
    assert_eq!(patches.load(Ordering::SeqCst), 0);
    env.stop().await;
}

/// The proxy's 503 `Status`, its message containing `needle`.
fn assert_unavailable_saying(resp: &Response<Bytes>, needle: &str) {
    let s = json(resp.body());
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{s}");
    assert!(
        s["message"].as_str().is_some_and(|m| m.contains(needle)),
        "{s}"
    );
}

/// A strategic-merge PATCH of pod `team-a/p1` (`query` appended to its path), asking for JSON.
fn pod_p1_patch(query: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method("PATCH")
        .uri(format!("/api/v1/namespaces/team-a/pods/p1{query}"))
        .header("content-type", "application/strategic-merge-patch+json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A patch of a collection names no object: the API server has no route for it and answers
/// 405 MethodNotAllowed. A tenant's patch of pods is judged on the current object first; with
/// no object to read it gets the same 405 (it was a 400 of the proxy's own), and nothing is
/// forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_of_a_collection_is_method_not_allowed_as_the_api_server_says() {
    let env = Env::start().await;
    let tenant = env.ca.client_cert("alice", &["tenant:team-a"]).unwrap();
    let path = "/api/v1/namespaces/team-a/pods";
    for (ct, body) in [
        (
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"a":"b"}}}"#,
        ),
        (
            "application/strategic-merge-patch+json",
            r#"{"metadata":{"labels":{"a":"b"}}}"#,
        ),
        (
            "application/apply-patch+yaml",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#,
        ),
    ] {
        env.sandbox.sandbox.clear_recorded();
        let req = Request::builder()
            .method("PATCH")
            .uri(format!("https://localhost{path}?fieldManager=t"))
            .header("content-type", ct)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = env.request(req, Some(&tenant), true).await;
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{ct}: {:?}",
            resp.body()
        );
        let s = json(resp.body());
        assert_eq!(s["reason"], "MethodNotAllowed", "{s}");
        assert_eq!(
            s["message"],
            "the server does not allow this method on the requested resource"
        );
        assert!(
            env.sandbox
                .sandbox
                .recorded()
                .iter()
                .all(|r| r.path != path),
            "{ct}: forwarded"
        );
    }
    env.stop().await;
}

/// With both a client certificate and a bearer token (`mode: optional` beside JWT issuers), a
/// certificate that yields no identity — here a reserved `system:` name — does not refuse the
/// request when the token is good: kube's union authenticator goes on to the token after the
/// x509 authenticator fails. A good certificate still comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_certificate_falls_through_to_a_good_bearer_token() {
    let env = Env::start().await;
    let kc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&env.files.ci_kubeconfig).unwrap()).unwrap();
    let token = kc["users"][0]["user"]["token"].as_str().unwrap().to_owned();
    let reserved = env.ca.client_cert("system:kube-proxy", &[]).unwrap();
    let with_token = |path: &str| {
        Request::get(format!("https://localhost{path}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let path = "/apis/apps/v1/namespaces/team-a/deployments";
    let resp = env.request(get(path), Some(&reserved), true).await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the certificate alone"
    );
    env.sandbox.sandbox.clear_recorded();
    let resp = env.request(with_token(path), Some(&reserved), true).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    let seen = env.sandbox.sandbox.recorded();
    let forwarded = seen.iter().find(|r| r.path == path).expect("forwarded");
    assert_eq!(forwarded.headers["impersonate-user"], "ci-bot");
    // A good certificate wins over the token, as x509 comes first in kube's union.
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(with_token(path), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = env.sandbox.sandbox.recorded();
    let forwarded = seen.iter().find(|r| r.path == path).expect("forwarded");
    assert_ne!(forwarded.headers["impersonate-user"], "ci-bot");
    env.stop().await;
}

/// A fake API server over TLS answering each HTTP/1.1 request (head, body as text) with
/// `answer`'s status and JSON body, on one kept-alive connection at a time.
async fn fake_api<F>(ca: &portcullis_sandbox::pki::Ca, answer: F) -> std::net::SocketAddr
where
    F: Fn(&str, String) -> (u16, String) + Clone + Send + Sync + 'static,
{
    fake_api_or_silent(ca, move |head, body| Some(answer(head, body))).await
}

/// [`fake_api`], where `answer` may say `None`: that request is never answered (its
/// connection is held, silent, for two minutes).
async fn fake_api_or_silent<F>(ca: &portcullis_sandbox::pki::Ca, answer: F) -> std::net::SocketAddr
where
    F: Fn(&str, String) -> Option<(u16, String)> + Clone + Send + Sync + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    common::fake_upstream(ca, move |mut s| {
        let answer = answer.clone();
        async move {
            while let Some(raw) = common::read_head(&mut s).await {
                let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                let mut body = rest.as_bytes().to_vec();
                while body.len() < len {
                    let mut buf = [0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap();
                    body.extend_from_slice(&buf[..n]);
                }
                let Some((code, out)) = answer(head, String::from_utf8_lossy(&body).into_owned())
                else {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    return;
                };
                let head = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    out.len()
                );
                if s.write_all(head.as_bytes()).await.is_err()
                    || s.write_all(out.as_bytes()).await.is_err()
                    || s.flush().await.is_err()
                {
                    return;
                }
            }
        }
    })
    .await
}

/// A write the proxy pins to the version it judged meets a concurrent write (a controller's
/// status update between the proxy's read and the patch): the API server's 409 on the
/// proxy's own pin is judged again on the new version and sent again — kubectl does not retry
/// a 409 (`rollout restart`, `set image`, `label`), and without the pin the API server would
/// have applied the patch to the newer object itself. A version the client pinned itself is
/// the client's conflict, passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_on_the_proxys_own_pin_is_judged_again_and_retried() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    };
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let reads = Arc::new(AtomicUsize::new(0));
    let patches: Arc<Mutex<Vec<String>>> = Arc::default();
    let (r, p) = (reads.clone(), patches.clone());
    let fake = fake_api(&ca, move |head, body| {
        let pod = |rv: usize| {
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p1", "namespace": "team-a", "uid": "u1", "resourceVersion": rv.to_string()},
                "spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{"name": "c", "image": "nginx:1", "securityContext": {
                        "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}})
            .to_string()
        };
        if head.starts_with("GET /api/v1/namespaces/team-a/pods/p1") {
            (200, pod(r.fetch_add(1, Ordering::SeqCst) + 1))
        } else if head.starts_with("PATCH") {
            let n = {
                let mut all = p.lock().unwrap();
                all.push(body);
                all.len()
            };
            if n == 1 || n == 3 {
                (409, r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Operation cannot be fulfilled on pods \"p1\": the object has been modified; please apply your changes to the latest version and try again","reason":"Conflict","details":{"name":"p1","kind":"pods"},"code":409}"#.to_owned())
            } else {
                (200, pod(9))
            }
        } else {
            (200, "{}".to_owned())
        }
    })
    .await;
    let env = Env::start_against(ca, sandbox, fake, |_| {}).await;
    let tenant = env.ca.client_cert("alice", &["tenant:team-a"]).unwrap();
    let patch = |body: &str| {
        Request::builder()
            .method("PATCH")
            .uri("https://localhost/api/v1/namespaces/team-a/pods/p1")
            .header("content-type", "application/strategic-merge-patch+json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    let resp = env
        .request(
            patch(r#"{"spec":{"containers":[{"name":"c","image":"nginx:2"}]}}"#),
            Some(&tenant),
            true,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    {
        let sent = patches.lock().unwrap();
        assert_eq!(sent.len(), 2, "{sent:?}");
        let rv = |i: usize| {
            serde_json::from_str::<serde_json::Value>(&sent[i]).unwrap()["metadata"]
                ["resourceVersion"]
                .clone()
        };
        assert_eq!(
            (rv(0), rv(1)),
            (serde_json::json!("1"), serde_json::json!("2")),
            "judged again on the version read again"
        );
    }
    assert_eq!(reads.load(Ordering::SeqCst), 2);

    // The client's own precondition: its conflict, once.
    let resp = env
        .request(
            patch(r#"{"metadata":{"resourceVersion":"3"},"spec":{"containers":[{"name":"c","image":"nginx:3"}]}}"#),
            Some(&tenant),
            true,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT, "{:?}", resp.body());
    assert_eq!(patches.lock().unwrap().len(), 3);
    env.stop().await;
}

/// A server-side apply judged against an existing object goes out naming its uid (its
/// configuration alone was judged at most at baseline); the object deleted meanwhile, the API
/// server's 409 ("uid mismatch … no existing object was found") is the proxy's doing: judged
/// again as the create it now is and sent again without the uid — a compliant configuration
/// is created, a partial one refused (403) before the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_whose_object_was_deleted_is_judged_again_as_a_create() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    };
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let reads = Arc::new(AtomicUsize::new(0));
    let patches: Arc<Mutex<Vec<String>>> = Arc::default();
    // The object is there until an apply naming its uid arrives: then it is gone (deleted
    // just before), and an apply without a uid creates it.
    let exists = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (r, p, e) = (reads.clone(), patches.clone(), exists.clone());
    let context =
        serde_json::json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    let pod_spec = serde_json::json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "nginx:1", "securityContext": context}]});
    let spec = pod_spec.clone();
    let fake = fake_api(&ca, move |head, body| {
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p1", "namespace": "team-a", "uid": "u1", "resourceVersion": "1"},
            "spec": spec});
        if head.starts_with("GET /api/v1/namespaces/team-a/pods/p1") {
            r.fetch_add(1, Ordering::SeqCst);
            if e.load(Ordering::SeqCst) {
                (200, pod.to_string())
            } else {
                (404, r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"p1\" not found","reason":"NotFound","details":{"name":"p1","kind":"pods"},"code":404}"#.to_owned())
            }
        } else if head.starts_with("PATCH") {
            let names_uid = serde_json::from_str::<serde_json::Value>(&body).unwrap()["metadata"]
                .get("uid")
                .is_some();
            p.lock().unwrap().push(body);
            if names_uid {
                e.store(false, Ordering::SeqCst);
                (409, r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Operation cannot be fulfilled on pods \"p1\": uid mismatch: the provided object specified uid u1, and no existing object was found","reason":"Conflict","details":{"name":"p1","kind":"pods"},"code":409}"#.to_owned())
            } else {
                (201, pod.to_string())
            }
        } else {
            (200, "{}".to_owned())
        }
    })
    .await;
    let env = Env::start_against(ca, sandbox, fake, |_| {}).await;
    let tenant = env.ca.client_cert("alice", &["tenant:team-a"]).unwrap();
    let apply = |spec: serde_json::Value| {
        let config = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p1", "namespace": "team-a"}, "spec": spec});
        Request::builder()
            .method("PATCH")
            .uri("https://localhost/api/v1/namespaces/team-a/pods/p1?fieldManager=m")
            .header("content-type", "application/apply-patch+yaml")
            .body(Full::new(Bytes::from(config.to_string())))
            .unwrap()
    };
    let resp = env.request(apply(pod_spec), Some(&tenant), true).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "{:?}", resp.body());
    {
        let sent = patches.lock().unwrap();
        assert_eq!(sent.len(), 2, "{sent:?}");
        let uid = |i: usize| {
            serde_json::from_str::<serde_json::Value>(&sent[i]).unwrap()["metadata"]["uid"].clone()
        };
        assert_eq!(
            (uid(0), uid(1)),
            (serde_json::json!("u1"), serde_json::Value::Null),
            "the uid named first, then left out for the create"
        );
    }
    assert_eq!(reads.load(Ordering::SeqCst), 2, "read, then read again");
    // A partial configuration passes against the object read (at most baseline alone), meets
    // the delete, and judged again as the create it would be is refused: nothing more sent.
    exists.store(true, Ordering::SeqCst);
    let partial = serde_json::json!({"containers": [{"name": "c", "image": "nginx:2"}]});
    let resp = env.request(apply(partial), Some(&tenant), true).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{:?}", resp.body());
    assert_eq!(reads.load(Ordering::SeqCst), 4, "read, then read again");
    let sent = patches.lock().unwrap().clone();
    assert_eq!(
        sent.len(),
        3,
        "only the apply naming the uid went out: {sent:?}"
    );
    env.stop().await;
}

/// A WebSocket upgrade of `nodes/proxy` reaches the kubelet's exec (a shell in any pod of the
/// node): a grant of `get` on `nodes/proxy` alone is refused it (403, judged as `create`), and
/// the API server never sees it; the plain GET that grant is for still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_proxy_upgrade_needs_create_not_get() {
    let env = Env::start_with(|c| {
        let grants = "  grants:\n";
        assert!(c.contains(grants), "the demo's grants moved");
        *c = c.replacen(
            grants,
            "  grants:\n    - name: node-viewers\n      subjects: [{user: nina}]\n      rules:\n        - {namespaces: [\"*\"], verbs: [get], api_groups: [\"\"], resources: [nodes/proxy]}\n",
            1,
        );
    })
    .await;
    let nina = env.ca.client_cert("nina", &[]).unwrap();
    let exec = "/api/v1/nodes/n1/proxy/exec/kube-system/etcd-n1/etcd?command=sh&stdin=1&tty=1";
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(common::websocket_get(exec), Some(&nina), false)
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{:?}", resp.body());
    let s = json(resp.body());
    assert_eq!(s["reason"], "Forbidden");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("cannot create resource \"nodes/proxy\""),
        "{s}"
    );
    assert!(
        env.sandbox
            .sandbox
            .recorded()
            .iter()
            .all(|r| !r.path.contains("/nodes/n1/proxy")),
        "the upgrade reached the API server"
    );
    // The plain GET the grant is for is forwarded (upstream RBAC, which has no binding for
    // nina in the sandbox, answers it).
    env.request(get("/api/v1/nodes/n1/proxy/metrics"), Some(&nina), true)
        .await;
    assert!(env
        .sandbox
        .sandbox
        .recorded()
        .iter()
        .any(|r| r.path == "/api/v1/nodes/n1/proxy/metrics"));
    env.stop().await;
}
