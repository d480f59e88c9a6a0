//! The client-facing listener's timeouts and connection caps, with real TLS on loopback:
//! silent and half-handshaken connections are closed, a slowloris is cut, a crowd of idle
//! connections does not stop kubectl, the per-source and per-listener caps refuse the next
//! connection (counted in the metrics, never reaching the upstream), idle keep-alive closes an
//! idle connection but not one holding a watch, oversized request heads are refused, and a closed
//! connection is read a moment longer (no reset for a client's late bytes).
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::{get, Env};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// Start the proxy with `keys` added under `listen:`.
async fn start(keys: &str) -> Env {
    let keys = keys.to_string();
    Env::start_with(move |c| *c = c.replacen("listen:\n", &format!("listen:\n{keys}"), 1)).await
}

/// Whether the peer closed `s` within `within` (EOF or a reset both count).
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut buf = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut buf))
        .await
        .is_ok()
}

/// A value from the admin `/metrics` page (0 when the series does not exist yet).
async fn metric(env: &Env, series: &str) -> f64 {
    let (_, body) = common::admin_get(env.admin_addr, "/metrics").await;
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Requests the upstream has seen, other than the proxy's own readiness probes.
fn upstream_requests(env: &Env) -> usize {
    env.sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.path != "/readyz")
        .count()
}

/// A TCP connection to `to` from the loopback address `from` (all of 127/8 is local on Linux).
async fn tcp_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// A TLS handshake over `tcp`; `None` when the proxy closed it instead.
async fn tls_over(env: &Env, tcp: TcpStream) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = common::client_tls(&env.ca, Some(&env.admin_cert), &[b"h2", b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_preface_timeout() {
    let env = start("  preface_timeout: 500ms\n").await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(
            common::tls_connect(env.proxy_addr, &env.ca, Some(&env.admin_cert), &[b"h2"]).await,
        );
    }
    // The start of an HTTP/2 preface, then nothing: still not a request.
    let mut partial =
        common::tls_connect(env.proxy_addr, &env.ca, Some(&env.admin_cert), &[b"h2"]).await;
    partial.write_all(b"PRI * HTTP/2.0").await.unwrap();
    partial.flush().await.unwrap();
    for s in silent.iter_mut().chain(std::iter::once(&mut partial)) {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "a silent connection is still open 10 s after a 500 ms preface timeout"
        );
    }
    assert!(
        metric(
            &env,
            "portcullis_listener_connections_closed_total{reason=\"preface_timeout\"}"
        )
        .await
            >= 21.0
    );
    assert_eq!(upstream_requests(&env), 0);

    // A client that speaks at once is served.
    let resp = env
        .request(get("/version"), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream_requests(&env), 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_closed_after_the_handshake_timeout() {
    let env = start("  handshake_timeout: 500ms\n").await;
    // TCP only: no ClientHello ever.
    let mut bare = TcpStream::connect(env.proxy_addr).await.unwrap();
    // Half a ClientHello: a TLS record header promising more than is sent.
    let mut half = TcpStream::connect(env.proxy_addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    for s in [&mut bare, &mut half] {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "a stalled handshake is still open 10 s after a 500 ms handshake timeout"
        );
    }
    assert!(
        metric(
            &env,
            "portcullis_listener_connections_closed_total{reason=\"handshake_timeout\"}"
        )
        .await
            >= 2.0
    );
    assert_eq!(
        metric(&env, "portcullis_listener_connections_open").await,
        0.0
    );
    env.stop().await;
}

/// An HTTP/1.1 client that trickles its request head, one byte at a time.
async fn slowloris(env: &Env) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut s = env.admin_http1().await;
    s.write_all(b"GET /api HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    s.flush().await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_and_an_idle_crowd_does_not_stop_kubectl() {
    common::require_kubectl();
    // Idle connections may stay (long preface and idle timeouts); the head must be quick.
    let env =
        start("  preface_timeout: 60s\n  idle_timeout: 60s\n  header_read_timeout: 1s\n").await;
    let mut crowd = Vec::new();
    for i in 0..300 {
        let alpn: &[&[u8]] = if i % 2 == 0 { &[b"h2"] } else { &[b"http/1.1"] };
        crowd.push(common::tls_connect(env.proxy_addr, &env.ca, Some(&env.admin_cert), alpn).await);
    }
    let mut slow = slowloris(&env).await;
    let trickle = async {
        for b in b"X-Slow: 1234567890" {
            if slow.write_all(&[*b]).await.is_err() {
                return true;
            }
            let _ = slow.flush().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        closed_within(&mut slow, Duration::from_secs(10)).await
    };
    // kubectl is served while the crowd and the slowloris hold their connections.
    let (cut, out) = tokio::join!(trickle, env.kubectl(&["get", "ns"]));
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains("default"));
    assert!(
        cut,
        "a slowloris still connected long after a 1 s header timeout"
    );
    assert!(
        metric(
            &env,
            "portcullis_listener_connections_closed_total{reason=\"header_read_timeout\"}"
        )
        .await
            >= 1.0
    );
    // The crowd is still there (nothing closed it early), and the slowloris never reached the
    // upstream.
    assert!(metric(&env, "portcullis_listener_connections_open").await >= 300.0);
    assert!(env
        .sandbox
        .sandbox
        .recorded()
        .iter()
        .all(|r| !r.headers.contains_key("x-slow")));
    drop(crowd);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_per_source_and_per_listener() {
    let env = start(
        "  preface_timeout: 60s\n  handshake_timeout: 60s\n  max_connections: 5\n  max_connections_per_source: 3\n",
    )
    .await;
    let open = "portcullis_listener_connections_open";
    // Source A: one connection still before its handshake, two TLS connections silent after it;
    // all three count.
    let mut held = vec![];
    let bare = tcp_from("127.0.0.2", env.proxy_addr).await;
    wait_for_metric(&env, open, 1.0).await;
    for _ in 0..2 {
        let tcp = tcp_from("127.0.0.2", env.proxy_addr).await;
        held.push(
            tls_over(&env, tcp)
                .await
                .expect("within the per-source cap"),
        );
    }
    assert_eq!(metric(&env, open).await, 3.0);
    // A fourth from A is closed before TLS; the counter says why.
    let fourth = tcp_from("127.0.0.2", env.proxy_addr).await;
    assert!(
        tls_over(&env, fourth).await.is_none(),
        "4th connection from one source was served"
    );
    assert_eq!(
        metric(
            &env,
            "portcullis_listener_connections_refused_total{reason=\"per_source\"}"
        )
        .await,
        1.0
    );

    // Source B still gets its share, up to the listener's cap of 5 ...
    for _ in 0..2 {
        let tcp = tcp_from("127.0.0.3", env.proxy_addr).await;
        held.push(
            tls_over(&env, tcp)
                .await
                .expect("another source, within the listener cap"),
        );
    }
    assert_eq!(metric(&env, open).await, 5.0);
    // ... and then a third source is refused by the listener cap, even with a real request.
    let client_c = tcp_from("127.0.0.4", env.proxy_addr).await;
    assert!(
        tls_over(&env, client_c).await.is_none(),
        "6th connection on the listener was served"
    );
    assert_eq!(
        metric(
            &env,
            "portcullis_listener_connections_refused_total{reason=\"per_listener\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        upstream_requests(&env),
        0,
        "a refused connection reached the upstream"
    );

    // Places come back when connections close: a normal client is served again.
    drop(bare);
    drop(held.pop());
    wait_for_metric(&env, open, 3.0).await;
    let resp = env
        .request(get("/version"), Some(&env.admin_cert), true)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream_requests(&env), 1);
    drop(held);
    env.stop().await;
}

/// Create configmap `name` in `ns` with kubectl (which must succeed); whether the watch
/// answer `body` delivers it within 10 s.
async fn created_and_watched(
    env: &Env,
    ns: &str,
    name: &str,
    body: &mut hyper::body::Incoming,
) -> bool {
    let out = env.kubectl(&["create", "configmap", name, "-n", ns]).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                got.extend_from_slice(&data);
                if String::from_utf8_lossy(&got).contains(name) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    seen == Ok(true)
}

/// An HTTP/2 connection (presenting `cert`) whose client grants no stream window: nothing of
/// an answer's body can be sent to it. The task driving it ends when the proxy closes it.
async fn zero_window(
    env: &Env,
    cert: Option<&portcullis_sandbox::pki::Issued>,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = common::tls_connect(env.proxy_addr, &env.ca, cert, &[b"h2"]).await;
    let (h2c, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    (h2c, tokio::spawn(conn))
}

/// Wait (bounded) until `series` reads `want`.
async fn wait_for_metric(env: &Env, series: &str, want: f64) {
    for _ in 0..200 {
        if metric(env, series).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{series} never reached {want} (now {})",
        metric(env, series).await
    );
}

/// An HTTP/2 connection to the proxy and the task driving it (which ends when the proxy closes
/// the connection).
async fn h2_client(
    env: &Env,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tls = common::tls_connect(env.proxy_addr, &env.ca, Some(&env.admin_cert), &[b"h2"]).await;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_an_idle_connection_but_not_one_with_a_watch() {
    common::require_kubectl();
    let env = start("  idle_timeout: 1s\n  preface_timeout: 1s\n").await;
    // HTTP/2, one request, then idle: GOAWAY and close.
    let (mut idle, idle_task) = h2_client(&env).await;
    let resp = idle.send_request(get("/version")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    // HTTP/1.1, one request, then idle: closed between requests.
    let mut h1 = env.admin_http1().await;
    h1.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = common::read_head(&mut h1).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // A watch over HTTP/2 on another connection.
    let (mut watcher, watch_task) = h2_client(&env).await;
    let watch = watcher
        .send_request(get("/api/v1/namespaces/default/configmaps?watch=1"))
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    let mut body = watch.into_body();

    assert!(
        tokio::time::timeout(Duration::from_secs(10), idle_task)
            .await
            .is_ok(),
        "an idle HTTP/2 connection is still open 10 s after a 1 s idle timeout"
    );
    assert!(
        closed_within(&mut h1, Duration::from_secs(10)).await,
        "an idle HTTP/1.1 connection is still open 10 s after a 1 s idle timeout"
    );
    assert!(
        metric(
            &env,
            "portcullis_listener_connections_closed_total{reason=\"idle_timeout\"}"
        )
        .await
            >= 2.0
    );

    // The watch's connection outlived several idle timeouts, and still delivers events.
    assert!(
        !watch_task.is_finished(),
        "a connection holding a watch was closed as idle"
    );
    assert!(
        created_and_watched(&env, "default", "idle-check", &mut body).await,
        "the watch did not deliver the new configmap"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_refused_before_the_upstream() {
    let env = start("  max_header_bytes: 16384\n").await;
    let big = "x".repeat(20 * 1024);
    let with_header = |value: &str| {
        Request::get("https://localhost/version")
            .header("x-filler", value)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // HTTP/1.1: 431 from hyper, nothing upstream.
    let resp = env
        .request(with_header(&big), Some(&env.admin_cert), false)
        .await;
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // HTTP/2: h2 answers the stream with 431 itself, nothing upstream.
    let (mut h2, _task) = h2_client(&env).await;
    let resp = h2.send_request(with_header(&big)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        upstream_requests(&env),
        0,
        "an oversized head reached the upstream"
    );
    // Within the limit, both protocols are served.
    for h2 in [false, true] {
        let resp = env
            .request(
                with_header(&"x".repeat(8 * 1024)),
                Some(&env.admin_cert),
                h2,
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(upstream_requests(&env), 2);
    env.stop().await;
}

/// kube-apiserver's `UnauthenticatedHTTP2DOSMitigation`: an HTTP/2 request that fails
/// authentication gets its 401 and the connection is then closed (GOAWAY, then closed after
/// `shutdown.grace`), so a client that grants no flow-control window cannot keep the answers to
/// its unauthenticated streams pending for as long as it answers pings. Authenticated HTTP/2
/// connections and HTTP/1.1 keep-alive (as kube-apiserver) stay open; the upstream saw nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_is_closed_after_a_request_fails_authentication() {
    // The demo config's `shutdown.grace` is 5 s.
    let env = Env::start().await;
    env.sandbox.sandbox.clear_recorded();
    let (mut h2c, conn_task) = zero_window(&env, None).await;
    let mut heads = Vec::new();
    for _ in 0..20 {
        let Ok(ready) = h2c.clone().ready().await else {
            break; // the GOAWAY has arrived
        };
        h2c = ready;
        let req = Request::get("https://localhost/api/v1/namespaces/default/configmaps")
            .header("authorization", "Bearer not-a-valid-token")
            .body(())
            .unwrap();
        let Ok((resp, _)) = h2c.send_request(req, true) else {
            break;
        };
        heads.push(resp);
    }
    let first = tokio::time::timeout(Duration::from_secs(10), heads.remove(0))
        .await
        .expect("no answer")
        .unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    assert!(
        tokio::time::timeout(Duration::from_secs(20), conn_task)
            .await
            .is_ok(),
        "an HTTP/2 connection whose request failed authentication is still open 20 s later \
         (its answers held by a window of 0)"
    );
    assert!(
        metric(
            &env,
            "portcullis_listener_connections_closed_total{reason=\"unauthenticated\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        upstream_requests(&env),
        0,
        "the upstream saw a refused request"
    );

    // Authenticated HTTP/2: many requests, one connection.
    let (mut admin, admin_task) = h2_client(&env).await;
    for _ in 0..5 {
        let resp = admin.send_request(get("/version")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
    // HTTP/1.1 without credentials: two 401s on one keep-alive connection.
    let mut h1 = common::tls_connect(env.proxy_addr, &env.ca, None, &[b"http/1.1"]).await;
    for _ in 0..2 {
        h1.write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let head = common::read_head(&mut h1).await.expect("HTTP/1.1 closed");
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap();
        // `read_head` may have read some of the body with the head.
        let (_, already) = head.split_once("\r\n\r\n").unwrap();
        let mut rest = vec![0u8; len - already.len()];
        h1.read_exact(&mut rest).await.unwrap();
    }
    assert!(
        !admin_task.is_finished(),
        "an authenticated HTTP/2 connection was closed"
    );
    env.stop().await;
}

/// A raw HTTP/2 client (the `h2` crate answers PINGs itself and opens no stream after a
/// GOAWAY): it sends the preface, acknowledges the server's SETTINGS but never a PING, and
/// reports every frame it reads as (type, flags, stream) until EOF.
struct RawH2 {
    wr: tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    frames: tokio::sync::mpsc::UnboundedReceiver<(u8, u8, u32)>,
    reader: tokio::task::JoinHandle<()>,
}

impl RawH2 {
    async fn connect(env: &Env, cert: Option<&portcullis_sandbox::pki::Issued>) -> RawH2 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = common::tls_connect(env.proxy_addr, &env.ca, cert, &[b"h2"]).await;
        let (mut rd, mut wr) = tokio::io::split(tls);
        wr.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let (tx, frames) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut head = [0u8; 9];
            while rd.read_exact(&mut head).await.is_ok() {
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if rd.read_exact(&mut payload).await.is_err() {
                    break;
                }
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                let _ = tx.send((head[3], head[4], stream));
            }
        });
        RawH2 { wr, frames, reader }
    }

    /// A frame read from `frames` (None at EOF), a SETTINGS acknowledged. Called in a
    /// `select!` arm's body, never as a branch future, so the acknowledgement is not cut short
    /// by another branch.
    async fn settle(&mut self, f: Option<(u8, u8, u32)>) -> Option<(u8, u8, u32)> {
        use tokio::io::AsyncWriteExt;
        let f = f?;
        if f.0 == 0x4 && f.1 & 0x1 == 0 {
            let _ = self.wr.write_all(&[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0]).await;
        }
        Some(f)
    }

    /// A GET on `stream` as one HPACK block of static-table names and literal values; false
    /// when the connection no longer takes it.
    async fn get(&mut self, stream: u32, path: &str) -> bool {
        self.get_as(stream, path, None).await
    }

    /// [`RawH2::get`] with `Authorization: Bearer <token>` when given.
    async fn get_as(&mut self, stream: u32, path: &str, token: Option<&str>) -> bool {
        use tokio::io::AsyncWriteExt;
        // An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1) after `flags`.
        fn int(out: &mut Vec<u8>, flags: u8, n: u32, mut v: usize) {
            let max = (1usize << n) - 1;
            if v < max {
                out.push(flags | v as u8);
                return;
            }
            out.push(flags | max as u8);
            v -= max;
            while v >= 128 {
                out.push((v % 128) as u8 | 0x80);
                v /= 128;
            }
            out.push(v as u8);
        }
        let mut block = vec![0x82, 0x87]; // :method GET, :scheme https
        let bearer = token.map(|t| format!("Bearer {t}"));
        // Literal without indexing, indexed name: :path (4), :authority (1), authorization (23).
        let fields = [
            (4, Some(path)),
            (1, Some("localhost")),
            (23, bearer.as_deref()),
        ];
        for (index, value) in fields {
            let Some(value) = value else { continue };
            int(&mut block, 0, 4, index);
            int(&mut block, 0, 7, value.len());
            block.extend(value.as_bytes());
        }
        let mut frame = (block.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend([0x1, 0x5]); // HEADERS, END_STREAM | END_HEADERS
        frame.extend(stream.to_be_bytes());
        frame.extend(block);
        self.wr.write_all(&frame).await.is_ok()
    }
}

impl RawH2 {
    /// After the GOAWAY, a GET of `path` every `every`, as if it had not come: the GOAWAY must
    /// come and the connection then end within `deadline` (`after` names what came before,
    /// for the messages).
    async fn cut_for_ignoring_goaway(
        &mut self,
        after: &str,
        path: &str,
        every: Duration,
        deadline: Duration,
    ) {
        let (mut goaway, mut stream) = (false, 1);
        let deadline = tokio::time::Instant::now() + deadline;
        let closed = loop {
            tokio::select! {
                frame = self.frames.recv() => match self.settle(frame).await {
                    None => break true, // the connection ended
                    Some((0x7, _, _)) => goaway = true,
                    Some(_) => {}
                },
                _ = tokio::time::sleep(every), if goaway => {
                    stream += 2;
                    if !self.get(stream, path).await {
                        break true;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break false,
            }
        };
        assert!(goaway, "no GOAWAY after {after}");
        assert!(
            closed,
            "a client opening streams after the GOAWAY that followed {after} (stream {stream}) still has its connection"
        );
    }
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A request opened as the idle timeout's GOAWAY arrives — as one that crossed it on the
/// wire, which the server cannot tell apart: h2 accepts streams until its shutdown PING is
/// answered — runs to its end rather than being cut with the connection `shutdown.grace` (5 s)
/// later. Here a watch with `timeoutSeconds=8` opened on the GOAWAY ends cleanly (its
/// END_STREAM) about 8 s later, and the connection then closes. Authenticated by the admin's
/// client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_crossing_the_idle_goaway_runs_to_its_end() {
    let env = start("  idle_timeout: 1s\n").await;
    let mut h2 = RawH2::connect(&env, Some(&env.admin_cert)).await;
    assert!(h2.get(1, "/version").await);
    let watch = "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=8";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut goaway_at, mut watch_ended_at, mut closed) = (None, None, false);
    loop {
        tokio::select! {
            frame = h2.frames.recv() => match h2.settle(frame).await {
                None => {
                    closed = true;
                    break;
                }
                Some((0x7, _, _)) if goaway_at.is_none() => {
                    goaway_at = Some(tokio::time::Instant::now());
                    assert!(h2.get(3, watch).await);
                }
                // DATA or HEADERS ending stream 3.
                Some((0x0 | 0x1, flags, 3)) if flags & 0x1 != 0 => {
                    watch_ended_at = Some(tokio::time::Instant::now());
                }
                Some(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let goaway_at = goaway_at.expect("no GOAWAY after the idle timeout");
    let ended = watch_ended_at.map(|t| t - goaway_at);
    assert!(
        ended.is_some_and(|d| d >= Duration::from_secs(7)),
        "the watch opened on the GOAWAY did not run to its end (ended {ended:?} after the GOAWAY)"
    );
    assert!(
        closed,
        "the connection was still open 30 s after its idle GOAWAY"
    );
    env.stop().await;
}

/// A client that goes on opening streams well after the idle timeout's GOAWAY (it never
/// answers h2's shutdown PING, so h2 would take them) is cut: it ignores the GOAWAY. Without
/// the cut, a request every second would keep the connection open for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ignoring_the_idle_goaway_is_cut() {
    let env = start("  idle_timeout: 1s\n").await;
    let mut h2 = RawH2::connect(&env, Some(&env.admin_cert)).await;
    assert!(h2.get(1, "/version").await);
    // Once the GOAWAY is in, a request every 1.5 s.
    h2.cut_for_ignoring_goaway(
        "the idle timeout",
        "/version",
        Duration::from_millis(1500),
        Duration::from_secs(20),
    )
    .await;
    env.stop().await;
}

/// The same after an idle GOAWAY on a bearer-token connection: requests without credentials
/// well after it (each a 401) cut the connection rather than keep it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_after_the_idle_goaway_are_cut() {
    let env = start("  idle_timeout: 1s\n").await;
    let alice = env.alice_token();
    let mut h2 = RawH2::connect(&env, None).await;
    assert!(h2.get_as(1, "/version", Some(&alice)).await);
    h2.cut_for_ignoring_goaway(
        "the idle timeout",
        "/api/v1/namespaces",
        Duration::from_millis(1500),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        upstream_requests(&env),
        1,
        "only the authenticated first request reaches the upstream"
    );
    env.stop().await;
}

/// After the GOAWAY that follows a failed authentication, h2 still accepts new streams until the
/// client answers its shutdown PING. A client that never answers it, reads every 401 and opens
/// a new stream each second would have its unauthenticated requests served on that connection
/// for ever: a request refused more than a moment after the GOAWAY cuts the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ignoring_the_goaway_after_a_401_is_cut() {
    let env = Env::start().await;
    let mut h2 = RawH2::connect(&env, None).await;
    // A GET without credentials.
    assert!(h2.get(1, "/api/v1/namespaces").await);
    // Once the GOAWAY is in, a new request every second.
    h2.cut_for_ignoring_goaway(
        "the 401",
        "/api/v1/namespaces",
        Duration::from_secs(1),
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        upstream_requests(&env),
        0,
        "the upstream saw a refused request"
    );
    env.stop().await;
}

/// An authenticated HTTP/2 client that grants no flow-control window cannot keep the proxy's
/// own small answers (403s here) and its connection open for ever: hyper waits with each
/// answer's last frame for a window that never comes, but the request counts as done once hyper
/// has taken that frame, so the connection is idle; it gets its GOAWAY after `idle_timeout` and
/// is dropped after `shutdown.grace` (5 s in the demo config), its unsent answers with it. The
/// upstream saw nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_client_cannot_hold_refusals_and_its_connection_open() {
    // Refused requests spend the read bucket too (the limiter sits before authorization): room
    // for the 20 refusals below, unpaginated lists at 2 tokens each.
    let env = Env::start_with(|c| {
        *c = c
            .replacen("listen:\n", "listen:\n  idle_timeout: 1s\n", 1)
            .replace(
                "team-a: {reads: {rate: 5/s, burst: 20}",
                "team-a: {reads: {rate: 5/s, burst: 100}",
            )
    })
    .await;
    env.sandbox.sandbox.clear_recorded();
    let tenant = env.ca.client_cert("mallory", &["tenant:team-a"]).unwrap();
    let (mut h2c, conn_task) = zero_window(&env, Some(&tenant)).await;
    let mut heads = Vec::new();
    for _ in 0..20 {
        h2c = h2c.ready().await.unwrap();
        // Another tenant's namespace: the proxy's own 403.
        let req = Request::get("https://localhost/api/v1/namespaces/team-b/configmaps")
            .body(())
            .unwrap();
        let (resp, _) = h2c.send_request(req, true).unwrap();
        heads.push(resp);
    }
    // The answers are kept, unread: dropping one would make h2 reset its stream (CANCEL), which
    // ends hyper's wait for the window — a client that means to hold the connection keeps them.
    let mut kept = Vec::new();
    for head in heads {
        let resp = tokio::time::timeout(Duration::from_secs(10), head)
            .await
            .expect("no answer")
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        kept.push(resp);
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(20), conn_task)
            .await
            .is_ok(),
        "a connection whose answers a window of 0 holds is still open 20 s after a 1 s idle timeout"
    );
    assert_eq!(
        upstream_requests(&env),
        0,
        "the upstream saw a refused request"
    );
    env.stop().await;
}

/// After a failed authentication the connection gets its GOAWAY, but, as after Go's
/// `Connection: close`, the other streams on it — another identity's watch on a connection a
/// multi-user client shares — run to their end: only an answer to the unauthenticated
/// request still held after `shutdown.grace` (5 s) would cut it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_authentication_does_not_cut_another_identity_s_watch() {
    let env = Env::start().await;
    let alice = env.alice_token();
    let tls = common::tls_connect(env.proxy_addr, &env.ca, None, &[b"h2"]).await;
    let (mut shared, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let conn_task = tokio::spawn(conn);
    let with_token = |path: &str, token: &str| {
        Request::get(format!("https://localhost{path}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let watch = shared
        .send_request(with_token(
            "/api/v1/namespaces/team-a/configmaps?watch=1",
            &alice,
        ))
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    let mut events = watch.into_body();
    let refused = shared
        .send_request(with_token("/api/v1/namespaces", "not-a-valid-token"))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    refused.into_body().collect().await.unwrap();
    // Past the grace: the watch is still there and delivers.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!conn_task.is_finished(), "the connection was cut");
    assert!(
        created_and_watched(&env, "team-a", "after-goaway", &mut events).await,
        "the watch did not deliver the event"
    );
    // New requests go on a new connection (the GOAWAY).
    assert!(shared.ready().await.is_err() || shared.send_request(get("/version")).await.is_err());
    env.stop().await;
}

/// A connection the proxy closes (here after `Connection: close`) is still read for a moment
/// (lingering, as Go's servers): the client's late bytes — an HTTP/2 client's WINDOW_UPDATE,
/// PING ack or TLS close_notify — are taken, not answered with a TCP reset that would make the
/// client's kernel discard an answer it has received but not yet read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_writing_after_the_proxy_closes_is_not_reset() {
    let env = start("").await;
    let mut h1 = env.admin_http1().await;
    h1.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), h1.read_to_end(&mut answer))
        .await
        .expect("the proxy did not close the connection")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    // Without lingering the first late write is answered with a reset, and the second fails.
    tokio::time::sleep(Duration::from_millis(100)).await;
    h1.write_all(b"late").await.unwrap();
    h1.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = async {
        h1.write_all(b"later").await?;
        h1.flush().await
    };
    second
        .await
        .expect("the proxy reset a connection it had closed");
    env.stop().await;
}

/// An HTTP/2 `:path` that is only a query (`?watch=1`, which the `http` crate accepts) is
/// refused with 400 before anything judges it — it used to be classified as `/` while the query
/// was forwarded — and the upstream sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_path_that_is_only_a_query_is_refused() {
    let env = Env::start().await;
    env.sandbox.sandbox.clear_recorded();
    let tls = common::tls_connect(env.proxy_addr, &env.ca, Some(&env.admin_cert), &[b"h2"]).await;
    let (h2c, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut h2c = h2c.ready().await.unwrap();
    let uri = http::Uri::from_parts({
        let mut p = http::uri::Parts::default();
        p.scheme = Some(http::uri::Scheme::HTTPS);
        p.authority = Some("localhost".parse().unwrap());
        p.path_and_query = Some("?watch=1".parse().unwrap());
        p
    })
    .unwrap();
    let (resp, _) = h2c
        .send_request(Request::get(uri).body(()).unwrap(), true)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let s: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(s["reason"], "BadRequest", "{s}");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("must start with '/'"),
        "{s}"
    );
    assert_eq!(upstream_requests(&env), 0, "the upstream saw the request");
    env.stop().await;
}
