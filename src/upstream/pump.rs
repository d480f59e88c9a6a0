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
//! bounded buffer, so the upstream window is given back as the pump finds room for what the
//! API server sends, whatever the client does. A response whose client is waiting for the API server (a quiet
//! watch) is not stalled and stays inline — until the API server sends and the client, woken
//! for it, does not come to take it for a whole sweep interval: then it is handed off too.
//! A *pausable* response (a followed log, a `proxy` stream) is pumped from its first byte: the
//! API server frames its bytes as the pod writes them, so a window of them can be thousands of
//! tiny frames, which `h2` must not be left holding while a hand-off waits for a sweep.
//!
//! Bounds of a handed-off response: [`PER_STREAM`] bytes, and a budget of [`PER_IDENTITY`]
//! bytes shared by every response of one identity (user name) — its pausable responses
//! (followed logs, `proxy` streams, which a reader may pause for up to a day before the stall
//! reset) sharing a separate [`PAUSABLE_PER_IDENTITY`], so they cannot hold the others up.
//! When either is full the pump goes on taking what the API server sends over HTTP/2, but
//! withholds its window (`window.rs`): the API server can then send one stream window more and
//! pauses that stream only, and `h2` — which closes the whole connection when the small DATA
//! frames it holds unread cost too much — holds nothing for it. The pump coalesces what it
//! takes into chunks of up to `CHUNK` (16 KiB), so a frame of one byte costs one byte. Over
//! HTTP/1.1 it takes one frame at a time, as room is found for it.
//! The first stream window of what a pumped response holds ([`FREE`]) is not charged to the
//! budget while its upstream body is open — what `h2` held for it unread before pumps existed —
//! so a reader that keeps up goes on while other responses of its identity hold the whole
//! budget; once the body has ended, the response keeps its in-flight place ([`Place`]) until
//! every byte left is charged.
//!
//! A response whose buffer stays full for `upstream.stalled_stream_timeout` (its
//! client took nothing of what was waiting for it in that time — or less than [`MIN_TAKEN`]
//! of it, over rounds of that length: a trickling reader, found within two timeouts; a response whose client took
//! everything and which waits for the identity's budget is not — the responses holding the
//! budget have bytes waiting and are reset on their own timers, which frees it — also once
//! the upstream has ended and only the buffered bytes are left for the client) is *stalled*:
//! the upstream stream is cancelled
//! (RST_STREAM) and the client's response ends with an error (HTTP/2: its stream is reset;
//! HTTP/1.1: its connection is closed) — logged with the audit ID and counted in
//! `portcullis_upstream_stalled_streams_total`. So a stalled response is reset at most one or
//! two sweep intervals later than if it had been pumped from the start. A client that goes
//! away stops the reading at once (inline: the upstream body is dropped with the response;
//! pumped: its side of the buffer tells the pump, which drops it).

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    mem,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError, Weak,
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, Semaphore};

use super::{pool::STREAM_WINDOW, window::Withheld};
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

/// Read `inner` inline while its client keeps up, on a pump task bounded by [`PER_STREAM`]
/// and the identity's budget once it does not (see the module doc) — or on a pump from its
/// first byte when `from_start` (a pausable response: its bytes are framed as a pod writes
/// them). `report` is called only when a pump starts, so a response read inline throughout
/// builds no report.
pub fn decouple<R>(
    inner: Body,
    budgets: &Budgets,
    stall: Duration,
    from_start: bool,
    place: Option<Place>,
    report: R,
) -> Body
where
    R: FnOnce() -> StallReport + Send + 'static,
{
    if inner.is_end_stream() {
        return inner;
    }
    let (mode, report, place) = if from_start {
        let queue = start_pump(inner, place, &budgets.inner, stall, report());
        (Mode::Pumped(queue), None, None)
    } else {
        (Mode::Inline(inner), Some(report), place)
    };
    let slot = Arc::new(Slot {
        wakeup: Arc::default(),
        state: Mutex::new(State {
            mode,
            // A response just made gets one whole sweep interval before it can be handed off.
            polled: true,
            waiting: false,
            report,
            stall,
            place,
        }),
    });
    if !from_start {
        let weak: Weak<Slot<R>> = Arc::downgrade(&slot);
        budgets.watch(weak);
    }
    Decoupled { slot }.boxed_unsync()
}

/// A place under a cap the response holds until its upstream answer has been read (the
/// in-flight place): given back as the last frame is taken while inline; by a pump, once the
/// answer has ended and every byte of it left in the buffer is charged to the budget.
pub type Place = Box<dyn Send>;

/// A pump for `inner` on a task of its own; its buffer, shared with the client side.
fn start_pump(
    inner: Body,
    place: Option<Place>,
    shared: &Shared,
    stall: Duration,
    report: StallReport,
) -> Arc<Queue> {
    let queue = Arc::new(Queue {
        state: Mutex::default(),
        mine: Arc::new(Semaphore::new(PER_STREAM)),
        budget: shared.budget_of(&report.user, report.pausable),
        gone: Notify::new(),
        took: Notify::new(),
    });
    tokio::spawn(pump(inner, place, queue.clone(), stall, report));
    queue
}

struct Slot<R> {
    state: Mutex<State<R>>,
    /// The waker the upstream body is polled with while inline: it notes that the upstream
    /// has something for the client, then wakes the client.
    wakeup: Arc<Wakeup>,
}

/// The client side went away: a pump stops. On the slot, not on the client's body: the
/// sweeper may hold the slot while it hands the response off, as the body is dropped.
impl<R> Drop for Slot<R> {
    fn drop(&mut self) {
        if let Mode::Pumped(queue) = &self
            .state
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .mode
        {
            queue.client_gone();
        }
    }
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
    /// While inline (see [`Place`]).
    place: Option<Place>,
}

enum Mode {
    Inline(Body),
    Pumped(Arc<Queue>),
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
        let (stall, place) = (st.stall, st.place.take());
        st.mode = Mode::Pumped(start_pump(inner, place, shared, stall, report()));
        false
    }
}

/// The client's side. The sweeper holds only a weak handle to the slot, so dropping this body
/// (the client went away) drops an inline upstream body at once, or tells the pump, which
/// stops.
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
        let has_place = st.place.is_some();
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
                let polled = Pin::new(&mut *inner).poll_frame(&mut Context::from_waker(&waker));
                // The answer has been read: its place goes (`body::hold_until_read`'s rule;
                // asked only while a place is held — `is_end_stream` takes h2's lock).
                let read = has_place && crate::body::read_to_end(&polled, &*inner);
                if read {
                    st.place = None;
                }
                st.waiting = polled.is_pending();
                if let Poll::Ready(None) = polled {
                    st.mode = Mode::Ended;
                }
                polled
            }
            Mode::Pumped(queue) => queue.poll_take(cx),
            Mode::Ended => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &lock(&self.slot.state).mode {
            Mode::Inline(inner) => inner.is_end_stream(),
            Mode::Pumped(queue) => queue.ended(),
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

/// A pumped response's buffer, shared by its pump and its client side.
///
/// The pump appends every byte it takes from the upstream, coalesced into chunks of up to
/// [`CHUNK`] bytes (a frame of a few bytes costs a few bytes, not a frame's bookkeeping), and
/// *admits* them as it finds room: permits of [`PER_STREAM`] and of the identity's budget
/// (beyond [`FREE`]), and the upstream window given back. The client takes admitted bytes only,
/// and gives their permits back as it takes them (the budget's first). Bytes not admitted yet are at most one stream window (their
/// window was withheld), or one frame over HTTP/1.1 (the pump takes no more until it is
/// admitted).
struct Queue {
    state: Mutex<Buffer>,
    mine: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    /// Told when the client side goes away.
    gone: Notify,
    /// Told when the client takes bytes.
    took: Notify,
}

#[derive(Default)]
struct Buffer {
    chunks: VecDeque<BytesMut>,
    /// Bytes in `chunks`.
    len: usize,
    /// Of them, from the front: the bytes the client may take (they hold permits of
    /// [`PER_STREAM`]).
    admitted: usize,
    /// Permits of the identity's budget held for admitted bytes: all of them but up to
    /// [`FREE`] while the pump holds the upstream body (see [`Queue`]).
    charged: usize,
    /// Bytes the client has taken in all.
    taken: usize,
    /// How the response ends, once the client has taken every byte.
    end: Option<End>,
    /// The end was handed to the client.
    finished: bool,
    client: Option<Waker>,
    gone: bool,
}

/// What a pumped response may hold admitted outside its identity's budget while its upstream
/// body is open: one stream window, what `h2` held for it unread, uncharged, before pumps
/// existed (with the window it withholds, up to 512 KiB of a stream are outside the budget). So
/// a reader that keeps up goes on when other responses of its identity hold the whole budget
/// (paused `logs -f` may hold it for a day), as it did when read inline. Once the upstream
/// body has ended, the pump keeps the response's in-flight place until every byte left is
/// charged, so bytes outside the budget stay bounded by the places and stream permits the
/// identity holds.
const FREE: usize = STREAM_WINDOW as usize;

/// Budget permits the buffer must hold with `admitted` bytes admitted, the upstream body `open`
/// or not.
fn charge_for(admitted: usize, open: bool) -> usize {
    if open {
        admitted.saturating_sub(FREE)
    } else {
        admitted
    }
}

/// How a pumped response ends, after its last byte.
enum End {
    Done,
    Trailers(HeaderMap),
    Failed(BoxError),
}

/// The most bytes one chunk of a pump's buffer coalesces (a frame larger than this is a chunk
/// of its own).
const CHUNK: usize = 16 * 1024;

impl Buffer {
    fn push(&mut self, data: &[u8]) {
        match self.chunks.back_mut() {
            Some(back) if back.len() + data.len() <= CHUNK => back.extend_from_slice(data),
            _ => self.chunks.push_back(BytesMut::from(data)),
        }
        self.len += data.len();
    }

    fn wake_client(&mut self) {
        if let Some(w) = self.client.take() {
            w.wake();
        }
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        lock(&self.state)
    }

    /// The client side: the next admitted bytes, then the end once everything was taken.
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut b = self.lock();
        if b.admitted > 0 {
            let admitted = b.admitted;
            let data = match b.chunks.front_mut() {
                Some(front) if front.len() > admitted => front.split_to(admitted),
                Some(_) => b.chunks.pop_front().unwrap_or_default(),
                None => BytesMut::new(),
            };
            let n = data.len();
            b.admitted -= n;
            b.len -= n;
            b.taken += n;
            // The budget's permits go first: they are what other responses wait for.
            let charged = n.min(b.charged);
            b.charged -= charged;
            drop(b);
            self.mine.add_permits(n);
            self.budget.add_permits(charged);
            // The pump may be waiting for room, or for budget it no longer needs.
            self.took.notify_one();
            return Poll::Ready(Some(Ok(Frame::data(data.freeze()))));
        }
        if b.finished {
            return Poll::Ready(None);
        }
        if b.len == 0 {
            if let Some(end) = b.end.take() {
                b.finished = true;
                return Poll::Ready(match end {
                    End::Done => None,
                    End::Trailers(t) => Some(Ok(Frame::trailers(t))),
                    End::Failed(err) => Some(Err(err)),
                });
            }
        }
        if !b.client.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            b.client = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Everything was taken and the response ended without trailers or an error: hyper can
    /// end the stream with the last DATA frame.
    fn ended(&self) -> bool {
        let b = self.lock();
        b.finished || (b.len == 0 && matches!(b.end, Some(End::Done)))
    }

    fn client_gone(&self) {
        self.lock().gone = true;
        self.gone.notify_one();
    }

    /// `n` more bytes may go to the client, with `charge` more budget permits held (both
    /// taken by the caller). Every admitted byte but up to [`FREE`] is to be charged — all of
    /// them for an admission of no bytes: the charge before an ended response's place goes.
    /// Budget permits beyond that go back (the client may have taken some meanwhile).
    fn admit(&self, n: usize, charge: usize) {
        let all = n == 0;
        let mut b = self.lock();
        let k = n.min(b.len - b.admitted);
        b.admitted += k;
        b.charged += charge;
        let excess = b.charged.saturating_sub(charge_for(b.admitted, !all));
        b.charged -= excess;
        b.wake_client();
        drop(b);
        // Permits for bytes no longer there (none, unless a reset emptied the buffer).
        self.mine.add_permits(n - k);
        self.budget.add_permits(excess);
    }

    fn end(&self, end: End) {
        let mut b = self.lock();
        b.end = Some(end);
        b.wake_client();
    }

    /// Throw away what the client never read (its permits with it); the client's next read
    /// gets `err`.
    fn reset(&self, err: BoxError) {
        let mut b = self.lock();
        let admitted = mem::take(&mut b.admitted);
        let charged = mem::take(&mut b.charged);
        b.chunks.clear();
        b.len = 0;
        b.end = Some(End::Failed(err));
        b.wake_client();
        drop(b);
        self.mine.add_permits(admitted);
        self.budget.add_permits(charged);
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The identity's budget outlives this response.
        let charged = self.lock().charged;
        if charged > 0 {
            self.budget.add_permits(charged);
        }
    }
}

type Admitting = Pin<Box<dyn Future<Output = Option<(usize, usize)>> + Send>>;

/// Permits for `n` more bytes of this stream's buffer and `charge` more of the identity's
/// budget, taken together or not at all (`None`: a semaphore closed).
fn admission(queue: &Queue, n: usize, charge: usize) -> Admitting {
    let (mine, budget) = (queue.mine.clone(), queue.budget.clone());
    Box::pin(async move {
        let room = match n {
            0 => None,
            n => Some(
                mine.acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX))
                    .await
                    .ok()?,
            ),
        };
        if charge > 0 {
            budget
                .acquire_many_owned(u32::try_from(charge).unwrap_or(u32::MAX))
                .await
                .ok()?
                .forget();
        }
        if let Some(room) = room {
            room.forget();
        }
        Some((n, charge))
    })
}

/// Ends the client's response with an error if the pump stops without an end for it (its
/// task panicked), rather than leaving the client waiting for ever.
struct Ending(Arc<Queue>);

impl Drop for Ending {
    fn drop(&mut self) {
        let b = self.0.lock();
        // A pump that returns normally leaves everything admitted and the end set (or has
        // reset the response itself).
        let cut_off = !b.finished && (b.end.is_none() || b.len > b.admitted);
        drop(b);
        if cut_off {
            self.0
                .reset("the proxy stopped reading this response".into());
        }
    }
}

async fn pump(
    inner: Body,
    mut place: Option<Place>,
    queue: Arc<Queue>,
    stall: Duration,
    report: StallReport,
) {
    let _ending = Ending(queue.clone());
    // `None` once the body's end was seen (and handed to the buffer): the in-flight place is
    // then kept until every byte left is charged to the budget.
    let mut inner = Some(inner);
    // What the body took without giving its window back (`window.rs`).
    let mut withheld = Withheld::default();
    let mut admitting: Option<Admitting> = None;
    // The charge the pending admission asks for.
    let mut asked = 0;
    // The client's progress over stall-timeout rounds.
    let mut progress = Progress::start(tokio::time::Instant::now());
    loop {
        let (unadmitted, admitted, charged, gone) = {
            let b = queue.lock();
            (b.len - b.admitted, b.admitted, b.charged, b.gone)
        };
        if gone {
            return;
        }
        let ended = inner.is_none();
        if ended && unadmitted == 0 && charged >= admitted {
            // Every byte left is charged: the place goes now, not when the client has read.
            // The bytes still buffered hold this identity's budget until the client takes
            // them.
            drop(place.take());
            return watch_taken(&queue, stall, progress, &report).await;
        }
        if admitting.is_none() {
            let (n, charge) = wanted(unadmitted, admitted, charged, ended);
            if n > 0 || charge > 0 {
                admitting = Some(admission(&queue, n, charge));
                asked = charge;
            }
        }
        // An HTTP/2 body withholds its window: the pump takes whatever the upstream sends, up
        // to one stream window beyond what was admitted (all it can send). Any other body
        // (HTTP/1.1, or before its first chunk tells) is taken one frame at a time, as room is
        // found for it. While bytes wait for room the pump only drains: the body's idle timer
        // (`stream.rs`) must not run against an API server whose window may be spent (h2
        // announces a window given back only past a threshold).
        let take = !ended
            && (unadmitted == 0 || (withheld.works() && unadmitted < STREAM_WINDOW as usize));
        withheld.set_draining(unadmitted > 0);
        let round_ends = progress.since + stall;
        tokio::select! {
            frame = next_frame(&mut inner, &mut withheld), if take => {
                let end = match frame {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            if !data.is_empty() {
                                queue.lock().push(&data);
                            }
                            continue;
                        }
                        Err(frame) => match frame.into_trailers() {
                            Ok(trailers) => End::Trailers(trailers),
                            Err(_) => continue,
                        },
                    },
                    Some(Err(err)) => End::Failed(err),
                    None => End::Done,
                };
                // Done with the upstream: its stream goes now (the body and the flow-control
                // handle with it), not when the client has read. What is left needs the
                // budget now (the admission pending asked for less).
                inner = None;
                withheld = Withheld::default();
                admitting = None;
                queue.end(end);
            }
            admitted = wait_for(&mut admitting), if admitting.is_some() => {
                admitting = None;
                let Some((n, charge)) = admitted else { return };
                let waited_for_nothing = progress.waiting == 0 && queue.lock().admitted == 0;
                queue.admit(n, charge);
                withheld.give_back(n);
                // A round in which nothing was waiting for the client says nothing: the first
                // bytes waiting start the next.
                if waited_for_nothing {
                    let b = queue.lock();
                    progress = Progress {
                        since: tokio::time::Instant::now(),
                        taken: b.taken,
                        waiting: b.admitted,
                    };
                }
            }
            // The client took bytes: the pending admission may need less of the budget now
            // (room in the stream's free window); asked again then — only then: a new ask
            // waits at the back of the budget's queue.
            () = queue.took.notified(), if admitting.is_some() => {
                let b = queue.lock();
                let (_, charge) = wanted(b.len - b.admitted, b.admitted, b.charged, ended);
                if charge < asked {
                    admitting = None;
                }
            }
            () = tokio::time::sleep_until(round_ends) => {
                let (taken, waiting) = {
                    let b = queue.lock();
                    (b.taken, b.admitted)
                };
                if progress.stalled(tokio::time::Instant::now(), stall, taken, waiting) {
                    return reset_stalled(&report, stall, &queue);
                }
            }
            () = queue.gone.notified() => return,
        }
    }
}

/// What to admit next, with `unadmitted` bytes waiting for it, `admitted` of them admitted
/// and `charged` to the budget: `n` more bytes, `charge` more of the budget. Bytes are
/// admitted with the free window at any time (a reader that keeps up never waits for the
/// budget, not even for an answer's last bytes); an `ended` answer then takes the rest of its
/// charge on its own, its place kept until it has it, while its client goes on reading.
fn wanted(unadmitted: usize, admitted: usize, charged: usize, ended: bool) -> (usize, usize) {
    let n = unadmitted.min(CHUNK);
    let charge = if n > 0 {
        charge_for(admitted + n, true).saturating_sub(charged)
    } else if ended {
        admitted.saturating_sub(charged)
    } else {
        0
    };
    (n, charge)
}

/// The body's next frame, polled as the pump's (`Withheld::scope`); pending once it ended.
async fn next_frame(
    inner: &mut Option<Body>,
    withheld: &mut Withheld,
) -> Option<Result<Frame<Bytes>, BoxError>> {
    match inner {
        Some(body) => {
            std::future::poll_fn(|cx| withheld.scope(|| Pin::new(&mut *body).poll_frame(cx))).await
        }
        None => std::future::pending().await,
    }
}

async fn wait_for(admitting: &mut Option<Admitting>) -> Option<(usize, usize)> {
    match admitting {
        Some(f) => f.await,
        None => std::future::pending().await,
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

/// After the upstream ended and everything was admitted: wait until the client has taken it
/// all, resetting the response if, for a whole `stall`, bytes were waiting and it took less
/// than [`MIN_TAKEN`] of them (a client that takes none would otherwise hold the identity's
/// budget — and every later response of the identity waiting for it — for the connection's
/// life).
async fn watch_taken(queue: &Queue, stall: Duration, mut progress: Progress, report: &StallReport) {
    let all = u32::try_from(PER_STREAM).unwrap_or(u32::MAX);
    loop {
        let round_ends = progress.since + stall;
        tokio::select! {
            // Everything taken: the pump returns at once, and the client's response ends with
            // it (waiting out the rest of a stall round instead delayed its end — by up to the
            // whole timeout — for any client that drained a handed-off response after its
            // upstream had ended).
            _ = queue.mine.acquire_many(all) => return,
            () = tokio::time::sleep_until(round_ends) => {
                let (taken, waiting) = {
                    let b = queue.lock();
                    (b.taken, b.admitted)
                };
                if progress.stalled(tokio::time::Instant::now(), stall, taken, waiting) {
                    return reset_stalled(report, stall, queue);
                }
            }
            () = queue.gone.notified() => return,
        }
    }
}

/// A stalled response: counted, reported, logged; what its client never read is freed (its
/// identity's budget with it) and the client gets an error as soon as it reads again, and
/// nothing else. The caller then drops the upstream body, which cancels the upstream stream.
fn reset_stalled(report: &StallReport, stall: Duration, queue: &Queue) {
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
    queue.reset("stalled: the client read nothing within upstream.stalled_stream_timeout".into());
}

#[cfg(test)]
mod tests;
