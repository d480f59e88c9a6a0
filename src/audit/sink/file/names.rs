//! Backup file names, as lumberjack makes them: `<stem>-<UTC time, 2006-01-02T15-04-05.000><ext>`
//! (`audit.log` → `audit-2026-11-27T07-25-09.123.log`). A free name for a new backup, and the
//! backups of a path oldest first; a name that does not parse as a backup is not one.

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::audit::event::MicroTime;

/// `audit.log` → (`audit`, `.log`); `audit` → (`audit`, ``).
pub(super) fn split_name(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) if i > 0 => (name[..i].to_string(), name[i..].to_string()),
        _ => (name, String::new()),
    }
}

/// `2026-11-27T07:25:09.123456Z` → `2026-11-27T07-25-09.123` (lumberjack's backup time format).
pub(super) fn backup_stamp(t: MicroTime) -> String {
    let s = t.to_string();
    s.get(..23).unwrap_or(&s).replace(':', "-")
}

pub(super) fn parse_backup_stamp(s: &str) -> Option<MicroTime> {
    let b = s.as_bytes();
    if b.len() != 23 || b[13] != b'-' || b[16] != b'-' || b[19] != b'.' {
        return None;
    }
    format!("{}:{}:{}Z", &s[..13], &s[14..16], &s[17..])
        .parse()
        .ok()
}

/// A free backup name for now (bumped by 1 ms while taken).
pub(super) fn backup_path(path: &Path) -> io::Result<PathBuf> {
    let (stem, ext) = split_name(path);
    let dir = path.parent().unwrap_or_else(|| Path::new(""));
    let now = MicroTime::now().unix_micros();
    for bump in 0..10_000 {
        let t = MicroTime::from_unix_micros(now + bump * 1000);
        let candidate = dir.join(format!("{stem}-{}{ext}", backup_stamp(t)));
        if !candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(io::Error::other("no free backup file name"))
}

/// A rotated file of this sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub path: PathBuf,
    pub time: MicroTime,
}

/// The backups of `path`, oldest first.
pub fn list_backups(path: &Path) -> io::Result<Vec<Backup>> {
    let (stem, ext) = split_name(path);
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let prefix = format!("{stem}-");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(middle) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(ext.as_str()))
        else {
            continue;
        };
        if let Some(time) = parse_backup_stamp(middle) {
            out.push(Backup {
                path: entry.path(),
                time,
            });
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}
