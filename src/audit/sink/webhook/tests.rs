//! Webhook delivery against a local receiver (intermittent failures, batches, strict refusal,
//! a size limit), refused endpoints, and the `EventList` body.

use super::*;
use crate::{
    audit::{
        event::{Event, EventList},
        sink::{Auditor, Overflow, SinkKind, SinkSpec},
    },
    kubeconfig::{Kubeconfig, User},
    test_pki::Ca,
};
use http_body_util::BodyExt;
use hyper::{body::Incoming, service::service_fn, Response};
use hyper_util::rt::TokioIo;
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Mutex,
};

/// An HTTPS receiver that answers 500 to every `fail_every`-th request (and, given a
/// `max_body`, 413 to a body larger than that) and records the audit IDs of the batches it
/// accepted.
struct Receiver {
    url: String,
    ca_pem: String,
    received: Arc<Mutex<Vec<Vec<String>>>>,
    /// Every accepted event with the time it arrived.
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
    requests: Arc<AtomicUsize>,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
    /// Every authorized POST: the status answered, its events and its body's length in bytes.
    posts: Arc<Mutex<Vec<(u16, usize, usize)>>>,
}

async fn receiver(fail_every: usize) -> Receiver {
    receiver_with(fail_every, &[b"h2", b"http/1.1"], "", 0).await
}

/// [`receiver`] offering only the ALPN protocols `alpn` (HTTP/1.1 alone: as many log
/// collectors' HTTP inputs), answering accepted batches with `accepted_body`, and a body over
/// `max_body` bytes (0: no limit) with 413, as a collector's size limit does.
async fn receiver_with(
    fail_every: usize,
    alpn: &[&[u8]],
    accepted_body: &'static str,
    max_body: usize,
) -> Receiver {
    crate::server::tls::install_crypto_provider();
    let ca = Ca::new("test-ca").unwrap();
    let leaf = ca.server_cert(&["127.0.0.1"]).unwrap();
    let cfg = crate::server::tls::server_config(
        vec![leaf.cert_der.clone()],
        leaf.key(),
        crate::server::tls::ClientAuth::None,
    )
    .unwrap();
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(Mutex::new(Vec::new()));
    let (rcv, reqs, evs) = (received.clone(), requests.clone(), events.clone());
    let (conns, psts) = (connections.clone(), posts.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            conns.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let (rcv, reqs, evs, psts) = (rcv.clone(), reqs.clone(), evs.clone(), psts.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (rcv, reqs, evs) = (rcv.clone(), reqs.clone(), evs.clone());
                    let psts = psts.clone();
                    async move {
                        let n = reqs.fetch_add(1, Ordering::SeqCst) + 1;
                        let auth = req
                            .headers()
                            .get(header::AUTHORIZATION)
                            .map(|v| v.to_str().unwrap_or_default().to_string());
                        let body = req.into_body().collect().await?.to_bytes();
                        let (status, answer) = if auth.as_deref() != Some("Bearer s3cret") {
                            // As a collector says why: the sink's error should carry it.
                            (401, "token not recognised\nby this collector\n")
                        } else if fail_every > 0 && n % fail_every == 0 {
                            (500, "")
                        } else if max_body > 0 && body.len() > max_body {
                            let list: EventList = serde_json::from_slice(&body).unwrap();
                            psts.lock()
                                .unwrap()
                                .push((413, list.items.len(), body.len()));
                            (413, "request body too large")
                        } else {
                            let list: EventList = serde_json::from_slice(&body).unwrap();
                            assert_eq!(list.kind, "EventList");
                            psts.lock()
                                .unwrap()
                                .push((200, list.items.len(), body.len()));
                            let now = Instant::now();
                            evs.lock()
                                .unwrap()
                                .extend(list.items.iter().map(|e| (now, e.clone())));
                            rcv.lock()
                                .unwrap()
                                .push(list.items.into_iter().map(|e| e.audit_id).collect());
                            (200, accepted_body)
                        };
                        // The answer's body in two parts, the second 20 ms after the head:
                        // a client that does not read it to its end cannot reuse the
                        // connection.
                        let (first, second) = answer.split_at(answer.len() / 2);
                        type Parts = std::pin::Pin<
                            Box<
                                dyn futures_util::Stream<
                                        Item = Result<http_body::Frame<Bytes>, hyper::Error>,
                                    > + Send,
                            >,
                        >;
                        let parts: Parts =
                            Box::pin(futures_util::stream::unfold(0, move |i| async move {
                                let part = match i {
                                    0 => first,
                                    1 => {
                                        tokio::time::sleep(Duration::from_millis(20)).await;
                                        second
                                    }
                                    _ => return None,
                                };
                                let frame =
                                    http_body::Frame::data(Bytes::from_static(part.as_bytes()));
                                Some((Ok::<_, hyper::Error>(frame), i + 1))
                            }));
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .header(header::CONTENT_LENGTH, answer.len())
                                .body(http_body_util::StreamBody::new(parts))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Receiver {
        url: format!("https://127.0.0.1:{}/audit", addr.port()),
        ca_pem: ca.cert.cert_pem.clone(),
        received,
        events,
        requests,
        connections,
        posts,
    }
}

fn kubeconfig(dir: &std::path::Path, r: &Receiver, token: &str) -> PathBuf {
    let kc = Kubeconfig::single(
        "siem",
        &r.url,
        &r.ca_pem,
        User {
            token: Some(token.into()),
            ..User::default()
        },
    );
    let path = dir.join("webhook.kubeconfig");
    kc.write(&path).unwrap();
    path
}

fn event(i: usize) -> Event {
    Event {
        audit_id: format!("e{i}"),
        ..Event::default()
    }
}

fn config(path: PathBuf) -> WebhookConfig {
    WebhookConfig {
        initial_backoff: Duration::from_millis(5),
        max_batch_size: 10,
        max_wait: Duration::from_millis(50),
        ..WebhookConfig::new(path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_mode_loses_nothing_when_the_receiver_fails_intermittently() {
    let r = receiver(2).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(
        Auditor::start(vec![SinkSpec {
            name: "siem".into(),
            kind: SinkKind::Webhook(config(kubeconfig(dir.path(), &r, "s3cret"))),
            mode: DeliveryMode::Blocking,
        }])
        .unwrap(),
    );
    let mut tasks = Vec::new();
    for t in 0..8 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                a.emit(event(t * 10 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    let mut got: Vec<String> = r.received.lock().unwrap().concat();
    got.sort();
    let mut want: Vec<String> = (0..80).map(|i| format!("e{i}")).collect();
    want.sort();
    assert_eq!(got, want, "every event delivered exactly once");
    let c = a.sinks()[0].counters();
    assert_eq!(c.events_written.load(Ordering::Relaxed), 80);
    assert_eq!(c.events_failed.load(Ordering::Relaxed), 0);
    assert!(
        c.retries.load(Ordering::Relaxed) > 0,
        "the receiver did fail"
    );
    assert!(r.requests.load(Ordering::SeqCst) > 1);
}

#[tokio::test]
async fn batch_mode_fills_batches_and_strict_reports_refusal() {
    let r = receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    // A long max wait: batches are sent because they are full (or at shutdown), however
    // slowly a loaded test machine enqueues.
    let cfg = WebhookConfig {
        max_wait: Duration::from_secs(30),
        ..config(kubeconfig(dir.path(), &r, "s3cret"))
    };
    let a = Auditor::start(vec![SinkSpec {
        name: "siem".into(),
        kind: SinkKind::Webhook(cfg),
        mode: DeliveryMode::Batch {
            queue: 100,
            overflow: Overflow::Block,
        },
    }])
    .unwrap();
    for i in 0..25 {
        a.emit(event(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    let batches = r.received.lock().unwrap().clone();
    assert_eq!(batches.concat().len(), 25);
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5], "full batches, the rest at shutdown");

    // A wrong token: 401 is not retried, and strict mode returns the failure.
    let dir2 = tempfile::tempdir().unwrap();
    let a = Auditor::start(vec![SinkSpec {
        name: "siem".into(),
        kind: SinkKind::Webhook(config(kubeconfig(dir2.path(), &r, "wrong"))),
        mode: DeliveryMode::BlockingStrict,
    }])
    .unwrap();
    let err = a.emit(event(99)).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    // The receiver's reason, on one line.
    assert!(
        err.to_string()
            .contains("401 Unauthorized: token not recognised by this collector"),
        "{err}"
    );
    assert_eq!(a.sinks()[0].counters().retries.load(Ordering::Relaxed), 0);
    // Every replica shares the receiver: its failure must not take them all out of service.
    assert!(!a.sinks()[0].is_local());
    assert_eq!(a.not_ready(Duration::from_secs(30)), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_receiver_s_connection_is_reused_batch_after_batch() {
    // A receiver without HTTP/2 that answers each batch with a body, as collectors' HTTP
    // inputs do: the answer must be read for the connection to go back to the pool.
    let r = receiver_with(0, &[b"http/1.1"], "{\"status\":\"accepted\"}\n", 0).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Auditor::start(vec![SinkSpec {
        name: "siem".into(),
        kind: SinkKind::Webhook(config(kubeconfig(dir.path(), &r, "s3cret"))),
        mode: DeliveryMode::Blocking,
    }])
    .unwrap();
    // One at a time: each emit waits for its batch's answer, so each is its own POST.
    for i in 0..10 {
        a.emit(event(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;
    assert_eq!(r.requests.load(Ordering::SeqCst), 10);
    // One connection (two, should hyper's pool start a connect in the moment before the last
    // answer's connection is back in it); without reading the answers, six or more.
    let connections = r.connections.load(Ordering::SeqCst);
    assert!(connections <= 2, "{connections} connections for 10 batches");
}

#[test]
fn a_refusal_s_reason_is_one_line_without_the_sink_s_token() {
    assert_eq!(
        reason_text(b"  bad token\r\nBearer s3cret was sent\n", Some("s3cret")).as_deref(),
        Some("bad token  Bearer [token] was sent")
    );
    assert_eq!(reason_text(b" \n", None), None);
    let long = "x".repeat(MAX_REASON_CHARS + 1);
    let cut = reason_text(long.as_bytes(), None).unwrap();
    assert_eq!(cut.chars().count(), MAX_REASON_CHARS + 1);
    assert!(cut.ends_with('…'));
}

#[test]
fn refuses_plain_http_to_remote_hosts_and_missing_ca() {
    let dir = tempfile::tempdir().unwrap();
    let write = |server: &str, ca: Option<&str>| {
        let mut kc = Kubeconfig::single("x", server, "unused", User::default());
        kc.clusters[0].cluster.certificate_authority_data =
            ca.map(|c| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, c));
        let p = dir.path().join("kc");
        kc.write(&p).unwrap();
        build_target(&WebhookConfig::new(p))
    };
    crate::server::tls::install_crypto_provider();
    let ca = Ca::new("x").unwrap();
    assert!(write("http://10.0.0.1/audit", None).is_err());
    assert!(write("ftp://127.0.0.1/audit", None).is_err());
    assert!(write("https://127.0.0.1/audit", None).is_err(), "no CA");
    assert!(write("http://127.0.0.1:9/audit", None).is_ok());
    assert!(write("http://[::1]:9/audit", None).is_ok());
    assert!(write("https://siem.example/audit", Some(&ca.cert.cert_pem)).is_ok());
}

#[test]
fn event_list_body_is_an_event_list() {
    let lines: Vec<Vec<u8>> = (0..3)
        .map(|i| serde_json::to_vec(&event(i)).unwrap())
        .collect();
    let body = event_list_body(lines.iter().map(Vec::as_slice));
    let list: EventList = serde_json::from_slice(&body).unwrap();
    assert_eq!(list.items.len(), 3);
    assert_eq!(list.api_version, "audit.k8s.io/v1");
    let empty: EventList = serde_json::from_slice(&event_list_body(std::iter::empty())).unwrap();
    assert!(empty.items.is_empty());
}

/// The apiserver's batch throttle and truncate backend against a receiver that reads each body
/// as an `EventList`: one-event batches go out at `throttle_qps` after the burst; an oversized
/// event arrives without its objects and annotated, one too large even so never arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_paces_batches_and_oversized_events_are_truncated() {
    let r = receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = WebhookConfig {
        max_batch_size: 1,
        max_wait: Duration::from_millis(10),
        throttle_qps: 4.0,
        throttle_burst: 2,
        max_event_size: 4096,
        ..config(kubeconfig(dir.path(), &r, "s3cret"))
    };
    let a = Auditor::start(vec![SinkSpec {
        name: "siem".into(),
        kind: SinkKind::Webhook(cfg),
        mode: DeliveryMode::Batch {
            queue: 100,
            overflow: Overflow::Block,
        },
    }])
    .unwrap();
    let mut big = event(0);
    big.request_object = Some(serde_json::json!({"data": "x".repeat(20_000)}));
    big.response_object = Some(serde_json::json!({"data": "y".repeat(20_000)}));
    a.emit(big).await.unwrap();
    let mut huge = event(1);
    huge.annotations.insert("note".into(), "z".repeat(10_000));
    a.emit(huge).await.unwrap();
    for i in 2..6 {
        a.emit(event(i)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(10)).await;

    let got = r.events.lock().unwrap().clone();
    let ids: Vec<&str> = got.iter().map(|(_, e)| e.audit_id.as_str()).collect();
    assert_eq!(
        ids,
        ["e0", "e2", "e3", "e4", "e5"],
        "e1 is too large even truncated"
    );
    let e0 = &got[0].1;
    assert_eq!(e0.request_object, None);
    assert_eq!(e0.response_object, None);
    assert_eq!(
        e0.annotations
            .get("audit.k8s.io/truncated")
            .map(String::as_str),
        Some("true")
    );
    assert!(got[1..].iter().all(|(_, e)| e.annotations.is_empty()));
    let c = a.sinks()[0].counters();
    assert_eq!(c.events_truncated.load(Ordering::Relaxed), 1);
    assert_eq!(c.events_failed.load(Ordering::Relaxed), 1);
    assert_eq!(c.events_written.load(Ordering::Relaxed), 5);
    // Six one-event batches (e1's sent nothing but took its token): two at once, then one
    // every 250 ms — the last arrives at least 3 × 250 ms after the first.
    let span = got[4].0.duration_since(got[0].0);
    assert!(
        span >= Duration::from_millis(700),
        "not throttled: {span:?}"
    );
}

/// An event of about `bytes` bytes of JSON (an annotation fills it).
fn event_of(i: usize, bytes: usize) -> Event {
    let mut e = event(i);
    let base = serde_json::to_vec(&e).unwrap().len() + r#","annotations":{"fill":""}"#.len();
    e.annotations
        .insert("fill".into(), "f".repeat(bytes.saturating_sub(base)));
    e
}

/// A receiver that answers 413 to bodies over 16 KiB, sent one batch of 400 events of which
/// one (in the middle) is 20 KB: the events batched with it are delivered — the batch is sent
/// again in halves until the large event is alone — and only that event fails, its waiter
/// told the receiver's answer, every other waiter told its event was delivered. (One thread:
/// the 400 emits all run before the sink's worker does, so they are one batch.)
#[tokio::test]
async fn a_413_fails_only_the_event_the_receiver_refuses_alone() {
    let limit = 16 * 1024;
    let r = receiver_with(0, &[b"h2", b"http/1.1"], "", limit).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = WebhookConfig {
        max_batch_size: 400,
        ..config(kubeconfig(dir.path(), &r, "s3cret"))
    };
    let a = Auditor::start(vec![SinkSpec {
        name: "siem".into(),
        kind: SinkKind::Webhook(cfg),
        mode: DeliveryMode::BlockingStrict,
    }])
    .unwrap();
    const LARGE: usize = 200;
    // Emitted in one turn of the runtime: the sink gets them as one batch.
    let results = futures_util::future::join_all((0..400).map(|i| {
        let e = if i == LARGE {
            event_of(i, 20_000)
        } else {
            event(i)
        };
        a.emit(e)
    }))
    .await;
    a.shutdown(Duration::from_secs(5)).await;

    let posts = r.posts.lock().unwrap().clone();
    assert_eq!(
        posts.first().map(|p| (p.0, p.1)),
        Some((413, 400)),
        "the 400 events went as one batch: {posts:?}"
    );
    for (i, res) in results.iter().enumerate() {
        if i == LARGE {
            let err = res.as_ref().unwrap_err().to_string();
            assert!(err.contains("413"), "{err}");
        } else {
            assert!(res.is_ok(), "e{i}: {res:?}");
        }
    }
    let got: Vec<String> = r.received.lock().unwrap().concat();
    let want: Vec<String> = (0..400)
        .filter(|i| *i != LARGE)
        .map(|i| format!("e{i}"))
        .collect();
    assert_eq!(got, want, "the 399 others, once each, in order");
    let c = a.sinks()[0].counters();
    assert_eq!(c.events_written.load(Ordering::Relaxed), 399);
    assert_eq!(c.events_failed.load(Ordering::Relaxed), 1);
    assert_eq!(c.retries.load(Ordering::Relaxed), 0, "413 is not retried");
    // Halving: the large event's half is refused at every size down to the event alone (other
    // halves until they fit); nothing accepted was over the receiver's limit.
    let refused_alone = posts.iter().filter(|p| p.0 == 413 && p.1 == 1).count();
    assert_eq!(refused_alone, 1, "{posts:?}");
    assert!(posts.iter().filter(|p| p.0 == 200).all(|p| p.2 <= limit));
}

/// `max_batch_bytes`: a batch of 100 events of about 1000 bytes, capped at 8 KiB, goes as
/// several POSTs, in order, none of whose bodies is over the cap — except one event larger than
/// the cap alone, which goes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_batch_body_is_larger_than_max_batch_bytes() {
    let r = receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let cap = 8192;
    let cfg = WebhookConfig {
        max_batch_size: 400,
        max_wait: Duration::from_secs(30),
        throttle_qps: 0.0,
        max_batch_bytes: cap,
        ..config(kubeconfig(dir.path(), &r, "s3cret"))
    };
    let a = Auditor::start(vec![SinkSpec {
        name: "siem".into(),
        kind: SinkKind::Webhook(cfg),
        mode: DeliveryMode::Batch {
            queue: 1000,
            overflow: Overflow::Block,
        },
    }])
    .unwrap();
    for i in 0..100 {
        let size = if i == 50 { 20_000 } else { 1000 };
        a.emit(event_of(i, size)).await.unwrap();
    }
    a.shutdown(Duration::from_secs(5)).await;

    let got: Vec<String> = r.received.lock().unwrap().concat();
    let want: Vec<String> = (0..100).map(|i| format!("e{i}")).collect();
    assert_eq!(got, want, "all of them, in order");
    let posts = r.posts.lock().unwrap().clone();
    assert!(posts.len() >= 13, "100 KB in 8 KiB bodies: {posts:?}");
    for &(status, events, bytes) in &posts {
        assert_eq!(status, 200);
        assert!(
            bytes <= cap || events == 1,
            "a body of {bytes} bytes holds {events} events"
        );
    }
    assert_eq!(
        posts.iter().filter(|p| p.2 > cap).count(),
        1,
        "the 20 KB event alone: {posts:?}"
    );
    let c = a.sinks()[0].counters();
    assert_eq!(c.events_written.load(Ordering::Relaxed), 100);
}
