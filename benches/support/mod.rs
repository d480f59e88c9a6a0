//! What the memory and stream benches share: the `portcullis` binary started as its own process
//! in front of an in-process sandbox (so its RSS is the proxy's alone), and reading that RSS.
//!
//! `PORTCULLIS_BIN` names another binary to run (a copy of a release build while other builds
//! share the target directory, or a wrapper script such as `exec heaptrack -o FILE BIN "$@"`:
//! the RSS is then read from the `portcullis` process under the wrapper).
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use portcullis_sandbox::{self as sandbox, demo, pki::Ca, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// An exec session running `cat` in pod `default/web` over WebSocket (v5.channel.k8s.io), as
/// kubectl opens it; returned once the proxy has answered 101.
pub async fn exec_cat(
    addr: std::net::SocketAddr,
    ca: &portcullis_sandbox::pki::Ca,
    cert: &portcullis_sandbox::pki::Issued,
    echo: usize,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut s = common::tls_connect(addr, ca, Some(cert), &[b"http/1.1"]).await;
    s.write_all(
        b"GET /api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true HTTP/1.1\r\n\
          Host: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
    )
    .await
    .unwrap();
    // What rustls could not write at once stays in its buffer until flushed.
    s.flush().await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => {}
            other => panic!("exec connection ended before its answer: {other:?} after {head:?}"),
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "exec refused: {head}");
    if echo > 0 {
        echo_once(&mut s, echo).await;
    }
    s
}

/// A masked WebSocket binary frame carrying `n` bytes of stdin (channel 0), all `b'e'`.
pub fn stdin_frame(n: usize) -> Vec<u8> {
    let payload_len = n + 1;
    let mut frame = vec![0x82u8];
    match payload_len {
        0..=125 => frame.push(0x80 | payload_len as u8),
        126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
    // A zero mask (the payload goes as it is), then the stdin channel's number, 0.
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.push(0);
    frame.extend(std::iter::repeat_n(b'e', n));
    frame
}

/// Read server frames until `n` bytes have come on stdout (channel 1).
pub async fn read_stdout<R: tokio::io::AsyncRead + Unpin>(s: &mut R, n: usize) {
    let mut echoed = 0;
    let mut body = Vec::new();
    while echoed < n {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await.unwrap();
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.unwrap();
                u64::from_be_bytes(l) as usize
            }
            l => l as usize,
        };
        body.resize(len, 0);
        s.read_exact(&mut body).await.unwrap();
        if head[0] & 0x0f == 0x2 && body.first() == Some(&1) {
            echoed += len - 1;
        }
    }
}

/// Send `n` bytes of stdin in one frame, then read `cat`'s echo of them.
async fn echo_once(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, n: usize) {
    s.write_all(&stdin_frame(n)).await.unwrap();
    s.flush().await.unwrap();
    read_stdout(s, n).await;
}

/// The CPU time `pid` has used so far (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) : utime and stime are the 12th and
    // 13th of them (14th and 15th of the line).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // CLK_TCK is 100 on Linux (the kernel's USER_HZ, fixed for /proc).
    Duration::from_millis(ticks * 10)
}

/// A count from the environment variable `name`, else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The pod the stream benches exec into and read logs of (`default/web`).
const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"c","image":"nginx"}]}}"#;

/// Create pod `default/web` through the proxy as `admin`.
pub async fn create_pod(proxy: &Proxy, admin: &portcullis_sandbox::pki::Issued) {
    let created = common::https_request(
        proxy.addr,
        &proxy.ca,
        http::Request::post("https://localhost/api/v1/namespaces/default/pods")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                POD.as_bytes(),
            )))
            .unwrap(),
        Some(admin),
        true,
    )
    .await;
    assert_eq!(created.status(), 201, "{:?}", created.body());
}

/// Run `f` on the runtime the stream benches drive their clients with (two workers).
pub fn run_on_runtime<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
