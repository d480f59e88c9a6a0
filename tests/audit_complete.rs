//! Issue 16 item 3 through the proxy: an ordinary answer's `ResponseComplete` is written after
//! its last byte — for a large list read slowly, its `stageTimestamp` is after the client had
//! nearly all of it — and a blocking-strict sink that cannot take that event leaves the client
//! without a complete answer (the list was served by the upstream, the body is cut off).
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{tls_connect, Env};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::audit::MicroTime;
use portcullis_sandbox::pki::Issued;
use serde_json::Value;

const LIST: &str = "/api/v1/namespaces/default/configmaps";

/// About `mb` megabytes of configmaps in `default`, written by the admin through the proxy.
/// The answers are not checked: with a failing strict sink they are 503s, but the upstream
/// stored every object (it is checked by listing). The values are random letters, which gzip
/// shrinks only to about 60 %: kubectl asks for gzip, and the API server (the sandbox too) gzips a list this
/// large, so a compressible one would reach the proxy as a few KiB — an answer it holds whole.
async fn seed(env: &Env, mb: usize) {
    let mut admin = h2(env, &env.admin_cert, None).await;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..mb * 4 {
        let blob: String = (0..250_000)
            .map(|_| {
                // xorshift64: a fixed sequence, no compressible pattern.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect();
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("big-{i}")},
            "data": {"blob": blob},
        });
        let req = Request::post(format!("https://localhost{LIST}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(cm.to_string())))
            .unwrap();
        admin.send_request(req).await.unwrap();
    }
}

/// An h2 connection to the proxy; with `window`, a fixed stream window of that many bytes
/// (hyper's client otherwise opens a large, adaptive one).
async fn h2(
    env: &Env,
    cert: &Issued,
    window: Option<u32>,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let io = TokioIo::new(tls_connect(env.proxy_addr, &env.ca, Some(cert), &[b"h2"]).await);
    let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(w) = window {
        b.initial_stream_window_size(w).adaptive_window(false);
    }
    let (sender, conn) = b.handshake(io).await.unwrap();
    tokio::spawn(conn);
    sender
}

fn events(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(env.files.dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The time now, as the audit log writes `stageTimestamp` (fixed width: compares as text).
fn now() -> String {
    serde_json::to_value(MicroTime::now())
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_list_is_recorded_after_a_slow_reader_got_its_bytes() {
    let env = Env::start().await;
    seed(&env, 3).await;
    // A 64 KiB stream window: the proxy cannot be more than that ahead of what was read.
    let mut client = h2(&env, &env.admin_cert, Some(64 * 1024)).await;
    let resp = client
        .send_request(
            Request::get(format!("https://localhost{LIST}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();
    let head_at = now();
    // Read slowly, noting when each piece arrived.
    let mut body = resp.into_body();
    let mut got: Vec<u8> = Vec::new();
    let mut arrivals: Vec<(usize, String)> = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            got.extend_from_slice(&data);
            arrivals.push((got.len(), now()));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    let done_at = now();
    let list: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 12);
    // When all but the last 512 KiB had arrived.
    let mark = got.len() - 512 * 1024;
    let (_, nearly_at) = arrivals.iter().find(|(n, _)| *n >= mark).unwrap();

    let e = events(&env)
        .into_iter()
        .find(|e| e["auditID"] == id.as_str() && e["stage"] == "ResponseComplete")
        .expect("the list's ResponseComplete is in the log once the client has it");
    let stamp = e["stageTimestamp"].as_str().unwrap();
    assert!(
        stamp > head_at.as_str() && stamp > nearly_at.as_str() && stamp <= done_at.as_str(),
        "stageTimestamp {stamp}: head at {head_at}, all but 512 KiB at {nearly_at}, done at {done_at}"
    );
    assert_eq!(e["responseStatus"]["code"], 200);
    assert!(e["annotations"]
        .get("portcullis.io/response-aborted")
        .is_none());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_sink_that_cannot_record_the_end_leaves_the_list_incomplete() {
    common::require_kubectl();
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
    // Discovery is not recorded, so kubectl gets as far as the list; nor are the creates that
    // seed it, so the sink's first failure is the list's own event (a strict sink known to
    // fail holds every audited request back before forwarding).
    let policy = kc_dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: None\n    nonResourceURLs: [\"/api\", \"/api/*\", \"/apis\", \"/apis/*\", \"/openapi/*\", \"/version\"]\n  - level: None\n    verbs: [create]\n  - level: Metadata\n",
    )
    .unwrap();
    let start = || async {
        let env = Env::start_with(|c| {
            *c = c
                .replace(
                    "      mode: blocking-strict      # no answer leaves before its event is on disk\n",
                    &format!(
                        "      mode: blocking-strict      # no answer leaves before its event is on disk\n    - name: siem\n      webhook: {{kubeconfig: {}, max_retries: 0, request_timeout: 1s}}\n      mode: blocking-strict\n",
                        kc.display()
                    ),
                )
                .replace(
                    "  policy_file: audit-policy.yaml\n",
                    &format!("  policy_file: {}\n", policy.display()),
                );
        })
        .await;
        seed(&env, 1).await;
        env.sandbox.sandbox.clear_recorded();
        env
    };
    let env = start().await;

    // hyper over h2: the head and most of the body arrive, then the stream is reset.
    let mut client = h2(&env, &env.admin_cert, None).await;
    let resp = client
        .send_request(
            Request::get(format!("https://localhost{LIST}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the head is not held");
    let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();
    let mut body = resp.into_body();
    let mut got = 0usize;
    let ended = loop {
        match body.frame().await {
            Some(Ok(f)) => got += f.into_data().map_or(0, |d| d.len()),
            Some(Err(_)) => break "reset",
            None => break "complete",
        }
    };
    assert_eq!(
        ended, "reset",
        "a complete list ({got} bytes) whose event was lost"
    );
    assert!(
        got > 64 * 1024,
        "the body flowed before its end ({got} bytes)"
    );
    // The upstream served the list.
    let lists = env
        .sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.path == LIST && r.method == http::Method::GET)
        .count();
    assert_eq!(lists, 1);
    // The file sink (strict too, and working) has the event: the list was served upstream.
    let e = events(&env)
        .into_iter()
        .find(|e| e["auditID"] == id.as_str() && e["stage"] == "ResponseComplete")
        .expect("the file sink took the event");
    assert_eq!(e["responseStatus"]["code"], 200);
    // The sink is now known to fail: the next request is held back before forwarding.
    env.stop().await;

    // kubectl (HTTP/2 as well) does not take a cut-off list for an answer: on a new proxy,
    // where the list's own event is the sink's first failure.
    let env = start().await;
    let out = env
        .kubectl(&["get", "configmaps", "-n", "default", "-o", "name"])
        .await;
    assert!(
        !out.status.success(),
        "kubectl succeeded: {}",
        common::stdout(&out)
    );
    let err = common::stderr(&out);
    // Not a refusal: kubectl saw its list cut off ("stream error … INTERNAL_ERROR").
    assert!(err.contains("stream error"), "{err}");
    let listed = env
        .sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.path == LIST && r.method == http::Method::GET)
        .count();
    assert!(listed >= 1, "kubectl's list reached the API server: {err}");
    assert!(
        !common::stdout(&out).contains("configmap/big-3"),
        "{}",
        common::stdout(&out)
    );
    env.stop().await;
}
