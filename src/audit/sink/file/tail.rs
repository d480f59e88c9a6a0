//! Where an existing file leaves the chain: read backwards from the end to the last
//! checkpoint, the last valid link and how many events follow it, and whether the file ends
//! cleanly (a torn last line or an invalid one does not).

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::Path,
};

use crate::audit::chain::{self, Checkpoint, Link, GENESIS};

/// What the end of an existing file says about the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TailState {
    pub(super) link: Link,
    pub(super) seq: u64,
    pub(super) since_ckpt: u64,
    /// The file ends with `\n` and its last line is an event or a checkpoint.
    pub(super) clean_end: bool,
}

impl TailState {
    pub(super) fn genesis() -> TailState {
        TailState {
            link: GENESIS,
            seq: 0,
            since_ckpt: 0,
            clean_end: true,
        }
    }
}

enum Line {
    Event(Link),
    Checkpoint(u64, Link),
    Invalid,
}

fn classify(line: &[u8]) -> Line {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return Line::Invalid;
    };
    match v.get("kind").and_then(|k| k.as_str()) {
        Some("Event") => v
            .get("annotations")
            .and_then(|a| a.get(chain::CHAIN_ANNOTATION))
            .and_then(|l| l.as_str())
            .and_then(Link::from_hex)
            .map_or(Line::Invalid, Line::Event),
        Some(chain::CHECKPOINT_KIND) => match serde_json::from_value::<Checkpoint>(v) {
            Ok(cp) => {
                Link::from_hex(&cp.chain).map_or(Line::Invalid, |l| Line::Checkpoint(cp.seq, l))
            }
            Err(_) => Line::Invalid,
        },
        _ => Line::Invalid,
    }
}

/// Read `path` backwards to the last checkpoint: the last valid link, and how many events
/// follow that checkpoint. Without any checkpoint the whole file is read and its events counted.
pub(super) fn scan_tail(path: &Path) -> io::Result<TailState> {
    let mut lines = ReverseLines::open(path)?;
    // The first segment from the end is whatever follows the last newline: a torn write.
    let torn = lines.prev()?.is_some_and(|s| !s.is_empty());
    let mut link: Option<Link> = None;
    let mut after = 0u64;
    let mut last_line_valid: Option<bool> = None;
    while let Some(line) = lines.prev()? {
        let kind = classify(&line);
        last_line_valid.get_or_insert(!matches!(kind, Line::Invalid));
        match kind {
            Line::Event(l) => {
                link.get_or_insert(l);
                after += 1;
            }
            Line::Checkpoint(seq, l) => {
                return Ok(TailState {
                    link: link.unwrap_or(l),
                    seq: seq.saturating_add(after),
                    since_ckpt: after,
                    clean_end: !torn && last_line_valid == Some(true),
                });
            }
            Line::Invalid => {}
        }
    }
    Ok(TailState {
        link: link.unwrap_or(GENESIS),
        seq: after,
        since_ckpt: after,
        clean_end: !torn && last_line_valid != Some(false),
    })
}

/// Newline-separated segments of a file from the end: first what follows the last `\n` (empty
/// for a well-terminated file), then each line before it, in reverse order.
pub(super) struct ReverseLines {
    file: File,
    /// `buf` holds the file bytes `[pos, pos + buf.len())` not yet returned.
    pos: u64,
    buf: Vec<u8>,
    done: bool,
}

impl ReverseLines {
    const CHUNK: u64 = 64 * 1024;

    pub(super) fn open(path: &Path) -> io::Result<ReverseLines> {
        let file = File::open(path)?;
        let pos = file.metadata()?.len();
        Ok(ReverseLines {
            file,
            pos,
            buf: Vec::new(),
            done: false,
        })
    }

    pub(super) fn prev(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.iter().rposition(|&b| b == b'\n') {
                let seg = self.buf[i + 1..].to_vec();
                self.buf.truncate(i);
                return Ok(Some(seg));
            }
            if self.pos == 0 {
                if self.done {
                    return Ok(None);
                }
                self.done = true;
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            let start = self.pos.saturating_sub(Self::CHUNK);
            let mut chunk = vec![0u8; (self.pos - start) as usize];
            self.file.seek(SeekFrom::Start(start))?;
            self.file.read_exact(&mut chunk)?;
            chunk.extend_from_slice(&self.buf);
            self.buf = chunk;
            self.pos = start;
        }
    }
}
