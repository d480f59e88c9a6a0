//! Tenant isolation (issue 17), measured at the proxy (in-process, loopback, real TLS, the
//! sandbox as API server): the admin's `GET /version` on its own kept-alive h2 connection,
//! 300 sequential requests per scenario, p50 / p99 —
//!
//! 1. quiet: nothing else runs;
//! 2. stalled readers: a tenant holds four HTTP/2 streams with a stream window of 0 and three
//!    HTTP/1.1 responses it never reads, each a ~2 MB list of its own configmaps;
//! 3. many watches: 100 tenant users × 3 watches (their cap) = 300 upstream streams, three
//!    connections' worth at the sandbox's (and kube-apiserver's) 100 streams per connection.
//!
//! Goal (issue 17): each attack within 2× of the quiet figure. Audit is off (the demo's
//! `blocking-strict` audit fsyncs every answer, which measures the disk) and the admin's rate
//! limit is raised out of the way. Run: `cargo bench --bench isolation`; numbers go in the
//! README.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_sandbox::pki::Issued;
use tokio::{io::AsyncWriteExt, time::Instant};

const NS: &str = "/api/v1/namespaces/team-a";
const SAMPLES: usize = 300;

async fn h2(env: &common::Env, cert: &Issued) -> SendRequest<Full<Bytes>> {
    let io = TokioIo::new(common::tls_connect(env.proxy_addr, &env.ca, Some(cert), &[b"h2"]).await);
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// `SAMPLES` sequential `GET /version` on the admin's connection; (p50, p99).
async fn measure(admin: &mut SendRequest<Full<Bytes>>, what: &str) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        admin.ready().await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), async {
            let resp = admin.send_request(common::get("/version")).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap()
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: GET /version stalled for 30 s"));
        drop(resp);
        took.push(t.elapsed());
    }
    took.sort();
    let (p50, p99) = (
        common::percentile(&took, 0.5),
        common::percentile(&took, 0.99),
    );
    println!(
        "{what:<55} p50 {p50:>10.2?}  p99 {p99:>10.2?}  max {:>10.2?}",
        took[SAMPLES - 1]
    );
    (p50, p99)
}

fn config(c: &mut String) {
    common::without_audit(c);
    common::unlimited_admin_reads(c);
}

async fn seed(env: &common::Env) {
    let mut admin = h2(env, &env.admin_cert).await;
    for i in 0..8 {
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("big-{i}")},
            "data": {"blob": "x".repeat(250_000)},
        });
        let req = Request::post(format!("https://localhost{NS}/configmaps"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(cm.to_string())))
            .unwrap();
        admin.ready().await.unwrap();
        let resp = admin.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 201);
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = common::Env::start_with(config).await;
        seed(&env).await;
        let mut admin = h2(&env, &env.admin_cert).await;
        // Warm the connections (TLS, the upstream pool) before measuring.
        measure(&mut admin, "warm-up").await;
        let quiet = measure(&mut admin, "quiet").await;

        // 2. Stalled readers.
        let tenant = env.ca.client_cert("mallory", &["tenant:team-a"]).unwrap();
        let tls = common::tls_connect(env.proxy_addr, &env.ca, Some(&tenant), &[b"h2"]).await;
        let (mut zero, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(tls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut held = Vec::new();
        for _ in 0..4 {
            zero = zero.ready().await.unwrap();
            let req = Request::get(format!("https://localhost{NS}/configmaps"))
                .body(())
                .unwrap();
            held.push(zero.send_request(req, true).unwrap().0);
        }
        let mut raw = Vec::new();
        for _ in 0..3 {
            let mut s =
                common::tls_connect(env.proxy_addr, &env.ca, Some(&tenant), &[b"http/1.1"]).await;
            s.write_all(
                format!("GET {NS}/configmaps HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            raw.push(s);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stalled = measure(
            &mut admin,
            "stalled readers (4 h2 zero-window + 3 h1 unread)",
        )
        .await;
        drop((held, raw, zero));

        // 3. 300 watches from 100 identities.
        let mut conns = Vec::new();
        let mut open = Vec::new();
        for u in 0..100 {
            let cert = env
                .ca
                .client_cert(&format!("watcher-{u}"), &["tenant:team-a"])
                .unwrap();
            let mut c = h2(&env, &cert).await;
            for _ in 0..3 {
                c.ready().await.unwrap();
                let resp = c
                    .send_request(common::get(&format!("{NS}/configmaps?watch=1")))
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                open.push(resp);
            }
            conns.push(c);
        }
        let watches = measure(&mut admin, "300 watches from 100 identities").await;
        drop((open, conns));

        let ratio = |(p50, p99): (Duration, Duration)| {
            (
                p50.as_secs_f64() / quiet.0.as_secs_f64(),
                p99.as_secs_f64() / quiet.1.as_secs_f64(),
            )
        };
        for (what, r) in [
            ("stalled readers", ratio(stalled)),
            ("300 watches", ratio(watches)),
        ] {
            println!("{what}: p50 {:.2}x quiet, p99 {:.2}x quiet", r.0, r.1);
        }
        env.stop().await;
    });
}
