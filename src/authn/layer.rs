//! The authentication layer: who is this.
//!
//! Accepts a request with a verified client certificate (mapped once per connection) or one
//! `Authorization: Bearer` JWT that verifies against a configured issuer (`request.rs` says
//! which credential counts). Puts `Arc<Identity>` (tenant resolved) in the request extensions
//! and tells the audit record (user, method, issuer, tenant, scope; the audit policy is
//! evaluated now that the user is known). Rejects everything else with a bare 401
//! `Unauthorized` (`Refusal::Unauthenticated`); the reason is logged, never sent. Only a space
//! before the bearer token adds the API server's `Warning` for it: to the 401, or to the answer
//! of a request a WebSocket token subprotocol authenticated (not when a client certificate did:
//! the API server's bearer authenticator then never runs).
//!
//! A client's own `Impersonate-*` headers (`kubectl --as`) are then checked against the grants
//! (`impersonate.rs`): refused with 400 / 403 as the API server would, or the request goes on
//! as the impersonated identity (the audit event keeps the caller as `user` and records
//! `impersonatedUser`).

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{
    impersonate::impersonate,
    request::{authenticate, space_before_token_warning, Authenticated, Authenticator},
};
use crate::{
    audit::AuditRecord,
    body::Body,
    refusal::Refusal,
    service::{self, ResponseFuture},
};

#[derive(Clone)]
pub struct AuthnLayer {
    config: Arc<Authenticator>,
}

impl AuthnLayer {
    pub fn new(authenticator: Authenticator) -> AuthnLayer {
        AuthnLayer {
            config: Arc::new(authenticator),
        }
    }
}

impl<S> Layer<S> for AuthnLayer {
    type Service = AuthnService<S>;
    fn layer(&self, inner: S) -> AuthnService<S> {
        AuthnService {
            inner,
            config: self.config.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthnService<S> {
    inner: S,
    config: Arc<Authenticator>,
}

impl<S, B> Service<Request<B>> for AuthnService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture {
        let Some(conn) = service::conn(&req).cloned() else {
            return service::ready(Refusal::Panic.respond());
        };
        let config = self.config.clone();
        let mut inner = self.inner.clone();
        service::boxed(async move {
            // `warn_space`: the API server's bearer authenticator ran on a header with a space
            // before its token and warns, whatever the outcome (a WebSocket token subprotocol
            // may still authenticate the request).
            let Authenticated {
                result,
                space_before_token: warn_space,
            } = authenticate(&config, req.headers(), &conn).await;
            let identity = match result {
                Ok(id) => id,
                Err(why) => {
                    tracing::info!(peer = %conn.peer, %why, "authentication failed");
                    let mut resp = Refusal::Unauthenticated(why).respond();
                    if warn_space {
                        warn_space_before_token(&mut resp);
                    }
                    return Ok(resp);
                }
            };
            let audit = req.extensions().get::<AuditRecord>().cloned();
            if let Some(rec) = &audit {
                rec.with(|r| {
                    r.authenticated(&identity);
                    r.evaluate();
                });
            }
            let identity = match impersonate(&config.authorizer, &identity, req.headers()) {
                Ok(None) => identity,
                Ok(Some(as_whom)) => {
                    if let Some(rec) = &audit {
                        rec.with(|r| r.impersonated(&as_whom));
                    }
                    Arc::new(as_whom)
                }
                Err(refusal) => return Ok(refusal.respond()),
            };
            req.extensions_mut().insert(identity);
            let mut resp = inner.call(req).await?;
            if warn_space {
                warn_space_before_token(&mut resp);
            }
            Ok(resp)
        })
    }
}

fn warn_space_before_token(resp: &mut Response<Body>) {
    resp.headers_mut()
        .append(http::header::WARNING, space_before_token_warning());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        authn::Identity,
        refusal::Refused,
        service::testing::{calls, counting, request, send, text, TestBody},
    };

    fn authenticator() -> Authenticator {
        Authenticator {
            x509: Some(crate::authn::x509::CertAuth {
                mapping: crate::config::X509Identity {
                    username_prefix: String::new(),
                    groups_prefix: String::new(),
                    allow_system_identities: false,
                },
                listener: None,
                verifier: None,
                crl_due: i64::MAX,
                ca_expiries: Arc::from([]),
            }),
            jwt: None,
            authorizer: Arc::new(crate::authz::tests::authorizer()),
        }
    }

    #[tokio::test]
    async fn no_credential_or_a_bad_one_is_a_bare_401_and_goes_no_further() {
        let (inner, seen) = counting::<TestBody>();
        let svc = AuthnLayer::new(authenticator()).layer(inner);
        let none = send(svc.clone(), request("GET", "/api")).await;
        assert_eq!(none.status(), 401);
        let marker = none.extensions().get::<Refused>().cloned().unwrap();
        assert!(marker.unauthenticated);
        assert_eq!(marker.by, "authn");
        let mut bearer = request("GET", "/api");
        bearer
            .headers_mut()
            .insert("authorization", http::HeaderValue::from_static("Bearer x"));
        let refused = send(svc, bearer).await;
        assert_eq!(refused.status(), 401);
        assert!(
            text(refused).await.contains(r#""message":"Unauthorized""#),
            "never says why"
        );
        assert_eq!(calls(&seen), 0);
    }

    #[tokio::test]
    async fn the_connections_certificate_identity_travels_down() {
        let svc =
            AuthnLayer::new(authenticator()).layer(tower::service_fn(|req: Request<TestBody>| {
                let id = req.extensions().get::<Arc<Identity>>().cloned();
                async move {
                    let id = id.expect("authenticated");
                    assert_eq!(id.user, "alice");
                    assert_eq!(id.tenant.as_deref(), Some("team-a"));
                    Ok::<_, Infallible>(Response::new(crate::body::empty()))
                }
            }));
        let mut req = request("GET", "/api");
        let conn = crate::server::ConnInfo::new(
            "192.0.2.1:1".parse().unwrap(),
            Some(Arc::new(vec![])),
            true,
        );
        // The mapping of this connection's certificate, as the first request would leave it.
        let mut alice = crate::authz::tests::id("alice", &[]);
        alice.tenant = Some("team-a".into());
        *conn.cert_identity.lock().unwrap() = Some(crate::authn::x509::CertIdentity {
            mapped: Ok((
                Arc::new(alice),
                crate::authn::x509::Validity {
                    not_before: i64::MIN,
                    not_after: i64::MAX,
                },
            )),
            under: None,
            recheck_after: i64::MAX,
            checked_at: i64::MIN,
        });
        req.extensions_mut().insert(Arc::new(conn));
        assert_eq!(send(svc, req).await.status(), 200);
    }
}
