//! `record_sessions`: which exec / attach sessions are recorded (`Authorizer::records_session`).

use super::tests::{id, parse, req, SPDY, WS};
use super::*;

const POLICY: &str = r#"
authorization:
  tenants:
    - name: team-a
      namespaces: [team-a]
      subjects: [{group: "tenant:team-a"}]
      record_sessions: true
      rules:
        - {verbs: ["*"], api_groups: [""], resources: [pods, pods/exec, pods/attach]}
    - name: team-b
      namespaces: [team-b]
      subjects: [{group: "tenant:team-b"}]
      rules:
        - {verbs: ["*"], api_groups: [""], resources: [pods, pods/exec]}
  grants:
    - name: admins
      subjects: [{group: admins}]
      rules:
        - {namespaces: ["*"], verbs: ["*"], api_groups: ["*"], resources: ["*"]}
    - name: oncall-exec
      subjects: [{group: oncall}]
      record_sessions: true
      rules:
        - {namespaces: [team-b], verbs: [create], api_groups: [""], resources: [pods/exec]}
"#;

fn records(groups: &[&str], method: &str, uri: &str, hdrs: &[(&str, &str)]) -> bool {
    let a = build(&parse(POLICY), "authorization").expect("valid policy");
    let r = req(method, uri, hdrs);
    let who = id("u", groups);
    assert!(a.authorize(&who, &r).allowed, "{groups:?} {uri}");
    a.records_session(&who, &r)
}

const EXEC_B: &str = "/api/v1/namespaces/team-b/pods/p/exec?command=sh";

#[test]
fn a_recording_tenant_or_grant_records_the_sessions_it_allows() {
    // Per tenant: team-a's exec and attach, over WebSocket or SPDY.
    assert!(records(
        &["tenant:team-a"],
        "GET",
        "/api/v1/namespaces/team-a/pods/p/exec?command=sh",
        WS
    ));
    assert!(records(
        &["tenant:team-a"],
        "POST",
        "/api/v1/namespaces/team-a/pods/p/attach?stdin=true",
        SPDY
    ));
    // Per grant: oncall's exec in team-b; team-b's own exec is not recorded.
    assert!(records(&["oncall"], "POST", EXEC_B, SPDY));
    assert!(!records(&["tenant:team-b"], "POST", EXEC_B, SPDY));
    // Off by default: admins' grant does not record.
    assert!(!records(&["admins"], "POST", EXEC_B, SPDY));
}

#[test]
fn another_grant_allowing_the_same_session_does_not_switch_recording_off() {
    // admins comes first and allows it without recording; oncall also allows it and records.
    assert!(records(&["admins", "oncall"], "POST", EXEC_B, SPDY));
    assert!(records(&["tenant:team-b", "oncall"], "GET", EXEC_B, WS));
}

#[test]
fn only_exec_and_attach_sessions_are_recorded() {
    assert!(!records(
        &["tenant:team-a"],
        "GET",
        "/api/v1/namespaces/team-a/pods/p",
        WS
    ));
    assert!(!records(
        &["tenant:team-a"],
        "GET",
        "/api/v1/namespaces/team-a/pods",
        &[]
    ));
    // A recording grant that does not allow the session records nothing.
    assert!(!records(
        &["admins", "oncall"],
        "POST",
        "/api/v1/namespaces/team-a/pods/p/exec?command=sh",
        SPDY
    ));
}
