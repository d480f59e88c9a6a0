//! Request-body sanitization: Pod Security Standards checks over decoded JSON objects.
pub mod pss;
