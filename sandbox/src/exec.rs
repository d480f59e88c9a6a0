//! `pods/exec` and `pods/attach` over WebSocket (`v5.channel.k8s.io` / `v4.channel.k8s.io`),
//! and over SPDY/3.1 (`exec_spdy.rs`).
//!
//! Accepts a `GET` with `Connection: Upgrade`, `Upgrade: websocket` and a
//! `Sec-WebSocket-Protocol` offering v5 or v4; answers 101 and speaks the channel protocol
//! (first byte: 0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize, 255 close in v5). Or a
//! `POST` (or `GET`) with `Upgrade: SPDY/3.1` offering `X-Stream-Protocol-Version:
//! v4.channel.k8s.io`: 101, then one SPDY stream per channel.
//! Commands: `echo ARGS...`, `cat`, `env`, `true`, `false`, `sh -c "exit N"`, and what
//! `kubectl cp` runs on the pod's in-memory files (`tar cf - SRC`, `tar -xmf - [-C DIR]`,
//! `test -d PATH`; see `podfs.rs`); anything else exits 127. `attach` copies stdin to stdout (or prints one line without stdin).
//! No `Sec-WebSocket-Protocol` at all is the binary channel protocol, as the kubelet takes it
//! (`""` in its protocol table), answered without one.
//! Rejects: non-upgrade requests (400), no common WebSocket subprotocol (400), a SPDY upgrade
//! without `v4.channel.k8s.io` (403, as the kubelet's handshake), unknown pod (404), unknown
//! container (400), exec without a command (400).

use super::IntoResponse as _;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{frame::coding::CloseCode, CloseFrame, Role},
        Message,
    },
    WebSocketStream,
};

use super::{
    discovery,
    podfs::{self, PodFiles},
    rest::Query,
    Sandbox,
};
use portcullis::{body::Body, k8s::Status};

const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

#[path = "exec_spdy.rs"]
mod spdy;

/// How long a command without stdin waits before its output (see `run`).
const FIRST_OUTPUT_DELAY: Duration = Duration::from_millis(100);

fn header_has(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What to run once upgraded.
#[derive(Clone)]
enum Program {
    Output {
        stdout: Vec<u8>,
        stderr: String,
        code: i32,
    },
    Cat,
    /// `tar -xmf - -C DIR`: read stdin to its end, then unpack into the pod's files.
    Untar {
        files: PodFiles,
        uid: String,
        pod: String,
        dir: String,
    },
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Program::Output { code, .. } => write!(f, "Output(exit {code})"),
            Program::Cat => write!(f, "Cat"),
            Program::Untar { dir, .. } => write!(f, "Untar({dir})"),
        }
    }
}

/// The pod a command runs in.
struct Ctx<'a> {
    pod: &'a str,
    uid: &'a str,
    container: &'a str,
    files: &'a PodFiles,
}

fn from_run(r: podfs::Run) -> Program {
    Program::Output {
        stdout: r.stdout,
        stderr: r.stderr,
        code: r.code,
    }
}

fn program(sub: &str, cmd: &[String], ctx: &Ctx<'_>, stdin: bool) -> Program {
    let (pod, container) = (ctx.pod, ctx.container);
    let out = |s: String, code| Program::Output {
        stdout: s.into_bytes(),
        stderr: String::new(),
        code,
    };
    if sub == "attach" {
        return if stdin {
            Program::Cat
        } else {
            out(format!("attached to {pod}/{container}\n"), 0)
        };
    }
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["echo", rest @ ..] => out(format!("{}\n", rest.join(" ")), 0),
        ["cat"] => Program::Cat,
        ["env"] => out(
            format!("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nHOSTNAME={pod}\nHOME=/root\nSANDBOX_CONTAINER={container}\n"),
            0,
        ),
        ["tar", "cf", "-", src] => from_run(ctx.files.tar_create(ctx.uid, pod, src)),
        ["tar", "-xmf" | "xmf", "-", rest @ ..] => match rest {
            [] | ["-C", _] => Program::Untar {
                files: ctx.files.clone(),
                uid: ctx.uid.to_string(),
                pod: pod.to_string(),
                dir: rest.get(1).copied().unwrap_or("/").to_string(),
            },
            _ => unknown("tar"),
        },
        ["test", "-d", path] => out(String::new(), ctx.files.test_dir(ctx.uid, pod, path)),
        ["true"] => out(String::new(), 0),
        ["false"] => out(String::new(), 1),
        ["sh" | "/bin/sh", "-c", script] => match script.trim().strip_prefix("exit") {
            Some(n) => match n.trim().parse::<i32>() {
                Ok(code) => out(String::new(), code),
                Err(_) if n.trim().is_empty() => out(String::new(), 0),
                Err(_) => unknown(script),
            },
            None => unknown(script),
        },
        [first, ..] => unknown(first),
        [] => unknown(""),
    }
}

fn unknown(cmd: &str) -> Program {
    Program::Output {
        stdout: Vec::new(),
        stderr: format!("sandbox: {cmd}: command not found\n"),
        code: 127,
    }
}

fn exit_status(code: i32) -> Vec<u8> {
    let v = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Handle an exec / attach request.
pub fn serve(
    sb: &Sandbox,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    sub: &str,
    q: &Query,
) -> Response<Body> {
    let h = req.headers();
    let is_spdy =
        header_has(h, header::CONNECTION, "upgrade") && header_has(h, header::UPGRADE, "SPDY/3.1");
    let is_ws =
        header_has(h, header::CONNECTION, "upgrade") && header_has(h, header::UPGRADE, "websocket");
    let (key, proto) = if is_spdy {
        if !header_has(
            h,
            header::HeaderName::from_static("x-stream-protocol-version"),
            spdy::PROTOCOL,
        ) {
            return Status::forbidden(format!(
                "unable to upgrade: unable to negotiate protocol: the sandbox speaks {}",
                spdy::PROTOCOL
            ))
            .into_response();
        }
        (String::new(), spdy::PROTOCOL)
    } else {
        if !is_ws || req.method() != http::Method::GET {
            return Status::bad_request("Upgrade request required").into_response();
        }
        let Some(key) = h
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|k| derive_accept_key(k.as_bytes()))
        else {
            return Status::bad_request("missing Sec-WebSocket-Key").into_response();
        };
        // No subprotocol offered: the binary channel protocol, as the kubelet maps "" to it
        // (its status on channel 3 is sent here in v4's form).
        let offered = h.contains_key(header::SEC_WEBSOCKET_PROTOCOL);
        let Some(proto) = PROTOCOLS
            .iter()
            .find(|p| header_has(h, header::SEC_WEBSOCKET_PROTOCOL, p))
            .copied()
            .or((!offered).then_some(""))
        else {
            return Status::bad_request(format!(
                "no supported Sec-WebSocket-Protocol; the sandbox speaks {}",
                PROTOCOLS.join(", ")
            ))
            .into_response();
        };
        (key, proto)
    };
    let Some(def) = discovery::find("", "v1", "pods") else {
        return Status::internal("pods not in catalogue").into_response();
    };
    let obj = match sb.store().get(def, Some(ns), pod) {
        Ok(o) => o,
        Err(s) => return s.into_response(),
    };
    let containers: Vec<&str> = obj["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let container = match q.get("container") {
        Some(c) if !containers.contains(&c) => {
            return Status::bad_request(format!("container {c} is not valid for pod {pod}"))
                .into_response()
        }
        Some(c) => c.to_string(),
        None => containers
            .first()
            .map(|c| c.to_string())
            .unwrap_or_default(),
    };
    let cmd = q.all("command");
    if sub == "exec" && cmd.is_empty() {
        return Status::bad_request("you must specify at least 1 command").into_response();
    }
    let ctx = Ctx {
        pod,
        uid: obj["metadata"]["uid"].as_str().unwrap_or(""),
        container: &container,
        files: &sb.pod_files(),
    };
    let prog = program(sub, &cmd, &ctx, q.flag("stdin"));
    let v5 = proto.starts_with("v5");
    let on_upgrade = hyper::upgrade::on(&mut req);
    if is_spdy {
        let want = spdy::Wanted {
            stdin: q.flag("stdin"),
            stdout: q.flag("stdout"),
            stderr: q.flag("stderr"),
            tty: q.flag("tty"),
        };
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => spdy::run(TokioIo::new(upgraded), prog, want).await,
                Err(err) => tracing::debug!(%err, "exec upgrade failed"),
            }
        });
        let mut resp = Response::new(portcullis::body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let rh = resp.headers_mut();
        rh.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        rh.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        rh.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static(spdy::PROTOCOL),
        );
        return resp;
    }
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                run(ws, prog, v5).await;
            }
            Err(err) => tracing::debug!(%err, "exec upgrade failed"),
        }
    });
    let mut resp = Response::new(portcullis::body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let rh = resp.headers_mut();
    rh.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    rh.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if !proto.is_empty() {
        rh.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(proto),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&key) {
        rh.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Read stdin frames until the v5 close signal; echo them to stdout (`cat`) or keep them
/// (up to the pod tree's limit). `None` when the client went away first.
async fn read_stdin<S>(ws: &mut WebSocketStream<S>, v5: bool, echo: bool) -> Option<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut kept = Vec::new();
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(data))) => match data.first() {
                Some(0) if data.len() > 1 && echo => {
                    ws.send(frame(1, &data[1..])).await.ok()?;
                }
                Some(0) if kept.len() <= podfs::MAX_BYTES => kept.extend_from_slice(&data[1..]),
                Some(255) if v5 && data.get(1) == Some(&0) => return Some(kept),
                _ => {}
            },
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn run<S>(mut ws: WebSocketStream<S>, prog: Program, v5: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (stdout, stderr, code) = match prog {
        Program::Output {
            stdout,
            stderr,
            code,
        } => {
            // client-go creates its stdout/stderr streams only after the upgrade, concurrently
            // with reading, and discards frames for a stream it has not created yet ("Unknown
            // stream id"); a real process starts later than that, so answer no sooner.
            tokio::time::sleep(FIRST_OUTPUT_DELAY).await;
            (stdout, stderr, code)
        }
        Program::Cat => match read_stdin(&mut ws, v5, true).await {
            Some(_) => (Vec::new(), String::new(), 0),
            None => return,
        },
        Program::Untar {
            files,
            uid,
            pod,
            dir,
        } => match read_stdin(&mut ws, v5, false).await {
            Some(input) => {
                let r = files.tar_extract(&uid, &pod, &dir, &input);
                (r.stdout, r.stderr, r.code)
            }
            None => return,
        },
    };
    if !stdout.is_empty() && ws.send(frame(1, &stdout)).await.is_err() {
        return;
    }
    if !stderr.is_empty() && ws.send(frame(2, stderr.as_bytes())).await.is_err() {
        return;
    }
    if ws.send(frame(3, &exit_status(code))).await.is_err() {
        return;
    }
    let _ = ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await;
    // Let the client answer the close handshake (and absorb its pings) briefly.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        static FILES: std::sync::OnceLock<PodFiles> = std::sync::OnceLock::new();
        Ctx {
            pod: "p",
            uid: "u",
            container: "c",
            files: FILES.get_or_init(PodFiles::default),
        }
    }

    /// What `kubectl cp` runs: `test -d`, `tar -xmf - -C DIR` fed over stdin, `tar cf -`.
    #[tokio::test]
    async fn tar_round_trip_over_channels() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let c = ctx();
        let out = match program("exec", &s(&["tar", "cf", "-", "/etc"]), &c, false) {
            Program::Output {
                stdout, code: 0, ..
            } => stdout,
            p => panic!("{p:?}"),
        };
        let (server, mut client) = pair().await;
        let untar = program("exec", &s(&["tar", "-xmf", "-", "-C", "/tmp"]), &c, true);
        tokio::spawn(run(server, untar, true));
        client
            .send(Message::binary([&[0u8][..], &out].concat()))
            .await
            .unwrap();
        client.send(Message::binary(vec![255u8, 0])).await.unwrap();
        let got = frames(&mut client).await;
        assert_eq!(
            got[0],
            (3, br#"{"metadata":{},"status":"Success"}"#.to_vec())
        );
        match program("exec", &s(&["test", "-d", "/tmp/etc"]), &c, false) {
            Program::Output { code, .. } => assert_eq!(code, 0),
            p => panic!("{p:?}"),
        }
        match program("exec", &s(&["tar", "cf", "-", "/missing"]), &c, false) {
            Program::Output { code, stderr, .. } => {
                assert!(code == 2 && stderr.contains("Cannot stat"), "{stderr}")
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn commands() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        match program("exec", &s(&["echo", "hi", "there"]), &ctx(), false) {
            Program::Output { stdout, code, .. } => {
                assert_eq!((stdout.as_slice(), code), (&b"hi there\n"[..], 0))
            }
            p => panic!("{p:?}"),
        }
        match program("exec", &s(&["sh", "-c", "exit 3"]), &ctx(), false) {
            Program::Output { code, .. } => assert_eq!(code, 3),
            p => panic!("{p:?}"),
        }
        match program("exec", &s(&["nope"]), &ctx(), false) {
            Program::Output { code, stderr, .. } => assert!(code == 127 && stderr.contains("nope")),
            p => panic!("{p:?}"),
        }
        let st: serde_json::Value = serde_json::from_slice(&exit_status(2)).unwrap();
        assert_eq!(st["details"]["causes"][0]["message"], "2");
        assert_eq!(st["reason"], "NonZeroExitCode");
    }

    async fn pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (server, client)
    }

    /// Collect (channel, payload) frames until the server closes.
    async fn frames(client: &mut WebSocketStream<tokio::io::DuplexStream>) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(Ok(msg)) = client.next().await {
            match msg {
                Message::Binary(b) => out.push((b[0], b[1..].to_vec())),
                Message::Close(f) => {
                    assert_eq!(f.unwrap().code, CloseCode::Normal);
                    break;
                }
                _ => {}
            }
        }
        out
    }

    #[tokio::test]
    async fn echo_over_channels() {
        let (server, mut client) = pair().await;
        let prog = program("exec", &["echo".into(), "hi".into()], &ctx(), false);
        tokio::spawn(run(server, prog, true));
        let got = frames(&mut client).await;
        assert_eq!(got[0], (1, b"hi\n".to_vec()));
        assert_eq!(
            got[1],
            (3, br#"{"metadata":{},"status":"Success"}"#.to_vec())
        );
    }

    #[tokio::test]
    async fn cat_until_v5_stdin_close() {
        let (server, mut client) = pair().await;
        tokio::spawn(run(server, Program::Cat, true));
        client
            .send(Message::binary(b"\x00hello".to_vec()))
            .await
            .unwrap();
        client.send(Message::binary(vec![255u8, 0])).await.unwrap();
        let got = frames(&mut client).await;
        assert_eq!(got[0], (1, b"hello".to_vec()));
        assert_eq!(got[1].0, 3);
    }

    #[tokio::test]
    async fn failure_status_on_error_channel() {
        let (server, mut client) = pair().await;
        let prog = program("exec", &["false".into()], &ctx(), false);
        tokio::spawn(run(server, prog, false));
        let got = frames(&mut client).await;
        let st: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!((got[0].0, st["status"].as_str()), (3, Some("Failure")));
        assert_eq!(st["details"]["causes"][0]["message"], "1");
    }
}
