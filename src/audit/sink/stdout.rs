//! The stdout sink: one JSON event per line (the apiserver's `--audit-log-path=-`), for
//! containers whose log collector reads stdout. No chain: stdout is not a file we can vouch for.
//!
//! Written by a dedicated thread (a slow pipe reader must not block tokio workers); each batch
//! is written and flushed once, and waiters are answered after the flush. Accepts any event;
//! a write error (closed pipe) fails that batch's events.

use std::{
    io::{self, Write},
    sync::Arc,
};

use tokio::sync::mpsc;

use super::{LineBackend, Msg, Prepared, SinkCounters};

struct StdoutBackend<W: Write + Send + 'static> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write + Send + 'static> LineBackend for StdoutBackend<W> {
    fn write(&mut self, events: &[Arc<Prepared>], _durable: bool) -> Result<(), (usize, String)> {
        self.buf.clear();
        for p in events {
            self.buf.extend_from_slice(p.line());
            self.buf.push(b'\n');
        }
        self.out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush())
            .map_err(|e| (0, format!("stdout: {e}")))
    }
}

/// Start the stdout writer thread.
pub(crate) fn spawn(
    name: &str,
    rx: mpsc::Receiver<Msg>,
    counters: Arc<SinkCounters>,
) -> anyhow::Result<()> {
    let backend = StdoutBackend {
        out: io::stdout(),
        buf: Vec::with_capacity(64 * 1024),
    };
    // Stdout has nothing to sync; "durable" means flushed, which every batch is.
    super::spawn_thread(name, backend, rx, counters, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::Event;

    #[test]
    fn writes_one_line_per_event() {
        let mut b = StdoutBackend {
            out: Vec::new(),
            buf: Vec::new(),
        };
        let e = Event {
            audit_id: "x".into(),
            ..Event::default()
        };
        let p = Arc::new(Prepared::new(e, false));
        b.write(&[p.clone(), p], false).unwrap();
        let text = String::from_utf8(b.out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["auditID"], "x");
        assert!(v.get("annotations").is_none(), "no chain on stdout");
    }
}
