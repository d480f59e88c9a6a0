//! Issue 12 items 6 and 8 through the proxy: every answer the proxy makes itself carries the
//! headers kube-apiserver puts on its errors (`Cache-Control: no-cache, private`,
//! `X-Content-Type-Options: nosniff`, JSON), and an early refusal (413 on a declared size, 401)
//! reaches a client that is still uploading, over HTTP/2 and HTTP/1.1, with curl.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{jwt, Env};
use http::Request;
use http_body_util::Full;
use serde_json::json;

fn alice(env: &Env) -> String {
    let pem = std::fs::read_to_string(env.files.dir.join("jwt-signing.key")).unwrap();
    let now = jwt::now();
    jwt::Forge::from_pem(&pem, "demo-1").token(&json!({
        "iss": "https://portcullis-demo.local", "aud": "portcullis", "sub": "alice",
        "groups": ["tenant:team-a"], "iat": now, "nbf": now, "exp": now + 600}))
}

/// Writes (anything but GET) the upstream saw since the last clear.
fn writes(env: &Env) -> Vec<String> {
    env.sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.method != http::Method::GET)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// POST `body_file` with curl; (exit success, response head + body, stderr).
async fn curl_post(
    env: &Env,
    http: &str,
    token: Option<&str>,
    path: &str,
    body_file: &std::path::Path,
) -> (bool, String, String) {
    let port = env.proxy_addr.port();
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", http, "--max-time", "30", "-D", "-"])
        .arg("--cacert")
        .arg(env.files.dir.join("ca.crt"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", "Content-Type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()));
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    cmd.arg(format!("https://localhost:{port}{path}"));
    let out = cmd.output().await.expect("curl runs");
    // HTTP/1.1: curl asks `Expect: 100-continue` for a large body; the interim answer is not
    // the one under test.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let head = stdout
        .strip_prefix("HTTP/1.1 100 Continue\r\n\r\n")
        .unwrap_or(&stdout);
    (
        out.status.success(),
        head.to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether curl's HTTP/2 stream was reset because curl cut its own upload short: seen once in
/// CI (the 413 head, then PROTOCOL_ERROR), traced by a review with a model server to curl 7.88
/// ending its upload at a final answer of 300 or more, shorter than its Content-Length — a
/// malformed request (RFC 9113 §8.1.1) that h2 resets, dropping what of the answer is still
/// queued. The head, checked by the caller, has reached curl then; the body has not.
fn cut_by_a_short_upload(http: &str, ok: bool, err: &str) -> bool {
    http == "--http2" && !ok && err.contains("PROTOCOL_ERROR")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refusal_reaches_a_client_still_uploading() {
    let env = Env::start().await;
    let token = alice(&env);
    // 4 MiB: over the 3 MiB default cap, and far more than the h2 stream window.
    let big = env.dir.path().join("big.json");
    let mut doc =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"k":""#
            .to_vec();
    doc.extend(std::iter::repeat_n(b'a', 4 * 1024 * 1024));
    doc.extend(br#""}}"#);
    std::fs::write(&big, &doc).unwrap();
    let path = "/api/v1/namespaces/team-a/configmaps";
    for http in ["--http2", "--http1.1"] {
        env.sandbox.sandbox.clear_recorded();
        // 413: refused on the declared Content-Length, before any byte is read.
        let (ok, out, err) = curl_post(&env, http, Some(&token), path, &big).await;
        let cut = cut_by_a_short_upload(http, ok, &err);
        assert!(ok || cut, "{http}: curl failed: {err}\n{out}");
        assert!(
            out.starts_with("HTTP/2 413") || out.starts_with("HTTP/1.1 413"),
            "{http}: {out}"
        );
        assert!(
            out.contains("cache-control: no-cache, private"),
            "{http}: {out}"
        );
        assert!(
            cut || out.contains("\"reason\":\"RequestEntityTooLarge\""),
            "{http}: {out}"
        );
        // 401: refused before the body is even looked at.
        let (ok, out, err) = curl_post(&env, http, None, path, &big).await;
        let cut = cut_by_a_short_upload(http, ok, &err);
        assert!(ok || cut, "{http}: curl failed: {err}\n{out}");
        assert!(
            out.starts_with("HTTP/2 401") || out.starts_with("HTTP/1.1 401"),
            "{http}: {out}"
        );
        assert!(
            cut || out.contains("\"reason\":\"Unauthorized\""),
            "{http}: {out}"
        );
        assert!(writes(&env).is_empty(), "{http}: {:?}", writes(&env));
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_made_answer_is_marked_uncacheable() {
    let env = Env::start().await;
    let token = alice(&env);
    let with = |method: &str, path: &str, ct: Option<&str>, body: &'static str, auth: bool| {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        if auth {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        b.body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let pods = "/api/v1/namespaces/team-a/pods";
    let priv_pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x","securityContext":{"privileged":true}}]}}"#;
    let cases = [
        (
            with("GET", "/api/v1/namespaces/a%2Fb/pods", None, "", true),
            400,
        ), // classify
        (with("GET", pods, None, "", false), 401), // authn
        (
            with("GET", "/api/v1/namespaces/team-b/pods", None, "", true),
            403,
        ), // authz
        (with("POST", pods, Some("text/plain"), "x", true), 415), // sanitize
        (
            with(
                "POST",
                pods,
                Some("application/json"),
                r#"{"a":1,"a":2}"#,
                true,
            ),
            400,
        ),
        (
            with("POST", pods, Some("application/json"), priv_pod, true),
            403,
        ), // Pod Security
    ];
    env.sandbox.sandbox.clear_recorded();
    for (req, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = env.request(req, None, true).await;
        assert_eq!(resp.status(), code, "{what}");
        let h = resp.headers();
        assert_eq!(h["cache-control"], "no-cache, private", "{what}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(h["content-type"], "application/json", "{what}");
        assert!(h.contains_key("audit-id"), "{what}");
    }
    assert!(writes(&env).is_empty(), "{:?}", writes(&env));
    // 429: team-a's read burst is 20.
    let mut limited = None;
    for _ in 0..40 {
        let resp = env
            .request(
                with(
                    "GET",
                    "/api/v1/namespaces/team-a/configmaps",
                    None,
                    "",
                    true,
                ),
                None,
                true,
            )
            .await;
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.expect("a 429 within 40 reads");
    assert_eq!(resp.headers()["cache-control"], "no-cache, private");
    env.stop().await;
}

/// An HTTP/1.1 client that waits for `100 Continue` before uploading (`Expect: 100-continue`)
/// gets the refusal as its first answer, never an invitation to upload what the proxy has
/// already refused (RFC 9110 §10.1.1); an accepted write
/// still gets its `100 Continue`, and the upstream sees only that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_awaiting_100_continue_gets_the_refusal_first() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start().await;
    let token = alice(&env);
    env.sandbox.sandbox.clear_recorded();
    let path = "/api/v1/namespaces/team-a/configmaps";
    for (auth, length, want) in [
        (true, 4 * 1024 * 1024, "HTTP/1.1 413"),
        (false, 100, "HTTP/1.1 401"),
    ] {
        let mut tls = common::tls_connect(env.proxy_addr, &env.ca, None, &[b"http/1.1"]).await;
        let bearer = if auth {
            format!("Authorization: Bearer {token}\r\n")
        } else {
            String::new()
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n{bearer}Content-Type: application/json\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            common::read_head(&mut tls),
        )
        .await
        .expect("no answer")
        .expect("closed without an answer");
        assert!(got.starts_with(want), "{want}: {got}");
    }
    // Accepted: 100 Continue, the body, 201.
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"continued"}}"#;
    let mut tls = common::tls_connect(env.proxy_addr, &env.ca, None, &[b"http/1.1"]).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let got = common::read_head(&mut tls).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 100"), "{got}");
    tls.write_all(body.as_bytes()).await.unwrap();
    let got = common::read_head(&mut tls).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 201"), "{got}");
    assert_eq!(writes(&env), [format!("POST {path}")]);
    env.stop().await;
}
