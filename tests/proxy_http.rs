//! The proxy's HTTP behaviour, driven with raw requests so every header is under the test's
//! control; the sandbox records what the upstream saw.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{get, https_request, Env};
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn status_json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_hop_by_hop_headers_never_reach_upstream() {
    let env = Env::start().await;
    let req = Request::get("https://localhost/api/v1/namespaces/default/configmaps")
        .header("connection", "keep-alive, X-Secret ,X-Remote-Group")
        .header("x-secret", "must-not-pass")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic eA==")
        .header("authorization", "Bearer client-token")
        .header("x-remote-group", "system:masters")
        .header("x-remote-user", "root")
        .header("impersonate_user", "root")
        .header("x_remote_group", "system:masters")
        .header("audit-id", "forged-id")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "7.7.7.7")
        .header("x-custom", "passes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    env.sandbox.sandbox.clear_recorded();
    let resp = env.request(req, Some(&env.admin_cert), false).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    let audit_id = resp.headers()["audit-id"].to_str().unwrap().to_string();
    assert_ne!(audit_id, "forged-id");

    let seen = env.sandbox.sandbox.recorded();
    assert_eq!(seen.len(), 1, "upstream saw {seen:?}");
    let h = &seen[0].headers;
    for gone in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "x-remote-group",
        "x-remote-user",
        "impersonate_user",
        "x_remote_group",
        "x-real-ip",
        "connection",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h:?}");
    }
    assert_eq!(h["impersonate-user"], "admin");
    let groups: Vec<_> = h.get_all("impersonate-group").iter().collect();
    assert_eq!(groups, ["demo:admins"]);
    assert_eq!(
        h["authorization"].to_str().unwrap(),
        format!("Bearer {}", env.proxy_token())
    );
    assert_eq!(
        h["audit-id"].to_str().unwrap(),
        audit_id,
        "the upstream gets our Audit-ID"
    );
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "untrusted X-Forwarded-For is replaced by the peer"
    );
    assert_eq!(h["x-custom"], "passes");
    // A client's Impersonate-* headers are a request for a grant (issue 12): a `system:` user
    // needs a grant naming it, so even the demo admin is refused — not stripped and ignored.
    let req = Request::get("https://localhost/api/v1/namespaces/default/configmaps")
        .header("impersonate-user", "system:admin")
        .header("impersonate-group", "system:masters")
        .body(Full::new(Bytes::new()))
        .unwrap();
    env.sandbox.sandbox.clear_recorded();
    let resp = env.request(req, Some(&env.admin_cert), false).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        status_json(resp.body())["message"],
        r#"users "system:admin" is forbidden: User "admin" cannot impersonate resource "users" in API group "" at the cluster scope"#
    );
    assert!(env.sandbox.sandbox.recorded().is_empty());
    // A group without a user is malformed, as for the API server: 400, and nothing forwarded.
    let req = Request::get("https://localhost/api/v1/namespaces/default/configmaps")
        .header("impersonate-group", "tenant:team-a")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = env.request(req, Some(&env.admin_cert), true).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(status_json(resp.body())["reason"], "BadRequest");
    assert!(env.sandbox.sandbox.recorded().is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_is_401_and_upstream_sees_nothing() {
    let env = Env::start_with(|c| *c = c.replace("mode: required", "mode: optional")).await;
    env.sandbox.sandbox.clear_recorded();
    let resp = env.request(get("/api/v1/namespaces"), None, true).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let s = status_json(resp.body());
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["reason"], "Unauthorized");
    assert_eq!(s["message"], "Unauthorized");
    assert_eq!(s["code"], 401);
    assert!(
        env.sandbox.sandbox.recorded().is_empty(),
        "upstream saw {:?}",
        env.sandbox.sandbox.recorded()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_system_identity_is_401_and_upstream_sees_nothing() {
    let env = Env::start().await;
    let evil = env.ca.client_cert("mallory", &["system:masters"]).unwrap();
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(get("/api/v1/namespaces"), Some(&evil), false)
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(status_json(resp.body())["reason"], "Unauthorized");
    assert!(env.sandbox.sandbox.recorded().is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_502_status() {
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let dead = common::dead_addr();
    let env = Env::start_against(ca, sandbox, dead, |_| {}).await;
    let resp = env
        .request(get("/api/v1/namespaces"), Some(&env.admin_cert), false)
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let s = status_json(resp.body());
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["apiVersion"], "v1");
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["reason"], "BadGateway");
    assert_eq!(s["code"], 502);
    assert!(s["message"]
        .as_str()
        .unwrap()
        .contains("could not be reached"));
    env.stop().await;
}

/// A fake upstream that refuses every upgrade with 403 and reports whether the proxy then
/// closed the connection (it must: CVE-2018-1002105) or kept it for reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upgrade_drops_the_upstream_connection() {
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel::<bool>(4);
    let fake_addr = common::fake_upstream(&ca, move |mut s| {
        let closed_tx = closed_tx.clone();
        async move {
            let Some(head) = common::read_head(&mut s).await else { return };
            if !head.to_lowercase().contains("upgrade: websocket") {
                // Readiness probes and the like.
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                let _ = s.flush().await;
                return;
            }
            let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"denied","reason":"Forbidden","code":403}"#;
            let resp = format!("HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.write_all(body).await;
            let _ = s.flush().await;
            // The proxy must close this connection rather than keep it for another request.
            let mut buf = [0u8; 64];
            let closed = matches!(tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)));
            let _ = closed_tx.send(closed).await;
        }
    })
    .await;
    let env = Env::start_against(ca, sandbox, fake_addr, |_| {}).await;
    let req =
        common::websocket_get("/api/v1/namespaces/default/pods/p/exec?command=echo&stdout=true");
    let resp = env.request(req, Some(&env.admin_cert), false).await;
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "the upstream's refusal reaches the client as is"
    );
    assert_eq!(status_json(resp.body())["message"], "denied");
    let closed = tokio::time::timeout(Duration::from_secs(10), closed_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        closed,
        "the proxy kept the upstream connection open after a failed upgrade"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_carries_more_than_100_concurrent_watches_on_one_connection() {
    let env = Env::start().await;
    let sender = common::h2_sender(env.proxy_addr, &env.ca, Some(&env.admin_cert)).await;
    let mut heads = Vec::new();
    for _ in 0..110 {
        let mut sender = sender.clone();
        heads.push(tokio::spawn(async move {
            sender.ready().await.unwrap();
            let resp = sender
                .send_request(get(
                    "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=30",
                ))
                .await
                .unwrap();
            (resp.status(), resp) // keep the stream open by holding the response
        }));
    }
    let mut open = Vec::new();
    for h in heads {
        let (status, resp) = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        open.push(resp);
    }
    assert_eq!(open.len(), 110);
    drop(open);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_token_file_is_picked_up() {
    let env = Env::start_with(|c| {
        *c = c.replace(
            "  credentials:\n",
            "  token_reload_interval: 100ms\n  credentials:\n",
        );
    })
    .await;
    std::fs::write(env.files.dir.join("proxy.token"), "rotated-token\n").unwrap();
    let mut seen = String::new();
    // Poll (bounded) until the reloader swaps the token in; no fixed sleep decides the outcome.
    for _ in 0..100 {
        env.sandbox.sandbox.clear_recorded();
        env.request(get("/api/v1/namespaces"), Some(&env.admin_cert), true)
            .await;
        seen = env
            .sandbox
            .sandbox
            .recorded()
            .last()
            .map(|r| r.headers["authorization"].to_str().unwrap().to_string())
            .unwrap_or_default();
        if seen == "Bearer rotated-token" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, "Bearer rotated-token");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_readiness_and_metrics() {
    let env = Env::start().await;
    env.request(get("/api/v1/namespaces"), Some(&env.admin_cert), true)
        .await;
    let admin = |path: &'static str| common::admin_get(env.admin_addr, path);
    assert_eq!(admin("/healthz").await.0, StatusCode::OK);
    assert_eq!(admin("/livez").await.0, StatusCode::OK);
    assert_eq!(
        admin("/readyz").await.0,
        StatusCode::OK,
        "a request just succeeded upstream"
    );
    let (status, metrics) = admin("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains(r#"portcullis_requests_total{verb_class="read",code="200"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_upstream_duration_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(admin("/nope").await.0, StatusCode::NOT_FOUND);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_stream_through_without_buffering() {
    let env = Env::start().await;
    // A watch: the head must arrive although the body stays open (streamed, not buffered).
    let mut sender = common::h2_sender(env.proxy_addr, &env.ca, Some(&env.admin_cert)).await;
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(get(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=0",
        )),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("audit-id"));
    let mut body = resp.into_body();
    // Create a configmap directly on the sandbox side and see the event arrive through the proxy.
    let created = https_request(
        env.sandbox.addr,
        &env.ca,
        Request::post("https://localhost/api/v1/namespaces/default/configmaps")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"streamed"}}"#,
            )))
            .unwrap(),
        None,
        false,
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("streamed") {
        let frame = tokio::time::timeout(
            Duration::from_secs(5),
            http_body_util::BodyExt::frame(&mut body),
        )
        .await
        .expect("watch event did not arrive through the proxy")
        .unwrap()
        .unwrap();
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    assert!(String::from_utf8_lossy(&got).contains(r#""type":"ADDED""#));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_are_400_and_upstream_sees_nothing() {
    let env = Env::start().await;
    for path in [
        "/api/v1/namespaces/default/pods/x%2F..%2Fy",
        "/api/v1/namespaces/default//pods",
        "/api/v1/namespaces/default/pods/%2e%2e",
        "/api/v1/namespaces/default/pods/a%00b",
    ] {
        env.sandbox.sandbox.clear_recorded();
        let resp = env.request(get(path), Some(&env.admin_cert), false).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let s = status_json(resp.body());
        assert_eq!(s["reason"], "BadRequest", "{path}");
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid request path"),
            "{path}: {s}"
        );
        assert!(
            env.sandbox.sandbox.recorded().is_empty(),
            "{path} reached the upstream"
        );
    }
    env.stop().await;
}
