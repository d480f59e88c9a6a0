//! The authorization layer: may they.
//!
//! Accepts a request some configured grant (or tenant rule) allows for the caller, narrowed by
//! the token's scope (effective = grants ∩ scope, deny by default), judged on the one
//! classification. Tells the audit record the decision (`authorization.k8s.io/decision` and
//! `reason`). Rejects with 403 `Forbidden` worded as kube-apiserver's (`Refusal::Forbidden`;
//! only a scope denial appends `: outside token scope`), the deciding reason logged. A
//! server-side apply or a PUT by a caller who may patch / update but not create is marked
//! [`MustNotCreate`](super::create_guard::MustNotCreate) for `create_guard`; an exec / attach a
//! `record_sessions` tenant or grant allows is marked
//! [`RecordSession`](crate::audit::session::RecordSession) for the upgrade forwarder; a Secret
//! write of a caller who may not mint tokens for every service account of the namespace is
//! marked [`TokenSecrets`] for the sanitize stage (`sanitize/token_secret.rs`).

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{
    create_guard::{as_create, is_apply, MustNotCreate},
    engine::OUTSIDE_SCOPE,
    forbidden, Authorizer,
};
use crate::{
    audit::{session::RecordSession, AuditRecord},
    authn::Identity,
    body::Body,
    k8s::request::RequestInfo,
    refusal::Refusal,
    sanitize::token_secret::{self, TokenSecrets},
    service::{self, ResponseFuture},
};

#[derive(Clone)]
pub struct AuthzLayer {
    authorizer: Arc<Authorizer>,
}

impl AuthzLayer {
    pub fn new(authorizer: Arc<Authorizer>) -> AuthzLayer {
        AuthzLayer { authorizer }
    }
}

impl<S> Layer<S> for AuthzLayer {
    type Service = AuthzService<S>;
    fn layer(&self, inner: S) -> AuthzService<S> {
        AuthzService {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthzService<S> {
    inner: S,
    authorizer: Arc<Authorizer>,
}

impl<S> AuthzService<S> {
    /// A Secret write may be a token Secret (`sanitize/token_secret.rs`): unless the caller
    /// may mint tokens for every service account of the namespace (a rule without resource
    /// names allows the nameless TokenRequest), the sanitize stage checks the one it names.
    fn token_secrets(&self, identity: &Arc<Identity>, info: &RequestInfo) -> Option<TokenSecrets> {
        if !token_secret::is_secret_write(info) {
            return None;
        }
        if self
            .authorizer
            .authorize(identity, &token_secret::token_request(info, ""))
            .allowed
        {
            return None;
        }
        let (authorizer, identity, info) =
            (self.authorizer.clone(), identity.clone(), info.clone());
        Some(TokenSecrets::new(move |sa| {
            authorizer
                .authorize(&identity, &token_secret::token_request(&info, sa))
                .allowed
        }))
    }
}

impl<S, B> Service<Request<B>> for AuthzService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture {
        let (Some(info), Some(identity)) =
            (service::info(&req), req.extensions().get::<Arc<Identity>>())
        else {
            // Deny by default: without a classification and an identity nothing is allowed.
            return service::ready(Refusal::Panic.respond());
        };
        let decision = self.authorizer.authorize(identity, info);
        if let Some(rec) = req.extensions().get::<AuditRecord>() {
            rec.with(|r| r.decision(decision.allowed, &decision.reason));
        }
        if !decision.allowed {
            tracing::info!(user = %identity.user, verb = %info.verb, path = %info.path, reason = %decision.reason, "forbidden");
            // Only a scope denial says why (it helps the token's holder and reveals nothing
            // about policy).
            let why = if decision.reason == OUTSIDE_SCOPE {
                OUTSIDE_SCOPE
            } else {
                ""
            };
            let words = forbidden(identity, info, why);
            return service::ready(Refusal::Forbidden(Box::new(words)).respond());
        }
        // A server-side apply or a PUT may create: without `create` too, it must not
        // (`create_guard`). Through `/status` too: a kind whose strategy allows create on
        // update (a Service, a PodDisruptionBudget) is created by a write to the status of a
        // missing object, authorized by the API server as `create` on that subresource.
        let may_create = (info.subresource.is_empty() || status_creates(info))
            .then(|| match info.verb.as_str() {
                "patch" if is_apply(req.headers().get(http::header::CONTENT_TYPE)) => {
                    Some(MustNotCreate::Apply)
                }
                "update" => Some(MustNotCreate::Update),
                _ => None,
            })
            .flatten()
            .filter(|_| !self.may_create(identity, info));
        let record_session = self.authorizer.records_session(identity, info);
        let token_secrets = self.token_secrets(identity, info);
        if let Some(kind) = may_create {
            req.extensions_mut().insert(kind);
        }
        if let Some(marker) = token_secrets {
            req.extensions_mut().insert(marker);
        }
        if record_session {
            req.extensions_mut().insert(RecordSession);
        }
        service::boxed(self.inner.call(req))
    }
}

impl<S> AuthzService<S> {
    /// Whether `identity` may create what the write `info` names ([`as_create`]).
    fn may_create(&self, identity: &Identity, info: &RequestInfo) -> bool {
        self.authorizer
            .authorize(identity, &as_create(info))
            .allowed
    }
}

/// A write of `/status` that can create: the kinds whose status strategy keeps
/// `AllowCreateOnUpdate` (Services, PodDisruptionBudgets). Other kinds' status writes of a
/// missing object are 404, so they pay no guard (no read of the object as the caller).
fn status_creates(info: &RequestInfo) -> bool {
    info.subresource == "status"
        && matches!(
            (info.api_group.as_str(), info.resource.as_str()),
            ("", "services") | ("policy", "poddisruptionbudgets")
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        refusal::Refused,
        service::testing::{calls, classified, counting, send, text, TestBody},
    };

    fn as_user(mut req: Request<TestBody>, user: &str, groups: &[&str]) -> Request<TestBody> {
        req.extensions_mut()
            .insert(Arc::new(super::super::tests::id(user, groups)));
        req
    }

    #[tokio::test]
    async fn a_grant_lets_through_and_anything_else_is_403_worded_as_the_apiserver() {
        let (inner, seen) = counting::<TestBody>();
        let svc = AuthzLayer::new(Arc::new(super::super::tests::authorizer())).layer(inner.clone());
        let path = "/apis/apps/v1/namespaces/team-a/deployments/web";
        let ok = send(
            svc.clone(),
            as_user(classified("GET", path), "ci-bot", &["ci"]),
        )
        .await;
        assert_eq!(ok.status(), 200);
        let refused = send(svc, as_user(classified("DELETE", path), "ci-bot", &["ci"])).await;
        assert_eq!(refused.status(), 403);
        assert_eq!(refused.extensions().get::<Refused>().unwrap().by, "authz");
        let body = text(refused).await;
        assert!(
            body.contains(r#"deployments.apps \"web\" is forbidden: User \"ci-bot\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"team-a\""#),
            "{body}"
        );
        assert_eq!(calls(&seen), 1, "the refused request never went further");
    }

    /// A server-side apply or PUT of a namespace is judged as the cluster-wide create it is,
    /// like `POST /api/v1/namespaces`: a tenant whose rule names `namespaces` within its own
    /// `t-*` may change its namespaces but not create `t-new` (before, the apply was judged
    /// inside `t-new` itself, matched the glob and was forwarded unmarked).
    #[test]
    fn a_namespace_is_created_cluster_wide_whatever_the_path_names() {
        use serde_json::json;
        let cfg = json!({
            "tenants": [{"name": "t", "namespaces": ["t-*"], "subjects": [{"group": "tenant:t"}],
                "rules": [{"verbs": ["*"], "api_groups": [""], "resources": ["namespaces"]}]}],
            "grants": [{"name": "ops", "subjects": [{"group": "ops"}],
                "rules": [{"namespaces": ["*"], "verbs": ["*"], "api_groups": ["*"], "resources": ["*"]}]}]
        });
        let a =
            super::super::build(&serde_json::from_value(cfg).unwrap(), "authorization").unwrap();
        let svc = AuthzLayer::new(Arc::new(a)).layer(());
        let may_create = |group: &str, method: &str, path: &str| {
            let req = classified(method, path);
            let info = service::info(&req).unwrap().clone();
            let id = super::super::tests::id("alice", &[group]);
            svc.may_create(&id, &info)
        };
        let post = classified("POST", "/api/v1/namespaces");
        let id = super::super::tests::id("alice", &["tenant:t"]);
        assert!(
            !svc.authorizer
                .authorize(&id, service::info(&post).unwrap())
                .allowed
        );
        assert!(!may_create("tenant:t", "PATCH", "/api/v1/namespaces/t-new"));
        assert!(!may_create("tenant:t", "PUT", "/api/v1/namespaces/t-new"));
        assert!(may_create("ops", "PATCH", "/api/v1/namespaces/t-new"));
        // Changing one of its namespaces is still the tenant's.
        let patch = classified("PATCH", "/api/v1/namespaces/t-a");
        assert!(
            svc.authorizer
                .authorize(&id, service::info(&patch).unwrap())
                .allowed
        );
        // The refusal is worded as the API server's for that create.
        let apply = classified("PATCH", "/api/v1/namespaces/t-new");
        let words = forbidden(&id, &as_create(service::info(&apply).unwrap()), "");
        assert!(
            words.message.ends_with(
                r#"cannot create resource "namespaces" in API group "" at the cluster scope"#
            ),
            "{}",
            words.message
        );
    }

    /// The marker is set for Secret writes of callers who may not mint every token of the
    /// namespace, and answers per service account as the authorizer does.
    #[test]
    fn secret_writes_are_marked_for_the_token_secret_check() {
        use serde_json::json;
        let cfg = json!({
            "tenants": [{"name": "t", "namespaces": ["t"], "subjects": [{"group": "tenant:t"}],
                "rules": [
                    {"verbs": ["*"], "api_groups": [""], "resources": ["*"]},
                    {"verbs": ["create"], "api_groups": [""], "resources": ["serviceaccounts/token"], "resource_names": ["builder"]}]},
                {"name": "u", "namespaces": ["u"], "subjects": [{"group": "tenant:u"}]}],
            "grants": [{"name": "ops", "subjects": [{"group": "ops"}],
                "rules": [{"namespaces": ["*"], "verbs": ["*"], "api_groups": ["*"], "resources": ["*"]}]}]
        });
        let a =
            super::super::build(&serde_json::from_value(cfg).unwrap(), "authorization").unwrap();
        let svc = AuthzLayer::new(Arc::new(a)).layer(());
        let mark = |user: &str, group: &str, method: &str, path: &str| {
            let req = classified(method, path);
            let info = service::info(&req).unwrap().clone();
            let id = Arc::new(super::super::tests::id(user, &[group]));
            svc.token_secrets(&id, &info).map(|m| (m, id, info))
        };
        let token_secret = |sa: &str| {
            std::borrow::Cow::Owned(json!({"type": token_secret::TOKEN_TYPE,
                "metadata": {"annotations": {token_secret::SERVICE_ACCOUNT: sa}}}))
        };
        // A tenant rule naming serviceaccounts/token for one account: that one only.
        for (method, path) in [
            ("POST", "/api/v1/namespaces/t/secrets"),
            ("PUT", "/api/v1/namespaces/t/secrets/s"),
            ("PATCH", "/api/v1/namespaces/t/secrets/s"),
        ] {
            let (m, id, info) = mark("alice", "tenant:t", method, path).expect("marked");
            assert!(m
                .check(&[token_secret("builder")], None, &info, &id)
                .is_ok());
            assert!(m
                .check(&[token_secret("default")], None, &info, &id)
                .is_err());
        }
        // A tenant with the default rules: none.
        let (m, id, info) =
            mark("bob", "tenant:u", "POST", "/api/v1/namespaces/u/secrets").unwrap();
        assert!(m
            .check(&[token_secret("builder")], None, &info, &id)
            .is_err());
        // A grant whose `*` covers serviceaccounts/token, reads, deletes, other resources: no mark.
        assert!(mark("op", "ops", "POST", "/api/v1/namespaces/t/secrets").is_none());
        assert!(mark("alice", "tenant:t", "GET", "/api/v1/namespaces/t/secrets/s").is_none());
        assert!(mark(
            "alice",
            "tenant:t",
            "DELETE",
            "/api/v1/namespaces/t/secrets/s"
        )
        .is_none());
        assert!(mark(
            "alice",
            "tenant:t",
            "POST",
            "/api/v1/namespaces/t/configmaps"
        )
        .is_none());
    }
}
