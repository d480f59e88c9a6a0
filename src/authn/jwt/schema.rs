//! The YAML schema of one `authentication.jwt:` entry, exactly as operators write it (unknown
//! keys refused). Validated by `config.rs`; see its module doc for the semantics.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One entry of `authentication.jwt:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: Issuer,
    /// Allowed header `alg` values (default: kube-apiserver's RS256 RS384 RS512 ES256 ES384
    /// ES512 PS256 PS384 PS512, plus HS256 HS384 HS512 when `hmac_secret_file` is set; EdDSA
    /// only when listed). `none` is never allowed.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// A shared secret (trailing whitespace trimmed, at least 32 bytes): the only way to
    /// accept HS256/HS384/HS512.
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// Clock-skew allowance for `nbf` and `iat` (default `60s`, at most `5m`); `exp` has none.
    #[serde(default)]
    pub leeway: Option<String>,
    /// How often keys are re-read (default `1h`, at least `10s`).
    #[serde(default)]
    pub refresh_interval: Option<String>,
    /// At most one refetch per interval on an unknown `kid` (default `30s`); a `kid` still
    /// unknown after a refetch is negatively cached this long.
    #[serde(default)]
    pub unknown_kid_min_interval: Option<String>,
    #[serde(default)]
    pub claim_validation_rules: Vec<ClaimValidationRule>,
    pub claim_mappings: ClaimMappings,
    /// The claim carrying the token's scope (default `portcullis.io/scope`).
    #[serde(default)]
    pub scope_claim: Option<String>,
    /// Accept users and groups beginning with `system:` (default false).
    #[serde(default)]
    pub allow_system_identities: bool,
}

/// `issuer:` — who signs, for whom, and where the keys are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// `https://…`; must equal the token's `iss` (and the discovery document's `issuer`).
    pub url: String,
    /// Non-empty; the token's `aud` must contain at least one.
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub discovery_url: Option<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub pem_files: Vec<PemFile>,
    /// CA bundle for fetching discovery / JWKS over https (required for remote sources).
    #[serde(default)]
    pub certificate_authority_file: Option<PathBuf>,
}

/// A PEM public key: a path (its `kid` is the file stem) or `{path, kid}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PemFile {
    Path(PathBuf),
    WithKid(PemFileWithKid),
}

/// `{path, kid}` form of [`PemFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemFileWithKid {
    pub path: PathBuf,
    pub kid: String,
}

/// `{claim, required_value}`: the string claim must equal the value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimValidationRule {
    pub claim: String,
    #[serde(default)]
    pub required_value: String,
}

/// `claim_mappings:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMappings {
    pub username: PrefixedClaim,
    #[serde(default)]
    pub groups: Option<PrefixedClaim>,
    #[serde(default)]
    pub uid: Option<UidClaim>,
    #[serde(default)]
    pub extra: Vec<ExtraMapping>,
}

/// `{claim, prefix}`; both must be given (no defaulting, as in the API server).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixedClaim {
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
}

/// `{claim}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UidClaim {
    pub claim: String,
}

/// `{key, claim}`: a lower-case, domain-prefixed extra key filled from a string or string-array
/// claim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraMapping {
    pub key: String,
    pub claim: String,
}
