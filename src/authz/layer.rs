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
//! [`RecordSession`](crate::audit::session::RecordSession) for the upgrade forwarder.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{
    create_guard::{is_apply, MustNotCreate},
    engine::OUTSIDE_SCOPE,
    forbidden, Authorizer,
};
use crate::{
    audit::{session::RecordSession, AuditRecord},
    authn::Identity,
    body::Body,
    refusal::Refusal,
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
        // (`create_guard`).
        let may_create = info
            .subresource
            .is_empty()
            .then(|| match info.verb.as_str() {
                "patch" if is_apply(req.headers().get(http::header::CONTENT_TYPE)) => {
                    Some(MustNotCreate::Apply)
                }
                "update" => Some(MustNotCreate::Update),
                _ => None,
            })
            .flatten()
            .filter(|_| {
                let mut as_create = (**info).clone();
                as_create.verb = "create".into();
                !self.authorizer.authorize(identity, &as_create).allowed
            });
        let record_session = self.authorizer.records_session(identity, info);
        if let Some(kind) = may_create {
            req.extensions_mut().insert(kind);
        }
        if record_session {
            req.extensions_mut().insert(RecordSession);
        }
        service::boxed(self.inner.call(req))
    }
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
}
