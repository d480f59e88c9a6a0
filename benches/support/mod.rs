//! What the memory and stream benches share: the `portcullis` binary started as its own process
//! in front of an in-process sandbox (so its RSS is the proxy's alone), and reading that RSS.
//!
//! `PORTCULLIS_BIN` names another binary to run (a copy of a release build while other builds
//! share the target directory, or a wrapper script such as `exec heaptrack -o FILE BIN "$@"`:
//! the RSS is then read from the `portcullis` process under the wrapper).
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use portcullis_sandbox::{self as sandbox, demo, pki::Ca, Running};

use super::common;

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// The proxy process, the sandbox behind it and the demo files.
pub struct Proxy {
    pub dir: tempfile::TempDir,
    pub files: demo::Files,
    pub ca: Ca,
    pub sandbox: Running,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub child: tokio::process::Child,
}

impl Proxy {
    /// Sandbox + `portcullis serve` on the demo config, `edit`ed first; returns once the proxy
    /// answers on its listener.
    pub async fn start(edit: impl FnOnce(&mut String)) -> Proxy {
        portcullis::server::tls::install_crypto_provider();
        let ca = Ca::new("bench CA").unwrap();
        let sandbox = sandbox::start("127.0.0.1:0".parse().unwrap(), &ca)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (addr, admin) = (common::free_port(), common::free_port());
        let files = demo::write(dir.path(), &ca, &sandbox.url(), addr, admin).unwrap();
        let mut text = std::fs::read_to_string(&files.config).unwrap();
        edit(&mut text);
        std::fs::write(&files.config, text).unwrap();
        let bin = std::env::var("PORTCULLIS_BIN").unwrap_or_else(|_| BIN.to_string());
        let child = tokio::process::Command::new(bin)
            .args(["serve", "--config"])
            .arg(&files.config)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let ready = common::poll(Duration::from_secs(60), || {
            std::net::TcpStream::connect(addr).ok()
        })
        .await;
        assert!(ready.is_some(), "the proxy did not start listening");
        Proxy {
            dir,
            files,
            ca,
            sandbox,
            addr,
            admin,
            child,
        }
    }

    /// The `portcullis` process: the child, or its descendant under a wrapper script (the
    /// first process named `portcullis`, else the first one without children).
    pub fn pid(&self) -> u32 {
        let mut pid = self.child.id().unwrap();
        for _ in 0..8 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "portcullis" {
                return pid;
            }
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
            // A wrapper (heaptrack) also starts helpers; the proxy is the one named portcullis.
            let kids: Vec<u32> = children
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect();
            match kids.iter().find(|k| {
                std::fs::read_to_string(format!("/proc/{k}/comm"))
                    .is_ok_and(|c| c.trim() == "portcullis")
            }) {
                Some(k) => return *k,
                None => match kids.first() {
                    Some(k) => pid = *k,
                    // No wrapper: the child is the proxy (a copy under another name).
                    None => return pid,
                },
            }
        }
        panic!("no portcullis process under the child");
    }

    /// The proxy's resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// SIGTERM so a wrapper (heaptrack) can write its data, then the sandbox.
    pub async fn stop(mut self) {
        let pid = self.pid();
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let _ = self.child.kill().await;
        self.sandbox.stop().await;
    }
}

/// `VmRSS` of `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Print and return the growth per item, KiB.
pub fn report(what: &str, n: usize, before: u64, after: u64) -> f64 {
    let per = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "{n} {what}: +{} MiB, {per:.1} KiB each; projected for 10 000: {:.0} MiB above rest",
        after.saturating_sub(before) / 1024,
        per * 10_000.0 / 1024.0
    );
    per
}

/// Hold everything for `PORTCULLIS_HOLD` seconds (default 0): time to look at the proxy from
/// outside (`/proc/PID/smaps`, a heap profiler's snapshot).
pub async fn hold(pid: u32) {
    let secs: u64 = std::env::var("PORTCULLIS_HOLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if secs > 0 {
        println!("holding for {secs} s; proxy pid {pid}");
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}
