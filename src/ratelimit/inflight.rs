//! Global cap on requests in flight through this replica (load shedding).
//!
//! The proxy takes an [`InFlightGuard`] for every non-long-running request and holds it until
//! the response is complete; beyond `max_in_flight` it answers **503 ServiceUnavailable** with
//! `Retry-After: 1` and `details.retryAfterSeconds: 1` (client-go retries it). Long-running
//! requests are bounded by stream permits instead (DESIGN.md decision 7). Always enforced,
//! also in shadow mode: it protects the proxy itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct InFlight {
    max: usize,
    current: Arc<AtomicUsize>,
}

impl InFlight {
    pub fn new(max: u32) -> InFlight {
        InFlight {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            current: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The same count under a new cap (a configuration reload): requests admitted before it
    /// still hold their slots.
    pub fn resized(&self, max: u32) -> InFlight {
        InFlight {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            current: Arc::clone(&self.current),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// A guard if a slot is free.
    pub fn try_acquire(&self) -> Option<InFlightGuard> {
        let prev = self.current.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.current.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlightGuard(Some(Arc::clone(&self.current))))
    }
}

/// One in-flight slot, released on drop. Holds nothing when no cap is configured.
#[derive(Debug)]
pub struct InFlightGuard(Option<Arc<AtomicUsize>>);

impl InFlightGuard {
    pub(crate) fn unlimited() -> InFlightGuard {
        InFlightGuard(None)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
