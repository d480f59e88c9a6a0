//! `ResponseComplete` after the last byte of an ordinary (not long-running) answer.
//!
//! The audit layer hands every answer but a started stream here ([`deliver`]). The body is
//! read ahead up to [`WHOLE_ANSWER`] bytes before the head goes out:
//!
//! * **It ends within that** (most answers: a get, a small list, a Status, an empty body, every
//!   refusal): the whole answer is in hand. `ResponseComplete` is emitted, then the answer is released in
//!   one piece — a blocking-strict sink that cannot make the event durable turns it into a
//!   503, as for refusals (the apiserver's small answers likewise leave the server only after
//!   its handler, and its audit, returned).
//! * **It goes on** (a large list): the head and the body flow at once, but the newest frame is
//!   always held back until the next one arrives ([`Completing`]); when the upstream body ends,
//!   `ResponseComplete` is emitted and the held frame — the last bytes, with the end of the
//!   stream — is released only once [`AuditRecord::complete`] returned: for blocking-strict,
//!   when the event is durable. If it cannot be, the body ends in an error instead (HTTP/2:
//!   the stream is reset; HTTP/1.1: the connection closes short of `Content-Length` or the
//!   last chunk), so no client ever holds a *complete* answer whose event was lost.
//! * **It breaks off** (the upstream fails mid-body), or the client goes away, or the proxy
//!   resets a stalled stream: the event is emitted at once, annotated
//!   `portcullis.io/response-aborted` (`upstream-error`, `client-gone`, `stalled`).
//!
//! `stageTimestamp` is taken when the upstream body ended, i.e. after every byte but the held
//! frame went to the client. The body is also kept, up to a cap, for what the event records of
//! it: `responseObject` at `RequestResponse` (up to [`MAX_RESPONSE_OBJECT`]), and the fields of
//! a failure `Status` (code ≥ 400) in `responseStatus`, as the apiserver records them.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Response;
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use serde_json::Value;

use super::{
    record::{ABORTED_CLIENT, ABORTED_UPSTREAM},
    AuditError, AuditRecord, Stage,
};
use crate::body::{self, Body, BoxError};

/// Answers up to this size are read whole before their head goes out.
pub const WHOLE_ANSWER: usize = 64 * 1024;
/// Largest response body kept for `responseObject`; larger ones stream on without it.
pub const MAX_RESPONSE_OBJECT: usize = 3 * 1024 * 1024;
/// The error a strict answer ends in when its event could not be made durable.
const AUDIT_FAILED: &str = "the audit event of this answer could not be recorded";
/// Largest failure body read for its `Status`.
const MAX_STATUS_BODY: usize = 64 * 1024;

/// What the event keeps of the body.
struct Capture {
    chunks: Vec<Bytes>,
    total: usize,
    limit: usize,
    /// Past `limit`: nothing more is kept, nothing is recorded.
    over: bool,
    /// `responseObject` is wanted (else only a failure Status is looked for).
    object: bool,
    /// A protobuf answer, recorded as its JSON form (as kube-apiserver's audit log has it).
    protobuf: bool,
    /// The body's `Content-Encoding`, lower-cased, when not identity: `gzip` (what
    /// kube-apiserver compresses answers over 128 KiB with, for clients that accept it — every
    /// Go client does) is decoded for the event; any other leaves the object out, said so.
    encoding: Option<String>,
}

/// Why `responseObject` is missing from an event at `RequestResponse`.
const OMITTED_ANNOTATION: &str = "portcullis.io/response-object-omitted";

/// `gz` decompressed, if it decodes whole to at most `limit` bytes (a bomb stops there).
fn gunzip(gz: &[u8], limit: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut reader = flate2::read::MultiGzDecoder::new(gz).take(limit as u64 + 1);
    reader.read_to_end(&mut out).ok()?;
    (out.len() <= limit).then_some(out)
}

/// What [`deliver`] reads of an answer's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// Nothing: a `proxy` subresource's answer (a pod's, service's or node's bytes, which the
    /// API server never reads as an object).
    Nothing,
    /// A failure Status, for `responseStatus`.
    Status,
    /// A Status whatever the code, for `responseStatus`: a delete's answer, which is a
    /// success Status (`status: Success`, the object's name, kind and uid in `details`) for
    /// most resources; `LogResponseObject` copies any Status at Metadata and above. Only
    /// deletes are read so: reading every success body would cost each list its parse.
    AnyStatus,
    /// The whole object, for `responseObject` (and a failure Status).
    Object,
}

impl Capture {
    /// `None` when the event needs nothing of this body.
    fn new(resp: &Response<Body>, wanted: Wanted) -> Option<Capture> {
        if wanted == Wanted::Nothing {
            return None;
        }
        let wants_object = wanted == Wanted::Object;
        let ct = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let json = ct.starts_with("application/json");
        let protobuf = ct == portcullis_proto::MEDIA_TYPE;
        let failure = resp.status().as_u16() >= 400;
        let any_status = wanted == Wanted::AnyStatus;
        let encoding = resp
            .headers()
            .get(http::header::CONTENT_ENCODING)
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|e| !e.is_empty() && e != "identity");
        ((json || protobuf) && (wants_object || failure || any_status)).then(|| Capture {
            chunks: Vec::new(),
            total: 0,
            limit: if wants_object {
                MAX_RESPONSE_OBJECT
            } else {
                MAX_STATUS_BODY
            },
            over: false,
            object: wants_object,
            protobuf,
            encoding,
        })
    }

    fn push(&mut self, frame: &Frame<Bytes>) {
        let Some(data) = frame.data_ref() else { return };
        if self.over {
            return;
        }
        self.total += data.len();
        if self.total > self.limit {
            self.over = true;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(data.clone());
        }
    }

    /// Put what was kept into the record (before `ResponseComplete` is taken).
    fn finish(self, rec: &AuditRecord) {
        // What the event cannot hold is said, not silently left out.
        let omitted = |why: &str| {
            if self.object {
                rec.with(|r| r.annotate(OMITTED_ANNOTATION, why));
            }
        };
        if self.over {
            omitted(&format!(
                "the response body is larger than {} MiB",
                MAX_RESPONSE_OBJECT >> 20
            ));
            return;
        }
        let mut bytes: Vec<u8> = self.chunks.concat();
        match self.encoding.as_deref() {
            None => {}
            Some("gzip" | "x-gzip") => match gunzip(&bytes, self.limit) {
                Some(plain) => bytes = plain,
                None => {
                    omitted(&format!(
                        "the gzip response body does not decode within {} MiB",
                        self.limit >> 20
                    ));
                    return;
                }
            },
            Some(other) => {
                omitted(&format!("the response body is encoded ({other})"));
                return;
            }
        }
        let v = if self.protobuf {
            portcullis_proto::decode_object(&bytes).ok()
        } else {
            serde_json::from_slice::<Value>(&bytes).ok()
        };
        let Some(v) = v else {
            // Not JSON, or nested past the reader's limit.
            omitted("the response body could not be read as an object");
            return;
        };
        rec.with(|r| {
            r.response_status_from(&v);
            if self.object {
                r.response_object(v);
            }
        });
    }
}

/// Deliver an ordinary answer (see the module doc): `Ok` the response to release, `Err` when
/// a strict sink could not record the event of an answer held whole (the caller answers 503).
/// `started`: emit `ResponseStarted` first (an answer to a long-running request that did not
/// start a stream) — for an answer held whole, once its Status is in the record.
pub async fn deliver(
    rec: AuditRecord,
    resp: Response<Body>,
    wanted: Wanted,
    started: bool,
) -> Result<Response<Body>, (AuditError, Response<Body>)> {
    let mut capture = Capture::new(&resp, wanted);
    let (parts, mut inner) = resp.into_parts();
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut read = 0usize;
    let streaming = loop {
        if inner.is_end_stream() {
            break false;
        }
        match inner.frame().await {
            None => break false,
            Some(Ok(frame)) => {
                read += frame.data_ref().map_or(0, Bytes::len);
                if let Some(c) = capture.as_mut() {
                    c.push(&frame);
                }
                frames.push_back(frame);
                if read > WHOLE_ANSWER {
                    break true;
                }
            }
            Some(Err(err)) => {
                // Broken before the head went out: the client gets what came and the error
                // (the answer fails anyway, so a strict sink's failure changes nothing).
                if started {
                    let _ = rec.emit(Stage::ResponseStarted).await;
                }
                rec.aborted(ABORTED_UPSTREAM);
                let replay = frames.into_iter().map(Ok).chain(std::iter::once(Err(err)));
                let body = http_body_util::StreamBody::new(futures_util::stream::iter(replay));
                return Ok(Response::from_parts(parts, body::boxed(body)));
            }
        }
    };
    if streaming {
        let started = if started {
            rec.emit(Stage::ResponseStarted).await
        } else {
            Ok(())
        };
        let body = Completing {
            inner,
            pending: frames,
            capture,
            rec,
            end: End::Streaming,
        };
        let resp = Response::from_parts(parts, body::boxed(body));
        return match started {
            Ok(()) => Ok(resp),
            Err(err) => Err((err, resp)),
        };
    }
    if let Some(c) = capture {
        c.finish(&rec);
    }
    let whole = Response::from_parts(parts, body::frames(frames));
    if started {
        // After the answer's Status is read into the record, as the API server's
        // `LogResponseObject` fills it before the status code is written.
        if let Err(err) = rec.emit(Stage::ResponseStarted).await {
            return Err((err, whole));
        }
    }
    // Dropped while waiting (the client went away), the event is still written: it was handed
    // to the sinks on the first poll (`Auditor::emit_prepared`).
    match rec.complete().await {
        Ok(()) => Ok(whole),
        Err(err) => Err((err, whole)),
    }
}

type Emitting = Pin<Box<dyn Future<Output = Result<(), AuditError>> + Send>>;

enum End {
    /// Frames flow; the newest is held back.
    Streaming,
    /// The upstream body ended: `ResponseComplete` is on its way; the held frame waits.
    Emitting(Emitting),
    /// The event was taken: the held frame (if any) goes, then the end.
    Done,
    /// Ended in an error: nothing more.
    Failed,
}

/// A streamed ordinary answer whose last frame waits for `ResponseComplete` (module doc).
struct Completing {
    inner: Body,
    /// Frames read and not yet handed out; while streaming, the last one is held back.
    pending: VecDeque<Frame<Bytes>>,
    capture: Option<Capture>,
    rec: AuditRecord,
    end: End,
}

impl http_body::Body for Completing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let me = &mut *self;
        loop {
            match &mut me.end {
                End::Failed => return Poll::Ready(None),
                End::Done => return Poll::Ready(me.pending.pop_front().map(Ok)),
                End::Emitting(fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => me.end = End::Done,
                    Poll::Ready(Err(err)) => {
                        tracing::error!(%err, "audit event could not be recorded; cutting the answer off before its end");
                        me.end = End::Failed;
                        me.pending.clear();
                        return Poll::Ready(Some(Err(AUDIT_FAILED.into())));
                    }
                },
                End::Streaming => {
                    // Hold back the newest frame with bytes (and any empty or trailers frames
                    // after it): released only once a later frame carries bytes, so the
                    // client never has the whole body — nor, with a Content-Length, knows it
                    // has — before the event is written.
                    if me.pending.len() > 1
                        && me
                            .pending
                            .iter()
                            .skip(1)
                            .any(|f| f.data_ref().is_some_and(|d| !d.is_empty()))
                    {
                        return Poll::Ready(me.pending.pop_front().map(Ok));
                    }
                    match Pin::new(&mut me.inner).poll_frame(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(c) = me.capture.as_mut() {
                                c.push(&frame);
                            }
                            me.pending.push_back(frame);
                        }
                        Poll::Ready(Some(Err(err))) => {
                            // A stalled-stream reset was recorded by the pump's hook already.
                            me.rec.aborted(ABORTED_UPSTREAM);
                            me.end = End::Failed;
                            me.pending.clear();
                            return Poll::Ready(Some(Err(err)));
                        }
                        Poll::Ready(None) => {
                            if let Some(c) = me.capture.take() {
                                c.finish(&me.rec);
                            }
                            me.end = End::Emitting(Box::pin(me.rec.complete()));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.end, End::Done | End::Failed) && self.pending.is_empty()
    }
}

impl Drop for Completing {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.end, End::Failed) {
            // The client went away before the end.
            End::Streaming => self.rec.aborted(ABORTED_CLIENT),
            // Gone while the event was being written: let the write finish (it is taken).
            End::Emitting(fut) => {
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(fut);
                }
            }
            End::Done | End::Failed => {}
        }
    }
}

#[cfg(test)]
mod tests;
