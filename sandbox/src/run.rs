//! Running the sandbox on a TLS listener, and a kubeconfig that points straight at it.
//!
//! Authenticates like a small kube-apiserver (see `gate`): the direct kubeconfig's token is the
//! sandbox admin (`system:masters`), the demo proxy's token ([`crate::demo::proxy_token`] of the
//! same CA) is service account `portcullis/portcullis` (allowed to impersonate by the seeded
//! `portcullis-impersonator` role), client certificates of the CA are their CN / O, and no
//! credentials is `system:anonymous`. The server certificate covers `localhost` and `127.0.0.1`
//! and is issued by the caller's CA.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result};
use base64::Engine;
use tokio::task::JoinHandle;

use portcullis::{
    server::{self, tls, ServeOptions},
    shutdown::{self, Trigger},
};

use crate::{pki::Ca, Sandbox};

/// A sandbox serving on a socket.
pub struct Running {
    pub addr: SocketAddr,
    pub sandbox: Sandbox,
    trigger: Trigger,
    task: JoinHandle<()>,
}

impl Running {
    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stop accepting, give in-flight requests a moment, then drop the rest.
    pub async fn stop(self) {
        self.trigger.fire();
        let _ = self.task.await;
    }
}

/// Bind `listen` (port 0 allowed) and serve a fresh sandbox over TLS with a server certificate
/// for localhost / 127.0.0.1 issued by `ca`.
pub async fn start(listen: SocketAddr, ca: &Ca) -> Result<Running> {
    tls::install_crypto_provider();
    let cert = ca
        .server_cert(&["localhost", "127.0.0.1"])
        .context("issue sandbox server certificate")?;
    let client_cas = tls::ClientCas {
        cas: vec![ca.cert.cert_der.clone()],
        ..tls::ClientCas::default()
    };
    let config = tls::server_config(
        vec![cert.cert_der.clone()],
        cert.key(),
        tls::ClientAuth::Optional(client_cas),
    )?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind sandbox listener {listen}"))?;
    let addr = listener.local_addr().context("sandbox listener address")?;
    let sandbox = Sandbox::new();
    let (ns, name) = crate::rbac_seed::PROXY_SERVICE_ACCOUNT;
    let sa_group = format!("system:serviceaccounts:{ns}");
    sandbox.add_token(
        &crate::demo::proxy_token(ca),
        &format!("system:serviceaccount:{ns}:{name}"),
        &["system:serviceaccounts", &sa_group],
    );
    let (trigger, signal) = shutdown::channel();
    let opts = ServeOptions {
        // Watches and `logs -f` never finish on their own; do not hold shutdown for them.
        grace: Duration::from_millis(500),
        // What kube-apiserver advertises in SETTINGS_MAX_CONCURRENT_STREAMS (since the HTTP/2
        // rapid-reset fix), so the proxy's upstream pool meets the real limit in tests.
        max_concurrent_streams: 100,
        ..ServeOptions::default()
    };
    let sb = sandbox.clone();
    let handler = move |req, conn| {
        let sb = sb.clone();
        async move { sb.handle(req, conn).await }
    };
    let task = tokio::spawn(server::serve(listener, config, opts, handler, signal));
    Ok(Running {
        addr,
        sandbox,
        trigger,
        task,
    })
}

/// Write a kubeconfig that talks to the sandbox directly: the CA embedded as
/// `certificate-authority-data` and a user with `token: sandbox`.
pub fn write_direct_kubeconfig(path: &Path, server_url: &str, ca_pem: &str) -> Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: sandbox
  user:
    token: sandbox
contexts:
- name: sandbox
  context:
    cluster: sandbox
    user: sandbox
    namespace: default
current-context: sandbox
"
    );
    std::fs::write(path, text).with_context(|| format!("write kubeconfig {}", path.display()))
}
