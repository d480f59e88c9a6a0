//! Authorization: grants from config, narrowed by the token's scope. Deny by default.

pub mod scope;

pub use scope::{Scope, ScopeRule};
