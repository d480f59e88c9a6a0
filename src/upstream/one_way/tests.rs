use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn noop_cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// Every byte arrives, in order, and the count is right: through pipes narrower than a read
/// (every read partial, the writer pushing back often) and through a wide feed into a narrow
/// drain (reads full, most of each held for the writer).
#[tokio::test]
async fn bytes_arrive_in_order_and_counted_through_pauses() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 1000) as u8).collect();
    for (feed_size, drain_size) in [(3000, 5000), (64 * 1024, 700)] {
        let (mut feed, mut reader) = tokio::io::duplex(feed_size);
        let (mut writer, mut drain) = tokio::io::duplex(drain_size);
        let sent = data.clone();
        let feeder = tokio::spawn(async move {
            let mut at = 0;
            for (i, size) in [1, 1023, 8192, 9000, 17, 70_000].iter().cycle().enumerate() {
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
        assert_eq!(copied, data.len() as u64, "{feed_size} / {drain_size}");
        assert!(drained.await.unwrap() == data, "{feed_size} / {drain_size}");
    }
}

/// A writer for the tests: takes at most `room` more bytes (then answers Pending), can answer
/// `Interrupted` once, and can answer its first flush with Pending.
#[derive(Default)]
struct Gate {
    took: Vec<u8>,
    room: Option<usize>,
    interrupt_once: bool,
    flush_pending_once: bool,
    flushes: usize,
}

impl AsyncWrite for Gate {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if std::mem::take(&mut self.interrupt_once) {
            return Poll::Ready(Err(io::ErrorKind::Interrupted.into()));
        }
        let n = self.room.map_or(buf.len(), |r| r.min(buf.len()));
        if n == 0 {
            return Poll::Pending;
        }
        if let Some(r) = &mut self.room {
            *r -= n;
        }
        self.took.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if std::mem::take(&mut self.flush_pending_once) {
            return Poll::Pending;
        }
        self.flushes += 1;
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// While the reader has nothing, no buffer is held and what was written has been flushed —
/// a flush that waits is tried again on the next poll.
#[test]
fn no_buffer_is_held_while_the_reader_waits() {
    let mut cx = noop_cx();
    let (mut feed, mut reader) = tokio::io::duplex(64 * 1024);
    let mut writer = Gate {
        flush_pending_once: true,
        ..Gate::default()
    };
    let mut state = OneWay::new();
    let mut poll = |state: &mut OneWay, reader: &mut tokio::io::DuplexStream, writer: &mut Gate| {
        state.poll_copy(&mut cx, Pin::new(reader), Pin::new(writer))
    };

    assert!(poll(&mut state, &mut reader, &mut writer).is_pending());
    assert_eq!(state.held(), 0, "a copy that never read holds a buffer");
    assert_eq!(writer.flushes, 0, "nothing written, yet flushed");

    let mut feed_cx = noop_cx();
    let wrote = Pin::new(&mut feed).poll_write(&mut feed_cx, b"ls -l\n");
    assert!(matches!(wrote, Poll::Ready(Ok(6))));
    assert!(poll(&mut state, &mut reader, &mut writer).is_pending());
    assert_eq!(state.held(), 0, "an idle copy holds a buffer");
    assert_eq!(writer.took, b"ls -l\n");
    assert_eq!(writer.flushes, 0, "the flush answered Pending");
    assert!(poll(&mut state, &mut reader, &mut writer).is_pending());
    assert_eq!(writer.flushes, 1, "the waiting flush was not tried again");

    let burst = vec![b'x'; 3 * READ + 5];
    let wrote = Pin::new(&mut feed).poll_write(&mut feed_cx, &burst);
    assert!(matches!(wrote, Poll::Ready(Ok(n)) if n == burst.len()));
    assert!(poll(&mut state, &mut reader, &mut writer).is_pending());
    assert_eq!(state.held(), 0);
    assert_eq!(writer.took.len(), 6 + burst.len());
    assert_eq!(writer.flushes, 2);

    drop(feed);
    match poll(&mut state, &mut reader, &mut writer) {
        Poll::Ready(Ok(n)) => assert_eq!(n, 6 + burst.len() as u64),
        other => panic!("the reader's end did not end the copy: {other:?}"),
    }
    assert_eq!(writer.flushes, 3, "not flushed at the end");
}

/// A writer that pushes back leaves exactly its untaken bytes on the heap, and they go out
/// first, in order, once it takes more.
#[test]
fn a_writer_that_pushes_back_holds_only_what_it_left() {
    let mut cx = noop_cx();
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let mut reader: &[u8] = &data;
    let mut writer = Gate {
        room: Some(1000),
        ..Gate::default()
    };
    let mut state = OneWay::new();
    assert!(state
        .poll_copy(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer))
        .is_pending());
    assert_eq!(state.held(), 4000, "held more than the writer left");
    assert_eq!(writer.took, &data[..1000]);
    writer.room = None;
    match state.poll_copy(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer)) {
        Poll::Ready(Ok(n)) => assert_eq!(n, 5000),
        other => panic!("{other:?}"),
    }
    assert!(writer.took == data);
    assert_eq!(state.held(), 0);
}

/// A reader for the tests: hands out `data`, recording how much room each read offered; can
/// answer `Interrupted` once, and fails with `fail` when done if set.
struct Tape {
    data: Vec<u8>,
    offered: Vec<usize>,
    interrupt_once: bool,
    fail: Option<io::ErrorKind>,
}

impl AsyncRead for Tape {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if std::mem::take(&mut this.interrupt_once) {
            return Poll::Ready(Err(io::ErrorKind::Interrupted.into()));
        }
        this.offered.push(buf.remaining());
        if this.data.is_empty() {
            if let Some(kind) = this.fail {
                return Poll::Ready(Err(kind.into()));
            }
        }
        let n = buf.remaining().min(this.data.len());
        buf.put_slice(&this.data[..n]);
        this.data.drain(..n);
        Poll::Ready(Ok(()))
    }
}

/// Reads are offered `tokio::io::copy`'s 8 KiB each time, so a bulk transfer is cut into the
/// same pieces; `Interrupted` reads and writes are retried.
#[tokio::test]
async fn reads_are_full_size_and_interruptions_retried() {
    let data = vec![7u8; 3 * READ + 100];
    let mut reader = Tape {
        data: data.clone(),
        offered: Vec::new(),
        interrupt_once: true,
        fail: None,
    };
    let mut writer = Gate {
        interrupt_once: true,
        ..Gate::default()
    };
    assert_eq!(
        copy(&mut reader, &mut writer).await.unwrap(),
        data.len() as u64
    );
    assert!(writer.took == data);
    assert_eq!(reader.offered, [READ, READ, READ, READ, READ]);
}

/// Errors end the copy as they came: the reader's, and a writer that takes nothing is
/// `WriteZero` (checked by one poll: without the check it would spin, not fail).
#[tokio::test]
async fn errors_end_the_copy() {
    let mut reader = Tape {
        data: b"abc".to_vec(),
        offered: Vec::new(),
        interrupt_once: false,
        fail: Some(io::ErrorKind::ConnectionReset),
    };
    let mut writer = Gate::default();
    let err = copy(&mut reader, &mut writer).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(writer.took, b"abc");

    let mut cx = noop_cx();
    let mut reader: &[u8] = b"abc";
    let mut state = OneWay::new();
    match state.poll_copy(&mut cx, Pin::new(&mut reader), Pin::new(&mut Zero)) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::WriteZero),
        other => panic!("{other:?}"),
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
