//! The forwarding path: a small GET through the proxy vs straight to the sandbox, each on one
//! kept-alive HTTP/2 connection (what kubectl and client-go do). The difference is the latency
//! the proxy adds (TLS termination, classification, identity, header hygiene, pooled upstream).
//!
//! Run: `cargo bench --bench forwarding`. Numbers go in the README.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

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

fn forwarding(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (env, mut direct, mut proxied) = rt.block_on(async {
        let env = common::Env::start().await;
        let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"bench"},"data":{"k":"v"}}"#;
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
        let direct = h2(env.sandbox.addr, &env, false).await;
        let proxied = h2(env.proxy_addr, &env, true).await;
        (env, direct, proxied)
    });
    let mut group = c.benchmark_group("small_get");
    for (name, sender) in [
        ("direct_to_sandbox", &mut direct),
        ("through_proxy", &mut proxied),
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
    rt.block_on(env.stop());
}

criterion_group!(benches, forwarding);
criterion_main!(benches);
