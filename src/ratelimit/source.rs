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
}

impl SourceLimiter {
    pub fn new(quota: BucketQuota, clock: LimiterClock) -> SourceLimiter {
        SourceLimiter {
            quota,
            bucket: keyed(quota, &clock),
            blocked: DashMap::with_hasher(PreHashedState::default()),
            clock,
        }
    }

    pub fn quota(&self) -> BucketQuota {
        self.quota
    }

    /// The bucket key of `ip` (hashed with `keys`' secret).
    pub fn key(keys: &LocalBuckets, ip: IpAddr) -> u64 {
        let canonical = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            },
            v4 => v4,
        };
        match canonical {
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
