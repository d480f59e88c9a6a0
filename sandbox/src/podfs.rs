//! A small in-memory file tree per pod, and the `tar` and `test -d` that `kubectl cp` runs
//! inside the container through exec (`tar cf - SRC` to copy out, `tar -xmf - -C DIR` to copy
//! in, `test -d DEST` to decide where a copied file lands).
//!
//! Each pod (by uid, so a recreated pod starts afresh) starts with `/etc/hostname` and an empty
//! `/tmp`. Accepts regular files and directories in archives; skips links and devices (as a
//! non-root GNU tar would fail to create them). Rejects, with tar's exit status 2 and a message
//! on stderr: a missing source, an archive that is not tar, an entry escaping the target with
//! `..`, and a pod tree growing past [`MAX_BYTES`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

/// The most file content one pod holds.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
}

type Tree = BTreeMap<String, Entry>;

/// Every pod's tree. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct PodFiles(Arc<Mutex<HashMap<String, Tree>>>);

fn seed(pod: &str) -> Tree {
    let mut t = Tree::new();
    for d in ["/", "/etc", "/tmp"] {
        t.insert(d.into(), Entry::Dir);
    }
    let hostname = format!("{pod}\n").into_bytes();
    t.insert(
        "/etc/hostname".into(),
        Entry::File {
            data: hostname,
            mode: 0o644,
        },
    );
    t
}

/// `/a/./b/` → `/a/b`; `None` when `..` would climb out of `/`.
fn clean(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn join(dir: &str, rel: &str) -> Option<String> {
    // Entries climbing above the target are refused outright (not clamped to it).
    if rel.split('/').any(|p| p == "..") {
        return None;
    }
    clean(&format!("{dir}/{rel}"))
}

fn parent(path: &str) -> Option<String> {
    let (p, _) = path.rsplit_once('/')?;
    Some(if p.is_empty() { "/".into() } else { p.into() })
}

fn mkdir_p(tree: &mut Tree, path: &str) {
    let mut cur = String::new();
    tree.insert("/".into(), Entry::Dir);
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur = format!("{cur}/{part}");
        tree.entry(cur.clone()).or_insert(Entry::Dir);
    }
}

fn used(tree: &Tree) -> usize {
    tree.values()
        .map(|e| match e {
            Entry::File { data, .. } => data.len(),
            Entry::Dir => 0,
        })
        .sum()
}

/// What a command printed and its exit status.
pub struct Run {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub code: i32,
}

fn fail(msg: String) -> Run {
    Run {
        stdout: Vec::new(),
        stderr: msg,
        code: 2,
    }
}

impl PodFiles {
    fn with<T>(&self, uid: &str, pod: &str, f: impl FnOnce(&mut Tree) -> T) -> T {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(all.entry(uid.to_string()).or_insert_with(|| seed(pod)))
    }

    /// `test -d PATH`: 0 when PATH is a directory, else 1.
    pub fn test_dir(&self, uid: &str, pod: &str, path: &str) -> i32 {
        let is_dir = clean(path)
            .is_some_and(|p| self.with(uid, pod, |t| matches!(t.get(&p), Some(Entry::Dir))));
        i32::from(!is_dir)
    }

    /// `tar cf - SRC`: SRC and, for a directory, everything under it; names without the
    /// leading `/`, as GNU tar writes them (kubectl strips that prefix again).
    pub fn tar_create(&self, uid: &str, pod: &str, src: &str) -> Run {
        let Some(src) = clean(src) else {
            return fail(format!(
                "tar: {src}: Cannot stat: No such file or directory\n"
            ));
        };
        let entries: Vec<(String, Entry)> = self.with(uid, pod, |t| {
            let under = if src == "/" {
                "/".to_string()
            } else {
                format!("{src}/")
            };
            t.iter()
                .filter(|(p, _)| **p == src || p.starts_with(&under))
                .map(|(p, e)| (p.clone(), e.clone()))
                .collect()
        });
        if entries.is_empty() {
            return fail(format!(
                "tar: {}: Cannot stat: No such file or directory\ntar: Exiting with failure status due to previous errors\n",
                src.trim_start_matches('/')
            ));
        }
        match archive(&entries) {
            Ok(stdout) => Run {
                stdout,
                stderr: "tar: Removing leading `/' from member names\n".into(),
                code: 0,
            },
            Err(e) => fail(format!("tar: {e}\n")),
        }
    }

    /// `tar -xmf - [-C DIR]`: unpack `input` under DIR (default `/`).
    pub fn tar_extract(&self, uid: &str, pod: &str, dir: &str, input: &[u8]) -> Run {
        let files = match unpack(input) {
            Ok(f) => f,
            Err(e) => return fail(format!("tar: {e}\n")),
        };
        let Some(dir) = clean(dir) else {
            return fail(format!(
                "tar: {dir}: Cannot open: No such file or directory\n"
            ));
        };
        self.with(uid, pod, |tree| {
            if !matches!(tree.get(&dir), Some(Entry::Dir)) {
                return fail(format!(
                    "tar: {dir}: Cannot open: No such file or directory\n"
                ));
            }
            let mut next = tree.clone();
            for (rel, entry) in files {
                let Some(path) = join(&dir, &rel) else {
                    return fail(format!("tar: {rel}: Member name contains '..'\n"));
                };
                if let Some(p) = parent(&path) {
                    mkdir_p(&mut next, &p);
                }
                next.insert(path, entry);
            }
            if used(&next) > MAX_BYTES {
                return fail(format!(
                    "tar: sandbox pod file tree is limited to {MAX_BYTES} bytes\n"
                ));
            }
            *tree = next;
            Run {
                stdout: Vec::new(),
                stderr: String::new(),
                code: 0,
            }
        })
    }
}

fn archive(entries: &[(String, Entry)]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, e) in entries {
        let name = path.trim_start_matches('/');
        let mut h = tar::Header::new_gnu();
        match e {
            Entry::Dir => {
                if name.is_empty() {
                    continue;
                }
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, format!("{name}/"), std::io::empty())?;
            }
            Entry::File { data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data.as_slice())?;
            }
        }
    }
    b.into_inner()
}

fn unpack(input: &[u8]) -> Result<Vec<(String, Entry)>, String> {
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut ar = tar::Archive::new(input);
    let entries = ar
        .entries()
        .map_err(|e| format!("This does not look like a tar archive ({e})"))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| format!("This does not look like a tar archive ({e})"))?;
        let path = entry
            .path()
            .map_err(|e| format!("bad member name: {e}"))?
            .to_string_lossy()
            .into_owned();
        let kind = entry.header().entry_type();
        let item = if kind.is_dir() {
            Entry::Dir
        } else if kind.is_file() {
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).map_err(|e| e.to_string())?;
            total += data.len();
            if total > MAX_BYTES {
                return Err(format!(
                    "sandbox pod file tree is limited to {MAX_BYTES} bytes"
                ));
            }
            Entry::File { data, mode }
        } else {
            continue;
        };
        out.push((path.trim_end_matches('/').to_string(), item));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_out_and_in() {
        let fs = PodFiles::default();
        let out = fs.tar_create("u1", "p", "/etc/hostname");
        assert_eq!(out.code, 0);
        // Into another pod, under /tmp: as `kubectl cp` does between two pods.
        let into = fs.tar_extract("u2", "q", "/tmp", &out.stdout);
        assert_eq!(into.code, 0, "{}", into.stderr);
        let back = fs.tar_create("u2", "q", "/tmp/etc");
        let files = unpack(&back.stdout).unwrap();
        assert!(files.contains(&(
            "tmp/etc/hostname".to_string(),
            Entry::File {
                data: b"p\n".to_vec(),
                mode: 0o644
            }
        )));
        assert_eq!(fs.test_dir("u2", "q", "/tmp/etc"), 0);
        assert_eq!(fs.test_dir("u2", "q", "/tmp/etc/hostname"), 1);
    }

    #[test]
    fn refusals() {
        let fs = PodFiles::default();
        assert_eq!(fs.tar_create("u", "p", "/nope").code, 2);
        assert_eq!(fs.tar_extract("u", "p", "/tmp", b"not tar at all").code, 2);
        assert_eq!(
            fs.tar_extract("u", "p", "/nope", &archive(&[]).unwrap())
                .code,
            2
        );
        // A member climbing out of the target with `..` is refused, nothing written.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // `append_data` refuses `..` itself; write the raw name like a hostile client would.
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let evil = b.into_inner().unwrap();
        let r = fs.tar_extract("u", "p", "/tmp", &evil);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert_eq!(fs.test_dir("u", "p", "/escape"), 1);
        assert_eq!(fs.tar_create("u", "p", "/escape").code, 2);
    }
}
