//! Body sanitization (issue 5): everything between "this caller may write this" and forwarding
//! the write.
//!
//! - `parse`: strict parsing of request bodies before any policy looks at them — duplicate keys
//!   at any depth, depth / string / number caps, invalid UTF-8, YAML anchors / aliases / merge
//!   keys, JSON-patch operation limits — into the canonical JSON that will be forwarded;
//! - `pss`: Pod Security Standards checks (baseline, restricted, version-pinnable) over every
//!   pod spec of every pod-bearing kind, one violation per offending field;
//! - `merge`: strategic merge / apply semantics, to compute the object a patch produces;
//! - `fields`: field paths for deny / strip rules;
//! - `config` + `policy`: the `sanitize:` section and its lookups (caps, inspection, Pod
//!   Security modes per namespace and tenant, field rules);
//! - `judge`: the pure verdict on one parsed write;
//! - `stage`: the pipeline stage (size, encoding, media type, parse, fetch current, judge,
//!   re-serialize), with the Status table in its module doc;
//! - `token_secret`: a Secret of type `kubernetes.io/service-account-token` is authorized as
//!   the TokenRequest it amounts to (403 otherwise).
pub mod config;
pub mod fields;
pub mod judge;
pub mod layer;
pub mod merge;
pub mod parse;
pub mod policy;
pub mod pss;
pub mod stage;
pub mod token_secret;

pub use config::SanitizeConfig;
pub use layer::SanitizeLayer;
pub use policy::{SanitizePolicy, Sanitizer};
