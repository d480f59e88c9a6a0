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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(cli::run(cli));
    std::process::exit(code);
}
