//! In-process token buckets: governor's GCRA on a DashMap store.
//!
//! **Layout**: one keyed `governor::RateLimiter` per *distinct quota* (a keyed limiter has one
//! quota), shared by every identity whose resolved quota is that one. Keys are a 64-bit SipHash
//! (random per-process key) of `(class, user name)`, so reads and writes of one user are
//! separate buckets even when they have the same quota, a tracked identity costs one `u64` key
//! plus governor's 8-byte state per class, and no allocation happens on the decision path.
//! A collision (probability ≈ n²/2⁶⁵, ~3·10⁻⁸ for a million identities, and not steerable
//! because the hash key is secret) would only make two users share a bucket.
//!
//! The alternative, a `DashMap<Key, RateLimiter<NotKeyed, ..>>` per class, stores the GCRA
//! parameters and clock in every entry (see `benches/ratelimit.rs` for the sizes) and was not
//! chosen.
//!
//! The clock is injectable ([`LimiterClock::fake`]) so tests advance time instead of sleeping.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock, QuantaClock, QuantaInstant, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::Quota;

use super::quota::BucketQuota;

/// The limiter's time source: the real monotonic clock (quanta) or a fake one for tests.
#[derive(Debug, Clone)]
pub struct LimiterClock(ClockKind);

#[derive(Debug, Clone)]
enum ClockKind {
    Real {
        clock: QuantaClock,
        origin: QuantaInstant,
    },
    Fake(FakeRelativeClock),
}

impl LimiterClock {
    /// The real clock.
    pub fn real() -> LimiterClock {
        let clock = QuantaClock::default();
        let origin = clock.now();
        LimiterClock(ClockKind::Real { clock, origin })
    }

    /// A clock that only moves when the returned [`FakeRelativeClock`] is advanced.
    pub fn fake() -> (LimiterClock, FakeRelativeClock) {
        let fake = FakeRelativeClock::default();
        (LimiterClock(ClockKind::Fake(fake.clone())), fake)
    }
}

impl Default for LimiterClock {
    fn default() -> Self {
        LimiterClock::real()
    }
}

impl Clock for LimiterClock {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        match &self.0 {
            ClockKind::Real { clock, origin } => clock.now().duration_since(*origin),
            ClockKind::Fake(f) => f.now(),
        }
    }
}

/// A `Hasher` for keys that already are uniformly distributed 64-bit hashes.
#[derive(Default, Clone, Copy)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type PreHashedState = BuildHasherDefault<PreHashed>;

/// One keyed limiter.
pub type Keyed = governor::RateLimiter<
    u64,
    DashMapStateStore<u64, PreHashedState>,
    LimiterClock,
    StateInformationMiddleware,
>;

/// Build a keyed limiter for `quota` on `clock`.
pub fn keyed(quota: BucketQuota, clock: &LimiterClock) -> Keyed {
    governor::RateLimiter::dashmap_with_clock_and_hasher(
        governor_quota(quota),
        clock.clone(),
        PreHashedState::default(),
    )
    .with_middleware::<StateInformationMiddleware>()
}

/// The governor form of a quota.
pub fn governor_quota(q: BucketQuota) -> Quota {
    let burst = NonZeroU32::new(q.burst).unwrap_or(NonZeroU32::MIN);
    // `period()` is at least 1 ns, so `with_period` always succeeds.
    Quota::with_period(q.rate.period())
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// Outcome of one bucket check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketOutcome {
    /// Admitted; `remaining` whole tokens left, full again in `reset`.
    Allowed { remaining: u32, reset: Duration },
    /// Rejected; a retry could succeed after `wait`.
    Rejected { wait: Duration },
}

/// The class tag mixed into keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketClass {
    Reads = 0,
    Writes = 1,
    Unauthenticated = 2,
    /// Stream-permit counts (not a bucket; shares the key space).
    Streams = 3,
}

/// All in-process buckets: one keyed limiter per distinct configured quota.
pub struct LocalBuckets {
    /// (configured quota, effective quota, limiter). Effective = configured / replicas in the
    /// degraded mode of the Redis backend.
    /// Shared with the limiter of the previous configuration when carried over (`new`'s
    /// `prev`), so an identity whose quota did not change keeps its bucket across a reload.
    slots: Vec<(BucketQuota, BucketQuota, Arc<Keyed>)>,
    index: HashMap<BucketQuota, usize>,
    hasher: RandomState,
    clock: LimiterClock,
}

/// Linear search beats hashing for the usual handful of distinct quotas.
const LINEAR_LIMIT: usize = 8;

impl LocalBuckets {
    /// Buckets for every quota in `quotas`, each divided by `divide_by` (1 = as configured).
    /// With `prev` (a reload), a quota `prev` also enforced, with the same effective value,
    /// keeps `prev`'s limiter — so its keys keep their state — and keys are hashed with `prev`'s
    /// secret, so the same identity has the same key; every other quota starts empty.
    pub fn new(
        quotas: impl IntoIterator<Item = BucketQuota>,
        divide_by: u32,
        clock: LimiterClock,
        prev: Option<&LocalBuckets>,
    ) -> LocalBuckets {
        let mut slots = Vec::new();
        let mut index = HashMap::new();
        for q in quotas {
            if index.contains_key(&q) {
                continue;
            }
            let effective = q.divided(divide_by);
            let kept = prev
                .and_then(|p| p.slot(q))
                .filter(|s| s.1 == effective)
                .map(|s| Arc::clone(&s.2));
            index.insert(q, slots.len());
            slots.push((
                q,
                effective,
                kept.unwrap_or_else(|| Arc::new(keyed(effective, &clock))),
            ));
        }
        LocalBuckets {
            slots,
            index,
            hasher: prev.map_or_else(RandomState::new, |p| p.hasher.clone()),
            clock,
        }
    }

    pub fn clock(&self) -> &LimiterClock {
        &self.clock
    }

    /// The bucket key of `name` in `class`.
    #[inline]
    pub fn key(&self, class: BucketClass, name: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u8(class as u8);
        h.write(name);
        h.finish()
    }

    #[inline]
    fn slot(&self, quota: BucketQuota) -> Option<&(BucketQuota, BucketQuota, Arc<Keyed>)> {
        if self.slots.len() <= LINEAR_LIMIT {
            self.slots.iter().find(|s| s.0 == quota)
        } else {
            self.index.get(&quota).and_then(|&i| self.slots.get(i))
        }
    }

    /// The quota actually enforced for configured `quota`.
    pub fn effective(&self, quota: BucketQuota) -> BucketQuota {
        self.slot(quota).map_or(quota, |s| s.1)
    }

    /// Take `cost` tokens (clamped to the burst, so any request can eventually pass) from the
    /// bucket `key` of `quota`. `None` if `quota` was not configured (never happens for quotas
    /// the policy returned).
    #[inline]
    pub fn check(&self, quota: BucketQuota, key: u64, cost: u32) -> Option<BucketOutcome> {
        let (_, effective, limiter) = self.slot(quota)?;
        let n = NonZeroU32::new(cost.min(effective.burst)).unwrap_or(NonZeroU32::MIN);
        let result = if n.get() == 1 {
            Ok(limiter.check_key(&key))
        } else {
            limiter.check_key_n(&key, n)
        };
        Some(match result {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                let missing = effective.burst.saturating_sub(remaining);
                BucketOutcome::Allowed {
                    remaining,
                    reset: effective.rate.period() * missing,
                }
            }
            Ok(Err(not_until)) => BucketOutcome::Rejected {
                wait: not_until.wait_time_from(self.clock.now()),
            },
            // Unreachable: n ≤ burst. Treat as "wait a full window".
            Err(_) => BucketOutcome::Rejected {
                wait: effective.rate.period() * effective.burst,
            },
        })
    }

    /// Drop keys whose buckets are full again (indistinguishable from new ones) and shrink the
    /// maps. Returns how many keys were evicted.
    pub fn evict_idle(&self) -> usize {
        let mut evicted = 0;
        for (_, _, limiter) in &self.slots {
            let before = limiter.len();
            limiter.retain_recent();
            limiter.shrink_to_fit();
            evicted += before.saturating_sub(limiter.len());
        }
        evicted
    }

    /// Keys tracked now, over all buckets.
    pub fn len(&self) -> usize {
        self.slots.iter().map(|s| s.2.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
