//! Per-stream flow-control decoupling, paid for only when a client stops keeping up.
//!
//! A response body is first read *inline*: each chunk the client's connection asks for is
//! taken straight from the upstream stream, so nothing is buffered beyond the upstream stream's
//! own window (`pool::STREAM_WINDOW`), and the connection window stays open for every other
//! stream (it is sized for all of them, see `pool.rs`). No task, channel or lock hand-off is
//! spent on the common case of a client that reads what it asked for.
//!
//! One sweeper task per [`Budgets`] (running only while responses are in flight) looks at the
//! inline responses every [`SWEEP`]. A response whose client took its last chunk and has not
//! asked for the next one for a whole sweep interval (its HTTP/2 window is closed, or its
//! socket is full) is *handed off*: from then on its body is read by a task of its own into a
//! bounded buffer, so the upstream window is given back as fast as the API server sends,
//! whatever the client does. A response whose client is waiting for the API server (a quiet
//! watch) is not stalled and stays inline — until the API server sends and the client, woken
//! for it, does not come to take it for a whole sweep interval: then it is handed off too.
//!
//! Bounds of a handed-off response: [`PER_STREAM`] bytes, and a budget of [`PER_IDENTITY`]
//! bytes shared by every response of one identity (user name) — its pausable responses
//! (followed logs, `proxy` streams, which a reader may pause for up to a day before the stall
//! reset) sharing a separate [`PAUSABLE_PER_IDENTITY`], so they cannot hold the others up. When either is full the pump
//! stops reading — the upstream stream's window then fills and the API server pauses that
//! stream only. A response whose buffer stays full for `upstream.stalled_stream_timeout` (its
//! client took nothing of what was waiting for it in that time — or less than [`MIN_TAKEN`]
//! of it, over rounds of that length: a trickling reader, found within two timeouts; a response whose client took
//! everything and which waits for the identity's budget is not — the responses holding the
//! budget have bytes waiting and are reset on their own timers, which frees it — also once
//! the upstream has ended and only the buffered frames are left for the client) is *stalled*:
//! the upstream stream is cancelled
//! (RST_STREAM) and the client's response ends with an error (HTTP/2: its stream is reset;
//! HTTP/1.1: its connection is closed) — logged with the audit ID and counted in
//! `portcullis_upstream_stalled_streams_total`. So a stalled response is reset at most one or
//! two sweep intervals later than if it had been pumped from the start. A client that goes
//! away stops the reading at once (inline: the upstream body is dropped with the response;
//! handed off: the pump sees its channel closed).

use std::{
    collections::HashMap,
    mem,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError, Weak,
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use bytes::Bytes;
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::body::{Body, BoxError};

/// The most one response holds in the pump's buffer.
pub const PER_STREAM: usize = 1024 * 1024;
/// The most all responses of one identity hold in their pumps' buffers together.
pub const PER_IDENTITY: usize = 16 * 1024 * 1024;
/// The most an identity's pausable responses (followed logs, `proxy` streams: a reader may
/// pause them for hours, and the stalled-stream reset waits that long) hold together — a
/// budget of their own, so that a few paused `logs -f` cannot take the budget the identity's
/// other responses wait for (those would wait as long, with no reset to free it).
pub const PAUSABLE_PER_IDENTITY: usize = 8 * 1024 * 1024;
/// What a client must take of the bytes waiting for it in each stall-timeout round (or all of
/// them, when fewer wait): a client that trickles — one frame now and then, as a reader that
/// grants one byte of HTTP/2 window a minute makes hyper send — holds its buffer, its share of
/// the identity's budget and its upstream stream as surely as one that takes nothing.
pub const MIN_TAKEN: usize = 64 * 1024;

/// Whether a stall round is a stall: `waiting` bytes were there for the client at its start
/// and it took `taken` of them.
fn stalled_round(waiting: usize, taken: usize) -> bool {
    waiting > 0 && taken < waiting.min(MIN_TAKEN)
}

/// How often inline responses are looked at: a client that asks for nothing for between one
/// and two of these, with a chunk already taken, is handed off to a pump.
pub const SWEEP: Duration = Duration::from_millis(250);

/// The per-identity budgets (one semaphore per identity with a pumped response in flight) and
/// the inline responses the sweeper watches. Cheap to clone (shared).
#[derive(Default, Clone)]
pub struct Budgets {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Keyed by identity and whether the budget is its pausable responses' one.
    by_identity: Mutex<HashMap<(String, bool), Weak<Semaphore>>>,
    watched: Mutex<Watched>,
}

#[derive(Default)]
struct Watched {
    inline: Vec<Weak<dyn Sweep>>,
    sweeper_running: bool,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Budgets {
    /// The budget of `user`, shared by all its pumped responses in flight but the pausable.
    pub fn of(&self, user: &str) -> Arc<Semaphore> {
        self.inner.budget_of(user, false)
    }

    /// Watch `slot` until it ends or is handed off; starts the sweeper if it is not running.
    fn watch(&self, slot: Weak<dyn Sweep>) {
        let mut w = lock(&self.inner.watched);
        w.inline.push(slot);
        if !w.sweeper_running {
            w.sweeper_running = true;
            tokio::spawn(sweeper(self.inner.clone()));
        }
    }
}

impl Shared {
    fn budget_of(&self, user: &str, pausable: bool) -> Arc<Semaphore> {
        let mut map = lock(&self.by_identity);
        let key = (user.to_owned(), pausable);
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        // Forget identities with nothing in flight before adding one, so the map stays as
        // large as the set of identities with responses in flight.
        if map.len() >= 64 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let size = if pausable {
            PAUSABLE_PER_IDENTITY
        } else {
            PER_IDENTITY
        };
        let s = Arc::new(Semaphore::new(size));
        map.insert(key, Arc::downgrade(&s));
        s
    }
}

/// Looks at the inline responses every [`SWEEP`]; ends when none is left (the next response
/// starts it again), so an idle proxy does not wake for it.
async fn sweeper(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(SWEEP).await;
        let watched = mem::take(&mut lock(&shared.watched).inline);
        let still: Vec<Weak<dyn Sweep>> = watched
            .into_iter()
            .filter(|w| w.upgrade().is_some_and(|s| s.sweep(&shared)))
            .collect();
        let mut w = lock(&shared.watched);
        w.inline.extend(still);
        if w.inline.is_empty() {
            w.sweeper_running = false;
            return;
        }
    }
}

/// What a stalled stream is reported with.
pub struct StallReport {
    pub endpoint: String,
    pub user: String,
    /// A response its reader may pause (its own budget: [`PAUSABLE_PER_IDENTITY`]).
    pub pausable: bool,
    pub audit_id: String,
    pub counter: Counter,
    /// Told at the reset (the audit layer writes the request's `ResponseComplete` then).
    pub on_stall: Option<super::Watcher>,
}

type Item = Result<(Frame<Bytes>, [OwnedSemaphorePermit; 2]), BoxError>;

/// Read `inner` inline while its client keeps up, on a pump task bounded by [`PER_STREAM`]
/// and the identity's budget once it does not (see the module doc). `report` is called only
/// at a hand-off, so a response that never stalls builds no report.
pub fn decouple<R>(inner: Body, budgets: &Budgets, stall: Duration, report: R) -> Body
where
    R: FnOnce() -> StallReport + Send + 'static,
{
    if inner.is_end_stream() {
        return inner;
    }
    let slot = Arc::new(Slot {
        wakeup: Arc::default(),
        state: Mutex::new(State {
            mode: Mode::Inline(inner),
            // A response just made gets one whole sweep interval before it can be handed off.
            polled: true,
            waiting: false,
            report: Some(report),
            stall,
        }),
    });
    let weak: Weak<Slot<R>> = Arc::downgrade(&slot);
    budgets.watch(weak);
    Decoupled { slot }.boxed_unsync()
}

struct Slot<R> {
    state: Mutex<State<R>>,
    /// The waker the upstream body is polled with while inline: it notes that the upstream
    /// has something for the client, then wakes the client.
    wakeup: Arc<Wakeup>,
}

/// Held by the upstream body's waker registration, so it must not own the body (a cycle):
/// only the client's waker and a flag.
#[derive(Default)]
struct Wakeup {
    /// The upstream woke the client since its last ask.
    woken: AtomicBool,
    client: Mutex<Option<Waker>>,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(w) = lock(&self.client).as_ref() {
            w.wake_by_ref();
        }
    }
}

struct State<R> {
    mode: Mode,
    /// The client asked for a chunk since the last sweep.
    polled: bool,
    /// The client's last ask is waiting for the API server (it keeps up).
    waiting: bool,
    report: Option<R>,
    stall: Duration,
}

enum Mode {
    Inline(Body),
    Pumped(mpsc::UnboundedReceiver<Item>),
    Ended,
}

trait Sweep: Send + Sync {
    /// Hand the response off if its client stopped asking; whether to keep watching it.
    fn sweep(self: Arc<Self>, shared: &Arc<Shared>) -> bool;
}

impl<R: FnOnce() -> StallReport + Send + 'static> Sweep for Slot<R> {
    fn sweep(self: Arc<Self>, shared: &Arc<Shared>) -> bool {
        let mut st = lock(&self.state);
        if !matches!(st.mode, Mode::Inline(_)) {
            return false;
        }
        // Keeping up: it asked since the last sweep, or it waits for the API server, which
        // has not sent it anything it left untaken.
        if st.polled || (st.waiting && !self.wakeup.woken.load(Ordering::Acquire)) {
            st.polled = false;
            return true;
        }
        let (Mode::Inline(inner), Some(report)) =
            (mem::replace(&mut st.mode, Mode::Ended), st.report.take())
        else {
            return false;
        };
        let report = report();
        let budget = shared.budget_of(&report.user, report.pausable);
        let (tx, rx) = mpsc::unbounded_channel::<Item>();
        st.mode = Mode::Pumped(rx);
        let stall = st.stall;
        drop(st);
        tokio::spawn(pump(
            inner,
            tx,
            Arc::downgrade(&self),
            budget,
            stall,
            report,
        ));
        false
    }
}

impl<R> Slot<R> {
    /// Throw away what the client never read (its identity's budget with it).
    fn drain(&self) {
        if let Mode::Pumped(rx) = &mut lock(&self.state).mode {
            while rx.try_recv().is_ok() {}
        }
    }
}

/// The client's side. The sweeper and the pump hold only weak handles to the slot, so dropping
/// this body (the client went away) drops an inline upstream body at once, or closes the
/// channel and stops the pump.
struct Decoupled<R> {
    slot: Arc<Slot<R>>,
}

impl<R: Send + 'static> http_body::Body for Decoupled<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut st = lock(&self.slot.state);
        st.polled = true;
        match &mut st.mode {
            Mode::Inline(inner) => {
                let wakeup = &self.slot.wakeup;
                {
                    let mut client = lock(&wakeup.client);
                    if !client.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *client = Some(cx.waker().clone());
                    }
                }
                wakeup.woken.store(false, Ordering::Release);
                let waker = Waker::from(wakeup.clone());
                let polled = Pin::new(inner).poll_frame(&mut Context::from_waker(&waker));
                st.waiting = polled.is_pending();
                if let Poll::Ready(None) = polled {
                    st.mode = Mode::Ended;
                }
                polled
            }
            // The permits are released as the frame is handed to the client side.
            Mode::Pumped(rx) => rx
                .poll_recv(cx)
                .map(|item| item.map(|r| r.map(|(frame, _permits)| frame))),
            Mode::Ended => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &lock(&self.slot.state).mode {
            Mode::Inline(inner) => inner.is_end_stream(),
            Mode::Pumped(_) => false,
            Mode::Ended => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &lock(&self.slot.state).mode {
            Mode::Inline(inner) => inner.size_hint(),
            Mode::Pumped(_) | Mode::Ended => SizeHint::default(),
        }
    }
}

async fn pump<R>(
    mut inner: Body,
    tx: mpsc::UnboundedSender<Item>,
    slot: Weak<Slot<R>>,
    budget: Arc<Semaphore>,
    stall: Duration,
    report: StallReport,
) {
    let mine = Arc::new(Semaphore::new(PER_STREAM));
    // Bytes put in the buffer so far, and the client's progress over stall-timeout rounds
    // (a client that frees room a frame at a time never lets a wait for room last a round).
    let mut added = 0usize;
    let mut progress = Progress::start(tokio::time::Instant::now());
    loop {
        let frame = tokio::select! {
            f = inner.frame() => f,
            () = tx.closed() => return,
        };
        let frame = match frame {
            None => {
                // The upstream is done (dropping its body gives its in-flight place back), but
                // the frames still buffered hold this identity's budget until the client takes
                // them: a client that takes none of them for a whole stall timeout is reset as
                // one the pump waits on would be, or its buffer would hold the budget — and
                // every later response of the identity waiting for it — for the connection's
                // life.
                drop(inner);
                return watch_taken(&mine, stall, &tx, &report, &slot).await;
            }
            Some(Err(err)) => {
                let _ = tx.send(Err(err));
                return;
            }
            Some(Ok(frame)) => frame,
        };
        // At least one permit per frame, so a flood of empty frames is bounded too.
        let size = frame.data_ref().map_or(0, Bytes::len).max(1);
        let own = u32::try_from(size.min(PER_STREAM)).unwrap_or(u32::MAX);
        let shared = u32::try_from(size.min(PER_IDENTITY)).unwrap_or(u32::MAX);
        // Room in this stream's buffer, then in the identity's budget. Stalled only when this
        // response's client took nothing it could have for a whole `stall`: bytes of it were
        // waiting and none was taken. One whose client took everything (its buffer empty) and
        // waits for the budget is not stalled: the responses holding the budget are — each with
        // bytes waiting and nothing taken — and their resets free it.
        let a = match room(&mine, &mine, own, 0, stall, &tx).await {
            Ok(a) => a,
            Err(Stop::Closed) => return,
            Err(Stop::Stalled) => return reset_stalled(&report, stall, &slot, &tx),
        };
        let b = match room(&budget, &mine, shared, own, stall, &tx).await {
            Ok(b) => b,
            Err(Stop::Closed) => return,
            Err(Stop::Stalled) => return reset_stalled(&report, stall, &slot, &tx),
        };
        if tx.send(Ok((frame, [a, b]))).is_err() {
            return;
        }
        added += own as usize;
        let in_buffer = PER_STREAM.saturating_sub(mine.available_permits());
        let taken = added.saturating_sub(in_buffer);
        if progress.stalled(tokio::time::Instant::now(), stall, taken, in_buffer) {
            return reset_stalled(&report, stall, &slot, &tx);
        }
    }
}

/// A pumped response's client over stall-timeout rounds: bytes waiting for it when a round
/// began, and how many it had taken by then.
struct Progress {
    since: tokio::time::Instant,
    taken: usize,
    waiting: usize,
}

impl Progress {
    fn start(now: tokio::time::Instant) -> Progress {
        Progress {
            since: now,
            taken: 0,
            waiting: 0,
        }
    }

    /// At `now`, with `taken` bytes taken by the client in all and `in_buffer` waiting: whether
    /// the round that has lasted `stall` is a stall ([`stalled_round`]); a new round starts.
    fn stalled(
        &mut self,
        now: tokio::time::Instant,
        stall: Duration,
        taken: usize,
        in_buffer: usize,
    ) -> bool {
        if now.duration_since(self.since) < stall {
            return false;
        }
        if stalled_round(self.waiting, taken.saturating_sub(self.taken)) {
            return true;
        }
        *self = Progress {
            since: now,
            taken,
            waiting: in_buffer,
        };
        false
    }
}

/// After the upstream ended: wait until the client has taken everything buffered, resetting the
/// response if, for a whole `stall`, bytes were waiting and it took none of them.
async fn watch_taken<R>(
    mine: &Semaphore,
    stall: Duration,
    tx: &mpsc::UnboundedSender<Item>,
    report: &StallReport,
    slot: &Weak<Slot<R>>,
) {
    let all = u32::try_from(PER_STREAM).unwrap_or(u32::MAX);
    loop {
        let before = mine.available_permits();
        if before >= PER_STREAM {
            return;
        }
        let waiting = PER_STREAM - before;
        tokio::select! {
            // Everything taken: the pump returns at once, and the client's response ends with
            // it (waiting out the rest of a stall round instead delayed its end — by up to the
            // whole timeout — for any client that drained a handed-off response after its
            // upstream had ended).
            _ = mine.acquire_many(all) => return,
            () = tokio::time::sleep(stall) => {
                let taken = mine.available_permits().saturating_sub(before);
                if stalled_round(waiting, taken) {
                    return reset_stalled(report, stall, slot, tx);
                }
            }
            () = tx.closed() => return,
        }
    }
}

/// Why a pump stopped waiting for room.
enum Stop {
    /// The client went away (or the budget closed).
    Closed,
    /// Its client took nothing of what was waiting for it for a whole stall timeout.
    Stalled,
}

/// `n` permits of `sem`, waited for in stall-timeout rounds: after a round in which this
/// stream's buffer (`mine`, less the `held` permits the pump holds for the frame in hand) had
/// bytes waiting and its client took less than [`MIN_TAKEN`] of them (or than all, when fewer
/// waited), the response is stalled.
async fn room(
    sem: &Arc<Semaphore>,
    mine: &Semaphore,
    n: u32,
    held: u32,
    stall: Duration,
    tx: &mpsc::UnboundedSender<Item>,
) -> Result<tokio::sync::OwnedSemaphorePermit, Stop> {
    loop {
        let before = mine.available_permits();
        // Bytes in this stream's buffer for its client (nothing is added while the pump waits).
        let waiting = PER_STREAM.saturating_sub(before + held as usize);
        tokio::select! {
            r = tokio::time::timeout(stall, sem.clone().acquire_many_owned(n)) => match r {
                Ok(Ok(p)) => return Ok(p),
                Ok(Err(_)) => return Err(Stop::Closed),
                Err(_) => {
                    let taken = mine.available_permits().saturating_sub(before);
                    if stalled_round(waiting, taken) {
                        return Err(Stop::Stalled);
                    }
                }
            },
            () = tx.closed() => return Err(Stop::Closed),
        }
    }
}

/// A stalled response: counted, reported, logged; what its client never read is freed (its
/// identity's budget with it) and the client gets an error as soon as it reads again, and
/// nothing else. The caller then drops the upstream body, which cancels the upstream stream.
fn reset_stalled<R>(
    report: &StallReport,
    stall: Duration,
    slot: &Weak<Slot<R>>,
    tx: &mpsc::UnboundedSender<Item>,
) {
    report.counter.inc();
    if let Some(on_stall) = &report.on_stall {
        on_stall.0.stalled();
    }
    tracing::warn!(
        endpoint = %report.endpoint,
        user = %report.user,
        audit_id = %report.audit_id,
        timeout = ?stall,
        "the client read nothing of this response for the stalled-stream timeout; resetting the stream"
    );
    if let Some(slot) = slot.upgrade() {
        slot.drain();
    }
    let _ = tx.send(Err(
        "stalled: the client read nothing within upstream.stalled_stream_timeout".into(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StallReport {
        StallReport {
            endpoint: "https://a".into(),
            user: "u".into(),
            pausable: false,
            audit_id: "id".into(),
            counter: Counter::default(),
            on_stall: None,
        }
    }

    /// A report that says whether it was asked for (only a hand-off asks).
    fn flagged() -> (
        Arc<AtomicBool>,
        impl FnOnce() -> StallReport + Send + 'static,
    ) {
        let asked = Arc::new(AtomicBool::new(false));
        let flag = asked.clone();
        (asked, move || {
            flag.store(true, Ordering::SeqCst);
            report()
        })
    }

    #[tokio::test]
    async fn everything_arrives_in_order_when_the_client_reads() {
        let (tx, inner) = crate::body::channel(4);
        let (handed_off, r) = flagged();
        let body = decouple(inner, &Budgets::default(), Duration::from_secs(5), r);
        tokio::spawn(async move {
            for i in 0..100u8 {
                tx.send(Bytes::from(vec![i; 50_000])).await.unwrap();
            }
        });
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 100 * 50_000);
        assert_eq!(got[50_000 * 42], 42);
        assert!(!handed_off.load(Ordering::SeqCst), "read inline");
    }

    #[tokio::test]
    async fn everything_arrives_in_order_across_a_hand_off() {
        let (tx, inner) = crate::body::channel(1);
        let (handed_off, r) = flagged();
        let mut body = decouple(inner, &Budgets::default(), Duration::from_secs(5), r);
        tokio::spawn(async move {
            for i in 0..100u8 {
                tx.send(Bytes::from(vec![i; 50_000])).await.unwrap();
            }
        });
        // One chunk inline, then the client stops asking for longer than two sweeps.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        tokio::time::sleep(SWEEP * 3).await;
        assert!(handed_off.load(Ordering::SeqCst), "handed off to a pump");
        let rest = body.collect().await.unwrap().to_bytes();
        let mut got = first.to_vec();
        got.extend_from_slice(&rest);
        assert_eq!(got.len(), 100 * 50_000);
        assert!((0..100u8).all(|i| got[50_000 * usize::from(i)] == i));
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_has_the_upstream_read_ahead_within_bounds() {
        let (tx, inner) = crate::body::channel(1);
        let budgets = Budgets::default();
        let (_, r) = flagged();
        let mut body = decouple(inner, &budgets, Duration::from_secs(30), r);
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = sent.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                if tx.send(Bytes::from(vec![0u8; 64 * 1024])).await.is_err() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        body.frame().await.unwrap().unwrap();
        // Inline, the upstream waits for the client; handed off, the pump reads on until
        // its per-stream bound.
        tokio::time::sleep(SWEEP * 4).await;
        let read_ahead = sent.load(Ordering::SeqCst);
        assert!(read_ahead >= 8, "read ahead: {read_ahead} chunks");
        // The buffer, plus the chunk the client took, the one the pump holds waiting for room
        // and the one in the test channel.
        assert!(
            read_ahead * 64 * 1024 <= PER_STREAM + 4 * 64 * 1024,
            "{read_ahead}"
        );
        assert!(PER_IDENTITY - budgets.of("u").available_permits() <= PER_STREAM);
    }

    #[tokio::test]
    async fn a_client_waiting_for_the_api_server_stays_inline() {
        let (tx, inner) = crate::body::channel(1);
        let budgets = Budgets::default();
        let (handed_off, r) = flagged();
        let mut body = decouple(inner, &budgets, Duration::from_secs(5), r);
        // A quiet watch: the client asks, nothing comes for several sweeps.
        let next =
            tokio::spawn(async move { body.frame().await.map(|f| f.map(|f| f.into_data())) });
        tokio::time::sleep(SWEEP * 4).await;
        assert!(!handed_off.load(Ordering::SeqCst));
        tx.send(Bytes::from_static(b"event")).await.unwrap();
        let got = next.await.unwrap().unwrap().unwrap().unwrap();
        assert_eq!(&got[..], b"event");
        assert!(!handed_off.load(Ordering::SeqCst));
        assert!(
            lock(&budgets.inner.by_identity).is_empty(),
            "no budget taken"
        );
    }

    #[tokio::test]
    async fn a_quiet_watch_whose_client_does_not_take_an_event_is_handed_off() {
        let (tx, inner) = crate::body::channel(1);
        let (handed_off, r) = flagged();
        let mut body = decouple(inner, &Budgets::default(), Duration::from_secs(5), r);
        // The client asks once (nothing yet), then ignores its wake-ups, as hyper does for a
        // client whose window is closed.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        tokio::time::sleep(SWEEP * 3).await;
        assert!(
            !handed_off.load(Ordering::SeqCst),
            "waiting for the API server"
        );
        tx.send(Bytes::from_static(b"event")).await.unwrap();
        tokio::time::sleep(SWEEP * 3).await;
        assert!(
            handed_off.load(Ordering::SeqCst),
            "the event was left untaken"
        );
        let got = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&got[..], b"event");
    }

    #[tokio::test]
    async fn a_stream_nobody_reads_is_reset_after_the_stall_timeout() {
        let (tx, inner) = crate::body::channel(1);
        let r = report();
        let counter = r.counter.clone();
        let budgets = Budgets::default();
        let budget = budgets.of("u");
        let mut body = decouple(inner, &budgets, Duration::from_millis(600), move || r);
        // More than the per-stream buffer, and nobody reads.
        let writer = tokio::spawn(async move {
            for _ in 0..40 {
                if tx.send(Bytes::from(vec![0u8; 64 * 1024])).await.is_err() {
                    return false;
                }
            }
            true
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(counter.get(), 0);
        // Only the per-stream bound is buffered, charged to the identity too.
        assert!(PER_IDENTITY - budget.available_permits() <= PER_STREAM);
        // Handed off within two sweeps, then reset after the stall timeout.
        tokio::time::sleep(SWEEP * 2 + Duration::from_millis(1500)).await;
        assert_eq!(counter.get(), 1);
        // The writer (the upstream) was cut off rather than drained.
        assert!(!writer.await.unwrap());
        // What the client never read is freed at once, the identity's budget with it.
        assert_eq!(budget.available_permits(), PER_IDENTITY);
        // The client, reading at last, gets the error and no data.
        assert!(body.frame().await.unwrap().is_err());
    }

    /// A response the pump read to its end (smaller than the per-stream buffer) and whose client
    /// takes nothing still holds the identity's budget with its buffered frames: it is reset
    /// after the stall timeout like one the pump waits on, freeing the budget for the
    /// identity's other responses; one that is taken ends normally.
    #[tokio::test]
    async fn a_response_read_to_its_end_and_never_taken_is_reset() {
        for taken in [false, true] {
            let (tx, inner) = crate::body::channel(4);
            let r = report();
            let counter = r.counter.clone();
            let budgets = Budgets::default();
            let budget = budgets.of("u");
            let mut body = decouple(inner, &budgets, Duration::from_millis(600), move || r);
            for _ in 0..3 {
                tx.send(Bytes::from(vec![0u8; 64 * 1024])).await.unwrap();
            }
            drop(tx);
            // Handed off within two sweeps; the pump reads to the end and holds the frames.
            tokio::time::sleep(SWEEP * 2 + Duration::from_millis(200)).await;
            assert!(budget.available_permits() < PER_IDENTITY, "buffered");
            if taken {
                let mut got = 0;
                while let Some(f) = body.frame().await {
                    got += f.unwrap().into_data().unwrap().len();
                }
                assert_eq!(got, 3 * 64 * 1024);
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(counter.get(), u64::from(!taken), "taken={taken}");
            assert_eq!(budget.available_permits(), PER_IDENTITY, "taken={taken}");
            if !taken {
                assert!(body.frame().await.unwrap().is_err());
            }
        }
    }

    /// A client that trickles — one small frame now and then, never nothing for a whole round
    /// — is reset like one that takes nothing: less than MIN_TAKEN per stall timeout.
    #[tokio::test]
    async fn a_client_that_trickles_is_reset_as_stalled() {
        let (tx, inner) = crate::body::channel(1);
        let r = report();
        let counter = r.counter.clone();
        let budgets = Budgets::default();
        let mut body = decouple(inner, &budgets, Duration::from_millis(600), move || r);
        let writer = tokio::spawn(async move {
            for _ in 0..200 {
                if tx.send(Bytes::from(vec![0u8; 16 * 1024])).await.is_err() {
                    return false;
                }
            }
            true
        });
        // One 16 KiB frame every 400 ms: ~24 KiB a round.
        let mut reset = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            match body.frame().await {
                Some(Ok(_)) => {}
                _ => {
                    reset = true;
                    break;
                }
            }
        }
        assert!(reset, "still served after 8 s of trickling");
        assert_eq!(counter.get(), 1);
        assert!(!writer.await.unwrap());
    }

    /// A response whose client reads, waiting only for its identity's budget (held by other
    /// responses of the same user), is not reset as stalled: it goes on once the budget frees.
    #[tokio::test]
    async fn waiting_for_the_identity_s_budget_is_not_a_stall() {
        let (tx, inner) = crate::body::channel(1);
        let r = report();
        let counter = r.counter.clone();
        let budgets = Budgets::default();
        let held = budgets
            .of("u")
            .acquire_many_owned(PER_IDENTITY as u32)
            .await
            .unwrap();
        let mut body = decouple(inner, &budgets, Duration::from_millis(400), move || r);
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        // Unread for two sweeps: handed off to the pump, which waits for the budget.
        tokio::time::sleep(SWEEP * 2 + Duration::from_millis(100)).await;
        tx.send(Bytes::from_static(b"second")).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(f) = body.frame().await {
                got.extend_from_slice(&f.unwrap().into_data().unwrap());
                if got.len() >= 11 {
                    break;
                }
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(counter.get(), 0, "reset as stalled while its client read");
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the response went on once the budget freed")
            .unwrap();
        assert_eq!(&got[..], b"firstsecond");
        assert_eq!(counter.get(), 0);
    }

    /// An identity's pausable responses (followed logs a pager stopped reading) have a budget
    /// of their own: with all of it held, the identity's other responses are still pumped —
    /// they would otherwise wait for as long as a log may stay paused (a day).
    #[tokio::test]
    async fn paused_logs_cannot_take_the_budget_of_other_responses() {
        let budgets = Budgets::default();
        let paused = budgets.inner.budget_of("u", true);
        assert!(!Arc::ptr_eq(&paused, &budgets.of("u")));
        let held = paused
            .acquire_many_owned(PAUSABLE_PER_IDENTITY as u32)
            .await
            .unwrap();
        let (tx, inner) = crate::body::channel(1);
        let body = decouple(inner, &budgets, Duration::from_secs(30), report);
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        // Unread for two sweeps: handed off to the pump, which takes from its own budget.
        tokio::time::sleep(SWEEP * 2 + Duration::from_millis(100)).await;
        tx.send(Bytes::from_static(b"second")).await.unwrap();
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), body.collect())
            .await
            .expect("the response waited for the paused logs' budget")
            .unwrap()
            .to_bytes();
        assert_eq!(&got[..], b"firstsecond");
        drop(held);
    }

    /// A response whose client reads nothing, stuck on the identity's budget (held by others)
    /// with fewer bytes buffered than its own bound, is still reset after the stall timeout:
    /// otherwise budget holders that never read would freeze the identity's responses.
    #[tokio::test]
    async fn a_response_holding_part_of_the_budget_and_never_read_is_reset() {
        let (tx, inner) = crate::body::channel(1);
        let r = report();
        let counter = r.counter.clone();
        let budgets = Budgets::default();
        let others = budgets
            .of("u")
            .acquire_many_owned((PER_IDENTITY - 100 * 1024) as u32)
            .await
            .unwrap();
        let _body = decouple(inner, &budgets, Duration::from_millis(600), move || r);
        let writer = tokio::spawn(async move {
            for _ in 0..40 {
                if tx.send(Bytes::from(vec![0u8; 64 * 1024])).await.is_err() {
                    return false;
                }
            }
            true
        });
        tokio::time::sleep(SWEEP * 2 + Duration::from_millis(2000)).await;
        assert_eq!(counter.get(), 1, "reset although it never read");
        assert!(!writer.await.unwrap());
        drop(others);
    }

    #[tokio::test]
    async fn a_client_that_goes_away_cancels_the_upstream_body() {
        let (tx, inner) = crate::body::channel(1);
        let (_, r) = flagged();
        let body = decouple(inner, &Budgets::default(), Duration::from_secs(5), r);
        drop(body);
        assert!(tx.send(Bytes::from_static(b"x")).await.is_err());
    }

    #[tokio::test]
    async fn the_sweeper_stops_when_nothing_is_in_flight() {
        let budgets = Budgets::default();
        let (tx, inner) = crate::body::channel(1);
        let (_, r) = flagged();
        let body = decouple(inner, &budgets, Duration::from_secs(5), r);
        assert!(lock(&budgets.inner.watched).sweeper_running);
        drop((body, tx));
        tokio::time::sleep(SWEEP * 2).await;
        let w = lock(&budgets.inner.watched);
        assert!(!w.sweeper_running && w.inline.is_empty());
    }

    #[tokio::test]
    async fn one_identity_s_budget_is_shared_by_its_responses() {
        let budgets = Budgets::default();
        let a = budgets.of("alice");
        assert!(Arc::ptr_eq(&a, &budgets.of("alice")));
        assert!(!Arc::ptr_eq(&a, &budgets.of("bob")));
    }
}
