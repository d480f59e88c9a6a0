//! The bounded writer of one session file: the splice hands it parsed frames without ever
//! waiting, a thread of its own writes them (`cast.rs`), and the session's end yields the
//! file's name and SHA-256 for its audit event.
//!
//! The file is created (`<Audit-ID>.cast`, mode 0600, never over an existing file) before the
//! request goes upstream, so a session that could not be recorded is refused (503, see
//! `upstream::upgrade`) instead of running unrecorded; an answer other than 101 removes it.
//! Once the session is upgraded the recorder's thread syncs the directory (best effort, a
//! warning when it cannot), so the file's name survives a crash.
//! Output frames that find their share of the queue full are dropped and counted; the next
//! frame written is preceded by a marker saying how many were lost, and the annotation carries
//! the total. Input is never dropped: input the queue cannot take, or a writer that stopped,
//! ends the session ([`INPUT_LOST`]).
//!
//! Nor does input go unrecorded past the size cap: at `max_session_bytes` output stops being
//! written (`cast.rs`), input goes on up to twice the cap, and input that could take the file
//! past that hard limit ends the session the same way ([`INPUT_OVER_LIMIT`]) — checked before
//! the read is passed on, against the file's size as the writer last reported it, the input
//! still queued (each line at the most it may take, [`cast::input_line_bound`]), and output
//! queued as if it filled the cap. So filling the cap on purpose (a pipe of NULs) does not buy
//! an unrecorded session; a large download (output) goes on with its file capped; input larger
//! than its room (an upload, `kubectl cp` into a pod) ends the session.

use std::{
    fs::File,
    io::BufWriter,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc,
    },
    time::Instant,
};

use serde_json::json;

use super::{
    cast::{self, Cast, Frame, Header, Kind, MARKER_ROOM},
    config::SessionSettings,
    Protocol,
};

/// Frames queued between the splice and the writer thread.
const QUEUE: usize = 4096;
/// Of the queue, the slots output frames may not take: the client's input (what someone
/// typed) is never dropped for output — it finds the queue full only when input alone fills
/// it, and then the session ends rather than going on unrecorded.
const INPUT_RESERVE: usize = 512;

/// The marker (and annotation error) of a session ended because a direction's frames could
/// no longer be read.
pub const UNREADABLE: &str =
    "portcullis: a frame could not be read (recording would stop here); the session was ended";
/// The marker (and annotation error) of a session ended because input could not be recorded
/// (the recorder fell behind on input alone, or stopped).
pub const INPUT_LOST: &str =
    "portcullis: input could not be recorded (the recorder fell behind or stopped); the session was ended";
/// The marker (and annotation error) of a session ended because its input would have taken the
/// file past its hard limit (twice `max_session_bytes`).
pub const INPUT_OVER_LIMIT: &str =
    "portcullis: input would take the recording past twice max_session_bytes; the session was ended";

/// Raised by a feeder whose parser broke, or whose input the writer can no longer take: the
/// splice ends the session. Also counts the output frames queued (see [`INPUT_RESERVE`]) and
/// what the file may still grow to (see [`Cut::input_fits`]).
struct Cut {
    raised: AtomicBool,
    notify: tokio::sync::Notify,
    output_queued: AtomicUsize,
    /// Raised because input could not be queued (not for an unreadable frame).
    input_lost: AtomicBool,
    /// Raised because input would have taken the file past its hard limit.
    input_over: AtomicBool,
    /// `max_session_bytes`.
    max_bytes: u64,
    /// The file's size as the writer last reported it (an unwritten header at its largest).
    file_bound: AtomicU64,
    /// The input queued and not yet written, each line at the most it may take.
    input_pending: AtomicU64,
}

impl Cut {
    fn new(max_bytes: u64) -> Cut {
        Cut {
            raised: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            output_queued: AtomicUsize::new(0),
            input_lost: AtomicBool::new(false),
            input_over: AtomicBool::new(false),
            max_bytes,
            file_bound: AtomicU64::new(0),
            input_pending: AtomicU64::new(0),
        }
    }

    /// What ended the session, once raised.
    fn reason(&self) -> &'static str {
        if self.input_over.load(Ordering::SeqCst) {
            INPUT_OVER_LIMIT
        } else if self.input_lost.load(Ordering::SeqCst) {
            INPUT_LOST
        } else {
            UNREADABLE
        }
    }

    /// Whether an input line of at most `bound` bytes, queued now, stays below the hard limit
    /// whatever happens before it is written: output may still fill the file up to the cap
    /// (never past it), the truncation marker may come, the input queued before it is written
    /// first; room stays for the marker on bytes that are not UTF-8 and the one ending the
    /// session. The pending input is read before the size: the writer reports a line's size
    /// before it stops counting it as pending, so a line is counted at least once.
    fn input_fits(&self, bound: u64) -> bool {
        let pending = self.input_pending.load(Ordering::SeqCst);
        let file = self.file_bound.load(Ordering::SeqCst);
        let at_most = file
            .max(self.max_bytes)
            .saturating_add(MARKER_ROOM)
            .saturating_add(pending)
            .saturating_add(bound)
            .saturating_add(2 * MARKER_ROOM);
        at_most <= self.max_bytes.saturating_mul(2)
    }
}

/// A session file created for a request not yet upgraded.
pub struct Pending {
    file: Option<File>,
    path: PathBuf,
    name: String,
    max_bytes: u64,
    header: Option<Header>,
    /// The request asked for stdin.
    stdin: bool,
}

impl Pending {
    /// Create `<audit_id>.cast` in the configured directory.
    pub fn create(
        settings: &SessionSettings,
        audit_id: &str,
        header: Header,
        stdin: bool,
    ) -> std::io::Result<Pending> {
        // Our own UUIDs; anything else must not become a path.
        if audit_id.is_empty()
            || !audit_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(std::io::Error::other("audit ID unusable as a file name"));
        }
        let name = format!("{audit_id}.cast");
        let path = settings.directory.join(&name);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&path)?;
        Ok(Pending {
            file: Some(file),
            path,
            name,
            max_bytes: settings.max_session_bytes,
            header: Some(header),
            stdin,
        })
    }

    /// The session was upgraded: start writing.
    pub fn start(mut self, protocol: Protocol) -> Session {
        let started = Instant::now();
        let dropped = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(Cut::new(self.max_bytes));
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let name = self.name.clone();
        if let (Some(file), Some(header)) = (self.file.take(), self.header.take()) {
            let cast = Cast::new(BufWriter::new(file), header, self.max_bytes);
            cut.file_bound.store(cast.size_bound(), Ordering::SeqCst);
            let lost = dropped.clone();
            let ended = cut.clone();
            let dir = self.path.parent().map(std::path::Path::to_path_buf);
            let spawned = std::thread::Builder::new()
                .name("session-recorder".into())
                .spawn(move || {
                    if let Some(dir) = dir {
                        sync_dir(&dir);
                    }
                    let written =
                        write(cast, rx, &lost, &ended, started, protocol).and_then(|(w, out)| {
                            let file = out.into_inner().map_err(|e| e.error().to_string())?;
                            file.sync_all().map_err(|e| e.to_string())?;
                            Ok(w)
                        });
                    let _ = done_tx.send(written);
                });
            if let Err(err) = spawned {
                tracing::error!(%err, file = %name, "session recorder thread did not start");
            }
        }
        Session {
            tx,
            dropped,
            cut,
            started,
            done,
            name,
            protocol,
            stdin: self.stdin,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Never upgraded: no session happened, no file stays.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A session being recorded.
pub struct Session {
    /// The request asked for stdin.
    stdin: bool,
    tx: SyncSender<(f64, Frame)>,
    dropped: Arc<AtomicU64>,
    cut: Arc<Cut>,
    started: Instant,
    done: tokio::sync::oneshot::Receiver<Result<Written, String>>,
    name: String,
    protocol: Protocol,
}

/// What the writer thread made.
struct Written {
    sha256: String,
    bytes: u64,
    truncated: bool,
}

impl Session {
    /// The readers of the client's and the upstream's byte streams.
    pub fn feeders(&self) -> (Feeder, Feeder) {
        let (from_client, from_upstream) = self.protocol.directions(self.stdin);
        let feeder = |parser| Feeder {
            parser,
            tx: self.tx.clone(),
            dropped: self.dropped.clone(),
            cut: self.cut.clone(),
            started: self.started,
            frames: Vec::new(),
            output_room: QUEUE - INPUT_RESERVE,
            unrecordable: false,
        };
        (feeder(from_client), feeder(from_upstream))
    }

    /// Resolves once a direction's frames could no longer be read: the session must end.
    pub fn unreadable(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let cut = self.cut.clone();
        async move { cut.notify.notified().await }
    }

    /// Wait for the file to be complete (every feeder dropped); the annotation's value.
    pub async fn finish(self) -> String {
        self.finish_within(None).await
    }

    /// [`finish`](Self::finish), waiting at most `limit` for the writer (a hung file system
    /// must not hold the session's place under the stream caps, its `ResponseComplete` and a
    /// shutdown): past it the value names the file and says the recording was not finished.
    pub async fn finish_within(self, limit: Option<std::time::Duration>) -> String {
        let Session {
            tx,
            dropped,
            cut,
            done,
            name,
            ..
        } = self;
        drop(tx);
        let lost = dropped.load(Ordering::Relaxed);
        let done = match limit {
            None => done.await,
            Some(limit) => match tokio::time::timeout(limit, done).await {
                Ok(done) => done,
                Err(_) => {
                    tracing::error!(file = %name, ?limit, "a session's recording was not finished in time (file system hung?); its event is written without its digest");
                    return json!({
                        "file": name,
                        "error": format!("the recording was not finished within {} s", limit.as_secs()),
                        "droppedFrames": lost,
                    })
                    .to_string();
                }
            },
        };
        match done {
            Ok(Ok(w)) if cut.raised.load(Ordering::SeqCst) => json!({
                "file": name,
                "sha256": w.sha256,
                "bytes": w.bytes,
                "truncated": w.truncated,
                "droppedFrames": lost,
                "error": cut.reason(),
            }),
            Ok(Ok(w)) => json!({
                "file": name,
                "sha256": w.sha256,
                "bytes": w.bytes,
                "truncated": w.truncated,
                "droppedFrames": lost,
            }),
            Ok(Err(err)) => json!({"file": name, "error": err, "droppedFrames": lost}),
            Err(_) => json!({"file": name, "error": "the recorder did not run"}),
        }
        .to_string()
    }
}

/// Turns one direction's bytes into frames for the writer, never waiting for it.
pub struct Feeder {
    parser: super::Direction,
    tx: SyncSender<(f64, Frame)>,
    dropped: Arc<AtomicU64>,
    cut: Arc<Cut>,
    started: Instant,
    frames: Vec<Frame>,
    /// How many output frames may be queued at once.
    output_room: usize,
    /// Input the writer could not take (its queue full of input, or the writer gone).
    unrecordable: bool,
}

impl Feeder {
    /// Whether this direction can no longer be read or recorded: the read that broke it must
    /// not be passed on (`upstream::upgrade` fails it instead).
    pub fn broken(&self) -> bool {
        self.parser.broken() || self.unrecordable
    }

    /// The next bytes read from this direction.
    pub fn feed(&mut self, bytes: &[u8]) {
        let t = self.started.elapsed().as_secs_f64();
        self.parser.feed(bytes, &mut self.frames);
        if self.parser.broken() {
            // The read that broke the parser is withheld whole (`upstream::upgrade`): the
            // frames it completed never reached the other side, so they are not recorded as
            // if they had.
            self.frames.clear();
        }
        // Taken out for the loop and put back after, so the buffer is reused read after read.
        let mut frames = std::mem::take(&mut self.frames);
        for frame in frames.drain(..) {
            let output = is_output(&frame);
            let input_bound = cast::input_line_bound(&frame);
            if !output {
                // Input that could take the file past its hard limit: the session ends here,
                // this read withheld, rather than going on unrecorded.
                if !self.cut.input_fits(input_bound) {
                    self.unrecordable = true;
                    self.cut.input_over.store(true, Ordering::SeqCst);
                    break;
                }
                self.cut
                    .input_pending
                    .fetch_add(input_bound, Ordering::SeqCst);
            }
            if output {
                // Output never takes the room kept for input; past it, it is dropped (and
                // said so in the file).
                let queued = self.cut.output_queued.fetch_add(1, Ordering::SeqCst);
                if queued >= self.output_room {
                    self.cut.output_queued.fetch_sub(1, Ordering::SeqCst);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            match self.tx.try_send((t, frame)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) if output => {
                    self.cut.output_queued.fetch_sub(1, Ordering::SeqCst);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                // Input the writer cannot take, or a writer that stopped (a write error, no
                // thread): what follows would go unrecorded — the session ends, this read
                // withheld.
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.cut
                        .input_pending
                        .fetch_sub(input_bound, Ordering::SeqCst);
                    self.unrecordable = true;
                    self.cut.input_lost.store(true, Ordering::SeqCst);
                    // Nothing after it in this (withheld) read is queued either (the drain
                    // drops the rest).
                    break;
                }
            }
        }
        self.frames = frames;
        if self.broken() && !self.cut.raised.swap(true, Ordering::SeqCst) {
            // notify_one keeps a permit: the splice sees it even if it is not waiting yet.
            self.cut.notify.notify_one();
        }
    }
}

/// Output (what the pod sent back), which may be dropped when the writer falls behind; input
/// (stdin, resizes) never is.
fn is_output(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::Data(Kind::Stdout | Kind::Stderr | Kind::Status, _)
    )
}

/// The writer thread: frames in order, a marker before the first one after a loss, a flush
/// whenever the queue runs empty.
fn write<W: std::io::Write>(
    mut cast: Cast<W>,
    rx: Receiver<(f64, Frame)>,
    dropped: &AtomicU64,
    cut: &Cut,
    started: Instant,
    protocol: Protocol,
) -> Result<(Written, W), String> {
    let err = |e: std::io::Error| e.to_string();
    let mut reported = 0u64;
    let mut note_loss = |cast: &mut Cast<W>, t: f64| {
        let lost = dropped.load(Ordering::Relaxed);
        if lost > reported {
            let text = format!(
                "portcullis: {} frame(s) dropped: the recorder fell behind",
                lost - reported
            );
            reported = lost;
            return cast.marker(t, &text);
        }
        Ok(())
    };
    if let Protocol::Unreadable(what) = protocol {
        cast.marker(0.0, &format!("portcullis: {what} cannot be recorded"))
            .map_err(err)?;
    }
    let mut one = |cast: &mut Cast<W>, t: f64, frame: Frame| -> std::io::Result<()> {
        if is_output(&frame) {
            cut.output_queued.fetch_sub(1, Ordering::SeqCst);
        }
        note_loss(cast, t)?;
        cast.frame(t, &frame)?;
        // The size first, then the line no longer pending (see `Cut::input_fits`).
        cut.file_bound.store(cast.size_bound(), Ordering::SeqCst);
        let bound = cast::input_line_bound(&frame);
        let _ = cut
            .input_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(p.saturating_sub(bound))
            });
        if cast.input_refused && !cut.raised.swap(true, Ordering::SeqCst) {
            // Not expected (the feeder keeps input below the hard limit): should it happen,
            // the session ends rather than going on unrecorded.
            cut.input_over.store(true, Ordering::SeqCst);
            cut.notify.notify_one();
        }
        Ok(())
    };
    while let Ok((t, frame)) = rx.recv() {
        one(&mut cast, t, frame).map_err(err)?;
        while let Ok((t, frame)) = rx.try_recv() {
            one(&mut cast, t, frame).map_err(err)?;
        }
        cast.flush().map_err(err)?;
    }
    note_loss(&mut cast, started.elapsed().as_secs_f64()).map_err(err)?;
    if cut.raised.load(Ordering::SeqCst) {
        cast.end_marker(started.elapsed().as_secs_f64(), cut.reason())
            .map_err(err)?;
    }
    let truncated = cast.truncated;
    let (sha256, bytes, out) = cast.finish().map_err(err)?;
    Ok((
        Written {
            sha256,
            bytes,
            truncated,
        },
        out,
    ))
}

/// Make the new file's name durable: its directory synced once, from the recorder's thread
/// (off the request's path). Best effort: a failure is logged, the session goes on — its
/// file is there, only a crash could lose its name.
fn sync_dir(dir: &std::path::Path) {
    if let Err(err) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), %err, "cannot sync the session recording directory: a new recording's name may not survive a crash");
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WebSocket feeder of the client's direction (`from_client`) or the API server's into
    /// `tx`, whose output may take `output_room` slots.
    fn ws_feeder(
        tx: SyncSender<(f64, Frame)>,
        dropped: &Arc<AtomicU64>,
        cut: &Arc<Cut>,
        started: Instant,
        (from_client, output_room): (bool, usize),
    ) -> Feeder {
        Feeder {
            parser: super::super::Direction::WebSocket(Box::new(
                super::super::websocket::Direction::new(
                    from_client,
                    super::super::websocket::Channels::default(),
                ),
            )),
            tx,
            dropped: dropped.clone(),
            cut: cut.clone(),
            started,
            frames: Vec::new(),
            output_room,
            unrecordable: false,
        }
    }

    /// A server frame (unmasked) on channel 1.
    fn stdout_frame(text: &[u8]) -> Vec<u8> {
        let mut f = vec![0x82, text.len() as u8 + 1, 1];
        f.extend_from_slice(text);
        f
    }

    /// A client frame (masked) on channel 0.
    fn stdin_frame(text: &[u8]) -> Vec<u8> {
        let mut f = vec![0x82, 0x80 | (text.len() as u8 + 1), 0, 0, 0, 0, 0];
        f.extend_from_slice(text);
        f
    }

    /// Output that finds its share of the queue full is dropped without waiting, and the file
    /// says how many; input takes the room kept for it, and input that finds even that full
    /// ends the session (its read withheld) instead of going unrecorded — as does a writer
    /// that stopped.
    #[test]
    fn a_full_queue_drops_output_but_never_input() {
        let (tx, rx) = mpsc::sync_channel(3);
        let (dropped, cut) = (Arc::new(AtomicU64::new(0)), Arc::new(Cut::new(1 << 20)));
        let started = Instant::now();
        let mut server = ws_feeder(tx.clone(), &dropped, &cut, started, (false, 2));
        let mut client = ws_feeder(tx, &dropped, &cut, started, (true, 2));
        // Nobody reads yet: two output frames fit, three are dropped — feed never blocks.
        for word in [&b"one"[..], b"two", b"three", b"four", b"five"] {
            server.feed(&stdout_frame(word));
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        client.feed(&stdin_frame(b"typed"));
        assert!(!client.broken() && !cut.raised.load(Ordering::SeqCst));
        client.feed(&stdin_frame(b"more"));
        assert!(
            client.broken(),
            "input the queue cannot take ends the session"
        );
        assert!(cut.raised.load(Ordering::SeqCst));
        assert_eq!(cut.reason(), INPUT_LOST);
        drop((server, client));
        let header = Header {
            timestamp: 0,
            title: String::new(),
            command: String::new(),
        };
        let cast = Cast::new(Vec::new(), header, 1 << 20);
        let (w, out) = write(
            cast,
            rx,
            &dropped,
            &Cut::new(1 << 20),
            started,
            Protocol::WebSocket { stream_close: true },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let events: Vec<serde_json::Value> = text
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events[0][1], "m");
        assert_eq!(
            events[0][2],
            "portcullis: 3 frame(s) dropped: the recorder fell behind"
        );
        let got: Vec<(&str, &str)> = events[1..]
            .iter()
            .map(|e| (e[1].as_str().unwrap(), e[2].as_str().unwrap()))
            .collect();
        assert_eq!(got, [("o", "one"), ("o", "two"), ("i", "typed")]);
        assert_eq!(w.sha256, crate::audit::session::sha256_hex(text.as_bytes()));

        // A writer that is gone (it failed, or never started): the first input ends it.
        let (tx, rx) = mpsc::sync_channel(3);
        drop(rx);
        let cut = Arc::new(Cut::new(1 << 20));
        let mut client = ws_feeder(tx, &dropped, &cut, started, (true, 2));
        client.feed(&stdin_frame(b"lost"));
        assert!(client.broken() && cut.raised.load(Ordering::SeqCst));
    }

    #[test]
    fn a_session_that_never_upgraded_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SessionSettings {
            directory: dir.path().to_owned(),
            max_session_bytes: 1 << 20,
        };
        let header = || Header {
            timestamp: 0,
            title: String::new(),
            command: String::new(),
        };
        let p = Pending::create(
            &settings,
            "0f1e2d3c-aaaa-4bbb-8ccc-123456789abc",
            header(),
            true,
        )
        .unwrap();
        let path = dir.path().join("0f1e2d3c-aaaa-4bbb-8ccc-123456789abc.cast");
        assert!(path.exists());
        // Never over an existing file, never outside the directory.
        assert!(Pending::create(
            &settings,
            "0f1e2d3c-aaaa-4bbb-8ccc-123456789abc",
            header(),
            true
        )
        .is_err());
        assert!(Pending::create(&settings, "../escape", header(), true).is_err());
        drop(p);
        assert!(!path.exists());
    }

    /// A frame with an extension's reserved bit (none was negotiated) breaks the client's
    /// direction: the cut is raised once, the file ends with the marker, and the good frame
    /// read together with it (withheld with it) is not recorded.
    #[tokio::test]
    async fn an_unreadable_frame_raises_the_cut_and_the_file_says_so() {
        let (tx, rx) = mpsc::sync_channel(16);
        let (dropped, cut) = (Arc::new(AtomicU64::new(0)), Arc::new(Cut::new(1 << 20)));
        let started = Instant::now();
        let mut feeder = ws_feeder(tx, &dropped, &cut, started, (true, 16));
        feeder.feed(&stdin_frame(b"before"));
        assert!(!cut.raised.load(Ordering::SeqCst));
        let mut rsv1 = stdin_frame(b"after");
        rsv1[0] |= 0x40;
        feeder.feed(&[stdin_frame(b"withheld"), rsv1].concat());
        assert!(cut.raised.load(Ordering::SeqCst));
        tokio::time::timeout(std::time::Duration::from_secs(1), cut.notify.notified())
            .await
            .expect("the splice is told");
        // A 64-bit length with its top bit set breaks it too.
        let mut other = super::super::websocket::Direction::new(
            true,
            super::super::websocket::Channels::default(),
        );
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
        huge.extend_from_slice(&[0, 0, 0, 0]);
        other.feed(&huge, &mut Vec::new());
        assert!(other.broken());
        drop(feeder);
        let header = Header {
            timestamp: 0,
            title: String::new(),
            command: String::new(),
        };
        let cast = Cast::new(Vec::new(), header, 1 << 20);
        let ws = Protocol::WebSocket { stream_close: true };
        let (_, out) = write(cast, rx, &dropped, &cut, started, ws).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("before") && !text.contains("after"), "{text}");
        assert!(!text.contains("withheld"), "{text}");
        assert!(
            text.trim_end().ends_with(&format!("{:?}]", UNREADABLE)),
            "{text}"
        );
    }

    /// A client frame (masked, with a zero mask) on channel 0, of up to 64 KiB.
    fn stdin_frame_any(text: &[u8]) -> Vec<u8> {
        let n = text.len() + 1;
        let mut f = vec![0x82];
        match u8::try_from(n) {
            Ok(n) if n < 126 => f.push(0x80 | n),
            _ => {
                f.push(0x80 | 126);
                f.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
            }
        }
        f.extend_from_slice(&[0, 0, 0, 0, 0]);
        f.extend_from_slice(text);
        f
    }

    /// A recorded WebSocket session with a cap of 4096 bytes, in `dir`, and its file.
    fn small_session(dir: &std::path::Path) -> (Session, PathBuf) {
        let settings = SessionSettings {
            directory: dir.to_owned(),
            max_session_bytes: 4096,
        };
        let header = Header {
            timestamp: 0,
            title: "/api/v1/namespaces/a/pods/p/exec".into(),
            command: "sh".into(),
        };
        let id = "0f1e2d3c-aaaa-4bbb-8ccc-123456789abd";
        let pending = Pending::create(&settings, id, header, true).unwrap();
        let session = pending.start(Protocol::WebSocket { stream_close: true });
        (session, dir.join(format!("{id}.cast")))
    }

    /// Wait until the writer has written every input line queued.
    async fn caught_up(cut: &Cut) {
        for _ in 0..5000 {
            if cut.input_pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("the writer did not catch up");
    }

    fn events(path: &std::path::Path) -> (u64, Vec<serde_json::Value>) {
        let text = std::fs::read_to_string(path).unwrap();
        let events = text
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (text.len() as u64, events)
    }

    /// Filling `max_session_bytes` with input on purpose (NULs, six bytes each in the file)
    /// stops the recording of output only: what is typed after it is in the file.
    #[tokio::test]
    async fn input_past_the_cap_is_still_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (session, path) = small_session(dir.path());
        let (mut client, mut server) = session.feeders();
        // 7 × 100 NULs: 4200 bytes of `\u0000` in the file, past the cap of 4096.
        for _ in 0..7 {
            client.feed(&stdin_frame_any(&[0; 100]));
            assert!(!client.broken());
            caught_up(&session.cut).await;
        }
        server.feed(&stdout_frame(b"output past the cap"));
        client.feed(&stdin_frame(b"id\n"));
        assert!(!client.broken() && !session.cut.raised.load(Ordering::SeqCst));
        drop((client, server));
        let annotation: serde_json::Value = serde_json::from_str(&session.finish().await).unwrap();
        assert_eq!(annotation["truncated"], true, "{annotation}");
        assert!(annotation.get("error").is_none(), "{annotation}");
        let (size, events) = events(&path);
        assert_eq!(annotation["bytes"], size);
        assert_eq!(
            events.last().unwrap(),
            &serde_json::json!([events.last().unwrap()[0], "i", "id\n"])
        );
        let truncated: Vec<_> = events
            .iter()
            .filter(|e| e[1] == "m" && e[2].as_str().unwrap().starts_with(cast::TRUNCATED))
            .collect();
        assert_eq!(truncated.len(), 1, "{events:?}");
        assert!(!events.iter().any(|e| e[1] == "o"), "{events:?}");
        assert!(size > 4096 && size <= 8192, "{size}");
    }

    /// Input that would take the file past twice `max_session_bytes` ends the session as input
    /// the queue cannot take does: that read withheld (not in the file), the splice told, the
    /// file ending with the marker, the annotation with the error.
    #[tokio::test]
    async fn input_past_the_hard_limit_ends_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let (session, path) = small_session(dir.path());
        let (mut client, server) = session.feeders();
        let ended = session.unreadable();
        let mut recorded = 0;
        for _ in 0..20 {
            client.feed(&stdin_frame_any(&[0; 100]));
            if client.broken() {
                break;
            }
            recorded += 1;
            caught_up(&session.cut).await;
        }
        assert!(client.broken(), "input never reached the hard limit");
        assert!(recorded > 7, "{recorded}: input stopped at the cap");
        tokio::time::timeout(std::time::Duration::from_secs(1), ended)
            .await
            .expect("the splice is told");
        drop((client, server));
        let annotation: serde_json::Value = serde_json::from_str(&session.finish().await).unwrap();
        assert_eq!(annotation["error"], INPUT_OVER_LIMIT, "{annotation}");
        let (size, events) = events(&path);
        assert!(size <= 8192, "{size}");
        assert_eq!(events.iter().filter(|e| e[1] == "i").count(), recorded);
        assert_eq!(events.last().unwrap()[2], INPUT_OVER_LIMIT);
    }
}
