//! A cloneable shutdown signal: one trigger, many waiters (listeners, long-lived tasks).

use tokio::sync::watch;

/// Fires the shutdown signal for every [`Shutdown`] cloned from its pair.
#[derive(Debug, Clone)]
pub struct Trigger(watch::Sender<bool>);

/// Resolves once the paired [`Trigger`] fired (or was dropped).
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and its signal.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Ask everything holding the paired [`Shutdown`] to stop.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Wait for the signal. Dropping the trigger also counts as a signal, so an abandoned
    /// server never hangs forever.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }

    /// Whether the signal has already fired.
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }
}

/// The end of a connection's shutdown grace: what a stream that outlives its connection's
/// drain (an upgraded exec, attach or port-forward session, spliced on its own task) waits for
/// to end itself — so its recording is finished and its `ResponseComplete` written while the
/// audit sinks still run, rather than cut unrecorded when the process exits.
#[derive(Debug, Clone, Default)]
pub struct Cutoff(Option<(Shutdown, std::time::Duration)>);

impl Cutoff {
    /// `grace` after `shutdown` fires.
    pub fn after(shutdown: Shutdown, grace: std::time::Duration) -> Cutoff {
        Cutoff(Some((shutdown, grace)))
    }

    /// Resolves at the cutoff; never for [`Cutoff::default`].
    pub async fn reached(self) {
        match self.0 {
            None => std::future::pending().await,
            Some((mut shutdown, grace)) => {
                shutdown.wait().await;
                tokio::time::sleep(grace).await;
            }
        }
    }
}
