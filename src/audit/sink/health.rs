//! Whether a sink is failing: the outcome of its last event write, for `/readyz`
//! ([`Auditor::not_ready`](super::Auditor::not_ready), sinks written on this replica — file,
//! stdout), the `portcullis_audit_sink_healthy` gauge (the same) and holding requests back
//! while a strict sink fails ([`Auditor::strict_failure`](super::Auditor::strict_failure), a
//! webhook's deliveries included: recorded by `webhook.rs` per POST).
//!
//! Why: a `blocking-strict` sink that cannot write refuses every audited request (503), so a
//! replica whose audit disk is full or unwritable serves nothing — while its upstream is fine.
//! Readiness must say so, or the load balancer keeps sending it traffic it refuses.
//!
//! Recorded by the writer's `answer` (`thread.rs`) once per written batch, in every mode; what
//! counts for readiness (strict, local) is decided by the [`Auditor`](super::Auditor). Only
//! event writes count — a failed checkpoint or final sync refuses no request. Accepts any
//! outcome; a failure is reported until the next successful write, and for readiness only
//! within a window after it (see [`SinkHealth::failing_at`]); a write that has not returned
//! for [`STUCK_WRITE`] is reported as stuck.
//!
//! A batch write's outcome is recorded after the write returned. A `blocking-strict` sink has
//! one writer (its thread), so outcomes are recorded in write order; a `blocking` file sink is
//! also written inline by its outbox flusher, and two writes finishing together may record out
//! of order — the next write corrects it. That mode never affects readiness, only the gauge.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex, OnceLock, PoisonError,
    },
    time::{Duration, Instant},
};

/// The last write outcome of one sink.
#[derive(Debug, Default)]
pub struct SinkHealth {
    /// Set while `failure` holds a failure: a successful write, the common case, costs an
    /// atomic load here (and a store to `writing_since`), not a lock.
    failing: AtomicBool,
    failure: Mutex<Option<Failure>>,
    /// When the sink's thread began the write it has not finished, as nanoseconds after
    /// [`base`] plus one (0: none under way): an atomic, so a write's start and end add no lock.
    writing_since: AtomicU64,
}

/// The instant `writing_since` counts from (the first use in the process).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// A write under way longer than this is stuck (a hung volume — NFS, a dying disk — rather than
/// one that fails): every strict request waits on it, so the replica is not ready. An fsync on
/// a healthy but busy disk takes well under this.
pub const STUCK_WRITE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Failure {
    /// When the last failed write returned.
    at: Instant,
    /// Its reason, as the waiters got it (`write /var/log/audit.log: No space left on device…`).
    message: String,
}

impl SinkHealth {
    /// Record a batch write's outcome: `Err` carries the reason in words.
    pub(crate) fn record(&self, result: Result<(), &str>) {
        self.writing_since.store(0, Ordering::Release);
        match result {
            Ok(()) => {
                if self.failing.load(Ordering::Acquire) {
                    *self.lock() = None;
                    self.failing.store(false, Ordering::Release);
                }
            }
            Err(message) => {
                *self.lock() = Some(Failure {
                    at: Instant::now(),
                    message: message.to_owned(),
                });
                self.failing.store(true, Ordering::Release);
            }
        }
    }

    /// The sink's thread begins a write (its outcome is [`record`](Self::record)ed after).
    pub(crate) fn writing(&self) {
        let since = u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.writing_since.store(since + 1, Ordering::Release);
    }

    /// When the write under way began, if one is.
    fn writing_since(&self) -> Option<Instant> {
        match self.writing_since.load(Ordering::Acquire) {
            0 => None,
            n => Some(base() + Duration::from_nanos(n - 1)),
        }
    }

    /// How long the write under way has been running at `now`, when longer than
    /// [`STUCK_WRITE`].
    pub fn stuck_at(&self, now: Instant) -> Option<Duration> {
        let since = self.writing_since()?;
        Some(now.saturating_duration_since(since)).filter(|d| *d > STUCK_WRITE)
    }

    /// Whether the last write succeeded (or none was made yet).
    pub fn healthy(&self) -> bool {
        !self.failing.load(Ordering::Acquire)
    }

    /// [`failing_at`](Self::failing_at) now.
    #[cfg(test)]
    pub fn failing_within(&self, window: Duration) -> Option<String> {
        self.failing_at(Instant::now(), window)
    }

    /// The reason of the last write's failure when it failed within `window` before `now` and
    /// no write has succeeded since. After `window` without writes the sink counts as healthy
    /// again: a replica taken out of the load balancer gets no requests, so no write could
    /// show it recovered (the disk freed) — it is let back in and the next request tries again
    /// (if the sink still fails, that request is refused and readiness fails once more).
    pub fn failing_at(&self, now: Instant, window: Duration) -> Option<String> {
        if self.healthy() {
            return None;
        }
        let failure = self.lock().clone()?;
        (now.saturating_duration_since(failure.at) <= window).then_some(failure.message)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Failure>> {
        // Only plain data behind it: a panic elsewhere cannot leave it half-written.
        self.failure.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENOSPC: &str =
        "write /var/log/portcullis/audit.log: No space left on device (os error 28)";

    #[test]
    fn a_failure_counts_until_a_write_succeeds() {
        let h = SinkHealth::default();
        let window = Duration::from_secs(30);
        assert!(h.healthy());
        assert_eq!(h.failing_within(window), None, "no write yet");
        h.record(Ok(()));
        assert_eq!(h.failing_within(window), None);
        h.record(Err(ENOSPC));
        assert!(!h.healthy());
        assert_eq!(h.failing_within(window).as_deref(), Some(ENOSPC));
        // The newest failure's reason is the one reported.
        h.record(Err("write /x: Read-only file system (os error 30)"));
        assert_eq!(
            h.failing_within(window).as_deref(),
            Some("write /x: Read-only file system (os error 30)")
        );
        h.record(Ok(()));
        assert!(h.healthy());
        assert_eq!(h.failing_within(window), None, "one success clears it");
    }

    #[test]
    fn a_write_that_does_not_return_is_stuck_after_a_while() {
        let h = SinkHealth::default();
        assert_eq!(h.stuck_at(Instant::now()), None, "no write under way");
        h.writing();
        let since = h.writing_since().unwrap();
        assert_eq!(h.stuck_at(since + STUCK_WRITE), None);
        let later = since + STUCK_WRITE + Duration::from_secs(1);
        assert_eq!(
            h.stuck_at(later),
            Some(STUCK_WRITE + Duration::from_secs(1))
        );
        h.record(Ok(()));
        assert_eq!(h.stuck_at(later), None, "returned");
    }

    #[test]
    fn a_failure_older_than_the_window_no_longer_counts() {
        let h = SinkHealth::default();
        let window = Duration::from_secs(30);
        h.record(Err(ENOSPC));
        let at = h.lock().as_ref().map(|f| f.at).unwrap();
        assert!(h.failing_at(at, window).is_some());
        assert!(h.failing_at(at + window, window).is_some(), "inclusive");
        let later = at + window + Duration::from_millis(1);
        assert_eq!(h.failing_at(later, window), None);
        // The gauge still says the last write failed: nothing has succeeded since.
        assert!(!h.healthy());
    }
}
