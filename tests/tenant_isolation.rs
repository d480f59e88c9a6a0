//! Issue 17: one tenant that does not read its responses, or that holds many watches, must not
//! stall anybody else; the upstream connection cap answers 503; the escalation subresources are
//! closed to tenants unless a rule names them.
//!
//! The attackers are written for the purpose: the `h2` crate's client with an initial stream
//! window of 0 (the proxy can send headers but no byte of body), and raw HTTP/1.1 requests
//! whose responses are never read. The victims are ordinary hyper clients and kubectl.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{get, https_request, poll, tls_connect, Env};
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_sandbox::pki::Issued;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const NS: &str = "/api/v1/namespaces/team-a";

/// An h2 connection (hyper) to the proxy with `cert`, for several requests.
async fn h2_conn(env: &Env, cert: &Issued) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    common::h2_sender(env.proxy_addr, &env.ca, Some(cert)).await
}

/// `n` pod watches at once on `conn`, their heads received (each open while its response is
/// kept).
async fn open_watches(
    conn: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    n: usize,
) -> Vec<http::Response<hyper::body::Incoming>> {
    let mut watches = Vec::new();
    for _ in 0..n {
        conn.ready().await.unwrap();
        let resp = conn
            .send_request(get(&format!("{NS}/pods?watch=1")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        watches.push(resp);
    }
    watches
}

fn post(path: &str, body: &Value) -> Request<Full<Bytes>> {
    Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// About `mb` megabytes of the tenant's own configmaps, written by the admin.
async fn seed_configmaps(env: &Env, mb: usize) {
    seed_configmap_kb(env, mb * 1000).await;
}

/// The admin's `GET /version` on a fresh connection, bounded so a stall fails the test
/// instead of hanging it.
async fn admin_version(env: &Env) -> String {
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        env.request(get("/version"), Some(&env.admin_cert), true),
    )
    .await
    .expect("the admin's GET /version got no complete answer while the attack ran");
    assert_eq!(resp.status(), StatusCode::OK);
    String::from_utf8_lossy(resp.body()).into_owned()
}

fn count_recorded(env: &Env, path: &str) -> usize {
    env.sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.path == path)
        .count()
}

async fn metric(env: &Env, name: &str) -> f64 {
    let (_, text) = common::admin_get(env.admin_addr, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A client that grants no HTTP/2 window cannot keep places under the global in-flight cap:
/// its unread lists hold them while the proxy reads them from the API server, and give them
/// back once read — a list under the pump's per-stream buffer (read whole, no stall) as soon as
/// it is read, a larger one at the stalled-stream reset — not when (never) the client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_gives_back_its_in_flight_places() {
    for (seed_kb, stall) in [(300usize, "120s"), (2000, "5s")] {
        let env = Env::start_with(|c| {
            assert!(
                c.contains("  max_in_flight: 400\n"),
                "the demo config's cap"
            );
            *c = c.replace("  max_in_flight: 400\n", "  max_in_flight: 2\n");
            *c = c.replace(
                "upstream:\n",
                &format!("upstream:\n  stalled_stream_timeout: {stall}\n"),
            );
        })
        .await;
        let held = two_unread_lists(&env, seed_kb).await;
        // Another caller is served again within the bound (well before a 120 s stall reset
        // for the small lists).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut statuses = Vec::new();
        loop {
            let r = env
                .request(get(&format!("{NS}/pods")), Some(&env.admin_cert), true)
                .await;
            statuses.push(r.status().as_u16());
            if r.status() == StatusCode::OK || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            statuses.last(),
            Some(&200),
            "{seed_kb} KB lists kept the in-flight places: {statuses:?}"
        );
        if stall == "5s" {
            // Lists larger than the pump's buffer hold their places until the reset: the cap
            // was full, so the test did exercise it.
            assert!(statuses.contains(&503), "{statuses:?}");
        }
        drop(held);
        env.stop().await;
    }
}

/// One identity cannot hold more upstream streams than its `in_flight` cap: two unread lists
/// larger than the pump's buffer hold mallory's two places (until the stalled-stream reset,
/// 120 s here), her third request is answered 429 and never reaches the API server, another
/// caller is served, and her places come back when she goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_cannot_hold_more_upstream_requests_than_its_in_flight_cap() {
    let env = Env::start_with(|c| {
        let default = "  default: {";
        assert!(c.contains(default), "the demo config's default quota");
        *c = c.replacen(
            default,
            "  users: {mallory: {in_flight: 2}}\n  default: {",
            1,
        );
        *c = c.replace("upstream:\n", "upstream:\n  stalled_stream_timeout: 120s\n");
    })
    .await;
    let held = two_unread_lists(&env, 2000).await;

    let mallory = env.ca.client_cert("mallory", &["tenant:team-a"]).unwrap();
    let pod = format!("{NS}/pods/nothing-here");
    let refused = env.request(get(&pod), Some(&mallory), true).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    let status: Value = serde_json::from_slice(refused.body()).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(
        status["message"],
        "too many requests in flight for user \"mallory\" (cap 2; user quota)"
    );
    assert_eq!(count_recorded(&env, &pod), 0, "the API server never saw it");
    assert!(admin_version(&env).await.contains("gitVersion"));
    assert_eq!(
        metric(
            &env,
            "portcullis_ratelimit_stream_permits{kind=\"identity_in_flight\"}"
        )
        .await,
        2.0
    );

    // Gone (her streams reset): her places are given back.
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut statuses = Vec::new();
    loop {
        let r = env.request(get(&pod), Some(&mallory), true).await;
        statuses.push(r.status().as_u16());
        if r.status() != StatusCode::TOO_MANY_REQUESTS || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(statuses.last(), Some(&404), "{statuses:?}");
    assert_eq!(count_recorded(&env, &pod), 1);
    env.stop().await;
}

/// About `seed_kb` KB of configmaps, then two lists of them by `mallory` on a connection that
/// grants no window, once both have reached the API server (their answers left unread).
async fn two_unread_lists(env: &Env, seed_kb: usize) -> Vec<h2::client::ResponseFuture> {
    seed_configmap_kb(env, seed_kb).await;
    // The seeding POSTs share the lists' path: cleared, so the wait below is for the lists
    // (without it the check could run before they held their places — a CI run did).
    env.sandbox.sandbox.clear_recorded();
    let held = send_lists(zero_window_tenant(env).await, 2).await;
    let lists = format!("{NS}/configmaps");
    poll(Duration::from_secs(20), || {
        (count_recorded(env, &lists) >= 2).then_some(())
    })
    .await
    .expect("the two lists reached the API server");
    held
}

/// An HTTP/2 connection of tenant `mallory` that grants no stream window: nothing of an
/// answer can be sent to it.
async fn zero_window_tenant(env: &Env) -> h2::client::SendRequest<Bytes> {
    let tenant = env.ca.client_cert("mallory", &["tenant:team-a"]).unwrap();
    let tls = tls_connect(env.proxy_addr, &env.ca, Some(&tenant), &[b"h2"]).await;
    let (h2c, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    tokio::spawn(conn);
    h2c
}

/// `n` lists of the tenant's configmaps on `h2c`, whose answers are left unread.
async fn send_lists(
    mut h2c: h2::client::SendRequest<Bytes>,
    n: usize,
) -> Vec<h2::client::ResponseFuture> {
    let mut held = Vec::new();
    for _ in 0..n {
        let req = Request::get(format!("https://localhost{NS}/configmaps"))
            .body(())
            .unwrap();
        h2c = h2c.ready().await.unwrap();
        let (resp, _) = h2c.send_request(req, true).unwrap();
        held.push(resp);
    }
    held
}

/// One configmap of about `kb` kilobytes per 250 KB, written by the admin.
async fn seed_configmap_kb(env: &Env, kb: usize) {
    let mut admin = h2_conn(env, &env.admin_cert).await;
    for i in 0..kb.div_ceil(250) {
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("big-{i}")},
            "data": {"blob": "x".repeat(250_000)},
        });
        let resp = admin
            .send_request(post(&format!("{NS}/configmaps"), &cm))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "seeding configmap {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_reads_nothing_does_not_stall_the_admin() {
    let env = Env::start_with(|c| {
        *c = c.replace("upstream:\n", "upstream:\n  stalled_stream_timeout: 8s\n");
    })
    .await;
    seed_configmaps(&env, 2).await;
    env.sandbox.sandbox.clear_recorded();
    let tenant = env.ca.client_cert("mallory", &["tenant:team-a"]).unwrap();

    // HTTP/2 with a stream window of 0: four ~2 MB lists whose bodies can never be sent.
    let tls = tls_connect(env.proxy_addr, &env.ca, Some(&tenant), &[b"h2"]).await;
    let (h2c, mut conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    let (open_window, opened) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = &mut conn => return,
            _ = opened => {}
        }
        // The attacker starts reading at last.
        conn.set_initial_window_size(1 << 20).unwrap();
        let _ = conn.await;
    });
    let held = tokio::time::timeout(Duration::from_secs(30), send_lists(h2c, 4))
        .await
        .expect("the four lists could not be sent");
    // HTTP/1.1: three more lists whose responses are never read.
    let mut raw = Vec::new();
    for _ in 0..3 {
        let mut s = tls_connect(env.proxy_addr, &env.ca, Some(&tenant), &[b"http/1.1"]).await;
        s.write_all(format!("GET {NS}/configmaps HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        raw.push(s);
    }
    let lists = format!("{NS}/configmaps");
    poll(Duration::from_secs(20), || {
        (count_recorded(&env, &lists) >= 7).then_some(())
    })
    .await
    .expect("the seven lists reached the API server");
    // Give the upstream time to push what it can into the proxy.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let version = admin_version(&env).await;
    assert!(version.contains("gitVersion"), "{version}");
    // The tenant itself is not frozen either: a fresh request of its own is answered.
    let own = tokio::time::timeout(
        Duration::from_secs(30),
        env.request(get(&format!("{NS}/pods")), Some(&tenant), true),
    )
    .await
    .expect("the tenant's next request got no answer");
    assert_eq!(own.status(), StatusCode::OK);
    // The HTTP/1.1 readers go away now, long before the stalled-stream timeout, so only the
    // four HTTP/2 lists can be counted below (a client that went away is not a stall). Were
    // they kept, a loaded machine could count them first, leave the list read below not yet
    // reset, and the other unreset lists then took the connection's whole window from it.
    drop(raw);

    // After the stalled-stream timeout the unread responses are reset and counted.
    let mut counted = 0.0;
    for _ in 0..100 {
        counted = tokio::time::timeout(
            Duration::from_secs(30),
            metric(&env, "portcullis_upstream_stalled_streams_total"),
        )
        .await
        .expect("the metrics endpoint did not answer");
        if counted >= 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(counted >= 4.0, "stalled streams counted: {counted}");
    // On a machine so loaded that the admin's and the tenant's requests took longer than the
    // stall timeout, HTTP/1.1 resets may be among those counted, and an HTTP/2 list's timer
    // may not have fired yet: one more stall period (and a margin) lets every one fire.
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Reset streams: reading them now ends in an error, not in a complete list. All four are
    // read at once, so no unread one holds the connection's window from the others.
    open_window.send(()).unwrap();
    let reads = held.into_iter().map(|head| async move {
        let Ok(head) = head.await else {
            return ("reset", 0);
        };
        let mut body = head.into_body();
        let mut got = 0usize;
        loop {
            match body.data().await {
                Some(Ok(chunk)) => {
                    got += chunk.len();
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Some(Err(_)) => return ("reset", got),
                None => return ("complete", got),
            }
        }
    });
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(reads),
    )
    .await
    .expect("a held list neither ended nor broke");
    for (how, got) in ended {
        assert_eq!(
            how, "reset",
            "a stalled list must not look complete ({got} bytes)"
        );
    }
    tokio::time::timeout(Duration::from_secs(30), env.stop())
        .await
        .expect("the proxy did not stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_watches_do_not_queue_a_short_request() {
    let env = Env::start().await;
    let path = format!("{NS}/configmaps");
    let mut conns = Vec::new();
    let mut watches = Vec::new();
    // 100 tenant users, 3 watches each (their cap): 300 upstream streams, three times what the
    // sandbox (like kube-apiserver) allows on one connection.
    for u in 0..100 {
        let cert = env
            .ca
            .client_cert(&format!("watcher-{u}"), &["tenant:team-a"])
            .unwrap();
        let mut c = h2_conn(&env, &cert).await;
        for _ in 0..3 {
            let req = get(&format!("{path}?watch=1"));
            let c2 = &mut c;
            c2.ready().await.unwrap();
            watches.push(tokio::spawn(c2.send_request(req)));
        }
        conns.push(c);
    }
    // Kept open until the end: dropping a response would end its watch.
    let mut open = Vec::new();
    for w in watches.iter_mut() {
        let resp = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("a watch got its head")
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        open.push(resp);
    }
    assert_eq!(open.len(), 300);
    let watching = env
        .sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.path == path && r.query.as_deref() == Some("watch=1"))
        .count();
    assert_eq!(watching, 300, "every watch is open on the API server");

    let version = admin_version(&env).await;
    assert!(version.contains("gitVersion"), "{version}");
    drop((open, conns));
    env.stop().await;
}

/// The proxy's source addresses (one per upstream connection) of the requests the sandbox
/// saw for `path`.
fn upstream_peers(env: &Env, path: &str) -> std::collections::BTreeSet<std::net::SocketAddr> {
    env.sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.peer)
        .collect()
}

/// With two streams per upstream connection, three watches open a second connection. When
/// they end, that connection is kept for `upstream.idle_connection_timeout`, so the next
/// burst within it opens none (before, it was closed at the next request, and a steady load
/// above one connection's streams reconnected every few hundred requests); idle longer, it is
/// closed and the next burst opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_upstream_connection_stays_open_for_the_idle_timeout() {
    for (idle_timeout, connections) in [("90s", 2), ("1s", 3)] {
        let env = Env::start_with(|c| {
            *c = c.replace(
                "upstream:\n",
                &format!(
                    "upstream:\n  max_connections_per_endpoint: 4\n  streams_per_connection: 2\n  idle_connection_timeout: {idle_timeout}\n"
                ),
            );
        })
        .await;
        let pods = format!("{NS}/pods");
        let mut admin = h2_conn(&env, &env.admin_cert).await;
        let watches = open_watches(&mut admin, 3).await;
        assert_eq!(
            upstream_peers(&env, &pods).len(),
            2,
            "3 watches, 2 per connection"
        );
        drop(watches);
        // Every stream has ended and both connections are idle; the request after that is
        // the one that closes an idle connection past the first.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let resp = env
            .request(
                get(&format!("{NS}/configmaps")),
                Some(&env.admin_cert),
                true,
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let watches = open_watches(&mut admin, 3).await;
        assert_eq!(
            upstream_peers(&env, &pods).len(),
            connections,
            "idle_connection_timeout {idle_timeout}: upstream connections used by two bursts"
        );
        drop(watches);
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_connection_cap_answers_503_without_reaching_the_api_server() {
    let env = Env::start_with(|c| {
        *c = c.replace(
            "upstream:\n",
            "upstream:\n  max_connections_per_endpoint: 1\n  streams_per_connection: 2\n",
        );
    })
    .await;
    let mut admin = h2_conn(&env, &env.admin_cert).await;
    let mut watches = open_watches(&mut admin, 2).await;
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            get(&format!("{NS}/configmaps")),
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let status: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("maximum number of streams"),
        "{status}"
    );
    assert_eq!(
        count_recorded(&env, &format!("{NS}/configmaps")),
        0,
        "the refused request never reached the API server"
    );
    // A stream slot freed: the same request goes through.
    drop(watches.pop());
    let mut ok = None;
    for _ in 0..50 {
        let resp = env
            .request(
                get(&format!("{NS}/configmaps")),
                Some(&env.admin_cert),
                true,
            )
            .await;
        if resp.status() == StatusCode::OK {
            ok = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok.is_some(), "a freed slot lets the next request through");
    drop(watches);
    env.stop().await;
}

/// POST `path` as `cert` with `body`; the status and the Status/object JSON.
async fn tenant_post(env: &Env, cert: &Issued, path: &str, body: &Value) -> (StatusCode, Value) {
    let resp = https_request(env.proxy_addr, &env.ca, post(path, body), Some(cert), false).await;
    let v = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
    (resp.status(), v)
}

fn token_request() -> Value {
    serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["https://kubernetes.default.svc"]}})
}

fn binding() -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}})
}

/// A StatefulSet's controller builds pods from the controller revision its status names: a
/// tenant's wildcards may read revisions but not write one (403, the API server never sees it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_write_controller_revisions_by_default() {
    let env = Env::start().await;
    let tenant = env.ca.client_cert("mallory", &["tenant:team-a"]).unwrap();
    let revisions = "/apis/apps/v1/namespaces/team-a/controllerrevisions";
    let revision = serde_json::json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "db-5d8f"}, "revision": 1,
        "data": {"spec": {"template": {"$patch": "replace", "spec": {"hostPID": true,
            "containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]}}}}});
    let (code, status) = tenant_post(&env, &tenant, revisions, &revision).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert!(
        env.sandbox
            .sandbox
            .recorded()
            .iter()
            .all(|r| r.path != revisions),
        "the API server saw the write"
    );
    // Reading them is not the proxy's to refuse (the sandbox serves no revisions: its 404).
    let read = env.request(get(revisions), Some(&tenant), true).await;
    assert_ne!(read.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        env.sandbox
            .sandbox
            .recorded()
            .iter()
            .filter(|r| r.path == revisions)
            .count(),
        1
    );
    env.stop().await;
}

/// A Service without a selector sends its traffic wherever its Endpoints / EndpointSlices say
/// (CVE-2021-25740): kubectl as a tenant with the default rules reads them but cannot write
/// them (Forbidden, the API server never sees the write); the admin's grant can, so the kinds
/// are served and the refusal is the proxy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_write_endpoints_or_endpoint_slices_by_default() {
    common::require_kubectl();
    let env = Env::start().await;
    let manifest = env.dir.path().join("endpoints.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: db, namespace: team-a}\n\
         subsets: [{addresses: [{ip: 10.96.0.1}], ports: [{port: 443}]}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: db-x7k2p, namespace: team-a, labels: {kubernetes.io/service-name: db}}\n\
         addressType: IPv4\nendpoints: [{addresses: [10.96.0.1]}]\nports: [{port: 443}]\n",
    )
    .unwrap();
    let file = manifest.to_str().unwrap();
    let tenant = |args: &'static [&'static str]| {
        common::kubectl(&env.files.team_a_kubeconfig, env.dir.path(), args)
    };
    let out = common::kubectl(
        &env.files.team_a_kubeconfig,
        env.dir.path(),
        &["create", "-f", file],
    )
    .await;
    assert!(!out.status.success());
    let err = common::stderr(&out);
    for resource in ["\"endpoints\"", "\"endpointslices\""] {
        assert!(
            err.contains(&format!("cannot create resource {resource}")),
            "{err}"
        );
    }
    let wrote = |env: &Env| {
        env.sandbox
            .sandbox
            .recorded()
            .iter()
            .filter(|r| r.method != http::Method::GET && r.path.contains("endpoint"))
            .count()
    };
    assert_eq!(wrote(&env), 0, "the API server saw a tenant's write");
    // The admin writes them; the tenant reads them and still cannot delete them.
    let out = env.kubectl(&["create", "-f", file]).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(wrote(&env), 2);
    // (The sandbox's RBAC gives team-a the core, apps and batch groups: the Endpoints.)
    let out = tenant(&["get", "endpoints", "-n", "team-a", "-o", "name"]).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(listed.trim(), "endpoints/db");
    let out = tenant(&["delete", "endpoints", "db", "-n", "team-a"]).await;
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("forbidden"),
        "{}",
        common::stderr(&out)
    );
    assert_eq!(wrote(&env), 2, "the API server saw the tenant's delete");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_and_bindings_are_refused_to_a_tenant_by_default() {
    common::require_kubectl();
    let env = Env::start().await;
    // kubectl create token: a TokenRequest, as the demo tenant (JWT user alice).
    let out = common::kubectl(
        &env.files.team_a_kubeconfig,
        env.dir.path(),
        &["create", "token", "default", "-n", "team-a"],
    )
    .await;
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains("forbidden") && err.contains("serviceaccounts/token"),
        "{err}"
    );
    let tenant = env.ca.client_cert("mallory", &["tenant:team-a"]).unwrap();
    let (code, status) =
        tenant_post(&env, &tenant, &format!("{NS}/pods/p/binding"), &binding()).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(status["reason"], "Forbidden");
    let (code, _) = tenant_post(
        &env,
        &tenant,
        &format!("{NS}/serviceaccounts/default/token"),
        &token_request(),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let seen: Vec<String> = env
        .sandbox
        .sandbox
        .recorded()
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| p.ends_with("/token") || p.ends_with("/binding"))
        .collect();
    assert!(seen.is_empty(), "the API server saw {seen:?}");
    // The rest of the namespace stays the tenant's.
    let (code, _) = tenant_post(
        &env,
        &tenant,
        &format!("{NS}/configmaps"),
        &serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mine"}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_rule_naming_them_lets_token_requests_and_bindings_through() {
    let env = Env::start_with(|c| {
        *c = c.replace(
            "      subjects: [{group: \"tenant:team-a\"}]\n",
            "      subjects: [{group: \"tenant:team-a\"}]\n      rules:\n        - {verbs: [\"*\"], api_groups: [\"*\"], resources: [\"*\"]}\n        - {verbs: [create], api_groups: [\"\"], resources: [serviceaccounts/token, pods/binding]}\n",
        );
    })
    .await;
    let tenant = env.ca.client_cert("mallory", &["tenant:team-a"]).unwrap();
    for (path, body) in [
        (
            format!("{NS}/serviceaccounts/default/token"),
            token_request(),
        ),
        (format!("{NS}/pods/p/binding"), binding()),
    ] {
        let (code, status) = tenant_post(&env, &tenant, &path, &body).await;
        // Whatever the API server answers (it judges the request on its own), the proxy
        // forwarded it.
        assert_eq!(
            count_recorded(&env, &path),
            1,
            "{path} reached the API server ({code}: {status})"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn the_new_upstream_keys_are_validated_with_their_key_path() {
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let files = portcullis_sandbox::demo::write(
        dir.path(),
        &ca,
        &sandbox.url(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(&files.config).unwrap();
    let load = |extra: &str| {
        let t = text.replace("upstream:\n", &format!("upstream:\n{extra}"));
        portcullis::config::load_str(&t, dir.path(), &|_| None)
    };
    let cfg = load("").unwrap();
    assert_eq!(cfg.upstream.streams_per_connection, 100);
    assert_eq!(cfg.upstream.max_connections_per_endpoint, 16);
    assert_eq!(cfg.upstream.stalled_stream_timeout, Duration::from_secs(60));
    assert_eq!(
        cfg.upstream.idle_connection_timeout,
        Duration::from_secs(90)
    );
    let cfg = load("  streams_per_connection: 50\n  max_connections_per_endpoint: 4\n  stalled_stream_timeout: 5s\n").unwrap();
    assert_eq!(
        (
            cfg.upstream.streams_per_connection,
            cfg.upstream.max_connections_per_endpoint,
            cfg.upstream.stalled_stream_timeout
        ),
        (50, 4, Duration::from_secs(5))
    );
    for (extra, path) in [
        (
            "  streams_per_connection: 0\n",
            "upstream.streams_per_connection",
        ),
        (
            "  max_connections_per_endpoint: 0\n",
            "upstream.max_connections_per_endpoint",
        ),
        (
            "  stalled_stream_timeout: 0s\n",
            "upstream.stalled_stream_timeout",
        ),
        (
            "  idle_connection_timeout: 0s\n",
            "upstream.idle_connection_timeout",
        ),
        // Its timer would panic in the token re-read task, which then dies quietly.
        (
            "  token_reload_interval: 0s\n",
            "upstream.token_reload_interval",
        ),
    ] {
        let problems = load(extra).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.path == path && p.message.contains("more than 0")),
            "{extra}: {problems:?}"
        );
    }
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_may_read_status_but_not_write_it_by_default() {
    let env = Env::start().await;
    let tenant = env.ca.client_cert("mallory", &["tenant:team-a"]).unwrap();
    let path = format!("{NS}/services/web/status");
    let patch = Request::patch(format!("https://localhost{path}"))
        .header("content-type", "application/merge-patch+json")
        .body(Full::new(Bytes::from_static(
            br#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.1"}]}}}"#,
        )))
        .unwrap();
    let resp = env.request(patch, Some(&tenant), true).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let status: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(status["reason"], "Forbidden");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("cannot patch resource \"services/status\""),
        "{status}"
    );
    assert_eq!(
        count_recorded(&env, &path),
        0,
        "the API server never saw the write"
    );
    // Reading status stays the tenant's: forwarded (the sandbox answers for itself).
    let resp = env.request(get(&path), Some(&tenant), true).await;
    assert_ne!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(count_recorded(&env, &path), 1);
    env.stop().await;
}

/// Issue 17: the stalled-stream reset is audited when it happens — the request's
/// `ResponseComplete`, annotated `portcullis.io/response-aborted: stalled`, is written at the
/// reset while the client (a zero-window h2 stream) still holds the stream and reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_reset_is_audited_at_the_reset() {
    let env = Env::start_with(|c| {
        *c = c.replace("upstream:\n", "upstream:\n  stalled_stream_timeout: 2s\n");
    })
    .await;
    seed_configmaps(&env, 2).await;
    let h2c = zero_window_tenant(&env).await;
    let req = Request::get(format!("https://localhost{NS}/configmaps"))
        .body(())
        .unwrap();
    let mut h2c = h2c.ready().await.unwrap();
    let (resp, _) = h2c.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();
    let log = env.files.dir.join("audit.log");
    let complete = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["auditID"] == id.as_str() && e["stage"] == "ResponseComplete")
    };
    // Nothing is recorded as complete while the stream is merely slow…
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(complete().is_none(), "{:?}", complete());
    // …and the reset is, within the timeout (and a margin), with the client still connected.
    let e = poll(Duration::from_secs(15), complete)
        .await
        .expect("the reset stream's ResponseComplete");
    assert_eq!(
        e["annotations"]["portcullis.io/response-aborted"], "stalled",
        "{e}"
    );
    assert_eq!(e["responseStatus"]["code"], 200);
    assert_eq!(e["user"]["username"], "mallory");
    assert!(metric(&env, "portcullis_upstream_stalled_streams_total").await >= 1.0);
    // One ResponseComplete for the request, also after the client goes away.
    drop((h2c, resp));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&id) && l.contains("\"ResponseComplete\""))
        .count();
    assert_eq!(n, 1);
    env.stop().await;
}

/// A followed log its reader pauses (`kubectl logs -f … | less`) is not reset after
/// `stalled_stream_timeout`, as the API server never times such a write out: 8 MiB, the
/// reader stops after its first chunk for longer than the timeout, then gets every byte — and
/// the end of the answer as soon as it has taken them (the pump used to hold the end back for
/// the rest of a stall round once the upstream had finished first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_log_reader_is_not_reset() {
    use http_body_util::BodyExt;
    const SIZE: usize = 8 * 1024 * 1024;
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let fake = common::fake_upstream(&ca, |mut s| async move {
        while let Some(head) = common::read_head(&mut s).await {
            let log = head.starts_with("GET /api/v1/namespaces/team-a/pods/web/log");
            let body = if log {
                vec![b'x'; SIZE]
            } else {
                b"{}".to_vec()
            };
            let ct = if log {
                "text/plain"
            } else {
                "application/json"
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            // Flushed: tokio-rustls may keep the tail of a write it could not send in its
            // buffer, and this fake waits for the next request after it.
            if s.write_all(head.as_bytes()).await.is_err()
                || s.write_all(&body).await.is_err()
                || s.flush().await.is_err()
            {
                return;
            }
        }
    })
    .await;
    let env = Env::start_against(ca, sandbox, fake, |c| {
        *c = c.replace("upstream:\n", "upstream:\n  stalled_stream_timeout: 2s\n");
    })
    .await;
    let mut conn = h2_conn(&env, &env.admin_cert).await;
    conn.ready().await.unwrap();
    let resp = conn
        .send_request(get("/api/v1/namespaces/team-a/pods/web/log?follow=true"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    let mut got = first.into_data().unwrap().len();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rest = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("the paused log was reset");
            got += frame.into_data().map(|d| d.len()).unwrap_or(0);
        }
        got
    };
    let got = match tokio::time::timeout(Duration::from_secs(30), rest).await {
        Ok(g) => g,
        Err(_) => panic!("the log stopped"),
    };
    assert_eq!(got, SIZE);
    env.stop().await;
}

/// A tenant's pod writing its log 8 bytes at a time, and the tenant's `logs -f` granting no
/// window (its answer stalls at once). h2 charges each small DATA frame it holds unread to the
/// upstream connection (half its window: 512 KiB with 4 streams per connection, some 2 100
/// such frames) and closes the connection past it, with every other request on it. The
/// proxy's pump takes the frames as they come, coalesced, and withholds the window instead:
/// the admin's watch on the same upstream connection stays open and sees a configmap created
/// afterwards, and a later request goes over the same upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_tiny_log_writes_to_a_stalled_reader_leave_the_upstream_connection_open() {
    let env = Env::start_with(|c| {
        *c = c.replace("upstream:\n", "upstream:\n  streams_per_connection: 4\n");
    })
    .await;
    // 1 MiB for the pump's buffer, 256 KiB more with the window withheld, and then some.
    const CHUNK: usize = 8;
    env.sandbox
        .sandbox
        .set_chatty_logs(2 * 1024 * 1024 / CHUNK, CHUNK);
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chatty"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}}]},
    });
    let mut admin = h2_conn(&env, &env.admin_cert).await;
    let created = admin
        .send_request(post(&format!("{NS}/pods"), &pod))
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let configmaps = format!("{NS}/configmaps");
    admin.ready().await.unwrap();
    let watch = admin
        .send_request(get(&format!("{configmaps}?watch=1")))
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    let mut watch = watch.into_body();

    let mut tenant = zero_window_tenant(&env).await;
    let log = Request::get(format!("https://localhost{NS}/pods/chatty/log?follow=true"))
        .body(())
        .unwrap();
    tenant = tenant.ready().await.unwrap();
    let (held, _) = tenant.send_request(log, true).unwrap();
    let held = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("the log's head")
        .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    // Until the API server has no window left to send with.
    let sb = &env.sandbox.sandbox;
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = sb.chatty_bytes_sent();
        if now == last {
            break;
        }
        last = now;
    }
    assert!(
        last >= 1024 * 1024,
        "the API server sent only {last} bytes of the log (its connection closed?)"
    );
    assert!(
        last < 2 * 1024 * 1024,
        "the API server sent the whole log ({last} bytes) to a reader that took none"
    );
    let peers = upstream_peers(&env, &configmaps);
    assert_eq!(peers.len(), 1);

    // The admin's watch is still open: it sees a configmap created now.
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "after-the-stall"}});
    let resp = env
        .request(post(&configmaps, &cm), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        use http_body_util::BodyExt;
        let mut got = Vec::new();
        while let Some(frame) = watch.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                got.extend_from_slice(&data);
            }
            if String::from_utf8_lossy(&got).contains("after-the-stall") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "the admin's watch ended: its upstream connection closed"
    );
    // Over the same upstream connection as before.
    let listed = env
        .request(get(&configmaps), Some(&env.admin_cert), true)
        .await;
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(upstream_peers(&env, &configmaps), peers);
    drop(held);
    env.stop().await;
}
