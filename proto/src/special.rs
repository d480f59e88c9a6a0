//! The apimachinery types whose JSON form is not their protobuf message's fields: `Time`
//! (RFC 3339, seconds), `MicroTime` (RFC 3339, microseconds), `Duration` (Go's `1h2m3s`),
//! `IntOrString`, `Quantity`, `RawExtension` / `FieldsV1` / apiextensions `JSON` (raw JSON
//! bytes). The message paths are matched by name in `encode` and `json`; this module holds the
//! text conversions. A time or duration that does not parse is an error (400 / no protobuf).

pub const TIME: &str = "apimachinery.pkg.apis.meta.v1.Time";
pub const MICRO_TIME: &str = "apimachinery.pkg.apis.meta.v1.MicroTime";
pub const DURATION: &str = "apimachinery.pkg.apis.meta.v1.Duration";
pub const INT_OR_STRING: &str = "apimachinery.pkg.util.intstr.IntOrString";
pub const QUANTITY: &str = "apimachinery.pkg.api.resource.Quantity";
pub const RAW_EXTENSION: &str = "apimachinery.pkg.runtime.RawExtension";
pub const FIELDS_V1: &str = "apimachinery.pkg.apis.meta.v1.FieldsV1";
pub const EXT_JSON: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON";

/// apiextensions' JSONSchemaProps unions: Go marshals them by hand (a schema, an array or a
/// bool in one JSON value); not converted, so a CRD object is answered in JSON.
pub fn unsupported(message: &str) -> bool {
    message.starts_with("apiextensions_apiserver.") && message.contains(".JSONSchemaPropsOr")
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339 in UTC, as Go writes `metav1.Time` (no fraction) or `MicroTime` (6 digits).
pub fn format_time(seconds: i64, nanos: i32, micro: bool) -> String {
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = if micro {
        format!(".{:06}", nanos.max(0) / 1000)
    } else {
        String::new()
    };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z")
}

/// Parse RFC 3339 (`2024-01-02T03:04:05Z`, optional fraction, `Z` or `±hh:mm`) into Unix
/// seconds and nanoseconds.
pub fn parse_time(t: &str) -> Option<(i64, i32)> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = t.get(start..i)?;
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    let offset = match t.get(i..)? {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if &o[..1] == "-" {
                -m * 60
            } else {
                m * 60
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset;
    Some((secs, i32::try_from(nanos).ok()?))
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5s`, `300ms`, `0s`.
pub fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_owned();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let frac = |v: u64, digits: usize| -> String {
        let s = format!("{:0digits$}", v);
        let t = s.trim_end_matches('0');
        if t.is_empty() {
            String::new()
        } else {
            format!(".{t}")
        }
    };
    if u < 1_000_000_000 {
        let (unit, div, digits) = if u < 1_000 {
            ("ns", 1, 0)
        } else if u < 1_000_000 {
            ("µs", 1_000, 3)
        } else {
            ("ms", 1_000_000, 6)
        };
        let f = if digits == 0 {
            String::new()
        } else {
            frac(u % div, digits)
        };
        return format!("{sign}{}{f}{unit}", u / div);
    }
    let secs = u / 1_000_000_000;
    let s = format!("{}{}s", secs % 60, frac(u % 1_000_000_000, 9));
    let (m, h) = (secs / 60 % 60, secs / 3600);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}")
    } else if m > 0 {
        format!("{sign}{m}m{s}")
    } else {
        format!("{sign}{s}")
    }
}

/// Go's `time.ParseDuration` for what `format_duration` writes and what people type
/// (`90s`, `1h30m`, `1.5h`, `-2m`).
pub fn parse_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest.get(..n)?.parse().ok()?;
        rest = rest.get(n..)?;
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match rest.get(..u)? {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = rest.get(u..)?;
        total += value * unit;
    }
    if !total.is_finite() || total.abs() > i64::MAX as f64 {
        return None;
    }
    let v = total.round() as i64;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(format_time(0, 0, false), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_700_000_000, 0, false), "2023-11-14T22:13:20Z");
        assert_eq!(
            format_time(1_700_000_000, 123_456_789, true),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(
            parse_time("0001-01-01T00:00:00Z"),
            Some((-62_135_596_800, 0))
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20",
            "x023-11-14T22:13:20Z",
            "2023-11-14T22:13:20.Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        for (n, s) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (300_000_000, "300ms"),
            (3_723_000_000_000, "1h2m3s"),
            (3_600_000_000_000, "1h0m0s"),
            (-90_000_000_000, "-1m30s"),
            (1_500, "1.5µs"),
        ] {
            assert_eq!(format_duration(n), s);
            assert_eq!(parse_duration(s), Some(n), "{s}");
        }
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        for bad in ["", "h", "1x", "--1s", "1e400h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
