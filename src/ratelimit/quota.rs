//! Quotas and which one applies to an identity.
//!
//! **Most specific wins, field by field**: for each of `reads`, `writes`, `watches`,
//! `sessions` and `in_flight` separately, the first level that sets it among *user* > *group* > *tenant* >
//! *default* decides. So `users: {alice: {reads: ..}}` changes alice's reads and leaves her
//! writes to her groups, tenant or the default.
//!
//! **Several matching groups**: the **most generous** of them wins (highest rate, then highest
//! burst; for stream and in-flight caps the highest count). Group membership is additive, like RBAC grants,
//! and the order of groups in a token or certificate is not something an operator controls, so
//! "first listed" would make the effective quota depend on the issuer. To hold one member of a
//! generous group down, configure that user under `users:`.
//!
//! Buckets are always **per identity** (the Kubernetes user name): a group or tenant entry
//! chooses the quota each of its members gets, not a budget the members share.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use crate::authn::identity::Identity;

/// Unit of a [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    fn secs(self) -> u64 {
        match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        }
    }
}

/// `tokens` per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub tokens: u32,
    pub per: Per,
}

impl Rate {
    /// Tokens per hour, for comparing rates exactly.
    pub fn per_hour(self) -> u64 {
        u64::from(self.tokens) * (3600 / self.per.secs())
    }

    /// Time to earn one token (at least 1 ns).
    pub fn period(self) -> Duration {
        let nanos = self.per.secs() * 1_000_000_000 / u64::from(self.tokens.max(1));
        Duration::from_nanos(nanos.max(1))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per {
            Per::Second => "s",
            Per::Minute => "m",
            Per::Hour => "h",
        };
        write!(f, "{}/{unit}", self.tokens)
    }
}

/// A token bucket: `rate` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketQuota {
    pub rate: Rate,
    pub burst: u32,
}

impl BucketQuota {
    /// This quota split across `replicas`: the rate divided exactly (in the largest unit that
    /// holds it whole: 2/s over 10 replicas is 12/m, 1/m over 3 is 20/h; below 1/h, 1/h), the
    /// burst divided rounded up, at least 1. (Rounding the rate up in its own unit let 10
    /// replicas admit 10/s of a 2/s quota.)
    pub fn divided(self, replicas: u32) -> BucketQuota {
        let r = u64::from(replicas.max(1));
        let per_hour = self.rate.per_hour();
        let exact = [Per::Second, Per::Minute, Per::Hour]
            .into_iter()
            .find_map(|per| {
                // Tokens per hour that one token per `per` is.
                let denom = r * (3600 / per.secs());
                let tokens = u32::try_from(per_hour / denom).ok()?;
                (per_hour.is_multiple_of(denom) && tokens > 0).then_some(Rate { tokens, per })
            });
        let rate = exact.unwrap_or(Rate {
            tokens: u32::try_from(per_hour / r).unwrap_or(u32::MAX).max(1),
            per: Per::Hour,
        });
        BucketQuota {
            rate,
            burst: self.burst.div_ceil(replicas.max(1)).max(1),
        }
    }

    /// Seconds to refill an empty bucket (`w` of `RateLimit-Policy`), at least 1.
    pub fn window_secs(self) -> u64 {
        let nanos = self.rate.period().as_nanos() * u128::from(self.burst);
        u64::try_from(nanos.div_ceil(1_000_000_000))
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn more_generous_than(self, other: BucketQuota) -> bool {
        (self.rate.per_hour(), self.burst) > (other.rate.per_hour(), other.burst)
    }
}

impl fmt::Display for BucketQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, burst {}", self.rate, self.burst)
    }
}

/// The limits one level sets; `None` = not set here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub reads: Option<BucketQuota>,
    pub writes: Option<BucketQuota>,
    pub watches: Option<u32>,
    pub sessions: Option<u32>,
    /// Requests without a stream permit in flight at once (a log read whole and
    /// `/debug/pprof/` included).
    pub in_flight: Option<u32>,
}

/// A fast, unkeyed string hasher for the name → limits tables.
///
/// These tables are built once from config and only *looked up* with client-derived names, so
/// flooding attacks on the hash (which need insertions) do not apply; the worst a crafted name
/// can do is probe the configured entries. Multiply-rotate per 8-byte word, `fmix64` finish.
#[derive(Default, Clone, Copy)]
pub struct NameHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for NameHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(K);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A configured name → limits table.
pub type NameTable = HashMap<Box<str>, Limits, BuildHasherDefault<NameHasher>>;

/// The four levels as configured.
#[derive(Debug, Clone, Default)]
pub struct Levels {
    pub default: Limits,
    pub users: NameTable,
    pub groups: NameTable,
    pub tenants: NameTable,
}

/// Which level a limit came from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    User,
    Group(&'a str),
    Tenant(&'a str),
    Default,
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::User => f.write_str("user quota"),
            Source::Group(g) => write!(f, "quota of group {g:?}"),
            Source::Tenant(t) => write!(f, "quota of tenant {t:?}"),
            Source::Default => f.write_str("default quota"),
        }
    }
}

/// A name table tuned for lookups: a short list compares lengths and bytes (no hashing), a
/// long one hashes.
#[derive(Debug, Clone)]
enum Table {
    Small(Vec<(Box<str>, Limits)>),
    Large(NameTable),
}

/// Up to this many entries a linear scan beats hashing the name.
const SMALL_TABLE: usize = 8;

impl Table {
    fn new(t: &NameTable) -> Table {
        if t.len() <= SMALL_TABLE {
            Table::Small(t.iter().map(|(k, v)| (k.clone(), *v)).collect())
        } else {
            Table::Large(t.clone())
        }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        match self {
            Table::Small(v) => v.is_empty(),
            Table::Large(m) => m.is_empty(),
        }
    }

    #[inline]
    fn get(&self, name: &str) -> Option<&Limits> {
        match self {
            Table::Small(v) => v.iter().find(|(k, _)| **k == *name).map(|(_, l)| l),
            Table::Large(m) => m.get(name),
        }
    }
}

/// Resolved quota lookups; see the module doc for the rules.
#[derive(Debug, Clone)]
pub struct Policy {
    levels: Levels,
    users: Table,
    groups: Table,
    tenants: Table,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Levels::default())
    }
}

impl Policy {
    pub fn new(levels: Levels) -> Policy {
        Policy {
            users: Table::new(&levels.users),
            groups: Table::new(&levels.groups),
            tenants: Table::new(&levels.tenants),
            levels,
        }
    }

    pub fn levels(&self) -> &Levels {
        &self.levels
    }

    /// The quota of one bucket class for `id`, with where it came from.
    pub fn bucket<'a>(
        &'a self,
        id: &'a Identity,
        pick: fn(&Limits) -> Option<BucketQuota>,
    ) -> Option<(BucketQuota, Source<'a>)> {
        self.resolve(id, pick, |a, b| a.more_generous_than(b))
    }

    /// The stream cap of one kind for `id`.
    pub fn streams<'a>(
        &'a self,
        id: &'a Identity,
        pick: fn(&Limits) -> Option<u32>,
    ) -> Option<(u32, Source<'a>)> {
        self.resolve(id, pick, |a, b| a > b)
    }

    #[inline]
    fn resolve<'a, T: Copy>(
        &'a self,
        id: &'a Identity,
        pick: fn(&Limits) -> Option<T>,
        better: impl Fn(T, T) -> bool,
    ) -> Option<(T, Source<'a>)> {
        if !self.users.is_empty() {
            if let Some(v) = self.users.get(id.user.as_str()).and_then(pick) {
                return Some((v, Source::User));
            }
        }
        if !self.groups.is_empty() {
            let mut best: Option<(T, Source<'a>)> = None;
            for g in &id.groups {
                if let Some(v) = self.groups.get(g.as_str()).and_then(pick) {
                    if best.is_none_or(|(b, _)| better(v, b)) {
                        best = Some((v, Source::Group(g.as_str())));
                    }
                }
            }
            if best.is_some() {
                return best;
            }
        }
        if !self.tenants.is_empty() {
            if let Some(t) = &id.tenant {
                if let Some(v) = self.tenants.get(t.as_str()).and_then(pick) {
                    return Some((v, Source::Tenant(t.as_str())));
                }
            }
        }
        pick(&self.levels.default).map(|v| (v, Source::Default))
    }
}
