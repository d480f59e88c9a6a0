//! The TLS accept loop shared by the proxy listener, the admin listener and the sandbox.
//!
//! Accepts: TCP → rustls handshake (bounded by a timeout) → hyper's auto builder (HTTP/1.1 or
//! h2 by ALPN, on one port), with HTTP/1.1 upgrades enabled so exec / attach / port-forward can
//! be spliced. Rejects: a TLS handshake that fails or stalls closes the socket (nothing else is
//! possible before HTTP); an HTTP/1.1 client that does not finish its request head within
//! `header_read_timeout` is disconnected (slowloris).
//!
//! On shutdown it stops accepting at once, lets in-flight requests finish for `grace`, then
//! drops whatever is left.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use crate::{body::Body, shutdown::Shutdown};

/// What the connection knows about its peer, handed to every request on it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer address.
    pub peer: SocketAddr,
    /// The client certificate chain, leaf first, when the client presented one (verified by
    /// rustls against the configured client CA).
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// Whether the connection negotiated HTTP/2.
    pub h2: bool,
    /// The identity mapped from `peer_certs`, computed by the first request that needs it.
    pub cert_identity: std::sync::OnceLock<Arc<crate::authn::Identity>>,
}

/// Limits and timeouts of one listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for an HTTP/1.1 request head (slowloris guard).
    pub header_read_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection (kubectl multiplexes watches on one).
    pub max_concurrent_streams: u32,
    /// How long in-flight requests may run after shutdown begins.
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_concurrent_streams: 250,
            grace: Duration::from_secs(30),
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
    accept_loop(
        listener,
        Some(TlsAcceptor::from(tls)),
        opts,
        handler,
        shutdown,
    )
    .await
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
    accept_loop(listener, None, opts, handler, shutdown).await
}

async fn accept_loop<H, F>(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    opts: ServeOptions,
    handler: H,
    mut shutdown: Shutdown,
) where
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = Arc::new(http_builder(&opts));
    let graceful = GracefulShutdown::new();

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
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let handler = handler.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = opts.handshake_timeout;
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let info = Arc::new(ConnInfo {
                    peer,
                    peer_certs: None,
                    h2: false,
                    cert_identity: Default::default(),
                });
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service(handler, info));
                if let Err(err) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, err = %err, "connection ended with error");
                }
                return;
            };
            let Some(tls) = handshake(&acceptor, tcp, peer, handshake_timeout).await else {
                return;
            };
            let info = tls_conn_info(peer, &tls);
            let conn =
                builder.serve_connection_with_upgrades(TokioIo::new(tls), service(handler, info));
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, err = %err, "connection ended with error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(opts.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?opts.grace, "grace period ended with requests still in flight");
    }
}

/// HTTP/1.1 (with the request-head timeout) and h2 (with the stream limit and keep-alive
/// pings) on one builder.
fn http_builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.max_concurrent_streams)
        // Keep idle-but-alive connections (long watches) healthy through middleboxes.
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// The TLS handshake within `timeout`; `None` (logged) when it fails or stalls.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// The peer, its certificate chain and the negotiated protocol of a TLS connection.
fn tls_conn_info(peer: SocketAddr, tls: &TlsStream<TcpStream>) -> Arc<ConnInfo> {
    let (_, session) = tls.get_ref();
    Arc::new(ConnInfo {
        peer,
        peer_certs: session
            .peer_certificates()
            .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())),
        h2: session.alpn_protocol() == Some(b"h2"),
        cert_identity: Default::default(),
    })
}

fn service<H, F>(
    handler: H,
    info: Arc<ConnInfo>,
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
    hyper::service::service_fn(move |req| {
        let fut = handler(req, info.clone());
        async move { Ok::<_, std::convert::Infallible>(fut.await) }
    })
}
