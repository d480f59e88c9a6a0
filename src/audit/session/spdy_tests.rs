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
        self.raw(&plain)
    }

    /// `plain` deflated as the next part of this stream, flushed.
    fn raw(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 128);
        self.0
            .compress_vec(plain, &mut out, FlushCompress::Sync)
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

/// Client frames whose extent spdystream reads otherwise than their length field says — a
/// PING longer than its 4 bytes (the rest would be a DATA frame to stdin there), a SETTINGS
/// whose count disagrees with its length, a type spdystream does not know, a SYN_STREAM too
/// short for its fixed fields — a reused stream id, and a header block split over two frames
/// (one zlib stream in spdystream: the second frame would complete the first's block) all
/// stop the reading; well-formed ones do not.
#[test]
fn control_frames_are_read_as_spdystream_reads_them() {
    let opened = || {
        let (mut c, _) = pair();
        let mut d = Deflate::new();
        let mut out = Vec::new();
        c.feed(&syn_stream(&mut d, 1, "error"), &mut out);
        c.feed(&syn_stream(&mut d, 3, "stdin"), &mut out);
        assert!(!c.broken());
        (c, d)
    };
    let smuggled = [&0u32.to_be_bytes()[..], &data(3, b"rm -rf /\n")].concat();
    let mut settings_ok = 1u32.to_be_bytes().to_vec();
    settings_ok.extend_from_slice(&[0; 8]);
    let mut settings_short = 2u32.to_be_bytes().to_vec();
    settings_short.extend_from_slice(&[0; 8]);
    for (what, frame, broken) in [
        ("ping", control(PING, &7u32.to_be_bytes()), false),
        ("long ping", control(PING, &smuggled), true),
        ("rst", control(RST_STREAM, &[0, 0, 0, 3, 0, 0, 0, 5]), false),
        ("long rst", control(RST_STREAM, &[0; 12]), true),
        ("settings", control(SETTINGS, &settings_ok), false),
        ("settings count", control(SETTINGS, &settings_short), true),
        (
            "window",
            control(WINDOW_UPDATE, &[0, 0, 0, 3, 0, 0, 1, 0]),
            false,
        ),
        ("noop", control(5, &[]), true),
        ("unknown", control(12, &[0; 4]), true),
        (
            "short syn",
            control(SYN_STREAM, &[0, 0, 0, 5, 0, 0, 0, 0]),
            true,
        ),
    ] {
        let (mut c, _) = opened();
        let mut out = Vec::new();
        c.feed(&frame, &mut out);
        assert_eq!(c.broken(), broken, "{what}");
        assert!(out.is_empty(), "{what}: {out:?}");
    }
    // A stream id opened again (or a lower one).
    let (mut c, mut d) = opened();
    c.feed(&syn_stream(&mut d, 3, "stdout"), &mut Vec::new());
    assert!(c.broken());
    // A frame whose block inflates to part of a block (spdystream would finish it from the
    // next frame's bytes), or to a block and the start of another.
    let whole = {
        let mut b = 1u32.to_be_bytes().to_vec();
        for part in [&b"streamtype"[..], b"stdin"] {
            b.extend_from_slice(&(part.len() as u32).to_be_bytes());
            b.extend_from_slice(part);
        }
        b
    };
    for plain in [
        &whole[..whole.len() - 3],
        &[&whole[..], &[0, 0][..]].concat(),
    ] {
        let (mut c, _) = pair();
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend_from_slice(&[0; 6]);
        body.extend(Deflate::new().raw(plain));
        c.feed(&control(SYN_STREAM, &body), &mut Vec::new());
        assert!(c.broken(), "{plain:?}");
    }
}

/// A DATA frame with `flags` (FLAG_FIN: the sender's last on the stream).
fn data_flags(id: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = data(id, payload);
    f[4] = flags;
    f
}

/// Stdin a client sends on a stream it has ended — after the DATA frame with FLAG_FIN (whose
/// own data is delivered), after its RST_STREAM, on a stream its SYN_STREAM opened half-closed
/// — is dropped by spdystream, so it is not recorded: a forged command never shows as typed.
/// A second stdin stream stops the reading.
#[test]
fn stdin_after_the_client_ended_its_stream_is_not_recorded() {
    let stdin_of = |frames: &[Vec<u8>], fin_syn: bool| {
        let (mut c, _) = pair();
        let mut d = Deflate::new();
        let mut out = Vec::new();
        let mut syn = syn_stream(&mut d, 1, "stdin");
        if fin_syn {
            syn[4] = FLAG_FIN;
        }
        c.feed(&syn, &mut out);
        // Byte by byte: the end of a frame is found across reads too.
        for b in frames.concat() {
            c.feed(&[b], &mut out);
        }
        assert!(!c.broken());
        gathered(&out, Kind::Stdin)
    };
    let forged = data(1, b"forged\n");
    let real = || data(1, b"real\n");
    for (what, frames) in [
        (
            "FLAG_FIN",
            vec![data_flags(1, FLAG_FIN, b"real\n"), forged.clone()],
        ),
        (
            "empty FLAG_FIN",
            vec![real(), data_flags(1, FLAG_FIN, b""), forged.clone()],
        ),
        (
            "RST_STREAM",
            vec![
                real(),
                control(RST_STREAM, &[0, 0, 0, 1, 0, 0, 0, 5]),
                forged.clone(),
            ],
        ),
    ] {
        assert_eq!(stdin_of(&frames, false), b"real\n", "{what}");
    }
    // A RST_STREAM of another stream leaves stdin open.
    let other = [
        real(),
        control(RST_STREAM, &[0, 0, 0, 3, 0, 0, 0, 5]),
        data(1, b"more\n"),
    ];
    assert_eq!(stdin_of(&other, false), b"real\nmore\n");
    // Opened with FLAG_FIN: nothing on it reaches the pod.
    assert_eq!(stdin_of(std::slice::from_ref(&forged), true), b"");

    // A resize stream ended the same way gives no more resizes.
    let (mut c, _) = pair();
    let mut d = Deflate::new();
    let mut out = Vec::new();
    c.feed(&syn_stream(&mut d, 1, "resize"), &mut out);
    c.feed(
        &data_flags(1, FLAG_FIN, br#"{"Width":10,"Height":5}"#),
        &mut out,
    );
    c.feed(&data(1, br#"{"Width":99,"Height":9}"#), &mut out);
    assert_eq!(
        out,
        [Frame::Resize {
            width: 10,
            height: 5
        }]
    );

    // A second stdin stream: which one the kubelet reads is a matter of timing.
    let (mut c, _) = pair();
    let mut d = Deflate::new();
    c.feed(&syn_stream(&mut d, 1, "stdin"), &mut Vec::new());
    c.feed(&syn_stream(&mut d, 3, "stdin"), &mut Vec::new());
    assert!(c.broken());
}
