//! `authentication.jwt:` validated: [`JwtSettings`], plain data that `Config` keeps, and
//! [`authenticator`], which builds the live key stores and HTTPS clients from it (called by
//! `stack::Runtime::build`, and once by validation so local keys are checked).

use std::{sync::Arc, time::Duration};

use rustls_pki_types::CertificateDer;

use super::{
    alg::{names, Alg},
    cache::CacheOptions,
    keys::{self, KeyStore, Source},
    verify::{IssuerChecks, IssuerPolicy, JwtAuthenticator},
};
use crate::problems::{Problem, Problems};

/// The authenticator: per issuer its key store (local keys read now) and, for remote keys, an
/// HTTPS client trusting the issuer's CA bundle.
pub fn authenticator(settings: &JwtSettings) -> Result<JwtAuthenticator, Vec<Problem>> {
    super::install_crypto_provider();
    let mut p = Problems::new();
    let policies = settings
        .issuers
        .iter()
        .filter_map(|i| i.policy(&mut p))
        .collect();
    p.finish(Some(JwtAuthenticator::new(policies, settings.cache)))
}

/// `authentication.jwt` validated: plain data.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub issuers: Vec<IssuerSettings>,
    pub cache: CacheOptions,
}

impl JwtSettings {
    /// A line for each pair of identity sources — two issuers, or an issuer and the
    /// client-certificate mapping (`x509`: its username and groups prefixes) — whose username
    /// or groups prefixes overlap: equal, or one the start of the other (`""` overlaps every
    /// prefix, `ci:` overlaps `ci:prod:`). A name one source vouches for can then be one written
    /// for the other's grants and tenants (a CI provider's `platform-admins` group as the
    /// corporate IdP's; a corporate group named `ci:deployers` under prefix `""`). Allowed, as
    /// in kube-apiserver, so only logged.
    pub fn shared_prefixes(&self, x509: Option<(&str, &str)>) -> Vec<String> {
        let mut users: Vec<(&str, String)> = Vec::new();
        let mut groups: Vec<(&str, String)> = Vec::new();
        if let Some((user, group)) = x509 {
            users.push((user, "authentication.client_certificates".to_owned()));
            groups.push((group, "authentication.client_certificates".to_owned()));
        }
        for i in &self.issuers {
            users.push((&i.checks.username_prefix, i.path.clone()));
            if let Some((_, prefix)) = &i.checks.groups {
                groups.push((prefix, i.path.clone()));
            }
        }
        let mut out = Vec::new();
        for (kind, list) in [("username", &users), ("groups", &groups)] {
            for (n, (prefix, at)) in list.iter().enumerate() {
                for (other, first) in &list[..n] {
                    if prefix.starts_with(other) || other.starts_with(prefix) {
                        out.push(format!(
                            "{at} and {first} have overlapping {kind} prefixes ({prefix:?} and {other:?}): a name one vouches for can match grants and tenants written for the other's; give each identity source a prefix of its own that does not start another's"
                        ));
                    }
                }
            }
        }
        out
    }

    /// Whether issuer `url` fetches its keys from a remote source exactly as in `prev` (same
    /// source, CA bundle and intervals): a reload may then keep its key store. Local key files
    /// never qualify — they are read again, as they may have changed.
    pub fn fetches_keys_as(&self, prev: &JwtSettings, url: &str) -> bool {
        fn find<'a>(s: &'a JwtSettings, url: &str) -> Option<&'a IssuerSettings> {
            s.issuers.iter().find(|i| i.checks.url == url)
        }
        find(self, url)
            .zip(find(prev, url))
            .is_some_and(|(new, old)| {
                new.source.is_remote()
                    && new.source == old.source
                    && new.ca == old.ca
                    && new.refresh == old.refresh
                    && new.unknown_kid == old.unknown_kid
            })
    }
}

/// One issuer validated: claims and checks as [`IssuerPolicy`] has them, plus where its keys
/// come from (with the CA bundle for remote sources), without the live key store.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub checks: IssuerChecks,
    pub source: Source,
    /// CA certificates for fetching remote keys (None: local keys only).
    pub ca: Option<Vec<CertificateDer<'static>>>,
    pub refresh: Duration,
    pub unknown_kid: Duration,
    /// The entry's key path (`authentication.jwt[0]`), for problems found while building.
    pub path: String,
    /// The key path of a local key source (`…issuer.jwks_file` / `…issuer.pem_files`).
    pub local_key_path: String,
}

impl IssuerSettings {
    /// The issuer's key store and policy; a problem (at its key path) if the CA bundle or the
    /// local keys cannot be used.
    pub(super) fn policy(&self, p: &mut Problems) -> Option<IssuerPolicy> {
        let client = match &self.ca {
            None => None,
            Some(certs) => match keys::https_client(certs.clone()) {
                Ok(c) => Some(c),
                Err(err) => {
                    p.err(
                        format!("{}.issuer.certificate_authority_file", self.path),
                        format!("{err:#}"),
                        "a PEM file of CA certificates",
                    );
                    return None;
                }
            },
        };
        let store = KeyStore::new(
            self.checks.url.clone(),
            self.source.clone(),
            client,
            self.refresh,
            self.unknown_kid,
        );
        if let Err(err) = store.load_local_now() {
            p.err(
                &self.local_key_path,
                err,
                "a JWKS ({\"keys\": [...]}) or PEM public key",
            );
            return None;
        }
        if !self.checks_some_local_key(&store, p) {
            return None;
        }
        Some(IssuerPolicy::new(self.checks.clone(), Arc::new(store)))
    }

    /// Whether the keys read from a local file can check one of the issuer's algorithms; a
    /// problem at `algorithms` if not (an issuer with an HMAC secret aside: its HMAC tokens
    /// still pass). Every token would be refused otherwise — the case of an Ed25519 issuer
    /// without a list since EdDSA left the default list (2026-12-07), which is
    /// kube-apiserver's. A remote source's keys are not in hand yet: its tokens are counted as
    /// `algorithm_not_allowed`, and logged (`verify.rs`, `note_unlisted`).
    fn checks_some_local_key(&self, store: &KeyStore, p: &mut Problems) -> bool {
        let files = match &self.source {
            Source::JwksFile(f) => f.display().to_string(),
            Source::PemFiles(files) => files
                .iter()
                .map(|(f, _)| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            _ => return true,
        };
        if self.checks.hmac.is_some() {
            return true;
        }
        let checkable = store.current().algorithms();
        if checkable.iter().any(|a| self.checks.algorithms.contains(a)) {
            return true;
        }
        let allowed = if self.checks.algorithms == super::config::DEFAULT_ALGORITHMS {
            format!(
                "the default list, kube-apiserver's: {}; EdDSA left it on 2026-12-07",
                names(&self.checks.algorithms)
            )
        } else {
            format!("its `algorithms`: {}", names(&self.checks.algorithms))
        };
        // Offer EdDSA only when the keys check nothing else: it is an opt-in beyond the API
        // server, not the way out of this problem.
        let others: Vec<Alg> = checkable
            .iter()
            .copied()
            .filter(|a| *a != Alg::EDDSA)
            .collect();
        let hint = if others.is_empty() {
            "add `algorithms: [EdDSA]` to this issuer if it signs with EdDSA: EdDSA is accepted only where listed, as kube-apiserver refuses it".to_string()
        } else {
            format!(
                "list what the issuer signs with in its `algorithms`, e.g. `algorithms: [{}]`",
                names(&others)
            )
        };
        p.err(
            format!("{}.algorithms", self.path),
            format!(
                "no key in {files} ({}) can check an algorithm this issuer allows ({allowed}), so every token of this issuer would be refused; its keys check {}",
                self.local_key_path,
                names(&checkable),
            ),
            hint,
        );
        false
    }
}
