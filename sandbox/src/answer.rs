//! Protobuf answers, negotiated from `Accept` like kube-apiserver (see `portcullis_proto::accept`).
//!
//! Every handler builds its answer as JSON; [`finish`] re-encodes a resource request's
//! `application/json` answer — an object, a `*List`, a `Status` error — as `k8s\0` +
//! `runtime.Unknown` when the client prefers `application/vnd.kubernetes.protobuf` (client-go's
//! typed clients, so kubectl's typed commands, send `application/vnd.kubernetes.protobuf,
//! application/json`). Watches encode their own frames (`watch.rs`, through [`wants_protobuf`]).
//! Left in JSON: Table answers (their own Content-Type; Table has no protobuf upstream),
//! discovery, `/version`, OpenAPI (own negotiation), logs and streams, and any body without a
//! protobuf message (the client asked for JSON too). A client that accepts *only* protobuf for
//! such a body gets `406 NotAcceptable`, as the API server answers it for custom resources.
//!
//! Compression ([`gzip_large`]): a resource request's serialized answer over 128 KiB goes
//! gzipped to a client that accepts gzip, as kube-apiserver sends it. Not compressed here: watch
//! streams (Kubernetes 1.37's `WatchListCompression` gzips a watch-list stream, one member per
//! event, as read in kube-rs#2079 — not run here), discovery, logs.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use portcullis::{body::Body, k8s::Status};
use portcullis_proto::{
    accept::{preferences, Media},
    MEDIA_TYPE,
};
use serde_json::Value;

use super::IntoResponse as _;

/// Marks a streamed answer (a watch), which is never collected and re-encoded.
#[derive(Clone, Copy)]
pub struct Streaming;

/// The client's `Accept`, joined (a client may send several header lines).
pub fn accept_of(h: &HeaderMap) -> Option<String> {
    let all: Vec<&str> = h
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!all.is_empty()).then(|| all.join(","))
}

/// Whether the client prefers protobuf to JSON.
pub fn wants_protobuf(h: &HeaderMap) -> bool {
    preferences(accept_of(h).as_deref()).first() == Some(&Media::Protobuf)
}

/// Re-encode `resp` as protobuf when `accept` prefers it and the body has a message.
pub async fn finish(resp: Response<Body>, accept: Option<&str>) -> Response<Body> {
    let prefs = preferences(accept);
    if prefs.first() != Some(&Media::Protobuf) || resp.extensions().get::<Streaming>().is_some() {
        return resp;
    }
    let json_only = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct == "application/json");
    if !json_only {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await else {
        return Status::internal("the answer could not be read").into_response();
    };
    let bytes: Bytes = collected.to_bytes();
    let encoded = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| portcullis_proto::encode_object(&v).ok());
    match encoded {
        Some(pb) => {
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, portcullis::body::full(pb))
        }
        None if prefs.contains(&Media::Json) => {
            Response::from_parts(parts, portcullis::body::full(bytes))
        }
        None => Status::failure(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            "only the following media types are accepted: application/json".to_owned(),
        )
        .into_response(),
    }
}

/// kube-apiserver's threshold (`defaultGzipThresholdBytes` in its `responsewriters/writers.go`):
/// a serialized answer larger than this goes gzipped to a client that accepts gzip.
pub const GZIP_THRESHOLD: u64 = 128 * 1024;

/// Whether the client accepts gzip, read as kube-apiserver's `negotiateContentEncoding` reads
/// it: the first `Accept-Encoding` line, a comma-separated token that is exactly `gzip`
/// (`gzip;q=…` is not taken).
pub fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == "gzip"))
}

/// `resp` gzipped as kube-apiserver's `deferredResponseWriter` sends it (level 1,
/// `Content-Encoding: gzip`, `Vary: Accept-Encoding`) when it is a serialized object, list,
/// Table or Status larger than [`GZIP_THRESHOLD`]; anything else — streams (watches, followed
/// logs), logs, smaller answers — as it is.
pub async fn gzip_large(resp: Response<Body>) -> Response<Body> {
    let serialized = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ["application/json", "application/yaml", MEDIA_TYPE]
                .iter()
                .any(|t| ct.starts_with(t))
        });
    let large = hyper::body::Body::size_hint(resp.body())
        .exact()
        .is_some_and(|n| n > GZIP_THRESHOLD);
    if !serialized
        || !large
        || resp.extensions().get::<Streaming>().is_some()
        || resp.headers().contains_key(header::CONTENT_ENCODING)
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await else {
        return Status::internal("the answer could not be read").into_response();
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
    let zipped =
        std::io::Write::write_all(&mut gz, &collected.to_bytes()).and_then(|()| gz.finish());
    let Ok(zipped) = zipped else {
        return Status::internal("the answer could not be compressed").into_response();
    };
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, portcullis::body::full(zipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(code: StatusCode, v: Value) -> Response<Body> {
        super::super::rest::json_response(code, &v, "application/json")
    }

    async fn body(r: Response<Body>) -> Bytes {
        r.into_body().collect().await.unwrap().to_bytes()
    }

    const BOTH: &str = "application/vnd.kubernetes.protobuf, application/json";

    #[test]
    fn gzip_is_accepted_as_kube_apiserver_reads_accept_encoding() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, v.parse().unwrap());
            h
        };
        for yes in ["gzip", "deflate, gzip", " gzip ,br"] {
            assert!(accepts_gzip(&h(yes)), "{yes}");
        }
        for no in ["", "identity", "gzip;q=1.0", "x-gzip", "br"] {
            assert!(!accepts_gzip(&h(no)), "{no}");
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn only_serialized_answers_over_128_kib_are_gzipped() {
        let big = serde_json::json!({"kind": "ConfigMapList", "items": [{"data": {"a": "x".repeat(140_000)}}]});
        let resp = gzip_large(json(StatusCode::OK, big.clone())).await;
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(resp.headers()[header::VARY], "Accept-Encoding");
        let zipped = body(resp).await;
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut plain)
            .unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&plain).unwrap(), big);

        // At the threshold, not over it: as it is (`{"a":"…"}` is 8 bytes and the value); a
        // byte more is compressed.
        let at = |n: u64| serde_json::json!({"a": "x".repeat(n as usize - 8)});
        let resp = gzip_large(json(StatusCode::OK, at(GZIP_THRESHOLD))).await;
        assert!(resp.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(body(resp).await.len() as u64, GZIP_THRESHOLD);
        let resp = gzip_large(json(StatusCode::OK, at(GZIP_THRESHOLD + 1))).await;
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
        // A log is not a serialized object.
        let mut log = Response::new(portcullis::body::full("l".repeat(200_000)));
        log.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(gzip_large(log)
            .await
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_none());
    }

    /// Every kind the sandbox serves, and its list, can be answered in protobuf.
    #[test]
    fn every_served_kind_has_a_message() {
        for def in super::super::catalogue::RESOURCES {
            let av = def.api_version();
            assert!(
                portcullis_proto::schema::message_of(&av, def.kind).is_some(),
                "{av} {}",
                def.kind
            );
            if !def.verbs.contains(&"list") {
                continue;
            }
            let list = format!("{}List", def.kind);
            assert!(
                portcullis_proto::schema::message_of(&av, &list).is_some(),
                "{av} {list}"
            );
        }
    }

    #[tokio::test]
    async fn objects_lists_and_errors_in_protobuf() {
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}});
        let r = finish(json(StatusCode::OK, cm.clone()), Some(BOTH)).await;
        assert_eq!(r.headers()[header::CONTENT_TYPE], MEDIA_TYPE);
        assert_eq!(portcullis_proto::decode_object(&body(r).await).unwrap(), cm);

        let st = Status::not_found("configmaps", "", "x");
        let r = finish(st.into_response(), Some(BOTH)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], MEDIA_TYPE);
        let v = portcullis_proto::decode_object(&body(r).await).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["code"].as_i64()),
            (Some("Status"), Some(404))
        );
    }

    #[tokio::test]
    async fn json_when_asked_or_when_there_is_no_message() {
        let cm =
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        for accept in [
            None,
            Some("application/json"),
            Some("*/*"),
            Some("application/json, application/vnd.kubernetes.protobuf"),
        ] {
            let r = finish(json(StatusCode::OK, cm.clone()), accept).await;
            assert_eq!(
                r.headers()[header::CONTENT_TYPE],
                "application/json",
                "{accept:?}"
            );
        }
        let widget = serde_json::json!({"apiVersion": "example.com/v1", "kind": "Widget"});
        let r = finish(json(StatusCode::OK, widget.clone()), Some(BOTH)).await;
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            serde_json::from_slice::<Value>(&body(r).await).unwrap(),
            widget
        );
        let r = finish(json(StatusCode::OK, widget), Some(MEDIA_TYPE)).await;
        assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    }
}
