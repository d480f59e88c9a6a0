//! `portcullis audit verify`: check the hash chain of audit files and the signed checkpoints of
//! their sidecars (`chain.rs` defines both), streaming line by line.
//!
//! Files are read in the order given and form one chain (backups oldest first, then the current
//! file: `audit-*.log audit.log`). Every line of a log file must be an `audit.k8s.io/v1` Event
//! carrying `portcullis.io/chain`, equal to SHA-256(previous link ‖ its canonical bytes). The
//! checkpoints of each log file are read from its sidecar `<file>.checkpoints` and placed by
//! their `seq` (the number of events of the chain up to the one they sign):
//!
//! * a checkpoint must parse, be signed by one of the given keys (matched by key id; the time
//!   is part of what is signed) and sign exactly the link the chain has at its `seq`;
//! * where the chain starts: GENESIS if the first event links from it; otherwise the first
//!   file's first checkpoint *anchors* the chain (its header, signing the state it continues
//!   from) — that is how the oldest retained backup, whose predecessors were deleted by
//!   retention, verifies alone. A later file's first checkpoint must sign the state the files
//!   before it end in (else a file is missing or out of order);
//! * a checkpoint whose `seq` lies beyond the last event of its log file means the file lost
//!   its newest events: **truncation** (the sidecar survived the cut);
//! * `--anchor FILE`: checkpoints copied where whoever edits the audit folder cannot rewrite
//!   them (the file sink's `checkpoint_copy`, e.g. the container's stderr shipped off the
//!   node). Each one inside the verified range must match the chain; one beyond its end means
//!   the newest events — sidecar included — were cut off. Anchors before the oldest retained
//!   event are counted, not checked (retention deleted what they sign). An anchor line that
//!   names the checkpoint kind but holds no checkpoint (a logged request path) is skipped with
//!   a warning; one holding a checkpoint that does not verify fails (`verify/signed.rs`).
//!
//! The first failure stops the run and names `file:line`. A last line without its newline
//! (a crash mid-write) is a warning, not a failure: everything before it verifies. Events after
//! the last checkpoint are reported as the "unsigned tail"; events a checkpoint signed only
//! because the restarted proxy found them unsigned on disk (its `adopted` count) are reported
//! as such, with a warning. With keys given, files without any
//! checkpoint fail (nothing is signed), and so does a file without checkpoints after a signed
//! one (its sidecar deleted or emptied — the sink starts every sidecar with a checkpoint — or
//! signing turned off). Without keys, only the chain and the checkpoints' links
//! are checked, and the report says so.

mod signed;

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{
    canonical,
    chain::{self, sidecar_path, Link, VerifyingKey, GENESIS},
};
use signed::Signed;

/// Longest line read: an event is a few MiB at most (its request and response objects are
/// capped at 3 MiB each); a file of gigabytes without a newline must not be read into memory.
pub(crate) const MAX_LINE: u64 = 64 << 20;

/// Read one line (newline kept) into `buf`: `Some(bytes read)`, 0 at the end; `None` for a
/// line over [`MAX_LINE`], whose rest is skipped unread into memory.
pub(crate) fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let n = reader.by_ref().take(MAX_LINE + 1).read_until(b'\n', buf)?;
    if (n as u64) <= MAX_LINE || buf.last() == Some(&b'\n') {
        return Ok(Some(n));
    }
    buf.clear();
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                break;
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
    Ok(None)
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub events: u64,
    pub checkpoints: u64,
    /// The link of the last verified event (or anchor).
    pub last_link: Option<Link>,
    /// Events after the last checkpoint.
    pub unsigned_tail: u64,
    /// The number of events before the first one verified (0: the chain starts at genesis).
    pub starts_after: u64,
    /// Ranges of events (first, last seq) a checkpoint signed only after a restart found them
    /// unsigned on disk: not witnessed by a signature when written (a crash's tail, or lines
    /// appended while the proxy was stopped).
    pub adopted: Vec<(u64, u64)>,
    /// The `stageTimestamp`s of each range in [`Report::adopted`] (same order), when they are
    /// to be judged: the range was read here and a checkpoint was matched before it (the chain
    /// was signed, then went unsigned while the proxy was down — a crash leaves at most one
    /// checkpoint interval of such events). `None` for a range before the files given, or
    /// history a file was signed over: events of a file no checkpoint signed before, stamped
    /// more than [`CHECKPOINT_SLACK`] before the file's first checkpoint (signing turned on for
    /// an old log; a sidecar cut back to that checkpoint leaves events stamped after it).
    pub adopted_stamps: Vec<Option<Stamps>>,
    /// The `stageTimestamp`s of the unsigned tail's events (those read here).
    pub tail_stamps: Stamps,
    /// Whether signatures were checked (keys were given).
    pub signatures_checked: bool,
    /// The newest checkpoint that matched: `(seq, signed time)`.
    pub last_checkpoint: Option<(u64, String)>,
    /// Anchor checkpoints found on the verified chain.
    pub anchors_matched: u64,
    /// Anchor checkpoints signing events before the oldest given file (deleted by retention).
    pub anchors_before: u64,
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

/// The `stageTimestamp`s of a run of events: the first and the last in file order (unix µs),
/// and how many had none that parses — a rewritten event can drop or garble its own, so a
/// judge of the run's age must not skip those. File order, not the earliest and latest: a
/// clock stepped back within the run is no sign of anything (and a rewrite can restamp at will
/// either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamps {
    pub first: Option<i64>,
    pub last: Option<i64>,
    pub untimed: u64,
}

impl Stamps {
    fn of(stamps: &[Option<i64>]) -> Stamps {
        let mut out = Stamps::default();
        for s in stamps {
            out.push(*s);
        }
        out
    }

    /// The next event's stamp, in file order.
    fn push(&mut self, stamp: Option<i64>) {
        match stamp {
            None => self.untimed += 1,
            Some(t) => {
                self.first.get_or_insert(t);
                self.last = Some(t);
            }
        }
    }

    /// From the first to the last, in µs (0 for none or one; negative after a clock step back).
    pub fn span_micros(&self) -> i64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        }
    }
}

/// Where and why verification stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub file: PathBuf,
    /// 1-based; 0 when the failure is about the whole file or run.
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

/// How much later than the checkpoint timer an unsigned event may be stamped: the timer's
/// tick, a slow sync, the clock read before the write.
pub const CHECKPOINT_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

/// An RFC 3339 time in unix µs.
fn micros(t: &str) -> Option<i64> {
    t.parse::<crate::audit::event::MicroTime>()
        .ok()
        .map(crate::audit::event::MicroTime::unix_micros)
}

struct State {
    /// The chain head and its seq, once known.
    head: Option<(Link, u64)>,
    /// The current file's sidecar checkpoints not yet placed.
    pending: VecDeque<Signed>,
    /// Anchor checkpoints by seq.
    anchors: BTreeMap<u64, Vec<Signed>>,
    since_ckpt: u64,
    /// The `stageTimestamp`s of the events read since the last checkpoint.
    since_stamps: Stamps,
    /// The `stageTimestamp` (unix µs) of each event read since the last checkpoint, kept while
    /// a checkpoint placed after another may still come — one that adopts judges the first of
    /// them. Without one to come (no sidecar left, as in a log written without a key; or none
    /// placed yet, as in the unsigned backups of a log signed later), `since_stamps` is
    /// enough, and memory stays flat however long the unsigned run.
    stamps: Vec<Option<i64>>,
    /// A file after the current one has a sidecar: a checkpoint may come after this file's.
    sidecar_later: bool,
    /// Since the last checkpoint, an event's stamp was not kept (no checkpoint was to come).
    stamps_skipped: bool,
    /// The seq of the current file's first event, once read.
    file_first_seq: Option<u64>,
    /// A checkpoint placed so far signs an event of the current file.
    file_signed: bool,
    /// The checkpoint being placed starts the chain (nothing of its range was read).
    at_start: bool,
    /// Where the last checkpoint placed was written, when it was a clean shutdown's.
    after_clean_stop: Option<String>,
    report: Report,
}

impl State {
    /// Whether adopted events with these stamps are history their file was signed over: no
    /// checkpoint signed events of this file before, and they were stamped more than
    /// [`CHECKPOINT_SLACK`] before the checkpoint before them (the file's first).
    fn history(&self, stamps: &Stamps) -> bool {
        let slack = i64::try_from(CHECKPOINT_SLACK.as_micros()).unwrap_or(i64::MAX);
        let signed = self
            .report
            .last_checkpoint
            .as_ref()
            .and_then(|(_, t)| micros(t));
        !self.file_signed
            && matches!((stamps.first, signed), (Some(t), Some(at)) if t < at.saturating_sub(slack))
    }

    /// The chain reached `(link, seq)`: place the checkpoints and anchors signing this seq.
    fn reached(&mut self, link: Link, seq: u64) -> Result<(), String> {
        while let Some(cp) = self.pending.front() {
            if cp.seq > seq {
                break;
            }
            if cp.seq < seq {
                return Err(format!(
                    "{} signs event #{} but the chain is already at event #{seq} (a file missing or out of order?)",
                    cp.at(),
                    cp.seq
                ));
            }
            if cp.link != link {
                return Err(format!(
                    "{} does not match the chain (it signs {} at event #{seq}, the chain is at {link})",
                    cp.at(),
                    cp.link
                ));
            }
            if cp.adopted > 0 {
                // The oldest events of its range: those since the previous checkpoint, up to
                // where the restarted signer took over. At the chain's start (the header of
                // a file whose predecessor is not given) they precede the files given.
                if self.at_start {
                    if cp.adopted > seq {
                        return Err(format!(
                            "{} says {} events were found unsigned at a restart, but it signs event #{seq}",
                            cp.at(),
                            cp.adopted
                        ));
                    }
                    self.since_ckpt = cp.adopted;
                }
                if cp.adopted > self.since_ckpt {
                    return Err(format!(
                        "{} says {} events were found unsigned at a restart, but only {} precede it since the previous checkpoint",
                        cp.at(),
                        cp.adopted,
                        self.since_ckpt
                    ));
                }
                let first = seq - self.since_ckpt + 1;
                let last = first + cp.adopted - 1;
                if let Some(stop) = &self.after_clean_stop {
                    // The stop was clean: nothing was left unsigned, so these were added to
                    // the log while the proxy was stopped.
                    return Err(format!(
                        "{}: events #{first}–#{last} were found unsigned at a start after the clean stop signed at {stop}: the proxy did not write them (added while it was stopped)",
                        cp.at()
                    ));
                }
                // Judged only where the chain was signed before and these were read here.
                let judged = !self.at_start
                    && self.report.checkpoints > 0
                    && self.stamps.len() as u64 == self.since_ckpt;
                if !self.at_start && self.report.checkpoints > 0 && self.stamps_skipped {
                    // Their stamps were not kept: no sidecar was on disk after this file when
                    // verifying began. Never a silent pass on them.
                    return Err(format!(
                        "{} adopts events #{first}–#{last}, but its sidecar appeared while verifying (signing turned back on?): verify again",
                        cp.at()
                    ));
                }
                let stamps = usize::try_from(cp.adopted)
                    .ok()
                    .and_then(|n| self.stamps.get(..n))
                    .filter(|_| judged)
                    .map(Stamps::of)
                    .filter(|st| !self.history(st));
                self.report.adopted.push((first, last));
                self.report.adopted_stamps.push(stamps);
                self.report.warnings.push(format!(
                    "{}: events #{first}–#{last} were found unsigned when the proxy started and are signed by this checkpoint, not by one written with them: after a crash that is its unsigned tail; after a clean stop they were added while it was stopped",
                    cp.at()
                ));
            }
            self.after_clean_stop = cp.clean_stop.then(|| cp.at());
            self.report.checkpoints += 1;
            self.report.last_checkpoint = Some((cp.seq, cp.time.clone()));
            if self.file_first_seq.is_some_and(|first| cp.seq >= first) {
                self.file_signed = true;
            }
            self.since_ckpt = 0;
            self.stamps.clear();
            self.since_stamps = Stamps::default();
            self.stamps_skipped = false;
            self.pending.pop_front();
        }
        if let Some(anchors) = self.anchors.remove(&seq) {
            for a in anchors {
                if a.link != link {
                    return Err(format!(
                        "the anchor {} signs {} at event #{seq}, the chain is at {link}",
                        a.at(),
                        a.link
                    ));
                }
                if a.clean_stop {
                    // The copy says the stop was clean, whatever the sidecar still says (its
                    // clean-stop line may have been deleted to pass lines added later off as
                    // a crash's tail).
                    self.after_clean_stop = Some(a.at());
                }
                self.report.anchors_matched += 1;
            }
        }
        Ok(())
    }

    /// The chain starts at `(link, seq)`: anchors before it are out of reach.
    fn start(&mut self, link: Link, seq: u64) -> Result<(), String> {
        let before: Vec<u64> = self.anchors.range(..seq).map(|(k, _)| *k).collect();
        for k in before {
            let n = self.anchors.remove(&k).map_or(0, |v| v.len());
            self.report.anchors_before += n as u64;
        }
        self.head = Some((link, seq));
        self.at_start = true;
        if seq > 0 {
            self.report.starts_after = seq;
            self.report.warnings.push(format!(
                "the chain starts after event #{seq} (a checkpoint signs the state the first file given continues from): events #1–#{seq} are not in these files — expected for a backup whose predecessors retention deleted, not for a log that was never rotated"
            ));
        }
        let placed = self.reached(link, seq);
        self.at_start = false;
        placed
    }

    /// Check one complete line (without its newline). `Err` is the failure message.
    fn line(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
        match v.get("kind").and_then(Value::as_str) {
            Some("Event") => self.event(&mut v, bytes),
            Some(chain::CHECKPOINT_KIND) => Err(
                "a checkpoint line inside the log: files of earlier versions verify with the release that wrote them".into(),
            ),
            Some(other) => Err(format!("not an audit event (kind {other:?})")),
            None => Err("not an audit event (no kind)".into()),
        }
    }

    fn event(&mut self, v: &mut Value, raw: &[u8]) -> Result<(), String> {
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
        // The link covers the parsed value; the line must be exactly that value as the proxy
        // writes it, or a duplicate key (the last one wins when parsed), another escape of the
        // same string or another spelling of the same number would change what readers of
        // the line see without changing the hash.
        if chain::unlink_line(raw)
            .and_then(|l| canonical::from_compact(&l))
            .as_deref()
            != Some(canonical.as_slice())
        {
            return Err(
                "the line is not the event its link covers as the proxy writes it (a duplicate key, or a string or number spelt differently)"
                    .into(),
            );
        }
        if self.head.is_none() {
            // The chain's start: GENESIS, or the state the first checkpoint signs.
            match self.pending.front() {
                Some(cp) if GENESIS.next(&canonical) != found => {
                    let (link, seq) = (cp.link, cp.seq);
                    self.start(link, seq)?;
                }
                _ => self.start(GENESIS, 0)?,
            }
        }
        let (prev, seq) = self.head.unwrap_or((GENESIS, 0));
        let expected = prev.next(&canonical);
        if expected != found {
            return Err(format!("chain broken (expected {expected}, found {found})"));
        }
        let seq = seq.saturating_add(1);
        self.head = Some((found, seq));
        self.file_first_seq.get_or_insert(seq);
        let stamp = v
            .get("stageTimestamp")
            .and_then(Value::as_str)
            .and_then(micros);
        self.since_stamps.push(stamp);
        // Only an adopting checkpoint placed after another one judges them (`reached`).
        if self.report.checkpoints > 0 && (self.sidecar_later || !self.pending.is_empty()) {
            self.stamps.push(stamp);
        } else {
            self.stamps_skipped = true;
        }
        self.report.events += 1;
        self.since_ckpt += 1;
        self.reached(found, seq)
    }

    /// The end of a log file: checkpoints left over sign events the file no longer has.
    fn end_of_file(&mut self, log: &Path) -> Result<(), Failure> {
        if self.head.is_none() {
            if let Some(cp) = self.pending.front() {
                let (link, seq) = (cp.link, cp.seq);
                self.start(link, seq).map_err(|m| whole(log, m))?;
            }
        }
        if let Some(cp) = self.pending.front() {
            let at = self.head.map_or(0, |(_, s)| s);
            return Err(Failure {
                file: cp.file.clone(),
                line: cp.line,
                message: format!(
                    "truncated: this checkpoint (time {}) signs event #{}, but {} ends at event #{at}: {} events were removed from its end",
                    cp.time,
                    cp.seq,
                    log.display(),
                    cp.seq.saturating_sub(at)
                ),
            });
        }
        Ok(())
    }
}

fn whole(file: &Path, message: String) -> Failure {
    Failure {
        file: file.to_path_buf(),
        line: 0,
        message,
    }
}

fn bytes_hint(v: &Value) -> usize {
    v.as_object().map_or(256, |o| o.len() * 64)
}

/// Verify `files` as one chain. Signatures are checked against `keys` (none: chain only).
/// `Err` only for files that cannot be read.
pub fn verify_files(files: &[PathBuf], keys: &[VerifyingKey]) -> io::Result<Report> {
    verify_with_anchors(files, keys, &[])
}

/// [`verify_files`], also holding the chain to the checkpoints copied into `anchors`.
pub fn verify_with_anchors(
    files: &[PathBuf],
    keys: &[VerifyingKey],
    anchors: &[PathBuf],
) -> io::Result<Report> {
    let mut st = State {
        head: None,
        pending: VecDeque::new(),
        anchors: BTreeMap::new(),
        since_ckpt: 0,
        since_stamps: Stamps::default(),
        stamps: Vec::new(),
        sidecar_later: false,
        stamps_skipped: false,
        file_first_seq: None,
        file_signed: false,
        at_start: false,
        after_clean_stop: None,
        report: Report {
            signatures_checked: !keys.is_empty(),
            ..Report::default()
        },
    };
    let mut anchored = 0usize;
    for a in anchors {
        match signed::read_anchor(a, keys, &mut st.report.warnings)? {
            Ok(list) => {
                if list.is_empty() {
                    // One of several files (a container log's rotated chunks, some written
                    // while audit was idle) may hold none.
                    st.report.warnings.push(format!(
                        "{}: no checkpoint found in this anchor file",
                        a.display()
                    ));
                }
                anchored += list.len();
                for s in list {
                    st.anchors.entry(s.seq).or_default().push(s);
                }
            }
            Err(f) => return Ok(stop(st, f)),
        }
    }
    if let (Some(first), 0) = (anchors.first(), anchored) {
        // Anchors that anchor nothing: named by mistake, or wrapped in a way this does not
        // read — never a silent pass.
        return Ok(stop(
            st,
            Failure {
                file: first.clone(),
                line: 0,
                message: format!("no checkpoint found in the anchor file(s) (no line is a {}, alone, after a prefix, or as a string member of a log collector's record): they anchor nothing", chain::CHECKPOINT_KIND),
            },
        ));
    }
    let mut buf = Vec::with_capacity(64 * 1024);
    // A file before this one had checkpoints.
    let mut signed_before = false;
    // The last file with a sidecar on disk: no checkpoint can come after its events.
    let last_sidecar = files.iter().rposition(|f| sidecar_path(f).exists());
    for (i, path) in files.iter().enumerate() {
        let sidecar = sidecar_path(path);
        st.sidecar_later = last_sidecar.is_some_and(|last| last > i);
        let read = signed::read_sidecar(&sidecar, keys, &mut st.report.warnings)?;
        let unsigned = match &read {
            Ok(None) => true,
            Ok(Some(list)) => list.is_empty(),
            Err(_) => false,
        };
        // The sink starts every file's sidecar with a checkpoint while it has a key: a later
        // file with events and without one had its checkpoints removed (a rewrite of the file
        // would otherwise pass as an unsigned tail) — or signing was turned off, which leaves
        // nothing after it to vouch for either. (An empty one is a start a crash or a full
        // disk interrupted: nothing to vouch for.)
        let must_be_signed = signed_before && unsigned && !keys.is_empty();
        let events_before = st.report.events;
        st.file_first_seq = None;
        st.file_signed = false;
        match read {
            Ok(Some(list)) => {
                signed_before |= !list.is_empty();
                st.pending = list.into();
            }
            Ok(None) => {
                st.pending.clear();
                if !keys.is_empty() {
                    st.report.warnings.push(format!(
                        "{}: missing: no checkpoint signs the events of {}",
                        sidecar.display(),
                        path.display()
                    ));
                }
            }
            Err(f) => return Ok(stop(st, f)),
        }
        if let (Some((_, at)), Some(first)) = (st.head, st.pending.front()) {
            // Every file starts with a checkpoint of the state it continues from.
            if first.seq != at {
                let message = format!(
                    "this file continues from event #{}, the files before it end at event #{at} (a file is missing or out of order)",
                    first.seq
                );
                return Ok(stop(
                    st,
                    Failure {
                        file: sidecar,
                        line: 1,
                        message,
                    },
                ));
            }
        }
        if let Some((link, at)) = st.head {
            // The header: the state this file continues from.
            if let Err(message) = st.reached(link, at) {
                return Ok(stop(st, whole(&sidecar, message)));
            }
        }
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = read_line(&mut reader, &mut buf)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            line_no += 1;
            let Some(n) = n else {
                let f = Failure {
                    file: path.clone(),
                    line: line_no,
                    message: format!(
                        "a line longer than {} MiB: not an event the proxy writes",
                        MAX_LINE >> 20
                    ),
                };
                return Ok(stop(st, f));
            };
            if n == 0 {
                break;
            }
            if buf.last() != Some(&b'\n') {
                st.report.warnings.push(format!(
                    "{}:{line_no}: truncated final line ignored (a crash mid-write?); everything before it verifies",
                    path.display()
                ));
                break;
            }
            buf.pop();
            if let Err(message) = st.line(&buf) {
                let f = Failure {
                    file: path.clone(),
                    line: line_no,
                    message,
                };
                return Ok(stop(st, f));
            }
        }
        if must_be_signed && st.report.events > events_before {
            let message = format!(
                "no checkpoint signs this file, but the files before it were signed: its sidecar {} was deleted or emptied, or signing was turned off",
                sidecar.display()
            );
            return Ok(stop(st, whole(path, message)));
        }
        if let Err(f) = st.end_of_file(path) {
            return Ok(stop(st, f));
        }
    }
    let at = st.head.map_or(0, |(_, s)| s);
    if let Some(a) = st.anchors.values().flatten().next() {
        let f = Failure {
            file: a.file.clone(),
            line: a.line,
            message: format!(
                "truncated: this anchor (time {}) signs event #{}, but the files end at event #{at}: the newest {} events are gone",
                a.time,
                a.seq,
                a.seq.saturating_sub(at)
            ),
        };
        return Ok(stop(st, f));
    }
    if !keys.is_empty() && st.report.checkpoints == 0 && st.report.events > 0 {
        let f = whole(
            &files.last().map(|f| sidecar_path(f)).unwrap_or_default(),
            "no checkpoint found: nothing is signed".into(),
        );
        return Ok(stop(st, f));
    }
    Ok(finish(st))
}

fn stop(mut st: State, f: Failure) -> Report {
    st.report.failure = Some(f);
    finish(st)
}

fn finish(mut st: State) -> Report {
    st.report.last_link = st.head.map(|(l, _)| l);
    st.report.unsigned_tail = st.since_ckpt;
    st.report.tail_stamps = st.since_stamps;
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
mod tests;
