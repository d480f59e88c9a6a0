//! `portcullis check-config --config FILE`: every problem with its key path and a hint, exit 1;
//! or a one-line summary, exit 0. When several files are missing because the folder that should
//! hold them does not exist (the annotated example before `demo --write-only`), one first line
//! says so and what to run, instead of leaving the reader to infer it from N separate problems.

use std::path::{Path, PathBuf};

use portcullis::{config, problems::Problem};

pub fn run(path: &Path) -> i32 {
    match config::load(path) {
        Ok(cfg) => {
            println!("{}: ok — {}", path.display(), cfg.summary());
            0
        }
        Err(problems) => {
            if let Some(line) = missing_folder_summary(&problems) {
                println!("{}: {line}", path.display());
            }
            for p in &problems {
                println!("{}: {p}", path.display());
            }
            println!("{}: {} problem(s)", path.display(), problems.len());
            1
        }
    }
}

/// "N of the problems are files in FOLDER, which does not exist" (+ what creates it, for the
/// demo folder), when at least two unreadable files share a missing folder.
fn missing_folder_summary(problems: &[Problem]) -> Option<String> {
    let mut missing: Vec<(PathBuf, usize)> = Vec::new();
    for p in problems {
        // `Problems::file`/`certs` word an unreadable file as "cannot read PATH: error".
        let Some(rest) = p.message.strip_prefix("cannot read ") else {
            continue;
        };
        let file = Path::new(rest.rsplit_once(": ").map_or(rest, |(f, _)| f));
        let Some(dir) = file.parent() else { continue };
        if dir.as_os_str().is_empty() || dir.exists() {
            continue;
        }
        match missing.iter_mut().find(|(d, _)| d == dir) {
            Some((_, n)) => *n += 1,
            None => missing.push((dir.to_path_buf(), 1)),
        }
    }
    let (dir, n) = missing.into_iter().max_by_key(|(_, n)| *n)?;
    if n < 2 {
        return None;
    }
    let what = if dir.file_name().is_some_and(|f| f == "portcullis-demo") {
        " — it is written by `cargo run --release -- demo --write-only` (run from the repository root first)"
    } else {
        " — create it, or fix the paths (relative paths resolve against the config file's folder)"
    };
    Some(format!(
        "{n} of the problems below are files in {}, which does not exist{what}",
        dir.display()
    ))
}
