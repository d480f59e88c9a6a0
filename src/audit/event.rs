//! The `audit.k8s.io/v1` `Event` and `EventList`, field for field as kube-apiserver writes them
//! (`k8s.io/apiserver/pkg/apis/audit/v1/types.go`, shared/reference/kubernetes-api.md §4.1), so
//! SIEM rules written for apiserver audit logs read ours unchanged.
//!
//! Serialization mirrors Go's `encoding/json` on those types: fields in struct order, and every
//! field tagged `omitempty` there is skipped here when empty (strings, lists, maps, nil
//! pointers). `user`, `requestReceivedTimestamp` and `stageTimestamp` are always written, and
//! `responseStatus.metadata` is always `{}` (Go's `omitempty` never omits a struct). Timestamps
//! are `metav1.MicroTime`: RFC 3339 in UTC with exactly six fractional digits.
//!
//! Accepts (deserializing): any apiserver event line, including fields we do not model (they are
//! ignored, so `audit query` can read real apiserver logs), and timestamps with any number of
//! fractional digits and a `Z` or `±HH:MM` offset. Rejects: an unknown `level` or `stage`, and
//! timestamps that are not RFC 3339.
//!
//! Invariant relied on by the file sink (`sink/file.rs`): `annotations` is the **last** field,
//! so a serialized event ends in `}}` when it has annotations and in `}` when it has none.

use std::{
    collections::BTreeMap,
    fmt,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// `apiVersion` of events, event lists and policies.
pub const API_VERSION: &str = "audit.k8s.io/v1";

/// How much of a request is recorded. Ordered: `None < Metadata < Request < RequestResponse`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub enum Level {
    /// Not recorded.
    #[default]
    None,
    /// User, timestamps, resource, verb, … but no bodies.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata, request body and response body.
    RequestResponse,
}

impl Level {
    /// The name as written in events and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

/// When in the life of a request an event was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Stage {
    /// As soon as the request is received, before it goes down the handler chain.
    #[default]
    RequestReceived,
    /// Response headers sent, body not yet (long-running requests only).
    ResponseStarted,
    /// The response body is complete.
    ResponseComplete,
    /// A panic occurred while handling the request.
    Panic,
}

impl Stage {
    /// Every stage, in life order.
    pub const ALL: [Stage; 4] = [
        Stage::RequestReceived,
        Stage::ResponseStarted,
        Stage::ResponseComplete,
        Stage::Panic,
    ];

    /// The name as written in events and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

/// `authentication.k8s.io/v1` `UserInfo`: every field `omitempty`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl From<&crate::authn::identity::Identity> for UserInfo {
    /// The authenticated caller as the apiserver records `user` (username, uid, groups, extra).
    fn from(id: &crate::authn::identity::Identity) -> UserInfo {
        UserInfo {
            username: id.user.clone(),
            uid: id.uid.clone(),
            groups: id.groups.clone(),
            extra: id.extra.clone(),
        }
    }
}

/// `audit.k8s.io/v1` `ObjectReference`: every field `omitempty`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

impl ObjectReference {
    /// What the apiserver records for a request (`audit/request.go` `NewEventFromRequest`): set
    /// for every resource request — lists and creates included, with whatever of namespace and
    /// name the URL gives — and `None` for non-resource requests.
    pub fn from_request(info: &crate::k8s::request::RequestInfo) -> Option<ObjectReference> {
        info.is_resource_request.then(|| ObjectReference {
            resource: info.resource.clone(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            api_group: info.api_group.clone(),
            api_version: info.api_version.clone(),
            subresource: info.subresource.clone(),
            ..ObjectReference::default()
        })
    }
}

/// The `metav1.Status` subset the apiserver records as `responseStatus`. On success it is just
/// `{"metadata":{},"code":200}`; on failure status, message, reason (and details) are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseStatus {
    /// Always `{}` on output: Go's `omitempty` does not omit an empty `ListMeta` struct.
    #[serde(default)]
    pub metadata: serde_json::Map<String, Value>,
    /// `Success` or `Failure` (empty on plain successes, as the apiserver writes them).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// A `metav1.StatusReason` such as `Forbidden`, `TooManyRequests`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// The HTTP status code (0 = unset, omitted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: i32,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl ResponseStatus {
    /// A success as the apiserver records it: only the code.
    pub fn code(code: u16) -> ResponseStatus {
        ResponseStatus {
            code: i32::from(code),
            ..ResponseStatus::default()
        }
    }

    /// A failure with its reason and message.
    pub fn failure(code: u16, reason: &str, message: &str) -> ResponseStatus {
        ResponseStatus {
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            code: i32::from(code),
            ..ResponseStatus::default()
        }
    }
}

/// One audit event (`kind: Event`, `apiVersion: audit.k8s.io/v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(default = "event_kind")]
    pub kind: String,
    #[serde(default = "api_version")]
    pub api_version: String,
    pub level: Level,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: Stage,
    #[serde(rename = "requestURI", default)]
    pub request_uri: String,
    #[serde(default)]
    pub verb: String,
    #[serde(default)]
    pub user: UserInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<UserInfo>,
    #[serde(rename = "sourceIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    /// At level Request and above, resource requests only (use [`Event::limit_to_level`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_object: Option<Value>,
    /// At level RequestResponse only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_object: Option<Value>,
    pub request_received_timestamp: MicroTime,
    pub stage_timestamp: MicroTime,
    /// Newer apiservers' `authenticationMetadata`; kept opaque so logs round-trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_metadata: Option<Value>,
    /// MUST stay the last field (see the module doc).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn event_kind() -> String {
    "Event".into()
}
fn api_version() -> String {
    API_VERSION.into()
}

/// Level `Metadata`, stage `ResponseComplete`, both timestamps now, everything else empty.
impl Default for Event {
    fn default() -> Self {
        let now = MicroTime::now();
        Event {
            kind: event_kind(),
            api_version: api_version(),
            level: Level::Metadata,
            audit_id: String::new(),
            stage: Stage::ResponseComplete,
            request_uri: String::new(),
            verb: String::new(),
            user: UserInfo::default(),
            impersonated_user: None,
            source_ips: Vec::new(),
            user_agent: String::new(),
            object_ref: None,
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: now,
            stage_timestamp: now,
            authentication_metadata: None,
            annotations: BTreeMap::new(),
        }
    }
}

impl Event {
    /// Drop what `level` does not record, as the apiserver does: below `Request` no request
    /// body, below `RequestResponse` no response body, and at `None` the caller should not
    /// emit at all. Non-resource requests never carry a request object.
    pub fn limit_to_level(&mut self, level: Level) {
        self.level = level;
        if level < Level::Request || self.object_ref.is_none() {
            self.request_object = None;
        }
        if level < Level::RequestResponse {
            self.response_object = None;
        }
    }

    /// Remove `metadata.managedFields` from the recorded bodies (policy `omitManagedFields`).
    pub fn omit_managed_fields(&mut self) {
        for obj in [&mut self.request_object, &mut self.response_object]
            .into_iter()
            .flatten()
        {
            strip_managed_fields(obj);
        }
    }
}

/// Remove `metadata.managedFields` from an object, or from every item of a list, which is what
/// the apiserver's `omitManagedFields` covers.
pub fn strip_managed_fields(obj: &mut Value) {
    fn one(v: &mut Value) {
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    one(obj);
    if let Some(items) = obj.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(one);
    }
}

/// `audit.k8s.io/v1` `EventList`, the webhook backend's request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    #[serde(default = "event_list_kind")]
    pub kind: String,
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default)]
    pub metadata: serde_json::Map<String, Value>,
    #[serde(default)]
    pub items: Vec<Event>,
}

fn event_list_kind() -> String {
    "EventList".into()
}

impl EventList {
    /// A list of these events.
    pub fn new(items: Vec<Event>) -> EventList {
        EventList {
            kind: event_list_kind(),
            api_version: api_version(),
            metadata: serde_json::Map::new(),
            items,
        }
    }
}

/// `metav1.MicroTime`: an instant with microsecond precision, written as
/// `2026-11-27T07:25:09.123456Z`. Stored as microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroTime(i64);

impl MicroTime {
    /// Now, truncated to microseconds.
    pub fn now() -> MicroTime {
        MicroTime::from_system_time(SystemTime::now())
    }

    /// From a wall-clock time (before 1970 is allowed).
    pub fn from_system_time(t: SystemTime) -> MicroTime {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => MicroTime(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => MicroTime(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }

    /// From microseconds since the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> MicroTime {
        MicroTime(micros)
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0
    }

    /// RFC 3339 with second precision (for tables).
    pub fn to_seconds_string(self) -> String {
        let s = self.to_string();
        // "YYYY-MM-DDTHH:MM:SS.ffffffZ" → drop ".ffffff"; the format is fixed, so the cut is too.
        match (s.get(..19), s.len()) {
            (Some(head), 27) => format!("{head}Z"),
            _ => s,
        }
    }
}

impl MicroTime {
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ` into a fixed buffer (events carry two of these, so this
    /// avoids the formatting machinery on the emit path). `None` outside years 0–9999.
    fn rfc3339(self) -> Option<[u8; 27]> {
        let secs = self.0.div_euclid(1_000_000);
        let micros = u32::try_from(self.0.rem_euclid(1_000_000)).ok()?;
        let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, u32::from(u8::from(t.month())));
        put(8, 2, u32::from(t.day()));
        put(11, 2, u32::from(t.hour()));
        put(14, 2, u32::from(t.minute()));
        put(17, 2, u32::from(t.second()));
        put(20, 6, micros);
        Some(b)
    }
}

impl fmt::Display for MicroTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rfc3339() {
            // The buffer holds ASCII digits and separators only.
            Some(b) => f.write_str(std::str::from_utf8(&b).unwrap_or_default()),
            // Out of range for RFC 3339: print the raw number rather than fail.
            None => write!(f, "@{}us", self.0),
        }
    }
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeParseError(String);

impl fmt::Display for TimeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an RFC 3339 time (e.g. 2026-11-27T07:25:09Z)",
            self.0
        )
    }
}

impl std::error::Error for TimeParseError {}

impl FromStr for MicroTime {
    type Err = TimeParseError;

    /// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; fractions beyond microseconds are truncated.
    fn from_str(s: &str) -> Result<MicroTime, TimeParseError> {
        parse_rfc3339(s).ok_or_else(|| TimeParseError(s.to_string()))
    }
}

fn parse_rfc3339(s: &str) -> Option<MicroTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let day = u8::try_from(num(8..10)?).ok()?;
    let hour = u8::try_from(num(11..13)?).ok()?;
    let minute = u8::try_from(num(14..16)?).ok()?;
    let second = u8::try_from(num(17..19)?).ok()?;
    let mut i = 19;
    let mut micros: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..6 {
            micros *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if h > 23 || m > 59 {
                return None;
            }
            let v = h * 3600 + m * 60;
            if *sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    // A leap second (:60) is folded into :59 as Go's time package would not produce it anyway.
    let t = time::Time::from_hms(hour, minute, second.min(59)).ok()?;
    let secs = time::PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp()
        - offset_secs;
    Some(MicroTime(secs.checked_mul(1_000_000)?.checked_add(micros)?))
}

impl Serialize for MicroTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339() {
            Some(b) => s.serialize_str(std::str::from_utf8(&b).unwrap_or_default()),
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for MicroTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MicroTime, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        let t = MicroTime::from_str("2026-11-27T07:25:09.123456Z").unwrap();
        Event {
            level: Level::Metadata,
            audit_id: "7e0c1d2a-0000-4000-8000-000000000001".into(),
            stage: Stage::ResponseComplete,
            request_uri: "/api/v1/namespaces/team-a/pods/web".into(),
            verb: "get".into(),
            user: UserInfo {
                username: "alice".into(),
                groups: vec!["dev".into(), "system:authenticated".into()],
                ..UserInfo::default()
            },
            source_ips: vec!["10.0.0.7".into()],
            user_agent: "kubectl/v1.35.0".into(),
            object_ref: Some(ObjectReference {
                resource: "pods".into(),
                namespace: "team-a".into(),
                name: "web".into(),
                api_version: "v1".into(),
                ..ObjectReference::default()
            }),
            response_status: Some(ResponseStatus::code(200)),
            request_received_timestamp: t,
            stage_timestamp: t,
            annotations: BTreeMap::from([(
                "authorization.k8s.io/decision".to_string(),
                "allow".to_string(),
            )]),
            ..Event::default()
        }
    }

    #[test]
    fn serializes_like_the_apiserver() {
        let text = serde_json::to_string(&sample()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","#,
                r#""auditID":"7e0c1d2a-0000-4000-8000-000000000001","stage":"ResponseComplete","#,
                r#""requestURI":"/api/v1/namespaces/team-a/pods/web","verb":"get","#,
                r#""user":{"username":"alice","groups":["dev","system:authenticated"]},"#,
                r#""sourceIPs":["10.0.0.7"],"userAgent":"kubectl/v1.35.0","#,
                r#""objectRef":{"resource":"pods","namespace":"team-a","name":"web","apiVersion":"v1"},"#,
                r#""responseStatus":{"metadata":{},"code":200},"#,
                r#""requestReceivedTimestamp":"2026-11-27T07:25:09.123456Z","#,
                r#""stageTimestamp":"2026-11-27T07:25:09.123456Z","#,
                r#""annotations":{"authorization.k8s.io/decision":"allow"}}"#
            )
        );
    }

    #[test]
    fn empty_optionals_are_omitted_and_user_is_kept() {
        let mut e = sample();
        e.user = UserInfo::default();
        e.source_ips.clear();
        e.user_agent.clear();
        e.object_ref = None;
        e.response_status = None;
        e.annotations.clear();
        let v = serde_json::to_value(&e).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "apiVersion",
                "auditID",
                "kind",
                "level",
                "requestReceivedTimestamp",
                "requestURI",
                "stage",
                "stageTimestamp",
                "user",
                "verb"
            ]
        );
        assert_eq!(v["user"], json!({}));
        // Without annotations the serialized event ends in a single `}` (file-sink invariant).
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.ends_with("Z\"}"));
    }

    #[test]
    fn round_trips_and_reads_apiserver_lines() {
        let e = sample();
        let back: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        // A real apiserver line with fields we do not model and a Failure status.
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/secrets","verb":"list","user":{"username":"bob"},"sourceIPs":["1.2.3.4"],"objectRef":{"resource":"secrets","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Failure","message":"forbidden","reason":"Forbidden","details":{"kind":"secrets"},"code":403},"requestReceivedTimestamp":"2026-01-02T03:04:05.000001Z","stageTimestamp":"2026-01-02T03:04:05.100000Z","annotations":{"authorization.k8s.io/decision":"forbid"},"somethingNew":1}"#;
        let e: Event = serde_json::from_str(line).unwrap();
        assert_eq!(e.response_status.as_ref().unwrap().code, 403);
        assert_eq!(e.response_status.as_ref().unwrap().reason, "Forbidden");
        assert_eq!(
            e.stage_timestamp.unix_micros() - e.request_received_timestamp.unix_micros(),
            99_999
        );
    }

    #[test]
    fn unknown_level_or_stage_is_rejected() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["level"] = json!("Everything");
        assert!(serde_json::from_value::<Event>(v.clone()).is_err());
        v["level"] = json!("Metadata");
        v["stage"] = json!("Done");
        assert!(serde_json::from_value::<Event>(v).is_err());
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Level::None < Level::Metadata);
        assert!(Level::Metadata < Level::Request);
        assert!(Level::Request < Level::RequestResponse);
    }

    #[test]
    fn micro_time_format_and_parse() {
        let cases = [
            ("2026-11-27T07:25:09.123456Z", "2026-11-27T07:25:09.123456Z"),
            ("2026-11-27T07:25:09Z", "2026-11-27T07:25:09.000000Z"),
            ("2026-11-27T07:25:09.1Z", "2026-11-27T07:25:09.100000Z"),
            (
                "2026-11-27T07:25:09.123456789Z",
                "2026-11-27T07:25:09.123456Z",
            ),
            ("2026-11-27T08:25:09.5+01:00", "2026-11-27T07:25:09.500000Z"),
            ("2026-11-27T02:25:09-05:00", "2026-11-27T07:25:09.000000Z"),
            ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000000Z"),
            ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999Z"),
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
            ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
            ("2024-02-29T12:34:56.000007Z", "2024-02-29T12:34:56.000007Z"),
        ];
        for (input, want) in cases {
            let t: MicroTime = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(t.to_string(), want, "{input}");
        }
        for bad in [
            "",
            "2026-11-27",
            "2026-11-27 07:25:09Z",
            "2026-13-27T07:25:09Z",
            "2026-02-30T07:25:09Z",
            "2026-11-27T07:25:09",
            "2026-11-27T07:25:09.Z",
            "2026-11-27T07:25:09+0100",
            "2026-11-27T07:25:09Zjunk",
            "２026-11-27T07:25:09Z",
        ] {
            assert!(bad.parse::<MicroTime>().is_err(), "{bad:?} accepted");
        }
        let t: MicroTime = "2026-11-27T07:25:09.123456Z".parse().unwrap();
        assert_eq!(t.to_seconds_string(), "2026-11-27T07:25:09Z");
        let now = MicroTime::now();
        assert_eq!(now.to_string().parse::<MicroTime>().unwrap(), now);
        // Out of range: printed raw, never a panic.
        assert!(MicroTime::from_unix_micros(i64::MAX)
            .to_string()
            .starts_with('@'));
        assert!(MicroTime::from_unix_micros(i64::MIN)
            .to_string()
            .starts_with('@'));
    }

    #[test]
    fn limit_to_level_and_managed_fields() {
        let mut e = sample();
        e.request_object = Some(json!({"metadata":{"name":"x","managedFields":[{}]}}));
        e.response_object = Some(json!({"items":[{"metadata":{"managedFields":[]}}]}));
        let mut m = e.clone();
        m.limit_to_level(Level::Metadata);
        assert!(m.request_object.is_none() && m.response_object.is_none());
        let mut r = e.clone();
        r.limit_to_level(Level::Request);
        assert!(r.request_object.is_some() && r.response_object.is_none());
        let mut rr = e.clone();
        rr.limit_to_level(Level::RequestResponse);
        rr.omit_managed_fields();
        assert_eq!(rr.request_object, Some(json!({"metadata":{"name":"x"}})));
        assert_eq!(rr.response_object, Some(json!({"items":[{"metadata":{}}]})));
        let mut nr = e;
        nr.object_ref = None;
        nr.limit_to_level(Level::RequestResponse);
        assert!(
            nr.request_object.is_none(),
            "non-resource: no request object"
        );
    }

    #[test]
    fn object_ref_from_a_classified_request() {
        let info = |m: http::Method, uri: &str| {
            crate::k8s::request::classify(&m, &uri.parse().unwrap(), &http::HeaderMap::new())
                .unwrap()
        };
        let r = ObjectReference::from_request(&info(
            http::Method::GET,
            "/apis/apps/v1/namespaces/team-a/deployments/web/scale",
        ))
        .unwrap();
        assert_eq!(
            (
                r.api_group.as_str(),
                r.api_version.as_str(),
                r.resource.as_str(),
                r.subresource.as_str(),
                r.namespace.as_str(),
                r.name.as_str()
            ),
            ("apps", "v1", "deployments", "scale", "team-a", "web")
        );
        let list = ObjectReference::from_request(&info(http::Method::GET, "/api/v1/pods")).unwrap();
        assert_eq!((list.resource.as_str(), list.name.as_str()), ("pods", ""));
        assert!(ObjectReference::from_request(&info(http::Method::GET, "/healthz")).is_none());
    }

    #[test]
    fn event_list_shape() {
        let v = serde_json::to_value(EventList::new(vec![sample()])).unwrap();
        assert_eq!(v["kind"], "EventList");
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["metadata"], json!({}));
        assert_eq!(v["items"][0]["auditID"], sample().audit_id);
    }
}
