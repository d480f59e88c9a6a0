//! How many bytes of events one sink may hold not yet handed on: a bound on the audit path's
//! memory when a sink falls behind, charged to that sink alone.
//!
//! Why: an emit hands its event to every sink before it waits, so an emit dropped mid-wait
//! loses nothing (its request's client went away). The price is that a slow or hung sink (a
//! webhook receiver that stopped answering, a stalled volume) keeps every such event — and a
//! client that sends requests and closes its connection at once is bounded by nothing else:
//! its in-flight places are given back as it goes. Two places grow without a bound of their
//! own: a waiting mode's outbox (events gathered while the flusher waits for room in the
//! sink's channel, `outbox.rs`) and a `batch` sink with `overflow: block`'s waiters for room.
//! What they hold is counted here per sink (each event's line and canonical bytes) until the
//! sink's worker has taken it from its channel (a waiting mode's turn carries its [`Held`]
//! bytes in its message, so the channel's 16 384 turns are counted too).
//!
//! An event that would take a sink over its budget is not handed to that sink — only to it: a
//! hung webhook refuses its own events, never a file sink's. `batch` counts it dropped,
//! `blocking` failed, and `blocking-strict` fails the emit
//! ([`AuditError::Overloaded`](super::AuditError::Overloaded)); while a strict sink is over its
//! budget, requests are also held back before forwarding
//! ([`Auditor::strict_failure`](super::Auditor::strict_failure)), so a write is refused (503)
//! rather than carried out and answered 500. One error is logged per episode; the counters
//! count every event.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc,
};

use super::SinkCounters;

/// The budget of each sink: far above what a sink keeping up holds (a turn's events), far
/// below what would endanger the process.
pub const MAX_QUEUED_BYTES: usize = 256 << 20;

/// The bytes one sink holds in its unbounded places.
#[derive(Debug)]
pub struct Queued {
    held: AtomicUsize,
    max: usize,
    /// Set while over budget, so that one error is logged per episode.
    over: AtomicBool,
}

impl Default for Queued {
    fn default() -> Self {
        Queued::new(MAX_QUEUED_BYTES)
    }
}

impl Queued {
    pub fn new(max: usize) -> Queued {
        Queued {
            held: AtomicUsize::new(0),
            max,
            over: AtomicBool::new(false),
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Whether the sink is at its budget (strict sinks then hold requests back).
    pub fn full(&self) -> bool {
        self.held() >= self.max
    }

    /// Take `bytes` for an event of `sink`; false (nothing taken) when that would pass the
    /// budget — unless nothing is held, so that one event larger than the budget still goes.
    /// Check, then add: concurrent emits may pass the budget by their own sizes, a soft bound
    /// (each event is bounded in size).
    pub fn take(&self, bytes: usize, sink: &str) -> bool {
        let held = self.held();
        if held > 0 && held.saturating_add(bytes) > self.max {
            if !self.over.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    sink,
                    held,
                    max = self.max,
                    "audit sink is not keeping up: its events over the queued-bytes budget are refused (counted as dropped or failed; a strict sink refuses its requests)"
                );
            }
            return false;
        }
        self.held.fetch_add(bytes, Ordering::AcqRel);
        if self.over.load(Ordering::Acquire) && self.over.swap(false, Ordering::AcqRel) {
            tracing::warn!(sink, "audit sink is keeping up again: events are accepted");
        }
        true
    }

    /// Give back what [`take`](Self::take) took, once the events left the unbounded place.
    pub fn give_back(&self, bytes: usize) {
        // Never below zero, whatever a caller gives back.
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(h.saturating_sub(bytes))
            });
    }
}

/// A turn's bytes on their way through the sink's queue: given back to its budget when
/// dropped — by the worker once it has taken the message, or with the message if it is never
/// taken (a closed sink, a shutdown). Travels inside `Msg::Events`, so no path can keep them.
#[derive(Debug)]
pub(crate) struct Held {
    counters: Arc<SinkCounters>,
    bytes: usize,
}

impl Held {
    pub(crate) fn new(counters: Arc<SinkCounters>, bytes: usize) -> Held {
        Held { counters, bytes }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counters.queued.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_held_until_given_back() {
        let q = Queued::new(100);
        assert!(q.take(60, "s"));
        assert!(!q.full());
        assert!(!q.take(50, "s"), "over the budget");
        assert_eq!(q.held(), 60);
        q.give_back(60);
        assert_eq!(q.held(), 0);
        assert!(q.take(50, "s"));
        assert!(q.take(50, "s"));
        assert!(q.full());
        q.give_back(100);
        // One event larger than the whole budget still goes when nothing else is held.
        assert!(q.take(500, "s"));
        assert_eq!(q.held(), 500);
        q.give_back(1000);
        assert_eq!(q.held(), 0, "never below zero");
    }
}
