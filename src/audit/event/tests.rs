//! The event's JSON shape (apiserver field names and omissions, round trips), levels and
//! stages, time format, limiting to a level, object references, and the list wrapper.

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
        crate::k8s::request::classify(&m, &uri.parse().unwrap(), &http::HeaderMap::new()).unwrap()
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
