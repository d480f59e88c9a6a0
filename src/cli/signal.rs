//! SIGTERM / SIGINT → the shutdown trigger; SIGHUP → a configuration reload.

use portcullis::shutdown::Trigger;

/// Fire `trigger` on the first SIGTERM or SIGINT.
pub fn on_signal(trigger: Trigger) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let term = signal(SignalKind::terminate());
            let int = signal(SignalKind::interrupt());
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM: draining"),
                        _ = int.recv() => tracing::info!("SIGINT: draining"),
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        trigger.fire();
    });
}

/// Request a configuration reload on every SIGHUP (unix; elsewhere nothing).
pub fn on_hangup(reload: portcullis::reload::Trigger) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the configuration");
                        reload.request();
                    }
                });
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGHUP; reload on file change only")
            }
        }
    }
    #[cfg(not(unix))]
    let _ = reload;
}
