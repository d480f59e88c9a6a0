//! The sanitize fuzz oracle's mutation test under the main crate's `cargo test`: the oracle lives
//! in the fuzz crate (`fuzz/src/sanitize_body.rs`, public API only) and is included here by path,
//! so CI runs it on stable without cargo-fuzz or a nightly toolchain.
// Test code: a failed unwrap / expect / panic is a failed test (or a fuzz finding).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../fuzz/src/sanitize_body.rs"]
mod sanitize_body;
