//! `portcullis audit replay FILE`: play a recorded exec / attach session (asciicast v2, as
//! `audit::session` writes it) back to the terminal.
//!
//! Output events (`"o"`: the session's stdout and stderr) go to stdout as their bytes, with
//! the original pauses divided by `--speed`; `--no-wait` prints them at once (a dump: the
//! session's output bytes and nothing else). Markers (`"m"`: exit status, dropped frames,
//! truncation) go to stderr as `[portcullis: …]` lines; input (`"i"`) is not printed — a
//! terminal shows what it echoed, which is output. Resizes are ignored.
//!
//! `--sha256 HEX` checks the file against a digest, `--audit-log FILE` against the
//! `portcullis.io/session-recording` annotation naming this file in an audit log; either
//! mismatch (or no annotation naming it) exits 1 before anything is played. A file that is not
//! asciicast v2 exits 1 naming the line.

use std::{
    io::{BufRead, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use portcullis::audit::session::{sha256_hex, ANNOTATION};

/// `audit replay` arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The session file (`<Audit-ID>.cast` in `audit.session_recording.directory`).
    pub file: PathBuf,
    /// Play this many times faster (0.5: slower).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Print the output at once, without the pauses.
    #[arg(long)]
    pub no_wait: bool,
    /// Refuse to play unless the file's SHA-256 is this (hex).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Refuse to play unless an audit log's `portcullis.io/session-recording` annotation names
    /// this file with its SHA-256. Repeatable (rotated files).
    #[arg(long = "audit-log")]
    pub audit_logs: Vec<PathBuf>,
}

/// Run `audit replay`; the exit code.
pub fn run(args: &ReplayArgs) -> Result<i32> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number, got {}", args.speed);
    }
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let digest = sha256_hex(&bytes);
    if let Some(want) = &args.sha256 {
        if !want.trim().eq_ignore_ascii_case(&digest) {
            eprintln!(
                "error: {}: SHA-256 is {digest}, not {}: the file is not the one recorded",
                args.file.display(),
                want.trim()
            );
            return Ok(1);
        }
    }
    if !args.audit_logs.is_empty() {
        let name = args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match recorded_digest(&args.audit_logs, &name)? {
            None => {
                eprintln!("error: no {ANNOTATION} annotation names {name} in the audit log");
                return Ok(1);
            }
            Some(want) if want != digest => {
                eprintln!("error: {name}: SHA-256 is {digest}, the audit event says {want}: the file is not the one recorded");
                return Ok(1);
            }
            Some(_) => {}
        }
    }
    play(
        &bytes,
        &args.file,
        if args.no_wait { None } else { Some(args.speed) },
    )?;
    Ok(0)
}

/// The SHA-256 the audit log's annotation gives for session file `name`.
fn recorded_digest(logs: &[PathBuf], name: &str) -> Result<Option<String>> {
    for log in logs {
        let f =
            std::fs::File::open(log).with_context(|| format!("cannot read {}", log.display()))?;
        for line in std::io::BufReader::new(f).lines() {
            let line = line.with_context(|| format!("reading {}", log.display()))?;
            if !line.contains(ANNOTATION) {
                continue;
            }
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let Some(value) = event["annotations"][ANNOTATION].as_str() else {
                continue;
            };
            let Ok(rec) = serde_json::from_str::<Value>(value) else {
                continue;
            };
            if rec["file"] == name {
                if let Some(sha) = rec["sha256"].as_str() {
                    return Ok(Some(sha.to_owned()));
                }
            }
        }
    }
    Ok(None)
}

/// Play the events; `speed` None: no pauses.
fn play(bytes: &[u8], file: &Path, speed: Option<f64>) -> Result<()> {
    let text = std::str::from_utf8(bytes)
        .with_context(|| format!("{}: not UTF-8, not an asciicast file", file.display()))?;
    let mut lines = text.lines().enumerate();
    let header: Value = match lines.next() {
        Some((_, l)) => serde_json::from_str(l).ok().unwrap_or(Value::Null),
        None => Value::Null,
    };
    if header["version"] != 2 {
        bail!("{}:1: not an asciicast v2 header", file.display());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut last = 0.0f64;
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let event: (f64, String, String) = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an asciicast event", file.display(), i + 1))?;
        let (t, code, data) = event;
        if let Some(speed) = speed {
            let wait = (t - last) / speed;
            if wait.is_finite() && wait > 0.0 {
                out.flush()?;
                std::thread::sleep(Duration::from_secs_f64(wait.min(3600.0)));
            }
        }
        last = t;
        match code.as_str() {
            "o" => out.write_all(data.as_bytes())?,
            "m" => {
                out.flush()?;
                eprintln!("[{data}]");
            }
            _ => {}
        }
    }
    out.flush()?;
    Ok(())
}
