//! The webhook's limits, as kube-apiserver's audit backends apply them:
//!
//! * [`fit`] — the truncate backend (`plugin/pkg/audit/truncate`): an event whose JSON exceeds
//!   `max_event_size` bytes is sent without its `requestObject` and `responseObject` and with
//!   the annotation `audit.k8s.io/truncated: "true"`; if it is still too big it is not sent
//!   (its waiters get an error, it is counted as failed and logged with its audit ID).
//! * [`by_bytes`] — the truncate backend's batch split (`--audit-webhook-truncate-max-batch-size`):
//!   a batch whose `EventList` body would exceed `max_batch_bytes` is cut into consecutive
//!   parts that each fit, the envelope and the commas counted (the apiserver counts the events
//!   only). An event that does not fit even alone is a part of its own: refusing events by
//!   size is `max_event_size`'s job, and a receiver that finds it too large answers 413 for
//!   that event only.
//! * [`Throttle`] — the batch backend's throttle (`--audit-webhook-batch-throttle-qps` /
//!   `-burst`): a token bucket over batches sent; a batch waits for a token.

use std::time::{Duration, Instant};

use crate::audit::event::Event;

/// The annotation a truncated event carries.
pub const TRUNCATED_ANNOTATION: &str = "audit.k8s.io/truncated";

/// What to send for one event's JSON `line` under `max` bytes (0: no limit).
pub enum Fit<'a> {
    Whole(&'a [u8]),
    Truncated(Vec<u8>),
    TooLarge,
}

pub fn fit(line: &[u8], max: usize) -> Fit<'_> {
    if max == 0 || line.len() <= max {
        return Fit::Whole(line);
    }
    let Ok(mut event) = serde_json::from_slice::<Event>(line) else {
        return Fit::TooLarge;
    };
    event.request_object = None;
    event.response_object = None;
    event
        .annotations
        .insert(TRUNCATED_ANNOTATION.into(), "true".into());
    match serde_json::to_vec(&event) {
        Ok(v) if v.len() <= max => Fit::Truncated(v),
        _ => Fit::TooLarge,
    }
}

/// `items` in order, cut into consecutive parts whose `EventList` body ([`super::event_list_body`]:
/// envelope, events of `len` bytes each, a comma between two) is at most `max` bytes; an item
/// too large for that alone is a part of its own. No part is empty.
pub fn by_bytes<T>(items: Vec<T>, len: impl Fn(&T) -> usize, max: usize) -> Vec<Vec<T>> {
    let empty = super::LIST_HEAD.len() + super::LIST_TAIL.len();
    let mut parts = Vec::new();
    let mut part: Vec<T> = Vec::new();
    let mut size = empty;
    for item in items {
        let n = len(&item);
        if !part.is_empty() && size + 1 + n > max {
            parts.push(std::mem::take(&mut part));
            size = empty;
        }
        size += n + usize::from(!part.is_empty());
        part.push(item);
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

/// A token bucket: `burst` tokens, refilled at `qps` per second (0: no throttle).
pub struct Throttle {
    qps: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Throttle {
    pub fn new(qps: f64, burst: u32) -> Throttle {
        let burst = f64::from(burst.max(1));
        Throttle {
            qps,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// How long to wait before the next batch may go; takes its token.
    pub fn take(&mut self) -> Duration {
        if self.qps <= 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.qps;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn oversized_events_lose_their_objects_then_are_refused() {
        let mut e = Event {
            audit_id: "big".into(),
            request_object: Some(json!({"data": "x".repeat(5000)})),
            response_object: Some(json!({"data": "y".repeat(5000)})),
            ..Event::default()
        };
        e.annotations.insert("k".into(), "v".into());
        let line = serde_json::to_vec(&e).unwrap();
        assert!(matches!(fit(&line, 0), Fit::Whole(_)));
        assert!(matches!(fit(&line, line.len()), Fit::Whole(_)));
        let Fit::Truncated(v) = fit(&line, 2000) else {
            panic!("not truncated")
        };
        let back: Event = serde_json::from_slice(&v).unwrap();
        assert_eq!(back.request_object, None);
        assert_eq!(back.response_object, None);
        assert_eq!(back.annotations[TRUNCATED_ANNOTATION], "true");
        assert_eq!(back.annotations["k"], "v");
        assert_eq!(back.audit_id, "big");
        assert!(matches!(fit(&line, 100), Fit::TooLarge));
    }

    #[test]
    fn by_bytes_keeps_every_body_within_the_cap_and_an_oversized_item_alone() {
        let empty = super::super::LIST_HEAD.len() + super::super::LIST_TAIL.len();
        let body = |part: &[usize]| empty + part.iter().sum::<usize>() + part.len() - 1;
        // Exactly at the cap: one part; one byte over: two.
        assert_eq!(by_bytes(vec![10, 20], |n| *n, empty + 31), [vec![10, 20]]);
        assert_eq!(
            by_bytes(vec![10, 20], |n| *n, empty + 30),
            [vec![10], vec![20]]
        );
        let sizes = vec![300, 5, 700, 2000, 1, 1, 1, 999, 400];
        let max = empty + 1000;
        let parts = by_bytes(sizes.clone(), |n| *n, max);
        assert_eq!(parts.concat(), sizes, "all of them, in order");
        for p in &parts {
            assert!(!p.is_empty());
            assert!(body(p) <= max || p.len() == 1, "{p:?}");
        }
        assert!(parts.contains(&vec![2000]), "{parts:?}");
        assert!(by_bytes(Vec::<usize>::new(), |n| *n, max).is_empty());
    }

    #[test]
    fn throttle_allows_a_burst_then_paces() {
        let mut t = Throttle::new(10.0, 3);
        for _ in 0..3 {
            assert_eq!(t.take(), Duration::ZERO);
        }
        let wait = t.take();
        assert!(
            wait > Duration::from_millis(80) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert_eq!(Throttle::new(0.0, 1).take(), Duration::ZERO);
    }
}
