//! What a reconfigured limiter ([`super::RateLimiter::reconfigured`]) takes over from the one it
//! replaces, and why each piece is safe to share.
//!
//! - **Buckets**: `LocalBuckets` keeps one keyed limiter per distinct quota, so "this
//!   identity's quota did not change" is exactly "its quota's limiter exists in both": that
//!   limiter is shared (old requests and new ones drain the same bucket), and keys are hashed
//!   with the old secret. An identity whose quota changed resolves to another limiter and
//!   starts with a full bucket of its new quota; a quota no longer used is dropped with the old
//!   limiter.
//! - **Open streams** (watches, sessions) are counted per identity whatever the caps: the
//!   table is shared, so streams opened before the reload still count against the new caps,
//!   and their permits release into the same table when they end. The same table counts each
//!   identity's `in_flight` places, but only where a cap applies (as `max_in_flight`, below):
//!   a changed cap keeps its count, an added one starts from zero.
//! - **Failing-address blocks** are kept when `unauthenticated` is unchanged.
//! - **In-flight count**: shared when the old limiter had a cap (its places are given back when
//!   the upstream answer has been read, so the count is what the API server is working on),
//!   with the new `max_in_flight` as the cap. Without a cap nothing is counted, so a cap added
//!   by a reload starts from zero: the requests in flight then are not counted against it
//!   (they end within their deadline). Counting them would mean holding uncapped places with
//!   the answer (the hand-back costs three allocations per request), and a client that reads
//!   nothing could pin such places until the cap an operator adds in an incident refused
//!   everyone (review).
//! - **Metrics**: the same families (registered once, at start).
//! - **The eviction schedule**: when the last sweep ran, so the new limiter's sweep comes on
//!   time instead of a whole `idle_eviction` after the reload.
//!
//! The Redis backend is rebuilt (its state lives in Redis, keyed by identity).

use std::sync::Arc;

use super::{
    inflight::InFlight, local::LocalBuckets, source::SourceLimiter, streams::StreamTable, Inner,
    Metrics, Settings,
};

/// The pieces taken over (empty at start).
pub(super) struct Carried<'a> {
    pub buckets: Option<&'a LocalBuckets>,
    pub streams: Arc<StreamTable>,
    pub sources: Option<Arc<SourceLimiter>>,
    pub in_flight: InFlight,
    pub last_sweep: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl<'a> Carried<'a> {
    pub fn from(prev: Option<&'a Inner>, settings: &Settings, metrics: &Metrics) -> Carried<'a> {
        let streams = match prev {
            Some(p) => Arc::clone(&p.streams),
            None => StreamTable::new(metrics.stream_gauges.clone()),
        };
        let sources = prev
            .and_then(|p| p.sources.as_ref())
            .filter(|s| Some(s.quota()) == settings.unauthenticated)
            .cloned();
        let in_flight = match prev {
            Some(p) if p.in_flight.max().is_some() => p.in_flight.resized(settings.max_in_flight),
            _ => InFlight::new(settings.max_in_flight),
        };
        let last_sweep = match prev {
            Some(p) => Arc::clone(&p.last_sweep),
            None => Arc::default(),
        };
        Carried {
            buckets: prev.map(|p| &p.buckets),
            streams,
            sources,
            in_flight,
            last_sweep,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use http::{HeaderMap, Method, Uri};

    use crate::authn::identity::{Identity, Method as AuthMethod};
    use crate::k8s::request::{classify, RequestInfo};
    use crate::ratelimit::{config, LimiterClock, RateLimiter};

    fn settings(yaml: &str) -> config::Settings {
        let cfg: config::RateLimitsConfig = serde_saphyr::from_str(yaml).expect("test YAML");
        config::validate(&cfg, "rate_limits").expect("valid config")
    }

    fn id(user: &str) -> Identity {
        Identity {
            user: user.into(),
            uid: String::new(),
            groups: Vec::new(),
            extra: BTreeMap::new(),
            tenant: None,
            scope: None,
            method: AuthMethod::ClientCertificate {
                fingerprint: "00".into(),
            },
        }
    }

    fn req(target: &str) -> (RequestInfo, Uri) {
        let uri: Uri = target.parse().expect("test URI");
        let info = classify(&Method::GET, &uri, &HeaderMap::new()).expect("classifies");
        (info, uri)
    }

    fn admitted(rl: &RateLimiter, who: &str, n: usize) -> usize {
        let r = req("/api/v1/namespaces/default/pods/p");
        (0..n)
            .filter(|_| rl.check(&id(who), &r.0, &r.1).is_ok())
            .count()
    }

    const BEFORE: &str = "
default: {reads: {rate: 1/m, burst: 3}, watches: 2}
users: {alice: {reads: {rate: 1/m, burst: 4}}}
";
    // bob and carol (default) keep theirs; alice's changes.
    const AFTER: &str = "
default: {reads: {rate: 1/m, burst: 3}, watches: 2}
users: {alice: {reads: {rate: 1/m, burst: 5}}, dave: {reads: {rate: 1/m, burst: 1}}}
";

    #[test]
    fn unchanged_quota_keeps_its_bucket_changed_quota_starts_afresh() {
        let (clock, fake) = LimiterClock::fake();
        fake.advance(Duration::from_secs(1000));
        let old = RateLimiter::with_clock(settings(BEFORE), clock);
        assert_eq!(admitted(&old, "bob", 10), 3, "bob drains the default burst");
        assert_eq!(admitted(&old, "alice", 10), 4, "alice drains hers");

        let new = old.reconfigured(settings(AFTER));
        assert_eq!(
            admitted(&new, "bob", 10),
            0,
            "bob's quota did not change: still empty"
        );
        assert_eq!(
            admitted(&new, "carol", 10),
            3,
            "carol was never seen: full bucket"
        );
        assert_eq!(
            admitted(&new, "alice", 10),
            5,
            "alice's quota changed: a new full bucket"
        );
        assert_eq!(
            admitted(&new, "dave", 10),
            1,
            "a new user gets the new quota"
        );
        // The old limiter (held by requests admitted before the reload) shares bob's bucket.
        assert_eq!(admitted(&old, "bob", 1), 0);
    }

    #[test]
    fn open_streams_count_against_the_new_caps() {
        let old = RateLimiter::from_settings(settings(BEFORE));
        let watch = req("/api/v1/namespaces/default/pods?watch=1");
        let first = old.check(&id("bob"), &watch.0, &watch.1).expect("watch 1");
        let new = old.reconfigured(settings("default: {watches: 1}"));
        let refused = new
            .check(&id("bob"), &watch.0, &watch.1)
            .expect_err("the watch opened before the reload holds the only slot");
        assert_eq!(refused.limit, "watches");
        drop(first);
        new.check(&id("bob"), &watch.0, &watch.1)
            .expect("released into the shared table");
    }

    /// Streams opened while no cap applied still count once a reload sets one: a cap added to
    /// curb a flood finds the flood.
    #[test]
    fn streams_opened_without_a_cap_count_against_a_cap_added_later() {
        let old = RateLimiter::from_settings(settings("default: {reads: {rate: 1/s, burst: 10}}"));
        let watch = req("/api/v1/namespaces/default/pods?watch=1");
        let open: Vec<_> = (0..2)
            .map(|_| old.check(&id("bob"), &watch.0, &watch.1).expect("no cap"))
            .collect();
        let new = old.reconfigured(settings(
            "default: {reads: {rate: 1/s, burst: 10}, watches: 2}",
        ));
        let refused = new
            .check(&id("bob"), &watch.0, &watch.1)
            .expect_err("the two watches opened before the reload fill the new cap");
        assert_eq!(refused.limit, "watches");
        drop(open);
        new.check(&id("bob"), &watch.0, &watch.1)
            .expect("released into the shared table");
    }

    /// A cap changed by a reload counts the places the old cap's requests hold; a cap added
    /// where there was none starts from zero (nothing is counted without a cap).
    #[test]
    fn a_reload_keeps_the_count_of_a_cap_and_adds_a_cap_from_zero() {
        let old = RateLimiter::from_settings(settings("default: {watches: 1}\nmax_in_flight: 2"));
        let held: Vec<_> = (0..2)
            .map(|_| old.try_in_flight().expect("within the cap"))
            .collect();
        let new = old.reconfigured(settings("default: {watches: 1}\nmax_in_flight: 3"));
        let third = new.try_in_flight().expect("the new cap has room for one");
        let refused = new.try_in_flight().expect_err("the old places count");
        assert_eq!(refused.limit, "in_flight");
        drop(held);
        let _one = new.try_in_flight().expect("released into the shared count");
        drop(third);
        let uncapped = new.reconfigured(settings("default: {watches: 1}"));
        let capped = uncapped.reconfigured(settings("default: {watches: 1}\nmax_in_flight: 2"));
        let _a = capped.try_in_flight().expect("from zero");
        let _b = capped.try_in_flight().expect("from zero");
        assert!(capped.try_in_flight().is_err());
    }

    /// An identity's `in_flight` count lives in the shared table: a changed cap counts the
    /// places held under the old one; a cap added where there was none starts from zero.
    #[test]
    fn a_reload_keeps_an_identitys_in_flight_count_and_adds_a_cap_from_zero() {
        let get = req("/api/v1/namespaces/default/pods/p");
        let take = |rl: &RateLimiter| rl.check(&id("bob"), &get.0, &get.1);
        let old = RateLimiter::from_settings(settings("default: {in_flight: 2}"));
        let held: Vec<_> = (0..2)
            .map(|_| take(&old).expect("within the cap"))
            .collect();
        let new = old.reconfigured(settings("default: {in_flight: 3}"));
        let third = take(&new).expect("the new cap has room for one");
        let refused = take(&new).expect_err("the old places count");
        assert_eq!(refused.limit, "identity_in_flight");
        drop(held);
        let _one = take(&new).expect("released into the shared table");
        drop(third);
        let uncapped = new.reconfigured(settings("default: {reads: {rate: 1/s, burst: 100}}"));
        let unheld: Vec<_> = (0..5).map(|_| take(&uncapped).expect("no cap")).collect();
        let capped = uncapped.reconfigured(settings("default: {in_flight: 2}"));
        // `_one` (admitted under a cap) still counts; the five admitted without one do not.
        let _b = take(&capped).expect("one place left");
        assert!(take(&capped).is_err());
        drop(unheld);
    }
}
