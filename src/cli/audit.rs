//! `portcullis audit`: read and check audit files offline, and make the checkpoint signing key.
//!
//! * `verify [--key K]... [--anchor A]... FILE...`: the hash chain, the signed checkpoints of
//!   each file's `.checkpoints` sidecar, and the copies in anchor files (`audit/verify.rs`);
//!   exit 0 with `OK: …`, or 1 naming the first broken `file:line`. Sidecars given as FILE
//!   (a glob like `audit*`) are skipped: they are read with their log file.
//! * `query FILE... [filters] [--output table|json] [--follow]`: streaming search
//!   (`audit/query.rs`); `--follow` keeps reading the last file as it grows and rotates.
//! * `keygen --out key.pem`: a new Ed25519 signing key (PKCS#8 PEM, mode 0600) and its public
//!   key next to it; refuses to overwrite an existing key.
//! * `check-policy FILE`: load an `audit.k8s.io/v1` Policy and report the first problem with
//!   its key path.
//! * `replay FILE [--speed N] [--no-wait] [--sha256 HEX] [--audit-log LOG]...`: play a
//!   recorded session (`replay.rs`).
//!
//! Rejected arguments (bad times, codes, unreadable files or keys) exit 1 with the reason.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use portcullis::audit::{
    chain::SigningKey,
    event::MicroTime,
    policy::Policy,
    query::{self, CodeMatch, Decision, Filter, Output},
    verify,
};

/// `portcullis audit …`.
// Parsed once per process; boxing the big variant would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and checkpoint signatures of audit files (oldest first).
    Verify {
        /// Public key (PEM/DER) or the signing key itself; repeat for rotated keys. Without
        /// it only the chain is checked.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Fail if more than this many events follow the last checkpoint.
        #[arg(long)]
        max_unsigned_tail: Option<u64>,
        /// The file sink's `checkpoint_interval`: the sink signs unsigned events this often,
        /// so (with keys) events stamped more than this (plus 5 s) after the last checkpoint
        /// fail — the checkpoints after it were removed (an edit of the newest events, the
        /// sidecar trimmed to match), or the writer could not write them. `0` skips the check.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        checkpoint_interval: Duration,
        /// A file holding copies of the checkpoints (the file sink's `checkpoint_copy`, e.g.
        /// the proxy's container log): the files must reach every checkpoint in it, so a cut
        /// of the newest events (sidecar included) fails. Repeatable.
        #[arg(long = "anchor")]
        anchors: Vec<PathBuf>,
        /// Audit files in chain order: `audit-*.log audit.log`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Search audit files (streaming): who did what, when, and what was refused.
    Query(QueryArgs),
    /// Write a new checkpoint signing key (Ed25519, PKCS#8 PEM, 0600) and its public key.
    Keygen {
        /// The private key file to create.
        #[arg(long)]
        out: PathBuf,
        /// Where the public key goes (default: next to it, `key.pem` → `key.pub.pem`, any
        /// other name + `.pub`).
        #[arg(long)]
        public_out: Option<PathBuf>,
    },
    /// Load an audit policy file and report the first problem with its key path.
    CheckPolicy { policy: PathBuf },
    /// Play a recorded exec / attach session back (asciicast v2), checking its SHA-256 first
    /// when asked.
    Replay(super::replay::ReplayArgs),
}

/// The filters and output of `audit query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// user.username (repeatable or comma-separated: any of them).
    #[arg(long, value_delimiter = ',')]
    pub user: Vec<String>,
    /// One of user.groups.
    #[arg(long, value_delimiter = ',')]
    pub group: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    pub verb: Vec<String>,
    /// `pods` (with its subresources) or `pods/log`.
    #[arg(long, value_delimiter = ',')]
    pub resource: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    pub namespace: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    pub name: Vec<String>,
    /// RFC 3339 time, or a duration before now (`12h`).
    #[arg(long)]
    pub since: Option<String>,
    /// RFC 3339 time, or a duration before now (exclusive).
    #[arg(long)]
    pub until: Option<String>,
    /// The authorization decision annotation: allow, or forbid (the API server's word; `deny`
    /// is the same).
    #[arg(long, value_parser = ["allow", "forbid", "deny"])]
    pub decision: Option<String>,
    /// Response code: `403` or a class like `4xx`.
    #[arg(long, value_delimiter = ',')]
    pub code: Vec<String>,
    /// Include RequestReceived and ResponseStarted events too.
    #[arg(long)]
    pub all_stages: bool,
    /// `json`: the matching events as they are in the file, one per line (for jq).
    #[arg(long, short, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
    /// After the files, keep following the last one as it grows and rotates (`tail -F`);
    /// stop with Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
}

/// Run an `audit` subcommand; the return value is the process exit code.
pub fn run(cmd: AuditCommand) -> i32 {
    match run_inner(cmd) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    }
}

fn run_inner(cmd: AuditCommand) -> Result<i32> {
    match cmd {
        AuditCommand::Verify {
            keys,
            max_unsigned_tail,
            checkpoint_interval,
            anchors,
            files,
        } => verify_cmd(
            &keys,
            max_unsigned_tail,
            checkpoint_interval,
            &anchors,
            &files,
        ),
        AuditCommand::Query(args) => query_cmd(args),
        AuditCommand::Replay(args) => super::replay::run(&args),
        AuditCommand::Keygen { out, public_out } => keygen_cmd(&out, public_out),
        AuditCommand::CheckPolicy { policy } => match Policy::load(&policy) {
            Ok(p) => {
                println!("{}: ok — {} rules", policy.display(), p.rules().len());
                Ok(0)
            }
            Err(e) => {
                println!("{e}");
                Ok(1)
            }
        },
    }
}

/// `audit query`: matching events to stdout, the tally to stderr.
fn query_cmd(args: QueryArgs) -> Result<i32> {
    let QueryArgs {
        files,
        user,
        group,
        verb,
        resource,
        namespace,
        name,
        since,
        until,
        decision,
        code,
        all_stages,
        output,
        follow,
    } = args;
    let now = MicroTime::now();
    let time = |s: Option<String>| -> Result<Option<MicroTime>> {
        s.map(|s| query::parse_time_arg(&s, now).map_err(anyhow::Error::msg))
            .transpose()
    };
    let filter = Filter {
        users: user,
        groups: group,
        verbs: verb,
        resources: resource,
        namespaces: namespace,
        names: name,
        since: time(since).context("--since")?,
        until: time(until).context("--until")?,
        decision: decision.map(|d| {
            if d == "allow" {
                Decision::Allow
            } else {
                Decision::Deny
            }
        }),
        codes: code
            .iter()
            .map(|c| c.parse::<CodeMatch>().map_err(anyhow::Error::msg))
            .collect::<Result<_>>()
            .context("--code")?,
        all_stages,
    };
    let output = if output == "json" {
        Output::Json
    } else {
        Output::Table
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if follow {
        let (last, before) = files.split_last().context("no file to follow")?;
        query::run(before, &filter, output, &mut out, &mut std::io::stderr())?;
        let poll = std::time::Duration::from_millis(250);
        query::follow(
            last,
            &filter,
            output,
            &mut out,
            &mut std::io::stderr(),
            poll,
            &|| false,
        )?;
        return Ok(0);
    }
    let stats = query::run(&files, &filter, output, &mut out, &mut std::io::stderr())?;
    out.flush()?;
    drop(out);
    if output == Output::Table {
        eprintln!(
            "{} of {} events matched{}",
            stats.matched,
            stats.scanned,
            if stats.skipped > 0 {
                format!(" ({} lines skipped)", stats.skipped)
            } else {
                String::new()
            }
        );
    }
    Ok(0)
}

/// `audit keygen`: a new checkpoint signing key and its public key.
fn keygen_cmd(out: &std::path::Path, public_out: Option<PathBuf>) -> Result<i32> {
    let public = public_out.unwrap_or_else(|| public_path(out));
    let (private_pem, public_pem, key) = SigningKey::generate().map_err(anyhow::Error::msg)?;
    super::write_new_private(out, private_pem.as_bytes())?;
    std::fs::write(&public, public_pem)
        .with_context(|| format!("cannot write {}", public.display()))?;
    println!(
        "private key: {} (mode 0600; the file sink's signing key)",
        out.display()
    );
    println!(
        "public key:  {} (keyId {}; for `portcullis audit verify --key`)",
        public.display(),
        key.key_id()
    );
    Ok(0)
}

fn verify_cmd(
    keys: &[PathBuf],
    max_tail: Option<u64>,
    interval: Duration,
    anchors: &[PathBuf],
    files: &[PathBuf],
) -> Result<i32> {
    let keys = verify::load_keys(keys).map_err(anyhow::Error::msg)?;
    let (sidecars, files): (Vec<PathBuf>, Vec<PathBuf>) = files.iter().cloned().partition(|f| {
        f.to_string_lossy()
            .ends_with(portcullis::audit::chain::SIDECAR_SUFFIX)
    });
    if !sidecars.is_empty() {
        eprintln!(
            "note: {} checkpoint sidecar(s) among the files skipped: each is read with its log file",
            sidecars.len()
        );
    }
    if files.is_empty() {
        bail!("no audit log files given (only checkpoint sidecars)");
    }
    let report = verify::verify_with_anchors(&files, &keys, anchors)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(f) = &report.failure {
        eprintln!("{f}");
        eprintln!(
            "FAILED after {} verified events and {} checkpoints",
            report.events, report.checkpoints
        );
        return Ok(1);
    }
    println!(
        "OK: {} events, {} checkpoints, last link {}",
        report.events,
        report.checkpoints,
        report
            .last_link
            .map_or_else(|| "-".to_string(), |l| l.to_hex())
    );
    if report.starts_after > 0 {
        println!(
            "chain starts after event #{} (earlier events are not in these files)",
            report.starts_after
        );
    }
    if let Some((seq, time)) = &report.last_checkpoint {
        println!("last checkpoint: event #{seq}, signed at {time}");
    }
    if !anchors.is_empty() {
        println!(
            "anchors: {} checkpoints on the chain, {} before the oldest file given",
            report.anchors_matched, report.anchors_before
        );
    }
    if report.unsigned_tail > 0 {
        println!(
            "unsigned tail: {} events (after the last checkpoint; not yet covered by a signature)",
            report.unsigned_tail
        );
    }
    if !report.signatures_checked {
        eprintln!(
            "WARNING: no --key given: checkpoint signatures were NOT checked; the chain alone does not prove the file was not rewritten"
        );
    }
    for (first, last) in &report.adopted {
        println!(
            "adopted at a restart: events #{first}–#{last} (signed only when the proxy started again, not when written)"
        );
    }
    if let Some(why) = tail_outlives_checkpoints(&report, interval) {
        eprintln!("{why}");
        return Ok(1);
    }
    if let Some(max) = max_tail {
        if report.unsigned_tail > max {
            eprintln!(
                "unsigned tail of {} events exceeds --max-unsigned-tail {max}",
                report.unsigned_tail
            );
            return Ok(1);
        }
        // Events adopted at a restart were unsigned as long as the proxy was down: the same
        // budget applies.
        if let Some((first, last)) = report.adopted.iter().find(|(f, l)| l - f + 1 > max) {
            eprintln!(
                "events #{first}–#{last} adopted at a restart exceed --max-unsigned-tail {max}"
            );
            return Ok(1);
        }
    }
    Ok(0)
}

/// Why the unsigned tail, or a range adopted at a restart, cannot be what the sink left, if so:
/// with signatures checked, its events span more than `interval` (+
/// [`verify::CHECKPOINT_SLACK`]) — from the first `stageTimestamp` to the last — while the
/// sink signs events once the oldest unsigned one is `interval` old (a crash or a kill leaves a
/// tail within that, which a restart adopts, and signs at once; a restart's first events are
/// signed within an interval too). A longer run means checkpoints were removed — the newest events edited (links recomputed, which takes no
/// key) and the sidecar cut back to match, perhaps before a restart adopted them — unless the
/// writer could not write them (its log says so). An event of such a run without a
/// `stageTimestamp` that parses fails too: a rewrite could drop it to escape this check. An
/// attacker who also restamps the events within an interval is not caught here: only
/// `--anchor` is.
fn tail_outlives_checkpoints(report: &verify::Report, interval: Duration) -> Option<String> {
    if interval.is_zero() || !report.signatures_checked {
        return None;
    }
    let allowed =
        i64::try_from((interval + verify::CHECKPOINT_SLACK).as_micros()).unwrap_or(i64::MAX);
    let every = humantime::format_duration(interval);
    let judge = |what: String, stamps: &verify::Stamps| -> Option<String> {
        if stamps.untimed > 0 {
            return Some(format!(
                "FAILED: {} of {what} have no stageTimestamp that parses, so their age cannot be judged against --checkpoint-interval: a rewrite of the newest events can drop it; --anchor with the sink's checkpoint_copy proves whether they were",
                stamps.untimed
            ));
        }
        let span = stamps.span_micros();
        let (from, to) = (stamps.first?, stamps.last?);
        (span > allowed).then(|| {
            format!(
                "FAILED: {what} run from {} to {}, {} s, but the sink signs unsigned events within --checkpoint-interval {every}: the checkpoints after them were removed (the events rewritten and the sidecar cut back to match), or the writer could not write them (see its log). Pass the sink's checkpoint_interval if it is not {every}; --anchor with its checkpoint_copy proves which.",
                MicroTime::from_unix_micros(from),
                MicroTime::from_unix_micros(to),
                span / 1_000_000,
            )
        })
    };
    for ((first, last), stamps) in report.adopted.iter().zip(&report.adopted_stamps) {
        if let Some(why) = stamps.as_ref().and_then(|st| {
            judge(
                format!("the events #{first}–#{last} adopted at a restart"),
                st,
            )
        }) {
            return Some(why);
        }
    }
    if report.unsigned_tail == 0 {
        return None;
    }
    report.last_checkpoint.as_ref()?;
    judge(
        format!(
            "the {} unsigned events after the last checkpoint",
            report.unsigned_tail
        ),
        &report.tail_stamps,
    )
}

/// `key.pem` → `key.pub.pem`; `key` → `key.pub`.
fn public_path(private: &Path) -> PathBuf {
    let s = private.to_string_lossy();
    match s.strip_suffix(".pem") {
        Some(stem) => PathBuf::from(format!("{stem}.pub.pem")),
        None => PathBuf::from(format!("{s}.pub")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_refuses_to_overwrite_and_check_policy() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("audit-key.pem");
        let keygen = || {
            run(AuditCommand::Keygen {
                out: out.clone(),
                public_out: None,
            })
        };
        assert_eq!(keygen(), 0);
        assert_eq!(keygen(), 1, "an existing key is never overwritten");
        let public = dir.path().join("audit-key.pub.pem");
        assert_eq!(
            portcullis::audit::VerifyingKey::load(&public).unwrap(),
            SigningKey::load(&out).unwrap().verifying_key()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/audit-policy.yaml");
        assert_eq!(run(AuditCommand::CheckPolicy { policy }), 0);
        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n",
        )
        .unwrap();
        assert_eq!(run(AuditCommand::CheckPolicy { policy: bad }), 1);
        assert_eq!(public_path(Path::new("k")), PathBuf::from("k.pub"));
    }
}
