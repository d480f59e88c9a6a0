//! Per-identity rate limits, stream and in-flight caps, a failed-credentials limit per source
//! address and a global in-flight cap (issue 4).
//!
//! # What is admitted, what is rejected, with which status
//!
//! | Limit | Applies to | Over the limit |
//! |---|---|---|
//! | `reads` bucket (rate + burst) | `get`, `list`, each `watch` start, non-resource GET/HEAD | **429 TooManyRequests**, `Retry-After` = ⌈bucket wait⌉ ≥ 1 |
//! | `writes` bucket | create, update, patch, delete, deletecollection, exec/attach/portforward (`create`), the `proxy` verb (`/api/v1/proxy/…`) and writes through a proxy subresource (a `GET …/pods/x/proxy` is a `get`: a read) | **429**, same |
//! | `watches` (concurrent) | watch, any `log?follow` (a pod's, or an extension API's such as `builds/log`) | **429**, `Retry-After: 5` |
//! | `sessions` (concurrent) | exec, attach, portforward, proxy | **429**, `Retry-After: 5` |
//! | `in_flight` (concurrent, per identity) | every other request (a log read whole and `/debug/pprof/` included), held until its upstream answer has been read | **429**, `Retry-After: 1` |
//! | `unauthenticated` bucket per source /32 or /64 | requests that failed authentication | **429** before authentication |
//! | `max_in_flight` | all non-long-running requests through this replica | **503 ServiceUnavailable**, `Retry-After: 1` |
//! | Redis unreachable, `on_backend_error: deny` | bucket decisions | **503**, `Retry-After: 1` |
//!
//! Every rejection is a `metav1.Status` with `details.retryAfterSeconds` and an integer
//! `Retry-After` header, so client-go backs off and retries (DESIGN.md decision 6). Quotas are
//! resolved per identity, most specific first ([`quota`]); costs and classes are in
//! [`decision`]; `mode: shadow` admits everything the table would reject with 429 (and what a
//! Redis backend down with `deny` would refuse) and records it (log + `shadow_rejected` metric
//! + `portcullis.io/ratelimit: shadow-rejected` in the audit event).
//!
//! # Layers
//!
//! `layer.rs` holds the three layers that apply these limits (load shed, failing-address
//! block, per-identity limits); where they sit in the request's life is `crate::stack`'s to
//! say. `metrics().register(&mut registry)` runs once at start; `spawn_maintenance(shutdown)`
//! once per configuration. A configuration reload builds the next limiter with
//! [`RateLimiter::reconfigured`], which keeps the state of quotas that did not change (`carry`).

mod carry;
pub mod config;
pub mod decision;
pub mod inflight;
pub mod layer;
pub mod local;
pub mod metrics;
pub mod quota;
pub mod redis;
pub mod source;
pub mod streams;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use config::{build, RateLimitsConfig, Settings};
pub use decision::{Admission, RateLimitState, Rejection, RejectionKind, RequestCost};
pub use inflight::InFlightGuard;
pub use layer::{LoadShedLayer, RateLimitLayer, SourceBlockLayer};
pub use local::LimiterClock;
pub use metrics::Metrics;
pub use streams::{Permit, StreamKind};

use crate::shutdown::Shutdown;

use self::config::{Costs, Mode, OnBackendError};
use self::inflight::InFlight;
use self::local::LocalBuckets;
use self::quota::{BucketQuota, Policy};
use self::redis::RedisBackend;
use self::source::SourceLimiter;
use self::streams::StreamTable;

/// The limiter: cheap to clone, shared by all connections.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Mode,
    policy: Policy,
    costs: Costs,
    buckets: LocalBuckets,
    streams: Arc<StreamTable>,
    sources: Option<Arc<SourceLimiter>>,
    in_flight: InFlight,
    redis: Option<RedisBackend>,
    metrics: Metrics,
    idle_eviction: Duration,
    /// When the last eviction sweep ran (shared with the limiters this one replaces and
    /// is replaced by, `carry.rs`): a sweep task started by a reload keeps the schedule.
    last_sweep: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("mode", &self.inner.mode)
            .field("redis", &self.inner.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Build from validated settings on the real clock.
    pub fn from_settings(settings: Settings) -> RateLimiter {
        Self::with_clock(settings, LimiterClock::real())
    }

    /// Build on an explicit clock (tests: [`LimiterClock::fake`]).
    pub fn with_clock(settings: Settings, clock: LimiterClock) -> RateLimiter {
        Self::assemble(settings, clock, None)
    }

    /// A limiter for new `settings` (a configuration reload) that keeps what the old one
    /// knows where the old state still means the same thing: the bucket of every identity whose
    /// resolved quota did not change, the open-stream counts, the failing-address blocks when
    /// `unauthenticated` did not change, the in-flight count, and the metric families. The old
    /// limiter keeps working for the requests that hold it (see `carry`).
    pub fn reconfigured(&self, settings: Settings) -> RateLimiter {
        Self::assemble(
            settings,
            self.inner.buckets.clock().clone(),
            Some(&self.inner),
        )
    }

    fn assemble(settings: Settings, clock: LimiterClock, prev: Option<&Inner>) -> RateLimiter {
        let metrics = prev.map_or_else(Metrics::new, |p| p.metrics.clone());
        let levels = settings.policy.levels();
        let quotas: Vec<BucketQuota> = std::iter::once(&levels.default)
            .chain(levels.users.values())
            .chain(levels.groups.values())
            .chain(levels.tenants.values())
            .flat_map(|l| [l.reads, l.writes])
            .flatten()
            .collect();
        // With Redis, the in-process buckets only serve the degraded `local` mode.
        let divide_by = match &settings.redis {
            Some(r) if r.on_backend_error == OnBackendError::Local => r.replicas,
            _ => 1,
        };
        let c = carry::Carried::from(prev, &settings, &metrics);
        let buckets = LocalBuckets::new(quotas, divide_by, clock.clone(), c.buckets);
        let sources = settings.unauthenticated.map(|q| {
            c.sources
                .unwrap_or_else(|| Arc::new(SourceLimiter::new(q, clock.clone())))
        });
        let redis = settings
            .redis
            .map(|r| RedisBackend::new(r, clock.clone(), metrics.clone()));
        RateLimiter {
            inner: Arc::new(Inner {
                mode: settings.mode,
                policy: settings.policy,
                costs: settings.costs,
                buckets,
                streams: c.streams,
                last_sweep: c.last_sweep,
                sources,
                in_flight: c.in_flight,
                redis,
                metrics,
                idle_eviction: settings.idle_eviction,
            }),
        }
    }

    /// The metrics (register them once with [`Metrics::register`]).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether `mode: shadow`.
    pub fn is_shadow(&self) -> bool {
        self.inner.mode == Mode::Shadow
    }

    /// Whether decisions go to Redis (use [`RateLimiter::check_async`]).
    pub fn uses_redis(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// Bucket and source keys tracked in memory now.
    pub fn tracked_keys(&self) -> usize {
        self.inner.buckets.len()
            + self.inner.sources.as_ref().map_or(0, |s| s.len())
            + self.inner.streams.identities()
    }

    /// One eviction sweep: drop keys whose buckets are full again (`retain_recent`), expired
    /// source blocks, and shrink the maps. Returns how many keys were evicted.
    pub fn evict_idle(&self) -> usize {
        *self
            .inner
            .last_sweep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tokio::time::Instant::now());
        let mut evicted = self.inner.buckets.evict_idle();
        if let Some(s) = &self.inner.sources {
            evicted += s.evict_idle();
        }
        self.inner.streams.shrink_to_fit();
        let m = &self.inner.metrics;
        m.evicted.inc_by(evicted as u64);
        m.tracked
            .set(i64::try_from(self.tracked_keys()).unwrap_or(i64::MAX));
        evicted
    }

    /// Run [`RateLimiter::evict_idle`] every `idle_eviction` until `shutdown`, the first sweep
    /// `idle_eviction` after the last one (of this limiter or the one a reload replaced): a
    /// reload more often than the period would otherwise put every sweep off for ever, and
    /// the maps of buckets and blocked addresses would only grow.
    pub fn spawn_maintenance(&self, mut shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let period = this.inner.idle_eviction;
            let last = *this
                .inner
                .last_sweep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let first = last.unwrap_or_else(tokio::time::Instant::now) + period;
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let evicted = this.evict_idle();
                        tracing::debug!(evicted, "rate-limit eviction sweep");
                    }
                    _ = shutdown.wait() => break,
                }
            }
        })
    }
}
