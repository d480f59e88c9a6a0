//! A bounded cache of verified tokens, so a client reusing its token costs one SHA-256 and a
//! map lookup instead of a signature check.
//!
//! Keyed by SHA-256 of the whole token (the token itself is never stored). An entry is never
//! used at or after the token's `exp`, nor after `max_ttl` from when it was cached, so a cached
//! answer can never outlive what a fresh verification would allow (no `exp` leeway either).
//! Bounded: 16 shards, each holding at most `max_entries / 16` (rounded up);
//! a full shard first drops expired entries, then an eighth of its entries in hash order —
//! effectively random, since keys are SHA-256 digests.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hash, Hasher},
    sync::Mutex,
    time::Duration,
};

use aws_lc_rs::digest;

const SHARDS: usize = 16;

/// Cache parameters (`authentication.token_cache_size`, `authentication.token_cache_max_ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// Most tokens kept (default 10 000; 0 disables the cache).
    pub max_entries: usize,
    /// Longest an entry is used, whatever its `exp` (default 10 min).
    pub max_ttl: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_entries: 10_000,
            max_ttl: Duration::from_secs(600),
        }
    }
}

/// SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn of(token: &str) -> TokenKey {
        let d = digest::digest(&digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        TokenKey(out)
    }

    fn prefix(&self) -> u64 {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        u64::from_le_bytes([a, b, c, d, e, f, g, h])
    }

    fn shard(&self) -> usize {
        self.0[31] as usize % SHARDS
    }
}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a uniformly distributed digest an attacker cannot steer: no need to rehash.
        state.write_u64(self.prefix());
    }
}

/// A hasher that passes a `u64` through (only used with [`TokenKey`]).
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Entry<V> {
    value: V,
    /// Unusable at or after this time (since the Unix epoch).
    until: Duration,
}

type Shard<V> = HashMap<TokenKey, Entry<V>, BuildHasherDefault<PassThrough>>;

/// The verified-token cache, holding a `V` (the identity and what it was verified under) per
/// token.
pub struct TokenCache<V> {
    shards: Vec<Mutex<Shard<V>>>,
    per_shard: usize,
    max_ttl: Duration,
}

impl<V: Clone> TokenCache<V> {
    pub fn new(opts: CacheOptions) -> TokenCache<V> {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: opts.max_entries.div_ceil(SHARDS),
            max_ttl: opts.max_ttl,
        }
    }

    /// The cached value for this token, if cached and still valid at `now`.
    pub fn get(&self, key: &TokenKey, now: Duration) -> Option<V> {
        if self.per_shard == 0 {
            return None;
        }
        let shard = self.shards.get(key.shard())?;
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some(e) if now < e.until => Some(e.value.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remember a verified token whose `exp` is `exp` (since the Unix epoch).
    pub fn insert(&self, key: TokenKey, value: V, exp: Duration, now: Duration) {
        let until = exp.min(now + self.max_ttl);
        if self.per_shard == 0 || until <= now {
            return;
        }
        let Some(shard) = self.shards.get(key.shard()) else {
            return;
        };
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            map.retain(|_, e| now < e.until);
            if map.len() >= self.per_shard {
                let drop: Vec<TokenKey> = map
                    .keys()
                    .take((self.per_shard / 8).max(1))
                    .copied()
                    .collect();
                for k in drop {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, Entry { value, until });
    }

    /// Entries held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str) -> String {
        user.to_string()
    }

    const T0: Duration = Duration::from_secs(1_700_000_000);

    #[test]
    fn entries_die_at_exp_and_at_max_ttl() {
        let c = TokenCache::<String>::new(CacheOptions {
            max_entries: 100,
            max_ttl: Duration::from_secs(60),
        });
        let a = TokenKey::of("a");
        let b = TokenKey::of("b");
        c.insert(a, id("a"), T0 + Duration::from_secs(10), T0);
        c.insert(b, id("b"), T0 + Duration::from_secs(3600), T0);
        assert_eq!(c.get(&a, T0 + Duration::from_secs(9)).unwrap(), "a");
        assert!(c.get(&a, T0 + Duration::from_secs(10)).is_none());
        assert!(c.get(&b, T0 + Duration::from_secs(59)).is_some());
        assert!(c.get(&b, T0 + Duration::from_secs(60)).is_none());
        // Already expired: not cached at all.
        c.insert(a, id("a"), T0, T0);
        assert!(c.get(&a, T0).is_none());
    }

    #[test]
    fn size_is_bounded() {
        let c = TokenCache::<String>::new(CacheOptions {
            max_entries: 160,
            max_ttl: Duration::from_secs(60),
        });
        for i in 0..5000 {
            c.insert(
                TokenKey::of(&i.to_string()),
                id("x"),
                T0 + Duration::from_secs(30),
                T0,
            );
        }
        assert!(c.len() <= 160, "{}", c.len());
        assert!(c.len() >= 100);
    }

    #[test]
    fn zero_disables() {
        let c = TokenCache::<String>::new(CacheOptions {
            max_entries: 0,
            max_ttl: Duration::from_secs(60),
        });
        let a = TokenKey::of("a");
        c.insert(a, id("a"), T0 + Duration::from_secs(10), T0);
        assert!(c.get(&a, T0).is_none());
    }
}
