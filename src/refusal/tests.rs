//! The refusal table's renderings, checked against kube-apiserver's wording.

use super::*;

#[test]
fn retry_after_sets_header_and_details() {
    let r = render(Status::service_unavailable("busy", 3));
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
}

/// One of each variant (and of each body refusal).
fn every_refusal() -> Vec<Refusal> {
    let rejection = |kind| {
        Box::new(Rejection {
            kind,
            message: "slow down".into(),
            retry_after: 2,
            headers: http::HeaderMap::new(),
            shadow: false,
            limit: "reads",
            degraded: None,
        })
    };
    let invalid = || {
        Box::new(Invalid {
            kind: "Pod".into(),
            group: String::new(),
            name: "p".into(),
            causes: Vec::new(),
        })
    };
    let mut all = vec![
        Refusal::BadPath("//".into()),
        Refusal::BadHeader("Content-Type".into()),
        Refusal::Overloaded(rejection(RejectionKind::Unavailable)),
        Refusal::SourceBlocked(rejection(RejectionKind::TooManyRequests)),
        Refusal::Unauthenticated(Failure::NoCredentials),
        Refusal::Forbidden(Box::new(Forbidden {
            message: "no".into(),
            name: String::new(),
            group: String::new(),
            resource: "pods".into(),
        })),
        Refusal::RateLimited(rejection(RejectionKind::TooManyRequests)),
        Refusal::PodSecurity(Box::new(PodSecurityDenial {
            resource: "pods".into(),
            group: String::new(),
            name: "p".into(),
            policy: "restricted:latest".into(),
            detail: "host namespaces (hostPID=true)".into(),
            template: None,
            causes: Vec::new(),
        })),
        Refusal::AuditUnavailable,
        Refusal::AuditUnrecorded,
        Refusal::Upstream(UpstreamFailure::Unreachable("refused")),
        Refusal::Upstream(UpstreamFailure::Unforwardable),
        Refusal::Upstream(UpstreamFailure::NotUpgradable),
        Refusal::Upstream(UpstreamFailure::CredentialsRefused),
        Refusal::Upstream(UpstreamFailure::UpgradeUnauthorized),
        Refusal::Timeout,
        Refusal::UpstreamBusy,
        Refusal::Panic,
    ];
    let bodies = vec![
        BodyRefusal::TooLarge { limit: 1 },
        BodyRefusal::NotReceived,
        BodyRefusal::Unreadable("eof".into()),
        BodyRefusal::Encoded("gzip".into()),
        BodyRefusal::UnknownFormat { patch: false },
        BodyRefusal::CannotJudge {
            media_type: "application/cbor".into(),
            resource: "pods".into(),
        },
        BodyRefusal::Unconvertible {
            resource: "pods".into(),
            reason: "field 2.999 is unknown".into(),
        },
        BodyRefusal::Parse {
            message: "dup".into(),
            field: Some("metadata.name".into()),
        },
        BodyRefusal::PatchTargetMissing {
            resource: "pods".into(),
            group: String::new(),
            name: "p".into(),
        },
        BodyRefusal::Unjudged,
        BodyRefusal::BadPatch("bad".into()),
        BodyRefusal::PatchDoesNotApply("no".into()),
        BodyRefusal::PatchTarget("no name".into()),
        BodyRefusal::NoObjectName,
        BodyRefusal::CurrentUnavailable("down".into()),
        BodyRefusal::CurrentForbidden("no".into()),
        BodyRefusal::FieldRules(invalid()),
        BodyRefusal::UpgradeBody,
    ];
    all.extend(bodies.into_iter().map(Refusal::from));
    all
}

#[test]
fn every_refusal_carries_the_api_server_s_error_headers() {
    for r in every_refusal() {
        let what = format!("{r:?}");
        let resp = r.respond();
        let h = resp.headers();
        assert_eq!(h[header::CACHE_CONTROL], "no-cache, private", "{what}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
        assert_eq!(h[header::CONTENT_TYPE], "application/json", "{what}");
    }
}

#[test]
fn a_pod_security_refusal_is_pod_security_s_403() {
    let mut d = PodSecurityDenial {
        resource: "pods".into(),
        group: String::new(),
        name: "x".into(),
        policy: "restricted:latest".into(),
        detail: "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)".into(),
        template: None,
        causes: Vec::new(),
    };
    let s = d.status();
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        s.message,
        "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"
    );
    let details = s.details.unwrap();
    assert_eq!(details.kind.as_deref(), Some("pods"));
    assert_eq!(details.name.as_deref(), Some("x"));
    d.resource = "deployments".into();
    d.group = "apps".into();
    d.template = Some("spec.template".into());
    assert!(d.status().message.starts_with(
        "deployments.apps \"x\" is forbidden: violates PodSecurity \"restricted:latest\" in spec.template: allowPrivilegeEscalation"
    ));
    d.name = String::new();
    assert!(d
        .status()
        .message
        .starts_with("deployments.apps is forbidden: "));
}

#[test]
fn an_open_breaker_is_a_503_naming_the_endpoint_with_an_integer_retry_after() {
    let r = Refusal::BreakerOpen(Box::new(BreakerOpen {
        endpoints: vec![("https://10.0.0.1:6443".into(), "open")],
        retry_after: 4,
    }));
    let s = r.status();
    assert_eq!((s.code, s.reason.as_str()), (503, "ServiceUnavailable"));
    assert_eq!(
        s.message,
        "the upstream API server https://10.0.0.1:6443 is unavailable (circuit breaker open); next probe in 4s"
    );
    let resp = r.respond();
    assert_eq!(resp.headers()[header::RETRY_AFTER], "4");
    assert_eq!(resp.extensions().get::<Refused>().unwrap().by, "upstream");
}

#[test]
fn a_busy_upstream_is_a_503_with_retry_after() {
    let r = Refusal::UpstreamBusy;
    let s = r.status();
    assert_eq!((s.code, s.reason.as_str()), (503, "ServiceUnavailable"));
    let resp = r.respond();
    assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    assert_eq!(resp.extensions().get::<Refused>().unwrap().by, "upstream");
}

#[test]
fn every_refusal_carries_its_marker() {
    let r = Refusal::AuditUnavailable.respond();
    let m = r.extensions().get::<Refused>().unwrap();
    assert_eq!((m.by, m.code), ("audit", 503));
    assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    // Forwarded and maybe carried out: nothing invites the client to send it again.
    let r = Refusal::AuditUnrecorded.respond();
    let m = r.extensions().get::<Refused>().unwrap();
    assert_eq!(
        (m.by, m.code, m.reason.as_str()),
        ("audit", 500, "InternalError")
    );
    assert!(r.headers().get(header::RETRY_AFTER).is_none());
    let r = Refusal::Unauthenticated(Failure::NoCredentials).respond();
    let m = r.extensions().get::<Refused>().unwrap();
    assert!(m.unauthenticated);
    assert_eq!(
        (m.by, m.code, m.message.as_str()),
        ("authn", 401, "Unauthorized")
    );
}
