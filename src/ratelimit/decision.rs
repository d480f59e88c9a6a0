//! The decision: [`RateLimiter::check`] / [`RateLimiter::check_async`] for an authenticated
//! request, [`RateLimiter::source_blocked`] / [`RateLimiter::record_auth_failure`] around
//! authentication, [`RateLimiter::try_in_flight`] for load shedding.
//!
//! # What a request spends
//!
//! * **bucket**: `reads` for `get`, `list`, `watch` (each watch start) and non-resource
//!   `GET`/`HEAD`; `writes` for everything else (create, update, patch, delete,
//!   deletecollection, exec/attach/port-forward, which are `create`, and `proxy`).
//! * **cost** in tokens: 1, or the largest configured weight that applies —
//!   `cluster_wide_list` (a `list` without namespace), `unpaginated_list` (a `list` without a
//!   `limit` from 1 to [`MAX_PAGE`], or with `resourceVersion=0`, which the watch cache may
//!   serve whole), `deletecollection`; a watch that starts with the collection (no
//!   `resourceVersion`, `""`, `"0"`, or `sendInitialEvents=true`) costs what that list would.
//!   A cost above the burst is clamped to the burst.
//! * **stream permit** for long-running requests: `watches` (watch, any `log?follow`) or
//!   `sessions` (exec, attach, portforward, proxy); see [`super::streams`]. A non-follow log
//!   read is a plain read.
//! * **in-flight place** for every other request (a log read whole and `/debug/pprof/`
//!   included), where an `in_flight` cap applies: held until the upstream answer has been read
//!   (see [`super::inflight::SharedPlace`]).
//!
//! # Answers
//!
//! * bucket empty → **429 TooManyRequests** Status, message
//!   `rate limit exceeded: reads for user "alice" (5/s, burst 10; user quota)`,
//!   `details.retryAfterSeconds` = `Retry-After` = ⌈time until the bucket holds the cost⌉ ≥ 1;
//! * stream cap reached → **429** `too many concurrent watches for user "alice" (cap 20; default
//!   quota)`, `Retry-After: 5` (no bucket tells when a stream ends);
//! * `in_flight` cap reached → **429** `too many requests in flight for user "alice" (cap 50;
//!   default quota)`, `Retry-After: 1`;
//! * failed-authentication limit → **429** before authentication (see [`super::source`]);
//! * in-flight cap → **503 ServiceUnavailable**, `Retry-After: 1`;
//! * Redis down with `on_backend_error: deny` → **503**, `Retry-After: 1`.
//!
//! In `shadow` mode every 429 above, and the 503 of a Redis backend down with `deny`, becomes
//! an admission carrying [`Admission::shadow_rejection`] (logged, counted as `shadow_rejected`,
//! and annotated `portcullis.io/ratelimit: shadow-rejected` in the audit event): a trial of the
//! limits never refuses traffic, not even while its backend is down. The in-flight cap (load
//! shedding, not a limit under trial) still applies.
//!
//! # RateLimit headers
//!
//! Admissions and 429s carry `RateLimit-Policy` and `RateLimit` as in
//! draft-ietf-httpapi-ratelimit-headers-10 (structured-field lists, one item per policy):
//! `RateLimit-Policy: "reads";q=100;w=2` (q = burst, w = seconds to refill an empty bucket) and
//! `RateLimit: "reads";r=57;t=1` (r = tokens left, t = seconds until the bucket is full again;
//! on a 429, r = 0 and t = the `Retry-After`).
//!
//! Parts: `answer.rs` holds the answer types (cost, admission, rejection, the header state);
//! this file decides.

use std::net::IpAddr;
use std::time::Duration;

use http::Uri;

use crate::authn::identity::Identity;
use crate::k8s::request::{Query, RequestInfo};

use super::config::{Mode, OnBackendError};
use super::inflight::InFlightGuard;
use super::local::{BucketClass, BucketOutcome};
use super::metrics::{Class, Outcome};
use super::quota::{BucketQuota, Limits, Source};
use super::source::SourceLimiter;
use super::streams::StreamKind;
use super::RateLimiter;

mod answer;

use answer::{ceil_secs, too_many, unavailable};
pub use answer::{
    retry_after_secs, Admission, RateLimitState, Rejection, RejectionKind, RequestCost, RATELIMIT,
    RATELIMIT_POLICY,
};

/// `Retry-After` for a stream-cap rejection.
const STREAM_RETRY_AFTER: u32 = 5;

fn pick_reads(l: &Limits) -> Option<BucketQuota> {
    l.reads
}
fn pick_writes(l: &Limits) -> Option<BucketQuota> {
    l.writes
}
fn pick_watches(l: &Limits) -> Option<u32> {
    l.watches
}
fn pick_sessions(l: &Limits) -> Option<u32> {
    l.sessions
}
fn pick_in_flight(l: &Limits) -> Option<u32> {
    l.in_flight
}

impl BucketClass {
    fn as_str(self) -> &'static str {
        match self {
            BucketClass::Reads => "reads",
            BucketClass::Writes => "writes",
            BucketClass::Unauthenticated => "unauthenticated",
            BucketClass::Streams => "streams",
        }
    }

    fn metric(self) -> Class {
        match self {
            BucketClass::Reads => Class::Reads,
            BucketClass::Writes => Class::Writes,
            _ => Class::Unauthenticated,
        }
    }
}

/// The largest `limit` charged as a page: client-go's pager and kubectl page by 500. A larger
/// one returns as much as the API server holds, up to that limit — no cheaper than no limit.
pub const MAX_PAGE: i64 = 500;

/// Whether a `list` is served a page at a time: a `limit` between 1 and [`MAX_PAGE`], and not
/// `resourceVersion=0` (served from the API server's watch cache, which may ignore `limit`).
fn paginated(q: &Query<'_>) -> bool {
    let page = q
        .get("limit")
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|n| (1..=MAX_PAGE).contains(&n));
    page && q.get("resourceVersion") != Some("0")
}

/// Whether a watch starts with the whole collection as `ADDED` events, as a list would: no
/// `resourceVersion` (or `""`, `"0"`), or `sendInitialEvents` set (a boolean as the API
/// server converts it: `1`, `True`, … all ask for the events).
fn starts_with_a_list(q: &Query<'_>) -> bool {
    matches!(q.get("resourceVersion"), None | Some("" | "0")) || q.flag("sendInitialEvents")
}

impl RateLimiter {
    /// How `req` is charged (bucket, tokens, stream kind).
    pub fn cost(&self, req: &RequestInfo, uri: &Uri) -> RequestCost {
        let costs = &self.inner.costs;
        let verb = req.verb.as_str();
        let read = if req.is_self_review() {
            true
        } else if req.is_resource_request {
            matches!(verb, "get" | "list" | "watch")
        } else {
            matches!(verb, "get" | "head")
        };
        let mut tokens = 1;
        if req.is_resource_request {
            // A watch that starts with the collection costs the list it replaces (its
            // initial events are not paged).
            // Parsed only for the verbs whose cost depends on it, once.
            let q = matches!(verb, "list" | "watch").then(|| Query::of(uri));
            let initial_list = verb == "watch" && q.as_ref().is_some_and(starts_with_a_list);
            if verb == "list" || initial_list {
                if req.namespace.is_empty() {
                    tokens = tokens.max(costs.cluster_wide_list);
                }
                if initial_list || !q.as_ref().is_some_and(paginated) {
                    tokens = tokens.max(costs.unpaginated_list);
                }
            } else if verb == "deletecollection" {
                tokens = tokens.max(costs.deletecollection);
            }
        }
        // An HTTP/1.1 upgrade of a long-running request is spliced until either side ends it
        // (a log over WebSocket, `/debug/pprof/` with an `Upgrade`): no deadline, no
        // stalled-stream reset — it holds a permit whatever it is.
        let upgraded = req.long_running && req.upgrade.is_some();
        let stream = if verb == "watch" {
            Some(StreamKind::Watches)
        } else if req.long_running && (req.is_resource_request || upgraded) {
            match req.subresource.as_str() {
                "log" if upgraded || req.is_follow_log(uri) => Some(StreamKind::Watches),
                "log" => None,
                _ => Some(StreamKind::Sessions),
            }
        } else {
            None
        };
        RequestCost {
            bucket: if read {
                BucketClass::Reads
            } else {
                BucketClass::Writes
            },
            tokens,
            stream,
        }
    }

    /// What `check` and `check_async` share: the cost, the stream permit, and which bucket quota
    /// applies — or the finished admission when no bucket applies to this class.
    fn prologue<'a>(
        &'a self,
        id: &'a Identity,
        req: &RequestInfo,
        uri: &Uri,
    ) -> Result<Prologue<'a>, Box<Rejection>> {
        let cost = self.cost(req, uri);
        let admission = self.stream_permit(id, cost)?;
        let pick = if cost.bucket == BucketClass::Reads {
            pick_reads
        } else {
            pick_writes
        };
        match self.inner.policy.bucket(id, pick) {
            Some((quota, source)) => Ok(Prologue::Bucket(cost, admission, quota, source)),
            None => {
                self.inner
                    .metrics
                    .decision(cost.bucket.metric(), Outcome::Allowed);
                Ok(Prologue::Done(admission))
            }
        }
    }

    /// Decide with the in-process buckets (the `local` backend; with `backend: redis` use
    /// [`RateLimiter::check_async`] — this then uses the degraded quota ÷ replicas). Sync, no
    /// allocation when admitted.
    pub fn check(
        &self,
        id: &Identity,
        req: &RequestInfo,
        uri: &Uri,
    ) -> Result<Admission, Box<Rejection>> {
        let (cost, mut admission, quota, source) = match self.prologue(id, req, uri)? {
            Prologue::Done(admission) => return Ok(admission),
            Prologue::Bucket(cost, admission, quota, source) => (cost, admission, quota, source),
        };
        let outcome = self.local_bucket(id, cost, quota);
        let effective = self.inner.buckets.effective(quota);
        self.finish(id, cost, effective, source, outcome, admission.take_all())
    }

    /// Decide with the Redis backend when configured (one round trip), else as
    /// [`RateLimiter::check`].
    pub async fn check_async(
        &self,
        id: &Identity,
        req: &RequestInfo,
        uri: &Uri,
    ) -> Result<Admission, Box<Rejection>> {
        let Some(redis) = &self.inner.redis else {
            return self.check(id, req, uri);
        };
        let (cost, mut admission, quota, source) = match self.prologue(id, req, uri)? {
            Prologue::Done(admission) => return Ok(admission),
            Prologue::Bucket(cost, admission, quota, source) => (cost, admission, quota, source),
        };
        // Boxed so the local-only path's future stays small (it is every request's).
        match Box::pin(redis.check(cost.bucket.as_str(), &id.user, quota, cost.tokens)).await {
            Ok(outcome) => self.finish(id, cost, quota, source, outcome, admission.take_all()),
            Err(_) => {
                let metrics = &self.inner.metrics;
                match redis.settings().on_backend_error {
                    OnBackendError::Local => {
                        metrics.degraded[0].inc();
                        let outcome = self.local_bucket(id, cost, quota);
                        let effective = self.inner.buckets.effective(quota);
                        let mut r = self.finish(id, cost, effective, source, outcome, admission);
                        match &mut r {
                            Ok(a) => a.degraded = Some("local"),
                            Err(rejection) => rejection.degraded = Some("local"),
                        }
                        r
                    }
                    OnBackendError::Deny => {
                        metrics.degraded[1].inc();
                        let rejection = Rejection {
                            degraded: Some("deny"),
                            ..unavailable(
                                "rate limit backend unavailable; try again shortly",
                                "backend",
                            )
                        };
                        if self.inner.mode == Mode::Shadow {
                            metrics.decision(Class::Backend, Outcome::ShadowRejected);
                            admission.degraded = Some("deny");
                            admission.shadow_rejection = Some(Box::new(Rejection {
                                shadow: true,
                                ..rejection
                            }));
                            Ok(admission)
                        } else {
                            metrics.decision(Class::Backend, Outcome::Rejected);
                            Err(Box::new(rejection))
                        }
                    }
                    OnBackendError::Allow => {
                        metrics.degraded[2].inc();
                        metrics.decision(cost.bucket.metric(), Outcome::Allowed);
                        admission.degraded = Some("allow");
                        Ok(admission)
                    }
                }
            }
        }
    }

    fn local_bucket(&self, id: &Identity, cost: RequestCost, quota: BucketQuota) -> BucketOutcome {
        let buckets = &self.inner.buckets;
        let key = buckets.key(cost.bucket, id.user.as_bytes());
        buckets
            .check(quota, key, cost.tokens)
            // A quota the policy returned always has a bucket; be safe anyway.
            .unwrap_or(BucketOutcome::Allowed {
                remaining: quota.burst,
                reset: Duration::ZERO,
            })
    }

    /// Take the stream permit a long-running request needs, or the in-flight place of every
    /// other (if an `in_flight` cap applies).
    fn stream_permit(&self, id: &Identity, cost: RequestCost) -> Result<Admission, Box<Rejection>> {
        let mut admission = Admission::default();
        // Every request without a stream permit, long-running ones included: a log read whole
        // and `/debug/pprof/` have no deadline and no `max_in_flight` place, so without one an
        // identity could hold any number of them (review).
        let kind = cost.stream.unwrap_or(StreamKind::InFlight);
        let (pick, class): (fn(&Limits) -> Option<u32>, Class) = match kind {
            StreamKind::Watches => (pick_watches, Class::Watches),
            StreamKind::Sessions => (pick_sessions, Class::Sessions),
            StreamKind::InFlight => (pick_in_flight, Class::IdentityInFlight),
        };
        let capped = self.inner.policy.streams(id, pick);
        if capped.is_none() && kind == StreamKind::InFlight {
            // Not counted without a cap (a cap added by a reload starts from zero, as
            // `max_in_flight`'s does: see `carry.rs`).
            return Ok(admission);
        }
        let key = self
            .inner
            .buckets
            .key(BucketClass::Streams, id.user.as_bytes());
        let Some((cap, source)) = capped else {
            // Counted all the same (never refused): a reload that adds a cap must find the
            // streams already open, or a flood it is meant to curb would go on on top of it.
            admission.permit = self.inner.streams.acquire(key, kind, u32::MAX, false).0;
            return Ok(admission);
        };
        let shadow = self.inner.mode == Mode::Shadow;
        let (permit, over) = self.inner.streams.acquire(key, kind, cap, shadow);
        if kind == StreamKind::InFlight {
            admission.place = permit;
        } else {
            admission.permit = permit;
        }
        let metrics = &self.inner.metrics;
        if !over {
            metrics.decision(class, Outcome::Allowed);
            return Ok(admission);
        }
        let (what, retry_after) = match kind {
            // A request ends soon: try again soon.
            StreamKind::InFlight => ("requests in flight".to_owned(), 1),
            _ => (format!("concurrent {}", kind.as_str()), STREAM_RETRY_AFTER),
        };
        let mut rejection = too_many(
            format!(
                "too many {what} for user {:?} (cap {cap}; {source})",
                id.user
            ),
            retry_after,
            kind.as_str(),
        );
        if shadow {
            metrics.decision(class, Outcome::ShadowRejected);
            tracing::info!(user = %id.user, limit = kind.as_str(), "shadow rate-limit rejection");
            rejection.shadow = true;
            admission.shadow_rejection = Some(Box::new(rejection));
            Ok(admission)
        } else {
            metrics.decision(class, Outcome::Rejected);
            Err(Box::new(rejection))
        }
    }

    fn finish(
        &self,
        id: &Identity,
        cost: RequestCost,
        quota: BucketQuota,
        source: Source<'_>,
        outcome: BucketOutcome,
        mut admission: Admission,
    ) -> Result<Admission, Box<Rejection>> {
        let metrics = &self.inner.metrics;
        let class = cost.bucket.metric();
        let policy = cost.bucket.as_str();
        match outcome {
            BucketOutcome::Allowed { remaining, reset } => {
                metrics.decision(class, Outcome::Allowed);
                admission.rate_limit = Some(RateLimitState {
                    policy,
                    quota: quota.burst,
                    window_secs: quota.window_secs(),
                    remaining,
                    reset_secs: ceil_secs(reset),
                });
                Ok(admission)
            }
            BucketOutcome::Rejected { wait } => {
                let retry = retry_after_secs(wait);
                let state = RateLimitState {
                    policy,
                    quota: quota.burst,
                    window_secs: quota.window_secs(),
                    remaining: 0,
                    reset_secs: u64::from(retry),
                };
                let mut rejection = too_many(
                    format!(
                        "rate limit exceeded: {policy} for user {:?} ({quota}; {source})",
                        id.user
                    ),
                    retry,
                    policy,
                );
                state.apply(&mut rejection.headers);
                if self.inner.mode == Mode::Shadow {
                    metrics.decision(class, Outcome::ShadowRejected);
                    tracing::info!(user = %id.user, limit = policy, retry_after = retry, "shadow rate-limit rejection");
                    rejection.shadow = true;
                    admission.rate_limit = Some(state);
                    admission.shadow_rejection = Some(Box::new(rejection));
                    Ok(admission)
                } else {
                    metrics.decision(class, Outcome::Rejected);
                    // `admission` (and its stream permit) is dropped here.
                    Err(Box::new(rejection))
                }
            }
        }
    }

    /// Before authentication: is `ip` blocked by the failed-credentials limit? `Some` = answer
    /// this 429 without authenticating (in shadow mode: `None`, counted as shadow_rejected).
    pub fn source_blocked(&self, ip: IpAddr) -> Option<Rejection> {
        let sources = self.inner.sources.as_ref()?;
        let key = SourceLimiter::key(&self.inner.buckets, ip);
        let wait = sources.blocked(key)?;
        let metrics = &self.inner.metrics;
        if self.inner.mode == Mode::Shadow {
            metrics.decision(Class::Unauthenticated, Outcome::ShadowRejected);
            return None;
        }
        metrics.decision(Class::Unauthenticated, Outcome::Rejected);
        let quota = sources.quota();
        let retry = retry_after_secs(wait);
        let mut rejection = too_many(
            format!(
                "too many requests with failed or missing credentials from this address ({quota})"
            ),
            retry,
            "unauthenticated",
        );
        RateLimitState {
            policy: "unauthenticated",
            quota: quota.burst,
            window_secs: quota.window_secs(),
            remaining: 0,
            reset_secs: u64::from(retry),
        }
        .apply(&mut rejection.headers);
        Some(rejection)
    }

    /// After a request from `ip` failed authentication (or had no credentials).
    pub fn record_auth_failure(&self, ip: IpAddr) {
        if let Some(sources) = &self.inner.sources {
            let key = SourceLimiter::key(&self.inner.buckets, ip);
            if sources.record_failure(key).is_some() {
                tracing::debug!(%ip, "source blocked after failed authentications");
            } else {
                self.inner
                    .metrics
                    .decision(Class::Unauthenticated, Outcome::Allowed);
            }
        }
    }

    /// Whether `max_in_flight` is set (without it places are only counted).
    pub fn in_flight_capped(&self) -> bool {
        self.inner.in_flight.max().is_some()
    }

    /// Take a global in-flight slot (hold it until the response is complete). Beyond
    /// `max_in_flight`: 503 ServiceUnavailable, `Retry-After: 1`.
    pub fn try_in_flight(&self) -> Result<InFlightGuard, Box<Rejection>> {
        let cap = &self.inner.in_flight;
        match cap.try_acquire() {
            Some(guard) => Ok(guard),
            None => {
                self.inner
                    .metrics
                    .decision(Class::InFlight, Outcome::Rejected);
                Err(Box::new(unavailable(
                    &format!(
                        "the proxy is overloaded ({} requests in flight); try again shortly",
                        cap.max().unwrap_or_default()
                    ),
                    "in_flight",
                )))
            }
        }
    }
}

impl Admission {
    fn take_all(&mut self) -> Admission {
        std::mem::take(self)
    }
}

/// See [`RateLimiter::prologue`].
enum Prologue<'a> {
    Done(Admission),
    Bucket(RequestCost, Admission, BucketQuota, Source<'a>),
}
