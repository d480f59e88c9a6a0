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
    borrow::Cow,
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
            // As the API server logs (and its policy matches) them: `system:authenticated`
            // included.
            groups: id.groups_as_authenticated(),
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

/// The names a decoded request object carries in its `metadata` (strings only: a value of
/// another type is not a name the API server would decode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectNames {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

impl ObjectNames {
    /// The names in `object.metadata`; `None` when the object has no `metadata` map.
    pub fn of(object: &Value) -> Option<ObjectNames> {
        let meta = object.get("metadata")?.as_object()?;
        let get = |k: &str| {
            meta.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Some(ObjectNames {
            namespace: get("namespace"),
            name: get("name"),
            uid: get("uid"),
            resource_version: get("resourceVersion"),
        })
    }
}

impl ObjectReference {
    /// Complete the reference from the decoded request object, as the apiserver's
    /// `LogRequestObject` does: each of namespace, name, uid and resourceVersion is taken from
    /// the object only where the URL left it empty (so a body cannot rename what the URL
    /// named).
    pub fn complete_from(&mut self, names: &ObjectNames) {
        let fill = |mine: &mut String, theirs: &str| {
            if mine.is_empty() {
                theirs.clone_into(mine);
            }
        };
        fill(&mut self.namespace, &names.namespace);
        fill(&mut self.name, &names.name);
        fill(&mut self.uid, &names.uid);
        fill(&mut self.resource_version, &names.resource_version);
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
    /// `Cow`: every event we write has the same two words, so none of them allocates them.
    #[serde(default = "event_kind")]
    pub kind: Cow<'static, str>,
    #[serde(default = "event_api_version")]
    pub api_version: Cow<'static, str>,
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

fn event_kind() -> Cow<'static, str> {
    Cow::Borrowed("Event")
}
fn event_api_version() -> Cow<'static, str> {
    Cow::Borrowed(API_VERSION)
}
fn api_version() -> String {
    API_VERSION.into()
}

/// Level `Metadata`, stage `ResponseComplete`, both timestamps now, everything else empty.
impl Default for Event {
    fn default() -> Self {
        Event::blank(MicroTime::now())
    }
}

impl Event {
    /// Level `Metadata`, stage `ResponseComplete`, both timestamps `now`, everything else
    /// empty; allocates nothing.
    pub fn blank(now: MicroTime) -> Event {
        Event {
            kind: event_kind(),
            api_version: event_api_version(),
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

    /// Remove `metadata.managedFields` from the recorded objects (policy `omitManagedFields`),
    /// as the apiserver does: from the response object, and from the request object unless the
    /// request is a patch. Its patch handler records the patch body as sent
    /// (`audit.LogRequestPatch`: the raw bytes as a `runtime.Unknown`), and only a decoded
    /// object goes through `copyWithoutManagedFields` (`LogRequestObject`,
    /// `LogResponseObject`) — a patch setting `managedFields` is recorded with them, so what
    /// the caller wrote to them shows.
    pub fn omit_managed_fields(&mut self) {
        let request = self
            .request_object
            .as_mut()
            .filter(|_| self.verb != "patch");
        for obj in [request, self.response_object.as_mut()]
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

pub(crate) mod json;

#[cfg(test)]
mod tests;
