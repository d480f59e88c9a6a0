//! `audit query --follow`: keep reading an audit file as it grows, across rotation, like
//! `tail -F`. Each poll reads the open file to its end and prints the complete lines; a line
//! still being written waits for its newline. The same file grown shorter than what was read is
//! followed from its new end when its first bytes are unchanged (a write the sink rolled back),
//! otherwise read again from its start (`copytruncate`), with a warning either way. When
//! the path names a new file (another inode: rotated or recreated), the old handle is read to its
//! end first — events written just before the rename are not lost — then every backup rotated
//! after it (the file sink's backup names sort by rotation time), so several rotations between
//! two polls lose nothing, and the new file is read from its start. While the path does not
//! exist (between a rotation's rename and the new file), the old handle is kept.

use std::{
    fs::File,
    io::{self, Read, Write},
    path::Path,
    time::Duration,
};

use super::{one_line, overlong, Filter, Output, Place, Stats};

/// An identity for "the same file": the inode where there is one.
fn file_id(meta: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

/// What [`Tail::drain`] hands each line to: its bytes (`None` for a line over
/// [`MAX_LINE`](crate::audit::verify::MAX_LINE)) and its number.
type EachLine<'a> = dyn FnMut(Option<&[u8]>, u64) -> io::Result<()> + 'a;

struct Tail<'p> {
    path: &'p Path,
    file: File,
    id: u64,
    read: u64,
    line_no: u64,
    partial: Vec<u8>,
    /// The line being read is over `MAX_LINE`: its bytes are dropped up to its newline.
    overlong: bool,
    /// The file's first bytes as read (up to [`HEAD`]): after a shrink, whether the file is
    /// still the one read (a rollback keeps them; `copytruncate` writes other events there —
    /// every event's first bytes hold its unique `auditID`).
    head: Vec<u8>,
}

/// How many of a file's first bytes [`Tail::head`] keeps.
const HEAD: usize = 256;

impl<'p> Tail<'p> {
    /// `file`, opened at `path`, to be read from its start.
    fn new(path: &'p Path, file: File, id: u64) -> Tail<'p> {
        Tail {
            path,
            file,
            id,
            read: 0,
            line_no: 0,
            partial: Vec::new(),
            overlong: false,
            head: Vec::new(),
        }
    }

    /// Read what was appended and hand each complete line to `each` (`None` for a line over
    /// [`MAX_LINE`](crate::audit::verify::MAX_LINE), which is not held in memory).
    fn drain(&mut self, each: &mut EachLine<'_>) -> io::Result<()> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = self.file.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            if self.read < HEAD as u64 && self.head.len() as u64 == self.read {
                let take = (HEAD - self.head.len()).min(n);
                self.head.extend_from_slice(&chunk[..take]);
            }
            self.read += n as u64;
            let mut data = &chunk[..n];
            while let Some(i) = data.iter().position(|&b| b == b'\n') {
                self.line_no += 1;
                if self.overlong {
                    self.overlong = false;
                    each(None, self.line_no)?;
                } else {
                    self.partial.extend_from_slice(&data[..i]);
                    each(Some(&self.partial), self.line_no)?;
                }
                self.partial.clear();
                data = &data[i + 1..];
            }
            if !self.overlong {
                self.partial.extend_from_slice(data);
                if self.partial.len() as u64 > crate::audit::verify::MAX_LINE {
                    self.partial = Vec::new();
                    self.overlong = true;
                }
            }
        }
    }

    /// The path now names another file (rotated or recreated; where files have no inode, one
    /// shorter than what was read).
    fn replaced(&self) -> Option<File> {
        let meta = std::fs::metadata(self.path).ok()?;
        if file_id(&meta) == self.id && (cfg!(unix) || meta.len() >= self.read) {
            return None;
        }
        File::open(self.path).ok()
    }

    /// The same file is shorter than what was read. Its first bytes unchanged: the sink rolled
    /// back a write it could not complete (always to a line's end), and reading goes on from
    /// there — not from the start, which would print every event shown so far a second time.
    /// Changed (`copytruncate`: emptied, then written again) or emptied: read from the start,
    /// as `tail -F` does. Returns the new length and whether reading went back to the start.
    fn shrank(&mut self) -> io::Result<Option<(u64, bool)>> {
        use std::io::{Seek, SeekFrom};
        let len = self.file.metadata()?.len();
        if len >= self.read {
            return Ok(None);
        }
        let mut now = vec![0u8; self.head.len().min(usize::try_from(len).unwrap_or(HEAD))];
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_exact(&mut now)?;
        let rolled_back = len > 0 && self.head.starts_with(&now);
        let from = if rolled_back { len } else { 0 };
        self.file.seek(SeekFrom::Start(from))?;
        self.read = from;
        if rolled_back {
            // Rolled back into the first bytes kept: those past the new end are no longer the
            // file's (what is written there next is read into `head` again).
            self.head.truncate(usize::try_from(len).unwrap_or(HEAD));
        } else {
            self.line_no = 0;
            self.head.clear();
        }
        self.partial.clear();
        self.overlong = false;
        Ok(Some((len, !rolled_back)))
    }
}

/// Print the matches of `path` from its start, then keep following it (polling every `poll`)
/// until `stop` says so. `Err` for an unreadable file and failed writes.
#[allow(clippy::too_many_arguments)]
pub fn follow(
    path: &Path,
    filter: &Filter,
    output: Output,
    out: &mut dyn Write,
    warn: &mut dyn Write,
    poll: Duration,
    stop: &dyn Fn() -> bool,
) -> io::Result<Stats> {
    let open = |p: &Path| {
        File::open(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let file = open(path)?;
    let id = file_id(&file.metadata()?);
    let mut tail = Tail::new(path, file, id);
    let mut stats = Stats::default();
    let pump = |tail: &mut Tail<'_>,
                stats: &mut Stats,
                out: &mut dyn Write,
                warn: &mut dyn Write|
     -> io::Result<()> {
        let path = tail.path;
        tail.drain(&mut |line, line_no| {
            let at = Place { path, line_no };
            match line {
                Some(line) => one_line(line, at, filter, output, out, warn, stats),
                None => overlong(at, warn, stats),
            }
        })?;
        out.flush()
    };
    loop {
        pump(&mut tail, &mut stats, out, warn)?;
        if let Some((len, from_start)) = tail.shrank()? {
            if from_start {
                writeln!(
                    warn,
                    "warning: {}: the file was truncated to {len} bytes; reading it from its start",
                    path.display()
                )?;
            } else {
                writeln!(
                    warn,
                    "warning: {}: the file shrank to {len} bytes (a write rolled back); events shown from beyond that may not be in it; following from its new end",
                    path.display()
                )?;
            }
            continue;
        }
        if let Some(next) = tail.replaced() {
            // Whatever reached the old file before it was renamed, then the new one.
            pump(&mut tail, &mut stats, out, warn)?;
            if !tail.partial.is_empty() {
                writeln!(
                    warn,
                    "warning: {}:{}: truncated final line skipped (the file was replaced)",
                    path.display(),
                    tail.line_no + 1
                )?;
                stats.skipped += 1;
            }
            // Files rotated after the one just finished, oldest first.
            let backups = crate::audit::sink::file::list_backups(path).unwrap_or_default();
            let after = backups
                .iter()
                .position(|b| std::fs::metadata(&b.path).is_ok_and(|m| file_id(&m) == tail.id));
            let next_id = file_id(&next.metadata()?);
            for b in after.map_or(&[][..], |i| &backups[i + 1..]) {
                let Ok(file) = File::open(&b.path) else {
                    continue;
                };
                if file_id(&file.metadata()?) == next_id {
                    // `next` itself was rotated meanwhile: it is read below, and what came
                    // after it on the next poll.
                    break;
                }
                pump(&mut Tail::new(&b.path, file, 0), &mut stats, out, warn)?;
            }
            tail = Tail::new(path, next, next_id);
            continue;
        }
        if stop() {
            return Ok(stats);
        }
        std::thread::sleep(poll);
    }
}
