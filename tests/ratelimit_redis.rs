//! `backend: redis` against a real `redis-server` started on a free loopback port.
//!
//! Two `RateLimiter`s ("replicas") share one Redis and must enforce ONE global limit; then Redis
//! is killed mid-run and the degraded modes (`local` with quota ÷ replicas, `deny`, `allow`) and
//! their metrics are checked; then Redis is restarted and recovery is checked.
//!
//! Skipped (with a message) when `redis-server` is not installed, unless `CI` is set: then it
//! fails. Waits are bounded polls with deadlines; no fixed sleep decides an outcome.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::redis::{redis_binary, Redis};

use http::{HeaderMap, Method, Uri};
use portcullis::authn::identity::{Identity, Method as AuthMethod};
use portcullis::k8s::request::{classify, RequestInfo};
use portcullis::ratelimit::{build, RateLimiter, RateLimitsConfig};

fn limiter(port: u16, on_error: &str, prefix: &str) -> RateLimiter {
    let yaml = format!(
        r#"
default: {{reads: {{rate: 1/h, burst: 10}}, writes: {{rate: 1/h, burst: 4}}}}
backend: redis
redis: {{url: "redis://127.0.0.1:{port}", replicas: 2, on_backend_error: {on_error}, timeout: 300ms, backoff: 100ms, key_prefix: "{prefix}"}}
"#
    );
    let cfg: RateLimitsConfig = serde_saphyr::from_str(&yaml).expect("yaml");
    build(&cfg, "rate_limits").expect("valid config")
}

fn id(user: &str) -> Identity {
    Identity {
        user: user.into(),
        uid: String::new(),
        groups: vec!["system:authenticated".into()],
        extra: BTreeMap::new(),
        tenant: None,
        scope: None,
        method: AuthMethod::ClientCertificate {
            fingerprint: "00".into(),
        },
    }
}

fn get_pod() -> (RequestInfo, Uri) {
    let uri: Uri = "/api/v1/namespaces/default/pods/p".parse().expect("uri");
    let info = classify(&Method::GET, &uri, &HeaderMap::new()).expect("classify");
    (info, uri)
}

/// Admissions out of `n` requests alternating over `replicas`; panics on a degraded decision.
async fn admitted_via_redis(replicas: &[&RateLimiter], who: &Identity, n: usize) -> usize {
    let (info, uri) = get_pod();
    let mut ok = 0;
    for i in 0..n {
        let rl = replicas[i % replicas.len()];
        match rl.check_async(who, &info, &uri).await {
            Ok(a) => {
                assert_eq!(a.degraded, None, "decision {i} did not use Redis");
                ok += 1;
            }
            Err(r) => {
                assert_eq!(r.status().code, 429, "{:?}", r.status());
                assert!(r.retry_after_secs() >= 1);
            }
        }
    }
    ok
}

/// `redis-server`, or `None` after saying the test is skipped (a failure in CI).
fn redis_or_skip() -> Option<std::path::PathBuf> {
    let bin = redis_binary();
    if bin.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("redis-server is required in CI (apt-get install -y redis-server)");
        }
        eprintln!("SKIPPED: redis-server not found in PATH (apt-get install -y redis-server)");
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_limit_degrade_and_recover() {
    let Some(bin) = redis_or_skip() else {
        return;
    };
    let port = common::free_port().port();
    let mut redis = Redis::start(bin, port).await;
    let prefix = format!("test:{}:", std::process::id());

    let a = limiter(port, "local", &prefix);
    let b = limiter(port, "local", &prefix);
    let deny = limiter(port, "deny", &prefix);
    let allow = limiter(port, "allow", &prefix);
    assert!(a.uses_redis());

    // ONE global limit: burst 10 shared by both replicas, not 10 each.
    let alice = id("alice");
    assert_eq!(admitted_via_redis(&[&a, &b], &alice, 30).await, 10);
    // The other modes see the same shared bucket while Redis is up.
    assert_eq!(admitted_via_redis(&[&deny, &allow], &alice, 4).await, 0);
    // Another identity has its own bucket.
    assert_eq!(admitted_via_redis(&[&b, &a], &id("bob"), 30).await, 10);
    // The 429 names the global quota and carries the bucket's wait (1/h: about an hour).
    let (info, uri) = get_pod();
    let rej = a
        .check_async(&alice, &info, &uri)
        .await
        .expect_err("exhausted");
    assert!(rej.retry_after_secs() > 3000, "{}", rej.retry_after_secs());
    assert!(
        rej.status()
            .message
            .contains("(1/h, burst 10; default quota)"),
        "{}",
        rej.status().message
    );
    assert_eq!(a.metrics().backend_errors(), 0);
    assert_eq!(a.metrics().degraded(), [0, 0, 0]);

    // --- Redis goes away mid-run.
    redis.kill().await;

    // local: in-process bucket with quota ÷ replicas (burst 10 / 2 = 5) for a fresh identity.
    let carol = id("carol");
    let mut ok = 0;
    for _ in 0..20 {
        match a.check_async(&carol, &info, &uri).await {
            Ok(adm) => {
                assert_eq!(adm.degraded, Some("local"));
                ok += 1;
            }
            Err(r) => {
                assert_eq!(r.status().code, 429);
                assert_eq!(
                    r.degraded,
                    Some("local"),
                    "the refusal says how it was decided"
                );
            }
        }
    }
    assert_eq!(ok, 5, "degraded local mode enforces quota / replicas");
    assert!(a.metrics().backend_errors() >= 1);
    assert_eq!(a.metrics().degraded()[0], 20);
    let rej = a
        .check_async(&carol, &info, &uri)
        .await
        .expect_err("local bucket empty");
    assert!(
        rej.status().message.contains("(1/h, burst 5;"),
        "{}",
        rej.status().message
    );

    // deny: 503 + Retry-After 1.
    let rej = deny
        .check_async(&carol, &info, &uri)
        .await
        .expect_err("deny");
    assert_eq!(rej.status().code, 503);
    assert_eq!(rej.retry_after_secs(), 1);
    assert_eq!(rej.limit, "backend");
    assert_eq!(deny.metrics().degraded()[1], 1);
    assert!(deny.metrics().backend_errors() >= 1);

    // allow: admitted, counted.
    for _ in 0..20 {
        let adm = allow.check_async(&carol, &info, &uri).await.expect("allow");
        assert!(adm.degraded == Some("allow") && adm.rate_limit.is_none());
    }
    assert_eq!(allow.metrics().degraded()[2], 20);

    // --- Redis comes back (empty: no persistence). Poll until decisions use it again.
    redis.spawn().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for rl in [&a, &b] {
        loop {
            match rl.check_async(&id("probe"), &info, &uri).await {
                Ok(adm) if adm.degraded.is_none() => break,
                _ => {}
            }
            assert!(Instant::now() < deadline, "no recovery after Redis restart");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The global limit holds again across both replicas.
    assert_eq!(admitted_via_redis(&[&a, &b], &id("dave"), 30).await, 10);
    let degraded_after = a.metrics().degraded()[0];
    assert_eq!(admitted_via_redis(&[&a], &id("erin"), 12).await, 10);
    assert_eq!(
        a.metrics().degraded()[0],
        degraded_after,
        "no more degraded decisions"
    );

    // deny recovers too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(adm) = deny.check_async(&id("frank"), &info, &uri).await {
            assert_eq!(adm.degraded, None);
            break;
        }
        assert!(Instant::now() < deadline, "deny replica did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.kill().await;
}

/// Redis' clock stepping back (an NTP correction, a failover to a replica behind) must not lock
/// out every recently active identity for the length of the step: a stored bucket is never
/// treated as further ahead than empty, so the wait is one emission interval at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_clock_stepping_back_does_not_lock_identities_out() {
    let Some(bin) = redis_or_skip() else {
        return;
    };
    let port = common::free_port().port();
    let _redis = Redis::start(bin, port).await;
    let prefix = format!("clock:{}:", std::process::id());
    let yaml = format!(
        r#"
default: {{reads: {{rate: 1/s, burst: 10}}}}
backend: redis
redis: {{url: "redis://127.0.0.1:{port}", replicas: 1, on_backend_error: deny, timeout: 300ms, backoff: 100ms, key_prefix: "{prefix}"}}
"#
    );
    let cfg: RateLimitsConfig = serde_saphyr::from_str(&yaml).expect("yaml");
    let rl = build(&cfg, "rate_limits").expect("valid config");
    let carol = id("carol");
    assert_eq!(admitted_via_redis(&[&rl], &carol, 1).await, 1);
    // As if Redis' clock had stepped back an hour: the stored bucket is an hour ahead.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (installed with redis-server)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let keys = cli(&["--scan", "--pattern", &format!("{prefix}*")]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(!keys.is_empty(), "the bucket is in Redis");
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    for key in keys {
        let ahead = (now_us + 3_600_000_000).to_string();
        cli(&["SET", key, &ahead, "EX", "7200"]);
    }
    let (info, uri) = get_pod();
    let refused = rl
        .check_async(&carol, &info, &uri)
        .await
        .expect_err("a full bucket refuses");
    assert_eq!(refused.status().code, 429);
    assert!(
        refused.retry_after_secs() <= 2,
        "waits {} s for a bucket an hour ahead",
        refused.retry_after_secs()
    );
}
