//! Secrets of type `kubernetes.io/service-account-token`: authorized as a TokenRequest too.
//!
//! The API server's token controller fills such a Secret with a token that never expires for
//! the service account its `kubernetes.io/service-account.name` annotation names. That token
//! works against the API server directly, outside the proxy, its limits and its audit: the
//! capability `create` on `serviceaccounts/token` gives, which a tenant's wildcards never
//! reach (`authz/escalation.rs`). So a write of such a Secret — a create, or an update / patch
//! whose result has that type (which also covers re-pointing an existing one at another
//! service account) — needs, besides the write itself, `create` on `serviceaccounts/token`
//! for the named service account in the Secret's namespace, as the authorizer judges it
//! (grants keep RBAC's meaning, where `*` covers it; a tenant rule must name the subresource).
//! So does any Secret write whose body or result carries the `kubernetes.io/service-account.name`
//! annotation, whatever its type: a patch or apply judged while the Secret was Opaque or absent
//! could otherwise land on a token Secret created in between and re-point it (a judged patch
//! is pinned to the version it was judged on, but an apply that creates has no version).
//! An update or patch that keeps an existing token Secret's type and account needs nothing
//! more, unless it removes (or empties) the `kubernetes.io/legacy-token-invalid-since` label
//! the API server's cleaner put on an unused token: that re-activates a token the API server
//! refuses — minting, for a caller who may read the Secret. (Clearing `data.token` is not: the
//! token controller fills in a new token under the same label.)
//!
//! The authorize layer marks a core `secrets` create / update / patch of a caller who may not
//! mint a token for every service account of the namespace with [`TokenSecrets`]; the sanitize
//! stage then reads the body even where `inspect: false` (and decodes protobuf, refuses CBOR
//! with 415 as for any judged write), fetches the current object of a patch, and judges the
//! result here. Refuses with 403 `Forbidden` worded as the authorizer's refusal of the
//! TokenRequest, with the reason appended; the API server never sees the write. Requests
//! without the marker (and Secrets of any other type) pass.

use std::{borrow::Cow, fmt, sync::Arc};

use serde_json::Value;

use crate::{authn::Identity, authz::forbidden, k8s::request::RequestInfo, refusal::Refusal};

/// The Secret type the token controller fills in.
pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// The annotation naming the service account whose token it gets.
pub const SERVICE_ACCOUNT: &str = "kubernetes.io/service-account.name";

/// Request extension set by the authorize layer: this Secret write needs the caller to be
/// allowed `create` on `serviceaccounts/token` for the service account it names, if it is a
/// token Secret. The check answers for one service account name.
#[derive(Clone)]
pub struct TokenSecrets {
    may_mint: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl fmt::Debug for TokenSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecrets")
    }
}

impl TokenSecrets {
    pub fn new(may_mint: impl Fn(&str) -> bool + Send + Sync + 'static) -> TokenSecrets {
        TokenSecrets {
            may_mint: Arc::new(may_mint),
        }
    }

    /// Refuse when one of `objects` (what the write would store) is a token Secret for a
    /// service account the caller may not mint tokens for.
    pub fn check(
        &self,
        objects: &[Cow<'_, Value>],
        current: Option<&Value>,
        info: &RequestInfo,
        id: &Identity,
    ) -> Result<(), Refusal> {
        let named_in = |o: &Value| {
            o.pointer("/metadata/annotations")
                .and_then(|a| a.get(SERVICE_ACCOUNT))
                .cloned()
        };
        let type_of = |o: &Value| o.get("type").and_then(Value::as_str).map(str::to_owned);
        for o in objects {
            // A Secret left as it was — same type, same account — mints nothing new (an
            // edit of a token Secret made by someone who may mint for its account); whether
            // it re-activates the token is `check_reactivation`'s.
            if current.is_some_and(|c| type_of(c) == type_of(o) && named_in(c) == named_in(o)) {
                continue;
            }
            let token = o.get("type").and_then(Value::as_str) == Some(TOKEN_TYPE);
            let named = o
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(SERVICE_ACCOUNT));
            // Absent or not a string: the API server refuses a token Secret anyway; "" matches
            // only a rule without resource names.
            let sa = named.and_then(Value::as_str).unwrap_or("");
            // The annotation alone counts too: a patch or apply judged while the Secret was
            // of another type (or absent) may land on a token Secret created in between, and
            // re-point it.
            if (token || named.is_some()) && !(self.may_mint)(sa) {
                let mint = token_request(info, sa);
                let why = if token {
                    format!("a Secret of type {TOKEN_TYPE} gets a token for service account {sa:?}")
                } else {
                    format!("a Secret naming service account {sa:?} in {SERVICE_ACCOUNT} would get its token as a {TOKEN_TYPE}")
                };
                return Err(Refusal::Forbidden(Box::new(forbidden(id, &mint, &why))));
            }
        }
        Ok(())
    }

    /// Refuse re-activating a token the API server invalidated: `current` carries the
    /// legacy-token cleaner's label and `result` (what the write would store) does not —
    /// removed or emptied, or, for a server-side apply by `reapplying` (a manager whose earlier
    /// apply owns the label), left out of the configuration, which removes it. Any token Secret
    /// counts (the type and account checks above decide who may hold one); adding the label
    /// (revoking) or changing the token passes — a cleared token is refilled by the token
    /// controller, but under the same label, so nothing usable appears that was not before.
    pub fn check_reactivation(
        &self,
        current: &Value,
        result: &Value,
        reapplying: Option<(&Value, &str)>,
        info: &RequestInfo,
        id: &Identity,
    ) -> Result<(), Refusal> {
        if current.get("type").and_then(Value::as_str) != Some(TOKEN_TYPE) || !invalidated(current)
        {
            return Ok(());
        }
        // A re-apply that leaves the label out may remove it: if its manager applied it, or
        // (newer API servers) applied another label that no one else's set reaches
        // (`judge/reapply.rs`).
        let dropped_by_apply = reapplying.is_some_and(|(config, manager)| {
            super::judge::may_remove_field(
                current,
                config,
                manager,
                &["metadata", "labels", INVALID_SINCE],
            )
        });
        if invalidated(result) && !dropped_by_apply {
            return Ok(());
        }
        let sa = current
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(SERVICE_ACCOUNT))
            .and_then(Value::as_str)
            .unwrap_or("");
        if (self.may_mint)(sa) {
            return Ok(());
        }
        let why = format!(
            "removing {INVALID_SINCE} re-activates the invalidated token of service account {sa:?}"
        );
        let mint = token_request(info, sa);
        Err(Refusal::Forbidden(Box::new(forbidden(id, &mint, &why))))
    }
}

/// The cleaner's label on `o`, as written.
fn label(o: &Value) -> Option<&Value> {
    o.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get(INVALID_SINCE))
}

/// Whether the API server refuses `o`'s token: the label is there and not empty
/// (`legacy.go`'s `invalidSince != ""`). A value that is not a string counts as no label (the
/// API server refuses such a write anyway).
fn invalidated(o: &Value) -> bool {
    label(o)
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty())
}

/// The label the API server's legacy-token cleaner sets on a token Secret unused for a year:
/// the API server refuses its token while it is there, and removing it re-activates the token.
pub const INVALID_SINCE: &str = "kubernetes.io/legacy-token-invalid-since";

/// Whether a request is a write the marker applies to: create, update or patch of a core
/// `secrets` object (no subresource).
pub fn is_secret_write(info: &RequestInfo) -> bool {
    info.is_resource_request
        && info.api_group.is_empty()
        && info.resource == "secrets"
        && info.subresource.is_empty()
        && matches!(info.verb.as_str(), "create" | "update" | "patch")
}

/// The TokenRequest a token Secret for `service_account` amounts to, in `info`'s namespace.
pub fn token_request(info: &RequestInfo, service_account: &str) -> RequestInfo {
    let mut r = info.clone();
    r.verb = "create".into();
    r.api_group = String::new();
    r.resource = "serviceaccounts".into();
    r.subresource = "token".into();
    r.name = service_account.to_owned();
    r.parts = vec![
        "serviceaccounts".into(),
        service_account.to_owned(),
        "token".into(),
    ];
    // Core group only (`is_secret_write`): `/api/v1/…`.
    r.path = format!(
        "/{}/{}/namespaces/{}/serviceaccounts/{service_account}/token",
        info.api_prefix, info.api_version, info.namespace
    );
    r.field_selector = None;
    r.label_selector = None;
    r
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::k8s::request::classify;

    fn info(method: &str, uri: &str) -> RequestInfo {
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        classify(&m, &uri.parse().unwrap(), &http::HeaderMap::new()).unwrap()
    }

    fn id() -> Identity {
        crate::authz::tests::id("alice", &["tenant:t"])
    }

    #[test]
    fn only_core_secret_writes_are_marked() {
        assert!(is_secret_write(&info(
            "POST",
            "/api/v1/namespaces/t/secrets"
        )));
        assert!(is_secret_write(&info(
            "PUT",
            "/api/v1/namespaces/t/secrets/s"
        )));
        assert!(is_secret_write(&info(
            "PATCH",
            "/api/v1/namespaces/t/secrets/s"
        )));
        assert!(!is_secret_write(&info(
            "GET",
            "/api/v1/namespaces/t/secrets/s"
        )));
        assert!(!is_secret_write(&info(
            "DELETE",
            "/api/v1/namespaces/t/secrets/s"
        )));
        assert!(!is_secret_write(&info(
            "POST",
            "/api/v1/namespaces/t/configmaps"
        )));
        assert!(!is_secret_write(&info(
            "POST",
            "/apis/x.io/v1/namespaces/t/secrets"
        )));
    }

    #[test]
    fn the_token_request_is_the_one_the_authorizer_would_see() {
        let r = token_request(&info("POST", "/api/v1/namespaces/t/secrets"), "builder");
        let want = info("POST", "/api/v1/namespaces/t/serviceaccounts/builder/token");
        assert_eq!(r, want);
    }

    #[test]
    fn only_a_token_secret_for_an_unmintable_account_is_refused() {
        let guard = TokenSecrets::new(|sa| sa == "ok");
        let i = info("POST", "/api/v1/namespaces/t/secrets");
        let secret = |ty: &str, sa: &str| json!({"metadata": {"name": "s", "annotations": {SERVICE_ACCOUNT: sa}}, "type": ty});
        let pass = |v: Value| guard.check(&[Cow::Owned(v)], None, &i, &id()).is_ok();
        assert!(pass(json!({"metadata": {"name": "s"}, "type": "Opaque"})));
        assert!(pass(secret("Opaque", "ok")));
        // The annotation alone, for an account not mintable: refused whatever the type.
        assert!(!pass(secret("Opaque", "admin")));
        assert!(pass(secret(TOKEN_TYPE, "ok")));
        assert!(!pass(secret(TOKEN_TYPE, "admin")));
        assert!(!pass(json!({"type": TOKEN_TYPE})), "no annotation: refused");
        // Every object judged counts (an apply patch: the configuration and the merged result).
        let both = [
            Cow::Owned(secret("Opaque", "ok")),
            Cow::Owned(secret(TOKEN_TYPE, "admin")),
        ];
        // An edit that keeps an existing token Secret's type and account passes.
        let admin = secret(TOKEN_TYPE, "admin");
        let mut relabelled = admin.clone();
        relabelled["metadata"]["labels"] = json!({"x": "y"});
        assert!(guard
            .check(&[Cow::Owned(relabelled)], Some(&admin), &i, &id())
            .is_ok());
        assert!(
            guard
                .check(
                    &[Cow::Owned(secret(TOKEN_TYPE, "root"))],
                    Some(&admin),
                    &i,
                    &id()
                )
                .is_err(),
            "re-pointed"
        );
        let Err(Refusal::Forbidden(f)) = guard.check(&both, None, &i, &id()) else {
            panic!("refused as Forbidden")
        };
        let text = format!("{f:?}");
        assert!(
            text.contains(r#"cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"t\": a Secret of type kubernetes.io/service-account-token gets a token for service account \"admin\""#),
            "{text}"
        );
    }

    /// Removing or emptying the cleaner's label re-activates a token the API server refuses:
    /// minting, for a caller who may not mint for the account; so is a re-apply leaving out a
    /// label its manager applied. Adding the label, changing other labels or the token pass.
    #[test]
    fn re_activating_an_invalidated_token_is_minting() {
        let guard = TokenSecrets::new(|sa| sa == "ok");
        let i = info("PATCH", "/api/v1/namespaces/t/secrets/s");
        let stored = |sa: &str, label: Option<&str>| {
            let mut v = json!({"apiVersion": "v1", "metadata": {"name": "s", "annotations": {SERVICE_ACCOUNT: sa},
                "labels": {"x": "y"}}, "type": TOKEN_TYPE, "data": {"token": "ZXlK"}});
            if let Some(l) = label {
                v["metadata"]["labels"][INVALID_SINCE] = json!(l);
            }
            v
        };
        let check = |cur: &Value, result: &Value, reapplying: Option<(&Value, &str)>| {
            guard.check_reactivation(cur, result, reapplying, &i, &id())
        };
        let invalid = stored("admin", Some("2026-01-01"));
        for (what, result) in [
            ("removed", stored("admin", None)),
            ("emptied", stored("admin", Some(""))),
        ] {
            let Err(Refusal::Forbidden(f)) = check(&invalid, &result, None) else {
                panic!("{what}: refused as Forbidden")
            };
            let text = format!("{f:?}");
            assert!(
                text.contains(
                    "re-activates the invalidated token of service account \\\"admin\\\""
                ),
                "{text}"
            );
        }
        // Someone who may mint for the account may re-activate it.
        assert!(check(&stored("ok", Some("2026-01-01")), &stored("ok", None), None).is_ok());
        // Revoking, relabelling, replacing or clearing the token: nothing usable appears.
        assert!(check(&stored("admin", None), &invalid, None).is_ok());
        let mut other = invalid.clone();
        other["metadata"]["labels"]["x"] = json!("z");
        other["data"] = json!({});
        assert!(check(&invalid, &other, None).is_ok());
        // A re-apply leaving out the label its manager applied removes it.
        let mut applied = invalid.clone();
        applied["metadata"]["managedFields"] = json!([{"manager": "m", "operation": "Apply",
            "apiVersion": "v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {format!("f:{INVALID_SINCE}"): {}}}}}]);
        let config = json!({"metadata": {"name": "s", "labels": {"x": "z"}}, "type": TOKEN_TYPE});
        assert!(check(&applied, &applied, Some((&config, "m"))).is_err());
        assert!(check(&applied, &applied, Some((&config, "other"))).is_ok());
        assert!(check(&invalid, &invalid, Some((&config, "m"))).is_ok());
        // Newer API servers: a manager that applied another label, re-applying with no labels,
        // removes the whole map when no other entry reaches it — the cleaner's label with it.
        let mut other_label = invalid.clone();
        other_label["metadata"]["managedFields"] = json!([{"manager": "m", "operation": "Apply",
            "apiVersion": "v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:x": {}}}}}]);
        let unlabelled = json!({"metadata": {"name": "s"}, "type": TOKEN_TYPE});
        assert!(check(&other_label, &other_label, Some((&unlabelled, "m"))).is_err());
        // The cleaner's own entry reaches the map: it stays.
        other_label["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .push(
                json!({"manager": "legacy-token-cleaner", "operation": "Update",
                "apiVersion": "v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {format!("f:{INVALID_SINCE}"): {}}}}}),
            );
        assert!(check(&other_label, &other_label, Some((&unlabelled, "m"))).is_ok());
        // Not a token Secret: nothing to re-activate.
        let mut opaque = invalid.clone();
        opaque["type"] = json!("Opaque");
        assert!(check(&opaque, &stored("admin", None), None).is_ok());
    }
}
