//! Where an issuer's verification keys come from, and the per-issuer key cache.
//!
//! Sources: OIDC discovery (`/.well-known/openid-configuration`, whose `issuer` must equal the
//! configured URL, then its `jwks_uri`, which must be https), a JWKS URL, a local JWKS file, or
//! local PEM public keys. Remote fetches go over rustls trusting only the configured CA, time
//! out after [`FETCH_TIMEOUT`], never follow redirects, and refuse bodies over
//! [`MAX_DOCUMENT`]. Files are re-read on every refresh.
//!
//! Accepted keys: RSA, EC P-256 / P-384 / P-521 and Ed25519 signature keys. Skipped: `use:
//! enc` keys, symmetric (`oct`) keys (an HMAC secret only ever comes from `hmac_secret_file`), unsupported
//! curves and anything unparsable. A refresh that fails keeps the old keys; one that yields no
//! usable key revokes them (the provider's answer: its tokens are refused, readiness stays). An
//! issuer whose first answer holds no usable key is not loaded (readiness fails, a remote source
//! is retried every 10 s), as one never fetched.
//!
//! Unknown `kid`: at most one refetch per `unknown_kid_min_interval` per issuer; concurrent
//! requests share one in-flight fetch, waiting for it at most [`UNKNOWN_KID_WAIT`] (then the
//! kid is unknown: 401) — so while the identity provider is slow or unreachable, tokens with
//! made-up kids cannot hold requests (and their `max_in_flight` places) for the whole
//! [`FETCH_TIMEOUT`]; a `kid` still unknown after a refetch is negatively cached for the
//! interval, so spraying random kids cannot hammer the identity provider.
//!
//! A signature that fails with the cached keys also gets one refetch under the same limit
//! ([`KeyStore::refetched`]), as go-oidc's `RemoteKeySet` (kube-apiserver's) refetches after any
//! failure: a provider that rotates a key under the same `kid`, or signs without one, would
//! otherwise see its new tokens refused until the next scheduled refresh.
//!
//! Parts: `set.rs` turns JWKS and PEM documents into keys; this file fetches them and caches
//! them per issuer.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use rustls_pki_types::CertificateDer;
use serde_json::Value;

use super::alg::Alg;
use crate::{server::tls, shutdown::Shutdown};

mod set;

pub use set::{pem_to_key, KeySet, VerifyKey};

/// Timeout of one discovery or JWKS fetch (connect, headers and body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document, JWKS or key file accepted.
pub const MAX_DOCUMENT: usize = 1024 * 1024;
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 64;
/// Longest a request with an unknown kid waits for a key fetch another request (or the
/// periodic refresh) has in progress. A healthy JWKS endpoint answers well within it; the
/// fetch itself goes on (bounded by [`FETCH_TIMEOUT`]) and later tokens find its keys.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(2);
/// Most kids remembered as unknown per issuer.
const MAX_NEGATIVE: usize = 4096;
/// Retry period while an issuer has never loaded keys (as the API server: every 10 s).
const INIT_RETRY: Duration = Duration::from_secs(10);

/// The https client used for discovery and JWKS.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An https-only client trusting exactly the CAs `roots` (each within its validity period).
pub fn https_client(roots: Vec<CertificateDer<'static>>) -> anyhow::Result<HttpsClient> {
    let config = tls::client_config(roots, None, &[])?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// OIDC discovery at `url`; the document's `issuer` must equal `issuer`.
    Discovery {
        url: String,
        issuer: String,
    },
    JwksUrl(String),
    JwksFile(PathBuf),
    /// `(file, kid)` pairs.
    PemFiles(Vec<(PathBuf, String)>),
    /// HMAC-only issuer: no public keys.
    None,
}

impl Source {
    pub fn is_remote(&self) -> bool {
        matches!(self, Source::Discovery { .. } | Source::JwksUrl(_))
    }
}

/// Counters of one issuer's key cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyStats {
    /// Loads attempted (initial, periodic and unknown-kid), successful or not.
    pub fetches: u64,
    /// Loads that failed (old keys kept).
    pub fetch_failures: u64,
    /// Unknown-kid refetches refused by the rate limit.
    pub refetches_suppressed: u64,
    /// Unknown kids answered from the negative cache.
    pub negative_hits: u64,
    /// Unknown kids answered as unknown after waiting [`UNKNOWN_KID_WAIT`] for a fetch in
    /// progress.
    pub waits_abandoned: u64,
}

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    refetches_suppressed: AtomicU64,
    negative_hits: AtomicU64,
    waits_abandoned: AtomicU64,
}

#[derive(Default)]
struct Limiter {
    last_unknown_refetch: Option<Duration>,
    /// kid → unknown until.
    negative: HashMap<String, Duration>,
}

/// Why no key could be found for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMiss {
    /// No key with this kid (and algorithm), even after a refetch or while refetches are
    /// rate-limited.
    UnknownKid,
    /// The issuer has not loaded any key yet.
    NotInitialized,
}

/// The key cache of one issuer.
pub struct KeyStore {
    issuer: String,
    source: Source,
    client: Option<HttpsClient>,
    keys: ArcSwap<KeySet>,
    /// SHA-256 of the documents the current keys came from (unchanged content → no swap).
    fingerprint: Mutex<Option<[u8; 32]>>,
    loaded: std::sync::atomic::AtomicBool,
    generation: AtomicU64,
    fetch_lock: tokio::sync::Mutex<()>,
    limiter: Mutex<Limiter>,
    refresh_interval: Duration,
    unknown_kid_min_interval: Duration,
    counters: Counters,
    /// When the last fetch started: a refresh task started later (a reload carries this
    /// store into a new configuration, whose task replaces the old one's) keeps the schedule
    /// instead of waiting a whole `refresh_interval` again.
    last_fetch: Mutex<Option<tokio::time::Instant>>,
}

impl KeyStore {
    pub fn new(
        issuer: String,
        source: Source,
        client: Option<HttpsClient>,
        refresh_interval: Duration,
        unknown_kid_min_interval: Duration,
    ) -> KeyStore {
        KeyStore {
            issuer,
            source,
            client,
            keys: ArcSwap::from_pointee(KeySet::default()),
            fingerprint: Mutex::new(None),
            loaded: Default::default(),
            generation: AtomicU64::new(0),
            fetch_lock: tokio::sync::Mutex::new(()),
            limiter: Mutex::new(Limiter::default()),
            refresh_interval,
            unknown_kid_min_interval,
            counters: Counters::default(),
            last_fetch: Mutex::new(None),
        }
    }

    /// The issuer URL these keys belong to.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Load local sources synchronously (at build time); remote sources are left for later.
    pub fn load_local_now(&self) -> Result<(), String> {
        match &self.source {
            Source::JwksFile(_) | Source::PemFiles(_) => {
                let (set, fp) = load_local(&self.source)?;
                if set.keys.is_empty() {
                    // At start a key file without a usable key is a mistake to report; later
                    // (a refresh) it is the provider's answer, and revokes the old keys.
                    return Err(NO_USABLE_KEY.into());
                }
                self.store(set, fp);
                Ok(())
            }
            Source::None => {
                self.loaded.store(true, Ordering::SeqCst);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The keys in hand now.
    pub fn current(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Whether keys were loaded at least once (always true for an HMAC-only issuer).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// The current counters.
    pub fn stats(&self) -> KeyStats {
        KeyStats {
            fetches: self.counters.fetches.load(Ordering::Relaxed),
            fetch_failures: self.counters.fetch_failures.load(Ordering::Relaxed),
            refetches_suppressed: self.counters.refetches_suppressed.load(Ordering::Relaxed),
            waits_abandoned: self.counters.waits_abandoned.load(Ordering::Relaxed),
            negative_hits: self.counters.negative_hits.load(Ordering::Relaxed),
        }
    }

    /// The key-set generation: changes whenever the keys change (cached tokens verified under
    /// an older generation are re-verified, so a key removed from the JWKS stops working).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn store(&self, set: KeySet, fingerprint: [u8; 32]) {
        let mut fp = self.fingerprint.lock().unwrap_or_else(|e| e.into_inner());
        if *fp != Some(fingerprint) {
            *fp = Some(fingerprint);
            let usable = !set.keys.is_empty();
            self.keys.store(Arc::new(set));
            self.generation.fetch_add(1, Ordering::SeqCst);
            // Loaded means: has held a key that can verify something. A first answer without
            // one leaves the issuer not ready (and retried every 10 s), as keys never fetched
            // do; a later one revokes the keys but keeps readiness — one provider emptying its
            // JWKS must not take every replica, and every other user, out of service.
            if usable {
                self.loaded.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Reload now (shares the fetch lock with unknown-kid refetches). A failure keeps the old
    /// keys.
    pub async fn refresh(&self) -> Result<(), String> {
        if matches!(self.source, Source::None) {
            return Ok(());
        }
        let _guard = self.fetch_lock.lock().await;
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<(), String> {
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tokio::time::Instant::now());
        let result = match &self.source {
            Source::JwksFile(_) | Source::PemFiles(_) => load_local(&self.source),
            Source::Discovery { .. } | Source::JwksUrl(_) => self.load_remote().await,
            Source::None => return Ok(()),
        };
        match result {
            Ok((set, fp)) => {
                let empty = set.keys.is_empty();
                tracing::debug!(issuer = %self.issuer, keys = set.keys.len(), "JWT keys loaded");
                self.store(set, fp);
                if empty {
                    // Stored all the same (it revokes the old keys), but a failure to whoever
                    // needs usable keys: a configuration reload does not go ahead with it.
                    tracing::warn!(issuer = %self.issuer, "{NO_USABLE_KEY}: every token of this issuer is refused until it holds one");
                    return Err(NO_USABLE_KEY.into());
                }
                Ok(())
            }
            Err(err) => {
                self.counters.fetch_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(issuer = %self.issuer, error = %err, "JWT key refresh failed; keeping the previous keys");
                Err(err)
            }
        }
    }

    async fn load_remote(&self) -> Result<(KeySet, [u8; 32]), String> {
        let Some(client) = &self.client else {
            return Err("no https client configured".into());
        };
        let jwks_url = match &self.source {
            Source::Discovery { url, issuer } => {
                let doc = get(client, url).await?;
                let doc: Value = serde_json::from_slice(&doc)
                    .map_err(|e| format!("discovery document {url}: not JSON: {e}"))?;
                let found = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
                if found != issuer {
                    return Err(format!(
                        "discovery document {url} names issuer {found:?}, expected {issuer:?}"
                    ));
                }
                let jwks = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("discovery document {url} has no jwks_uri"))?;
                if !jwks.starts_with("https://") {
                    return Err(format!("jwks_uri {jwks:?} is not https"));
                }
                jwks.to_string()
            }
            Source::JwksUrl(u) => u.clone(),
            _ => return Err("not a remote source".into()),
        };
        let body = get(client, &jwks_url).await?;
        let set = KeySet::from_jwks(&body).map_err(|e| format!("{jwks_url}: {e}"))?;
        Ok((set, sha256(&[&body])))
    }

    /// The keys in hand that may verify a token with this `kid` and `alg`, fetching nothing:
    /// for a token its claims already refuse, which must not spend the issuer's refetch budget
    /// (its signature is still checked, so the reason recorded is the true one).
    pub fn in_hand(&self, kid: Option<&str>, alg: Alg) -> Result<Arc<KeySet>, KeyMiss> {
        let set = self.keys.load_full();
        if set.has(kid, alg) {
            return Ok(set);
        }
        Err(match self.source {
            Source::None => KeyMiss::UnknownKid,
            _ => self.miss(),
        })
    }

    /// The keys that may verify a token with this `kid` and `alg`. An unknown kid triggers at
    /// most one refetch per `unknown_kid_min_interval` (concurrent callers share it); a kid
    /// still unknown afterwards is negatively cached for that interval. `now` is the injected
    /// clock (time since the Unix epoch).
    pub async fn keys_for(
        &self,
        kid: Option<&str>,
        alg: Alg,
        now: Duration,
    ) -> Result<Arc<KeySet>, KeyMiss> {
        let miss = match self.in_hand(kid, alg) {
            Ok(set) => return Ok(set),
            Err(miss) => miss,
        };
        if matches!(self.source, Source::None) {
            return Err(miss);
        }
        let neg_key = kid.unwrap_or("");
        if self.negatively_cached(neg_key, now) {
            self.counters.negative_hits.fetch_add(1, Ordering::Relaxed);
            return Err(self.miss());
        }
        if !self.refetch(now).await {
            return Err(self.miss());
        }
        let set = self.keys.load_full();
        if set.has(kid, alg) {
            return Ok(set);
        }
        self.remember_unknown(neg_key, now);
        Err(self.miss())
    }

    /// After a signature failed with the keys of generation `tried`: those keys if they have
    /// changed since, else one refetch under the unknown-kid limit (see the module doc). The
    /// new keys when they changed, `None` otherwise.
    pub async fn refetched(&self, now: Duration, tried: u64) -> Option<Arc<KeySet>> {
        if matches!(self.source, Source::None) {
            return None;
        }
        let before = self.generation.load(Ordering::SeqCst);
        if before != tried {
            return Some(self.keys.load_full());
        }
        let fresh = self.refetch(now).await && self.generation.load(Ordering::SeqCst) != before;
        fresh.then(|| self.keys.load_full())
    }

    /// One fetch for a request that cannot wait for the schedule: shared with concurrent
    /// callers (waiting for the lock at most [`UNKNOWN_KID_WAIT`]) and limited to one per
    /// `unknown_kid_min_interval`. False when nothing was fetched (the limit, or the wait for
    /// another fetch ran out); true when fetched, or another caller's fetch changed the keys
    /// while this one waited.
    async fn refetch(&self, now: Duration) -> bool {
        let generation = self.generation.load(Ordering::SeqCst);
        // Bounded: the lock is held for a whole fetch, which an unreachable provider makes
        // last FETCH_TIMEOUT (twice, through discovery).
        let Ok(_guard) = tokio::time::timeout(UNKNOWN_KID_WAIT, self.fetch_lock.lock()).await
        else {
            self.counters
                .waits_abandoned
                .fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if self.generation.load(Ordering::SeqCst) != generation {
            // Someone loaded keys while we waited: use that answer.
            return true;
        }
        {
            let mut l = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(last) = l.last_unknown_refetch {
                if now < last + self.unknown_kid_min_interval {
                    self.counters
                        .refetches_suppressed
                        .fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
            l.last_unknown_refetch = Some(now);
        }
        let _ = self.fetch_and_store().await;
        true
    }

    fn miss(&self) -> KeyMiss {
        if self.is_loaded() {
            KeyMiss::UnknownKid
        } else {
            KeyMiss::NotInitialized
        }
    }

    fn negatively_cached(&self, kid: &str, now: Duration) -> bool {
        let l = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        l.negative.get(kid).is_some_and(|until| now < *until)
    }

    fn remember_unknown(&self, kid: &str, now: Duration) {
        let mut l = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        if l.negative.len() >= MAX_NEGATIVE {
            l.negative.retain(|_, until| now < *until);
        }
        if l.negative.len() < MAX_NEGATIVE {
            l.negative
                .insert(kid.to_string(), now + self.unknown_kid_min_interval);
        }
    }

    /// Refresh in the background until `shutdown`: immediately (then every 10 s until the
    /// first success for a remote source), then every `refresh_interval` — counted from the
    /// store's last fetch, so a task started by a reload keeps the schedule (a reload more
    /// often than the interval would otherwise put the refresh off for ever, and keys the
    /// issuer removed would stay trusted).
    pub fn spawn_refresh(self: &Arc<Self>, mut shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            if matches!(store.source, Source::None) {
                return;
            }
            loop {
                let wait = if store.source.is_remote() && !store.is_loaded() {
                    let _ = store.refresh().await;
                    if store.is_loaded() {
                        store.refresh_interval
                    } else {
                        INIT_RETRY.min(store.refresh_interval)
                    }
                } else {
                    store.until_due()
                };
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                // (A remote source not loaded is fetched at the top of the loop; a file that
                // held no usable key is read again on the schedule.)
                if store.is_loaded() || !store.source.is_remote() {
                    let _ = store.refresh().await;
                }
            }
        })
    }
}

impl KeyStore {
    /// Time left until the next scheduled refresh: `refresh_interval` after the last fetch.
    fn until_due(&self) -> Duration {
        let last = *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
        match last {
            Some(at) => self.refresh_interval.saturating_sub(at.elapsed()),
            None => self.refresh_interval,
        }
    }
}

const NO_USABLE_KEY: &str =
    "the JWKS holds no usable signature key (RSA, EC P-256 / P-384 / P-521 or Ed25519, not `use: enc`)";

/// Read a local JWKS file or the PEM files.
fn load_local(source: &Source) -> Result<(KeySet, [u8; 32]), String> {
    match source {
        Source::JwksFile(path) => {
            let bytes = read_capped(path)?;
            let set = KeySet::from_jwks(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((set, sha256(&[&bytes])))
        }
        Source::PemFiles(files) => {
            let mut keys = Vec::new();
            let mut docs = Vec::new();
            for (path, kid) in files {
                let bytes = read_capped(path)?;
                keys.push(pem_to_key(&bytes, kid).map_err(|e| format!("{}: {e}", path.display()))?);
                docs.push(bytes);
            }
            let parts: Vec<&[u8]> = docs.iter().map(Vec::as_slice).collect();
            Ok((KeySet { keys }, sha256(&parts)))
        }
        _ => Err("not a local source".into()),
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_DOCUMENT as u64 {
        return Err(format!("{} is larger than 1 MiB", path.display()));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// GET `url`, expecting 200 and at most [`MAX_DOCUMENT`] bytes within [`FETCH_TIMEOUT`].
async fn get(client: &HttpsClient, url: &str) -> Result<Bytes, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let req = Request::get(uri)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "portcullis")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let fetch = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if resp.status() != StatusCode::OK {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        Limited::new(resp.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("{url}: {e}"))
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("{url}: no answer within {}s", FETCH_TIMEOUT.as_secs()))?
}

#[cfg(test)]
mod tests;
