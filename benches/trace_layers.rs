//! What the trace layers cost per request, alone: the request span layer, eight of the ten
//! `traced` layer wrappers of `src/stack.rs` (around no-op layers; `review` and `create_guard`
//! are left out — with two more nested generic layers clippy type-checked this file for over
//! 15 minutes in more than 20 GiB — and each costs what the others do) and the upstream span layer, over an
//! inner service that answers at once — against that inner service bare. Cases: tracing off
//! (no `tracing:` section), on at 0 %, 1 % and 100 % sampling (exporting to a closed loopback
//! port: the batch exporter's failures happen on its own thread, off the measured path).
//! No log subscriber is installed, as in the in-process tests; `portcullis serve` adds the
//! log span's cost (a registry span per request) whether traces are on or off.
//!
//! Run: `cargo bench -p portcullis --bench trace_layers`.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{convert::Infallible, sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use portcullis::{
    body::{self, Body},
    service::{AuditId, ResponseFuture},
    telemetry::{config::TracingSettings, traced, RequestSpanLayer, Tracing, UpstreamSpanLayer},
};
use tower::{layer::util::Identity, Service, ServiceBuilder};

fn inner(
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future = ResponseFuture>
       + Clone {
    tower::service_fn(|_req: Request<()>| -> ResponseFuture {
        Box::pin(std::future::ready(Ok(Response::new(body::empty()))))
    })
}

type Svc = Box<dyn FnMut(Request<()>) -> ResponseFuture>;

fn stack(tracing: Option<Arc<Tracing>>) -> Svc {
    let on = tracing.is_some();
    let mut svc = ServiceBuilder::new()
        .layer(RequestSpanLayer::new(tracing))
        .layer(traced("audit", Identity::new(), on))
        .layer(traced("load_shed", Identity::new(), on))
        .layer(traced("source_block", Identity::new(), on))
        .layer(traced("authn", Identity::new(), on))
        .layer(traced("audit_received", Identity::new(), on))
        .layer(traced("authz", Identity::new(), on))
        .layer(traced("rate_limit", Identity::new(), on))
        .layer(traced("sanitize", Identity::new(), on))
        .layer(UpstreamSpanLayer::new(on))
        .service(inner());
    Box::new(move |req| svc.call(req))
}

fn tracing_at(ratio: f64) -> Arc<Tracing> {
    Arc::new(
        Tracing::start(&TracingSettings {
            endpoint: "http://127.0.0.1:9/v1/traces".parse().unwrap(),
            ca_pem: None,
            service_name: "bench".into(),
            sampling_ratio: ratio,
            trust_incoming: false,
            timeout: Duration::from_millis(50),
        })
        .unwrap(),
    )
}

fn request() -> Request<()> {
    let mut req = Request::get("/api/v1/namespaces/default/pods")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(AuditId(HeaderValue::from_static(
            "4f1c1a9e-51f6-4d7a-9b5e-0c2d6f1e8a77",
        )));
    req
}

fn run(svc: &mut Svc) {
    let resp = svc(request()).now_or_never().unwrap().unwrap();
    assert_eq!(resp.status(), 200);
}

fn trace_layers(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace_layers");
    let mut bare = {
        let mut s = inner();
        Box::new(move |req| s.call(req)) as Svc
    };
    group.bench_function("bare_inner", |b| b.iter(|| run(&mut bare)));
    let mut off = stack(None);
    group.bench_function("tracing_off", |b| b.iter(|| run(&mut off)));
    let mut cases = Vec::new();
    for (name, ratio) in [("on_0pct", 0.0), ("on_1pct", 0.01), ("on_100pct", 1.0)] {
        let t = tracing_at(ratio);
        let mut svc = stack(Some(t.clone()));
        group.bench_function(name, |b| b.iter(|| run(&mut svc)));
        cases.push(t);
    }
    group.finish();
    for t in cases {
        t.shutdown();
    }
}

criterion_group!(benches, trace_layers);
criterion_main!(benches);
