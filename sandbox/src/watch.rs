//! Watches: newline-delimited `{"type":...,"object":...}` events, flushed one by one.
//!
//! Accepts `resourceVersion` (unset or "0": synthetic ADDED for current objects, then live;
//! N: events after N from the bounded history), `sendInitialEvents=true` (initial ADDED then a
//! BOOKMARK annotated `k8s.io/initial-events-end`), `allowWatchBookmarks`, `timeoutSeconds`,
//! label / field selectors, Table-wrapped events when `Accept` asks `as=Table`, and protobuf
//! frames (`application/vnd.kubernetes.protobuf;stream=watch`: 4-byte length + `WatchEvent`)
//! when `Accept` prefers protobuf, as client-go's typed informers ask. A too-old
//! resourceVersion gets HTTP 200 and an in-stream ERROR event carrying a 410 Expired Status.
//! The producer stops when the client goes away, on timeout, or if it falls too far behind.

use super::IntoResponse as _;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::{
    discovery::ResourceDef,
    rest::Query,
    selectors::{FieldSelector, LabelSelector},
    store::Event,
    table, Sandbox,
};
use portcullis::{body::Body, k8s::Status};

/// How often a bookmark is sent when bookmarks were asked for.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

struct Filter {
    def: &'static ResourceDef,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    as_table: bool,
    protobuf: bool,
    /// Like the apiserver, only the first Table event carries column definitions.
    headers_sent: bool,
}

impl Filter {
    fn wants(&self, ev: &Event) -> bool {
        ev.resource == self.def.plural
            && self.ns.as_ref().is_none_or(|n| *n == ev.namespace)
            && self.labels.matches(&ev.object)
            && self.fields.matches(&ev.object)
    }

    fn line(&mut self, kind: &str, object: &Value) -> Bytes {
        let object = if self.as_table && kind != "ERROR" && kind != "BOOKMARK" {
            let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
            let mut t = table::table(self.def.kind, std::slice::from_ref(object), meta);
            if self.headers_sent {
                t["columnDefinitions"] = json!([]);
            }
            self.headers_sent = true;
            t
        } else {
            object.clone()
        };
        if self.protobuf {
            // Every stored kind has a message; an object that does not encode still ends the
            // stream cleanly, as an in-stream error.
            let frame = portcullis_proto::watch_frame(kind, &object).or_else(|e| {
                let st = Status::internal(format!("cannot encode the event: {e}"));
                let obj: Value = serde_json::from_slice(&st.to_json()).unwrap_or_default();
                portcullis_proto::watch_frame("ERROR", &obj)
            });
            return Bytes::from(frame.unwrap_or_default());
        }
        let mut v =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }

    fn bookmark(&mut self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta});
        self.line("BOOKMARK", &obj)
    }
}

/// Start a watch; the response streams until the client leaves or the timeout passes.
pub fn serve(
    sb: &Sandbox,
    def: &'static ResourceDef,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    q: &Query,
    headers: &http::HeaderMap,
) -> Response<Body> {
    let as_table = table::wanted(headers);
    let protobuf = !as_table && super::answer::wants_protobuf(headers);
    let from = match q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return Status::bad_request(format!("invalid resource version: {v}"))
                    .into_response()
            }
        },
    };
    let send_initial = q.flag("sendInitialEvents");
    let from = if send_initial { None } else { from };
    let bookmarks = q.flag("allowWatchBookmarks");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let mut filter = Filter {
        def,
        ns,
        labels,
        fields,
        as_table,
        protobuf,
        headers_sent: false,
    };
    let start = sb.store().watch(def, filter.ns.as_deref(), from);
    let (tx, body) = portcullis::body::channel(16);
    match start {
        Err(oldest) => {
            let status = Status::failure(
                StatusCode::GONE,
                "Expired",
                format!("too old resource version: {} ({oldest})", from.unwrap_or(0)),
            );
            let obj: Value = serde_json::from_slice(&status.to_json()).unwrap_or_default();
            let line = filter.line("ERROR", &obj);
            tokio::spawn(async move {
                let _ = tx.send(line).await;
            });
        }
        Ok(start) => {
            tokio::spawn(pump(
                tx,
                filter,
                start,
                send_initial && bookmarks,
                bookmarks,
                timeout,
            ));
        }
    }
    let mut resp = Response::new(body);
    let ct = if as_table {
        table::CONTENT_TYPE
    } else if protobuf {
        portcullis_proto::WATCH_MEDIA_TYPE
    } else {
        "application/json"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    // A stream: `answer::finish` must not wait for its end.
    resp.extensions_mut().insert(super::answer::Streaming);
    resp
}

async fn pump(
    tx: mpsc::Sender<Bytes>,
    mut filter: Filter,
    start: super::store::WatchStart,
    initial_end: bool,
    bookmarks: bool,
    timeout: Duration,
) {
    let super::store::WatchStart {
        initial,
        mut rx,
        mut rv,
    } = start;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    for ev in &initial {
        if !filter.wants(ev) {
            continue;
        }
        if tx.send(filter.line(ev.kind, &ev.object)).await.is_err() {
            return;
        }
        rv = rv.max(ev.rv);
    }
    if initial_end && tx.send(filter.bookmark(rv, true)).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(BOOKMARK_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            _ = tick.tick(), if bookmarks => {
                if tx.send(filter.bookmark(rv, false)).await.is_err() {
                    return;
                }
            }
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    rv = rv.max(ev.rv);
                    if filter.wants(&ev) && tx.send(filter.line(ev.kind, &ev.object)).await.is_err() {
                        return;
                    }
                }
                // Fell behind or the store went away: end the watch; clients re-list.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::find;
    use http_body_util::BodyExt;

    fn start(sb: &Sandbox, query: &str) -> Body {
        start_as(sb, query, false)
    }

    fn start_as(sb: &Sandbox, query: &str, as_table: bool) -> Body {
        let accept = if as_table {
            "application/json;as=Table;v=v1;g=meta.k8s.io, application/json"
        } else {
            "application/json"
        };
        start_accepting(sb, query, accept).into_body()
    }

    fn start_accepting(sb: &Sandbox, query: &str, accept: &str) -> Response<Body> {
        let def = find("", "v1", "configmaps").unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        let q = Query::parse(Some(query));
        serve(
            sb,
            def,
            Some("default".into()),
            LabelSelector::parse(q.get("labelSelector").unwrap_or("")).unwrap(),
            FieldSelector::default(),
            &q,
            &headers,
        )
    }

    async fn next_event(body: &mut Body) -> Option<Value> {
        let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .ok()??
            .ok()?;
        serde_json::from_slice(&frame.into_data().ok()?).ok()
    }

    fn create(sb: &Sandbox, name: &str, labels: Value) {
        let def = find("", "v1", "configmaps").unwrap();
        let obj = json!({"metadata": {"name": name, "labels": labels}});
        sb.store().create(def, Some("default"), obj, false).unwrap();
    }

    #[tokio::test]
    async fn initial_then_live_with_selector() {
        let sb = Sandbox::new();
        create(&sb, "old", json!({"app": "a"}));
        let mut body = start(&sb, "watch=true&labelSelector=app%3Da");
        let ev = next_event(&mut body).await.unwrap();
        assert_eq!(
            (
                ev["type"].as_str(),
                ev["object"]["metadata"]["name"].as_str()
            ),
            (Some("ADDED"), Some("old"))
        );
        create(&sb, "skipped", json!({"app": "b"}));
        create(&sb, "new", json!({"app": "a"}));
        let ev = next_event(&mut body).await.unwrap();
        assert_eq!(ev["object"]["metadata"]["name"], "new");
    }

    #[tokio::test]
    async fn protobuf_frames_when_preferred() {
        let sb = Sandbox::new();
        create(&sb, "old", json!({"app": "a"}));
        let resp = start_accepting(
            &sb,
            "watch=1",
            "application/vnd.kubernetes.protobuf, application/json",
        );
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/vnd.kubernetes.protobuf;stream=watch"
        );
        let mut body = resp.into_body();
        create(&sb, "new", json!({}));
        let mut buf = Vec::new();
        let mut events = Vec::new();
        while events.len() < 2 {
            let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            buf.extend_from_slice(&frame.into_data().unwrap());
            let (evs, rest) = portcullis_proto::response::read_watch_frames(&buf).unwrap();
            let rest = rest.to_vec();
            events.extend(evs);
            buf = rest;
        }
        assert_eq!(events[0]["type"], "ADDED");
        assert_eq!(events[0]["object"]["metadata"]["name"], "old");
        assert_eq!(events[0]["object"]["kind"], "ConfigMap");
        assert_eq!(events[1]["object"]["metadata"]["name"], "new");
    }

    #[tokio::test]
    async fn resume_expired_and_timeout() {
        let sb = Sandbox::new();
        let rv = sb.store().rv();
        create(&sb, "a", json!({}));
        let mut body = start(
            &sb,
            &format!("watch=1&resourceVersion={rv}&timeoutSeconds=1"),
        );
        let ev = next_event(&mut body).await.unwrap();
        assert_eq!(ev["object"]["metadata"]["name"], "a");
        // The stream ends by itself once timeoutSeconds passes.
        assert!(next_event(&mut body).await.is_none());
        for i in 0..crate::store::HISTORY + 1 {
            create(&sb, &format!("c{i}"), json!({}));
        }
        let mut body = start(&sb, &format!("watch=1&resourceVersion={rv}"));
        let ev = next_event(&mut body).await.unwrap();
        assert_eq!(ev["type"], "ERROR");
        assert_eq!(ev["object"]["code"], 410);
        assert_eq!(ev["object"]["reason"], "Expired");
    }

    #[tokio::test]
    async fn table_events_carry_headers_once() {
        let sb = Sandbox::new();
        create(&sb, "one", json!({}));
        let mut body = start_as(&sb, "watch=1", true);
        let first = next_event(&mut body).await.unwrap();
        assert_eq!(first["object"]["kind"], "Table");
        assert_eq!(first["object"]["rows"][0]["cells"][0], "one");
        assert!(!first["object"]["columnDefinitions"]
            .as_array()
            .unwrap()
            .is_empty());
        create(&sb, "two", json!({}));
        let second = next_event(&mut body).await.unwrap();
        assert_eq!(
            second["object"]["rows"][0]["object"]["kind"],
            "PartialObjectMetadata"
        );
        assert!(second["object"]["columnDefinitions"]
            .as_array()
            .unwrap()
            .is_empty());
    }
}
