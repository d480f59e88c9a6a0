//! Memory per open watch and per exec session through the proxy: the `portcullis` binary (its
//! own process) in front of the sandbox, the proxy's RSS (`VmRSS`) before and after opening
//! them.
//! - **watches**: `STREAMS_WATCHES` (default 1 000) watches on configmaps, 100 per HTTP/2
//!   connection as kubectl multiplexes them, the connections opened (and measured) first; one
//!   identity per connection (the demo admins' cap is 500 watches each). The figure includes
//!   each watch's share of the upstream HTTP/2 connections (100 streams each).
//! - **followed logs**: `STREAMS_LOGS` (default 500) `logs -f` of pod `default/web`, 100 per
//!   HTTP/2 connection, one identity per connection, like the watches. Each is read by a pump
//!   from its first byte (a task and its buffer, since 2026-12-06: README, "Tiny DATA frames on
//!   a stalled stream"), so this is the figure that fix moves.
//! - **exec sessions**: `STREAMS_EXECS` (default 500) `cat` sessions over WebSocket, each on its
//!   own HTTP/1.1 client connection and upgraded upstream connection, as kubectl runs them; 50
//!   per identity (the demo admins' cap). The figure is the whole session: both connections,
//!   the splice and its audit record. With `STREAMS_EXEC_ECHO=N` (default 0) each session
//!   first sends N bytes of stdin in one WebSocket frame and reads `cat`'s echo of them, then
//!   idles: a session that has carried bytes, as an interactive shell has after its prompt.
//!
//! Run: `cargo bench -p portcullis-cli --bench streams_memory` (`PORTCULLIS_BIN`,
//! `PORTCULLIS_HOLD` as in `benches/support`).
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{report, Proxy};

const WATCHES_PER_CONN: usize = 100;
const SESSIONS_PER_IDENTITY: usize = 50;

fn main() {
    let watches = support::env_count("STREAMS_WATCHES", 1000);
    let logs = support::env_count("STREAMS_LOGS", 500);
    let execs = support::env_count("STREAMS_EXECS", 500);
    let echo = support::env_count("STREAMS_EXEC_ECHO", 0);
    support::run_on_runtime(run(watches, logs, execs, echo));
}

async fn run(watches: usize, logs: usize, execs: usize, echo: usize) {
    let cap = 2 * execs + watches + logs + 100;
    let proxy = Proxy::start(|text| {
        *text = text.replacen(
            "listen:\n",
            &format!(
                "listen:\n  max_connections: {cap}\n  max_connections_per_source: {cap}\n  \
                 idle_timeout: 10m\n"
            ),
            1,
        );
    })
    .await;
    let (addr, ca) = (proxy.addr, &proxy.ca);
    let admin = ca.client_cert("admin", &["demo:admins"]).unwrap();
    support::create_pod(&proxy, &admin).await;
    // Warm up both protocols, so allocator pools and the upstream connection exist.
    for h2 in [true, false].repeat(10) {
        let resp = common::https_request(addr, ca, common::get("/version"), Some(&admin), h2).await;
        assert_eq!(resp.status(), 200);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = proxy.pid();
    println!("proxy RSS at rest: {} MiB", proxy.rss_kib() / 1024);

    let (senders, open, per_watch) = streams(
        &proxy,
        "watcher",
        watches,
        "/api/v1/namespaces/default/configmaps?watch=1",
        "open watches",
    )
    .await;
    let (log_senders, open_logs, per_log) = streams(
        &proxy,
        "follower",
        logs,
        "/api/v1/namespaces/default/pods/web/log?follow=true",
        "followed logs",
    )
    .await;
    let after = proxy.rss_kib();

    // Exec sessions, each on its own connection.
    let before = after;
    let certs: Vec<_> = (0..execs.div_ceil(SESSIONS_PER_IDENTITY))
        .map(|i| {
            ca.client_cert(&format!("exec-{i}"), &["demo:admins"])
                .unwrap()
        })
        .collect();
    let sessions: Vec<_> = stream::iter(0..execs)
        .map(|i| support::exec_cat(addr, ca, &certs[i / SESSIONS_PER_IDENTITY], echo))
        .buffer_unordered(32)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proxy.rss_kib();
    let per_exec = report("exec sessions", execs, before, after);
    println!(
        "per watch: {per_watch:.1} KiB; per followed log: {per_log:.1} KiB; per exec session: {per_exec:.1} KiB"
    );
    support::hold(pid).await;
    drop((open, senders, open_logs, log_senders, sessions));
    proxy.stop().await;
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// `n` long-running GETs of `path`, 100 per HTTP/2 connection, one identity (`{who}-{i}`) per
/// connection: the connections opened (and measured) first, then the streams, held open
/// unread. Returns the connections, the responses and the KiB per stream.
async fn streams(
    proxy: &Proxy,
    who: &str,
    n: usize,
    path: &'static str,
    what: &str,
) -> (Vec<Sender>, Vec<http::Response<hyper::body::Incoming>>, f64) {
    let (addr, ca) = (proxy.addr, &proxy.ca);
    let mut senders = Vec::new();
    for i in 0..n.div_ceil(WATCHES_PER_CONN) {
        let cert = ca
            .client_cert(&format!("{who}-{i}"), &["demo:admins"])
            .unwrap();
        let tls = common::tls_connect(addr, ca, Some(&cert), &[b"h2"]).await;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        senders.push(sender);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = proxy.rss_kib();
    let open: Vec<_> = stream::iter(0..n)
        .map(|i| {
            let mut s = senders[i / WATCHES_PER_CONN].clone();
            async move {
                s.ready().await.unwrap();
                let resp = s.send_request(common::get(path)).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proxy.rss_kib();
    let per = report(what, n, before, after);
    (senders, open, per)
}
