//! Rate-limit numbers: decisions per second on one core, bytes per tracked identity, memory for
//! one million identities. `cargo bench --bench ratelimit` (prints a table; no criterion, the
//! quantities are throughput and memory rather than latency distributions).
//!
//! Memory is the RSS delta (`/proc/self/statm`) around creating the buckets; identities are
//! generated into one reused buffer so only the limiter's own memory is counted.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Uri};
use portcullis::authn::identity::{Identity, Method as AuthMethod};
use portcullis::k8s::request::{classify, RequestInfo};
use portcullis::ratelimit::{build, RateLimiter, RateLimitsConfig};

fn limiter(yaml: &str) -> RateLimiter {
    let cfg: RateLimitsConfig = serde_saphyr::from_str(yaml).expect("yaml");
    build(&cfg, "rate_limits").expect("valid")
}

fn identity(user: String, groups: &[&str]) -> Identity {
    Identity {
        user,
        uid: String::new(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        extra: BTreeMap::new(),
        tenant: Some("team-a".into()),
        scope: None,
        method: AuthMethod::ClientCertificate {
            fingerprint: "00".into(),
        },
    }
}

fn request(method: Method, target: &str) -> (RequestInfo, Uri) {
    let uri: Uri = target.parse().expect("uri");
    let info = classify(&method, &uri, &HeaderMap::new()).expect("classify");
    (info, uri)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Decisions per second for `ids` identities round-robin, single thread.
fn throughput(name: &str, rl: &RateLimiter, ids: &[Identity], req: &(RequestInfo, Uri)) {
    // Warm up: create every key.
    for id in ids {
        let _ = black_box(rl.check(id, &req.0, &req.1));
    }
    let mut best = 0.0f64;
    let mut allowed = 0u64;
    let n = 5_000_000usize;
    for _ in 0..3 {
        let start = Instant::now();
        for i in 0..n {
            let id = &ids[i % ids.len()];
            if black_box(rl.check(black_box(id), &req.0, &req.1)).is_ok() {
                allowed += 1;
            }
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        best = best.max(rate);
    }
    println!(
        "{name:<58} {:>8.2} M decisions/s  ({:.0} ns each; {:.0}% admitted)",
        best / 1e6,
        1e9 / best,
        100.0 * allowed as f64 / (3 * n) as f64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    println!("ratelimit bench (one thread)\n");

    let generous = limiter(
        "default: {reads: {rate: 1000000/s, burst: 1000000}, writes: {rate: 1000/s, burst: 100}}",
    );
    let get = request(Method::GET, "/api/v1/namespaces/default/pods/p");
    let ids: Vec<Identity> = (0..10_000)
        .map(|i| identity(format!("user-{i}"), &["system:authenticated"]))
        .collect();
    throughput(
        "check: get, default quota, 10k identities, admitted",
        &generous,
        &ids,
        &get,
    );
    let hot = limiter("default: {reads: {rate: 1000000000/s, burst: 1000000000}}");
    throughput(
        "check: get, default quota, 1 identity (one hot key)",
        &hot,
        &ids[..1],
        &get,
    );

    let tight = limiter("default: {reads: {rate: 1/h, burst: 1}}");
    throughput(
        "check: get, bucket empty -> 429 (allocates the Status)",
        &tight,
        &ids,
        &get,
    );

    let policy = limiter(
        r#"
default: {reads: {rate: 1000000/s, burst: 1000000}}
users: {admin: {reads: {rate: 1000000/s, burst: 1000000}}}
groups: {ci: {reads: {rate: 1000000/s, burst: 100000}}, dev: {reads: {rate: 2000000/s, burst: 100000}}}
tenants: {team-a: {writes: {rate: 10/s, burst: 10}}}
costs: {cluster_wide_list: 5, unpaginated_list: 3}
"#,
    );
    let grouped: Vec<Identity> = (0..10_000)
        .map(|i| identity(format!("user-{i}"), &["system:authenticated", "ci", "dev"]))
        .collect();
    throughput(
        "check: get, users+groups+tenants configured, 3 groups",
        &policy,
        &grouped,
        &get,
    );
    let list = request(Method::GET, "/api/v1/pods?limit=500");
    throughput(
        "check: cluster-wide list (cost 5, parses the query)",
        &policy,
        &grouped,
        &list,
    );
    let streams = limiter("default: {reads: {rate: 1000000/s, burst: 1000000}, watches: 1000}");
    let watch = request(Method::GET, "/api/v1/namespaces/default/pods?watch=1");
    throughput(
        "check: watch start + permit acquire/release",
        &streams,
        &ids,
        &watch,
    );

    // Memory: 1 M identities, one read each (one bucket key each), then one write each.
    println!();
    let big = limiter("default: {reads: {rate: 10/s, burst: 20}, writes: {rate: 10/s, burst: 20}}");
    let post = request(Method::POST, "/api/v1/namespaces/default/pods");
    let mut who = identity(String::with_capacity(32), &["system:authenticated"]);
    const N: u64 = 1_000_000;
    let before = rss_bytes();
    let start = Instant::now();
    for i in 0..N {
        who.user.clear();
        let _ = write!(who.user, "system:serviceaccount:tenant-{}:sa-{i}", i % 1000);
        let _ = black_box(big.check(&who, &get.0, &get.1));
    }
    let elapsed = start.elapsed();
    let after_reads = rss_bytes();
    let keys_after_reads = big.tracked_keys();
    for i in 0..N {
        who.user.clear();
        let _ = write!(who.user, "system:serviceaccount:tenant-{}:sa-{i}", i % 1000);
        let _ = black_box(big.check(&who, &post.0, &post.1));
    }
    let after_both = rss_bytes();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "1M identities, reads only:  tracked keys {}, RSS +{:.1} MiB, {:.0} bytes/identity ({:.2} s to insert)",
        keys_after_reads,
        mib(after_reads.saturating_sub(before)),
        after_reads.saturating_sub(before) as f64 / N as f64,
        elapsed.as_secs_f64()
    );
    println!(
        "1M identities, reads+writes: tracked keys {}, RSS +{:.1} MiB, {:.0} bytes/identity",
        big.tracked_keys(),
        mib(after_both.saturating_sub(before)),
        after_both.saturating_sub(before) as f64 / N as f64
    );
    // Eviction: all buckets full again after 2 s of (real) time at 10/s, burst 20.
    std::thread::sleep(Duration::from_millis(2100));
    let start = Instant::now();
    let evicted = big.evict_idle();
    println!(
        "evict_idle over 2M keys: {evicted} evicted in {:.0} ms, RSS now +{:.1} MiB",
        start.elapsed().as_secs_f64() * 1e3,
        mib(rss_bytes().saturating_sub(before))
    );

    println!();
    println!(
        "sizes: governor keyed entry (u64 key + InMemoryState) = {} B + map overhead; \
         one NotKeyed direct limiter = {} B (+ key + map overhead) — the rejected alternative",
        std::mem::size_of::<u64>() + std::mem::size_of::<governor::state::InMemoryState>(),
        std::mem::size_of::<governor::DefaultDirectRateLimiter>()
    );
}
