//! portcullis-sandbox — everything the proxy does not ship: an in-memory Kubernetes API
//! server ("sandbox") for the demo, tests and benches, the throwaway PKI (`pki`) and the demo
//! wiring (`demo`: certificates, tokens, kubeconfigs and the generated config).
//!
//! The sandbox accepts: health and version endpoints, legacy and aggregated (v2) discovery,
//! CRUD / list / watch / patch on a fixed catalogue of core, apps and batch resources, Table
//! output for kubectl, protobuf answers when `Accept` prefers them (`answer`), `pods/log` (with follow), `pods/exec` / `pods/attach` over WebSocket and
//! `pods/portforward` over SPDY/3.1 (plain or tunnelled in WebSocket) to an echo / HTTP service.
//! Authenticates (tokens, client certificates of its CA, anonymous), honours impersonation
//! and authorizes every request with RBAC like kube-apiserver (`gate`, `rbac`), answers the
//! self / subject access reviews (`reviews`), and records every request (method, path, query, headers, peer)
//! so tests can assert what an upstream would have seen. Rejects unknown paths with the
//! apiserver's plain-text `404 page not found`; serves OpenAPI v2 and v3 with upstream's schemas
//! of the served kinds (`openapi`), for `kubectl explain` and `kubectl apply`.
//!
//! It lives in its own crate so the proxy library neither contains nor depends on it (see
//! "Workspace" in `ARCHITECTURE.md`).
#![forbid(unsafe_code)]
// Errors are `metav1.Status` values sent straight to the client; their size does not matter
// in a test fixture.
#![allow(clippy::result_large_err)]

pub mod demo;
pub mod pki;

mod answer;
mod catalogue;
mod clock;
mod controller;
mod discovery;
mod exec;
mod expiry;
mod gate;
mod impersonation;
mod logs;
mod managed;
mod openapi;
mod openapi_pb;
mod openapi_schemas;
mod patch;
mod podfs;
mod portforward;
mod put_create;
pub use portcullis_proto as proto;
mod rbac;
mod rbac_seed;
mod rest;
mod reviews;
mod run;
mod selectors;
mod store;
mod table;
mod watch;
mod writes;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

pub use run::{start, write_direct_kubeconfig, Running};

use portcullis::{body::Body, server::ConnInfo};

/// How many requests the record keeps (the older half is dropped past this).
const RECORDED_MAX: usize = 10_000;

/// One request as the sandbox received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub peer: SocketAddr,
    pub h2: bool,
    /// The body, for requests the sandbox read one from (writes).
    pub body: Option<bytes::Bytes>,
    /// The Content-Type of the answer (`application/vnd.kubernetes.protobuf` when it was
    /// protobuf), once it was sent.
    pub answered: Option<HeaderValue>,
    seq: u64,
}

/// The in-memory API server. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<store::Store>,
    files: podfs::PodFiles,
    recorded: Mutex<Vec<Recorded>>,
    seq: std::sync::atomic::AtomicU64,
    tokens: Mutex<gate::Tokens>,
    /// Followed logs first write this many chunks of this many bytes (`set_chatty_logs`).
    chatty_logs: Mutex<Option<(usize, usize)>>,
    /// Bytes of those chunks written so far, by every followed log.
    chatty_bytes: std::sync::atomic::AtomicUsize,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Sandbox {
    /// A sandbox with namespaces `default`, `kube-system`, and the demo tenants `team-a` and `team-b`.
    pub fn new() -> Sandbox {
        Sandbox {
            inner: Arc::new(Inner {
                store: Mutex::new(store::Store::new()),
                files: podfs::PodFiles::default(),
                recorded: Mutex::new(Vec::new()),
                seq: Default::default(),
                tokens: Mutex::new(gate::Tokens::from([(
                    gate::ADMIN_TOKEN.to_string(),
                    rbac::User::new("sandbox-admin", &[rbac::MASTERS]),
                )])),
                chatty_logs: Mutex::new(None),
                chatty_bytes: Default::default(),
            }),
        }
    }

    /// Accept `token` as a bearer token for `user` in `groups` (`system:authenticated` is
    /// added, as by the apiserver's token authenticators).
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        lock(&self.inner.tokens).insert(token.to_string(), rbac::User::new(user, groups));
    }

    pub(crate) fn token_user(&self, token: &str) -> Option<rbac::User> {
        lock(&self.inner.tokens).get(token).cloned()
    }

    /// Keep only the last `events` changes per resource for watches and continue tokens
    /// (default [`store::HISTORY`]); older resourceVersions get 410 Expired.
    pub fn set_history_limit(&self, events: usize) {
        self.store().set_history_limit(events);
    }

    /// Make every followed log start with `chunks` writes of `len` bytes each, in bursts of 128
    /// a millisecond apart: a pod writing its log a few bytes at a time (the API server frames
    /// a followed log as the pod writes it).
    pub fn set_chatty_logs(&self, chunks: usize, len: usize) {
        *lock(&self.inner.chatty_logs) = Some((chunks, len));
    }

    pub(crate) fn chatty_logs(&self) -> Option<(usize, usize)> {
        *lock(&self.inner.chatty_logs)
    }

    /// Bytes of those chunks written so far (the API server had the window to send them).
    pub fn chatty_bytes_sent(&self) -> usize {
        self.inner
            .chatty_bytes
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn count_chatty_bytes(&self, n: usize) {
        self.inner
            .chatty_bytes
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, store::Store> {
        lock(&self.inner.store)
    }

    /// The pods' in-memory files (`kubectl cp`).
    pub(crate) fn pod_files(&self) -> podfs::PodFiles {
        self.inner.files.clone()
    }

    /// Every request received so far, in arrival order.
    pub fn recorded(&self) -> Vec<Recorded> {
        lock(&self.inner.recorded).clone()
    }

    /// Forget the recorded requests.
    pub fn clear_recorded(&self) {
        lock(&self.inner.recorded).clear();
    }

    /// Attach `body` to the latest recorded `method path` request that has none yet.
    pub fn record_body(&self, method: &Method, path: &str, body: bytes::Bytes) {
        let mut recorded = lock(&self.inner.recorded);
        if let Some(r) = recorded
            .iter_mut()
            .rev()
            .find(|r| r.method == *method && r.path == path && r.body.is_none())
        {
            r.body = Some(body);
        }
    }

    /// Serve one request.
    pub async fn handle(&self, mut req: Request<Incoming>, conn: Arc<ConnInfo>) -> Response<Body> {
        let seq = self
            .inner
            .seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut recorded = lock(&self.inner.recorded);
            // Bounded so a long demo or bench cannot grow it without limit; tests clear it anyway.
            if recorded.len() >= RECORDED_MAX {
                recorded.drain(..RECORDED_MAX / 2);
            }
            recorded.push(Recorded {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
                query: req.uri().query().map(str::to_string),
                headers: req.headers().clone(),
                peer: conn.peer,
                h2: conn.h2,
                body: None,
                answered: None,
                seq,
            });
        }
        let head = req.method() == Method::HEAD;
        // Like the apiserver: reuse the client's Audit-ID or mint one, and echo it back.
        let audit_id = req
            .headers()
            .get("audit-id")
            .cloned()
            .or_else(|| HeaderValue::from_str(&self.store().next_uid()).ok());
        // Resource answers (objects, lists, Status errors) may go back as protobuf; watches
        // frame their own events.
        let accept = is_resource_path(req.uri().path())
            .then(|| answer::accept_of(req.headers()))
            .flatten();
        // Like kube-apiserver: a large serialized answer goes gzipped to a client that accepts
        // it (client-go's transport asks for gzip, so kubectl's lists do).
        let gzip = is_resource_path(req.uri().path()) && answer::accepts_gzip(req.headers());
        let mut resp = match gate::admit(self, &mut req, &conn) {
            Ok(()) => self.route(req).await,
            Err(refused) => refused.into_response(),
        };
        if accept.is_some() {
            resp = answer::finish(resp, accept.as_deref()).await;
        }
        if gzip && !head {
            resp = answer::gzip_large(resp).await;
        }
        if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
            let mut recorded = lock(&self.inner.recorded);
            if let Some(r) = recorded.iter_mut().rev().find(|r| r.seq == seq) {
                r.answered = Some(ct.clone());
            }
        }
        if head {
            *resp.body_mut() = portcullis::body::empty();
        }
        let h = resp.headers_mut();
        if let Some(id) = audit_id {
            h.insert("audit-id", id);
        }
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-cache, private"));
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let h = req.headers();
        match segs.as_slice() {
            ["healthz" | "livez" | "readyz"] => text(StatusCode::OK, "ok"),
            ["version"] => rest::json_response(StatusCode::OK, &version(), "application/json"),
            ["api"] if discovery::wants_aggregated(h) => discovery::aggregated_response(true, h),
            ["apis"] if discovery::wants_aggregated(h) => discovery::aggregated_response(false, h),
            ["api"] => ok_json(discovery::api_versions()),
            ["apis"] => ok_json(discovery::api_group_list()),
            ["apis", g] => discovery::api_group(g).map_or_else(not_found_page, ok_json),
            ["api", v] | ["apis", _, v] if segs.len() == 2 + usize::from(segs[0] == "apis") => {
                let g = if segs[0] == "apis" { segs[1] } else { "" };
                if discovery::has_group_version(g, v) {
                    ok_json(discovery::api_resource_list(g, v))
                } else {
                    not_found_page()
                }
            }
            ["openapi", "v2"] => openapi::v2(h),
            ["openapi", "v3"] => openapi::index(),
            ["openapi", "v3", gv @ ..] => openapi::group_version(&gv.join("/"), req.uri().query()),
            ["api", "v1", rest @ ..] => self.resource("", "v1", rest, req).await,
            ["apis", g, v, rest @ ..] => {
                let (g, v) = (g.to_string(), v.to_string());
                let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
                let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
                self.resource(&g, &v, &rest, req).await
            }
            _ => not_found_page(),
        }
    }

    async fn resource(
        &self,
        group: &str,
        version: &str,
        rest: &[&str],
        req: Request<Incoming>,
    ) -> Response<Body> {
        if reviews::is_review(group) {
            return reviews::serve(self, group, version, rest, req).await;
        }
        let Some(target) = parse_target(group, version, rest) else {
            return not_found_page();
        };
        rest::handle(self, req, target).await
    }
}

/// `/api/v1/...` or `/apis/GROUP/VERSION/...` below the group-version (not discovery).
fn is_resource_path(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.first() {
        Some(&"api") => segs.len() >= 3,
        Some(&"apis") => segs.len() >= 4,
        _ => false,
    }
}

/// Split `[watch/][namespaces/NS/]RESOURCE[/NAME[/SUB]]` and look the resource up.
fn parse_target(group: &str, version: &str, rest: &[&str]) -> Option<rest::Target> {
    let (watch_prefix, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let namespace_sub = rest.len() == 3 && matches!(rest[2], "status" | "finalize");
    let (namespace, rest) = match rest {
        ["namespaces", ns, r @ ..] if !r.is_empty() && !namespace_sub => (Some(ns.to_string()), r),
        r => (None, r),
    };
    let (res, name, sub) = match rest {
        [res] => (*res, None, None),
        [res, name] => (*res, Some(name.to_string()), None),
        [res, name, sub] => (*res, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    let def = discovery::find(group, version, res)?;
    if def.namespaced != namespace.is_some() && (name.is_some() || namespace.is_some()) {
        return None;
    }
    Some(rest::Target {
        def,
        namespace,
        name,
        sub,
        watch_prefix,
    })
}

fn ok_json(v: serde_json::Value) -> Response<Body> {
    rest::json_response(StatusCode::OK, &v, "application/json")
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(portcullis::body::full(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The apiserver's plain-text 404 for paths nothing serves.
pub(crate) fn not_found_page() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

fn version() -> serde_json::Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-sandbox",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.4", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The sandbox renders its own `Status` errors with the proxy's renderer (same bytes as the
/// API server's).
pub(crate) trait IntoResponse {
    fn into_response(self) -> Response<Body>;
}

impl IntoResponse for portcullis::k8s::Status {
    fn into_response(self) -> Response<Body> {
        portcullis::refusal::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("", "v1", &["namespaces", "default", "pods", "p", "log"]).unwrap();
        assert_eq!(
            (t.namespace.as_deref(), t.name.as_deref(), t.sub.as_deref()),
            (Some("default"), Some("p"), Some("log"))
        );
        let t = parse_target("", "v1", &["namespaces", "default"]).unwrap();
        assert_eq!(
            (t.def.plural, t.name.as_deref()),
            ("namespaces", Some("default"))
        );
        let t = parse_target("", "v1", &["namespaces", "x", "status"]).unwrap();
        assert_eq!(t.sub.as_deref(), Some("status"));
        let t = parse_target("", "v1", &["watch", "pods"]).unwrap();
        assert!(t.watch_prefix && t.namespace.is_none());
        assert!(parse_target("", "v1", &["pods", "x"]).is_none());
        assert!(parse_target("", "v1", &["namespaces", "d", "namespaces"]).is_none());
        assert!(parse_target("apps", "v1", &["namespaces", "d", "deployments"]).is_some());
    }
}
