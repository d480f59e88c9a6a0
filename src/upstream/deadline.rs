//! How long a request may wait for the upstream's response head, as kube-apiserver decides it
//! (`request_deadline.go`): long-running requests (watch, `logs -f`, exec, attach,
//! port-forward, proxy) have no deadline; others get the client's `?timeout=` (a Go duration:
//! `30s`, `1m30s`, `1.5s`) capped by `upstream.max_request_timeout`, or
//! `upstream.request_timeout` when it is absent, zero, negative or unparsable (the API server
//! itself answers 400 to an unparsable one; the query is forwarded unchanged).

use std::time::Duration;

use http::Uri;

/// The deadline for a request, or None for a long-running one.
pub fn deadline(
    uri: &Uri,
    long_running: bool,
    default: Duration,
    max: Duration,
) -> Option<Duration> {
    if long_running {
        return None;
    }
    // Read as the API server reads it (a pair with a raw `;` dropped, the first value) — parsed
    // only when the query can hold one: this runs for every request.
    let asked = uri
        .query()
        .is_some_and(|q| q.contains("timeout") || q.contains('%'))
        .then(|| {
            crate::k8s::request::Query::of(uri)
                .get("timeout")
                .and_then(go_duration)
        })
        .flatten();
    Some(match asked {
        Some(d) if !d.is_zero() => d.min(max),
        _ => default,
    })
}

/// Parse a positive Go `time.Duration` string (`300ms`, `1h2m3.5s`); None otherwise.
pub fn go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * secs;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(60);
    const MAX: Duration = Duration::from_secs(120);

    fn at(uri: &str) -> Option<Duration> {
        deadline(&uri.parse().unwrap(), false, D, MAX)
    }

    #[test]
    fn the_clients_timeout_is_honoured_up_to_the_cap() {
        assert_eq!(
            at("/api/v1/pods?timeout=32s"),
            Some(Duration::from_secs(32))
        );
        assert_eq!(
            at("/api/v1/pods?limit=1&timeout=1m30s"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            at("/api/v1/pods?timeout=1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(at("/api/v1/pods?timeout=1h"), Some(MAX));
        assert_eq!(at("/api/v1/pods"), Some(D));
        for bad in ["0s", "-1s", "soon", "1x", "", "5"] {
            assert_eq!(at(&format!("/api/v1/pods?timeout={bad}")), Some(D), "{bad}");
        }
        let watch = "/api/v1/pods?watch=1&timeout=5s".parse().unwrap();
        assert_eq!(deadline(&watch, true, D, MAX), None);
    }
}
