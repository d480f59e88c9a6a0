//! The command line: one file per subcommand.

pub mod audit;
pub mod check_config;
pub mod demo;
pub mod replay;
pub mod sandbox;
pub mod serve;
pub mod signal;
pub mod token;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

/// portcullis — a security reverse proxy in front of the Kubernetes API server.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy from a config file.
    Serve {
        /// The YAML config file (see config/portcullis.yaml).
        #[arg(long, short)]
        config: PathBuf,
        /// How often the config file and the files it names are checked for a change, which
        /// reloads the configuration (`0s`: only on SIGHUP). See "Reloading the
        /// configuration" in README.md.
        #[arg(long, default_value = "5s", value_parser = reload_poll)]
        reload_poll: std::time::Duration,
    },
    /// Check a config file: print every problem with its key path, exit 1 if there is any.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
        /// Also ask the upstream whether the proxy may impersonate what it sends.
        #[arg(long)]
        online: bool,
    },
    /// Run the sandbox API server and the proxy in front of it, with throwaway credentials.
    Demo {
        /// Where certificates, kubeconfigs and the generated config go.
        #[arg(long, default_value = "./portcullis-demo")]
        dir: PathBuf,
        /// The proxy's listen address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// The admin (health, metrics) address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// Only write the files (for `check-config` on config/*.yaml), do not start anything.
        #[arg(long)]
        write_only: bool,
    },
    /// Mint, inspect and generate keys for JWTs (`token issue | inspect | keygen`).
    Token {
        #[command(subcommand)]
        cmd: token::TokenCommand,
    },
    /// Verify, query and make keys for audit files (`audit verify | query | keygen | check-policy`).
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCommand,
    },
    /// Run only the in-memory sandbox API server (writes its CA and a direct kubeconfig to DIR).
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        #[arg(long, default_value = "./portcullis-sandbox")]
        dir: PathBuf,
    },
}

/// Run the parsed command; the return value is the process exit code.
pub async fn run(cli: Cli) -> i32 {
    portcullis::server::tls::install_crypto_provider();
    let result = match cli.command {
        Command::Serve {
            config,
            reload_poll,
        } => serve::run(&config, reload_poll).await,
        Command::CheckConfig { config, online } => return check_config::run(&config, online).await,
        Command::Token { cmd } => return token::run(cmd),
        Command::Audit { cmd } => return audit::run(cmd),
        Command::Demo {
            dir,
            listen,
            admin_listen,
            write_only,
        } => demo::run(&dir, listen, admin_listen, write_only).await,
        Command::Sandbox { listen, dir } => sandbox::run(listen, &dir).await,
    };
    match result {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    }
}

/// Create a private key file readable only by its owner; never overwrite one (nor follow a
/// symbolic link in its place: `create_new`). `audit keygen` and `token keygen`.
pub(crate) fn write_new_private(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => anyhow::bail!(
            "{} exists: not replacing it (a signing key: what it signed would no longer verify); move it away first",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `--reload-poll`: `0s` (only on SIGHUP) or 100ms–24h. Shorter re-reads every watched file in
/// a tight loop; longer is never wanted, and an absurd value would overflow the timer.
fn reload_poll(s: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() || (Duration::from_millis(100)..=Duration::from_secs(86_400)).contains(&d) {
        Ok(d)
    } else {
        Err("use 0s (reload only on SIGHUP) or between 100ms and 24h, e.g. 5s".into())
    }
}
