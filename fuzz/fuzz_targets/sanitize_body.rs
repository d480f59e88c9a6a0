//! Fuzz the body sanitizer: strict parsing of every accepted media type, then judging under a
//! restricted Pod Security policy. The property lives in `portcullis_fuzz::sanitize_body::check`
//! (no panic; accepted output re-parses to the same value; judging is deterministic), where a
//! mutation test also runs it under plain `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis_fuzz::sanitize_body::check(data);
});
