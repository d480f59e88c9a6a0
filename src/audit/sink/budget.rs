//! How many bytes of events the sinks may hold not yet written: a bound on the audit path's
//! memory when a sink falls behind.
//!
//! Why: an emit hands its event to every sink before it waits, so an emit dropped mid-wait
//! loses nothing (its request's client went away). The price is that a slow or hung sink (a
//! webhook receiver that stopped answering, a stalled volume) keeps every such event — and a
//! client that sends requests and closes its connection at once is bounded by nothing else:
//! its in-flight places are given back as it goes. Each event is held as its line and its
//! canonical bytes, up to [`MAX_EVENT_LINE`](super::MAX_EVENT_LINE) each.
//!
//! An event that would take the held bytes over the budget is not handed to any sink: a
//! `batch` sink counts it dropped, a `blocking` one failed, and a `blocking-strict` one fails
//! the emit ([`AuditError::Overloaded`](super::AuditError::Overloaded)) — the request is
//! refused (503) or its answer withheld (500), as for any strict sink that cannot take an
//! event. One error is logged per episode; the counters count every event.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc, OnceLock,
};

/// The default budget: far above what sinks keeping up hold (a turn's events), far below what
/// would endanger the process.
pub const MAX_QUEUED_BYTES: usize = 256 << 20;

/// The bytes held by events handed to the sinks and not yet released by all of them.
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    max: usize,
    /// Set while over budget, so that one error is logged per episode.
    over: AtomicBool,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            held: AtomicUsize::new(0),
            max,
            over: AtomicBool::new(false),
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Take `bytes` for `slot` (the event's own), released when the event is dropped — by the
    /// last sink done with it. False when the budget has no room (nothing taken); true when
    /// the event already holds its bytes.
    pub fn reserve(self: &Arc<Budget>, slot: &OnceLock<Reservation>, bytes: usize) -> bool {
        if slot.get().is_some() {
            return true;
        }
        // Check, then add: concurrent emits may pass the budget by their own sizes, a soft
        // bound (each event is bounded in size).
        let held = self.held.load(Ordering::Acquire);
        if held.saturating_add(bytes) > self.max && held > 0 {
            if !self.over.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    held,
                    max = self.max,
                    "audit sinks are not keeping up: events over the queued-bytes budget are refused (counted as dropped or failed; strict sinks refuse their requests)"
                );
            }
            return false;
        }
        self.held.fetch_add(bytes, Ordering::AcqRel);
        if slot
            .set(Reservation {
                budget: Arc::clone(self),
                bytes,
            })
            .is_err()
        {
            // Another emit of the same event reserved first: give ours back.
            self.held.fetch_sub(bytes, Ordering::AcqRel);
        }
        if self.over.load(Ordering::Acquire) {
            self.over.store(false, Ordering::Release);
            tracing::warn!("audit sinks are keeping up again: events are accepted");
        }
        true
    }
}

/// An event's share of the [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_held_until_the_event_goes() {
        let b = Budget::new(100);
        let (one, two, three) = (OnceLock::new(), OnceLock::new(), OnceLock::new());
        assert!(b.reserve(&one, 60));
        assert!(b.reserve(&one, 60), "already holding");
        assert_eq!(b.held(), 60);
        assert!(!b.reserve(&two, 50), "over the budget");
        assert_eq!(b.held(), 60);
        drop(one);
        assert_eq!(b.held(), 0);
        assert!(b.reserve(&two, 50));
        // One event larger than the whole budget still goes when nothing else is held.
        drop(two);
        assert!(b.reserve(&three, 500));
        assert_eq!(b.held(), 500);
    }
}
