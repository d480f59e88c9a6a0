//! The TLS accept loop shared by the proxy listener, the admin listener and the sandbox.
//!
//! Accepts: TCP → the connection caps (`limits`) → rustls handshake (bounded by a timeout) →
//! the client's first bytes (TLS listeners; bounded by the preface timeout) → hyper's auto
//! builder (HTTP/1.1 or h2, on one port), with HTTP/1.1 upgrades enabled so exec / attach /
//! port-forward can be spliced, watched by the connection's watchdog (`conn`). Every open
//! connection costs memory, so its task stays small: the handshake and hyper's connection are
//! boxed, and hyper's connection exists only once the client speaks.
//! Rejects, always by closing the socket (nothing else is possible before HTTP): a connection
//! above a cap; a TLS handshake that fails or stalls; a client silent after the handshake
//! (`preface_timeout`). Then: an HTTP/1.1 client that does not finish its request head within
//! `header_read_timeout` is disconnected (slowloris); a connection with no open request for
//! `idle_timeout` is closed (HTTP/2: GOAWAY); HTTP/2 limits below ([`http_builder`]).
//!
//! On shutdown it stops accepting at once, lets in-flight requests finish for `grace`, then
//! drops whatever is left.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use arc_swap::ArcSwap;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use rustls_pki_types::CertificateDer;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use super::{
    conn::{self, Outcome, Shared, Timeouts, Wait},
    limits::ConnLimiter,
    metrics::{Closed, ListenerMetrics},
};
use crate::{
    body::{self, Body},
    shutdown::Shutdown,
};

/// What the connection knows about its peer, handed to every request on it.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer address.
    pub peer: SocketAddr,
    /// The client's certificate chain as it sent it, leaf first, when it presented one
    /// (verified by rustls against the client CAs of the configuration that accepted the
    /// connection). The intermediates are kept for one purpose: after a reload, authentication
    /// verifies the chain again against the new configuration's CAs and CRLs.
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The listener config whose handshake accepted the connection (weak: a superseded
    /// configuration's session cache is not kept alive by its connections; the allocation
    /// stays, so the pointer is never reused while this lives).
    pub accepted_by: Option<Weak<rustls::ServerConfig>>,
    /// When (Unix seconds) the handshake that verified `peer_certs` started: the chain was
    /// verified at or after it. `i64::MIN` when not known (a resumed TLS session, a connection
    /// handed in by a test): authentication then verifies it again once any client CA has
    /// expired since it may have been verified (`authn::x509`).
    pub verified_at: i64,
    /// Whether the connection negotiated HTTP/2.
    pub h2: bool,
    /// The identity mapped from `peer_certs` and the certificate's validity period, computed
    /// by the first request that needs them under each configuration (`authn::x509`).
    pub cert_identity: Mutex<Option<crate::authn::x509::CertIdentity>>,
    /// `peer`'s IP as a header value (`X-Forwarded-For`), written once per connection instead
    /// of formatted again for every request on it.
    pub peer_ip: http::HeaderValue,
    /// The end of this connection's shutdown grace (never, for a connection handed in by a
    /// test): an upgraded session spliced off the connection ends itself then.
    pub cutoff: crate::shutdown::Cutoff,
}

impl ConnInfo {
    pub fn new(
        peer: SocketAddr,
        peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
        h2: bool,
    ) -> ConnInfo {
        // As Go's servers report it: `10.1.2.3`, not `::ffff:10.1.2.3` from a dual-stack
        // listener — the address itself, so every reader (the audit `sourceIPs`,
        // `X-Forwarded-For`, log lines, per-source limits) sees the one form; SIEM rules match
        // IPv4.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let ip = peer.ip().to_string();
        ConnInfo {
            peer,
            peer_certs,
            accepted_by: None,
            verified_at: i64::MIN,
            h2,
            cert_identity: Default::default(),
            // An IP address is always a valid header value.
            peer_ip: http::HeaderValue::from_maybe_shared(bytes::Bytes::from(ip))
                .unwrap_or_else(|_| http::HeaderValue::from_static("unknown")),
            cutoff: Default::default(),
        }
    }
}

/// Limits and timeouts of one listener (validated from `listen:` by `server::config`).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time after the handshake for the HTTP/2 preface or the start of the first request.
    pub preface_timeout: Duration,
    /// Time allowed for an HTTP/1.1 request head (slowloris guard).
    pub header_read_timeout: Duration,
    /// A connection with no open request for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection (kubectl multiplexes watches on one).
    pub max_concurrent_streams: u32,
    /// Largest request head: HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`, HTTP/1.1 read buffer.
    pub max_header_bytes: u32,
    /// Open connections on the listener, counted from accept.
    pub max_connections: usize,
    /// Open connections from one source address (IPv6: one /64).
    pub max_connections_per_source: usize,
    /// How long in-flight requests may run after shutdown begins.
    pub grace: Duration,
    /// How long the listener keeps accepting after the signal, `/readyz` failing, before the
    /// drain begins (`shutdown.delay`; applied by `app::run_with`).
    pub shutdown_delay: Duration,
    /// The listener's connection series (registered by `Runtime::build` for the proxy).
    pub metrics: ListenerMetrics,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            handshake_timeout: Duration::from_secs(10),
            preface_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            max_concurrent_streams: 250,
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            max_connections_per_source: 1_000,
            grace: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            metrics: ListenerMetrics::default(),
        }
    }
}

impl ServeOptions {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            preface: self.preface_timeout,
            idle: self.idle_timeout,
            grace: self.grace,
        }
    }
}

/// Serve `handler` on `listener` over TLS until `shutdown` fires, then drain.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    opts: ServeOptions,
    handler: H,
    shutdown: Shutdown,
) where
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_live(
        listener,
        Arc::new(ArcSwap::new(tls)),
        opts,
        handler,
        shutdown,
    )
    .await;
}

/// [`serve`] with a TLS config that may be replaced while serving (a configuration reload):
/// each new connection's handshake uses the config current when it was accepted; connections
/// already open keep theirs. True when the drain ended with every connection (an upgraded
/// session's included) closed within `grace`.
pub async fn serve_live<H, F>(
    listener: TcpListener,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    opts: ServeOptions,
    handler: H,
    shutdown: Shutdown,
) -> bool
where
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    accept_loop(listener, Some(tls), opts, handler, shutdown).await
}

/// Serve `handler` on `listener` over plain HTTP (the loopback admin listener).
pub async fn serve_plain<H, F>(
    listener: TcpListener,
    opts: ServeOptions,
    handler: H,
    shutdown: Shutdown,
) where
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    accept_loop(listener, None, opts, handler, shutdown).await;
}

/// True when the drain ended with every connection closed within `grace`.
async fn accept_loop<H, F>(
    listener: TcpListener,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    opts: ServeOptions,
    handler: H,
    mut shutdown: Shutdown,
) -> bool
where
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = Arc::new(http_builder(&opts));
    // Shared by every connection of the listener (one pointer each, not a copy).
    let opts = Arc::new(opts);
    let limiter = ConnLimiter::new(
        opts.max_connections,
        opts.max_connections_per_source,
        opts.metrics.clone(),
    );
    // Every connection holds a sender (in its task and in its `Shared`, which an upgraded
    // socket keeps: a session outlives its connection's task); the drain below ends when the
    // last is dropped.
    let (alive, mut drained) = mpsc::channel::<()>(1);

    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let permit = match limiter.try_acquire(peer.ip()) {
            Ok(permit) => permit,
            Err(why) => {
                // Closed before any TLS work (see `limits`).
                tracing::debug!(%peer, reason = why.label(), "connection refused by cap");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        keep_alive(&tcp);
        let conn = Conn {
            peer,
            shared: Shared::new(permit, alive.clone()),
            builder: builder.clone(),
            opts: opts.clone(),
            stop: shutdown.clone(),
        };
        let tls_config = tls.as_ref().map(|t| t.load_full());
        let handler = handler.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            match tls_config {
                Some(config) => conn.serve_tls(config, tcp, handler).await,
                None => conn.serve_plain(tcp, handler).await,
            }
        });
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(opts.grace, drained.recv())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?opts.grace, "grace period ended with requests still in flight");
        return false;
    }
    true
}

/// One accepted connection, counted under the caps.
struct Conn {
    peer: SocketAddr,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    opts: Arc<ServeOptions>,
    stop: Shutdown,
}

/// The byte stream hyper serves on (see `conn::tracked`).
trait ConnIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ConnIo for T {}

/// What hyper serves on a connection: the handler wrapped by [`service`].
trait ConnService:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> ConnService for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// hyper's connection over one client socket (boxed: see [`Conn::serve_tls`]).
type Http<'a, T, S> = Pin<Box<auto::UpgradeableConnection<'a, TokioIo<T>, S, TokioExecutor>>>;

impl Conn {
    /// Handshake, wait for the client's first bytes, then serve. The TLS stream is boxed and
    /// then moved into the boxed hyper connection, and the handshake future is boxed too, so
    /// the connection task keeps no room for either while it serves (a smaller allocation per
    /// idle connection); hyper's connection is built only once the client speaks.
    async fn serve_tls<H, F>(self, config: Arc<rustls::ServerConfig>, tcp: TcpStream, handler: H)
    where
        H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        // On every early exit the connection's place (the open gauge, the caps) is given back
        // *before* its socket closes, so a client that sees the close sees the count.
        // Only a weak reference outlives the handshake (see `ConnInfo::accepted_by`).
        let accepted_by = Arc::downgrade(&config);
        // rustls verifies the client's chain during the handshake, so at or after this.
        let started = crate::authn::x509::now();
        let mut tls = {
            let acceptor = TlsAcceptor::from(config);
            let tls = match handshake(&acceptor, tcp, self.peer, &self.opts).await {
                Ok(tls) => tls,
                Err(socket) => {
                    drop(self);
                    drop(socket);
                    return;
                }
            };
            self.shared.handshake_done();
            Box::new(tls)
        };
        let timeouts = self.opts.timeouts();
        match conn::first_bytes(&mut tls, &self.shared, timeouts, self.stop.clone()).await {
            Wait::Spoke => {}
            Wait::Failed(err) => {
                tracing::debug!(peer = %self.peer, %err, "connection ended before its first request");
                drop(self);
                drop(tls);
                return;
            }
            Wait::Closed(why) => {
                self.closed(why);
                drop(self);
                drop(tls);
                return;
            }
            Wait::Shutdown => {
                drop(self);
                drop(tls);
                return;
            }
        }
        let conn = {
            let cutoff = crate::shutdown::Cutoff::after(self.stop.clone(), self.opts.grace);
            let info = tls_conn_info(self.peer, &tls, accepted_by, started, cutoff);
            self.http(tls, info, handler)
        };
        self.run(conn).await
    }

    /// Serve a plain-HTTP connection (the admin listener).
    async fn serve_plain<H, F>(self, tcp: TcpStream, handler: H)
    where
        H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let conn = self.http(tcp, conn_info(self.peer, None, false), handler);
        self.run(conn).await
    }

    /// hyper's connection over `io`, boxed.
    fn http<T, H, F>(
        &self,
        io: T,
        info: Arc<ConnInfo>,
        handler: H,
    ) -> Http<'_, impl ConnIo, impl ConnService>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let io = TokioIo::new(conn::tracked(io, self.shared.clone()));
        let svc = service(handler, info, self.shared.clone());
        Box::pin(self.builder.serve_connection_with_upgrades(io, svc))
    }

    /// Drive the connection to its end (see `conn::drive`), counting why it was closed.
    async fn run<T, S>(&self, mut conn: Http<'_, T, S>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: ConnService,
    {
        let outcome = conn::drive(
            conn.as_mut(),
            |c| c.graceful_shutdown(),
            |why| self.closed(why),
            &self.shared,
            self.opts.timeouts(),
            self.stop.clone(),
        )
        .await;
        let peer = self.peer;
        match outcome {
            Outcome::Ended(Ok(())) | Outcome::Shutdown => {}
            Outcome::Ended(Err(err)) => {
                if is_header_timeout(&*err) {
                    self.opts.metrics.closed(Closed::HeaderTimeout);
                }
                tracing::debug!(%peer, err = %err, "connection ended with error");
            }
            // Counted as the watchdog fired (`closing` above).
            Outcome::Closed(_) => {}
        }
    }

    /// The listener closed the connection itself: counted and logged.
    fn closed(&self, why: Closed) {
        self.opts.metrics.closed(why);
        tracing::debug!(peer = %self.peer, reason = why.label(), "connection closed by listener timeout");
    }
}

/// hyper's HTTP/1.1 request-head timeout (the only timeout hyper reports on a server
/// connection).
fn is_header_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}

/// HTTP/1.1 and HTTP/2 on one builder, every limit set explicitly (hyper's defaults are noted
/// where we keep them, so a hyper upgrade cannot loosen one silently).
fn http_builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        // The request head must fit the read buffer; hyper answers 431 beyond it.
        .max_buf_size(opts.max_header_bytes.max(MIN_H1_BUFFER) as usize)
        .max_headers(H1_MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.max_concurrent_streams)
        .max_header_list_size(opts.max_header_bytes)
        // Rapid reset (CVE-2023-44487): streams the client resets before we accept them are
        // bounded; beyond this the connection gets GOAWAY (ENHANCE_YOUR_CALM).
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        // Streams we must reset because the client misbehaves, before the connection goes.
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        // Keep idle-but-alive connections (long watches) healthy through middleboxes, and
        // close those whose peer no longer answers.
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT)
        // What h2 buffers per stream beyond the client's window (hyper's default is 400 KiB):
        // a client that opens every stream it may, grants huge windows and stops reading
        // would otherwise hold ≈ 100 MiB of answers per connection.
        .max_send_buf_size(H2_MAX_SEND_BUF);
    builder
}

/// Bytes h2 buffers per stream for sending (see `http_builder`).
const H2_MAX_SEND_BUF: usize = 64 * 1024;

/// hyper refuses a smaller HTTP/1.1 read buffer.
const MIN_H1_BUFFER: u32 = 8192;
/// Header fields in one HTTP/1.1 request head (hyper's default, explicit).
const H1_MAX_HEADERS: usize = 100;
/// h2's default, explicit.
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// hyper's default, explicit.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What is left of a handshake that did not finish, still holding its socket: dropping it
/// closes the connection.
enum Unfinished {
    /// It failed (the alert, if any, was written): the socket, given back by rustls.
    Failed { _socket: TcpStream },
    /// It stalled past the timeout.
    Stalled {
        _handshake: Pin<Box<tokio_rustls::FallibleAccept<TcpStream>>>,
    },
}

/// The TLS handshake within the handshake timeout; `Err` (logged, counted) when it fails or
/// stalls, with the socket still open, for the caller to close after it gave the
/// connection's place back.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    opts: &ServeOptions,
) -> Result<TlsStream<TcpStream>, Unfinished> {
    // Owned here, not by the timeout, so a stalled socket is closed only after it was counted.
    // Boxed, and freed once the handshake is over, so the connection task does not keep room
    // for rustls' handshake state for the connection's whole life. Fallible: a failed
    // handshake gives its socket back instead of closing it inside the poll, so it too is
    // closed only after the connection's place was given back.
    let mut accept = Box::pin(acceptor.accept(tcp).into_fallible());
    match tokio::time::timeout(opts.handshake_timeout, accept.as_mut()).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err((err, socket))) => {
            tracing::debug!(%peer, %err, "TLS handshake failed");
            Err(Unfinished::Failed { _socket: socket })
        }
        Err(_) => {
            opts.metrics.closed(Closed::HandshakeTimeout);
            tracing::debug!(%peer, "TLS handshake timed out");
            Err(Unfinished::Stalled { _handshake: accept })
        }
    }
}

fn conn_info(
    peer: SocketAddr,
    peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    h2: bool,
) -> Arc<ConnInfo> {
    Arc::new(ConnInfo::new(peer, peer_certs, h2))
}

/// The peer, its certificate chain, the listener config that accepted it and the negotiated
/// protocol of a TLS connection.
fn tls_conn_info(
    peer: SocketAddr,
    tls: &TlsStream<TcpStream>,
    accepted_by: Weak<rustls::ServerConfig>,
    started: i64,
    cutoff: crate::shutdown::Cutoff,
) -> Arc<ConnInfo> {
    let (_, session) = tls.get_ref();
    let chain = session
        .peer_certificates()
        .filter(|chain| !chain.is_empty())
        .map(|chain| Arc::new(chain.iter().map(|c| c.clone().into_owned()).collect()));
    let mut info = ConnInfo::new(peer, chain, session.alpn_protocol() == Some(b"h2"));
    info.accepted_by = Some(accepted_by);
    info.cutoff = cutoff;
    // A resumed session's chain was verified by an earlier handshake, at a time not known here.
    if session.handshake_kind() != Some(rustls::HandshakeKind::Resumed) {
        info.verified_at = started;
    }
    Arc::new(info)
}

/// The handler as a hyper service; each request counts as open on its connection until its
/// response body ends (what the idle timeout looks at).
fn service<H, F>(
    handler: H,
    info: Arc<ConnInfo>,
    shared: Arc<Shared>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send,
> + Clone
where
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let open = shared.request_started();
        let h2 = req.version() == http::Version::HTTP_2;
        let fut = handler(req, info.clone());
        let shared = shared.clone();
        async move {
            let resp = fut.await;
            // The request is done once hyper has taken its answer's last frame, not once the
            // client has it: a client that grants no HTTP/2 window makes hyper wait with that
            // frame for ever, and a request still "open" would keep its connection from ever
            // counting as idle (no idle timeout, no GOAWAY) as long as the client answers
            // PINGs and keeps its streams.
            let resp = resp.map(|b| body::hold_until_read(b, open));
            if h2 && failed_authentication(&resp) {
                // An unauthenticated answer is tracked until the client has taken it
                // (`drive` cuts a connection holding one past `shutdown.grace`).
                let refused = shared.refused_unauthenticated();
                return Ok(resp.map(|b| body::hold(b, refused)));
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    })
}

/// Whether `resp` refuses a request that failed authentication: a 401, or the 429 of an
/// address the failed-credentials limit blocks (both refused by authentication).
fn failed_authentication(resp: &Response<Body>) -> bool {
    matches!(resp.status().as_u16(), 401 | 429)
        && resp
            .extensions()
            .get::<crate::refusal::Refused>()
            .is_some_and(|r| r.by == "authn")
}

/// TCP keep-alive on an accepted connection, as Go's servers (kube-apiserver's among them)
/// turn it on: a client that vanished without a FIN or RST (a laptop asleep, a NAT entry
/// dropped) is found within about two minutes — its connection slot, watch and session
/// permits freed — instead of when the API server's side of its stream times out (hours, for
/// an idle exec session). A failure to set it only loses that.
/// TCP keep-alive on `tcp` (accepted here; also the upstream's connections, `upstream::pool`
/// and `client`): a peer that vanished without a FIN or RST is noticed in about two minutes,
/// as Go's dialers and servers notice it (client-go and kube-apiserver set keep-alive too).
pub(crate) fn keep_alive(tcp: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&KEEP_ALIVE);
}

/// First probe after a minute of silence, then every 15 s; four unanswered ones end it.
const KEEP_ALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(std::time::Duration::from_secs(60))
    .with_interval(std::time::Duration::from_secs(15))
    .with_retries(4);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A client of a dual-stack listener is named as Go's servers name it: an IPv4 peer in its
    /// IPv4 form (the audit `sourceIPs`, `X-Forwarded-For`, log lines), an IPv6 one as it is.
    #[test]
    fn an_ipv4_mapped_peer_is_named_in_its_ipv4_form() {
        let info = |a: &str| super::ConnInfo::new(a.parse().unwrap(), None, false);
        assert_eq!(info("[::ffff:10.1.2.3]:5000").peer_ip, "10.1.2.3");
        assert_eq!(info("10.1.2.3:5000").peer_ip, "10.1.2.3");
        assert_eq!(info("[2001:db8::1]:5000").peer_ip, "2001:db8::1");
        // The address too, for every reader of it (log lines, per-source limits).
        assert_eq!(
            info("[::ffff:10.1.2.3]:5000").peer,
            "10.1.2.3:5000".parse().unwrap()
        );
    }

    /// An accepted connection gets the keep-alive the accept loop sets.
    #[tokio::test]
    async fn accepted_connections_get_tcp_keep_alive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert!(!sock.keepalive().unwrap(), "off before");
        super::keep_alive(&tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
    }
}
