//! Reading the current object upstream, under the caller's impersonated identity, so the
//! sanitizer can judge a patch by the object it will produce.
//!
//! A plain GET of the object the request names (without its subresource: a patch of
//! `pods/ephemeralcontainers` is judged on the Pod) with the same header hygiene and
//! impersonation as a forwarded request — the caller can only learn what it may `get` anyway.
//! Returns the object, `Absent` on 404, or the Status to answer with: 403 when the caller may
//! not read it, 503 when it cannot be read for any other reason.

use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;

use super::{
    forward::prepare_headers,
    send::{send, Judged},
    Outbound, Upstream,
};
use crate::{
    body,
    k8s::request::RequestInfo,
    refusal::{BodyRefusal, Refusal},
    sanitize::judge::Current,
};

/// Largest object we read back (etcd's own limit is 1.5 MiB; managed fields can add more).
const MAX_OBJECT: usize = 16 * 1024 * 1024;

/// Percent-encode a path segment (names are DNS-like, but `:` and others occur, e.g. RBAC).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The object's own URL path.
pub fn object_path(info: &RequestInfo) -> String {
    let mut p = if info.api_group.is_empty() {
        format!("/api/{}", segment(&info.api_version))
    } else {
        format!(
            "/apis/{}/{}",
            segment(&info.api_group),
            segment(&info.api_version)
        )
    };
    // A namespace object is classified with itself as its namespace (as the API server's
    // RequestInfo does) but is cluster-scoped: `/api/v1/namespaces/{name}`.
    let namespace_object = info.api_group.is_empty() && info.resource == "namespaces";
    if !info.namespace.is_empty() && !namespace_object {
        p.push_str("/namespaces/");
        p.push_str(&segment(&info.namespace));
    }
    p.push('/');
    p.push_str(&segment(&info.resource));
    p.push('/');
    p.push_str(&segment(&info.name));
    p
}

/// What the judged write is called in messages.
fn write_kind(info: &RequestInfo) -> &'static str {
    if info.verb == "patch" {
        "patch"
    } else {
        "update"
    }
}

/// How long the read of the current object may take, for the request whose URI is `uri`: the
/// client's `?timeout=` (capped by `upstream.max_request_timeout`) or `upstream.request_timeout`,
/// as the request itself is bounded (`deadline.rs`) — kube-apiserver bounds the whole request,
/// its own read of the object included, by the client's timeout.
pub fn limit(up: &Upstream, uri: &http::Uri) -> std::time::Duration {
    super::deadline::deadline(uri, false, up.request_timeout, up.max_request_timeout)
        .unwrap_or(up.request_timeout)
}

/// GET the object `info` names, as the caller, within `limit` (see [`limit`]) for the answer
/// and its body together.
pub async fn current(
    up: &Upstream,
    info: &RequestInfo,
    ob: &Outbound<'_>,
    limit: std::time::Duration,
) -> Result<Current, Refusal> {
    let until = tokio::time::Instant::now() + limit;
    let unavailable = |why: String| -> Refusal {
        tracing::warn!(%why, path = %info.path, "current object unavailable for judging a patch");
        BodyRefusal::CurrentUnavailable(format!(
            "portcullis could not read the current {} {:?} to judge this {}: {why}",
            info.resource,
            info.name,
            write_kind(info)
        ))
        .into()
    };
    if info.name.is_empty() {
        return Err(BodyRefusal::NoObjectName.into());
    }
    let path = object_path(info);
    let pq = path
        .parse::<http::uri::PathAndQuery>()
        .map_err(|e| BodyRefusal::PatchTarget(format!("invalid object path: {e}")))?;
    let mut headers = HeaderMap::new();
    prepare_headers(&mut headers, up, ob)?;
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let mut req = Request::new(body::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = http::Uri::from(pq);
    *req.headers_mut() = headers;
    let (parts, empty) = req.into_parts();
    let resp = match send(up, parts, empty, Some(limit), Judged::ALL).await {
        Ok(sent) => sent.resp,
        Err(Refusal::Timeout) => return Err(unavailable("upstream timeout".into())),
        // A 401 arrives here as `CredentialsRefused` (`send`): the proxy's own credentials,
        // not the caller's doing, and no reason to judge an update on its body alone.
        Err(refusal) => return Err(unavailable(refusal.status().message)),
    };
    let status = resp.status();
    let bytes =
        match tokio::time::timeout_at(until, collect_limited(resp.into_body(), MAX_OBJECT)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unavailable(format!("reading the object failed: {e}"))),
            Err(_) => return Err(unavailable("upstream timeout".into())),
        };
    match status {
        StatusCode::OK => serde_json::from_slice(&bytes)
            .map(Current::Found)
            .map_err(|e| unavailable(format!("the object is not JSON: {e}"))),
        StatusCode::NOT_FOUND => Ok(Current::Absent),
        StatusCode::FORBIDDEN => Err(BodyRefusal::CurrentForbidden(if info.verb == "patch" {
            format!(
                "portcullis judges this patch on the current {} {:?}, which {} may not get: grant get on it, or send the whole object with an update",
                info.resource, info.name, ob.identity.user
            )
        } else {
            format!(
                "portcullis judges this {} on the current {} {:?}, which {} may not get: grant get on it",
                write_kind(info), info.resource, info.name, ob.identity.user
            )
        })
        .into()),
        other => Err(unavailable(format!("upstream answered {}", other.as_u16()))),
    }
}

/// The body, up to `max` bytes (counted here rather than with `http_body_util::Limited`,
/// whose bound on the body's error rustc cannot prove inside a `Send` future for a body whose
/// error is already a box).
pub(crate) async fn collect_limited(
    mut body: crate::body::Body,
    max: usize,
) -> Result<bytes::Bytes, crate::body::BoxError> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > max {
                return Err("length limit exceeded".into());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths() {
        let c = |p: &str| {
            crate::k8s::request::classify(&Method::PATCH, &p.parse().unwrap(), &HeaderMap::new())
                .unwrap()
        };
        assert_eq!(
            object_path(&c("/api/v1/namespaces/a/pods/web/ephemeralcontainers")),
            "/api/v1/namespaces/a/pods/web"
        );
        assert_eq!(
            object_path(&c("/apis/apps/v1/namespaces/a/deployments/web")),
            "/apis/apps/v1/namespaces/a/deployments/web"
        );
        assert_eq!(
            object_path(&c(
                "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:x%20y"
            )),
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:x%20y"
        );
        // The namespace object (and its status) is cluster-scoped.
        for p in [
            "/api/v1/namespaces/team-a",
            "/api/v1/namespaces/team-a/status",
        ] {
            assert_eq!(object_path(&c(p)), "/api/v1/namespaces/team-a");
        }
    }
}
