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
//! - **unauthenticated**: an HTTP/2 request failed authentication (401, or 429 for an address
//!   the failed-credentials limit blocks): the same graceful close, at once. kube-apiserver
//!   sends GOAWAY after such a request (`UnauthenticatedHTTP2DOSMitigation`, on since 1.29):
//!   HTTP/2 lets one connection hold many streams cheaply: a client without credentials that
//!   never opens its flow-control window would otherwise keep the answers to its streams
//!   buffered (up to the stream limit) until the idle timeout, restarted by each new stream.
//!   Other streams on the connection (another identity's watch) run to their end; the
//!   connection is cut only once answers to failed requests have stayed untaken for `grace`.
//! - **shutdown**: the same graceful close; the caller bounds the drain.
//!
//! Before hyper's connection exists, [`first_bytes`] waits for the client to speak under the
//! same watchdog (preface timeout) and shutdown.
//!
//! The HTTP/1.1 request-head timeout is hyper's (`header_read_timeout`; it restarts after each
//! response, so it also bounds an idle HTTP/1.1 keep-alive connection).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    task::Poll,
    time::Duration,
};

use tokio::{io::AsyncBufRead, sync::Notify, time::Instant};

use super::{limits::ConnPermit, linger::Linger, metrics::Closed};
use crate::{read_tap::ReadTap, shutdown::Shutdown};

/// Bytes that prove the client speaks: the length of the HTTP/2 connection preface.
const PREFACE_LEN: usize = 24;

/// Requests open on the connection and since when it has had none.
#[derive(Debug, Clone, Copy)]
struct Activity {
    open: usize,
    started: bool,
    /// Requests begun on the connection (it only grows).
    starts: u64,
    idle_since: Instant,
    /// A request failed authentication on HTTP/2: close the connection.
    unauthenticated: bool,
    /// Answers to requests that failed authentication not yet taken by the client.
    unauthenticated_open: usize,
    /// Since when at least one such answer has been open.
    unauthenticated_since: Option<Instant>,
}

/// What a connection's IO, its requests and its watchdog share. Holds the connection's place
/// under the caps, and keeps the listener's shutdown drain waiting, until the last of them (the
/// socket, possibly upgraded: an exec, attach or port-forward session) is gone.
///
/// Kept small because every open connection has one: a mutex and a single `Notify` (the
/// watchdog is the only waiter) rather than a `watch` channel, whose eight-way notifier for
/// many receivers costs several hundred bytes per connection.
#[derive(Debug)]
pub struct Shared {
    _permit: ConnPermit,
    /// The listener's drain waits (up to `shutdown.grace`) until every one is dropped.
    _alive: tokio::sync::mpsc::Sender<()>,
    prefaced: AtomicBool,
    activity: Mutex<Activity>,
    changed: Notify,
}

impl Shared {
    pub fn new(permit: ConnPermit, alive: tokio::sync::mpsc::Sender<()>) -> Arc<Shared> {
        Arc::new(Shared {
            _permit: permit,
            _alive: alive,
            prefaced: AtomicBool::new(false),
            activity: Mutex::new(Activity {
                open: 0,
                started: false,
                starts: 0,
                idle_since: Instant::now(),
                unauthenticated: false,
                unauthenticated_open: 0,
                unauthenticated_since: None,
            }),
            changed: Notify::new(),
        })
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        // The guarded value is plain data, valid whatever a panicking holder left behind.
        self.activity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change the activity and wake the watchdog. `notify_one` stores a permit when the
    /// watchdog is not waiting, so a change between its read and its wait is never lost.
    fn update(&self, f: impl FnOnce(&mut Activity)) {
        f(&mut self.activity());
        self.changed.notify_one();
    }

    /// Restart the clocks: the preface and idle timeouts run from the end of the handshake.
    pub fn handshake_done(&self) {
        self.update(|a| a.idle_since = Instant::now());
    }

    /// A request began; it counts as open until the returned guard is dropped (`serve.rs`
    /// drops it once hyper has taken the answer's last frame).
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.update(|a| {
            a.open += 1;
            a.started = true;
            a.starts += 1;
        });
        RequestGuard(self.clone())
    }

    /// An HTTP/2 request on the connection failed authentication: the watchdog closes the
    /// connection gracefully (GOAWAY). Its answer counts as open until the returned guard is
    /// dropped (with the response body): the connection is cut once such answers have stayed
    /// open for `grace`; other streams (another identity's watch on a shared connection) run
    /// to their end.
    pub fn refused_unauthenticated(self: &Arc<Self>) -> UnauthenticatedGuard {
        self.update(|a| {
            a.unauthenticated = true;
            if a.unauthenticated_open == 0 {
                a.unauthenticated_since = Some(Instant::now());
            }
            a.unauthenticated_open += 1;
        });
        UnauthenticatedGuard(self.clone())
    }
}

/// Keeps one answer to a request that failed authentication counted as open.
#[derive(Debug)]
pub struct UnauthenticatedGuard(Arc<Shared>);

impl Drop for UnauthenticatedGuard {
    fn drop(&mut self) {
        self.0.update(|a| {
            a.unauthenticated_open = a.unauthenticated_open.saturating_sub(1);
            if a.unauthenticated_open == 0 {
                a.unauthenticated_since = None;
            }
        });
    }
}

/// Keeps one request counted as open.
#[derive(Debug)]
pub struct RequestGuard(Arc<Shared>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.update(|a| {
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
/// `timeouts.grace` before it is dropped — after the idle timeout, `grace` from when no
/// request is open; after a failed authentication, `grace` from when a refusal's answer is
/// left untaken ([`after_goaway`]). `closing` hears the watchdog's reason as it fires,
/// before the client can see the connection close (so whatever it counts is counted by then).
pub async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    graceful: impl FnOnce(Pin<&mut C>),
    closing: impl FnOnce(Closed),
    shared: &Shared,
    timeouts: Timeouts,
    mut stop: Shutdown,
) -> Outcome<E>
where
    C: Future<Output = Result<(), E>>,
{
    if stop.is_fired() {
        // A connection whose client spoke only after shutdown began (within
        // `NEW_CONNECTION_GRACE`): its first request is served before the graceful close —
        // closed any sooner, hyper's `auto` connection cancels one still reading its version
        // (HTTP/1.1: unanswered) and HTTP/2 one still in its handshake (GOAWAY before the
        // client's first stream). The watchdog is not running here: this is `changed`'s only
        // waiter.
        let deadline = tokio::time::sleep(NEW_CONNECTION_GRACE);
        tokio::pin!(deadline);
        while !shared.activity().started {
            tokio::select! {
                done = conn.as_mut() => return Outcome::Ended(done),
                _ = shared.changed.notified() => {}
                _ = &mut deadline => break,
            }
        }
        graceful(conn.as_mut());
        let _ = tokio::time::timeout(timeouts.grace, conn).await;
        return Outcome::Shutdown;
    }
    let outcome = tokio::select! {
        done = conn.as_mut() => return Outcome::Ended(done),
        why = watchdog(shared, timeouts) => Outcome::Closed(why),
        _ = stop.wait() => Outcome::Shutdown,
    };
    if let Outcome::Closed(why) = outcome {
        closing(why);
    }
    if matches!(outcome, Outcome::Closed(Closed::PrefaceTimeout)) {
        // Nothing was spoken: drop the socket without ceremony.
        return outcome;
    }
    graceful(conn.as_mut());
    match outcome {
        // After a failed authentication the other streams run to their end; the connection is
        // cut once answers to unauthenticated requests have stayed untaken for `grace` (a
        // client holding them with a window of 0).
        Outcome::Closed(Closed::Unauthenticated) => {
            let cut_at = |a: &Activity, _, grace| a.unauthenticated_since.map(|t| t + grace);
            after_goaway(conn, shared, timeouts.grace, stop, cut_at).await;
        }
        // After the idle timeout: once no request is open, the connection has `grace` (what
        // hyper still holds — answers a client that grants no window never takes — goes
        // with it).
        Outcome::Closed(Closed::IdleTimeout) => {
            let cut_at = |a: &Activity, goaway_at: Instant, grace| {
                (a.open == 0).then(|| a.idle_since.max(goaway_at) + grace)
            };
            after_goaway(conn, shared, timeouts.grace, stop, cut_at).await;
        }
        _ => {
            let _ = tokio::time::timeout(timeouts.grace, conn).await;
        }
    }
    outcome
}

/// After a GOAWAY the watchdog sent. h2 accepts streams until its shutdown PING is answered,
/// so a request that crossed the GOAWAY on the wire is served and runs to its end (its client,
/// told the stream was processed, would not retry it). One begun more than
/// [`GOAWAY_CROSSING`] after the GOAWAY was opened after the client had it: the client
/// ignores the GOAWAY, and the connection is cut, as the GOAWAY meant (Go's HTTP/2 server
/// names the last stream it took at once and drops every later one). Otherwise the connection
/// runs until it ends, or until the deadline `cut_at` reads from its activity (given the
/// GOAWAY's time and `grace`) passes unchanged. A shutdown gives it only its grace.
async fn after_goaway<C: Future>(
    mut conn: Pin<&mut C>,
    shared: &Shared,
    grace: Duration,
    mut stop: Shutdown,
    cut_at: impl Fn(&Activity, Instant, Duration) -> Option<Instant>,
) {
    let goaway_at = Instant::now();
    // The requests begun by the end of the crossing window, once it has passed.
    let mut crossed: Option<u64> = None;
    loop {
        let now = *shared.activity();
        if crossed.is_some_and(|n| now.starts > n) {
            return;
        }
        let deadline = cut_at(&now, goaway_at, grace);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait() => {
                let _ = tokio::time::timeout(grace, conn).await;
                return;
            }
            // The watchdog has returned: this is the only waiter now.
            _ = shared.changed.notified() => {}
            _ = tokio::time::sleep_until(goaway_at + GOAWAY_CROSSING), if crossed.is_none() => {
                crossed = Some(shared.activity().starts);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                // Unless the activity moved the deadline meanwhile.
                if cut_at(&shared.activity(), goaway_at, grace) == deadline {
                    return;
                }
            }
        }
    }
}

/// How long after its GOAWAY a connection may still begin a request: one the client sent
/// before the GOAWAY reached it (x/net's HTTP/2 server waits 1 s for a client to close after
/// its GOAWAY, `goAwayTimeout`).
const GOAWAY_CROSSING: Duration = Duration::from_secs(1);

/// How [`first_bytes`] ended.
pub enum Wait {
    /// The client sent something (now buffered in `io`, unread) or closed its side.
    Spoke,
    /// Reading failed: the connection is over.
    Failed(std::io::Error),
    /// The watchdog closed it (nothing arrived within `preface_timeout`).
    Closed(Closed),
    /// Shutdown closed it.
    Shutdown,
}

/// How long a connection accepted before shutdown may still take, once shutdown has begun, to
/// send its first bytes — and then, in [`drive`], to start its first request: Go's
/// `Server.Shutdown` closes a new connection once it has sent no request header for 5 s since
/// it was accepted (`closeIdleConns`, as read in net/http); here the 5 s run from the signal,
/// twice at most, so a client whose request was on its way is answered (with
/// `Connection: close` / a GOAWAY) rather than cut.
pub const NEW_CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// Wait until the client has sent its first bytes, without consuming them, so the caller
/// builds hyper's connection state (≈ 2.7 KiB) only for a client that speaks: a TLS connection
/// silent after its handshake holds just its TLS stream. The same watchdog as [`drive`] bounds
/// the wait (`preface_timeout`); after shutdown the client has [`NEW_CONNECTION_GRACE`] more
/// to speak (its request is then served as the connection closes gracefully).
pub async fn first_bytes<T>(
    io: &mut T,
    shared: &Shared,
    timeouts: Timeouts,
    mut stop: Shutdown,
) -> Wait
where
    T: AsyncBufRead + Unpin,
{
    let spoke = std::future::poll_fn(|cx| match Pin::new(&mut *io).poll_fill_buf(cx) {
        Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
        Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
        Poll::Pending => Poll::Pending,
    });
    tokio::pin!(spoke);
    let watchdog = watchdog(shared, timeouts);
    tokio::pin!(watchdog);
    let spoke_or_failed = |read: std::io::Result<()>| match read {
        Ok(()) => Wait::Spoke,
        Err(err) => Wait::Failed(err),
    };
    tokio::select! {
        read = &mut spoke => return spoke_or_failed(read),
        why = &mut watchdog => return Wait::Closed(why),
        _ = stop.wait() => {}
    }
    tokio::select! {
        read = spoke => spoke_or_failed(read),
        why = watchdog => Wait::Closed(why),
        _ = tokio::time::sleep(NEW_CONNECTION_GRACE) => Wait::Shutdown,
    }
}

/// Resolves when the connection should be closed, and why.
async fn watchdog(shared: &Shared, timeouts: Timeouts) -> Closed {
    let start = shared.activity().idle_since;
    let preface = tokio::time::sleep_until(start + timeouts.preface);
    tokio::pin!(preface);
    loop {
        if shared.activity().unauthenticated {
            return Closed::Unauthenticated;
        }
        tokio::select! {
            _ = &mut preface => break,
            _ = shared.changed.notified() => {}
        }
    }
    if !shared.prefaced.load(Ordering::Acquire) && !shared.activity().started {
        return Closed::PrefaceTimeout;
    }
    loop {
        let now = *shared.activity();
        if now.unauthenticated {
            return Closed::Unauthenticated;
        }
        if now.open > 0 {
            shared.changed.notified().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(now.idle_since + timeouts.idle) => return Closed::IdleTimeout,
            _ = shared.changed.notified() => {}
        }
    }
}

/// The connection's byte stream, noting when the client has said enough to be past the
/// preface, and lingering when closed (see [`Linger`]; an upgraded session's too, when its
/// splice closes the client side). Holds [`Shared`] (in the closure) so the connection stays
/// counted after an upgrade.
pub fn tracked<T>(inner: T, shared: Arc<Shared>) -> ReadTap<Linger<T>, impl FnMut(&[u8]) + Unpin> {
    let mut seen = 0usize;
    let inner = Linger::new(inner);
    ReadTap::new(inner, move |read: &[u8]| {
        if seen < PREFACE_LEN {
            seen += read.len();
            if seen >= PREFACE_LEN {
                shared.prefaced.store(true, Ordering::Release);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        let limiter = super::super::limits::ConnLimiter::new(10, 10, Default::default());
        let permit = limiter
            .try_acquire("127.0.0.1".parse().unwrap())
            .unwrap_or_else(|_| panic!("a permit"));
        let (alive, _drained) = tokio::sync::mpsc::channel(1);
        Shared::new(permit, alive)
    }

    const TIMEOUTS: Timeouts = Timeouts {
        preface: Duration::from_secs(10),
        idle: Duration::from_secs(90),
        grace: Duration::from_secs(5),
    };

    /// A connection after a failed authentication: the GOAWAY goes at once; the connection
    /// is cut once answers to unauthenticated requests have stayed untaken for `grace`, or at
    /// once when a request begins (here: is refused) well after the GOAWAY (a client that
    /// never acknowledges h2's shutdown PING may go on opening streams) — and otherwise runs
    /// on (another identity's watch).
    #[tokio::test(start_paused = true)]
    async fn after_a_failed_authentication_only_held_or_late_refusals_cut_the_connection() {
        let drive_after_refusal = |s: Arc<Shared>| {
            let (trigger, stop) = crate::shutdown::channel();
            let handle = tokio::spawn(async move {
                let mut conn = std::pin::pin!(std::future::pending::<Result<(), ()>>());
                let started = Instant::now();
                let out = drive(conn.as_mut(), |_| {}, |_| {}, &s, TIMEOUTS, stop).await;
                (
                    matches!(out, Outcome::Closed(Closed::Unauthenticated)),
                    started.elapsed(),
                )
            });
            (trigger, handle)
        };
        // A request refused as `serve.rs` refuses one: begun, then its 401 answer held.
        let refused = |s: &Arc<Shared>| (s.request_started(), s.refused_unauthenticated());
        let fresh = || {
            let s = shared();
            s.handshake_done();
            s.prefaced.store(true, Ordering::Release);
            s
        };

        // Taken at once, then nothing: the connection runs on; a request refused 30 s after
        // the GOAWAY cuts it at once.
        let s = fresh();
        let watch = s.request_started(); // another identity's open stream
        let first = refused(&s);
        let (_trigger, driving) = drive_after_refusal(s.clone());
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!driving.is_finished(), "cut with no refusal held");
        let late = refused(&s);
        let (closed, after) = driving.await.unwrap();
        assert!(closed);
        assert!(after >= Duration::from_secs(30), "{after:?}");
        assert!(after < Duration::from_secs(31), "{after:?}");
        drop((late, watch));

        // A request that crossed the GOAWAY (refused within a moment of it) and is held: cut
        // `grace` after it.
        let s = fresh();
        let watch = s.request_started();
        let first = refused(&s);
        let (_trigger, driving) = drive_after_refusal(s.clone());
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = refused(&s);
        let (closed, after) = driving.await.unwrap();
        assert!(closed);
        assert!(after >= Duration::from_millis(5510), "{after:?}");
        assert!(after < Duration::from_secs(6), "{after:?}");
        drop((held, watch));
    }
}
