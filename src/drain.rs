//! Request bodies that a refusal left unread are drained, so the refusal reaches the client.
//!
//! A layer that refuses before reading the body (413 on a declared `Content-Length`, 401, 403,
//! 429, …) drops it. Dropping an unfinished HTTP/2 request body makes hyper/h2 reset the
//! stream; a client still uploading (curl 7.x, nghttp2-based clients) then fails with "stream
//! error in the HTTP/2 framing layer" instead of showing the Status it was sent — RFC 9113
//! §8.1 lets a server answer early, but the client must be able to finish. On HTTP/1.1 an
//! unread body means the connection is closed under a client still writing, which a client
//! may see as a reset before it reads the answer.
//!
//! [`DrainOnDrop`] wraps the incoming body: read to its end, it is a plain body; dropped before
//! its end, it hands the rest to a task that reads and discards it — at most
//! [`DRAIN_MAX_BYTES`] bytes within [`DRAIN_MAX_TIME`] — so the client finishes its upload and
//! the stream closes cleanly once the answer is out. Past either bound the body is dropped (the
//! old reset), so a client cannot make the proxy read without end.
//!
//! Not every client finishes: a review traced a PROTOCOL_ERROR curl 7.88 reported once in CI
//! (with a model server, not reproduced against this proxy) to curl ending its HTTP/2 upload
//! at a final answer of 300 or more, shorter than its `Content-Length` — a malformed request
//! (RFC 9113 §8.1.1) that h2 resets, dropping whatever of the answer is still queued.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// Most bytes read and discarded after a refusal.
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Longest time spent draining after a refusal.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// A request body that is drained in the background if dropped unfinished.
pub struct DrainOnDrop<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    inner: Option<B>,
    /// An HTTP/1.1 client waiting for `100 Continue` before it sends the body.
    awaits_continue: bool,
}

impl<B> DrainOnDrop<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    pub fn new(inner: B) -> Self {
        DrainOnDrop {
            inner: Some(inner),
            awaits_continue: false,
        }
    }

    /// For an HTTP/1.1 request with `Expect: 100-continue`: a refusal before the body was
    /// read drops it without draining. hyper writes `100 Continue` at the body's first read
    /// when no answer is out yet, and the drain starts before the refusal's head is written:
    /// the client would be invited to upload everything the proxy already refused (RFC 9110
    /// §10.1.1 lets a server answer with the final status instead). hyper then closes the connection after the answer, which the client is
    /// ready for: it has not sent the body.
    pub fn awaiting_continue(inner: B) -> Self {
        DrainOnDrop {
            inner: Some(inner),
            awaits_continue: true,
        }
    }
}

impl<B> Body for DrainOnDrop<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        // Read once: `100 Continue` has gone out, the client is sending; drain it if dropped.
        self.awaits_continue = false;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // Finished (or broken): nothing left to drain.
            self.inner = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B> Drop for DrainOnDrop<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() || self.awaits_continue {
            return;
        }
        // Outside a runtime (a unit test dropping a request) there is no one to drain for.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let drain = async {
                let mut read: u64 = 0;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        read += data.len() as u64;
                        if read > DRAIN_MAX_BYTES {
                            break;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_MAX_TIME, drain).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn an_unfinished_body_is_read_to_its_end_after_drop() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let body = StreamBody::new(tokio_stream_from(rx));
        drop(DrainOnDrop::new(body));
        // The drain task keeps taking chunks: a sender with capacity 1 can send several.
        for _ in 0..5 {
            tokio::time::timeout(
                Duration::from_secs(5),
                tx.send(Ok(Frame::data(Bytes::from_static(b"x")))),
            )
            .await
            .unwrap()
            .unwrap();
        }
    }

    #[tokio::test]
    async fn a_finished_body_is_a_plain_body() {
        let body = DrainOnDrop::new(http_body_util::Full::new(Bytes::from_static(b"abc")));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"abc");
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
