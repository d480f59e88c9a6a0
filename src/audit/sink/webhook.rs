//! The webhook sink: POSTs `audit.k8s.io/v1` `EventList` JSON batches to the server of a
//! kubeconfig-format file, as kube-apiserver's `--audit-webhook-config-file` does.
//!
//! The kubeconfig is read with `crate::kubeconfig` (server, CA, optional `tls-server-name`,
//! bearer `token` / `tokenFile` or client certificate and key); the HTTPS client is built like
//! the upstream client (`upstream/client.rs`): rustls with aws-lc-rs, h2 or HTTP/1.1 by ALPN.
//! A `tokenFile` is re-read for every request, so rotated projected tokens are picked up.
//!
//! Batching: in `Batch` mode a batch is sent when it holds `max_batch_size` events or
//! `max_wait` after its first event. In the blocking modes whatever is queued is sent at once
//! (up to `max_batch_size`), so a waiting request never waits for `max_wait`. One request is in
//! flight at a time, so events arrive in order.
//!
//! Retries: connection errors, timeouts and HTTP 429, 500, 502, 503, 504 are retried up to
//! `max_retries` times with exponential backoff (`initial_backoff`, factor 1.5, +0–20% jitter),
//! as the apiserver's webhook client does; any other status fails the batch at once. A failed
//! batch's waiters get `Err` (strict: 503) and its events are counted in `events_failed`.
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
use crate::{kubeconfig::Kubeconfig, server::tls};

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
}

impl WebhookConfig {
    /// 400 events per batch, 30 s max wait, backoff from 1 s, 4 retries, 30 s per request.
    pub fn new(kubeconfig: impl Into<PathBuf>) -> WebhookConfig {
        WebhookConfig {
            kubeconfig: kubeconfig.into(),
            context: None,
            max_batch_size: 400,
            max_wait: Duration::from_secs(30),
            initial_backoff: Duration::from_secs(1),
            max_retries: 4,
            request_timeout: Duration::from_secs(30),
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Target {
    uri: Uri,
    client: HttpClient,
    token: Option<String>,
    token_file: Option<PathBuf>,
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
        Some(pem) => tls::root_store(tls::certs_from_pem(pem).context("certificate-authority")?)?,
        None if uri.scheme_str() == Some("https") => bail!(
            "the cluster entry has no certificate-authority; the receiver's certificate must be verified"
        ),
        None => rustls::RootCertStore::empty(),
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
        token: r.token,
        token_file: r.token_file,
    })
}

/// Start the webhook worker task (the kubeconfig is read and the client built here).
pub(crate) fn spawn(
    name: &str,
    cfg: WebhookConfig,
    mode: DeliveryMode,
    rx: mpsc::Receiver<Msg>,
    counters: Arc<SinkCounters>,
) -> anyhow::Result<()> {
    let target = build_target(&cfg)
        .with_context(|| format!("audit webhook {}", cfg.kubeconfig.display()))?;
    let worker = Worker {
        name: name.to_string(),
        cfg,
        batch_mode: matches!(mode, DeliveryMode::Batch { .. }),
        target,
        counters,
    };
    tokio::runtime::Handle::try_current()
        .context("the audit webhook needs a tokio runtime")?
        .spawn(worker.run(rx));
    Ok(())
}

struct Worker {
    name: String,
    cfg: WebhookConfig,
    batch_mode: bool,
    target: Target,
    counters: Arc<SinkCounters>,
}

/// Why one POST failed, and whether trying again may help.
struct PostError {
    message: String,
    retryable: bool,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let max = self.cfg.max_batch_size.max(1);
        let mut msgs: Vec<Msg> = Vec::with_capacity(max);
        let mut pending: Vec<(Arc<Prepared>, Option<Ack>)> = Vec::with_capacity(max);
        let mut shutdown = None;
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
                self.deliver(batch).await;
            }
            if let Some(done) = shutdown.take() {
                // Closed before answering (see spawn_thread).
                rx.close();
                while let Ok(m) = rx.try_recv() {
                    if let Msg::Event(_, Some(ack)) = m {
                        let _ = ack.send(Err("audit is shutting down".into()));
                    }
                }
                let _ = done.send(());
                return;
            }
        }
    }

    async fn deliver(&self, batch: Vec<(Arc<Prepared>, Option<Ack>)>) {
        let body = event_list_body(batch.iter().map(|(p, _)| p.line()));
        let mut backoff = self.cfg.initial_backoff;
        let mut attempt = 0;
        let result = loop {
            match self.post(body.clone()).await {
                Ok(()) => break Ok(()),
                Err(e) if e.retryable && attempt < self.cfg.max_retries => {
                    attempt += 1;
                    SinkCounters::add(&self.counters.retries, 1);
                    tracing::warn!(sink = %self.name, err = %e.message, attempt, "audit webhook failed; retrying");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = backoff.mul_f64(1.5);
                }
                Err(e) => break Err(e.message),
            }
        };
        let n = batch.len();
        match &result {
            Ok(()) => SinkCounters::add(&self.counters.events_written, n),
            Err(e) => {
                SinkCounters::add(&self.counters.events_failed, n);
                tracing::error!(sink = %self.name, err = %e, lost = n, "audit webhook gave up on a batch");
            }
        }
        for (_, ack) in batch {
            if let Some(ack) = ack {
                let _ = ack.send(result.clone());
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<(), PostError> {
        let t = &self.target;
        let token = match (&t.token, &t.token_file) {
            (Some(tok), _) => Some(tok.trim().to_string()),
            (None, Some(path)) => match tokio::fs::read_to_string(path).await {
                Ok(s) => Some(s.trim().to_string()),
                Err(e) => {
                    return Err(PostError {
                        message: format!("cannot read tokenFile {}: {e}", path.display()),
                        retryable: true,
                    })
                }
            },
            (None, None) => None,
        };
        let mut req = Request::post(t.uri.clone()).header(header::CONTENT_TYPE, "application/json");
        if let Some(tok) = token.filter(|s| !s.is_empty()) {
            let mut v =
                http::HeaderValue::from_str(&format!("Bearer {tok}")).map_err(|_| PostError {
                    message: "the token is not a valid header value".into(),
                    retryable: false,
                })?;
            v.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, v);
        }
        let req = req.body(Full::new(body)).map_err(|e| PostError {
            message: format!("cannot build the request: {e}"),
            retryable: false,
        })?;
        let started = Instant::now();
        match tokio::time::timeout(self.cfg.request_timeout, t.client.request(req)).await {
            Err(_) => Err(PostError {
                message: format!("no answer within {:?}", self.cfg.request_timeout),
                retryable: true,
            }),
            Ok(Err(e)) => Err(PostError {
                message: format!("{e}"),
                retryable: true,
            }),
            Ok(Ok(resp)) => {
                let status = resp.status();
                tracing::debug!(sink = %self.name, %status, elapsed = ?started.elapsed(), "audit webhook answered");
                if status.is_success() {
                    Ok(())
                } else {
                    Err(PostError {
                        message: format!("the receiver answered {status}"),
                        retryable: matches!(
                            status,
                            StatusCode::TOO_MANY_REQUESTS
                                | StatusCode::INTERNAL_SERVER_ERROR
                                | StatusCode::BAD_GATEWAY
                                | StatusCode::SERVICE_UNAVAILABLE
                                | StatusCode::GATEWAY_TIMEOUT
                        ),
                    })
                }
            }
        }
    }
}

fn absorb(
    msgs: &mut Vec<Msg>,
    pending: &mut Vec<(Arc<Prepared>, Option<Ack>)>,
    shutdown: &mut Option<tokio::sync::oneshot::Sender<()>>,
) {
    for m in msgs.drain(..) {
        match m {
            Msg::Event(p, ack) => pending.push((p, ack)),
            Msg::Shutdown(done) => *shutdown = Some(done),
        }
    }
}

/// `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[…]}` from
/// already serialized events (no re-parse).
pub fn event_list_body<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Bytes {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(
        br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#,
    );
    for (i, line) in lines.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

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
mod tests {
    use super::*;
    use crate::{
        audit::{
            event::{Event, EventList},
            sink::{Auditor, Overflow, SinkKind, SinkSpec},
        },
        kubeconfig::{Kubeconfig, User},
        test_pki::Ca,
    };
    use http_body_util::BodyExt;
    use hyper::{body::Incoming, service::service_fn, Response};
    use hyper_util::rt::TokioIo;
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    /// An HTTPS receiver that answers 500 to every `fail_every`-th request and records the
    /// audit IDs of the batches it accepted.
    struct Receiver {
        url: String,
        ca_pem: String,
        received: Arc<Mutex<Vec<Vec<String>>>>,
        requests: Arc<AtomicUsize>,
    }

    async fn receiver(fail_every: usize) -> Receiver {
        crate::server::tls::install_crypto_provider();
        let ca = Ca::new("test-ca").unwrap();
        let leaf = ca.server_cert(&["127.0.0.1"]).unwrap();
        let cfg = crate::server::tls::server_config(
            vec![leaf.cert_der.clone()],
            leaf.key(),
            crate::server::tls::ClientAuth::None,
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (rcv, reqs) = (received.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let (rcv, reqs) = (rcv.clone(), reqs.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (rcv, reqs) = (rcv.clone(), reqs.clone());
                        async move {
                            let n = reqs.fetch_add(1, Ordering::SeqCst) + 1;
                            let auth = req
                                .headers()
                                .get(header::AUTHORIZATION)
                                .map(|v| v.to_str().unwrap_or_default().to_string());
                            let body = req.into_body().collect().await?.to_bytes();
                            let status = if auth.as_deref() != Some("Bearer s3cret") {
                                401
                            } else if fail_every > 0 && n % fail_every == 0 {
                                500
                            } else {
                                let list: EventList = serde_json::from_slice(&body).unwrap();
                                assert_eq!(list.kind, "EventList");
                                rcv.lock()
                                    .unwrap()
                                    .push(list.items.into_iter().map(|e| e.audit_id).collect());
                                200
                            };
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Receiver {
            url: format!("https://127.0.0.1:{}/audit", addr.port()),
            ca_pem: ca.cert.cert_pem.clone(),
            received,
            requests,
        }
    }

    fn kubeconfig(dir: &std::path::Path, r: &Receiver, token: &str) -> PathBuf {
        let kc = Kubeconfig::single(
            "siem",
            &r.url,
            &r.ca_pem,
            User {
                token: Some(token.into()),
                ..User::default()
            },
        );
        let path = dir.join("webhook.kubeconfig");
        kc.write(&path).unwrap();
        path
    }

    fn event(i: usize) -> Event {
        Event {
            audit_id: format!("e{i}"),
            ..Event::default()
        }
    }

    fn config(path: PathBuf) -> WebhookConfig {
        WebhookConfig {
            initial_backoff: Duration::from_millis(5),
            max_batch_size: 10,
            max_wait: Duration::from_millis(50),
            ..WebhookConfig::new(path)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_mode_loses_nothing_when_the_receiver_fails_intermittently() {
        let r = receiver(2).await;
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(
            Auditor::start(vec![SinkSpec {
                name: "siem".into(),
                kind: SinkKind::Webhook(config(kubeconfig(dir.path(), &r, "s3cret"))),
                mode: DeliveryMode::Blocking,
            }])
            .unwrap(),
        );
        let mut tasks = Vec::new();
        for t in 0..8 {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    a.emit(event(t * 10 + i)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        a.shutdown(Duration::from_secs(5)).await;
        let mut got: Vec<String> = r.received.lock().unwrap().concat();
        got.sort();
        let mut want: Vec<String> = (0..80).map(|i| format!("e{i}")).collect();
        want.sort();
        assert_eq!(got, want, "every event delivered exactly once");
        let c = a.sinks()[0].counters();
        assert_eq!(c.events_written.load(Ordering::Relaxed), 80);
        assert_eq!(c.events_failed.load(Ordering::Relaxed), 0);
        assert!(
            c.retries.load(Ordering::Relaxed) > 0,
            "the receiver did fail"
        );
        assert!(r.requests.load(Ordering::SeqCst) > 1);
    }

    #[tokio::test]
    async fn batch_mode_fills_batches_and_strict_reports_refusal() {
        let r = receiver(0).await;
        let dir = tempfile::tempdir().unwrap();
        // A long max wait: batches are sent because they are full (or at shutdown), however
        // slowly a loaded test machine enqueues.
        let cfg = WebhookConfig {
            max_wait: Duration::from_secs(30),
            ..config(kubeconfig(dir.path(), &r, "s3cret"))
        };
        let a = Auditor::start(vec![SinkSpec {
            name: "siem".into(),
            kind: SinkKind::Webhook(cfg),
            mode: DeliveryMode::Batch {
                queue: 100,
                overflow: Overflow::Block,
            },
        }])
        .unwrap();
        for i in 0..25 {
            a.emit(event(i)).await.unwrap();
        }
        a.shutdown(Duration::from_secs(5)).await;
        let batches = r.received.lock().unwrap().clone();
        assert_eq!(batches.concat().len(), 25);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5], "full batches, the rest at shutdown");

        // A wrong token: 401 is not retried, and strict mode returns the failure.
        let dir2 = tempfile::tempdir().unwrap();
        let a = Auditor::start(vec![SinkSpec {
            name: "siem".into(),
            kind: SinkKind::Webhook(config(kubeconfig(dir2.path(), &r, "wrong"))),
            mode: DeliveryMode::BlockingStrict,
        }])
        .unwrap();
        let err = a.emit(event(99)).await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        assert_eq!(a.sinks()[0].counters().retries.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn refuses_plain_http_to_remote_hosts_and_missing_ca() {
        let dir = tempfile::tempdir().unwrap();
        let write = |server: &str, ca: Option<&str>| {
            let mut kc = Kubeconfig::single("x", server, "unused", User::default());
            kc.clusters[0].cluster.certificate_authority_data =
                ca.map(|c| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, c));
            let p = dir.path().join("kc");
            kc.write(&p).unwrap();
            build_target(&WebhookConfig::new(p))
        };
        crate::server::tls::install_crypto_provider();
        let ca = Ca::new("x").unwrap();
        assert!(write("http://10.0.0.1/audit", None).is_err());
        assert!(write("ftp://127.0.0.1/audit", None).is_err());
        assert!(write("https://127.0.0.1/audit", None).is_err(), "no CA");
        assert!(write("http://127.0.0.1:9/audit", None).is_ok());
        assert!(write("http://[::1]:9/audit", None).is_ok());
        assert!(write("https://siem.example/audit", Some(&ca.cert.cert_pem)).is_ok());
    }

    #[test]
    fn event_list_body_is_an_event_list() {
        let lines: Vec<Vec<u8>> = (0..3)
            .map(|i| serde_json::to_vec(&event(i)).unwrap())
            .collect();
        let body = event_list_body(lines.iter().map(Vec::as_slice));
        let list: EventList = serde_json::from_slice(&body).unwrap();
        assert_eq!(list.items.len(), 3);
        assert_eq!(list.api_version, "audit.k8s.io/v1");
        let empty: EventList =
            serde_json::from_slice(&event_list_body(std::iter::empty())).unwrap();
        assert!(empty.items.is_empty());
    }
}
