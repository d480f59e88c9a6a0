//! Global cap on requests in flight through this replica (load shedding), and the places a
//! request holds ([`SharedPlace`]: this cap's and its identity's `in_flight`).
//!
//! The proxy takes an [`InFlightGuard`] for every non-long-running request and holds it while
//! the answer is read from the upstream ([`SharedPlace`]: not while a client that reads
//! nothing keeps hyper waiting with it); beyond `max_in_flight` it answers **503 ServiceUnavailable** with
//! `Retry-After: 1` and `details.retryAfterSeconds: 1` (client-go retries it). Long-running
//! requests are bounded by stream permits instead (DESIGN.md decision 7). Always enforced,
//! also in shadow mode: it protects the proxy itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::Response;

use super::streams::Permit;
use crate::body::{self, Body};
use crate::refusal::Refused;

/// The count of requests in flight, and the cap (None: `max_in_flight` not set; then nothing is
/// counted, see `carry.rs`).
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

/// The places one request holds: the replica's (`max_in_flight`) and its identity's
/// (`in_flight`, a [`Permit`] of the stream table), each only where a cap applies.
#[derive(Debug, Default)]
pub struct Places {
    global: Option<InFlightGuard>,
    identity: Option<Permit>,
}

impl Places {
    fn is_empty(&self) -> bool {
        self.global.is_none() && self.identity.is_none()
    }
}

/// Places given back by whoever is done with them first (a request extension): the forwarder,
/// once the upstream answer has been read to its end or dropped (read straight through, by the
/// pump, or reset as stalled) — the work the caps bound — and, as a backstop, the response
/// that carries them (the proxy's own answers never reach the forwarder).
#[derive(Clone, Debug, Default)]
pub struct SharedPlace(Arc<Mutex<Places>>);

impl SharedPlace {
    pub fn new(guard: InFlightGuard) -> SharedPlace {
        SharedPlace(Arc::new(Mutex::new(Places {
            global: Some(guard),
            identity: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Places> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hold the identity's place too (given back with the replica's).
    pub fn add_identity(&self, permit: Permit) {
        self.lock().identity = Some(permit);
    }

    /// Give the places back (once; later calls do nothing).
    pub fn release(&self) {
        drop(std::mem::take(&mut *self.lock()));
    }

    /// Take the places out, to be given back by their holder (or [`restore`](Self::restore)d):
    /// a write sent again after a conflict keeps its places across the tries.
    pub fn take(&self) -> Option<Places> {
        let places = std::mem::take(&mut *self.lock());
        (!places.is_empty()).then_some(places)
    }

    /// Put places taken out back in, for the next forward to give back.
    pub fn restore(&self, places: Places) {
        *self.lock() = places;
    }

    /// A guard that gives the places back when dropped (for `body::hold_until_read`, and the
    /// upstream pump's `pump::Place`).
    pub fn on_drop(&self) -> ReleaseOnDrop {
        ReleaseOnDrop(self.clone())
    }

    /// The response to a request holding these places: the proxy's own refusal gives them back
    /// at once (no upstream work goes on); any other answer holds them until its body has been
    /// read or dropped (a backstop: the forwarder gives them back when the upstream answer has
    /// been read).
    pub fn hold(self, resp: Response<Body>) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        if parts.extensions.get::<Refused>().is_some() {
            self.release();
            return Response::from_parts(parts, body);
        }
        Response::from_parts(parts, body::hold_until_read(body, self.on_drop()))
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
