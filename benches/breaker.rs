//! The circuit breaker, measured at the proxy (in-process, loopback, real TLS):
//!
//! 1. latency of a refusal while the breaker is open — a GET on one kept-alive h2 connection
//!    answered `503` without touching the network (goal: p99 ≤ 1 ms). Audit is off here (the
//!    demo's `blocking-strict` audit adds an fsync to every answer, refusals included, which
//!    measures the disk, not the breaker) and the rate limit is raised out of the way;
//! 2. recovery: the upstream comes back (a relay in front of the sandbox is reconnected) at a
//!    random moment of the open period; time until the first `200` through the proxy, polling
//!    every 10 ms (goal: ≤ 2 probe intervals, i.e. 2 × `breaker.open_for`).
//!
//! Run: `cargo bench --bench breaker`. Prints percentiles; numbers go in the README.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, sync::watch, time::Instant};

const OPEN_FOR: Duration = Duration::from_millis(500);

/// A TCP relay that can be cut (accepts and drops while down; ends relayed connections).
async fn relay(target: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (up, _) = watch::channel(true);
    let state = up.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut rx = state.subscribe();
            if !*rx.borrow() {
                continue;
            }
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = rx.wait_for(|up| !*up) => {}
                }
            });
        }
    });
    (addr, up)
}

async fn h2(env: &common::Env) -> SendRequest<Full<Bytes>> {
    let io = TokioIo::new(
        common::tls_connect(env.proxy_addr, &env.ca, Some(&env.admin_cert), &[b"h2"]).await,
    );
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn status(sender: &mut SendRequest<Full<Bytes>>) -> u16 {
    let req = Request::get("https://localhost/api/v1/namespaces/default/configmaps")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let code = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    code
}

fn without_audit(c: &mut String) {
    common::without_audit(c);
    common::unlimited_admin_reads(c);
    *c = c.replacen(
        "upstream:\n",
        &format!(
            "upstream:\n  breaker: {{consecutive_failures: 3, open_for: {}ms}}\n",
            OPEN_FOR.as_millis()
        ),
        1,
    );
}

/// Open the breaker: cut the relay and send failing requests until the proxy refuses.
async fn trip(sender: &mut SendRequest<Full<Bytes>>, up: &watch::Sender<bool>) {
    up.send_replace(false);
    for _ in 0..20 {
        if status(sender).await == 503 {
            return;
        }
    }
    panic!("the breaker did not open");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (ca, sandbox) = common::Env::ca_and_sandbox().await;
        let (addr, up) = relay(sandbox.addr).await;
        let env = common::Env::start_against(ca, sandbox, addr, without_audit).await;
        let mut sender = h2(&env).await;
        assert_eq!(status(&mut sender).await, 200);

        // 1. Refusal latency while open (re-tripped whenever the open period ends).
        trip(&mut sender, &up).await;
        let mut took = Vec::with_capacity(20_000);
        while took.len() < 20_000 {
            let t = Instant::now();
            let code = status(&mut sender).await;
            let elapsed = t.elapsed();
            if code == 503 {
                took.push(elapsed);
            }
        }
        took.sort();
        println!(
            "refusal while open ({} requests, one h2 connection): p50 {:?}  p90 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
            took.len(),
            common::percentile(&took, 0.5),
            common::percentile(&took, 0.9),
            common::percentile(&took, 0.99),
            common::percentile(&took, 0.999),
            took[took.len() - 1],
        );

        // 2. Recovery after the upstream returns, at varying moments of the open period.
        let mut recovery = Vec::new();
        for round in 0..10u32 {
            trip(&mut sender, &up).await;
            tokio::time::sleep(OPEN_FOR * (round % 5) / 5).await;
            up.send_replace(true);
            let back = Instant::now();
            loop {
                if status(&mut sender).await == 200 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                assert!(back.elapsed() < Duration::from_secs(30), "never recovered");
            }
            recovery.push(back.elapsed());
        }
        recovery.sort();
        println!(
            "recovery after the upstream returns (10 rounds, open_for {OPEN_FOR:?}): min {:?}  median {:?}  max {:?}",
            recovery[0],
            common::percentile(&recovery, 0.5),
            recovery[recovery.len() - 1],
        );
        env.stop().await;
    });
}
