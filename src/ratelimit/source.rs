//! Per-source-address limit on failed or missing credentials, checked **before** authentication.
//!
//! [`SourceLimiter::record_failure`] spends a token of the address's bucket for every request
//! that ended in 401; when the bucket is empty the address is blocked until a token is back,
//! and [`SourceLimiter::blocked`] then answers **429 TooManyRequests** with `Retry-After` =
//! that wait — to every request from it, since a valid token cannot be told from an invalid one
//! without the signature check this limit exists to avoid. Successful authentications spend
//! nothing, so a NAT full of good clients is only blocked by its bad ones.
//!
//! Addresses are grouped as IPv4 /32 and IPv6 /64 (IPv4-mapped IPv6 counts as IPv4): one host
//! usually owns a whole /64 and could otherwise rotate addresses. Limits are per replica.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::Clock;

use super::local::{keyed, BucketClass, Keyed, LimiterClock, LocalBuckets, PreHashedState};
use super::quota::BucketQuota;

pub struct SourceLimiter {
    quota: BucketQuota,
    bucket: Keyed,
    /// key → limiter-clock nanoseconds until which the address is blocked.
    blocked: DashMap<u64, u64, PreHashedState>,
    clock: LimiterClock,
    /// Failures of one key are charged one at a time (striped by key): the bucket reads its
    /// clock before it updates, and "that was the last token" is computed from that reading —
    /// a thread that read the clock first but updated second saw an empty bucket one failure
    /// early. Only failed authentications take these locks.
    charging: [Mutex<()>; 16],
}

impl SourceLimiter {
    pub fn new(quota: BucketQuota, clock: LimiterClock) -> SourceLimiter {
        SourceLimiter {
            quota,
            bucket: keyed(quota, &clock),
            blocked: DashMap::with_hasher(PreHashedState::default()),
            clock,
            charging: Default::default(),
        }
    }

    pub fn quota(&self) -> BucketQuota {
        self.quota
    }

    /// The bucket key of `ip` (hashed with `keys`' secret).
    pub fn key(keys: &LocalBuckets, ip: IpAddr) -> u64 {
        match ip.to_canonical() {
            IpAddr::V4(v4) => keys.key(BucketClass::Unauthenticated, &v4.octets()),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                keys.key(BucketClass::Unauthenticated, &o[..8])
            }
        }
    }

    /// How long `key` stays blocked, if it is.
    pub fn blocked(&self, key: u64) -> Option<Duration> {
        let until = *self.blocked.get(&key)?;
        let now = self.clock.now().as_u64();
        if now < until {
            return Some(Duration::from_nanos(until - now));
        }
        self.blocked.remove_if(&key, |_, u| *u <= now);
        None
    }

    /// Spend a token for one failed authentication; `Some(wait)` when the bucket is now empty
    /// (the address is blocked for `wait`).
    pub fn record_failure(&self, key: u64) -> Option<Duration> {
        // The index is < 16; a poisoned stripe guards nothing but ordering.
        let stripe = &self.charging[(key % 16) as usize];
        let _ordered = stripe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.bucket.check_key(&key) {
            Ok(snapshot) if snapshot.remaining_burst_capacity() > 0 => None,
            Ok(_) => {
                // That was the last token: block until the next one.
                let wait = self.quota.rate.period();
                self.block(key, wait);
                Some(wait)
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                self.block(key, wait);
                Some(wait)
            }
        }
    }

    fn block(&self, key: u64, wait: Duration) {
        let until = self
            .clock
            .now()
            .as_u64()
            .saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
        self.blocked.insert(key, until);
    }

    /// Evict full buckets and expired blocks; returns how many keys went.
    pub fn evict_idle(&self) -> usize {
        let before = self.bucket.len() + self.blocked.len();
        self.bucket.retain_recent();
        self.bucket.shrink_to_fit();
        let now = self.clock.now().as_u64();
        self.blocked.retain(|_, until| *until > now);
        self.blocked.shrink_to_fit();
        before.saturating_sub(self.bucket.len() + self.blocked.len())
    }

    pub fn len(&self) -> usize {
        self.bucket.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::ratelimit::quota::{Per, Rate};

    /// Two failures from one address at the same moment, on two threads, leave it one short
    /// of the burst — never blocked. (The bucket's "last token" used to be read from a clock
    /// sampled before the update: a thread that read the clock first but updated second saw
    /// an empty bucket after two of three failures, and the address was blocked early.)
    #[test]
    fn failures_racing_on_two_threads_block_only_at_the_burst() {
        let quota = BucketQuota {
            rate: Rate {
                tokens: 1,
                per: Per::Minute,
            },
            burst: 3,
        };
        for round in 0..5_000u64 {
            let limiter = Arc::new(SourceLimiter::new(quota, LimiterClock::real()));
            let barrier = Arc::new(Barrier::new(2));
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (limiter, barrier) = (limiter.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        limiter.record_failure(round)
                    })
                })
                .collect();
            for r in racers {
                assert_eq!(r.join().unwrap(), None, "round {round}: blocked after two");
            }
            assert_eq!(limiter.blocked(round), None, "round {round}");
            assert!(limiter.record_failure(round).is_some(), "the third blocks");
            assert!(limiter.blocked(round).is_some());
        }
    }
}
