//! Issue 16, item 2, through the proxy: exec sessions of a grant with `record_sessions: true`
//! are recorded as asciicast v2 files named by their Audit-ID (mode 0600), linked from the
//! session's `ResponseComplete` event by `portcullis.io/session-recording` (file + SHA-256),
//! and `portcullis audit replay` plays back the same output bytes; a grant without it, and a
//! proxy without any recording config, record nothing; the size cap ends the file with its
//! truncation marker while the session itself goes on; `record_sessions` without
//! `audit.session_recording` is a config error naming the key.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::Env;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const ANNOTATION: &str = "portcullis.io/session-recording";

/// A grant letting team-a exec into its pods, with recording on.
const RECORDED_GRANT: &str = r#"    - name: recorded-exec
      subjects: [{group: "tenant:team-a"}]
      record_sessions: true
      rules:
        - {namespaces: [team-a], verbs: [create], api_groups: [""], resources: [pods/exec]}
"#;

/// The demo config plus the recorded grant and `audit.session_recording` in `sessions`.
async fn start(sessions: &Path, extra: &'static str) -> Env {
    let sessions = sessions.display().to_string();
    Env::start_with(move |c| {
        *c = c.replace("  grants:\n", &format!("  grants:\n{RECORDED_GRANT}"));
        let anchor = "      mode: blocking-strict";
        let at = c.find(anchor).expect("the demo audit sink");
        let end = at + c[at..].find('\n').unwrap() + 1;
        c.insert_str(
            end,
            &format!("  session_recording:\n    directory: {sessions}\n{extra}"),
        );
    })
    .await
}

/// `kubectl exec -i shell -- cat` as `kubeconfig`, `input` piped in; its stdout.
async fn exec_cat(env: &Env, kubeconfig: &Path, input: &[u8]) -> Vec<u8> {
    exec_cat_over(env, kubeconfig, input, true).await
}

/// The same over WebSocket (kubectl's default) or, with `websocket` false, SPDY/3.1.
async fn exec_cat_over(env: &Env, kubeconfig: &Path, input: &[u8], websocket: bool) -> Vec<u8> {
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
    assert!(out.status.success(), "{}", common::stderr(&out));
    out.stdout
}

fn events(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(env.files.dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The exec `ResponseComplete` events of users in `group`, once `n` of them are written
/// (a stream's is written when the session ends, after kubectl may have exited).
async fn exec_events(env: &Env, group: &str, n: usize) -> Vec<Value> {
    let found = common::poll(Duration::from_secs(20), || {
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
fn recording(event: &Value) -> Value {
    let raw = event["annotations"][ANNOTATION]
        .as_str()
        .unwrap_or_else(|| panic!("no {ANNOTATION} on {event}"));
    serde_json::from_str(raw).unwrap()
}

/// The cast file's header and events.
fn cast(path: &Path) -> (Value, Vec<(f64, String, String)>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let events = lines
        .map(|l| serde_json::from_str::<(f64, String, String)>(l).unwrap())
        .collect();
    (header, events)
}

fn joined(events: &[(f64, String, String)], code: &str) -> String {
    events
        .iter()
        .filter(|e| e.1 == code)
        .map(|e| e.2.as_str())
        .collect()
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn replay(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(["audit", "replay"])
        .args(args)
        .output()
        .unwrap()
}

fn casts(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Pod `shell` in team-a (which enforces Pod Security `restricted`), made by the admin.
async fn make_shell_pod(env: &Env) {
    let file = env.dir.path().join("shell.json");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "busybox",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }
    });
    std::fs::write(&file, pod.to_string()).unwrap();
    let out = env
        .kubectl(&["create", "-n", "team-a", "-f", file.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", common::stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_grant_s_kubectl_exec_is_a_replayable_asciicast_named_in_its_event() {
    common::require_kubectl();
    let sessions = tempfile::tempdir().unwrap();
    let env = start(sessions.path(), "").await;
    make_shell_pod(&env).await;

    // team-a through the recorded grant.
    let typed = "echo hello from the session\nprintf 'ünïcode ✓'\n";
    let got = exec_cat(&env, &env.files.team_a_kubeconfig, typed.as_bytes()).await;
    assert_eq!(got, typed.as_bytes(), "cat echoes what was typed");

    let ev = exec_events(&env, "tenant:team-a", 1).await;
    let event = &ev[0];
    let rec = recording(event);
    let audit_id = event["auditID"].as_str().unwrap();
    let name = format!("{audit_id}.cast");
    assert_eq!(rec["file"], name.as_str(), "{rec}");
    let path = sessions.path().join(&name);
    assert_eq!(
        casts(sessions.path()),
        vec![path.clone()],
        "one file, this session's"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(rec["sha256"], sha256(&path).as_str());
    assert_eq!(rec["truncated"], false);
    assert_eq!(rec["droppedFrames"], 0);
    // On the stream's end event only.
    let started: Vec<Value> = events(&env)
        .into_iter()
        .filter(|e| e["auditID"] == audit_id && e["stage"] == "ResponseStarted")
        .collect();
    assert!(started
        .iter()
        .all(|e| e["annotations"][ANNOTATION].is_null()));

    let (header, evs) = cast(&path);
    assert_eq!(header["version"], 2);
    assert!(header["width"].as_u64().is_some() && header["height"].as_u64().is_some());
    assert_eq!(header["command"], "cat");
    assert_eq!(joined(&evs, "i"), typed, "stdin as typed");
    assert_eq!(joined(&evs, "o").as_bytes(), &got[..], "stdout as received");
    assert!(
        evs.windows(2).all(|w| w[0].0 <= w[1].0),
        "times never go back"
    );
    let status: Vec<_> = evs.iter().filter(|e| e.1 == "m").collect();
    assert!(
        status
            .iter()
            .any(|e| e.2.starts_with("status: ") && e.2.contains("Success")),
        "{status:?}"
    );

    // Replay: the same output bytes, checked against the digest and against the audit log.
    let log = env.files.dir.join("audit.log");
    let out = replay(&[
        path.to_str().unwrap(),
        "--no-wait",
        "--sha256",
        rec["sha256"].as_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, got);
    let out = replay(&[
        path.to_str().unwrap(),
        "--no-wait",
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, got);
    let wrong = "0".repeat(64);
    let out = replay(&[path.to_str().unwrap(), "--no-wait", "--sha256", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing is played from a file that does not match"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHA-256"));
    // An edited file no longer matches its event.
    let edited = sessions.path().join("edited.cast");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("hello", "HELLO");
    std::fs::write(&edited, text).unwrap();
    let out = replay(&[
        edited.to_str().unwrap(),
        "--no-wait",
        "--sha256",
        rec["sha256"].as_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    std::fs::remove_file(&edited).unwrap();

    // The admin's grant does not record: same pod, same command, no file, no annotation.
    let got = exec_cat(&env, &env.files.admin_kubeconfig, b"not recorded\n").await;
    assert_eq!(got, b"not recorded\n");
    let admin = exec_events(&env, "demo:admins", 1).await;
    assert!(
        admin[0]["annotations"][ANNOTATION].is_null(),
        "{}",
        admin[0]
    );
    assert_eq!(
        admin[0]["annotations"]["portcullis.io/exec-command"],
        r#"["cat"]"#
    );
    assert_eq!(
        casts(sessions.path()),
        vec![path.clone()],
        "no file for the admin"
    );

    // The Python client's exec (WebSocket, v5 or v4 as negotiated) is recorded too. Its stdin
    // goes as bytes (binary frames): the sandbox's `cat` reads binary frames only.
    let script = r#"
from kubernetes.stream import stream
import time
ws = stream(v1.connect_get_namespaced_pod_exec, 'shell', 'team-a', command=['cat'],
            stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
ws.write_stdin(b'typed in python\n')
out = ''
end = time.time() + 20
while 'typed in python\n' not in out and time.time() < end:
    ws.update(timeout=1)
    if ws.peek_stdout():
        out += ws.read_stdout()
ws.close()
print(json.dumps(out))
"#;
    let printed = python(&env, script).await;
    let echoed: String = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(echoed, "typed in python\n");
    let ev = exec_events(&env, "tenant:team-a", 2).await;
    let py = ev
        .iter()
        .find(|e| e["auditID"] != audit_id)
        .expect("the python session's event");
    let rec = recording(py);
    let path = sessions.path().join(rec["file"].as_str().unwrap());
    assert_eq!(rec["sha256"], sha256(&path).as_str());
    let (_, evs) = cast(&path);
    assert_eq!(joined(&evs, "i"), "typed in python\n");
    assert_eq!(joined(&evs, "o"), "typed in python\n");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubectl_exec_over_spdy_is_recorded_the_same_way() {
    common::require_kubectl();
    let sessions = tempfile::tempdir().unwrap();
    let env = start(sessions.path(), "").await;
    make_shell_pod(&env).await;
    env.sandbox.sandbox.clear_recorded();
    let typed = "typed over SPDY\nsecond line\n";
    let got = exec_cat_over(&env, &env.files.team_a_kubeconfig, typed.as_bytes(), false).await;
    assert_eq!(got, typed.as_bytes());
    // It really was SPDY: the sandbox saw a POST (WebSocket exec is a GET).
    let seen: Vec<String> = env
        .sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.path.ends_with("/exec"))
        .map(|r| r.method.to_string())
        .collect();
    assert_eq!(seen, ["POST"]);
    let ev = exec_events(&env, "tenant:team-a", 1).await;
    let rec = recording(&ev[0]);
    let path = sessions.path().join(rec["file"].as_str().unwrap());
    assert_eq!(rec["sha256"], sha256(&path).as_str());
    let (header, evs) = cast(&path);
    assert_eq!(header["version"], 2);
    assert_eq!(joined(&evs, "i"), typed);
    assert_eq!(joined(&evs, "o").as_bytes(), &got[..]);
    assert!(evs
        .iter()
        .any(|e| e.1 == "m" && e.2.starts_with("status: ") && e.2.contains("Success")));
    let out = replay(&[
        path.to_str().unwrap(),
        "--no-wait",
        "--sha256",
        rec["sha256"].as_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, got);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubectl_exec_it_at_a_terminal_records_its_size_and_keystrokes() {
    common::require_kubectl();
    let sessions = tempfile::tempdir().unwrap();
    let env = start(sessions.path(), "").await;
    make_shell_pod(&env).await;
    env.sandbox.sandbox.clear_recorded();
    // `-it` needs a terminal: util-linux `script` gives kubectl one, 123x45.
    let kubectl = format!(
        "stty cols 123 rows 45; exec kubectl --kubeconfig {} --cache-dir {} exec -it -n team-a shell -- cat",
        env.files.team_a_kubeconfig.display(),
        env.dir.path().join("kube-cache").display()
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qfc", &kubectl, "/dev/null"])
        .env("HOME", env.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Type only once the session is up and kubectl's terminal is raw (so nothing is echoed
    // locally: what comes back came from the pod).
    let up = common::poll(Duration::from_secs(20), || {
        env.sandbox
            .sandbox
            .recorded()
            .iter()
            .any(|r| r.path.ends_with("/exec"))
            .then_some(())
    })
    .await;
    assert!(up.is_some(), "the exec never reached the sandbox");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"typed at a terminal\r").await.unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let echoed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("typed at a terminal") {
            let n = tokio::io::AsyncReadExt::read(&mut stdout, &mut buf)
                .await
                .unwrap();
            assert!(
                n > 0,
                "the terminal closed: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        echoed.is_ok(),
        "no echo: {}",
        String::from_utf8_lossy(&seen)
    );
    // Hang up, as a closed terminal does: the session ends and its event is written.
    child.kill().await.unwrap();
    let ev = exec_events(&env, "tenant:team-a", 1).await;
    let rec = recording(&ev[0]);
    let path = sessions.path().join(rec["file"].as_str().unwrap());
    assert_eq!(rec["sha256"], sha256(&path).as_str());
    let (header, evs) = cast(&path);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(123), Some(45)),
        "{header}"
    );
    assert_eq!(joined(&evs, "i"), "typed at a terminal\r");
    assert_eq!(joined(&evs, "o"), "typed at a terminal\r");
    let out = replay(&[path.to_str().unwrap(), "--no-wait"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"typed at a terminal\r");
    drop(stdin);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_the_file_ends_with_its_truncation_marker_and_the_session_goes_on() {
    common::require_kubectl();
    let sessions = tempfile::tempdir().unwrap();
    let env = start(sessions.path(), "    max_session_bytes: 4096\n").await;
    make_shell_pod(&env).await;
    let input: String = (0..400)
        .map(|i| format!("line {i:04} of a long session\n"))
        .collect();
    let got = exec_cat(&env, &env.files.team_a_kubeconfig, input.as_bytes()).await;
    assert_eq!(
        got,
        input.as_bytes(),
        "the session is not cut by its recording's cap"
    );
    let ev = exec_events(&env, "tenant:team-a", 1).await;
    let rec = recording(&ev[0]);
    assert_eq!(rec["truncated"], true, "{rec}");
    let path = sessions.path().join(rec["file"].as_str().unwrap());
    assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
    assert_eq!(rec["sha256"], sha256(&path).as_str());
    let (_, evs) = cast(&path);
    let last = evs.last().unwrap();
    assert_eq!(last.1, "m");
    assert!(
        last.2.starts_with("portcullis: recording truncated") && last.2.contains("4096"),
        "{last:?}"
    );
    assert!(
        input.starts_with(&joined(&evs, "i")),
        "what was kept is the session's start"
    );
    let out = replay(&[path.to_str().unwrap(), "--no-wait"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("recording truncated"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_cannot_be_recorded_is_refused_and_never_reaches_the_api_server() {
    common::require_kubectl();
    let sessions = tempfile::tempdir().unwrap();
    let env = start(sessions.path(), "").await;
    make_shell_pod(&env).await;
    // The directory goes away after start: no file can be created.
    std::fs::remove_dir(sessions.path()).unwrap();
    env.sandbox.sandbox.clear_recorded();
    let out = common::kubectl(
        &env.files.team_a_kubeconfig,
        env.dir.path(),
        &["exec", "-n", "team-a", "shell", "--", "echo", "hi"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("the request could not be audited"),
        "{}",
        common::stderr(&out)
    );
    assert!(
        !env.sandbox
            .sandbox
            .recorded()
            .iter()
            .any(|r| r.path.contains("/exec")),
        "an unrecordable session must not reach the API server"
    );
    let ev = exec_events(&env, "tenant:team-a", 1).await;
    assert_eq!(ev[0]["responseStatus"]["code"], 503, "{}", ev[0]);
    assert_eq!(ev[0]["annotations"]["portcullis.io/rejected-by"], "audit");
    assert!(recording(&ev[0])["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_is_off_by_default() {
    common::require_kubectl();
    let env = Env::start().await;
    make_shell_pod(&env).await;
    let got = exec_cat(&env, &env.files.admin_kubeconfig, b"unrecorded\n").await;
    assert_eq!(got, b"unrecorded\n");
    let ev = exec_events(&env, "demo:admins", 1).await;
    assert!(ev[0]["annotations"][ANNOTATION].is_null(), "{}", ev[0]);
    let mut found = Vec::new();
    let mut dirs = vec![env.dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "cast") {
                found.push(p);
            }
        }
    }
    assert!(found.is_empty(), "{found:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_sessions_without_a_directory_is_a_config_error_naming_the_key() {
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_port();
    let files =
        portcullis_sandbox::demo::write(dir.path(), &ca, &sandbox.url(), addr, common::free_port())
            .unwrap();
    let text = std::fs::read_to_string(&files.config)
        .unwrap()
        .replace("  grants:\n", &format!("  grants:\n{RECORDED_GRANT}"));
    std::fs::write(&files.config, text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&files.config)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("authorization.grants[0].record_sessions"),
        "{said}"
    );
    assert!(said.contains("audit.session_recording"), "{said}");
    sandbox.stop().await;
}

/// Run a Python script with the official `kubernetes` client as team-a; its stdout.
async fn python(env: &Env, script: &str) -> String {
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
