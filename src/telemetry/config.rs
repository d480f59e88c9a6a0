//! The `tracing:` and `log:` sections: their schema and their validation.
//!
//! Accepts an OTLP/HTTP endpoint (`http://` or `https://` with the collector's CA), protocol
//! `http/protobuf`, a sampling ratio in 0..=1, a service name, whether a client's
//! `traceparent` is continued, and an export timeout; `log.format` `text` or `json`. Rejects
//! anything else with the key path and the fix (a `check-config` problem, exit 1).

use std::{path::Path, time::Duration};

use http::Uri;
use serde::Deserialize;

use crate::problems::{resolve, Problem, Problems, Wording};

/// `tracing:` — OpenTelemetry traces (absent: no spans are made and nothing is exported).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended
    /// when the URL has no path).
    pub endpoint: String,
    /// Only `http/protobuf` (the default).
    #[serde(default)]
    pub protocol: Option<String>,
    /// PEM CAs for an `https://` endpoint (required with https).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// `service.name` of the exported spans (default `portcullis`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Share of new traces that are recorded, 0.0..=1.0 (default 1.0). Parent-based: a
    /// continued trace keeps its parent's decision.
    #[serde(default)]
    pub sampling_ratio: Option<f64>,
    /// Continue a client's `traceparent` / `tracestate` (default false: every request starts a
    /// new trace and the client's headers are not forwarded).
    #[serde(default)]
    pub trust_incoming: bool,
    /// Time allowed for one export to the collector (default `10s`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `log:` — the proxy's own log lines (stderr).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json` (one object a line).
    #[serde(default)]
    pub format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The validated `tracing:` section.
#[derive(Debug, Clone)]
pub struct TracingSettings {
    /// The full export URL (`…/v1/traces`).
    pub endpoint: Uri,
    /// PEM bytes of the collector's CAs (https only).
    pub ca_pem: Option<Vec<u8>>,
    pub service_name: String,
    pub sampling_ratio: f64,
    pub trust_incoming: bool,
    pub timeout: Duration,
}

/// Validate `tracing:` (`path` is its key path).
pub fn build(t: &TracingConfig, base: &Path, path: &str) -> Result<TracingSettings, Vec<Problem>> {
    let mut c = Problems::new();
    if let Some(p) = &t.protocol {
        if p != "http/protobuf" {
            c.err(
                format!("{path}.protocol"),
                format!("{p:?} is not supported"),
                "use http/protobuf (OTLP over HTTP; the collector's port 4318)",
            );
        }
    }
    let endpoint = endpoint(&mut c, &t.endpoint, &format!("{path}.endpoint"));
    let https = endpoint
        .as_ref()
        .is_some_and(|u| u.scheme_str() == Some("https"));
    let ca_pem = match (&t.ca_file, https) {
        (Some(f), true) => {
            let key = format!("{path}.ca_file");
            c.certs(&key, f, base);
            c.read(&key, &resolve(base, f), "give a readable PEM file")
        }
        (None, true) => {
            c.err(
                format!("{path}.ca_file"),
                "an https endpoint needs the CA that signs the collector's certificate",
                "give a PEM file of CAs, or use an http:// endpoint on a trusted network",
            );
            None
        }
        (Some(_), false) => {
            c.err(
                format!("{path}.ca_file"),
                "is only used with an https:// endpoint",
                "remove it, or make the endpoint https://",
            );
            None
        }
        (None, false) => None,
    };
    let sampling_ratio = t.sampling_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sampling_ratio) {
        c.err(
            format!("{path}.sampling_ratio"),
            format!("{sampling_ratio} is not between 0 and 1"),
            "write e.g. 0.01 for 1 % of new traces, 1.0 for all",
        );
    }
    let service_name = t
        .service_name
        .clone()
        .unwrap_or_else(|| "portcullis".into());
    if service_name.trim().is_empty() {
        c.err(
            format!("{path}.service_name"),
            "is empty",
            "name the service, e.g. portcullis",
        );
    }
    let timeout = c.duration(
        &format!("{path}.timeout"),
        t.timeout.as_deref(),
        Duration::from_secs(10),
        Wording::General,
    );
    if timeout.is_zero() {
        // Every export would fail at once, and nothing else would say so.
        c.err(
            format!("{path}.timeout"),
            "must be more than 0",
            "the longest wait for the collector, e.g. 10s",
        );
    }
    let settings = endpoint.map(|endpoint| TracingSettings {
        endpoint,
        ca_pem,
        service_name,
        sampling_ratio,
        trust_incoming: t.trust_incoming,
        timeout,
    });
    c.finish(settings)
}

/// An `http(s)://host[:port][/path]` URL; `/v1/traces` appended when the path is empty.
fn endpoint(c: &mut Problems, value: &str, key: &str) -> Option<Uri> {
    let ok = value.parse::<Uri>().ok().filter(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.authority().is_some_and(|a| !a.as_str().contains('@'))
            && u.query().is_none()
    });
    let Some(uri) = ok else {
        c.err(
            key,
            format!(
                "{} is not an http(s) URL with a host",
                crate::problems::quoted(value)
            ),
            "write e.g. http://127.0.0.1:4318 (OTLP/HTTP), no user info or query",
        );
        return None;
    };
    if uri.path() != "/" && !uri.path().is_empty() {
        return Some(uri);
    }
    let full = format!("{}/v1/traces", value.trim_end_matches('/'));
    full.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> TracingConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_and_path_appended() {
        let s = build(
            &parse("endpoint: http://127.0.0.1:4318"),
            Path::new("."),
            "tracing",
        )
        .unwrap();
        assert_eq!(s.endpoint.to_string(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(s.sampling_ratio, 1.0);
        assert_eq!(s.service_name, "portcullis");
        assert!(!s.trust_incoming);
        assert_eq!(s.timeout, Duration::from_secs(10));
        let s = build(
            &parse("endpoint: http://c:4318/custom/traces"),
            Path::new("."),
            "tracing",
        )
        .unwrap();
        assert_eq!(s.endpoint.path(), "/custom/traces");
    }

    #[test]
    fn every_bad_key_is_named() {
        let errs = build(
            &parse(
                "endpoint: https://c:4318\nprotocol: grpc\nsampling_ratio: 1.5\nservice_name: ' '\ntimeout: soon",
            ),
            Path::new("."),
            "tracing",
        )
        .unwrap_err();
        let paths: Vec<_> = errs.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "tracing.protocol",
                "tracing.ca_file",
                "tracing.sampling_ratio",
                "tracing.service_name",
                "tracing.timeout"
            ]
        );
        let errs = build(&parse("endpoint: ftp://x"), Path::new("."), "tracing").unwrap_err();
        assert_eq!(errs[0].path, "tracing.endpoint");
        let errs = build(
            &parse("endpoint: http://c:4318\ntimeout: 0s"),
            Path::new("."),
            "tracing",
        )
        .unwrap_err();
        assert_eq!(errs[0].path, "tracing.timeout");
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn log_format_parses() {
        let l: LogConfig = serde_saphyr::from_str("format: json").unwrap();
        assert_eq!(l.format, Some(LogFormat::Json));
        assert!(serde_saphyr::from_str::<LogConfig>("format: xml").is_err());
    }
}
