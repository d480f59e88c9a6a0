//! Wall-clock helpers: RFC 3339 timestamps (UTC, second precision) and kubectl-style ages.
//!
//! The calendar is `portcullis-proto`'s (`format_time` / `parse_time`, as Go writes and reads
//! `metav1.Time`): fractions are dropped, offsets applied; anything else parses as `None`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Current time as RFC 3339.
pub fn now_rfc3339() -> String {
    format_rfc3339(now_secs())
}

/// Format epoch seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(secs: i64) -> String {
    crate::proto::format_time(secs, 0, false)
}

/// Parse an RFC 3339 time into epoch seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    crate::proto::parse_time(s).map(|(secs, _)| secs)
}

/// kubectl's short human duration: `45s`, `3m12s`, `5h`, `2d`.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 600 {
        format!("{}m{}s", s / 60, s % 60)
    } else if s < 3 * 3600 {
        format!("{}m", s / 60)
    } else if s < 48 * 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// Age of an object from its `metadata.creationTimestamp`.
pub fn age_of(obj: &serde_json::Value) -> String {
    obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_rfc3339)
        .map(|t| human_age(now_secs() - t))
        .unwrap_or_else(|| "<unknown>".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(200), "3m20s");
    }
}
