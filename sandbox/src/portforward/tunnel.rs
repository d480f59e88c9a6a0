//! The byte pipe a SPDY session runs over: the upgraded connection itself (`Upgrade:
//! SPDY/3.1`), or a WebSocket whose binary messages carry the SPDY bytes (subprotocol
//! `SPDY/3.1+portforward.k8s.io`, what kubectl ≥ 1.31 tries first; client-go's
//! `tunneling_connection.go`: each write is one binary message, reads concatenate payloads).
//!
//! Accepts any split of the SPDY byte stream across messages. Text messages are a protocol
//! error (the session ends); pings are answered by tungstenite; a close message ends the
//! session.

use bytes::Bytes;
use futures_util::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};

/// What the pipe runs on (an upgraded connection; a duplex stream in tests).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The receiving half.
pub enum Rx<S> {
    Raw(ReadHalf<S>),
    Ws(SplitStream<WebSocketStream<S>>),
}

/// The sending half.
pub enum Tx<S> {
    Raw(WriteHalf<S>),
    Ws(SplitSink<WebSocketStream<S>, Message>),
}

/// Split a plain upgraded connection.
pub fn raw<S: Io>(io: S) -> (Rx<S>, Tx<S>) {
    let (r, w) = tokio::io::split(io);
    (Rx::Raw(r), Tx::Raw(w))
}

/// Split a WebSocket tunnel.
pub fn websocket<S: Io>(ws: WebSocketStream<S>) -> (Rx<S>, Tx<S>) {
    let (w, r) = ws.split();
    (Rx::Ws(r), Tx::Ws(w))
}

impl<S: Io> Rx<S> {
    /// The next bytes; `None` once the peer closed (or broke) the pipe.
    pub async fn recv(&mut self) -> Option<Bytes> {
        match self {
            Rx::Raw(r) => {
                let mut buf = vec![0u8; 16 * 1024];
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some(buf.into())
                    }
                }
            }
            Rx::Ws(s) => loop {
                match s.next().await? {
                    Ok(Message::Binary(b)) => return Some(b),
                    Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                    Ok(Message::Text(_) | Message::Close(_)) | Err(_) => return None,
                }
            },
        }
    }
}

impl<S: Io> Tx<S> {
    pub async fn send(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        match self {
            Tx::Raw(w) => {
                w.write_all(&bytes).await?;
                w.flush().await
            }
            Tx::Ws(s) => s
                .send(Message::binary(bytes))
                .await
                .map_err(std::io::Error::other),
        }
    }

    /// End the pipe (TCP FIN, or a WebSocket close).
    pub async fn close(&mut self) {
        let _ = match self {
            Tx::Raw(w) => w.shutdown().await,
            Tx::Ws(s) => s.close().await.map_err(std::io::Error::other),
        };
    }
}
