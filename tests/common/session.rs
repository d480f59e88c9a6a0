//! Helpers of the session-recording tests (`session_recording*.rs`): the demo config with a
//! recorded grant, kubectl / Python exec sessions, and readers of the audit log and the
//! asciicast files.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::Env;

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
pub const ANNOTATION: &str = "portcullis.io/session-recording";

/// A grant letting team-a exec into its pods, with recording on.
pub const RECORDED_GRANT: &str = r#"    - name: recorded-exec
      subjects: [{group: "tenant:team-a"}]
      record_sessions: true
      rules:
        - {namespaces: [team-a], verbs: [create], api_groups: [""], resources: [pods/exec]}
"#;

/// The demo config plus the recorded grant and `audit.session_recording` in `sessions`.
pub async fn start(sessions: &Path, extra: &'static str) -> Env {
    let sessions = sessions.to_owned();
    Env::start_with(move |c| recording_config(c, &sessions, extra)).await
}

/// Edit a demo config: the recorded grant, and `audit.session_recording` in `sessions` (plus
/// `extra` lines under it).
pub fn recording_config(c: &mut String, sessions: &Path, extra: &str) {
    let sessions = sessions.display().to_string();
    *c = c.replace("  grants:\n", &format!("  grants:\n{RECORDED_GRANT}"));
    let anchor = "      mode: blocking-strict";
    let at = c.find(anchor).expect("the demo audit sink");
    let end = at + c[at..].find('\n').unwrap() + 1;
    c.insert_str(
        end,
        &format!("  session_recording:\n    directory: {sessions}\n{extra}"),
    );
}

/// `kubectl exec -i shell -- cat` as `kubeconfig`, `input` piped in; its stdout.
pub async fn exec_cat(env: &Env, kubeconfig: &Path, input: &[u8]) -> Vec<u8> {
    exec_cat_over(env, kubeconfig, input, true).await
}

/// The same over WebSocket (kubectl's default) or, with `websocket` false, SPDY/3.1.
pub async fn exec_cat_over(env: &Env, kubeconfig: &Path, input: &[u8], websocket: bool) -> Vec<u8> {
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(env.dir.path().join("kube-cache"))
        .args(["exec", "-i", "-n", "team-a", "shell", "--", "cat"])
        .env("HOME", env.dir.path())
        .env(
            "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
            if websocket { "true" } else { "false" },
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl exec did not end within 60 s")
        .unwrap();
    assert!(out.status.success(), "{}", super::stderr(&out));
    out.stdout
}

pub fn events(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(env.files.dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The exec `ResponseComplete` events of users in `group`, once `n` of them are written
/// (a stream's is written when the session ends, after kubectl may have exited).
pub async fn exec_events(env: &Env, group: &str, n: usize) -> Vec<Value> {
    let found = super::poll(Duration::from_secs(20), || {
        let got: Vec<Value> = events(env)
            .into_iter()
            .filter(|e| {
                e["objectRef"]["subresource"] == "exec"
                    && e["stage"] == "ResponseComplete"
                    && e["user"]["groups"]
                        .as_array()
                        .is_some_and(|g| g.iter().any(|x| x == group))
            })
            .collect();
        (got.len() >= n).then_some(got)
    })
    .await;
    found.unwrap_or_else(|| panic!("fewer than {n} exec events of {group}: {:#?}", events(env)))
}

/// The recording annotation of `event`, parsed.
pub fn recording(event: &Value) -> Value {
    let raw = event["annotations"][ANNOTATION]
        .as_str()
        .unwrap_or_else(|| panic!("no {ANNOTATION} on {event}"));
    serde_json::from_str(raw).unwrap()
}

/// The cast file's header and events.
pub fn cast(path: &Path) -> (Value, Vec<(f64, String, String)>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let events = lines
        .map(|l| serde_json::from_str::<(f64, String, String)>(l).unwrap())
        .collect();
    (header, events)
}

pub fn joined(events: &[(f64, String, String)], code: &str) -> String {
    events
        .iter()
        .filter(|e| e.1 == code)
        .map(|e| e.2.as_str())
        .collect()
}

pub fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn replay(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(["audit", "replay"])
        .args(args)
        .output()
        .unwrap()
}

pub fn casts(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Pod `shell` in team-a (which enforces Pod Security `restricted`), made by the admin.
pub async fn make_shell_pod(env: &Env) {
    let file = shell_pod_file(env.dir.path());
    let out = env
        .kubectl(&["create", "-n", "team-a", "-f", file.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", super::stderr(&out));
}

/// A pod `shell` that team-a's restricted Pod Security level admits, written in `dir`.
pub fn shell_pod_file(dir: &Path) -> PathBuf {
    let file = dir.join("shell.json");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "busybox",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }
    });
    std::fs::write(&file, pod.to_string()).unwrap();
    file
}

/// Python (after [`python`]'s prelude) for a hand-written WebSocket exec of `cat` in the shell
/// pod as team-a: `connect(subprotocols)` opens it, `echoed(ws, data)` reads stdout until
/// `data` came back (20 s at most).
pub const RAW_EXEC: &str = r#"
import websocket, time
from websocket import ABNF
def connect(subprotocols=None):
    c = client.Configuration.get_default_copy()
    url = c.host.replace('https://', 'wss://', 1) + '/api/v1/namespaces/team-a/pods/shell/exec?command=cat&stdin=true&stdout=true'
    return websocket.create_connection(url, header=['Authorization: ' + c.auth_settings()['BearerToken']['value']],
                                       subprotocols=subprotocols, sslopt={'ca_certs': c.ssl_ca_cert})
def echoed(ws, data):
    out = b''
    end = time.time() + 20
    while data not in out and time.time() < end:
        op, got = ws.recv_data()
        if got[:1] == b'\x01':
            out += got[1:]
    return out
"#;

/// Run a Python script with the official `kubernetes` client as team-a; its stdout.
pub async fn python(env: &Env, script: &str) -> String {
    let prelude = format!(
        "import json\nfrom kubernetes import client, config\nconfig.load_kube_config(config_file={:?})\nv1 = client.CoreV1Api()\n",
        env.files.team_a_kubeconfig.display().to_string()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python did not finish within 60 s")
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
