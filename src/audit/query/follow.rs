//! `audit query --follow`: keep reading an audit file as it grows, across rotation, like
//! `tail -F`. Each poll reads the open file to its end and prints the complete lines; a line
//! still being written waits for its newline. When the path names a new file (another inode,
//! or a file shorter than what was read: rotated or truncated), the old handle is read to its
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

use super::{one_line, Filter, Output, Place, Stats};

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

struct Tail<'p> {
    path: &'p Path,
    file: File,
    id: u64,
    read: u64,
    line_no: u64,
    partial: Vec<u8>,
}

impl Tail<'_> {
    /// Read what was appended and hand each complete line to `each`.
    fn drain(&mut self, each: &mut dyn FnMut(&[u8], u64) -> io::Result<()>) -> io::Result<()> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = self.file.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            self.read += n as u64;
            let mut data = &chunk[..n];
            while let Some(i) = data.iter().position(|&b| b == b'\n') {
                self.partial.extend_from_slice(&data[..i]);
                self.line_no += 1;
                each(&self.partial, self.line_no)?;
                self.partial.clear();
                data = &data[i + 1..];
            }
            self.partial.extend_from_slice(data);
        }
    }

    /// The path now names another file (rotated, recreated or truncated).
    fn replaced(&self) -> Option<File> {
        let meta = std::fs::metadata(self.path).ok()?;
        if file_id(&meta) == self.id && meta.len() >= self.read {
            return None;
        }
        File::open(self.path).ok()
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
    let mut tail = Tail {
        path,
        file,
        id,
        read: 0,
        line_no: 0,
        partial: Vec::new(),
    };
    let mut stats = Stats::default();
    let pump = |tail: &mut Tail<'_>,
                stats: &mut Stats,
                out: &mut dyn Write,
                warn: &mut dyn Write|
     -> io::Result<()> {
        tail.drain(&mut |line, line_no| {
            let at = Place { path, line_no };
            one_line(line, at, filter, output, out, warn, stats)
        })?;
        out.flush()
    };
    loop {
        pump(&mut tail, &mut stats, out, warn)?;
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
                let mut between = Tail {
                    path: &b.path,
                    file,
                    id: 0,
                    read: 0,
                    line_no: 0,
                    partial: Vec::new(),
                };
                between.drain(&mut |line, line_no| {
                    let at = Place {
                        path: &b.path,
                        line_no,
                    };
                    one_line(line, at, filter, output, out, warn, &mut stats)
                })?;
            }
            tail.id = next_id;
            tail.file = next;
            tail.read = 0;
            tail.line_no = 0;
            tail.partial.clear();
            continue;
        }
        if stop() {
            return Ok(stats);
        }
        std::thread::sleep(poll);
    }
}
