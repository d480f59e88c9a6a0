//! The circuit breaker of one upstream endpoint: closed → open → half-open → closed.
//!
//! Closed admits everything and trips to open on `consecutive_failures` failures in a row, or
//! when failures reach `failure_ratio` of at least `min_requests` requests within the sliding
//! `window`. Open admits nothing until `open_for` has passed (the caller answers a 503
//! `ServiceUnavailable` with `Retry-After` = seconds to that moment, without touching the
//! network); then half-open admits up to `half_open_requests` trial requests at once: the first
//! success (or a successful `/readyz` probe) closes it, a failure opens it again for `open_for`.
//! A trial that has not decided within `open_for` (a `proxy` request to a backend that never
//! answers, an exec to a slow kubelet: long-running requests have no deadline) does not hold
//! the endpoint: from then on `/readyz` is probed as while open ([`Breaker::next_probe`]), and
//! its answer decides; the trials of an earlier half-open period count for nothing after it.
//!
//! What counts is decided by the caller ([`Outcome`]): connect / TLS errors, timeouts and
//! 502/503/504 are failures; 4xx and the API server's own 429 are not (429 is `Neutral`: it
//! neither trips nor closes). A permit dropped without an outcome (the client went away) is
//! neutral too, and gives its half-open trial slot back.
//!
//! Time is passed in (`Instant`), so the state machine is tested without sleeping.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::{config::schema, problems::Problems};

/// `upstream.breaker:`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub failure_ratio: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub half_open_requests: u32,
}

impl Default for BreakerSettings {
    /// Opens after 5 failures in a row, or half of ≥ 20 requests within 10 s failing; probes
    /// again after 5 s with one trial request.
    fn default() -> Self {
        BreakerSettings {
            enabled: true,
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_requests: 1,
        }
    }
}

/// Validate `upstream.breaker` (absent: the defaults, enabled).
pub fn validate(c: &mut Problems, b: Option<&schema::Breaker>) -> BreakerSettings {
    let d = BreakerSettings::default();
    let Some(b) = b else { return d };
    let mut dur = |key: &str, v: &Option<String>, default: Duration| {
        let path = format!("upstream.breaker.{key}");
        let got = c.duration(
            &path,
            v.as_deref(),
            default,
            crate::problems::Wording::General,
        );
        if got.is_zero() {
            c.err(path, "must be more than 0", "give a duration such as 5s");
        }
        got
    };
    let window = dur("window", &b.window, d.window);
    let open_for = dur("open_for", &b.open_for, d.open_for);
    let mut at_least_one = |key: &str, v: Option<u32>, default: u32| {
        let v = v.unwrap_or(default);
        if v == 0 {
            c.err(
                format!("upstream.breaker.{key}"),
                "must be at least 1",
                "to turn the breaker off, set upstream.breaker.enabled: false",
            );
        }
        v
    };
    let consecutive_failures = at_least_one(
        "consecutive_failures",
        b.consecutive_failures,
        d.consecutive_failures,
    );
    let min_requests = at_least_one("min_requests", b.min_requests, d.min_requests);
    let half_open_requests = at_least_one(
        "half_open_requests",
        b.half_open_requests,
        d.half_open_requests,
    );
    let failure_ratio = b.failure_ratio.unwrap_or(d.failure_ratio);
    if !(failure_ratio > 0.0 && failure_ratio <= 1.0) {
        c.err(
            "upstream.breaker.failure_ratio",
            format!("{failure_ratio} is not in (0, 1]"),
            "give a fraction such as 0.5",
        );
    }
    BreakerSettings {
        enabled: b.enabled.unwrap_or(true),
        consecutive_failures,
        failure_ratio,
        min_requests,
        window,
        open_for,
        half_open_requests,
    }
}

/// The three states, as exported by the state gauge (0 / 1 / 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }

    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

/// How one exchange with the endpoint went, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Neither (a 429, a cancelled request).
    Neutral,
}

/// Refused without a network attempt: the state and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub state: State,
    pub retry_after: Duration,
}

/// Told of every state change (metrics, logs).
pub type OnTransition = Box<dyn Fn(State, State) + Send + Sync>;

/// Ten buckets over the window: cheap to update, old counts fall off a bucket at a time.
const BUCKETS: usize = 10;

struct Inner {
    state: State,
    /// Open: when the next trial / probe may go.
    reopen_at: Instant,
    consecutive: u32,
    trials: u32,
    /// Half-open: since when.
    half_open_at: Instant,
    /// Bumped whenever half-open ends: a trial admitted before counts for nothing after.
    epoch: u64,
    /// (bucket start, requests, failures).
    buckets: [(Option<Instant>, u32, u32); BUCKETS],
}

/// One endpoint's breaker. Cheap to share (`Arc`).
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    on_transition: OnTransition,
}

/// An admitted request. Report its outcome with [`Permit::record`]; dropping it unreported is
/// neutral.
pub struct Permit {
    breaker: Arc<Breaker>,
    /// A half-open trial: the epoch it was admitted in.
    trial: Option<u64>,
    done: bool,
}

impl Breaker {
    pub fn new(settings: BreakerSettings, on_transition: OnTransition) -> Arc<Breaker> {
        Arc::new(Breaker {
            settings,
            inner: Mutex::new(Inner {
                state: State::Closed,
                reopen_at: Instant::now(),
                consecutive: 0,
                trials: 0,
                half_open_at: Instant::now(),
                epoch: 0,
                buckets: [(None, 0, 0); BUCKETS],
            }),
            on_transition,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state now (an open breaker whose time is up reads as half-open).
    pub fn state(&self, now: Instant) -> State {
        self.with_state(now, |s| s)
    }

    /// `f` of the state now, called with the breaker's lock held: no transition (whose hook
    /// runs under the same lock) can come between reading the state and `f`'s use of it.
    pub fn with_state<T>(&self, now: Instant, f: impl FnOnce(State) -> T) -> T {
        let g = self.lock();
        f(match g.state {
            State::Open if now >= g.reopen_at => State::HalfOpen,
            s => s,
        })
    }

    /// When `/readyz` should be probed next: an open breaker when it admits its next trial,
    /// a half-open one once its trials have had `open_for` to decide (None when closed).
    pub fn next_probe(&self) -> Option<Instant> {
        let g = self.lock();
        match g.state {
            State::Open => Some(g.reopen_at),
            State::HalfOpen => Some(g.half_open_at + self.settings.open_for),
            State::Closed => None,
        }
    }

    /// Admit a request, or say why not.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Result<Permit, Rejected> {
        let permit = |trial| Permit {
            breaker: self.clone(),
            trial,
            done: false,
        };
        if !self.settings.enabled {
            return Ok(permit(None));
        }
        let mut g = self.lock();
        if g.state == State::Open {
            if now < g.reopen_at {
                return Err(Rejected {
                    state: State::Open,
                    retry_after: g.reopen_at - now,
                });
            }
            self.transition(&mut g, State::HalfOpen);
            g.half_open_at = now;
        }
        match g.state {
            State::Closed => Ok(permit(None)),
            _ if g.trials < self.settings.half_open_requests => {
                g.trials += 1;
                Ok(permit(Some(g.epoch)))
            }
            _ => Err(Rejected {
                state: State::HalfOpen,
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// A `/readyz` probe answered: success closes an open or half-open breaker; a failure
    /// re-opens a half-open one (an open one stays open, its time restarted).
    pub fn probed(&self, ok: bool, now: Instant) {
        if !self.settings.enabled {
            return;
        }
        let mut g = self.lock();
        match (g.state, ok) {
            (State::Closed, _) => {}
            (_, true) => self.close(&mut g),
            (_, false) => self.open(&mut g, now),
        }
    }

    fn record(&self, trial: Option<u64>, outcome: Outcome, now: Instant) {
        if !self.settings.enabled {
            return;
        }
        let mut g = self.lock();
        // A trial of an earlier half-open period is an ordinary late answer.
        let trial = trial == Some(g.epoch) && g.state == State::HalfOpen;
        if trial {
            g.trials = g.trials.saturating_sub(1);
        }
        match (g.state, outcome) {
            (_, Outcome::Neutral) => {}
            (State::Closed, outcome) => self.count(&mut g, outcome == Outcome::Failure, now),
            // A late answer to a request admitted before the breaker opened changes nothing.
            (State::Open, _) => {}
            (State::HalfOpen, Outcome::Success) if trial => self.close(&mut g),
            (State::HalfOpen, Outcome::Failure) if trial => self.open(&mut g, now),
            (State::HalfOpen, _) => {}
        }
    }

    fn count(&self, g: &mut Inner, failed: bool, now: Instant) {
        let s = &self.settings;
        g.consecutive = if failed { g.consecutive + 1 } else { 0 };
        let width = s.window / BUCKETS as u32;
        let current = match g
            .buckets
            .iter()
            .position(|b| b.0.is_some_and(|t| now < t + width))
        {
            Some(i) => i,
            None => {
                // The oldest (or an empty) bucket starts again at `now`.
                let i = (0..BUCKETS)
                    .min_by_key(|&i| g.buckets[i].0)
                    .unwrap_or_default();
                g.buckets[i] = (Some(now), 0, 0);
                i
            }
        };
        g.buckets[current].1 += 1;
        g.buckets[current].2 += u32::from(failed);
        if !failed {
            return;
        }
        let (mut total, mut failures) = (0u32, 0u32);
        for (start, n, f) in g.buckets {
            if start.is_some_and(|t| now.saturating_duration_since(t) < s.window) {
                total += n;
                failures += f;
            }
        }
        let ratio_trips =
            total >= s.min_requests && f64::from(failures) >= s.failure_ratio * f64::from(total);
        if g.consecutive >= s.consecutive_failures || ratio_trips {
            self.open(g, now);
        }
    }

    fn open(&self, g: &mut Inner, now: Instant) {
        g.reopen_at = now + self.settings.open_for;
        self.transition(g, State::Open);
    }

    fn close(&self, g: &mut Inner) {
        g.consecutive = 0;
        g.buckets = [(None, 0, 0); BUCKETS];
        self.transition(g, State::Closed);
    }

    fn transition(&self, g: &mut Inner, to: State) {
        let from = g.state;
        if from == to {
            return;
        }
        g.state = to;
        if from == State::HalfOpen {
            g.epoch += 1;
        }
        if to == State::HalfOpen {
            g.trials = 0;
        }
        (self.on_transition)(from, to);
    }
}

impl Permit {
    /// Report the outcome (the permit is spent; its drop does nothing more).
    pub fn record(self, outcome: Outcome) {
        self.record_at(outcome, Instant::now());
    }

    fn record_at(mut self, outcome: Outcome, now: Instant) {
        self.done = true;
        self.breaker.record(self.trial, outcome, now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker
                .record(self.trial, Outcome::Neutral, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn breaker(s: BreakerSettings) -> (Arc<Breaker>, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let seen = n.clone();
        let b = Breaker::new(
            s,
            Box::new(move |_, _| {
                seen.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (b, n)
    }

    fn fail(b: &Arc<Breaker>, now: Instant) {
        b.admit(now).unwrap().record_at(Outcome::Failure, now);
    }

    #[test]
    fn consecutive_failures_open_and_time_brings_half_open() {
        let (b, transitions) = breaker(BreakerSettings::default());
        let t0 = Instant::now();
        for _ in 0..4 {
            fail(&b, t0);
        }
        assert_eq!(b.state(t0), State::Closed);
        fail(&b, t0);
        assert_eq!(b.state(t0), State::Open);
        let r = b.admit(t0 + Duration::from_secs(2)).err().unwrap();
        assert_eq!(r.state, State::Open);
        assert_eq!(r.retry_after, Duration::from_secs(3));
        // After open_for: one trial at a time.
        let later = t0 + Duration::from_secs(5);
        let trial = b.admit(later).unwrap();
        assert_eq!(b.admit(later).err().unwrap().state, State::HalfOpen);
        trial.record_at(Outcome::Success, later);
        assert_eq!(b.state(later), State::Closed);
        assert_eq!(transitions.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_failed_trial_opens_again_and_a_dropped_one_frees_its_slot() {
        let (b, _) = breaker(BreakerSettings::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            fail(&b, t0);
        }
        let later = t0 + Duration::from_secs(6);
        drop(b.admit(later).unwrap());
        let trial = b.admit(later).unwrap();
        trial.record_at(Outcome::Failure, later);
        assert_eq!(b.state(later), State::Open);
        assert_eq!(b.next_probe(), Some(later + Duration::from_secs(5)));
    }

    /// A trial that never answers (a `proxy` request to a silent backend: long-running, no
    /// deadline) holds the endpoint half-open only until `open_for` has passed: then
    /// `/readyz` is probed and decides, and the hung trial's slot and late answer count for
    /// nothing in a later half-open period.
    #[test]
    fn a_hung_trial_does_not_hold_the_breaker_half_open() {
        let (b, _) = breaker(BreakerSettings::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            fail(&b, t0);
        }
        let half = t0 + Duration::from_secs(5);
        let hung = b.admit(half).unwrap();
        assert_eq!(b.admit(half).err().unwrap().state, State::HalfOpen);
        assert_eq!(b.next_probe(), Some(half + Duration::from_secs(5)));
        // The probe fails: open again; when that ends, a new trial is admitted although the
        // hung one still holds its permit.
        let probe = half + Duration::from_secs(5);
        b.probed(false, probe);
        assert_eq!(b.state(probe), State::Open);
        let again = probe + Duration::from_secs(5);
        let trial = b.admit(again).unwrap();
        // The hung trial's late success is an ordinary late answer: it closes nothing.
        hung.record_at(Outcome::Success, again);
        assert_eq!(b.state(again), State::HalfOpen);
        trial.record_at(Outcome::Success, again);
        assert_eq!(b.state(again), State::Closed);
        // A passing probe closes a half-open breaker whose trial hangs.
        for _ in 0..5 {
            fail(&b, again);
        }
        let half = again + Duration::from_secs(5);
        let _hung = b.admit(half).unwrap();
        b.probed(true, half + Duration::from_secs(5));
        assert_eq!(b.state(half + Duration::from_secs(5)), State::Closed);
        assert_eq!(b.next_probe(), None);
    }

    #[test]
    fn the_ratio_trips_only_with_enough_requests() {
        let s = BreakerSettings {
            consecutive_failures: 100,
            ..BreakerSettings::default()
        };
        let (b, _) = breaker(s);
        let t0 = Instant::now();
        // 9 failures out of 18: under min_requests.
        for i in 0..18 {
            let p = b.admit(t0).unwrap();
            p.record_at(
                if i % 2 == 0 {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
                t0,
            );
        }
        assert_eq!(b.state(t0), State::Closed);
        b.admit(t0).unwrap().record_at(Outcome::Success, t0);
        b.admit(t0).unwrap().record_at(Outcome::Failure, t0);
        assert_eq!(b.state(t0), State::Open);
    }

    #[test]
    fn old_failures_fall_out_of_the_window() {
        let s = BreakerSettings {
            consecutive_failures: 100,
            min_requests: 4,
            ..BreakerSettings::default()
        };
        let (b, _) = breaker(s);
        let t0 = Instant::now();
        for _ in 0..3 {
            fail(&b, t0);
        }
        let later = t0 + Duration::from_secs(11);
        for _ in 0..3 {
            b.admit(later).unwrap().record_at(Outcome::Success, later);
        }
        fail(&b, later);
        assert_eq!(b.state(later), State::Closed);
    }

    #[test]
    fn neutral_outcomes_neither_trip_nor_reset() {
        let (b, _) = breaker(BreakerSettings::default());
        let t0 = Instant::now();
        for _ in 0..50 {
            b.admit(t0).unwrap().record_at(Outcome::Neutral, t0);
        }
        assert_eq!(b.state(t0), State::Closed);
    }

    #[test]
    fn probes_close_and_disabled_never_refuses() {
        let (b, _) = breaker(BreakerSettings::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            fail(&b, t0);
        }
        b.probed(true, t0);
        assert_eq!(b.state(t0), State::Closed);
        let (off, _) = breaker(BreakerSettings {
            enabled: false,
            ..BreakerSettings::default()
        });
        for _ in 0..50 {
            off.admit(t0).unwrap().record_at(Outcome::Failure, t0);
        }
        assert!(off.admit(t0).is_ok());
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = Problems::new();
        let b = schema::Breaker {
            failure_ratio: Some(1.5),
            half_open_requests: Some(0),
            open_for: Some("0s".into()),
            ..Default::default()
        };
        validate(&mut c, Some(&b));
        let paths: Vec<_> = c.into_vec().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "upstream.breaker.open_for",
                "upstream.breaker.half_open_requests",
                "upstream.breaker.failure_ratio"
            ]
        );
    }
}
