//! `ResponseComplete` after the last byte, through the audit layer, with a sink that records
//! events in memory and can be held or made to fail.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tower::{Layer, Service};

use crate::{
    audit::{
        sink::{DeliveryMode, LineBackend, Prepared},
        Audit, AuditLayer, Auditor, Policy,
    },
    body::{Body, BoxError},
    service::testing::{request, TestBody},
    upstream::Watcher,
};

/// Records every event; holds writes while `hold` is set; fails them while `fail` is set, and
/// the next `fail_writes` writes.
#[derive(Clone, Default)]
struct Memory {
    events: Arc<Mutex<Vec<Value>>>,
    hold: Arc<AtomicBool>,
    fail: Arc<AtomicBool>,
    fail_writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl LineBackend for Memory {
    fn write(&mut self, events: &[Arc<Prepared>], _: bool) -> Result<(), (usize, String)> {
        while self.hold.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let once = self
            .fail_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if once || self.fail.load(Ordering::SeqCst) {
            return Err((0, "disk on fire".into()));
        }
        let mut all = self.events.lock().unwrap();
        for e in events {
            all.push(serde_json::from_slice(e.line()).unwrap());
        }
        Ok(())
    }
}

impl Memory {
    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Wait (bounded) for `n` events.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..400 {
            let all = self.events();
            if all.len() >= n {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("expected {n} events, got {:?}", self.events());
    }
}

const METADATA: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n";
const RESPONSES: &str =
    "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n";

fn audit(policy: &str, sink: &Memory) -> Arc<Audit> {
    Arc::new(Audit {
        policy: Arc::new(Policy::from_yaml(policy).unwrap()),
        auditor: Arc::new(Auditor::with_backend(
            DeliveryMode::BlockingStrict,
            sink.clone(),
        )),
        sessions: None,
    })
}

/// An upstream body fed frame by frame (an `Err` item breaks it off).
fn upstream() -> (mpsc::Sender<Result<Bytes, BoxError>>, Body) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(64);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|r| (r.map(Frame::data), rx))
    });
    (
        tx,
        crate::body::boxed(http_body_util::StreamBody::new(stream)),
    )
}

/// What the classify layer does for the record: the request's classification into it.
fn classify_into_record(req: &Request<TestBody>) {
    let info = crate::k8s::request::classify(req.method(), req.uri(), req.headers()).unwrap();
    if let Some(rec) = req.extensions().get::<crate::audit::AuditRecord>() {
        rec.with(|r| r.classified(Arc::new(info)));
    }
}

/// [`upstream`] with `n` frames of [`CHUNK`] bytes already sent (bytes 0, 1, …).
async fn upstream_with(n: u8) -> (mpsc::Sender<Result<Bytes, BoxError>>, Body) {
    let (tx, body) = upstream();
    for i in 0..n {
        tx.send(Ok(Bytes::from(vec![i; CHUNK]))).await.unwrap();
    }
    (tx, body)
}

/// The audit layer over a service answering `resp` once; the request's `Watcher` goes
/// to `stall` when given.
async fn through(
    audit: Arc<Audit>,
    resp: Response<Body>,
    stall: Option<Arc<Mutex<Option<Watcher>>>>,
) -> Response<Body> {
    let resp = Arc::new(Mutex::new(Some(resp)));
    let mut svc = AuditLayer::new(Some(audit), false).layer(tower::service_fn(
        move |req: Request<TestBody>| {
            if let Some(slot) = &stall {
                *slot.lock().unwrap() = req.extensions().get::<Watcher>().cloned();
            }
            let resp = resp.lock().unwrap().take().unwrap();
            async move { Ok::<_, Infallible>(resp) }
        },
    ));
    svc.call(request("GET", "/api/v1/configmaps"))
        .await
        .unwrap()
}

fn json(status: u16, body: Body) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// The next frame's data, or `None` if none comes within a short while.
async fn next_soon(body: &mut Body) -> Option<Result<Bytes, BoxError>> {
    match tokio::time::timeout(Duration::from_millis(150), body.frame()).await {
        Ok(Some(Ok(f))) => Some(Ok(f.into_data().unwrap_or_default())),
        Ok(Some(Err(e))) => Some(Err(e)),
        Ok(None) | Err(_) => None,
    }
}

const CHUNK: usize = 40 * 1024;

/// End the upstream body while the sink holds its writes: nothing more reaches the client and
/// no event is written; then release the sink and return the frame that was held back.
async fn end_while_held(
    sink: &Memory,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
    body: &mut Body,
) -> Frame<Bytes> {
    sink.hold.store(true, Ordering::SeqCst);
    drop(tx);
    assert!(next_soon(body).await.is_none());
    assert!(sink.events().is_empty());
    sink.hold.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_small_answer_is_released_whole_after_its_event() {
    let sink = Memory::default();
    let resp = through(
        audit(METADATA, &sink),
        json(
            200,
            crate::body::full(r#"{"kind":"ConfigMapList","items":[]}"#),
        ),
        None,
    )
    .await;
    // Written before the head was released.
    let all = sink.events();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["stage"], "ResponseComplete");
    assert_eq!(all[0]["responseStatus"]["code"], 200);
    assert!(all[0]["annotations"]
        .get("portcullis.io/response-aborted")
        .is_none());
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&got[..], br#"{"kind":"ConfigMapList","items":[]}"#);
}

/// Released whole, the answer ends with its last frame and states its size: hyper then sets
/// HTTP/2 END_STREAM on the last DATA frame (and HTTP/1.1 `Content-Length`) instead of
/// sending an empty DATA frame later, in a write of its own.
#[tokio::test]
async fn a_small_answer_released_whole_ends_with_its_last_frame() {
    let sink = Memory::default();
    let (tx, upstream) = upstream();
    tx.send(Ok(Bytes::from_static(b"{\"kind\":")))
        .await
        .unwrap();
    tx.send(Ok(Bytes::from_static(b"\"List\"}"))).await.unwrap();
    drop(tx);
    let resp = through(audit(METADATA, &sink), json(200, upstream), None).await;
    let mut body = resp.into_body();
    assert_eq!(body.size_hint().exact(), Some(15));
    assert!(!body.is_end_stream());
    assert_eq!(
        &next_soon(&mut body).await.unwrap().unwrap()[..],
        b"{\"kind\":"
    );
    assert!(!body.is_end_stream());
    assert_eq!(
        &next_soon(&mut body).await.unwrap().unwrap()[..],
        b"\"List\"}"
    );
    assert!(body.is_end_stream(), "the end is known with the last frame");
    assert_eq!(sink.events().len(), 1);
}

#[tokio::test]
async fn a_small_answer_whose_event_a_strict_sink_cannot_take_is_a_503() {
    let sink = Memory::default();
    sink.fail.store(true, Ordering::SeqCst);
    let resp = through(
        audit(METADATA, &sink),
        json(200, crate::body::full("{}")),
        None,
    )
    .await;
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn a_long_answer_streams_and_its_last_frame_waits_for_the_event() {
    let sink = Memory::default();
    let (tx, body) = upstream_with(3).await;
    // The head is out while the upstream body is still open (more than WHOLE_ANSWER came).
    let resp = through(audit(METADATA, &sink), json(200, body), None).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert_eq!(next_soon(&mut body).await.unwrap().unwrap()[0], 0);
    assert_eq!(next_soon(&mut body).await.unwrap().unwrap()[0], 1);
    // The newest frame is held until the next one (or the end) arrives.
    assert!(next_soon(&mut body).await.is_none());
    assert!(sink.events().is_empty(), "no event before the body ended");
    tx.send(Ok(Bytes::from(vec![3u8; CHUNK]))).await.unwrap();
    assert_eq!(next_soon(&mut body).await.unwrap().unwrap()[0], 2);
    // The upstream body ends while the sink is held: the last frame waits for the event.
    let last = end_while_held(&sink, tx, &mut body).await;
    let all = sink.events();
    assert_eq!(
        all.len(),
        1,
        "the event is written before the last frame goes"
    );
    assert_eq!(last.into_data().unwrap()[0], 3);
    assert!(body.is_end_stream());
    assert!(body.frame().await.is_none());
    assert_eq!(all[0]["stage"], "ResponseComplete");
    assert_eq!(all[0]["responseStatus"]["code"], 200);
}

/// Empty frames after the last bytes do not release them: the frame with the last bytes
/// still waits for the event.
#[tokio::test]
async fn empty_frames_do_not_release_the_last_bytes_before_the_event() {
    let sink = Memory::default();
    let (tx, body) = upstream_with(3).await;
    let resp = through(audit(METADATA, &sink), json(200, body), None).await;
    let mut body = resp.into_body();
    assert_eq!(next_soon(&mut body).await.unwrap().unwrap()[0], 0);
    assert_eq!(next_soon(&mut body).await.unwrap().unwrap()[0], 1);
    tx.send(Ok(Bytes::new())).await.unwrap();
    tx.send(Ok(Bytes::new())).await.unwrap();
    assert!(
        next_soon(&mut body).await.is_none(),
        "the last bytes are held behind empty frames"
    );
    let last = end_while_held(&sink, tx, &mut body).await;
    assert_eq!(sink.events().len(), 1, "the event is written first");
    assert_eq!(last.into_data().unwrap()[0], 2);
}

#[tokio::test]
async fn a_strict_sink_failing_at_the_end_cuts_a_long_answer_off() {
    let sink = Memory::default();
    sink.fail.store(true, Ordering::SeqCst);
    let (tx, body) = upstream_with(4).await;
    drop(tx);
    let resp = through(audit(METADATA, &sink), json(200, body), None).await;
    assert_eq!(resp.status(), 200, "the head went out before the end");
    let mut body = resp.into_body();
    let mut got = 0;
    let ended = loop {
        match body.frame().await {
            Some(Ok(f)) => got += f.into_data().map_or(0, |d| d.len()),
            Some(Err(e)) => break e.to_string(),
            None => panic!("a complete body ({got} bytes) whose event was lost"),
        }
    };
    assert_eq!(got, 3 * CHUNK, "everything but the last frame");
    assert!(ended.contains("audit event"), "{ended}");
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn a_client_that_goes_away_mid_body_is_recorded() {
    let sink = Memory::default();
    let (tx, body) = upstream_with(3).await;
    let resp = through(audit(METADATA, &sink), json(200, body), None).await;
    let mut body = resp.into_body();
    assert!(next_soon(&mut body).await.is_some());
    drop(body);
    let all = sink.wait_for(1).await;
    assert_eq!(
        all[0]["annotations"]["portcullis.io/response-aborted"],
        "client-gone"
    );
    drop(tx);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sink.events().len(), 1, "one ResponseComplete");
}

#[tokio::test]
async fn an_upstream_that_breaks_off_is_recorded_and_the_client_gets_the_error() {
    let sink = Memory::default();
    let (tx, body) = upstream_with(3).await;
    tx.send(Err("connection reset".into())).await.unwrap();
    let resp = through(audit(METADATA, &sink), json(200, body), None).await;
    let mut body = resp.into_body();
    let err = loop {
        match body.frame().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => break e.to_string(),
            None => panic!("a broken answer looked complete"),
        }
    };
    assert_eq!(err, "connection reset");
    let all = sink.wait_for(1).await;
    assert_eq!(
        all[0]["annotations"]["portcullis.io/response-aborted"],
        "upstream-error"
    );
}

#[tokio::test]
async fn a_stalled_reset_is_recorded_at_the_reset_and_only_once() {
    let sink = Memory::default();
    let (tx, body) = upstream_with(3).await;
    let slot = Arc::new(Mutex::new(None));
    let resp = through(audit(METADATA, &sink), json(200, body), Some(slot.clone())).await;
    let hook = slot
        .lock()
        .unwrap()
        .take()
        .expect("the request carries the hook");
    // The pump resets the stream: the event is written now, whatever the client does.
    hook.0.stalled();
    let all = sink.wait_for(1).await;
    assert_eq!(all[0]["stage"], "ResponseComplete");
    assert_eq!(
        all[0]["annotations"]["portcullis.io/response-aborted"],
        "stalled"
    );
    tx.send(Err("stalled".into())).await.unwrap();
    let mut body = resp.into_body();
    while let Some(Ok(_)) = body.frame().await {}
    drop(body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sink.events().len(), 1, "one ResponseComplete");
}

#[tokio::test]
async fn a_failure_status_fills_response_status_at_metadata_level() {
    let sink = Memory::default();
    let status = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"configmaps"},"code":404}"#;
    let resp = through(
        audit(METADATA, &sink),
        json(404, crate::body::full(status)),
        None,
    )
    .await;
    assert_eq!(resp.status(), 404);
    let e = &sink.events()[0];
    assert_eq!(e["responseStatus"]["code"], 404);
    assert_eq!(e["responseStatus"]["status"], "Failure");
    assert_eq!(e["responseStatus"]["reason"], "NotFound");
    assert_eq!(e["responseStatus"]["message"], "configmaps \"x\" not found");
    assert_eq!(e["responseStatus"]["details"]["name"], "x");
    assert!(e.get("responseObject").is_none(), "Metadata level");
}

#[tokio::test]
async fn a_streamed_answer_keeps_its_response_object() {
    let sink = Memory::default();
    let (tx, body) = upstream();
    let blob = "x".repeat(3 * CHUNK);
    let text = format!(r#"{{"kind":"ConfigMap","data":{{"blob":"{blob}"}}}}"#);
    let bytes = Bytes::from(text);
    for part in bytes.chunks(CHUNK / 2) {
        tx.send(Ok(Bytes::copy_from_slice(part))).await.unwrap();
    }
    drop(tx);
    let resp = through(audit(RESPONSES, &sink), json(200, body), None).await;
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, bytes);
    let e = &sink.events()[0];
    assert_eq!(
        e["responseObject"]["data"]["blob"].as_str().unwrap().len(),
        blob.len()
    );
}

/// kube-apiserver gzips an answer over 128 KiB for a client that accepts gzip (every Go client
/// does): the event records the decoded object, and the client gets the bytes as sent. One
/// too large to keep, or in an encoding the proxy does not decode, is recorded without
/// `responseObject` and says why.
#[tokio::test]
async fn a_gzip_answer_is_recorded_decoded_and_an_omitted_one_says_why() {
    use std::io::Write;
    let obj = serde_json::json!({"kind": "ConfigMapList", "items": [{"data": {"blob": "x".repeat(200_000)}}]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(obj.to_string().as_bytes()).unwrap();
    let gz = Bytes::from(gz.finish().unwrap());
    let encoded = |enc: &str, body: Bytes| {
        let mut r = json(200, crate::body::full(body));
        r.headers_mut()
            .insert("content-encoding", enc.parse().unwrap());
        r
    };
    let sink = Memory::default();
    let resp = through(audit(RESPONSES, &sink), encoded("gzip", gz.clone()), None).await;
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), gz);
    let e = &sink.events()[0];
    assert_eq!(e["responseObject"], obj);
    assert!(e["annotations"]
        .get("portcullis.io/response-object-omitted")
        .is_none());

    let sink = Memory::default();
    let resp = through(audit(RESPONSES, &sink), encoded("br", gz.clone()), None).await;
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), gz);
    let e = &sink.events()[0];
    assert!(e.get("responseObject").is_none());
    assert_eq!(
        e["annotations"]["portcullis.io/response-object-omitted"],
        "the response body is encoded (br)"
    );

    // Over the cap: streamed on whole, recorded without the object.
    let big = Bytes::from(format!(
        r#"{{"kind":"ConfigMap","data":{{"blob":"{}"}}}}"#,
        "x".repeat(super::MAX_RESPONSE_OBJECT)
    ));
    let sink = Memory::default();
    let resp = through(
        audit(RESPONSES, &sink),
        json(200, crate::body::full(big.clone())),
        None,
    )
    .await;
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        big.len()
    );
    let e = &sink.wait_for(1).await[0];
    assert!(e.get("responseObject").is_none());
    assert_eq!(
        e["annotations"]["portcullis.io/response-object-omitted"],
        "the response body is larger than 3 MiB"
    );
}

/// A protobuf answer is kept as its JSON form, as kube-apiserver's audit log writes it; the
/// client still gets the very bytes upstream sent. One that does not decode is forwarded as
/// is, recorded without `responseObject`.
#[tokio::test]
async fn a_protobuf_answer_is_recorded_as_json() {
    let obj = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team-a"}, "spec": {"replicas": 0}});
    let pb = portcullis_proto::encode_object(&obj).unwrap();
    let protobuf = |body: Body| {
        Response::builder()
            .header("content-type", portcullis_proto::MEDIA_TYPE)
            .body(body)
            .unwrap()
    };
    let sink = Memory::default();
    let resp = through(
        audit(RESPONSES, &sink),
        protobuf(crate::body::full(pb.clone())),
        None,
    )
    .await;
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), pb);
    assert_eq!(sink.events()[0]["responseObject"], obj);

    let sink = Memory::default();
    let garbage = Bytes::from_static(b"k8s\0garbage");
    let resp = through(
        audit(RESPONSES, &sink),
        protobuf(crate::body::full(garbage.clone())),
        None,
    )
    .await;
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        garbage
    );
    assert!(sink.events()[0].get("responseObject").is_none());
}

/// `RequestReceived` is written from the record in place (no copy of the event); the record
/// must come out unchanged, and the two events agree on everything but the stage's own fields.
#[tokio::test]
async fn request_received_written_in_place_leaves_the_record_as_it_was() {
    use crate::audit::{record::Recorder, AuditRecord, Stage};
    let sink = Memory::default();
    let rec = AuditRecord::new(Recorder::new(
        audit(METADATA, &sink),
        &http::HeaderValue::from_static("0000-id"),
        "/api/v1/namespaces/a/configmaps?limit=5".into(),
        &http::Method::GET,
        Some(&http::HeaderValue::from_static("kubectl/v1.32")),
        vec!["10.0.0.1".into()],
    ));
    rec.with(|r| r.annotate("portcullis.io/ratelimit", "allowed"));
    rec.emit(Stage::RequestReceived).await.unwrap();
    rec.complete().await.unwrap();
    let all = sink.wait_for(2).await;
    let (received, complete) = (&all[0], &all[1]);
    assert_eq!(received["stage"], "RequestReceived");
    assert_eq!(complete["stage"], "ResponseComplete");
    assert_eq!(received["level"], "Metadata");
    assert!(received["stageTimestamp"].as_str() >= received["requestReceivedTimestamp"].as_str());
    assert!(complete["stageTimestamp"].as_str() >= received["stageTimestamp"].as_str());
    let without = |v: &Value| {
        let mut v = v.clone();
        for k in ["stage", "stageTimestamp", "responseStatus"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    assert_eq!(without(received), without(complete));
    assert_eq!(
        received["annotations"]["portcullis.io/ratelimit"],
        "allowed"
    );
    assert_eq!(received["userAgent"], "kubectl/v1.32");
}

/// What the API server copies of an answer into `responseStatus`: a `v1` Status's status,
/// reason and message — never its code over the one answered, nothing of a `proxy`
/// subresource's answer (the pod's bytes, which a pod could shape as a Status), nothing of an
/// object that merely calls itself `Status` under another apiVersion.
#[tokio::test]
async fn only_an_api_status_fills_response_status_and_never_its_code() {
    let fake = |code: u16, api_version: &str| {
        json(
            code,
            crate::body::full(format!(
                r#"{{"kind":"Status","apiVersion":"{api_version}","status":"Success","code":200,"message":"all fine"}}"#
            )),
        )
    };
    for (path, resp, message) in [
        (
            "/api/v1/namespaces/a/services/s:80/proxy/x",
            fake(502, "v1"),
            None,
        ),
        (
            "/api/v1/namespaces/a/configmaps/x",
            fake(404, "example.com/v1"),
            None,
        ),
        (
            "/api/v1/namespaces/a/configmaps/x",
            fake(404, "v1"),
            Some("all fine"),
        ),
    ] {
        let sink = Memory::default();
        let code = resp.status().as_u16();
        let resp = Arc::new(Mutex::new(Some(resp)));
        let mut svc = AuditLayer::new(Some(audit(RESPONSES, &sink)), false).layer(
            tower::service_fn(move |req: Request<TestBody>| {
                classify_into_record(&req);
                let resp = resp.lock().unwrap().take().unwrap();
                async move { Ok::<_, Infallible>(resp) }
            }),
        );
        let got = svc.call(request("GET", path)).await.unwrap();
        let _ = got.into_body().collect().await;
        let e = &sink.wait_for(1).await[0];
        assert_eq!(e["responseStatus"]["code"], code, "{path}: {e}");
        assert_eq!(
            e["responseStatus"]["message"].as_str(),
            message,
            "{path}: {e}"
        );
        if path.contains("/proxy/") {
            assert!(e.get("responseObject").is_none(), "{e}");
        }
    }
}

/// With `trust_forwarded_for`, `sourceIPs` as the API server's `SourceIPs` makes them: the
/// first `X-Forwarded-For` header's entries that are IPs (repeats kept), then `X-Real-Ip`
/// unless the same IP is there already (an IPv4-mapped address is that IPv4 address), then
/// the peer unless it is the last entry already: the last is always the peer, which a client
/// cannot forge.
#[tokio::test]
async fn forwarded_source_ips_are_ips_and_the_peer_once() {
    let sink = Memory::default();
    let mut svc =
        AuditLayer::new(Some(audit(METADATA, &sink)), true).layer(tower::service_fn(
            |_req: Request<TestBody>| async move {
                Ok::<_, Infallible>(json(200, crate::body::full("{}")))
            },
        ));
    let mut req = request("GET", "/api/v1/configmaps");
    req.headers_mut().append(
        "x-forwarded-for",
        "10.0.0.9, not-an-ip;rm, 192.0.2.1, 2001:db8:0:0::1, 10.0.0.9"
            .parse()
            .unwrap(),
    );
    req.headers_mut()
        .append("x-forwarded-for", "203.0.113.7".parse().unwrap());
    req.headers_mut()
        .insert("x-real-ip", "::ffff:10.0.0.9".parse().unwrap());
    let got = svc.call(req).await.unwrap();
    let _ = got.into_body().collect().await;
    let e = &sink.wait_for(1).await[0];
    assert_eq!(
        e["sourceIPs"],
        serde_json::json!([
            "10.0.0.9",
            "192.0.2.1",
            "2001:db8::1",
            "10.0.0.9",
            "192.0.2.1"
        ])
    );
    // The peer is not repeated when the header already ends with it.
    let mut req = request("GET", "/api/v1/configmaps");
    req.headers_mut()
        .insert("x-forwarded-for", "10.0.0.9, 192.0.2.1".parse().unwrap());
    let got = svc.call(req).await.unwrap();
    let _ = got.into_body().collect().await;
    let e = &sink.wait_for(2).await[1];
    assert_eq!(e["sourceIPs"], serde_json::json!(["10.0.0.9", "192.0.2.1"]));
}

/// A panic below the layer is one `Panic` event with what the record holds (its objectRef
/// here), as kube-apiserver's audit filter writes it — not a `client-gone` completion — and
/// the client gets the 500.
#[tokio::test]
async fn a_panic_below_is_one_panic_event_with_the_request_s_metadata() {
    let sink = Memory::default();
    let mut svc = AuditLayer::new(Some(audit(METADATA, &sink)), false).layer(tower::service_fn(
        |req: Request<TestBody>| {
            classify_into_record(&req);
            async move {
                if req.uri().path().ends_with("/x") {
                    panic!("boom");
                }
                Ok::<_, Infallible>(json(200, crate::body::full("{}")))
            }
        },
    ));
    let resp = svc
        .call(request("GET", "/api/v1/namespaces/a/configmaps/x"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all = sink.events();
    assert_eq!(all.len(), 1, "{all:?}");
    // A panic while the layer below builds its future is the same event.
    let sync_sink = Memory::default();
    let mut sync_svc =
        AuditLayer::new(Some(audit(METADATA, &sync_sink)), false).layer(tower::service_fn(
            |_req: Request<TestBody>| -> std::future::Ready<Result<Response<Body>, Infallible>> {
                panic!("at once")
            },
        ));
    let resp = sync_svc
        .call(request("GET", "/api/v1/namespaces/a/configmaps/y"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let sync = sync_sink.wait_for(1).await;
    assert_eq!(sync[0]["stage"], "Panic");
    assert_eq!(
        sync[0]["responseStatus"]["message"],
        "APIServer panic'd: at once"
    );
    let e = &all[0];
    assert_eq!(e["stage"], "Panic");
    assert_eq!(e["objectRef"]["name"], "x");
    assert_eq!(e["responseStatus"]["code"], 500);
    assert_eq!(e["responseStatus"]["reason"], "InternalError");
    assert_eq!(e["responseStatus"]["message"], "APIServer panic'd: boom");
    assert!(e["annotations"]
        .get("portcullis.io/response-aborted")
        .is_none());
}

/// A response object the event cannot hold — here nested past serde_json's 128 levels — is
/// left out with a note rather than silently.
#[tokio::test]
async fn an_unreadable_response_object_is_noted() {
    let sink = Memory::default();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let resp = through(
        audit(RESPONSES, &sink),
        json(200, crate::body::full(deep)),
        None,
    )
    .await;
    let _ = resp.into_body().collect().await;
    let e = &sink.wait_for(1).await[0];
    assert!(e.get("responseObject").is_none(), "{e}");
    assert_eq!(
        e["annotations"]["portcullis.io/response-object-omitted"],
        "the response body could not be read as an object"
    );
}

/// `RequestReceived`'s `stageTimestamp` is the time the request was received, as
/// kube-apiserver's `processAuditEvent` sets it — not the time the event was written, which
/// comes later (after authentication here) — whether the event is written from the record in
/// place or copied first (a request object already held); later stages take their own time.
#[tokio::test]
async fn request_received_is_stamped_with_the_time_the_request_arrived() {
    use crate::audit::{record::Recorder, AuditRecord, Stage};
    const REQUEST: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n";
    for with_object in [false, true] {
        let sink = Memory::default();
        let rec = AuditRecord::new(Recorder::new(
            audit(REQUEST, &sink),
            &http::HeaderValue::from_static("0000-id"),
            "/api/v1/namespaces/a/configmaps".into(),
            &http::Method::POST,
            None,
            vec!["10.0.0.1".into()],
        ));
        // Time passes between the request's arrival and the event's write.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        if with_object {
            rec.with(|r| r.request_object(serde_json::json!({"kind": "ConfigMap"})));
        }
        rec.emit(Stage::RequestReceived).await.unwrap();
        rec.complete().await.unwrap();
        let all = sink.wait_for(2).await;
        let (received, complete) = (&all[0], &all[1]);
        assert_eq!(received["stage"], "RequestReceived");
        assert_eq!(
            received["stageTimestamp"], received["requestReceivedTimestamp"],
            "with_object={with_object}: {received}"
        );
        assert!(
            complete["stageTimestamp"].as_str() > received["stageTimestamp"].as_str(),
            "{complete}"
        );
    }
}

/// A strict sink that fails a refused watch's `ResponseStarted`: the client gets the 503, and
/// `ResponseComplete` is still written (with the 503) — the API server always writes it, and
/// another sink that took `ResponseStarted` must learn the outcome.
#[tokio::test]
async fn a_failed_response_started_still_leaves_its_response_complete() {
    use crate::audit::AuditRecord;
    let sink = Memory::default();
    sink.fail_writes.store(1, Ordering::SeqCst);
    let svc = AuditLayer::new(Some(audit(METADATA, &sink)), false).layer(
        crate::classify::ClassifyLayer.layer(tower::service_fn(
            |req: Request<TestBody>| async move {
                let rec = req.extensions().get::<AuditRecord>().unwrap();
                rec.with(|r| r.authenticated(&crate::authz::tests::id("alice", &[])));
                Ok::<_, std::convert::Infallible>(crate::refusal::forbidden_for_test("no"))
            },
        )),
    );
    let resp = crate::service::testing::send(
        svc,
        crate::service::testing::request("GET", "/api/v1/pods?watch=true"),
    )
    .await;
    assert_eq!(resp.status(), 503);
    let all = sink.wait_for(1).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["stage"], "ResponseComplete");
    assert_eq!(all[0]["responseStatus"]["code"], 503, "{}", all[0]);
    assert_eq!(all[0]["annotations"]["portcullis.io/rejected-by"], "audit");
}

/// An answer from the API server to a long-running request that started no stream (an exec of
/// a missing pod): its `ResponseStarted` carries the Status read from the answer, as the API
/// server's `LogResponseObject` fills it before the status code is written — not the code
/// alone.
#[tokio::test]
async fn response_started_of_an_upstream_refusal_carries_its_status() {
    use crate::audit::AuditRecord;
    let sink = Memory::default();
    let svc = AuditLayer::new(Some(audit(METADATA, &sink)), false).layer(
        crate::classify::ClassifyLayer.layer(tower::service_fn(|req: Request<TestBody>| async move {
            let rec = req.extensions().get::<AuditRecord>().unwrap();
            rec.with(|r| r.authenticated(&crate::authz::tests::id("alice", &[])));
            let status = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#;
            let mut resp = Response::new(crate::body::full(Bytes::from_static(status.as_bytes())));
            *resp.status_mut() = http::StatusCode::NOT_FOUND;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, std::convert::Infallible>(resp)
        })),
    );
    let resp = crate::service::testing::send(
        svc,
        crate::service::testing::request("POST", "/api/v1/namespaces/a/pods/x/exec?command=id"),
    )
    .await;
    assert_eq!(resp.status(), 404);
    let all = sink.wait_for(2).await;
    let stages: Vec<_> = all.iter().map(|e| e["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["ResponseStarted", "ResponseComplete"], "{all:?}");
    for e in &all {
        assert_eq!(e["responseStatus"]["code"], 404, "{e}");
        assert_eq!(e["responseStatus"]["reason"], "NotFound", "{e}");
        assert_eq!(
            e["responseStatus"]["message"], "pods \"x\" not found",
            "{e}"
        );
    }
}

/// A delete's answer is, for most resources, a success Status naming what was deleted:
/// `LogResponseObject` copies any Status into `responseStatus` at Metadata level, so the
/// delete's event says `Success` and which object; other success answers are not read for it.
#[tokio::test]
async fn a_delete_s_success_status_fills_response_status_at_metadata_level() {
    let success = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"x","kind":"configmaps","uid":"u-1"}}"#;
    for (method, read) in [("DELETE", true), ("GET", false)] {
        let sink = Memory::default();
        let resp = Arc::new(Mutex::new(Some(json(200, crate::body::full(success)))));
        let mut svc = AuditLayer::new(Some(audit(METADATA, &sink)), false).layer(
            tower::service_fn(move |req: Request<TestBody>| {
                classify_into_record(&req);
                let resp = resp.lock().unwrap().take().unwrap();
                async move { Ok::<_, Infallible>(resp) }
            }),
        );
        let got = svc
            .call(request(method, "/api/v1/namespaces/a/configmaps/x"))
            .await
            .unwrap();
        let body = got.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], success.as_bytes(), "the answer is unchanged");
        let e = &sink.wait_for(1).await[0];
        assert_eq!(e["responseStatus"]["code"], 200, "{e}");
        if read {
            assert_eq!(e["responseStatus"]["status"], "Success", "{e}");
            assert_eq!(e["responseStatus"]["details"]["uid"], "u-1", "{e}");
        } else {
            assert!(e["responseStatus"].get("status").is_none(), "{e}");
        }
        assert!(e.get("responseObject").is_none(), "Metadata level");
    }
}
