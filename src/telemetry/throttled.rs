//! A warning that must not flood the log: written at the first occurrence, then at most once
//! per interval with how many occurred since the last line. For failures that can repeat
//! hundreds of times a second (a collector that is down, a full span queue).

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// When the last line was written, and the occurrences not yet written.
pub struct Throttled {
    state: Mutex<(Option<Instant>, u64)>,
    every: Duration,
}

impl Throttled {
    pub const fn new(every: Duration) -> Throttled {
        Throttled {
            state: Mutex::new((None, 0)),
            every,
        }
    }

    fn state(&self) -> MutexGuard<'_, (Option<Instant>, u64)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count one occurrence. `Some(n)` when a line is due now: `n` occurrences since the last
    /// line, this one included (the caller writes it).
    pub fn note(&self) -> Option<u64> {
        let mut state = self.state();
        state.1 += 1;
        self.due(&mut state)
    }

    /// The occurrences not yet written, reset, when a line is due.
    fn due(&self, state: &mut (Option<Instant>, u64)) -> Option<u64> {
        if state.1 == 0 || state.0.is_some_and(|at| at.elapsed() < self.every) {
            return None;
        }
        let since = state.1;
        *state = (Some(Instant::now()), 0);
        Some(since)
    }

    /// The occurrences not yet written, forgotten from here (for a line saying it is over).
    pub fn take_unwritten(&self) -> u64 {
        std::mem::take(&mut self.state().1)
    }

    /// The occurrences not yet written when a line is due, without counting one: for a caller
    /// that learns the episode may be over.
    pub fn unwritten_when_due(&self) -> Option<u64> {
        self.due(&mut self.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_written_then_one_line_per_interval_with_the_count_since() {
        let t = Throttled::new(Duration::from_millis(200));
        assert_eq!(t.note(), Some(1), "the first at once");
        assert_eq!((t.note(), t.note()), (None, None));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.note(), Some(3), "the two held back and this one");
        assert_eq!(t.note(), None);
        assert_eq!(t.unwritten_when_due(), None, "not due yet");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            t.unwritten_when_due(),
            Some(1),
            "the one held back, once due"
        );
        assert_eq!(t.unwritten_when_due(), None, "nothing left");
        assert_eq!(t.note(), None, "a line was just written");
        assert_eq!(t.take_unwritten(), 1);
        assert_eq!(t.take_unwritten(), 0);
    }
}
