//! What a rate-limit decision answers: the cost of a request, an [`Admission`] (with its stream
//! permit and `RateLimit*` header state) or a [`Rejection`] (429 or 503 with `Retry-After`),
//! and the `RateLimit-Policy` / `RateLimit` header values.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ratelimit::{
    local::BucketClass,
    streams::{Permit, StreamKind},
};

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How a request is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCost {
    pub bucket: BucketClass,
    pub tokens: u32,
    pub stream: Option<StreamKind>,
}

/// The state of the bucket that admitted a request, for the `RateLimit*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    /// Policy name: `reads` or `writes`.
    pub policy: &'static str,
    /// Bucket size (`q`).
    pub quota: u32,
    /// Seconds to refill an empty bucket (`w`).
    pub window_secs: u64,
    /// Whole tokens left (`r`).
    pub remaining: u32,
    /// Seconds until full again (`t`).
    pub reset_secs: u64,
}

impl RateLimitState {
    /// `"reads";q=100;w=2`
    pub fn policy_header(&self) -> HeaderValue {
        structured(
            self.policy,
            ("q", self.quota.into()),
            ("w", self.window_secs),
        )
    }

    /// `"reads";r=57;t=1`. Marked sensitive: HPACK sends it as a never-indexed literal, since
    /// it changes with nearly every response and indexed it would churn the connection's
    /// dynamic table (see `request_id::id::new_audit_id`).
    pub fn limit_header(&self) -> HeaderValue {
        let mut v = structured(
            self.policy,
            ("r", self.remaining.into()),
            ("t", self.reset_secs),
        );
        v.set_sensitive(true);
        v
    }

    /// Insert both headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_POLICY, self.policy_header());
        headers.insert(RATELIMIT, self.limit_header());
    }
}

/// `"<name>";<a>=<n>;<b>=<m>`, written straight into the value's buffer: on every admitted
/// response, `format!` had cost ≈ 1 k instructions a header (callgrind).
fn structured(name: &str, a: (&str, u64), b: (&str, u64)) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    let mut out = Vec::with_capacity(name.len() + 48);
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
    for (key, n) in [a, b] {
        out.push(b';');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(digits.format(n).as_bytes());
    }
    // Policy names are fixed ASCII and the rest are digits; the buffer becomes the value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
        .unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
}

/// A request may proceed.
#[derive(Debug, Default)]
pub struct Admission {
    /// The stream slot of a long-running request: keep it alive as long as the stream (inside
    /// the response body or the upgrade task).
    pub permit: Option<Permit>,
    /// The identity's in-flight place of a request without a stream permit (where an
    /// `in_flight` cap applies): held with the request's `SharedPlace`.
    pub place: Option<Permit>,
    /// For the `RateLimit-Policy` / `RateLimit` response headers; `None` when no bucket applied.
    pub rate_limit: Option<RateLimitState>,
    /// Shadow mode: the rejection enforce mode would have answered (already logged and counted;
    /// the audit layer may annotate it).
    pub shadow_rejection: Option<Box<Rejection>>,
    /// Decided without the Redis backend: the `on_backend_error` mode applied (`local`,
    /// `allow`, or `deny` in shadow mode), for the audit event.
    pub degraded: Option<&'static str>,
}

impl Admission {
    /// Add the `RateLimit*` headers to a response.
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        if let Some(s) = &self.rate_limit {
            s.apply(headers);
        }
    }
}

/// A request is refused (or, with `shadow`, would have been). Rendered by
/// `crate::refusal` (the one table): `kind` picks 429 or 503, `retry_after` is both
/// `details.retryAfterSeconds` and the `Retry-After` header.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub kind: RejectionKind,
    /// The Status message.
    pub message: String,
    /// Whole seconds, at least 1.
    pub retry_after: u32,
    /// Extra response headers (`RateLimit-Policy`, `RateLimit`).
    pub headers: HeaderMap,
    /// Recorded in shadow mode only; the request was let through.
    pub shadow: bool,
    /// Which limit: `reads`, `writes`, `watches`, `sessions`, `identity_in_flight`,
    /// `unauthenticated`, `in_flight`, `backend` (a closed set, fit for metrics and audit
    /// annotations).
    pub limit: &'static str,
    /// Decided without the Redis backend: the `on_backend_error` mode that refused.
    pub degraded: Option<&'static str>,
}

/// 429 (a bucket or cap) or 503 (in-flight cap, backend down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    TooManyRequests,
    Unavailable,
}

impl Rejection {
    /// The `Retry-After` seconds.
    pub fn retry_after_secs(&self) -> u32 {
        self.retry_after
    }
}

/// ⌈wait⌉ in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

pub(super) fn ceil_secs(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

pub(super) fn too_many(message: String, retry_after: u32, limit: &'static str) -> Rejection {
    Rejection {
        kind: RejectionKind::TooManyRequests,
        message,
        retry_after,
        headers: HeaderMap::new(),
        shadow: false,
        limit,
        degraded: None,
    }
}

pub(super) fn unavailable(message: &str, limit: &'static str) -> Rejection {
    Rejection {
        kind: RejectionKind::Unavailable,
        message: message.to_owned(),
        retry_after: 1,
        headers: HeaderMap::new(),
        shadow: false,
        limit,
        degraded: None,
    }
}
