//! Port-forward over the WebSocket channel protocol (`v4.channel.k8s.io` / `channel.k8s.io`,
//! binary), what the Python client's `portforward()` speaks (kubelet's `websocket.go`).
//!
//! Each port of `?ports=` (in order, index `i`) gets data channel `2i` and error channel
//! `2i+1`; the server first sends, on each, the port number as two little-endian bytes. Then
//! every binary message is one channel byte plus payload; the client writes only to data
//! channels. There is one connection per port and no per-channel close, so the WebSocket
//! closes once every port's service has finished (or when the client closes it). Messages for
//! unknown or error channels are ignored.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};

use super::{echo, tunnel::Io};

/// Most ports one request may name (channel numbers must fit in a byte).
pub const MAX_PORTS: usize = 128;

fn frame(channel: usize, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel as u8);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Serve `ports` of `namespace/pod` over `ws` until the client or every service is done.
pub async fn run<S: Io>(ws: WebSocketStream<S>, namespace: String, pod: String, ports: Vec<u16>) {
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(64);
    let mut inputs = Vec::with_capacity(ports.len());
    for (i, &port) in ports.iter().enumerate() {
        for channel in [2 * i, 2 * i + 1] {
            let _ = out.send(frame(channel, &port.to_le_bytes())).await;
        }
        let (in_tx, in_rx) = mpsc::channel::<Bytes>(16);
        let (svc_tx, mut svc_rx) = mpsc::channel::<Bytes>(16);
        let target = echo::Target {
            namespace: namespace.clone(),
            pod: pod.clone(),
            port,
        };
        tokio::spawn(echo::serve(target, in_rx, svc_tx));
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(b) = svc_rx.recv().await {
                if out.send(frame(2 * i, &b)).await.is_err() {
                    return;
                }
            }
        });
        inputs.push(in_tx);
    }
    drop(out);
    // The writer ends once every service's output is closed: then the WebSocket closes.
    let mut writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    loop {
        tokio::select! {
            _ = &mut writer => return,
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let Some((&channel, data)) = b.split_first() else { continue };
                    let channel = channel as usize;
                    if channel.is_multiple_of(2) && !data.is_empty() {
                        if let Some(input) = inputs.get(channel / 2) {
                            let _ = input.send(Bytes::copy_from_slice(data)).await;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // The client left: end every service's input; the writer then finishes.
    drop(inputs);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test]
    async fn ports_announced_then_http_and_echo_on_their_channels() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        tokio::spawn(run(server, "ns".into(), "p".into(), vec![80, 5432]));
        let mut first = Vec::new();
        for _ in 0..4 {
            match client.next().await.unwrap().unwrap() {
                Message::Binary(b) => first.push(b.to_vec()),
                m => panic!("{m:?}"),
            }
        }
        assert_eq!(
            first,
            vec![
                vec![0, 80, 0],
                vec![1, 80, 0],
                vec![2, 0x38, 0x15],
                vec![3, 0x38, 0x15]
            ]
        );
        client
            .send(frame(0, b"GET /py HTTP/1.1\r\n\r\n"))
            .await
            .unwrap();
        client.send(frame(2, b"echo me")).await.unwrap();
        let (mut http, mut echoed) = (Vec::new(), Vec::new());
        while !(http.ends_with(b"GET /py\n") && echoed == b"echo me") {
            match client.next().await.unwrap().unwrap() {
                Message::Binary(b) if b[0] == 0 => http.extend_from_slice(&b[1..]),
                Message::Binary(b) if b[0] == 2 => echoed.extend_from_slice(&b[1..]),
                m => panic!("{m:?}"),
            }
        }
        assert!(String::from_utf8_lossy(&http).ends_with("pod ns/p port 80: GET /py\n"));
        // Closing ends the session (and with it the echo service).
        client.close(None).await.unwrap();
        while let Some(Ok(_)) = client.next().await {}
    }
}
