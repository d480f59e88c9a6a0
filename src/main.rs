//! Thin entry point: parse the command line, hand over to `cli`.
#![forbid(unsafe_code)]

use clap::Parser;

mod cli;

// mimalloc instead of the system allocator: fewer instructions per request and no
// `malloc_consolidate` pauses under the proxy's many small, short-lived allocations
// (measured in README, "Performance"). `--no-default-features` builds with the system one.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    #[cfg(target_os = "linux")]
    no_transparent_huge_pages();
    let cli = cli::Cli::parse();
    // `serve` installs its logger once its config (`log.format`) is read.
    if !matches!(cli.command, cli::Command::Serve { .. }) {
        portcullis::telemetry::init_logging(portcullis::telemetry::LogFormat::Text);
    }
    // One worker asked for: tokio's current-thread runtime, everything async on one thread.
    // The multi-thread runtime with one worker also keeps the main thread for `block_on`'s
    // future and pays for cross-thread scheduling: about 10 % more CPU per request (README,
    // Performance; benches/PERFORMANCE-LOG.md, sixth session).
    let one = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let mut builder = if one {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(cli::run(cli));
    std::process::exit(code);
}

/// Transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`), unless
/// `MIMALLOC_ALLOW_THP` is set (then mimalloc's own setting decides, as its docs say).
///
/// Why: mimalloc asks for huge pages on the arenas it reserves (`madvise(MADV_HUGEPAGE)`), and
/// the kernel then backs a 2 MiB page where a 4 KiB one was touched. The proxy's memory is
/// many small allocations spread over many connections, so that held 41.8 KiB per idle HTTP/2
/// connection against 25.8 without, and 34 MiB at rest against 22 (README, Performance); the
/// CPU per request did not move beyond the bench's noise. A failure (a kernel without the
/// call) changes nothing but memory.
#[cfg(target_os = "linux")]
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}
