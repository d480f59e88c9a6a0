//! Issue 6 through the proxy: one audit.k8s.io/v1 event per request with the apiserver's fields,
//! refusals included; what must never be recorded; stream stages; verify and query on the log
//! the proxy wrote; a strict sink that cannot record answers 503 (and a strict file sink that
//! cannot write makes the replica unready until it writes again, and a write forwarded before
//! its event failed invites no retry while later writes are held back); and kill -9 of the real
//! binary under load loses no event of an answered request.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{collections::HashSet, path::Path, time::Duration};

use bytes::Bytes;
use common::{jwt, Env};
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn req(method: &str, path: &str, body: Option<&Value>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("user-agent", "audit-e2e/1.0");
    let bytes = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(v).unwrap())
        }
        None => Bytes::new(),
    };
    b.body(Full::new(bytes)).unwrap()
}

fn with_token(mut r: Request<Full<Bytes>>, token: &str) -> Request<Full<Bytes>> {
    r.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn events(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "Event")
        .collect()
}

fn event_for(dir: &Path, audit_id: &str, stage: &str) -> Value {
    events(dir)
        .into_iter()
        .find(|e| e["auditID"] == audit_id && e["stage"] == stage)
        .unwrap_or_else(|| panic!("no {stage} event for {audit_id}: {:?}", events(dir)))
}

fn alice(env: &Env) -> String {
    let pem = std::fs::read_to_string(env.files.dir.join("jwt-signing.key")).unwrap();
    let now = jwt::now();
    jwt::Forge::from_pem(&pem, "demo-1").token(&json!({
        "iss": "https://portcullis-demo.local", "aud": "portcullis", "sub": "alice",
        "groups": ["tenant:team-a"], "iat": now, "nbf": now, "exp": now + 600, "jti": "alice-token-1"}))
}

/// The demo proxy under the audit policy `policy` (written to a folder the caller keeps).
async fn with_policy(policy: &str) -> (tempfile::TempDir, Env) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, policy).unwrap();
    let env = Env::start_with(|c| {
        *c = c.replace(
            "  policy_file: audit-policy.yaml\n",
            &format!("  policy_file: {}\n", path.display()),
        )
    })
    .await;
    (dir, env)
}

fn is_micro(ts: &Value) -> bool {
    // 2026-11-27T07:25:09.123456Z
    let s = ts.as_str().unwrap_or_default();
    s.len() == 27 && s.ends_with('Z') && s.as_bytes()[19] == b'.'
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_are_recorded_field_by_field() {
    let env = Env::start().await;
    let dir = env.files.dir.clone();
    let token = alice(&env);

    // A write by a tenant (RequestResponse under the default policy).
    let cm = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"}});
    let resp = env
        .request(
            with_token(
                req(
                    "POST",
                    "/api/v1/namespaces/team-a/serviceaccounts?fieldManager=e2e",
                    Some(&cm),
                ),
                &token,
            ),
            None,
            true,
        )
        .await;
    assert_eq!(resp.status(), 201, "{:?}", resp.body());
    let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();
    // The upstream got the same Audit-ID, so both logs correlate.
    let up = env.sandbox.sandbox.recorded();
    assert!(up
        .iter()
        .any(|r| r.headers.get("audit-id").map(|v| v.to_str().unwrap()) == Some(id.as_str())));

    let e = event_for(&dir, &id, "ResponseComplete");
    assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(e["level"], "RequestResponse");
    assert_eq!(
        e["requestURI"],
        "/api/v1/namespaces/team-a/serviceaccounts?fieldManager=e2e"
    );
    assert_eq!(e["verb"], "create");
    assert_eq!(e["user"]["username"], "alice");
    // As kube-apiserver logs them: its authenticator adds `system:authenticated`.
    assert_eq!(
        e["user"]["groups"],
        json!(["tenant:team-a", "system:authenticated"])
    );
    assert_eq!(e["sourceIPs"], json!(["127.0.0.1"]));
    assert_eq!(e["userAgent"], "audit-e2e/1.0");
    // The create's name comes from the decoded body, as kube-apiserver's LogRequestObject
    // completes it (issue 18).
    assert_eq!(
        e["objectRef"],
        json!({"resource": "serviceaccounts", "namespace": "team-a", "name": "bot", "apiVersion": "v1"})
    );
    assert_eq!(e["responseStatus"]["code"], 201);
    assert_eq!(e["requestObject"], cm);
    assert_eq!(e["responseObject"]["metadata"]["name"], "bot");
    assert!(
        is_micro(&e["requestReceivedTimestamp"]) && is_micro(&e["stageTimestamp"]),
        "{e}"
    );
    let a = &e["annotations"];
    assert_eq!(a["authorization.k8s.io/decision"], "allow");
    assert_eq!(a["portcullis.io/method"], "jwt");
    assert_eq!(a["portcullis.io/issuer"], "https://portcullis-demo.local");
    assert_eq!(a["portcullis.io/token-id"], "alice-token-1");
    assert_eq!(a["portcullis.io/tenant"], "team-a");
    assert_eq!(a["portcullis.io/ratelimit"], "allowed");
    assert_eq!(a["portcullis.io/sanitize"], "inspected");
    assert!(
        a["portcullis.io/chain"].as_str().unwrap().len() == 64,
        "{a}"
    );

    // A read by the admin (certificate): Metadata, no bodies.
    let resp = env
        .request(
            req("GET", "/api/v1/namespaces/default/configmaps", None),
            Some(&env.admin_cert),
            true,
        )
        .await;
    let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();
    let e = event_for(&dir, &id, "ResponseComplete");
    assert_eq!(e["level"], "Metadata");
    assert_eq!(e["verb"], "list");
    assert_eq!(e["user"]["username"], "admin");
    assert!(e.get("responseObject").is_none() && e.get("requestObject").is_none());
    assert_eq!(e["annotations"]["portcullis.io/method"], "x509");
    assert_eq!(
        e["annotations"]["portcullis.io/cert-fingerprint"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // A watch: ResponseStarted when the stream starts, ResponseComplete when it ends.
    let resp = env
        .request(
            req(
                "GET",
                "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1",
                None,
            ),
            Some(&env.admin_cert),
            true,
        )
        .await;
    let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();
    let started = event_for(&dir, &id, "ResponseStarted");
    assert_eq!(started["verb"], "watch");
    // ResponseComplete is written when the stream ends: wait (bounded) for it to appear.
    common::poll(Duration::from_secs(10), || {
        events(&dir)
            .into_iter()
            .find(|e| e["auditID"] == id.as_str() && e["stage"] == "ResponseComplete")
    })
    .await;
    let done = event_for(&dir, &id, "ResponseComplete");
    assert!(done["stageTimestamp"].as_str() >= started["stageTimestamp"].as_str());

    // The log verifies with the demo's public key.
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify", "--key"])
        .arg(dir.join("audit-signing.pub"))
        .arg(dir.join("audit.log"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_recorded_and_secrets_never_are() {
    let env = Env::start().await;
    let dir = env.files.dir.clone();
    let token = alice(&env);
    let mut cases: Vec<(String, u16, &str)> = Vec::new();
    let send = |r: Request<Full<Bytes>>, cert: bool| {
        let env = &env;
        async move {
            let resp = env
                .request(r, if cert { Some(&env.admin_cert) } else { None }, true)
                .await;
            (
                resp.headers()["audit-id"].to_str().unwrap().to_owned(),
                resp.status().as_u16(),
            )
        }
    };
    // 400: a path we refuse to classify.
    let (id, code) = send(
        req(
            "GET",
            "/api/v1/namespaces/default/pods/%2e%2e/secrets",
            None,
        ),
        true,
    )
    .await;
    cases.push((id, code, "classify"));
    // 401: no credentials.
    let (id, code) = send(req("GET", "/api/v1/namespaces/team-a/pods", None), false).await;
    cases.push((id, code, "authn"));
    // 403: outside the tenant.
    let (id, code) = send(
        with_token(req("GET", "/api/v1/namespaces/team-b/pods", None), &token),
        false,
    )
    .await;
    cases.push((id, code, "authz"));
    // 403: Pod Security (PodSecurity admission's code).
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"hostPID": true, "containers": [{"name": "c", "image": "x"}]}});
    let (id, code) = send(
        with_token(
            req("POST", "/api/v1/namespaces/team-a/pods", Some(&bad)),
            &token,
        ),
        false,
    )
    .await;
    cases.push((id, code, "sanitize"));
    // (Before the 429 below: refused requests spend the bucket too, so once it is empty
    // these would be 429s.)
    // A write refused by authorization: its body is never read, never recorded.
    let (id, code) = send(
        with_token(
            req("POST", "/api/v1/namespaces/team-b/pods", Some(&bad)),
            &token,
        ),
        false,
    )
    .await;
    assert_eq!(code, 403);
    let e = event_for(&dir, &id, "ResponseComplete");
    assert_eq!(e["level"], "RequestResponse", "{e}");
    assert!(e.get("requestObject").is_none(), "{e}");

    // A refused watch (long-running) has its `ResponseStarted` too, with the refusal's
    // status, as kube-apiserver writes one whenever a long-running request's status is written;
    // an unauthenticated one (refused before the point where that filter sits) does not.
    let (id, code) = send(
        with_token(
            req("GET", "/api/v1/namespaces/team-b/pods?watch=1", None),
            &token,
        ),
        false,
    )
    .await;
    assert_eq!(code, 403);
    let started = event_for(&dir, &id, "ResponseStarted");
    assert_eq!(started["verb"], "watch", "{started}");
    assert_eq!(started["responseStatus"]["code"], 403, "{started}");
    assert_eq!(
        started["responseStatus"]["reason"], "Forbidden",
        "{started}"
    );
    let done = event_for(&dir, &id, "ResponseComplete");
    assert_eq!(done["responseStatus"]["code"], 403, "{done}");
    let (id, code) = send(
        req("GET", "/api/v1/namespaces/team-a/pods?watch=1", None),
        false,
    )
    .await;
    assert_eq!(code, 401);
    event_for(&dir, &id, "ResponseComplete");
    assert!(
        !events(&dir)
            .iter()
            .any(|e| e["auditID"] == id.as_str() && e["stage"] == "ResponseStarted"),
        "no ResponseStarted for a request refused before authentication"
    );

    // 429: team-a's read burst is 20.
    let mut limited = None;
    for _ in 0..40 {
        let (id, code) = send(
            with_token(
                req("GET", "/api/v1/namespaces/team-a/configmaps", None),
                &token,
            ),
            false,
        )
        .await;
        if code == 429 {
            limited = Some((id, code));
            break;
        }
    }
    let (id, code) = limited.expect("a 429 within 40 reads");
    cases.push((id, code, "ratelimit"));

    let expect = [400, 401, 403, 403, 429];
    for ((id, code, by), want) in cases.iter().zip(expect) {
        assert_eq!(*code, want, "{by}");
        let e = event_for(&dir, id, "ResponseComplete");
        assert_eq!(e["responseStatus"]["code"], want, "{by}: {e}");
        assert_eq!(e["responseStatus"]["status"], "Failure", "{by}: {e}");
        assert!(e["responseStatus"]["reason"].is_string(), "{by}: {e}");
        assert_eq!(
            e["annotations"]["portcullis.io/rejected-by"], *by,
            "{by}: {e}"
        );
        if *by == "authn" {
            assert!(e["user"].as_object().is_none_or(|u| u.is_empty()), "{e}");
        }
        if *by == "authz" {
            assert_eq!(
                e["annotations"]["authorization.k8s.io/decision"], "forbid",
                "{e}"
            );
            assert_eq!(e["user"]["username"], "alice");
        }
        if *by == "sanitize" {
            assert_eq!(
                e["annotations"]["pod-security.kubernetes.io/enforce-policy"], "restricted:latest",
                "{e}"
            );
            assert!(
                e["responseStatus"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("pods \"p\" is forbidden: violates PodSecurity \"restricted:latest\": host namespaces (hostPID=true)"),
                "{e}"
            );
            // The refused create names the pod it refused (from the decoded body).
            assert_eq!(e["objectRef"]["name"], "p", "{e}");
            // At RequestResponse (the default policy's level for pod writes) the refused
            // write carries its body as received, as the apiserver logs it before admission.
            assert_eq!(e["level"], "RequestResponse", "{e}");
            assert_eq!(e["requestObject"], bad, "{e}");
        } else {
            // Refused before the body was read: no requestObject (nor does the apiserver log
            // one when authentication or authorization refuses).
            assert!(e.get("requestObject").is_none(), "{by}: {e}");
        }
    }
    // Never in audit: the bearer token, Authorization headers, Secret data.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
        "stringData": {"password": "s3cret-value-42"}, "data": {"k": "c2VjcmV0LWJ5dGVzLTQy"}});
    let resp = env
        .request(
            with_token(
                req("POST", "/api/v1/namespaces/team-a/secrets", Some(&secret)),
                &token,
            ),
            None,
            true,
        )
        .await;
    assert_eq!(resp.status(), 201);
    let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();
    let e = event_for(&dir, &id, "ResponseComplete");
    assert_eq!(e["level"], "Metadata");
    let log = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    for needle in [
        token.as_str(),
        "s3cret-value-42",
        "c2VjcmV0LWJ5dGVzLTQy",
        "Bearer",
        "authorization\":",
    ] {
        assert!(
            !log.contains(needle),
            "{needle:?} leaked into the audit log"
        );
    }

    // Query: who was refused in team-a.
    let out = std::process::Command::new(BIN)
        .args([
            "audit",
            "query",
            "--namespace",
            "team-a",
            "--decision",
            "deny",
            "--output",
            "json",
        ])
        .arg(dir.join("audit.log"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows
        .iter()
        .all(|r| r["annotations"]["authorization.k8s.io/decision"] == "forbid"));
    env.stop().await;
}

/// The admin lists the `default` namespace's ConfigMaps.
async fn list_configmaps(env: &Env) -> http::Response<Bytes> {
    env.request(
        req("GET", "/api/v1/namespaces/default/configmaps", None),
        Some(&env.admin_cert),
        true,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_sink_that_cannot_record_answers_503() {
    // A second, blocking-strict sink: a webhook whose receiver is down, no retries.
    let kc_dir = tempfile::tempdir().unwrap();
    let kc = kc_dir.path().join("siem.kubeconfig");
    let dead = common::dead_addr();
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: siem\n  cluster: {{server: \"http://{dead}/events\"}}\nusers:\n- name: siem\n  user: {{}}\ncontexts:\n- name: siem\n  context: {{cluster: siem, user: siem}}\ncurrent-context: siem\n"
        ),
    )
    .unwrap();
    let env = Env::start_with(|c| {
        *c = c.replace(
            "      mode: blocking-strict      # no answer leaves before its event is on disk\n",
            &format!(
                "      mode: blocking-strict      # no answer leaves before its event is on disk\n    - name: siem\n      webhook: {{kubeconfig: {}, max_retries: 0, request_timeout: 1s}}\n      mode: blocking-strict\n",
                kc.display()
            ),
        );
    })
    .await;
    env.sandbox.sandbox.clear_recorded();
    let resp = list_configmaps(&env).await;
    assert_eq!(resp.status(), 503, "{:?}", resp.body());
    let s: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(s["reason"], "ServiceUnavailable");
    assert_eq!(resp.headers()["retry-after"], "1");
    // The rate-limit state of the request it replaced stays on the 503.
    assert!(
        resp.headers().contains_key("ratelimit"),
        "{:?}",
        resp.headers()
    );
    let (_, metrics) = common::admin_get(env.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("portcullis_audit_events_failed_total{sink=\"siem\"}"),
        "{metrics}"
    );
    // With the default policy the event is written at ResponseComplete, after forwarding.
    // A policy that records RequestReceived refuses before anything reaches the upstream.
    let seen = env.sandbox.sandbox.recorded();
    assert_eq!(seen.len(), 1, "{seen:?}");
    // Now the strict webhook is known to fail: the next request is held back before it is
    // forwarded (a write would otherwise be carried out unrecorded, and answered 500 after the
    // delivery's retries), while this replica stays ready (every replica shares the receiver).
    env.sandbox.sandbox.clear_recorded();
    let resp = list_configmaps(&env).await;
    assert_eq!(resp.status(), 503, "{:?}", resp.body());
    assert_eq!(resp.headers()["retry-after"], "1");
    let seen = env.sandbox.sandbox.recorded();
    assert!(seen.is_empty(), "the upstream saw {seen:?}");
    let (status, body) = common::admin_get(env.admin_addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    env.sandbox.sandbox.clear_recorded();
    let policy = kc_dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n",
    )
    .unwrap();
    env.stop().await;
    let env = Env::start_with(|c| {
        *c = c
            .replace(
                "      mode: blocking-strict      # no answer leaves before its event is on disk\n",
                &format!(
                    "      mode: blocking-strict      # no answer leaves before its event is on disk\n    - name: siem\n      webhook: {{kubeconfig: {}, max_retries: 0, request_timeout: 1s}}\n      mode: blocking-strict\n",
                    kc.display()
                ),
            )
            .replace("  policy_file: audit-policy.yaml\n", &format!("  policy_file: {}\n", policy.display()));
    })
    .await;
    env.sandbox.sandbox.clear_recorded();
    let resp = list_configmaps(&env).await;
    assert_eq!(resp.status(), 503, "{:?}", resp.body());
    let seen = env.sandbox.sandbox.recorded();
    assert!(seen.is_empty(), "the upstream saw {seen:?}");
    // The failing sink is a webhook every replica shares: failing readiness would take them
    // all out of service at once, so this replica stays ready (its file sink works).
    let (status, body) = common::admin_get(env.admin_addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    env.stop().await;
}

/// The demo proxy whose blocking-strict audit file is a link to `/dev/full` (every write fails
/// with ENOSPC, whoever runs the test — root ignores permissions), under `policy`: the folder
/// (keep it), the log's path, the proxy.
#[cfg(target_os = "linux")]
async fn full_disk(policy: &str) -> (tempfile::TempDir, std::path::PathBuf, Env) {
    let full = tempfile::tempdir().unwrap();
    let log = full.path().join("audit.log");
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let policy_file = full.path().join("policy.yaml");
    std::fs::write(&policy_file, policy).unwrap();
    let env = Env::start_with(|c| {
        *c = c
            .replace("{path: audit.log,", &format!("{{path: {},", log.display()))
            .replace(
                "  policy_file: audit-policy.yaml\n",
                &format!("  policy_file: {}\n", policy_file.display()),
            )
            // Without a key: a checkpoint's fdatasync of /dev/full fails (EINVAL) at start.
            .replace("  signing_key_file: audit-signing.key\n", "");
        // Each edit took: the demo config still has the lines it replaces.
        assert!(c.contains(&*log.to_string_lossy()), "{c}");
        assert!(c.contains(&*policy_file.to_string_lossy()), "{c}");
        assert!(!c.contains("signing_key_file"), "{c}");
    })
    .await;
    (full, log, env)
}

/// A blocking-strict file sink whose disk is full: the audit file is a link to `/dev/full`
/// (every write fails with ENOSPC, whoever runs the test — root ignores permissions). Every
/// audited request is refused before the upstream sees it, and `/readyz` says why, so the load
/// balancer stops sending this replica traffic it would refuse; once a write succeeds again
/// (the link removed: the sink starts a real file) the replica is ready again.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_file_sink_that_cannot_write_makes_the_replica_unready() {
    // Every stage recorded: RequestReceived is written before forwarding.
    let (_full, log, env) =
        full_disk("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n").await;
    let get = || req("GET", "/api/v1/namespaces/default/configmaps", None);
    // Ready once the proxy's first probe of the upstream (a task of its own) has answered.
    let mut ready = common::admin_get(env.admin_addr, "/readyz").await;
    for _ in 0..200 {
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        ready = common::admin_get(env.admin_addr, "/readyz").await;
    }
    let (status, body) = ready;
    assert_eq!(status, 200, "nothing written yet: {body}");

    env.sandbox.sandbox.clear_recorded();
    let resp = env.request(get(), Some(&env.admin_cert), true).await;
    assert_eq!(resp.status(), 503, "{:?}", resp.body());
    let seen = env.sandbox.sandbox.recorded();
    assert!(seen.is_empty(), "the upstream saw {seen:?}");
    let (status, body) = common::admin_get(env.admin_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let reason = format!(
        "audit sink file failing: write {}: No space left on device (os error 28)",
        log.display()
    );
    assert!(body.lines().any(|l| l == reason), "{body}");
    let (_, metrics) = common::admin_get(env.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("portcullis_audit_sink_healthy{sink=\"file\"} 0"),
        "{metrics}"
    );

    // Room again: the next write starts a real file, the request is served and recorded.
    std::fs::remove_file(&log).unwrap();
    let resp = env.request(get(), Some(&env.admin_cert), true).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    assert_eq!(env.sandbox.sandbox.recorded().len(), 1);
    let (status, body) = common::admin_get(env.admin_addr, "/readyz").await;
    assert_eq!(status, 200, "ready again after a write succeeded: {body}");
    let (_, metrics) = common::admin_get(env.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("portcullis_audit_sink_healthy{sink=\"file\"} 1"),
        "{metrics}"
    );
    let recorded = std::fs::read_to_string(&log).unwrap();
    assert!(
        recorded.contains("\"stage\":\"RequestReceived\""),
        "{recorded}"
    );
    env.stop().await;
}

/// A strict file sink whose disk is full under a policy that omits `RequestReceived` (as the
/// shipped one does): a write is forwarded before any event is durable. Its failed
/// `ResponseComplete` must not invite a retry — kubectl's create is sent once and answered
/// 500 without `Retry-After` (a 503 with it made client-go send the create again and again,
/// each carried out unrecorded) — and while the sink is failing, writes and reads are refused
/// before the upstream sees them (a read forwarded then would stream a long answer to its
/// client all but whole with no event); the refusals' own events are what find the disk
/// writable again.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_sink_failing_after_forwarding_invites_no_retry_and_holds_back_writes() {
    common::require_kubectl();
    // kubectl's discovery unaudited, so that its create is the first event to fail.
    let (_full, log, env) = full_disk(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: None\n    nonResourceURLs: [/api, /api/*, /apis, /apis/*, /openapi/*, /version]\n  - level: Metadata\n",
    )
    .await;
    let posts = |env: &Env| {
        env.sandbox
            .sandbox
            .recorded()
            .iter()
            .filter(|r| r.method == http::Method::POST)
            .count()
    };
    let configmaps = "/api/v1/namespaces/default/configmaps";
    env.sandbox.sandbox.clear_recorded();

    // The first write reaches the API server (nothing is known to fail yet); its event fails,
    // and kubectl does not send it again (it would on a 503 with Retry-After).
    let out = env
        .kubectl(&["create", "configmap", "first", "-n", "default"])
        .await;
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("may have been carried out"), "{stderr}");
    assert_eq!(posts(&env), 1, "kubectl sent the create again");
    let direct = env
        .sandbox
        .sandbox
        .recorded()
        .into_iter()
        .find(|r| r.method == http::Method::POST)
        .unwrap();
    assert_eq!(direct.path, configmaps);

    let cm =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    // While the sink is failing: a write is refused before the upstream sees it (503 and
    // Retry-After: nothing was carried out, so a retry is safe).
    let resp = env
        .request(
            req("POST", configmaps, Some(&cm("second"))),
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(resp.status(), 503, "{:?}", resp.body());
    assert_eq!(resp.headers()["retry-after"], "1");
    let s: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(s["reason"], "ServiceUnavailable");
    assert_eq!(
        posts(&env),
        1,
        "a write went upstream while the sink was failing"
    );
    let resp = env
        .request(
            req("DELETE", &format!("{configmaps}/first"), None),
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(resp.status(), 503, "{:?}", resp.body());
    assert!(
        !env.sandbox
            .sandbox
            .recorded()
            .iter()
            .any(|r| r.method == http::Method::DELETE),
        "a delete went upstream while the sink was failing"
    );
    // A read is held back too (503, retry-safe): nothing reaches the upstream.
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(req("GET", configmaps, None), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), 503, "{:?}", resp.body());
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(
        env.sandbox.sandbox.recorded().is_empty(),
        "a read went upstream while the sink was failing"
    );

    // Room again: the next request is still refused (the sink is known to fail until a write
    // succeeds), but its refusal's event is written; the read sent again is served, and
    // writes go again.
    std::fs::remove_file(&log).unwrap();
    let resp = env
        .request(req("GET", configmaps, None), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), 503, "{:?}", resp.body());
    let resp = env
        .request(req("GET", configmaps, None), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    let resp = env
        .request(
            req("POST", configmaps, Some(&cm("third"))),
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(resp.status(), 201, "{:?}", resp.body());
    assert_eq!(posts(&env), 1);
    let recorded = std::fs::read_to_string(&log).unwrap();
    assert!(
        recorded.contains("\"verb\":\"create\"") && !recorded.contains("RequestReceived"),
        "{recorded}"
    );
    env.stop().await;
}

/// The real binary, blocking-strict file sink, 16 concurrent clients; kill -9 mid-load. Every
/// request that got a complete answer (the whole body: a list that streams, a 404 held whole)
/// has its event in the file, and the file verifies up to its last complete line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_answered_request() {
    use portcullis::server::tls;
    use portcullis_sandbox::{self as sandbox, demo, pki::Ca};
    tls::install_crypto_provider();
    let ca = Ca::new("test CA").unwrap();
    let sb = sandbox::start("127.0.0.1:0".parse().unwrap(), &ca)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (common::free_port(), common::free_port());
    let files = demo::write(dir.path(), &ca, &sb.url(), listen, admin).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&files.config)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cert = ca.client_cert("admin", &["demo:admins"]).unwrap();
    let tls_cfg = std::sync::Arc::new(common::client_tls(&ca, Some(&cert), &[b"http/1.1"]));
    // Two 100 kB configmaps: the list below is then an answer that streams (its last frame
    // held until its event is durable), the gets of missing ones are answers held whole.
    for name in ["big-0", "big-1"] {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"blob": "x".repeat(100_000)}});
        let created = try_send(
            listen,
            tls_cfg.clone(),
            req("POST", "/api/v1/namespaces/default/configmaps", Some(&cm)),
        )
        .await;
        assert_eq!(created.map(|(code, _)| code), Some(201));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (tls_cfg, stop, count) = (tls_cfg.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let path = if i % 2 == 0 {
                    "/api/v1/namespaces/default/configmaps".to_string()
                } else {
                    format!("/api/v1/namespaces/default/configmaps/t{t}-{i}")
                };
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    try_request(listen, tls_cfg.clone(), &path),
                )
                .await;
                match r {
                    Ok(Some(id)) => {
                        answered.push(id);
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            answered
        }));
    }
    // Kill while the load runs, once plenty of requests have been answered (bounded wait).
    common::poll(Duration::from_secs(30), || {
        (count.load(std::sync::atomic::Ordering::Relaxed) > 100).then_some(())
    })
    .await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    let _ = child.wait().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered: Vec<String> = Vec::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    assert!(
        answered.len() > 50,
        "only {} answered requests",
        answered.len()
    );
    let recorded: HashSet<String> = std::fs::read_to_string(dir.path().join("audit.log"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["stage"] == "ResponseComplete")
        .filter_map(|v| v["auditID"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no event: {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(5)]
    );
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify", "--key"])
        .arg(dir.path().join("audit-signing.pub"))
        .arg(dir.path().join("audit.log"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    sb.stop().await;
}

/// One GET on a fresh connection; the response's Audit-Id once the whole answer arrived (a
/// list answers 200 with the two big configmaps in it, a get of a missing one 404).
async fn try_request(
    addr: std::net::SocketAddr,
    tls_cfg: std::sync::Arc<rustls::ClientConfig>,
    path: &str,
) -> Option<String> {
    let (_, id) = try_send(addr, tls_cfg, req("GET", path, None)).await?;
    Some(id)
}

/// One request on a fresh connection: its status and Audit-Id once the whole answer arrived.
async fn try_send(
    addr: std::net::SocketAddr,
    tls_cfg: std::sync::Arc<rustls::ClientConfig>,
    request: Request<Full<Bytes>>,
) -> Option<(u16, String)> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let connector = tokio_rustls::TlsConnector::from(tls_cfg);
    let tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").ok()?,
            tcp,
        )
        .await
        .ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .ok()?;
    tokio::spawn(conn);
    let resp = sender.send_request(request).await.ok()?;
    let code = resp.status().as_u16();
    let id = resp.headers().get("audit-id")?.to_str().ok()?.to_owned();
    resp.into_body().collect().await.ok()?;
    Some((code, id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_actions_are_queryable_and_policy_stages_apply() {
    common::require_kubectl();
    // A policy that also records RequestReceived, and nothing for discovery — matched by the
    // group kube-apiserver gives every authenticated user, as its documented example does.
    let (_pdir, env) = with_policy(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n    userGroups: [\"system:authenticated\"]\n    nonResourceURLs: [\"/api\", \"/api/*\", \"/apis\", \"/apis/*\", \"/openapi/*\", \"/version\"]\n  - level: Metadata\n",
    )
    .await;
    let dir = env.files.dir.clone();
    let home = env.dir.path();
    let kc = &env.files.team_a_kubeconfig;
    for args in [
        &["create", "configmap", "settings", "--from-literal=a=b"][..],
        &["delete", "configmap", "settings"][..],
    ] {
        let out = common::kubectl(kc, home, args).await;
        assert!(out.status.success(), "{args:?}: {}", common::stderr(&out));
    }
    let out = std::process::Command::new(BIN)
        .args([
            "audit",
            "query",
            "--namespace",
            "team-a",
            "--verb",
            "delete",
            "--user",
            "alice",
        ])
        .arg(dir.join("audit.log"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(
        rows[0].contains("alice")
            && rows[0].contains("configmaps")
            && rows[0].contains("settings")
            && rows[0].contains("200"),
        "{table}"
    );
    // RequestReceived and ResponseComplete for the same request; discovery not recorded.
    let all = events(&dir);
    let delete: Vec<&Value> = all.iter().filter(|e| e["verb"] == "delete").collect();
    let stages: HashSet<&str> = delete.iter().filter_map(|e| e["stage"].as_str()).collect();
    assert_eq!(
        stages,
        HashSet::from(["RequestReceived", "ResponseComplete"]),
        "{delete:?}"
    );
    assert_eq!(delete[0]["auditID"], delete[1]["auditID"]);
    assert!(
        !all.iter().any(|e| e["requestURI"] == "/api"),
        "discovery recorded"
    );

    // A request authorization refuses has its RequestReceived too, as in kube-apiserver (its
    // audit filter sits before authorization), without the decision taken after it.
    let out = common::kubectl(kc, home, &["get", "pods", "-n", "team-b"]).await;
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("forbidden"),
        "{}",
        common::stderr(&out)
    );
    let all = events(&dir);
    let refused: Vec<&Value> = all
        .iter()
        .filter(|e| {
            e["requestURI"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/api/v1/namespaces/team-b/pods")
        })
        .collect();
    let stage = |s: &str| {
        refused
            .iter()
            .find(|e| e["stage"] == s)
            .unwrap_or_else(|| panic!("no {s}: {refused:?}"))
    };
    let (received, complete) = (stage("RequestReceived"), stage("ResponseComplete"));
    assert_eq!(received["auditID"], complete["auditID"]);
    assert_eq!(received["user"]["username"], "alice", "{received}");
    assert!(
        received["annotations"]
            .get("authorization.k8s.io/decision")
            .is_none(),
        "{received}"
    );
    assert_eq!(
        complete["annotations"]["authorization.k8s.io/decision"], "forbid",
        "{complete}"
    );
    assert_eq!(complete["responseStatus"]["code"], 403, "{complete}");
    env.stop().await;
}

/// kube-apiserver gzips an answer over 128 KiB for a client that accepts gzip (client-go's
/// transport asks for it), and the sandbox does the same: such an answer reaches kubectl
/// through the proxy intact, the proxy passes it on as it came (still gzipped, its encoding
/// named), and a policy that records the response has the decoded list in `responseObject`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzipped_answer_passes_through_and_is_recorded_decoded() {
    common::require_kubectl();
    let (_pdir, env) = with_policy(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: RequestResponse\n    verbs: [\"list\"]\n    resources: [{group: \"\", resources: [\"configmaps\"]}]\n  - level: Metadata\n",
    )
    .await;
    let dir = env.files.dir.clone();
    let home = env.dir.path();
    let kc = &env.files.team_a_kubeconfig;
    // Three configmaps of 60 000 characters each: a list of ≈ 180 KB.
    for i in 0..3 {
        let value = format!("--from-literal=blob={}", format!("{i}").repeat(60_000));
        let name = format!("big-{i}");
        let out = common::kubectl(kc, home, &["create", "configmap", &name, &value]).await;
        assert!(out.status.success(), "{}", common::stderr(&out));
    }
    env.sandbox.sandbox.clear_recorded();

    let out = common::kubectl(kc, home, &["get", "configmaps", "-o", "json"]).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let list: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    let blobs: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|cm| cm["data"]["blob"].as_str())
        .collect();
    assert_eq!(blobs.len(), 3, "{list}");
    for (i, blob) in blobs.iter().enumerate() {
        assert_eq!(*blob, format!("{i}").repeat(60_000));
    }
    // kubectl asked for gzip, and the proxy passed that on: the sandbox answered gzipped.
    let up = env.sandbox.sandbox.recorded();
    let listed = up
        .iter()
        .find(|r| r.method == "GET" && r.path == "/api/v1/namespaces/team-a/configmaps")
        .expect("the list reached the sandbox");
    assert!(
        listed
            .headers
            .get("accept-encoding")
            .is_some_and(|v| v.to_str().unwrap().contains("gzip")),
        "{:?}",
        listed.headers
    );

    // The answer as it leaves the proxy: still gzipped, and its encoding named.
    let mut r = with_token(
        req("GET", "/api/v1/namespaces/team-a/configmaps", None),
        &alice(&env),
    );
    r.headers_mut()
        .insert("accept-encoding", "gzip".parse().unwrap());
    let resp = env.request(r, None, true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&resp.body()[..]),
        &mut plain,
    )
    .unwrap();
    assert!(resp.body().len() < plain.len() / 10, "not compressed");
    let direct: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(direct["items"].as_array().unwrap().len(), 3);
    let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();

    // Both lists recorded decoded.
    let e = event_for(&dir, &id, "ResponseComplete");
    assert_eq!(e["level"], "RequestResponse", "{e}");
    assert_eq!(e["responseObject"]["kind"], "ConfigMapList");
    assert_eq!(e["responseObject"]["items"], direct["items"]);
    let kubectl_list = events(&dir)
        .into_iter()
        .find(|e| {
            e["verb"] == "list"
                && e["userAgent"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("kubectl")
        })
        .expect("kubectl's list recorded");
    assert_eq!(
        kubectl_list["responseObject"]["items"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{kubectl_list}"
    );
    for e in [&e, &kubectl_list] {
        assert!(
            e["annotations"]
                .get("portcullis.io/response-object-omitted")
                .is_none(),
            "{e}"
        );
    }
    env.stop().await;
}

/// A create whose body the proxy does not inspect (`inspect: false`, acknowledged as
/// dangerous) is still named in its event when the policy keeps its body: the API server names
/// a create from its decoded object, and the body is decoded for `requestObject` anyway.
/// Before, `objectRef.name` was empty (the URL of a create has no name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninspected_create_is_named_from_its_body() {
    let env = Env::start_with(|c| {
        *c = c.replace(
            "  pod_security:\n",
            "  resources:\n    - {resources: [services], inspect: false}\n  pod_security:\n",
        );
        c.push_str("dangerous:\n  allow_uninspected_bodies: true\n");
    })
    .await;
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]}});
    let resp = env
        .request(
            req("POST", "/api/v1/namespaces/default/services", Some(&svc)),
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(resp.status(), 201, "{:?}", resp.body());
    let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();
    let e = event_for(&env.files.dir, &id, "ResponseComplete");
    assert!(e["annotations"]["portcullis.io/sanitize"].is_null(), "{e}");
    assert_eq!(e["requestObject"]["metadata"]["name"], "web", "{e}");
    assert_eq!(e["objectRef"]["name"], "web", "{e}");
    assert_eq!(e["objectRef"]["namespace"], "default", "{e}");
    env.stop().await;
}

/// `omitManagedFields` as kube-apiserver applies it: decoded objects lose
/// `metadata.managedFields` (a create's `requestObject`, every `responseObject`:
/// `copyWithoutManagedFields` in `LogRequestObject` / `LogResponseObject`), but a patch's
/// `requestObject` is the patch as sent (`LogRequestPatch` records its bytes as they came), so
/// a patch that writes `managedFields` is recorded writing them — merge, strategic merge and
/// JSON patch alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omit_managed_fields_strips_objects_but_records_patches_as_sent() {
    let (_pdir, env) = with_policy(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nomitManagedFields: true\nrules:\n  - level: RequestResponse\n    resources: [{group: \"\", resources: [\"configmaps\"]}]\n  - level: Metadata\n",
    )
    .await;
    let dir = env.files.dir.clone();
    let token = alice(&env);
    let managed = |manager: &str| {
        json!([{"manager": manager, "operation": "Update", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}])
    };
    let send = |method: &str, path: &str, content_type: &str, body: &Value| {
        let r = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
            .unwrap();
        with_token(r, &token)
    };
    let recorded = |resp: &http::Response<Bytes>, code: u16| {
        assert_eq!(resp.status(), code, "{:?}", resp.body());
        let id = resp.headers()["audit-id"].to_str().unwrap();
        let e = event_for(&dir, id, "ResponseComplete");
        assert_eq!(e["level"], "RequestResponse", "{e}");
        assert!(
            e["responseObject"]["metadata"]
                .get("managedFields")
                .is_none(),
            "{e}"
        );
        e
    };

    // A create: its decoded object is recorded without them.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "mf", "managedFields": managed("creator")}, "data": {"a": "1"}});
    let resp = env
        .request(
            send(
                "POST",
                "/api/v1/namespaces/team-a/configmaps",
                "application/json",
                &cm,
            ),
            None,
            true,
        )
        .await;
    let e = recorded(&resp, 201);
    let mut stripped = cm.clone();
    stripped["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    assert_eq!(e["requestObject"], stripped);

    // Patches: recorded as sent, managedFields included.
    let merge = json!({"metadata": {"labels": {"a": "b"}, "managedFields": managed("mallory")}});
    let json_patch = json!([
        {"op": "add", "path": "/metadata/labels/c", "value": "d"},
        {"op": "add", "path": "/metadata/managedFields", "value": managed("mallory")}]);
    for (content_type, patch) in [
        ("application/merge-patch+json", &merge),
        ("application/strategic-merge-patch+json", &merge),
        ("application/json-patch+json", &json_patch),
    ] {
        let resp = env
            .request(
                send(
                    "PATCH",
                    "/api/v1/namespaces/team-a/configmaps/mf",
                    content_type,
                    patch,
                ),
                None,
                true,
            )
            .await;
        let e = recorded(&resp, 200);
        assert_eq!(e["verb"], "patch");
        assert_eq!(&e["requestObject"], patch, "{content_type}: {e}");
    }
    env.stop().await;
}
