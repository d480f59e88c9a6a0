//! `authentication.jwt:` validated. [`validate`] turns the entries (schema in `schema.rs`) into
//! the plain [`JwtSettings`] `Config` keeps, or reports every problem with its key path;
//! [`authenticator`] (`settings.rs`) builds the key stores from them (called by
//! `stack::Runtime::build`); [`build`] does both.
//!
//! Modelled on kube-apiserver's `AuthenticationConfiguration` (v1): same claim-mapping,
//! prefix, audience and `claimValidationRules` semantics, snake_case keys. Not supported (and
//! refused by `deny_unknown_fields`): CEL expressions, `audienceMatchPolicy` (always
//! `MatchAny`), `userValidationRules` (the `system:` refusal is built in), distributed claims.
//!
//! Key sources (at most one per issuer): `discovery_url`, `jwks_url`, `jwks_file`, `pem_files`.
//! With none, OIDC discovery at `{url}/.well-known/openid-configuration` is used — unless the
//! issuer has an `hmac_secret_file` and nothing else, in which case it is an HMAC-only issuer.
//! Remote sources require `certificate_authority_file`: system roots are never trusted for
//! fetching keys.
//!
//! `algorithms` defaults to kube-apiserver's list (RS, ES and PS with 256 / 384 / 512); EdDSA,
//! which the API server refuses, only where listed. Keys read from a local source that can
//! check none of an issuer's algorithms are a problem at its `algorithms` (`settings.rs`).

use std::{
    collections::{BTreeSet, HashSet},
    path::Path,
    str::FromStr,
    time::Duration,
};

use rustls_pki_types::CertificateDer;

pub use super::schema::{
    ClaimMappings, ClaimValidationRule, ExtraMapping, Issuer, IssuerConfig, PemFile,
    PemFileWithKid, PrefixedClaim, UidClaim,
};
pub use super::settings::{authenticator, IssuerSettings, JwtSettings};
use super::{
    alg::{Alg, Family, Key},
    cache::CacheOptions,
    keys::{self, Source},
    verify::{IssuerChecks, JwtAuthenticator},
    DEFAULT_SCOPE_CLAIM,
};
use crate::{
    authn::identity::{TENANT_EXTRA, TOKEN_ID_EXTRA},
    problems::{Problem, Problems, UrlKind, Wording},
    server::tls,
};

/// Algorithms allowed when an issuer does not list its own: exactly kube-apiserver's under an
/// AuthenticationConfiguration (`allowedSigningAlgs`: RS, ES and PS with 256 / 384 / 512), so
/// a token the API server would refuse is not accepted here by default. EdDSA, which the API
/// server refuses, is accepted only where an issuer lists it.
pub const DEFAULT_ALGORITHMS: [Alg; 9] = Alg::KUBE_APISERVER;

/// go-oidc's fixed allowance on `nbf` (v2, which kube-apiserver uses).
const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
const MAX_LEEWAY: Duration = Duration::from_secs(300);
const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
const MIN_REFRESH: Duration = Duration::from_secs(10);
const DEFAULT_UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);
const MIN_HMAC_SECRET: usize = 32;

/// Validate every issuer and build the authenticator. `base_dir` resolves relative file paths
/// (the config file's directory); `key_prefix` is the key path of the list
/// (`authentication.jwt`), used in every [`Problem::path`]. Local key files are read now;
/// remote keys are fetched by [`JwtAuthenticator::spawn_refresh`] /
/// [`JwtAuthenticator::refresh_all`] or on the first token that needs them.
pub fn build(
    entries: &[IssuerConfig],
    base_dir: &Path,
    key_prefix: &str,
    cache: CacheOptions,
) -> Result<JwtAuthenticator, Vec<Problem>> {
    authenticator(&validate(entries, base_dir, key_prefix, cache)?)
}

/// The issuers validated into plain data (`Config` keeps it); every problem with its key path.
/// Local key files are read once here, and dropped, so `check-config` reports them.
pub fn validate(
    entries: &[IssuerConfig],
    base_dir: &Path,
    key_prefix: &str,
    cache: CacheOptions,
) -> Result<JwtSettings, Vec<Problem>> {
    super::install_crypto_provider();
    let mut p = Problems::new();
    let mut seen = HashSet::new();
    let mut issuers = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("{key_prefix}[{i}]");
        if !seen.insert(entry.issuer.url.as_str()) {
            p.err(
                format!("{path}.issuer.url"),
                format!("issuer {:?} is configured more than once", entry.issuer.url),
                "issuer URLs must be unique; merge the entries",
            );
        }
        if let Some(issuer) = build_one(entry, base_dir, &path, &mut p) {
            issuers.push(issuer);
        }
    }
    shared_extra_keys(entries, key_prefix, &mut p);
    p.finish(Some(JwtSettings { issuers, cache }))
}

/// An extra key filled by two issuers: users and groups get each issuer's prefix, extras none,
/// so a grant matching an extra's value (`subjects: [{extra: …}]`) would match the tokens of
/// both — a repository name one CI system vouches for, claimed through another's.
fn shared_extra_keys(entries: &[IssuerConfig], key_prefix: &str, p: &mut Problems) {
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        for (j, x) in entry.claim_mappings.extra.iter().enumerate() {
            match first.get(x.key.as_str()) {
                Some(&owner) if owner != i => p.err(
                    format!("{key_prefix}[{i}].claim_mappings.extra[{j}].key"),
                    format!(
                        "{:?} is also filled by {key_prefix}[{owner}]: a grant on this extra would match the tokens of both issuers",
                        x.key
                    ),
                    "give each issuer's extras keys of their own, e.g. under the issuer's domain",
                ),
                Some(_) => {}
                None => {
                    first.insert(x.key.as_str(), i);
                }
            }
        }
    }
}

fn build_one(
    e: &IssuerConfig,
    base_dir: &Path,
    path: &str,
    p: &mut Problems,
) -> Option<IssuerSettings> {
    let before = p.len();
    let ip = format!("{path}.issuer");
    p.https_url(&format!("{ip}.url"), &e.issuer.url, UrlKind::Issuer);
    audiences(e, &ip, p);
    let hmac = hmac(e, base_dir, path, p);
    let algorithms = algorithms(e, path, p);
    let (leeway, refresh, unknown_kid) = intervals(e, path, p);
    let source = key_source(e, base_dir, &ip, p);
    let ca = fetch_ca(e, &source, base_dir, &ip, p);
    let Claims {
        rules,
        username,
        groups,
        uid,
        extra,
        scope_claim,
    } = claims(e, path, p);

    if p.len() > before {
        return None;
    }
    let source = source?;
    let (username_claim, username_prefix) = username?;
    let settings = IssuerSettings {
        checks: IssuerChecks {
            url: e.issuer.url.clone(),
            audiences: e.issuer.audiences.clone(),
            algorithms,
            hmac,
            leeway,
            rules,
            username_claim,
            username_prefix,
            groups,
            uid,
            extra,
            scope_claim,
            allow_system_identities: e.allow_system_identities,
        },
        source,
        ca,
        refresh,
        unknown_kid,
        path: path.to_owned(),
        local_key_path: local_source_path(e, &ip),
    };
    // Read the local keys once, so a bad file is a config problem; the store is dropped.
    settings.policy(p)?;
    Some(settings)
}

/// `issuer.audiences`: at least one, none empty.
fn audiences(e: &IssuerConfig, ip: &str, p: &mut Problems) {
    if e.issuer.audiences.is_empty() {
        p.err(
            format!("{ip}.audiences"),
            "at least one audience is required",
            "the token's aud must contain one of them, e.g. [portcullis]",
        );
    }
    let mut seen = HashSet::new();
    for (j, a) in e.issuer.audiences.iter().enumerate() {
        if a.is_empty() {
            p.err(
                format!("{ip}.audiences[{j}]"),
                "audience is empty",
                "name the audience the tokens carry in aud, e.g. portcullis",
            );
        } else if !seen.insert(a.as_str()) {
            // As the API server's validation: a duplicate is a mistake, not a second value.
            p.err(
                format!("{ip}.audiences[{j}]"),
                format!("audience {a:?} is listed more than once"),
                "remove the duplicate",
            );
        }
    }
}

/// `hmac_secret_file`: at least 32 bytes after trailing whitespace.
fn hmac(e: &IssuerConfig, base_dir: &Path, path: &str, p: &mut Problems) -> Option<Key> {
    e.hmac_secret_file.as_ref().and_then(|f| {
        let file = base_dir.join(f);
        match p.read(
            &format!("{path}.hmac_secret_file"),
            &file,
            "give a readable file holding the HMAC secret (at least 32 bytes)",
        ) {
            Some(bytes) => {
                let secret = trim_end(&bytes);
                if secret.len() < MIN_HMAC_SECRET {
                    p.err(
                        format!("{path}.hmac_secret_file"),
                        format!(
                            "{} holds {} bytes; at least {MIN_HMAC_SECRET} are required",
                            file.display(),
                            secret.len()
                        ),
                        "generate one with: head -c 48 /dev/urandom | base64",
                    );
                    None
                } else {
                    Some(Key::hmac(secret))
                }
            }
            None => None,
        }
    })
}

/// `algorithms`: the defaults, or the listed ones (never `none`; HMAC only with a secret).
fn algorithms(e: &IssuerConfig, path: &str, p: &mut Problems) -> Vec<Alg> {
    match &e.algorithms {
        None => {
            let mut algs = DEFAULT_ALGORITHMS.to_vec();
            if e.hmac_secret_file.is_some() {
                algs.extend([Alg::HS256, Alg::HS384, Alg::HS512]);
            }
            algs
        }
        Some(list) => {
            if list.is_empty() {
                p.err(
                    format!("{path}.algorithms"),
                    "the list is empty, so no token could be accepted",
                    "omit the key for the default list",
                );
            }
            let mut algs = Vec::new();
            for (j, name) in list.iter().enumerate() {
                let key = format!("{path}.algorithms[{j}]");
                if name.eq_ignore_ascii_case("none") {
                    p.err(
                        key,
                        "`none` (unsigned tokens) is never allowed",
                        "remove it; list the algorithms the issuer signs with, e.g. RS256",
                    );
                    continue;
                }
                match Alg::from_str(name) {
                    Ok(alg) => {
                        if alg.family() == Family::Hmac
                            && e.hmac_secret_file.is_none()
                        {
                            p.err(
                                key,
                                format!("{name} needs a shared secret"),
                                "set hmac_secret_file, or use an asymmetric algorithm",
                            );
                            continue;
                        }
                        if !algs.contains(&alg) {
                            algs.push(alg);
                        }
                    }
                    Err(_) => p.err(
                        key,
                        format!("unsupported algorithm {name:?}"),
                        "one of RS256 RS384 RS512 ES256 ES384 ES512 PS256 PS384 PS512 EdDSA HS256 HS384 HS512",
                    ),
                }
            }
            if e.hmac_secret_file.is_some() && !algs.iter().any(|a| a.family() == Family::Hmac) {
                p.err(
                    format!("{path}.hmac_secret_file"),
                    "a secret is set but algorithms allows no HS256/HS384/HS512",
                    "add HS256 to algorithms or remove hmac_secret_file",
                );
            }
            algs
        }
    }
}

/// `leeway`, `refresh_interval`, `unknown_kid_min_interval`, each within its bounds.
fn intervals(e: &IssuerConfig, path: &str, p: &mut Problems) -> (Duration, Duration, Duration) {
    let leeway = p.duration(
        &format!("{path}.leeway"),
        e.leeway.as_deref(),
        DEFAULT_LEEWAY,
        Wording::Jwt,
    );
    if leeway > MAX_LEEWAY {
        p.err(
            format!("{path}.leeway"),
            format!(
                "{} is more than the 5m allowed",
                humantime::format_duration(leeway)
            ),
            "clock skew is normally seconds",
        );
    }
    let refresh = p.duration(
        &format!("{path}.refresh_interval"),
        e.refresh_interval.as_deref(),
        DEFAULT_REFRESH,
        Wording::Jwt,
    );
    if refresh < MIN_REFRESH {
        p.err(
            format!("{path}.refresh_interval"),
            "must be at least 10s",
            "the identity provider should not be polled harder",
        );
    }
    let unknown_kid = p.duration(
        &format!("{path}.unknown_kid_min_interval"),
        e.unknown_kid_min_interval.as_deref(),
        DEFAULT_UNKNOWN_KID_INTERVAL,
        Wording::Jwt,
    );
    if unknown_kid.is_zero() {
        p.err(
            format!("{path}.unknown_kid_min_interval"),
            "must be more than 0",
            "a zero interval lets random kids hammer the identity provider",
        );
    }
    (leeway, refresh, unknown_kid)
}

/// The CA bundle for remote key sources (discovery, JWKS URL): the only roots trusted when
/// fetching keys (checked by building a client once).
fn fetch_ca(
    e: &IssuerConfig,
    source: &Option<Source>,
    base_dir: &Path,
    ip: &str,
    p: &mut Problems,
) -> Option<Vec<CertificateDer<'static>>> {
    match source {
        Some(Source::Discovery { .. }) | Some(Source::JwksUrl(_)) => {
            match &e.issuer.certificate_authority_file {
                None => {
                    p.err(
                        format!("{ip}.certificate_authority_file"),
                        "required to fetch keys over https",
                        "the CA bundle that signed the identity provider's certificate; system roots are not used",
                    );
                    None
                }
                Some(f) => {
                    let file = base_dir.join(f);
                    let certs = tls::load_certs(&file);
                    let checked = certs.and_then(|c| {
                        keys::https_client(c.clone())?;
                        Ok(c)
                    });
                    match checked {
                        Ok(c) => Some(c),
                        Err(err) => {
                            p.err(
                                format!("{ip}.certificate_authority_file"),
                                format!("{err:#}"),
                                "a PEM file of CA certificates",
                            );
                            None
                        }
                    }
                }
            }
        }
        _ => None,
    }
}

/// Claim validation rules and mappings, validated.
struct Claims {
    rules: Vec<(String, String)>,
    username: Option<(String, String)>,
    groups: Option<(String, String)>,
    uid: Option<String>,
    extra: Vec<(String, String)>,
    scope_claim: String,
}

/// `claim_validation_rules`, `claim_mappings`, `scope_claim`.
fn claims(e: &IssuerConfig, path: &str, p: &mut Problems) -> Claims {
    let mut rules = Vec::new();
    let mut seen = HashSet::new();
    for (j, r) in e.claim_validation_rules.iter().enumerate() {
        if r.claim.is_empty() {
            p.err(
                format!("{path}.claim_validation_rules[{j}].claim"),
                "claim name is empty",
                "name the claim to check, e.g. repository",
            );
        } else if !seen.insert(r.claim.as_str()) {
            // As the API server's validation: two rules on one claim cannot both hold.
            p.err(
                format!("{path}.claim_validation_rules[{j}].claim"),
                format!("claim {:?} has more than one rule", r.claim),
                "keep one required_value per claim",
            );
        }
        rules.push((r.claim.clone(), r.required_value.clone()));
    }
    let mp = format!("{path}.claim_mappings");
    let username = prefixed(&e.claim_mappings.username, &format!("{mp}.username"), p);
    let groups = e
        .claim_mappings
        .groups
        .as_ref()
        .and_then(|g| prefixed(g, &format!("{mp}.groups"), p));
    let uid = e.claim_mappings.uid.as_ref().map(|u| {
        if u.claim.is_empty() {
            p.err(
                format!("{mp}.uid.claim"),
                "claim name is empty",
                "name the claim holding the uid, e.g. sub, or remove uid",
            );
        }
        u.claim.clone()
    });
    let mut extra = Vec::new();
    let mut keys_seen = BTreeSet::new();
    for (j, x) in e.claim_mappings.extra.iter().enumerate() {
        let xp = format!("{mp}.extra[{j}]");
        if let Err(msg) = check_extra_key(&x.key) {
            p.err(
                format!("{xp}.key"),
                msg,
                "a lower-case domain-prefixed path such as example.com/repository",
            );
        }
        if !keys_seen.insert(x.key.as_str()) {
            p.err(
                format!("{xp}.key"),
                format!("{:?} is mapped more than once", x.key),
                "keep one mapping per key",
            );
        }
        if x.claim.is_empty() {
            p.err(
                format!("{xp}.claim"),
                "claim name is empty",
                "name the claim whose values fill this extra, e.g. repository",
            );
        }
        extra.push((x.key.clone(), x.claim.clone()));
    }
    let scope_claim = match &e.scope_claim {
        Some(c) if c.is_empty() => {
            p.err(
                format!("{path}.scope_claim"),
                "claim name is empty",
                "omit it for the default portcullis.io/scope",
            );
            String::new()
        }
        Some(c) => c.clone(),
        None => DEFAULT_SCOPE_CLAIM.to_string(),
    };
    Claims {
        rules,
        username,
        groups,
        uid,
        extra,
        scope_claim,
    }
}

fn local_source_path(e: &IssuerConfig, ip: &str) -> String {
    if e.issuer.jwks_file.is_some() {
        format!("{ip}.jwks_file")
    } else {
        format!("{ip}.pem_files")
    }
}

/// The one key source of an issuer (files resolved against `base_dir`).
fn key_source(e: &IssuerConfig, base_dir: &Path, ip: &str, p: &mut Problems) -> Option<Source> {
    let i = &e.issuer;
    let mut given = Vec::new();
    if i.discovery_url.is_some() {
        given.push("discovery_url");
    }
    if i.jwks_url.is_some() {
        given.push("jwks_url");
    }
    if i.jwks_file.is_some() {
        given.push("jwks_file");
    }
    if !i.pem_files.is_empty() {
        given.push("pem_files");
    }
    if given.len() > 1 {
        p.err(
            format!("{ip}.{}", given[1]),
            format!("only one key source may be set, found {}", given.join(", ")),
            "keep one of discovery_url, jwks_url, jwks_file, pem_files",
        );
        return None;
    }
    if let Some(u) = &i.discovery_url {
        p.https_url(&format!("{ip}.discovery_url"), u, UrlKind::Endpoint);
        if u.trim_end_matches('/') == i.url.trim_end_matches('/') {
            // As the API server's validation: the discovery document is fetched from this
            // URL as given, so it must not be the issuer itself.
            p.err(
                format!("{ip}.discovery_url"),
                "discovery_url is the issuer URL",
                "leave discovery_url out for {url}/.well-known/openid-configuration, or give the document's own URL",
            );
        }
        return Some(Source::Discovery {
            url: u.clone(),
            issuer: i.url.clone(),
        });
    }
    if let Some(u) = &i.jwks_url {
        p.https_url(&format!("{ip}.jwks_url"), u, UrlKind::Endpoint);
        return Some(Source::JwksUrl(u.clone()));
    }
    if let Some(f) = &i.jwks_file {
        let file = base_dir.join(f);
        let hint = "give a readable JWKS (JSON) file";
        return p
            .readable(&format!("{ip}.jwks_file"), &file, hint)
            .then_some(Source::JwksFile(file));
    }
    if !i.pem_files.is_empty() {
        let mut files = Vec::new();
        let mut kids = HashSet::new();
        for (j, f) in i.pem_files.iter().enumerate() {
            let (file, kid) = match f {
                PemFile::Path(path) => (path.clone(), pem_stem(path)),
                PemFile::WithKid(k) => (k.path.clone(), k.kid.clone()),
            };
            if kid.is_empty() {
                p.err(
                    format!("{ip}.pem_files[{j}]"),
                    "the key id is empty",
                    "give the kid the tokens carry for this key, e.g. {path: key.pem, kid: key-1}",
                );
            } else if !kids.insert(kid.clone()) {
                p.err(
                    format!("{ip}.pem_files[{j}]"),
                    format!("key id {kid:?} is used twice"),
                    "give each file its own {path, kid}",
                );
            }
            files.push((base_dir.join(file), kid));
        }
        return Some(Source::PemFiles(files));
    }
    if e.hmac_secret_file.is_some() {
        return Some(Source::None);
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        i.url.trim_end_matches('/')
    );
    Some(Source::Discovery {
        url,
        issuer: i.url.clone(),
    })
}

/// `key.pub.pem` → `key`: the stem up to the first dot.
fn pem_stem(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or_default()
        .to_string()
}

fn prefixed(c: &PrefixedClaim, path: &str, p: &mut Problems) -> Option<(String, String)> {
    let claim = match &c.claim {
        Some(claim) if !claim.is_empty() => Some(claim.clone()),
        _ => {
            p.err(
                format!("{path}.claim"),
                "claim is required",
                "e.g. sub; there is no default",
            );
            None
        }
    };
    let prefix = match &c.prefix {
        Some(prefix) => Some(prefix.clone()),
        None => {
            p.err(
                format!("{path}.prefix"),
                "prefix is required (it may be \"\")",
                "set it explicitly, e.g. \"oidc:\", as the API server requires",
            );
            None
        }
    };
    Some((claim?, prefix?))
}

/// Kubernetes' rule for extra keys: lower-case, `domain/path`, not a Kubernetes domain.
fn check_extra_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key != key.to_ascii_lowercase() {
        return Err(format!("{key:?} must be lower-case"));
    }
    let Some((domain, rest)) = key.split_once('/') else {
        return Err(format!("{key:?} is not domain-prefixed"));
    };
    let domain_ok = domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !domain_ok || rest.is_empty() {
        return Err(format!("{key:?} is not a domain-prefixed path"));
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
    {
        return Err(format!(
            "{key:?} holds characters other than a-z 0-9 - . _ /"
        ));
    }
    for reserved in ["kubernetes.io", "k8s.io"] {
        if domain == reserved || domain.ends_with(&format!(".{reserved}")) {
            return Err(format!("the {reserved} domain is reserved"));
        }
    }
    // The proxy's own statements to the API server (impersonation refuses them for
    // `--as-extra` for the same reason): a claim must not fill them.
    for own in [TENANT_EXTRA, TOKEN_ID_EXTRA] {
        if key == own {
            return Err(format!(
                "{key:?} is what portcullis itself tells the API server about the caller"
            ));
        }
    }
    Ok(())
}

fn trim_end(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && b.get(end - 1).is_some_and(|c| c.is_ascii_whitespace()) {
        end -= 1;
    }
    b.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key (ES256, in the default list) and an Ed25519 key (EdDSA, only where listed).
    const KEYS: &str = r#"{"keys":[
        {"kty":"EC","crv":"P-256","x":"tXTvtekqTy1tZ7EGm9o82JT012l_UnvD5dEMdTZidZg","y":"KJoYfPLIQnClBYpohxdCTxR2307guXWcM3QpcpKiKp8","kid":"es"},
        {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a"}]}"#;

    fn entry(yaml: &str) -> Vec<IssuerConfig> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn problems(yaml: &str) -> Vec<Problem> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keys.json"), KEYS).unwrap();
        std::fs::write(dir.path().join("short"), "too short\n").unwrap();
        match build(
            &entry(yaml),
            dir.path(),
            "authentication.jwt",
            CacheOptions::default(),
        ) {
            Ok(_) => Vec::new(),
            Err(p) => p,
        }
    }

    fn paths(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn a_good_entry_builds() {
        let p = problems(
            r#"
- issuer: {url: "https://issuer.example", audiences: [portcullis], jwks_file: keys.json}
  claim_mappings:
    username: {claim: sub, prefix: "ci:"}
    groups: {claim: groups, prefix: ""}
    uid: {claim: sub}
    extra: [{key: example.com/repo, claim: repository}]
"#,
        );
        assert!(p.is_empty(), "{p:?}");
    }

    /// Overlapping prefixes of two identity sources are reported (logged at start and at each
    /// reload, not refused: kube-apiserver allows them): equal ones, `""` beside any other, one
    /// the start of another; disjoint ones are not.
    #[test]
    fn overlapping_username_and_groups_prefixes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keys.json"), KEYS).unwrap();
        let settings = |users: [&str; 2], groups: [&str; 2]| {
            let yaml = format!(
                r#"
- issuer: {{url: "https://corp.example", audiences: [portcullis], jwks_file: keys.json}}
  claim_mappings:
    username: {{claim: sub, prefix: "{}"}}
    groups: {{claim: groups, prefix: "{}"}}
- issuer: {{url: "https://ci.example", audiences: [portcullis], jwks_file: keys.json}}
  claim_mappings:
    username: {{claim: sub, prefix: "{}"}}
    groups: {{claim: groups, prefix: "{}"}}
"#,
                users[0], groups[0], users[1], groups[1]
            );
            validate(
                &entry(&yaml),
                dir.path(),
                "authentication.jwt",
                CacheOptions::default(),
            )
            .unwrap()
        };
        // Disjoint: nothing.
        let s = settings(["corp:", "ci:"], ["corp:", "ci:"]);
        assert!(s.shared_prefixes(None).is_empty());
        assert!(s.shared_prefixes(Some(("x509:", "x509:"))).is_empty());
        // Equal groups prefixes.
        let shared = settings(["corp:", "ci:"], ["", ""]).shared_prefixes(None);
        assert_eq!(shared.len(), 1, "{shared:?}");
        assert!(
            shared[0].starts_with(
                "authentication.jwt[1] and authentication.jwt[0] have overlapping groups prefixes"
            ),
            "{shared:?}"
        );
        // `""` overlaps every prefix: a corporate user can be named `ci:deploy-bot`.
        let shared = settings(["", "ci:"], ["corp:", "ci:"]).shared_prefixes(None);
        assert_eq!(shared.len(), 1, "{shared:?}");
        assert!(
            shared[0].contains("username prefixes (\"ci:\" and \"\")"),
            "{shared:?}"
        );
        // One the start of the other.
        let shared = settings(["ci:", "ci:prod:"], ["corp:", "ci:"]).shared_prefixes(None);
        assert_eq!(shared.len(), 1, "{shared:?}");
        // Client certificates mapped with no prefixes overlap both issuers, both ways.
        let shared = settings(["corp:", "ci:"], ["corp:", "ci:"]).shared_prefixes(Some(("", "")));
        assert_eq!(shared.len(), 4, "{shared:?}");
        assert!(
            shared
                .iter()
                .all(|l| l.contains("authentication.client_certificates")),
            "{shared:?}"
        );
    }

    /// Two issuers filling one extra key: a grant on it would match both issuers' tokens
    /// (users and groups are kept apart by prefixes, extras are not). The same key twice in
    /// one issuer is the other check's.
    #[test]
    fn two_issuers_may_not_fill_the_same_extra_key() {
        let p = problems(
            r#"
- issuer: {url: "https://gh.example", audiences: [portcullis], jwks_file: keys.json}
  claim_mappings:
    username: {claim: sub, prefix: "gh:"}
    extra: [{key: example.com/repository, claim: repository}]
- issuer: {url: "https://corp.example", audiences: [portcullis], jwks_file: keys.json}
  claim_mappings:
    username: {claim: sub, prefix: "corp:"}
    extra: [{key: example.com/team, claim: team}, {key: example.com/repository, claim: project}]
"#,
        );
        assert_eq!(
            paths(&p),
            ["authentication.jwt[1].claim_mappings.extra[1].key"],
            "{p:?}"
        );
        assert!(p[0].message.contains("authentication.jwt[0]"), "{p:?}");
    }

    /// ES512 is a name the list takes (kube-apiserver allows it); names are case-sensitive, and
    /// the fix for one that is not known lists ES512 among the others.
    #[test]
    fn es512_is_an_algorithm_name() {
        let p = problems(
            r#"
- issuer: {url: "https://issuer.example", audiences: [a], jwks_file: keys.json}
  algorithms: [ES512, es512]
  claim_mappings: {username: {claim: sub, prefix: ""}}
"#,
        );
        let bad: Vec<_> = p.iter().filter(|p| p.path.contains("algorithms")).collect();
        assert_eq!(bad.len(), 1, "{p:?}");
        assert_eq!(bad[0].path, "authentication.jwt[0].algorithms[1]");
        assert!(bad[0].hint.contains("ES384 ES512 PS256"), "{p:?}");
    }

    /// Local keys that can check none of the issuer's algorithms would refuse every token: a
    /// problem at `algorithms` naming what the keys check. An Ed25519 issuer without a list is
    /// the case since EdDSA left the default list (kube-apiserver's, which refuses it).
    #[test]
    fn local_keys_that_check_no_allowed_algorithm_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (_, ed_jwks) = crate::authn::jwt::mint::generate_ed25519("ed").unwrap();
        std::fs::write(dir.path().join("ed.json"), ed_jwks).unwrap();
        std::fs::write(dir.path().join("keys.json"), KEYS).unwrap();
        // KEYS' P-256 key as a SubjectPublicKeyInfo.
        std::fs::write(
            dir.path().join("p256.pem"),
            "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEtXTvtekqTy1tZ7EGm9o82JT012l/
UnvD5dEMdTZidZgomhh88shCcKUFimiHF0JPFHbfTuC5dZwzdClykqIqnw==
-----END PUBLIC KEY-----
",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("secret"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        let check = |yaml: &str| {
            build(
                &entry(yaml),
                dir.path(),
                "authentication.jwt",
                CacheOptions::default(),
            )
            .err()
            .unwrap_or_default()
        };
        let issuer = |source: &str, more: &str| {
            format!(
                "- issuer: {{url: \"https://i.example\", audiences: [a], {source}}}\n{more}  claim_mappings: {{username: {{claim: sub, prefix: \"\"}}}}\n"
            )
        };

        let p = check(&issuer("jwks_file: ed.json", ""));
        assert_eq!(paths(&p), ["authentication.jwt[0].algorithms"], "{p:?}");
        let m = &p[0].message;
        assert!(
            m.contains("ed.json (authentication.jwt[0].issuer.jwks_file)")
                && m.ends_with("its keys check EdDSA")
                && m.contains("the default list, kube-apiserver's: RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512; EdDSA left it"),
            "{p:?}"
        );
        assert!(p[0].hint.contains("`algorithms: [EdDSA]`"), "{p:?}");
        // Listed, or beside a key the default list can use: accepted.
        assert_eq!(
            check(&issuer("jwks_file: ed.json", "  algorithms: [EdDSA]\n")),
            []
        );
        assert_eq!(check(&issuer("jwks_file: keys.json", "")), []);
        // A list that leaves out what the keys check.
        let p = check(&issuer(
            "jwks_file: keys.json",
            "  algorithms: [RS256, PS256]\n",
        ));
        assert_eq!(paths(&p), ["authentication.jwt[0].algorithms"], "{p:?}");
        assert!(
            p[0].message.contains("its `algorithms`: RS256, PS256"),
            "{p:?}"
        );
        assert!(p[0].message.ends_with("check ES256, EdDSA"), "{p:?}");
        // EdDSA is not offered where another algorithm of the keys would do.
        assert!(p[0].hint.contains("`algorithms: [ES256]`"), "{p:?}");
        // A P-256 PEM checks ES256 only, as a P-256 JWK does: not ES384, and the hint says so.
        for (list, problem) in [("[ES384]", true), ("[RS256]", true), ("[ES256]", false)] {
            let p = check(&issuer(
                "pem_files: [p256.pem]",
                &format!("  algorithms: {list}\n"),
            ));
            if !problem {
                assert_eq!(p, [], "{list}");
                continue;
            }
            assert_eq!(
                paths(&p),
                ["authentication.jwt[0].algorithms"],
                "{list}: {p:?}"
            );
            assert!(
                p[0].message
                    .contains("p256.pem (authentication.jwt[0].issuer.pem_files)")
                    && p[0].message.ends_with("its keys check ES256"),
                "{list}: {p:?}"
            );
            assert!(p[0].hint.contains("`algorithms: [ES256]`"), "{list}: {p:?}");
        }
        // With an HMAC secret its tokens are still accepted: not a problem here.
        assert_eq!(
            check(&issuer(
                "jwks_file: ed.json",
                "  algorithms: [HS256]\n  hmac_secret_file: secret\n"
            )),
            []
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let p = problems(
            r#"
- issuer: {url: "http://issuer.example", audiences: [], jwks_file: keys.json, jwks_url: "https://x/keys"}
  algorithms: [none, HS256, XX1]
  leeway: soon
  claim_mappings:
    username: {claim: sub}
    groups: {prefix: ""}
    extra: [{key: Example.com/repo, claim: r}, {key: repo, claim: r}, {key: x.k8s.io/a, claim: r}, {key: portcullis.io/tenant, claim: t}]
  claim_validation_rules: [{claim: repo, required_value: a}, {claim: repo, required_value: b}]
- issuer: {url: "https://b.example", audiences: [a, a], jwks_url: "https://b.example/keys"}
  hmac_secret_file: short
  claim_mappings: {username: {claim: sub, prefix: ""}}
- issuer: {url: "https://b.example", audiences: [a], jwks_file: missing.json}
  unknown_kid_min_interval: 0s
  refresh_interval: 1s
  claim_mappings: {username: {claim: sub, prefix: ""}}
"#,
        );
        let got = paths(&p);
        for want in [
            "authentication.jwt[0].issuer.url",
            "authentication.jwt[0].issuer.audiences",
            "authentication.jwt[0].issuer.jwks_file",
            "authentication.jwt[0].algorithms[0]",
            "authentication.jwt[0].algorithms[1]",
            "authentication.jwt[0].algorithms[2]",
            "authentication.jwt[0].leeway",
            "authentication.jwt[0].claim_mappings.username.prefix",
            "authentication.jwt[0].claim_mappings.groups.claim",
            "authentication.jwt[0].claim_mappings.extra[0].key",
            "authentication.jwt[0].claim_mappings.extra[1].key",
            "authentication.jwt[0].claim_mappings.extra[2].key",
            "authentication.jwt[0].claim_mappings.extra[3].key",
            "authentication.jwt[0].claim_validation_rules[1].claim",
            "authentication.jwt[1].issuer.audiences[1]",
            "authentication.jwt[1].hmac_secret_file",
            "authentication.jwt[1].issuer.certificate_authority_file",
            "authentication.jwt[2].issuer.url",
            "authentication.jwt[2].unknown_kid_min_interval",
            "authentication.jwt[2].refresh_interval",
        ] {
            assert!(got.contains(&want), "missing {want} in {got:#?}");
        }
    }

    #[test]
    fn a_discovery_url_that_is_the_issuer_is_refused() {
        for url in ["https://a.example", "https://a.example/"] {
            let p = problems(&format!(
                "
- issuer: {{url: \"https://a.example\", audiences: [a], discovery_url: \"{url}\"}}
  claim_mappings: {{username: {{claim: sub, prefix: \"\"}}}}
"
            ));
            assert!(
                paths(&p).contains(&"authentication.jwt[0].issuer.discovery_url"),
                "{url}: {p:?}"
            );
        }
    }

    #[test]
    fn unreadable_local_keys_are_reported() {
        let p = problems(
            r#"
- issuer: {url: "https://a.example", audiences: [a], jwks_file: missing.json}
  claim_mappings: {username: {claim: sub, prefix: ""}}
"#,
        );
        assert_eq!(paths(&p), ["authentication.jwt[0].issuer.jwks_file"]);
    }

    #[test]
    fn unknown_keys_are_refused_by_the_schema() {
        let r: Result<Vec<IssuerConfig>, _> = serde_saphyr::from_str(
            r#"
- issuer: {url: "https://a.example", audiences: [a]}
  claim_mappings: {username: {expression: "claims.sub", prefix: ""}}
"#,
        );
        assert!(r.is_err());
    }

    #[test]
    fn extra_keys_follow_kubernetes_rules() {
        assert!(check_extra_key("example.com/repo").is_ok());
        assert!(check_extra_key("example.com/").is_err());
        assert!(check_extra_key("example/repo").is_err());
        assert!(check_extra_key("kubernetes.io/x").is_err());
        assert!(check_extra_key("Example.com/x").is_err());
        // The proxy's own extras cannot be filled from a claim.
        assert!(check_extra_key("portcullis.io/tenant").is_err());
        assert!(check_extra_key("portcullis.io/token-id").is_err());
        assert!(check_extra_key("portcullis.io/repository").is_ok());
    }
}
