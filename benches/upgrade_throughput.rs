//! Bytes through an upgraded session, and what they cost the proxy: one `cat` exec session
//! over WebSocket (v5.channel.k8s.io, as kubectl opens it) through the `portcullis` binary (its
//! own process, demo config) to the sandbox; `UPGRADE_MIB` (default 64) MiB of stdin in 16 KiB
//! frames, written while `cat`'s echo is read back. Per round (`UPGRADE_ROUNDS`, default 3), a
//! fresh session: MiB/s both ways through the pair, and the proxy's CPU time (user + system,
//! `/proc/<pid>/stat`) per MiB — the splice's cost, which moves less with the machine's load
//! than MiB/s (the sandbox's `cat`, in this process, is the other end).
//!
//! Compare two builds by alternating `PORTCULLIS_BIN` between runs:
//! `PORTCULLIS_BIN=/tmp/pc cargo bench --profile dev -p portcullis-cli --bench upgrade_throughput`.
// Bench code: a failed unwrap / expect / panic is a broken benchmark setup, not a proxy crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::Proxy;
use tokio::io::AsyncWriteExt;

const FRAME: usize = 16 * 1024;

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let mib = support::env_count("UPGRADE_MIB", 64);
    let rounds = support::env_count("UPGRADE_ROUNDS", 3);
    support::run_on_runtime(run(mib, rounds));
}

async fn run(mib: usize, rounds: usize) {
    let proxy = Proxy::start(|_| {}).await;
    let (addr, ca) = (proxy.addr, &proxy.ca);
    let admin = ca.client_cert("admin", &["demo:admins"]).unwrap();
    support::create_pod(&proxy, &admin).await;
    let pid = proxy.pid();
    let frames = mib * 1024 * 1024 / FRAME;
    let bytes = frames * FRAME;
    for round in 1..=rounds {
        let s = support::exec_cat(addr, ca, &admin, 0).await;
        let (mut rd, mut wr) = tokio::io::split(s);
        let cpu = support::cpu_time(pid);
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            let frame = support::stdin_frame(FRAME);
            for _ in 0..frames {
                wr.write_all(&frame).await.unwrap();
            }
            wr.flush().await.unwrap();
            wr
        });
        support::read_stdout(&mut rd, bytes).await;
        let took = start.elapsed();
        let _wr = writer.await.unwrap();
        let used = support::cpu_time(pid).saturating_sub(cpu);
        println!(
            "round {round}: {mib} MiB each way in {:.2} s, {:.1} MiB/s; proxy CPU {:.2} s, {:.1} ms per MiB",
            took.as_secs_f64(),
            mib as f64 / took.as_secs_f64(),
            used.as_secs_f64(),
            used.as_secs_f64() * 1000.0 / mib as f64
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.stop().await;
}
