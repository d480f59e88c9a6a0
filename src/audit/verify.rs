//! `portcullis audit verify`: check the hash chain and the checkpoint signatures of audit files
//! written by the file sink (`chain.rs` defines both), streaming line by line.
//!
//! Files are read in the order given and form one chain (backups oldest first, then the current
//! file: `audit-*.log audit.log`). For every line:
//!
//! * an **event** must carry `portcullis.io/chain`, equal to SHA-256(previous link ‖ its
//!   canonical bytes); the previous link of the very first event is [`GENESIS`] unless a
//!   checkpoint came first;
//! * a **checkpoint** must be well-formed, signed by one of the given keys (matched by key id),
//!   and sign the current link; its `seq` must exceed the previous checkpoint's by the number
//!   of events between them. A checkpoint before any event *anchors* the chain: that is how
//!   the oldest retained backup, whose predecessors were deleted by retention, verifies alone;
//! * anything else (not JSON, another kind, no link) is a failure.
//!
//! The first failure stops the run and names `file:line`. A last line without its newline
//! (a crash mid-write) is a warning, not a failure: everything before it verifies. Events after
//! the last checkpoint are reported as the "unsigned tail": their chain holds, but only a key
//! holder's signature would prove they were not rewritten. With keys given, files without any
//! checkpoint fail (nothing is signed). Without keys, only the chain is checked, and the
//! report says so.

use std::{
    fmt,
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::chain::{self, Checkpoint, Link, VerifyingKey, GENESIS};

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub events: u64,
    pub checkpoints: u64,
    /// The link of the last verified event (or anchor).
    pub last_link: Option<Link>,
    /// Events after the last checkpoint.
    pub unsigned_tail: u64,
    /// Whether signatures were checked (keys were given).
    pub signatures_checked: bool,
    /// Non-fatal findings (`file:line: …`).
    pub warnings: Vec<String>,
    /// The first break, if any.
    pub failure: Option<Failure>,
}

impl Report {
    /// No failure.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Where and why verification stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub file: PathBuf,
    /// 1-based; 0 when the failure is about the whole run.
    pub line: u64,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

struct State<'k> {
    keys: &'k [VerifyingKey],
    link: Option<Link>,
    last_ckpt_seq: Option<u64>,
    since_ckpt: u64,
    report: Report,
}

impl State<'_> {
    /// Check one complete line (without its newline). `Err` is the failure message.
    fn line(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
        match v.get("kind").and_then(Value::as_str) {
            Some("Event") => self.event(&mut v),
            Some(chain::CHECKPOINT_KIND) => self.checkpoint(v),
            Some(other) => Err(format!("not an audit event or checkpoint (kind {other:?})")),
            None => Err("not an audit event or checkpoint (no kind)".into()),
        }
    }

    fn event(&mut self, v: &mut Value) -> Result<(), String> {
        let found = match chain::strip_chain(v) {
            Some(Value::String(s)) => Link::from_hex(&s)
                .ok_or_else(|| format!("{} is not a link: {s:?}", chain::CHAIN_ANNOTATION))?,
            _ => {
                return Err(format!(
                    "event without a {} annotation",
                    chain::CHAIN_ANNOTATION
                ))
            }
        };
        let mut canonical = Vec::with_capacity(bytes_hint(v));
        chain::write_canonical(v, &mut canonical);
        let expected = self.link.unwrap_or(GENESIS).next(&canonical);
        if expected != found {
            return Err(format!("chain broken (expected {expected}, found {found})"));
        }
        self.link = Some(found);
        self.report.events += 1;
        self.since_ckpt += 1;
        Ok(())
    }

    fn checkpoint(&mut self, v: Value) -> Result<(), String> {
        let cp: Checkpoint =
            serde_json::from_value(v).map_err(|e| format!("not a valid checkpoint ({e})"))?;
        let signed = if self.keys.is_empty() {
            Link::from_hex(&cp.chain)
                .ok_or_else(|| format!("checkpoint chain {:?} is not a link", cp.chain))?
        } else {
            cp.verify(self.keys)?
        };
        match self.link {
            // Before any event: the checkpoint anchors the chain.
            None => self.link = Some(signed),
            Some(cur) if cur != signed => {
                return Err(format!(
                    "checkpoint does not match the chain (it signs {signed}, the chain is at {cur})"
                ))
            }
            Some(_) => {}
        }
        if let Some(prev) = self.last_ckpt_seq {
            let want = prev.saturating_add(self.since_ckpt);
            if cp.seq != want {
                return Err(format!("checkpoint seq {} but {want} expected", cp.seq));
            }
        }
        self.last_ckpt_seq = Some(cp.seq);
        self.since_ckpt = 0;
        self.report.checkpoints += 1;
        Ok(())
    }
}

fn bytes_hint(v: &Value) -> usize {
    v.as_object().map_or(256, |o| o.len() * 64)
}

/// Verify `files` as one chain. Signatures are checked against `keys` (none: chain only).
/// `Err` only for files that cannot be read.
pub fn verify_files(files: &[PathBuf], keys: &[VerifyingKey]) -> io::Result<Report> {
    let mut st = State {
        keys,
        link: None,
        last_ckpt_seq: None,
        since_ckpt: 0,
        report: Report {
            signatures_checked: !keys.is_empty(),
            ..Report::default()
        },
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    for path in files {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if buf.last() != Some(&b'\n') {
                st.report.warnings.push(format!(
                    "{}:{line_no}: truncated final line ignored (a crash mid-write?); everything before it verifies",
                    path.display()
                ));
                break;
            }
            buf.pop();
            if let Err(message) = st.line(&buf) {
                st.report.failure = Some(Failure {
                    file: path.clone(),
                    line: line_no,
                    message,
                });
                return Ok(finish(st));
            }
        }
    }
    if !keys.is_empty() && st.report.checkpoints == 0 && st.report.events > 0 {
        st.report.failure = Some(Failure {
            file: files.last().cloned().unwrap_or_default(),
            line: 0,
            message: "no checkpoint found: nothing is signed".into(),
        });
    }
    Ok(finish(st))
}

fn finish(mut st: State<'_>) -> Report {
    st.report.last_link = st.link;
    st.report.unsigned_tail = st.since_ckpt;
    st.report
}

/// Load verification keys from files (public or private key files).
pub fn load_keys(paths: &[PathBuf]) -> Result<Vec<VerifyingKey>, String> {
    paths
        .iter()
        .map(|p| VerifyingKey::load(Path::new(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{chain::SigningKey, event::Event, sink::Prepared};
    use std::io::Write;

    /// Write `n` chained events with checkpoints after every `every` events (and one header).
    fn write_file(path: &Path, key: &SigningKey, n: usize, every: usize) -> Link {
        let mut out = Vec::new();
        let mut link = GENESIS;
        out.extend_from_slice(&Checkpoint::sign(key, 0, &link).to_line());
        out.push(b'\n');
        for i in 0..n {
            let p = Prepared::new(
                Event {
                    audit_id: format!("a{i}"),
                    ..Event::default()
                },
                true,
            )
            .unwrap();
            link = link.next(p.canonical());
            p.write_chained(&link, &mut out);
            if (i + 1) % every == 0 {
                out.extend_from_slice(&Checkpoint::sign(key, (i + 1) as u64, &link).to_line());
                out.push(b'\n');
            }
        }
        std::fs::write(path, out).unwrap();
        link
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn put(path: &Path, lines: &[String]) {
        let mut f = File::create(path).unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    fn fail_at(path: &Path, keys: &[VerifyingKey]) -> (u64, String) {
        let r = verify_files(&[path.to_path_buf()], keys).unwrap();
        let f = r.failure.unwrap();
        (f.line, f.message)
    }

    #[test]
    fn clean_file_verifies_with_counts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let (_, _, key) = SigningKey::generate().unwrap();
        let last = write_file(&p, &key, 10, 4);
        let r = verify_files(&[p], &[key.verifying_key()]).unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!(
            (r.events, r.checkpoints, r.unsigned_tail, r.last_link),
            (10, 3, 2, Some(last))
        );
    }

    #[test]
    fn every_tampering_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let (_, _, key) = SigningKey::generate().unwrap();
        let keys = [key.verifying_key()];
        write_file(&p, &key, 10, 4);
        let orig = lines(&p);
        // Line 1 is the header checkpoint; events are lines 2-5, 7-10, 12-13.

        let mut l = orig.clone();
        l[2] = l[2].replace("\"a1\"", "\"a1x\"");
        put(&p, &l);
        let (line, msg) = fail_at(&p, &keys);
        assert_eq!(line, 3);
        assert!(msg.starts_with("chain broken (expected "), "{msg}");

        let mut l = orig.clone();
        l.remove(3);
        put(&p, &l);
        assert_eq!(fail_at(&p, &keys).0, 4, "deleted line: the next one breaks");

        let mut l = orig.clone();
        l.swap(2, 3);
        put(&p, &l);
        assert_eq!(fail_at(&p, &keys).0, 3, "reordered");

        let mut l = orig.clone();
        let cp = l[5].clone();
        let cut = cp.rfind("\"}").unwrap();
        l[5] = format!("{}\"}}", &cp[..cut - 10]);
        put(&p, &l);
        let (line, msg) = fail_at(&p, &keys);
        assert_eq!(line, 6);
        assert!(msg.contains("signature invalid"), "{msg}");

        let mut l = orig.clone();
        l[7] = "{not json".into();
        put(&p, &l);
        let (line, msg) = fail_at(&p, &keys);
        assert_eq!(line, 8);
        assert!(msg.starts_with("not JSON"), "{msg}");

        // Deleting a checkpoint keeps the chain but the next checkpoint's seq still matches
        // the events between: only the coverage shrinks.
        let mut l = orig.clone();
        l.remove(5);
        put(&p, &l);
        assert!(verify_files(std::slice::from_ref(&p), &keys).unwrap().ok());

        // A checkpoint moved after more events signs a stale link.
        let mut l = orig.clone();
        let cp = l.remove(5);
        l.insert(6, cp);
        put(&p, &l);
        assert_eq!(fail_at(&p, &keys).0, 7);

        // Another key's signatures are refused.
        put(&p, &orig);
        let (_, _, other) = SigningKey::generate().unwrap();
        let (line, msg) = fail_at(&p, &[other.verifying_key()]);
        assert_eq!(line, 1);
        assert!(msg.contains("signed by key"), "{msg}");
    }

    #[test]
    fn rewriting_the_whole_chain_is_caught_by_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let (_, _, key) = SigningKey::generate().unwrap();
        let (_, _, attacker) = SigningKey::generate().unwrap();
        write_file(&p, &key, 6, 3);
        // The attacker rewrites everything with a recomputed chain and their own key.
        let forged = dir.path().join("b.log");
        write_file(&forged, &attacker, 6, 3);
        assert!(
            !verify_files(std::slice::from_ref(&forged), &[key.verifying_key()])
                .unwrap()
                .ok()
        );
        // …or without checkpoints at all.
        let no_cp: Vec<String> = lines(&forged)
            .into_iter()
            .filter(|l| l.contains("\"kind\":\"Event\""))
            .collect();
        put(&forged, &no_cp);
        let r = verify_files(std::slice::from_ref(&forged), &[key.verifying_key()]).unwrap();
        assert!(r.failure.unwrap().message.contains("no checkpoint"));
        // Without keys only the chain is checked, and the report says so.
        let r = verify_files(&[forged], &[]).unwrap();
        assert!(r.ok() && !r.signatures_checked);
    }

    #[test]
    fn truncated_final_line_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let (_, _, key) = SigningKey::generate().unwrap();
        write_file(&p, &key, 5, 10);
        let mut bytes = std::fs::read(&p).unwrap();
        let keep = bytes.len() - 40;
        bytes.truncate(keep);
        std::fs::write(&p, &bytes).unwrap();
        let r = verify_files(&[p], &[key.verifying_key()]).unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.events, 4);
        assert_eq!(r.unsigned_tail, 4);
        assert_eq!(r.warnings.len(), 1);
        assert!(
            r.warnings[0].contains(":6: truncated final line"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn other_lines_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        for (content, want) in [
            ("{\"kind\":\"Pod\"}\n", "kind \"Pod\""),
            ("[]\n", "no kind"),
            ("\n", "not JSON"),
            (
                "{\"kind\":\"Event\",\"auditID\":\"x\"}\n",
                "without a portcullis.io/chain",
            ),
            (
                "{\"kind\":\"PortcullisAuditCheckpoint\",\"seq\":1}\n",
                "not a valid checkpoint",
            ),
        ] {
            std::fs::write(&p, content).unwrap();
            let (line, msg) = fail_at(&p, &[]);
            assert_eq!(line, 1);
            assert!(msg.contains(want), "{content:?}: {msg}");
        }
    }
}
