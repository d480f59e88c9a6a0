//! A client's own impersonation (`kubectl --as / --as-group / --as-uid / --as-user-extra`):
//! the `Impersonate-*` headers it sends, checked as kube-apiserver's impersonation filter
//! checks them (`apiserver:pkg/endpoints/filters/impersonation.go`), but against the proxy's
//! grants ∩ the caller's token scope instead of RBAC.
//!
//! Accepts `Impersonate-User` (a `system:serviceaccount:<ns>:<name>` user is checked as that
//! service account), `Impersonate-Group` (repeated), `Impersonate-Uid` and
//! `Impersonate-Extra-<key>` (key lower-cased, then percent-decoded), each checked with verb
//! `impersonate` on `users` / `serviceaccounts` / `groups` (core group) or `uids` /
//! `userextras/<key>` (`authentication.k8s.io`), the value being the resource name — so a
//! grant narrows them with `resource_names`, as RBAC does. A `system:` user or group (and any
//! service account) is only allowed by a rule whose `resource_names` names it. The extra keys
//! the proxy itself sends (`portcullis.io/tenant`, `portcullis.io/token-id`) are never
//! impersonable: they would forge the proxy's own statements.
//!
//! An empty `Impersonate-User` is no user, as in the API server (alone: no impersonation).
//! The reserved extra keys are compared case-insensitively (header names are lower-cased on
//! the way out).
//!
//! Rejects: groups, uid or extras without a user, a value that is not text or that starts or
//! ends with whitespace (an HTTP/1.1 hop would trim it, past the checks made on the padded
//! form) (400 `BadRequest`, `Refusal::BadImpersonation`); any check the grants refuse (403 `Forbidden`
//! worded as the API server: `users "bob" is forbidden: User "alice" cannot impersonate
//! resource "users" in API group "" at the cluster scope`). The client's headers are never
//! forwarded (`k8s::headers::strip_identity`); an allowed request runs — is authorized, rate
//! limited and forwarded — as the impersonated identity, whose token scope stays the caller's.

use std::collections::BTreeMap;

use http::HeaderMap;

use super::identity::{Identity, TENANT_EXTRA, TOKEN_ID_EXTRA};
use crate::{
    authz::{engine::OUTSIDE_SCOPE, forbidden, Authorizer},
    k8s::request::RequestInfo,
    refusal::Refusal,
};

/// What the headers ask for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Asked {
    user: Option<String>,
    groups: Vec<String>,
    uid: Option<String>,
    extra: BTreeMap<String, Vec<String>>,
}

fn text(v: &http::HeaderValue) -> Result<String, Refusal> {
    // Its bytes as UTF-8 (a non-ASCII name travels so), not `to_str`, which takes ASCII only.
    let s = std::str::from_utf8(v.as_bytes()).map_err(|_| {
        Refusal::BadImpersonation("an Impersonate-* header value is not valid text".into())
    })?;
    if !super::identity::forwards_intact(s) {
        return Err(Refusal::BadImpersonation(
            "an Impersonate-* header value holds a control or invisible character, or starts or ends with whitespace".into(),
        ));
    }
    Ok(s.to_owned())
}

fn asked(h: &HeaderMap) -> Result<Asked, Refusal> {
    let mut a = Asked::default();
    let (mut user_seen, mut uid_seen) = (false, false);
    for (name, value) in h {
        let n = name.as_str(); // lower-case, as Go's canonical form lower-cased
        match n {
            // The first value, as Go's `Header.Get`; an empty one is no user (the filter's
            // `hasUser := len(...) > 0`), not a user named "".
            "impersonate-user" if !user_seen => {
                user_seen = true;
                a.user = Some(text(value)?).filter(|u| !u.is_empty());
            }
            "impersonate-group" => a.groups.push(text(value)?),
            // The first value too; an empty one is no uid (`hasUID := len(...) > 0`).
            "impersonate-uid" if !uid_seen => {
                uid_seen = true;
                a.uid = Some(text(value)?).filter(|u| !u.is_empty());
            }
            _ => {
                if let Some(key) = n.strip_prefix("impersonate-extra-") {
                    a.extra.entry(unescape(key)).or_default().push(text(value)?);
                }
            }
        }
    }
    Ok(a)
}

/// Go's `url.PathUnescape`, falling back to the raw key on a malformed escape (as the filter).
fn unescape(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            // Two hex digits, as Go's `ishex` (`from_str_radix` alone would take `+f`).
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(decoded) => {
                    out.push(decoded);
                    i += 3;
                    continue;
                }
                None => return key.to_owned(),
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_owned())
}

/// The namespace and name of a service account's username, as `serviceaccount.SplitUsername`
/// reads it: `system:serviceaccount:<namespace>:<name>` with exactly those two parts, a valid
/// namespace (DNS-1123 label) and name (DNS-1123 subdomain). Anything else is a user name (the
/// API server impersonates it as a user, without the service-account groups).
pub fn service_account(user: &str) -> Option<(&str, &str)> {
    let (ns, name) = user
        .strip_prefix(super::identity::SERVICE_ACCOUNT_PREFIX)?
        .split_once(':')?;
    let subdomain = name.len() <= 253 && name.split('.').all(|l| dns_label(l, usize::MAX));
    (dns_label(ns, 63) && !name.contains(':') && subdomain).then_some((ns, name))
}

/// A DNS-1123 label of at most `max` bytes: `a-z 0-9 -`, starting and ending alphanumeric
/// (the parts of a subdomain have no length limit of their own).
fn dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    (1..=max).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// One `impersonate` check, as the filter builds it.
fn check(group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> RequestInfo {
    RequestInfo {
        is_resource_request: true,
        verb: "impersonate".into(),
        api_prefix: "apis".into(),
        api_group: group.into(),
        api_version: "v1".into(),
        namespace: ns.into(),
        resource: resource.into(),
        subresource: sub.into(),
        name: name.into(),
        ..RequestInfo::default()
    }
}

/// The identity `caller` runs as: `None` when it asks for no impersonation, the impersonated
/// identity when every item is allowed, or the refusal.
pub fn impersonate(
    authorizer: &Authorizer,
    caller: &Identity,
    h: &HeaderMap,
) -> Result<Option<Identity>, Refusal> {
    if !h.keys().any(|n| n.as_str().starts_with("impersonate-")) {
        return Ok(None);
    }
    let a = asked(h)?;
    if a == Asked::default() {
        // Only an empty Impersonate-User: the API server impersonates nobody either.
        return Ok(None);
    }
    let Some(user) = a.user.clone() else {
        let mut items: Vec<String> = a.groups.iter().map(|g| format!("Group {g}")).collect();
        items.extend(a.extra.keys().map(|k| format!("UserExtra {k}")));
        items.extend(a.uid.iter().map(|u| format!("UID {u}")));
        return Err(Refusal::BadImpersonation(format!(
            "requested [{}] without impersonating a user",
            items.join(" ")
        )));
    };
    let allow = |info: RequestInfo, system: bool, reserved: bool| -> Result<(), Refusal> {
        let d = authorizer.authorize_impersonation(caller, &info, system);
        if d.allowed && !reserved {
            return Ok(());
        }
        tracing::info!(user = %caller.user, resource = %info.resource, name = %info.name, reason = %d.reason, reserved, "impersonation refused");
        let why = if reserved {
            "the proxy sets this extra itself"
        } else if d.reason == OUTSIDE_SCOPE {
            OUTSIDE_SCOPE
        } else {
            ""
        };
        Err(Refusal::Forbidden(Box::new(forbidden(caller, &info, why))))
    };
    let mut groups = a.groups.clone();
    match service_account(&user) {
        Some((ns, sa)) => {
            allow(check("", "serviceaccounts", "", ns, sa), true, false)?;
            if groups.is_empty() {
                groups = vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{ns}"),
                ];
            }
        }
        None => allow(
            check("", "users", "", "", &user),
            user.starts_with("system:"),
            false,
        )?,
    }
    for g in &a.groups {
        allow(
            check("", "groups", "", "", g),
            g.starts_with("system:"),
            false,
        )?;
    }
    for (key, values) in &a.extra {
        // Case-insensitive: a key with upper-case letters (`%50ortcullis.io%2ftenant`) loses
        // them on the way out (header names are lower-cased), arriving as ours.
        let reserved =
            key.eq_ignore_ascii_case(TENANT_EXTRA) || key.eq_ignore_ascii_case(TOKEN_ID_EXTRA);
        for v in values {
            let c = check("authentication.k8s.io", "userextras", key, "", v);
            allow(c, false, reserved)?;
        }
    }
    if let Some(uid) = &a.uid {
        allow(
            check("authentication.k8s.io", "uids", "", "", uid),
            false,
            false,
        )?;
    }
    let mut id = Identity {
        user,
        uid: a.uid.unwrap_or_default(),
        groups,
        extra: a.extra,
        tenant: None,
        // Still within the caller's token: a scope never widens, whoever the request runs as.
        scope: caller.scope.clone(),
        method: caller.method.clone(),
    };
    id.tenant = authorizer.tenant_of(&id);
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::AuthorizationConfig;

    fn policy() -> Authorizer {
        let yaml = r#"
tenants:
  - name: team-a
    namespaces: [team-a]
    subjects: [{group: "tenant:team-a"}]
grants:
  - name: admins
    subjects: [{group: admins}]
    rules:
      - {namespaces: ["*"], verbs: ["*"], api_groups: ["*"], resources: ["*"]}
  - name: oncall
    subjects: [{user: alice}]
    rules:
      - {verbs: [impersonate], api_groups: [""], resources: [users], resource_names: [bob, "system:kube-scheduler"]}
      - {verbs: [impersonate], api_groups: [""], resources: [groups], resource_names: ["tenant:team-a"]}
      - {verbs: [impersonate], api_groups: [authentication.k8s.io], resources: ["userextras/example.com/team"]}
      - {namespaces: [team-a], verbs: [impersonate], api_groups: [""], resources: [serviceaccounts], resource_names: [builder]}
"#;
        let cfg: AuthorizationConfig = serde_saphyr::from_str(yaml).unwrap();
        crate::authz::build(&cfg, "authorization").unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn refusal(r: Result<Option<Identity>, Refusal>) -> (u16, String) {
        let s = r.unwrap_err().status();
        (s.code, s.message)
    }

    /// `kubectl --as josé` sends the name's UTF-8 bytes; it is read as such, not refused as
    /// "not valid text".
    #[test]
    fn a_utf8_name_is_read_from_its_bytes() {
        let a = asked(&headers(&[
            ("impersonate-user", "josé"),
            ("impersonate-group", "Équipe"),
        ]))
        .unwrap();
        assert_eq!(a.user.as_deref(), Some("josé"));
        assert_eq!(a.groups, ["Équipe"]);
        let mut h = HeaderMap::new();
        h.insert(
            "impersonate-user",
            http::HeaderValue::from_bytes(b"jos\xe9").unwrap(),
        );
        assert!(asked(&h).is_err(), "not UTF-8");
    }

    #[test]
    fn no_headers_is_no_impersonation() {
        let alice = crate::authz::tests::id("alice", &[]);
        assert_eq!(
            impersonate(&policy(), &alice, &headers(&[("accept", "x")])).unwrap(),
            None
        );
    }

    #[test]
    fn named_grants_allow_and_the_identity_is_the_impersonated_one() {
        let p = policy();
        let alice = crate::authz::tests::id("alice", &[]);
        let h = headers(&[
            ("impersonate-user", "bob"),
            ("impersonate-group", "tenant:team-a"),
            ("impersonate-extra-example.com%2fteam", "a"),
        ]);
        let bob = impersonate(&p, &alice, &h).unwrap().unwrap();
        assert_eq!(bob.user, "bob");
        assert_eq!(bob.groups, ["tenant:team-a"]);
        assert_eq!(bob.extra["example.com/team"], ["a"]);
        assert_eq!(bob.tenant.as_deref(), Some("team-a"));
        // A system: user named in resource_names is allowed; a service account too.
        let h = headers(&[("impersonate-user", "system:kube-scheduler")]);
        assert!(impersonate(&p, &alice, &h).unwrap().is_some());
        let h = headers(&[("impersonate-user", "system:serviceaccount:team-a:builder")]);
        let sa = impersonate(&p, &alice, &h).unwrap().unwrap();
        assert_eq!(
            sa.groups,
            ["system:serviceaccounts", "system:serviceaccounts:team-a"]
        );
    }

    #[test]
    fn refusals_are_worded_as_the_apiserver() {
        let p = policy();
        let alice = crate::authz::tests::id("alice", &[]);
        let carol = refusal(impersonate(
            &p,
            &alice,
            &headers(&[("impersonate-user", "carol")]),
        ));
        assert_eq!(carol, (403, r#"users "carol" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#.into()));
        let uid = refusal(impersonate(
            &p,
            &alice,
            &headers(&[("impersonate-user", "bob"), ("impersonate-uid", "u1")]),
        ));
        assert_eq!(uid, (403, r#"uids.authentication.k8s.io "u1" is forbidden: User "alice" cannot impersonate resource "uids" in API group "authentication.k8s.io" at the cluster scope"#.into()));
        let sa = refusal(impersonate(
            &p,
            &alice,
            &headers(&[("impersonate-user", "system:serviceaccount:team-b:builder")]),
        ));
        assert_eq!(sa, (403, r#"serviceaccounts "builder" is forbidden: User "alice" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "team-b""#.into()));
        let no_user = refusal(impersonate(
            &p,
            &alice,
            &headers(&[("impersonate-group", "x")]),
        ));
        assert_eq!(
            no_user,
            (
                400,
                "requested [Group x] without impersonating a user".into()
            )
        );
    }

    #[test]
    fn wildcards_never_reach_system_identities_or_our_own_extras() {
        let p = policy();
        let admin = crate::authz::tests::id("root", &["admins"]);
        // `*` on `*` allows ordinary users and groups...
        let h = headers(&[("impersonate-user", "bob"), ("impersonate-group", "dev")]);
        assert!(impersonate(&p, &admin, &h).unwrap().is_some());
        // ...but not system:masters, a system: user, a service account or our extras.
        for h in [
            headers(&[
                ("impersonate-user", "bob"),
                ("impersonate-group", "system:masters"),
            ]),
            headers(&[("impersonate-user", "system:admin")]),
            headers(&[(
                "impersonate-user",
                "system:serviceaccount:kube-system:default",
            )]),
            headers(&[
                ("impersonate-user", "bob"),
                ("impersonate-extra-portcullis.io%2ftenant", "team-a"),
            ]),
            // Upper case, percent-encoded: lower-cased on the way out, it would arrive as ours.
            headers(&[
                ("impersonate-user", "bob"),
                ("impersonate-extra-%50ortcullis.io%2ftenant", "team-b"),
            ]),
            headers(&[
                ("impersonate-user", "bob"),
                ("impersonate-extra-portcullis.io%2fToken-ID", "t"),
            ]),
        ] {
            assert_eq!(refusal(impersonate(&p, &admin, &h)).0, 403, "{h:?}");
        }
    }

    #[test]
    fn an_empty_user_is_no_user_and_padded_values_are_refused() {
        let p = policy();
        let admin = crate::authz::tests::id("root", &["admins"]);
        // Alone, as the API server: no impersonation (the request runs as the caller).
        let h = headers(&[("impersonate-user", "")]);
        assert_eq!(impersonate(&p, &admin, &h).unwrap(), None);
        // With a group, as the API server: a group without a user.
        let h = headers(&[("impersonate-user", ""), ("impersonate-group", "dev")]);
        assert_eq!(refusal(impersonate(&p, &admin, &h)).0, 400);
        // Whitespace at either end would be trimmed by an HTTP/1.1 parser upstream: refused.
        for (k, v) in [
            ("impersonate-user", " bob"),
            ("impersonate-group", "system:masters "),
        ] {
            let mut h = headers(&[("impersonate-user", "bob")]);
            if k == "impersonate-user" {
                h.remove(k);
            }
            h.append(
                http::HeaderName::from_static(k),
                http::HeaderValue::from_str(v).unwrap(),
            );
            let (code, msg) = refusal(impersonate(&p, &admin, &h));
            assert_eq!(code, 400, "{k}: {v:?}");
            assert!(msg.contains("whitespace"), "{msg}");
        }
    }

    /// Extra keys are unescaped as Go's `url.PathUnescape`: two hex digits per escape, or the
    /// raw key.
    #[test]
    fn extra_keys_unescape_as_go_does() {
        assert_eq!(unescape("example.com%2fteam"), "example.com/team");
        assert_eq!(unescape("a%+fb"), "a%+fb");
        assert_eq!(unescape("a%-1b"), "a%-1b");
        assert_eq!(unescape("a%2"), "a%2");
    }

    /// An empty `Impersonate-Uid` is no uid (`hasUID := len(...) > 0`): alone it asks for no
    /// impersonation, beside a user it adds no `uids` check; only the first value counts.
    #[test]
    fn an_empty_uid_is_no_uid() {
        let p = policy();
        let alice = crate::authz::tests::id("alice", &[]);
        let h = headers(&[("impersonate-uid", "")]);
        assert_eq!(impersonate(&p, &alice, &h).unwrap(), None);
        // alice may impersonate bob but no uid: an empty one is none.
        let h = headers(&[("impersonate-user", "bob"), ("impersonate-uid", "")]);
        let id = impersonate(&p, &alice, &h).unwrap().unwrap();
        assert_eq!((id.user.as_str(), id.uid.as_str()), ("bob", ""));
        let h = headers(&[
            ("impersonate-user", "bob"),
            ("impersonate-uid", ""),
            ("impersonate-uid", "u-1"),
        ]);
        assert_eq!(impersonate(&p, &alice, &h).unwrap().unwrap().uid, "");
    }

    /// `serviceaccount.SplitUsername`: exactly a namespace and a name, both valid; anything
    /// else is a user (no service-account check, no service-account groups).
    #[test]
    fn service_account_usernames_are_split_as_the_api_server_splits_them() {
        assert_eq!(
            service_account("system:serviceaccount:team-a:builder"),
            Some(("team-a", "builder"))
        );
        assert_eq!(
            service_account("system:serviceaccount:team-a:my.app-1"),
            Some(("team-a", "my.app-1"))
        );
        for user in [
            "system:serviceaccount:team-a:a:b",
            "system:serviceaccount::builder",
            "system:serviceaccount:team-a:",
            "system:serviceaccount:Team-A:builder",
            "system:serviceaccount:team-a:-x",
            "system:serviceaccount:team-a",
            "bob",
        ] {
            assert_eq!(service_account(user), None, "{user}");
        }
        // Checked as a user: a `system:` user needs a rule naming it, which nobody has here.
        let p = policy();
        let alice = crate::authz::tests::id("alice", &[]);
        let h = headers(&[("impersonate-user", "system:serviceaccount:team-a:builder:x")]);
        let (code, msg) = refusal(impersonate(&p, &alice, &h));
        assert_eq!(code, 403);
        assert!(msg.contains("users"), "{msg}");
    }

    #[test]
    fn the_callers_scope_still_applies() {
        let p = policy();
        let mut alice = crate::authz::tests::id("alice", &[]);
        alice.scope = Some(crate::authz::Scope(vec![crate::authz::ScopeRule {
            verbs: vec!["get".into()],
            resources: vec!["pods".into()],
            ..Default::default()
        }]));
        let (code, msg) = refusal(impersonate(
            &p,
            &alice,
            &headers(&[("impersonate-user", "bob")]),
        ));
        assert_eq!(code, 403);
        assert!(msg.ends_with(": outside token scope"), "{msg}");
    }
}
