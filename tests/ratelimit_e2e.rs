//! Issue 4 through the proxy: 429s clients understand, isolation between identities, stream
//! permits released on disconnect, the per-address limit before authentication, shadow mode,
//! and kubectl backing off and then succeeding. Every refusal also checks the upstream never
//! saw the request.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{jwt, Env};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

fn token(env: &Env, sub: &str, groups: &[&str]) -> String {
    let pem = std::fs::read_to_string(env.files.dir.join("jwt-signing.key")).unwrap();
    let now = jwt::now();
    jwt::Forge::from_pem(&pem, "demo-1").token(&json!({
        "iss": "https://portcullis-demo.local", "aud": "portcullis", "sub": sub, "groups": groups,
        "iat": now, "exp": now + 600
    }))
}

fn get(path: &str, token: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://localhost{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Tighten team-a's read bucket to `burst` tokens refilled at 1 per minute.
fn team_a_reads(burst: u32) -> impl FnOnce(&mut String) {
    move |c: &mut String| {
        *c = c.replace(
            "team-a: {reads: {rate: 5/s, burst: 20}",
            &format!("team-a: {{reads: {{rate: 1/m, burst: {burst}}}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_identity_gets_a_kubernetes_429_and_others_are_unaffected() {
    let env = Env::start_with(team_a_reads(3)).await;
    let alice = token(&env, "alice", &["tenant:team-a"]);
    let ci = token(&env, "ci-bot", &["ci"]);
    for i in 0..3 {
        let r = env
            .request(
                get("/api/v1/namespaces/team-a/configmaps?limit=10", &alice),
                None,
                true,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "request {i} within the burst");
        assert!(r.headers().contains_key("ratelimit"), "{:?}", r.headers());
        assert!(r.headers().contains_key("ratelimit-policy"));
    }
    env.sandbox.sandbox.clear_recorded();
    let r = env
        .request(
            get("/api/v1/namespaces/team-a/configmaps?limit=10", &alice),
            None,
            true,
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let s: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["reason"], "TooManyRequests");
    assert_eq!(s["code"], 429);
    assert!(s["message"].as_str().unwrap().contains("reads"), "{s}");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("integer Retry-After");
    assert!(retry >= 1);
    // 1 token per minute: the wait is computed from the bucket, not a constant 1.
    assert!(
        retry > 30,
        "Retry-After {retry} does not reflect a 1/m refill"
    );
    assert_eq!(s["details"]["retryAfterSeconds"].as_u64(), Some(retry));
    assert!(
        env.sandbox.sandbox.recorded().is_empty(),
        "the upstream saw a rate-limited request"
    );

    // Isolation: other identities still have their own buckets.
    let r = env
        .request(
            get("/apis/apps/v1/namespaces/team-a/deployments", &ci),
            None,
            true,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = env
        .request(
            common::get("/api/v1/namespaces/team-a/configmaps"),
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    env.stop().await;
}

/// The limiter sits where kube-apiserver's priority and fairness does, before authorization: a
/// job looping on a forbidden read spends its reads like one looping on allowed ones — 403
/// within the burst, then 429 with the bucket's wait — and its allowed reads share that budget.
/// The upstream sees none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_looping_on_forbidden_requests_is_rate_limited() {
    let env = Env::start_with(team_a_reads(2)).await;
    let alice = token(&env, "alice", &["tenant:team-a"]);
    env.sandbox.sandbox.clear_recorded();
    let forbidden = "/api/v1/namespaces/kube-system/secrets/db-password";
    for i in 0..2 {
        let r = env.request(get(forbidden, &alice), None, true).await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "request {i} within the burst"
        );
    }
    for path in [forbidden, "/api/v1/namespaces/team-a/configmaps?limit=10"] {
        let r = env.request(get(path, &alice), None, true).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        let s: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(s["reason"], "TooManyRequests", "{s}");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            retry > 30,
            "Retry-After {retry} does not reflect a 1/m refill"
        );
    }
    assert!(
        env.sandbox.sandbox.recorded().is_empty(),
        "the upstream saw a refused request"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_permits_are_released_when_the_client_disconnects() {
    let env = Env::start().await; // team-a: 3 concurrent watches
    let alice = token(&env, "alice", &["tenant:team-a"]);
    let open_watch = || async {
        let io = hyper_util::rt::TokioIo::new(
            common::tls_connect(env.proxy_addr, &env.ca, None, &[b"h2"]).await,
        );
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let resp = sender
            .send_request(get("/api/v1/namespaces/team-a/pods?watch=1", &alice))
            .await
            .unwrap();
        (resp, sender, conn)
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        let w = open_watch().await;
        assert_eq!(w.0.status(), StatusCode::OK);
        open.push(w);
    }
    env.sandbox.sandbox.clear_recorded();
    let (refused, _, _) = open_watch().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(env.sandbox.sandbox.recorded().is_empty());

    // The client goes away: drop one watch and its connection.
    let (resp, sender, conn) = open.pop().unwrap();
    drop(resp);
    drop(sender);
    conn.abort();
    let mut reopened = false;
    for _ in 0..100 {
        let (resp, s, c) = open_watch().await;
        if resp.status() == StatusCode::OK {
            reopened = true;
            open.push((resp, s, c));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reopened,
        "the permit of a disconnected watch was never released"
    );
    env.stop().await;
}

/// A watch asked over HTTP/1.1 with an `Upgrade` the API server ignores (`foo`) is answered
/// as an ordinary stream, and holds its permit for as long as it streams: three such watches
/// fill team-a's cap, the fourth (an ordinary one) is 429 and never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_with_a_bogus_upgrade_still_holds_its_permit() {
    let env = Env::start().await; // team-a: 3 concurrent watches
    let alice = token(&env, "alice", &["tenant:team-a"]);
    let mut open = Vec::new();
    for _ in 0..3 {
        let io = hyper_util::rt::TokioIo::new(
            common::tls_connect(env.proxy_addr, &env.ca, None, &[b"http/1.1"]).await,
        );
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut r = get("/api/v1/namespaces/team-a/pods?watch=1", &alice);
        r.headers_mut()
            .insert("connection", "Upgrade".parse().unwrap());
        r.headers_mut().insert("upgrade", "foo".parse().unwrap());
        let resp = sender.send_request(r).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        open.push((resp, sender, conn));
    }
    // The streams are open and read from; the permits are still held.
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.sandbox.sandbox.clear_recorded();
    let mut sender = common::h2_sender(env.proxy_addr, &env.ca, None).await;
    let refused = sender
        .send_request(get("/api/v1/namespaces/team-a/pods?watch=1", &alice))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(env.sandbox.sandbox.recorded().is_empty());
    // A request that cannot be upgraded (not long-running) goes the ordinary way with its
    // `Upgrade` dropped: over the pooled HTTP/2 connection, under the request deadline.
    let (resp, mut sender, _) = open.pop().unwrap();
    drop(resp);
    let io = hyper_util::rt::TokioIo::new(
        common::tls_connect(env.proxy_addr, &env.ca, None, &[b"http/1.1"]).await,
    );
    let (mut h1, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut r = get("/api/v1/namespaces/team-a/configmaps", &alice);
    r.headers_mut()
        .insert("connection", "Upgrade".parse().unwrap());
    r.headers_mut().insert("upgrade", "foo".parse().unwrap());
    let resp = h1.send_request(r).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = env.sandbox.sandbox.recorded();
    let list = seen
        .iter()
        .find(|r| r.path == "/api/v1/namespaces/team-a/configmaps")
        .expect("the list reached the upstream");
    assert!(list.h2, "sent over the pool");
    assert!(!list.headers.contains_key("upgrade"));
    let _ = sender.ready().await;
    drop(open);
    env.stop().await;
}

/// A log read whole asked over HTTP/1.1 with a WebSocket upgrade would be spliced with no
/// deadline and no stalled-stream reset: it holds a watch permit like a followed log. With
/// team-a's three watches open it is 429, and the upstream never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_asked_over_websocket_holds_a_watch_permit() {
    let env = Env::start().await; // team-a: 3 concurrent watches
    let alice = token(&env, "alice", &["tenant:team-a"]);
    let mut watches = common::h2_sender(env.proxy_addr, &env.ca, None).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let resp = watches
            .send_request(get("/api/v1/namespaces/team-a/pods?watch=1", &alice))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        open.push(resp);
    }
    env.sandbox.sandbox.clear_recorded();
    let io = hyper_util::rt::TokioIo::new(
        common::tls_connect(env.proxy_addr, &env.ca, None, &[b"http/1.1"]).await,
    );
    let (mut h1, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut r = common::websocket_get("/api/v1/namespaces/team-a/pods/web/log");
    r.headers_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let refused = h1.send_request(r).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        env.sandbox.sandbox.recorded().is_empty(),
        "{:?}",
        env.sandbox.sandbox.recorded()
    );
    drop(open);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_credentials_are_limited_per_address_before_authentication() {
    let env = Env::start_with(|c| {
        *c = c.replace(
            "unauthenticated: {rate: 5/s, burst: 30}",
            "unauthenticated: {rate: 1/m, burst: 3}",
        )
    })
    .await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(
            env.request(get("/api/v1/namespaces", "not-a-token"), None, true)
                .await
                .status(),
        );
    }
    assert_eq!(&codes[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(&codes[3..], [StatusCode::TOO_MANY_REQUESTS; 2], "{codes:?}");
    // Even a valid token from that address waits now: the check precedes authentication.
    let alice = token(&env, "alice", &["tenant:team-a"]);
    let r = env
        .request(get("/api/v1/namespaces/team-a/pods", &alice), None, true)
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(env.sandbox.sandbox.recorded().is_empty());
    env.stop().await;
}

/// 40 `GET /api` on `sender` at once (with `bearer` as the credential, if given): the statuses.
async fn at_once(
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    bearer: Option<&str>,
) -> Vec<StatusCode> {
    let sends = (0..40).map(|_| {
        let mut sender = sender.clone();
        let mut req = Request::get("https://localhost/api")
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Some(t) = bearer {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        async move { sender.send_request(req).await.unwrap().status() }
    });
    futures_util::future::join_all(sends).await
}

/// Streams that arrive together on one HTTP/2 connection are all handed to the proxy's
/// service before any of them runs. Good credentials sent that way are all served; a flood of
/// bad ones reaches authentication only until the burst is spent (one more per worker
/// thread at most), the rest are refused with 429 before any credential check — not every
/// stream of the flood, as when the address was only checked as the streams were handed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_sent_at_once_is_stopped_at_the_burst_and_good_requests_at_once_pass() {
    let env = Env::start_with(|c| {
        *c = c.replace(
            "unauthenticated: {rate: 5/s, burst: 30}",
            "unauthenticated: {rate: 1/m, burst: 3}",
        )
    })
    .await;
    let good = at_once(
        common::h2_sender(env.proxy_addr, &env.ca, Some(&env.admin_cert)).await,
        None,
    )
    .await;
    assert!(good.iter().all(|&c| c == StatusCode::OK), "{good:?}");
    env.sandbox.sandbox.clear_recorded();
    let bad = at_once(
        common::h2_sender(env.proxy_addr, &env.ca, None).await,
        Some("not-a-token"),
    )
    .await;
    let checked = bad
        .iter()
        .filter(|&&c| c == StatusCode::UNAUTHORIZED)
        .count();
    let refused = bad
        .iter()
        .filter(|&&c| c == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked + refused, 40, "{bad:?}");
    assert!(
        (3..=5).contains(&checked),
        "{checked} reached authentication: {bad:?}"
    );
    let seen = env.sandbox.sandbox.recorded();
    assert!(seen.is_empty(), "the upstream saw the flood: {seen:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_admits_and_records() {
    let env = Env::start_with(|c| {
        team_a_reads(2)(c);
        *c = c.replace("  mode: enforce\n  default:", "  mode: shadow\n  default:");
    })
    .await;
    let alice = token(&env, "alice", &["tenant:team-a"]);
    for _ in 0..5 {
        let r = env
            .request(
                get("/api/v1/namespaces/team-a/pods?limit=5", &alice),
                None,
                true,
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "shadow mode must let requests through"
        );
    }
    assert_eq!(env.sandbox.sandbox.recorded().len(), 5);
    let metrics = common::admin_get(env.admin_addr, "/metrics").await.1;
    let shadowed = metrics
        .lines()
        .find(|l| {
            l.starts_with("portcullis_ratelimit_decisions_total")
                && l.contains("outcome=\"shadow_rejected\"")
                && l.contains("reads")
        })
        .unwrap_or_else(|| panic!("no shadow_rejected series:\n{metrics}"));
    let n: f64 = shadowed.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n, 3.0, "{shadowed}");
    // The audit events tell which requests enforcing would have refused.
    let log = std::fs::read_to_string(env.files.dir.join("audit.log")).unwrap();
    let marks: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["requestURI"] == "/api/v1/namespaces/team-a/pods?limit=5"
        })
        .map(|e| e["annotations"]["portcullis.io/ratelimit"].to_string())
        .collect();
    assert_eq!(marks.len(), 5, "{marks:?}");
    assert_eq!(
        marks.iter().filter(|m| *m == "\"shadow-rejected\"").count(),
        3,
        "{marks:?}"
    );
    assert_eq!(
        marks.iter().filter(|m| *m == "\"allowed\"").count(),
        2,
        "{marks:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_backs_off_on_429_and_then_succeeds() {
    common::require_kubectl();
    // 4 reads of burst, refilled at 1/s: a handful of kubectl calls must wait for tokens.
    let env = Env::start_with(|c| {
        *c = c.replace(
            "team-a: {reads: {rate: 5/s, burst: 20}",
            "team-a: {reads: {rate: 1/s, burst: 4}",
        )
    })
    .await;
    let kc = env.files.team_a_kubeconfig.clone();
    for i in 0..4 {
        let out =
            common::kubectl(&kc, env.dir.path(), &["-n", "team-a", "get", "configmaps"]).await;
        assert!(out.status.success(), "call {i}: {}", common::stderr(&out));
    }
    let metrics = common::admin_get(env.admin_addr, "/metrics").await.1;
    let rejected: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("portcullis_ratelimit_decisions_total")
                && l.contains("outcome=\"rejected\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        rejected >= 1.0,
        "kubectl never hit the limit, so this proves nothing:\n{metrics}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_redis_bucket() {
    use common::redis;
    let Some(bin) = redis::required() else { return };
    let port = common::free_port().port();
    let mut server = redis::Redis::start(bin, port).await;
    let edit = move |c: &mut String| {
        team_a_reads(4)(c);
        *c = c.replace(
            "  max_in_flight: 400\n",
            &format!("  max_in_flight: 400\n  backend: redis\n  redis: {{url: \"redis://127.0.0.1:{port}\", replicas: 2, on_backend_error: deny, key_prefix: \"e2e:\"}}\n"),
        );
    };
    // Two proxies (two replicas), each with its own sandbox and issuer, one Redis.
    let a = Env::start_with(edit).await;
    let b = Env::start_with(edit).await;
    let (ta, tb) = (
        token(&a, "alice", &["tenant:team-a"]),
        token(&b, "alice", &["tenant:team-a"]),
    );
    let path = "/api/v1/namespaces/team-a/configmaps?limit=10";
    for (env, t) in [(&a, &ta), (&b, &tb), (&a, &ta), (&b, &tb)] {
        assert_eq!(
            env.request(get(path, t), None, true).await.status(),
            StatusCode::OK
        );
    }
    // The burst of 4 is global: the 5th read is refused whichever replica gets it.
    for (env, t) in [(&a, &ta), (&b, &tb)] {
        env.sandbox.sandbox.clear_recorded();
        let r = env.request(get(path, t), None, true).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(env.sandbox.sandbox.recorded().is_empty());
    }
    // Redis gone, `on_backend_error: deny`: fail closed with a 503 the client retries.
    server.kill().await;
    let bob = token(&a, "bob", &["tenant:team-a"]);
    let r = a.request(get(path, &bob), None, true).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    a.stop().await;
    b.stop().await;
}

/// A decision taken without the Redis backend is written to audit with the mode that took it
/// (DESIGN: a degraded mode is counted in metrics and written to audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_without_redis_is_written_to_audit() {
    let env = Env::start_with(|c| {
        *c = c.replace(
            "  max_in_flight: 400\n",
            "  max_in_flight: 400\n  backend: redis\n  redis: {url: \"redis://127.0.0.1:1\", replicas: 2, on_backend_error: local, timeout: 200ms}\n",
        );
    })
    .await;
    let alice = token(&env, "alice", &["tenant:team-a"]);
    let path = "/api/v1/namespaces/team-a/configmaps?limit=10";
    let r = env.request(get(path, &alice), None, true).await;
    assert_eq!(r.status(), StatusCode::OK);
    let log = std::fs::read_to_string(env.files.dir.join("audit.log")).unwrap();
    let event = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["stage"] == "ResponseComplete" && e["requestURI"] == path)
        .unwrap_or_else(|| panic!("no event:\n{log}"));
    assert_eq!(
        event["annotations"]["portcullis.io/ratelimit-backend"],
        "unavailable; on_backend_error: local",
        "{event}"
    );
    assert_eq!(event["annotations"]["portcullis.io/ratelimit"], "allowed");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_proxy_sheds_load_with_503() {
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<String>(8);
    // An upstream that takes requests and never answers: each one holds an in-flight slot.
    let silent = common::fake_upstream(&ca, move |mut s| {
        let seen_tx = seen_tx.clone();
        async move {
            if let Some(head) = common::read_head(&mut s).await {
                let _ = seen_tx
                    .send(head.lines().next().unwrap_or_default().to_string())
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
    .await;
    let env = Env::start_against(ca, sandbox, silent, |c| {
        *c = c.replace("  max_in_flight: 400\n", "  max_in_flight: 1\n");
        *c = c.replace("upstream:\n", "upstream:\n  request_timeout: 20s\n");
    })
    .await;
    let mut sender = common::h2_sender(env.proxy_addr, &env.ca, Some(&env.admin_cert)).await;
    let pending = tokio::spawn({
        let mut sender = sender.clone();
        async move {
            sender
                .send_request(common::get("/api/v1/namespaces/default/configmaps"))
                .await
        }
    });
    // Wait (bounded) until the upstream holds it (the readiness probe may reach the fake too).
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
            .await
            .unwrap()
            .unwrap();
        if line.contains("/configmaps") {
            break;
        }
    }
    let r = sender
        .send_request(common::get("/api/v1/namespaces/default/secrets"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let s: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(s["reason"], "ServiceUnavailable");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), seen_rx.recv())
            .await
            .is_err(),
        "the shed request reached the upstream"
    );
    pending.abort();
    env.stop().await;
}
