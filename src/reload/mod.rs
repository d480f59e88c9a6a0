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
//! `portcullis_config_reloads_total{result="failure"}` counts it (`success` otherwise). With
//! file polling on, a refused reload is tried again after one poll interval, then after twice
//! as long each time, up to [`MAX_RETRY_WAIT`], until one is applied: a refusal can pass (an
//! identity provider briefly unreachable), and the change it held back must not wait for the
//! next edit. A change seen by polling is read once two polls in a row see the files the same
//! (so one to two poll intervals after it is written): a file being rewritten in place is not
//! read half-written. SIGHUP reloads at once.

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
    /// The files as they were before the running configuration was read (None: as they are
    /// when the watch starts). Taken before `config::load`, so a change made while the
    /// process was starting (a ConfigMap swap during a slow first key fetch) is not taken
    /// for the configuration in force.
    pub baseline: Option<watch::Fingerprint>,
}

/// The default poll interval: a ConfigMap update reaches the pod after the kubelet's sync
/// (up to a minute), so a few seconds more is noise; reading a few small files this often is
/// free.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// The longest wait between retries of a refused reload (the first waits one poll interval,
/// each next one twice as long).
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);

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
        let mut seen = match opts.baseline.clone() {
            Some(before) => Some(before),
            None => fingerprint().await,
        };
        let period = opts.poll.unwrap_or(Duration::from_secs(3600));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After a refused reload: when to try again, and the wait after that. A refusal can
        // pass (an identity provider down for a moment), and the change that was refused —
        // perhaps a revoked certificate or a removed grant — must not wait for the next edit
        // or a SIGHUP; a configuration that stays wrong is retried less and less often.
        let mut retry: Option<(tokio::time::Instant, Duration)> = None;
        // The files as the last poll saw them: a change is read once two polls in a row agree
        // on it, so a file rewritten in place is not read half-written — cut at a line
        // boundary it can still be valid YAML, and weaker (a tenant without its `rules:`, a
        // config without its `sanitize:` section).
        let mut last_poll = seen.clone();
        loop {
            let cause = tokio::select! {
                _ = opts.trigger.0.notified() => "SIGHUP",
                _ = tick.tick(), if opts.poll.is_some() => {
                    let now = fingerprint().await;
                    let settled = now == last_poll;
                    last_poll.clone_from(&now);
                    if now.is_some() && now != seen {
                        if !settled {
                            continue;
                        }
                        "file change"
                    } else if retry.is_some_and(|(at, _)| tokio::time::Instant::now() >= at) {
                        "retry of a refused reload"
                    } else {
                        continue;
                    }
                }
                _ = shutdown.wait() => return,
            };
            // Taken before reading, so a change during the reload is seen next time.
            seen = fingerprint().await;
            retry = match reload(&live, &opts.path, cause).await {
                Outcome::Applied(_) => None,
                Outcome::Refused(_) => {
                    let wait = retry.map_or(period, |(_, w)| w * 2).min(MAX_RETRY_WAIT);
                    Some((tokio::time::Instant::now() + wait, wait))
                }
            };
        }
    });
}
