//! The SPDY reader against frames built as spdystream builds them (header blocks deflated
//! with the SPDY/3 dictionary, one zlib stream per direction).

use flate2::{Compress, Compression, FlushCompress};

use super::*;

/// The client's header compressor (one per direction, primed with the dictionary).
struct Deflate(Compress);

impl Deflate {
    fn new() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(crate::k8s::spdy_dictionary::bytes())
            .unwrap();
        Deflate(c)
    }

    fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
        for (n, v) in headers {
            plain.extend_from_slice(&(n.len() as u32).to_be_bytes());
            plain.extend_from_slice(n.as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 128);
        self.0
            .compress_vec(&plain, &mut out, FlushCompress::Sync)
            .unwrap();
        out
    }
}

fn control(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80, 3];
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(0);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

fn syn_stream(d: &mut Deflate, id: u32, stream_type: &str) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&[0; 6]);
    body.extend(d.block(&[("streamtype", stream_type)]));
    control(SYN_STREAM, &body)
}

fn data(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = id.to_be_bytes().to_vec();
    f.push(0);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

fn gathered(frames: &[Frame], kind: Kind) -> Vec<u8> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data(k, d) if *k == kind => Some(d.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn streams_named_by_the_client_give_stdin_stdout_stderr_status_and_resize() {
    let mut d = Deflate::new();
    let mut client = Vec::new();
    for (id, t) in [
        (1, "error"),
        (3, "stdin"),
        (5, "stdout"),
        (7, "stderr"),
        (9, "resize"),
    ] {
        client.extend(syn_stream(&mut d, id, t));
    }
    client.extend(control(6, &7u32.to_be_bytes())); // PING, skipped
    client.extend(data(9, br#"{"Width":100,"Height":30}{"Width":90,"#));
    client.extend(data(9, br#""Height":20}"#));
    client.extend(data(3, b"echo hi\n"));
    let mut server = control(SYN_REPLY, &[0, 0, 0, 1, 0, 0, 0x78, 0x01]);
    server.extend(data(5, b"hi\n"));
    server.extend(data(7, b"warn\n"));
    server.extend(data(1, br#"{"status":"Success"}"#));

    let (mut c, mut s) = pair();
    let mut from_client = Vec::new();
    // Byte by byte: frames split anywhere.
    for b in &client {
        c.feed(std::slice::from_ref(b), &mut from_client);
    }
    let mut from_server = Vec::new();
    s.feed(&server, &mut from_server);
    assert_eq!(
        from_client[0],
        Frame::Resize {
            width: 100,
            height: 30
        }
    );
    assert_eq!(
        from_client[1],
        Frame::Resize {
            width: 90,
            height: 20
        }
    );
    assert_eq!(gathered(&from_client, Kind::Stdin), b"echo hi\n");
    assert_eq!(gathered(&from_server, Kind::Stdout), b"hi\n");
    assert_eq!(gathered(&from_server, Kind::Stderr), b"warn\n");
    assert_eq!(
        gathered(&from_server, Kind::Status),
        br#"{"status":"Success"}"#
    );
}

#[test]
fn a_block_that_does_not_inflate_stops_the_reading() {
    let (mut c, _) = pair();
    let mut out = Vec::new();
    let mut body = 3u32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0; 6]);
    body.extend_from_slice(b"not zlib at all");
    c.feed(&control(SYN_STREAM, &body), &mut out);
    c.feed(&data(3, b"x"), &mut out);
    assert!(out.is_empty());
    assert!(c.broken);
}

/// A client opening streams without end breaks the reading (which ends the session) instead
/// of growing the tables; kubectl's five pass.
#[test]
fn more_streams_than_a_remote_command_uses_break_the_reading() {
    let (mut c, _) = pair();
    let mut d = Deflate::new();
    let mut out = Vec::new();
    for (id, kind) in [
        (1, "error"),
        (3, "stdin"),
        (5, "stdout"),
        (7, "stderr"),
        (9, "resize"),
    ] {
        c.feed(&syn_stream(&mut d, id, kind), &mut out);
    }
    assert!(!c.broken());
    for id in 0..MAX_STREAMS as u32 {
        c.feed(&syn_stream(&mut d, 11 + 2 * id, "resize"), &mut out);
    }
    assert!(c.broken());
    let (mut c, _) = pair();
    let mut d = Deflate::new();
    for id in 0..=MAX_STREAMS as u32 {
        c.feed(&syn_stream(&mut d, 1 + 2 * id, "stdout"), &mut out);
    }
    assert!(c.broken());
}
