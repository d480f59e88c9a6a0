//! Settings a reload cannot apply to the running process, and the refusal that names them.
//!
//! A reload applies all of a new configuration or none of it: when any of these differ from
//! the running configuration the whole reload is refused — the running one keeps serving —
//! with one problem per key path and the hint "restart to apply". Why each is fixed:
//!
//! - `listen.address`, `admin.address`: the sockets are bound once (a rebind would drop every
//!   open connection, which is what a restart does anyway).
//! - `listen.*` timeouts and connection caps, `shutdown.grace`: the accept loop and every open
//!   connection's watchdog hold them; `shutdown.delay`: the shutdown's timer, set at start.
//! - `audit` added or removed, `audit.sinks` (file path, rotation, signing key, webhook): a
//!   sink owns its file and hash chain; two writers on one chain would break it.
//! - `rate_limits` added or removed: its metric families are registered once, at start.
//! - `log.format`: the log subscriber is installed once.

use crate::{audit::config::AuditSettings, config::Config, problems::Problem};

const HINT: &str = "restart to apply";

/// One problem per setting that differs between the running `old` and the new `new` and
/// cannot change live (empty: the new configuration can be swapped in).
pub fn refusals(old: &Config, new: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut differ = |path: &str, changed: bool, what: String| {
        if changed {
            out.push(Problem::new(
                path,
                format!("{what} cannot change while running"),
                HINT,
            ));
        }
    };
    differ(
        "listen.address",
        old.listen_addr != new.listen_addr,
        format!("{} → {}", old.listen_addr, new.listen_addr),
    );
    differ(
        "admin.address",
        old.admin_addr != new.admin_addr,
        format!("{} → {}", old.admin_addr, new.admin_addr),
    );
    let (a, b) = (&old.serve, &new.serve);
    for (path, changed) in [
        (
            "listen.handshake_timeout",
            a.handshake_timeout != b.handshake_timeout,
        ),
        (
            "listen.preface_timeout",
            a.preface_timeout != b.preface_timeout,
        ),
        (
            "listen.header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        ("listen.idle_timeout", a.idle_timeout != b.idle_timeout),
        (
            "listen.max_concurrent_streams",
            a.max_concurrent_streams != b.max_concurrent_streams,
        ),
        (
            "listen.max_header_bytes",
            a.max_header_bytes != b.max_header_bytes,
        ),
        (
            "listen.max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "listen.max_connections_per_source",
            a.max_connections_per_source != b.max_connections_per_source,
        ),
        ("shutdown.grace", a.grace != b.grace),
        ("shutdown.delay", a.shutdown_delay != b.shutdown_delay),
    ] {
        differ(path, changed, "the listener's limit".into());
    }
    differ(
        "audit",
        old.audit.is_some() != new.audit.is_some(),
        "adding or removing audit".into(),
    );
    differ(
        "audit.sinks",
        old.audit.is_some()
            && new.audit.is_some()
            && !same_sinks(old.audit.as_ref(), new.audit.as_ref()),
        "the audit sinks (file path, rotation, signing key, webhook)".into(),
    );
    differ(
        "rate_limits",
        old.rate_limits.is_some() != new.rate_limits.is_some(),
        "adding or removing rate limits".into(),
    );
    differ(
        "log.format",
        old.log_format != new.log_format,
        "the log format".into(),
    );
    out
}

/// Whether two audit sections start the same sinks (every sink setting, the signing key by
/// its key id).
pub(crate) fn same_sinks(a: Option<&AuditSettings>, b: Option<&AuditSettings>) -> bool {
    let specs = |s: Option<&AuditSettings>| s.map(|s| format!("{:?}", s.sink_specs()));
    specs(a) == specs(b)
}
