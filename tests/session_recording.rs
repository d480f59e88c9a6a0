//! Issue 16, item 2, through the proxy: exec sessions of a grant with `record_sessions: true`
//! are recorded as asciicast v2 files named by their Audit-ID (mode 0600), linked from the
//! session's `ResponseComplete` event by `portcullis.io/session-recording` (file + SHA-256),
//! and `portcullis audit replay` plays back the same output bytes — kubectl over WebSocket,
//! over SPDY/3.1 and at a terminal (`-it`), and the Python client; a grant without it records
//! nothing. Limits and refusals: `session_recording_limits.rs`.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{os::unix::fs::PermissionsExt, process::Stdio, time::Duration};

use common::session::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

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
    // A WebSocket exec is a GET: kube-apiserver's audit says `get` (it authorizes `create`
    // besides, as the proxy does).
    assert_eq!(event["verb"], "get");
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
    assert_eq!(ev[0]["verb"], "create", "the SPDY POST");
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
