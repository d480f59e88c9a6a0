//! A SPDY/3.1 framer: the frames `kubectl port-forward` and its Go library (`moby/spdystream`)
//! exchange, read from and written to bytes.
//!
//! Accepts control frames of version 3 — SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING,
//! GOAWAY, HEADERS, WINDOW_UPDATE (others are skipped, as the spec asks) — and DATA frames.
//! Header blocks travel through one zlib stream per direction, each block ended by a sync
//! flush, with the SPDY/3 preset dictionary (`dictionary.rs`); compression is flate2's
//! (zlib-rs backend), never hand-written. Rejects, with a [`FrameError`] and never a panic:
//! another version, a stream id of 0 where one is needed, a frame body shorter than its fixed
//! fields, a header block that does not inflate (wrong dictionary, corrupt data), inflates past
//! [`MAX_HEADER_BLOCK`], or whose counts run past its end; frames longer than [`MAX_FRAME`].
//! No flow control is kept: spdystream neither sends nor obeys WINDOW_UPDATE.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary;

/// Largest frame body accepted (the wire allows 16 MiB; spdystream sends at most 32 KiB).
pub const MAX_FRAME: usize = 1 << 20;
/// Largest inflated header block accepted (kubectl's are a few dozen bytes).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
/// GOAWAY statuses.
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// Header name/value pairs (names lowercase; a value may hold several, NUL-separated).
pub type Headers = Vec<(String, String)>;

/// One frame, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings,
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type this framer does not know (skipped).
    Unknown(u16),
}

/// Why bytes are not a SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    Version(u16),
    TooLarge(usize),
    Short(&'static str),
    ZeroStream(&'static str),
    Headers(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Version(v) => write!(f, "SPDY version {v} is not 3"),
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds {MAX_FRAME}"),
            FrameError::Short(what) => write!(f, "{what} frame too short"),
            FrameError::ZeroStream(what) => write!(f, "{what} on stream 0"),
            FrameError::Headers(why) => write!(f, "bad header block: {why}"),
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

fn stream_id(b: &[u8], at: usize, what: &'static str) -> Result<u32, FrameError> {
    match be32(b, at) & 0x7fff_ffff {
        0 => Err(FrameError::ZeroStream(what)),
        id => Ok(id),
    }
}

/// Reads frames from bytes as they arrive; owns the inbound zlib stream.
pub struct Decoder {
    buf: Vec<u8>,
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            buf: Vec::new(),
            inflate: Decompress::new(true),
        }
    }
}

impl Decoder {
    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` until one is buffered. After an error the session
    /// must end: the compression state may be out of step with the peer.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let len = (be32(&self.buf, 4) & 0x00ff_ffff) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buf.drain(..8 + len).collect();
        let (head, body) = frame.split_at(8);
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let stream = stream_id(head, 0, "DATA")?;
            return Ok(Some(Frame::Data {
                stream,
                flags,
                data: body.to_vec(),
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        self.control(kind, flags, body).map(Some)
    }

    fn control(&mut self, kind: u16, flags: u8, b: &[u8]) -> Result<Frame, FrameError> {
        let need = |n: usize, what| {
            if b.len() < n {
                Err(FrameError::Short(what))
            } else {
                Ok(())
            }
        };
        Ok(match kind {
            1 => {
                need(10, "SYN_STREAM")?;
                let stream = stream_id(b, 0, "SYN_STREAM")?;
                let headers = self.headers(&b[10..])?;
                Frame::SynStream {
                    stream,
                    flags,
                    headers,
                }
            }
            2 => {
                need(4, "SYN_REPLY")?;
                let stream = stream_id(b, 0, "SYN_REPLY")?;
                let headers = self.headers(&b[4..])?;
                Frame::SynReply {
                    stream,
                    flags,
                    headers,
                }
            }
            3 => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream: stream_id(b, 0, "RST_STREAM")?,
                    status: be32(b, 4),
                }
            }
            4 => Frame::Settings,
            6 => {
                need(4, "PING")?;
                Frame::Ping(be32(b, 0))
            }
            7 => {
                need(8, "GOAWAY")?;
                Frame::GoAway {
                    last_good: be32(b, 0) & 0x7fff_ffff,
                    status: be32(b, 4),
                }
            }
            8 => {
                need(4, "HEADERS")?;
                let stream = stream_id(b, 0, "HEADERS")?;
                let headers = self.headers(&b[4..])?;
                Frame::Headers { stream, headers }
            }
            9 => {
                need(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream: be32(b, 0) & 0x7fff_ffff,
                    delta: be32(b, 4) & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown(other),
        })
    }

    /// Inflate one header block (continuing the session's zlib stream) and parse it.
    fn headers(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let mut out = Vec::with_capacity(256);
        let mut used = 0;
        while used < block.len() {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(FrameError::Headers("inflates past the limit"));
                }
                out.reserve(out.len().max(256));
            }
            let (in_before, out_before) = (self.inflate.total_in(), out.len());
            match self
                .inflate
                .decompress_vec(&block[used..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    if self.inflate.set_dictionary(dictionary::bytes()).is_err() {
                        return Err(FrameError::Headers("wrong compression dictionary"));
                    }
                }
                Err(_) => return Err(FrameError::Headers("corrupt compressed data")),
            }
            used += (self.inflate.total_in() - in_before) as usize;
            let progressed = self.inflate.total_in() != in_before || out.len() != out_before;
            if !progressed && out.len() < out.capacity() {
                return Err(FrameError::Headers("compressed data stalls"));
            }
        }
        parse_block(&out)
    }
}

/// Parse an inflated header block: count, then (length, name, length, value) pairs.
pub fn parse_block(b: &[u8]) -> Result<Headers, FrameError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], FrameError> {
        let s = b
            .get(at..at.saturating_add(n))
            .ok_or(FrameError::Headers("runs past its end"))?;
        at += n;
        Ok(s)
    };
    let count = be32(take(4)?, 0) as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = be32(take(4)?, 0) as usize;
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = be32(take(4)?, 0) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// The first value of `name` (names compared case-insensitively, as Go's http.Header does).
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

/// Writes frames as bytes; owns the outbound zlib stream.
pub struct Encoder {
    deflate: Compress,
    primed: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            deflate: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

fn control_head(out: &mut Vec<u8>, kind: u16, flags: u8, len: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(((flags as u32) << 24) | (len as u32 & 0x00ff_ffff)).to_be_bytes());
}

impl Encoder {
    /// The frame's bytes. Only frames with a header block can fail (deflate refusing).
    pub fn encode(&mut self, f: &Frame) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        match f {
            Frame::SynStream {
                stream,
                flags,
                headers,
            } => {
                let block = self.block(headers)?;
                control_head(&mut out, 1, *flags, 10 + block.len());
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&[0; 6]);
                out.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream,
                flags,
                headers,
            } => {
                let block = self.block(headers)?;
                control_head(&mut out, 2, *flags, 4 + block.len());
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Frame::Headers { stream, headers } => {
                let block = self.block(headers)?;
                control_head(&mut out, 8, 0, 4 + block.len());
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Frame::RstStream { stream, status } => {
                control_head(&mut out, 3, 0, 8);
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::Settings => {
                control_head(&mut out, 4, 0, 4);
                out.extend_from_slice(&[0; 4]);
            }
            Frame::Ping(id) => {
                control_head(&mut out, 6, 0, 4);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Frame::GoAway { last_good, status } => {
                control_head(&mut out, 7, 0, 8);
                out.extend_from_slice(&(last_good & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::WindowUpdate { stream, delta } => {
                control_head(&mut out, 9, 0, 8);
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
            }
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                let len = data.len().min(0x00ff_ffff) as u32;
                out.extend_from_slice(&(((*flags as u32) << 24) | len).to_be_bytes());
                out.extend_from_slice(&data[..len as usize]);
            }
            Frame::Unknown(kind) => control_head(&mut out, *kind, 0, 0),
        }
        Ok(out)
    }

    /// Serialize and deflate a header block (names lowercased, as SPDY/3 requires and
    /// spdystream checks), ending with a sync flush so the peer can inflate it alone.
    fn block(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        if !self.primed {
            if self.deflate.set_dictionary(dictionary::bytes()).is_err() {
                return Err(FrameError::Headers("deflate refused the dictionary"));
            }
            self.primed = true;
        }
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (n, v) in headers {
            let n = n.to_ascii_lowercase();
            plain.extend_from_slice(&(n.len() as u32).to_be_bytes());
            plain.extend_from_slice(n.as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut used = 0usize;
        loop {
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(&plain[used..], &mut out, FlushCompress::Sync)
                .map_err(|_| FrameError::Headers("deflate failed"))?;
            used += (self.deflate.total_in() - before) as usize;
            // Done once all input is in and the flush fit (room left in the output).
            if used >= plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if matches!(status, Status::BufError) && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

#[cfg(test)]
#[path = "spdy_tests.rs"]
mod tests;
