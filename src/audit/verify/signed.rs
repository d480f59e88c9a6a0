//! Reading signed checkpoints for `verify`: a log file's sidecar (`<log>.checkpoints`, strict:
//! every complete line must be a checkpoint that verifies) and anchor files (tolerant: any line
//! holding a checkpoint JSON object counts, every other line is skipped, so a container log or
//! syslog file the checkpoints were copied into can be given as it is).
//!
//! Rejects, naming `file:line`: a sidecar line that is not a checkpoint, a bad signature (with
//! keys), a sidecar whose `seq` goes backwards; an anchor line holding a checkpoint that does
//! not verify (a bad signature, or without keys a link that is not one — a forged copy is not
//! ignored). An anchor line that names the checkpoint kind but holds no checkpoint that parses
//! (a logged request path naming it, say) is skipped and counted in a warning
//! ([`read_anchor`] says why that is safe).

use std::{
    fs::File,
    io::{self, BufReader},
    path::{Path, PathBuf},
};

use super::Failure;
use crate::audit::chain::{Checkpoint, Link, VerifyingKey, CHECKPOINT_KIND};

/// One verified checkpoint and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Signed {
    pub seq: u64,
    pub link: Link,
    pub time: String,
    /// Events of its range the signer found on disk at start instead of writing them.
    pub adopted: u64,
    /// Written by a clean shutdown (`Checkpoint::clean_stop`).
    pub clean_stop: bool,
    pub file: PathBuf,
    pub line: u64,
}

impl Signed {
    /// `cp`, whose link `link` was checked, read at `path`:`line`.
    fn of(cp: Checkpoint, link: Link, path: &Path, line: u64) -> Signed {
        Signed {
            seq: cp.seq,
            link,
            time: cp.time,
            adopted: cp.adopted,
            clean_stop: cp.clean_stop,
            file: path.to_path_buf(),
            line,
        }
    }

    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// Check one parsed checkpoint: its signature with `keys`, or (no keys) only its link.
fn check(cp: &Checkpoint, keys: &[VerifyingKey]) -> Result<Link, String> {
    if keys.is_empty() {
        if cp.kind != CHECKPOINT_KIND
            || cp.api_version != crate::audit::chain::CHECKPOINT_API_VERSION
        {
            return Err("not a checkpoint".into());
        }
        Link::from_hex(&cp.chain).ok_or_else(|| format!("chain {:?} is not a link", cp.chain))
    } else {
        cp.verify(keys)
    }
}

fn fail(file: &Path, line: u64, message: String) -> Failure {
    Failure {
        file: file.to_path_buf(),
        line,
        message,
    }
}

/// Complete lines of `path` (without `\n`), and whether a last line lacked its newline.
fn for_each_line(
    path: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), Failure>,
) -> io::Result<Result<bool, Failure>> {
    let file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = super::read_line(&mut reader, &mut buf)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        line_no += 1;
        // A line over the cap is passed on empty: no checkpoint (a sidecar fails on it, an
        // anchor file skips it).
        let Some(n) = n else {
            if let Err(f) = each(line_no, b"") {
                return Ok(Err(f));
            }
            continue;
        };
        if n == 0 {
            return Ok(Ok(false));
        }
        if buf.last() != Some(&b'\n') {
            return Ok(Ok(true));
        }
        buf.pop();
        if let Err(f) = each(line_no, &buf) {
            return Ok(Err(f));
        }
    }
}

/// The checkpoints of a sidecar, in file order (`Ok(None)`: no sidecar). A torn last line
/// (a crash mid-write) is a warning.
pub(super) fn read_sidecar(
    path: &Path,
    keys: &[VerifyingKey],
    warnings: &mut Vec<String>,
) -> io::Result<Result<Option<Vec<Signed>>, Failure>> {
    if !path.exists() {
        return Ok(Ok(None));
    }
    let mut out: Vec<Signed> = Vec::new();
    let torn = for_each_line(path, |line, bytes| {
        let cp: Checkpoint = serde_json::from_slice(bytes)
            .map_err(|e| fail(path, line, format!("not a valid checkpoint ({e})")))?;
        let link = check(&cp, keys).map_err(|m| fail(path, line, m))?;
        if let Some(prev) = out.last() {
            if cp.seq < prev.seq {
                return Err(fail(
                    path,
                    line,
                    format!(
                        "checkpoint seq {} goes back (line {} signed {})",
                        cp.seq, prev.line, prev.seq
                    ),
                ));
            }
            if cp.time < prev.time {
                warnings.push(format!(
                    "{}:{line}: checkpoint time {} is before the previous one's ({}): the clock went back?",
                    path.display(),
                    cp.time,
                    prev.time
                ));
            }
        }
        out.push(Signed::of(cp, link, path, line));
        Ok(())
    })?;
    Ok(torn.map(|torn| {
        if torn {
            warnings.push(format!(
                "{}:{}: truncated final checkpoint line ignored (a crash mid-write?)",
                path.display(),
                out.last().map_or(1, |s| s.line + 1)
            ));
        }
        Some(out)
    }))
}

/// How many skipped anchor lines a warning names by number.
const SKIPPED_NAMED: usize = 5;

/// The checkpoints found in an anchor file, whatever else its lines hold: a line that is a
/// checkpoint, one after a prefix (a container runtime's `TIME stderr F `), or one wrapped as
/// a string in a log collector's record (Docker's json-file `{"log": "…"}`, a `message` field)
/// — any string member of an object without a `kind` of its own. (Anchors that yield no
/// checkpoint at all fail the verification: `verify_with_anchors`.)
///
/// A line that names the checkpoint kind but yields no checkpoint that parses is skipped, and
/// `warnings` says how many and where. The anchor file is typically the proxy's own container
/// log, which also holds text clients control (the path of every refused request is logged):
/// failing on such a line would let any client that can send a request break `verify
/// --anchor` for everyone, pushing operators to drop the anchor.
///
/// Why skipping is safe: a skipped line only ever leaves a checkpoint out of the anchor, never
/// adds or changes one. The anchor's job is to hold the files to the newest checkpoint it has
/// (catching a log and its sidecar cut back together); one checkpoint fewer is what deleting
/// that line would do, which whoever can write the anchor file can do anyway. Whoever cannot
/// (whom the anchor is for: someone able to rewrite the audit folder) cannot change what the
/// proxy's own checkpoint line says by sending requests: the copy is written in one `write` of
/// whole lines, well under `PIPE_BUF`, so its bytes stay together. What can still make a real
/// copy unparseable is damage on its way — a collector cutting the line, or a log line longer
/// than `PIPE_BUF` written to the same full stderr pipe at the same moment and split around
/// it, which leaves the checkpoint at the end of a line starting with other text — and that
/// line is skipped too (it failed before): the warning names it, to be looked at. A line that
/// does hold a checkpoint is still held to it: a bad signature (or, without keys, a link that
/// is not one) fails, as does one the files do not reach.
pub(super) fn read_anchor(
    path: &Path,
    keys: &[VerifyingKey],
    warnings: &mut Vec<String>,
) -> io::Result<Result<Vec<Signed>, Failure>> {
    let mut out = Vec::new();
    let mut skipped: Vec<u64> = Vec::new();
    let result = for_each_line(path, |line, bytes| {
        let text = String::from_utf8_lossy(bytes);
        if !text.contains(CHECKPOINT_KIND) {
            return Ok(());
        }
        match anchor_checkpoint(&text) {
            Some(cp) => {
                let link = check(&cp, keys).map_err(|m| fail(path, line, m))?;
                out.push(Signed::of(cp, link, path, line));
            }
            None => skipped.push(line),
        }
        Ok(())
    })?;
    if !skipped.is_empty() {
        let named: Vec<String> = skipped
            .iter()
            .take(SKIPPED_NAMED)
            .map(u64::to_string)
            .collect();
        let more = if skipped.len() > SKIPPED_NAMED {
            ", …"
        } else {
            ""
        };
        warnings.push(format!(
            "{}: {} line(s) name {CHECKPOINT_KIND} but hold no checkpoint (a logged request naming it?); skipped: line {}{more}",
            path.display(),
            skipped.len(),
            named.join(", "),
        ));
    }
    // A torn last line of an anchor is just not counted.
    Ok(result.map(|_| out))
}

/// The checkpoint one anchor line holds, if it parses as one (see [`read_anchor`]).
fn anchor_checkpoint(text: &str) -> Option<Checkpoint> {
    // The JSON object may follow a prefix (a container runtime's `TIME stderr F `).
    let json = text
        .find('{')
        .zip(text.rfind('}'))
        .and_then(|(a, b)| text.get(a..=b))?;
    // Only an object whose own `kind` is a checkpoint is one: an audit event whose
    // `requestURI` (or any string) holds the word is another line of the log. An object
    // without a `kind` may be a collector's record holding the line as a string.
    let v = serde_json::from_str::<serde_json::Value>(json).ok()?;
    match v.get("kind") {
        // Parsed again from the text, not from `v`: with a duplicate key (which `v` resolved to
        // the last) the line is no checkpoint.
        Some(k) if k.as_str() == Some(CHECKPOINT_KIND) => serde_json::from_str(json).ok(),
        Some(_) => None,
        None => wrapped_checkpoint(&v).and_then(|inner| serde_json::from_str(&inner).ok()),
    }
}

/// The checkpoint a log collector's record holds as one of its string members (`log`,
/// `message`, … — at any depth), trimmed: the first whose text is an object of the checkpoint
/// kind.
fn wrapped_checkpoint(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if s.contains(CHECKPOINT_KIND) => {
            let t = s.trim();
            serde_json::from_str::<serde_json::Value>(t)
                .ok()
                .filter(|inner| {
                    inner.get("kind").and_then(serde_json::Value::as_str) == Some(CHECKPOINT_KIND)
                })
                .map(|_| t.to_owned())
        }
        serde_json::Value::Object(m) => m.values().find_map(wrapped_checkpoint),
        serde_json::Value::Array(a) => a.iter().find_map(wrapped_checkpoint),
        _ => None,
    }
}
