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
//! `kubectl cp`'s tar are not kept byte for byte. Past `max_bytes` one marker says the
//! recording was truncated and nothing more is written.

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
/// Room kept below the cap for the truncation marker itself.
const MARKER_ROOM: usize = 160;

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
    pub truncated: bool,
}

impl<W: Write> Cast<W> {
    pub fn new(out: W, header: Header, max_bytes: u64) -> Self {
        Cast {
            out,
            sha: digest::Context::new(&digest::SHA256),
            written: 0,
            max_bytes,
            header: Some(header),
            size: (80, 24),
            carry: Default::default(),
            lossy_marked: false,
            truncated: false,
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
                    self.event(t, "r", &format!("{width}x{height}"))
                }
            }
            Frame::Data(Kind::Status, data) => {
                let text = String::from_utf8_lossy(data);
                self.event(t, "m", &format!("status: {text}"))
            }
            Frame::Data(kind, data) => {
                let (slot, code) = match kind {
                    Kind::Stdin => (0, "i"),
                    Kind::Stderr => (2, "o"),
                    _ => (1, "o"),
                };
                let (text, lossy) = utf8(&mut self.carry[slot], data);
                if lossy && !self.lossy_marked {
                    self.lossy_marked = true;
                    self.event(
                        t,
                        "m",
                        "portcullis: bytes that are not UTF-8 were replaced by U+FFFD",
                    )?;
                }
                if text.is_empty() {
                    return Ok(());
                }
                self.event(t, code, &text)
            }
        }
    }

    /// A marker event.
    pub fn marker(&mut self, t: f64, text: &str) -> std::io::Result<()> {
        self.event(t, "m", text)
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

    fn event(&mut self, t: f64, code: &str, data: &str) -> std::io::Result<()> {
        if self.truncated {
            return Ok(());
        }
        self.write_header()?;
        // Microseconds, as asciinema writes them.
        let t = (t * 1e6).round() / 1e6;
        let line = json!([t, code, data]).to_string();
        let room = self.max_bytes.saturating_sub(MARKER_ROOM as u64);
        if self.written + line.len() as u64 + 1 > room {
            self.truncated = true;
            let marker = json!([
                t,
                "m",
                format!(
                    "{TRUNCATED} its cap of {} bytes; later frames are not recorded",
                    self.max_bytes
                )
            ])
            .to_string();
            return self.line(&marker);
        }
        self.line(&line)
    }

    fn write_header(&mut self) -> std::io::Result<()> {
        let Some(h) = self.header.take() else {
            return Ok(());
        };
        let line = json!({
            "version": 2,
            "width": self.size.0,
            "height": self.size.1,
            "timestamp": h.timestamp,
            "title": h.title,
            "command": h.command,
        })
        .to_string();
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
}
