//! Memory per idle client connection: the `portcullis` binary (its own process) in front of the
//! sandbox, N client connections opened and left idle, the proxy process's RSS (`VmRSS` from
//! `/proc/<pid>/status`) before and after each kind, measured one kind on top of the other:
//! - `h2`: HTTP/2 connections after their preface and SETTINGS exchange (what an idle kubectl
//!   or client-go connection looks like);
//! - `h1`: HTTP/1.1 keep-alive connections after one `GET /version` (N/2 of them);
//! - `tls`: TLS connections silent after the handshake (N/2).
//!
//! Goal (issue 14): 10 000 idle connections under 200 MiB.
//!
//! Run: `IDLE_CONNECTIONS=10000 cargo bench -p portcullis-cli --bench idle_connections`
//! (needs `ulimit -n` above 2 N plus a few hundred, in this process and the proxy's).
//! `IDLE_KINDS=h2,h1,tls` picks the kinds (in that order); `PORTCULLIS_BIN` and
//! `PORTCULLIS_HOLD` as in `benches/support`.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::{stream, StreamExt};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_sandbox::pki::{Ca, Issued};
use support::{report, Proxy};

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let n: usize = std::env::var("IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let kinds = std::env::var("IDLE_KINDS").unwrap_or_else(|_| "h2,h1,tls".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n, &kinds));
}

/// Keeps one client connection open.
enum Held {
    H2(hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>),
    H1(hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>),
    // Only held: dropping it closes the connection.
    Tls(#[allow(dead_code)] Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

async fn open(kind: &str, addr: std::net::SocketAddr, ca: &Ca, cert: &Issued) -> Held {
    match kind {
        "h2" => {
            let tls = common::tls_connect(addr, ca, Some(cert), &[b"h2"]).await;
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            Held::H2(sender)
        }
        "h1" => {
            let tls = common::tls_connect(addr, ca, Some(cert), &[b"http/1.1"]).await;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get("/version")
                .header("host", "localhost")
                .body(http_body_util::Empty::new())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap();
            Held::H1(sender)
        }
        "tls" => Held::Tls(Box::new(
            common::tls_connect(addr, ca, Some(cert), &[b"h2"]).await,
        )),
        other => panic!("unknown IDLE_KINDS entry {other:?} (h2, h1, tls)"),
    }
}

async fn run(n: usize, kinds: &str) {
    let cap = 2 * n + 100;
    let proxy = Proxy::start(|text| {
        *text = text.replacen(
            "listen:\n",
            &format!(
                "listen:\n  max_connections: {cap}\n  max_connections_per_source: {cap}\n  \
                 preface_timeout: 10m\n  idle_timeout: 10m\n  handshake_timeout: 1m\n  \
                 header_read_timeout: 10m\n"
            ),
            1,
        );
    })
    .await;
    let admin_cert = proxy.ca.client_cert("admin", &["demo:admins"]).unwrap();
    // Warm up: a few requests, so allocator pools and the upstream connection exist.
    for h2 in [true, false].repeat(10) {
        let resp = common::https_request(
            proxy.addr,
            &proxy.ca,
            common::get("/version"),
            Some(&admin_cert),
            h2,
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = proxy.pid();
    let base = proxy.rss_kib();
    println!("proxy RSS at rest: {} MiB", base / 1024);
    let mut before = base;
    let mut held = Vec::new();
    let mut total = 0;
    for kind in kinds.split(',').map(str::trim) {
        let count = if kind == "h2" { n } else { n / 2 };
        let (addr, ca, cert) = (proxy.addr, &proxy.ca, &admin_cert);
        let conns: Vec<Held> = stream::iter(0..count)
            .map(|_| open(kind, addr, ca, cert))
            .buffer_unordered(64)
            .collect()
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = proxy.rss_kib();
        let what = match kind {
            "h2" => "idle HTTP/2 connections",
            "h1" => "idle HTTP/1.1 keep-alive connections",
            _ => "silent TLS connections",
        };
        report(what, count, before, after);
        before = after;
        total += count;
        held.push(conns);
    }
    println!("proxy RSS with {total} connections: {} MiB", before / 1024);
    support::hold(pid).await;
    let closed = held.iter().flatten().filter(|h| match h {
        Held::H2(s) => s.is_closed(),
        Held::H1(s) => s.is_closed(),
        Held::Tls(_) => false,
    });
    // A connection the proxy closed under the bench would make the figures too low.
    assert_eq!(
        closed.count(),
        0,
        "the proxy closed idle connections during the bench"
    );
    drop(held);
    proxy.stop().await;
}
