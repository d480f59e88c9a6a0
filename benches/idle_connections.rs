//! Memory per idle client connection: the release `portcullis` binary in front of the sandbox,
//! N client connections opened and left idle, the proxy process's RSS (`VmRSS` from
//! `/proc/<pid>/status`) before and after. Two kinds, measured one after the other:
//! HTTP/2 connections after their preface and SETTINGS exchange (what an idle kubectl or
//! client-go connection looks like), then N/2 TLS connections silent after the handshake.
//! Goal (issue 14): 10 000 idle connections under 200 MiB.
//!
//! Run: `IDLE_CONNECTIONS=10000 cargo bench -p portcullis-cli --bench idle_connections`
//! (needs `ulimit -n` above 1.5 N plus a few hundred, in this process and the proxy's).
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use futures_util::{stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::server::tls;
use portcullis_sandbox::{self as sandbox, demo, pki::Ca};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let n: usize = std::env::var("IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}

async fn run(n: usize) {
    tls::install_crypto_provider();
    let ca = Ca::new("bench CA").unwrap();
    let sandbox = sandbox::start("127.0.0.1:0".parse().unwrap(), &ca)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (proxy_addr, admin_addr) = (common::free_port(), common::free_port());
    let files = demo::write(dir.path(), &ca, &sandbox.url(), proxy_addr, admin_addr).unwrap();
    let cap = 2 * n + 100;
    let text = std::fs::read_to_string(&files.config).unwrap().replacen(
        "listen:\n",
        &format!(
            "listen:\n  max_connections: {cap}\n  max_connections_per_source: {cap}\n  \
             preface_timeout: 10m\n  idle_timeout: 10m\n  handshake_timeout: 1m\n"
        ),
        1,
    );
    std::fs::write(&files.config, text).unwrap();
    // A copy can be named when other builds share the target directory and may replace it.
    let bin = std::env::var("PORTCULLIS_BIN").unwrap_or_else(|_| BIN.to_string());
    let mut child = tokio::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(&files.config)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let admin_cert = ca.client_cert("admin", &["demo:admins"]).unwrap();
    let ready = common::poll(Duration::from_secs(30), || {
        std::net::TcpStream::connect(proxy_addr).ok()
    })
    .await;
    assert!(ready.is_some(), "the proxy did not start listening");
    // Warm up: a few requests, so allocator pools and the upstream connection exist.
    for _ in 0..20 {
        let resp = common::https_request(
            proxy_addr,
            &ca,
            common::get("/version"),
            Some(&admin_cert),
            true,
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = rss_kib(pid);
    println!("proxy RSS at rest: {} MiB", base / 1024);

    // Idle HTTP/2 connections.
    let h2: Vec<_> = stream::iter(0..n)
        .map(|_| async {
            let tls = common::tls_connect(proxy_addr, &ca, Some(&admin_cert), &[b"h2"]).await;
            let (sender, conn) = hyper::client::conn::http2::handshake::<
                _,
                _,
                http_body_util::Empty<bytes::Bytes>,
            >(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
            (sender, tokio::spawn(conn))
        })
        .buffer_unordered(64)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_h2 = rss_kib(pid);
    report("idle HTTP/2 connections", n, base, with_h2);

    // TLS connections silent after the handshake, on top (half as many: both processes stay
    // under a 20 000 open-file limit).
    let m = n / 2;
    let silent: Vec<_> = stream::iter(0..m)
        .map(|_| common::tls_connect(proxy_addr, &ca, Some(&admin_cert), &[b"h2"]))
        .buffer_unordered(64)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_both = rss_kib(pid);
    report("silent TLS connections", m, with_h2, with_both);
    println!(
        "proxy RSS with {} connections: {} MiB",
        n + m,
        with_both / 1024
    );
    drop((h2, silent));
    child.kill().await.unwrap();
    sandbox.stop().await;
}

fn report(what: &str, n: usize, before: u64, after: u64) {
    let per = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "{n} {what}: +{} MiB, {per:.1} KiB each; projected for 10 000: {:.0} MiB above rest",
        after.saturating_sub(before) / 1024,
        per * 10_000.0 / 1024.0
    );
}
