//! Framer tests: round trips, header compression with the SPDY/3 dictionary (against bytes
//! made by C zlib), and malformed input that must fail without panicking.

use super::*;

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn decode_all(d: &mut Decoder) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        out.push(f);
    }
    out
}

/// Two SYN_STREAMs as kubectl opens them for one forwarded connection, compressed by C zlib
/// (Python's `zlib.compressobj(zdict=SPDY/3 dictionary)`, sync flush after each block).
const KUBECTL_LIKE: &str = "800300010000003c0000000100000000000078f9e3c6a7c202253a48f95b044aab4c16064092b308125b99a054cc68004e872545a989b9d0a2863515141100000000ffff800300010000001600000003000000000000224b2ba8944a04000000ffff";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn reads_blocks_compressed_by_c_zlib_with_the_dictionary() {
    let mut d = Decoder::default();
    d.push(&unhex(KUBECTL_LIKE));
    let frames = decode_all(&mut d);
    assert_eq!(
        frames,
        vec![
            Frame::SynStream {
                stream: 1,
                flags: 0,
                headers: h(&[("port", "80"), ("requestid", "0"), ("streamtype", "error")]),
            },
            Frame::SynStream {
                stream: 3,
                flags: 0,
                headers: h(&[("port", "80"), ("requestid", "0"), ("streamtype", "data")]),
            },
        ]
    );
}

#[test]
fn every_frame_round_trips_and_the_zlib_stream_carries_over() {
    let frames = vec![
        Frame::SynStream {
            stream: 1,
            flags: FLAG_FIN,
            headers: h(&[("streamtype", "error"), ("port", "8080")]),
        },
        Frame::SynReply {
            stream: 1,
            flags: 0,
            headers: vec![],
        },
        // The second block reuses the first's window: only the shared zlib stream decodes it.
        Frame::SynReply {
            stream: 3,
            flags: 0,
            headers: h(&[("streamtype", "error"), ("port", "8080")]),
        },
        Frame::Headers {
            stream: 3,
            headers: h(&[("x", "a\0b")]),
        },
        Frame::RstStream {
            stream: 5,
            status: RST_REFUSED_STREAM,
        },
        Frame::Settings,
        Frame::Ping(7),
        Frame::GoAway {
            last_good: 9,
            status: GOAWAY_PROTOCOL_ERROR,
        },
        Frame::WindowUpdate {
            stream: 1,
            delta: 65536,
        },
        Frame::Data {
            stream: 3,
            flags: FLAG_FIN,
            data: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        },
        Frame::Data {
            stream: 3,
            flags: 0,
            data: vec![],
        },
        Frame::Unknown(10),
    ];
    let mut e = Encoder::default();
    let wire: Vec<u8> = frames.iter().flat_map(|f| e.encode(f).unwrap()).collect();
    // Byte by byte: a frame is only returned once it is complete.
    let mut d = Decoder::default();
    let mut got = Vec::new();
    for b in &wire {
        d.push(std::slice::from_ref(b));
        got.extend(decode_all(&mut d));
    }
    assert_eq!(got, frames);
}

#[test]
fn header_blocks_announce_the_spdy3_dictionary() {
    let mut e = Encoder::default();
    let wire = e
        .encode(&Frame::SynReply {
            stream: 1,
            flags: 0,
            headers: vec![],
        })
        .unwrap();
    let block = &wire[12..];
    // zlib header with FDICT set, then the dictionary's Adler-32 (what Go's zlib checks).
    assert_eq!(block[1] & 0x20, 0x20, "FDICT flag");
    assert_eq!(&block[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
    // Names go out lowercase (spdystream refuses others).
    let wire = e
        .encode(&Frame::Headers {
            stream: 1,
            headers: h(&[("Port", "80")]),
        })
        .unwrap();
    let mut d = Decoder::default();
    d.push(
        &Encoder::default()
            .encode(&Frame::SynReply {
                stream: 1,
                flags: 0,
                headers: vec![],
            })
            .unwrap(),
    );
    d.push(&wire);
    let got = decode_all(&mut d);
    assert_eq!(
        got[1],
        Frame::Headers {
            stream: 1,
            headers: h(&[("port", "80")])
        }
    );
}

#[test]
fn a_block_compressed_without_the_dictionary_is_refused() {
    // A zlib stream with no preset dictionary decodes (FDICT unset), but one made with another
    // dictionary must not.
    let mut c = Compress::new(Compression::default(), true);
    c.set_dictionary(b"not the spdy dictionary").unwrap();
    let mut block = Vec::with_capacity(128);
    c.compress_vec(&[0, 0, 0, 0], &mut block, FlushCompress::Sync)
        .unwrap();
    let mut wire = Vec::new();
    control_head(&mut wire, 2, 0, 4 + block.len());
    wire.extend_from_slice(&1u32.to_be_bytes());
    wire.extend_from_slice(&block);
    let mut d = Decoder::default();
    d.push(&wire);
    assert!(matches!(d.next_frame(), Err(FrameError::Headers(_))));
}

#[test]
fn malformed_frames_are_errors() {
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut v2 = Vec::new();
    control_head(&mut v2, 6, 0, 4);
    v2[1] = 2;
    v2.extend_from_slice(&[0, 0, 0, 1]);
    cases.push(("version 2", v2));
    let mut short = Vec::new();
    control_head(&mut short, 3, 0, 4);
    short.extend_from_slice(&[0, 0, 0, 1]);
    cases.push(("short RST_STREAM", short));
    let mut zero = Vec::new();
    control_head(&mut zero, 2, 0, 6);
    zero.extend_from_slice(&[0, 0, 0, 0, 0x78, 0xbb]);
    cases.push(("SYN_REPLY on stream 0", zero));
    cases.push(("DATA on stream 0", vec![0, 0, 0, 0, 0, 0, 0, 1, b'x']));
    cases.push(("huge", vec![0, 0, 0, 1, 0, 0xff, 0xff, 0xff]));
    let mut garbage = Vec::new();
    control_head(&mut garbage, 1, 0, 14);
    garbage.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    cases.push(("garbage header block", garbage));
    for (what, bytes) in cases {
        let mut d = Decoder::default();
        d.push(&bytes);
        assert!(d.next_frame().is_err(), "{what}");
    }
    // Counts that run past the block.
    assert!(parse_block(&[0, 0, 0, 2, 0, 0, 0, 1, b'a']).is_err());
    assert!(parse_block(&[0xff, 0xff, 0xff, 0xff]).is_err());
    assert!(parse_block(&[]).is_err());
}

#[test]
fn random_bytes_never_panic() {
    // A small xorshift: deterministic, so a failure reproduces.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let valid = unhex(KUBECTL_LIKE);
    for round in 0..2000 {
        let mut bytes = if round % 2 == 0 {
            valid.clone()
        } else {
            (0..(next() % 96) as usize).map(|_| next() as u8).collect()
        };
        // Flip a few bytes of the valid stream, or force a control bit / version 3.
        for _ in 0..(next() % 4) {
            if !bytes.is_empty() {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
        }
        if round % 3 == 0 && bytes.len() > 2 {
            bytes[0] = 0x80;
            bytes[1] = 3;
        }
        let mut d = Decoder::default();
        d.push(&bytes);
        for _ in 0..8 {
            match d.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[test]
fn header_lookup_is_case_insensitive_and_takes_the_first_value() {
    let hs = h(&[("StreamType", "data\0error"), ("port", "80")]);
    assert_eq!(header(&hs, "streamtype"), Some("data"));
    assert_eq!(header(&hs, "Port"), Some("80"));
    assert_eq!(header(&hs, "requestid"), None);
}
