//! Body sanitization: strict parsing of request bodies before any policy looks at them.
pub mod parse;
