//! The one problem collector every section's validation uses, and the parsers of the values
//! sections share: durations, socket addresses, `https://` URLs, readable files, PEM
//! certificates, CRLs and private keys. Each parser reports a bad value as a [`Problem`] at its
//! key path and returns `None` (or the default), so one run reports every problem in the file.
//!
//! Durations are parsed here only. Sections worded their duration errors differently before
//! they shared this parser; [`Wording`] keeps each section's exact message and hint, since
//! operators and tests read them.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use http::Uri;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::server::tls;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `upstream.credentials.token_file`.
    pub path: String,
    pub message: String,
    pub hint: String,
    /// The file, when the problem is that a file could not be read (`check-config` groups
    /// those by missing folder).
    pub unreadable: Option<PathBuf>,
}

impl Problem {
    /// A problem at `path` (not an unreadable file: see [`Problems::read`]).
    pub fn new(
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
            hint: hint.into(),
            unreadable: None,
        }
    }
}

/// Problems found while building a runtime from a validated configuration (a file that
/// changed between validation and build, keys that do not load), each at its key path: a
/// reload reports them as validation problems are reported.
#[derive(Debug)]
pub struct BuildProblems(pub Vec<Problem>);

impl BuildProblems {
    /// `err` at `path`, its whole chain as the message.
    pub fn at(path: &str, err: anyhow::Error) -> BuildProblems {
        BuildProblems(vec![Problem::new(
            path,
            format!("{err:#}"),
            "fix this setting; the running configuration stays in force",
        )])
    }
}

impl std::fmt::Display for BuildProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&all.join("; "))
    }
}

impl std::error::Error for BuildProblems {}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if !self.hint.is_empty() {
            write!(f, " (hint: {})", self.hint)?;
        }
        Ok(())
    }
}

/// How a section words a bad duration (message and hint), kept as each section had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wording {
    /// `"soon" is not a duration: …` / `write e.g. 500ms, 10s, 5m or 1h` (listen, admin,
    /// upstream, shutdown, token cache).
    General,
    /// `"soon" is not a duration: …` / `write e.g. 30s, 5m or 1h` (`authentication.jwt`).
    Jwt,
    /// `"soon": …` / `write a duration such as 500ms, 10s, 5m` (`audit`).
    Audit,
    /// `not a duration: …` / `e.g. 50ms, 10s, 10m` (`rate_limits`).
    RateLimit,
}

impl Wording {
    fn message(self, value: &str, err: &humantime::DurationError) -> String {
        match self {
            Wording::General | Wording::Jwt => format!("{value:?} is not a duration: {err}"),
            Wording::Audit => format!("{value:?}: {err}"),
            Wording::RateLimit => format!("not a duration: {err}"),
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Wording::General => "write e.g. 500ms, 10s, 5m or 1h",
            Wording::Jwt => "write e.g. 30s, 5m or 1h",
            Wording::Audit => "write a duration such as 500ms, 10s, 5m",
            Wording::RateLimit => "e.g. 50ms, 10s, 10m",
        }
    }
}

/// What an `https://` URL is for, which decides what else it may hold and the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlKind {
    /// `upstream.url`: a host, no query (a path prefix is kept).
    ApiServer,
    /// A JWT issuer (`iss`): no user info, query or fragment.
    Issuer,
    /// A JWT discovery or JWKS URL: no user info or fragment.
    Endpoint,
}

/// The longest duration any setting accepts (see [`Problems::parse_duration`]).
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(10 * 366 * 86_400);

/// Collects problems while a config is validated.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn new() -> Problems {
        Problems::default()
    }

    /// Report one problem.
    pub fn err(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.0.push(Problem::new(path, message, hint));
    }

    /// Whether `file` (already resolved) exists and can be opened; reports it as unreadable
    /// otherwise. For files a concern's own loader reads later.
    pub fn readable(&mut self, path: &str, file: &Path, hint: &str) -> bool {
        match std::fs::File::open(file) {
            Ok(_) => true,
            Err(e) => {
                self.unreadable(path, file, e, hint);
                false
            }
        }
    }

    /// Report a file that could not be read.
    fn unreadable(&mut self, path: &str, file: &Path, e: std::io::Error, hint: &str) {
        self.0.push(Problem {
            path: path.into(),
            message: format!("cannot read {}: {e}", file.display()),
            hint: hint.into(),
            unreadable: Some(file.to_path_buf()),
        });
    }

    /// Take over the problems of a section validated on its own.
    pub fn append(&mut self, mut problems: Vec<Problem>) {
        self.0.append(&mut problems);
    }

    /// Keep a section's result: its value, or its problems added to these.
    pub fn take<T>(&mut self, result: Result<T, Vec<Problem>>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(problems) => {
                self.append(problems);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems so far (to tell whether a step added any).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The problems, in the order reported.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }

    /// `value` if there were no problems, else every problem.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<Problem>> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            _ => Err(self.0),
        }
    }

    /// A duration (`500ms`, `10s`, `5m`, `1h`); `None` after reporting a bad one. At most
    /// [`MAX_CONFIG_DURATION`]: every duration ends up added to a clock reading somewhere, and
    /// an absurd one (`1000000000y`) would overflow it on every request instead of failing here.
    pub fn parse_duration(
        &mut self,
        path: &str,
        value: &str,
        wording: Wording,
    ) -> Option<Duration> {
        match humantime::parse_duration(value) {
            Ok(d) if d > MAX_CONFIG_DURATION => {
                self.err(
                    path,
                    format!("{value:?} is longer than 10 years"),
                    "no setting needs more; write e.g. 1h or 30d",
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, wording.message(value, &e), wording.hint());
                None
            }
        }
    }

    /// An optional duration: `default` when absent or bad (a bad one is reported).
    pub fn duration(
        &mut self,
        path: &str,
        value: Option<&str>,
        default: Duration,
        wording: Wording,
    ) -> Duration {
        value
            .and_then(|v| self.parse_duration(path, v, wording))
            .unwrap_or(default)
    }

    /// `host:port` with an IP.
    pub fn addr(&mut self, path: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("{value:?} is not an address"),
                    "write host:port with an IP, e.g. 0.0.0.0:6443 or 127.0.0.1:9090",
                );
                None
            }
        }
    }

    /// An `https://` URL with a host; `None` after reporting one that is not (plain `http` is
    /// always refused).
    pub fn https_url(&mut self, path: &str, value: &str, kind: UrlKind) -> Option<Uri> {
        let parsed = value.parse::<Uri>();
        if kind == UrlKind::ApiServer {
            return match parsed {
                // User info is never used (credentials are their own keys) and the endpoint's
                // name — a metric label, `/readyz`, logs — would publish it.
                Ok(uri) if uri.authority().is_some_and(|a| a.as_str().contains('@')) => {
                    self.err(
                        path,
                        "has user info (user:password@), which is never used and would be shown in metrics and logs",
                        "write e.g. https://10.0.0.1:6443 and give credentials under upstream.credentials",
                    );
                    None
                }
                Ok(uri)
                    if uri.scheme_str() == Some("https")
                        && uri.authority().is_some()
                        && uri.query().is_none() =>
                {
                    Some(uri)
                }
                Ok(_) => {
                    self.err(
                        path,
                        format!("{} is not an https:// URL with a host", quoted(value)),
                        "write e.g. https://10.0.0.1:6443; plain http is refused",
                    );
                    None
                }
                Err(e) => {
                    self.err(
                        path,
                        format!("{} is not a URL: {e}", quoted(value)),
                        "write e.g. https://10.0.0.1:6443",
                    );
                    None
                }
            };
        }
        let ok = parsed.as_ref().is_ok_and(|u| {
            u.scheme_str() == Some("https")
                && u.authority().is_some_and(|a| !a.as_str().contains('@'))
                && (kind != UrlKind::Issuer || u.query().is_none())
        });
        if ok && !value.contains('#') {
            return parsed.ok();
        }
        let hint = match kind {
            UrlKind::Issuer => "https://host[:port][/path], no user info, query or fragment",
            _ => "https://host[:port]/path",
        };
        self.err(path, format!("{} is not an https URL", quoted(value)), hint);
        None
    }

    /// The bytes of a readable file (already resolved against the config's folder).
    pub fn read(&mut self, path: &str, file: &Path, hint: &str) -> Option<Vec<u8>> {
        match std::fs::read(file) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.unreadable(path, file, e, hint);
                None
            }
        }
    }

    /// The text of a readable file (already resolved against the config's folder).
    pub fn read_text(&mut self, path: &str, file: &Path, hint: &str) -> Option<String> {
        match std::fs::read_to_string(file) {
            Ok(text) => Some(text),
            Err(e) => {
                self.unreadable(path, file, e, hint);
                None
            }
        }
    }

    /// A PEM file of certificates.
    pub fn certs(
        &mut self,
        path: &str,
        file: &Path,
        base: &Path,
    ) -> Option<Vec<CertificateDer<'static>>> {
        let full = resolve(base, file);
        if let Err(e) = std::fs::metadata(&full) {
            self.unreadable(path, &full, e, "give a readable PEM file of certificates");
            return None;
        }
        match tls::load_certs(&full) {
            Ok(c) => Some(c),
            Err(e) => {
                self.err(
                    path,
                    format!("{e:#}"),
                    "give a readable PEM file of certificates",
                );
                None
            }
        }
    }

    /// A PEM private key.
    pub fn key(&mut self, path: &str, file: &Path, base: &Path) -> Option<PrivateKeyDer<'static>> {
        let full = resolve(base, file);
        if let Err(e) = std::fs::metadata(&full) {
            self.unreadable(
                path,
                &full,
                e,
                "give a readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
            );
            return None;
        }
        match tls::load_key(&full) {
            Ok(k) => Some(k),
            Err(e) => {
                self.err(
                    path,
                    format!("{e:#}"),
                    "give a readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
                );
                None
            }
        }
    }

    /// A PEM file of X509 CRLs.
    pub fn crls(
        &mut self,
        path: &str,
        file: &Path,
        base: &Path,
    ) -> Option<Vec<CertificateRevocationListDer<'static>>> {
        let full = resolve(base, file);
        if let Err(e) = std::fs::metadata(&full) {
            self.unreadable(
                path,
                &full,
                e,
                "give a readable PEM file of X509 CRL blocks",
            );
            return None;
        }
        match tls::load_crls(&full) {
            Ok(crls) => Some(crls),
            Err(e) => {
                self.err(
                    path,
                    format!("{e:#}"),
                    "give a readable PEM file of X509 CRL blocks",
                );
                None
            }
        }
    }
}

/// serde's ``unknown variant `…`, expected …`` with the variant left out.
fn without_unknown_variant(message: &str) -> String {
    const MARK: &str = "unknown variant `";
    let Some(i) = message.find(MARK) else {
        return message.to_owned();
    };
    let after = &message[i + MARK.len()..];
    // The variant ends at the last "`, expected" (the variant itself may hold a backtick).
    match after.rfind("`, expected") {
        Some(end) => format!("{}unknown value{}", &message[..i], &after[end + 1..]),
        None => format!("{}unknown value", &message[..i]),
    }
}

/// `value` quoted for a message, with a URL's user info (`user:password@`) shown as `***@`:
/// a config error is printed by `check-config` and logged on a reload, and the value may be a
/// URL carrying a password the key was never meant to hold.
pub fn quoted(value: &str) -> String {
    if let Some(i) = value.find("://") {
        let rest = &value[i + 3..];
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            return format!("{:?}", format!("{}***{}", &value[..i + 3], &rest[at..]));
        }
    }
    format!("{value:?}")
}

/// A deserializer's message without the strings it quotes (serde writes `invalid type:
/// string "…", expected …` and `unknown variant `…`, expected …`): the string may be a
/// credential (a Redis URL with its password where a map or a keyword was expected), and the
/// key path and what was expected say what is wrong.
pub fn without_quoted_strings(message: &str) -> String {
    let message = without_unknown_variant(message);
    let message = message.as_str();
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i]);
        out.push_str("a string");
        // Skip to the closing quote; `\"` and `\\` inside are escapes (Rust's `{:?}`).
        let mut chars = rest[i + MARK.len()..].char_indices();
        let mut end = None;
        while let Some((j, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = Some(i + MARK.len() + j + 1);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            return out;
        };
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Relative paths in the config are relative to the config file's folder.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused URL is quoted without its password, and a deserializer's message without the
    /// string it quotes: `check-config` prints them, a reload logs them.
    #[test]
    fn config_errors_do_not_echo_credentials() {
        let mut p = Problems::new();
        p.https_url(
            "authentication.jwt[0].issuer.url",
            "http://admin:s3cret@idp.example/path",
            UrlKind::Issuer,
        );
        let all = format!("{:?}", p.into_vec());
        assert!(!all.contains("s3cret"), "{all}");
        assert!(all.contains("\\\"http://***@idp.example/path\\\""), "{all}");
        assert_eq!(
            quoted("https://idp.example/a@b"),
            "\"https://idp.example/a@b\""
        );
        assert_eq!(
            without_quoted_strings(
                r#"invalid type: string "rediss://:hunter2@r:6380 \"x\\", expected struct RedisConfig"#
            ),
            "invalid type: a string, expected struct RedisConfig"
        );
        let e = crate::config::parse(
            "rate_limits:\n  backend: redis\n  redis: \"rediss://:hunter2@r:6380\"\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "rate_limits.redis");
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        // A keyword that is not one: said without the value.
        let e = crate::config::parse("rate_limits:\n  backend: \"rediss://:hunter2@r:6380\"\n")
            .unwrap_err();
        assert_eq!(e.path, "rate_limits.backend");
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        assert!(
            e.message.contains("unknown value, expected"),
            "{}",
            e.message
        );
    }

    /// An API server URL with user info is refused: it is never used, and the endpoint's name
    /// (a metric label, `/readyz`, logs) would publish the password.
    #[test]
    fn an_api_server_url_with_user_info_is_refused() {
        let mut p = Problems::new();
        assert!(p
            .https_url(
                "upstream.url",
                "https://admin:s3cret@10.0.0.1:6443",
                UrlKind::ApiServer
            )
            .is_none());
        assert!(p
            .https_url("upstream.url", "https://10.0.0.1:6443", UrlKind::ApiServer)
            .is_some());
        let got = p.into_vec();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "upstream.url");
        assert!(!got[0].message.contains("s3cret"), "{}", got[0].message);
    }

    #[test]
    fn each_section_keeps_its_duration_wording() {
        let mut p = Problems::new();
        let d = Duration::from_secs(7);
        for (path, w) in [
            ("a", Wording::General),
            ("b", Wording::Jwt),
            ("c", Wording::Audit),
            ("d", Wording::RateLimit),
        ] {
            assert_eq!(p.duration(path, Some("soon"), d, w), d);
            assert_eq!(p.duration(path, None, d, w), d);
            assert_eq!(p.duration(path, Some("2m"), d, w), Duration::from_secs(120));
        }
        // An absurd length is refused here, not left to overflow a clock later.
        let mut q = Problems::new();
        assert_eq!(q.duration("e", Some("1000000000y"), d, Wording::Jwt), d);
        assert_eq!(
            q.duration("f", Some("3650d"), d, Wording::Jwt),
            Duration::from_secs(3650 * 86_400)
        );
        let long: Vec<(String, String)> = q
            .into_vec()
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect();
        assert_eq!(
            long,
            [("e".into(), "\"1000000000y\" is longer than 10 years".into())]
        );
        let got: Vec<(String, String)> = p
            .into_vec()
            .into_iter()
            .map(|p| (p.path, format!("{} / {}", p.message, p.hint)))
            .collect();
        let err = humantime::parse_duration("soon").unwrap_err();
        assert_eq!(
            got,
            [
                (
                    "a".into(),
                    format!("\"soon\" is not a duration: {err} / write e.g. 500ms, 10s, 5m or 1h")
                ),
                (
                    "b".into(),
                    format!("\"soon\" is not a duration: {err} / write e.g. 30s, 5m or 1h")
                ),
                (
                    "c".into(),
                    format!("\"soon\": {err} / write a duration such as 500ms, 10s, 5m")
                ),
                (
                    "d".into(),
                    format!("not a duration: {err} / e.g. 50ms, 10s, 10m")
                ),
            ]
        );
    }

    #[test]
    fn bad_addresses_and_unreadable_files_name_their_key() {
        let mut p = Problems::new();
        assert!(p.addr("listen.address", "nowhere").is_none());
        assert!(p
            .certs(
                "x.cert_file",
                Path::new("missing.crt"),
                Path::new("/nonexistent")
            )
            .is_none());
        assert!(p.read("x.file", Path::new("/nonexistent/f"), "").is_none());
        let paths: Vec<String> = p.into_vec().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["listen.address", "x.cert_file", "x.file"]);
    }
}
