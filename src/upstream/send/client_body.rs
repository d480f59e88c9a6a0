//! A request body watched for the client's own failure while it is forwarded.
//!
//! A body that is not read whole before forwarding (any request the sanitize stage does not
//! inspect: a `GET` with a body, a non-resource or `proxy` upload) streams from the client to
//! the API server. When it fails — a malformed chunk, a connection lost mid-upload — the
//! upstream stream is reset (HTTP/2) or its connection dropped (HTTP/1.1), and the send fails
//! before any answer. That failure is the client's doing, not the API server's: counted, five
//! such requests from any caller would open every breaker (503 for everyone, `/readyz`
//! failing). [`watch`] records it so the sender can tell ([`Failed::happened`]).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use http_body_util::BodyExt;

use crate::body::Body;

/// Whether the watched body failed. `Default`: no body watched (nothing allocated — most
/// requests, every read, have no body that can fail).
#[derive(Clone, Default)]
pub struct Failed(Option<Arc<AtomicBool>>);

impl Failed {
    pub fn happened(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
    }
}

/// `body`, reporting its errors to the returned [`Failed`] as they pass (size and end of
/// stream unchanged: `map_err` keeps them).
pub fn watch(body: Body) -> (Body, Failed) {
    let flag = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&flag);
    let watched = body
        .map_err(move |e| {
            // Set before the error reaches the sender, which resets the stream on it: the
            // failed send is only seen after.
            seen.store(true, Ordering::Release);
            e
        })
        .boxed_unsync();
    (watched, Failed(Some(flag)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{self, BoxError};
    use bytes::Bytes;
    use http_body::{Body as _, Frame};

    #[tokio::test]
    async fn an_error_is_reported_and_passed_on() {
        let frames = futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err::<Frame<Bytes>, BoxError>("broken chunk".into()),
        ]);
        let (mut b, failed) = watch(http_body_util::StreamBody::new(frames).boxed_unsync());
        assert!(b.frame().await.is_some_and(|f| f.is_ok()));
        assert!(!failed.happened());
        assert!(b.frame().await.is_some_and(|f| f.is_err()));
        assert!(failed.happened());
    }

    #[tokio::test]
    async fn a_whole_body_keeps_its_size_and_end() {
        let (b, failed) = watch(body::full("abc"));
        assert_eq!(b.size_hint().exact(), Some(3));
        assert!(!b.is_end_stream());
        let data = b.collect().await.map(|c| c.to_bytes());
        assert_eq!(data.ok().as_deref(), Some(&b"abc"[..]));
        assert!(!failed.happened());
    }
}
