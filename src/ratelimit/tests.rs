//! Unit tests on the fake clock: no test sleeps.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::authn::identity::{Identity, Method as AuthMethod};
use crate::k8s::request::{classify, RequestInfo};

use super::config::{self, RateLimitsConfig};
use super::metrics::{Class, Outcome};
use super::{Admission, LimiterClock, Permit, RateLimiter, Rejection};

fn parse(yaml: &str) -> RateLimitsConfig {
    serde_saphyr::from_str(yaml).expect("test YAML parses")
}

fn limiter(yaml: &str) -> (RateLimiter, FakeRelativeClock) {
    let settings = config::validate(&parse(yaml), "rate_limits").expect("valid config");
    let (clock, fake) = LimiterClock::fake();
    // Start away from zero so "now - period" never saturates.
    fake.advance(Duration::from_secs(1000));
    (RateLimiter::with_clock(settings, clock), fake)
}

fn id(user: &str, groups: &[&str], tenant: Option<&str>) -> Identity {
    Identity {
        user: user.into(),
        uid: String::new(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        extra: BTreeMap::new(),
        tenant: tenant.map(str::to_owned),
        scope: None,
        method: AuthMethod::ClientCertificate {
            fingerprint: "00".into(),
        },
    }
}

fn req(method: &str, target: &str) -> (RequestInfo, Uri) {
    req_with(method, target, &HeaderMap::new())
}

fn req_with(method: &str, target: &str, headers: &HeaderMap) -> (RequestInfo, Uri) {
    let uri: Uri = target.parse().expect("test URI");
    let m = Method::from_bytes(method.as_bytes()).expect("method");
    let info = classify(&m, &uri, headers).expect("classifies");
    (info, uri)
}

fn get_pod() -> (RequestInfo, Uri) {
    req("GET", "/api/v1/namespaces/default/pods/p")
}

fn create_pod() -> (RequestInfo, Uri) {
    req("POST", "/api/v1/namespaces/default/pods")
}

fn check(
    rl: &RateLimiter,
    who: &Identity,
    r: &(RequestInfo, Uri),
) -> Result<Admission, Box<Rejection>> {
    rl.check(who, &r.0, &r.1)
}

/// How many of `n` identical requests are admitted.
fn admitted(rl: &RateLimiter, who: &Identity, r: &(RequestInfo, Uri), n: usize) -> usize {
    (0..n).filter(|_| check(rl, who, r).is_ok()).count()
}

const BASIC: &str = r#"
default:
  reads: {rate: 5/s, burst: 10}
  writes: {rate: 1/s, burst: 2}
"#;

// ---------------------------------------------------------------------------------------------
// Config

const EXAMPLE: &str = r#"
mode: enforce
default: {reads: {rate: 50/s, burst: 100}, writes: {rate: 10/s, burst: 20}, watches: 20, sessions: 5}
users:   {alice: {reads: {rate: 5/s, burst: 10}}}
groups:  {ci: {writes: {rate: 2/s, burst: 5}}}
tenants: {team-a: {reads: {rate: 20/m, burst: 40}}}
costs: {cluster_wide_list: 5, unpaginated_list: 3, deletecollection: 10}
unauthenticated: {rate: 5/s, burst: 10}
max_in_flight: 500
idle_eviction: 10m
backend: redis
redis: {url: "redis://127.0.0.1:6379", replicas: 3, on_backend_error: local, timeout: 50ms, key_prefix: "portcullis:rl:"}
"#;

#[test]
fn documented_example_builds() {
    let cfg = parse(EXAMPLE);
    let settings = config::validate(&cfg, "rate_limits").expect("valid");
    assert_eq!(settings.idle_eviction, Duration::from_secs(600));
    let redis = settings.redis.as_ref().expect("redis settings");
    assert_eq!(redis.replicas, 3);
    assert_eq!(redis.timeout, Duration::from_millis(50));
    assert_eq!(redis.backoff, Duration::from_secs(1));
    assert!(config::build(&cfg, "rate_limits").is_ok());
    // The empty section is valid and limits nothing.
    assert!(config::build(&RateLimitsConfig::default(), "rate_limits").is_ok());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let cfg = parse(
        r#"
default: {reads: {rate: fast, burst: 0}, writes: {rate: 0/s, burst: 1}}
users: {bob: {writes: {rate: 3/d, burst: 2}}}
groups: {ci: {reads: {rate: 1/s, burst: 0}}, huge: {reads: {rate: 1/h, burst: 100000}}}
costs: {deletecollection: 0}
max_in_flight: 0
idle_eviction: soon
backend: redis
"#,
    );
    let problems = config::validate(&cfg, "rate_limits").expect_err("invalid");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "rate_limits.default.reads.rate",
        "rate_limits.default.reads.burst",
        "rate_limits.default.writes.rate",
        "rate_limits.users.bob.writes.rate",
        "rate_limits.groups.ci.reads.burst",
        "rate_limits.groups.huge.reads.burst",
        "rate_limits.costs.deletecollection",
        "rate_limits.max_in_flight",
        "rate_limits.idle_eviction",
        "rate_limits.redis",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    let bad_redis = parse(
        r#"
backend: redis
redis: {url: "http://x", replicas: 0, timeout: 0s, key_prefix: ""}
"#,
    );
    let problems = config::validate(&bad_redis, "rate_limits").expect_err("invalid");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "rate_limits.redis.url",
        "rate_limits.redis.replicas",
        "rate_limits.redis.timeout",
        "rate_limits.redis.key_prefix",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    // `redis: {…}` with `extra` keys: refused for that one key, with that bound named.
    let refused = |extra: &str, path: &str, bound: &str| {
        let cfg = parse(&format!(
            "backend: redis\nredis: {{url: \"redis://127.0.0.1:6379\", replicas: 1, {extra}}}\n"
        ));
        let problems = config::validate(&cfg, "rate_limits").expect_err("invalid");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, path);
        assert!(problems[0].to_string().contains(bound), "{}", problems[0]);
    };
    // A timeout every limited request could wait through (a typo for 50ms) is refused.
    refused("timeout: 50s", "rate_limits.redis.timeout", "at most 5s");
    // So is a backoff that turns one slow reply into a long outage (a typo for 1s).
    refused("backoff: 1h", "rate_limits.redis.backoff", "at most 30s");
    let fine = parse(
        r#"
backend: redis
redis: {url: "redis://127.0.0.1:6379", replicas: 1, backoff: 30s}
"#,
    );
    config::validate(&fine, "rate_limits").expect("30s is accepted");
}

/// A redis section without `backend: redis` would be ignored (each replica keeping its own
/// buckets), and a stream cap of 0 refuses every stream forever: both are config errors.
#[test]
fn an_ignored_redis_section_and_zero_stream_caps_are_refused() {
    let cfg = parse(
        r#"
default: {watches: 0}
users: {bob: {sessions: 0}}
redis: {url: "redis://127.0.0.1:6379", replicas: 2}
"#,
    );
    let problems = config::validate(&cfg, "rate_limits").expect_err("invalid");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "rate_limits.default.watches",
            "rate_limits.users.bob.sessions",
            "rate_limits.redis"
        ],
        "{problems:?}"
    );
    assert!(problems.iter().all(|p| !p.hint.is_empty()), "{problems:?}");
}

/// An `in_flight` cap of 0 would refuse every request of its identities, for ever.
#[test]
fn a_zero_in_flight_cap_is_refused_with_its_path() {
    let problems = config::validate(&parse("groups: {ci: {in_flight: 0}}"), "rate_limits")
        .expect_err("invalid");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "rate_limits.groups.ci.in_flight");
    assert!(problems[0].hint.contains("at least 1"), "{problems:?}");
}

#[test]
fn unknown_keys_are_rejected() {
    assert!(
        serde_saphyr::from_str::<RateLimitsConfig>("default: {read: {rate: 1/s, burst: 1}}")
            .is_err()
    );
    assert!(serde_saphyr::from_str::<RateLimitsConfig>("mode: audit").is_err());
    assert!(serde_saphyr::from_str::<RateLimitsConfig>(
        "redis: {url: x, replicas: 1, on_backend_error: open}"
    )
    .is_err());
}

#[test]
fn rates_parse() {
    for (raw, per_hour) in [
        ("50/s", 180_000),
        ("6/m", 360),
        ("1/h", 1),
        (" 2 / s ", 7200),
    ] {
        assert_eq!(
            config::parse_rate(raw).expect(raw).per_hour(),
            per_hour,
            "{raw}"
        );
    }
    for raw in ["", "5", "0/s", "-1/s", "1/d", "x/s", "1/"] {
        assert!(config::parse_rate(raw).is_err(), "{raw}");
    }
}

// ---------------------------------------------------------------------------------------------
// Buckets

#[test]
fn burst_then_exactly_one_per_tick() {
    let (rl, clock) = limiter(BASIC);
    let alice = id("alice", &[], None);
    let r = get_pod();
    assert_eq!(admitted(&rl, &alice, &r, 25), 10, "the burst");
    for _ in 0..5 {
        clock.advance(Duration::from_millis(200)); // one token at 5/s
        assert_eq!(admitted(&rl, &alice, &r, 5), 1, "one per tick");
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(admitted(&rl, &alice, &r, 20), 5, "a second refills 5");
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        admitted(&rl, &alice, &r, 20),
        10,
        "never more than the burst"
    );
    // Writes are a separate bucket.
    assert_eq!(admitted(&rl, &alice, &create_pod(), 5), 2);
    assert_eq!(rl.metrics().decisions(Class::Reads, Outcome::Allowed), 30);
    assert_eq!(rl.metrics().decisions(Class::Writes, Outcome::Rejected), 3);
}

#[test]
fn identities_are_isolated() {
    let (rl, _clock) = limiter(
        r#"
default: {reads: {rate: 1/m, burst: 3}}
tenants: {team-a: {reads: {rate: 1/m, burst: 3}}}
"#,
    );
    let team_a = id("team-a-dev", &["system:authenticated"], Some("team-a"));
    let ci = id("ci-bot", &["ci", "system:authenticated"], None);
    let admin = id("admin", &["system:masters"], None);
    let r = get_pod();
    assert_eq!(admitted(&rl, &team_a, &r, 50), 3);
    assert!(check(&rl, &team_a, &r).is_err());
    assert_eq!(admitted(&rl, &ci, &r, 50), 3);
    assert_eq!(admitted(&rl, &admin, &r, 50), 3);
    // A second member of the tenant has a bucket of its own.
    let team_a2 = id("team-a-ops", &[], Some("team-a"));
    assert_eq!(admitted(&rl, &team_a2, &r, 50), 3);
}

#[test]
fn most_specific_quota_wins_field_by_field() {
    let (rl, _clock) = limiter(
        r#"
default: {reads: {rate: 1/m, burst: 100}, writes: {rate: 1/m, burst: 50}}
users:   {alice: {reads: {rate: 1/m, burst: 2}}}
groups:  {ci: {reads: {rate: 1/m, burst: 4}, writes: {rate: 1/m, burst: 3}}, big: {reads: {rate: 1/m, burst: 8}}, fast: {reads: {rate: 2/m, burst: 6}}}
tenants: {team-a: {reads: {rate: 1/m, burst: 5}, writes: {rate: 1/m, burst: 7}}}
"#,
    );
    let r = get_pod();
    let w = create_pod();
    // user beats group, tenant and default for reads…
    let alice = id("alice", &["ci"], Some("team-a"));
    assert_eq!(admitted(&rl, &alice, &r, 200), 2);
    // …and her writes fall through to the group.
    assert_eq!(admitted(&rl, &alice, &w, 200), 3);
    // group beats tenant
    let carl = id("carl", &["ci"], Some("team-a"));
    assert_eq!(admitted(&rl, &carl, &r, 200), 4);
    // tenant beats default
    let dana = id("dana", &[], Some("team-a"));
    assert_eq!(admitted(&rl, &dana, &r, 200), 5);
    assert_eq!(admitted(&rl, &dana, &w, 200), 7);
    // default
    let eve = id("eve", &["nobody"], Some("team-b"));
    assert_eq!(admitted(&rl, &eve, &r, 200), 100);
    // Several groups: the most generous rate wins (fast: 2/m beats big: 1/m burst 8), whatever
    // the order of groups in the identity.
    let f1 = id("f1", &["ci", "big", "fast"], None);
    let f2 = id("f2", &["fast", "big", "ci"], None);
    assert_eq!(admitted(&rl, &f1, &r, 200), 6);
    assert_eq!(admitted(&rl, &f2, &r, 200), 6);
    // Same rate: the larger burst wins.
    let g = id("g", &["ci", "big"], None);
    assert_eq!(admitted(&rl, &g, &r, 200), 8);
}

#[test]
fn cost_weights() {
    let (rl, _clock) = limiter(
        r#"
default: {reads: {rate: 1/m, burst: 10}, writes: {rate: 1/m, burst: 10}}
costs: {cluster_wide_list: 5, unpaginated_list: 3, deletecollection: 20}
"#,
    );
    let cases: [(&str, &str, u32); 6] = [
        ("GET", "/api/v1/namespaces/default/pods?limit=500", 1),
        ("GET", "/api/v1/namespaces/default/pods", 3),
        ("GET", "/api/v1/namespaces/default/pods?limit=0", 3),
        ("GET", "/api/v1/pods?limit=500", 5),
        ("GET", "/api/v1/pods", 5),
        ("GET", "/api/v1/namespaces/default/pods/p", 1),
    ];
    // Query forms: first value wins, escapes decoded, `;` pairs dropped.
    for (target, want) in [
        ("/api/v1/namespaces/d/pods?limit=5&limit=0", 1),
        ("/api/v1/namespaces/d/pods?limit=0&limit=5", 3),
        ("/api/v1/namespaces/d/pods?%6cimit=5", 1),
        ("/api/v1/namespaces/d/pods?limit=%35", 1),
        ("/api/v1/namespaces/d/pods?limit=5;x=1", 3),
        ("/api/v1/namespaces/d/pods?limit=-1", 3),
        ("/api/v1/namespaces/d/pods?watch=false&limit=7", 1),
        // A page no smaller than everything, or one the watch cache may serve whole.
        ("/api/v1/namespaces/d/pods?limit=500", 1),
        ("/api/v1/namespaces/d/pods?limit=501", 3),
        ("/api/v1/namespaces/d/pods?limit=1000000000", 3),
        ("/api/v1/namespaces/d/pods?limit=5&resourceVersion=0", 3),
        ("/api/v1/namespaces/d/pods?limit=5&resourceVersion=123", 1),
        // A watch that starts with the collection costs that list; one from a version, 1.
        ("/api/v1/pods?watch=1", 5),
        ("/api/v1/namespaces/d/pods?watch=1", 3),
        ("/api/v1/namespaces/d/pods?watch=1&resourceVersion=0", 3),
        ("/api/v1/namespaces/d/pods?watch=1&resourceVersion=", 3),
        ("/api/v1/namespaces/d/pods?watch=1&resourceVersion=42", 1),
        ("/api/v1/pods?watch=1&resourceVersion=42", 1),
        (
            "/api/v1/namespaces/d/pods?watch=1&resourceVersion=42&sendInitialEvents=true",
            3,
        ),
        (
            "/api/v1/namespaces/d/pods?watch=1&resourceVersion=42&sendInitialEvents=1",
            3,
        ),
        (
            "/api/v1/namespaces/d/pods?watch=1&resourceVersion=42&sendInitialEvents=False",
            1,
        ),
    ] {
        let r = req("GET", target);
        assert_eq!(rl.cost(&r.0, &r.1).tokens, want, "{target}");
    }
    for (i, (m, target, want)) in cases.into_iter().enumerate() {
        let r = req(m, target);
        assert_eq!(rl.cost(&r.0, &r.1).tokens, want, "{target}");
        // Burst 10 / cost: that many admitted.
        let who = id(&format!("u{i}"), &[], None);
        assert_eq!(
            admitted(&rl, &who, &r, 50),
            (10 / want) as usize,
            "{target}"
        );
    }
    // deletecollection costs 20 > burst 10: clamped to the burst, so it passes once.
    let dc = req("DELETE", "/api/v1/namespaces/default/pods");
    assert_eq!(rl.cost(&dc.0, &dc.1).tokens, 20);
    let who = id("dc", &[], None);
    assert_eq!(admitted(&rl, &who, &dc, 5), 1);
}

#[test]
fn retry_after_is_computed_from_the_bucket() {
    let (rl, clock) =
        limiter("default: {reads: {rate: 1/m, burst: 2}, writes: {rate: 4/s, burst: 1}}");
    let alice = id("alice", &[], None);
    let r = get_pod();
    assert_eq!(admitted(&rl, &alice, &r, 2), 2);
    let rej = check(&rl, &alice, &r).expect_err("empty bucket");
    assert_eq!(rej.retry_after_secs(), 60);
    clock.advance(Duration::from_secs(45));
    let rej = check(&rl, &alice, &r).expect_err("still empty");
    assert_eq!(rej.retry_after_secs(), 15, "not a constant");
    clock.advance(Duration::from_millis(14_500));
    assert_eq!(
        check(&rl, &alice, &r)
            .expect_err("0.5 s left")
            .retry_after_secs(),
        1,
        "rounded up"
    );
    // A sub-second wait is still at least 1.
    let w = create_pod();
    assert!(check(&rl, &alice, &w).is_ok());
    let rej = check(&rl, &alice, &w).expect_err("4/s burst 1");
    assert_eq!(rej.retry_after_secs(), 1);

    // The Status: 429 TooManyRequests, message naming the limit, details and header agree.
    assert_eq!(rej.status().code, 429);
    assert_eq!(rej.status().reason, "TooManyRequests");
    assert_eq!(
        rej.status().message,
        "rate limit exceeded: writes for user \"alice\" (4/s, burst 1; default quota)"
    );
    assert_eq!(rej.limit, "writes");
    assert!(!rej.shadow);
    let resp = rej.into_response();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["ratelimit-policy"], "\"writes\";q=1;w=1");
    assert_eq!(resp.headers()["ratelimit"], "\"writes\";r=0;t=1");
}

#[test]
fn ratelimit_headers_on_admission() {
    let (rl, clock) = limiter(BASIC);
    let alice = id("alice", &[], None);
    let r = get_pod();
    let a = check(&rl, &alice, &r).expect("admitted");
    let mut h = HeaderMap::new();
    a.apply_headers(&mut h);
    assert_eq!(h["ratelimit-policy"], "\"reads\";q=10;w=2");
    assert_eq!(h["ratelimit"], "\"reads\";r=9;t=1");
    for _ in 0..4 {
        let _ = check(&rl, &alice, &r);
    }
    let s = check(&rl, &alice, &r)
        .expect("admitted")
        .rate_limit
        .expect("state");
    assert_eq!((s.remaining, s.reset_secs), (4, 2));
    clock.advance(Duration::from_secs(5));
    let s = check(&rl, &alice, &r)
        .expect("admitted")
        .rate_limit
        .expect("state");
    assert_eq!(s.remaining, 9);
}

#[test]
fn unlimited_classes_admit_without_headers() {
    let (rl, _clock) = limiter("default: {writes: {rate: 1/s, burst: 1}}");
    let alice = id("alice", &[], None);
    let a = check(&rl, &alice, &get_pod()).expect("reads unlimited");
    assert!(a.rate_limit.is_none() && a.permit.is_none());
    assert_eq!(admitted(&rl, &alice, &get_pod(), 1000), 1000);
}

#[test]
fn shadow_mode_admits_and_records() {
    let (rl, _clock) = limiter(
        r#"
mode: shadow
default: {reads: {rate: 1/m, burst: 2}, watches: 1}
"#,
    );
    let alice = id("alice", &[], None);
    let r = get_pod();
    assert_eq!(admitted(&rl, &alice, &r, 5), 5);
    let a = check(&rl, &alice, &r).expect("shadow admits");
    let note = a.shadow_rejection.expect("would-be rejection recorded");
    assert!(note.shadow);
    assert_eq!(note.status().code, 429);
    assert_eq!(note.limit, "reads");
    assert_eq!(rl.metrics().decisions(Class::Reads, Outcome::Allowed), 2);
    assert_eq!(
        rl.metrics()
            .decisions(Class::Reads, Outcome::ShadowRejected),
        4
    );
    assert_eq!(rl.metrics().decisions(Class::Reads, Outcome::Rejected), 0);
    // Streams over the cap too: permits still counted (and released).
    let w = req("GET", "/api/v1/namespaces/default/pods?watch=true");
    let bob = id("bob", &[], None);
    let p1 = check(&rl, &bob, &w).expect("first");
    let p2 = check(&rl, &bob, &w).expect("shadow admits the second");
    assert!(p1.shadow_rejection.is_none());
    assert_eq!(
        p2.shadow_rejection.as_ref().map(|r| r.limit),
        Some("watches")
    );
    assert_eq!(rl.metrics().stream_permits().0, 2);
    drop((p1, p2));
    assert_eq!(rl.metrics().stream_permits().0, 0);
}

// ---------------------------------------------------------------------------------------------
// Streams

fn upgrade_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("connection", "Upgrade".parse().expect("header"));
    h.insert("upgrade", "websocket".parse().expect("header"));
    h
}

#[test]
fn stream_permits_are_counted_and_released_on_drop() {
    let (rl, _clock) = limiter("default: {watches: 2, sessions: 1}");
    let alice = id("alice", &[], None);
    let watch = req("GET", "/api/v1/namespaces/default/pods?watch=1");
    let follow = req("GET", "/api/v1/namespaces/default/pods/p/log?follow=true");
    let log = req("GET", "/api/v1/namespaces/default/pods/p/log");
    let exec = req_with(
        "GET",
        "/api/v1/namespaces/default/pods/p/exec?command=sh",
        &upgrade_headers(),
    );
    let pf = req("POST", "/api/v1/namespaces/default/pods/p/portforward");

    let w1 = check(&rl, &alice, &watch).expect("watch 1");
    let w2 = check(&rl, &alice, &follow).expect("log follow counts as a watch");
    assert!(w1.permit.is_some() && w2.permit.is_some());
    let rej = check(&rl, &alice, &watch).expect_err("cap 2");
    assert_eq!(rej.status().code, 429);
    assert_eq!(rej.limit, "watches");
    assert!(rej
        .status()
        .message
        .contains("too many concurrent watches for user \"alice\" (cap 2"));
    // A non-follow log read is not a stream.
    assert!(check(&rl, &alice, &log)
        .expect("plain read")
        .permit
        .is_none());
    // Sessions are counted separately.
    let s1 = check(&rl, &alice, &exec).expect("exec");
    assert!(check(&rl, &alice, &pf).is_err(), "sessions cap 1");
    assert_eq!(rl.metrics().stream_permits(), (2, 1));
    // Other identities are unaffected.
    let bob = id("bob", &[], None);
    assert!(check(&rl, &bob, &watch).is_ok());

    // Client disconnect = the body holding the permit is dropped, wherever that happens.
    let permit: Permit = w1.permit.expect("permit");
    std::thread::spawn(move || drop(permit))
        .join()
        .expect("thread");
    assert!(check(&rl, &alice, &watch).is_ok(), "slot released");
    drop(s1);
    let s2 = check(&rl, &alice, &pf).expect("session slot released");
    drop((s2, w2));
    assert_eq!(rl.metrics().stream_permits(), (0, 0));
    assert_eq!(rl.metrics().decisions(Class::Watches, Outcome::Rejected), 1);
    assert_eq!(
        rl.metrics().decisions(Class::Sessions, Outcome::Rejected),
        1
    );
}

/// Another resource's followed log is a watch too (OpenShift's `builds/log`): without a
/// permit, a caller could hold any number of upstream streams through it.
#[test]
fn any_followed_log_takes_a_watch_permit() {
    let (rl, _clock) = limiter("default: {watches: 2, sessions: 1}");
    let bob = id("bob", &[], None);
    let build_log = req(
        "GET",
        "/apis/build.openshift.io/v1/namespaces/default/builds/b/log?follow=true",
    );
    let b1 = check(&rl, &bob, &build_log).expect("bob's first");
    let b2 = check(&rl, &bob, &build_log).expect("bob's second");
    assert!(b1.permit.is_some() && b2.permit.is_some());
    let rej = check(&rl, &bob, &build_log).expect_err("bob's cap 2");
    assert_eq!(rej.limit, "watches");
    drop((b1, b2));
    let whole = req(
        "GET",
        "/apis/build.openshift.io/v1/namespaces/default/builds/b/log",
    );
    assert!(check(&rl, &bob, &whole)
        .expect("a log read whole")
        .permit
        .is_none());
}

/// A log or `/debug/pprof/` asked with an HTTP/1.1 `Upgrade` is spliced with no deadline and
/// no stalled-stream reset: it holds a permit (a log a watch one, pprof a session one), where
/// the same request without the upgrade holds none.
#[test]
fn an_upgraded_log_or_pprof_takes_a_permit() {
    let (rl, _clock) = limiter("default: {watches: 1, sessions: 1}");
    let carol = id("carol", &[], None);
    let log = req_with(
        "GET",
        "/api/v1/namespaces/default/pods/p/log",
        &upgrade_headers(),
    );
    let l1 = check(&rl, &carol, &log).expect("the first");
    assert!(l1.permit.is_some());
    assert_eq!(
        check(&rl, &carol, &log).expect_err("cap 1").limit,
        "watches"
    );
    let pprof = req_with("GET", "/debug/pprof/profile", &upgrade_headers());
    let p1 = check(&rl, &carol, &pprof).expect("the first");
    assert!(p1.permit.is_some());
    assert_eq!(
        check(&rl, &carol, &pprof).expect_err("cap 1").limit,
        "sessions"
    );
    let plain = req("GET", "/debug/pprof/profile");
    assert!(check(&rl, &carol, &plain).expect("plain").permit.is_none());
    drop((l1, p1));
}

#[test]
fn permit_is_send_and_static() {
    fn assert_send_static<T: Send + Sync + 'static>() {}
    assert_send_static::<Permit>();
    assert_send_static::<super::InFlightGuard>();
    assert_send_static::<RateLimiter>();
}

#[test]
fn rejected_stream_start_releases_its_permit() {
    // The watch gets its permit, then the read bucket refuses: the permit must not leak.
    let (rl, _clock) = limiter("default: {reads: {rate: 1/m, burst: 1}, watches: 5}");
    let alice = id("alice", &[], None);
    let watch = req("GET", "/api/v1/namespaces/default/pods?watch=1");
    let first = check(&rl, &alice, &watch).expect("first");
    assert!(check(&rl, &alice, &watch).is_err());
    assert_eq!(rl.metrics().stream_permits().0, 1);
    drop(first);
    assert_eq!(rl.metrics().stream_permits().0, 0);
}

// ---------------------------------------------------------------------------------------------
// Before authentication, in flight, eviction

#[test]
fn failed_credentials_are_limited_per_source() {
    let (rl, clock) = limiter("unauthenticated: {rate: 1/m, burst: 3}");
    let a: IpAddr = "192.0.2.1".parse().expect("ip");
    let b: IpAddr = "192.0.2.2".parse().expect("ip");
    assert!(rl.source_blocked(a).is_none());
    for _ in 0..2 {
        rl.record_auth_failure(a);
        assert!(rl.source_blocked(a).is_none());
    }
    rl.record_auth_failure(a); // the third failure empties the bucket
    let rej = rl.source_blocked(a).expect("blocked");
    assert_eq!(rej.status().code, 429);
    assert_eq!(rej.limit, "unauthenticated");
    assert_eq!(rej.retry_after_secs(), 60);
    assert!(rl.source_blocked(b).is_none(), "other addresses unaffected");
    // IPv4-mapped IPv6 is the same host.
    let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
    assert!(rl.source_blocked(mapped).is_some());
    clock.advance(Duration::from_secs(30));
    assert_eq!(rl.source_blocked(a).expect("still").retry_after_secs(), 30);
    clock.advance(Duration::from_secs(30));
    assert!(rl.source_blocked(a).is_none(), "a token is back");
    rl.record_auth_failure(a);
    assert!(rl.source_blocked(a).is_some(), "and spent again");

    // IPv6: one /64 is one source.
    let v6a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
    let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
    let v6c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
    for _ in 0..3 {
        rl.record_auth_failure(v6a);
    }
    assert!(rl.source_blocked(v6b).is_some());
    assert!(rl.source_blocked(v6c).is_none());
}

#[test]
fn no_unauthenticated_section_means_no_source_limit() {
    let (rl, _clock) = limiter(BASIC);
    let a: IpAddr = "192.0.2.1".parse().expect("ip");
    for _ in 0..100 {
        rl.record_auth_failure(a);
    }
    assert!(rl.source_blocked(a).is_none());
}

#[test]
fn in_flight_cap_sheds_with_503() {
    let (rl, _clock) = limiter("max_in_flight: 2");
    let g1 = rl.try_in_flight().expect("1");
    let g2 = rl.try_in_flight().expect("2");
    let rej = rl.try_in_flight().expect_err("3");
    assert_eq!(rej.status().code, 503);
    assert_eq!(rej.status().reason, "ServiceUnavailable");
    assert_eq!(rej.retry_after_secs(), 1);
    assert_eq!(rej.limit, "in_flight");
    let resp = rej.into_response();
    assert_eq!(resp.headers()["retry-after"], "1");
    drop(g1);
    let g3 = rl.try_in_flight().expect("slot freed");
    drop((g2, g3));
    // Without a cap there is no limit.
    let (free, _c) = limiter(BASIC);
    let guards: Vec<_> = (0..1000).map(|_| free.try_in_flight()).collect();
    assert!(guards.iter().all(Result::is_ok));
}

/// `in_flight`: an identity's requests without a stream permit, at once. Over the cap 429
/// with `Retry-After: 1`; a place is given back when dropped; long-running requests take stream
/// permits instead; an identity no cap applies to is not counted; the most specific level wins.
#[test]
fn an_identitys_in_flight_cap_refuses_with_429_and_frees_on_drop() {
    let (rl, _clock) = limiter(
        r#"
default: {in_flight: 2}
users: {bob: {reads: {rate: 1/s, burst: 100}}}
groups: {ops: {in_flight: 3}}
tenants: {free: {reads: {rate: 1/s, burst: 100}}}
"#,
    );
    let alice = id("alice", &[], None);
    let a1 = check(&rl, &alice, &get_pod()).expect("1");
    let a2 = check(&rl, &alice, &create_pod()).expect("2: reads and writes share the cap");
    assert!(a1.place.is_some() && a2.place.is_some() && a1.permit.is_none());
    let rej = check(&rl, &alice, &get_pod()).expect_err("cap 2");
    assert_eq!(rej.status().code, 429);
    assert_eq!(rej.status().reason, "TooManyRequests");
    assert_eq!(rej.retry_after_secs(), 1);
    assert_eq!(rej.limit, "identity_in_flight");
    assert_eq!(
        rej.status().message,
        "too many requests in flight for user \"alice\" (cap 2; default quota)"
    );
    assert_eq!(rl.metrics().identity_in_flight(), 2);
    assert_eq!(
        rl.metrics()
            .decisions(Class::IdentityInFlight, Outcome::Rejected),
        1
    );
    // Long-running requests are not counted here (their stream caps apply).
    let watch = req("GET", "/api/v1/namespaces/default/pods?watch=1");
    let w = check(&rl, &alice, &watch).expect("a watch is not an in-flight request");
    assert!(w.place.is_none());
    // A log read whole is long-running (no deadline, no `max_in_flight` place) and has no
    // stream permit: it takes an in-flight place (bob has the default cap of 2).
    let bob = id("bob", &[], None);
    let log = req("GET", "/api/v1/namespaces/default/pods/p/log");
    let l1 = check(&rl, &bob, &log).expect("log 1");
    assert!(l1.place.is_some() && l1.permit.is_none());
    let _l2 = check(&rl, &bob, &log).expect("log 2");
    assert_eq!(
        check(&rl, &bob, &log).expect_err("cap 2").limit,
        "identity_in_flight"
    );
    drop((l1, _l2));
    // Other identities have their own places; a group's cap is more specific than the default.
    let carol = id("carol", &["ops"], None);
    let c: Vec<_> = (0..3)
        .map(|_| check(&rl, &carol, &get_pod()).expect("group cap 3"))
        .collect();
    assert!(check(&rl, &carol, &get_pod()).is_err());
    // Given back on drop, from any thread.
    let place = a1.place.expect("place");
    std::thread::spawn(move || drop(place))
        .join()
        .expect("thread");
    let a3 = check(&rl, &alice, &get_pod()).expect("place given back");
    drop((a2, a3, c, w));
    assert_eq!(rl.metrics().identity_in_flight(), 0);

    // Without a cap nothing is counted (not even in the table: no place at all).
    let (free, _c) = limiter(BASIC);
    let many: Vec<_> = (0..5)
        .map(|_| check(&free, &alice, &get_pod()).expect("admitted"))
        .collect();
    assert!(many.iter().all(|a| a.place.is_none()));
    assert_eq!(free.metrics().identity_in_flight(), 0);
}

/// Shadow mode lets the request over the cap through, counted and recorded; a bucket that
/// refuses after the place was taken gives it back.
#[test]
fn an_in_flight_cap_in_shadow_mode_admits_and_a_refused_request_gives_its_place_back() {
    let (rl, _clock) = limiter("mode: shadow\ndefault: {in_flight: 1}");
    let alice = id("alice", &[], None);
    let first = check(&rl, &alice, &get_pod()).expect("first");
    let over = check(&rl, &alice, &get_pod()).expect("shadow admits");
    let shadow = over.shadow_rejection.as_ref().expect("recorded");
    assert_eq!(shadow.limit, "identity_in_flight");
    assert_eq!(rl.metrics().identity_in_flight(), 2);
    drop((first, over));

    let (rl, _clock) = limiter("default: {reads: {rate: 1/m, burst: 1}, in_flight: 5}");
    let first = check(&rl, &alice, &get_pod()).expect("first");
    assert!(check(&rl, &alice, &get_pod()).is_err(), "bucket empty");
    assert_eq!(
        rl.metrics().identity_in_flight(),
        1,
        "the refused one's place is back"
    );
    drop(first);
    assert_eq!(rl.metrics().identity_in_flight(), 0);
}

#[test]
fn idle_keys_are_evicted() {
    let (rl, clock) = limiter(
        r#"
default: {reads: {rate: 1/s, burst: 10}}
unauthenticated: {rate: 1/s, burst: 1}
"#,
    );
    let r = get_pod();
    for i in 0..100 {
        assert!(check(&rl, &id(&format!("u{i}"), &[], None), &r).is_ok());
    }
    rl.record_auth_failure("192.0.2.7".parse().expect("ip"));
    assert_eq!(rl.tracked_keys(), 101);
    assert_eq!(rl.evict_idle(), 0, "buckets not yet full again");
    clock.advance(Duration::from_secs(2));
    // 100 identities, the address's bucket and its expired block.
    assert_eq!(rl.evict_idle(), 102);
    assert_eq!(rl.tracked_keys(), 0);
    assert_eq!(rl.metrics().evicted(), 102);
    // An evicted identity starts with a full bucket, as if never seen.
    assert_eq!(admitted(&rl, &id("u1", &[], None), &r, 20), 10);
}

#[tokio::test]
async fn maintenance_task_stops_on_shutdown() {
    let (rl, _clock) = limiter("idle_eviction: 1h");
    let (trigger, shutdown) = crate::shutdown::channel();
    let task = rl.spawn_maintenance(shutdown);
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[tokio::test]
async fn check_async_without_redis_is_check() {
    let (rl, _clock) = limiter(BASIC);
    let alice = id("alice", &[], None);
    let r = get_pod();
    let mut n = 0;
    for _ in 0..20 {
        if rl.check_async(&alice, &r.0, &r.1).await.is_ok() {
            n += 1;
        }
    }
    assert_eq!(n, 10);
}

/// Shadow mode with `on_backend_error: deny`: while Redis cannot be reached the 503 it would
/// answer is recorded, not answered (a trial of the limits never refuses traffic); enforce
/// answers it.
#[tokio::test]
async fn shadow_mode_records_a_deny_of_an_unreachable_backend_instead_of_answering_it() {
    // A port nobody listens on: every backend call fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = |mode: &str| {
        format!(
            r#"
mode: {mode}
default: {{reads: {{rate: 1/m, burst: 2}}}}
backend: redis
redis: {{url: "redis://127.0.0.1:{port}", replicas: 1, on_backend_error: deny, timeout: 300ms, backoff: 100ms}}
"#
        )
    };
    let alice = id("alice", &[], None);
    let r = get_pod();
    let (shadow, _clock) = limiter(&yaml("shadow"));
    let a = shadow
        .check_async(&alice, &r.0, &r.1)
        .await
        .expect("shadow admits");
    let note = a.shadow_rejection.expect("the would-be 503 is recorded");
    assert_eq!(note.status().code, 503);
    assert_eq!(a.degraded, Some("deny"));
    let (enforce, _clock) = limiter(&yaml("enforce"));
    let refused = enforce.check_async(&alice, &r.0, &r.1).await;
    let refused = refused.expect_err("enforce refuses");
    assert_eq!(refused.status().code, 503);
    // The refusal says which degraded mode decided, for the audit event.
    assert_eq!(refused.degraded, Some("deny"));
}

#[test]
fn metrics_register_and_encode_closed_labels() {
    let (rl, _clock) = limiter(BASIC);
    let _ = check(&rl, &id("secret-user-name", &[], None), &get_pod());
    let mut registry = prometheus_client::registry::Registry::with_prefix("portcullis");
    rl.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    assert!(
        text.contains(
            "portcullis_ratelimit_decisions_total{class=\"reads\",outcome=\"allowed\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("portcullis_ratelimit_stream_permits{kind=\"watches\"} 0"));
    assert!(text.contains("portcullis_ratelimit_degraded_decisions_total{mode=\"local\"} 0"));
    assert!(!text.contains("secret-user-name"));
}

#[test]
fn check_async_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (rl, _clock) = limiter(BASIC);
    let alice = id("alice", &[], None);
    let r = get_pod();
    let fut = rl.check_async(&alice, &r.0, &r.1);
    assert_send(&fut);
    drop(fut);
}

/// A reload replaces the limiter and its eviction task: the new task keeps the schedule (the
/// first sweep `idle_eviction` after the last one), so reloads more often than the period do
/// not put every sweep off for ever.
#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_eviction_schedule() {
    let yaml = "default: {reads: {rate: 1/s, burst: 5}}\nidle_eviction: 10m";
    let (rl, _clock) = limiter(yaml);
    let last = |rl: &RateLimiter| {
        *rl.inner
            .last_sweep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let minutes = |m: u64| Duration::from_secs(60 * m);
    let start = tokio::time::Instant::now();
    let (trigger, shutdown) = crate::shutdown::channel();
    let task = rl.spawn_maintenance(shutdown);
    tokio::time::sleep(minutes(11)).await;
    assert_eq!(last(&rl), Some(start + minutes(10)), "the first sweep");
    // Reloads every 6 minutes: each new limiter's task replaces the old one's.
    let mut current = rl;
    let (mut trigger, mut task) = (trigger, task);
    for _ in 0..3 {
        tokio::time::sleep(minutes(6)).await;
        trigger.fire();
        let _ = task.await;
        let settings = config::validate(&parse(yaml), "rate_limits").expect("valid config");
        current = current.reconfigured(settings);
        let (t, shutdown) = crate::shutdown::channel();
        trigger = t;
        task = current.spawn_maintenance(shutdown);
    }
    // 11 + 18 = 29 minutes: sweeps were due at 10 and 20 (and 30 is still ahead).
    assert_eq!(last(&current), Some(start + minutes(20)));
    trigger.fire();
    let _ = task.await;
}

/// Redis down with `on_backend_error: local`: each replica's share of a quota adds up to no
/// more than the quota (it was rounded up in its own unit: 2/s over 10 replicas was 1/s each,
/// 10/s in all).
#[test]
fn a_quota_divided_across_replicas_adds_up_to_no_more_than_the_quota() {
    use super::quota::{BucketQuota, Per, Rate};
    let q = |tokens, per, burst| BucketQuota {
        rate: Rate { tokens, per },
        burst,
    };
    assert_eq!(q(2, Per::Second, 5).divided(10), q(12, Per::Minute, 1));
    assert_eq!(q(1, Per::Minute, 3).divided(3), q(20, Per::Hour, 1));
    assert_eq!(q(10, Per::Second, 20).divided(2), q(5, Per::Second, 10));
    assert_eq!(q(7, Per::Second, 10).divided(3), q(140, Per::Minute, 4));
    // Below one per hour a replica keeps one per hour.
    assert_eq!(q(1, Per::Hour, 1).divided(3), q(1, Per::Hour, 1));
    for tokens in [1, 2, 3, 5, 7, 100, 1000] {
        for per in [Per::Second, Per::Minute, Per::Hour] {
            for replicas in 1..=12u32 {
                let total = q(tokens, per, 10).rate.per_hour();
                let share = q(tokens, per, 10).divided(replicas).rate.per_hour();
                assert!(
                    share * u64::from(replicas) <= total.max(u64::from(replicas)),
                    "{tokens} per {per:?} over {replicas}: {share}/h each"
                );
            }
        }
    }
}
