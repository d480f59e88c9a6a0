//! Issue 3 end to end: JWT and certificate authentication, grants ∩ scope, and identity
//! forwarding, through the proxy to the sandbox. Every refusal checks the client's Status *and*
//! that the upstream never saw the request. Tokens are forged here with aws-lc-rs directly.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use bytes::Bytes;
use common::{jwt, Env};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

const ISSUER: &str = "https://portcullis-demo.local";
const AUD: &str = "portcullis";

fn forge(env: &Env) -> jwt::Forge {
    let pem = std::fs::read_to_string(env.files.dir.join("jwt-signing.key")).unwrap();
    jwt::Forge::from_pem(&pem, "demo-1")
}

fn claims(sub: &str, groups: &[&str]) -> Value {
    let now = jwt::now();
    json!({"iss": ISSUER, "aud": AUD, "sub": sub, "groups": groups, "iat": now, "nbf": now, "exp": now + 600, "jti": format!("t-{sub}")})
}

fn req(method: &str, path: &str, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// What reached the upstream since it was last cleared, as `METHOD path`.
fn upstream_saw(env: &Env) -> Vec<String> {
    env.sandbox
        .sandbox
        .recorded()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn status(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not a Status ({e}): {}", String::from_utf8_lossy(body)))
}

/// Send, expect `code` with a Status of `reason`, and that the upstream saw nothing.
async fn refused(env: &Env, r: Request<Full<Bytes>>, code: StatusCode, reason: &str) -> Value {
    refused_with(env, r, None, code, reason).await
}

/// [`refused`], the request sent with a client certificate.
async fn refused_with(
    env: &Env,
    r: Request<Full<Bytes>>,
    cert: Option<&portcullis_sandbox::pki::Issued>,
    code: StatusCode,
    reason: &str,
) -> Value {
    env.sandbox.sandbox.clear_recorded();
    let what = format!("{} {}", r.method(), r.uri());
    let resp = env.request(r, cert, false).await;
    assert_eq!(resp.status(), code, "{what}: {:?}", resp.body());
    let s = status(resp.body());
    assert_eq!(s["kind"], "Status", "{what}");
    assert_eq!(s["reason"], reason, "{what}: {s}");
    assert_eq!(s["code"], code.as_u16(), "{what}");
    let seen = env.sandbox.sandbox.recorded();
    assert!(seen.is_empty(), "{what} reached the upstream: {seen:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_401_and_never_reach_upstream() {
    let env = Env::start().await;
    let f = forge(&env);
    let good = claims("alice", &["tenant:team-a"]);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let now = jwt::now();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no credentials", None),
        ("empty token", Some(String::new())),
        ("expired", Some(f.token(&with("exp", json!(now - 3600))))),
        (
            "not yet valid",
            Some(f.token(&with("nbf", json!(now + 3600)))),
        ),
        (
            "wrong issuer",
            Some(f.token(&with("iss", json!("https://evil.example")))),
        ),
        (
            "wrong audience",
            Some(f.token(&with("aud", json!("someone-else")))),
        ),
        ("alg none", Some(jwt::unsigned(&good))),
        (
            "HS256 keyed with the public key",
            Some(jwt::hs256(&f.public_bytes(), "demo-1", &good)),
        ),
        (
            "unknown kid",
            Some(jwt::Forge::generate("demo-1-rotated").token(&good)),
        ),
        (
            "signed by a stranger under our kid",
            Some(jwt::Forge::generate("demo-1").token(&good)),
        ),
        (
            "tampered payload",
            Some(jwt::tamper(
                &f.token(&good),
                &claims("alice", &["demo:admins"]),
            )),
        ),
        (
            "system:masters in groups",
            Some(f.token(&claims("alice", &["system:masters"]))),
        ),
        ("garbage", Some("not.a.jwt".into())),
        // A name that would rearrange the log line showing it (a bidi override).
        (
            "a bidi override in sub",
            Some(f.token(&with("sub", json!("eve\u{202e}nimda")))),
        ),
        // No leeway on exp, as the API server.
        (
            "expired two seconds ago",
            Some(f.token(&with("exp", json!(now - 2)))),
        ),
        (
            "aud holding a non-string",
            Some(f.token(&with("aud", json!([AUD, 5])))),
        ),
        (
            "groups only as a distributed claim",
            Some(f.token(&{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("groups");
                c["_claim_names"] = json!({"groups": "src1"});
                c["_claim_sources"] = json!({"src1": {"endpoint": "https://idp.example/groups"}});
                c
            })),
        ),
    ];
    for (name, token) in cases {
        let s = refused(
            &env,
            req("GET", "/api/v1/namespaces/team-a/pods", token.as_deref()),
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
        )
        .await;
        assert_eq!(
            s["message"], "Unauthorized",
            "{name}: the 401 must not say why"
        );
    }
    // A non-Bearer scheme is no credential either.
    let mut basic = req("GET", "/api/v1/namespaces/team-a/pods", None);
    basic
        .headers_mut()
        .insert("authorization", "Basic YWRtaW46YWRtaW4=".parse().unwrap());
    refused(&env, basic, StatusCode::UNAUTHORIZED, "Unauthorized").await;
    env.stop().await;
}

/// The `Authorization` header read as kube-apiserver reads it: split on single spaces, the
/// token is the second part. A space before a valid token (`Bearer  <token>`) is no token
/// there: 401 with the API server's warning, and nothing reaches the upstream; the warning
/// comes whenever the API server's bearer authenticator would have run (after a certificate
/// without an identity, before a WebSocket token subprotocol), not when a certificate
/// authenticated. A part after the token is ignored there: the request goes through as the
/// token's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_header_is_split_as_the_api_server_splits_it() {
    let env = Env::start().await;
    let token = forge(&env).token(&claims("alice", &["tenant:team-a"]));
    let path = "/api/v1/namespaces/team-a/configmaps";
    let with_header = |value: String| {
        let mut r = req("GET", path, None);
        r.headers_mut()
            .insert("authorization", value.parse().unwrap());
        r
    };

    for h2 in [false, true] {
        env.sandbox.sandbox.clear_recorded();
        let resp = env
            .request(with_header(format!("Bearer  {token}")), None, h2)
            .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{:?}", resp.body());
        let s = status(resp.body());
        assert_eq!(
            (&s["kind"], &s["reason"]),
            (&json!("Status"), &json!("Unauthorized"))
        );
        assert_eq!(
            resp.headers().get("warning").map(|w| w.to_str().unwrap()),
            Some(
                "299 - \"the provided Authorization header contains extra space before the bearer token, and is ignored\""
            ),
            "h2: {h2}"
        );
        assert!(upstream_saw(&env).is_empty(), "{:?}", upstream_saw(&env));
    }
    // Any other 401 carries no such warning.
    let resp = env
        .request(with_header("Bearer not.a.jwt".into()), None, false)
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("warning").is_none());
    let warning = |resp: &http::Response<Bytes>| {
        resp.headers()
            .get("warning")
            .map(|w| w.to_str().unwrap().to_owned())
    };
    let space_warning = Some(
        "299 - \"the provided Authorization header contains extra space before the bearer token, and is ignored\"".to_owned(),
    );
    // The API server's bearer authenticator runs after a client certificate without an
    // identity (and warns): 401 with the warning, nothing upstream.
    let nameless = env
        .ca
        .client_cert("eve\u{202e}nimda", &["demo:admins"])
        .unwrap();
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            with_header(format!("Bearer  {token}")),
            Some(&nameless),
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{:?}", resp.body());
    assert_eq!(warning(&resp), space_warning);
    assert!(upstream_saw(&env).is_empty(), "{:?}", upstream_saw(&env));
    // A certificate that authenticates wins before the header is read: no warning.
    let admin = env.ca.client_cert("carol", &["demo:admins"]).unwrap();
    let resp = env
        .request(with_header(format!("Bearer  {token}")), Some(&admin), false)
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    assert_eq!(warning(&resp), None);
    // A WebSocket token subprotocol authenticates after the header failed: the API server's
    // answer (here its 404 for an exec of a pod that does not exist, as alice), with the
    // warning.
    let mut ws = common::websocket_get(
        "/api/v1/namespaces/team-a/pods/nope/exec?command=cat&stdin=true&stdout=true",
    );
    ws.headers_mut().insert(
        "sec-websocket-protocol",
        format!(
            "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.{}",
            URL_SAFE_NO_PAD.encode(&token)
        )
        .parse()
        .unwrap(),
    );
    ws.headers_mut()
        .insert("authorization", format!("Bearer  {token}").parse().unwrap());
    env.sandbox.sandbox.clear_recorded();
    let resp = env.request(ws, None, false).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{:?}", resp.body());
    assert_eq!(warning(&resp), space_warning);
    let exec = env.sandbox.sandbox.recorded();
    assert_eq!(exec.len(), 1, "{exec:?}");
    assert_eq!(exec[0].headers["impersonate-user"], "alice");

    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(with_header(format!("Bearer {token} trailing")), None, false)
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    assert!(resp.headers().get("warning").is_none());
    let seen = env.sandbox.sandbox.recorded();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, path);
    assert_eq!(
        seen[0]
            .headers
            .get("impersonate-user")
            .map(|v| v.to_str().unwrap()),
        Some("alice")
    );
    env.stop().await;
}

/// A certificate name the log line showing it would display rearranged or hidden (a bidi
/// override, a C1 control), in its CN or in an O, is no identity: 401, and nothing reaches the
/// upstream. A name beyond ASCII that shows as it is, is one (`josé` of `demo:admins`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_names_that_would_rearrange_a_log_line_are_401() {
    let env = Env::start().await;
    let cases = [
        ("bidi override in CN", "eve\u{202e}nimda", "demo:admins"),
        ("C1 control in CN", "jo\u{85}s\u{e9}", "demo:admins"),
        ("bidi isolate in O", "carol", "demo:admins\u{2066}"),
    ];
    for (name, cn, o) in cases {
        let cert = env.ca.client_cert(cn, &[o]).unwrap();
        let s = refused_with(
            &env,
            req("GET", "/api/v1/namespaces/team-a/pods", None),
            Some(&cert),
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
        )
        .await;
        assert_eq!(s["message"], "Unauthorized", "{name}");
    }
    // The same harness with a name that shows as it is: authenticated, and forwarded.
    let cert = env.ca.client_cert("jos\u{e9}", &["demo:admins"]).unwrap();
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            req("GET", "/api/v1/namespaces/team-a/pods", None),
            Some(&cert),
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    assert_eq!(
        upstream_saw(&env),
        vec!["GET /api/v1/namespaces/team-a/pods".to_string()]
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_expired_client_certificates_cannot_connect() {
    let env = Env::start().await;
    let stranger = portcullis_sandbox::pki::Ca::new("someone else's CA").unwrap();
    let foreign = stranger.client_cert("admin", &["demo:admins"]).unwrap();
    let expired = env.ca.expired_client_cert("admin").unwrap();
    for (name, cert) in [("foreign CA", &foreign), ("expired", &expired)] {
        env.sandbox.sandbox.clear_recorded();
        assert!(
            !cert_connects(&env, cert).await,
            "{name} certificate was accepted"
        );
        assert!(
            env.sandbox.sandbox.recorded().is_empty(),
            "{name}: upstream saw a request"
        );
    }
    // The same harness accepts a valid certificate, so the refusals above are not a broken client.
    assert!(cert_connects(&env, &env.admin_cert).await);
    env.stop().await;
}

/// A client certificate's validity period is checked on every request, as kube-apiserver's
/// x509 authenticator does: once it has expired, a connection opened while it was valid and a
/// TLS session resumed from such a connection (rustls resumes without verifying the
/// certificate again) are answered 401, and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_certificate_is_refused_on_open_and_resumed_connections() {
    use rustls::HandshakeKind::{Full, Resumed};
    let env = Env::start().await;
    let lifetime = std::time::Duration::from_secs(6);
    let issued = std::time::Instant::now();
    let cert = env.ca.client_cert_valid_for("carol", lifetime).unwrap();
    let config = std::sync::Arc::new(common::client_tls(&env.ca, Some(&cert), &[b"http/1.1"]));

    let (kind, mut open) = connect(&env, &config).await.expect("first connection");
    assert_eq!(kind, Some(Full));
    assert_eq!(common::get_api(&mut open).await, Some(StatusCode::OK));
    let (kind, mut resumed) = connect(&env, &config).await.expect("second connection");
    assert_eq!(
        kind,
        Some(Resumed),
        "a second connection resumes the session"
    );
    assert_eq!(common::get_api(&mut resumed).await, Some(StatusCode::OK));
    assert!(
        issued.elapsed() < lifetime,
        "the certificate expired before the test's first requests: rerun on a less busy machine"
    );

    // Past the certificate's notAfter (whole seconds) with a margin.
    let past = lifetime + std::time::Duration::from_millis(1500);
    tokio::time::sleep(past.saturating_sub(issued.elapsed())).await;
    env.sandbox.sandbox.clear_recorded();
    assert_eq!(
        common::get_api(&mut open).await,
        Some(StatusCode::UNAUTHORIZED),
        "the connection opened while the certificate was valid"
    );
    let (kind, mut late) = connect(&env, &config).await.expect("third connection");
    assert_eq!(kind, Some(Resumed), "the client resumed its session");
    assert_eq!(
        common::get_api(&mut late).await,
        Some(StatusCode::UNAUTHORIZED),
        "a session resumed after the certificate expired"
    );
    assert!(
        env.sandbox.sandbox.recorded().is_empty(),
        "upstream saw a request"
    );
    // A full handshake with the expired certificate fails, as it did before.
    assert!(!cert_connects(&env, &cert).await);
    env.stop().await;
}

/// A client CA outside its validity period anchors nothing, as in kube-apiserver (Go's
/// verification checks the root's dates too): a certificate of a CA that expired before the
/// proxy started cannot connect; one of a CA that expires while the proxy runs works until
/// then, and after it its open connection and a resumed session are answered 401 and a new
/// handshake fails — nothing reaches the upstream. The bundle's current CA is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_outside_its_validity_period_anchors_nothing() {
    use portcullis_sandbox::pki::Ca;
    use rustls::HandshakeKind::{Full, Resumed};
    let expired = Ca::expired("retired CA").unwrap();
    let lifetime = std::time::Duration::from_secs(6);
    let issued = std::time::Instant::now();
    let short = Ca::valid_for("short-lived CA", lifetime).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (old_pem, short_pem) = (dir.path().join("old.crt"), dir.path().join("short.crt"));
    std::fs::write(&old_pem, &expired.cert.cert_pem).unwrap();
    std::fs::write(&short_pem, &short.cert.cert_pem).unwrap();
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let env = Env::start_in_front_of(ca, sandbox, |c| {
        *c = c.replace(
            "    ca_files: [ca.crt]\n",
            &format!(
                "    ca_files: [ca.crt, {}, {}]\n",
                old_pem.display(),
                short_pem.display()
            ),
        );
    })
    .await;

    let retired = expired.client_cert("dave", &[]).unwrap();
    env.sandbox.sandbox.clear_recorded();
    assert!(
        !cert_connects(&env, &retired).await,
        "a certificate of an expired CA was accepted"
    );
    assert!(
        env.sandbox.sandbox.recorded().is_empty(),
        "upstream saw a request"
    );

    let cert = short.client_cert("carol", &[]).unwrap();
    let config = std::sync::Arc::new(common::client_tls(&env.ca, Some(&cert), &[b"http/1.1"]));
    let (kind, mut open) = connect(&env, &config).await.expect("first connection");
    assert_eq!(kind, Some(Full));
    assert_eq!(common::get_api(&mut open).await, Some(StatusCode::OK));
    let (kind, mut resumed) = connect(&env, &config).await.expect("second connection");
    assert_eq!(
        kind,
        Some(Resumed),
        "a second connection resumes the session"
    );
    assert_eq!(common::get_api(&mut resumed).await, Some(StatusCode::OK));
    assert!(
        issued.elapsed() < lifetime,
        "the CA expired before the test's first requests: rerun on a less busy machine"
    );

    // Past the CA's notAfter (whole seconds) with a margin.
    let past = lifetime + std::time::Duration::from_millis(1500);
    tokio::time::sleep(past.saturating_sub(issued.elapsed())).await;
    env.sandbox.sandbox.clear_recorded();
    assert_eq!(
        common::get_api(&mut open).await,
        Some(StatusCode::UNAUTHORIZED),
        "the connection opened while its CA was in force"
    );
    assert_eq!(
        common::get_api(&mut resumed).await,
        Some(StatusCode::UNAUTHORIZED),
        "the session resumed while its CA was in force"
    );
    assert!(
        !cert_connects(&env, &cert).await,
        "a new handshake under the expired CA"
    );
    assert!(
        env.sandbox.sandbox.recorded().is_empty(),
        "upstream saw a request"
    );
    // The bundle's current CA still vouches for its clients.
    assert!(cert_connects(&env, &env.admin_cert).await);
    env.stop().await;
}

/// A tenant's default rules do not write its namespace's quota and limits (the platform's
/// share of the cluster; Kubernetes' `admin` and `edit` roles only read them), nor the storage
/// capacities the scheduler reads for every namespace, nor anything through the legacy
/// `/api/v1/proxy/` paths: 403 from the proxy, nothing upstream. Reads stay allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_does_not_write_its_quota_limits_or_storage_capacities() {
    let env = Env::start().await;
    let t = forge(&env).token(&claims("alice", &["tenant:team-a"]));
    let t = Some(t.as_str());
    for (method, path) in [
        ("DELETE", "/api/v1/namespaces/team-a/resourcequotas/compute"),
        ("POST", "/api/v1/namespaces/team-a/resourcequotas"),
        ("PATCH", "/api/v1/namespaces/team-a/limitranges/defaults"),
        (
            "POST",
            "/apis/storage.k8s.io/v1/namespaces/team-a/csistoragecapacities",
        ),
        ("GET", "/api/v1/proxy/namespaces/team-a/services/web/"),
    ] {
        let s = refused(
            &env,
            req(method, path, t),
            StatusCode::FORBIDDEN,
            "Forbidden",
        )
        .await;
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .contains("User \"alice\" cannot"),
            "{s}"
        );
    }
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            req("GET", "/api/v1/namespaces/team-a/resourcequotas", t),
            None,
            false,
        )
        .await;
    assert_ne!(resp.status(), StatusCode::FORBIDDEN, "{:?}", resp.body());
    assert_eq!(
        upstream_saw(&env),
        ["GET /api/v1/namespaces/team-a/resourcequotas"]
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_apply_a_namespace_into_existence() {
    // team-a may change its namespaces (`team-a`, `team-a-*`): a rule naming `namespaces`.
    let env = Env::start_with(|c| {
        *c = c.replace(
            "      namespaces: [team-a]\n      subjects: [{group: \"tenant:team-a\"}]\n",
            "      namespaces: [team-a, \"team-a-*\"]\n      subjects: [{group: \"tenant:team-a\"}]\n      rules:\n        - {verbs: [\"*\"], api_groups: [\"*\"], resources: [\"*\"]}\n        - {verbs: [\"*\"], api_groups: [\"\"], resources: [namespaces]}\n",
        )
    })
    .await;
    let t = forge(&env).token(&claims("alice", &["tenant:team-a"]));
    // A server-side apply of namespace `name`, as alice.
    let apply = |name: &str| {
        let body = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"x": "y"}}});
        let mut r = req(
            "PATCH",
            &format!("/api/v1/namespaces/{name}?fieldManager=t"),
            Some(&t),
        );
        r.headers_mut().insert(
            "content-type",
            "application/apply-patch+yaml".parse().unwrap(),
        );
        *r.body_mut() = Full::new(Bytes::from(body.to_string()));
        env.request(r, None, false)
    };
    // Its own namespace: changed.
    let resp = apply("team-a").await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    // A new one matching its glob: a create, which is cluster-wide (`POST /api/v1/namespaces`
    // is refused it as well) — the apply never reaches the API server.
    env.sandbox.sandbox.clear_recorded();
    let resp = apply("team-a-new").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{:?}", resp.body());
    assert_eq!(upstream_saw(&env), ["GET /api/v1/namespaces/team-a-new"]);
    env.stop().await;
}

/// An identity that may patch Deployments but not create them (the demo's `ci` grant) cannot
/// apply one into existence by making its `Content-Type` unreadable as text: the API server
/// reads the media type before the first `;` byte for byte and would apply (create) it, so a
/// byte outside visible ASCII is a 400 before anything is judged, and the upstream never sees
/// the request. Without it, the authorization layer took the value for "not an apply" and
/// the sandbox received the PATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_content_type_does_not_dodge_the_create_guard() {
    let env = Env::start().await;
    let t = forge(&env).token(&claims("ci-bot", &["ci"]));
    let apply = |content_type: &[u8]| {
        let body = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "brand-new"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"securityContext": {"runAsNonRoot": true,
                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{"name": "c", "image": "nginx",
                            "securityContext": {"allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}}}]}}}});
        let mut r = req(
            "PATCH",
            "/apis/apps/v1/namespaces/team-a/deployments/brand-new?fieldManager=ci",
            Some(&t),
        );
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_bytes(content_type).unwrap(),
        );
        *r.body_mut() = Full::new(Bytes::from(body.to_string()));
        r
    };
    let s = refused(
        &env,
        apply(b"application/apply-patch+yaml; x=\xff"),
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(
        s["message"].as_str().unwrap().contains("Content-Type"),
        "{s}"
    );
    // Readable, the same apply is the create the grant does not allow: only reads of the
    // (absent) object reach the upstream.
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            apply(b"application/apply-patch+yaml; charset=utf-8"),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{:?}", resp.body());
    let seen = upstream_saw(&env);
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|r| r == "GET /apis/apps/v1/namespaces/team-a/deployments/brand-new"),
        "{seen:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_token_stays_in_its_namespace() {
    // Refused requests spend the read bucket too (the limiter sits before authorization): room
    // for the many refusals below.
    let env = Env::start_with(|c| {
        *c = c.replace(
            "team-a: {reads: {rate: 5/s, burst: 20}",
            "team-a: {reads: {rate: 50/s, burst: 500}",
        )
    })
    .await;
    let t = forge(&env).token(&claims("alice", &["tenant:team-a"]));
    let t = Some(t.as_str());

    // Allowed in team-a.
    env.sandbox.sandbox.clear_recorded();
    let ok = env
        .request(req("GET", "/api/v1/namespaces/team-a/pods", t), None, true)
        .await;
    assert_eq!(ok.status(), StatusCode::OK, "{:?}", ok.body());

    let s = refused(
        &env,
        req("GET", "/api/v1/namespaces/team-b/pods", t),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    assert_eq!(
        s["message"],
        r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "team-b""#
    );
    assert_eq!(s["details"]["kind"], "pods");

    let s = refused(
        &env,
        req("GET", "/api/v1/pods", t),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    assert_eq!(
        s["message"],
        r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" at the cluster scope"#
    );

    refused(
        &env,
        req("GET", "/api/v1/watch/namespaces/team-b/pods", t),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    refused(
        &env,
        req("GET", "/api/v1/namespaces/team-b/pods?watch=true", t),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    refused(
        &env,
        req("DELETE", "/api/v1/namespaces/team-b/configmaps", t),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    refused(
        &env,
        req("GET", "/apis/apps/v1/namespaces/team-b/deployments/web", t),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    refused(
        &env,
        req("GET", "/api/v1/namespaces", t),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;

    // Path tricks are refused before authorization even looks at them.
    for path in [
        "/api/v1/namespaces/team-a/../team-b/pods",
        "/api/v1/namespaces/team-a/%2e%2e/team-b/pods",
        "/api/v1/namespaces/team-a%2F..%2Fteam-b/pods",
        "/api/v1/namespaces/team-a//../team-b/pods",
        "//api/v1/namespaces/team-b/pods",
    ] {
        refused(
            &env,
            req("GET", path, t),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        )
        .await;
    }
    // So is a query the API server's Go would read as empty (a name-scoped list would run as
    // a list of everything).
    let padded = format!(
        "/api/v1/namespaces/team-a/pods?fieldSelector=metadata.name%3Dweb{}",
        "&".repeat(1000)
    );
    let s = refused(
        &env,
        req("GET", &padded, t),
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert_eq!(
        s["message"],
        "invalid request path: query has more than 1000 parameters"
    );

    // Discovery stays open to every authenticated identity (kubectl needs it).
    for path in ["/api", "/apis", "/api/v1", "/apis/apps/v1", "/version"] {
        let r = env.request(req("GET", path, t), None, true).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_narrows_and_websocket_exec_needs_create() {
    let env = Env::start().await;
    let f = forge(&env);
    // alice may do everything in team-a, but this token is scoped to reading pods and get on pods/exec.
    let mut c = claims("alice", &["tenant:team-a"]);
    c["portcullis.io/scope"] = json!([
        {"namespaces": ["team-a"], "verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]},
        {"namespaces": ["team-a"], "verbs": ["get"], "apiGroups": [""], "resources": ["pods/exec"]}
    ]);
    let t = f.token(&c);
    let t = Some(t.as_str());
    let ok = env
        .request(req("GET", "/api/v1/namespaces/team-a/pods", t), None, true)
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    refused(
        &env,
        req("GET", "/api/v1/namespaces/team-a/configmaps", t),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    refused(
        &env,
        req("DELETE", "/api/v1/namespaces/team-a/pods/x", t),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;

    // A scope can never widen: scoped to team-b, alice still cannot read team-b.
    let mut wide = claims("alice", &["tenant:team-a"]);
    wide["portcullis.io/scope"] =
        json!([{"namespaces": ["team-b"], "verbs": ["*"], "resources": ["*"]}]);
    let w = f.token(&wide);
    refused(
        &env,
        req("GET", "/api/v1/namespaces/team-b/pods", Some(&w)),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;

    // WebSocket exec is a create, so `get` on pods/exec is not enough.
    let mut ws = req(
        "GET",
        "/api/v1/namespaces/team-a/pods/web/exec?command=id&stdout=true",
        t,
    );
    for (k, v) in [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-protocol", "v5.channel.k8s.io"),
    ] {
        ws.headers_mut().insert(k, v.parse().unwrap());
    }
    let s = refused(&env, ws, StatusCode::FORBIDDEN, "Forbidden").await;
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains(r#"cannot create resource "pods/exec""#),
        "{s}"
    );
    env.stop().await;
}

/// Refused before the upstream: a tenant's legacy
/// `bindings` (it picks a node, as `pods/binding`); an impersonated extra that would arrive as
/// the proxy's own tenant once its upper-case key is lower-cased; groups with an empty
/// `Impersonate-User` (no user, as in the API server). The caller may impersonate anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_and_forged_impersonation_are_refused_before_the_upstream() {
    let env = Env::start().await;
    let alice = forge(&env).token(&claims("alice", &["tenant:team-a"]));
    refused(
        &env,
        req("POST", "/api/v1/namespaces/team-a/bindings", Some(&alice)),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    let root = forge(&env).token(&claims("root", &["demo:admins"]));
    let with = |pairs: &[(&str, &str)]| {
        let mut r = req("GET", "/api/v1/namespaces/team-a/pods", Some(&root));
        for (k, v) in pairs {
            r.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        r
    };
    let s = refused(
        &env,
        with(&[
            ("impersonate-user", "bob"),
            ("impersonate-extra-%50ortcullis.io%2ftenant", "team-b"),
        ]),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    assert!(
        s["message"]
            .as_str()
            .unwrap_or_default()
            .contains("the proxy sets this extra itself"),
        "{s}"
    );
    refused(
        &env,
        with(&[("impersonate-user", ""), ("impersonate-group", "dev")]),
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    // A name holding a character that hides or reorders text, or a C1 control.
    for name in ["bob\u{202e}nimda", "b\u{200b}ob", "bo\u{85}b"] {
        refused(
            &env,
            with(&[("impersonate-user", name)]),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        )
        .await;
    }
    // A value that is not UTF-8 (Latin-1 `josé`): no name the API server could read.
    let mut latin1 = with(&[]);
    latin1.headers_mut().append(
        "impersonate-user",
        http::HeaderValue::from_bytes(b"jos\xe9").unwrap(),
    );
    refused(&env, latin1, StatusCode::BAD_REQUEST, "BadRequest").await;
    // A name beyond ASCII is taken, and reaches the API server as its UTF-8 bytes.
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            with(&[
                ("impersonate-user", "josé"),
                ("impersonate-group", "demo:admins"),
            ]),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    let seen = env.sandbox.sandbox.recorded();
    let sent: Vec<&[u8]> = seen
        .iter()
        .filter_map(|r| r.headers.get("impersonate-user"))
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(sent, ["josé".as_bytes()]);
    env.stop().await;
}

/// A Secret of type `kubernetes.io/service-account-token` gets a token that works outside the
/// proxy: a tenant (whose rules do not name `serviceaccounts/token`) may not create one — as
/// JSON, or through kubectl's typed create (protobuf) — nor turn an existing one to another
/// service account with a patch; an Opaque Secret and the admin's token Secret pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_secrets_need_what_a_token_request_needs() {
    common::require_kubectl();
    let env = Env::start().await;
    let alice = forge(&env).token(&claims("alice", &["tenant:team-a"]));
    let with_body = |method: &str, path: &str, ct: &str, body: Value| {
        let mut r = req(method, path, Some(&alice));
        r.headers_mut().insert("content-type", ct.parse().unwrap());
        *r.body_mut() = Full::new(Bytes::from(body.to_string()));
        r
    };
    let secret = |name: &str, ty: &str, sa: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
            "metadata": {"name": name, "annotations": {"kubernetes.io/service-account.name": sa}}})
    };
    let s = refused(
        &env,
        with_body(
            "POST",
            "/api/v1/namespaces/team-a/secrets",
            "application/json",
            secret("tok", "kubernetes.io/service-account-token", "default"),
        ),
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    assert_eq!(
        s["message"],
        r#"serviceaccounts "default" is forbidden: User "alice" cannot create resource "serviceaccounts/token" in API group "" in the namespace "team-a": a Secret of type kubernetes.io/service-account-token gets a token for service account "default""#
    );

    // kubectl's typed create sends protobuf: decoded and refused the same way.
    let team_a = env.files.team_a_kubeconfig.clone();
    let home = env.dir.path();
    env.sandbox.sandbox.clear_recorded();
    let out = common::kubectl(
        &team_a,
        home,
        &[
            "-n",
            "team-a",
            "create",
            "secret",
            "generic",
            "tok2",
            "--type=kubernetes.io/service-account-token",
        ],
    )
    .await;
    assert!(
        common::stderr(&out).contains(r#"failed to create secret serviceaccounts is forbidden: User "alice" cannot create resource "serviceaccounts/token" in API group "" in the namespace "team-a": a Secret of type kubernetes.io/service-account-token gets a token for service account """#),
        "{}",
        common::stderr(&out)
    );
    let writes: Vec<_> = env
        .sandbox
        .sandbox
        .recorded()
        .into_iter()
        .filter(|r| r.method != http::Method::GET)
        .collect();
    assert!(writes.is_empty(), "reached the upstream: {writes:?}");
    // An Opaque Secret is an ordinary write.
    let out = common::kubectl(
        &team_a,
        home,
        &[
            "-n",
            "team-a",
            "create",
            "secret",
            "generic",
            "plain",
            "--from-literal=a=b",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    // Labelling it is not pinned (it cannot make or re-point a token Secret), nor read by the
    // proxy: the one GET upstream is kubectl's own.
    env.sandbox.sandbox.clear_recorded();
    let out = common::kubectl(
        &team_a,
        home,
        &["-n", "team-a", "label", "secret", "plain", "x=y"],
    )
    .await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let seen = env.sandbox.sandbox.recorded();
    let gets = seen
        .iter()
        .filter(|r| r.method == http::Method::GET && r.path.ends_with("/secrets/plain"))
        .count();
    assert!(gets <= 1, "{gets} reads of the Secret");
    let patch: Value = seen
        .iter()
        .find(|r| r.method == http::Method::PATCH)
        .and_then(|r| r.body.as_ref())
        .map(|b| serde_json::from_slice(b).unwrap())
        .expect("the label's patch");
    assert!(
        patch.pointer("/metadata/resourceVersion").is_none(),
        "{patch}"
    );

    // The admin (a grant whose `*` covers serviceaccounts/token) may create one; the tenant
    // may not point it at another account with a merge patch (the current object is read to
    // know its type: only that GET reaches the upstream).
    let admin = env
        .request(
            {
                let mut r = req("POST", "/api/v1/namespaces/team-a/secrets", None);
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                *r.body_mut() = Full::new(Bytes::from(
                    secret("ci-token", "kubernetes.io/service-account-token", "default")
                        .to_string(),
                ));
                r
            },
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(admin.status(), StatusCode::CREATED, "{:?}", admin.body());
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            with_body(
                "PATCH",
                "/api/v1/namespaces/team-a/secrets/ci-token",
                "application/merge-patch+json",
                json!({"metadata": {"annotations": {"kubernetes.io/service-account.name": "builder"}}, "data": null}),
            ),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{:?}", resp.body());
    assert_eq!(status(resp.body())["reason"], "Forbidden");
    let seen = upstream_saw(&env);
    assert_eq!(seen, ["GET /api/v1/namespaces/team-a/secrets/ci-token"]);
    // A server-side apply that would create one: judged as the create it is.
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            with_body(
                "PATCH",
                "/api/v1/namespaces/team-a/secrets/tok3?fieldManager=t",
                "application/apply-patch+yaml",
                secret("tok3", "kubernetes.io/service-account-token", "default"),
            ),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{:?}", resp.body());
    let seen = upstream_saw(&env);
    assert_eq!(seen, ["GET /api/v1/namespaces/team-a/secrets/tok3"]);

    // An update that leaves the token Secret's type and account as they are passes, pinned to
    // the version it was judged on (the body carried none: unconditional otherwise); one with
    // an older version is the API server's conflict, before it.
    let ci_token = "/api/v1/namespaces/team-a/secrets/ci-token";
    let mut same = secret("ci-token", "kubernetes.io/service-account-token", "default");
    same["data"] = json!({"note": "eA=="});
    let before = env
        .request(req("GET", ci_token, None), Some(&env.admin_cert), true)
        .await;
    let judged_rv = serde_json::from_slice::<Value>(before.body()).unwrap()["metadata"]
        ["resourceVersion"]
        .clone();
    assert!(judged_rv.is_string(), "{:?}", before.body());
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            with_body("PUT", ci_token, "application/json", same.clone()),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    let seen = env.sandbox.sandbox.recorded();
    let put: Value = seen
        .iter()
        .find(|r| r.method == http::Method::PUT)
        .and_then(|r| r.body.as_ref())
        .map(|b| serde_json::from_slice(b).unwrap())
        .expect("the update reached the upstream");
    assert_eq!(put["metadata"]["resourceVersion"], judged_rv, "{put}");
    let read_rv = judged_rv;
    let mut stale = same.clone();
    stale["metadata"]["resourceVersion"] = read_rv.clone();
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            with_body("PUT", ci_token, "application/json", stale),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT, "{:?}", resp.body());
    assert_eq!(status(resp.body())["reason"], "Conflict");
    let seen = upstream_saw(&env);
    assert_eq!(seen, [format!("GET {ci_token}")]);

    // A tenant whose RBAC allows updating Secrets but not reading them is judged on the body
    // alone: the token Secret counts as new (the TokenRequest refusal), not "may not get".
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "team-a-workloads", "namespace": "team-a"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update"]}]});
    let narrowed = env
        .request(
            {
                let mut r = req(
                    "PUT",
                    "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/team-a-workloads",
                    None,
                );
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                *r.body_mut() = Full::new(Bytes::from(role.to_string()));
                r
            },
            Some(&env.admin_cert),
            true,
        )
        .await;
    assert_eq!(narrowed.status(), StatusCode::OK, "{:?}", narrowed.body());
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            with_body("PUT", ci_token, "application/json", same),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{:?}", resp.body());
    assert_eq!(
        status(resp.body())["message"],
        r#"serviceaccounts "default" is forbidden: User "alice" cannot create resource "serviceaccounts/token" in API group "" in the namespace "team-a": a Secret of type kubernetes.io/service-account-token gets a token for service account "default""#
    );
    let seen = upstream_saw(&env);
    assert_eq!(seen, [format!("GET {ci_token}")]);
    env.stop().await;
}

/// Re-activating a token the API server invalidated (its cleaner's label removed or emptied)
/// is minting though type and account stay: refused like the TokenRequest, with only the read
/// of the current Secret reaching the API server. Another label, or the token itself, passes
/// (a cleared token is refilled by the token controller under the same label).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_activating_an_invalidated_token_secret_is_minting() {
    let env = Env::start().await;
    let alice = forge(&env).token(&claims("alice", &["tenant:team-a"]));
    let with_body = |method: &str, path: &str, ct: &str, body: Value| {
        let mut r = req(method, path, Some(&alice));
        r.headers_mut().insert("content-type", ct.parse().unwrap());
        *r.body_mut() = Full::new(Bytes::from(body.to_string()));
        r
    };
    let ci_token = "/api/v1/namespaces/team-a/secrets/ci-token";
    let mut admin_req = req("POST", "/api/v1/namespaces/team-a/secrets", None);
    admin_req
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    *admin_req.body_mut() = Full::new(Bytes::from(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "ci-token", "annotations": {"kubernetes.io/service-account.name": "default"},
                "labels": {"kubernetes.io/legacy-token-invalid-since": "2026-01-01"},
                // As the API server records it after manager m force-applied the label.
                "managedFields": [{"manager": "m", "operation": "Apply", "apiVersion": "v1",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels":
                        {"f:kubernetes.io/legacy-token-invalid-since": {}}}}}]},
            "data": {"token": "ZXlK"}})
        .to_string(),
    ));
    let created = env.request(admin_req, Some(&env.admin_cert), true).await;
    assert_eq!(
        created.status(),
        StatusCode::CREATED,
        "{:?}",
        created.body()
    );
    for patch in [
        json!({"metadata": {"labels": {"kubernetes.io/legacy-token-invalid-since": null}}}),
        json!({"metadata": {"labels": {"kubernetes.io/legacy-token-invalid-since": ""}}}),
    ] {
        env.sandbox.sandbox.clear_recorded();
        let resp = env
            .request(
                with_body(
                    "PATCH",
                    ci_token,
                    "application/merge-patch+json",
                    patch.clone(),
                ),
                None,
                false,
            )
            .await;
        assert_eq!(
            resp.status(),
            StatusCode::FORBIDDEN,
            "{patch}: {:?}",
            resp.body()
        );
        assert!(
            status(resp.body())["message"]
                .as_str()
                .unwrap()
                .contains(r#"cannot create resource "serviceaccounts/token""#),
            "{:?}",
            resp.body()
        );
        let seen = upstream_saw(&env);
        assert_eq!(seen, [format!("GET {ci_token}")], "{patch}");
    }
    // The same through a JSON patch.
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            with_body(
                "PATCH",
                ci_token,
                "application/json-patch+json",
                json!([{"op": "remove", "path": "/metadata/labels/kubernetes.io~1legacy-token-invalid-since"}]),
            ),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{:?}", resp.body());
    assert_eq!(upstream_saw(&env), [format!("GET {ci_token}")]);
    // Another label, or the token, is an edit like any other.
    for patch in [
        json!({"metadata": {"labels": {"team": "a"}}}),
        json!({"stringData": {"token": ""}}),
    ] {
        let resp = env
            .request(
                with_body(
                    "PATCH",
                    ci_token,
                    "application/merge-patch+json",
                    patch.clone(),
                ),
                None,
                false,
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{patch}: {:?}", resp.body());
    }
    // A re-apply by m that leaves the label out, mentioning nothing token-related, removes it
    // (m owns it alone): refused like the rest, with only the read of the current Secret.
    env.sandbox.sandbox.clear_recorded();
    let bare = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ci-token"}});
    let resp = env
        .request(
            with_body(
                "PATCH",
                &format!("{ci_token}?fieldManager=m"),
                "application/apply-patch+yaml",
                bare,
            ),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{:?}", resp.body());
    assert_eq!(upstream_saw(&env), [format!("GET {ci_token}")]);
    // A server-side apply of the same token Secret by a manager that never applied the label
    // (the configuration carries no token and no such label) leaves it in place: passes.
    let config = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "ci-token", "annotations": {"kubernetes.io/service-account.name": "default"},
            "labels": {"team": "b"}}});
    let resp = env
        .request(
            with_body(
                "PATCH",
                &format!("{ci_token}?fieldManager=tenant"),
                "application/apply-patch+yaml",
                config,
            ),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    let stored: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(
        stored["metadata"]["labels"]["kubernetes.io/legacy-token-invalid-since"], "2026-01-01",
        "{stored}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_headers_are_replaced_by_the_proxys() {
    let env = Env::start().await;
    let t = forge(&env).token(&claims("alice", &["tenant:team-a"]));
    // A client's Impersonate-* headers are a request the grants must allow (issue 12): alice
    // has no impersonate grant, so they are refused, never silently dropped or forwarded.
    let mut r = req("GET", "/api/v1/namespaces/team-a/pods", Some(&t));
    for (k, v) in [
        ("connection", "Impersonate-User, Impersonate-Group"),
        ("impersonate-user", "system:admin"),
        ("impersonate-group", "system:masters"),
        ("impersonate-uid", "0"),
        ("impersonate-extra-scopes", "everything"),
    ] {
        r.headers_mut().append(k, v.parse().unwrap());
    }
    let s = refused(&env, r, StatusCode::FORBIDDEN, "Forbidden").await;
    assert_eq!(
        s["message"],
        r#"users "system:admin" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
    );
    // Front-proxy identity headers are replaced silently, as before.
    let mut r = req("GET", "/api/v1/namespaces/team-a/pods", Some(&t));
    for (k, v) in [
        ("x-remote-user", "root"),
        ("x-remote-group", "system:masters"),
    ] {
        r.headers_mut().append(k, v.parse().unwrap());
    }
    env.sandbox.sandbox.clear_recorded();
    let resp = env.request(r, None, false).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    let seen = env.sandbox.sandbox.recorded();
    let h = &seen[0].headers;
    let names: std::collections::BTreeSet<&str> = h
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("impersonate-") || k.starts_with("x-remote-"))
        .collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "impersonate-extra-portcullis.io%2ftenant",
            "impersonate-extra-portcullis.io%2ftoken-id",
            "impersonate-group",
            "impersonate-user"
        ],
        "{h:?}"
    );
    assert_eq!(h["impersonate-user"], "alice");
    assert_eq!(
        h.get_all("impersonate-group").iter().collect::<Vec<_>>(),
        ["tenant:team-a"]
    );
    assert_eq!(h["impersonate-extra-portcullis.io%2ftenant"], "team-a");
    assert_eq!(h["impersonate-extra-portcullis.io%2ftoken-id"], "t-alice");
    assert_eq!(
        h["authorization"].to_str().unwrap(),
        format!("Bearer {}", env.proxy_token())
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_with_tenant_and_ci_kubeconfigs() {
    common::require_kubectl();
    let env = Env::start().await;
    let team_a = env.files.dir.join("team-a.kubeconfig");
    let ci = env.files.dir.join("ci.kubeconfig");
    let home = env.dir.path();

    let out = common::kubectl(
        &team_a,
        home,
        &[
            "-n",
            "team-a",
            "create",
            "configmap",
            "mine",
            "--from-literal=a=b",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let out = common::kubectl(&team_a, home, &["-n", "team-a", "get", "configmaps"]).await;
    assert!(
        out.status.success() && common::stdout(&out).contains("mine"),
        "{}",
        common::stderr(&out)
    );

    env.sandbox.sandbox.clear_recorded();
    let out = common::kubectl(&team_a, home, &["-n", "team-b", "get", "pods"]).await;
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains(r#"Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "team-b""#),
        "{}",
        common::stderr(&out)
    );
    assert!(
        !env.sandbox
            .sandbox
            .recorded()
            .iter()
            .any(|r| r.path.contains("/namespaces/team-b/")),
        "upstream saw a team-b request"
    );

    // The CI identity: reads deployments and pods in both tenants, may not delete.
    let out = common::kubectl(&ci, home, &["-n", "team-b", "get", "deployments,pods"]).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let out = common::kubectl(&ci, home, &["-n", "team-b", "delete", "deployment", "web"]).await;
    assert!(
        common::stderr(&out).contains("Error from server (Forbidden)"),
        "{}",
        common::stderr(&out)
    );
    let out = common::kubectl(&ci, home, &["-n", "team-a", "get", "secrets"]).await;
    assert!(
        common::stderr(&out).contains("Error from server (Forbidden)"),
        "{}",
        common::stderr(&out)
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_with_a_scoped_token() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{api::ListParams, config::KubeConfigOptions, Api, Client, Config};
    let env = Env::start().await;
    let mut c = claims("alice", &["tenant:team-a"]);
    c["portcullis.io/scope"] =
        json!([{"namespaces": ["team-a"], "verbs": ["get", "list"], "resources": ["configmaps"]}]);
    let token = forge(&env).token(&c);
    let kc = portcullis::kubeconfig::Kubeconfig::single(
        "scoped",
        &format!("https://{}", env.proxy_addr),
        &env.ca.cert.cert_pem,
        portcullis::kubeconfig::User {
            token: Some(token),
            ..Default::default()
        },
    );
    let path = env.dir.path().join("scoped.kubeconfig");
    kc.write(&path).unwrap();
    let config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let team_a: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    team_a.list(&ListParams::default()).await.unwrap();
    let team_b: Api<ConfigMap> = Api::namespaced(client, "team-b");
    match team_b.list(&ListParams::default()).await.unwrap_err() {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert_eq!(s.reason, "Forbidden");
        }
        other => panic!("expected 403, got {other:?}"),
    }
    env.stop().await;
}

/// Whether a TLS connection presenting `cert` can complete one request.
async fn cert_connects(env: &Env, cert: &portcullis_sandbox::pki::Issued) -> bool {
    common::cert_connects(env.proxy_addr, &env.ca, cert).await
}

async fn connect(
    env: &Env,
    config: &std::sync::Arc<rustls::ClientConfig>,
) -> Option<(Option<rustls::HandshakeKind>, common::Http1)> {
    common::connect(env.proxy_addr, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_client_certificate_cannot_connect() {
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let revoked = ca.client_cert_with_serial("mallory", 4242).unwrap();
    let good = ca.client_cert_with_serial("bob", 4243).unwrap();
    let crl_dir = tempfile::tempdir().unwrap();
    let crl = crl_dir.path().join("revoked.crl");
    std::fs::write(&crl, ca.crl(&[4242]).unwrap()).unwrap();
    let env = Env::start_in_front_of(ca, sandbox, |c| {
        *c = c.replace(
            "    ca_files: [ca.crt]\n",
            &format!(
                "    ca_files: [ca.crt]\n    crl_files: [{}]\n",
                crl.display()
            ),
        );
    })
    .await;
    assert!(
        cert_connects(&env, &good).await,
        "a certificate not on the CRL must still work"
    );
    env.sandbox.sandbox.clear_recorded();
    assert!(
        !cert_connects(&env, &revoked).await,
        "a revoked certificate was accepted"
    );
    assert!(env.sandbox.sandbox.recorded().is_empty());
    env.stop().await;
}

/// A browser-style WebSocket client carries its token as a subprotocol
/// (`base64url.bearer.authorization.k8s.io.<token>`), since a browser cannot set
/// `Authorization` on a WebSocket; kube-apiserver accepts it. The Python `websocket` client
/// (the official client's dependency) runs `cat` in a pod that way, with no `Authorization`
/// header: the session works as alice, and the API server is offered no token. A bad token,
/// two of them, or one with no other subprotocol to echo back is 401 and never reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_token_subprotocol_authenticates_and_is_not_forwarded() {
    common::require_kubectl();
    let env = Env::start().await;
    common::session::make_shell_pod(&env).await;
    env.sandbox.sandbox.clear_recorded();
    let script = r#"
import base64, websocket, time
c = client.Configuration.get_default_copy()
token = c.auth_settings()['BearerToken']['value'].split(' ', 1)[1]
carried = 'base64url.bearer.authorization.k8s.io.' + base64.urlsafe_b64encode(token.encode()).decode().rstrip('=')
url = c.host.replace('https://', 'wss://', 1) + '/api/v1/namespaces/team-a/pods/shell/exec?command=cat&stdin=true&stdout=true'
ws = websocket.create_connection(url, subprotocols=['v5.channel.k8s.io', carried], sslopt={'ca_certs': c.ssl_ca_cert})
chosen = ws.getheaders().get('sec-websocket-protocol')
ws.send_binary(b'\x00from a browser\n')
out = b''
end = time.time() + 20
while b'from a browser\n' not in out and time.time() < end:
    op, got = ws.recv_data()
    if got[:1] == b'\x01':
        out += got[1:]
ws.close()
print(json.dumps([chosen, out.decode(), token]))
"#;
    let printed = common::session::python(&env, script).await;
    let got: Value = serde_json::from_str(printed.trim()).unwrap();
    let token = got[2].as_str().unwrap();
    assert_eq!(got[0], "v5.channel.k8s.io", "{got}");
    assert_eq!(got[1], "from a browser\n", "{got}");
    // What the API server got at `path`, since it was last cleared.
    let forwarded = |path: &str| {
        env.sandbox
            .sandbox
            .recorded()
            .into_iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("{path} was not forwarded"))
    };
    let exec = forwarded("/api/v1/namespaces/team-a/pods/shell/exec");
    assert_eq!(exec.headers["impersonate-user"], "alice");
    let offered: Vec<_> = exec
        .headers
        .get_all("sec-websocket-protocol")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(offered, ["v5.channel.k8s.io"], "the token went upstream");
    assert!(
        exec.headers
            .iter()
            .all(|(_, v)| !String::from_utf8_lossy(v.as_bytes()).contains(token)),
        "the API server got alice's token: {:?}",
        exec.headers
    );

    // Refused, as the API server refuses them, and never forwarded.
    let f = forge(&env);
    let good = URL_SAFE_NO_PAD.encode(f.token(&claims("alice", &["tenant:team-a"])));
    let forged = URL_SAFE_NO_PAD.encode(jwt::tamper(
        &f.token(&claims("alice", &["tenant:team-a"])),
        &claims("alice", &["demo:admins"]),
    ));
    let carried = |t: &str| format!("base64url.bearer.authorization.k8s.io.{t}");
    let offering = |mut r: Request<Full<Bytes>>, protocols: &str| {
        r.headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
        r
    };
    let ws_exec = |pod: &str| {
        common::websocket_get(&format!(
            "/api/v1/namespaces/team-a/pods/{pod}/exec?command=cat&stdin=true&stdout=true"
        ))
    };
    for (what, protocols) in [
        (
            "a tampered token",
            format!("v5.channel.k8s.io, {}", carried(&forged)),
        ),
        ("a token alone", carried(&good)),
        (
            "two tokens",
            format!("v5.channel.k8s.io, {}, {}", carried(&good), carried(&good)),
        ),
        (
            "a token in the standard base64 alphabet",
            format!("v5.channel.k8s.io, {}", carried("a+b/")),
        ),
    ] {
        let r = offering(ws_exec("shell"), &protocols);
        let s = refused(&env, r, StatusCode::UNAUTHORIZED, "Unauthorized").await;
        assert_eq!(s["message"], "Unauthorized", "{what}");
    }

    // As kube-apiserver's union goes on after a bad `Authorization` header, a good token
    // subprotocol beside one still authenticates (here an exec of a pod that does not exist:
    // the API server's 404, as alice).
    env.sandbox.sandbox.clear_recorded();
    let mut r = offering(
        ws_exec("nope"),
        &format!("v5.channel.k8s.io, {}", carried(&good)),
    );
    r.headers_mut()
        .insert("authorization", "Bearer not.a.jwt".parse().unwrap());
    let resp = env.request(r, None, false).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{:?}", resp.body());
    let exec = forwarded("/api/v1/namespaces/team-a/pods/nope/exec");
    assert_eq!(exec.headers["impersonate-user"], "alice");

    // Nor does a token subprotocol on a request that is no upgrade go upstream.
    env.sandbox.sandbox.clear_recorded();
    let alice = f.token(&claims("alice", &["tenant:team-a"]));
    let r = offering(
        req("GET", "/api/v1/namespaces/team-a/pods", Some(&alice)),
        &format!("v5.channel.k8s.io, {}", carried(&good)),
    );
    let resp = env.request(r, None, true).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    let list = forwarded("/api/v1/namespaces/team-a/pods");
    assert_eq!(list.headers["sec-websocket-protocol"], "v5.channel.k8s.io");
    env.stop().await;
}

/// Issuers that sign ES512 (ECDSA on P-521), which kube-apiserver accepts: their tokens get
/// through with the key from a JWKS (ES512 in the default list) or from a PEM file (listed);
/// a P-521 signature by another key under the same kid, an ES256 signature under an ES512
/// header, and ES512 at an issuer whose list leaves it out are 401s that never reach the
/// upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es512_issuers_work_as_in_the_api_server() {
    let keys = tempfile::tempdir().unwrap();
    let jwks_key = jwt::Forge::generate_p521("p521-jwks");
    let pem_key = jwt::Forge::generate_p521("p521-pem");
    let jwks = keys.path().join("jwks.json");
    let pem = keys.path().join("p521.pem");
    // The ES256-only issuer's JWKS: the same P-521 key, beside a P-256 key its list can use
    // (keys that check none of an issuer's algorithms are a configuration error).
    let both = keys.path().join("both.json");
    let p256 = jwt::Forge::generate("p256");
    std::fs::write(&jwks, json!({"keys": [jwks_key.jwk()]}).to_string()).unwrap();
    std::fs::write(
        &both,
        json!({"keys": [jwks_key.jwk(), p256.jwk()]}).to_string(),
    )
    .unwrap();
    std::fs::write(&pem, pem_key.public_pem()).unwrap();
    let mappings = ISSUER_MAPPINGS;
    let issuers = format!(
        "    - issuer: {{url: https://es512-jwks.example, audiences: [portcullis], jwks_file: {jwks}}}\n{mappings}\
         \x20   - issuer: {{url: https://es512-pem.example, audiences: [portcullis], pem_files: [{{path: {pem}, kid: p521-pem}}]}}\n      algorithms: [ES512]\n{mappings}\
         \x20   - issuer: {{url: https://es256-only.example, audiences: [portcullis], jwks_file: {both}}}\n      algorithms: [ES256, RS256]\n{mappings}",
        jwks = jwks.display(),
        both = both.display(),
        pem = pem.display(),
    );
    let env = with_issuers(&issuers).await;
    let at = alice_at;
    for (iss, key) in [
        ("https://es512-jwks.example", &jwks_key),
        ("https://es512-pem.example", &pem_key),
    ] {
        lists_pods_as_alice(&env, &key.token(&at(iss)), iss).await;
    }
    let stranger = jwt::Forge::generate_p521("p521-jwks");
    let p256_under_es512 = jwt::Forge::generate("p521-jwks").sign(
        &json!({"alg": "ES512", "typ": "JWT", "kid": "p521-jwks"}),
        &at("https://es512-jwks.example"),
    );
    for (name, token) in [
        (
            "a stranger's P-521 key under the issuer's kid",
            stranger.token(&at("https://es512-jwks.example")),
        ),
        ("an ES256 signature under an ES512 header", p256_under_es512),
        (
            "ES512 where the issuer lists ES256 and RS256 only",
            jwks_key.token(&at("https://es256-only.example")),
        ),
    ] {
        let s = refused(
            &env,
            req("GET", "/api/v1/namespaces/team-a/pods", Some(&token)),
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
        )
        .await;
        assert_eq!(s["message"], "Unauthorized", "{name}");
    }
    env.stop().await;
}

/// The claim mappings of an issuer added by [`with_issuers`] (the demo issuer's).
const ISSUER_MAPPINGS: &str = "      claim_mappings:\n        username: {claim: sub, prefix: \"\"}\n        groups: {claim: groups, prefix: \"\"}\n";

/// The demo proxy with `issuers` (entries of `authentication.jwt`) after the demo issuer.
async fn with_issuers(issuers: &str) -> Env {
    Env::start_with(|config| {
        let anchor = "        groups: {claim: groups, prefix: \"\"}\n";
        assert!(config.contains(anchor), "the demo issuer's mappings moved");
        *config = config.replacen(anchor, &format!("{anchor}{issuers}"), 1);
    })
    .await
}

/// Alice's claims (tenant team-a) as issuer `iss` signs them.
fn alice_at(iss: &str) -> Value {
    let mut c = claims("alice", &["tenant:team-a"]);
    c["iss"] = json!(iss);
    c
}

/// `token` lists team-a's pods: 200, and the upstream saw that one request, as alice.
async fn lists_pods_as_alice(env: &Env, token: &str, what: &str) {
    env.sandbox.sandbox.clear_recorded();
    let resp = env
        .request(
            req("GET", "/api/v1/namespaces/team-a/pods", Some(token)),
            None,
            false,
        )
        .await;
    assert_eq!(resp.status(), 200, "{what}: {:?}", resp.body());
    let seen = env.sandbox.sandbox.recorded();
    assert_eq!(seen.len(), 1, "{what}: {seen:?}");
    assert_eq!(
        seen[0].headers.get("impersonate-user").unwrap(),
        "alice",
        "{what}"
    );
}

/// EdDSA, which kube-apiserver refuses, is accepted only where an issuer lists it: through the
/// proxy an EdDSA token at an issuer without a list is a 401 `Status` that never reaches the
/// upstream, while the same key's token at an issuer listing EdDSA is forwarded as its user.
#[tokio::test]
async fn eddsa_is_accepted_only_where_an_issuer_lists_it() {
    use portcullis::authn::jwt::mint;
    let keys = tempfile::tempdir().unwrap();
    let (ed_pem, _) = mint::generate_ed25519("ed").unwrap();
    let ed = mint::Signer::from_pem(&ed_pem, Some("ed")).unwrap();
    let p256 = jwt::Forge::generate("p256");
    let jwks = keys.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [ed.public_jwk(), p256.jwk()]}).to_string(),
    )
    .unwrap();
    let mappings = ISSUER_MAPPINGS;
    let issuers = format!(
        "    - issuer: {{url: https://ed-default.example, audiences: [portcullis], jwks_file: {jwks}}}\n{mappings}\
         \x20   - issuer: {{url: https://ed-listed.example, audiences: [portcullis], jwks_file: {jwks}}}\n      algorithms: [EdDSA]\n{mappings}",
        jwks = jwks.display(),
    );
    let env = with_issuers(&issuers).await;
    let at = alice_at;
    let s = refused(
        &env,
        req(
            "GET",
            "/api/v1/namespaces/team-a/pods",
            Some(&ed.issue(&at("https://ed-default.example")).unwrap()),
        ),
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
    )
    .await;
    assert_eq!(s["message"], "Unauthorized");
    // The issuer without a list still takes the algorithms of the API server's list.
    for (name, token) in [
        (
            "ES256 at the default list",
            p256.token(&at("https://ed-default.example")),
        ),
        (
            "EdDSA where listed",
            ed.issue(&at("https://ed-listed.example")).unwrap(),
        ),
    ] {
        lists_pods_as_alice(&env, &token, name).await;
    }
    env.stop().await;
}
