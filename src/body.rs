//! The one body type every handler in the crate returns, and small constructors for it.
//!
//! Responses are either fully known (`full`, `empty`, `json`) or streamed (`channel`): a streamed
//! body hands each chunk to hyper as soon as it is sent, which is what watches and `logs -f` need.

use std::collections::VecDeque;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

/// Errors a body may yield while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A response (or forwarded request) body: boxed so that forwarded upstream bodies, fixed bodies
/// and channel-fed streams share one type.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body with fixed contents.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of frames already in hand, in order. It reports its end with the last frame and its
/// exact size (when it holds no trailers), so hyper sets HTTP/2 `END_STREAM` on the last DATA
/// frame and HTTP/1.1 can send `Content-Length`. A stream-of-frames body would end only when
/// polled once more: an empty DATA frame after the last one, in a write of its own.
pub fn frames(frames: VecDeque<Frame<Bytes>>) -> Body {
    if frames.is_empty() {
        return empty();
    }
    Frames(frames).boxed_unsync()
}

struct Frames(VecDeque<Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.0.iter().any(Frame::is_trailers) {
            return http_body::SizeHint::default();
        }
        let len = self
            .0
            .iter()
            .filter_map(Frame::data_ref)
            .map(Bytes::len)
            .sum::<usize>();
        http_body::SizeHint::with_exact(len as u64)
    }
}

/// Box any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A streamed body fed through a channel. Each `send` becomes one frame delivered to the peer
/// immediately. Dropping the sender ends the body; the `Sender` reports closed once the peer
/// (the HTTP connection) has gone away, so producers can stop.
pub fn channel(buffer: usize) -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(buffer);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, BoxError>(http_body::Frame::data(chunk)), rx))
    });
    (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
}

/// `body`, holding `guard` until the body ends or is dropped (when the client finished reading
/// or went away): how a resource (a stream permit, a place under the in-flight cap) lives
/// exactly as long as the response.
pub fn hold<B, G>(body: B, guard: G) -> Body
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
    G: Send + Unpin + 'static,
{
    guarded(body, guard, false)
}

/// [`hold`], but `guard` goes as soon as the last frame has been *taken* from `body`, not when
/// the client has it: a client that grants no HTTP/2 flow-control window makes hyper wait with
/// that frame forever, and a place under the in-flight cap must not wait with it.
pub fn hold_until_read<B, G>(body: B, guard: G) -> Body
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
    G: Send + Unpin + 'static,
{
    guarded(body, guard, true)
}

/// Whether `body`, just `polled`, has nothing more to give: its end, an error (a broken body
/// delivers nothing more), or a frame after which it says it has ended — when a place held
/// until the answer is read goes ([`hold_until_read`], the upstream pump's inline read).
pub(crate) fn read_to_end<B: http_body::Body + ?Sized>(
    polled: &std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>>,
    body: &B,
) -> bool {
    match polled {
        std::task::Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
        std::task::Poll::Ready(_) => true,
        std::task::Poll::Pending => false,
    }
}

fn guarded<B, G>(body: B, guard: G, until_read: bool) -> Body
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
    G: Send + Unpin + 'static,
{
    Guarded {
        inner: body,
        guard: Some(guard),
        until_read,
    }
    .boxed_unsync()
}

struct Guarded<B, G> {
    inner: B,
    guard: Option<G>,
    /// Release once the inner body says it has ended after a frame ([`hold_until_read`]).
    until_read: bool,
}

impl<B, G> http_body::Body for Guarded<B, G>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
    G: Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        // Released at the end of the body, not only when hyper drops it.
        let end = matches!(polled, std::task::Poll::Ready(None));
        if end || (self.until_read && read_to_end(&polled, &self.inner)) {
            drop(self.guard.take());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
