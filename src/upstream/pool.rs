//! The connections to one endpoint: several HTTP/2 connections, each carrying at most
//! `upstream.streams_per_connection` streams, at most `upstream.max_connections_per_endpoint`
//! of them.
//!
//! A request takes a stream slot on the first live connection with room; when every
//! connection is full, one more is opened (TCP within `connect_timeout`, TLS within
//! `tls_handshake_timeout`, one connect at a time per endpoint; requests that waited for a
//! connect that failed share its error instead of each trying again); at the cap, it is refused
//! without a network attempt ([`PoolError::Busy`], a 503 `UpstreamBusy` with Retry-After), so
//! short requests never queue behind long-running watches inside one connection. The slot is
//! held until the response body ends or is dropped and the request body has been sent (an
//! upload can outlive its answer, and its stream stays open on the connection until then).
//! The first connection stays open while idle; one past it that has carried no stream for `upstream.idle_connection_timeout` (90 s by
//! default, client-go's `IdleConnTimeout`) is closed when the next request finds it so. Closing
//! extras as soon as they went idle made a steady load above one connection's streams reconnect
//! every few hundred requests: on one worker thread every stream of a turn can end together.
//!
//! Flow control (see ARCHITECTURE.md, "Upstream connections and flow control"): each stream's
//! receive window is [`STREAM_WINDOW`] and the connection window is that times the stream
//! slots, so the unread data of every stream on a connection together cannot exhaust the
//! connection window — a stream whose reader stalls holds back only itself.
//!
//! Each HTTP/2 connection is an [`H2Conn`] (`h2conn.rs`: the `h2` crate driven directly, so a
//! request opens its stream and awaits its response head on its own task), over a
//! [`WriteBatch`](crate::write_batch::WriteBatch) so the frames that request tasks queue in one
//! scheduler pass leave in one write.
//!
//! An endpoint that does not negotiate `h2` by ALPN is spoken to with hyper's pooled
//! HTTP/1.1 client instead (one request per connection at a time; neither the stream count nor
//! the cap apply) — for [`H2_AGAIN_AFTER`], after which the next request that finds no HTTP/2
//! connection opens one and ALPN decides again: a load balancer that answered HTTP/1.1 once
//! (a rollout, a misconfiguration put right) does not keep the endpoint on HTTP/1.1 for good.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use http::{Request, Response};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{
    connector::Connector,
    h2conn::{self, H2Conn, SendError},
};
use crate::body::{self, Body};

#[cfg(test)]
mod tests;

/// Receive window of one upstream stream: the most the proxy's HTTP/2 layer holds unread for
/// one response (the pump in `pump.rs` holds more, bounded on its own).
pub const STREAM_WINDOW: u32 = 256 * 1024;

/// Why no response came back.
#[derive(Debug)]
pub enum PoolError {
    /// TCP or TLS toward the endpoint failed or timed out (nothing was sent).
    Connect(String),
    /// The connect another request made while this one waited for it failed: its reason,
    /// shared (one observation of the endpoint, not one per waiter).
    ConnectShared(String),
    /// Nothing was sent: no connection could be opened (the reason), or every connection
    /// closed (GOAWAY) before the request went out. The request comes back, so even a write
    /// may go to another endpoint. The flag: whether this request saw it happen itself
    /// (`false`: it shared the answer of a connect another request made — the circuit
    /// breaker counts that connect once, not once per waiter).
    NotSent(String, Box<Request<Body>>, bool),
    /// Every connection is full and the endpoint is at its connection cap: nothing was sent,
    /// and the request comes back.
    Busy(Box<Request<Body>>),
    /// The connection broke before a response head.
    Broken(h2::Error),
    /// The API server refused the stream unprocessed while its body was still arriving
    /// ([`SendError::Refused`]): nothing was carried out.
    Refused(h2::Error),
    /// The HTTP/1.1 connection to an endpoint without `h2` broke before a response head.
    BrokenHttp1(hyper::Error),
    /// The HTTP/1.1 client's error.
    Legacy(hyper_util::client::legacy::Error),
}

impl PoolError {
    /// The request's own stream failed (reset by either side, or an answer that could not
    /// be read) while its connection stays usable.
    pub fn is_stream_level(&self) -> bool {
        match self {
            PoolError::Broken(e) => e.is_reset() && !e.is_go_away() && !e.is_io(),
            PoolError::BrokenHttp1(e) => e.is_parse() || e.is_parse_too_large(),
            PoolError::Legacy(e) => std::error::Error::source(e)
                .and_then(|s| s.downcast_ref::<hyper::Error>())
                .is_some_and(|h| h.is_parse() || h.is_parse_too_large()),
            _ => false,
        }
    }

    /// A short, non-leaky description for the client's Status.
    pub fn describe(&self) -> &'static str {
        match self {
            PoolError::Connect(_) | PoolError::ConnectShared(_) | PoolError::NotSent(..) => {
                "connection failed"
            }
            PoolError::Legacy(e) if e.is_connect() => "connection failed",
            PoolError::Busy(_) => "every upstream connection is busy",
            PoolError::Refused(_) => "the API server refused the request unprocessed",
            PoolError::Broken(_) | PoolError::BrokenHttp1(_) | PoolError::Legacy(_) => {
                "the connection broke before a response"
            }
        }
    }
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Connect(e) | PoolError::ConnectShared(e) | PoolError::NotSent(e, ..) => {
                write!(f, "connect: {e}")
            }
            PoolError::Busy(_) => f.write_str("every connection is at its stream limit"),
            PoolError::Broken(e) => write!(f, "{e}"),
            PoolError::Refused(e) => write!(f, "refused unprocessed: {e}"),
            PoolError::BrokenHttp1(e) => write!(f, "{e}"),
            PoolError::Legacy(e) => write!(f, "{e}"),
        }
    }
}

/// Sizes of the pool (validated config).
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub streams_per_connection: usize,
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// An idle connection past the first is closed after this long without a stream.
    pub idle_timeout: Duration,
}

/// One HTTP/2 connection and how many of its stream slots are taken.
struct Conn {
    h2: H2Conn,
    in_use: AtomicUsize,
    /// When a slot was last released, in milliseconds since `epoch`: once `in_use` is 0, how
    /// long the connection has been idle.
    released_ms: AtomicU64,
    epoch: Instant,
}

impl Conn {
    /// Milliseconds since the connection opened (saturating; a connection lives far less than
    /// 2^64 ms).
    fn now_ms(&self) -> u64 {
        ms_since(self.epoch)
    }
}

/// A taken stream slot; released on drop (see [`Held`]).
struct Slot(Arc<Conn>);

impl Drop for Slot {
    fn drop(&mut self) {
        // Stamped before the release, so a connection seen idle was idle since at least then.
        self.0.released_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A taken slot as the response body holds it: alone, or — for a request with a body, which
/// may still be sent after the answer, keeping its stream open — shared with the task sending
/// it, the last of the two releasing it. Shared only then: a bodiless request (most) costs no
/// allocation for it.
enum Held {
    Alone(Slot),
    Shared(Arc<Slot>),
}

impl Held {
    fn new(slot: Slot, has_body: bool) -> Held {
        if has_body {
            Held::Shared(Arc::new(slot))
        } else {
            Held::Alone(slot)
        }
    }

    fn conn(&self) -> &Conn {
        match self {
            Held::Alone(s) => &s.0,
            Held::Shared(s) => &s.0,
        }
    }

    /// The request-body sender's share (none without a body).
    fn share(&self) -> Option<Arc<Slot>> {
        match self {
            Held::Alone(_) => None,
            Held::Shared(s) => Some(Arc::clone(s)),
        }
    }
}

/// The connections to one endpoint.
pub struct Pool {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    host_port: String,
    settings: PoolSettings,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// One connect at a time, so a burst opens one connection, not one per request.
    connecting: tokio::sync::Mutex<()>,
    /// When the last connect failed, and why: a request that waited for `connecting` while
    /// that attempt ran takes its answer instead of trying again, so a burst toward a dead
    /// endpoint fails together, not one `connect_timeout` after another.
    failed_connect: Mutex<Option<(Instant, String)>>,
    /// ALPN chose HTTP/1.1: every request goes through `h1` until this many milliseconds
    /// after `epoch` (0: HTTP/2).
    h1_until_ms: AtomicU64,
    epoch: Instant,
    /// How long an ALPN answer of HTTP/1.1 holds ([`H2_AGAIN_AFTER`]; shorter in tests).
    h2_again_after: Duration,
    h1: Client<Connector, Body>,
}

impl Pool {
    /// `tls` must offer ALPN `h2` and `http/1.1`.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        host_port: String,
        settings: PoolSettings,
    ) -> Pool {
        let connector = Connector::new(
            tls.clone(),
            server_name.clone(),
            settings.connect_timeout,
            settings.handshake_timeout,
        );
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Pool {
            tls: TlsConnector::from(tls),
            server_name,
            host_port,
            settings,
            conns: Mutex::new(Vec::new()),
            connecting: tokio::sync::Mutex::new(()),
            failed_connect: Mutex::new(None),
            h1_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            h2_again_after: H2_AGAIN_AFTER,
            h1,
        }
    }

    /// Open HTTP/2 connections (live or draining).
    pub fn connections(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Send `req` (absolute URI) and give back the response, whose body holds the stream slot.
    pub async fn request(&self, req: Request<Body>) -> Result<Response<Body>, PoolError> {
        let mut req = req;
        // A connection that closed between the slot being taken and the stream being opened
        // (GOAWAY, idle close) gave the request back unsent and is forgotten: try the next.
        // So did a stream the API server refused unprocessed (`h2conn::replay`): a GOAWAY that
        // crossed the request retires its connection too; a `REFUSED_STREAM` does not.
        // An API server shutting down retires every connection at once, so as many tries as
        // there can be connections, and one for a new one.
        for _ in 0..=self.settings.max_connections {
            // The rare paths are boxed: inline, a connect's or hyper's HTTP/1.1 client's state
            // (kilobytes) would sit in every request's future and be copied at each move.
            if self.over_h1() {
                return Box::pin(self.via_h1(req)).await;
            }
            let taken = match self.slot_on_existing() {
                Some(slot) => Ok(Taken::Slot(slot)),
                None => Box::pin(self.take_slot()).await,
            };
            let slot = match taken {
                Ok(Taken::Slot(slot)) => slot,
                Ok(Taken::Http1(tls)) => return Box::pin(once_over_http1(*tls, req)).await,
                Ok(Taken::ViaH1) => return Box::pin(self.via_h1(req)).await,
                Err(None) => return Err(PoolError::Busy(Box::new(req))),
                Err(Some(PoolError::Connect(why))) => {
                    return Err(PoolError::NotSent(why, Box::new(req), true))
                }
                Err(Some(PoolError::ConnectShared(why))) => {
                    return Err(PoolError::NotSent(why, Box::new(req), false))
                }
                Err(Some(err)) => return Err(err),
            };
            *req.version_mut() = http::Version::HTTP_2;
            let slot = Held::new(slot, !http_body::Body::is_end_stream(req.body()));
            match slot.conn().h2.send(req, slot.share()).await {
                // The slot is held until the response body ends or is dropped.
                Ok(resp) => return Ok(resp.map(|recv| body::hold(recv, slot))),
                Err(SendError::Unsent(unsent)) => {
                    tracing::debug!(endpoint = %self.host_port, "upstream connection closing before the request went out, or its stream refused unprocessed; sending it again");
                    req = unsent;
                }
                Err(SendError::Broken(err)) => return Err(PoolError::Broken(err)),
                Err(SendError::Refused(err)) => return Err(PoolError::Refused(err)),
            }
        }
        Err(PoolError::NotSent(
            "every connection closed before the request went out".into(),
            Box::new(req),
            true,
        ))
    }

    /// ALPN chose HTTP/1.1 less than [`H2_AGAIN_AFTER`] ago. (The clock is read only then.)
    fn over_h1(&self) -> bool {
        let until = self.h1_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    fn now_ms(&self) -> u64 {
        ms_since(self.epoch)
    }

    /// Over hyper's pooled HTTP/1.1 client (an endpoint whose ALPN chose HTTP/1.1). That
    /// client consumes the request even when it never made a connection, so a copy is kept
    /// while it tries (`h2conn::with_copy`: the head, and a body already whole): a request
    /// whose connection could not be made comes back [`PoolError::NotSent`] and goes to the
    /// next endpoint, a write included, as over HTTP/2.
    async fn via_h1(&self, mut req: Request<Body>) -> Result<Response<Body>, PoolError> {
        *req.version_mut() = http::Version::HTTP_11;
        let (req, again) = super::h2conn::with_copy(req);
        match self.h1.request(req).await {
            Ok(resp) => {
                let (parts, incoming) = resp.into_parts();
                Ok(Response::from_parts(parts, body::boxed(incoming)))
            }
            Err(e) if e.is_connect() => match again {
                Some(again) => Err(PoolError::NotSent(
                    error_chain(&e),
                    Box::new(again.request()),
                    true,
                )),
                None => Err(PoolError::Legacy(e)),
            },
            Err(e) => Err(PoolError::Legacy(e)),
        }
    }

    /// When no connection had room (the caller looked): one at a time, look again, then open
    /// a connection if allowed. `Err(None)`: every connection is full at the cap.
    async fn take_slot(&self) -> Result<Taken, Option<PoolError>> {
        let waited_from = Instant::now();
        let _one = self.connecting.lock().await;
        if let Some(slot) = self.slot_on_existing() {
            return Ok(Taken::Slot(slot));
        }
        if self.over_h1() {
            // The connect this request waited for found HTTP/1.1 again.
            return Ok(Taken::ViaH1);
        }
        if !self.room_for_another() {
            return Err(None);
        }
        if let Some((at, why)) = &*self
            .failed_connect
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            if *at >= waited_from {
                return Err(Some(PoolError::ConnectShared(why.clone())));
            }
        }
        let connected = self.connect().await;
        *self
            .failed_connect
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = match &connected {
            Err(PoolError::Connect(why)) => Some((Instant::now(), why.clone())),
            _ => None,
        };
        let h2 = match connected.map_err(Some)? {
            Connected::H2(h2) => h2,
            Connected::Http1(tls) => {
                // Hyper's HTTP/1.1 pool for a while; this request uses the connection at hand.
                let again = u64::try_from(self.h2_again_after.as_millis()).unwrap_or(u64::MAX);
                let until = self.now_ms().saturating_add(again).max(1);
                if self.h1_until_ms.swap(until, Ordering::Relaxed) == 0 {
                    tracing::info!(endpoint = %self.host_port, "the upstream chose HTTP/1.1 by ALPN: one request per connection; HTTP/2 is tried again on a new connection in {:?}", self.h2_again_after);
                }
                return Ok(Taken::Http1(tls));
            }
        };
        if self.h1_until_ms.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!(endpoint = %self.host_port, "the upstream chose HTTP/2 by ALPN again");
        }
        let conn = Arc::new(Conn {
            h2,
            in_use: AtomicUsize::new(1),
            released_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn.clone());
        Ok(Taken::Slot(Slot(conn)))
    }

    /// The first live connection with a free slot. Closed connections are forgotten on the
    /// way, and so are idle ones past the first once idle for the idle timeout: a burst of
    /// watches opens connections, and they close again (gracefully, once dropped) after the
    /// burst is over, while a load that comes back within the timeout finds them open.
    fn slot_on_existing(&self) -> Option<Slot> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let mut idle_kept = false;
        let idle_ms = u64::try_from(self.settings.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        conns.retain(|c| {
            if c.h2.is_closed() {
                return false;
            }
            // Slots are only taken under this lock, so an idle connection stays idle here.
            if c.in_use.load(Ordering::Acquire) == 0 {
                if idle_kept {
                    let released = c.released_ms.load(Ordering::Relaxed);
                    return c.now_ms().saturating_sub(released) < idle_ms;
                }
                idle_kept = true;
            }
            true
        });
        let limit = self.settings.streams_per_connection;
        conns.iter().find_map(|c| {
            // Never more than the API server allows on it: h2 would queue the rest locally,
            // where a short request could wait behind watches until its deadline (504). At
            // least one: a server that says 0 (for now) gets one stream per connection, so a
            // request opens another connection (up to the cap) rather than waiting in h2.
            let limit = limit.min(c.h2.max_streams()).max(1);
            c.in_use
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .ok()
                .map(|_| Slot(c.clone()))
        })
    }

    /// Whether another connection may be opened under the cap. At the cap, the connections
    /// the API server retired (GOAWAY) while all their streams were taken are forgotten
    /// first: such a connection is never tried, so its GOAWAY would go unseen while its
    /// watches last, holding a place under the cap — with every place so held, each request
    /// would be refused busy although a new connection would be accepted. Looked for only at
    /// the cap, so the common path costs nothing; a forgotten connection's streams go on
    /// (their slots hold it).
    fn room_for_another(&self) -> bool {
        let max = self.settings.max_connections;
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        if conns.len() >= max {
            conns.retain(|c| !c.h2.is_retired());
        }
        conns.len() < max
    }

    /// TCP + TLS + the HTTP/2 handshake; the bare TLS stream when ALPN did not choose h2.
    async fn connect(&self) -> Result<Connected, PoolError> {
        let s = &self.settings;
        let tcp = tokio::time::timeout(s.connect_timeout, TcpStream::connect(&self.host_port))
            .await
            .map_err(|_| {
                PoolError::Connect(format!(
                    "TCP connect took longer than {:?}",
                    s.connect_timeout
                ))
            })?
            .map_err(|e| PoolError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        // HTTP/2 PINGs watch these too; keep-alive costs nothing and covers the time between.
        crate::server::serve::keep_alive(&tcp);
        let tls = tokio::time::timeout(
            s.handshake_timeout,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| {
            PoolError::Connect(format!(
                "TLS handshake took longer than {:?}",
                s.handshake_timeout
            ))
        })?
        .map_err(|e| PoolError::Connect(e.to_string()))?;
        if tls.get_ref().1.alpn_protocol() != Some(&b"h2"[..]) {
            return Ok(Connected::Http1(Box::new(tls)));
        }
        let slots = u32::try_from(s.streams_per_connection).unwrap_or(u32::MAX);
        let h2 = H2Conn::handshake(
            crate::write_batch::WriteBatch::new(tls),
            STREAM_WINDOW,
            // Room for every slot's full stream window: a stalled stream never starves the
            // others of connection-level window (h2 caps windows at 2^31-1).
            STREAM_WINDOW.saturating_mul(slots).min(i32::MAX as u32),
            self.host_port.clone(),
            h2conn::KEEP_ALIVE,
        )
        .await
        .map_err(|e| PoolError::Connect(format!("HTTP/2 handshake: {e}")))?;
        Ok(Connected::H2(h2))
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

enum Connected {
    H2(H2Conn),
    Http1(Box<Tls>),
}

/// `e` and its sources, `: `-joined (hyper-util's own text is only "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Milliseconds since `epoch` (the clocks the pool keeps in atomics).
pub(super) fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

enum Taken {
    Slot(Slot),
    Http1(Box<Tls>),
    /// ALPN chose HTTP/1.1 on the connect this request waited for: hyper's pool.
    ViaH1,
}

/// How long an endpoint whose ALPN chose HTTP/1.1 is spoken to over HTTP/1.1 before a new
/// connection asks again (a TLS handshake a minute, at most, while it keeps answering so).
pub const H2_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// One request over a fresh connection on which ALPN chose HTTP/1.1 (origin-form URI and a
/// `Host` header, as hyper's pooled client would send it).
async fn once_over_http1(tls: Tls, mut req: Request<Body>) -> Result<Response<Body>, PoolError> {
    if let Some(host) = req
        .uri()
        .authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(http::header::HOST, host);
    }
    let origin = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = http::Uri::from(origin);
    *req.version_mut() = http::Version::HTTP_11;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| PoolError::Connect(format!("HTTP/1.1 handshake: {e}")))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(PoolError::BrokenHttp1)?;
    let (parts, incoming) = resp.into_parts();
    Ok(Response::from_parts(parts, body::boxed(incoming)))
}
