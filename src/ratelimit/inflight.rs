//! Global cap on requests in flight through this replica (load shedding).
//!
//! The proxy takes an [`InFlightGuard`] for every non-long-running request and holds it while
//! the answer is read from the upstream ([`SharedPlace`]: not while a client that reads
//! nothing keeps hyper waiting with it); beyond `max_in_flight` it answers **503 ServiceUnavailable** with
//! `Retry-After: 1` and `details.retryAfterSeconds: 1` (client-go retries it). Long-running
//! requests are bounded by stream permits instead (DESIGN.md decision 7). Always enforced,
//! also in shadow mode: it protects the proxy itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The count of requests in flight, and the cap (None: `max_in_flight` not set). Counted also
/// without a cap, so that a reload adding one starts from the requests already in flight.
#[derive(Debug)]
pub struct InFlight {
    max: Option<usize>,
    current: Arc<AtomicUsize>,
}

impl InFlight {
    pub fn new(max: Option<u32>) -> InFlight {
        InFlight {
            max: max.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            current: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The same count under a new cap (a configuration reload from one with a cap): requests
    /// admitted before it still hold their slots. (Without a cap nothing is counted: a cap
    /// added by a reload starts a new count, see `carry.rs`.)
    pub fn resized(&self, max: Option<u32>) -> InFlight {
        InFlight {
            max: max.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            current: Arc::clone(&self.current),
        }
    }

    pub fn max(&self) -> Option<usize> {
        self.max
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// A guard if a slot is free (always, without a cap).
    pub fn try_acquire(&self) -> Option<InFlightGuard> {
        let prev = self.current.fetch_add(1, Ordering::AcqRel);
        if self.max.is_some_and(|max| prev >= max) {
            self.current.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlightGuard(Arc::clone(&self.current)))
    }
}

/// One in-flight slot, released on drop.
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A place given back by whoever is done with it first (a request extension): the forwarder,
/// once the upstream answer has been read to its end or dropped (read straight through, by the
/// pump, or reset as stalled) — the work the cap bounds — and, as a backstop, the response
/// that carries it (the proxy's own answers never reach the forwarder).
#[derive(Clone, Debug)]
pub struct SharedPlace(Arc<Mutex<Option<InFlightGuard>>>);

impl SharedPlace {
    pub fn new(guard: InFlightGuard) -> SharedPlace {
        SharedPlace(Arc::new(Mutex::new(Some(guard))))
    }

    /// Give the place back (once; later calls do nothing).
    pub fn release(&self) {
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    }

    /// Take the place out, to be given back by its holder (or [`restore`](Self::restore)d):
    /// a write sent again after a conflict keeps its place across the tries.
    pub fn take(&self) -> Option<InFlightGuard> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Put a place taken out back in, for the next forward to give back.
    pub fn restore(&self, guard: InFlightGuard) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(guard);
    }

    /// A guard that gives the place back when dropped (for `body::hold_until_read`).
    pub fn on_drop(&self) -> ReleaseOnDrop {
        ReleaseOnDrop(self.clone())
    }
}

/// Gives its [`SharedPlace`] back when dropped.
#[derive(Debug)]
pub struct ReleaseOnDrop(SharedPlace);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}
