//! Asking the upstream API server a `SelfSubjectAccessReview`: as the caller (the
//! impersonated identity, so the answer is RBAC's for that user — what `kubectl auth can-i`
//! through the proxy needs), or as the proxy itself (the startup self-test: may it
//! impersonate?). Never forwards a client's own review with the proxy's power.
//!
//! The caller's question goes through the endpoint selection and circuit breakers like any
//! forwarded request; the proxy's own goes straight to one endpoint, as its `/readyz` probe.
//!
//! Returns the review's `status` (`allowed`, `denied`, `reason`, `evaluationError`), or why
//! there is none (unreachable, timeout, an answer that is not a review) as text.

use http::{header, HeaderMap, HeaderValue, Method, Request};
use serde_json::{json, Value};

use super::{
    forward::prepare_headers,
    send::{send, Judged},
    Outbound, Upstream,
};
use crate::body;

/// Largest review answer we read (a review is a few hundred bytes).
const MAX_ANSWER: usize = 1024 * 1024;

/// Who asks.
#[derive(Clone, Copy)]
pub enum Asker<'a> {
    /// The caller, impersonated as for a forwarded request.
    Caller(&'a Outbound<'a>),
    /// The proxy, with its own credentials and no impersonation.
    Proxy,
}

/// POST a SelfSubjectAccessReview with `spec` (`resourceAttributes` or
/// `nonResourceAttributes`) and return its `status`.
pub async fn access_review(up: &Upstream, asker: Asker<'_>, spec: &Value) -> Result<Value, String> {
    self_review(
        up,
        asker,
        "SelfSubjectAccessReview",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        spec,
    )
    .await
}

/// POST a SelfSubjectRulesReview for `namespace` as the proxy and return its `status`
/// (`resourceRules`: cluster-wide rules are listed in every namespace's answer).
pub async fn rules_review(up: &Upstream, namespace: &str) -> Result<Value, String> {
    self_review(
        up,
        Asker::Proxy,
        "SelfSubjectRulesReview",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        &json!({ "namespace": namespace }),
    )
    .await
}

async fn self_review(
    up: &Upstream,
    asker: Asker<'_>,
    kind: &str,
    path: &'static str,
    spec: &Value,
) -> Result<Value, String> {
    let mut headers = HeaderMap::new();
    match asker {
        Asker::Caller(ob) => prepare_headers(&mut headers, up, ob)
            .map_err(|_| "the caller's identity cannot be sent upstream".to_owned())?,
        Asker::Proxy => {
            if let Some(auth) = up.credentials.authorization() {
                headers.insert(header::AUTHORIZATION, (*auth).clone());
            }
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let review = json!({"apiVersion": "authorization.k8s.io/v1",
        "kind": kind, "spec": spec});
    let mut req = Request::new(body::full(review.to_string()));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = http::Uri::from_static(path);
    *req.headers_mut() = headers;
    let resp = match asker {
        Asker::Caller(_) => {
            let (parts, body) = req.into_parts();
            match send(up, parts, body, Some(up.request_timeout), Judged::ALL).await {
                Ok(sent) => sent.resp,
                Err(refusal) => return Err(refusal.status().message),
            }
        }
        // The proxy's own question, like its `/readyz` probe: straight to one endpoint, outside
        // the circuit breakers (its failures are not the clients' and must not open them).
        Asker::Proxy => {
            // The first healthy endpoint, else the first (no round-robin turn is taken).
            let now = std::time::Instant::now();
            let eps = up.endpoints();
            let ep = eps
                .iter()
                .find(|e| e.preferred(now))
                .or_else(|| eps.first())
                .cloned()
                .ok_or("no upstream endpoint")?;
            let uri = ep
                .uri_for(req.uri().path_and_query())
                .map_err(|e| format!("invalid upstream URI: {e}"))?;
            *req.uri_mut() = uri;
            match tokio::time::timeout(up.request_timeout, ep.pool().request(req)).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => return Err(format!("{} could not be reached: {e}", ep.name)),
                Err(_) => return Err(format!("{} did not answer in time", ep.name)),
            }
        }
    };
    let code = resp.status();
    let bytes = match tokio::time::timeout(
        up.request_timeout,
        super::fetch::collect_limited(resp.into_body(), MAX_ANSWER),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(format!("reading the answer failed: {e}")),
        Err(_) => return Err("upstream timeout".into()),
    };
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|_| format!("the API server answered {} with no review", code.as_u16()))?;
    if !code.is_success() || !answer["status"].is_object() {
        let why = answer["message"]
            .as_str()
            .unwrap_or("no review in the answer");
        return Err(format!("the API server answered {}: {why}", code.as_u16()));
    }
    Ok(answer["status"].clone())
}
