//! Sending a request again when the API server refused its stream without processing it.
//!
//! RFC 9113 §8.7: a stream above the last stream id of a GOAWAY, or one reset with
//! `REFUSED_STREAM`, was not processed, and the client may send the request again.
//! kube-apiserver (Go's HTTP/2 server) sends GOAWAY when it closes an idle connection, under
//! `--goaway-chance` and when it shuts down, and ignores the streams that were already on
//! their way: a request sent in the round trip before that GOAWAY arrives is refused so.
//! client-go's transport sends such a request again on another connection; the proxy does the
//! same ([`SendError::Unsent`](super::SendError::Unsent)) instead of answering 502 for a
//! request the API server never saw.
//!
//! h2 consumes the request head when it opens the stream, so what it takes to send again is
//! copied before: the head, and the body when all of it is already in hand (no body, or one
//! the sanitize stage read whole). A body still arriving from the client cannot be sent twice:
//! such a request fails [`SendError::Refused`](super::SendError::Refused) — unprocessed, so
//! the client gets a 503 to send it again, and the breaker is not told.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use h2::Reason;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{self, Body, BoxError};

/// A body in hand larger than this is not kept for a second try (the sanitize stage's own
/// limits are far below it; this only bounds what a streamed body could hand over at once).
const MAX_IN_HAND: usize = 4 << 20;

/// Whether the API server refused the stream unprocessed: the stream was above the last
/// stream id of a GOAWAY it sent (h2 fails exactly those streams with the remote GOAWAY), or
/// it reset the stream with `REFUSED_STREAM`.
pub fn unprocessed(err: &h2::Error) -> bool {
    err.is_remote()
        && (err.is_go_away() || (err.is_reset() && err.reason() == Some(Reason::REFUSED_STREAM)))
}

/// What sending a request again takes: its head and its whole body.
pub struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Vec<Bytes>,
}

impl Replay {
    /// A copy of `head`, with `body` (the whole body, in order).
    pub fn of(head: &Request<()>, body: Vec<Bytes>) -> Replay {
        Replay {
            method: head.method().clone(),
            uri: head.uri().clone(),
            version: head.version(),
            headers: head.headers().clone(),
            body,
        }
    }

    /// The request, whole again.
    pub fn request(self) -> Request<Body> {
        let mut req = Request::new(copy(&self.body));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Takes the frames of `body` that are already in hand, without waiting for any. When that is
/// all of it (the body ended): the data, and a body of the same frames to send. Otherwise no
/// data, and a body that sends what was taken, then the rest as it comes.
pub fn in_hand(mut body: Body) -> (Body, Option<Vec<Bytes>>) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut taken = Vec::new();
    let mut size = 0;
    loop {
        if body.is_end_stream() {
            return (copy(&taken), Some(taken));
        }
        if size > MAX_IN_HAND {
            break;
        }
        // A pending poll leaves the no-op waker behind; the real one replaces it when the
        // body is polled again to be sent.
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return (copy(&taken), Some(taken)),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    size += data.len();
                    taken.push(data);
                }
                Err(trailers) => return (ahead(taken, Ok(trailers), body), None),
            },
            Poll::Ready(Some(Err(err))) => return (ahead(taken, Err(err), body), None),
            Poll::Pending => break,
        }
    }
    let queued = taken.into_iter().map(|d| Ok(Frame::data(d))).collect();
    (Ahead { queued, rest: body }.boxed_unsync(), None)
}

/// A body of these frames (each a cheap reference to data in hand).
fn copy(data: &[Bytes]) -> Body {
    body::frames(data.iter().cloned().map(Frame::data).collect())
}

fn ahead(taken: Vec<Bytes>, last: Result<Frame<Bytes>, BoxError>, rest: Body) -> Body {
    let mut queued: VecDeque<_> = taken.into_iter().map(|d| Ok(Frame::data(d))).collect();
    queued.push_back(last);
    Ahead { queued, rest }.boxed_unsync()
}

/// Frames taken from `rest` ahead of time, then `rest`.
struct Ahead {
    queued: VecDeque<Result<Frame<Bytes>, BoxError>>,
    rest: Body,
}

impl http_body::Body for Ahead {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.queued.pop_front() {
            return Poll::Ready(Some(frame));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.queued.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self
            .queued
            .iter()
            .filter_map(|f| f.as_ref().ok()?.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + queued);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + queued);
        }
        hint
    }
}
