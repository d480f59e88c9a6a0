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
