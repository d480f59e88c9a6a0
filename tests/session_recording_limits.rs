//! Issue 16, item 2, the edges of session recording through the proxy: at the size cap the
//! file gets its truncation marker and output stops being recorded, while input still is and
//! the session goes on; a session whose file cannot be
//! created is refused (503) and never reaches the API server; nothing is recorded without a
//! recording config; `record_sessions` without `audit.session_recording` is a config error
//! naming the key; `audit replay` keeps the pauses (divided by `--speed`) and refuses a file it
//! cannot vouch for.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{session::*, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_output_is_no_longer_recorded_input_is_and_the_session_goes_on() {
    common::require_kubectl();
    let sessions = tempfile::tempdir().unwrap();
    let env = start(sessions.path(), "    max_session_bytes: 4096\n").await;
    make_shell_pod(&env).await;
    // About 2 KB typed and 2 KB echoed: past the cap of 4096, within the input's hard limit
    // (twice the cap).
    let input: String = (0..70)
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
    assert!(rec.get("error").is_none(), "{rec}");
    assert!(std::fs::metadata(&path).unwrap().len() <= 8192);
    assert_eq!(rec["sha256"], sha256(&path).as_str());
    let (_, evs) = cast(&path);
    let markers: Vec<_> = evs
        .iter()
        .filter(|e| e.1 == "m" && e.2.starts_with("portcullis: recording truncated"))
        .collect();
    assert_eq!(markers.len(), 1, "{evs:?}");
    assert!(markers[0].2.contains("4096"), "{markers:?}");
    assert_eq!(joined(&evs, "i"), input, "input is recorded past the cap");
    assert!(
        input.starts_with(&joined(&evs, "o")) && joined(&evs, "o").len() < input.len(),
        "output is kept up to the cap"
    );
    let out = replay(&[path.to_str().unwrap(), "--no-wait"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("recording truncated"));
    env.stop().await;
}

/// Input past the hard limit (twice the cap: 12 KB typed with a cap of 4096) ends the session
/// rather than running on unrecorded: both connections closed (kubectl does not get all of it
/// back), the file within 8192 bytes ending with the marker, the annotation with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_past_twice_the_cap_ends_the_session() {
    use tokio::io::AsyncWriteExt;
    common::require_kubectl();
    let sessions = tempfile::tempdir().unwrap();
    let env = start(sessions.path(), "    max_session_bytes: 4096\n").await;
    make_shell_pod(&env).await;
    let input: String = (0..400)
        .map(|i| format!("line {i:04} of a long session\n"))
        .collect();
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.files.team_a_kubeconfig)
        .arg("--cache-dir")
        .arg(env.dir.path().join("kube-cache"))
        .args(["exec", "-i", "-n", "team-a", "shell", "--", "cat"])
        .env("HOME", env.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The session may be ended while this is written: a broken pipe is expected then.
    let _ = stdin.write_all(input.as_bytes()).await;
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl exec did not end within 60 s")
        .unwrap();
    assert!(out.stdout.len() < input.len(), "the session was not cut");
    let ev = exec_events(&env, "tenant:team-a", 1).await;
    let rec = recording(&ev[0]);
    let marker = "portcullis: input would take the recording past twice max_session_bytes; the session was ended";
    assert_eq!(rec["error"], marker, "{rec}");
    let path = sessions.path().join(rec["file"].as_str().unwrap());
    assert!(std::fs::metadata(&path).unwrap().len() <= 8192);
    assert_eq!(rec["sha256"], sha256(&path).as_str());
    let (_, evs) = cast(&path);
    assert_eq!(evs.last().unwrap().2, marker);
    assert!(input.starts_with(&joined(&evs, "i")));
    env.stop().await;
}

/// A WebSocket exec that offers no subprotocol speaks the binary channel protocol (the
/// kubelet's `""` entry; a hand-written client does this): recorded like any other, not run
/// unrecorded behind a "cannot be recorded" marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_exec_without_a_subprotocol_is_recorded() {
    common::require_kubectl();
    let sessions = tempfile::tempdir().unwrap();
    let env = start(sessions.path(), "").await;
    make_shell_pod(&env).await;
    let script = format!(
        "{RAW_EXEC}{}",
        r#"
ws = connect()
offered = ws.getheaders().get('sec-websocket-protocol')
ws.send_binary(b'\x00typed raw\n')
out = echoed(ws, b'typed raw\n')
ws.close()
print(json.dumps([offered, out.decode()]))
"#
    );
    let printed = python(&env, &script).await;
    let got: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(got, serde_json::json!([null, "typed raw\n"]));
    let ev = exec_events(&env, "tenant:team-a", 1).await;
    let rec = recording(&ev[0]);
    assert!(rec.get("error").is_none(), "{rec}");
    let path = sessions.path().join(rec["file"].as_str().unwrap());
    let (_, evs) = cast(&path);
    assert_eq!(joined(&evs, "i"), "typed raw\n");
    assert_eq!(joined(&evs, "o"), "typed raw\n");
    assert!(
        !evs.iter().any(|e| e.1 == "m"),
        "no marker: the session was read: {evs:?}"
    );
    env.stop().await;
}

/// A frame the recorder cannot read (an extension's reserved bit, with no extension
/// negotiated) ends the session instead of letting what follows go unrecorded: the file
/// ends with a marker, the annotation has an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_frame_ends_a_recorded_session() {
    common::require_kubectl();
    let sessions = tempfile::tempdir().unwrap();
    let env = start(sessions.path(), "").await;
    make_shell_pod(&env).await;
    let script = format!(
        "{RAW_EXEC}{}",
        r#"
ws = connect(['v4.channel.k8s.io'])
ws.send_binary(b'\x00before\n')
echoed(ws, b'before\n')
ws.send_frame(ABNF(fin=1, rsv1=1, opcode=ABNF.OPCODE_BINARY, data=b'\x00after\n'))
closed = False
end = time.time() + 20
while time.time() < end:
    try:
        op, data = ws.recv_data()
    except Exception:
        closed = True
        break
    if op == ABNF.OPCODE_CLOSE:
        closed = True
        break
print(json.dumps(closed))
"#
    );
    let printed = python(&env, &script).await;
    assert_eq!(printed.trim(), "true", "the session ended");
    let ev = exec_events(&env, "tenant:team-a", 1).await;
    let rec = recording(&ev[0]);
    assert_eq!(
        rec["error"],
        "portcullis: a frame could not be read (recording would stop here); the session was ended",
        "{rec}"
    );
    let path = sessions.path().join(rec["file"].as_str().unwrap());
    let (_, evs) = cast(&path);
    assert_eq!(joined(&evs, "i"), "before\n");
    let last = evs.last().unwrap();
    assert_eq!(last.1, "m", "{evs:?}");
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

#[test]
fn replay_keeps_the_pauses_divided_by_speed_and_refuses_what_it_cannot_vouch_for() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.cast");
    std::fs::write(
        &file,
        "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"a\"]\n[0.2,\"i\",\"typed\"]\n[1.1,\"m\",\"status: {}\"]\n[1.3,\"o\",\"b\\r\\n\"]\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    // 1.3 s of session at speed 2: at least 0.65 s (only a lower bound: a slow machine is fine).
    let started = std::time::Instant::now();
    let out = replay(&[path, "--speed", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(650));
    assert_eq!(out.stdout, b"ab\r\n", "output only; input is not printed");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "[status: {}]\n");
    let out = replay(&[path, "--no-wait"]);
    assert_eq!(out.stdout, b"ab\r\n");

    // No annotation naming the file: not played.
    let log = dir.path().join("audit.log");
    std::fs::write(&log, "{\"kind\":\"Event\",\"annotations\":{}}\n").unwrap();
    let out = replay(&[path, "--no-wait", "--audit-log", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    for bad in [&["--speed", "0"][..], &["--speed=-1"], &["--speed", "NaN"]] {
        let out = replay(&[&[path][..], bad].concat());
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
    }
    std::fs::write(
        &file,
        "{\"version\":2,\"width\":80,\"height\":24}\nnot an event\n",
    )
    .unwrap();
    let out = replay(&[path, "--no-wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("s.cast:2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An API server that switches a recorded session to a protocol the recorder cannot read (a
/// base64 channel protocol, which the proxy did not offer) gets no splice: the client is
/// answered 502 and the event's recording annotation says why — the session never runs
/// unrecorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_switching_to_an_unreadable_protocol_gets_no_splice() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sessions = tempfile::tempdir().unwrap();
    let (ca, sandbox) = Env::ca_and_sandbox().await;
    let fake = common::fake_upstream(&ca, |mut s| async move {
        let Some(head) = common::read_head(&mut s).await else {
            return;
        };
        if head.to_lowercase().contains("upgrade: websocket") {
            let _ = s
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                      Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                      Sec-WebSocket-Protocol: base64.channel.k8s.io\r\n\r\n",
                )
                .await;
            let mut buf = [0u8; 1024];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        }
    })
    .await;
    let dir = sessions.path().to_owned();
    let env = Env::start_against(ca, sandbox, fake, move |c| {
        recording_config(c, &dir, "");
    })
    .await;
    let script = format!(
        "{RAW_EXEC}{}",
        r#"
try:
    connect(['v5.channel.k8s.io'])
    print(json.dumps('opened'))
except Exception as e:
    print(json.dumps(getattr(e, 'status_code', str(e))))
"#
    );
    let printed = python(&env, &script).await;
    assert_eq!(printed.trim(), "502", "{printed}");
    let ev = exec_events(&env, "tenant:team-a", 1).await;
    assert_eq!(ev[0]["responseStatus"]["code"], 502, "{}", ev[0]);
    let rec = recording(&ev[0]);
    assert!(
        rec["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot be recorded; the session was refused")),
        "{rec}"
    );
    env.stop().await;
}
