//! `portcullis serve --config FILE`.

use std::path::Path;

use anyhow::{bail, Result};

use portcullis::{app, config, shutdown};

pub async fn run(path: &Path) -> Result<()> {
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
    let listeners = app::Listeners::bind(&cfg).await?;
    let (trigger, shutdown) = shutdown::channel();
    super::signal::on_signal(trigger);
    app::run(cfg, listeners, shutdown).await
}
