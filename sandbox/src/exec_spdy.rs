//! `pods/exec` and `pods/attach` over SPDY/3.1 (`Upgrade: SPDY/3.1`,
//! `X-Stream-Protocol-Version: v4.channel.k8s.io`): what kubectl speaks with
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`, and older clients always, as the kubelet serves it
//! (`kubelet/pkg/cri/streaming/remotecommand/httpstream.go`, protocol v4).
//!
//! The client opens one stream per channel (header `streamtype`: `error`, `stdin`, `stdout`,
//! `stderr`, `resize`); each gets an empty SYN_REPLY. Once the streams the query asked for
//! (`stdin`, `stdout`, `stderr`, `tty` → resize) and the error stream are open, the program of
//! `exec.rs` runs: its output goes on stdout / stderr, `cat` echoes each stdin DATA frame, the
//! stdin stream's FIN ends the input; then the exit Status (v4 JSON) goes on the error stream,
//! every server-written stream gets FIN, and the connection closes. PINGs are echoed.
//! Rejects: a frame that does not decode ends the session (GOAWAY, PROTOCOL_ERROR).

use std::collections::HashMap;

use crate::portforward::{
    spdy::{self, Decoder, Encoder, Frame},
    tunnel::{raw, Io, Tx},
};

use super::{exit_status, podfs, Program};

/// The remotecommand protocol served.
pub const PROTOCOL: &str = "v4.channel.k8s.io";

/// The streams a request asked for (its query flags).
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

struct Out<S: Io> {
    tx: Tx<S>,
    enc: Encoder,
}

impl<S: Io> Out<S> {
    async fn send(&mut self, f: &Frame) -> bool {
        match self.enc.encode(f) {
            Ok(bytes) => self.tx.send(bytes).await.is_ok(),
            Err(_) => false,
        }
    }

    async fn data(&mut self, stream: Option<u32>, data: &[u8], fin: bool) -> bool {
        let Some(stream) = stream else { return true };
        if data.is_empty() && !fin {
            return true;
        }
        let flags = if fin { spdy::FLAG_FIN } else { 0 };
        self.send(&Frame::Data {
            stream,
            flags,
            data: data.to_vec(),
        })
        .await
    }
}

/// Serve one session on the upgraded connection `io`.
pub async fn run<S: Io>(io: S, prog: Program, want: Wanted) {
    let (mut rx, tx) = raw(io);
    let mut out = Out {
        tx,
        enc: Encoder::default(),
    };
    let mut dec = Decoder::default();
    let mut streams: HashMap<String, u32> = HashMap::new();
    let mut input: Vec<u8> = Vec::new();
    let mut stdin_done = !want.stdin;
    let mut started = false;
    'read: while let Some(bytes) = rx.recv().await {
        dec.push(&bytes);
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(%err, "exec: undecodable SPDY frame");
                    out.send(&Frame::GoAway {
                        last_good: 0,
                        status: spdy::GOAWAY_PROTOCOL_ERROR,
                    })
                    .await;
                    break 'read;
                }
            };
            match frame {
                Frame::SynStream {
                    stream, headers, ..
                } => {
                    let kind = spdy::header(&headers, "streamtype")
                        .unwrap_or("")
                        .to_owned();
                    streams.insert(kind, stream);
                    let reply = Frame::SynReply {
                        stream,
                        flags: 0,
                        headers: Vec::new(),
                    };
                    if !out.send(&reply).await {
                        break 'read;
                    }
                }
                Frame::Data {
                    stream,
                    flags,
                    data,
                } if Some(&stream) == streams.get("stdin") => {
                    if matches!(prog, Program::Cat) && started {
                        if !out.data(streams.get("stdout").copied(), &data, false).await {
                            break 'read;
                        }
                    } else if input.len() <= podfs::MAX_BYTES {
                        input.extend_from_slice(&data);
                    }
                    if flags & spdy::FLAG_FIN != 0 {
                        stdin_done = true;
                    }
                }
                Frame::Ping(id) if !out.send(&Frame::Ping(id)).await => break 'read,
                Frame::GoAway { .. } => break 'read,
                _ => {}
            }
        }
        let ready = ["error"]
            .into_iter()
            .chain(want.stdin.then_some("stdin"))
            .chain(want.stdout.then_some("stdout"))
            .chain(want.stderr.then_some("stderr"))
            .chain(want.tty.then_some("resize"))
            .all(|k| streams.contains_key(k));
        if ready && !started {
            started = true;
            // What `cat` was sent before every stream was open.
            if matches!(prog, Program::Cat) {
                let early = std::mem::take(&mut input);
                if !out
                    .data(streams.get("stdout").copied(), &early, false)
                    .await
                {
                    break 'read;
                }
            }
        }
        if started && (stdin_done || !matches!(prog, Program::Cat | Program::Untar { .. })) {
            finish(&mut out, &streams, prog, input).await;
            return;
        }
    }
}

/// Run what is left of the program, send its output, its Status and the FINs; close.
async fn finish<S: Io>(
    out: &mut Out<S>,
    streams: &HashMap<String, u32>,
    prog: Program,
    input: Vec<u8>,
) {
    let (stdout, stderr, code) = match prog {
        Program::Output {
            stdout,
            stderr,
            code,
        } => (stdout, stderr, code),
        Program::Cat => (Vec::new(), String::new(), 0),
        Program::Untar {
            files,
            uid,
            pod,
            dir,
        } => {
            let r = files.tar_extract(&uid, &pod, &dir, &input);
            (r.stdout, r.stderr, r.code)
        }
    };
    let id = |k: &str| streams.get(k).copied();
    let _ = out.data(id("stdout"), &stdout, false).await
        && out.data(id("stderr"), stderr.as_bytes(), false).await
        && out.data(id("error"), &exit_status(code), false).await
        && out.data(id("stdout"), &[], true).await
        && out.data(id("stderr"), &[], true).await
        && out.data(id("error"), &[], true).await;
    // Let the client read it all and close first, as the kubelet does (bounded).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    out.tx.close().await;
}
