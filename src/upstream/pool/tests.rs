//! The pool against real TLS + HTTP/2 servers on loopback: a request that never left the
//! proxy comes back whole (an endpoint that retires its connections and refuses new ones), and
//! requests waiting for a connect that fails share its answer instead of each trying again.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use rustls_pki_types::ServerName;
use tokio::{net::TcpListener, sync::watch};

use super::{Pool, PoolError, PoolSettings};
use crate::{body, server::tls, test_pki::Ca};

fn settings() -> PoolSettings {
    settings_with(100)
}

fn settings_with(streams_per_connection: usize) -> PoolSettings {
    PoolSettings {
        streams_per_connection,
        max_connections: 4,
        connect_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(90),
    }
}

fn pool_for(ca: &Ca, addr: SocketAddr) -> Pool {
    pool_with(ca, addr, settings())
}

fn pool_with(ca: &Ca, addr: SocketAddr, settings: PoolSettings) -> Pool {
    let cfg =
        tls::client_config(vec![ca.cert.cert_der.clone()], None, &[b"h2", b"http/1.1"]).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
    Pool::new(Arc::new(cfg), name, addr.to_string(), settings)
}

/// A loopback listener and the TLS acceptor of a server certificate for 127.0.0.1 from `ca`.
async fn tls_listener(ca: &Ca) -> (TcpListener, tokio_rustls::TlsAcceptor, SocketAddr) {
    tls::install_crypto_provider();
    let leaf = ca.server_cert(&["127.0.0.1"]).unwrap();
    let cfg = tls::server_config(
        vec![leaf.cert_der.clone()],
        leaf.key(),
        tls::ClientAuth::None,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, tokio_rustls::TlsAcceptor::from(cfg), addr)
}

/// The TLS and HTTP/2 handshakes of an accepted connection (`None` if either fails).
async fn h2_accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
) -> Option<h2::server::Connection<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, Bytes>> {
    h2_accept_with(acceptor, tcp, None).await
}

/// [`h2_accept`] advertising at most `max_streams` concurrent streams.
async fn h2_accept_with(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    max_streams: Option<u32>,
) -> Option<h2::server::Connection<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, Bytes>> {
    let tls = acceptor.accept(tcp).await.ok()?;
    let mut builder = h2::server::Builder::new();
    if let Some(n) = max_streams {
        builder.max_concurrent_streams(n);
    }
    builder.handshake(tls).await.ok()
}

/// An HTTP/2 server: `/hang` is never answered, `/upload` is answered at once while its
/// request body is left unread, anything else gets an empty 200; counts the requests other
/// than those two. Setting `retire` makes it behave as an API server shutting
/// down: GOAWAY on every connection (which stays open while it has streams) and no new
/// connections (the listener is closed).
async fn server(ca: &Ca) -> (SocketAddr, watch::Sender<bool>, Arc<AtomicUsize>) {
    server_with(ca, None).await
}

/// [`server`] advertising at most `max_streams` concurrent streams per connection.
async fn server_with(
    ca: &Ca,
    max_streams: Option<u32>,
) -> (SocketAddr, watch::Sender<bool>, Arc<AtomicUsize>) {
    let (listener, acceptor, addr) = tls_listener(ca).await;
    let (retire, _) = watch::channel(false);
    let answered = Arc::new(AtomicUsize::new(0));
    let (state, count) = (retire.clone(), answered.clone());
    tokio::spawn(async move {
        let mut rx = state.subscribe();
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => return,
                },
                // Returning drops the listener: new connections are refused.
                _ = rx.wait_for(|retired| *retired) => return,
            };
            let (acceptor, count, mut rx) = (acceptor.clone(), count.clone(), state.subscribe());
            tokio::spawn(async move {
                let Some(mut conn) = h2_accept_with(&acceptor, tcp, max_streams).await else {
                    return;
                };
                let mut hanging = Vec::new();
                let mut uploads = Vec::new();
                let mut retired = false;
                loop {
                    tokio::select! {
                        next = conn.accept() => match next {
                            Some(Ok((req, mut respond))) => {
                                if req.uri().path() == "/hang" {
                                    hanging.push(respond);
                                } else if req.uri().path() == "/upload" {
                                    // Answered at once; the upload is left open, unread.
                                    let _ = respond.send_response(Response::new(()), true);
                                    uploads.push(req);
                                } else {
                                    count.fetch_add(1, Ordering::SeqCst);
                                    let _ = respond.send_response(Response::new(()), true);
                                }
                            }
                            _ => return,
                        },
                        _ = rx.wait_for(|r| *r), if !retired => {
                            conn.graceful_shutdown();
                            retired = true;
                        }
                    }
                }
            });
        }
    });
    (addr, retire, answered)
}

fn request(method: &str, addr: SocketAddr, path: &str, body: &'static str) -> Request<body::Body> {
    Request::builder()
        .method(method)
        .uri(format!("https://{addr}{path}"))
        .body(if body.is_empty() {
            body::empty()
        } else {
            body::full(body)
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_never_left_comes_back_whole_when_the_endpoint_retires() {
    let ca = Ca::new("pool-test-ca").unwrap();
    let (addr, retire, answered) = server(&ca).await;
    let pool = Arc::new(pool_for(&ca, addr));
    let resp = pool
        .request(request("GET", addr, "/version", ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A long-running request keeps the connection open through the GOAWAY, as a watch does.
    let watching = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(request("GET", addr, "/hang", "")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.connections(), 1);
    retire.send_replace(true);
    // h2's graceful shutdown: a first GOAWAY, a PING round trip, the final GOAWAY.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let post = request(
        "POST",
        addr,
        "/api/v1/namespaces/a/configmaps",
        r#"{"kind":"ConfigMap"}"#,
    );
    match pool.request(post).await {
        Err(PoolError::NotSent(why, req, _)) => {
            assert_eq!(req.method(), "POST");
            assert_eq!(req.uri().path(), "/api/v1/namespaces/a/configmaps");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                &body[..],
                br#"{"kind":"ConfigMap"}"#,
                "the body is untouched"
            );
            assert!(!why.is_empty());
        }
        Err(other) => panic!("the request was lost: {other}"),
        Ok(resp) => panic!("sent to a retired endpoint: {}", resp.status()),
    }
    assert_eq!(
        answered.load(Ordering::SeqCst),
        1,
        "only the first GET reached the server"
    );
    watching.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_a_failed_connect_share_its_answer() {
    tls::install_crypto_provider();
    let ca = Ca::new("pool-test-ca").unwrap();
    // Accepts TCP and never answers the TLS handshake: each connect costs the handshake timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });
    let pool = Arc::new(pool_for(&ca, addr));
    let burst: Vec<_> = (0..5)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.request(request("GET", addr, &format!("/r{i}"), ""))
                    .await
            })
        })
        .collect();
    let mut first_hand = 0;
    for r in burst {
        match r.await.unwrap() {
            Err(PoolError::NotSent(why, _, made_it)) => {
                assert!(why.contains("TLS handshake"), "{why}");
                first_hand += usize::from(made_it);
            }
            Err(other) => panic!("unexpected error: {other}"),
            Ok(resp) => panic!("answered: {}", resp.status()),
        }
    }
    // The circuit breaker counts the connect once: only the request that made it saw it.
    assert_eq!(first_hand, 1);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connect for the burst, its failure shared"
    );
    // A request that comes later tries again.
    let later = pool.request(request("GET", addr, "/later", "")).await;
    assert!(matches!(later, Err(PoolError::NotSent(..))));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A request whose body is still being sent after its answer keeps its stream slot: the
/// stream is still open on the connection, so a connection with one slot is full until the
/// upload ends, and the next request opens another connection instead of queueing inside h2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_still_sending_after_the_answer_keeps_its_slot() {
    let ca = Ca::new("pool-test-ca").unwrap();
    let (addr, _retire, _) = server(&ca).await;
    let pool = pool_with(&ca, addr, settings_with(1));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, body::BoxError>(http_body::Frame::data(chunk)), rx))
    });
    let upload = Request::post(format!("https://{addr}/upload"))
        .body(body::boxed(http_body_util::StreamBody::new(chunks)))
        .unwrap();
    tx.send(Bytes::from_static(b"first part")).await.unwrap();
    let resp = pool.request(upload).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The answer is read to its end and dropped; the upload goes on.
    resp.into_body().collect().await.unwrap();
    let resp = pool
        .request(request("GET", addr, "/version", ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        pool.connections(),
        2,
        "the uploading stream's connection was full"
    );
    // The upload ends: its slot comes free. With the second connection's slot still held by
    // the answer above, the next request goes on the first connection.
    drop(tx);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = pool
        .request(request("GET", addr, "/version", ""))
        .await
        .unwrap();
    assert_eq!(third.status(), 200);
    assert_eq!(
        pool.connections(),
        2,
        "the first connection's slot was released"
    );
    drop((resp, third));
}

/// An HTTP/2 server whose connections are retired (GOAWAY; their open streams go on) each
/// time `epoch` moves past the one they were accepted in, while new connections are still
/// accepted — an API server closing old connections (`--goaway-chance`, its idle timeout).
/// `/hang` is never answered; anything else gets an empty 200.
async fn retiring_server(ca: &Ca) -> (SocketAddr, watch::Sender<u32>, Arc<AtomicUsize>) {
    let (listener, acceptor, addr) = tls_listener(ca).await;
    let (epoch, _) = watch::channel(0u32);
    let accepted = Arc::new(AtomicUsize::new(0));
    let (state, count) = (epoch.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, mut rx) = (acceptor.clone(), state.subscribe());
            let born = *rx.borrow();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Some(mut conn) = h2_accept(&acceptor, tcp).await else {
                    return;
                };
                let mut hanging = Vec::new();
                let mut retired = false;
                loop {
                    tokio::select! {
                        next = conn.accept() => match next {
                            Some(Ok((req, mut respond))) => {
                                if req.uri().path() == "/hang" {
                                    hanging.push(respond);
                                } else {
                                    let _ = respond.send_response(Response::new(()), true);
                                }
                            }
                            _ => return,
                        },
                        _ = rx.wait_for(|e| *e > born), if !retired => {
                            conn.graceful_shutdown();
                            retired = true;
                        }
                    }
                }
            });
        }
    });
    (addr, epoch, accepted)
}

/// A connection the API server retired while every stream of it is taken (watches) is never
/// tried, so its GOAWAY went unseen: it kept its place under the connection cap, and with the
/// cap reached each new request was refused busy although the API server would accept a new
/// connection. Now the retired connection gives its place up; its watches go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_connection_the_api_server_retired_gives_its_place_up() {
    let ca = Ca::new("pool-test-ca").unwrap();
    let (addr, epoch, accepted) = retiring_server(&ca).await;
    let settings = PoolSettings {
        max_connections: 1,
        ..settings_with(2)
    };
    let pool = Arc::new(pool_with(&ca, addr, settings));
    let watches: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(request("GET", addr, "/hang", "")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        (pool.connections(), accepted.load(Ordering::SeqCst)),
        (1, 1)
    );
    // The cap is reached: a third request is busy, as it should be while the connection lives.
    assert!(matches!(
        pool.request(request("GET", addr, "/version", "")).await,
        Err(PoolError::Busy(_))
    ));
    epoch.send_replace(1);
    // h2's graceful shutdown: a first GOAWAY, a PING round trip, the final GOAWAY.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        pool.request(request("GET", addr, "/version", "")),
    )
    .await
    .expect("the request neither answered nor failed");
    assert_eq!(resp.map(|r| r.status()).ok(), Some(http::StatusCode::OK));
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection");
    assert!(
        watches.iter().all(|w| !w.is_finished()),
        "the watches on the retired connection go on"
    );
    for w in watches {
        w.abort();
    }
}

/// An API server that allows fewer streams per connection than `streams_per_connection`: the
/// pool opens another connection rather than letting h2 queue a request behind watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_servers_stream_limit_opens_another_connection() {
    let ca = Ca::new("pool-test-ca").unwrap();
    let (addr, _retire, answered) = server_with(&ca, Some(2)).await;
    let pool = Arc::new(pool_for(&ca, addr));
    // The first answer brings the server's settings.
    let resp = pool
        .request(request("GET", addr, "/version", ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let watches: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(request("GET", addr, "/hang", "")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let get = pool.request(request("GET", addr, "/version", ""));
    let resp = tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .expect("the request waited behind the watches")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(answered.load(Ordering::SeqCst), 2);
    assert_eq!(pool.connections(), 2);
    for w in watches {
        w.abort();
    }
}

/// An endpoint whose ALPN answered HTTP/1.1 (a load balancer mid-rollout, say) is asked again
/// on a new connection once `h2_again_after` has passed: when it now speaks HTTP/2, requests
/// go back to the HTTP/2 pool instead of staying one per HTTP/1.1 connection for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_answered_http1_is_asked_for_http2_again() {
    use std::sync::atomic::AtomicBool;
    let ca = Ca::new("pool-test-ca").unwrap();
    let (listener, acceptor, addr) = tls_listener(&ca).await;
    let only = |alpn: &[u8]| {
        let mut cfg = (*acceptor.config().clone()).clone();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    };
    let (h1, h2) = (only(b"http/1.1"), only(b"h2"));
    let speaks_h2 = Arc::new(AtomicBool::new(false));
    let switch = speaks_h2.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let h2_now = switch.load(Ordering::SeqCst);
            let (h1, h2) = (h1.clone(), h2.clone());
            tokio::spawn(async move {
                if h2_now {
                    let Some(mut conn) = h2_accept(&h2, tcp).await else {
                        return;
                    };
                    while let Some(Ok((_req, mut respond))) = conn.accept().await {
                        let resp = Response::builder()
                            .header("x-proto", "h2")
                            .body(())
                            .unwrap();
                        let _ = respond.send_response(resp, true);
                    }
                } else {
                    let Ok(tls) = h1.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(|_req| async {
                        let resp = Response::builder()
                            .header("x-proto", "http/1.1")
                            .body(http_body_util::Empty::<Bytes>::new());
                        resp.map_err(|e| e.to_string())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                }
            });
        }
    });
    let mut pool = pool_for(&ca, addr);
    pool.h2_again_after = Duration::from_millis(300);
    let proto = |resp: Response<body::Body>| {
        assert_eq!(resp.status(), 200);
        resp.headers()["x-proto"].to_str().unwrap().to_string()
    };
    let get = || request("GET", addr, "/version", "");
    assert_eq!(proto(pool.request(get()).await.unwrap()), "http/1.1");
    assert_eq!(proto(pool.request(get()).await.unwrap()), "http/1.1");
    // The endpoint now speaks HTTP/2; within the interval the pool keeps to HTTP/1.1.
    speaks_h2.store(true, Ordering::SeqCst);
    assert_eq!(pool.connections(), 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(proto(pool.request(get()).await.unwrap()), "h2");
    assert_eq!(proto(pool.request(get()).await.unwrap()), "h2");
    assert_eq!(pool.connections(), 1, "one HTTP/2 connection, kept");
}
