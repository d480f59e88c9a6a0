//! Caps on open client connections: per listener and per source address.
//!
//! A connection is counted from the moment it is accepted (so connections still in the TLS
//! handshake, or silent before their first byte, count too) until its socket is closed,
//! including after an HTTP/1.1 upgrade (exec, attach, port-forward). Above either cap the
//! accepted socket is closed at once, before any TLS work: answering with an HTTP `503` would
//! first cost a full handshake, which is exactly the work a flood wants us to spend. Clients see
//! a closed connection and retry (client-go and kubectl do).
//!
//! The source is the TCP peer address, never `X-Forwarded-For` (which is read only after the
//! handshake and is client-controlled). IPv6 peers are grouped by their /64, the block one host
//! usually holds, so that one host cannot escape the cap by cycling addresses.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use dashmap::{mapref::entry::Entry, DashMap};

use super::metrics::ListenerMetrics;

/// Why a connection was refused (a closed set: the `reason` label of the refusal counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener already holds `max_connections`.
    PerListener,
    /// This source already holds `max_connections_per_source`.
    PerSource,
}

impl Refused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::PerListener => "per_listener",
            Refused::PerSource => "per_source",
        }
    }
}

/// Counts open connections of one listener, in total and per source.
#[derive(Debug)]
pub struct ConnLimiter {
    max_total: usize,
    max_per_source: usize,
    total: AtomicUsize,
    per_source: DashMap<IpAddr, usize>,
    metrics: ListenerMetrics,
}

/// One counted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    source: IpAddr,
}

impl ConnLimiter {
    pub fn new(max_total: usize, max_per_source: usize, metrics: ListenerMetrics) -> Arc<Self> {
        Arc::new(ConnLimiter {
            max_total,
            max_per_source,
            total: AtomicUsize::new(0),
            per_source: DashMap::new(),
            metrics,
        })
    }

    /// A place for a connection from `peer`, or why there is none (counted in the metrics).
    pub fn try_acquire(self: &Arc<Self>, peer: IpAddr) -> Result<ConnPermit, Refused> {
        let refused = self.acquire(peer);
        match refused {
            Ok(()) => {
                self.metrics.open.inc();
                Ok(ConnPermit {
                    limiter: self.clone(),
                    source: source_key(peer),
                })
            }
            Err(why) => {
                self.metrics.refused(why);
                Err(why)
            }
        }
    }

    fn acquire(&self, peer: IpAddr) -> Result<(), Refused> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::PerListener);
        }
        // The map's shard lock makes check-and-increment atomic per source.
        let mut count = self.per_source.entry(source_key(peer)).or_insert(0);
        if *count >= self.max_per_source {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::PerSource);
        }
        *count += 1;
        Ok(())
    }

    /// Connections currently counted.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let limiter = &self.limiter;
        if let Entry::Occupied(mut entry) = limiter.per_source.entry(self.source) {
            let count = entry.get_mut();
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Keep the map as small as the set of sources connected right now.
                entry.remove();
            }
        }
        limiter.total.fetch_sub(1, Ordering::AcqRel);
        limiter.metrics.open.dec();
    }
}

/// The address a connection is counted under: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6
/// addresses, as a dual-stack socket reports them, count as the IPv4 address).
fn source_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(total: usize, per_source: usize) -> Arc<ConnLimiter> {
        ConnLimiter::new(total, per_source, ListenerMetrics::default())
    }

    #[test]
    fn per_source_cap_refuses_the_next_connection_and_frees_on_drop() {
        let l = limiter(10, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), Refused::PerSource);
        // Another source is unaffected.
        let _p3 = l.try_acquire(b).unwrap();
        drop(p1);
        let _p4 = l.try_acquire(a).unwrap();
        assert_eq!(l.open(), 3);
        assert_eq!(l.metrics.refused_count(Refused::PerSource), 1);
    }

    #[test]
    fn per_listener_cap_counts_every_source() {
        let l = limiter(2, 2);
        let _a = l.try_acquire("10.0.0.1".parse().unwrap()).unwrap();
        let _b = l.try_acquire("10.0.0.2".parse().unwrap()).unwrap();
        let refused = l.try_acquire("10.0.0.3".parse().unwrap()).unwrap_err();
        assert_eq!(refused, Refused::PerListener);
        assert_eq!(l.open(), 2);
        assert_eq!(l.metrics.refused_count(Refused::PerListener), 1);
    }

    #[test]
    fn map_is_emptied_when_a_source_leaves() {
        let l = limiter(10, 10);
        let p = l.try_acquire("10.0.0.1".parse().unwrap()).unwrap();
        drop(p);
        assert!(l.per_source.is_empty());
        assert_eq!(l.open(), 0);
    }

    #[test]
    fn ipv6_hosts_count_by_their_64_and_mapped_v4_as_v4() {
        let l = limiter(10, 1);
        let _p = l.try_acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(l.try_acquire(same_64).unwrap_err(), Refused::PerSource);
        let _other = l.try_acquire("2001:db8:1:3::1".parse().unwrap()).unwrap();
        let _v4 = l.try_acquire("192.0.2.7".parse().unwrap()).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(l.try_acquire(mapped).unwrap_err(), Refused::PerSource);
    }
}
