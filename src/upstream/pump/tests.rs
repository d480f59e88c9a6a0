//! The pump: inline reading, hand-offs, bounds and stall resets, over in-process bodies.

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

/// `n` permits of `budget`, held by "other responses" until dropped.
async fn hold(budget: Arc<Semaphore>, n: usize) -> tokio::sync::OwnedSemaphorePermit {
    budget.acquire_many_owned(n as u32).await.unwrap()
}

/// A report, and the counter its stalls are counted in.
/// The whole of `body` within `secs`, failing with `why` (what it waited on) when it takes
/// longer.
async fn collect_within(body: Body, secs: u64, why: &str) -> Bytes {
    tokio::time::timeout(Duration::from_secs(secs), body.collect())
        .await
        .expect(why)
        .unwrap()
        .to_bytes()
}

fn counted() -> (Counter, impl FnOnce() -> StallReport + Send + 'static) {
    let r = report();
    (r.counter.clone(), move || r)
}

/// `count` chunks of `size` zero bytes written into `tx` by a task: `true` when all went,
/// `false` when the body was dropped first (the upstream cut off).
fn write_chunks(
    tx: tokio::sync::mpsc::Sender<Bytes>,
    count: usize,
    size: usize,
) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        for _ in 0..count {
            if tx.send(Bytes::from(vec![0u8; size])).await.is_err() {
                return false;
            }
        }
        true
    })
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
    let body = decouple(
        inner,
        &Budgets::default(),
        Duration::from_secs(5),
        false,
        None,
        r,
    );
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
    let mut body = decouple(
        inner,
        &Budgets::default(),
        Duration::from_secs(5),
        false,
        None,
        r,
    );
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
    let mut body = decouple(inner, &budgets, Duration::from_secs(30), false, None, r);
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
    let mut body = decouple(inner, &budgets, Duration::from_secs(5), false, None, r);
    // A quiet watch: the client asks, nothing comes for several sweeps.
    let next = tokio::spawn(async move { body.frame().await.map(|f| f.map(|f| f.into_data())) });
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
    let mut body = decouple(
        inner,
        &Budgets::default(),
        Duration::from_secs(5),
        false,
        None,
        r,
    );
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
    let (counter, r) = counted();
    let budgets = Budgets::default();
    let budget = budgets.of("u");
    let mut body = decouple(inner, &budgets, Duration::from_millis(600), false, None, r);
    // More than the per-stream buffer, and nobody reads.
    let writer = write_chunks(tx, 40, 64 * 1024);
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
        let (counter, r) = counted();
        let budgets = Budgets::default();
        let budget = budgets.of("u");
        let mut body = decouple(inner, &budgets, Duration::from_millis(600), false, None, r);
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
    let (counter, r) = counted();
    let budgets = Budgets::default();
    let mut body = decouple(inner, &budgets, Duration::from_millis(600), false, None, r);
    let writer = write_chunks(tx, 200, 16 * 1024);
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
/// (Its bytes fit in the free window, so since 2026-12-06 it does not wait for the budget at
/// all; `a_late_reader_catches_up_without_budget` has a reader behind by more.)
#[tokio::test]
async fn waiting_for_the_identity_s_budget_is_not_a_stall() {
    let (tx, inner) = crate::body::channel(1);
    let (counter, r) = counted();
    let budgets = Budgets::default();
    let held = hold(budgets.of("u"), PER_IDENTITY).await;
    let mut body = decouple(inner, &budgets, Duration::from_millis(400), false, None, r);
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
/// they would otherwise wait for as long as a log may stay paused (a day). (Its bytes fit in
/// the free window; `paused_logs_cannot_take_the_budget_beyond_the_free_window` goes past it.)
#[tokio::test]
async fn paused_logs_cannot_take_the_budget_of_other_responses() {
    let budgets = Budgets::default();
    let paused = budgets.inner.budget_of("u", true);
    assert!(!Arc::ptr_eq(&paused, &budgets.of("u")));
    let held = hold(paused, PAUSABLE_PER_IDENTITY).await;
    let (tx, inner) = crate::body::channel(1);
    let body = decouple(
        inner,
        &budgets,
        Duration::from_secs(30),
        false,
        None,
        report,
    );
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    // Unread for two sweeps: handed off to the pump, which takes from its own budget.
    tokio::time::sleep(SWEEP * 2 + Duration::from_millis(100)).await;
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    let got = collect_within(body, 5, "the response waited for the paused logs' budget").await;
    assert_eq!(&got[..], b"firstsecond");
    drop(held);
}

/// A response whose client reads nothing, stuck on the identity's budget (held by others)
/// with fewer bytes buffered than its own bound, is still reset after the stall timeout:
/// otherwise budget holders that never read would freeze the identity's responses.
#[tokio::test]
async fn a_response_holding_part_of_the_budget_and_never_read_is_reset() {
    let (tx, inner) = crate::body::channel(1);
    let (counter, r) = counted();
    let budgets = Budgets::default();
    let others = hold(budgets.of("u"), PER_IDENTITY - 100 * 1024).await;
    let _body = decouple(inner, &budgets, Duration::from_millis(600), false, None, r);
    let writer = write_chunks(tx, 40, 64 * 1024);
    tokio::time::sleep(SWEEP * 2 + Duration::from_millis(2000)).await;
    assert_eq!(counter.get(), 1, "reset although it never read");
    assert!(!writer.await.unwrap());
    drop(others);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_body() {
    let (tx, inner) = crate::body::channel(1);
    let (_, r) = flagged();
    let body = decouple(
        inner,
        &Budgets::default(),
        Duration::from_secs(5),
        false,
        None,
        r,
    );
    drop(body);
    assert!(tx.send(Bytes::from_static(b"x")).await.is_err());
}

#[tokio::test]
async fn the_sweeper_stops_when_nothing_is_in_flight() {
    let budgets = Budgets::default();
    let (tx, inner) = crate::body::channel(1);
    let (_, r) = flagged();
    let body = decouple(inner, &budgets, Duration::from_secs(5), false, None, r);
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

/// A pod writing a few bytes at a time to a followed log whose reader stopped, over real
/// HTTP/2: `h2` charges each small DATA frame it holds unread to a budget of the connection
/// (half its window) and closes the whole connection past it — every other response on it
/// with it. The pump takes the frames as they come, coalesced, and withholds the window
/// instead: the connection and another response on it stay, the API server is held to the
/// stream's bound plus one window, and everything arrives in order once the client reads.
#[tokio::test]
async fn tiny_frames_on_a_stalled_stream_leave_the_connection_open() {
    stalled_over_h2(8, true).await;
}

/// A response read inline, then handed off when its client stops (a watch): the window taken
/// inline was given back as it went, the pump withholds the rest, and nothing is lost or
/// stuck across the hand-off. (Frames of 200 bytes: h2 holds the window's worth while the
/// hand-off waits for a sweep, within its budget.)
#[tokio::test]
async fn a_stream_handed_off_over_h2_keeps_its_window_and_its_bytes() {
    stalled_over_h2(200, false).await;
}

/// An HTTP/2 server sending DATA frames of `frame_len` bytes in bursts on `/log`, a reader that stops
/// (at once when pumped `from_start`, else after one frame), another response on the same
/// connection meanwhile, then the reader taking everything.
async fn stalled_over_h2(frame_len: usize, from_start: bool) {
    use crate::upstream::pool::STREAM_WINDOW;
    use std::sync::atomic::AtomicUsize;

    let total = (PER_STREAM + 2 * STREAM_WINDOW as usize) / frame_len * frame_len;
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    // Small frames, in bursts (`send_paced`), on `/log`; a short answer to anything else.
    let conn = h2_upstream(move |req, mut respond| {
        let counted = counted.clone();
        async move {
            let mut tx = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            if req.uri().path() == "/log" {
                send_paced(&mut tx, total, frame_len, &counted).await;
            } else {
                tx.send_data(Bytes::from_static(b"ok"), true).unwrap();
            }
        }
    })
    .await;
    let Ok(resp) = conn.send(h2_get("/log"), ()).await else {
        panic!("no response");
    };
    let budgets = Budgets::default();
    let mut body = decouple(
        crate::body::boxed(resp.into_body()),
        &budgets,
        Duration::from_secs(60),
        from_start,
        None,
        report,
    );
    let mut got = 0usize;
    if !from_start {
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        got = first.len();
    }
    // Nobody reads: wait until the API server can send no more.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sent.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    assert!(
        last >= PER_STREAM && last <= PER_STREAM + STREAM_WINDOW as usize + frame_len,
        "the API server sent {last} bytes to a reader that took none"
    );
    assert!(PER_IDENTITY - budgets.of("u").available_permits() <= PER_STREAM);
    // The connection is open: another response on it.
    let Ok(other) = conn.send(h2_get("/other"), ()).await else {
        panic!("the connection closed under a stalled stream of tiny frames");
    };
    let other = crate::body::boxed(other.into_body())
        .collect()
        .await
        .unwrap();
    assert_eq!(&other.to_bytes()[..], b"ok");
    // The reader comes back: everything, in order, and the withheld window is given back as
    // the buffer empties (or the API server would wait for it forever).
    let read = async {
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(
                data.iter().enumerate().all(|(k, b)| *b == byte(got + k)),
                "out of order at {got}"
            );
            got += data.len();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the stream stopped: its window was never given back");
    assert_eq!(got, total);
}

/// A pumped response whose client keeps up goes on when other responses of its identity hold
/// the whole budget (paused `logs -f`, for up to a day): the first stream window of it needs
/// no budget, as when h2 held it for an inline read.
#[tokio::test]
async fn a_reader_that_keeps_up_needs_no_budget() {
    let budgets = Budgets::default();
    let held = hold(budgets.inner.budget_of("u", true), PAUSABLE_PER_IDENTITY).await;
    let (tx, inner) = crate::body::channel(1);
    let pausable = || StallReport {
        pausable: true,
        ..report()
    };
    let body = decouple(
        inner,
        &budgets,
        Duration::from_secs(30),
        true,
        None,
        pausable,
    );
    tokio::spawn(async move {
        for i in 0..100u8 {
            tx.send(Bytes::from(vec![i; 50_000])).await.unwrap();
        }
    });
    let got = collect_within(body, 20, "the reader waited for the budget others hold").await;
    assert_eq!(got.len(), 100 * 50_000);
    assert!((0..100u8).all(|i| got[50_000 * usize::from(i)] == i));
    drop(held);
}

/// Bytes outside the budget are held only while the response holds its in-flight place: a
/// response that ends before its client reads keeps the place until what is left is charged
/// to the budget, or taken — else an identity whose budget is full could park a window of
/// bytes per response it starts, each place given back at once for the next.
#[tokio::test]
async fn an_ended_response_keeps_its_place_until_its_bytes_are_charged() {
    let budgets = Budgets::default();
    let budget = budgets.of("u");
    let held = hold(budget.clone(), PER_IDENTITY).await;
    let (released, place) = a_place();
    let (tx, inner) = crate::body::channel(4);
    let mut body = decouple(
        inner,
        &budgets,
        Duration::from_secs(30),
        true,
        Some(place),
        report,
    );
    tx.send(Bytes::from(vec![1u8; 50_000])).await.unwrap();
    tx.send(Bytes::from(vec![2u8; 50_000])).await.unwrap();
    drop(tx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !released.load(Ordering::SeqCst),
        "the place went with its bytes outside the budget"
    );
    // The budget frees: the bytes are charged, and the place goes.
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), async {
        while !released.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the place was kept once its bytes were charged");
    assert_eq!(PER_IDENTITY - budget.available_permits(), 100_000);
    let mut got = 0;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().into_data().unwrap().len();
    }
    assert_eq!(got, 100_000);
    assert_eq!(budget.available_permits(), PER_IDENTITY);
}

/// Read inline, the place goes as the last frame is taken, before the client asks for the
/// end (as `body::hold_until_read`); a body already at its end gives it back at once.
#[tokio::test]
async fn read_inline_the_place_goes_with_the_last_frame() {
    let (released, place) = a_place();
    let kept = decouple(
        crate::body::empty(),
        &Budgets::default(),
        Duration::from_secs(5),
        false,
        Some(place),
        report,
    );
    assert!(released.load(Ordering::SeqCst), "kept by an empty answer");
    drop(kept);
    let (released, place) = a_place();
    let frames = [
        Frame::data(Bytes::from_static(b"first")),
        Frame::data(Bytes::from_static(b"last")),
    ];
    let mut body = decouple(
        crate::body::frames(frames.into_iter().collect()),
        &Budgets::default(),
        Duration::from_secs(5),
        false,
        Some(place),
        report,
    );
    body.frame().await.unwrap().unwrap();
    assert!(!released.load(Ordering::SeqCst), "went before the end");
    body.frame().await.unwrap().unwrap();
    assert!(
        released.load(Ordering::SeqCst),
        "kept after the last frame was taken"
    );
}

/// A pumped answer whose identity's budget others hold, over HTTP/2, read by a client that
/// keeps up: its last bytes come after the upstream has ended, and need no budget either (the
/// rest of the charge is taken apart, for the place).
#[tokio::test]
async fn the_end_of_an_answer_needs_no_budget_for_a_reader_that_keeps_up() {
    const TOTAL: usize = 300 * 1024;
    let conn = h2_upstream(|_, mut respond| async move {
        let mut tx = respond
            .send_response(http::Response::new(()), false)
            .unwrap();
        send_paced(&mut tx, TOTAL, 16 * 1024, &Default::default()).await;
    })
    .await;
    let Ok(resp) = conn.send(h2_get("/log"), ()).await else {
        panic!("no response");
    };
    let budgets = Budgets::default();
    let held = hold(budgets.inner.budget_of("u", true), PAUSABLE_PER_IDENTITY).await;
    let pausable = || StallReport {
        pausable: true,
        ..report()
    };
    let body = decouple(
        crate::body::boxed(resp.into_body()),
        &budgets,
        Duration::from_secs(30),
        true,
        None,
        pausable,
    );
    // The upstream sends it all and ends (its window allows the free part and as much again)
    // before the client comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = collect_within(
        body,
        10,
        "the answer's last bytes waited for the budget others hold",
    )
    .await;
    assert_eq!(got.len(), TOTAL);
    drop(held);
}

/// A reader that comes late, with more than the free window buffered for it and the rest
/// waiting for a budget other responses of its identity hold, catches up and gets everything:
/// as it takes, the pump asks again for what it still needs, which the free window then covers.
#[tokio::test]
async fn a_late_reader_catches_up_without_budget() {
    let (tx, inner) = crate::body::channel(1);
    let (counter, r) = counted();
    let budgets = Budgets::default();
    let held = hold(budgets.of("u"), PER_IDENTITY).await;
    let body = decouple(inner, &budgets, Duration::from_millis(400), true, None, r);
    const TOTAL: usize = FREE + 100 * 1024;
    tokio::spawn(async move {
        for _ in 0..TOTAL / 1024 {
            if tx.send(Bytes::from(vec![3u8; 1024])).await.is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = collect_within(body, 10, "the reader waited for the budget others hold").await;
    assert_eq!(got.len(), TOTAL);
    assert_eq!(counter.get(), 0);
    drop(held);
}

/// Over the free window too, an identity's pausable responses holding all of their budget do
/// not hold up its other responses, which have a budget of their own.
#[tokio::test]
async fn paused_logs_cannot_take_the_budget_beyond_the_free_window() {
    let budgets = Budgets::default();
    let held = hold(budgets.inner.budget_of("u", true), PAUSABLE_PER_IDENTITY).await;
    let others = budgets.of("u");
    let free_before = others.available_permits();
    let (tx, inner) = crate::body::channel(1);
    let mut body = decouple(inner, &budgets, Duration::from_secs(30), true, None, report);
    const TOTAL: usize = FREE + 100 * 1024;
    tokio::spawn(async move {
        for _ in 0..TOTAL / 1024 {
            tx.send(Bytes::from(vec![4u8; 1024])).await.unwrap();
        }
    });
    // The client comes late: the pump has buffered past the free window, on the identity's
    // other budget.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // (All of it once the answer has ended: the place's charge.)
    let charged = free_before - others.available_permits();
    assert!(
        charged >= 100 * 1024,
        "past the free window, charged to the budget of the identity's other responses: {charged}"
    );
    let mut got = 0;
    let read = async {
        while let Some(frame) = body.frame().await {
            got += frame.unwrap().into_data().unwrap().len();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the response waited for the paused logs' budget");
    assert_eq!(got, TOTAL);
    drop(held);
}

/// A pump that dies (its body panicked) ends the client's response with an error instead of
/// leaving it waiting for ever.
#[tokio::test]
async fn a_pump_that_dies_ends_the_response_with_an_error() {
    struct Panics;
    impl http_body::Body for Panics {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            panic!("a body that panics (expected by this test)")
        }
    }
    let mut body = decouple(
        Panics.boxed_unsync(),
        &Budgets::default(),
        Duration::from_secs(30),
        true,
        None,
        report,
    );
    let got = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the client waits for a pump that died");
    assert!(got.unwrap().is_err());
}

/// A place whose flag turns true when it is given back.
fn a_place() -> (Arc<AtomicBool>, Place) {
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let released = Arc::new(AtomicBool::new(false));
    (released.clone(), Box::new(Flag(released)))
}

/// An HTTP/2 server answering each request with `answer`, and the proxy's client connection
/// to it with the proxy's windows: each stream's, and the connection's for four streams (h2's
/// budget for small frames is then half a megabyte, some 2 100 frames of 8 bytes).
async fn h2_upstream<F, Fut>(answer: F) -> crate::upstream::h2conn::H2Conn
where
    F: Fn(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use crate::upstream::{h2conn, pool::STREAM_WINDOW};
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let mut conn = h2::server::handshake(server).await.unwrap();
        while let Some(Ok((req, respond))) = conn.accept().await {
            tokio::spawn(answer(req, respond));
        }
    });
    h2conn::H2Conn::handshake(
        client,
        STREAM_WINDOW,
        4 * STREAM_WINDOW,
        "test".into(),
        h2conn::KEEP_ALIVE,
    )
    .await
    .unwrap()
}

fn h2_get(path: &str) -> http::Request<crate::body::Body> {
    http::Request::get(format!("https://upstream.test{path}"))
        .body(crate::body::empty())
        .unwrap()
}

/// The byte at offset `i` of what `send_paced` sends.
fn byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// `total` bytes ([`byte`]) on `tx` in DATA frames of `frame_len` (the last may be shorter),
/// each as the stream's window allows, the count so far in `sent`. As a pod writes: a burst
/// of 128 frames now and then, not the whole window in one go (h2 takes in what the socket
/// holds before any reader runs, which no reader could keep up with; the API server does not
/// write so fast). Stops quietly when the stream goes.
async fn send_paced(
    tx: &mut h2::SendStream<Bytes>,
    total: usize,
    frame_len: usize,
    sent: &std::sync::atomic::AtomicUsize,
) {
    let mut at = 0;
    let mut frames = 0usize;
    while at < total {
        let len = frame_len.min(total - at);
        tx.reserve_capacity(len);
        match std::future::poll_fn(|cx| tx.poll_capacity(cx)).await {
            Some(Ok(n)) if n >= len => {}
            Some(Ok(_)) => continue,
            _ => return,
        }
        let data: Vec<u8> = (at..at + len).map(byte).collect();
        if tx.send_data(Bytes::from(data), at + len == total).is_err() {
            return;
        }
        at += len;
        sent.store(at, Ordering::SeqCst);
        frames += 1;
        if frames.is_multiple_of(128) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
