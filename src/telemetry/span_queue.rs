//! The span queue between requests and the exporter, bounded and counted.
//!
//! The SDK's batch processor holds ended spans in a queue its own thread drains into export
//! calls. When the collector is slow or unreachable that queue fills, and the SDK then drops
//! spans silently (its one warning is an internal log, off here: see `otlp_client.rs`). So
//! [`bounded`] puts a count in front of it: spans handed to the processor and not yet handed
//! to an export. At the queue's size ([`queue_size`]: the SDK's 2048, or
//! `OTEL_BSP_MAX_QUEUE_SIZE`, its other `OTEL_BSP_*` variables applying as they did) such spans,
//! a newly ended span is dropped here instead — counted in `portcullis_trace_spans_dropped_total`
//! and logged (the first at once, then at most one line a minute; drops not yet logged at the
//! next export a minute on) — and the processor's own queue, of the same size, never overflows.
//! A request never waits for any of this; its answer does not depend on tracing.

use std::{
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, LazyLock,
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor},
    Resource,
};
use prometheus_client::metrics::counter::Counter;

use super::throttled::Throttled;

/// Spans held at most between their end and an export, unless `OTEL_BSP_MAX_QUEUE_SIZE` says.
const QUEUE: usize = 2048;

/// The queue's size: `OTEL_BSP_MAX_QUEUE_SIZE` when set to a number (the SDK reads it the same
/// way), else [`QUEUE`].
pub fn queue_size() -> usize {
    std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(QUEUE)
}

/// Spans dropped because the queue was full, since the process started (every tracer a reload
/// makes counts here); registered in [`crate::telemetry::Metrics`].
pub static DROPPED: LazyLock<Counter> = LazyLock::new(Default::default);

static DROP_LOG: Throttled = Throttled::new(Duration::from_secs(60));

/// A batch processor exporting with `exporter`, at most `queue` spans held, the ones dropped
/// counted in `dropped` (see the module doc).
pub fn bounded<E: SpanExporter + 'static>(exporter: E, queue: usize, dropped: Counter) -> Bounded {
    let held = Arc::new(AtomicUsize::new(0));
    // The SDK's defaults and `OTEL_BSP_*` variables, the queue's size set to the bound (it
    // makes a larger export batch size the queue's).
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(queue)
        .build();
    let inner = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        held: held.clone(),
    })
    .with_batch_config(config)
    .build();
    Bounded {
        inner,
        held,
        queue,
        dropped,
    }
}

/// The processor: counts what it passes on, drops past the bound.
pub struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans passed to `inner` and not yet handed to an export: at least what its queue holds.
    held: Arc<AtomicUsize>,
    queue: usize,
    dropped: Counter,
}

impl fmt::Debug for Bounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bounded")
            .field("held", &self.held.load(Ordering::Relaxed))
            .field("queue", &self.queue)
            .finish()
    }
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let queue = self.queue;
        let taken = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < queue).then_some(n + 1)
            });
        if taken.is_ok() {
            self.inner.on_end(span);
            return;
        }
        self.dropped.inc();
        if let Some(dropped) = DROP_LOG.note() {
            // Not the request's: this runs where any span ends, inside some request's span.
            tracing::warn!(
                parent: None,
                dropped,
                queue,
                "spans dropped: the OTLP exporter's queue is full (the collector is slow or unreachable)"
            );
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter: what it is handed has left the processor's queue.
struct Counted<E> {
    inner: E,
    held: Arc<AtomicUsize>,
}

impl<E> fmt::Debug for Counted<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Counted")
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        // Saturating: only what `Bounded` counted reaches here, but a miscount must not wrap.
        let n = batch.len();
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(h.saturating_sub(n))
            });
        // Drops after the last line, once a line is due again: the end of an episode is not
        // left unlogged until the next one.
        if let Some(dropped) = DROP_LOG.unwritten_when_due() {
            tracing::warn!(
                dropped,
                "spans dropped since the last warning: the OTLP exporter's queue was full"
            );
        }
        self.inner.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// An exporter that holds every export until opened: a collector that does not answer.
    #[derive(Debug, Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        exported: Arc<AtomicUsize>,
    }

    impl Gate {
        fn open(&self) {
            let (open, changed) = &*self.open;
            *open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
            changed.notify_all();
        }
    }

    impl SpanExporter for Gate {
        fn export(
            &self,
            batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            // The SDK's export thread runs this; blocking it is what a silent collector does.
            let (open, changed) = &*self.open;
            let mut is_open = open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while !*is_open {
                is_open = changed
                    .wait(is_open)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            self.exported.fetch_add(batch.len(), Ordering::SeqCst);
            async { Ok(()) }
        }
    }

    /// With the exporter stuck, spans past the bound are dropped here and counted; every span
    /// is either exported once the exporter moves again or counted as dropped — none vanishes
    /// in the SDK's queue uncounted.
    #[test]
    fn a_stuck_exporter_drops_what_the_queue_cannot_hold_and_counts_it() {
        let gate = Gate::default();
        let counted = Counter::<u64>::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(bounded(gate.clone(), 8, counted.clone()))
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..100 {
            tracer.start("request").end();
        }
        let dropped = usize::try_from(counted.get()).unwrap_or(usize::MAX);
        // At most 8 held and one batch of 8 taken by the stuck export.
        assert!(dropped >= 100 - 16, "dropped {dropped}");
        gate.open();
        assert!(provider.force_flush().is_ok());
        assert_eq!(gate.exported.load(Ordering::SeqCst) + dropped, 100);
        let _ = provider.shutdown();
    }
}
