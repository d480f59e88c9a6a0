//! kube-apiserver's impersonation filter
//! (`apiserver:pkg/endpoints/filters/impersonation.go`), run after authentication and before
//! authorization.
//!
//! Accepts `Impersonate-User` (a `system:serviceaccount:<ns>:<name>` user is checked as that
//! ServiceAccount), `Impersonate-Group` (repeated), `Impersonate-Uid` and
//! `Impersonate-Extra-<key>` (key lower-cased then percent-decoded). Each is checked with verb
//! `impersonate` on `users` / `serviceaccounts` / `groups` (core group) or
//! `userextras/<key>` / `uids` (`authentication.k8s.io`), the name being the value. Rejects:
//! groups, uid or extras without a user (400), any check the caller fails (403, upstream's
//! wording for that check). The request then runs as the impersonated identity, with
//! `system:authenticated` added (or `system:unauthenticated` for `system:anonymous`).

use std::collections::BTreeMap;

use http::HeaderMap;

use super::{
    rbac::{self, Attrs, User},
    store::Store,
};
use portcullis::k8s::Status;

/// The header's values as text: their bytes as UTF-8, as Go reads a header's bytes (`josé`
/// travels so). A value that is not UTF-8 is refused, never skipped: a skipped
/// `Impersonate-User` would run the request as the caller itself.
fn header_values<'a>(h: &'a HeaderMap, name: &str) -> Result<Vec<&'a str>, Status> {
    h.get_all(name).iter().map(|v| text(name, v)).collect()
}

fn text<'a>(name: &str, v: &'a http::HeaderValue) -> Result<&'a str, Status> {
    std::str::from_utf8(v.as_bytes())
        .map_err(|_| Status::bad_request(format!("{name} is not valid UTF-8")))
}

/// Go's `url.PathUnescape`, falling back to the raw key on a malformed escape.
fn unescape(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return key.to_string(),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_string())
}

fn extras(h: &HeaderMap) -> Result<BTreeMap<String, Vec<String>>, Status> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in h {
        // HeaderName is already lower-case, as Go's lower-casing of the suffix.
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-") {
            let v = text(name.as_str(), value)?;
            out.entry(unescape(key)).or_default().push(v.to_string());
        }
    }
    Ok(out)
}

fn check(store: &Store, caller: &User, a: Attrs) -> Result<(), Status> {
    let d = rbac::authorize(store, caller, &a);
    if d.allowed {
        Ok(())
    } else {
        Err(rbac::forbidden(caller, &a, &d.reason))
    }
}

fn attrs(group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attrs {
    Attrs {
        resource_request: true,
        verb: "impersonate".into(),
        group: group.into(),
        version: "v1".into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        name: name.into(),
        path: String::new(),
    }
}

/// The identity the request runs as: `caller`, or whom it may and does impersonate.
pub fn apply(store: &Store, caller: User, h: &HeaderMap) -> Result<User, Status> {
    let user = header_values(h, "impersonate-user")?.first().copied();
    let groups: Vec<String> = header_values(h, "impersonate-group")?
        .into_iter()
        .map(str::to_string)
        .collect();
    let uid = header_values(h, "impersonate-uid")?.first().copied();
    let extra = extras(h)?;
    let Some(name) = user else {
        if groups.is_empty() && uid.is_none() && extra.is_empty() {
            return Ok(caller);
        }
        let mut asked: Vec<String> = groups.iter().map(|g| format!("Group {g}")).collect();
        asked.extend(extra.keys().map(|k| format!("UserExtra {k}")));
        asked.extend(uid.map(|u| format!("UID {u}")));
        return Err(Status::bad_request(format!(
            "requested [{}] without impersonating a user",
            asked.join(" ")
        )));
    };
    let mut out = User {
        name: name.to_string(),
        uid: uid.unwrap_or("").to_string(),
        groups: groups.clone(),
        extra: extra.clone(),
    };
    match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => {
            check(store, &caller, attrs("", "serviceaccounts", "", ns, sa))?;
            if groups.is_empty() {
                out.groups = vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{ns}"),
                ];
            }
        }
        None => check(store, &caller, attrs("", "users", "", "", name))?,
    }
    for g in &groups {
        check(store, &caller, attrs("", "groups", "", "", g))?;
    }
    for (key, values) in &extra {
        for v in values {
            let a = attrs("authentication.k8s.io", "userextras", key, "", v);
            check(store, &caller, a)?;
        }
    }
    if let Some(u) = uid {
        check(
            store,
            &caller,
            attrs("authentication.k8s.io", "uids", "", "", u),
        )?;
    }
    let has = |g: &str| out.groups.iter().any(|x| x == g);
    if name == "system:anonymous" {
        if !has("system:unauthenticated") {
            out.groups.push("system:unauthenticated".into());
        }
    } else if !has("system:authenticated") && !has("system:unauthenticated") {
        out.groups.push("system:authenticated".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_keys_decoded_like_go() {
        assert_eq!(unescape("portcullis.io%2ftenant"), "portcullis.io/tenant");
        assert_eq!(unescape("bad%zz"), "bad%zz");
    }

    /// A name beyond ASCII travels as its UTF-8 bytes and is taken as that name; a value that
    /// is not UTF-8 is refused — never skipped, which would run the request as the caller.
    #[test]
    fn utf8_names_are_taken_and_other_bytes_refused() {
        let store = Store::new();
        let proxy = User::new(
            "system:serviceaccount:portcullis:portcullis",
            &["system:serviceaccounts", "system:authenticated"],
        );
        let mut h = HeaderMap::new();
        h.insert("impersonate-user", "josé".parse().unwrap());
        h.append("impersonate-group", "Équipe".parse().unwrap());
        let u = apply(&store, proxy.clone(), &h).unwrap();
        assert_eq!(u.name, "josé");
        assert_eq!(u.groups, ["Équipe", "system:authenticated"]);
        let mut h = HeaderMap::new();
        h.insert(
            "impersonate-user",
            http::HeaderValue::from_bytes(b"jos\xe9").unwrap(),
        );
        assert_eq!(apply(&store, proxy, &h).unwrap_err().code, 400);
    }

    #[test]
    fn impersonation_checked_per_item() {
        let store = Store::new();
        let proxy = User::new(
            "system:serviceaccount:portcullis:portcullis",
            &["system:serviceaccounts", "system:authenticated"],
        );
        let mut h = HeaderMap::new();
        h.insert("impersonate-user", "alice".parse().unwrap());
        h.append("impersonate-group", "tenant:team-a".parse().unwrap());
        h.insert(
            "impersonate-extra-portcullis.io%2ftenant",
            "team-a".parse().unwrap(),
        );
        let u = apply(&store, proxy.clone(), &h).unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(u.groups, ["tenant:team-a", "system:authenticated"]);
        assert_eq!(u.extra["portcullis.io/tenant"], ["team-a"]);
        // An extra key the impersonator role does not name.
        h.insert("impersonate-extra-scopes", "x".parse().unwrap());
        let e = apply(&store, proxy.clone(), &h).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            r#"userextras.authentication.k8s.io "x" is forbidden: User "system:serviceaccount:portcullis:portcullis" cannot impersonate resource "userextras/scopes" in API group "authentication.k8s.io" at the cluster scope"#
        );
        // Someone without the role.
        let mut h = HeaderMap::new();
        h.insert("impersonate-user", "admin".parse().unwrap());
        let e = apply(&store, User::new("alice", &["system:authenticated"]), &h).unwrap_err();
        assert_eq!(
            e.message,
            r#"users "admin" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        let mut h = HeaderMap::new();
        h.insert("impersonate-group", "x".parse().unwrap());
        assert_eq!(apply(&store, proxy, &h).unwrap_err().code, 400);
    }
}
