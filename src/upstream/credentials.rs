//! The proxy's own bearer token toward the upstream.
//!
//! A token file is re-read on an interval and swapped in when its contents change, because
//! projected service-account tokens rotate (kubelet rewrites the file well before expiry). A
//! read that fails or yields an empty file keeps the previous token and logs a warning, so a
//! rotation caught half-written does not take the proxy down.

use std::{path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::{shutdown::Shutdown, upstream::config::UpstreamToken};

/// The current `Authorization` value for upstream requests, if the proxy uses a token.
#[derive(Debug, Default)]
pub struct Credentials {
    authorization: ArcSwapOption<HeaderValue>,
}

fn bearer(token: &str) -> Option<HeaderValue> {
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl Credentials {
    /// Load the initial token. Fails if a configured token file is unreadable or empty.
    pub fn load(token: &UpstreamToken) -> anyhow::Result<Arc<Credentials>> {
        let creds = Credentials::default();
        match token {
            UpstreamToken::None => {}
            UpstreamToken::Static(t) => {
                let v = bearer(t).ok_or_else(|| {
                    anyhow::anyhow!("upstream token is empty or not a valid header value")
                })?;
                creds.authorization.store(Some(Arc::new(v)));
            }
            UpstreamToken::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                let v = bearer(&text)
                    .ok_or_else(|| anyhow::anyhow!("{} holds no usable token", path.display()))?;
                creds.authorization.store(Some(Arc::new(v)));
            }
        }
        Ok(Arc::new(creds))
    }

    /// The `Authorization` header value to send, if any.
    pub fn authorization(&self) -> Option<Arc<HeaderValue>> {
        self.authorization.load_full()
    }

    /// Re-read `path` every `interval` until shutdown, swapping in a changed token.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        path: PathBuf,
        interval: Duration,
        mut shutdown: Shutdown,
    ) {
        let creds = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait() => return,
                }
                creds.reload(&path).await;
            }
        });
    }

    /// Re-read the token file once; keep the old token if the new read is unusable.
    pub async fn reload(&self, path: &std::path::Path) {
        match tokio::fs::read_to_string(path).await {
            Ok(text) => match bearer(&text) {
                Some(v) => {
                    let changed = self
                        .authorization
                        .load()
                        .as_deref()
                        .is_none_or(|old| old != v);
                    if changed {
                        tracing::info!(path = %path.display(), "upstream token rotated");
                        self.authorization.store(Some(Arc::new(v)));
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "token file empty; keeping the previous token")
                }
            },
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "cannot re-read token file; keeping the previous token")
            }
        }
    }
}
