//! The HTTP client the OTLP exporter posts span batches with: our own hyper + rustls stack
//! (the one aws-lc-rs provider), instead of the exporter's reqwest or tonic clients.
//!
//! Accepts an `http://` collector, or an `https://` one whose certificate chains to the
//! configured CA. Rejects (an export error, never a request's failure) an unreachable collector,
//! a TLS failure, a response body over 64 KiB, or no answer within the export timeout. Each
//! failed post, and each answer other than 2xx, counts in
//! `portcullis_trace_export_failures_total` and is logged: the first at once, then at most one
//! line a minute with the count since (a collector refusing connections under load fails
//! hundreds of batches a second; the SDK's own log of each, its `internal-logs` feature, is off
//! for that reason, and `span_queue.rs` counts the spans its full queue would drop).
//!
//! Why its own current-thread tokio runtime: the SDK's batch span processor exports from its
//! own OS thread with a plain `block_on`, where no tokio reactor is running. Driving the
//! request on a small runtime owned by that thread keeps exports off the proxy's workers, and
//! works the same when the proxy's runtime is single-threaded (tests) or shutting down.

use std::{future::Future, pin::Pin, sync::OnceLock, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use opentelemetry_http::{HttpClient, HttpError};

use super::{config::TracingSettings, throttled::Throttled};
use crate::server::tls;

/// Exports that failed or were not answered 2xx, since the process started (every tracer a
/// reload makes counts here); registered in [`crate::telemetry::Metrics`].
pub static EXPORT_FAILURES: std::sync::LazyLock<prometheus_client::metrics::counter::Counter> =
    std::sync::LazyLock::new(Default::default);

/// Failed exports: the first logged at once, then at most one line a minute.
static FAILURE_LOG: Throttled = Throttled::new(Duration::from_secs(60));

/// Count a failed export to `endpoint`, and log it when a line is due.
fn failed(endpoint: &str, why: &dyn std::fmt::Display) {
    EXPORT_FAILURES.inc();
    if let Some(failed) = FAILURE_LOG.note() {
        tracing::warn!(%endpoint, failed, error = %why, "OTLP span export failed: the collector did not take the batch");
    }
}

/// An export went through: if failures went unlogged since the last warning, say how many,
/// so a collector that recovered within the minute is not left looking broken.
fn succeeded(endpoint: &str) {
    let unlogged = FAILURE_LOG.take_unwritten();
    if unlogged > 0 {
        tracing::info!(%endpoint, failed = unlogged, "OTLP span export works again; exports failed since the last warning");
    }
}

/// The largest collector answer read (an OTLP partial-success message is a few bytes).
const MAX_RESPONSE: usize = 64 * 1024;

type Pool = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Posts OTLP bodies; see the module doc.
pub struct OtlpClient {
    tls: rustls::ClientConfig,
    timeout: Duration,
    /// For the log lines only.
    endpoint: String,
    /// Made on first use, on the exporter's thread (see the module doc).
    rt: OnceLock<Option<(tokio::runtime::Runtime, Pool)>>,
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpClient")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OtlpClient {
    pub fn new(settings: &TracingSettings) -> anyhow::Result<OtlpClient> {
        let certs = match &settings.ca_pem {
            Some(pem) => tls::certs_from_pem(pem)?,
            None => Vec::new(),
        };
        // No ALPN here: the connector sets it (http/1.1) and refuses a preset list.
        let tls = tls::client_config(certs, None, &[])?;
        Ok(OtlpClient {
            tls,
            timeout: settings.timeout,
            endpoint: settings.endpoint.to_string(),
            rt: OnceLock::new(),
        })
    }

    fn runtime(&self) -> Option<&(tokio::runtime::Runtime, Pool)> {
        self.rt
            .get_or_init(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_connect_timeout(Some(self.timeout));
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(self.tls.clone())
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                // No idle pool: this runtime only runs while an export is being sent, so a
                // kept connection could not be watched; one batch every few seconds is cheap.
                let pool = Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(0)
                    .build(https);
                Some((rt, pool))
            })
            .as_ref()
    }

    fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Not the SDK's export thread: blocking here would stall (or panic) a runtime.
            return Err("an OTLP export was started inside an async runtime".into());
        }
        let Some((rt, pool)) = self.runtime() else {
            return Err("cannot start the exporter's runtime".into());
        };
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        rt.block_on(async {
            let sent = async {
                let resp = pool.request(request).await?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(self.timeout, sent).await {
                Ok(result) => result,
                Err(_) => Err("the collector did not answer within tracing.timeout".into()),
            }
        })
    }
}

impl Drop for OtlpClient {
    fn drop(&mut self) {
        // Dropping a runtime where blocking is not allowed panics; this never blocks.
        if let Some(Some((rt, _))) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl HttpClient for OtlpClient {
    // `#[async_trait]` spelled out: the export runs under the SDK's `block_on` (see above).
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            let result = self.send(request);
            match &result {
                Ok(resp) if resp.status().is_success() => succeeded(&self.endpoint),
                Ok(resp) => failed(&self.endpoint, &format_args!("status {}", resp.status())),
                Err(err) => failed(&self.endpoint, err),
            }
            result
        })
    }
}
