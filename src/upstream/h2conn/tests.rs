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

/// A `proxy` subresource passes a pod's response headers through, so their size is a tenant's
/// choice: a large block (up to the 1 MiB limit) is that response's business, never the shared
/// connection's (with a 16 KiB list limit, h2 closed the whole connection for a block over 64
/// KiB, and after 1024 blocks over 16 KiB, each of which it reset).
#[tokio::test]
async fn large_response_headers_arrive_and_the_connection_stays() {
    let conn = pair(|req, mut respond| async move {
        let size: usize = req.uri().path().trim_start_matches('/').parse().unwrap();
        let resp = Response::builder()
            .status(200)
            .header("x-big", "a".repeat(size))
            .body(())
            .unwrap();
        let mut tx = respond.send_response(resp, false).unwrap();
        tx.send_data(Bytes::from_static(b"ok"), true).unwrap();
    })
    .await;
    let sizes = [70_000, 900_000].into_iter().chain([20_000; 1100]);
    for size in sizes {
        let resp = match conn.send(get(&format!("/{size}")), ()).await {
            Ok(r) => r,
            Err(_) => panic!("no response for a {size}-byte header"),
        };
        assert_eq!(resp.headers()["x-big"].len(), size);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ok");
    }
    assert!(!conn.is_closed());
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
        Err(SendError::Broken(e) | SendError::Refused(e)) => {
            panic!("sent on a closed connection: {e}")
        }
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
        Err(SendError::Broken(e) | SendError::Refused(e)) => {
            panic!("failed instead of coming back: {e}")
        }
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

/// One HTTP/2 frame: its 9-byte header, then `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A GOAWAY frame naming `last` as the last stream processed.
fn goaway(last: u32, code: u32) -> Vec<u8> {
    let payload = [last.to_be_bytes(), code.to_be_bytes()].concat();
    frame(7, 0, 0, &payload)
}

/// A RST_STREAM frame for `stream`.
fn reset(stream: u32, code: u32) -> Vec<u8> {
    frame(3, 0, stream, &code.to_be_bytes())
}

const NO_ERROR: u32 = 0;
const INTERNAL_ERROR: u32 = 2;
const REFUSED_STREAM: u32 = 7;

/// A server speaking raw HTTP/2 frames — `h2`'s own server counts every stream it has read
/// as processed, so it cannot refuse one unprocessed. It answers the first request's HEADERS
/// (stream id given) with `answer`'s frames, then reads on until the client goes (or, with
/// `hang_up`, closes the connection), and reports how many requests (HEADERS frames) it saw.
async fn raw_server(
    answer: fn(u32) -> Vec<u8>,
    hang_up: bool,
) -> (H2Conn, tokio::task::JoinHandle<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let seen = tokio::spawn(async move {
        let mut preface = [0u8; 24];
        server.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        // Its SETTINGS (none changed), then each frame of the client's in turn.
        server.write_all(&frame(4, 0, 0, &[])).await.unwrap();
        let mut requests = 0;
        loop {
            let mut head = [0u8; 9];
            if server.read_exact(&mut head).await.is_err() {
                return requests;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if server.read_exact(&mut payload).await.is_err() {
                return requests;
            }
            match kind {
                // The client's SETTINGS (not an ACK): acknowledged.
                4 if flags & 1 == 0 => server.write_all(&frame(4, 1, 0, &[])).await.unwrap(),
                1 => {
                    requests += 1;
                    if requests == 1 {
                        server.write_all(&answer(stream)).await.unwrap();
                        if hang_up {
                            return requests;
                        }
                    }
                }
                _ => {}
            }
        }
    });
    let conn = H2Conn::handshake(client, 65_535, 65_535, "test".into(), super::KEEP_ALIVE)
        .await
        .unwrap();
    (conn, seen)
}

/// A write with a body and a header of its own, all in hand (as the sanitize stage leaves it).
fn write() -> Request<body::Body> {
    Request::post("https://upstream.test/api/v1/namespaces/a/configmaps")
        .header("x-kept", "yes")
        .body(body::full(r#"{"kind":"ConfigMap"}"#))
        .unwrap()
}

/// Sends `req` and expects it back unsent, whole: method, path, header and body.
async fn comes_back_whole(conn: &H2Conn, req: Request<body::Body>, why: &str) {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let want = match req.method().as_str() {
        "GET" => &b""[..],
        _ => &br#"{"kind":"ConfigMap"}"#[..],
    };
    let back = match tokio::time::timeout(std::time::Duration::from_secs(5), conn.send(req, ()))
        .await
        .expect("no outcome")
    {
        Err(SendError::Unsent(back)) => back,
        Err(SendError::Broken(e) | SendError::Refused(e)) => {
            panic!("{why}: failed instead of coming back: {e}")
        }
        Ok(r) => panic!("{why}: answered {}", r.status()),
    };
    assert_eq!(back.method(), method, "{why}");
    assert_eq!(back.uri(), &uri, "{why}");
    if method == "POST" {
        assert_eq!(back.headers()["x-kept"], "yes", "{why}");
        assert_eq!(back.headers()["content-length"], "20", "{why}");
    }
    let got = back.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&got[..], want, "{why}: the body is whole");
}

#[tokio::test]
async fn a_request_crossed_by_a_goaway_that_excludes_it_comes_back_whole() {
    for req in [get("/api/v1/pods"), write()] {
        // Go's server, shutting down or closing an idle connection: GOAWAY naming the streams
        // it had read before, not this one, which it ignores.
        let (conn, seen) =
            raw_server(|stream| goaway(stream.saturating_sub(2), NO_ERROR), false).await;
        comes_back_whole(&conn, req, "GOAWAY below the stream").await;
        assert!(
            conn.is_closed(),
            "a connection its server retired is not offered again"
        );
        drop(conn);
        assert_eq!(seen.await.unwrap(), 1);
    }
}

#[tokio::test]
async fn a_refused_stream_comes_back_whole_and_its_connection_stays() {
    for req in [get("/api/v1/pods"), write()] {
        let (conn, _seen) = raw_server(|stream| reset(stream, REFUSED_STREAM), false).await;
        comes_back_whole(&conn, req, "REFUSED_STREAM").await;
        assert!(
            !conn.is_closed(),
            "REFUSED_STREAM does not end the connection"
        );
    }
}

#[tokio::test]
async fn a_stream_that_may_have_been_processed_is_not_sent_again() {
    // A GOAWAY covering the stream, then the connection closed under it; a reset with another
    // reason: the API server may have acted on the request.
    type Answer = fn(u32) -> Vec<u8>;
    let processed: [(Answer, bool, &str); 2] = [
        (
            |stream| goaway(stream, NO_ERROR),
            true,
            "GOAWAY covering the stream, then the end",
        ),
        (
            |stream| reset(stream, INTERNAL_ERROR),
            false,
            "INTERNAL_ERROR",
        ),
    ];
    for (answer, hang_up, why) in processed {
        let (conn, _seen) = raw_server(answer, hang_up).await;
        match tokio::time::timeout(std::time::Duration::from_secs(5), conn.send(write(), ()))
            .await
            .expect("no outcome")
        {
            Err(SendError::Broken(_)) => {}
            Err(SendError::Unsent(_)) => panic!("{why}: sent again"),
            Err(SendError::Refused(_)) => panic!("{why}: reported as unprocessed"),
            Ok(r) => panic!("{why}: answered {}", r.status()),
        }
    }
}

#[tokio::test]
async fn a_refused_upload_still_arriving_is_not_sent_again() {
    // The body is still coming from the client: what was sent of it is gone.
    let (conn, _seen) = raw_server(|stream| reset(stream, REFUSED_STREAM), false).await;
    let (upload, body) = body::channel(1);
    upload.send(Bytes::from_static(b"part")).await.unwrap();
    let req = Request::post("https://upstream.test/upload")
        .body(body)
        .unwrap();
    match tokio::time::timeout(std::time::Duration::from_secs(5), conn.send(req, ()))
        .await
        .expect("no outcome")
    {
        // Not sent again, and said to be unprocessed: the client may send it again.
        Err(SendError::Refused(e)) => assert_eq!(e.reason(), Some(h2::Reason::REFUSED_STREAM)),
        Err(SendError::Broken(e)) => panic!("reported as broken: {e}"),
        Err(SendError::Unsent(_)) => panic!("a body not in hand came back as if whole"),
        Ok(r) => panic!("answered {}", r.status()),
    }
    drop(upload);
}
