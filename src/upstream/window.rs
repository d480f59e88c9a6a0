//! A pumped response's HTTP/2 receive window: withheld while the pump has no room, given back
//! as it finds some.
//!
//! Why: `h2` keeps every DATA frame it received and nobody took yet, and charges each frame
//! under 256 bytes to a per-connection budget (half the connection window); past it, it closes
//! the whole connection (`GOAWAY ENHANCE_YOUR_CALM`), and every stream on it with it. The API
//! server frames a followed log or a `proxy` stream as the pod writes it, so a pod writing a
//! few bytes at a time, whose reader stopped, could fill a stream's window with frames costing
//! the budget up to 255 times their size. A pump (`pump.rs`) therefore keeps taking a
//! response's frames from `h2` while its buffer is full, and *withholds* their window: `h2`
//! holds nothing for the stream, and the API server can send no more than one stream window
//! beyond what the pump has room for.
//!
//! How the body learns it is pumped: the pump polls it inside [`Withheld::scope`], which makes
//! the pump's [`Withheld`] the current one on this thread for that synchronous poll; the h2
//! body (`h2conn::RecvBody`) reached by it calls [`withhold`] for each chunk it takes, which
//! records the chunk there instead of giving its window back. A body read inline (no scope)
//! gives the window back at once, as before. A thread-local rather than a handle shared by
//! body and pump: a handle would cost every response an allocation (and its place in the
//! response's extensions) for what only stalled ones use. The pump can tell whether its body
//! withholds at all (an HTTP/1.1 body has no window): [`Withheld::works`].

use std::{cell::RefCell, mem};

use h2::FlowControl;

thread_local! {
    /// The pump whose body is being polled on this thread, if any.
    static PUMPING: RefCell<Option<Withheld>> = const { RefCell::new(None) };
}

/// What a pump's body took from `h2` without giving the window back.
#[derive(Default)]
pub struct Withheld {
    /// The stream's flow control, from the first chunk the body withheld.
    flow: Option<FlowControl>,
    /// Bytes taken whose window was not given back yet.
    bytes: usize,
    /// The pump polls only to drain `h2` (its buffer has bytes waiting for room): nobody
    /// waits for the API server, whose window may be spent ([`draining`]).
    draining: bool,
}

impl Withheld {
    /// Run `poll` (the pump's poll of its body) with this as the current pump on this thread.
    pub fn scope<R>(&mut self, poll: impl FnOnce() -> R) -> R {
        let outer = PUMPING.replace(Some(mem::take(self)));
        // Put back as it was even if `poll` panics: a body read inline on this thread later
        // must not find a pump here and withhold its window for ever.
        let back = Restore { into: self, outer };
        let polled = poll();
        drop(back);
        polled
    }

    /// Whether the next polls only drain `h2` (see [`draining`]).
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Whether the body withholds: it is an h2 body and took data under a scope.
    pub fn works(&self) -> bool {
        self.flow.is_some()
    }

    /// Give back the window of `n` withheld bytes (no more than are withheld).
    pub fn give_back(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        if let (Some(flow), true) = (&mut self.flow, n > 0) {
            let _ = flow.release_capacity(n);
        }
    }
}

struct Restore<'a> {
    into: &'a mut Withheld,
    outer: Option<Withheld>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        *self.into = PUMPING.replace(self.outer.take()).unwrap_or_default();
    }
}

/// Whether the body is polled by a pump only to drain `h2`, with bytes waiting for room in
/// its buffer: a body's idle timer (`stream.rs`) must not run then — the API server may have
/// no window left to send with (h2 announces a window given back only past a threshold).
pub fn draining() -> bool {
    PUMPING.with_borrow(|pumping| pumping.as_ref().is_some_and(|w| w.draining))
}

/// For the h2 body, as it takes `n` bytes of its stream (`flow`): under a pump's scope, the
/// window is withheld (recorded for the pump) and this answers `true`; otherwise `false`, and
/// the body gives it back itself.
pub fn withhold(flow: &FlowControl, n: usize) -> bool {
    PUMPING.with_borrow_mut(|pumping| match pumping {
        Some(w) => {
            if w.flow.is_none() {
                w.flow = Some(flow.clone());
            }
            w.bytes += n;
            true
        }
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pumping() -> bool {
        PUMPING.with_borrow(Option::is_some)
    }

    /// The scope is the pump's poll only: none before, none after — a panic in the poll
    /// included, or every body later read inline on this thread would withhold its window.
    #[test]
    fn the_scope_ends_with_the_poll_even_when_it_panics() {
        let mut withheld = Withheld::default();
        assert!(!pumping());
        assert!(withheld.scope(pumping));
        assert!(!pumping());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            withheld.scope(|| panic!("a body panicked"))
        }));
        assert!(panicked.is_err());
        assert!(!pumping(), "the scope outlived a panic");
    }
}
