use std::{
    sync::Arc,
    task::{Context, Poll, Wake, Waker},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use super::*;

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Every byte arrives, in order, and the count is right, through small first reads, large
/// reads under way, and both sides making the copy wait (narrow in-memory pipes).
#[tokio::test]
async fn bytes_arrive_in_order_and_counted_through_pauses() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 1000) as u8).collect();
    let (mut feed, mut reader) = tokio::io::duplex(3000);
    let (mut writer, mut drain) = tokio::io::duplex(5000);
    let sent = data.clone();
    let feeder = tokio::spawn(async move {
        // Uneven pieces with pauses, so reads see partial, exactly full and empty buffers.
        let mut at = 0;
        for (i, size) in [1, 1023, 1024, 1025, 9000, 8192, 17, 70_000]
            .iter()
            .cycle()
            .enumerate()
        {
            if at == sent.len() {
                break;
            }
            let end = (at + size).min(sent.len());
            feed.write_all(&sent[at..end]).await.unwrap();
            at = end;
            if i % 3 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Dropping the feed ends the reader.
    });
    let drained = tokio::spawn(async move {
        let mut got = Vec::new();
        drain.read_to_end(&mut got).await.unwrap();
        got
    });
    let copied = copy(&mut reader, &mut writer).await.unwrap();
    drop(writer);
    feeder.await.unwrap();
    assert_eq!(copied, data.len() as u64);
    assert_eq!(drained.await.unwrap(), data);
}

/// While the reader has nothing, no buffer is held and what was read has been written and
/// flushed; a read that fills the small buffer makes the next read large.
#[test]
fn no_buffer_is_held_while_the_reader_waits() {
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let (mut feed, mut reader) = tokio::io::duplex(64 * 1024);
    // A buffered writer: only a flush moves the bytes into the Vec.
    let mut writer = BufWriter::new(Vec::new());
    let mut state = OneWay::new();
    let mut poll = |state: &mut OneWay,
                    reader: &mut tokio::io::DuplexStream,
                    writer: &mut BufWriter<Vec<u8>>| {
        state.poll_copy(&mut cx, Pin::new(reader), Pin::new(writer))
    };

    assert!(poll(&mut state, &mut reader, &mut writer).is_pending());
    assert_eq!(state.held(), 0, "a copy that never read holds a buffer");

    let mut cx2 = Context::from_waker(&waker);
    let wrote = Pin::new(&mut feed).poll_write(&mut cx2, b"ls -l\n");
    assert!(matches!(wrote, Poll::Ready(Ok(6))));
    assert!(poll(&mut state, &mut reader, &mut writer).is_pending());
    assert_eq!(state.held(), 0, "an idle copy holds its buffer");
    assert_eq!(
        writer.get_ref().as_slice(),
        b"ls -l\n",
        "not flushed when the reader paused"
    );
    assert_eq!(state.next, SMALL);

    let burst = vec![b'x'; 3 * LARGE];
    let wrote = Pin::new(&mut feed).poll_write(&mut cx2, &burst);
    assert!(matches!(wrote, Poll::Ready(Ok(n)) if n == burst.len()));
    assert!(poll(&mut state, &mut reader, &mut writer).is_pending());
    assert_eq!(state.held(), 0);
    assert_eq!(writer.get_ref().len(), 6 + burst.len());
    assert_eq!(
        state.next, SMALL,
        "the next pause did not go back to the small buffer"
    );

    drop(feed);
    match poll(&mut state, &mut reader, &mut writer) {
        Poll::Ready(Ok(n)) => assert_eq!(n, 6 + burst.len() as u64),
        other => panic!("the reader's end did not end the copy: {other:?}"),
    }
}

/// The buffer sizes a burst reads with: the small one first, the large one once it filled.
#[test]
fn a_full_small_read_makes_the_next_reads_large() {
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let data = vec![b'y'; SMALL + 10];
    let mut reader: &[u8] = &data;
    // A writer that takes nothing yet: the copy stops after its first read.
    let mut writer = Stuck;
    let mut state = OneWay::new();
    assert!(state
        .poll_copy(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer))
        .is_pending());
    assert_eq!(state.held(), SMALL, "bytes in flight keep their buffer");
    assert_eq!(state.next, LARGE);
}

/// A writer that accepts no bytes ends the copy with `WriteZero`, as `tokio::io::copy`.
#[tokio::test]
async fn a_writer_that_takes_nothing_is_write_zero() {
    let mut reader: &[u8] = b"abc";
    let err = copy(&mut reader, &mut Zero).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WriteZero);
}

struct Stuck;
impl AsyncWrite for Stuck {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Pending
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct Zero;
impl AsyncWrite for Zero {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(0))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
