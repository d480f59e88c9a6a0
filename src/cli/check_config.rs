//! `portcullis check-config --config FILE [--online]`: every problem with its key path and a
//! hint, exit 1; or a one-line summary, exit 0. When several files are missing because the
//! folder that should hold them does not exist (the annotated example before
//! `demo --write-only`), one first line says so and what to run. With `--online` it also asks
//! the upstream, with the proxy's own credentials, whether the proxy may impersonate what it
//! sends (the startup self-test, `upstream::selftest`): one line per right, exit 1 when a
//! required right is missing or the upstream could not be asked.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use portcullis::{
    config,
    problems::Problem,
    upstream::{selftest, Credentials, Upstream},
};

pub async fn run(path: &Path, online: bool) -> i32 {
    let cfg = match config::load(path) {
        Ok(cfg) => {
            println!("{}: ok — {}", path.display(), cfg.summary());
            cfg
        }
        Err(problems) => {
            if let Some(line) = missing_folder_summary(&problems) {
                println!("{}: {line}", path.display());
            }
            for p in &problems {
                println!("{}: {p}", path.display());
            }
            println!("{}: {} problem(s)", path.display(), problems.len());
            return 1;
        }
    };
    if !online {
        return 0;
    }
    let upstream = Credentials::load(&cfg.upstream.token)
        .and_then(|creds| Upstream::new(&cfg.upstream, creds));
    let upstream = match upstream {
        Ok(u) => Arc::new(u),
        Err(e) => {
            println!("{}: upstream: {e:#}", path.display());
            return 1;
        }
    };
    let test = selftest::SelfTest::once(upstream, selftest::rights_for(&cfg));
    let answers = test.run().await;
    let (lines, ok) = selftest::report(test.rights(), &answers);
    for line in lines {
        println!("{}: upstream: {line}", path.display());
    }
    if ok {
        println!(
            "{}: upstream: portcullis may impersonate everything it sends",
            path.display()
        );
        0
    } else {
        println!(
            "{}: upstream: a required impersonation right is missing or could not be checked",
            path.display()
        );
        1
    }
}

/// "N of the problems are files in FOLDER, which does not exist" (+ what creates it, for the
/// demo folder), when at least two unreadable files share a missing folder.
fn missing_folder_summary(problems: &[Problem]) -> Option<String> {
    let mut missing: Vec<(PathBuf, usize)> = Vec::new();
    for p in problems {
        let Some(file) = &p.unreadable else { continue };
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
