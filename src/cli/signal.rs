//! SIGTERM / SIGINT → the shutdown trigger (a second one during the drain: exit at once,
//! status 130, as an operator pressing Ctrl-C twice means); SIGHUP → a configuration reload.

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
                        _ = term.recv() => tracing::info!("SIGTERM: draining (a second signal exits at once)"),
                        _ = int.recv() => tracing::info!("SIGINT: draining (a second signal exits at once)"),
                    }
                    trigger.fire();
                    // The drain waits for open sessions up to `shutdown.grace`, then for the
                    // audit sinks: a second signal is the operator saying not to wait.
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    tracing::error!("second signal: exiting without finishing the drain (open requests are cut, their audit events may be missing)");
                    std::process::exit(130);
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
