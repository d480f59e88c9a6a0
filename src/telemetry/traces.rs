//! The live tracer of one configuration: an OpenTelemetry SDK tracer provider with a
//! parent-based ratio sampler, a batch span processor behind a counted bound
//! ([`super::span_queue`]) and the OTLP/HTTP protobuf exporter posting through
//! [`super::otlp_client::OtlpClient`].
//!
//! Per `Runtime`, not process-global: a reload that changes `tracing:` (endpoint, CA file,
//! sampling, …) builds a new one beside the old one, which exports what it holds and stops when
//! the last request of its configuration ends; several proxies in one process (the tests)
//! export to their own collectors.

use anyhow::{Context as _, Result};
use http::HeaderMap;
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    Context,
};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracer, SdkTracerProvider},
    Resource,
};

use super::{config::TracingSettings, otlp_client::OtlpClient, span_queue};

/// The W3C headers this module reads and writes.
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// What the trace layers need (see `span_layer.rs`).
pub struct Tracing {
    provider: SdkTracerProvider,
    pub(super) tracer: SdkTracer,
    pub(super) trust_incoming: bool,
    propagator: TraceContextPropagator,
}

impl Tracing {
    /// Build the exporter and the provider; nothing is sent until a sampled span ends.
    pub fn start(s: &TracingSettings) -> Result<Tracing> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OtlpClient::new(s).context("tracing.ca_file")?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(s.endpoint.to_string())
            .with_timeout(s.timeout)
            .build()
            .context("tracing: cannot build the OTLP exporter")?;
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(s.sampling_ratio)));
        let resource = Resource::builder_empty()
            .with_service_name(s.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(span_queue::bounded(
                exporter,
                span_queue::queue_size(),
                span_queue::DROPPED.clone(),
            ))
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        use opentelemetry::trace::TracerProvider as _;
        let tracer = provider.tracer("portcullis");
        tracing::info!(endpoint = %s.endpoint, sampling_ratio = s.sampling_ratio, trust_incoming = s.trust_incoming, "exporting traces");
        Ok(Tracing {
            provider,
            tracer,
            trust_incoming: s.trust_incoming,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// The client's trace context, or an empty one when it is not trusted.
    pub(super) fn parent(&self, headers: &HeaderMap) -> Context {
        if !self.trust_incoming {
            return Context::new();
        }
        self.propagator
            .extract_with_context(&Context::new(), &HeaderReader(headers))
    }

    /// Write `cx` as `traceparent` (+ `tracestate`) into `headers`.
    pub(super) fn inject(&self, cx: &Context, headers: &mut HeaderMap) {
        self.propagator
            .inject_context(cx, &mut HeaderWriter(headers));
        // Forwarding strips what the client's `Connection` names, after this: a client naming
        // `traceparent` there would otherwise take ours off the forwarded request.
        crate::k8s::headers::unname_in_connection(headers, &["traceparent", "tracestate"]);
    }

    /// Export what is buffered and stop (at the end of `app::run`).
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::debug!(%err, "trace exporter shutdown");
        }
    }
}

impl Drop for Tracing {
    /// The provider's shutdown exports what is buffered and joins the exporter's thread, which
    /// may wait on the collector up to the export timeout. The last reference to a replaced
    /// configuration's tracer goes with its last request, on an async worker: shut down on a
    /// blocking thread there, in place elsewhere. (After [`Tracing::shutdown`] it does nothing.)
    fn drop(&mut self) {
        let provider = self.provider.clone();
        let stop = move || {
            if let Err(err) = provider.shutdown() {
                tracing::debug!(%err, "trace exporter shutdown");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(stop)),
            Err(_) => stop(),
        }
    }
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderWriter<'a>(&'a mut HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` is the same as none; the W3C spec asks not to send it.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
