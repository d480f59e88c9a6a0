//! Session tests: a client framer on one end of a duplex pipe, the session on the other.

use super::*;
use crate::portforward::tunnel;
use tokio::io::DuplexStream;

struct Client {
    rx: tunnel::Rx<DuplexStream>,
    tx: tunnel::Tx<DuplexStream>,
    enc: Encoder,
    dec: Decoder,
}

impl Client {
    fn start() -> Client {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (srx, stx) = tunnel::raw(a);
        tokio::spawn(run(srx, stx, "team-a".into(), "web".into()));
        let (rx, tx) = tunnel::raw(b);
        Client {
            rx,
            tx,
            enc: Encoder::default(),
            dec: Decoder::default(),
        }
    }

    async fn send(&mut self, f: Frame) {
        let bytes = self.enc.encode(&f).unwrap();
        self.tx.send(bytes).await.unwrap();
    }

    async fn open(&mut self, stream: u32, kind: &str, port: &str, request: &str) {
        let headers = vec![
            ("streamtype".to_string(), kind.to_string()),
            ("port".to_string(), port.to_string()),
            ("requestid".to_string(), request.to_string()),
        ];
        self.send(Frame::SynStream {
            stream,
            flags: 0,
            headers,
        })
        .await;
    }

    /// The next frame from the server (None once it closed).
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.dec.next_frame().unwrap() {
                return Some(f);
            }
            let bytes = tokio::time::timeout(std::time::Duration::from_secs(5), self.rx.recv())
                .await
                .expect("server silent for 5 s")?;
            self.dec.push(&bytes);
        }
    }
}

fn data(stream: u32, flags: u8, d: &[u8]) -> Frame {
    Frame::Data {
        stream,
        flags,
        data: d.to_vec(),
    }
}

#[tokio::test]
async fn a_stream_pair_reaches_the_pods_http_service() {
    let mut c = Client::start();
    c.open(1, "error", "8080", "0").await;
    c.open(3, "data", "8080", "0").await;
    for id in [1, 3] {
        assert_eq!(
            c.next().await,
            Some(Frame::SynReply {
                stream: id,
                flags: 0,
                headers: vec![]
            })
        );
    }
    c.send(data(1, spdy::FLAG_FIN, b"")).await;
    c.send(data(3, 0, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"))
        .await;
    let mut body = Vec::new();
    let mut fins = Vec::new();
    while fins.len() < 2 {
        match c.next().await.unwrap() {
            Frame::Data {
                stream: 3,
                flags,
                data,
            } => {
                body.extend_from_slice(&data);
                if flags & spdy::FLAG_FIN != 0 {
                    fins.push(3);
                }
            }
            Frame::Data {
                stream: 1,
                flags: spdy::FLAG_FIN,
                data,
            } => {
                assert!(data.is_empty(), "an error was reported");
                fins.push(1);
            }
            f => panic!("unexpected {f:?}"),
        }
    }
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.ends_with("pod team-a/web port 8080: GET /x\n"),
        "{text}"
    );
}

#[tokio::test]
async fn raw_bytes_echo_until_the_client_half_closes_and_pings_are_answered() {
    let mut c = Client::start();
    c.open(1, "error", "5432", "7").await;
    c.open(3, "data", "5432", "7").await;
    c.next().await;
    c.next().await;
    c.send(Frame::Ping(1)).await;
    assert_eq!(c.next().await, Some(Frame::Ping(1)));
    c.send(data(3, 0, b"\x00hello")).await;
    c.send(data(3, spdy::FLAG_FIN, b" world")).await;
    let mut got = Vec::new();
    loop {
        match c.next().await.unwrap() {
            Frame::Data {
                stream: 3,
                flags,
                data,
            } => {
                got.extend_from_slice(&data);
                if flags & spdy::FLAG_FIN != 0 {
                    break;
                }
            }
            f => panic!("unexpected {f:?}"),
        }
    }
    assert_eq!(got, b"\x00hello world");
}

#[tokio::test]
async fn bad_streams_are_reset_and_garbage_ends_the_session() {
    let mut c = Client::start();
    c.open(1, "data", "0", "1").await;
    c.open(3, "data", "http", "1").await;
    c.open(5, "stdin", "80", "1").await;
    c.open(4, "data", "80", "1").await;
    c.open(7, "data", "80", "2").await;
    c.open(9, "data", "80", "2").await;
    let mut resets = Vec::new();
    for _ in 0..6 {
        match c.next().await.unwrap() {
            Frame::RstStream { stream, status } => resets.push((stream, status)),
            Frame::SynReply { stream: 7, .. } => {}
            f => panic!("unexpected {f:?}"),
        }
    }
    assert_eq!(
        resets,
        vec![
            (1, spdy::RST_REFUSED_STREAM),
            (3, spdy::RST_REFUSED_STREAM),
            (5, spdy::RST_REFUSED_STREAM),
            (4, spdy::RST_PROTOCOL_ERROR),
            (9, spdy::RST_REFUSED_STREAM),
        ]
    );
    c.tx.send(vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
        .await
        .unwrap();
    assert!(matches!(
        c.next().await,
        Some(Frame::GoAway {
            status: spdy::GOAWAY_PROTOCOL_ERROR,
            ..
        })
    ));
    assert_eq!(c.next().await, None, "the session closes after GOAWAY");
}
