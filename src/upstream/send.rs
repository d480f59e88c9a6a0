//! Sending one request to the upstream: which endpoint, what its breaker learns, and when it
//! is sent again elsewhere.
//!
//! Endpoints are tried in [`Upstream::candidates`] order. One whose breaker refuses is skipped
//! without a network attempt. A *safe* request — `GET` / `HEAD` with no body (get, list, watch
//! start, discovery) — that fails on the way (connect or TLS error, or the connection broke
//! before a response head) is sent again to the next endpoint: it is idempotent and carries
//! nothing to lose. Any other request gets one network attempt: its body may have reached an
//! API server and is never replayed. A request that was not sent at all (no connection to the
//! endpoint could be opened, or each one was closing, e.g. after the API server's GOAWAY:
//! [`PoolError::NotSent`]) goes on to the next endpoint whatever its method, its body
//! untouched; a request whose stream the API server refused unprocessed (a GOAWAY that crossed
//! it, `REFUSED_STREAM`: `h2conn::replay`) is first sent again by the pool, as client-go's
//! transport does, when its whole body was in hand — otherwise (a body still arriving) it is a
//! neutral 503 with `Retry-After` (`UpstreamFailure::RefusedUnprocessed`): nothing was carried
//! out. The deadline covers all attempts; running out of it is a 504 and is not retried.
//!
//! The breaker learns: a response head with 502 / 503 / 504 (a 504 with `Retry-After` apart:
//! the API server's answer to a `resourceVersion` it has not seen yet), a transport error or a
//! timeout is a failure — a send that failed because the client's own body did is not
//! (`client_body`: a 400 to the client); a 429 (the API server's priority and fairness) is neutral and counted in
//! `portcullis_upstream_throttled_total`; any other answer (4xx included) is a success. The
//! answer itself always goes to the client unchanged. What a client decides is not the API
//! server's health ([`Judged`]): running out of a deadline the client's own `?timeout=` made
//! shorter than `upstream.request_timeout` (and the API server's 504 for such a request), and
//! a 502 / 503 / 504 relayed from behind the API server (a `proxy` request: the pod, service or
//! node answered it), and a `proxy` request whose stream was reset or whose answer could not be
//! read ([`PoolError::is_stream_level`]; a 502, not sent elsewhere) are neutral — otherwise any caller could open every breaker, and take
//! the proxy out of its Service's endpoints, with a few reads whose `?timeout=` runs out
//! before the API server answers. So is the aggregator's error for an aggregated API it could
//! not reach (`from_aggregator`): one broken APIService must not open the breaker for every
//! request. Refused by every breaker: 503
//! `Refusal::BreakerOpen`; nothing reachable: 502; out of time: 504.
//!
//! An endpoint whose connections are all full at its connection cap (`pool.rs`) is skipped
//! like a refusing breaker (nothing was sent, so any request may go elsewhere; neutral for
//! the breaker); when no endpoint can take the request for that reason: 503
//! `Refusal::UpstreamBusy` with Retry-After.

use std::{sync::Arc, time::Duration};

use http::{request::Parts, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use tokio::time::Instant;

use super::{
    breaker::{Outcome, Permit},
    client::Endpoint,
    metrics::UpstreamMetrics,
    pool::PoolError,
    Upstream,
};
use crate::{
    body::{self, Body},
    refusal::{BodyRefusal, BreakerOpen, Refusal, UpstreamFailure},
};

mod client_body;

/// Which outcomes of one request tell the breaker about the API server itself (see the
/// module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// The deadline is the operator's (`request_timeout`, or a longer one a client asked for):
    /// running out of it, or the API server's 504, is a failure.
    pub deadline_is_operators: bool,
    /// A `proxy` request: a 5xx may be the backend's, relayed.
    pub relays_backend: bool,
}

impl Judged {
    /// Every outcome counts (the proxy's own requests: reads for judging, reviews).
    pub const ALL: Judged = Judged {
        deadline_is_operators: true,
        relays_backend: false,
    };

    fn timeout(self) -> Outcome {
        if self.deadline_is_operators {
            Outcome::Failure
        } else {
            Outcome::Neutral
        }
    }
}

/// An upstream answer and the endpoint that gave it.
pub struct Sent {
    pub resp: Response<Body>,
    pub endpoint: Arc<Endpoint>,
}

/// Whether a request may be sent again to another endpoint (see the module doc).
pub fn is_safe(parts: &Parts, body: &Body) -> bool {
    (parts.method == Method::GET || parts.method == Method::HEAD) && body.is_end_stream()
}

/// Send `parts` + `body` (headers already prepared; the URI is origin-form and is rebased on
/// each endpoint) within `deadline` (None: no deadline, a long-running request).
pub async fn send(
    up: &Upstream,
    mut parts: Parts,
    body: Body,
    deadline: Option<Duration>,
    judged: Judged,
) -> Result<Sent, Refusal> {
    let safe = is_safe(&parts, &body);
    // A body that can still fail is watched: its failure is the client's, not the endpoint's.
    let (body, body_failed) = if body.is_end_stream() {
        (body, client_body::Failed::default())
    } else {
        client_body::watch(body)
    };
    let watcher = parts.extensions.get::<super::Watcher>().cloned();
    let until = deadline.map(|d| Instant::now() + d);
    let mut body = Some(body);
    let mut refused = Vec::new();
    let mut retry_after = Duration::MAX;
    let mut last_error: Option<&'static str> = None;
    let mut busy = false;
    let candidates = up.candidates();
    let last = candidates.len().saturating_sub(1);
    for (i, ep) in candidates.into_iter().enumerate() {
        let permit = match ep.breaker.admit(std::time::Instant::now()) {
            Ok(p) => p,
            Err(rejected) => {
                refused.push((ep.name.clone(), rejected.state.name()));
                retry_after = retry_after.min(rejected.retry_after);
                continue;
            }
        };
        let Ok(uri) = ep.uri_for(parts.uri.path_and_query()) else {
            return Err(UpstreamFailure::Unforwardable.into());
        };
        let mut req = Request::new(if safe {
            body::empty()
        } else {
            match body.take() {
                Some(b) => b,
                None => break,
            }
        });
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        // The last candidate takes the headers; earlier ones send a copy (a fail-over needs them).
        *req.headers_mut() = if i == last {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        let sent = ep.pool().request(req);
        let result = match until {
            None => Ok(sent.await),
            Some(until) => tokio::time::timeout_at(until, sent).await,
        };
        // Anything but "nothing was sent" may have reached the API server (a deadline that
        // fired while waiting for a connection counts too: the caller cannot tell).
        if !matches!(
            result,
            Ok(Err(PoolError::NotSent(..)
                | PoolError::Busy(_)
                | PoolError::Refused(_)))
        ) {
            if let Some(w) = &watcher {
                w.0.left_the_proxy();
            }
        }
        match result {
            Ok(Ok(resp)) if resp.status() == StatusCode::UNAUTHORIZED && !judged.relays_backend => {
                // Only the proxy's own credentials travel upstream, so a 401 is theirs: a 502
                // naming them (not a 401 that makes kubectl and exec plugins ask the user to
                // log in again), and no sign of health — an endpoint answering only this goes
                // unready. Neutral for the breaker: one aggregated API's 401 must not open it
                // for every request.
                tracing::error!(endpoint = %ep.name, "the upstream API server refused the proxy's own credentials (401)");
                report(&ep, permit, Outcome::Neutral);
                return Err(UpstreamFailure::CredentialsRefused.into());
            }
            Ok(Ok(resp)) => {
                let outcome = outcome_of(
                    resp.status(),
                    resp.headers(),
                    parts.uri.path(),
                    judged,
                    &ep,
                    &up.metrics,
                );
                answered(&ep, permit, outcome);
                return Ok(Sent { resp, endpoint: ep });
            }
            Ok(Err(PoolError::Busy(unsent))) => {
                // Nothing was sent: the body goes on to the next endpoint untouched.
                if !safe {
                    body = Some(unsent.into_body());
                }
                report(&ep, permit, Outcome::Neutral);
                up.metrics
                    .busy
                    .get_or_create(&UpstreamMetrics::endpoint(&ep.name))
                    .inc();
                tracing::warn!(endpoint = %ep.name, "every upstream connection is at its stream limit and the connection cap is reached");
                busy = true;
                continue;
            }
            Ok(Err(PoolError::NotSent(why, unsent, first_hand))) => {
                // Nothing left the proxy (no connection, or each one closing): even a write
                // goes on to the next endpoint, its body untouched.
                tracing::warn!(endpoint = %ep.name, err = %why, "upstream request not sent");
                // A connect shared by a burst is one observation: counted once (by the
                // request that made it), or one slow handshake would open the breaker.
                let outcome = if first_hand {
                    Outcome::Failure
                } else {
                    Outcome::Neutral
                };
                report(&ep, permit, outcome);
                last_error = Some("connection failed");
                if !safe {
                    body = Some(unsent.into_body());
                }
                if i != last {
                    up.metrics
                        .failovers
                        .get_or_create(&UpstreamMetrics::endpoint(&ep.name))
                        .inc();
                }
            }
            Ok(Err(PoolError::Refused(err))) => {
                // A GOAWAY crossed the request (or `REFUSED_STREAM`) while its body was still
                // arriving: the API server did not process it, but the body cannot be sent
                // again from here. The client can: 503 with `Retry-After`. Neutral — a
                // connection closing gracefully is the API server working as it should.
                tracing::debug!(endpoint = %ep.name, %err, "the upstream refused a streamed request unprocessed");
                report(&ep, permit, Outcome::Neutral);
                return Err(UpstreamFailure::RefusedUnprocessed.into());
            }
            Ok(Err(err)) if body_failed.happened() => {
                // The client's body failed while it was sent (the stream was reset for it):
                // neutral, not sent elsewhere, and the client's error — the API server does
                // not act on a request whose body never ended.
                tracing::debug!(endpoint = %ep.name, %err, "the client's request body failed while being forwarded");
                report(&ep, permit, Outcome::Neutral);
                return Err(Refusal::Body(BodyRefusal::Unreadable(
                    "it failed while being forwarded".into(),
                )));
            }
            Ok(Err(err)) if judged.relays_backend && err.is_stream_level() => {
                // A `proxy` request's stream reset, or an answer that could not be read (a
                // header block over the limit): the backend's doing as much as the API
                // server's, and the connection is fine — neutral and not sent elsewhere, or
                // any caller whose pod answers so could open every breaker.
                tracing::warn!(endpoint = %ep.name, %err, "upstream proxy request failed");
                report(&ep, permit, Outcome::Neutral);
                last_error = Some(err.describe());
                break;
            }
            Ok(Err(err)) => {
                tracing::warn!(endpoint = %ep.name, %err, "upstream request failed");
                report(&ep, permit, Outcome::Failure);
                last_error = Some(err.describe());
                if !safe {
                    break;
                }
                if i == last {
                    continue;
                }
                up.metrics
                    .failovers
                    .get_or_create(&UpstreamMetrics::endpoint(&ep.name))
                    .inc();
            }
            Err(_) => {
                tracing::warn!(endpoint = %ep.name, "upstream gave no response head in time");
                report(&ep, permit, judged.timeout());
                return Err(Refusal::Timeout);
            }
        }
    }
    match last_error {
        Some(why) => Err(UpstreamFailure::Unreachable(why).into()),
        None if busy => Err(Refusal::UpstreamBusy),
        None => Err(breaker_open(refused, retry_after)),
    }
}

/// The refusal when no endpoint's breaker admitted the request.
pub fn breaker_open(endpoints: Vec<(String, &'static str)>, retry_after: Duration) -> Refusal {
    // Rounded up: a client retrying after `Retry-After` must find the breaker ready.
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    Refusal::BreakerOpen(Box::new(BreakerOpen {
        endpoints,
        retry_after: u32::try_from(secs.max(1)).unwrap_or(u32::MAX),
    }))
}

/// What an answer (its status and headers, for a request to `path`) tells the breaker.
pub fn outcome_of(
    status: StatusCode,
    headers: &HeaderMap,
    path: &str,
    judged: Judged,
    ep: &Endpoint,
    metrics: &UpstreamMetrics,
) -> Outcome {
    match status {
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
            if judged.relays_backend || from_aggregator(path, headers) =>
        {
            Outcome::Neutral
        }
        // A 504 with `Retry-After` is the API server judging the request, not failing: its
        // watch cache answers a list or get asking for a `resourceVersion` newer than it has
        // seen ("Too large resource version", `NewTooLargeResourceVersionError`: a 504 Status
        // with `retryAfterSeconds: 1`, which `ErrorNegotiated` turns into the header) — any
        // reader can ask for one, and counted, five would open the breaker for everyone. Its
        // own request timeout (the `WithTimeoutForNonLongRunningRequests` writer) encodes its
        // 504 Status directly and sets no `Retry-After`: still counted.
        StatusCode::GATEWAY_TIMEOUT if headers.contains_key(http::header::RETRY_AFTER) => {
            Outcome::Neutral
        }
        StatusCode::GATEWAY_TIMEOUT => judged.timeout(),
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => Outcome::Failure,
        StatusCode::TOO_MANY_REQUESTS => {
            metrics
                .throttled
                .get_or_create(&UpstreamMetrics::endpoint(&ep.name))
                .inc();
            Outcome::Neutral
        }
        _ => Outcome::Success,
    }
}

/// Whether an error answer is kube-apiserver's aggregator reporting an aggregated API (an
/// APIService backed by a Service, e.g. metrics-server) it could not reach: it says nothing of
/// the API server's own health — its other APIs keep working — and counted, one broken
/// APIService (`kubectl top`, an HPA, legacy discovery of its group) would open the breaker
/// and cut every request off. (When one API server of several cannot reach the service while
/// the others can — its network path to the service network — it is not failed over either:
/// the lesser harm.) The aggregator writes those answers with Go's `http.Error`
/// (`text/plain; charset=utf-8` and `X-Content-Type-Options: nosniff`, kube-aggregator's
/// `handler_proxy.go` and its upgrade-aware responder) and only for paths under
/// `/apis/<group>/<version>` of a group kube-apiserver does not serve itself; the API
/// server's own failures (not ready, shutting down, a timeout) are Status JSON, and a load
/// balancer's error pages are HTML.
fn from_aggregator(path: &str, headers: &HeaderMap) -> bool {
    let Some(rest) = path.strip_prefix("/apis/") else {
        return false;
    };
    let mut segments = rest.split('/');
    let (Some(group), Some(version)) = (segments.next(), segments.next()) else {
        return false;
    };
    !group.is_empty()
        && !version.is_empty()
        && !crate::k8s::BUILT_IN_GROUPS.contains(&group)
        && headers
            .get(http::header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes)
            == Some(b"text/plain; charset=utf-8")
        && headers
            .get("x-content-type-options")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"nosniff"))
}

/// The endpoint answered (an ordinary request or an upgrade): tell the breaker, and record
/// the answer as a sign of health unless the breaker counts it as a failure — the API server's
/// own 503, say, or a load balancer's with no API server behind it; with the breaker off, such
/// answers alone would keep `/readyz` green for ever.
pub fn answered(ep: &Arc<Endpoint>, permit: Permit, outcome: Outcome) {
    if outcome != Outcome::Failure {
        ep.mark_ok();
    }
    report(ep, permit, outcome);
}

/// Tell the breaker; an endpoint whose breaker just opened starts probing for its recovery.
pub fn report(ep: &Arc<Endpoint>, permit: Permit, outcome: Outcome) {
    permit.record(outcome);
    if ep.breaker.next_probe().is_some() {
        ep.spawn_recovery();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str, nosniff: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        if nosniff {
            h.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
        }
        h
    }

    /// Only Go's `http.Error` shape, and only under `/apis/<group>/<version>` of a group
    /// the API server does not serve itself, is the aggregator's: the API server's Status
    /// JSON, an HTML error page, a plain text without `nosniff`, core, built-in group and
    /// group-discovery paths are not.
    #[test]
    fn the_aggregators_error_is_told_by_its_shape_and_path() {
        let go = headers("text/plain; charset=utf-8", true);
        for path in [
            "/apis/metrics.k8s.io/v1beta1",
            "/apis/metrics.k8s.io/v1beta1/",
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/a/pods/*/qps",
        ] {
            assert!(from_aggregator(path, &go), "{path}");
        }
        for path in [
            "/api/v1/pods",
            "/apis",
            "/apis/",
            "/apis/metrics.k8s.io",
            "/apis/metrics.k8s.io/",
            "/readyz",
            "/apis/apps/v1/deployments",
            "/apis/rbac.authorization.k8s.io/v1/roles",
        ] {
            assert!(!from_aggregator(path, &go), "{path}");
        }
        let path = "/apis/metrics.k8s.io/v1beta1/nodes";
        for other in [
            headers("application/json", true),
            headers("text/html", true),
            headers("text/plain; charset=utf-8", false),
            HeaderMap::new(),
        ] {
            assert!(!from_aggregator(path, &other), "{other:?}");
        }
    }
}
