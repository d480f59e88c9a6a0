//! One client connection after its TLS handshake: what it has sent and how many requests it has
//! open, and the watchdog that closes it when it stays silent or idle.
//!
//! Closes, counted in `portcullis_listener_connections_closed_total`:
//! - **preface timeout**: within `preface_timeout` of the end of the TLS handshake the client
//!   must have sent the 24-byte HTTP/2 preface, or as many bytes of an HTTP/1.1 request, or a
//!   whole (shorter) request. hyper's automatic HTTP version detection waits for those bytes
//!   without any timeout of its own, and hyper's HTTP/1.1 header timeout only starts once the
//!   version is known — so a silent connection (or one that sent `P` and stopped) would
//!   otherwise stay open forever. It is dropped without an answer: nothing HTTP was spoken.
//! - **idle timeout**: no request open (no stream, for HTTP/2; a watch or `logs -f` holds its
//!   connection open for as long as it runs) for `idle_timeout`: HTTP/2 gets a GOAWAY, HTTP/1.1
//!   is closed between requests. A stuck HTTP/2 header block (HEADERS without END_HEADERS) never
//!   starts a request, so on a connection with no other request it ends here too.
//! - **shutdown**: the same graceful close; the caller bounds the drain.
//!
//! The HTTP/1.1 request-head timeout is hyper's (`header_read_timeout`; it restarts after each
//! response, so it also bounds an idle HTTP/1.1 keep-alive connection).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use super::{limits::ConnPermit, metrics::Closed};
use crate::{read_tap::ReadTap, shutdown::Shutdown};

/// Bytes that prove the client speaks: the length of the HTTP/2 connection preface.
const PREFACE_LEN: usize = 24;

/// Requests open on the connection and since when it has had none.
#[derive(Debug, Clone, Copy)]
struct Activity {
    open: usize,
    started: bool,
    idle_since: Instant,
}

/// What a connection's IO, its requests and its watchdog share. Holds the connection's place
/// under the caps until the last of them (the socket, possibly upgraded) is gone.
#[derive(Debug)]
pub struct Shared {
    _permit: ConnPermit,
    prefaced: AtomicBool,
    activity: watch::Sender<Activity>,
}

impl Shared {
    pub fn new(permit: ConnPermit) -> Arc<Shared> {
        let (activity, _) = watch::channel(Activity {
            open: 0,
            started: false,
            idle_since: Instant::now(),
        });
        Arc::new(Shared {
            _permit: permit,
            prefaced: AtomicBool::new(false),
            activity,
        })
    }

    /// Restart the clocks: the preface and idle timeouts run from the end of the handshake.
    pub fn handshake_done(&self) {
        self.activity.send_modify(|a| a.idle_since = Instant::now());
    }

    /// A request began; it counts as open until the returned guard is dropped (with its
    /// response body).
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.activity.send_modify(|a| {
            a.open += 1;
            a.started = true;
        });
        RequestGuard(self.clone())
    }
}

/// Keeps one request counted as open.
#[derive(Debug)]
pub struct RequestGuard(Arc<Shared>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.activity.send_modify(|a| {
            a.open = a.open.saturating_sub(1);
            if a.open == 0 {
                a.idle_since = Instant::now();
            }
        });
    }
}

/// The connection's timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub preface: Duration,
    pub idle: Duration,
    /// How long a connection being closed gracefully may take to finish its open requests.
    pub grace: Duration,
}

/// How [`drive`] ended.
pub enum Outcome<E> {
    /// The connection ended by itself (or after an upgrade handed its socket away).
    Ended(Result<(), E>),
    /// The watchdog closed it.
    Closed(Closed),
    /// Shutdown closed it.
    Shutdown,
}

/// Run `conn` until it ends, the watchdog closes it, or shutdown. `graceful` starts hyper's
/// graceful close (GOAWAY / close when idle); the rest of the connection then gets
/// `timeouts.grace` before it is dropped.
pub async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    graceful: impl FnOnce(Pin<&mut C>),
    shared: &Shared,
    timeouts: Timeouts,
    mut stop: Shutdown,
) -> Outcome<E>
where
    C: Future<Output = Result<(), E>>,
{
    let outcome = tokio::select! {
        done = conn.as_mut() => return Outcome::Ended(done),
        why = watchdog(shared, timeouts) => Outcome::Closed(why),
        _ = stop.wait() => Outcome::Shutdown,
    };
    if matches!(outcome, Outcome::Closed(Closed::PrefaceTimeout)) {
        // Nothing was spoken: drop the socket without ceremony.
        return outcome;
    }
    graceful(conn.as_mut());
    let _ = tokio::time::timeout(timeouts.grace, conn).await;
    outcome
}

/// Resolves when the connection should be closed, and why.
async fn watchdog(shared: &Shared, timeouts: Timeouts) -> Closed {
    let mut rx = shared.activity.subscribe();
    let start = rx.borrow().idle_since;
    tokio::time::sleep_until(start + timeouts.preface).await;
    if !shared.prefaced.load(Ordering::Acquire) && !rx.borrow().started {
        return Closed::PrefaceTimeout;
    }
    loop {
        let now = *rx.borrow_and_update();
        if now.open > 0 {
            // `shared` holds the sender, so `changed` only fails once we are gone anyway.
            let _ = rx.changed().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(now.idle_since + timeouts.idle) => return Closed::IdleTimeout,
            _ = rx.changed() => {}
        }
    }
}

/// The connection's byte stream, noting when the client has said enough to be past the
/// preface. Holds [`Shared`] (in the closure) so the connection stays counted after an upgrade.
pub fn tracked<T>(inner: T, shared: Arc<Shared>) -> ReadTap<T, impl FnMut(&[u8]) + Unpin> {
    let mut seen = 0usize;
    ReadTap::new(inner, move |read: &[u8]| {
        if seen < PREFACE_LEN {
            seen += read.len();
            if seen >= PREFACE_LEN {
                shared.prefaced.store(true, Ordering::Release);
            }
        }
    })
}
