//! Concurrency permits per identity and per replica: streams of long-running requests, and
//! the places of the others.
//!
//! * **watches**: `watch` (including `?watch=true` lists) and any resource's `log?follow=…` — one-way
//!   streams the server pushes, like a watch.
//! * **sessions**: `exec`, `attach`, `portforward` and every `proxy` (verb `proxy` or the
//!   `proxy` subresource) — interactive or arbitrary byte streams.
//! * **in_flight**: every other request (a log read whole, `/debug/pprof/`) while the API
//!   server works on it and its answer is read from the upstream (counted only for identities
//!   a cap applies to).
//!
//! A [`Permit`] is `Send + 'static` and releases its slot when dropped. The proxy keeps a stream
//! permit inside the response body (or the upgrade splice task), so the slot frees when the
//! stream ends for any reason, client disconnect included; an in-flight permit rides in the
//! request's `SharedPlace` (see [`super::inflight`]). Over the cap the request gets **429
//! TooManyRequests** (see [`super::decision`]).
//!
//! Stream caps are enforced per replica (in memory) even with the Redis backend: a stream is a
//! connection held by one replica, and a shared count would need leases that survive crashes.

use std::sync::Arc;

use dashmap::DashMap;
use prometheus_client::metrics::gauge::Gauge;

use super::local::PreHashedState;

/// Which concurrency cap a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Watches = 0,
    Sessions = 1,
    /// A request without a stream permit, per identity (`in_flight`).
    InFlight = 2,
}

/// The number of kinds.
pub const KINDS: usize = 3;

/// No permit of any kind.
const NONE: [u32; KINDS] = [0; KINDS];

impl StreamKind {
    /// Every kind, in index order (the gauges' labels).
    pub const ALL: [StreamKind; KINDS] = [
        StreamKind::Watches,
        StreamKind::Sessions,
        StreamKind::InFlight,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Watches => "watches",
            StreamKind::Sessions => "sessions",
            StreamKind::InFlight => "identity_in_flight",
        }
    }
}

/// Live stream counts per identity key. An entry exists only while its identity holds a stream.
pub struct StreamTable {
    counts: DashMap<u64, [u32; KINDS], PreHashedState>,
    gauges: [Gauge; KINDS],
}

impl StreamTable {
    pub fn new(gauges: [Gauge; KINDS]) -> Arc<StreamTable> {
        Arc::new(StreamTable {
            counts: DashMap::with_hasher(PreHashedState::default()),
            gauges,
        })
    }

    /// Take a slot of `kind` for `key` if fewer than `cap` are held, or — when `force` (shadow
    /// mode) — regardless. Returns the permit and whether the cap was exceeded.
    pub fn acquire(
        self: &Arc<Self>,
        key: u64,
        kind: StreamKind,
        cap: u32,
        force: bool,
    ) -> (Option<Permit>, bool) {
        let i = kind as usize;
        let mut entry = self.counts.entry(key).or_insert(NONE);
        let over = entry[i] >= cap;
        if over && !force {
            let empty = *entry == NONE;
            drop(entry);
            if empty {
                self.counts.remove_if(&key, |_, v| *v == NONE);
            }
            return (None, true);
        }
        entry[i] = entry[i].saturating_add(1);
        drop(entry);
        self.gauges[i].inc();
        (
            Some(Permit {
                table: Arc::clone(self),
                key,
                kind,
            }),
            over,
        )
    }

    fn release(&self, key: u64, kind: StreamKind) {
        let i = kind as usize;
        let empty = match self.counts.get_mut(&key) {
            Some(mut e) => {
                e[i] = e[i].saturating_sub(1);
                *e == NONE
            }
            None => false,
        };
        if empty {
            self.counts.remove_if(&key, |_, v| *v == NONE);
        }
        self.gauges[i].dec();
    }

    /// Streams of `kind` held by `key` now.
    pub fn held(&self, key: u64, kind: StreamKind) -> u32 {
        self.counts.get(&key).map_or(0, |e| e[kind as usize])
    }

    /// Identities holding at least one permit.
    pub fn identities(&self) -> usize {
        self.counts.len()
    }

    pub fn shrink_to_fit(&self) {
        self.counts.shrink_to_fit();
    }
}

/// One held slot; dropping it releases the slot.
pub struct Permit {
    table: Arc<StreamTable>,
    key: u64,
    kind: StreamKind,
}

impl Permit {
    pub fn kind(&self) -> StreamKind {
        self.kind
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("kind", &self.kind).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.table.release(self.key, self.kind);
    }
}
