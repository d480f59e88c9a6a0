//! `portcullis serve --config FILE [--reload-poll 5s]`; SIGHUP or a change of the file reloads
//! it (`portcullis::reload`).

use std::path::Path;

use anyhow::{bail, Result};

use portcullis::{app, config, shutdown};

pub async fn run(path: &Path, reload_poll: std::time::Duration) -> Result<()> {
    // Before reading: a change made while starting is then seen as one (reload::Options).
    let baseline = portcullis::reload::watch::Fingerprint::take(path);
    let cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(problems) => {
            for p in &problems {
                eprintln!("{}: {p}", path.display());
            }
            bail!("{} problem(s) in {}", problems.len(), path.display());
        }
    };
    portcullis::telemetry::init_logging(cfg.log_format);
    // SIGHUP is caught from here on (its default would end the process).
    let reload = portcullis::reload::Options {
        path: path.to_path_buf(),
        poll: (!reload_poll.is_zero()).then_some(reload_poll),
        trigger: Default::default(),
        baseline: Some(baseline),
    };
    super::signal::on_hangup(reload.trigger.clone());
    let listeners = app::Listeners::bind(&cfg).await?;
    let (trigger, shutdown) = shutdown::channel();
    super::signal::on_signal(trigger);
    app::run_with(cfg, listeners, shutdown, Some(reload)).await
}
