//! The `audit:` config section: the policy file, the signing key and the sinks, validated into
//! [`AuditSettings`] (the sinks themselves start in `stack::Runtime::build`, in `app.rs`).
//!
//! ```yaml
//! audit:
//!   policy_file: audit-policy.yaml        # audit.k8s.io/v1 Policy (required)
//!   signing_key_file: audit-signing.key   # Ed25519 PKCS#8: signed checkpoints in file sinks
//!   sinks:
//!     - name: file
//!       file: {path: audit.log, max_size_mb: 100, max_age_days: 366, max_backups: 100,
//!              checkpoint_every_events: 1000, checkpoint_interval: 10s,
//!              checkpoint_copy: /dev/stderr}    # optional: every checkpoint also goes here
//!       mode: blocking-strict             # default for file sinks
//!     - name: siem
//!       webhook: {kubeconfig: siem.kubeconfig, max_batch_size: 400, max_wait: 30s,
//!                 initial_backoff: 1s, max_retries: 4, request_timeout: 30s,
//!                 throttle_qps: 10, throttle_burst: 15, max_event_size: 102400,
//!                 max_batch_bytes: 10485760}
//!       mode: batch                       # default for webhooks; needs overflow:
//!       queue: 10000
//!       overflow: block                   # or drop (counted)
//!     - name: stdout
//!       stdout: {}
//!       mode: blocking                    # default for stdout
//!   session_recording:                    # exec / attach recordings (session/config.rs)
//!     directory: sessions
//! ```
//!
//! Rejects, with the key path: a missing or invalid policy file, an unreadable or non-Ed25519
//! key, a sink with zero or several kinds, duplicate sink names, `batch` without an explicit
//! `overflow`, bad durations, a missing webhook kubeconfig, a webhook `max_event_size` under 1024
//! (0 aside) or `max_batch_bytes` under 1024 or under `max_event_size`, `checkpoint_copy` without
//! a signing key.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;

use super::{
    DeliveryMode, FileSinkConfig, Overflow, Policy, SigningKey, SinkKind, SinkSpec, WebhookConfig,
};
use crate::problems::{Problem, Problems, Wording};

/// `audit:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub policy_file: PathBuf,
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    pub sinks: Vec<SinkConfig>,
    /// Where recorded exec / attach sessions go (`session/config.rs`).
    #[serde(default)]
    pub session_recording: Option<super::session::SessionRecordingConfig>,
}

/// `audit.sinks[]`: exactly one of `file`, `webhook`, `stdout`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub file: Option<FileConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookSinkConfig>,
    #[serde(default)]
    pub stdout: Option<Empty>,
    /// `blocking-strict | blocking | batch`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `batch`: queue length (default 10000).
    #[serde(default)]
    pub queue: Option<usize>,
    /// `batch`: `drop | block` (required with batch).
    #[serde(default)]
    pub overflow: Option<OverflowConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    BlockingStrict,
    Blocking,
    Batch,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowConfig {
    Drop,
    Block,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `audit.sinks[].file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub max_size_mb: Option<u64>,
    #[serde(default)]
    pub max_age_days: Option<u64>,
    #[serde(default)]
    pub max_backups: Option<usize>,
    #[serde(default)]
    pub checkpoint_every_events: Option<u64>,
    #[serde(default)]
    pub checkpoint_interval: Option<String>,
    #[serde(default)]
    pub checkpoint_copy: Option<PathBuf>,
}

/// `audit.sinks[].webhook`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    pub kubeconfig: PathBuf,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub max_batch_size: Option<usize>,
    #[serde(default)]
    pub max_wait: Option<String>,
    #[serde(default)]
    pub initial_backoff: Option<String>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    pub request_timeout: Option<String>,
    #[serde(default)]
    pub throttle_qps: Option<f64>,
    #[serde(default)]
    pub throttle_burst: Option<u32>,
    #[serde(default)]
    pub max_event_size: Option<usize>,
    #[serde(default)]
    pub max_batch_bytes: Option<usize>,
}

/// Validated audit settings; [`AuditSettings::sink_specs`] makes fresh specs to start.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub policy: Arc<Policy>,
    pub policy_file: PathBuf,
    sinks: Vec<ValidSink>,
    /// `session_recording` (None: no session is recorded).
    pub sessions: Option<Arc<super::session::SessionSettings>>,
}

#[derive(Debug, Clone)]
struct ValidSink {
    name: String,
    kind: ValidKind,
    mode: DeliveryMode,
}

#[derive(Debug, Clone)]
enum ValidKind {
    File(Box<FileSinkConfig>),
    Webhook(Box<WebhookConfig>),
    Stdout,
}

impl AuditSettings {
    /// Specs for `Auditor::start`.
    pub fn sink_specs(&self) -> Vec<SinkSpec> {
        self.sinks
            .iter()
            .map(|s| SinkSpec {
                name: s.name.clone(),
                kind: match &s.kind {
                    ValidKind::File(f) => SinkKind::File((**f).clone()),
                    ValidKind::Webhook(w) => SinkKind::Webhook((**w).clone()),
                    ValidKind::Stdout => SinkKind::Stdout,
                },
                mode: s.mode,
            })
            .collect()
    }

    /// Sink names and kinds, for the summary line.
    pub fn describe(&self) -> String {
        self.sinks
            .iter()
            .map(|s| {
                let kind = match s.kind {
                    ValidKind::File(_) => "file",
                    ValidKind::Webhook(_) => "webhook",
                    ValidKind::Stdout => "stdout",
                };
                format!("{}({kind}, {:?})", s.name, s.mode)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Validate `cfg` (paths relative to `base`).
pub fn build(cfg: &AuditConfig, base: &Path, prefix: &str) -> Result<AuditSettings, Vec<Problem>> {
    let mut p = Problems::new();
    let policy_file = base.join(&cfg.policy_file);
    let policy = match Policy::load(&policy_file) {
        Ok(p) => Some(Arc::new(p)),
        Err(e) => {
            p.err(
                format!("{prefix}.policy_file"),
                format!("{}: {e}", policy_file.display()),
                "give an audit.k8s.io/v1 Policy file (see config/audit-policy.yaml); `portcullis audit check-policy FILE` checks one",
            );
            None
        }
    };
    let key = cfg
        .signing_key_file
        .as_ref()
        .filter(|f| {
            p.readable(
                &format!("{prefix}.signing_key_file"),
                &base.join(f),
                "create one with `portcullis audit keygen --out FILE`",
            )
        })
        .and_then(|f| match SigningKey::load(&base.join(f)) {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                p.err(
                    format!("{prefix}.signing_key_file"),
                    e,
                    "create one with `portcullis audit keygen --out FILE`",
                );
                None
            }
        });
    if cfg.sinks.is_empty() {
        p.err(
            format!("{prefix}.sinks"),
            "no sinks",
            "add at least one sink: file, webhook or stdout",
        );
    }
    let mut sinks: Vec<ValidSink> = Vec::new();
    // Each valid sink's index in `audit.sinks` (an invalid one is left out of `sinks`).
    let mut at: Vec<usize> = Vec::new();
    for (i, s) in cfg.sinks.iter().enumerate() {
        let path = format!("{prefix}.sinks[{i}]");
        if let Some(sink) = sink(&mut p, s, &path, base, &key) {
            if sinks.iter().any(|x| x.name == sink.name) {
                p.err(
                    format!("{path}.name"),
                    format!("duplicate sink name {:?}", sink.name),
                    "give each sink its own name",
                );
            }
            sinks.push(sink);
            at.push(i);
        }
    }
    overlapping_files(&mut p, &sinks, &at, prefix);
    let sessions = cfg.session_recording.as_ref().map(|s| {
        Arc::new(super::session::config::build(
            &mut p,
            s,
            base,
            &format!("{prefix}.session_recording"),
        ))
    });
    p.finish(policy.map(|policy| AuditSettings {
        policy,
        policy_file,
        sinks,
        sessions,
    }))
}

/// File sinks must not share files: two sinks on one log would each resume and extend the same
/// chain (every event twice, with one link: a broken chain) and rotate it from under each
/// other; a checkpoint copy written into a log (or its `.checkpoints` sidecar) puts lines
/// there that `verify` refuses. Paths are compared by their components (relative to the
/// config's folder; `./a.log` is `a.log`), not resolved: one file reached through a link or
/// `..` under two names is not caught.
fn overlapping_files(p: &mut Problems, sinks: &[ValidSink], at: &[usize], prefix: &str) {
    let files: Vec<(usize, &FileSinkConfig)> = sinks
        .iter()
        .zip(at)
        .filter_map(|(s, &i)| match &s.kind {
            ValidKind::File(f) => Some((i, &**f)),
            _ => None,
        })
        .collect();
    let sidecar = |f: &FileSinkConfig| {
        let mut s = f.path.clone().into_os_string();
        s.push(".checkpoints");
        std::path::PathBuf::from(s)
    };
    for (n, &(i, f)) in files.iter().enumerate() {
        for &(j, g) in &files {
            if i != j && f.path == sidecar(g) {
                p.err(
                    format!("{prefix}.sinks[{i}].file.path"),
                    format!(
                        "{} is the checkpoint sidecar of audit.sinks[{j}]",
                        f.path.display()
                    ),
                    "give each file sink its own path",
                );
            }
        }
        for &(j, g) in &files[..n] {
            if f.path == g.path {
                p.err(
                    format!("{prefix}.sinks[{i}].file.path"),
                    format!("{} is also the log of audit.sinks[{j}]", f.path.display()),
                    "give each file sink its own path",
                );
            }
        }
        if let Some(copy) = &f.checkpoint_copy {
            for &(j, g) in &files {
                if *copy == g.path || *copy == sidecar(g) {
                    p.err(
                        format!("{prefix}.sinks[{i}].file.checkpoint_copy"),
                        format!(
                            "{} is a file of the log of audit.sinks[{j}]",
                            copy.display()
                        ),
                        "copy checkpoints to a file of their own (or /dev/stderr)",
                    );
                }
            }
        }
    }
}

/// One `audit.sinks[]` entry (at `path`).
fn sink(
    p: &mut Problems,
    s: &SinkConfig,
    path: &str,
    base: &Path,
    key: &Option<Arc<SigningKey>>,
) -> Option<ValidSink> {
    let kinds = [s.file.is_some(), s.webhook.is_some(), s.stdout.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        p.err(
            path,
            "a sink needs exactly one of file, webhook, stdout",
            "split it into several sinks",
        );
        return None;
    }
    let (kind, default_mode, default_name) = if let Some(f) = &s.file {
        let fc = file_sink(p, f, path, base, key);
        (ValidKind::File(Box::new(fc)), Mode::BlockingStrict, "file")
    } else if let Some(w) = &s.webhook {
        let wc = webhook_sink(p, w, path, base);
        (ValidKind::Webhook(Box::new(wc)), Mode::Batch, "webhook")
    } else {
        (ValidKind::Stdout, Mode::Blocking, "stdout")
    };
    let mode = match s.mode.unwrap_or(default_mode) {
        Mode::BlockingStrict => DeliveryMode::BlockingStrict,
        Mode::Blocking => DeliveryMode::Blocking,
        Mode::Batch => {
            let overflow = match s.overflow {
                Some(OverflowConfig::Drop) => Overflow::Drop,
                Some(OverflowConfig::Block) => Overflow::Block,
                None => {
                    p.err(
                        format!("{path}.overflow"),
                        "batch mode needs an explicit overflow",
                        "overflow: block (requests wait for room) or overflow: drop (events are discarded and counted)",
                    );
                    Overflow::Block
                }
            };
            let queue = s.queue.unwrap_or(10_000).max(1);
            if queue > MAX_QUEUE {
                // Past this the queue is not a bound any more (the byte budget is), and a
                // large enough number makes the channel's constructor panic at start.
                p.err(
                    format!("{path}.queue"),
                    format!("{queue} is more than {MAX_QUEUE} events"),
                    "use at most 1000000 (the default 10000 holds minutes of a busy cluster's events)",
                );
            }
            DeliveryMode::Batch {
                queue: queue.min(MAX_QUEUE),
                overflow,
            }
        }
    };
    let name = s.name.clone().unwrap_or_else(|| default_name.to_owned());
    Some(ValidSink { name, kind, mode })
}

/// `audit.sinks[].file`.
fn file_sink(
    p: &mut Problems,
    f: &FileConfig,
    path: &str,
    base: &Path,
    key: &Option<Arc<SigningKey>>,
) -> FileSinkConfig {
    let mut fc = FileSinkConfig::new(base.join(&f.path));
    if let Some(mb) = f.max_size_mb {
        fc.max_size_bytes = mb.saturating_mul(1024 * 1024);
    }
    if let Some(d) = f.max_age_days {
        fc.max_age_days = d;
    }
    if let Some(b) = f.max_backups {
        fc.max_backups = b;
    }
    if let Some(n) = f.checkpoint_every_events {
        fc.checkpoint_every_events = n;
    }
    fc.checkpoint_interval = p.duration(
        &format!("{path}.file.checkpoint_interval"),
        f.checkpoint_interval.as_deref(),
        fc.checkpoint_interval,
        Wording::Audit,
    );
    fc.signing_key = key.clone();
    if let Some(copy) = &f.checkpoint_copy {
        if fc.signing_key.is_none() {
            p.err(
                format!("{path}.file.checkpoint_copy"),
                "a checkpoint copy without audit.signing_key_file: nothing is signed",
                "set audit.signing_key_file, or remove checkpoint_copy",
            );
        }
        fc.checkpoint_copy = Some(base.join(copy));
    }
    fc
}

/// `audit.sinks[].webhook`.
fn webhook_sink(p: &mut Problems, w: &WebhookSinkConfig, path: &str, base: &Path) -> WebhookConfig {
    let kc = base.join(&w.kubeconfig);
    if !kc.is_file() {
        p.err(
            format!("{path}.webhook.kubeconfig"),
            format!("{} is not a file", kc.display()),
            "a kubeconfig naming the receiver's URL, CA and credentials",
        );
    }
    let mut wc = WebhookConfig::new(kc);
    wc.context = w.context.clone();
    // Resolved now, so a kubeconfig the sink would refuse at start (an exec plugin, plain http
    // to another host, no CA) is a config error with its key path — at `check-config` and at
    // a reload too.
    if wc.kubeconfig.is_file() {
        if let Err(e) = super::sink::webhook::check(&wc) {
            p.err(
                format!("{path}.webhook.kubeconfig"),
                format!("{}: {e:#}", wc.kubeconfig.display()),
                "a kubeconfig naming the receiver's https URL, its CA and credentials",
            );
        }
    }
    if let Some(n) = w.max_batch_size {
        if n > MAX_BATCH_SIZE {
            // The sender reserves room for a whole batch up front.
            p.err(
                format!("{path}.webhook.max_batch_size"),
                format!("{n} is more than {MAX_BATCH_SIZE} events"),
                "use at most 100000 (the API server's default is 400)",
            );
        }
        wc.max_batch_size = n.clamp(1, MAX_BATCH_SIZE);
    }
    if let Some(n) = w.max_retries {
        wc.max_retries = n;
    }
    if let Some(q) = w.throttle_qps {
        if !q.is_finite() || q < 0.0 {
            p.err(
                format!("{path}.webhook.throttle_qps"),
                format!("{q} is not a rate"),
                "batches per second, e.g. 10 (0 turns the throttle off)",
            );
        } else {
            wc.throttle_qps = q;
        }
    }
    if let Some(b) = w.throttle_burst {
        wc.throttle_burst = b.max(1);
    }
    if let Some(n) = w.max_event_size {
        if n > 0 && n < 1024 {
            p.err(
                format!("{path}.webhook.max_event_size"),
                format!("{n} bytes cannot hold an event's metadata"),
                "at least 1024 (the apiserver uses 102400), or 0 for no limit",
            );
        }
        wc.max_event_size = n;
    }
    if let Some(n) = w.max_batch_bytes {
        // No 0 (off): an uncapped batch of 400 large events can exceed any receiver's body
        // limit, and each 413 then costs a round of halved POSTs before anything is delivered.
        if n < 1024 {
            p.err(
                format!("{path}.webhook.max_batch_bytes"),
                format!("{n} bytes cannot hold a batch of events"),
                "at least 1024; the default is 10485760 (10 MiB, the apiserver's)",
            );
        } else if wc.max_event_size > 0 && n < wc.max_event_size {
            // As the apiserver refuses a truncate max batch size under its max event size.
            p.err(
                format!("{path}.webhook.max_batch_bytes"),
                format!("{n} is less than max_event_size ({})", wc.max_event_size),
                "at least max_event_size, so that an event of the size it allows fits a batch",
            );
        }
        wc.max_batch_bytes = n;
    }
    let mut duration = |key: &str, value: &Option<String>, default| {
        let at = format!("{path}.webhook.{key}");
        p.duration(&at, value.as_deref(), default, Wording::Audit)
    };
    wc.max_wait = duration("max_wait", &w.max_wait, wc.max_wait);
    wc.initial_backoff = duration("initial_backoff", &w.initial_backoff, wc.initial_backoff);
    wc.request_timeout = duration("request_timeout", &w.request_timeout, wc.request_timeout);
    for (key, d) in [
        ("request_timeout", wc.request_timeout),
        ("initial_backoff", wc.initial_backoff),
    ] {
        if d.is_zero() {
            // A zero timeout fails every POST; a zero backoff retries a failing receiver in a
            // tight loop.
            p.err(
                format!("{path}.webhook.{key}"),
                "0 is not usable here",
                "use a positive duration, e.g. 10s",
            );
        }
    }
    wc
}

/// Most events a `batch` sink's queue may be configured to hold.
const MAX_QUEUE: usize = 1_000_000;
/// Most events a webhook batch may be configured to hold.
const MAX_BATCH_SIZE: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(dir: &Path, yaml: &str) -> Vec<String> {
        let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        let cfg: AuditConfig = match serde_path_to_error::deserialize(v) {
            Ok(c) => c,
            Err(e) => return vec![e.path().to_string()],
        };
        match build(&cfg, dir, "audit") {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.path).collect(),
        }
    }

    #[test]
    fn every_problem_names_its_key_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.yaml"),
            include_str!("../../config/audit-policy.yaml"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Loud}]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("not-a-key"), "hello").unwrap();
        let got = problems(
            dir.path(),
            "policy_file: bad.yaml\nsigning_key_file: not-a-key\nsinks:\n  - {file: {path: a.log}, stdout: {}}\n  - {name: x, stdout: {}, mode: batch}\n  - {name: x, stdout: {}}\n  - {file: {path: b.log, checkpoint_interval: soon, checkpoint_copy: c.log}}\n  - {webhook: {kubeconfig: missing.kubeconfig, throttle_qps: -1, max_event_size: 10}, overflow: drop}\n  - {name: w5, webhook: {kubeconfig: missing.kubeconfig, max_batch_bytes: 10}, overflow: drop}\n  - {name: w6, webhook: {kubeconfig: missing.kubeconfig, max_event_size: 102400, max_batch_bytes: 4096}, overflow: drop}\n",
        );
        for want in [
            "audit.policy_file",
            "audit.signing_key_file",
            "audit.sinks[0]",
            "audit.sinks[1].overflow",
            "audit.sinks[2].name",
            "audit.sinks[3].file.checkpoint_interval",
            "audit.sinks[3].file.checkpoint_copy",
            "audit.sinks[4].webhook.kubeconfig",
            "audit.sinks[4].webhook.throttle_qps",
            "audit.sinks[4].webhook.max_event_size",
            "audit.sinks[5].webhook.max_batch_bytes",
            "audit.sinks[6].webhook.max_batch_bytes",
        ] {
            assert!(got.iter().any(|p| p == want), "{want} missing from {got:?}");
        }
        assert_eq!(
            problems(
                dir.path(),
                "policy_file: p.yaml\nsinks: [{file: {path: a.log}, mode: sometimes}]\n"
            ),
            vec!["sinks[0].mode"]
        );
        assert!(problems(
            dir.path(),
            "policy_file: p.yaml\nsinks: [{file: {path: a.log}}]\n"
        )
        .is_empty());
        // File sinks sharing a file: one log, or a checkpoint copy into a log or its sidecar.
        let (private, _, _) = crate::audit::chain::SigningKey::generate().unwrap();
        std::fs::write(dir.path().join("k.pem"), private).unwrap();
        let shared = |sinks: &str| {
            problems(
                dir.path(),
                &format!("policy_file: p.yaml\nsigning_key_file: k.pem\nsinks: [{sinks}]\n"),
            )
        };
        for second in ["a.log", "./a.log"] {
            assert_eq!(
                shared(&format!(
                    "{{stdout: {{}}}}, {{file: {{path: a.log}}}}, {{name: b, file: {{path: {second}}}}}"
                )),
                ["audit.sinks[2].file.path"],
                "{second}"
            );
        }
        for copy in ["a.log", "a.log.checkpoints", "b.log"] {
            assert_eq!(
                shared(&format!(
                    "{{file: {{path: a.log}}}}, {{name: b, file: {{path: b.log, checkpoint_copy: {copy}}}}}"
                )),
                ["audit.sinks[1].file.checkpoint_copy"],
                "{copy}"
            );
        }
        assert!(shared("{file: {path: a.log, checkpoint_copy: copies.log}}").is_empty());
        assert_eq!(
            shared("{file: {path: a.log}}, {name: b, file: {path: a.log.checkpoints}}"),
            ["audit.sinks[1].file.path"]
        );
        // A kubeconfig the webhook sink would refuse at start is a config error (check-config,
        // reload), not a startup failure without a key path.
        let kc = |server: &str, user: &str| {
            format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\"}}\nusers:\n- name: u\n  user: {user}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n")
        };
        let sink = "policy_file: p.yaml\nsinks: [{webhook: {kubeconfig: siem.kubeconfig}, mode: blocking}]\n";
        for (server, user, why) in [
            ("http://192.0.2.1/events", "{}", "plain http"),
            ("https://192.0.2.1/events", "{}", "certificate-authority"),
            (
                "http://127.0.0.1:9/events",
                "{exec: {command: get-token}}",
                "exec plugin",
            ),
        ] {
            std::fs::write(dir.path().join("siem.kubeconfig"), kc(server, user)).unwrap();
            let cfg: AuditConfig = serde_saphyr::from_str(sink).unwrap();
            let errs = build(&cfg, dir.path(), "audit").unwrap_err();
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!(errs[0].path, "audit.sinks[0].webhook.kubeconfig");
            assert!(errs[0].message.contains(why), "{why}: {errs:?}");
        }
        std::fs::write(
            dir.path().join("siem.kubeconfig"),
            kc("http://127.0.0.1:9/events", "{}"),
        )
        .unwrap();
        assert!(problems(dir.path(), sink).is_empty());
    }
}
