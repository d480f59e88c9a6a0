//! Hot reload of the configuration, on SIGHUP and when the config file (or a file it names)
//! changes — including Kubernetes' ConfigMap / Secret symlink swap (`watch`).
//!
//! A reload takes the startup path: `config::load` (parse, validate, every certificate, key,
//! CA bundle, CRL, JWKS file, audit policy and token re-read), then `Runtime::rebuild` (the
//! startup build, carrying over what must outlive one configuration: `carry`), then an atomic
//! swap of the whole generation (`live`). Requests already running — watches and exec sessions
//! included — finish on the configuration they started with; new requests and new TLS
//! handshakes use the new one.
//!
//! **Accepts** a configuration that validates, builds, loads the keys of every JWT issuer, and
//! changes nothing that cannot change live. **Refuses** anything else, whole — never half
//! applied: the running configuration keeps serving, `/readyz` is unaffected, one log line
//! per problem names its key path (`fixed` refusals say "restart to apply"), and
//! `portcullis_config_reloads_total{result="failure"}` counts it (`success` otherwise).

pub mod carry;
pub mod fixed;
pub mod live;
mod reloader;
pub mod watch;

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::Notify;

pub use live::{Generation, Live};
pub use reloader::{reload, Outcome};

use crate::shutdown::Shutdown;

/// Asks the reload task for a reload (SIGHUP; tests). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    /// Request a reload; requests made while one runs coalesce into one more.
    pub fn request(&self) {
        self.0.notify_one();
    }
}

/// Where the configuration comes from and when to re-read it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config file (`--config`).
    pub path: PathBuf,
    /// How often the config file and the files it names are checked for a change (None: only
    /// on request).
    pub poll: Option<Duration>,
    /// Reload requests (SIGHUP).
    pub trigger: Trigger,
}

/// The default poll interval: a ConfigMap update reaches the pod after the kubelet's sync
/// (up to a minute), so a few seconds more is noise; reading a few small files this often is
/// free.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// Run reloads for `live` on request and on change until `shutdown`. Reloads run one at a
/// time.
pub fn spawn(live: Arc<Live>, opts: Options, mut shutdown: Shutdown) {
    tokio::spawn(async move {
        let path = opts.path.clone();
        let fingerprint = move || {
            let path = path.clone();
            async move {
                tokio::task::spawn_blocking(move || watch::Fingerprint::take(&path))
                    .await
                    .ok()
            }
        };
        let mut seen = fingerprint().await;
        let period = opts.poll.unwrap_or(Duration::from_secs(3600));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let cause = tokio::select! {
                _ = opts.trigger.0.notified() => "SIGHUP",
                _ = tick.tick(), if opts.poll.is_some() => {
                    let now = fingerprint().await;
                    if now.is_none() || now == seen {
                        continue;
                    }
                    "file change"
                }
                _ = shutdown.wait() => return,
            };
            // Taken before reading, so a change during the reload is seen next time.
            seen = fingerprint().await;
            reload(&live, &opts.path, cause).await;
        }
    });
}
