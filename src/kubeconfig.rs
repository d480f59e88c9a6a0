//! kubeconfig files: reading one as the proxy's upstream, and writing the ones `demo` hands out.
//!
//! Reading supports what a proxy's own credentials need: `server`, `certificate-authority[-data]`,
//! `tls-server-name`, and a user with `token`, `tokenFile` or `client-certificate[-data]` +
//! `client-key[-data]`. Exec plugins, auth providers, basic auth and `insecure-skip-tls-verify`
//! are refused with an error naming the field, since the proxy cannot honour them safely.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};

/// A kubeconfig document (the subset we read and write).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "config_kind")]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(default)]
    pub current_context: String,
}

fn api_version() -> String {
    "v1".into()
}
fn config_kind() -> String {
    "Config".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    #[serde(default)]
    pub user: User,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, rename = "tokenFile", skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<serde_json::Value>,
    #[serde(
        default,
        rename = "auth-provider",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_provider: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context_,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Context_ {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What the proxy takes from a kubeconfig context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub server: String,
    pub ca_pem: Option<Vec<u8>>,
    pub tls_server_name: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
}

fn b64(field: &str, data: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .with_context(|| format!("{field} is not valid base64"))
}

fn read_rel(base: &Path, field: &str, p: &Path) -> Result<Vec<u8>> {
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    std::fs::read(&full).with_context(|| format!("{field}: cannot read {}", full.display()))
}

/// YAML options for files that hold credentials: an error names its line and column but
/// quotes no source lines (serde-saphyr's default snippet shows two lines either side of the
/// error, whole — a token or a `client-key-data` next to a typo would reach the log).
pub fn no_snippet() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.with_snippet = false;
    o
}

impl Kubeconfig {
    /// Parse a kubeconfig file.
    pub fn load(path: &Path) -> Result<Kubeconfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Kubeconfig::parse(&text, path)
    }

    /// Parse the text of the kubeconfig file `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Kubeconfig> {
        serde_saphyr::from_str_with_options(text, no_snippet())
            .map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    /// Every file a cluster or user names (`certificate-authority`, `client-certificate`,
    /// `client-key`; not `tokenFile`, re-read on its own interval), relative ones taken
    /// relative to `dir`, the kubeconfig's own folder: what a reload watches, so a rotated
    /// client certificate is picked up without an edit of the kubeconfig itself.
    pub fn named_files(&self, dir: &Path) -> Vec<PathBuf> {
        let clusters = self
            .clusters
            .iter()
            .filter_map(|c| c.cluster.certificate_authority.as_ref());
        let users = self
            .users
            .iter()
            .flat_map(|u| [&u.user.client_certificate, &u.user.client_key])
            .flatten();
        clusters.chain(users).map(|p| dir.join(p)).collect()
    }

    /// Resolve `context` (or the current context) to server, CA and credentials. Relative
    /// paths are taken relative to `dir`, the kubeconfig's own folder, as kubectl does.
    pub fn resolve(&self, context: Option<&str>, dir: &Path) -> Result<Resolved> {
        let ctx_name = context.unwrap_or(&self.current_context);
        if ctx_name.is_empty() {
            bail!("no context given and the kubeconfig has no current-context");
        }
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .ok_or_else(|| anyhow!("context {ctx_name:?} not found"))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| anyhow!("cluster {:?} not found", ctx.context.cluster))?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .ok_or_else(|| anyhow!("user {:?} not found", ctx.context.user))?;
        let c = &cluster.cluster;
        if c.insecure_skip_tls_verify {
            bail!("cluster {:?} sets insecure-skip-tls-verify; the proxy always verifies the API server (give certificate-authority)", cluster.name);
        }
        let u = &user.user;
        if u.exec.is_some() || u.auth_provider.is_some() || u.username.is_some() {
            bail!("user {:?} uses an exec plugin, auth-provider or basic auth, which the proxy does not run; use token, tokenFile or client-certificate/client-key", user.name);
        }
        let ca_pem = match (&c.certificate_authority_data, &c.certificate_authority) {
            (Some(d), _) => Some(b64("certificate-authority-data", d)?),
            (None, Some(p)) => Some(read_rel(dir, "certificate-authority", p)?),
            (None, None) => None,
        };
        let client_cert_pem = match (&u.client_certificate_data, &u.client_certificate) {
            (Some(d), _) => Some(b64("client-certificate-data", d)?),
            (None, Some(p)) => Some(read_rel(dir, "client-certificate", p)?),
            (None, None) => None,
        };
        let client_key_pem = match (&u.client_key_data, &u.client_key) {
            (Some(d), _) => Some(b64("client-key-data", d)?),
            (None, Some(p)) => Some(read_rel(dir, "client-key", p)?),
            (None, None) => None,
        };
        if client_cert_pem.is_some() != client_key_pem.is_some() {
            bail!(
                "user {:?} has a client certificate without a key, or a key without a certificate",
                user.name
            );
        }
        Ok(Resolved {
            server: c.server.clone(),
            ca_pem,
            tls_server_name: c.tls_server_name.clone(),
            token: u.token.clone(),
            token_file: u.token_file.as_ref().map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    dir.join(p)
                }
            }),
            client_cert_pem,
            client_key_pem,
        })
    }

    /// A one-context kubeconfig for `server`, trusting `ca_pem`, with the given user.
    pub fn single(name: &str, server: &str, ca_pem: &str, user: User) -> Kubeconfig {
        Kubeconfig {
            api_version: api_version(),
            kind: config_kind(),
            clusters: vec![NamedCluster {
                name: name.into(),
                cluster: Cluster {
                    server: server.into(),
                    certificate_authority_data: Some(
                        base64::engine::general_purpose::STANDARD.encode(ca_pem),
                    ),
                    ..Default::default()
                },
            }],
            users: vec![NamedUser {
                name: name.into(),
                user,
            }],
            contexts: vec![NamedContext {
                name: name.into(),
                context: Context_ {
                    cluster: name.into(),
                    user: name.into(),
                    namespace: None,
                },
            }],
            current_context: name.into(),
        }
    }

    /// A user entry carrying a client certificate and key inline.
    pub fn cert_user(cert_pem: &str, key_pem: &str) -> User {
        let e = &base64::engine::general_purpose::STANDARD;
        User {
            client_certificate_data: Some(e.encode(cert_pem)),
            client_key_data: Some(e.encode(key_pem)),
            ..Default::default()
        }
    }

    /// Write as YAML (JSON is valid YAML, and every kubeconfig reader accepts it), mode 0600.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_private(path, text.as_bytes())
    }
}

/// Write a file readable only by its owner (keys, kubeconfigs, tokens). A symbolic link in its
/// place is refused (it could point the secret anywhere), and an existing file is made 0600
/// before the secret goes in (the mode given at creation applies only to a new file).
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        anyhow::bail!(
            "{} is a symbolic link: not writing a secret through it",
            path.display()
        );
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A YAML error next to a credential names where it is, never the credential.
    /// An existing file is made owner-only before the secret goes in; a symbolic link in its
    /// place is refused.
    #[cfg(unix)]
    #[test]
    fn a_secret_is_never_left_readable_or_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("proxy.key");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let target = dir.path().join("elsewhere");
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_private(&link, b"secret").is_err());
        assert!(!target.exists());
    }

    #[test]
    fn a_syntax_error_does_not_quote_the_credentials_around_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kubeconfig");
        std::fs::write(
            &p,
            "apiVersion: v1\nusers:\n- name: u\n  user:\n    token: SECRET-TOKEN-123\n   client-certificate: x\n",
        )
        .unwrap();
        let err = format!("{:#}", Kubeconfig::load(&p).unwrap_err());
        assert!(!err.contains("SECRET-TOKEN-123"), "{err}");
        assert!(err.contains("line"), "{err}");
        let cfg = "upstream:\n  redis: redis://user:SECRET-PW@h\n bad: [\n";
        let p = crate::config::parse(cfg).unwrap_err();
        assert!(!p.message.contains("SECRET-PW"), "{}", p.message);
    }
}
