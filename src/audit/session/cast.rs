//! The asciicast v2 file of one session, written line by line with its SHA-256 kept as it
//! grows: a header line (`version`, `width`, `height`, `timestamp`, `title`, `command`), then
//! one `[seconds, code, data]` array per event.
//!
//! Codes: `"i"` stdin, `"o"` stdout *and* stderr (interleaved as a terminal shows them; with a
//! TTY Kubernetes has no stderr stream anyway), `"r"` a resize (`"WxH"`), `"m"` a marker — the
//! session's exit status (`status: {…}`, the error channel's Status), frames dropped because
//! the writer fell behind, non-UTF-8 bytes replaced, and the truncation at the size cap, each
//! starting with `portcullis:` or `status:`.
//!
//! The header waits for the first event that is not a resize, so the terminal size a TTY
//! session announces first (kubectl sends it before any byte) becomes the header's
//! `width`/`height` (80x24 when none came). Data is text: a UTF-8 sequence split across frames
//! is joined; bytes that are not UTF-8 become U+FFFD (once marked) — binary payloads such as
//! `kubectl cp`'s tar are not kept byte for byte.
//!
//! At `max_bytes` one marker says the recording was truncated: *output* (stdout, stderr, the
//! status, the writer's loss markers) is no longer written, so a large download (`kubectl cp`
//! from a pod) runs on with its file capped. *Input* (stdin, resizes) still is, up to twice
//! `max_bytes` ([`Cast::hard_limit`]): what is typed after someone filled the cap on purpose
//! (a pipe of NULs, escaped to six bytes each) is kept. The writer (`writer.rs`) never lets
//! input reach that hard limit: input that could take the file past it ends the session before
//! it is passed on, so every input line handed to this file fits ([`input_line_bound`] is what
//! a line may take at most).

use std::io::Write;

use aws_lc_rs::digest;
use serde_json::json;

/// The kind of one recorded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stdin,
    Stdout,
    Stderr,
    /// The error channel (the command's exit Status).
    Status,
}

/// One thing that happened in a session, as the protocol parsers report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data(Kind, bytes::Bytes),
    Resize { width: u16, height: u16 },
}

/// The marker written once the cap is reached.
pub const TRUNCATED: &str = "portcullis: recording truncated: the session reached";
/// Room kept for one marker line: below the cap for the truncation marker, below the hard
/// limit for the marker that ends a session (and the one on bytes that are not UTF-8).
pub const MARKER_ROOM: u64 = 256;
/// What an input line takes besides its escaped data: the time (at most 24 characters as
/// serde_json writes an `f64`), `[`, `,"i",`, the quotes, `]`, the newline; a resize's
/// `"65535x65535"` fits in it too.
const LINE_OVERHEAD: u64 = 64;
/// Bytes of a UTF-8 sequence cut at the previous frame's end that this frame's line may carry
/// (up to three bytes, each at worst a U+FFFD of three), and the frame's first bytes that
/// joining them reads otherwise.
const CARRY_SLACK: u64 = 18;

/// Which limit an event is written under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Output and the writer's notes on it: up to the cap.
    Output,
    /// Stdin and resizes: up to the hard limit, less the room for the closing marker.
    Input,
    /// The marker saying why the session was ended: up to the hard limit.
    End,
}

/// The header facts known when the session starts.
pub struct Header {
    pub timestamp: i64,
    pub title: String,
    pub command: String,
}

/// An asciicast v2 file being written (to `out`), with its digest and size.
pub struct Cast<W: Write> {
    out: W,
    sha: digest::Context,
    written: u64,
    max_bytes: u64,
    header: Option<Header>,
    size: (u16, u16),
    /// Incomplete UTF-8 sequences held for the next frame, per stream (stdin, stdout, stderr).
    carry: [Vec<u8>; 3],
    lossy_marked: bool,
    /// The header's largest size (`width`/`height` of 5 digits) while it is not written.
    header_bound: u64,
    pub truncated: bool,
    /// An input event did not fit below the hard limit (the writer keeps this from happening;
    /// should it, the writer ends the session).
    pub input_refused: bool,
}

impl<W: Write> Cast<W> {
    pub fn new(out: W, header: Header, max_bytes: u64) -> Self {
        let header_bound = header_line(&header, (u16::MAX, u16::MAX)).len() as u64 + 1;
        Cast {
            out,
            sha: digest::Context::new(&digest::SHA256),
            written: 0,
            max_bytes,
            header: Some(header),
            size: (80, 24),
            carry: Default::default(),
            lossy_marked: false,
            header_bound,
            truncated: false,
            input_refused: false,
        }
    }

    /// The hard limit of the file: twice `max_bytes`, reached by input alone.
    pub fn hard_limit(&self) -> u64 {
        self.max_bytes.saturating_mul(2)
    }

    /// The file's size so far, with the header counted at its largest while not written.
    pub fn size_bound(&self) -> u64 {
        if self.header.is_some() {
            self.written + self.header_bound
        } else {
            self.written
        }
    }

    /// Record `frame`, `t` seconds into the session.
    pub fn frame(&mut self, t: f64, frame: &Frame) -> std::io::Result<()> {
        match frame {
            Frame::Resize { width, height } => {
                if self.header.is_some() {
                    self.size = (*width, *height);
                    Ok(())
                } else {
                    self.event(t, "r", &format!("{width}x{height}"), Class::Input)
                }
            }
            Frame::Data(Kind::Status, data) => {
                let text = String::from_utf8_lossy(data);
                self.event(t, "m", &format!("status: {text}"), Class::Output)
            }
            Frame::Data(kind, data) => {
                let (slot, code, class) = match kind {
                    Kind::Stdin => (0, "i", Class::Input),
                    Kind::Stderr => (2, "o", Class::Output),
                    _ => (1, "o", Class::Output),
                };
                let (text, lossy) = utf8(&mut self.carry[slot], data);
                if lossy && !self.lossy_marked {
                    self.lossy_marked = true;
                    self.event(
                        t,
                        "m",
                        "portcullis: bytes that are not UTF-8 were replaced by U+FFFD",
                        class,
                    )?;
                }
                if text.is_empty() {
                    return Ok(());
                }
                self.event(t, code, &text, class)
            }
        }
    }

    /// A marker event about output (not written past the cap).
    pub fn marker(&mut self, t: f64, text: &str) -> std::io::Result<()> {
        self.event(t, "m", text, Class::Output)
    }

    /// The marker saying why the session was ended: written past the cap, up to the hard
    /// limit.
    pub fn end_marker(&mut self, t: f64, text: &str) -> std::io::Result<()> {
        self.event(t, "m", text, Class::End)
    }

    /// Write the header if nothing did yet; flush. The digest (hex) and size of the file,
    /// and the writer.
    pub fn finish(mut self) -> std::io::Result<(String, u64, W)> {
        self.write_header()?;
        self.out.flush()?;
        let sha = super::super::chain::hex(self.sha.finish().as_ref());
        Ok((sha, self.written, self.out))
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn event(&mut self, t: f64, code: &str, data: &str, class: Class) -> std::io::Result<()> {
        if self.truncated && class == Class::Output {
            return Ok(());
        }
        self.write_header()?;
        // Microseconds, as asciinema writes them.
        let t = (t * 1e6).round() / 1e6;
        let line = json!([t, code, data]).to_string();
        let len = line.len() as u64 + 1;
        let room = self.max_bytes.saturating_sub(MARKER_ROOM);
        if !self.truncated && self.written + len > room {
            // The cap: output stops here; input goes on to the hard limit.
            self.truncated = true;
            let marker = json!([
                t,
                "m",
                format!(
                    "{TRUNCATED} its cap of {} bytes; later output is not recorded (input is, up to {} bytes)",
                    self.max_bytes,
                    self.hard_limit()
                )
            ])
            .to_string();
            self.line(&marker)?;
        }
        let limit = match class {
            Class::Output if self.truncated => return Ok(()),
            Class::Output => room,
            Class::Input => self.hard_limit().saturating_sub(MARKER_ROOM),
            Class::End => self.hard_limit(),
        };
        if self.written + len > limit {
            if class == Class::Input {
                self.input_refused = true;
            }
            return Ok(());
        }
        self.line(&line)
    }

    fn write_header(&mut self) -> std::io::Result<()> {
        let Some(h) = self.header.take() else {
            return Ok(());
        };
        let line = header_line(&h, self.size);
        self.line(&line)
    }

    fn line(&mut self, line: &str) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.out.write_all(&bytes)?;
        self.sha.update(&bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// The header line of `h` for a terminal of `size`.
fn header_line(h: &Header, size: (u16, u16)) -> String {
    json!({
        "version": 2,
        "width": size.0,
        "height": size.1,
        "timestamp": h.timestamp,
        "title": h.title,
        "command": h.command,
    })
    .to_string()
}

/// The most an input frame's line (stdin or resize) takes in the file, its newline included,
/// computed before it is queued: its bytes as serde_json escapes them (`\u0000` for a NUL,
/// U+FFFD's three bytes for a byte that is not UTF-8) and room for the time and for bytes
/// carried over from the frame before. `0` for output.
pub fn input_line_bound(frame: &Frame) -> u64 {
    match frame {
        Frame::Resize { .. } => LINE_OVERHEAD,
        Frame::Data(Kind::Stdin, data) => {
            let mut len = LINE_OVERHEAD + CARRY_SLACK;
            for chunk in data.utf8_chunks() {
                for b in chunk.valid().bytes() {
                    len += match b {
                        b'"' | b'\\' | 0x08 | 0x0c | b'\n' | b'\r' | b'\t' => 2,
                        0..=0x1f => 6,
                        _ => 1,
                    };
                }
                if !chunk.invalid().is_empty() {
                    len += 3;
                }
            }
            len
        }
        Frame::Data(..) => 0,
    }
}

/// `data` after the bytes held in `carry`, as text: a sequence cut at the end is held back for
/// the next frame; invalid bytes become U+FFFD (`true` when any did).
fn utf8(carry: &mut Vec<u8>, data: &[u8]) -> (String, bool) {
    let mut buf = std::mem::take(carry);
    buf.extend_from_slice(data);
    let mut out = String::with_capacity(buf.len());
    let mut rest = &buf[..];
    let mut lossy = false;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{fffd}');
                        lossy = true;
                        rest = &bad[n..];
                    }
                    None => {
                        // Cut mid-sequence: the next frame completes it.
                        carry.extend_from_slice(bad);
                        break;
                    }
                }
            }
        }
    }
    (out, lossy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            timestamp: 1,
            title: "t".into(),
            command: "sh".into(),
        }
    }

    fn lines(buf: &[u8]) -> Vec<serde_json::Value> {
        std::str::from_utf8(buf)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn data(kind: Kind, b: &[u8]) -> Frame {
        Frame::Data(kind, bytes::Bytes::copy_from_slice(b))
    }

    #[test]
    fn the_first_resize_sizes_the_header_and_later_ones_are_events() {
        let mut buf = Vec::new();
        let mut c = Cast::new(&mut buf, header(), 1 << 20);
        c.frame(
            0.0,
            &Frame::Resize {
                width: 120,
                height: 40,
            },
        )
        .unwrap();
        c.frame(0.5, &data(Kind::Stdin, b"ls\r")).unwrap();
        c.frame(0.75, &data(Kind::Stdout, b"a b\r\n")).unwrap();
        c.frame(0.8, &data(Kind::Stderr, b"oops\n")).unwrap();
        c.frame(
            1.0,
            &Frame::Resize {
                width: 100,
                height: 30,
            },
        )
        .unwrap();
        c.frame(1.5, &data(Kind::Status, br#"{"status":"Success"}"#))
            .unwrap();
        let (sha, size, _) = c.finish().unwrap();
        let l = lines(&buf);
        assert_eq!(
            (
                l[0]["version"].as_u64(),
                l[0]["width"].as_u64(),
                l[0]["height"].as_u64()
            ),
            (Some(2), Some(120), Some(40))
        );
        assert_eq!(l[1], json!([0.5, "i", "ls\r"]));
        assert_eq!(l[2], json!([0.75, "o", "a b\r\n"]));
        assert_eq!(l[3], json!([0.8, "o", "oops\n"]));
        assert_eq!(l[4], json!([1.0, "r", "100x30"]));
        assert_eq!(l[5], json!([1.5, "m", r#"status: {"status":"Success"}"#]));
        assert_eq!(size, buf.len() as u64);
        let want = crate::audit::chain::hex(digest::digest(&digest::SHA256, &buf).as_ref());
        assert_eq!(sha, want);
    }

    #[test]
    fn utf8_split_across_frames_is_joined_and_invalid_bytes_marked_once() {
        let mut buf = Vec::new();
        let mut c = Cast::new(&mut buf, header(), 1 << 20);
        let e = "é".as_bytes();
        c.frame(0.1, &data(Kind::Stdout, &[b'a', e[0]])).unwrap();
        c.frame(0.2, &data(Kind::Stdout, &[e[1], b'b'])).unwrap();
        c.frame(0.3, &data(Kind::Stdout, &[0xff, b'c'])).unwrap();
        c.frame(0.4, &data(Kind::Stdout, &[0xfe])).unwrap();
        c.finish().unwrap();
        let l = lines(&buf);
        assert_eq!(l[1], json!([0.1, "o", "a"]));
        assert_eq!(l[2], json!([0.2, "o", "éb"]));
        assert_eq!(l[3][1], "m");
        assert_eq!(l[4], json!([0.3, "o", "\u{fffd}c"]));
        assert_eq!(l[5], json!([0.4, "o", "\u{fffd}"]));
        assert_eq!(l.len(), 6);
    }

    #[test]
    fn past_the_cap_one_marker_and_nothing_more() {
        let mut buf = Vec::new();
        let mut c = Cast::new(&mut buf, header(), 1024);
        for i in 0..100 {
            c.frame(f64::from(i), &data(Kind::Stdout, b"0123456789abcdef"))
                .unwrap();
        }
        assert!(c.truncated);
        let (_, size, _) = c.finish().unwrap();
        assert!(size <= 1024, "{size}");
        let l = lines(&buf);
        let last = l.last().unwrap();
        assert_eq!(last[1], "m");
        assert!(last[2].as_str().unwrap().starts_with(TRUNCATED), "{last}");
        assert_eq!(l.iter().filter(|e| e[1] == "m").count(), 1);
    }

    /// Past the cap output is no longer written but input is, up to the hard limit (less the
    /// room for the closing marker, which still fits).
    #[test]
    fn past_the_cap_input_is_still_written_up_to_the_hard_limit() {
        let mut buf = Vec::new();
        let mut c = Cast::new(&mut buf, header(), 4096);
        c.frame(0.0, &data(Kind::Stdin, &[0; 700])).unwrap();
        assert!(c.truncated, "4200 bytes of escaped NULs fill the cap");
        c.frame(0.1, &data(Kind::Stdout, b"not kept")).unwrap();
        c.frame(0.2, &data(Kind::Stdin, b"id\n")).unwrap();
        c.frame(
            0.3,
            &Frame::Resize {
                width: 1,
                height: 2,
            },
        )
        .unwrap();
        assert!(!c.input_refused);
        c.frame(0.4, &data(Kind::Stdin, &[0; 700])).unwrap();
        assert!(c.input_refused, "past twice the cap");
        c.end_marker(0.5, "the end").unwrap();
        let (_, size, _) = c.finish().unwrap();
        assert!(size <= 8192, "{size}");
        let l = lines(&buf);
        let got: Vec<&str> = l[1..].iter().map(|e| e[1].as_str().unwrap()).collect();
        assert_eq!(got, ["m", "i", "i", "r", "m"], "{l:?}");
        assert!(l[1][2].as_str().unwrap().starts_with(TRUNCATED));
        assert_eq!(l[3], json!([0.2, "i", "id\n"]));
        assert_eq!(l[5], json!([0.5, "m", "the end"]));
    }

    /// What an input line takes is never more than [`input_line_bound`] said, whatever its
    /// bytes: escaped controls, bytes that are not UTF-8, sequences cut between frames.
    #[test]
    fn an_input_line_never_outgrows_its_bound() {
        /// Each write is one line (`Cast::line` writes a line at once): its length.
        #[derive(Default)]
        struct Lens(Vec<u64>);
        impl Write for Lens {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.push(b.len() as u64);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let e = "€".as_bytes();
        let frames: Vec<Frame> = [
            vec![0; 50],
            b"\"\\\n\t\x7f".to_vec(),
            vec![0xff, 0xfe, b'a', e[0], e[1]],
            vec![e[2], 0x80, 0x80, e[0]],
            vec![0x41, 0xf0, 0x9f],
            vec![0x98, 0x80, 0xc3],
            vec![0x1b; 3],
        ]
        .iter()
        .map(|f| data(Kind::Stdin, f))
        .chain([Frame::Resize {
            width: u16::MAX,
            height: u16::MAX,
        }])
        .collect();
        for t in [0.5, 86_399.999_999, 1.0e15 + 0.123_457] {
            let mut c = Cast::new(Lens::default(), header(), 1 << 20);
            c.marker(0.0, "start").unwrap();
            c.frame(
                0.0,
                &Frame::Resize {
                    width: 1,
                    height: 1,
                },
            )
            .unwrap();
            for f in &frames {
                let before = c.out.0.len();
                c.frame(t, f).unwrap();
                let new = &c.out.0[before..];
                let (line, marker) = new.split_last().unwrap();
                assert!(*line <= input_line_bound(f), "{f:?} at {t}: {line}");
                // At most the marker on bytes that are not UTF-8 before it.
                assert!(marker.iter().all(|m| *m <= MARKER_ROOM), "{marker:?}");
            }
        }
    }
}
