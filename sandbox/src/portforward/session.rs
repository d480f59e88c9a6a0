//! One port-forward session over SPDY/3.1, as the kubelet serves it
//! (`kubelet/pkg/cri/streaming/portforward/httpstream.go`): the client opens, per forwarded
//! connection, an error stream and a data stream (headers `streamtype`, `port`, `requestid`);
//! once both arrived, the data stream is joined to the pod's echo service on that port
//! (`echo.rs`). When the service closes, both streams get FIN (an empty error stream means
//! "no error" to kubectl).
//!
//! Accepts: SYN_STREAM (answered with an empty SYN_REPLY), DATA (FIN half-closes the
//! service's input), RST_STREAM, PING (echoed back), GOAWAY (ends the session); SETTINGS,
//! WINDOW_UPDATE, HEADERS and unknown control frames are ignored. Refuses a stream with a
//! missing or bad `port` / `streamtype`, a second stream of one type for a request, an even or
//! non-increasing stream id, or past [`MAX_STREAMS`] open streams: RST_STREAM (REFUSED_STREAM,
//! or PROTOCOL_ERROR for ids). A frame that does not decode ends the session with GOAWAY
//! (PROTOCOL_ERROR).

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    echo,
    spdy::{self, Decoder, Encoder, Frame},
    tunnel::{Io, Rx, Tx},
};

/// Streams a session may hold open at once (each forwarded connection takes two).
pub const MAX_STREAMS: usize = 512;
/// Largest DATA frame sent (spdystream's own size).
const CHUNK: usize = 32 * 1024;

/// One request's streams, until both have arrived.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
    /// The service's input, kept until the pair is complete (data may arrive before).
    input: Option<mpsc::Receiver<Bytes>>,
}

struct Session {
    namespace: String,
    pod: String,
    out: mpsc::Sender<Frame>,
    pairs: HashMap<String, Pair>,
    /// Data stream id → the service's input.
    inputs: HashMap<u32, mpsc::Sender<Bytes>>,
    last_stream: u32,
}

/// Serve a session until the client goes away.
pub async fn run<S: Io>(mut rx: Rx<S>, tx: Tx<S>, namespace: String, pod: String) {
    let (out, out_rx) = mpsc::channel(64);
    let writer = tokio::spawn(write_frames(out_rx, tx));
    let mut s = Session {
        namespace,
        pod,
        out,
        pairs: HashMap::new(),
        inputs: HashMap::new(),
        last_stream: 0,
    };
    let mut decoder = Decoder::default();
    'read: while let Some(bytes) = rx.recv().await {
        decoder.push(&bytes);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if !s.handle(frame).await {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(%err, "port-forward: undecodable SPDY frame");
                    s.send(Frame::GoAway {
                        last_good: s.last_stream,
                        status: spdy::GOAWAY_PROTOCOL_ERROR,
                    })
                    .await;
                    break 'read;
                }
            }
        }
    }
    // Closing every input ends every service; the writer ends when their frames are out.
    drop(s);
    let _ = writer.await;
}

/// Encode and send frames in order (the outbound zlib stream lives here).
async fn write_frames<S: Io>(mut frames: mpsc::Receiver<Frame>, mut tx: Tx<S>) {
    let mut enc = Encoder::default();
    while let Some(f) = frames.recv().await {
        let Ok(bytes) = enc.encode(&f) else { break };
        let last = matches!(f, Frame::GoAway { .. });
        if tx.send(bytes).await.is_err() || last {
            break;
        }
    }
    tx.close().await;
}

impl Session {
    async fn send(&self, f: Frame) {
        let _ = self.out.send(f).await;
    }

    /// Handle one frame; false ends the session.
    async fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => self.open(stream, &headers).await,
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                if let Some(input) = self.inputs.get(&stream) {
                    if !data.is_empty() && input.send(Bytes::from(data)).await.is_err() {
                        self.inputs.remove(&stream);
                    }
                }
                if flags & spdy::FLAG_FIN != 0 {
                    self.inputs.remove(&stream);
                }
            }
            Frame::RstStream { stream, .. } => {
                self.inputs.remove(&stream);
            }
            Frame::Ping(id) => self.send(Frame::Ping(id)).await,
            Frame::GoAway { .. } => return false,
            Frame::SynReply { .. }
            | Frame::Settings
            | Frame::Headers { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown(_) => {}
        }
        true
    }

    async fn refuse(&self, stream: u32, status: u32, why: &str) {
        tracing::debug!(stream, why, "port-forward: stream refused");
        self.send(Frame::RstStream { stream, status }).await;
    }

    /// A new stream from the client: check it, accept it, pair it.
    async fn open(&mut self, stream: u32, headers: &spdy::Headers) {
        // Client streams are odd and increasing (SPDY/3 §2.3.2).
        if stream.is_multiple_of(2) || stream <= self.last_stream {
            return self
                .refuse(stream, spdy::RST_PROTOCOL_ERROR, "bad stream id")
                .await;
        }
        self.last_stream = stream;
        let port = match spdy::header(headers, "port").map(str::parse::<u16>) {
            Some(Ok(p)) if p > 0 => p,
            _ => {
                return self
                    .refuse(stream, spdy::RST_REFUSED_STREAM, "bad port header")
                    .await
            }
        };
        let kind = spdy::header(headers, "streamtype").unwrap_or("");
        if kind != "error" && kind != "data" {
            return self
                .refuse(stream, spdy::RST_REFUSED_STREAM, "bad streamtype header")
                .await;
        }
        if self.inputs.len() + self.pairs.len() * 2 >= MAX_STREAMS {
            return self
                .refuse(stream, spdy::RST_REFUSED_STREAM, "too many streams")
                .await;
        }
        // Old clients send no request id; the kubelet derives one from the stream ids.
        let request = match spdy::header(headers, "requestid") {
            Some(r) if !r.is_empty() => r.to_string(),
            _ if kind == "data" => stream.saturating_sub(2).to_string(),
            _ => stream.to_string(),
        };
        let pair = self.pairs.entry(request.clone()).or_default();
        let taken = if kind == "error" {
            pair.error.replace(stream).is_some()
        } else {
            pair.data.replace(stream).is_some()
        };
        if taken {
            return self
                .refuse(stream, spdy::RST_REFUSED_STREAM, "stream type already open")
                .await;
        }
        if kind == "data" {
            // The kubelet forwards to the data stream's port.
            pair.port = port;
            let (tx, rx) = mpsc::channel(16);
            pair.input = Some(rx);
            self.inputs.insert(stream, tx);
        }
        self.send(Frame::SynReply {
            stream,
            flags: 0,
            headers: Vec::new(),
        })
        .await;
        let complete = self
            .pairs
            .get(&request)
            .is_some_and(|p| p.error.is_some() && p.data.is_some());
        if !complete {
            return;
        }
        if let Some(Pair {
            error: Some(error),
            data: Some(data),
            port,
            input: Some(input),
        }) = self.pairs.remove(&request)
        {
            let target = echo::Target {
                namespace: self.namespace.clone(),
                pod: self.pod.clone(),
                port,
            };
            tokio::spawn(connect(target, input, data, error, self.out.clone()));
        }
    }
}

/// Join a data stream to the pod's service on its port; FIN both streams when it is done.
async fn connect(
    target: echo::Target,
    input: mpsc::Receiver<Bytes>,
    data: u32,
    error: u32,
    out: mpsc::Sender<Frame>,
) {
    let (svc_tx, mut svc_rx) = mpsc::channel::<Bytes>(16);
    let service = tokio::spawn(echo::serve(target, input, svc_tx));
    while let Some(bytes) = svc_rx.recv().await {
        for chunk in bytes.chunks(CHUNK) {
            let frame = Frame::Data {
                stream: data,
                flags: 0,
                data: chunk.to_vec(),
            };
            if out.send(frame).await.is_err() {
                return;
            }
        }
    }
    let _ = service.await;
    for stream in [data, error] {
        let fin = Frame::Data {
            stream,
            flags: spdy::FLAG_FIN,
            data: Vec::new(),
        };
        if out.send(fin).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
