//! The token check itself: [`JwtAuthenticator::authenticate`].
//!
//! Order (cheapest and least trusting first): size → cache → split and decode the header
//! (`alg: none` and `crit` refused) → the unverified `iss` picks the issuer → `alg` must be in
//! the issuer's list → a key of the matching type (the HMAC secret for HS*, never a public key
//! used as an HMAC secret) → signature → `exp` (required), `nbf`, `iat`, `iss`, `aud` →
//! claim validation rules → claim mappings → `system:` refusal and header safety → scope.
//! Every failure is a [`Rejected`] reason for the logs; the client only ever gets 401.

use std::{collections::BTreeMap, str::FromStr, sync::Arc, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::{Map, Value};

use super::{
    alg::{self, Alg, Family, Key},
    cache::{CacheOptions, TokenCache, TokenKey},
    keys::{KeyMiss, KeySet, KeyStats, KeyStore},
    Clock, SystemClock,
};
use crate::{
    authn::{identity::Method, Identity},
    authz::Scope,
    shutdown::Shutdown,
    telemetry::throttled::Throttled,
};

/// Longest token accepted (bytes).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Most keys tried for a token without `kid`.
const MAX_CANDIDATES: usize = 8;

/// Why a token was refused. For logs and metrics only: never send it to the client, and it
/// never contains token material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("empty bearer token")]
    Empty,
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsigned token (alg none)")]
    AlgNone,
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("token has a crit header")]
    CriticalHeader,
    #[error("no issuer configured for this token's iss")]
    UnknownIssuer,
    #[error("algorithm {0:?} is not allowed for this issuer")]
    AlgorithmNotAllowed(Alg),
    #[error("no key for this token's kid and algorithm")]
    UnknownKid,
    #[error("issuer keys not loaded yet")]
    KeysNotLoaded,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("iss does not match")]
    WrongIssuer,
    #[error("aud does not contain an accepted audience")]
    WrongAudience,
    #[error("required claim {0:?} missing")]
    MissingClaim(String),
    #[error("claim {0:?} has the wrong type or an empty value")]
    InvalidClaim(String),
    #[error("claim {0:?} does not have the required value")]
    RuleMismatch(String),
    #[error("claim {0:?} is a distributed claim (_claim_names), which portcullis does not fetch")]
    DistributedClaim(String),
    #[error("email claim used but email_verified is not true")]
    EmailNotVerified,
    #[error("{0} starts with system: (reserved)")]
    SystemIdentity(&'static str),
    #[error("{0} cannot be sent in an impersonation header")]
    UnsafeValue(&'static str),
    #[error("scope claim does not parse: {0}")]
    MalformedScope(String),
}

impl Rejected {
    /// A short, stable label for metrics and audit annotations.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::Empty => "empty",
            Rejected::TooLarge => "too_large",
            Rejected::Malformed(_) => "malformed",
            Rejected::AlgNone => "alg_none",
            Rejected::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Rejected::CriticalHeader => "crit_header",
            Rejected::UnknownIssuer => "unknown_issuer",
            Rejected::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Rejected::UnknownKid => "unknown_kid",
            Rejected::KeysNotLoaded => "keys_not_loaded",
            Rejected::BadSignature => "bad_signature",
            Rejected::Expired => "expired",
            Rejected::NotYetValid => "not_yet_valid",
            Rejected::WrongIssuer => "wrong_issuer",
            Rejected::WrongAudience => "wrong_audience",
            Rejected::MissingClaim(_) => "missing_claim",
            Rejected::InvalidClaim(_) => "invalid_claim",
            Rejected::RuleMismatch(_) => "claim_rule_mismatch",
            Rejected::DistributedClaim(_) => "distributed_claim",
            Rejected::EmailNotVerified => "email_not_verified",
            Rejected::SystemIdentity(_) => "system_identity",
            Rejected::UnsafeValue(_) => "unsafe_value",
            Rejected::MalformedScope(_) => "malformed_scope",
        }
    }
}

/// What an issuer's tokens are checked against and how their claims map to an identity: plain
/// validated data (`JwtSettings` holds it too, before the key store exists).
#[derive(Debug, Clone)]
pub struct IssuerChecks {
    pub url: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub hmac: Option<Key>,
    pub leeway: Duration,
    /// `(claim, required_value)`.
    pub rules: Vec<(String, String)>,
    pub username_claim: String,
    pub username_prefix: String,
    /// `(claim, prefix)`.
    pub groups: Option<(String, String)>,
    pub uid: Option<String>,
    /// `(key, claim)`.
    pub extra: Vec<(String, String)>,
    pub scope_claim: String,
    pub allow_system_identities: bool,
}

/// One configured issuer, validated, with its live key store.
pub struct IssuerPolicy {
    pub checks: IssuerChecks,
    pub keys: Arc<KeyStore>,
    /// [`note_unlisted`](Self::note_unlisted)'s warnings: the first, then at most one per
    /// interval with the count since — the tokens are the callers', the log is not theirs to
    /// fill.
    unlisted: Throttled,
}

/// At most one "signs with an algorithm its list leaves out" warning per issuer this often.
const UNLISTED_WARNING_INTERVAL: Duration = Duration::from_secs(600);

impl IssuerPolicy {
    pub fn new(checks: IssuerChecks, keys: Arc<KeyStore>) -> IssuerPolicy {
        IssuerPolicy {
            checks,
            keys,
            unlisted: Throttled::new(UNLISTED_WARNING_INTERVAL),
        }
    }

    /// A token was refused because `alg` is not in this issuer's list. If a key the issuer
    /// publishes (under the token's `kid`) is for `alg`, the issuer may sign with it while the
    /// list leaves it out — an EdDSA issuer without a list since EdDSA left the default list
    /// (2026-12-07), with remote keys or beside other keys, which the configuration check
    /// cannot see: say so in the log, naming what to write. The header is the caller's, not
    /// verified (the log says so); nothing is verified or fetched here.
    fn note_unlisted(&self, kid: Option<&str>, alg: Alg) {
        if self.keys.in_hand(kid, alg).is_err() {
            return;
        }
        let Some(refused) = self.unlisted.note() else {
            return;
        };
        tracing::warn!(
            issuer = %self.url,
            kid = kid.unwrap_or(""),
            refused,
            "a token was refused whose header names {alg:?} and a key this issuer publishes for {alg:?}: {alg:?} is not in its algorithms ({}) (the header is not verified). If the issuer signs with {alg:?}, add {alg:?} to that issuer's `algorithms` (EdDSA is accepted only where listed, as the default list is kube-apiserver's); at most one such warning per issuer every {} minutes, `refused` counting the tokens since the last",
            alg::names(&self.algorithms),
            UNLISTED_WARNING_INTERVAL.as_secs() / 60
        );
    }
}

impl std::ops::Deref for IssuerPolicy {
    type Target = IssuerChecks;
    fn deref(&self) -> &IssuerChecks {
        &self.checks
    }
}

#[derive(Clone)]
struct Cached {
    /// Shared with every request it authenticates: a cache hit clones a pointer, not the
    /// identity's strings.
    identity: Arc<Identity>,
    keys: Arc<KeyStore>,
    generation: u64,
}

/// Verifies JWT bearer tokens from the configured issuers. Built by
/// [`super::config::build`]; cheap to share behind an `Arc`.
pub struct JwtAuthenticator {
    issuers: BTreeMap<String, Arc<IssuerPolicy>>,
    /// Per token: the identity, its issuer's key store, and the key generation it was
    /// verified under.
    cache: TokenCache<Cached>,
    clock: Arc<dyn Clock>,
}

impl JwtAuthenticator {
    pub(crate) fn new(policies: Vec<IssuerPolicy>, cache: CacheOptions) -> JwtAuthenticator {
        JwtAuthenticator {
            issuers: policies
                .into_iter()
                .map(|p| (p.url.clone(), Arc::new(p)))
                .collect(),
            cache: TokenCache::new(cache),
            clock: Arc::new(SystemClock),
        }
    }

    /// Replace the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> JwtAuthenticator {
        self.clock = clock;
        self
    }

    /// The configured issuer URLs.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.keys().map(String::as_str)
    }

    /// Key-cache counters of one issuer.
    pub fn key_stats(&self, issuer: &str) -> Option<KeyStats> {
        self.issuers.get(issuer).map(|p| p.keys.stats())
    }

    /// How many issuers are configured.
    pub fn issuer_count(&self) -> usize {
        self.issuers.len()
    }

    /// Issuers that have not loaded keys yet (for readiness).
    pub fn issuers_not_ready(&self) -> Vec<String> {
        self.issuers
            .values()
            .filter(|p| !p.keys.is_loaded())
            .map(|p| p.url.clone())
            .collect()
    }

    /// Verified tokens currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// For a configuration reload: take over `prev`'s key store of every issuer `unchanged`
    /// says fetches its keys as before (the keys it holds, its negative cache, its refresh
    /// state), instead of starting that issuer empty — a reload then needs no fetch for it, so
    /// an identity provider that is down blocks no reload that does not touch it.
    pub fn adopt_key_stores(&mut self, prev: &JwtAuthenticator, unchanged: impl Fn(&str) -> bool) {
        for (url, policy) in &mut self.issuers {
            if let Some(old) = prev.issuers.get(url).filter(|_| unchanged(url)) {
                *policy = Arc::new(IssuerPolicy::new(
                    policy.checks.clone(),
                    Arc::clone(&old.keys),
                ));
            }
        }
    }

    /// [`refresh_all`](Self::refresh_all) for the issuers whose key store is not `prev`'s
    /// (those [`adopt_key_stores`](Self::adopt_key_stores) did not take over).
    pub async fn refresh_new(&self, prev: Option<&JwtAuthenticator>) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        for p in self.issuers.values() {
            let shared = prev
                .and_then(|prev| prev.issuers.get(&p.url))
                .is_some_and(|old| Arc::ptr_eq(&old.keys, &p.keys));
            if shared {
                continue;
            }
            if let Err(e) = p.keys.refresh().await {
                failed.push((p.url.clone(), e));
            }
        }
        failed
    }

    /// Whether an issuer with this `iss` URL is configured.
    pub fn has_issuer(&self, url: &str) -> bool {
        self.issuers.contains_key(url)
    }

    /// Load every issuer's keys now; returns the failures as `(issuer, error)`.
    pub async fn refresh_all(&self) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        for p in self.issuers.values() {
            if let Err(e) = p.keys.refresh().await {
                failed.push((p.url.clone(), e));
            }
        }
        failed
    }

    /// Start one background refresh task per issuer (immediately, then every
    /// `refresh_interval`; a remote issuer that never loaded retries every 10 s). The tasks end
    /// when `shutdown` fires.
    pub fn spawn_refresh(&self, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        self.issuers
            .values()
            .map(|p| p.keys.spawn_refresh(shutdown.clone()))
            .collect()
    }

    /// Verify a bearer token (without the `Bearer ` prefix) and map it to an [`Identity`]
    /// (`tenant` is left `None`).
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Identity>, Rejected> {
        if token.is_empty() {
            return Err(Rejected::Empty);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Rejected::TooLarge);
        }
        let now = self.clock.now();
        let key = TokenKey::of(token);
        if let Some(c) = self.cache.get(&key, now) {
            if c.keys.generation() == c.generation {
                return Ok(c.identity);
            }
        }
        // Boxed: a miss may wait for a key refresh, whose state would otherwise sit (and be
        // copied) in every request's future, cache hits included.
        let (identity, exp, keys, generation) = Box::pin(self.verify(token, now)).await?;
        let identity = Arc::new(identity);
        let cached = Cached {
            identity: identity.clone(),
            keys,
            generation,
        };
        self.cache.insert(key, cached, exp, now);
        Ok(identity)
    }

    async fn verify(
        &self,
        token: &str,
        now: Duration,
    ) -> Result<(Identity, Duration, Arc<KeyStore>, u64), Rejected> {
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Rejected::Malformed("not three dot-separated parts"));
        };
        let header = decode_object(h64).ok_or(Rejected::Malformed("header"))?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Rejected::Malformed("header has no alg"))?;
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(Rejected::AlgNone);
        }
        let alg = Alg::from_str(alg_name)
            .map_err(|_| Rejected::UnsupportedAlgorithm(alg_name.chars().take(16).collect()))?;
        if header.contains_key("crit") {
            return Err(Rejected::CriticalHeader);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(Rejected::Malformed("kid is not a string")),
        };
        let claims = decode_object(p64).ok_or(Rejected::Malformed("payload"))?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(Rejected::UnknownIssuer)?;
        let policy = self.issuers.get(iss).ok_or(Rejected::UnknownIssuer)?;
        if !policy.algorithms.contains(&alg) {
            policy.note_unlisted(kid, alg);
            return Err(Rejected::AlgorithmNotAllowed(alg));
        }
        // The claims' checks on the unverified claims, before any key fetch: a token they
        // refuse would be refused after the signature too, so it must not spend the issuer's
        // shared refetch budget (a captured token replayed after its expiry, a forgery under
        // a real or random `kid`). Its signature is still checked against the keys in hand, so
        // the reason recorded is the true one — a forgery stays `bad_signature` in the metrics
        // and the audit log, a genuine expired token `expired`.
        let may_fetch = validate_claims(policy, &claims, now).is_ok();

        // Signature: the message is exactly the first two parts as sent.
        let message_len = h64.len() + 1 + p64.len();
        // Read before choosing keys: if they change while we verify, the cache entry is stale.
        let generation = policy.keys.generation();
        let message = token
            .as_bytes()
            .get(..message_len)
            .ok_or(Rejected::Malformed("length"))?;
        let verified = if alg.family() == Family::Hmac {
            let secret = policy
                .hmac
                .as_ref()
                .ok_or(Rejected::AlgorithmNotAllowed(alg))?;
            alg::verify(s64, message, secret, alg)
        } else {
            let set = if may_fetch {
                policy.keys.keys_for(kid, alg, now).await
            } else {
                policy.keys.in_hand(kid, alg)
            }
            .map_err(|m| match m {
                KeyMiss::UnknownKid => Rejected::UnknownKid,
                KeyMiss::NotInitialized => Rejected::KeysNotLoaded,
            })?;
            let verifies = |set: &KeySet| {
                set.candidates(kid, alg)
                    .take(MAX_CANDIDATES)
                    .any(|k| alg::verify(s64, message, &k.key, alg))
            };
            // A key rotated under the same `kid` (or a token without one): the new key may
            // be published already — one refetch, under the unknown-kid limit.
            verifies(&set)
                || (may_fetch
                    && match policy.keys.refetched(now, generation).await {
                        Some(fresh) => verifies(&fresh),
                        None => false,
                    })
        };
        if !verified {
            return Err(Rejected::BadSignature);
        }

        // From here on the claims are authentic. The time is read again: the request that
        // brought the keys may have waited for them for seconds.
        let now = self.clock.now();
        let exp = validate_claims(policy, &claims, now)?;
        let identity = map_identity(policy, &claims)?;
        Ok((identity, exp, Arc::clone(&policy.keys), generation))
    }
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Rejected> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| Rejected::InvalidClaim(name.to_string())),
    }
}

/// Time claims, `iss`, `aud` and the validation rules; returns `exp`.
fn validate_claims(
    p: &IssuerPolicy,
    claims: &Map<String, Value>,
    now: Duration,
) -> Result<Duration, Rejected> {
    let now_s = now.as_secs_f64();
    let leeway = p.leeway.as_secs_f64();
    let exp = numeric(claims, "exp")?.ok_or_else(|| Rejected::MissingClaim("exp".into()))?;
    // No leeway on `exp`, as kube-apiserver (go-oidc: `Expiry.Before(now)`): the proxy's
    // answer is final, so an expired token must not outlive what the API server would allow.
    if now_s > exp {
        return Err(Rejected::Expired);
    }
    if let Some(nbf) = numeric(claims, "nbf")? {
        if now_s + leeway < nbf {
            return Err(Rejected::NotYetValid);
        }
    }
    // `iat` must be a number (go-oidc decodes it as one), but its value is not judged: the API
    // server's verifier does not look at it, so a provider whose clock runs ahead is refused
    // there by `nbf` only, and here likewise.
    numeric(claims, "iat")?;
    if claims.get("iss").and_then(Value::as_str) != Some(p.url.as_str()) {
        return Err(Rejected::WrongIssuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => p.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => {
            // A list holding anything but strings (or `null`, which Go's decoder takes as "")
            // does not parse as go-oidc's `audience` (a `[]string`): the API server refuses
            // the token, so must we.
            if list.iter().any(|a| !a.is_string() && !a.is_null()) {
                return Err(Rejected::InvalidClaim("aud".into()));
            }
            list.iter()
                .filter_map(Value::as_str)
                .any(|a| p.audiences.iter().any(|x| x == a))
        }
        None => return Err(Rejected::MissingClaim("aud".into())),
        Some(_) => return Err(Rejected::InvalidClaim("aud".into())),
    };
    if !aud_ok {
        return Err(Rejected::WrongAudience);
    }
    for (claim, required) in &p.rules {
        match claims.get(claim) {
            Some(Value::String(v)) if v == required => {}
            Some(Value::String(_)) => return Err(Rejected::RuleMismatch(claim.clone())),
            None => return Err(Rejected::MissingClaim(claim.clone())),
            Some(_) => return Err(Rejected::InvalidClaim(claim.clone())),
        }
    }
    // exp is a finite number here; negative or absurd values clamp.
    Ok(Duration::try_from_secs_f64(exp.max(0.0)).unwrap_or(Duration::MAX))
}

/// Whether `_claim_names` points `claim` at a claim source (OIDC distributed claims).
fn distributed(claims: &Map<String, Value>, claim: &str) -> bool {
    claims
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key(claim))
}

/// A claim that must be a non-empty string.
fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<String, Rejected> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(Rejected::MissingClaim(name.to_string())),
        Some(_) => Err(Rejected::InvalidClaim(name.to_string())),
    }
}

/// A string or string-array claim; `""`, `[]`, null and absence mean no values, empty
/// strings are dropped.
fn string_list(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, Rejected> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .filter(|v| v.as_str() != Some(""))
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Rejected::InvalidClaim(name.to_string()))
            })
            .collect(),
        Some(_) => Err(Rejected::InvalidClaim(name.to_string())),
    }
}

fn header_safe(value: &str, what: &'static str) -> Result<(), Rejected> {
    if crate::authn::identity::forwards_intact(value) {
        Ok(())
    } else {
        Err(Rejected::UnsafeValue(what))
    }
}

fn map_identity(p: &IssuerPolicy, claims: &Map<String, Value>) -> Result<Identity, Rejected> {
    let name = string_claim(claims, &p.username_claim)?;
    if p.username_claim == "email" {
        match claims.get("email_verified") {
            None | Some(Value::Bool(true)) => {}
            Some(_) => return Err(Rejected::EmailNotVerified),
        }
    }
    let user = format!("{}{}", p.username_prefix, name);
    let groups: Vec<String> = match &p.groups {
        Some((claim, _)) if !claims.contains_key(claim) && distributed(claims, claim) => {
            // The API server would fetch them from the claim source (an identity provider
            // that has too many groups for a token, e.g. Entra ID past 200); authenticating
            // without them would give the caller an identity the API server would not.
            return Err(Rejected::DistributedClaim(claim.clone()));
        }
        Some((claim, prefix)) => string_list(claims, claim)?
            .into_iter()
            .map(|g| format!("{prefix}{g}"))
            .collect(),
        None => Vec::new(),
    };
    let uid = match &p.uid {
        Some(claim) => string_claim(claims, claim)?,
        None => String::new(),
    };
    let mut extra = BTreeMap::new();
    for (key, claim) in &p.extra {
        let values = string_list(claims, claim)?;
        if !values.is_empty() {
            extra.insert(key.clone(), values);
        }
    }

    if !p.allow_system_identities {
        if user.starts_with("system:") {
            return Err(Rejected::SystemIdentity("user"));
        }
        if groups.iter().any(|g| g.starts_with("system:")) {
            return Err(Rejected::SystemIdentity("group"));
        }
    }
    header_safe(&user, "user")?;
    header_safe(&uid, "uid")?;
    for g in &groups {
        header_safe(g, "group")?;
    }
    for v in extra.values().flatten() {
        header_safe(v, "extra value")?;
    }

    let scope = match claims.get(&p.scope_claim) {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<Scope>(v.clone())
                .map_err(|e| Rejected::MalformedScope(e.to_string()))?,
        ),
    };
    let token_id = match claims.get("jti") {
        Some(Value::String(j)) => j.clone(),
        _ => String::new(),
    };
    // Sent upstream as the `portcullis.io/token-id` extra and written to audit: a value that
    // cannot travel intact would make the two audits name different tokens.
    header_safe(&token_id, "jti")?;
    Ok(Identity {
        user,
        uid,
        groups,
        extra,
        tenant: None,
        scope,
        method: Method::Jwt {
            issuer: p.url.clone(),
            token_id,
        },
    })
}
