//! The forwarding path: a small GET through the proxy vs straight to the sandbox, each on one
//! kept-alive HTTP/2 connection (what kubectl and client-go do), one request at a time. The
//! difference is the latency the proxy adds (TLS termination, classification, identity, header
//! hygiene, pooled upstream), measured through two proxies: the demo config as it is (audit
//! `blocking-strict` to a file: two `fdatasync`s per request) and the same without its `audit:`
//! section. Both raise the admins' read quota, so the load never meets the limiter's refusal.
//!
//! Prints p50 / p99 of 3 000 sequential requests per target first, then criterion's means.
//!
//! Run: `cargo bench --bench forwarding`. Numbers go in the README.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn h2(addr: std::net::SocketAddr, env: &common::Env, cert: bool) -> SendRequest<Full<Bytes>> {
    let io = TokioIo::new(
        common::tls_connect(addr, &env.ca, cert.then_some(&env.admin_cert), &[b"h2"]).await,
    );
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn one(sender: &mut SendRequest<Full<Bytes>>) {
    let req = Request::get("https://localhost/api/v1/namespaces/default/configmaps/bench")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
}

/// p50 and p99 of `n` sequential requests on `sender`, printed; the p50 returned.
async fn percentiles(what: &str, sender: &mut SendRequest<Full<Bytes>>, n: usize) -> Duration {
    for _ in 0..200 {
        one(sender).await; // warm up: pools, caches, the allocator
    }
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        one(sender).await;
        took.push(start.elapsed());
    }
    took.sort();
    let (p50, p99) = (
        common::percentile(&took, 0.5),
        common::percentile(&took, 0.99),
    );
    println!("{what:<40} p50 {p50:>10.2?}  p99 {p99:>10.2?}");
    p50
}

fn forwarding(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (audited, plain, mut direct, mut proxied, mut proxied_plain) = rt.block_on(async {
        let audited = common::Env::start_with(common::unlimited_admin_reads).await;
        let plain = common::Env::start_with(|c| {
            common::without_audit(c);
            common::unlimited_admin_reads(c);
        })
        .await;
        let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"bench"},"data":{"k":"v"}}"#;
        for env in [&audited, &plain] {
            let created = common::https_request(
                env.sandbox.addr,
                &env.ca,
                Request::post("https://localhost/api/v1/namespaces/default/configmaps")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
                None,
                false,
            )
            .await;
            assert_eq!(created.status(), 201);
        }
        let direct = h2(audited.sandbox.addr, &audited, false).await;
        let proxied = h2(audited.proxy_addr, &audited, true).await;
        let proxied_plain = h2(plain.proxy_addr, &plain, true).await;
        (audited, plain, direct, proxied, proxied_plain)
    });
    rt.block_on(async {
        let n = 3000;
        let direct_p50 = percentiles("direct to the sandbox", &mut direct, n).await;
        for (what, sender) in [
            ("through the proxy, audit off", &mut proxied_plain),
            ("through the proxy, demo (blocking-strict)", &mut proxied),
        ] {
            let p50 = percentiles(what, sender, n).await;
            println!(
                "{:<40} added p50 {:>10.2?}",
                "",
                p50.saturating_sub(direct_p50)
            );
        }
    });
    let mut group = c.benchmark_group("small_get");
    for (name, sender, env) in [
        ("direct_to_sandbox", &mut direct, &audited),
        ("through_proxy", &mut proxied, &audited),
        ("through_proxy_audit_off", &mut proxied_plain, &plain),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let mut s = sender.clone();
                // The sandbox records every request for tests; keep that from growing unbounded.
                let sandbox = env.sandbox.sandbox.clone();
                async move {
                    sandbox.clear_recorded();
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        one(&mut s).await;
                    }
                    start.elapsed()
                }
            })
        });
    }
    group.finish();
    rt.block_on(async {
        audited.stop().await;
        plain.stop().await;
    });
}

criterion_group!(benches, forwarding);
criterion_main!(benches);
