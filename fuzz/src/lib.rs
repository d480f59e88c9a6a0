//! Fuzz oracles shared by the targets in `fuzz_targets/`, kept out of the portcullis library:
//! they check properties through its public API only.

pub mod sanitize_body;
