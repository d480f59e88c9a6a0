//! `portcullis token`: mint, inspect and create keys for JWT bearer tokens (demo, tests, CI
//! bootstrap). `issue` signs ES256 (P-256 key) or EdDSA (Ed25519 key), detected from the key;
//! `inspect` decodes WITHOUT verifying; `keygen` writes a private key and its public JWKS for
//! an issuer's `jwks_file` (an EdDSA key's issuer also needs `algorithms: [EdDSA]`, which
//! `keygen` says: EdDSA is not in the default list, kube-apiserver's).

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use portcullis::{
    authn::jwt::{
        mint::{self, Claims, Signer},
        DEFAULT_SCOPE_CLAIM,
    },
    authz::Scope,
};

/// `portcullis token …`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Mint a signed JWT and print it.
    Issue {
        /// PKCS#8 PEM private key (P-256 → ES256, Ed25519 → EdDSA).
        #[arg(long)]
        key: PathBuf,
        /// The `iss` claim (an issuer's `url` in the proxy config).
        #[arg(long)]
        issuer: String,
        /// The `aud` claim (repeatable).
        #[arg(long, required = true)]
        audience: Vec<String>,
        /// The `sub` claim.
        #[arg(long)]
        sub: String,
        /// A `groups` entry (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime, e.g. 15m, 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The scope claim as JSON, e.g. '[{"namespaces":["dev"],"verbs":["get","list"]}]'.
        #[arg(long)]
        scope: Option<String>,
        /// The claim the scope goes in.
        #[arg(long, default_value = DEFAULT_SCOPE_CLAIM)]
        scope_claim: String,
        /// The header `kid` (must match a key id in the issuer's JWKS).
        #[arg(long)]
        kid: Option<String>,
        /// The `jti` claim.
        #[arg(long)]
        jti: Option<String>,
    },
    /// Print a token's header and claims as JSON, WITHOUT verifying it.
    Inspect {
        /// The token (or `-` to read it from stdin).
        token: String,
    },
    /// Write a signing key (PKCS#8 PEM) and the matching public JWKS to DIR.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// ES256 or EdDSA (an issuer accepts EdDSA only with `algorithms: [EdDSA]`).
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// The key id written into the JWKS (use the same with `issue --kid`).
        #[arg(long, default_value = "portcullis-1")]
        kid: String,
    },
}

/// Run a `token` subcommand; the return value is the process exit code.
pub fn run(cmd: TokenCommand) -> i32 {
    match run_inner(cmd) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    }
}

fn run_inner(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Issue {
            key,
            issuer,
            audience,
            sub,
            groups,
            ttl,
            scope,
            scope_claim,
            kid,
            jti,
        } => {
            let pem = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            let signer = Signer::from_pem(&pem, kid.as_deref())
                .with_context(|| format!("in {}", key.display()))?;
            let ttl: Duration = humantime::parse_duration(&ttl)
                .with_context(|| format!("--ttl {ttl:?} is not a duration"))?;
            if ttl.is_zero() {
                bail!("--ttl must be more than 0");
            }
            let mut claims = Claims::new(&issuer, "", &sub, ttl);
            claims.aud = audience;
            claims.groups = groups;
            claims.jti = jti;
            if let Some(scope) = scope {
                let value: Value =
                    serde_json::from_str(&scope).context("--scope is not valid JSON")?;
                serde_json::from_value::<Scope>(value.clone())
                    .context("--scope is not a valid scope (a list of rules with verbs)")?;
                claims.extra.insert(scope_claim, value);
            }
            println!("{}", signer.issue(&claims)?);
            Ok(())
        }
        TokenCommand::Inspect { token } => {
            let token = if token == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .context("reading the token from stdin")?;
                s
            } else {
                token
            };
            let (header, claims) = mint::inspect(&token)?;
            eprintln!("NOTE: decoded only; the signature and claims were NOT verified");
            let out = serde_json::json!({"header": header, "claims": claims});
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        TokenCommand::Keygen { out, alg, kid } => {
            let (key, jwks) = match alg.as_str() {
                "ES256" => mint::generate_es256(&kid)?,
                "EdDSA" => mint::generate_ed25519(&kid)?,
                other => bail!("--alg {other:?}: use ES256 or EdDSA"),
            };
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let key_path = out.join("jwt-signing-key.pem");
            let jwks_path = out.join("jwks.json");
            // As `audit keygen`: never replace a key — a `serve` watching these files would
            // reload, and every token minted with the old key would be refused.
            super::write_new_private(&key_path, key.as_bytes())?;
            std::fs::write(&jwks_path, jwks)
                .with_context(|| format!("cannot write {}", jwks_path.display()))?;
            println!("private key: {}", key_path.display());
            println!("public JWKS: {} (kid {kid})", jwks_path.display());
            if alg == "EdDSA" {
                // Not in the default list (kube-apiserver's): without this the issuer's
                // configuration is refused, its key file checking none of its algorithms.
                println!("the issuer that uses this key needs `algorithms: [EdDSA]`: EdDSA is accepted only where listed");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_then_issue_then_inspect() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            run(TokenCommand::Keygen {
                out: dir.path().into(),
                alg: "EdDSA".into(),
                kid: "k".into()
            }),
            0
        );
        assert_eq!(
            run(TokenCommand::Issue {
                key: dir.path().join("jwt-signing-key.pem"),
                issuer: "https://i.example".into(),
                audience: vec!["portcullis".into()],
                sub: "ci".into(),
                groups: vec!["dev".into()],
                ttl: "5m".into(),
                scope: Some(r#"[{"verbs":["get"]}]"#.into()),
                scope_claim: DEFAULT_SCOPE_CLAIM.into(),
                kid: Some("k".into()),
                jti: None,
            }),
            0
        );
        assert_eq!(
            run(TokenCommand::Issue {
                key: dir.path().join("jwt-signing-key.pem"),
                issuer: "https://i.example".into(),
                audience: vec!["portcullis".into()],
                sub: "ci".into(),
                groups: vec![],
                ttl: "5m".into(),
                scope: Some(r#"[{"namespaces":["x"]}]"#.into()),
                scope_claim: DEFAULT_SCOPE_CLAIM.into(),
                kid: None,
                jti: None,
            }),
            1,
            "a scope without verbs is refused"
        );
        assert_eq!(
            run(TokenCommand::Inspect {
                token: "a.b".into()
            }),
            1
        );
    }
}
