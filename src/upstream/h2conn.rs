//! One HTTP/2 connection to an upstream endpoint, spoken with the `h2` crate directly.
//!
//! Why not hyper's HTTP/2 client: it sends each request through a channel to the connection's
//! task, which opens the stream and then spawns one more task per request to wait for the
//! response head and hand it back through a oneshot. That is a task spawn, two channel
//! hand-offs and an extra task wake-up for every proxied request. Here the request's own task
//! opens the stream and awaits the response head itself; the connection's task only drives
//! the connection (frames, flow control, keep-alive pings). A request body that is not
//! already complete when the stream opens is sent by a task of its own, as hyper does.
//!
//! What hyper's client did that this keeps: the same settings (no server push, its header-list
//! and send-buffer limits, frame size, initial stream count), `Content-Length` set from an
//! exact body size when missing, request bodies sent only as the stream's send window allows
//! and stopped when the upstream resets the stream, window capacity released as the response
//! body is read (withheld instead while a pump reads it and has no room: `window.rs`), an upstream `RST_STREAM(NO_ERROR)` after the response ends the body cleanly,
//! and keep-alive pings (every 30 s, idle or not; no answer within 20 s closes the
//! connection, failing its streams).
//!
//! A stream the API server refused without processing it — above the last stream id of a
//! GOAWAY that crossed the request, or reset with `REFUSED_STREAM` — gives the request back
//! to be sent again when the whole of it was in hand (`replay`), as client-go's transport does.
//!
//! Callers strip connection-specific headers before sending (`forward.rs` removes every
//! hop-by-hop header; the proxy's own requests carry none): `h2` refuses a request with one.

use std::{
    future::poll_fn,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use h2::{client::SendRequest, Ping, Reason, RecvStream, SendStream};
use http::{header::CONTENT_LENGTH, HeaderMap, HeaderValue, Method, Request, Response};
use http_body::{Body as _, Frame, SizeHint};

use self::replay::Replay;
use super::window;
use crate::body::{Body, BoxError};

/// hyper's defaults for its HTTP/2 client, kept as they were.
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER_SIZE: usize = 1024 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;
/// The largest response header list taken: 1 MiB. A `proxy` subresource passes a pod's headers
/// through (the API server's own client takes up to 10 MiB of them, Go's default as read), so
/// their size is a tenant's choice, and every tenant shares this connection. h2 closes the
/// whole connection (GOAWAY) for a block that needs more CONTINUATION frames than this limit's
/// size in 16 KiB frames plus a quarter (1.25 MiB), or that decodes to over four times it; a
/// list between the two is that response's reset only (502). hyper's 16 KiB made the GOAWAY any block over 64
/// KiB. Not higher: each response's head is held whole until its client takes it, counted in
/// no budget, so 10 MiB would let one tenant's hundred `proxy` requests hold a gigabyte; the
/// window left (1.25–10 MiB, a pod built to do it) is in the README's known gaps.
const MAX_HEADER_LIST_SIZE: u32 = 1024 * 1024;
/// No cap on the streams h2 resets on our side (hyper's is 1024, then GOAWAY): the API server
/// is trusted, and each such reset is a response a tenant's pod chose to make too large, so a
/// cap would let a tenant close the connection every other tenant uses.
const MAX_LOCAL_ERROR_RESET_STREAMS: Option<usize> = None;
/// How often a keep-alive PING goes out, and how long its answer may take.
pub const KEEP_ALIVE: KeepAlive = KeepAlive {
    interval: Duration::from_secs(30),
    timeout: Duration::from_secs(20),
};

/// Keep-alive PINGs: one every `interval`; no answer within `timeout` closes the connection.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// The sending side of one connection; `closed` turns true when its task has ended.
pub struct H2Conn {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

/// Why a request got no response head.
pub enum SendError {
    /// The request was not sent (the connection is closing or closed), or the API server
    /// refused its stream unprocessed (`replay`) and all of it was in hand: it comes back.
    Unsent(Request<Body>),
    /// The stream failed (after it was opened, or the connection broke under it).
    Broken(h2::Error),
    /// The API server refused the stream unprocessed (`replay`), but the body was still
    /// arriving from the client, so it cannot be sent again here: nothing was carried out,
    /// and the client may send the request again.
    Refused(h2::Error),
}

impl H2Conn {
    /// The HTTP/2 handshake over `io`, and the task that drives the connection from then on.
    pub async fn handshake<T>(
        io: T,
        stream_window: u32,
        connection_window: u32,
        endpoint: String,
        keep_alive: KeepAlive,
    ) -> Result<H2Conn, h2::Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, mut conn) = h2::client::Builder::new()
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .initial_window_size(stream_window)
            .initial_connection_window_size(connection_window)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER_SIZE)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
            .enable_push(false)
            .handshake::<T, Bytes>(io)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let done = closed.clone();
        let pings = conn.ping_pong();
        tokio::spawn(async move {
            let keep_alive = ping(pings, keep_alive);
            tokio::select! {
                biased;
                ended = &mut conn => {
                    if let Err(err) = ended {
                        tracing::debug!(%endpoint, %err, "upstream HTTP/2 connection ended");
                    }
                }
                why = keep_alive => {
                    tracing::warn!(%endpoint, why, "upstream HTTP/2 connection closed: keep-alive failed");
                }
            }
            done.store(true, Ordering::Release);
        });
        Ok(H2Conn { sender, closed })
    }

    /// How many streams the API server lets this connection open at once (its
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`; [`INITIAL_MAX_SEND_STREAMS`] until it said).
    pub fn max_streams(&self) -> usize {
        self.sender.current_max_send_streams()
    }

    /// Whether the connection's task has ended (nothing more can be sent on it).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether no new stream can be opened on the connection: its task has ended, or the API
    /// server sent GOAWAY (retiring it; its open streams — watches — go on). Asked of a
    /// connection no request would try (all its streams taken), which otherwise would only
    /// be found retired when one of them ends, holding a place under the connection cap.
    pub fn is_retired(&self) -> bool {
        if self.is_closed() {
            return true;
        }
        // A clone has no pending stream, so this only looks for a connection error (GOAWAY
        // included) and never parks the no-op waker.
        let mut sender = self.sender.clone();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(Err(_)) = sender.poll_ready(&mut cx) {
            self.closed.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// Send `req` (absolute URI, no connection-specific headers) and await the response head.
    /// `while_open` is held until the request body has been sent (or given up on), which can
    /// be after the response: the stream stays open on the connection until then, so whoever
    /// counts the connection's streams keeps counting this one.
    pub async fn send<G: Send + 'static>(
        &self,
        req: Request<Body>,
        while_open: G,
    ) -> Result<Response<RecvBody>, SendError> {
        let mut sender = self.sender.clone();
        // Refused here (GOAWAY received, connection gone), nothing was sent: the request is
        // still whole and may go to another connection.
        if poll_fn(|cx| sender.poll_ready(cx)).await.is_err() {
            self.closed.store(true, Ordering::Release);
            return Err(SendError::Unsent(req));
        }
        let (parts, body) = req.into_parts();
        let mut head = Request::from_parts(parts, ());
        if let Some(len) = body.size_hint().exact() {
            // As hyper: a known length is announced, except a zero one for methods whose
            // request body has no defined meaning.
            if len != 0 || !matches!(*head.method(), Method::GET | Method::HEAD | Method::DELETE) {
                head.headers_mut()
                    .entry(CONTENT_LENGTH)
                    .or_insert_with(|| HeaderValue::from(len));
            }
        }
        let eos = body.is_end_stream();
        // Kept to send the request again if the API server refuses the stream unprocessed
        // (`replay`): the head is consumed by h2, and so is a body being sent.
        let (body, again) = copy_of(&head, body);
        let (response, send_stream) = match sender.send_request(head, eos) {
            Ok(sent) => sent,
            Err(err) => {
                // Consumed but not sent; the connection is no longer usable.
                self.closed.store(true, Ordering::Release);
                return Err(match again {
                    Some(again) => SendError::Unsent(again.request()),
                    None => SendError::Broken(err),
                });
            }
        };
        if !eos {
            tokio::spawn(async move {
                pipe(body, send_stream).await;
                drop(while_open);
            });
        }
        let resp = match response.await {
            Ok(resp) => resp,
            Err(err) => {
                if !replay::unprocessed(&err) {
                    return Err(SendError::Broken(err));
                }
                if err.is_go_away() {
                    // No new stream may be opened on it: the pool must not offer it again.
                    self.closed.store(true, Ordering::Release);
                }
                return Err(match again {
                    Some(again) => {
                        tracing::debug!(%err, "the upstream refused the stream unprocessed; the request comes back to be sent again");
                        SendError::Unsent(again.request())
                    }
                    None => SendError::Refused(err),
                });
            }
        };
        let (parts, recv) = resp.into_parts();
        // hyper's size hint, kept: the announced length, or 0 for a stream already ended.
        let remaining =
            content_length(&parts.headers).or_else(|| recv.is_end_stream().then_some(0));
        let body = RecvBody {
            recv,
            data_done: false,
            ended: false,
            remaining,
        };
        Ok(Response::from_parts(parts, body))
    }
}

/// Sends a PING every `interval`; returns why the connection is dead when an answer does not
/// come within `timeout`. Pending forever without pings.
async fn ping(pings: Option<h2::PingPong>, every: KeepAlive) -> &'static str {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every.interval).await;
        match tokio::time::timeout(every.timeout, pings.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return "no PING answer in time",
        }
    }
}

/// Sends a request body on its stream, as the stream's send window allows; stops when the
/// upstream resets the stream, and resets it when the body fails.
async fn pipe(mut body: Body, mut tx: SendStream<Bytes>) {
    let mut body = Pin::new(&mut body);
    loop {
        let frame = tokio::select! {
            biased;
            _ = poll_fn(|cx| tx.poll_reset(cx)) => return,
            frame = poll_fn(|cx| body.as_mut().poll_frame(cx)) => frame,
        };
        let frame = match frame {
            None => {
                let _ = tx.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(err)) => {
                // CANCEL: the stream is no longer needed (RFC 9113 §7) — the client's body
                // failed, nothing went wrong between the proxy and the API server.
                tracing::debug!(%err, "request body failed; resetting the upstream stream");
                tx.send_reset(Reason::CANCEL);
                return;
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                let eos = body.is_end_stream();
                if !data.is_empty() && !wait_for_window(&mut tx).await {
                    return;
                }
                if tx.send_data(data, eos).is_err() || eos {
                    return;
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let _ = tx.send_trailers(trailers);
            return;
        }
    }
}

/// Waits until the stream may send at least one byte (h2 takes the rest as it comes); false
/// when the stream is gone or was reset.
async fn wait_for_window(tx: &mut SendStream<Bytes>) -> bool {
    // A one-byte claim, as hyper makes: h2 raises it to the buffered length in `send_data`,
    // and a claim of the whole chunk could pin connection window another stream needs.
    tx.reserve_capacity(1);
    while tx.capacity() == 0 {
        let ready = poll_fn(|cx| {
            if tx.poll_reset(cx).is_ready() {
                return Poll::Ready(false);
            }
            tx.poll_capacity(cx).map(|c| matches!(c, Some(Ok(_))))
        })
        .await;
        if !ready {
            return false;
        }
    }
    true
}

/// The exact `Content-Length`, when the header is present once and valid.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let one = values.next()?;
    if values.next().is_some() {
        return None;
    }
    one.to_str().ok()?.trim().parse().ok()
}

/// A response body read from its stream: window capacity given back as each chunk is taken
/// (or, while a pump reads it, withheld until the pump has room: `window.rs`).
pub struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    /// Ended (trailers read, or failed): later polls answer `None`.
    ended: bool,
    /// Bytes still announced by `Content-Length` (for the size hint).
    remaining: Option<u64>,
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    // Under a pump the window is the pump's to give back (`window.rs`).
                    let flow = this.recv.flow_control();
                    if !window::withhold(flow, data.len()) {
                        let _ = flow.release_capacity(data.len());
                    }
                    if let Some(left) = &mut this.remaining {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(err))) => {
                    this.ended = true;
                    // Even a reset with NO_ERROR: RFC 9113 §8.1 allows one after a complete
                    // response ("stop sending the request"), and h2 then ends the data
                    // cleanly itself (the stream is closed `ErrorAfterEndStream`); one that
                    // reaches here came before END_STREAM, so the answer was cut short and
                    // must not look complete.
                    return Poll::Ready(Some(Err(err.into())));
                }
                Poll::Ready(None) => this.data_done = true,
            }
        }
        let polled = match this.recv.poll_trailers(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(trailers)) => trailers.map(|t| Ok(Frame::trailers(t))),
            Poll::Ready(Err(err)) => match err.reason() {
                Some(Reason::NO_ERROR) => None,
                _ => Some(Err(err.into())),
            },
        };
        this.ended = true;
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// `req` to send, and a copy to send it again ([`replay`]) when all of its body is already in
/// hand (none, or one the sanitize stage read whole); `None` for a body still arriving.
pub(crate) fn with_copy(req: Request<Body>) -> (Request<Body>, Option<Replay>) {
    let (parts, body) = req.into_parts();
    let head = Request::from_parts(parts, ());
    let (body, again) = copy_of(&head, body);
    (head.map(|()| body), again)
}

/// `body` to send, and a copy of `head` + `body` when all of the body is in hand.
fn copy_of(head: &Request<()>, body: Body) -> (Body, Option<Replay>) {
    let (body, whole) = if body.is_end_stream() {
        (body, Some(Vec::new()))
    } else {
        replay::in_hand(body)
    };
    (body, whole.map(|data| Replay::of(head, data)))
}

mod replay;
#[cfg(test)]
mod tests;
