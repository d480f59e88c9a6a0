//! `audit.session_recording:` — where recorded exec / attach sessions go and how large one
//! may grow. Which sessions are recorded is the authorization config's to say
//! (`record_sessions: true` on a tenant or a grant).
//!
//! ```yaml
//! audit:
//!   session_recording:
//!     directory: /var/lib/portcullis/sessions   # required; an existing directory
//!     max_session_bytes: 67108864               # per session file (default 64 MiB)
//! ```
//!
//! Rejects, with the key path: a `directory` that is not an existing directory, a
//! `max_session_bytes` below 4096 (too small for the header and the truncation marker).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::problems::Problems;

/// `audit.session_recording`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRecordingConfig {
    pub directory: PathBuf,
    #[serde(default)]
    pub max_session_bytes: Option<u64>,
}

/// Validated session-recording settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    pub directory: PathBuf,
    pub max_session_bytes: u64,
}

/// Default cap of one session file.
pub const DEFAULT_MAX_SESSION_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest cap accepted.
const MIN_SESSION_BYTES: u64 = 4096;

/// Validate `cfg` (at key path `path`; the directory relative to `base`).
pub fn build(
    p: &mut Problems,
    cfg: &SessionRecordingConfig,
    base: &Path,
    path: &str,
) -> SessionSettings {
    let directory = base.join(&cfg.directory);
    if !directory.is_dir() {
        p.err(
            format!("{path}.directory"),
            format!("{} is not a directory", directory.display()),
            "create it (mode 0700, owned by the proxy's user) or name an existing one",
        );
    }
    let max_session_bytes = cfg.max_session_bytes.unwrap_or(DEFAULT_MAX_SESSION_BYTES);
    if max_session_bytes < MIN_SESSION_BYTES {
        p.err(
            format!("{path}.max_session_bytes"),
            format!("{max_session_bytes} bytes cannot hold a session's header and its truncation marker"),
            "at least 4096 (the default is 67108864, 64 MiB)",
        );
    }
    SessionSettings {
        directory,
        max_session_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str, base: &Path) -> Vec<String> {
        let cfg: SessionRecordingConfig = serde_saphyr::from_str(yaml).unwrap();
        let mut p = Problems::new();
        build(&mut p, &cfg, base, "audit.session_recording");
        p.into_vec().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn a_missing_directory_and_a_tiny_cap_name_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sessions")).unwrap();
        assert!(problems("directory: sessions\n", dir.path()).is_empty());
        assert_eq!(
            problems("directory: nowhere\nmax_session_bytes: 100\n", dir.path()),
            [
                "audit.session_recording.directory",
                "audit.session_recording.max_session_bytes"
            ]
        );
    }
}
