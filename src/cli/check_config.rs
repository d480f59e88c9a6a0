//! `portcullis check-config --config FILE`: every problem with its key path and a hint, exit 1;
//! or a one-line summary, exit 0.

use std::path::Path;

use portcullis::config;

pub fn run(path: &Path) -> i32 {
    match config::load(path) {
        Ok(cfg) => {
            println!("{}: ok — {}", path.display(), cfg.summary());
            0
        }
        Err(problems) => {
            for p in &problems {
                println!("{}: {p}", path.display());
            }
            println!("{}: {} problem(s)", path.display(), problems.len());
            1
        }
    }
}
