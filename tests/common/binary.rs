//! The real `portcullis serve` binary in front of an in-process sandbox, for what only a
//! process has: signals (SIGHUP, SIGTERM) and its log on stderr.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use portcullis::server::tls;
use portcullis_sandbox::{self as sandbox, demo, pki::Ca, Running};
use tokio::io::AsyncBufReadExt;

pub struct Binary {
    pub dir: tempfile::TempDir,
    pub files: demo::Files,
    pub ca: Ca,
    pub sandbox: Running,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub child: tokio::process::Child,
    /// Everything the process wrote to stderr so far (its log).
    pub log: Arc<Mutex<String>>,
}

impl Binary {
    /// Sandbox + `portcullis serve --config <demo config> <args>`; `edit` may rewrite the
    /// generated config first. Returns once `/readyz` answers 200.
    pub async fn start(args: &[&str], edit: impl FnOnce(&mut String)) -> Binary {
        tls::install_crypto_provider();
        let ca = Ca::new("test CA").unwrap();
        let sandbox = sandbox::start("127.0.0.1:0".parse().unwrap(), &ca)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (listen, admin) = (super::free_port(), super::free_port());
        let files = demo::write(dir.path(), &ca, &sandbox.url(), listen, admin).unwrap();
        let mut text = std::fs::read_to_string(&files.config).unwrap();
        edit(&mut text);
        std::fs::write(&files.config, &text).unwrap();
        Self::spawn(dir, files, ca, sandbox, listen, admin, args).await
    }

    /// Spawn the binary on `files.config` (already written).
    pub async fn spawn(
        dir: tempfile::TempDir,
        files: demo::Files,
        ca: Ca,
        sandbox: Running,
        listen: SocketAddr,
        admin: SocketAddr,
        args: &[&str],
    ) -> Binary {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config"])
            .arg(&files.config)
            .args(args)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut b = Binary {
            dir,
            files,
            ca,
            sandbox,
            listen,
            admin,
            child,
            log,
        };
        for _ in 0..600 {
            if let Some(status) = b.child.try_wait().unwrap() {
                panic!("proxy exited at start: {status}\n{}", b.log());
            }
            if tokio::net::TcpStream::connect(admin).await.is_ok()
                && super::admin_get(admin, "/readyz").await.0 == 200
            {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("proxy not ready within 30 s\n{}", b.log());
    }

    /// The process's exit status once it exits, failing the test with `what` if it has not
    /// within `within`.
    pub async fn exit_status(&mut self, within: Duration, what: &str) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{what}"))
            .unwrap()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once `ready` holds for it, or after 10 s (the caller's assertions then fail
    /// with the log as it is). The process's stderr is read by a task of the test, so a line
    /// the proxy wrote before a metric the test saw may not be in `log()` yet.
    pub async fn log_when(&self, ready: impl Fn(&str) -> bool) -> String {
        for _ in 0..500 {
            let log = self.log();
            if ready(&log) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.log()
    }

    /// Send a signal (`HUP`, `TERM`) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name} {pid}");
    }

    /// The value of `portcullis_config_reloads_total{result="<result>"}` (0 when absent).
    pub async fn reloads(&self, result: &str) -> u64 {
        let (status, body) = super::admin_get(self.admin, "/metrics").await;
        assert_eq!(status, 200);
        let prefix = format!("portcullis_config_reloads_total{{result=\"{result}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// Wait (at most 30 s) until `result` reloads reached `n`.
    pub async fn wait_reloads(&self, result: &str, n: u64) {
        for _ in 0..1500 {
            let seen = self.reloads(result).await;
            assert!(
                seen <= n,
                "{seen} {result} reloads, expected {n}\n{}",
                self.log()
            );
            if seen == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no {n}th {result} reload within 30 s\n{}", self.log());
    }

    /// Signal a reload, wait for the `n`th successful one, then for the new configuration's own
    /// `/readyz` probe, and forget every recorded request ([`super::clear_recorded_after_probe`]).
    pub async fn reload_and_clear_recorded(&self, n: u64) {
        // Cleared first too: an earlier configuration's probe must not pass for the new one's.
        self.sandbox.sandbox.clear_recorded();
        self.signal("HUP");
        self.wait_reloads("success", n).await;
        super::clear_recorded_after_probe(&self.sandbox, Duration::from_secs(10)).await;
    }

    /// Replace the config file atomically (write beside it, rename over), as a deploy tool
    /// or an editor that saves by rename does.
    pub fn write_config(&self, text: &str) {
        replace(&self.files.config, text.as_bytes());
    }

    /// Run kubectl with `kubeconfig` (a file in the demo folder).
    pub async fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
        super::kubectl(kubeconfig, self.dir.path(), args).await
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn stop(mut self) {
        self.signal("TERM");
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        self.sandbox.stop().await;
    }
}

/// Write `path` atomically: a temporary file in the same folder renamed over it.
pub fn replace(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp-replace");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
