//! `backend: redis` — one shared bucket per identity and class for all replicas.
//!
//! Each decision is **one round trip**: `EVALSHA` of an atomic Lua GCRA script (`redis::Script`
//! falls back to `SCRIPT LOAD` + retry when the server answers NOSCRIPT, e.g. after a restart).
//! The script reads Redis' own `TIME`, so replica clocks do not matter; the key stores the
//! theoretical arrival time in microseconds and expires when its bucket would be full again.
//! Keys are `<key_prefix><reads|writes>:<user name>`.
//!
//! Failures (connection refused, reset, timeout after `timeout`) are counted in
//! `ratelimit_backend_errors_total` and the decision falls back to `on_backend_error`:
//! `local` (in-process buckets with quota ÷ replicas), `deny` (503 + `Retry-After: 1`) or
//! `allow`, each counted in `ratelimit_degraded_decisions_total{mode}`. After an error,
//! decisions skip Redis for `backoff` so an outage does not add `timeout` to every request;
//! the `ConnectionManager` reconnects in the background and the next decision after the backoff
//! uses Redis again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::Script;
use governor::clock::Clock;

use super::config::RedisSettings;
use super::local::{BucketOutcome, LimiterClock};
use super::metrics::Metrics;
use super::quota::BucketQuota;

/// Atomic GCRA. KEYS[1] bucket; ARGV: emission interval (µs, may be fractional), burst, cost.
/// Returns {allowed (0|1), wait µs, remaining tokens, µs until full}.
const GCRA: &str = r#"
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local limit = t * burst
-- A bucket is never further ahead than empty: after Redis' clock stepped back, a stored tat
-- would otherwise refuse every recent identity for as long as the step.
if tat > now + limit then tat = now + limit end
local new_tat = tat + t * cost
if new_tat - now > limit then
  local remaining = math.floor((limit - (tat - now)) / t)
  if remaining < 0 then remaining = 0 end
  return {0, math.ceil(new_tat - limit - now), remaining, math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((limit - (new_tat - now)) / t)
if remaining < 0 then remaining = 0 end
return {1, 0, remaining, math.ceil(new_tat - now)}
"#;

/// Why a backend call failed.
#[derive(Debug)]
pub enum BackendError {
    Timeout,
    /// Skipped: inside the backoff window after an earlier failure.
    Backoff,
    Redis(::redis::RedisError),
    Client(String),
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::Timeout => f.write_str("timed out"),
            BackendError::Backoff => f.write_str("backing off after an earlier error"),
            BackendError::Redis(e) => write!(f, "{e}"),
            BackendError::Client(e) => f.write_str(e),
        }
    }
}

pub struct RedisBackend {
    settings: RedisSettings,
    client: Option<::redis::Client>,
    conn: OnceLock<ConnectionManager>,
    script: Script,
    clock: LimiterClock,
    /// Nanoseconds (limiter clock) before which Redis is not tried.
    skip_until: AtomicU64,
    metrics: Metrics,
}

impl RedisBackend {
    pub fn new(settings: RedisSettings, clock: LimiterClock, metrics: Metrics) -> RedisBackend {
        // The URL was validated by config; keep the error path anyway.
        let client = ::redis::Client::open(settings.url.as_str()).ok();
        RedisBackend {
            settings,
            client,
            conn: OnceLock::new(),
            script: Script::new(GCRA),
            clock,
            skip_until: AtomicU64::new(0),
            metrics,
        }
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    fn connection(&self) -> Result<ConnectionManager, BackendError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let client = self
            .client
            .clone()
            .ok_or_else(|| BackendError::Client("invalid Redis URL".to_owned()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.settings.timeout))
            .set_response_timeout(Some(self.settings.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(BackendError::Redis)?;
        Ok(self.conn.get_or_init(|| manager).clone())
    }

    /// One GCRA decision in Redis.
    pub async fn check(
        &self,
        class: &str,
        user: &str,
        quota: BucketQuota,
        cost: u32,
    ) -> Result<BucketOutcome, BackendError> {
        let now = self.clock.now().as_u64();
        if now < self.skip_until.load(Ordering::Relaxed) {
            return Err(BackendError::Backoff);
        }
        let result = self.call(class, user, quota, cost).await;
        match &result {
            Ok(_) => {}
            Err(BackendError::Timeout) => {
                self.metrics.backend_timeouts.inc();
                self.back_off();
            }
            Err(e) => {
                self.metrics.backend_failures.inc();
                tracing::warn!(error = %e, "rate-limit backend call failed");
                self.back_off();
            }
        }
        result
    }

    fn back_off(&self) {
        let until =
            self.clock.now().as_u64().saturating_add(
                u64::try_from(self.settings.backoff.as_nanos()).unwrap_or(u64::MAX),
            );
        self.skip_until.store(until, Ordering::Relaxed);
    }

    async fn call(
        &self,
        class: &str,
        user: &str,
        quota: BucketQuota,
        cost: u32,
    ) -> Result<BucketOutcome, BackendError> {
        let mut conn = self.connection()?;
        let mut key =
            String::with_capacity(self.settings.key_prefix.len() + class.len() + 1 + user.len());
        key.push_str(&self.settings.key_prefix);
        key.push_str(class);
        key.push(':');
        key.push_str(user);
        let period_us = quota.rate.period().as_nanos() as f64 / 1000.0;
        let cost = cost.clamp(1, quota.burst.max(1));
        let mut invocation = self.script.key(key);
        invocation.arg(period_us).arg(quota.burst).arg(cost);
        let fut = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn);
        let (allowed, wait_us, remaining, reset_us) =
            match tokio::time::timeout(self.settings.timeout, fut).await {
                Err(_) => return Err(BackendError::Timeout),
                Ok(Err(e)) => return Err(BackendError::Redis(e)),
                Ok(Ok(v)) => v,
            };
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(if allowed == 1 {
            BucketOutcome::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(0),
                reset: micros(reset_us),
            }
        } else {
            BucketOutcome::Rejected {
                wait: micros(wait_us),
            }
        })
    }
}
