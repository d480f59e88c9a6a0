//! The relay of a turn's answers: each waiter gets what the thread sent for its event.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::relayed;
use crate::audit::{
    event::Event,
    sink::{thread::Batch, AckResult, Prepared},
};

fn event() -> Arc<Prepared> {
    Arc::new(Prepared::new(Event::default(), false))
}

/// A turn of `n` events, each with a waiter: the waiters' ends and the batch.
fn turn(n: usize) -> (Vec<oneshot::Receiver<AckResult>>, Batch) {
    (0..n)
        .map(|_| {
            let (ack, rx) = oneshot::channel();
            (rx, (event(), Some(ack)))
        })
        .unzip()
}

#[tokio::test]
async fn each_waiter_gets_its_own_answer_and_a_dropped_answer_fails_it() {
    let (waiters, mut batch) = turn(4);
    batch.push((event(), None));
    let relays = relayed(batch);
    assert_eq!(relays.len(), 5);
    // The thread's answers: ok, an error, nothing (dropped), ok; and none for the last event.
    let mut acks = relays.into_iter().map(|(_, ack)| ack);
    let _ = acks.next().flatten().unwrap().send(Ok(()));
    let _ = acks.next().flatten().unwrap().send(Err("disk full".into()));
    drop(acks.next().flatten().unwrap());
    let _ = acks.next().flatten().unwrap().send(Ok(()));
    assert!(acks.next().flatten().is_none());
    let got: Vec<_> = futures_util::future::join_all(waiters).await;
    assert_eq!(got[0], Ok(Ok(())));
    assert_eq!(got[1], Ok(Err("disk full".to_string())));
    assert!(
        got[2].is_err(),
        "a dropped answer must reach its waiter as a failure"
    );
    assert_eq!(got[3], Ok(Ok(())));
}

#[tokio::test]
async fn a_turn_the_thread_drops_whole_fails_every_waiter() {
    let (waiters, batch) = turn(3);
    drop(relayed(batch));
    for w in waiters {
        assert!(w.await.is_err());
    }
}

#[tokio::test]
async fn a_turn_with_one_waiter_is_not_relayed() {
    let (ack, rx) = oneshot::channel();
    let batch = relayed(vec![(event(), Some(ack)), (event(), None)]);
    let mut acks = batch.into_iter().map(|(_, ack)| ack);
    let _ = acks.next().flatten().unwrap().send(Ok(()));
    // Answered without a relay task: ready at once.
    assert_eq!(rx.await, Ok(Ok(())));
}
