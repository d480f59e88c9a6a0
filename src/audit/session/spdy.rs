//! Reading a spliced SPDY/3.1 exec / attach session (client-go's `remotecommand` over
//! `moby/spdystream`) off both byte streams, for the recording only: the bytes pass on
//! untouched whatever this makes of them.
//!
//! The client opens one stream per channel with a SYN_STREAM whose `streamtype` header says
//! which (`stdin`, `stdout`, `stderr`, `error`, `resize`); its header blocks travel through one
//! zlib stream (SPDY/3 dictionary, `k8s::spdy_dictionary`) per direction, so every header
//! block the client sends is inflated in order to keep that stream in step; the server's are
//! skipped unread (nothing the recording needs is in them). DATA frames are then stdin and
//! resize (`{"Width":W,"Height":H}` objects, one after another, decoded as Go's
//! `json.Decoder` does: `websocket::Resizes`) from the client, stdout,
//! stderr and the error Status from the server. Accepts frames in any split across reads.
//! Stops reading a direction (which ends the session: `writer.rs`) at a frame longer than [`MAX_FRAME`] that
//! is not DATA, a header block that does not inflate or inflates past
//! [`MAX_HEADER_BLOCK`], more than [`MAX_STREAMS`] streams of a kind — and, from the client,
//! wherever spdystream (the API server's and the kubelet's reader) would read the bytes
//! otherwise than this reader: a control frame whose length is not what spdystream consumes
//! for its type (PING 4, RST_STREAM / GOAWAY / WINDOW_UPDATE 8, SETTINGS by its count, a
//! SYN_STREAM too short for its fixed fields) or of a type it does not know, a frame whose
//! header block is not exactly one whole block (spdystream's single zlib stream would carry
//! the rest over to the next frame), a SYN_STREAM reusing or lowering a stream id, a second
//! `stdin` stream (the kubelet keeps whichever `stdin` stream came last while it waits for the
//! streams, and stops reading new ones after: which one it reads depends on timing).
//!
//! The client's data is read as spdystream delivers it: a stream the client has ended — the
//! DATA frame with FLAG_FIN (its own data still delivered), a SYN_STREAM carrying FLAG_FIN
//! (opened half-closed), a RST_STREAM from the client — gets nothing more to the pod ("stream
//! shut down": spdystream drops later DATA for it), so nothing more of it is recorded.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress};

use super::cast::{Frame, Kind};

/// Largest control frame read (spdystream's are a few hundred bytes).
pub const MAX_FRAME: usize = 1 << 20;
/// Most streams of each table (data streams; resize streams) a session may open: a remote
/// command uses at most five (stdin, stdout, stderr, error, resize).
pub const MAX_STREAMS: usize = 16;
/// Largest inflated header block accepted.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
/// FLAG_FIN, of DATA frames and of SYN_STREAM: the sender's last frame on the stream.
const FLAG_FIN: u8 = 0x01;

/// Which channel each stream id carries, learned from the client's SYN_STREAMs and read by
/// both directions.
pub type Streams = Arc<Mutex<HashMap<u32, Kind>>>;

/// One direction of a SPDY connection.
pub struct Direction {
    from_client: bool,
    streams: Streams,
    resize_streams: Arc<Mutex<Vec<u32>>>,
    inflate: Option<Decompress>,
    /// The frame being gathered: its 8-byte header, then (control frames) its body.
    head: Vec<u8>,
    body: Vec<u8>,
    /// A DATA frame's payload left to pass, its stream, and whether it ends the stream.
    data_left: usize,
    data_stream: u32,
    data_fin: bool,
    /// The client's direction: streams it ended (FLAG_FIN, RST_STREAM), whose later data
    /// spdystream drops. Only streams in the tables, so bounded as they are.
    closed: std::collections::HashSet<u32>,
    /// The flags of the control frame being gathered.
    control_flags: u8,
    /// A control frame's body left to gather (or skip, when `skip`).
    control_left: usize,
    skip: bool,
    resize: super::websocket::Resizes,
    /// The client's direction: the highest stream id it opened (ids only grow).
    last_stream: u32,
    broken: bool,
}

/// The two directions of one session, sharing the stream table.
pub fn pair() -> (Direction, Direction) {
    let streams: Streams = Arc::default();
    let resize_streams: Arc<Mutex<Vec<u32>>> = Arc::default();
    let dir = |from_client| Direction {
        from_client,
        streams: streams.clone(),
        resize_streams: resize_streams.clone(),
        inflate: from_client.then(|| Decompress::new(true)),
        head: Vec::with_capacity(8),
        body: Vec::new(),
        data_left: 0,
        data_stream: 0,
        data_fin: false,
        closed: std::collections::HashSet::new(),
        control_flags: 0,
        control_left: 0,
        skip: false,
        resize: super::websocket::Resizes::default(),
        last_stream: 0,
        broken: false,
    };
    (dir(true), dir(false))
}

impl Direction {
    /// Whether this direction stopped being readable (an oversized or undecodable header
    /// block): what follows would not be recorded.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Read `bytes` (the next bytes of this direction); what they carried goes to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Frame>) {
        while !bytes.is_empty() && !self.broken {
            if self.data_left > 0 {
                let take = self.data_left.min(bytes.len());
                let (chunk, rest) = bytes.split_at(take);
                bytes = rest;
                self.data_left -= take;
                self.data(chunk, out);
                if self.data_left == 0 {
                    self.end_data();
                }
                continue;
            }
            if self.control_left > 0 {
                let take = self.control_left.min(bytes.len());
                if !self.skip {
                    self.body.extend_from_slice(&bytes[..take]);
                }
                bytes = &bytes[take..];
                self.control_left -= take;
                if self.control_left == 0 && !self.skip {
                    self.control();
                }
                continue;
            }
            let take = (8 - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head.len() == 8 {
                self.start_frame();
            }
        }
    }

    fn start_frame(&mut self) {
        let h = std::mem::take(&mut self.head);
        let len = usize::from(h[5]) << 16 | usize::from(h[6]) << 8 | usize::from(h[7]);
        if h[0] & 0x80 == 0 {
            self.data_stream = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) & 0x7fff_ffff;
            self.data_left = len;
            self.data_fin = h[4] & FLAG_FIN != 0;
            if len == 0 {
                self.end_data();
            }
        } else {
            let kind = u16::from_be_bytes([h[2], h[3]]);
            self.control_flags = h[4];
            // Header blocks (and SETTINGS, whose length is checked, and RST_STREAM, which
            // ends a stream) of the client's direction are read; everything else is skipped.
            self.skip = !(self.from_client
                && matches!(
                    kind,
                    SYN_STREAM | SYN_REPLY | HEADERS | SETTINGS | RST_STREAM
                ));
            if (!self.skip && len > MAX_FRAME) || (self.from_client && !client_length_ok(kind, len))
            {
                self.broken = true;
            }
            self.body.clear();
            self.body.push((kind & 0xff) as u8);
            self.control_left = len;
            if len == 0 && !self.skip {
                self.control();
            }
        }
        self.head = h;
        self.head.clear();
    }

    /// A whole control frame of the client's direction (its type byte first, then its body).
    fn control(&mut self) {
        let body = std::mem::take(&mut self.body);
        let kind = u16::from(body[0]);
        let rest = &body[1..];
        if kind == SETTINGS {
            // spdystream reads the count and that many 8-byte entries, whatever the length
            // says: any other length leaves it reading elsewhere than this reader.
            let count = rest
                .get(..4)
                .map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
            if count.is_none_or(|n| rest.len() as u64 != 4 + 8 * n) {
                self.broken = true;
            }
            return;
        }
        if kind == RST_STREAM {
            // Stream id, status (8 bytes, checked): spdystream removes the stream, and drops
            // what comes for it after.
            if let Some(b) = rest.get(..4) {
                self.close(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff);
            }
            return;
        }
        // SYN_STREAM: stream id, associated id, priority + slot; HEADERS / SYN_REPLY: stream
        // id + 2 unused bytes (SPDY/3 keeps them), then the block.
        let fixed = if kind == SYN_STREAM { 10 } else { 4 };
        let Some(stream) = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
        else {
            return;
        };
        let Some(block) = rest.get(fixed..) else {
            return;
        };
        // spdystream parses one block from one zlib stream that runs across frames: a frame
        // that inflates to anything but exactly one whole block would be read differently
        // there (the rest, or the missing part, belongs to the next frame's block).
        let inflated = self.inflate_block(block);
        let Some(headers) = inflated.as_deref().and_then(parse_block) else {
            self.broken = true;
            return;
        };
        if kind != SYN_STREAM {
            return;
        }
        // Stream ids only grow (kubectl opens 1, 3, 5, …): a reused or lower id is one
        // spdystream refuses or treats otherwise than a fresh stream.
        if stream <= self.last_stream {
            self.broken = true;
            return;
        }
        self.last_stream = stream;
        self.open(stream, &headers);
        if !self.broken && self.control_flags & FLAG_FIN != 0 {
            // Opened half-closed: spdystream closes its data channel at once.
            self.close(stream);
        }
    }

    /// A SYN_STREAM of the client's: the channel its `streamtype` names, in the tables.
    fn open(&mut self, stream: u32, headers: &[(&[u8], &[u8])]) {
        let Some(stream_type) = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"streamtype"))
            .map(|(_, v)| {
                let v = String::from_utf8_lossy(v);
                v.split('\0').next().unwrap_or_default().to_owned()
            })
        else {
            return;
        };
        let kind = match stream_type.as_str() {
            "stdin" => Kind::Stdin,
            "stdout" => Kind::Stdout,
            "stderr" => Kind::Stderr,
            "error" => Kind::Status,
            "resize" => {
                let mut r = self
                    .resize_streams
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if r.len() >= MAX_STREAMS {
                    self.broken = true;
                    return;
                }
                r.push(stream);
                return;
            }
            _ => return,
        };
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if streams.len() >= MAX_STREAMS && !streams.contains_key(&stream) {
            // kubectl opens at most five; thousands would only grow the tables.
            self.broken = true;
            return;
        }
        if kind == Kind::Stdin && streams.values().any(|k| *k == Kind::Stdin) {
            // A second stdin stream: the kubelet reads the last one it saw while waiting for
            // the streams and never takes one after, so which one reaches the pod is a matter
            // of timing — unreadable here.
            self.broken = true;
            return;
        }
        streams.insert(stream, kind);
    }

    /// The client's DATA frame is through: after FLAG_FIN its stream is closed.
    fn end_data(&mut self) {
        if self.from_client && self.data_fin {
            self.close(self.data_stream);
        }
    }

    /// The client ended `stream` (FLAG_FIN, RST_STREAM): spdystream drops its later data.
    fn close(&mut self, stream: u32) {
        let known = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&stream)
            || self
                .resize_streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&stream);
        if known {
            self.closed.insert(stream);
        }
    }

    fn inflate_block(&mut self, block: &[u8]) -> Option<Vec<u8>> {
        let inflate = self.inflate.as_mut()?;
        let mut out = Vec::with_capacity(256);
        let mut used = 0usize;
        while used < block.len() {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return None;
                }
                out.reserve(out.len().max(256));
            }
            let (in_before, out_before) = (inflate.total_in(), out.len());
            match inflate.decompress_vec(&block[used..], &mut out, FlushDecompress::Sync) {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    inflate
                        .set_dictionary(crate::k8s::spdy_dictionary::bytes())
                        .ok()?;
                }
                Err(_) => return None,
            }
            used += usize::try_from(inflate.total_in() - in_before).ok()?;
            if inflate.total_in() == in_before
                && out.len() == out_before
                && out.len() < out.capacity()
            {
                return None;
            }
        }
        Some(out)
    }

    fn data(&mut self, chunk: &[u8], out: &mut Vec<Frame>) {
        let stream = self.data_stream;
        if self.from_client && self.closed.contains(&stream) {
            // Dropped by spdystream: the client ended the stream (FLAG_FIN) or reset it.
            return;
        }
        let kind = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&stream)
            .copied();
        match kind {
            // Each direction carries only its own channels.
            Some(kind) => {
                if (kind == Kind::Stdin) == self.from_client && !chunk.is_empty() {
                    out.push(Frame::Data(kind, Bytes::copy_from_slice(chunk)));
                }
            }
            None => {
                let resize = self.from_client
                    && self
                        .resize_streams
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .contains(&stream);
                if resize {
                    self.resize.feed(chunk, out);
                }
            }
        }
    }
}

/// Whether spdystream reads a client control frame of this type and length as the length
/// says: it reads PING as 4 bytes and RST_STREAM as 8 whatever the length field holds,
/// refuses GOAWAY and WINDOW_UPDATE of another length than 8 and types it does not know, and
/// takes the header block of a SYN_STREAM (after 10 bytes) or SYN_REPLY / HEADERS (after 4)
/// as the rest — a shorter frame underflows that. SETTINGS is checked on its body.
fn client_length_ok(kind: u16, len: usize) -> bool {
    match kind {
        SYN_STREAM => len > 10,
        SYN_REPLY | HEADERS => len > 4,
        PING => len == 4,
        RST_STREAM | GOAWAY | WINDOW_UPDATE => len == 8,
        SETTINGS => len >= 4,
        _ => false,
    }
}

/// An inflated header block (count, then length-prefixed name and value pairs), exactly:
/// `None` when it ends early or has bytes after its last pair.
fn parse_block(block: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let be32 = |b: &[u8]| -> Option<usize> {
        let b: [u8; 4] = b.get(..4)?.try_into().ok()?;
        usize::try_from(u32::from_be_bytes(b)).ok()
    };
    let count = be32(block)?;
    let mut at = 4usize;
    let mut pairs = Vec::new();
    for _ in 0..count {
        let n = be32(block.get(at..)?)?;
        let key = block.get(at + 4..at.checked_add(4 + n)?)?;
        at += 4 + n;
        let v = be32(block.get(at..)?)?;
        let value = block.get(at + 4..at.checked_add(4 + v)?)?;
        at += 4 + v;
        pairs.push((key, value));
    }
    (at == block.len()).then_some(pairs)
}

#[cfg(test)]
#[path = "spdy_tests.rs"]
mod tests;
