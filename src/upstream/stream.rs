//! The body of a long-running response (watch, `logs -f`) on its way to the client.
//!
//! A watch whose upstream connection breaks (its API server died, was cut off, or reset the
//! stream) ends *cleanly* instead of with an error: a watch is a sequence of whole events, so
//! client-go's reflector treats a clean end as "watch closed" and watches again from its last
//! resourceVersion (or re-lists), on whichever endpoint the proxy then picks; an error
//! mid-stream would instead surface as a broken response. With `upstream.stream_idle_timeout`
//! set, a watch that carried no frame for that long ends the same way — timed from the first
//! poll that found nothing after a frame, and not while a pump polls it only to drain
//! (`window::draining`): a reader that did not ask must not find the clock run out against an
//! API server that could not send.
//!
//! A followed log is wrapped only for that idle end, and it ends with an error, as its
//! upstream break does: a log has no events to resume from, and a clean end is what its
//! reader takes for the log's real end (the container finished), so a log cut off by a dying
//! API server or by the idle timeout would look complete. Nothing else is wrapped: a list cut short, a log read whole, a file through
//! `proxy` or a profile from `/debug/pprof/` stay errors, never look complete.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError};

/// Wrap a long-running response body (see the module doc): after `idle` without a frame, and
/// when the upstream breaks under it, it ends cleanly if `break_ends_cleanly` (a watch), else
/// with an error (a followed log).
pub fn ending_cleanly(
    inner: Body,
    endpoint: String,
    idle: Option<Duration>,
    break_ends_cleanly: bool,
) -> Body {
    CleanEnd {
        inner,
        endpoint,
        idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
        armed: false,
        break_ends_cleanly,
        done: false,
    }
    .boxed_unsync()
}

struct CleanEnd {
    inner: Body,
    endpoint: String,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    /// The idle clock runs: set at the first poll that found nothing after a frame. Timed from
    /// then, not from the frame: a reader that did not ask for a while (a paused client) must
    /// not find the clock run out against an API server that could not send. A pump that polls
    /// only to drain, its buffer full (`window::draining`), stops the clock.
    armed: bool,
    break_ends_cleanly: bool,
    done: bool,
}

impl http_body::Body for CleanEnd {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.armed = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) if self.break_ends_cleanly => {
                tracing::info!(endpoint = %self.endpoint, %err, "upstream stream broke; ending it cleanly");
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                tracing::info!(endpoint = %self.endpoint, %err, "upstream stream broke; the client sees the break");
                self.done = true;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let this = &mut *self;
                let idle = match &mut this.idle {
                    Some(_) if super::window::draining() => {
                        this.armed = false;
                        false
                    }
                    Some((d, sleep)) => {
                        if !this.armed {
                            sleep.as_mut().reset(Instant::now() + *d);
                            this.armed = true;
                        }
                        sleep.as_mut().poll(cx).is_ready()
                    }
                    None => false,
                };
                if idle {
                    tracing::info!(endpoint = %self.endpoint, "upstream stream idle; ending it");
                    self.done = true;
                    if !self.break_ends_cleanly {
                        return Poll::Ready(Some(Err("ended by stream_idle_timeout".into())));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends one frame, then breaks.
    async fn one_frame_then_a_break() -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let inner = http_body_util::StreamBody::new(stream).boxed_unsync();
        tx.send(Ok(Frame::data(Bytes::from_static(
            b"{\"type\":\"ADDED\"}\n",
        ))))
        .await
        .unwrap();
        tx.send(Err("connection reset".into())).await.unwrap();
        inner
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_cleanly_after_what_came_before() {
        let inner = one_frame_then_a_break().await;
        let body = ending_cleanly(inner, "https://a".into(), None, true);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"{\"type\":\"ADDED\"}\n");
    }

    /// A followed log's break stays the client's error (after what came before).
    #[tokio::test]
    async fn a_followed_logs_break_stays_an_error() {
        let inner = one_frame_then_a_break().await;
        let mut body = ending_cleanly(inner, "https://a".into(), None, false);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"{\"type\":\"ADDED\"}\n");
        assert!(body.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn an_idle_stream_ends_after_the_idle_timeout() {
        let (_tx, inner) = crate::body::channel(1);
        let idle = Some(Duration::from_millis(50));
        let body = ending_cleanly(inner, "https://a".into(), idle, true);
        let got = body.collect().await.unwrap().to_bytes();
        assert!(got.is_empty());
        // A followed log ends too, with an error: a clean end would look like the container
        // had finished.
        let (_tx, inner) = crate::body::channel(1);
        let body = ending_cleanly(inner, "https://a".into(), idle, false);
        let ended = tokio::time::timeout(Duration::from_secs(10), body.collect()).await;
        assert!(ended.expect("the idle timer never fired").is_err());
    }

    /// The idle clock starts when the reader asks and finds nothing, not at the last frame: a
    /// reader that did not ask for longer than the timeout (a paused client, a pump that stopped
    /// polling an API server with no window left) is not ended at its next ask.
    #[tokio::test]
    async fn the_idle_clock_starts_when_the_reader_asks() {
        use std::task::Waker;
        let (tx, inner) = crate::body::channel(1);
        let idle = Duration::from_millis(200);
        let mut body = ending_cleanly(inner, "https://a".into(), Some(idle), true);
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"first");
        tokio::time::sleep(idle * 3).await;
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            http_body::Body::poll_frame(Pin::new(&mut body), &mut cx).is_pending(),
            "ended at once, timed from the last frame"
        );
        tokio::time::sleep(idle / 2).await;
        tx.send(Bytes::from_static(b"second")).await.unwrap();
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&second[..], b"second");
        // Nothing for the whole timeout while asked: the end.
        let ended = tokio::time::timeout(idle * 10, body.frame()).await;
        assert!(ended.expect("the idle timer never fired").is_none());
    }

    /// A pump that polls only to drain h2 while its buffer is full (the API server's window may
    /// be spent) stops the clock; once it asks for real, the clock runs again.
    #[tokio::test]
    async fn a_pump_that_only_drains_stops_the_idle_clock() {
        use crate::upstream::window::Withheld;
        use std::task::Waker;
        let (_tx, inner) = crate::body::channel(1);
        let idle = Duration::from_millis(100);
        let mut body = ending_cleanly(inner, "https://a".into(), Some(idle), true);
        let mut cx = Context::from_waker(Waker::noop());
        let mut draining = Withheld::default();
        draining.set_draining(true);
        for _ in 0..5 {
            let polled =
                draining.scope(|| http_body::Body::poll_frame(Pin::new(&mut body), &mut cx));
            assert!(polled.is_pending(), "ended while only drained");
            tokio::time::sleep(idle).await;
        }
        let ended = tokio::time::timeout(idle * 10, body.frame()).await;
        assert!(ended.expect("the idle timer never fired").is_none());
    }
}
