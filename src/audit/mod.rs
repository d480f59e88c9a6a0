//! Audit: `audit.k8s.io/v1` events, the apiserver's policy semantics, sinks with delivery modes,
//! a tamper-evident hash chain with signed checkpoints, and the `verify` / `query` readers.
//!
//! Library only: the request pipeline builds one [`Event`] per request (DESIGN.md decision 8),
//! asks the [`Policy`] what to record, and hands the event to an [`Auditor`]; nothing here
//! looks at HTTP. Accepts whatever events the caller builds; every file documents what it
//! rejects.
//!
//! | file | what |
//! |---|---|
//! | `event.rs` | `Event`, `EventList`, `Level`, `Stage`, `MicroTime` |
//! | `policy.rs` | `Policy` (apiserver schema, first match), `Attributes`, `RuleEvaluation` |
//! | `chain.rs` | canonical bytes, links, checkpoints, Ed25519 signing keys |
//! | `canonical.rs` | the same canonical bytes from our own compact line (emit path) |
//! | `layer.rs`, `record.rs` | the pipeline's audit layers and the per-request record |
//! | `complete.rs` | `ResponseComplete` after the last byte of an ordinary answer (the held last frame) |
//! | `sink/` | `Auditor` fan-out, delivery modes, file / webhook / stdout sinks |
//! | `verify.rs` | `portcullis audit verify`: chain and signature checking |
//! | `query.rs` | `portcullis audit query`: streaming filters over audit files |
//! | `metrics.rs` | Prometheus export of the sink counters |
//! | `session/` | exec / attach session recording (asciicast v2 files) |

pub mod canonical;
pub mod chain;
pub mod complete;
pub mod config;
pub mod event;
pub mod metrics;
pub mod policy;
pub mod query;
pub mod session;
pub mod sink;
pub mod verify;

pub use chain::{SigningKey, VerifyingKey};
pub use event::{
    Event, EventList, Level, MicroTime, ObjectNames, ObjectReference, ResponseStatus, Stage,
    UserInfo,
};
pub use policy::{Attributes, Policy, PolicyError, RuleEvaluation};
pub use sink::{
    AuditError, Auditor, DeliveryMode, FileSinkConfig, Overflow, SinkCounters, SinkKind, SinkSpec,
    WebhookConfig,
};

pub mod layer;
pub mod record;

pub use layer::{AuditLayer, ReceivedLayer};
pub use record::{Audit, AuditRecord, Recorder};
