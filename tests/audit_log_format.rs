//! Issue 16, item 1, through the proxy: every line of the audit log the proxy writes parses as
//! an `audit.k8s.io/v1` Event with the Go type's fields and nothing else (checkpoints live in
//! the `.checkpoints` sidecar), and `audit verify` holds the log to its sidecar and to the
//! checkpoint copy: a cut of the newest events, sidecar included, fails against the copy.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{collections::BTreeMap, path::Path, process::Command};

use common::Env;
use serde::Deserialize;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

// The Go types of k8s.io/apiserver/pkg/apis/audit/v1 (and what they embed), field for field;
// `deny_unknown_fields` everywhere, so any other key on any line fails the parse.

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GoEvent {
    kind: String,
    api_version: String,
    level: String,
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    #[serde(rename = "requestURI")]
    request_uri: String,
    verb: String,
    user: GoUserInfo,
    impersonated_user: Option<GoUserInfo>,
    authentication_metadata: Option<Value>,
    #[serde(rename = "sourceIPs")]
    source_ips: Option<Vec<String>>,
    user_agent: Option<String>,
    object_ref: Option<GoObjectReference>,
    response_status: Option<GoStatus>,
    // runtime.Unknown: any JSON object.
    request_object: Option<serde_json::Map<String, Value>>,
    response_object: Option<serde_json::Map<String, Value>>,
    request_received_timestamp: String,
    stage_timestamp: String,
    annotations: Option<BTreeMap<String, String>>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoUserInfo {
    username: Option<String>,
    uid: Option<String>,
    groups: Option<Vec<String>>,
    extra: Option<BTreeMap<String, Vec<String>>>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GoObjectReference {
    resource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    api_group: Option<String>,
    api_version: Option<String>,
    resource_version: Option<String>,
    subresource: Option<String>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GoStatus {
    kind: Option<String>,
    api_version: Option<String>,
    metadata: Option<GoListMeta>,
    status: Option<String>,
    message: Option<String>,
    reason: Option<String>,
    details: Option<GoStatusDetails>,
    code: Option<i32>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GoListMeta {
    self_link: Option<String>,
    resource_version: Option<String>,
    #[serde(rename = "continue")]
    continue_: Option<String>,
    remaining_item_count: Option<i64>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GoStatusDetails {
    name: Option<String>,
    group: Option<String>,
    kind: Option<String>,
    uid: Option<String>,
    causes: Option<Vec<GoStatusCause>>,
    retry_after_seconds: Option<i32>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoStatusCause {
    reason: Option<String>,
    message: Option<String>,
    field: Option<String>,
}

fn verify(dir: &Path, log: &Path, anchor: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["audit", "verify", "--key"])
        .arg(dir.join("audit-signing.pub"));
    if let Some(a) = anchor {
        cmd.arg("--anchor").arg(a);
    }
    let out = cmd.arg(log).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_is_an_audit_event_and_a_cut_tail_fails_against_the_copy() {
    common::require_kubectl();
    // The log in a folder of the test's own, read after the proxy stopped (its final
    // checkpoint written) and the environment's folder is gone.
    let own = tempfile::tempdir().unwrap();
    let dir = own.path().to_path_buf();
    let env = Env::start_with(|c| {
        *c = c.replace(
            "file: {path: audit.log,",
            &format!("file: {{path: {},", dir.join("audit.log").display()),
        );
        *c = c.replace(
            "checkpoint_every_events: 100, checkpoint_interval: 10s}",
            &format!(
                "checkpoint_every_events: 3, checkpoint_interval: 10s, checkpoint_copy: {}}}",
                dir.join("anchor.log").display()
            ),
        );
    })
    .await;
    std::fs::copy(
        env.files.dir.join("audit-signing.pub"),
        dir.join("audit-signing.pub"),
    )
    .unwrap();
    let home = env.dir.path();
    let team_a = &env.files.team_a_kubeconfig;
    // Allowed reads and writes, a refused one, a failed lookup: many shapes of events.
    for (kc, args, ok) in [
        (
            team_a,
            &["create", "configmap", "fmt", "--from-literal=a=b"][..],
            true,
        ),
        (team_a, &["create", "serviceaccount", "bot"][..], true),
        (team_a, &["get", "configmap", "fmt", "-o", "yaml"][..], true),
        (team_a, &["get", "pods", "-n", "team-b"][..], false),
        (team_a, &["get", "configmap", "nothing"][..], false),
        (team_a, &["delete", "configmap", "fmt"][..], true),
        (
            &env.files.admin_kubeconfig,
            &["run", "web-1", "--image=nginx", "--restart=Never"][..],
            true,
        ),
        (
            &env.files.admin_kubeconfig,
            &["get", "pods", "-A"][..],
            true,
        ),
        (
            &env.files.admin_kubeconfig,
            &["exec", "web-1", "--", "echo", "a+b  c&d"][..],
            true,
        ),
    ] {
        let out = common::kubectl(kc, home, args).await;
        assert_eq!(
            out.status.success(),
            ok,
            "{args:?}: {}",
            common::stderr(&out)
        );
    }
    env.stop().await;

    let log = dir.join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut codes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let e: GoEvent = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("audit.log:{}: not an audit Event: {err}\n{line}", i + 1));
        assert_eq!(
            (e.kind.as_str(), e.api_version.as_str()),
            ("Event", "audit.k8s.io/v1")
        );
        assert!(e
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("portcullis.io/chain")));
        codes.extend(e.response_status.and_then(|s| s.code));
    }
    let events = text.lines().count();
    // Every exec names its argv, decoded, in an annotation.
    let exec: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["objectRef"]["subresource"] == "exec")
        .collect();
    assert!(!exec.is_empty());
    for e in &exec {
        assert_eq!(
            e["annotations"]["portcullis.io/exec-command"], r#"["echo","a+b  c&d"]"#,
            "{e}"
        );
    }
    assert!(events >= 7, "{events} events");
    for want in [200, 201, 403, 404] {
        assert!(codes.contains(&want), "no {want} among {codes:?}");
    }

    // The checkpoints: in the sidecar and in the copy, and the whole log verifies.
    let sidecar = dir.join("audit.log.checkpoints");
    let anchor = dir.join("anchor.log");
    let side_lines: Vec<String> = std::fs::read_to_string(&sidecar)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(side_lines.len() >= 3, "{side_lines:?}");
    assert_eq!(
        std::fs::read_to_string(&anchor).unwrap(),
        side_lines.join("\n") + "\n"
    );
    let (ok, out) = verify(&dir, &log, Some(&anchor));
    assert!(ok, "{out}");
    assert!(out.contains(&format!("OK: {events} events")), "{out}");
    assert!(
        out.contains(&format!("last checkpoint: event #{events}, signed at 20")),
        "{out}"
    );

    // Cut the newest 4 events, and every checkpoint signing them from the sidecar.
    let kept = events - 4;
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&log, lines[..kept].join("\n") + "\n").unwrap();
    let side_kept: Vec<&String> = side_lines
        .iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["seq"].as_u64().unwrap() <= kept as u64
        })
        .collect();
    assert!(side_kept.len() < side_lines.len());
    let side_text: String = side_kept.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&sidecar, side_text).unwrap();
    // Consistent on their own…
    let (ok, out) = verify(&dir, &log, None);
    assert!(ok, "{out}");
    // …but not with the checkpoints copied elsewhere.
    let (ok, out) = verify(&dir, &log, Some(&anchor));
    assert!(!ok, "{out}");
    assert!(out.contains("truncated: this anchor"), "{out}");
    assert!(
        out.contains(&format!("but the files end at event #{kept}")),
        "{out}"
    );
}
