//! `portcullis sandbox --listen ADDR --dir DIR`: only the in-memory API server, so `serve` can
//! be put in front of a separately running upstream.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context, Result};

use portcullis::{kubeconfig::write_private, shutdown};
use portcullis_sandbox::{self as sandbox, pki::Ca};

pub async fn run(listen: SocketAddr, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = Ca::new("portcullis sandbox CA")?;
    let running = sandbox::start(listen, &ca).await?;
    write_private(&dir.join("ca.crt"), ca.cert.cert_pem.as_bytes())?;
    let kubeconfig = dir.join("sandbox.kubeconfig");
    sandbox::write_direct_kubeconfig(&kubeconfig, &running.url(), &ca.cert.cert_pem)?;
    println!(
        "sandbox API server on {}\n  CA         {}\n  kubeconfig {}\n\nkubectl --kubeconfig {} get ns\n\nCtrl-C to stop.",
        running.url(),
        dir.join("ca.crt").display(),
        kubeconfig.display(),
        kubeconfig.display()
    );
    let (trigger, mut shutdown) = shutdown::channel();
    super::signal::on_signal(trigger);
    shutdown.wait().await;
    running.stop().await;
    Ok(())
}
