//! Body sanitization (issue 5), as libraries not yet wired into the pipeline:
//!
//! - `parse`: strict parsing of request bodies before any policy looks at them — duplicate keys
//!   at any depth, depth / string / number caps, invalid UTF-8, YAML anchors / aliases / merge
//!   keys, JSON-patch operation limits — into the canonical JSON that will be forwarded;
//! - `pss`: Pod Security Standards checks (baseline, restricted, version-pinnable) over every
//!   pod spec of every pod-bearing kind, one violation per offending field.
pub mod parse;
pub mod pss;
