//! The client-facing listener's series: connections open, refused by a cap, and closed by one
//! of the listener's timeouts. Label values are closed sets chosen here, never client input.

use std::sync::atomic::AtomicI64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::limits::Refused;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Why the listener closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The TLS handshake did not finish within `listen.handshake_timeout`.
    HandshakeTimeout,
    /// No HTTP/2 preface or first request within `listen.preface_timeout`.
    PrefaceTimeout,
    /// An HTTP/1.1 request head did not arrive within `listen.header_read_timeout`.
    HeaderTimeout,
    /// No open request for `listen.idle_timeout`.
    IdleTimeout,
    /// An HTTP/2 request failed authentication: the connection is closed after it, as
    /// kube-apiserver does (`UnauthenticatedHTTP2DOSMitigation`).
    Unauthenticated,
}

impl Closed {
    pub fn label(self) -> &'static str {
        match self {
            Closed::HandshakeTimeout => "handshake_timeout",
            Closed::PrefaceTimeout => "preface_timeout",
            Closed::HeaderTimeout => "header_read_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Unauthenticated => "unauthenticated",
        }
    }
}

/// Cheap to clone: every clone updates the same series.
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    pub open: Gauge<i64, AtomicI64>,
    refused: Family<ReasonLabels, Counter>,
    closed: Family<ReasonLabels, Counter>,
}

impl ListenerMetrics {
    /// Export the series in `registry` (only the client-facing listener's are).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "listener_connections_open",
            "Client connections open on the proxy listener, including those still in the TLS handshake",
            self.open.clone(),
        );
        registry.register(
            "listener_connections_refused",
            "Client connections closed at accept because a connection cap was reached (reason: per_listener, per_source)",
            self.refused.clone(),
        );
        registry.register(
            "listener_connections_closed",
            "Client connections closed by a listener timeout (reason: handshake_timeout, preface_timeout, header_read_timeout, idle_timeout)",
            self.closed.clone(),
        );
    }

    pub fn refused(&self, why: Refused) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: why.label(),
            })
            .inc();
    }

    pub fn closed(&self, why: Closed) {
        self.closed
            .get_or_create(&ReasonLabels {
                reason: why.label(),
            })
            .inc();
    }

    #[cfg(test)]
    pub fn refused_count(&self, why: Refused) -> u64 {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: why.label(),
            })
            .get()
    }
}
