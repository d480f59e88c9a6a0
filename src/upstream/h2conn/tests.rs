//! The direct HTTP/2 client against an in-process `h2` server over a duplex pipe.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::{H2Conn, SendError};
use crate::body;

/// Drops its flag when dropped: shows when the response body let go of its guard.
struct Flag(Arc<AtomicBool>);
impl Drop for Flag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// An HTTP/2 server on one end of a pipe (16 KiB stream windows, so a bigger body must wait
/// for window updates), answering each request with `answer`; the client on the other end.
async fn pair<F, Fut>(answer: F) -> H2Conn
where
    F: Fn(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (client, server) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let mut conn = h2::server::Builder::new()
            .initial_window_size(16 * 1024)
            .handshake::<_, Bytes>(server)
            .await
            .unwrap();
        while let Some(Ok((req, respond))) = conn.accept().await {
            tokio::spawn(answer(req, respond));
        }
    });
    H2Conn::handshake(
        client,
        256 * 1024,
        1 << 20,
        "test".into(),
        super::KEEP_ALIVE,
    )
    .await
    .unwrap()
}

fn get(path: &str) -> Request<body::Body> {
    Request::get(format!("https://upstream.test{path}"))
        .body(body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_get_goes_without_a_body_and_its_answer_is_read_whole() {
    let conn = pair(|req, mut respond| async move {
        // END_STREAM on the request's HEADERS: nothing to read, no Content-Length added.
        assert!(req.body().is_end_stream());
        assert!(req.headers().get("content-length").is_none());
        let resp = Response::builder()
            .status(200)
            .header("content-length", "11")
            .body(())
            .unwrap();
        let mut tx = respond.send_response(resp, false).unwrap();
        tx.send_data(Bytes::from_static(b"hello "), false).unwrap();
        tx.send_data(Bytes::from_static(b"world"), true).unwrap();
    })
    .await;
    let released = Arc::new(AtomicBool::new(false));
    let resp = match conn.send(get("/x"), ()).await {
        Ok(r) => r,
        Err(_) => panic!("no response"),
    };
    assert_eq!(resp.status(), StatusCode::OK);
    // As the pool holds a connection's stream slot.
    let body = body::hold(resp.into_body(), Flag(released.clone()));
    assert_eq!(http_body::Body::size_hint(&body).exact(), Some(11));
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"hello world");
    assert!(
        released.load(Ordering::SeqCst),
        "the slot is given back when the body ends"
    );
}

#[tokio::test]
async fn a_body_bigger_than_the_window_arrives_whole_with_its_length() {
    let conn = pair(|req, mut respond| async move {
        let len = req.headers()["content-length"].to_str().unwrap().to_owned();
        let mut recv = req.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.unwrap();
            let _ = recv.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        let ok = got.len().to_string() == len && got.iter().all(|&b| b == b'a');
        let resp = Response::builder()
            .status(if ok { 201 } else { 400 })
            .body(())
            .unwrap();
        respond.send_response(resp, true).unwrap();
    })
    .await;
    let req = Request::post("https://upstream.test/api/v1/namespaces/a/configmaps")
        .body(body::full(vec![b'a'; 200_000]))
        .unwrap();
    let resp = match conn.send(req, ()).await {
        Ok(r) => r,
        Err(_) => panic!("no response"),
    };
    assert_eq!(resp.status(), StatusCode::CREATED);
}

/// An answer of one data frame (announcing `content_length`, if given; the last frame, with
/// END_STREAM, if `last`), then a reset with `reason` once the client has read it.
async fn reset_after_first_frame(
    reason: h2::Reason,
    content_length: Option<u64>,
    last: bool,
) -> Vec<Result<Bytes, ()>> {
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let go = Arc::new(std::sync::Mutex::new(Some(go_rx)));
    let conn = pair(move |_req, mut respond| {
        let go = go.lock().unwrap().take();
        async move {
            let mut resp = Response::builder().status(200);
            if let Some(len) = content_length {
                resp = resp.header("content-length", len);
            }
            let mut tx = respond
                .send_response(resp.body(()).unwrap(), false)
                .unwrap();
            tx.send_data(Bytes::from_static(b"partial"), last).unwrap();
            if let Some(go) = go {
                let _ = go.await;
            }
            tx.send_reset(reason);
        }
    })
    .await;
    let resp = match conn.send(get("/y"), ()).await {
        Ok(r) => r,
        Err(_) => panic!("no response"),
    };
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    let mut go_tx = Some(go_tx);
    while let Some(frame) = body.frame().await {
        seen.push(
            frame
                .map(|f| f.into_data().unwrap_or_default())
                .map_err(|_| ()),
        );
        if let Some(go) = go_tx.take() {
            let _ = go.send(());
        }
    }
    seen
}

#[tokio::test]
async fn a_reset_with_no_error_after_the_answer_ends_the_body_cleanly() {
    let seen = reset_after_first_frame(h2::Reason::NO_ERROR, None, true).await;
    assert_eq!(seen, vec![Ok(Bytes::from_static(b"partial"))]);
}

/// ...but one before the answer's end (no END_STREAM yet) cut it short: the body fails, with
/// or without a `Content-Length`, rather than look complete.
#[tokio::test]
async fn a_reset_with_no_error_before_the_end_fails_the_body() {
    for content_length in [None, Some(100)] {
        let seen = reset_after_first_frame(h2::Reason::NO_ERROR, content_length, false).await;
        assert_eq!(
            seen,
            vec![Ok(Bytes::from_static(b"partial")), Err(())],
            "{content_length:?}"
        );
    }
}

#[tokio::test]
async fn a_reset_with_an_error_fails_the_body() {
    let seen = reset_after_first_frame(h2::Reason::INTERNAL_ERROR, None, false).await;
    assert_eq!(seen, vec![Ok(Bytes::from_static(b"partial")), Err(())]);
}

#[tokio::test]
async fn a_closed_connection_gives_the_request_back_unsent() {
    let (client, server) = tokio::io::duplex(1 << 16);
    // The server takes the connection and then goes away (its end of the pipe is dropped).
    let server = tokio::spawn(async move {
        let _conn: h2::server::Connection<_, Bytes> = h2::server::handshake(server).await.unwrap();
    });
    let conn = H2Conn::handshake(client, 65_535, 65_535, "test".into(), super::KEEP_ALIVE)
        .await
        .unwrap();
    server.await.unwrap();
    for _ in 0..200 {
        if conn.is_closed() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(conn.is_closed(), "the connection's task noticed the end");
    match conn.send(get("/again"), ()).await {
        Err(SendError::Unsent(req)) => assert_eq!(req.uri().path(), "/again"),
        Err(SendError::Broken(e)) => panic!("sent on a closed connection: {e}"),
        Ok(_) => panic!("answered on a closed connection"),
    }
}

#[tokio::test]
async fn after_a_goaway_the_request_comes_back_unsent_for_another_connection() {
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let mut conn: h2::server::Connection<_, Bytes> =
            h2::server::handshake(server).await.unwrap();
        // The upstream retires the connection (GOAWAY) but keeps serving it until it is idle.
        conn.graceful_shutdown();
        while let Some(Ok((_req, mut respond))) = conn.accept().await {
            let resp = Response::builder().status(500).body(()).unwrap();
            let _ = respond.send_response(resp, true);
        }
    });
    let conn = H2Conn::handshake(client, 65_535, 65_535, "test".into(), super::KEEP_ALIVE)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    match conn.send(get("/after-goaway"), ()).await {
        Err(SendError::Unsent(req)) => assert_eq!(req.uri().path(), "/after-goaway"),
        Err(SendError::Broken(e)) => panic!("failed instead of coming back: {e}"),
        Ok(r) => panic!("sent on a retiring connection: {}", r.status()),
    }
    assert!(
        conn.is_closed(),
        "the pool no longer offers this connection"
    );
}

/// A connection whose upstream answers PINGs (`serve`) or has stopped reading (not `serve`),
/// with pings every 50 ms that must be answered within 100 ms.
async fn pinged(serve: bool) -> H2Conn {
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let mut conn: h2::server::Connection<_, Bytes> =
            h2::server::handshake(server).await.unwrap();
        if serve {
            // h2 answers PINGs while the connection is polled.
            while conn.accept().await.is_some() {}
        } else {
            // Alive (the pipe stays open) but silent: nothing reads the PINGs.
            std::future::pending::<()>().await;
            drop(conn);
        }
    });
    let every = super::KeepAlive {
        interval: std::time::Duration::from_millis(50),
        timeout: std::time::Duration::from_millis(100),
    };
    H2Conn::handshake(client, 65_535, 65_535, "test".into(), every)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unanswered_keep_alive_ping_closes_the_connection() {
    let conn = pinged(false).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(
        conn.is_closed(),
        "no PING answer: the connection is given up"
    );
}

#[tokio::test]
async fn answered_keep_alive_pings_keep_the_connection() {
    let conn = pinged(true).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(!conn.is_closed(), "PINGs answered: the connection stays");
}

/// RFC 9113 §8.1: a server may answer a request whose body it does not want in full, then
/// reset the stream with NO_ERROR ("stop sending"). The answer is complete: its data, queued
/// unread when the reset arrives, is all read and the body ends cleanly — whether the last
/// frame was data or the head itself.
#[tokio::test]
async fn a_no_error_reset_after_a_complete_answer_to_an_unfinished_upload_ends_cleanly() {
    for empty in [false, true] {
        let conn = pair(move |_req, mut respond| async move {
            // The request body is never read; the answer ends, then the stream is reset.
            let resp = Response::builder().status(200).body(()).unwrap();
            if empty {
                let _ = respond.send_response(resp, true).unwrap();
            } else {
                let mut tx = respond.send_response(resp, false).unwrap();
                tx.send_data(Bytes::from_static(b"whole"), true).unwrap();
            }
            // Once the answer is on the wire: h2 drops a stream's frames still queued when
            // that stream is reset.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            respond.send_reset(h2::Reason::NO_ERROR);
        })
        .await;
        // An upload that never ends (its sender kept alive).
        let (_upload, upload) = body::channel(1);
        let req = Request::post("https://upstream.test/upload")
            .body(upload)
            .unwrap();
        let resp = match conn.send(req, ()).await {
            Ok(r) => r,
            Err(SendError::Broken(e)) => panic!("no response (empty={empty}): {e:?}"),
            Err(_) => panic!("no response: unsent"),
        };
        // Let the reset arrive while the data is still queued unread.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            resp.into_body().collect(),
        )
        .await
        .expect("the body neither ended nor failed")
        .map(|b| b.to_bytes());
        let want: &[u8] = if empty { b"" } else { b"whole" };
        assert_eq!(got.as_deref().ok(), Some(want), "empty={empty}: {got:?}");
    }
}
