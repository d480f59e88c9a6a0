//! When a list names a past the sandbox no longer keeps: continue tokens that carry the
//! resourceVersion of their first page (as the apiserver's, `{"v":"meta.k8s.io/v1","rv":N,
//! "start":KEY}` base64url), and 410 `Expired` for what fell out of the per-resource history.
//!
//! Accepts: a continue token whose rv is still within the history (or -1: "continue at the
//! latest", as upstream's re-issued tokens), `resourceVersionMatch=Exact` at a kept rv,
//! `NotOlderThan` at any rv up to the current one. Rejects: a malformed token (400
//! `continue key is not valid`), an expired token (410 Expired with upstream's message and a
//! fresh token in `metadata.continue`), `Exact` older than the history (410 `too old resource
//! version: X (Y)`), an rv newer than the store (504 `Too large resource version`).
//! Like the watch cache, an `Exact` list within the history is served at the current state.

use base64::Engine;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::{discovery::ResourceDef, rest, rest::Query, store::Store, IntoResponse as _};
use portcullis::{body::Body, k8s::Status};

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// A continue token for the page after `key`, of a list taken at `rv`.
pub fn encode_continue(rv: i64, key: &str) -> String {
    let t = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t.to_string())
}

/// `(rv, start key)` of a continue token.
pub fn decode_continue(tok: &str) -> Result<(i64, String), Status> {
    let bad = || Status::bad_request("continue key is not valid");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad());
    }
    let rv = v["rv"].as_i64().ok_or_else(bad)?;
    let key = v["start"].as_str().ok_or_else(bad)?.to_string();
    Ok((rv, key))
}

fn expired(message: String, continue_token: Option<String>) -> Response<Body> {
    let status = Status::failure(StatusCode::GONE, "Expired", message);
    let mut v: Value = serde_json::from_slice(&status.to_json()).unwrap_or_default();
    if let Some(t) = continue_token {
        v["metadata"]["continue"] = json!(t);
    }
    rest::json_response(StatusCode::GONE, &v, "application/json")
}

/// Refuse a list that asks for a past no longer kept (or a future not yet reached).
pub fn check_list(store: &Store, def: &ResourceDef, q: &Query) -> Result<(), Response<Body>> {
    let compacted = store.compacted(def.plural);
    if let Some(tok) = q.get("continue").filter(|s| !s.is_empty()) {
        let (rv, key) = decode_continue(tok).map_err(|s| s.into_response())?;
        if rv != -1 && (rv as u64) < compacted {
            return Err(expired(
                CONTINUE_EXPIRED.to_string(),
                Some(encode_continue(-1, &key)),
            ));
        }
        return Ok(());
    }
    let Some(rv) = q.get("resourceVersion").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let rv: u64 = rv.parse().map_err(|_| {
        Status::bad_request(format!("invalid resource version: {rv}")).into_response()
    })?;
    if rv > store.rv() {
        let mut s = Status::failure(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {rv}, current: {}", store.rv()),
        );
        s.details = Some(portcullis::k8s::status::StatusDetails {
            causes: vec![portcullis::k8s::status::StatusCause {
                reason: "ResourceVersionTooLarge".into(),
                message: "Too large resource version".into(),
                field: String::new(),
            }],
            retry_after_seconds: Some(1),
            ..Default::default()
        });
        return Err(s.into_response());
    }
    if q.get("resourceVersionMatch") == Some("Exact") && rv < compacted {
        return Err(expired(
            format!("too old resource version: {rv} ({compacted})"),
            None,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_expire() {
        let t = encode_continue(7, "default\u{0}b");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (7, "default\u{0}b".to_string())
        );
        assert_eq!(decode_continue("nope").unwrap_err().code, 400);
        let def = crate::discovery::find("", "v1", "configmaps").unwrap();
        let mut s = Store::new();
        s.set_history_limit(2);
        for i in 0..4 {
            let cm = json!({"metadata": {"name": format!("c{i}")}});
            s.create(def, Some("default"), cm, false).unwrap();
        }
        let q = Query::parse(Some(&format!("continue={t}")));
        let resp = check_list(&s, def, &q).unwrap_err();
        assert_eq!(resp.status(), StatusCode::GONE);
        let q = Query::parse(Some("resourceVersion=7&resourceVersionMatch=Exact"));
        assert_eq!(check_list(&s, def, &q).unwrap_err().status(), 410);
        let q = Query::parse(Some("resourceVersion=7&resourceVersionMatch=NotOlderThan"));
        assert!(check_list(&s, def, &q).is_ok());
        let q = Query::parse(Some("resourceVersion=999999"));
        assert_eq!(check_list(&s, def, &q).unwrap_err().status(), 504);
    }
}
