//! The trace layers of the stack: one span per request, a child span per layer, and the W3C
//! `traceparent` / `tracestate` sent upstream.
//!
//! Accepts everything and refuses nothing: these layers only observe. [`RequestSpanLayer`]
//! (just inside the request id) opens the request's log span (`audit_id`, `trace_id`, so
//! every log line inside names its request) and, with `tracing:` configured, the request span
//! `portcullis.request` (a new root, or the client's trace continued when
//! `tracing.trust_incoming`); it always removes the client's `traceparent` / `tracestate`
//! so they are never forwarded as they came, and without `trust_incoming` its `baggage`. [`traced`] wraps one layer: its span covers that
//! layer's own work, from the request reaching it until it calls inward (or, when it answers
//! itself — a refusal — until its answer), so the spans of a request are siblings under the
//! request span whose durations add up to where the time went, and a refused request's last
//! span names the layer that refused. [`UpstreamSpanLayer`] (just above the upstream
//! service) opens the `upstream` client span until the response head and writes its context
//! into the forwarded request's `traceparent` / `tracestate`.
//!
//! Attributes: method, path, Audit-ID, verb, API group, resource, namespace, subresource, status
//! code, refusal stage and reason. Never a header value, a token, a query or a body.
//!
//! Tracing off costs a pointer check per layer: no span, no extension, no extra allocation.
//! A request that the sampler drops gets no layer spans either, only the propagated context.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context as TaskContext, Poll},
};

use http::{Request, Response};
use opentelemetry::{
    trace::{SpanKind, SpanRef, Status, TraceContextExt, Tracer as _},
    Context, KeyValue,
};
use tower::{Layer, Service};
use tracing::Instrument;

use super::traces::{Tracing, TRACE_HEADERS};
use crate::{
    body::Body,
    refusal::Refused,
    service::{self, AuditId, ResponseFuture},
};

/// The request's trace, in the request extensions (only with `tracing:` configured).
pub struct RequestTrace {
    cx: Context,
    sampled: bool,
    facts_recorded: AtomicBool,
    tracing: Arc<Tracing>,
}

impl RequestTrace {
    /// Verb, group, resource, namespace and subresource on the request span, once the
    /// classification is there (the first layer boundary after classify).
    fn record_facts<B>(&self, req: &Request<B>) {
        if !self.sampled || self.facts_recorded.load(Ordering::Relaxed) {
            return;
        }
        let Some(info) = service::info(req) else {
            return;
        };
        if self.facts_recorded.swap(true, Ordering::Relaxed) {
            return;
        }
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("portcullis.verb", info.verb.clone()));
        for (key, value) in [
            ("portcullis.api_group", &info.api_group),
            ("portcullis.resource", &info.resource),
            ("portcullis.namespace", &info.namespace),
            ("portcullis.subresource", &info.subresource),
        ] {
            if !value.is_empty() {
                span.set_attribute(KeyValue::new(key, value.clone()));
            }
        }
    }

    fn child(&self, name: &'static str, kind: SpanKind) -> Context {
        let tracer = &self.tracing.tracer;
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(tracer, &self.cx);
        self.cx.with_span(span)
    }
}

/// Status code and refusal on a span; 5xx marks it as an error.
fn record_outcome(span: &SpanRef<'_>, resp: &Response<Body>) {
    let status = resp.status();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if let Some(r) = resp.extensions().get::<Refused>() {
        span.set_attribute(KeyValue::new("portcullis.refused_by", r.by));
        span.set_attribute(KeyValue::new("portcullis.refusal_reason", r.reason.clone()));
    }
    if status.is_server_error() {
        span.set_status(Status::error(status.to_string()));
    }
}

/// Opens the request's log span and, when tracing is on, its trace (see the module doc).
#[derive(Clone)]
pub struct RequestSpanLayer {
    tracing: Option<Arc<Tracing>>,
}

impl RequestSpanLayer {
    pub fn new(tracing: Option<Arc<Tracing>>) -> RequestSpanLayer {
        RequestSpanLayer { tracing }
    }
}

impl<S> Layer<S> for RequestSpanLayer {
    type Service = RequestSpanService<S>;
    fn layer(&self, inner: S) -> RequestSpanService<S> {
        RequestSpanService {
            inner,
            tracing: self.tracing.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestSpanService<S> {
    inner: S,
    tracing: Option<Arc<Tracing>>,
}

impl<S, B> Service<Request<B>> for RequestSpanService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible, Future = ResponseFuture>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture {
        let audit_id = req.extensions().get::<AuditId>().map(|a| a.0.clone());
        let id = audit_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let log = tracing::info_span!("request", audit_id = id, trace_id = tracing::field::Empty);
        let Some(t) = &self.tracing else {
            if log.is_disabled() {
                return self.inner.call(req);
            }
            return Box::pin(self.inner.call(req).instrument(log));
        };
        let parent = t.parent(req.headers());
        for h in TRACE_HEADERS {
            req.headers_mut().remove(h);
        }
        if !t.trust_incoming {
            // W3C baggage travels with the trace context: kube-apiserver's propagator reads it
            // (and passes it on, to webhooks among others). An untrusted client's goes too.
            req.headers_mut().remove("baggage");
        }
        let span = t
            .tracer
            .span_builder("portcullis.request")
            .with_kind(SpanKind::Server)
            .start_with_context(&t.tracer, &parent);
        let cx = parent.with_span(span);
        let span_context = cx.span().span_context().clone();
        if span_context.is_sampled() {
            // Set after the sampler decided, so a dropped request allocates none of them.
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "http.request.method",
                req.method().as_str().to_owned(),
            ));
            span.set_attribute(KeyValue::new("url.path", span_path(req.uri().path())));
            span.set_attribute(KeyValue::new("portcullis.audit_id", id.to_owned()));
        }
        log.record("trace_id", tracing::field::display(span_context.trace_id()));
        req.extensions_mut().insert(Arc::new(RequestTrace {
            cx: cx.clone(),
            sampled: span_context.is_sampled(),
            facts_recorded: AtomicBool::new(false),
            tracing: t.clone(),
        }));
        let fut = self.inner.call(req);
        // The request span ends last: the tracer (and its exporter) must outlive it. After a
        // reload replaced the tracer, this is what keeps it until its last request's spans
        // have ended (the extension above goes when the request's parts are dropped, before
        // the layers' spans end).
        let tracer = t.clone();
        Box::pin(
            async move {
                let resp = fut.await?;
                record_outcome(&cx.span(), &resp);
                cx.span().end();
                drop(tracer);
                Ok(resp)
            }
            .instrument(log),
        )
    }
}

/// The open span of the layer the request is in (request extension, sampled requests only).
#[derive(Clone)]
struct LayerSpan(Context);

/// `layer` with its own child span named `name` (when `on`, i.e. `tracing:` is configured).
pub fn traced<L>(name: &'static str, layer: L, on: bool) -> Traced<L> {
    Traced { name, layer, on }
}

/// See [`traced`].
#[derive(Clone)]
pub struct Traced<L> {
    name: &'static str,
    layer: L,
    on: bool,
}

impl<L, S> Layer<S> for Traced<L>
where
    L: Layer<Inward<S>>,
{
    type Service = TracedService<L::Service>;
    fn layer(&self, inner: S) -> Self::Service {
        TracedService {
            name: self.name,
            on: self.on,
            inner: self.layer.layer(Inward { inner, on: self.on }),
        }
    }
}

/// The wrapped layer's service, with the span opened before it.
#[derive(Clone)]
pub struct TracedService<S> {
    name: &'static str,
    on: bool,
    inner: S,
}

impl<S, B> Service<Request<B>> for TracedService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible, Future = ResponseFuture>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture {
        if !self.on {
            return self.inner.call(req);
        }
        let cx = req
            .extensions()
            .get::<Arc<RequestTrace>>()
            .filter(|t| t.sampled)
            .map(|t| {
                t.record_facts(&req);
                t.child(self.name, SpanKind::Internal)
            });
        let Some(cx) = cx else {
            return self.inner.call(req);
        };
        req.extensions_mut().insert(LayerSpan(cx.clone()));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // Still open: the layer answered without calling inward.
            if cx.span().is_recording() {
                record_outcome(&cx.span(), &resp);
                cx.span().end();
            }
            Ok(resp)
        })
    }
}

/// Placed between a traced layer and what it wraps: the layer's span ends when it calls in.
#[derive(Clone)]
pub struct Inward<S> {
    inner: S,
    on: bool,
}

impl<S, B> Service<Request<B>> for Inward<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if self.on {
            if let Some(LayerSpan(cx)) = req.extensions_mut().remove::<LayerSpan>() {
                cx.span().end();
            }
            if let Some(trace) = req.extensions().get::<Arc<RequestTrace>>() {
                trace.record_facts(&req);
            }
        }
        self.inner.call(req)
    }
}

/// Longest `url.path` a span records. The path is set before authentication, so without a cap
/// any client could queue spans of `max_header_bytes` each (64 KiB by default) for export; a
/// Kubernetes path is a few hundred bytes (names are at most 253 characters).
const SPAN_PATH_MAX: usize = 2048;

/// `path` for the span's `url.path`: cut at [`SPAN_PATH_MAX`] bytes (on a character boundary)
/// with `…` appended when longer.
fn span_path(path: &str) -> String {
    if path.len() <= SPAN_PATH_MAX {
        return path.to_owned();
    }
    let mut end = SPAN_PATH_MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 3);
    out.push_str(path.get(..end).unwrap_or_default());
    out.push('…');
    out
}

/// Opens the `upstream` span and writes the trace context into the forwarded request.
#[derive(Clone)]
pub struct UpstreamSpanLayer {
    on: bool,
}

impl UpstreamSpanLayer {
    pub fn new(on: bool) -> UpstreamSpanLayer {
        UpstreamSpanLayer { on }
    }
}

impl<S> Layer<S> for UpstreamSpanLayer {
    type Service = UpstreamSpanService<S>;
    fn layer(&self, inner: S) -> UpstreamSpanService<S> {
        UpstreamSpanService { inner, on: self.on }
    }
}

#[derive(Clone)]
pub struct UpstreamSpanService<S> {
    inner: S,
    on: bool,
}

impl<S, B> Service<Request<B>> for UpstreamSpanService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible, Future = ResponseFuture>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture {
        if !self.on {
            return self.inner.call(req);
        }
        let Some(trace) = req.extensions().get::<Arc<RequestTrace>>().cloned() else {
            return self.inner.call(req);
        };
        if !trace.sampled {
            // Not recorded here, but the API server must hear the decision (flags 00).
            trace.tracing.inject(&trace.cx, req.headers_mut());
            return self.inner.call(req);
        }
        trace.record_facts(&req);
        let cx = trace.child("upstream", SpanKind::Client);
        trace.tracing.inject(&cx, req.headers_mut());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            record_outcome(&cx.span(), &resp);
            cx.span().end();
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{span_path, SPAN_PATH_MAX};

    #[test]
    fn a_long_path_is_cut_on_a_character_boundary() {
        assert_eq!(span_path("/api/v1/pods"), "/api/v1/pods");
        let exact = "a".repeat(SPAN_PATH_MAX);
        assert_eq!(span_path(&exact), exact);
        let long = format!("/{}", "é".repeat(40_000));
        let cut = span_path(&long);
        assert!(cut.len() <= SPAN_PATH_MAX + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(long.starts_with(cut.trim_end_matches('…')));
    }
}
