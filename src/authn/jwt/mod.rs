//! JWT bearer-token authentication, modelled on kube-apiserver's structured
//! `AuthenticationConfiguration` (`authentication.jwt:`), so identities match what the API server
//! would compute from the same token.
//!
//! Accepts a compact JWS whose unverified `iss` names a configured issuer, whose header `alg` is
//! in that issuer's allowed list *and* matches the type of the key it is checked against, whose
//! signature verifies, which carries `exp` (not past: no leeway, as the API server), `aud`
//! (one of the configured audiences), and whose optional `nbf` / `iat` are not in the future
//! (within `leeway`, 1 minute by default as go-oidc's `nbf`); then every `claim_validation_rules` entry must hold and the claim mappings must
//! produce a user.
//!
//! Rejects (the client only ever sees 401; [`Rejected`] says why, for logs): an empty or
//! oversized token, anything that is not three base64url parts, `alg: none` (always), HMAC
//! algorithms unless the issuer has an `hmac_secret_file`, `crit` headers, unknown issuers and
//! unknown `kid`s (after at most one rate-limited JWKS refetch per issuer and interval), a
//! username claim `email` with `email_verified` other than `true`, any user or group starting
//! with `system:` unless `allow_system_identities`, values that cannot travel in an
//! impersonation header, and a scope claim that does not parse as [`crate::authz::Scope`].
//!
//! Files: [`config`] (schema + `build`, every problem with its key path), [`alg`] (the
//! algorithms and key types: jsonwebtoken's, plus ES512 checked with aws-lc-rs), [`keys`] (key sources,
//! JWKS refresh, unknown-kid rate limit), [`verify`] (the checks), [`cache`] (verified-token
//! cache), [`mint`] (issuing tokens for `portcullis token`, demos and tests).

pub mod alg;
pub mod cache;
pub mod config;
pub mod keys;
pub mod mint;
pub mod schema;
pub mod settings;
pub mod verify;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use cache::CacheOptions;
pub use config::{build, IssuerConfig};
pub use keys::KeyStats;
pub use verify::{JwtAuthenticator, Rejected};

/// The claim holding a token's scope unless an issuer sets `scope_claim`.
pub const DEFAULT_SCOPE_CLAIM: &str = "portcullis.io/scope";

/// Install aws-lc-rs as jsonwebtoken's process-wide crypto provider (idempotent; a provider
/// installed earlier by someone else is kept).
pub fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
}

/// Wall-clock time as seen by token checks; injected so tests never sleep.
pub trait Clock: Send + Sync + 'static {
    /// Time since the Unix epoch.
    fn now(&self) -> Duration;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A clock that only moves when told to (millisecond resolution).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock stopped at `now` (time since the Unix epoch).
    pub fn new(now: Duration) -> ManualClock {
        ManualClock(AtomicU64::new(now.as_millis() as u64))
    }

    /// A clock stopped at the current wall-clock time.
    pub fn starting_now() -> ManualClock {
        ManualClock::new(SystemClock.now())
    }

    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Set the clock.
    pub fn set(&self, now: Duration) {
        self.0.store(now.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}
