//! The webhook sink: POSTs `audit.k8s.io/v1` `EventList` JSON batches to the server of a
//! kubeconfig-format file, as kube-apiserver's `--audit-webhook-config-file` does.
//!
//! The kubeconfig is read with `crate::kubeconfig` (server, CA, optional `tls-server-name`,
//! bearer `token` / `tokenFile` or client certificate and key); the HTTPS client is built like
//! the upstream client (`upstream/client.rs`): rustls with aws-lc-rs, h2 or HTTP/1.1 by ALPN.
//! A `tokenFile` is re-read for every request, so rotated projected tokens are picked up.
//!
//! The receiver can change without a restart: a configuration reload reads the kubeconfig
//! again ([`retarget`]); if what it resolves to (server, CA, TLS name, token, client
//! certificate and key) differs, the worker posts with the new client from the swap on —
//! batches already being retried included. A kubeconfig that no longer resolves, or names a
//! receiver refused below, refuses the reload at `audit.sinks[i].webhook.kubeconfig` and the
//! running receiver stays. Kube-apiserver reads its webhook config only at start; a sink
//! that a restart alone could re-point would leave a rotated collector certificate failing
//! every batch until then.
//!
//! Batching: in `Batch` mode a batch is sent when it holds `max_batch_size` events or
//! `max_wait` after its first event. In the blocking modes whatever is queued is sent at once
//! (up to `max_batch_size`), so a waiting request never waits for `max_wait`. One request is in
//! flight at a time, so events arrive in order.
//!
//! Bytes (`max_batch_bytes`, default 10 MiB = 10485760, the apiserver's
//! `--audit-webhook-truncate-max-batch-size`; always on): a batch whose `EventList` body would
//! be larger is sent as several POSTs, in order, each body within the cap — the whole body,
//! envelope included, where the apiserver counts only the events. An event larger than the cap
//! on its own still goes, alone in its POST (`max_event_size` is what refuses events). See
//! `webhook/limits.rs`.
//!
//! Throttle (`Batch` mode, as the apiserver's batch backend): at most `throttle_qps` batches a
//! second after a burst of `throttle_burst` (defaults 10 and 15, the apiserver's; qps 0: off);
//! a batch waits for its token while later events queue, and so does each further POST a batch
//! is split into by `max_batch_bytes`. The blocking modes are not throttled: a request is
//! waiting.
//!
//! Size (`max_event_size`, bytes; 0 — the default, like the apiserver's
//! `--audit-webhook-truncate-enabled=false` — means no limit): an event larger than that is
//! sent without `requestObject` / `responseObject` and annotated `audit.k8s.io/truncated:
//! "true"`; one still too large is not sent (failed, logged with its audit ID). See
//! `webhook/limits.rs`.
//!
//! Retries: connection errors, timeouts and HTTP 429, 500, 502, 503, 504 are retried up to
//! `max_retries` times with exponential backoff (`initial_backoff`, factor 1.5, +0–20% jitter),
//! as the apiserver's webhook client does; any other status fails the batch at once — except
//! 413 Payload Too Large to a POST of more than one event: its events are sent again in two
//! halves (each halved again on a 413 of its own, not throttled: the receiver read none of
//! them), so one event the receiver finds too large fails alone rather than taking the events
//! it was batched with along (a single event answered 413 fails). Each event's waiter gets the
//! outcome of the POST that carried it: a failed POST's waiters get `Err` (strict: 503) and
//! its events are counted in `events_failed`.
//! Every answer's body is read (up to 64 KiB, within `request_timeout`), so an HTTP/1.1
//! connection goes back to the pool; a refusal's body (its first 512 characters, on one line)
//! is quoted in the logged error, so the receiver's reason is in front of the operator (a
//! strict request's 503 does not carry it: the client learns nothing of the audit backend).
//!
//! Accepts: `https://` servers (a CA is required: we never fall back to "any certificate"), and
//! `http://` only to a loopback address (a collector on the same host). Rejects: other schemes,
//! plain http to another host, kubeconfigs `kubeconfig.rs` refuses (exec plugins, auth
//! providers, basic auth, `insecure-skip-tls-verify`).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use rustls_pki_types::ServerName;
use tokio::sync::mpsc;

use super::{Ack, DeliveryMode, Msg, Prepared, SinkCounters};
use limits::{Fit, Throttle};

pub mod limits;
use crate::{
    kubeconfig::{Kubeconfig, Resolved},
    server::tls,
};

/// Webhook sink settings. [`WebhookConfig::new`] gives the apiserver's batch defaults, with a
/// shorter first backoff (1 s rather than 10 s) since our requests may be waiting.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// kubeconfig-format file naming the receiver.
    pub kubeconfig: PathBuf,
    /// Context to use (default: the file's current-context).
    pub context: Option<String>,
    /// Events per POST at most.
    pub max_batch_size: usize,
    /// `Batch` mode: how long a batch may wait to fill.
    pub max_wait: Duration,
    pub initial_backoff: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Per POST, connection included.
    pub request_timeout: Duration,
    /// `Batch` mode: batches per second after the burst (0: no throttle).
    pub throttle_qps: f64,
    pub throttle_burst: u32,
    /// Truncate / refuse events larger than this many bytes (0: no limit).
    pub max_event_size: usize,
    /// Largest `EventList` body of a POST, in bytes: larger batches are split (an event larger
    /// than this alone goes alone).
    pub max_batch_bytes: usize,
}

/// [`WebhookConfig::max_batch_bytes`]'s default: kube-apiserver's
/// `--audit-webhook-truncate-max-batch-size` (10 MiB).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 10 << 20;

impl WebhookConfig {
    /// 400 events and 10 MiB per batch, 30 s max wait, backoff from 1 s, 4 retries, 30 s per
    /// request.
    pub fn new(kubeconfig: impl Into<PathBuf>) -> WebhookConfig {
        WebhookConfig {
            kubeconfig: kubeconfig.into(),
            context: None,
            max_batch_size: 400,
            max_wait: Duration::from_secs(30),
            initial_backoff: Duration::from_secs(1),
            max_retries: 4,
            request_timeout: Duration::from_secs(30),
            throttle_qps: 10.0,
            throttle_burst: 15,
            max_event_size: 0,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where and how the worker posts: built from the kubeconfig.
pub(crate) struct Target {
    uri: Uri,
    client: HttpClient,
    token: Option<String>,
    token_file: Option<PathBuf>,
    /// What the kubeconfig resolved to: a reload that resolves the same keeps this client
    /// (and its open connections).
    resolved: Resolved,
}

/// A running webhook sink's receiver, swapped by a reload ([`retarget`]).
pub(crate) type Slot = Arc<ArcSwap<Target>>;

/// A receiver a reload built, put in place by [`Retarget::apply`] once the reload commits.
pub(crate) struct Retarget {
    slot: Slot,
    next: Target,
}

impl Retarget {
    pub(crate) fn apply(self) {
        tracing::info!(server = %self.next.uri, "audit webhook receiver changed");
        self.slot.store(Arc::new(self.next));
    }
}

/// Read `cfg`'s kubeconfig again for a reload: `None` when it resolves to what `slot` posts
/// to now, `Err` when it no longer resolves to a receiver this sink accepts.
pub(crate) fn retarget(slot: &Slot, cfg: &WebhookConfig) -> anyhow::Result<Option<Retarget>> {
    let next = build_target(cfg)?;
    Ok((next.resolved != slot.load().resolved).then(|| Retarget {
        slot: Arc::clone(slot),
        next,
    }))
}

/// Whether `cfg`'s kubeconfig names a receiver this sink accepts (for config validation).
pub(crate) fn check(cfg: &WebhookConfig) -> anyhow::Result<()> {
    build_target(cfg).map(drop)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn build_target(cfg: &WebhookConfig) -> anyhow::Result<Target> {
    let kc = Kubeconfig::load(&cfg.kubeconfig)?;
    let dir = cfg
        .kubeconfig
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let r = kc
        .resolve(cfg.context.as_deref(), &dir)
        .with_context(|| format!("in {}", cfg.kubeconfig.display()))?;
    let uri: Uri = r
        .server
        .parse()
        .with_context(|| format!("server {:?} is not a URL", r.server))?;
    let host = uri
        .host()
        .with_context(|| format!("server {:?} has no host", r.server))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback(host) => {}
        Some("http") => bail!(
            "server {:?}: plain http is only allowed to a loopback address; use https",
            r.server
        ),
        _ => bail!("server {:?} is not an https:// URL", r.server),
    }
    let roots = match &r.ca_pem {
        Some(pem) => tls::certs_from_pem(pem).context("certificate-authority")?,
        None if uri.scheme_str() == Some("https") => bail!(
            "the cluster entry has no certificate-authority; the receiver's certificate must be verified"
        ),
        None => Vec::new(),
    };
    let identity = match (&r.client_cert_pem, &r.client_key_pem) {
        (Some(c), Some(k)) => Some((
            tls::certs_from_pem(c).context("client-certificate")?,
            tls::key_from_pem(k).context("client-key")?,
        )),
        _ => None,
    };
    let tls_config = tls::client_config(roots, identity, &[])?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(cfg.request_timeout));
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_or_http();
    let https = match &r.tls_server_name {
        Some(name) => builder
            .with_server_name_resolver(FixedServerNameResolver::new(
                ServerName::try_from(name.clone()).context("tls-server-name")?,
            ))
            .enable_all_versions()
            .wrap_connector(http),
        None => builder.enable_all_versions().wrap_connector(http),
    };
    let client = Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https);
    Ok(Target {
        uri,
        client,
        token: r.token.clone(),
        token_file: r.token_file.clone(),
        resolved: r,
    })
}

/// Start the webhook worker task (the kubeconfig is read and the client built here); the
/// receiver's slot is for [`retarget`].
pub(crate) fn spawn(
    name: &str,
    cfg: WebhookConfig,
    mode: DeliveryMode,
    rx: mpsc::Receiver<Msg>,
    counters: Arc<SinkCounters>,
) -> anyhow::Result<Slot> {
    let target = build_target(&cfg)
        .with_context(|| format!("audit webhook {}", cfg.kubeconfig.display()))?;
    let slot: Slot = Arc::new(ArcSwap::from_pointee(target));
    let worker = Worker {
        name: name.to_string(),
        cfg,
        batch_mode: matches!(mode, DeliveryMode::Batch { .. }),
        target: Arc::clone(&slot),
        counters,
    };
    tokio::runtime::Handle::try_current()
        .context("the audit webhook needs a tokio runtime")?
        .spawn(worker.run(rx));
    Ok(slot)
}

struct Worker {
    name: String,
    cfg: WebhookConfig,
    batch_mode: bool,
    /// Loaded for each POST, so a retried batch goes to a receiver a reload put in place.
    target: Slot,
    counters: Arc<SinkCounters>,
}

/// Why one POST failed, and whether trying again may help.
struct PostError {
    message: String,
    retryable: bool,
    /// The receiver answered 413 Payload Too Large: the same events in smaller POSTs may pass.
    too_large: bool,
}

/// One event as it is posted: its line (or, over `max_event_size`, its truncated form) and its
/// waiter.
struct Outgoing {
    prepared: Arc<Prepared>,
    replaced: Option<Vec<u8>>,
    ack: Option<Ack>,
}

impl Outgoing {
    fn line(&self) -> &[u8] {
        self.replaced
            .as_deref()
            .unwrap_or_else(|| self.prepared.line())
    }
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let max = self.cfg.max_batch_size.max(1);
        let mut msgs: Vec<Msg> = Vec::with_capacity(max);
        let mut pending: Vec<(Arc<Prepared>, Option<Ack>)> = Vec::with_capacity(max);
        let mut shutdown = None;
        let mut throttle = Throttle::new(
            if self.batch_mode {
                self.cfg.throttle_qps
            } else {
                0.0
            },
            self.cfg.throttle_burst,
        );
        loop {
            if rx.recv_many(&mut msgs, max).await == 0 {
                return;
            }
            absorb(&mut msgs, &mut pending, &mut shutdown);
            if self.batch_mode && shutdown.is_none() {
                let deadline = tokio::time::Instant::now() + self.cfg.max_wait;
                while pending.len() < max && shutdown.is_none() {
                    match tokio::time::timeout_at(
                        deadline,
                        rx.recv_many(&mut msgs, max - pending.len()),
                    )
                    .await
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => absorb(&mut msgs, &mut pending, &mut shutdown),
                    }
                }
            }
            while !pending.is_empty() {
                let n = pending.len().min(max);
                let batch: Vec<_> = pending.drain(..n).collect();
                let wait = throttle.take();
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                self.deliver(batch, &mut throttle).await;
            }
            if let Some(done) = shutdown.take() {
                // Closed before answering (see spawn_thread).
                rx.close();
                while let Ok(m) = rx.try_recv() {
                    m.refuse("audit is shutting down");
                }
                let _ = done.send(());
                return;
            }
        }
    }

    /// Post `all` (one batch of up to `max_batch_size` events; its throttle token taken): in as
    /// many POSTs as `max_batch_bytes` needs, each further one waiting for a token of its own.
    async fn deliver(&self, all: Vec<(Arc<Prepared>, Option<Ack>)>, throttle: &mut Throttle) {
        // Oversized events: truncated, or refused here.
        let mut batch = Vec::with_capacity(all.len());
        for (p, ack) in all {
            let replaced = match limits::fit(p.line(), self.cfg.max_event_size) {
                Fit::Whole(_) => None,
                Fit::Truncated(v) => {
                    SinkCounters::add(&self.counters.events_truncated, 1);
                    Some(v)
                }
                Fit::TooLarge => {
                    SinkCounters::add(&self.counters.events_failed, 1);
                    let id = serde_json::from_slice::<crate::audit::Event>(p.line())
                        .map(|e| e.audit_id)
                        .unwrap_or_default();
                    tracing::error!(sink = %self.name, audit_id = %id, max = self.cfg.max_event_size, "audit event too large for the webhook even without its objects; not sent");
                    if let Some(ack) = ack {
                        let _ = ack.send(Err("the event exceeds the webhook's max_event_size even without its objects".into()));
                    }
                    continue;
                }
            };
            batch.push(Outgoing {
                prepared: p,
                replaced,
                ack,
            });
        }
        let parts = limits::by_bytes(batch, |o| o.line().len(), self.cfg.max_batch_bytes);
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                let wait = throttle.take();
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            self.send(part).await;
        }
    }

    /// Post `batch` and answer its waiters. A 413 to more than one event sends them again in
    /// two halves, first half first (so events still arrive in order), down to single events:
    /// the receiver's size limit then fails only the events it refuses alone, and each waiter
    /// gets the outcome of the POST that carried its event.
    async fn send(&self, batch: Vec<Outgoing>) {
        let mut todo = std::collections::VecDeque::from([batch]);
        while let Some(mut batch) = todo.pop_front() {
            let body = event_list_body(batch.iter().map(Outgoing::line));
            let result = match self.post_with_retries(body).await {
                Ok(()) => Ok(()),
                Err(e) if e.too_large && batch.len() > 1 => {
                    tracing::warn!(sink = %self.name, err = %e.message, events = batch.len(), "audit webhook receiver refused a batch as too large; sending it in halves");
                    let second = batch.split_off(batch.len() / 2);
                    todo.push_front(second);
                    todo.push_front(batch);
                    continue;
                }
                Err(e) => Err(e),
            };
            // The receiver's health, for holding back writes while a strict webhook fails
            // (`Auditor::strict_failure`): a 413 to one event refuses that event, not every
            // later one.
            match &result {
                Ok(()) => self.counters.health.record(Ok(())),
                Err(e) if !e.too_large => self.counters.health.record(Err(&e.message)),
                Err(_) => {}
            }
            let result = result.map_err(|e| e.message);
            let n = batch.len();
            match &result {
                Ok(()) => SinkCounters::add(&self.counters.events_written, n),
                Err(e) => {
                    SinkCounters::add(&self.counters.events_failed, n);
                    tracing::error!(sink = %self.name, err = %e, lost = n, "audit webhook gave up on a batch");
                }
            }
            for o in batch {
                if let Some(ack) = o.ack {
                    let _ = ack.send(result.clone());
                }
            }
        }
    }

    /// One POST of `body`, retried (retryable failures only) up to `max_retries` times with
    /// backoff.
    async fn post_with_retries(&self, body: Bytes) -> Result<(), PostError> {
        let mut backoff = self.cfg.initial_backoff;
        let mut attempt = 0;
        loop {
            match self.post(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if e.retryable && attempt < self.cfg.max_retries => {
                    attempt += 1;
                    SinkCounters::add(&self.counters.retries, 1);
                    tracing::warn!(sink = %self.name, err = %e.message, attempt, "audit webhook failed; retrying");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = backoff.mul_f64(1.5);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<(), PostError> {
        let t = self.target.load_full();
        let token = match (&t.token, &t.token_file) {
            (Some(tok), _) => Some(tok.trim().to_string()),
            (None, Some(path)) => match tokio::fs::read_to_string(path).await {
                Ok(s) => Some(s.trim().to_string()),
                Err(e) => {
                    return Err(PostError {
                        message: format!("cannot read tokenFile {}: {e}", path.display()),
                        retryable: true,
                        too_large: false,
                    })
                }
            },
            (None, None) => None,
        };
        let mut req = Request::post(t.uri.clone()).header(header::CONTENT_TYPE, "application/json");
        if let Some(tok) = token.as_deref().filter(|s| !s.is_empty()) {
            let mut v =
                http::HeaderValue::from_str(&format!("Bearer {tok}")).map_err(|_| PostError {
                    message: "the token is not a valid header value".into(),
                    retryable: false,
                    too_large: false,
                })?;
            v.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, v);
        }
        let req = req.body(Full::new(body)).map_err(|e| PostError {
            message: format!("cannot build the request: {e}"),
            retryable: false,
            too_large: false,
        })?;
        let started = Instant::now();
        match tokio::time::timeout(self.cfg.request_timeout, t.client.request(req)).await {
            Err(_) => Err(PostError {
                message: format!("no answer within {:?}", self.cfg.request_timeout),
                retryable: true,
                too_large: false,
            }),
            Ok(Err(e)) => Err(PostError {
                message: format!("{e}"),
                retryable: true,
                too_large: false,
            }),
            Ok(Ok(resp)) => {
                let status = resp.status();
                // The answer's body is read (bounded, within what is left of the request's
                // time) before the batch is settled: an HTTP/1.1 connection goes back to the
                // pool only once its answer has been read to the end — left unread, every
                // batch would open a new connection and TLS handshake — and a refusal's body
                // is the receiver's reason, which the operator needs in the log.
                let answer =
                    read_answer(resp.into_body(), started + self.cfg.request_timeout).await;
                tracing::debug!(sink = %self.name, %status, elapsed = ?started.elapsed(), "audit webhook answered");
                if status.is_success() {
                    Ok(())
                } else {
                    Err(PostError {
                        message: match reason_text(&answer, token.as_deref()) {
                            Some(why) => format!("the receiver answered {status}: {why}"),
                            None => format!("the receiver answered {status}"),
                        },
                        retryable: matches!(
                            status,
                            StatusCode::TOO_MANY_REQUESTS
                                | StatusCode::INTERNAL_SERVER_ERROR
                                | StatusCode::BAD_GATEWAY
                                | StatusCode::SERVICE_UNAVAILABLE
                                | StatusCode::GATEWAY_TIMEOUT
                        ),
                        too_large: status == StatusCode::PAYLOAD_TOO_LARGE,
                    })
                }
            }
        }
    }
}

/// How much of a receiver's answer is read: enough for any reason a collector gives; a longer
/// answer is cut there (and its connection not reused).
const MAX_ANSWER: usize = 64 * 1024;
/// How much of a refusal's body the error message quotes.
const MAX_REASON_CHARS: usize = 512;

/// The answer's body, up to [`MAX_ANSWER`] bytes, read until `deadline`; what arrived before
/// an error, the deadline or the limit cuts it. Read whole: a receiver that trickles its answer
/// holds the batch until then.
async fn read_answer(mut body: hyper::body::Incoming, deadline: Instant) -> Vec<u8> {
    use http_body_util::BodyExt;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::from_std(deadline);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        if let Ok(data) = frame.into_data() {
            let room = MAX_ANSWER - out.len();
            if data.len() > room {
                out.extend_from_slice(&data[..room]);
                break;
            }
            out.extend_from_slice(&data);
        }
    }
    out
}

/// A refusal's body as one line for the log: its first [`MAX_REASON_CHARS`] characters,
/// control characters (newlines included) as spaces, the sink's own token (should the
/// receiver echo the request) replaced; `None` when it says nothing.
fn reason_text(answer: &[u8], token: Option<&str>) -> Option<String> {
    let mut text = String::from_utf8_lossy(answer).into_owned();
    if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
        text = text.replace(token, "[token]");
    }
    let mut why: String = text
        .trim()
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().chars().count() > MAX_REASON_CHARS {
        why.push('…');
    }
    (!why.is_empty()).then_some(why)
}

fn absorb(
    msgs: &mut Vec<Msg>,
    pending: &mut Vec<(Arc<Prepared>, Option<Ack>)>,
    shutdown: &mut Option<tokio::sync::oneshot::Sender<()>>,
) {
    for m in msgs.drain(..) {
        match m {
            Msg::Event(p, ack) => pending.push((p, ack)),
            // Taken: its bytes leave the budget (`_held` drops here).
            Msg::Events(events, _held) => pending.extend(events),
            Msg::Shutdown(done) => *shutdown = Some(done),
            // Only inline writers send it, and a webhook has none.
            Msg::Tick => {}
        }
    }
}

/// `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[…]}` from
/// already serialized events (no re-parse).
pub fn event_list_body<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Bytes {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(LIST_HEAD);
    for (i, line) in lines.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(LIST_TAIL);
    Bytes::from(out)
}

/// What [`event_list_body`] puts before the events, and after them (one comma between two):
/// `limits::by_bytes` counts them.
const LIST_HEAD: &[u8] =
    br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#;
const LIST_TAIL: &[u8] = b"]}";

/// `d` plus 0–20 % (the apiserver's jitter 0.2), from the system RNG.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if aws_lc_rs::rand::fill(&mut b).is_ok() {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
    } else {
        0.5
    };
    d.mul_f64(1.0 + 0.2 * r)
}

#[cfg(test)]
mod tests;
