//! Configuration: one YAML file → a validated, typed [`Config`] of plain data.
//!
//! Here: the YAML → schema parse (`schema.rs`, see the annotated `config/portcullis.yaml`) and
//! `Config` with the one `build` that calls each concern's validator (`validate.rs`); every
//! problem is collected by the one collector in `crate::problems`. Each section is validated in
//! its concern's folder: `server/config.rs` (listen, admin, shutdown), `authn/config.rs` (+
//! `authn/jwt/config.rs`), `authz/config.rs`, `ratelimit/config.rs`, `sanitize/config.rs`,
//! `audit/config.rs`, `upstream/config.rs`. The live objects are built from a `Config` by
//! `stack::Runtime::build` (`app.rs`).
//!
//! Rejects, with every problem's key path and a hint: unknown keys, wrong types, bad durations,
//! addresses, URLs, unreadable or unparsable certificate / key / token files, and contradictory
//! upstream settings.

pub mod schema;
pub mod validate;

use std::path::Path;

// The problem collector is its own module (`crate::problems`): the concerns report through it
// without depending on `config`.
pub use crate::problems::{Problem, Problems, Wording};
pub use validate::Config;

// Settings types that moved to their concerns, at their old paths.
pub use crate::authn::config::X509Identity;
pub use crate::upstream::config::{UpstreamConfig, UpstreamToken};

/// Load and validate a config file. Relative paths inside it are relative to its folder.
pub fn load(path: &Path) -> Result<Config, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            unreadable: Some(path.to_path_buf()),
            ..Problem::new(
                "(file)",
                format!("cannot read {}: {e}", path.display()),
                "pass an existing file with --config",
            )
        }]
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&text, &base, &|k| std::env::var(k).ok())
}

/// Parse and validate config text.
pub fn load_str(
    text: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let file = parse(text).map_err(|p| vec![p])?;
    validate::build(&file, base, env)
}

/// Parse YAML into the schema. YAML is first read into a generic value (saphyr refuses
/// duplicate keys and bounds alias expansion) and then deserialized with the key path tracked,
/// so an unknown key or a wrong type is reported at its path.
pub fn parse(text: &str) -> Result<schema::File, Problem> {
    // No source snippet: the config may hold a credential inline (a Redis URL's password).
    let value: serde_json::Value =
        serde_saphyr::from_str_with_options(text, crate::kubeconfig::no_snippet()).map_err(
            |e| {
                Problem::new(
                    "(yaml)",
                    e.to_string(),
                    "fix the YAML syntax at the position shown",
                )
            },
        )?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        Problem::new(
            if path == "." {
                "(top level)".into()
            } else {
                path
            },
            crate::problems::without_quoted_strings(&e.inner().to_string()),
            "see config/portcullis.yaml for every key and its type",
        )
    })
}
