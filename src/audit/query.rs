//! `portcullis audit query`: "who deleted what in team-a last night" straight from audit files,
//! without a SIEM. Streams each file line by line (never holds a file in memory), so it works
//! on rotated gigabytes; reads our files and plain kube-apiserver JSON audit logs alike.
//!
//! Filters (all given ones must match; a filter given several times, or with comma-separated
//! values, matches any of its values):
//!
//! * `user` = `user.username` or `impersonatedUser.username` (a request sent with `--as=bob`
//!   ran as bob); `group` ∈ the groups of either; `verb` = `verb`;
//! * `resource`: `pods` matches the pods resource and its subresources, `pods/log` only that
//!   subresource (from `objectRef`); `namespace`, `name` = `objectRef.namespace` / `.name`;
//! * `since` ≤ `requestReceivedTimestamp` < `until`;
//! * `decision`: the `authorization.k8s.io/decision` annotation; `allow` matches `allow`,
//!   `deny` matches the apiserver's `forbid` (and a literal `deny`); events without the
//!   annotation (e.g. refused before authorization, 401) match neither;
//! * `code`: `responseStatus.code`, exactly (`403`) or by class (`4xx`).
//!
//! Only `ResponseComplete` and `Panic` events are shown unless `all_stages` is set, so each
//! request appears once. Checkpoint lines (inline in files of earlier versions) are skipped
//! silently; lines that are not JSON events are skipped with a warning naming `file:line`; so
//! are a truncated last line and a line over 64 MiB (read no further into memory, as `audit
//! verify` reads).
//!
//! `--follow` (`follow.rs`): after the given files, keep reading the last one as it grows and
//! across its rotation, as `tail -F` does.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fs::File,
    io::{self, BufReader, Write},
    path::PathBuf,
};

use serde::Deserialize;

use super::event::MicroTime;

/// `authorization.k8s.io/decision` values to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The apiserver's `forbid` (`--decision forbid`, or `deny`).
    Deny,
}

/// A response code filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMatch {
    Exact(i64),
    /// `4xx` → 4.
    Class(i64),
}

impl std::str::FromStr for CodeMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<CodeMatch, String> {
        let bad = || format!("{s:?} is not a status code like 403 or a class like 4xx");
        if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
            let c: i64 = class.parse().map_err(|_| bad())?;
            return if (1..=5).contains(&c) {
                Ok(CodeMatch::Class(c))
            } else {
                Err(bad())
            };
        }
        s.parse().map(CodeMatch::Exact).map_err(|_| bad())
    }
}

impl CodeMatch {
    fn matches(self, code: i64) -> bool {
        match self {
            CodeMatch::Exact(c) => c == code,
            CodeMatch::Class(c) => code / 100 == c,
        }
    }
}

/// What to look for. Empty lists match anything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub verbs: Vec<String>,
    pub resources: Vec<String>,
    pub namespaces: Vec<String>,
    pub names: Vec<String>,
    pub since: Option<MicroTime>,
    pub until: Option<MicroTime>,
    pub decision: Option<Decision>,
    pub codes: Vec<CodeMatch>,
    pub all_stages: bool,
}

/// How matches are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// TIME USER VERB RESOURCE NAMESPACE NAME CODE DECISION.
    Table,
    /// The matching lines as they are in the file, one per line.
    Json,
}

/// Counts for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub scanned: u64,
    pub matched: u64,
    pub skipped: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct View<'a> {
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    stage: Cow<'a, str>,
    #[serde(borrow, default)]
    verb: Cow<'a, str>,
    #[serde(borrow, default, rename = "requestURI")]
    request_uri: Cow<'a, str>,
    #[serde(borrow, default)]
    user: UserView<'a>,
    #[serde(borrow, default)]
    impersonated_user: Option<UserView<'a>>,
    #[serde(borrow, default)]
    object_ref: Option<ObjectView<'a>>,
    #[serde(default)]
    response_status: Option<StatusView>,
    #[serde(borrow, default)]
    request_received_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    annotations: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct UserView<'a> {
    #[serde(borrow, default)]
    username: Cow<'a, str>,
    #[serde(borrow, default)]
    groups: Vec<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct ObjectView<'a> {
    #[serde(borrow, default)]
    resource: Cow<'a, str>,
    #[serde(borrow, default)]
    subresource: Cow<'a, str>,
    #[serde(borrow, default)]
    namespace: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
struct StatusView {
    #[serde(default)]
    code: i64,
}

const DECISION: &str = "authorization.k8s.io/decision";

fn any_of(list: &[String], v: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == v)
}

impl Filter {
    fn matches(&self, e: &View<'_>, time: Option<MicroTime>) -> bool {
        if !self.all_stages && !matches!(e.stage.as_ref(), "ResponseComplete" | "Panic") {
            return false;
        }
        // The user a request ran as is the impersonated one when there is one (`kubectl
        // --as=bob` ran as bob): `--user bob` / `--group` match either identity.
        let users = || std::iter::once(&e.user).chain(e.impersonated_user.as_ref());
        if !self.users.is_empty() && !users().any(|u| any_of(&self.users, &u.username)) {
            return false;
        }
        if !any_of(&self.verbs, &e.verb) {
            return false;
        }
        if !self.groups.is_empty()
            && !users().any(|u| u.groups.iter().any(|g| self.groups.iter().any(|x| x == g)))
        {
            return false;
        }
        let empty = ObjectView::default();
        let obj = e.object_ref.as_ref().unwrap_or(&empty);
        if !any_of(&self.namespaces, &obj.namespace) || !any_of(&self.names, &obj.name) {
            return false;
        }
        if !self.resources.is_empty()
            && !self.resources.iter().any(|r| match r.split_once('/') {
                Some((res, sub)) => obj.resource == res && obj.subresource == sub,
                None => obj.resource == r.as_str(),
            })
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = time else { return false };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        if let Some(d) = self.decision {
            let v = e.annotations.get(DECISION).map(|v| v.as_ref());
            let ok = match d {
                Decision::Allow => v == Some("allow"),
                Decision::Deny => matches!(v, Some("forbid" | "deny")),
            };
            if !ok {
                return false;
            }
        }
        if !self.codes.is_empty() {
            let code = e.response_status.as_ref().map_or(0, |s| s.code);
            if !self.codes.iter().any(|c| c.matches(code)) {
                return false;
            }
        }
        true
    }
}

/// The table header.
pub const TABLE_HEADER: &str = "TIME                 USER                     VERB             RESOURCE                 NAMESPACE        NAME                     CODE  DECISION";

/// A table cell: `-` for nothing, and control characters (a name taken from a request body
/// may hold a newline or a terminal escape), line and paragraph separators and the bidi
/// controls (which reorder what is shown) written as `\u{…}`, so a value can neither forge a
/// row nor drive the terminal nor rearrange what it shows. (Use `--output json` for values as
/// logged.)
fn dash(s: &str) -> std::borrow::Cow<'_, str> {
    // The characters names may not hold (`forwards_intact`): a cell shows them escaped,
    // for logs written before, or by other writers.
    fn hidden(c: char) -> bool {
        c.is_control() || crate::authn::identity::hides_text(c)
    }
    if s.is_empty() {
        return "-".into();
    }
    if !s.chars().any(hidden) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if hidden(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

fn table_row(e: &View<'_>, time: Option<MicroTime>) -> String {
    let empty = ObjectView::default();
    let obj = e.object_ref.as_ref().unwrap_or(&empty);
    let resource = if e.object_ref.is_none() {
        // Non-resource request: the path is the most useful thing to show.
        e.request_uri
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string()
    } else if obj.subresource.is_empty() {
        obj.resource.to_string()
    } else {
        format!("{}/{}", obj.resource, obj.subresource)
    };
    let code = e
        .response_status
        .as_ref()
        .map_or_else(|| "-".to_string(), |s| s.code.to_string());
    format!(
        "{:<20} {:<24} {:<16} {:<24} {:<16} {:<24} {:<5} {}",
        time.map_or_else(|| "-".to_string(), MicroTime::to_seconds_string),
        user_column(e),
        dash(&e.verb),
        dash(&resource),
        dash(&obj.namespace),
        dash(&obj.name),
        code,
        dash(e.annotations.get(DECISION).map_or("", |v| v.as_ref())),
    )
}

/// The USER column: `alice`, or `alice as bob` for a request `alice` sent impersonating `bob`.
fn user_column(e: &View<'_>) -> String {
    match &e.impersonated_user {
        Some(i) if !i.username.is_empty() => {
            format!("{} as {}", dash(&e.user.username), dash(&i.username))
        }
        _ => dash(&e.user.username).to_string(),
    }
}

/// Run the query over `files` in order, printing matches to `out` and skipped-line warnings to
/// `warn`. `Err` only for unreadable files and failed writes.
pub fn run(
    files: &[PathBuf],
    filter: &Filter,
    output: Output,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> io::Result<Stats> {
    let mut stats = Stats::default();
    if output == Output::Table {
        writeln!(out, "{TABLE_HEADER}")?;
    }
    let mut buf = Vec::with_capacity(64 * 1024);
    for path in files {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line_no = 0u64;
        loop {
            buf.clear();
            // Capped as `audit verify` reads: a corrupt region of gigabytes without a newline
            // (zeros after a power loss) is skipped, not read into memory.
            let Some(n) = super::verify::read_line(&mut reader, &mut buf)? else {
                line_no += 1;
                overlong(Place { path, line_no }, warn, &mut stats)?;
                continue;
            };
            if n == 0 {
                break;
            }
            line_no += 1;
            if buf.last() != Some(&b'\n') {
                writeln!(
                    warn,
                    "warning: {}:{line_no}: truncated final line skipped",
                    path.display()
                )?;
                stats.skipped += 1;
                break;
            }
            buf.pop();
            let at = Place { path, line_no };
            one_line(&buf, at, filter, output, out, warn, &mut stats)?;
        }
    }
    out.flush()?;
    Ok(stats)
}

/// Where a line was read, for warnings.
#[derive(Clone, Copy)]
pub(crate) struct Place<'a> {
    pub path: &'a std::path::Path,
    pub line_no: u64,
}

/// A line over what is read into memory: skipped with a warning.
pub(crate) fn overlong(at: Place<'_>, warn: &mut dyn Write, stats: &mut Stats) -> io::Result<()> {
    writeln!(
        warn,
        "warning: {}:{}: a line over {} MiB; skipped",
        at.path.display(),
        at.line_no,
        super::verify::MAX_LINE >> 20
    )?;
    stats.skipped += 1;
    Ok(())
}

/// Filter and print one complete line (without its newline).
pub(crate) fn one_line(
    buf: &[u8],
    at: Place<'_>,
    filter: &Filter,
    output: Output,
    out: &mut dyn Write,
    warn: &mut dyn Write,
    stats: &mut Stats,
) -> io::Result<()> {
    let Place { path, line_no } = at;
    let view: View<'_> = match serde_json::from_slice(buf) {
        Ok(v) => v,
        Err(e) => {
            writeln!(
                warn,
                "warning: {}:{line_no}: not a JSON audit event ({e}); skipped",
                path.display()
            )?;
            stats.skipped += 1;
            return Ok(());
        }
    };
    match view.kind.as_ref() {
        "Event" => {}
        super::chain::CHECKPOINT_KIND => return Ok(()),
        other => {
            writeln!(
                warn,
                "warning: {}:{line_no}: kind {other:?} is not an audit event; skipped",
                path.display()
            )?;
            stats.skipped += 1;
            return Ok(());
        }
    }
    stats.scanned += 1;
    let time = view
        .request_received_timestamp
        .as_deref()
        .and_then(|t| t.parse::<MicroTime>().ok());
    if !filter.matches(&view, time) {
        return Ok(());
    }
    stats.matched += 1;
    match output {
        Output::Json => {
            out.write_all(buf)?;
            out.write_all(b"\n")?;
        }
        Output::Table => writeln!(out, "{}", table_row(&view, time))?,
    }
    Ok(())
}

/// `--since` / `--until`: RFC 3339, or a duration before `now` (`12h`, `30m`, `2d`).
pub fn parse_time_arg(s: &str, now: MicroTime) -> Result<MicroTime, String> {
    if let Ok(t) = s.parse::<MicroTime>() {
        return Ok(t);
    }
    let d = humantime::parse_duration(s).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 time (2026-11-27T07:25:09Z) nor a duration (12h)")
    })?;
    let micros = i64::try_from(d.as_micros()).map_err(|_| format!("{s:?} is too long ago"))?;
    Ok(MicroTime::from_unix_micros(
        now.unix_micros().saturating_sub(micros),
    ))
}

mod follow;
pub use follow::follow;

#[cfg(test)]
mod tests;
