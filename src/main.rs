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
    let cli = cli::Cli::parse();
    // `serve` installs its logger once its config (`log.format`) is read.
    if !matches!(cli.command, cli::Command::Serve { .. }) {
        portcullis::telemetry::init_logging(portcullis::telemetry::LogFormat::Text);
    }
    // One worker asked for: tokio's current-thread runtime, everything async on one thread.
    // The multi-thread runtime with one worker also keeps the main thread for `block_on`'s
    // future and pays for cross-thread scheduling: about 10 % more CPU per request (README,
    // Performance, sixth session).
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
