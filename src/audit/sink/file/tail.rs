//! Where an existing file leaves the chain: the last checkpoint of its sidecar, then the log
//! read backwards from the end to the event that checkpoint signs — the last valid link and how
//! many events follow the checkpoint — and whether both files end cleanly (a torn last line or
//! an invalid one does not). A file no checkpoint counts (written without a signing key)
//! counts from where the backups before it end ([`chain_end`]).

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::Path,
};

use super::Backup;
use crate::audit::chain::{self, sidecar_path, Checkpoint, Link, GENESIS};

/// What the end of an existing file says about the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TailState {
    pub(super) link: Link,
    pub(super) seq: u64,
    pub(super) since_ckpt: u64,
    /// The log ends with `\n` and its last line is an event; the sidecar (if any) ends with
    /// `\n` and its last line is a checkpoint.
    pub(super) clean_end: bool,
    /// A checkpoint of the sidecar counts `seq`; without one, `seq` counts this file's events
    /// only.
    pub(super) counted: bool,
}

impl TailState {
    pub(super) fn genesis() -> TailState {
        TailState {
            link: GENESIS,
            seq: 0,
            since_ckpt: 0,
            clean_end: true,
            counted: true,
        }
    }
}

/// Where the chain stands at the end of the newest of `backups` (oldest first), counted from
/// its start: a backup no checkpoint counts (written without a signing key) adds its events to
/// those of the backup before it, back to one a checkpoint counts or to the oldest retained.
/// `since_ckpt` sums the events since that checkpoint. Reads every unsigned backup whole — once, when signing is
/// turned on over an unsigned history.
pub(super) fn chain_end(backups: &[Backup]) -> io::Result<TailState> {
    let Some((newest, older)) = backups.split_last() else {
        return Ok(TailState::genesis());
    };
    let mut end = scan_tail(&newest.path)?;
    let mut rest = older;
    while !end.counted {
        let Some((prev, before)) = rest.split_last() else {
            break;
        };
        let state = scan_tail(&prev.path)?;
        end.seq = end.seq.saturating_add(state.seq);
        end.since_ckpt = end.since_ckpt.saturating_add(state.since_ckpt);
        end.counted = state.counted;
        rest = before;
    }
    Ok(end)
}

fn event_link(line: &[u8]) -> Option<Link> {
    let v = serde_json::from_slice::<serde_json::Value>(line).ok()?;
    if v.get("kind").and_then(|k| k.as_str()) != Some("Event") {
        return None;
    }
    v.get("annotations")
        .and_then(|a| a.get(chain::CHAIN_ANNOTATION))
        .and_then(|l| l.as_str())
        .and_then(Link::from_hex)
}

/// The last checkpoint of a sidecar `(seq, link)`, and whether the sidecar ends cleanly.
fn last_checkpoint(sidecar: &Path) -> io::Result<(Option<(u64, Link)>, bool)> {
    if !sidecar.exists() {
        return Ok((None, true));
    }
    let mut lines = ReverseLines::open(sidecar)?;
    let torn = lines.prev()?.is_some_and(|s| !s.is_empty());
    let Some(last) = lines.prev()? else {
        return Ok((None, !torn));
    };
    let cp = serde_json::from_slice::<Checkpoint>(&last)
        .ok()
        .and_then(|cp| Some((cp.seq, Link::from_hex(&cp.chain)?)));
    Ok((cp, !torn && cp.is_some()))
}

/// Where `path` (and its sidecar) leave the chain: read the log backwards to the event the
/// sidecar's last checkpoint signs (or, when it signs the state the file started from, to the
/// start of the file).
pub(super) fn scan_tail(path: &Path) -> io::Result<TailState> {
    let (cp, side_clean) = last_checkpoint(&sidecar_path(path))?;
    let mut lines = ReverseLines::open(path)?;
    // The first segment from the end is whatever follows the last newline: a torn write.
    let torn = lines.prev()?.is_some_and(|s| !s.is_empty());
    let mut link: Option<Link> = None;
    let mut after = 0u64;
    let mut last_line_valid: Option<bool> = None;
    let (base_seq, base_link) = cp.unwrap_or((0, GENESIS));
    while let Some(line) = lines.prev()? {
        let found = event_link(&line);
        last_line_valid.get_or_insert(found.is_some());
        let Some(l) = found else { continue };
        if cp.is_some() && l == base_link {
            break;
        }
        link.get_or_insert(l);
        after += 1;
    }
    Ok(TailState {
        link: link.unwrap_or(base_link),
        seq: base_seq.saturating_add(after),
        since_ckpt: after,
        clean_end: !torn && last_line_valid != Some(false) && side_clean,
        counted: cp.is_some(),
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
