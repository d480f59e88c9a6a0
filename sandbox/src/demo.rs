//! The throwaway world `portcullis demo` runs in, also used by the integration tests: one CA,
//! the proxy's server certificate, the proxy's own token toward the sandbox (derived from the
//! CA key: `proxy_token`), an admin client
//! certificate, the generated `portcullis.yaml`, and kubeconfigs.
//!
//! Files written to DIR: `ca.crt`, `proxy.crt`, `proxy.key`, `proxy.token`,
//! `portcullis.yaml` (the proxy's config, loaded through the same path as `serve`),
//! `jwt-signing.key` + `jwks.json` (the demo issuer's ES256 key, kid `demo-1`),
//! `admin.kubeconfig` (mTLS certificate: user `admin`, group `demo:admins`, everything),
//! `team-a.kubeconfig` (JWT: user `alice`, tenant team-a: everything in namespace team-a only),
//! `ci.kubeconfig` (JWT, 1 h: user `ci-bot`, group `ci`: get/list/watch/patch deployments and
//! get/list pods in team-a and team-b, with a token scope saying the same),
//! `upstream.kubeconfig` (the proxy's own credentials, talks to the sandbox directly).
//! `audit-policy.yaml` (the default policy), `audit-signing.key` + `.pub` (Ed25519, signs the
//! checkpoints) and, once running, `audit.log` (blocking-strict: hash-chained, fsynced).
//! Rate limits: team-a reads 5/s (burst 20), CI reads 2/s (burst 10) — modest, so a loop of
//! kubectl calls shows a 429 — while the demo admin's are generous.
//! Keys, tokens and kubeconfigs are written mode 0600. The CA key is never written.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use portcullis::{
    authn::jwt::mint::{self, Claims, Signer},
    kubeconfig::{write_private, Kubeconfig, User},
};

use crate::pki::Ca;

/// The demo JWT issuer (never fetched: its keys are the local `jwks.json`).
pub const ISSUER: &str = "https://portcullis-demo.local";
/// The audience the demo issuer's tokens are for.
pub const AUDIENCE: &str = "portcullis";
/// The kid of the demo signing key.
pub const KID: &str = "demo-1";

/// Paths of what [`write`] produced.
pub struct Files {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub admin_kubeconfig: PathBuf,
    pub team_a_kubeconfig: PathBuf,
    pub ci_kubeconfig: PathBuf,
    pub upstream_kubeconfig: PathBuf,
}

/// A random token (hex of 32 CSPRNG bytes).
pub fn random_token() -> Result<String> {
    let mut b = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The proxy's token toward a sandbox started with the same CA (`crate::start` accepts it as
/// service account `portcullis/portcullis`): derived from the CA's private key, so it is as
/// secret as that key and needs no side channel between `demo::write` and the sandbox.
pub fn proxy_token(ca: &Ca) -> String {
    let mut material = ca.cert.key_der.clone();
    material.extend_from_slice(b"\0portcullis demo proxy token");
    portcullis::authn::x509::fingerprint(&material)
}

/// Write every demo file for a proxy on `listen` / `admin` in front of `sandbox_url`.
pub fn write(
    dir: &Path,
    ca: &Ca,
    sandbox_url: &str,
    listen: SocketAddr,
    admin: SocketAddr,
) -> Result<Files> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let put =
        |name: &str, data: &str| -> Result<()> { write_private(&dir.join(name), data.as_bytes()) };

    put("ca.crt", &ca.cert.cert_pem)?;
    let server = ca.server_cert(&["localhost", "127.0.0.1"])?;
    put("proxy.crt", &server.cert_pem)?;
    put("proxy.key", &server.key_pem)?;
    put("proxy.token", &proxy_token(ca))?;

    let admin_cert = ca.client_cert("admin", &["demo:admins"])?;
    let proxy_url = format!("https://{listen}");
    let admin_kubeconfig = dir.join("admin.kubeconfig");
    Kubeconfig::single(
        "portcullis-demo",
        &proxy_url,
        &ca.cert.cert_pem,
        Kubeconfig::cert_user(&admin_cert.cert_pem, &admin_cert.key_pem),
    )
    .write(&admin_kubeconfig)?;

    // The demo JWT issuer: a local key, its JWKS, and two tokens.
    let (signing_pem, jwks) = mint::generate_es256(KID)?;
    put("jwt-signing.key", &signing_pem)?;
    put("jwks.json", &jwks)?;

    // Audit: the default policy, a checkpoint signing key, the log written in DIR.
    put("audit-policy.yaml", AUDIT_POLICY)?;
    let (audit_key, audit_pub, _) =
        portcullis::audit::SigningKey::generate().map_err(|e| anyhow::anyhow!(e))?;
    put("audit-signing.key", &audit_key)?;
    put("audit-signing.pub", &audit_pub)?;
    let signer = Signer::from_pem(&signing_pem, Some(KID))?;
    let token_user = |token: String| User {
        token: Some(token),
        ..Default::default()
    };
    let mut alice = Claims::new(
        ISSUER,
        AUDIENCE,
        "alice",
        std::time::Duration::from_secs(12 * 3600),
    );
    alice.groups = vec!["tenant:team-a".into()];
    alice.jti = Some(format!("demo-alice-{}", &random_token()?[..8]));
    let team_a_kubeconfig = dir.join("team-a.kubeconfig");
    let mut team_a = Kubeconfig::single(
        "portcullis-team-a",
        &proxy_url,
        &ca.cert.cert_pem,
        token_user(signer.issue(&alice)?),
    );
    // A tenant works in its own namespace: kubectl needs no -n.
    for c in &mut team_a.contexts {
        c.context.namespace = Some("team-a".into());
    }
    team_a.write(&team_a_kubeconfig)?;
    let mut ci = Claims::new(
        ISSUER,
        AUDIENCE,
        "ci-bot",
        std::time::Duration::from_secs(3600),
    );
    ci.groups = vec!["ci".into()];
    ci.jti = Some(format!("demo-ci-{}", &random_token()?[..8]));
    ci.extra.insert(
        "portcullis.io/scope".into(),
        serde_json::json!([
            {"namespaces": ["team-a", "team-b"], "verbs": ["get", "list", "watch", "patch"], "apiGroups": ["apps"], "resources": ["deployments"]},
            {"namespaces": ["team-a", "team-b"], "verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}
        ]),
    );
    let ci_kubeconfig = dir.join("ci.kubeconfig");
    Kubeconfig::single(
        "portcullis-ci",
        &proxy_url,
        &ca.cert.cert_pem,
        token_user(signer.issue(&ci)?),
    )
    .write(&ci_kubeconfig)?;

    let upstream_kubeconfig = dir.join("upstream.kubeconfig");
    Kubeconfig::single(
        "sandbox",
        sandbox_url,
        &ca.cert.cert_pem,
        User {
            token_file: Some(PathBuf::from("proxy.token")),
            ..Default::default()
        },
    )
    .write(&upstream_kubeconfig)?;

    let config = dir.join("portcullis.yaml");
    put(
        "portcullis.yaml",
        &format!(
            "# Generated by `portcullis demo`; see config/portcullis.yaml for every key.\n\
             listen:\n  address: {listen}\n  tls:\n    cert_file: proxy.crt\n    key_file: proxy.key\n\
             admin:\n  address: {admin}\n\
             {AUTHN}{AUTHZ}{LIMITS}{SANITIZE}{AUDIT}\
             upstream:\n  url: {sandbox_url}\n  ca_file: ca.crt\n  credentials:\n    token_file: proxy.token\n\
             shutdown:\n  grace: 5s\n"
        ),
    )?;
    Ok(Files {
        dir: dir.to_path_buf(),
        config,
        admin_kubeconfig,
        team_a_kubeconfig,
        ci_kubeconfig,
        upstream_kubeconfig,
    })
}

const AUTHN: &str = r#"authentication:
  client_certificates:
    ca_files: [ca.crt]
    mode: optional             # certificates for admins, bearer tokens for the rest
  jwt:
    - issuer:
        url: https://portcullis-demo.local
        audiences: [portcullis]
        jwks_file: jwks.json
      algorithms: [ES256]
      claim_mappings:
        username: {claim: sub, prefix: ""}
        groups: {claim: groups, prefix: ""}
"#;

const AUTHZ: &str = r#"authorization:
  tenants:
    - name: team-a
      namespaces: [team-a]
      subjects: [{group: "tenant:team-a"}]
  grants:
    - name: demo-admins
      subjects: [{group: "demo:admins"}]
      rules:
        - {namespaces: ["*"], verbs: ["*"], api_groups: ["*"], resources: ["*"]}
        - {non_resource_urls: ["*"], verbs: ["*"]}
    - name: ci
      subjects: [{group: ci}]
      rules:
        - {namespaces: [team-a, team-b], verbs: [get, list, watch, patch], api_groups: [apps], resources: [deployments]}
        - {namespaces: [team-a, team-b], verbs: [get, list], api_groups: [""], resources: [pods]}
"#;

const LIMITS: &str = r#"rate_limits:
  mode: enforce
  default: {reads: {rate: 50/s, burst: 100}, writes: {rate: 20/s, burst: 40}, watches: 20, sessions: 5, in_flight: 50}
  groups:
    "demo:admins": {reads: {rate: 1000/s, burst: 2000}, writes: {rate: 500/s, burst: 1000}, watches: 500, sessions: 50, in_flight: 1000}
    ci: {reads: {rate: 2/s, burst: 10}, writes: {rate: 1/s, burst: 3}, watches: 2, sessions: 1, in_flight: 10}
  tenants:
    team-a: {reads: {rate: 5/s, burst: 20}, writes: {rate: 2/s, burst: 10}, watches: 3, sessions: 2, in_flight: 20}
  costs: {cluster_wide_list: 5, unpaginated_list: 2, deletecollection: 10}
  unauthenticated: {rate: 5/s, burst: 30}
  max_in_flight: 400
"#;

const SANITIZE: &str = r#"sanitize:
  # kubectl's typed `create deployment|job|cronjob|configmap|secret` send protobuf: judged like
  # JSON where Pod Security or a field rule applies, forwarded as sent where nothing does.
  pod_security:
    defaults: {enforce: privileged}
    namespaces:
      team-a: {enforce: restricted}
      team-b: {enforce: baseline, warn: restricted}
  field_rules:
    - name: tenants-do-not-pick-nodes
      group: "*"
      resources: [pods, podtemplates, replicationcontrollers, replicasets, deployments, statefulsets, daemonsets, jobs, cronjobs]
      tenants: ["*"]
      deny: [podSpec.nodeName, podSpec.hostAliases]
    - name: no-status-on-create
      resources: [pods]
      verbs: [create]
      strip: [status]
"#;

/// The default policy of `config/audit-policy.yaml`, written next to the demo config.
const AUDIT_POLICY: &str = include_str!("../../config/audit-policy.yaml");

const AUDIT: &str = r#"audit:
  policy_file: audit-policy.yaml
  signing_key_file: audit-signing.key
  sinks:
    - name: file
      file: {path: audit.log, max_size_mb: 100, max_backups: 10, checkpoint_every_events: 100, checkpoint_interval: 10s}
      mode: blocking-strict      # no answer leaves before its event is on disk
"#;
