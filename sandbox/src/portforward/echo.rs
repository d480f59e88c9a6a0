//! What listens on every port of a sandbox pod: a tiny HTTP server that names the pod and port,
//! and a TCP echo for anything else.
//!
//! A connection whose first bytes look like an HTTP/1.x request line (`GET /path HTTP/1.1`)
//! gets one `200 OK` (`text/plain`, `Connection: close`) with the body
//! `pod NS/NAME port N: METHOD PATH` — no body for HEAD — and is then closed. Any other
//! connection has its bytes echoed back until the client half-closes, then closes. A request
//! head larger than [`MAX_HEAD`] gets `431` and is closed.

use bytes::Bytes;
use tokio::sync::mpsc;

/// Largest HTTP request head read.
pub const MAX_HEAD: usize = 16 * 1024;

/// The pod and port a connection reached.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    pub port: u16,
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

fn looks_like_http(first: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| first.len() > m.len() && first.starts_with(m.as_bytes()) && first[m.len()] == b' ')
}

/// Serve one connection: `input` yields the client's bytes (closed = the client's FIN),
/// `output` takes ours (dropped = our FIN).
pub async fn serve(target: Target, mut input: mpsc::Receiver<Bytes>, output: mpsc::Sender<Bytes>) {
    let Some(first) = input.recv().await else {
        return;
    };
    if !looks_like_http(&first) {
        if output.send(first).await.is_err() {
            return;
        }
        while let Some(b) = input.recv().await {
            if output.send(b).await.is_err() {
                return;
            }
        }
        return;
    }
    let mut head = first.to_vec();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            let _ = output
                .send(response(431, "request header too large\n", false))
                .await;
            return;
        }
        match input.recv().await {
            Some(b) => head.extend_from_slice(&b),
            None => return,
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split("\r\n").next().unwrap_or("").split(' ');
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let body = format!(
        "pod {}/{} port {}: {method} {path}\n",
        target.namespace, target.pod, target.port
    );
    let _ = output.send(response(200, &body, method != "HEAD")).await;
}

fn response(code: u16, body: &str, with_body: bool) -> Bytes {
    let reason = if code == 200 {
        "OK"
    } else {
        "Request Header Fields Too Large"
    };
    let mut r = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nServer: portcullis-sandbox\r\n\r\n",
        body.len()
    );
    if with_body {
        r.push_str(body);
    }
    Bytes::from(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let (in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let t = Target {
            namespace: "team-a".into(),
            pod: "web".into(),
            port: 80,
        };
        let task = tokio::spawn(serve(t, in_rx, out_tx));
        for c in chunks {
            in_tx.send(Bytes::copy_from_slice(c)).await.unwrap();
        }
        drop(in_tx);
        let mut out = Vec::new();
        while let Some(b) = out_rx.recv().await {
            out.extend_from_slice(&b);
        }
        task.await.unwrap();
        out
    }

    #[tokio::test]
    async fn http_get_names_the_pod_and_port() {
        let out = run(&[b"GET /hello HTT", b"P/1.1\r\nHost: x\r\n\r\n"]).await;
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"));
        assert!(
            text.ends_with("\r\n\r\npod team-a/web port 80: GET /hello\n"),
            "{text}"
        );
        let head = String::from_utf8(run(&[b"HEAD / HTTP/1.1\r\n\r\n"]).await).unwrap();
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }

    #[tokio::test]
    async fn other_bytes_are_echoed_until_the_client_closes() {
        assert_eq!(run(&[b"ping\n", b"\x00\x01"]).await, b"ping\n\x00\x01");
    }

    #[tokio::test]
    async fn an_endless_head_is_431() {
        let big = vec![b'a'; MAX_HEAD + 10];
        let out = run(&[b"GET / HTTP/1.1\r\n", &big]).await;
        assert!(out.starts_with(b"HTTP/1.1 431 "));
    }
}
