//! The `rate_limits:` section of the config file: its serde schema and [`validate`], which turns
//! it into plain [`Settings`] (held by `Config`) or reports **every** problem at once with its
//! key path (DESIGN.md decision 9); [`build`] also makes the [`RateLimiter`] (as
//! `stack::Runtime::build` does with `RateLimiter::from_settings`).
//!
//! ```yaml
//! rate_limits:
//!   mode: enforce            # enforce | shadow
//!   default: {reads: {rate: 50/s, burst: 100}, writes: {rate: 10/s, burst: 20}, watches: 20, sessions: 5,
//!             in_flight: 50}
//!   users:   {alice: {reads: {rate: 5/s, burst: 10}}}
//!   groups:  {ci: {writes: {rate: 2/s, burst: 5}}}
//!   tenants: {team-a: {reads: {rate: 20/s, burst: 40}}}
//!   costs: {cluster_wide_list: 5, unpaginated_list: 3, deletecollection: 10}
//!   unauthenticated: {rate: 5/s, burst: 10}
//!   max_in_flight: 500
//!   idle_eviction: 10m
//!   backend: redis           # local (default) | redis, which needs the redis section
//!   redis: {url: "redis://127.0.0.1:6379", replicas: 3, on_backend_error: local, timeout: 50ms,
//!           backoff: 1s, key_prefix: "portcullis:rl:"}
//! ```
//!
//! Rates are `N/s`, `N/m` or `N/h` (N ≥ 1); `burst` ≥ 1 is the bucket size. Every key is
//! optional. A limit no level sets is not enforced (no `reads` anywhere → reads unlimited). See
//! the module doc of [`crate::ratelimit`] for the semantics.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::problems::{Problem, Problems, Wording};

use super::quota::{BucketQuota, Levels, Limits, NameTable, Per, Policy, Rate};
use super::RateLimiter;

/// `rate_limits:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RateLimitsConfig {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub default: LimitsConfig,
    #[serde(default)]
    pub users: BTreeMap<String, LimitsConfig>,
    #[serde(default)]
    pub groups: BTreeMap<String, LimitsConfig>,
    #[serde(default)]
    pub tenants: BTreeMap<String, LimitsConfig>,
    #[serde(default)]
    pub costs: CostsConfig,
    /// Per source address (IPv4 /32, IPv6 /64) for failed or missing credentials.
    #[serde(default)]
    pub unauthenticated: Option<BucketConfig>,
    /// Global cap on non-long-running requests in flight (503 + Retry-After beyond it).
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Sweep interval of idle-key eviction (humantime, default `10m`).
    #[serde(default)]
    pub idle_eviction: Option<String>,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

/// `enforce` rejects; `shadow` records would-be rejections and lets requests through.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// Where the rate buckets live.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    #[default]
    Local,
    Redis,
}

/// What a decision does when Redis fails or times out.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendError {
    /// In-process buckets with every quota divided by `replicas` (rounded up, at least 1).
    #[default]
    Local,
    /// 503 ServiceUnavailable + `Retry-After: 1`.
    Deny,
    /// Admit without limit (logged as a warning at start; counted).
    Allow,
}

/// Limits of one level (default, a user, a group or a tenant).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct LimitsConfig {
    #[serde(default)]
    pub reads: Option<BucketConfig>,
    #[serde(default)]
    pub writes: Option<BucketConfig>,
    /// Concurrent watches (and `log?follow`) per identity.
    #[serde(default)]
    pub watches: Option<u32>,
    /// Concurrent exec / attach / port-forward / proxy per identity.
    #[serde(default)]
    pub sessions: Option<u32>,
    /// Requests without a stream permit (a log read whole and `/debug/pprof/` included) in
    /// flight at once per identity, each held until the upstream answer has been read.
    #[serde(default)]
    pub in_flight: Option<u32>,
}

/// A token bucket: refill `rate`, size `burst`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct BucketConfig {
    /// `N/s`, `N/m` or `N/h`.
    pub rate: String,
    pub burst: u32,
}

/// Token weights of expensive requests (each ≥ 1; a request pays the largest that applies).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct CostsConfig {
    /// `list` without a namespace.
    #[serde(default = "one")]
    pub cluster_wide_list: u32,
    /// `list` without a positive `limit`.
    #[serde(default = "one")]
    pub unpaginated_list: u32,
    #[serde(default = "one")]
    pub deletecollection: u32,
}

fn one() -> u32 {
    1
}

impl Default for CostsConfig {
    fn default() -> Self {
        CostsConfig {
            cluster_wide_list: 1,
            unpaginated_list: 1,
            deletecollection: 1,
        }
    }
}

/// `redis:` (required when `backend: redis`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RedisConfig {
    pub url: String,
    /// How many proxy replicas share the limit (divides quotas in degraded `local` mode).
    pub replicas: u32,
    #[serde(default)]
    pub on_backend_error: OnBackendError,
    /// Per-decision deadline (humantime, default `50ms`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// After a backend error, decisions skip Redis for this long (humantime, default `1s`), so
    /// an outage does not add `timeout` to every request.
    #[serde(default)]
    pub backoff: Option<String>,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_key_prefix() -> String {
    "portcullis:rl:".to_owned()
}

/// Costs after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Costs {
    pub cluster_wide_list: u32,
    pub unpaginated_list: u32,
    pub deletecollection: u32,
}

/// Redis settings after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    pub replicas: u32,
    pub on_backend_error: OnBackendError,
    pub timeout: Duration,
    pub backoff: Duration,
    pub key_prefix: String,
}

/// Everything [`RateLimiter`] needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub policy: Policy,
    pub costs: Costs,
    pub unauthenticated: Option<BucketQuota>,
    pub max_in_flight: Option<u32>,
    pub idle_eviction: Duration,
    pub redis: Option<RedisSettings>,
}

const DEFAULT_IDLE_EVICTION: Duration = Duration::from_secs(600);
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// The longest `redis.timeout` accepted.
const MAX_REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `redis.backoff` accepted.
const MAX_REDIS_BACKOFF: Duration = Duration::from_secs(30);
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// Longest accepted duration (keeps every nanosecond computation far from overflow).
const MAX_DURATION: Duration = Duration::from_secs(86_400 * 365);

/// Validate `cfg` and build the limiter. `key_prefix` is the dotted path of the section
/// (normally `rate_limits`), used in every [`Problem::path`].
pub fn build(cfg: &RateLimitsConfig, key_prefix: &str) -> Result<RateLimiter, Vec<Problem>> {
    let settings = validate(cfg, key_prefix)?;
    Ok(RateLimiter::from_settings(settings))
}

/// Validate `cfg` into [`Settings`] (what [`build`] does before constructing).
pub fn validate(cfg: &RateLimitsConfig, key_prefix: &str) -> Result<Settings, Vec<Problem>> {
    let mut v = Validator {
        problems: Problems::new(),
    };
    let p = key_prefix;
    let default = v.limits(&cfg.default, &format!("{p}.default"));
    let users = v.level(&cfg.users, &format!("{p}.users"));
    let groups = v.level(&cfg.groups, &format!("{p}.groups"));
    let tenants = v.level(&cfg.tenants, &format!("{p}.tenants"));
    let costs = Costs {
        cluster_wide_list: v.cost(
            cfg.costs.cluster_wide_list,
            &format!("{p}.costs.cluster_wide_list"),
        ),
        unpaginated_list: v.cost(
            cfg.costs.unpaginated_list,
            &format!("{p}.costs.unpaginated_list"),
        ),
        deletecollection: v.cost(
            cfg.costs.deletecollection,
            &format!("{p}.costs.deletecollection"),
        ),
    };
    let unauthenticated = cfg
        .unauthenticated
        .as_ref()
        .and_then(|b| v.bucket(b, &format!("{p}.unauthenticated")));
    if cfg.max_in_flight == Some(0) {
        v.problem(
            format!("{p}.max_in_flight"),
            "must be at least 1",
            "omit the key to disable the in-flight cap",
        );
    }
    let idle_eviction = v.duration(
        cfg.idle_eviction.as_deref(),
        DEFAULT_IDLE_EVICTION,
        &format!("{p}.idle_eviction"),
    );
    let redis = match (cfg.backend, &cfg.redis) {
        (Backend::Local, None) => None,
        (Backend::Local, Some(_)) => {
            // Most likely a forgotten `backend: redis`: every replica would then keep its own
            // buckets, N times the limit meant, with no sign of it.
            v.problem(
                format!("{p}.redis"),
                "a redis section is set but backend is local (the default), so it would be ignored",
                "add backend: redis to share the limits through it, or remove the redis section",
            );
            None
        }
        (Backend::Redis, None) => {
            v.problem(
                format!("{p}.redis"),
                "backend is redis but the redis section is missing",
                "add redis: {url: redis://host:6379, replicas: N}",
            );
            None
        }
        (Backend::Redis, Some(r)) => v.redis(r, &format!("{p}.redis")),
    };
    if v.problems.is_empty() {
        if let Some(r) = &redis {
            if r.on_backend_error == OnBackendError::Allow {
                tracing::warn!(
                    "{p}.redis.on_backend_error is allow: while Redis is unreachable no rate limit is enforced"
                );
            }
        }
        Ok(Settings {
            mode: cfg.mode,
            policy: Policy::new(Levels {
                default,
                users,
                groups,
                tenants,
            }),
            costs,
            unauthenticated,
            max_in_flight: cfg.max_in_flight,
            idle_eviction,
            redis,
        })
    } else {
        Err(v.problems.into_vec())
    }
}

struct Validator {
    problems: Problems,
}

impl Validator {
    fn problem(&mut self, path: String, message: impl Into<String>, hint: impl Into<String>) {
        self.problems.err(path, message, hint);
    }

    fn level(&mut self, entries: &BTreeMap<String, LimitsConfig>, path: &str) -> NameTable {
        let mut out = NameTable::with_capacity_and_hasher(entries.len(), Default::default());
        for (name, limits) in entries {
            if name.is_empty() {
                self.problem(path.to_owned(), "empty name", "");
                continue;
            }
            let l = self.limits(limits, &format!("{path}.{name}"));
            out.insert(name.as_str().into(), l);
        }
        out
    }

    fn limits(&mut self, cfg: &LimitsConfig, path: &str) -> Limits {
        Limits {
            reads: cfg
                .reads
                .as_ref()
                .and_then(|b| self.bucket(b, &format!("{path}.reads"))),
            writes: cfg
                .writes
                .as_ref()
                .and_then(|b| self.bucket(b, &format!("{path}.writes"))),
            watches: self.stream_cap(cfg.watches, &format!("{path}.watches")),
            sessions: self.stream_cap(cfg.sessions, &format!("{path}.sessions")),
            in_flight: self.stream_cap(cfg.in_flight, &format!("{path}.in_flight")),
        }
    }

    /// A concurrency cap: 0 would answer every request it covers 429, which clients retry
    /// forever.
    fn stream_cap(&mut self, cap: Option<u32>, path: &str) -> Option<u32> {
        if cap == Some(0) {
            self.problem(
                path.to_owned(),
                "0 refuses every one, and clients retry a 429 forever",
                "give at least 1, or omit the key for no cap at this level",
            );
        }
        cap
    }

    fn bucket(&mut self, cfg: &BucketConfig, path: &str) -> Option<BucketQuota> {
        let rate = match parse_rate(&cfg.rate) {
            Ok(r) => Some(r),
            Err(msg) => {
                self.problem(
                    format!("{path}.rate"),
                    msg,
                    "write N/s, N/m or N/h with N a whole number ≥ 1, e.g. 50/s",
                );
                None
            }
        };
        if cfg.burst == 0 {
            self.problem(
                format!("{path}.burst"),
                "must be at least 1",
                "burst is the bucket size: how many requests may arrive at once",
            );
            return None;
        }
        let quota = rate.map(|rate| BucketQuota {
            rate,
            burst: cfg.burst,
        })?;
        // Refilling an empty bucket must take at most a year (keeps GCRA arithmetic in range).
        if quota.rate.period().as_nanos() * u128::from(quota.burst) > MAX_DURATION.as_nanos() {
            self.problem(
                format!("{path}.burst"),
                format!("{quota}: refilling the bucket would take more than a year"),
                "lower the burst or raise the rate",
            );
            return None;
        }
        Some(quota)
    }

    fn cost(&mut self, cost: u32, path: &str) -> u32 {
        if cost == 0 {
            self.problem(
                path.to_owned(),
                "must be at least 1",
                "a weight is how many tokens the request takes",
            );
            return 1;
        }
        cost
    }

    fn duration(&mut self, raw: Option<&str>, default: Duration, path: &str) -> Duration {
        let Some(raw) = raw else {
            return default;
        };
        match self.problems.parse_duration(path, raw, Wording::RateLimit) {
            Some(d) if d.is_zero() => {
                self.problem(path.to_owned(), "must be greater than zero", "");
                default
            }
            Some(d) if d > MAX_DURATION => {
                self.problem(path.to_owned(), "must be at most one year", "");
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    fn redis(&mut self, r: &RedisConfig, path: &str) -> Option<RedisSettings> {
        let before = self.problems.len();
        if let Err(e) = ::redis::Client::open(r.url.as_str()) {
            self.problem(
                format!("{path}.url"),
                format!("not a Redis URL: {e}"),
                "e.g. redis://127.0.0.1:6379 or rediss://host:6380",
            );
        }
        if r.replicas == 0 {
            self.problem(
                format!("{path}.replicas"),
                "must be at least 1",
                "the number of proxy replicas sharing the limit",
            );
        }
        let timeout = self.duration(
            r.timeout.as_deref(),
            DEFAULT_TIMEOUT,
            &format!("{path}.timeout"),
        );
        if timeout > MAX_REDIS_TIMEOUT {
            // Every limited request waits up to this for a slow Redis: a typo (`50s` for
            // `50ms`) would stall the whole proxy behind one slow reply.
            self.problem(
                format!("{path}.timeout"),
                format!(
                    "{timeout:?} is too long: every limited request may wait that long for Redis"
                ),
                "at most 5s; the default 50ms suits a Redis in the same network",
            );
        }
        let backoff = self.duration(
            r.backoff.as_deref(),
            DEFAULT_BACKOFF,
            &format!("{path}.backoff"),
        );
        if backoff > MAX_REDIS_BACKOFF {
            // One slow reply makes the replica skip Redis this long — every request refused
            // (`deny`) or unlimited (`allow`) meanwhile: a typo (`1h` for `1s`) would turn one
            // blip into an outage.
            self.problem(
                format!("{path}.backoff"),
                format!("{backoff:?} is too long: one slow Redis reply would skip Redis that long"),
                "at most 30s; the default 1s retries Redis soon after a blip",
            );
        }
        if r.key_prefix.is_empty() {
            self.problem(
                format!("{path}.key_prefix"),
                "must not be empty",
                "keys are <key_prefix><reads|writes>:<user>",
            );
        }
        (self.problems.len() == before).then(|| RedisSettings {
            url: r.url.clone(),
            replicas: r.replicas,
            on_backend_error: r.on_backend_error,
            timeout,
            backoff,
            key_prefix: r.key_prefix.clone(),
        })
    }
}

/// Parse `N/s`, `N/m`, `N/h` (spaces around the parts allowed).
pub fn parse_rate(raw: &str) -> Result<Rate, String> {
    let Some((n, unit)) = raw.split_once('/') else {
        return Err(format!("{raw:?} is not a rate"));
    };
    let tokens: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a whole number", n.trim()))?;
    if tokens == 0 {
        return Err("the rate must be at least 1 per unit".to_owned());
    }
    let per = match unit.trim() {
        "s" => Per::Second,
        "m" => Per::Minute,
        "h" => Per::Hour,
        other => return Err(format!("unknown unit {other:?} (use s, m or h)")),
    };
    Ok(Rate { tokens, per })
}
