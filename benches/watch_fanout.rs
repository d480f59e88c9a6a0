//! 1 000 concurrent watches with events flowing: events per second delivered through the proxy
//! vs straight from the sandbox, in the same run.
//!
//! The `portcullis` binary (its own process, demo config: every guard on, audit
//! `blocking-strict`) in front of the in-process sandbox. `FANOUT_WATCHES` watches (default
//! 1 000) on configmaps, three per identity (the demo tenants' cap), one HTTP/2 connection per
//! identity, identities alternating between two tenants (`team-a`, and `team-b` added here with
//! the same quota) each watching its own namespace. Then a writer creates `FANOUT_EVENTS`
//! configmaps (default 300) in each namespace straight on the sandbox (16 at a time), so every
//! watcher should receive that many events; the figure is events delivered to all watchers per
//! second, from the first write to the last event received. The direct run uses the same
//! layout with a sandbox token. `FANOUT_ROUNDS` (default 2) alternates direct and proxied runs.
//!
//! Run (release build, on a quiet machine for numbers worth comparing):
//! `cargo bench -p portcullis-cli --bench watch_fanout`. On a shared machine the ratio is
//! indicative only; the load average is printed with it.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_sandbox::pki::{Ca, Issued};
use support::Proxy;
use tokio::{task::JoinHandle, time::Instant};

const NAMESPACES: [&str; 2] = ["team-a", "team-b"];
const WATCHES_PER_IDENTITY: usize = 3;
const DIRECT_TOKEN: &str = "fanout-bench-direct-token";
const WRITERS: usize = 16;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(
        support::env_count("FANOUT_WATCHES", 1000),
        support::env_count("FANOUT_EVENTS", 300),
        support::env_count("FANOUT_ROUNDS", 2),
    ));
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A second tenant with team-a's quota, and listener caps above the bench's connections.
fn config(text: &mut String, conns: usize) {
    *text = text.replacen(
        "listen:\n",
        &format!("listen:\n  max_connections: {conns}\n  max_connections_per_source: {conns}\n"),
        1,
    );
    *text = text.replacen(
        "  grants:\n",
        "    - name: team-b\n      namespaces: [team-b]\n      subjects: [{group: \"tenant:team-b\"}]\n  grants:\n",
        1,
    );
    // team-a's quota line as the demo writes it, whatever its numbers (they change: the
    // `in_flight` cap came later); the bench relies only on its `watches: 3`.
    let team_a = text
        .lines()
        .find(|l| l.starts_with("    team-a: {reads:"))
        .expect("the demo config has no quota for tenant team-a")
        .to_string();
    assert!(
        team_a.contains("watches: 3,"),
        "the demo's tenant watch cap changed (three watches per identity): {team_a}"
    );
    *text = text.replacen(
        &team_a,
        &format!("{team_a}\n{}", team_a.replace("team-a", "team-b")),
        1,
    );
}

async fn h2(addr: SocketAddr, ca: &Ca, cert: Option<&Issued>) -> SendRequest<Full<Bytes>> {
    let tls = common::tls_connect(addr, ca, cert, &[b"h2"]).await;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

fn get(path: &str, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = common::get(path);
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

/// Where the watchers connect and as whom.
enum Target<'a> {
    Direct(SocketAddr),
    Proxy(SocketAddr, &'a [Issued]),
}

/// The task counting one watch's events.
struct Reader(JoinHandle<()>);

struct Counters {
    events: AtomicU64,
    ended: AtomicU64,
}

/// Open every watch from `rv` on; each counts the event lines it receives.
async fn open_watches(
    target: &Target<'_>,
    ca: &Ca,
    watches: usize,
    rvs: &[String; 2],
    counters: &Arc<Counters>,
) -> (Vec<SendRequest<Full<Bytes>>>, Vec<Reader>) {
    let identities = watches.div_ceil(WATCHES_PER_IDENTITY);
    let conns: Vec<_> = stream::iter(0..identities)
        .map(|i| async move {
            match target {
                Target::Direct(addr) => h2(*addr, ca, None).await,
                Target::Proxy(addr, certs) => h2(*addr, ca, Some(&certs[i])).await,
            }
        })
        .buffered(32)
        .collect()
        .await;
    let token = matches!(target, Target::Direct(_)).then_some(DIRECT_TOKEN);
    let readers = stream::iter(0..watches)
        .map(|w| {
            let i = w / WATCHES_PER_IDENTITY;
            let mut sender = conns[i].clone();
            let ns = i % NAMESPACES.len();
            let path = format!(
                "/api/v1/namespaces/{}/configmaps?watch=1&resourceVersion={}",
                NAMESPACES[ns], rvs[ns]
            );
            let counters = counters.clone();
            async move {
                sender.ready().await.unwrap();
                let resp = sender.send_request(get(&path, token)).await.unwrap();
                assert_eq!(resp.status(), 200, "watch {path}");
                // Aborted at the end of the round: that drops the body, which ends the watch.
                Reader(tokio::spawn(async move {
                    let mut body = resp.into_body();
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Ok(data) = frame.into_data() {
                            let lines = data.iter().filter(|b| **b == b'\n').count();
                            counters.events.fetch_add(lines as u64, Ordering::Relaxed);
                        }
                    }
                    counters.ended.fetch_add(1, Ordering::Relaxed);
                }))
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    (conns, readers)
}

/// One run: open the watches, write, wait for every event; events/s delivered.
async fn round(
    what: &str,
    target: Target<'_>,
    proxy: &Proxy,
    writer: &SendRequest<Full<Bytes>>,
    watches: usize,
    events: usize,
    tag: &str,
) -> f64 {
    let ca = &proxy.ca;
    let mut rvs = [String::new(), String::new()];
    for (ns, rv) in NAMESPACES.iter().zip(rvs.iter_mut()) {
        let mut w = writer.clone();
        w.ready().await.unwrap();
        let resp = w
            .send_request(get(
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                Some(DIRECT_TOKEN),
            ))
            .await
            .unwrap();
        let list: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        *rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
    }
    let counters = Arc::new(Counters {
        events: AtomicU64::new(0),
        ended: AtomicU64::new(0),
    });
    let t = Instant::now();
    let (conns, readers) = open_watches(&target, ca, watches, &rvs, &counters).await;
    let opened = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let expected = (watches * events) as u64;
    let start = Instant::now();
    stream::iter(0..events * NAMESPACES.len())
        .map(|i| {
            let mut w = writer.clone();
            let ns = NAMESPACES[i % NAMESPACES.len()];
            async move {
                let cm = format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"ev-{tag}-{i}"}},"data":{{"key":"value {i}"}}}}"#
                );
                let mut req = Request::post(format!("https://localhost/api/v1/namespaces/{ns}/configmaps"))
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {DIRECT_TOKEN}"))
                    .body(Full::new(Bytes::from(cm)))
                    .unwrap();
                *req.version_mut() = http::Version::HTTP_2;
                w.ready().await.unwrap();
                let resp = w.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 201);
            }
        })
        .buffer_unordered(WRITERS)
        .collect::<Vec<()>>()
        .await;
    let written = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while counters.events.load(Ordering::Relaxed) < expected
        && counters.ended.load(Ordering::Relaxed) == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    let got = counters.events.load(Ordering::Relaxed);
    let ended = counters.ended.load(Ordering::Relaxed);
    assert!(
        got == expected && ended == 0,
        "{what}: {got} of {expected} events, {ended} watches ended early"
    );
    let rate = got as f64 / took.as_secs_f64();
    let writes = events * NAMESPACES.len();
    println!(
        "{what:<7} {watches} watches opened in {opened:>8.2?}; {writes} writes in {written:>8.2?} \
         ({:.0}/s); \
         {got} events delivered in {took:>8.2?} (last {:>8.2?} after the last write): \
         {rate:>9.0} events/s (load {})",
        writes as f64 / written.as_secs_f64(),
        took.saturating_sub(written),
        loadavg()
    );
    // End every watch and close the connections, so the next round runs alone.
    for r in &readers {
        r.0.abort();
    }
    drop((conns, readers));
    // Let the streams close (the proxy releases their watch permits) before the next round.
    tokio::time::sleep(Duration::from_secs(2)).await;
    rate
}

/// team-b's RBAC in the sandbox, as the demo seeds team-a's.
async fn grant_team_b(writer: &SendRequest<Full<Bytes>>) {
    let base = "https://localhost/apis/rbac.authorization.k8s.io/v1/namespaces/team-b";
    let role = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"team-b-workloads"},"rules":[{"apiGroups":[""],"resources":["*"],"verbs":["*"]}]}"#;
    let binding = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"team-b-workloads"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"team-b-workloads"},"subjects":[{"kind":"Group","apiGroup":"rbac.authorization.k8s.io","name":"tenant:team-b"}]}"#;
    for (kind, body) in [("roles", role), ("rolebindings", binding)] {
        let req = Request::post(format!("{base}/{kind}"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {DIRECT_TOKEN}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let mut w = writer.clone();
        w.ready().await.unwrap();
        let resp = w.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 201, "creating the team-b {kind}");
    }
}

async fn run(watches: usize, events: usize, rounds: usize) {
    let identities = watches.div_ceil(WATCHES_PER_IDENTITY);
    let proxy = Proxy::start(|text| config(text, identities + 100)).await;
    let sandbox = proxy.sandbox.addr;
    proxy
        .sandbox
        .sandbox
        .add_token(DIRECT_TOKEN, "fanout-direct", &["system:masters"]);
    let certs: Vec<Issued> = (0..identities)
        .map(|i| {
            let tenant = NAMESPACES[i % NAMESPACES.len()];
            proxy
                .ca
                .client_cert(&format!("fan-{i}"), &[&format!("tenant:{tenant}")])
                .unwrap()
        })
        .collect();
    let writer = h2(sandbox, &proxy.ca, None).await;
    grant_team_b(&writer).await;
    println!(
        "{watches} watches, {identities} identities over {} tenants, {events} events per namespace; load {}",
        NAMESPACES.len(),
        loadavg()
    );
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let direct = round(
            "direct",
            Target::Direct(sandbox),
            &proxy,
            &writer,
            watches,
            events,
            &format!("d{r}"),
        )
        .await;
        let proxied = round(
            "proxied",
            Target::Proxy(proxy.addr, &certs),
            &proxy,
            &writer,
            watches,
            events,
            &format!("p{r}"),
        )
        .await;
        ratios.push(proxied / direct);
        println!(
            "round {}: proxied / direct = {:.2}",
            r + 1,
            proxied / direct
        );
    }
    println!("ratios: {ratios:.2?}; load at the end {}", loadavg());
    proxy.stop().await;
}
