//! OpenTelemetry traces end to end: a local OTLP/HTTP receiver (hyper + the OTLP protobuf
//! types), the proxy in front of the sandbox with `tracing:` on at sampling 1.0, driven with
//! kubectl and raw HTTPS. Spans are read after the proxy stopped (its shutdown exports what is
//! buffered), so no test waits on the batch interval.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use common::Env;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, KeyValue},
    trace::v1::Span,
};
use prost::Message;
use tokio::net::TcpListener;

/// What the receiver got: every span, and how many connections were made to it.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    addr: Option<SocketAddr>,
}

impl Receiver {
    /// An OTLP/HTTP receiver on a free loopback port: decodes `ExportTraceServiceRequest`.
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            addr: Some(listener.local_addr().unwrap()),
            ..Default::default()
        };
        let rec = r.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                rec.connections.fetch_add(1, Ordering::SeqCst);
                let rec = rec.clone();
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let rec = rec.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).unwrap();
                            for rs in export.resource_spans {
                                if let Some(res) = &rs.resource {
                                    if let Some(name) = attr(&res.attributes, "service.name") {
                                        rec.services.lock().unwrap().push(name);
                                    }
                                }
                                for ss in rs.scope_spans {
                                    rec.spans.lock().unwrap().extend(ss.spans);
                                }
                            }
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        r
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "\ntracing:\n  endpoint: http://{}\n  sampling_ratio: 1.0\n  service_name: portcullis-test\n  timeout: 2s\n{extra}",
            self.addr.unwrap()
        )
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// A string attribute's value.
fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The request span with this Audit-ID.
fn request_span(spans: &[Span], audit_id: &str) -> Span {
    spans
        .iter()
        .find(|s| {
            s.name == "portcullis.request"
                && attr(&s.attributes, "portcullis.audit_id").as_deref() == Some(audit_id)
        })
        .unwrap_or_else(|| panic!("no request span for {audit_id}"))
        .clone()
}

/// The children of `parent`, by name.
fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
        .collect()
}

/// `traceparent` the sandbox saw on its request for `path`.
fn upstream_traceparent(env: &Env, path: &str) -> Option<String> {
    env.sandbox
        .sandbox
        .recorded()
        .iter()
        .find(|r| r.path == path)
        .and_then(|r| r.headers.get("traceparent"))
        .map(|v| v.to_str().unwrap().to_string())
}

/// Start the proxy with `tracing:` (plus `extra` keys under it) pointing at a new receiver.
async fn traced_env(extra: &str) -> (Env, Receiver) {
    let rx = Receiver::start().await;
    let cfg = rx.config(extra);
    let env = Env::start_with(|c| c.push_str(&cfg)).await;
    (env, rx)
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn get_with_traceparent(path: &str) -> http::Request<Full<Bytes>> {
    let mut req = common::get(path);
    let h = req.headers_mut();
    h.insert(
        "traceparent",
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
            .parse()
            .unwrap(),
    );
    h.insert("tracestate", "vendor=client-state".parse().unwrap());
    h.insert("baggage", "tenant=forged".parse().unwrap());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_has_a_span_with_layer_children_and_its_traceparent_reaches_the_upstream() {
    common::require_kubectl();
    let (env, rx) = traced_env("").await;
    let path = "/api/v1/namespaces/default/configmaps";
    let resp = env
        .request(common::get(path), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), 200);
    let audit_id = resp.headers()["audit-id"].to_str().unwrap().to_string();
    let seen = upstream_traceparent(&env, path).expect("the upstream saw a traceparent");
    // A client naming the trace headers in `Connection` (HTTP/1.1) strips its own copies,
    // not the proxy's.
    let hop = "/api/v1/namespaces/default/services";
    let mut req = common::get(hop);
    req.headers_mut()
        .insert("connection", "traceparent, tracestate".parse().unwrap());
    let resp = env.request(req, Some(&env.admin_cert), false).await;
    assert_eq!(resp.status(), 200);
    assert!(
        upstream_traceparent(&env, hop).is_some(),
        "the proxy's traceparent went upstream despite the client's Connection header"
    );
    let out = env.kubectl(&["get", "pods", "-n", "default"]).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let kubectl_forwarded = env
        .sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/default/pods")
        .map(|r| r.headers.get("traceparent").is_some())
        .collect::<Vec<_>>();
    assert_eq!(
        kubectl_forwarded,
        [true],
        "kubectl's list went upstream with a traceparent"
    );
    env.stop().await;

    let spans = rx.spans();
    assert_eq!(rx.services.lock().unwrap()[0], "portcullis-test");
    let req = request_span(&spans, &audit_id);
    assert!(req.parent_span_id.is_empty(), "a new root trace");
    assert_eq!(attr(&req.attributes, "http.request.method").unwrap(), "GET");
    assert_eq!(attr(&req.attributes, "portcullis.verb").unwrap(), "list");
    assert_eq!(
        attr(&req.attributes, "portcullis.resource").unwrap(),
        "configmaps"
    );
    assert_eq!(
        attr(&req.attributes, "portcullis.namespace").unwrap(),
        "default"
    );
    assert_eq!(
        attr(&req.attributes, "http.response.status_code").unwrap(),
        "200"
    );
    let kids = children(&spans, &req);
    let mut names: Vec<&str> = kids.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    for layer in [
        "audit",
        "authn",
        "authz",
        "rate_limit",
        "sanitize",
        "upstream",
    ] {
        assert!(names.contains(&layer), "{layer} span missing: {names:?}");
    }
    // Each layer span lies within the request span.
    for k in &kids {
        assert!(k.start_time_unix_nano >= req.start_time_unix_nano);
        assert!(k.end_time_unix_nano <= req.end_time_unix_nano, "{}", k.name);
    }
    // The API server joins the upstream span's trace: same trace id, parent = that span.
    let upstream = kids.iter().find(|s| s.name == "upstream").unwrap();
    assert_eq!(
        seen,
        format!("00-{}-{}-01", hex(&req.trace_id), hex(&upstream.span_id))
    );
    // kubectl's requests were traced too (discovery and the list).
    assert!(spans.iter().any(|s| s.name == "portcullis.request"
        && attr(&s.attributes, "url.path").as_deref() == Some("/api/v1/namespaces/default/pods")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_client_traceparent_starts_a_new_trace_and_is_never_forwarded() {
    let (env, rx) = traced_env("").await;
    let path = "/api/v1/namespaces/default/secrets";
    let resp = env
        .request(get_with_traceparent(path), Some(&env.admin_cert), false)
        .await;
    assert_eq!(resp.status(), 200);
    let audit_id = resp.headers()["audit-id"].to_str().unwrap().to_string();
    let rec = env.sandbox.sandbox.recorded();
    let up = rec.iter().find(|r| r.path == path).unwrap();
    let seen = up.headers["traceparent"].to_str().unwrap().to_string();
    assert!(!seen.contains(CLIENT_TRACE), "{seen}");
    assert!(
        up.headers.get("tracestate").is_none(),
        "client tracestate forwarded"
    );
    // W3C baggage rides with the trace context (kube-apiserver's propagator reads it too).
    assert!(
        up.headers.get("baggage").is_none(),
        "client baggage forwarded"
    );
    env.stop().await;
    let spans = rx.spans();
    let req = request_span(&spans, &audit_id);
    assert_ne!(hex(&req.trace_id), CLIENT_TRACE);
    assert!(req.parent_span_id.is_empty());
    assert!(seen.starts_with(&format!("00-{}-", hex(&req.trace_id))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_client_traceparent_is_continued() {
    let (env, rx) = traced_env("  trust_incoming: true\n").await;
    let path = "/api/v1/namespaces/default/secrets";
    let resp = env
        .request(get_with_traceparent(path), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), 200);
    let audit_id = resp.headers()["audit-id"].to_str().unwrap().to_string();
    let rec = env.sandbox.sandbox.recorded();
    let up = rec.iter().find(|r| r.path == path).unwrap();
    let seen = up.headers["traceparent"].to_str().unwrap().to_string();
    assert_eq!(up.headers["tracestate"], "vendor=client-state");
    assert_eq!(up.headers["baggage"], "tenant=forged");
    env.stop().await;
    let spans = rx.spans();
    let req = request_span(&spans, &audit_id);
    assert_eq!(hex(&req.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&req.parent_span_id), CLIENT_SPAN);
    let upstream = children(&spans, &req)
        .into_iter()
        .find(|s| s.name == "upstream")
        .unwrap();
    assert_eq!(
        seen,
        format!("00-{CLIENT_TRACE}-{}-01", hex(&upstream.span_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_span_names_the_refusal_and_carries_no_token() {
    common::require_kubectl();
    let (env, rx) = traced_env("").await;
    // alice (JWT, tenant team-a) may not list pods in kube-system: authz refuses.
    let out = common::kubectl(
        &env.files.team_a_kubeconfig,
        env.dir.path(),
        &["get", "configmaps", "-n", "kube-system"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("Forbidden"),
        "{}",
        common::stderr(&out)
    );
    // A bad bearer token: authn refuses.
    let secret = "not-a-valid-token-6c1f0e2d";
    let mut req = common::get("/api/v1/namespaces/default/pods");
    req.headers_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    let resp = env.request(req, None, false).await;
    assert_eq!(resp.status(), 401);
    let unauth_id = resp.headers()["audit-id"].to_str().unwrap().to_string();
    // A 20 KiB path without credentials: refused, and its span keeps only the path's start
    // (the span is made before authentication, so the length is the client's choice).
    let long_path = format!("/api/{}", "a".repeat(20_000));
    let resp = env.request(common::get(&long_path), None, false).await;
    assert_eq!(resp.status(), 401);
    let long_id = resp.headers()["audit-id"].to_str().unwrap().to_string();
    // The upstream saw neither.
    assert!(env
        .sandbox
        .sandbox
        .recorded()
        .iter()
        .all(|r| !r.path.contains("kube-system")
            && r.path != "/api/v1/namespaces/default/pods"
            && !r.path.starts_with("/api/aaaa")));
    let kubeconfig = std::fs::read_to_string(&env.files.team_a_kubeconfig).unwrap();
    let kubeconfig: serde_json::Value = serde_json::from_str(&kubeconfig).unwrap();
    let alice_token = kubeconfig["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(alice_token.len() > 20);
    env.stop().await;

    let spans = rx.spans();
    let forbidden = spans
        .iter()
        .find(|s| {
            s.name == "portcullis.request"
                && attr(&s.attributes, "portcullis.namespace").as_deref() == Some("kube-system")
        })
        .unwrap();
    assert_eq!(
        attr(&forbidden.attributes, "http.response.status_code").unwrap(),
        "403"
    );
    assert_eq!(
        attr(&forbidden.attributes, "portcullis.refused_by").unwrap(),
        "authz"
    );
    assert_eq!(
        attr(&forbidden.attributes, "portcullis.refusal_reason").unwrap(),
        "Forbidden"
    );
    let kids = children(&spans, forbidden);
    let authz = kids.iter().find(|s| s.name == "authz").unwrap();
    assert_eq!(
        attr(&authz.attributes, "portcullis.refused_by").unwrap(),
        "authz"
    );
    assert!(kids
        .iter()
        .all(|s| s.name != "upstream" && s.name != "sanitize"));

    let long = attr(&request_span(&spans, &long_id).attributes, "url.path").unwrap();
    assert!(long.len() <= 2048 + 3, "{}", long.len());
    assert!(
        long.starts_with("/api/aaaa") && long.ends_with('…'),
        "{long}"
    );
    let unauth = request_span(&spans, &unauth_id);
    assert_eq!(
        attr(&unauth.attributes, "http.response.status_code").unwrap(),
        "401"
    );
    assert_eq!(
        attr(&unauth.attributes, "portcullis.refusal_reason").unwrap(),
        "Unauthorized"
    );
    // No token in any attribute of any span.
    for s in &spans {
        for kv in &s.attributes {
            let v = attr(std::slice::from_ref(kv), &kv.key).unwrap_or_default();
            assert!(
                !v.contains(secret) && !v.contains(&alice_token),
                "{}: {v}",
                kv.key
            );
            assert!(!v.to_lowercase().contains("bearer"), "{}: {v}", kv.key);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_no_exporter_connection_is_made_and_nothing_is_added_upstream() {
    let rx = Receiver::start().await;
    // Even the standard OTel variable pointing at a live receiver starts nothing (the other
    // tests here name their endpoint in the config, which wins over it).
    std::env::set_var(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        format!("http://{}/v1/traces", rx.addr.unwrap()),
    );
    let env = Env::start().await;
    let path = "/api/v1/namespaces/default/configmaps";
    let resp = env
        .request(common::get(path), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), 200);
    assert!(upstream_traceparent(&env, path).is_none());
    env.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.connections.load(Ordering::SeqCst), 0);
    assert!(rx.spans().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_audit_id_and_trace_id_and_never_the_token() {
    use portcullis_sandbox::{self as sandbox, demo, pki::Ca};
    portcullis::server::tls::install_crypto_provider();
    let rx = Receiver::start().await;
    let ca = Ca::new("test CA").unwrap();
    let sandbox = sandbox::start("127.0.0.1:0".parse().unwrap(), &ca)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (common::free_port(), common::free_port());
    let files = demo::write(dir.path(), &ca, &sandbox.url(), listen, admin).unwrap();
    let mut text = std::fs::read_to_string(&files.config).unwrap();
    text.push_str(&rx.config(""));
    text.push_str("log:\n  format: json\n");
    std::fs::write(&files.config, text).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&files.config)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "proxy did not listen");
    let secret = "not-a-valid-token-93be55a1";
    let mut req = common::get("/api/v1/namespaces/default/pods");
    req.headers_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    let resp = common::https_request(listen, &ca, req, None, false).await;
    assert_eq!(resp.status(), 401);
    let audit_id = resp.headers()["audit-id"].to_str().unwrap().to_string();
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    sandbox.stop().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(secret), "the token was logged");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "authentication failed")
        .unwrap_or_else(|| panic!("no authentication failure line in {stderr}"));
    assert_eq!(failed["span"]["audit_id"], audit_id.as_str());
    let trace_id = failed["span"]["trace_id"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32);
    // The same trace id as the exported request span.
    let spans = rx.spans();
    let req = request_span(&spans, &audit_id);
    assert_eq!(hex(&req.trace_id), trace_id);
}

/// A reload that changes `tracing:` applies, like any other change (a rotated collector CA
/// must not hold back one that revokes access): requests after it export to the new
/// collector, and the replaced exporter sends what it held before it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_re_points_the_exporter() {
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let b =
        common::binary::Binary::start(&["--reload-poll", "0s"], |c| c.push_str(&first.config("")))
            .await;
    let admin = b.ca.client_cert("admin", &["demo:admins"]).unwrap();
    let audit_id = |resp: &http::Response<Bytes>| {
        assert_eq!(resp.status(), 200);
        resp.headers()["audit-id"].to_str().unwrap().to_string()
    };
    let path = "/api/v1/namespaces/default/configmaps";
    let get = || common::https_request(b.listen, &b.ca, common::get(path), Some(&admin), true);
    let before = audit_id(&get().await);
    let text = std::fs::read_to_string(&b.files.config).unwrap();
    b.write_config(&text.replace(
        &first.addr.unwrap().to_string(),
        &second.addr.unwrap().to_string(),
    ));
    b.signal("HUP");
    b.wait_reloads("success", 1).await;
    assert_eq!(b.reloads("failure").await, 0, "{}", b.log());
    let after = audit_id(&get().await);
    b.stop().await;
    let (old, new) = (first.spans(), second.spans());
    request_span(&old, &before);
    request_span(&new, &after);
    let has = |spans: &[Span], id: &str| {
        spans.iter().any(|s| {
            s.name == "portcullis.request"
                && attr(&s.attributes, "portcullis.audit_id").as_deref() == Some(id)
        })
    };
    assert!(
        !has(&old, &after),
        "the old collector got a span after the reload"
    );
    assert!(
        !has(&new, &before),
        "the new collector got a span from before it"
    );
}

/// A collector that is down is not silent: each failed export counts in
/// `portcullis_trace_export_failures_total`, and the first is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_is_counted_and_logged() {
    let closed = common::free_port();
    let b = common::binary::Binary::start(&[], |c| {
        c.push_str(&format!(
            "\ntracing:\n  endpoint: http://{closed}\n  sampling_ratio: 1.0\n  timeout: 1s\n"
        ))
    })
    .await;
    let admin = b.ca.client_cert("admin", &["demo:admins"]).unwrap();
    let path = "/api/v1/namespaces/default/configmaps";
    let resp = common::https_request(b.listen, &b.ca, common::get(path), Some(&admin), true).await;
    assert_eq!(
        resp.status(),
        200,
        "the request does not wait for the collector"
    );
    // The batch is sent within the processor's 5 s schedule and fails at once.
    let mut failures = 0;
    for _ in 0..150 {
        let (_, metrics) = common::admin_get(b.admin, "/metrics").await;
        failures = metrics
            .lines()
            .find_map(|l| l.strip_prefix("portcullis_trace_export_failures_total "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap());
        if failures > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failures >= 1, "no failed export counted\n{}", b.log());
    let log = b.log_when(|l| l.contains("OTLP span export failed")).await;
    assert!(log.contains("OTLP span export failed"), "{log}");
    b.stop().await;
}

/// A collector that takes connections and never answers holds the exporter in each export
/// until `tracing.timeout`; the spans that keep ending meanwhile past the exporter's queue are
/// dropped — counted in `portcullis_trace_spans_dropped_total` and logged, not lost silently —
/// and requests go on being answered without waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_past_a_full_queue_are_counted_and_logged_as_dropped() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let b = common::binary::Binary::start(&[], |c| {
        common::unlimited_admin_reads(c);
        c.push_str(&format!(
            "\ntracing:\n  endpoint: http://{collector}\n  sampling_ratio: 1.0\n  timeout: 3s\n"
        ))
    })
    .await;
    let admin = b.ca.client_cert("admin", &["demo:admins"]).unwrap();
    let sender = common::h2_sender(b.listen, &b.ca, Some(&admin)).await;
    let dropped = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("portcullis_trace_spans_dropped_total "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let mut sent = 0;
    // Each request ends a span per layer (about a dozen); the queue holds 2048 and the
    // exporter is stuck on its first batch of 512.
    while sent < 3000 {
        let batch = (0..50).map(|_| {
            let mut sender = sender.clone();
            async move {
                let resp = sender
                    .send_request(common::get("/api/v1/namespaces/default/configmaps"))
                    .await
                    .unwrap();
                resp.status()
            }
        });
        for status in futures_util::future::join_all(batch).await {
            assert_eq!(
                status, 200,
                "a request waited on, or failed with, the collector"
            );
        }
        sent += 50;
        if dropped(&common::admin_get(b.admin, "/metrics").await.1) > 0 {
            break;
        }
    }
    let (_, metrics) = common::admin_get(b.admin, "/metrics").await;
    assert!(
        dropped(&metrics) > 0,
        "{sent} requests sent, no span counted as dropped\n{}",
        b.log()
    );
    let log = b.log_when(|l| l.contains("spans dropped")).await;
    assert!(
        log.contains("spans dropped: the OTLP exporter's queue is full"),
        "{log}"
    );
    b.stop().await;
}
