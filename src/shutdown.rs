//! A cloneable shutdown signal: one trigger, many waiters (listeners, long-lived tasks).

use tokio::{sync::watch, time::Instant};

/// Fires the shutdown signal for every [`Shutdown`] cloned from its pair.
#[derive(Debug, Clone)]
pub struct Trigger(watch::Sender<Option<Instant>>);

/// Resolves once the paired [`Trigger`] fired (or was dropped).
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<Option<Instant>>);

/// A new trigger and its signal.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(None);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Ask everything holding the paired [`Shutdown`] to stop (the first call's time is kept).
    pub fn fire(&self) {
        self.0.send_if_modified(|at| {
            let first = at.is_none();
            if first {
                *at = Some(Instant::now());
            }
            first
        });
    }
}

impl Shutdown {
    /// Wait for the signal. Dropping the trigger also counts as a signal, so an abandoned
    /// server never hangs forever.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(Option::is_some).await;
    }

    /// Whether the signal has already fired.
    pub fn is_fired(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// When the signal fired (None: not yet, or the trigger was dropped unfired).
    pub fn fired_at(&self) -> Option<Instant> {
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

    /// Whether the cutoff has passed: the proxy, not the client, is ending what is still
    /// open on the connection. Never for [`Cutoff::default`].
    pub fn is_reached(&self) -> bool {
        self.0.as_ref().is_some_and(|(shutdown, grace)| {
            shutdown
                .fired_at()
                .is_some_and(|fired| Instant::now() >= fired + *grace)
        })
    }

    /// Resolves at the cutoff — `grace` after the signal fired, however late this is first
    /// awaited (a session that started during the drain gets no grace of its own) — or at
    /// once, past it; never for [`Cutoff::default`]. A trigger dropped unfired counts from
    /// when that is seen.
    pub async fn reached(self) {
        match self.0 {
            None => std::future::pending().await,
            Some((mut shutdown, grace)) => {
                shutdown.wait().await;
                let fired = shutdown.fired_at().unwrap_or_else(Instant::now);
                tokio::time::sleep_until(fired + grace).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The cutoff is `grace` after the signal, not after the session first waits for it: a
    /// session that starts 20 s into a 30 s drain is ended 10 s later, with the drain, not
    /// 30 s later, after the process has gone.
    #[tokio::test(start_paused = true)]
    async fn the_cutoff_is_grace_after_the_signal_however_late_it_is_awaited() {
        let (trigger, shutdown) = channel();
        let start = Instant::now();
        trigger.fire();
        tokio::time::sleep(Duration::from_secs(20)).await;
        trigger.fire(); // a second signal moves nothing
        Cutoff::after(shutdown.clone(), Duration::from_secs(30))
            .reached()
            .await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // Past it: at once.
        Cutoff::after(shutdown, Duration::from_secs(30))
            .reached()
            .await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // Never, without a shutdown.
        let never = tokio::time::timeout(Duration::from_secs(3600), Cutoff::default().reached());
        assert!(never.await.is_err());
    }
}
