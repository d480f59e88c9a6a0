//! `portcullis check-config --config FILE [--online]`: every problem with its key path and a
//! hint, exit 1; or a one-line summary, exit 0. With `--online` it also asks the upstream,
//! with the proxy's own credentials, whether the proxy may impersonate what it sends (the
//! startup self-test, `upstream::selftest`): one line per right, exit 1 when a required right
//! is missing or the upstream could not be asked.

use std::{path::Path, sync::Arc};

use portcullis::{
    config,
    upstream::{selftest, Credentials, Upstream},
};

pub async fn run(path: &Path, online: bool) -> i32 {
    let cfg = match config::load(path) {
        Ok(cfg) => {
            println!("{}: ok — {}", path.display(), cfg.summary());
            cfg
        }
        Err(problems) => {
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
