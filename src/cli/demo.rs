//! `portcullis demo`: sandbox + proxy in one process with throwaway credentials.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context, Result};
use tokio::net::TcpListener;

use portcullis::{app, config, shutdown};
use portcullis_sandbox::{self as sandbox, demo, pki::Ca};

pub async fn run(
    dir: &Path,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    write_only: bool,
) -> Result<()> {
    let ca = Ca::new("portcullis demo CA")?;
    if write_only {
        let files = demo::write(dir, &ca, "https://127.0.0.1:6443", listen, admin_listen)?;
        println!("wrote demo files to {}", files.dir.display());
        return Ok(());
    }
    // Bind first so a busy port is reported before anything is written.
    let proxy = TcpListener::bind(listen)
        .await
        .with_context(|| format!("--listen {listen}: cannot bind"))?;
    let admin = TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("--admin-listen {admin_listen}: cannot bind"))?;
    let sandbox = sandbox::start("127.0.0.1:0".parse()?, &ca).await?;
    let files = demo::write(
        dir,
        &ca,
        &sandbox.url(),
        proxy.local_addr()?,
        admin.local_addr()?,
    )?;
    let cfg = config::load(&files.config).map_err(|problems| {
        anyhow::anyhow!(
            "generated config is invalid: {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;

    let kc = files.admin_kubeconfig.display();
    let (team_a, ci) = (
        files.team_a_kubeconfig.display(),
        files.ci_kubeconfig.display(),
    );
    println!(
        "portcullis demo is running\n\
         \n  proxy     https://{listen}\
         \n  identities  {kc}   (mTLS certificate, group demo:admins: everything)\
         \n              {team_a}   (JWT, tenant team-a: only namespace team-a)\
         \n              {ci}   (JWT, 1 h: read/patch deployments, read pods in team-a and team-b)\
         \n  sandbox   {}   (in-memory Kubernetes API, the proxy's upstream)\
         \n  admin     http://{admin_listen}/metrics  /readyz\
         \n  files     {}\n\
         \nTry:\
         \n  kubectl --kubeconfig {kc} get ns\
         \n  kubectl --kubeconfig {kc} create configmap hello --from-literal=greeting=hi\
         \n  kubectl --kubeconfig {kc} run web --image=nginx\
         \n  kubectl --kubeconfig {kc} get pods -w\
         \n  kubectl --kubeconfig {kc} logs -f web\
         \n  kubectl --kubeconfig {kc} exec web -- echo hi\
         \n  kubectl --kubeconfig {team_a} -n team-a create configmap mine --from-literal=a=b\
         \n  kubectl --kubeconfig {team_a} -n team-b get pods      # Forbidden\
         \n  kubectl --kubeconfig {ci} -n team-b get deployments,pods\
         \n  curl -s http://{admin_listen}/metrics | grep portcullis_requests\
         \n\nCtrl-C to stop.",
        sandbox.url(),
        files.dir.display(),
    );
    let (trigger, shutdown) = shutdown::channel();
    super::signal::on_signal(trigger);
    app::run(cfg, app::Listeners { proxy, admin }, shutdown).await?;
    sandbox.stop().await;
    Ok(())
}
