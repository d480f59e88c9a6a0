//! Reading the Kubernetes channel protocol (`v4.channel.k8s.io`, `v5.channel.k8s.io`, and the
//! older binary `channel.k8s.io`) off both byte streams of a spliced WebSocket, for the
//! recording only: the bytes themselves pass on untouched whatever this makes of them.
//!
//! Accepts RFC 6455 frames in any split across reads. Each direction is read as its receiver
//! reads it, so that the recording holds what the other side got:
//! - **From the client**, as the API server's and the kubelet's reader (Go's
//!   `golang.org/x/net/websocket` under apimachinery's `wsstream`) takes it: *every frame* whose
//!   opcode is not close, ping or pong is a message of its own — continuation frames and
//!   reserved opcodes included, FIN not looked at — whose first byte is its channel. Only
//!   channel 0 (stdin) and 4 (resize) are the client's to send; `wsstream` drops anything
//!   else, and so does the recording — stdin too when the request did not ask for it, or
//!   after v5's stream close of channel 0 (`[255, 0]`). After a close frame, an unmasked
//!   frame, one over that reader's 32 MiB cap, or a stream close of another length or of a
//!   channel that does not exist, the reader stops: nothing after it is recorded. A control frame over 125 bytes or fragmented (which no
//!   client sends, and whose unread rest Go's reader might take as frames) stops this reading.
//! - **From the API server**, as kubectl's reader (gorilla) takes it: messages, fragmented over
//!   continuation frames or not, channel first; 1 stdout, 2 stderr, 3 the exit Status; control
//!   frames skipped.
//!
//! Resize messages (`{"Width":W,"Height":H}`) are read as the API server and the kubelet read
//! them, with Go's `json.NewDecoder` over the channel's bytes as one stream ([`Resizes`]): an
//! object may span frames, one frame may carry several, keys match case-insensitively, a
//! missing one is 0; after a value that does not decode into a terminal size, none are read.
//!
//! 255 (the v5 stream close) is skipped. A frame it cannot read (a reserved bit set: an
//! extension it does not know) stops the reading of that direction — which ends the session
//! (`writer.rs`); the recorder offers the API server only the binary channel protocols and no
//! extensions (`restrict_offer`).

use bytes::{Bytes, BytesMut};

use super::cast::{Frame, Kind};

/// What the API server does with the client's channels (`wsstream`'s `handle`).
#[derive(Clone, Copy, Debug)]
pub struct Channels {
    /// v5: channel 255 is the stream-close message (`[255, channel]`).
    pub stream_close: bool,
    /// The request asked for stdin; without it channel 0 is ignored.
    pub stdin: bool,
}

impl Default for Channels {
    fn default() -> Self {
        Channels {
            stream_close: true,
            stdin: true,
        }
    }
}

/// The channels of a remote command (stdin, stdout, stderr, error, resize): a stream close
/// naming another makes `wsstream` stop reading.
const REMOTE_COMMAND_CHANNELS: u8 = 5;

/// One direction of a WebSocket connection.
pub struct Direction {
    /// The client's direction (read as the API server reads it), or the API server's.
    from_client: bool,
    channels: Channels,
    /// The client closed stdin (v5 stream close of channel 0): later stdin is dropped there.
    stdin_closed: bool,
    /// The current client frame's payload length, and whether it is a stream close whose
    /// channel byte is still to come.
    frame_len: u64,
    close_pending: bool,
    /// The client's direction: the API server's reader stopped (a close frame, an unmasked
    /// or oversized frame); nothing more is recorded.
    closed: bool,
    /// Header bytes of the frame being read (at most 14).
    head: Vec<u8>,
    /// Payload bytes left in the current frame, its mask, and how far into it we are.
    left: u64,
    mask: Option<[u8; 4]>,
    offset: usize,
    /// The current frame is a control frame (payload skipped).
    control: bool,
    /// The next payload byte is the first of a data message (its channel).
    at_message_start: bool,
    channel: Option<u8>,
    /// The client's resize channel, read as one stream.
    resizes: Resizes,
    broken: bool,
}

/// Largest resize message kept (a few dozen bytes in practice).
const MAX_RESIZE: usize = 1024;
/// Largest frame the API server's reader takes (`x/net/websocket`'s `DefaultMaxPayloadBytes`).
const MAX_CLIENT_FRAME: u64 = 32 << 20;
/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL: u64 = 125;

impl Direction {
    /// The client's direction (`from_client`) or the API server's.
    pub fn new(from_client: bool, channels: Channels) -> Self {
        Direction {
            from_client,
            channels,
            stdin_closed: false,
            frame_len: 0,
            close_pending: false,
            closed: false,
            head: Vec::with_capacity(14),
            left: 0,
            mask: None,
            offset: 0,
            control: false,
            at_message_start: true,
            channel: None,
            resizes: Resizes::default(),
            broken: false,
        }
    }

    /// Whether this direction stopped being readable (an extension's bits, an impossible
    /// length): what follows would not be recorded.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Read `bytes` (the next bytes of this direction); what they carried goes to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Frame>) {
        // Once the API server's reader has stopped, nothing the client sends reaches the pod:
        // its bytes are not read (so trailing bytes cannot make an ended session look
        // unreadable).
        let stopped = |d: &Self| d.broken || d.from_client && d.closed;
        while !bytes.is_empty() && !stopped(self) {
            if self.left == 0 {
                // Gather the header.
                let need = self.header_len();
                let take = need.saturating_sub(self.head.len()).min(bytes.len());
                self.head.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.head.len() < self.header_len() {
                    continue;
                }
                self.start_frame();
                continue;
            }
            let take = usize::try_from(self.left)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let (chunk, rest) = bytes.split_at(take);
            bytes = rest;
            self.left -= take as u64;
            if !self.control {
                let mut data = BytesMut::from(chunk);
                if let Some(mask) = self.mask {
                    for (i, b) in data.iter_mut().enumerate() {
                        *b ^= mask[(self.offset + i) % 4];
                    }
                }
                self.offset += take;
                self.payload(data.freeze(), out);
            }
        }
    }

    /// Bytes of the header as far as known from what was read.
    fn header_len(&self) -> usize {
        let Some(&b1) = self.head.get(1) else {
            return 2;
        };
        let masked = if b1 & 0x80 != 0 { 4 } else { 0 };
        2 + masked
            + match b1 & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            }
    }

    fn start_frame(&mut self) {
        let head = std::mem::take(&mut self.head);
        let (b0, b1) = (head[0], head[1]);
        if b0 & 0x70 != 0 {
            // An extension's bits: nothing here can be read any more.
            self.broken = true;
            return;
        }
        let opcode = b0 & 0x0f;
        let mut i = 2;
        let len = match b1 & 0x7f {
            126 => {
                i += 2;
                u64::from(u16::from_be_bytes([head[2], head[3]]))
            }
            127 => {
                i += 8;
                let mut b = [0u8; 8];
                b.copy_from_slice(&head[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    // RFC 6455 §5.2: the top bit is 0. Go's x/net reader (the kubelet's)
                    // overflows it into a negative length and reads the next bytes as the
                    // next frame, where this reader would take them as payload.
                    self.broken = true;
                    return;
                }
                len
            }
            n => u64::from(n),
        };
        self.mask = (b1 & 0x80 != 0).then(|| [head[i], head[i + 1], head[i + 2], head[i + 3]]);
        self.offset = 0;
        self.left = len;
        let fin = b0 & 0x80 != 0;
        if self.from_client {
            let control = matches!(opcode, 8..=10);
            if control && (len > MAX_CONTROL || !fin) {
                // Go's reader may leave part of it unread and take that as the next frame.
                self.broken = true;
                return;
            }
            if opcode == 8 || self.mask.is_none() || len > MAX_CLIENT_FRAME {
                // The API server's reader stops here: nothing after reaches the pod.
                self.closed = true;
            }
            // Skipped: control frames, and everything once the reader stopped.
            self.control = control || self.closed;
            // Every other frame is a message of its own, as Go's reader takes it.
            self.frame_len = len;
            self.close_pending = false;
            self.at_message_start = true;
            self.channel = None;
        } else {
            self.control = opcode >= 8;
            if !self.control && opcode != 0 {
                // A new message (text or binary).
                self.at_message_start = true;
                self.channel = None;
            }
        }
        // The header buffer is reused for the next frame.
        self.head = head;
        self.head.clear();
    }

    fn payload(&mut self, mut data: Bytes, out: &mut Vec<Frame>) {
        if self.at_message_start && !data.is_empty() {
            self.channel = Some(data[0]);
            self.at_message_start = false;
            data = data.slice(1..);
            if self.from_client && self.channels.stream_close && self.channel == Some(255) {
                if self.frame_len != 2 {
                    // `wsstream` stops reading at a stream close of another length.
                    self.closed = true;
                    self.control = true;
                    return;
                }
                // Its channel byte may come in this read or the next.
                self.close_pending = true;
            }
        }
        if self.close_pending && !data.is_empty() {
            self.close_pending = false;
            match data[0] {
                0 => self.stdin_closed = true,
                c if c >= REMOTE_COMMAND_CHANNELS => {
                    // A close of a channel that does not exist: `wsstream` stops reading.
                    self.closed = true;
                    self.control = true;
                }
                _ => {}
            }
            return;
        }
        if data.is_empty() {
            return;
        }
        if self.from_client
            && self.channel == Some(0)
            && (!self.channels.stdin || self.stdin_closed)
        {
            // Dropped by the API server: stdin was not asked for, or the client closed it.
            return;
        }
        // Each side's own channels only: `wsstream` drops what a client sends on an output
        // channel, and the API server sends nothing on stdin or resize.
        let kind = match (self.channel, self.from_client) {
            (Some(0), true) => Kind::Stdin,
            (Some(1), false) => Kind::Stdout,
            (Some(2), false) => Kind::Stderr,
            (Some(3), false) => Kind::Status,
            (Some(4), true) => {
                self.resizes.feed(&data, out);
                return;
            }
            _ => return,
        };
        // Consecutive pieces of one channel in one read go out as one event, grown in place
        // (copying what was joined so far for every tiny frame would cost a read of 1-byte
        // frames quadratic time).
        if let Some(Frame::Data(k, prev)) = out.last_mut() {
            if *k == kind {
                let mut joined = std::mem::take(prev)
                    .try_into_mut()
                    .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                joined.extend_from_slice(&data);
                *prev = joined.freeze();
                return;
            }
        }
        out.push(Frame::Data(kind, data));
    }
}

/// A resize channel read as the API server and the kubelet read it (`handleResizeEvents`:
/// `json.NewDecoder` over the channel's bytes, one `TerminalSize` after another): values span
/// frames or share one; the first that does not decode ends the reading there, and so here.
#[derive(Default)]
pub struct Resizes {
    /// Bytes of a value not complete yet.
    buf: Vec<u8>,
    /// A value did not decode: the decoder loop has stopped.
    stopped: bool,
}

impl Resizes {
    /// The next bytes of the resize channel; each complete value is a frame.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Frame>) {
        if self.stopped {
            return;
        }
        self.buf.extend_from_slice(chunk);
        let mut values =
            serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
        let mut consumed = 0;
        loop {
            match values.next() {
                Some(Ok(size)) => {
                    consumed = values.byte_offset();
                    out.push(Frame::Resize {
                        width: size.width,
                        height: size.height,
                    });
                }
                // Incomplete: the rest comes in a later frame.
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    self.stopped = true;
                    break;
                }
                None => {
                    consumed = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..consumed);
        if self.buf.len() > MAX_RESIZE {
            // Not a terminal size still growing: stop following (resizes only).
            self.stopped = true;
        }
        if self.stopped {
            self.buf = Vec::new();
        }
    }
}

/// client-go's `TerminalSize` as Go's `encoding/json` decodes it: an object whose keys match
/// `Width` / `Height` case-insensitively (the last one wins; `null` leaves it), others
/// ignored, a missing one 0; `null` itself is a size of 0x0; anything else (a number out of
/// `uint16`, a string, an array) is an error.
struct TerminalSize {
    width: u16,
    height: u16,
}

impl<'de> serde::Deserialize<'de> for TerminalSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = TerminalSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a terminal size object")
            }
            fn visit_unit<E>(self) -> Result<TerminalSize, E> {
                Ok(TerminalSize {
                    width: 0,
                    height: 0,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TerminalSize, A::Error> {
                let mut size = TerminalSize {
                    width: 0,
                    height: 0,
                };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key.eq_ignore_ascii_case("width") {
                        size.width = map.next_value::<Option<u16>>()?.unwrap_or(size.width);
                    } else if key.eq_ignore_ascii_case("height") {
                        size.height = map.next_value::<Option<u16>>()?.unwrap_or(size.height);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(size)
            }
        }
        d.deserialize_any(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a client sends it (masked), or a server (`mask: None`).
    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    fn feed_bytewise(bytes: &[u8]) -> Vec<Frame> {
        let mut d = Direction::new(true, Channels::default());
        let mut out = Vec::new();
        for b in bytes {
            d.feed(std::slice::from_ref(b), &mut out);
        }
        out
    }

    fn text(frames: &[Frame], kind: Kind) -> Vec<u8> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Data(k, d) if *k == kind => Some(d.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The client's frames as the API server's reader takes them: each frame a message of its
    /// own whose first byte is the channel — a continuation frame too, so `echo hi` sent as
    /// `\0ec` + a continuation `ho hi` reaches the pod as `ec` (and `ho hi` on channel `h`,
    /// dropped); in any split across reads; nothing after the close frame.
    #[test]
    fn masked_client_frames_split_anywhere_give_stdin_and_resize() {
        let k = Some([1, 2, 3, 4]);
        let mut wire = frame(
            true,
            2,
            &[&[4u8][..], br#"{"Width":120,"Height":40}"#].concat(),
            k,
        );
        wire.extend(frame(true, 9, b"ping", k));
        wire.extend(frame(false, 2, b"\x00ec", k));
        wire.extend(frame(true, 0, b"ho hi\n", k));
        let big = vec![b'x'; 70_000];
        wire.extend(frame(true, 2, &[&[0u8][..], &big].concat(), k));
        wire.extend(frame(true, 2, &[255, 0], k));
        wire.extend(frame(true, 8, &[3, 232], k));
        wire.extend(frame(true, 2, b"\x00after close", k));
        for frames in [feed_bytewise(&wire), {
            let mut out = Vec::new();
            Direction::new(true, Channels::default()).feed(&wire, &mut out);
            out
        }] {
            assert_eq!(
                frames[0],
                Frame::Resize {
                    width: 120,
                    height: 40
                }
            );
            let stdin = text(&frames, Kind::Stdin);
            assert_eq!(&stdin[..2], b"ec");
            assert_eq!(stdin.len(), 2 + big.len());
        }
    }

    /// What Go's reader delivers that an RFC reader would not: a lone continuation frame and
    /// a reserved opcode are messages (stdin here); a client's output channels are dropped;
    /// after an unmasked frame the reader has stopped.
    #[test]
    fn client_frames_are_read_as_the_api_server_reads_them() {
        let k = Some([9, 8, 7, 6]);
        let mut wire = frame(true, 0, b"\x00one ", k);
        wire.extend(frame(true, 0x3, b"\x00two ", k));
        wire.extend(frame(true, 0xb, b"\x00three", k));
        wire.extend(frame(true, 2, b"\x01fake output", k));
        wire.extend(frame(true, 2, b"\x03{\"status\":\"Success\"}", k));
        wire.extend(frame(true, 2, b"\x00unmasked", None));
        wire.extend(frame(true, 2, b"\x00after", k));
        let frames = feed_bytewise(&wire);
        assert_eq!(text(&frames, Kind::Stdin), b"one two three");
        assert_eq!(frames.len(), 1, "{frames:?}");
        // A ping longer than a control frame may be, or a fragmented one: unreadable.
        for bad in [frame(true, 9, &[0u8; 126], k), frame(false, 9, b"p", k)] {
            let mut d = Direction::new(true, Channels::default());
            d.feed(&bad, &mut Vec::new());
            assert!(d.broken());
        }
        // ... but not after the reader stopped (a close frame, an unmasked frame): what
        // follows never reaches the pod, so it is not read at all.
        for stop in [frame(true, 8, b"", k), frame(true, 2, b"\x00x", None)] {
            let mut wire = stop;
            wire.extend(frame(true, 9, &[0u8; 126], k));
            wire.push(0x70);
            let mut d = Direction::new(true, Channels::default());
            d.feed(&wire, &mut Vec::new());
            assert!(!d.broken());
        }
    }

    /// v5's stream close as `wsstream` handles it: stdin after `[255, 0]` is dropped there,
    /// so not recorded; a close of another length, or of a channel that does not exist,
    /// stops its reading. Without `stdin=true` channel 0 is ignored.
    #[test]
    fn stream_close_and_absent_stdin_are_read_as_the_api_server_does() {
        let k = Some([1, 2, 3, 4]);
        let stdin_of = |wire: &[u8], channels: Channels| {
            let mut d = Direction::new(true, channels);
            let mut out = Vec::new();
            for b in wire {
                d.feed(std::slice::from_ref(b), &mut out);
            }
            text(&out, Kind::Stdin)
        };
        let mut wire = frame(true, 2, b"\x00kept", k);
        wire.extend(frame(true, 2, &[255, 0], k));
        wire.extend(frame(true, 2, b"\x00after close", k));
        assert_eq!(stdin_of(&wire, Channels::default()), b"kept");
        // v4 has no stream close: channel 255 is just dropped.
        let v4 = Channels {
            stream_close: false,
            stdin: true,
        };
        assert_eq!(stdin_of(&wire, v4), b"keptafter close");
        for bad in [&[255u8, 0, 0][..], &[255, 9]] {
            let mut wire = frame(true, 2, b"\x00kept", k);
            wire.extend(frame(true, 2, bad, k));
            wire.extend(frame(true, 2, b"\x00never read", k));
            assert_eq!(stdin_of(&wire, Channels::default()), b"kept", "{bad:?}");
        }
        let no_stdin = Channels {
            stream_close: true,
            stdin: false,
        };
        assert!(stdin_of(&frame(true, 2, b"\x00ignored", k), no_stdin).is_empty());
    }

    #[test]
    fn server_frames_give_stdout_stderr_and_status() {
        let mut wire = frame(true, 2, b"\x01out", None);
        wire.extend(frame(true, 2, b"\x02err", None));
        wire.extend(frame(true, 2, b"\x03{}", None));
        wire.extend(frame(true, 2, b"\x01", None));
        let mut out = Vec::new();
        Direction::new(false, Channels::default()).feed(&wire, &mut out);
        assert_eq!(text(&out, Kind::Stdout), b"out");
        assert_eq!(text(&out, Kind::Stderr), b"err");
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn an_extension_frame_stops_the_reading() {
        let mut wire = vec![0xc2, 0x02, 0x01, b'x'];
        wire.extend(frame(true, 2, b"\x01out", None));
        let mut out = Vec::new();
        Direction::new(false, Channels::default()).feed(&wire, &mut out);
        assert!(out.is_empty());
    }

    /// Many tiny frames of one channel in one read join in place: 128 Ki one-byte frames
    /// (1 MiB on the wire) give one Stdin event of 128 KiB without copying it per frame.
    #[test]
    fn a_read_of_tiny_frames_is_joined_in_place() {
        let wire: Vec<u8> = (0..131_072)
            .flat_map(|_| frame(true, 2, b"\x00x", Some([1, 2, 3, 4])))
            .collect();
        let mut d = Direction::new(true, Channels::default());
        let mut out = Vec::new();
        d.feed(&wire, &mut out);
        assert_eq!(out.len(), 1);
        match &out[0] {
            Frame::Data(Kind::Stdin, data) => {
                assert_eq!(data.len(), 131_072);
                assert!(data.iter().all(|b| *b == b'x'));
            }
            other => panic!("{other:?}"),
        }
    }

    /// The resize channel read as the API server's `json.Decoder` reads it: one stream, so an
    /// object split across frames, two in one frame, keys in any case (a missing one 0) all
    /// give their sizes; after a value that does not decode (a negative width) none are read.
    #[test]
    fn resizes_are_one_stream_decoded_as_go_decodes_them() {
        let k = Some([1, 2, 3, 4]);
        let resize = |json: &[u8]| frame(true, 2, &[&[4u8][..], json].concat(), k);
        let mut wire = resize(br#"{"Width":100,"#);
        wire.extend(frame(true, 2, b"\x00typed", k));
        wire.extend(resize(br#""Height":30}"#));
        wire.extend(resize(
            br#"{"Width":90,"Height":20} {"Width":80,"Height":10}"#,
        ));
        wire.extend(resize(br#"{"width":70,"HEIGHT":5,"other":[1]}"#));
        wire.extend(resize(br#"{"Width":60}null"#));
        wire.extend(resize(br#"{"Width":-1,"Height":1}"#));
        wire.extend(resize(br#"{"Width":50,"Height":5}"#));
        let whole = {
            let mut out = Vec::new();
            Direction::new(true, Channels::default()).feed(&wire, &mut out);
            out
        };
        for frames in [feed_bytewise(&wire), whole] {
            let sizes: Vec<(u16, u16)> = frames
                .iter()
                .filter_map(|f| match f {
                    Frame::Resize { width, height } => Some((*width, *height)),
                    _ => None,
                })
                .collect();
            assert_eq!(
                sizes,
                [(100, 30), (90, 20), (80, 10), (70, 5), (60, 0), (0, 0)]
            );
            assert_eq!(text(&frames, Kind::Stdin), b"typed");
        }
    }
}
