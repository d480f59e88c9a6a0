//! Every request's way in: authentication, impersonation, authorization — kube-apiserver's
//! filter order. The identity the request runs as travels on as a request extension
//! ([`super::rbac::User`]) for the self-reviews.
//!
//! Authentication accepts: a bearer token registered with [`super::Sandbox::add_token`] (the
//! direct kubeconfig's `sandbox` token is the sandbox admin, in `system:masters`; `start`
//! registers the demo proxy's token as service account `portcullis/portcullis`), a client
//! certificate issued by the sandbox's CA (CN = user, O = groups), or nothing
//! (`system:anonymous`, group `system:unauthenticated`). Rejects an unknown bearer token with
//! the apiserver's bare 401. Authorization refusals are kube-apiserver's 403 (see `rbac`).

use std::{collections::HashMap, sync::Arc};

use cert::cert_user;
use http::{header, HeaderMap, Request};
use hyper::body::Incoming;

use super::{
    impersonation,
    rbac::{self, Attrs, User},
    Sandbox,
};
use portcullis::{k8s::Status, server::ConnInfo};

/// Bearer tokens the sandbox knows.
pub type Tokens = HashMap<String, User>;

/// The direct kubeconfig's token (`write_direct_kubeconfig`): the sandbox's admin.
pub const ADMIN_TOKEN: &str = "sandbox";

fn with_authenticated(mut u: User) -> User {
    if !u.groups.iter().any(|g| g == "system:authenticated") {
        u.groups.push("system:authenticated".into());
    }
    u
}

fn authenticate(sb: &Sandbox, h: &HeaderMap, conn: &ConnInfo) -> Result<User, Status> {
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(token) = bearer {
        return sb
            .token_user(token)
            .map(with_authenticated)
            .ok_or_else(Status::unauthorized);
    }
    if let Some(user) = conn
        .peer_certs
        .as_ref()
        .and_then(|c| c.first())
        .and_then(cert_user)
    {
        return Ok(with_authenticated(user));
    }
    Ok(User::new("system:anonymous", &["system:unauthenticated"]))
}

pub fn attributes(req: &Request<Incoming>) -> Attrs {
    match portcullis::k8s::request::classify(req.method(), req.uri(), req.headers()) {
        Ok(info) => Attrs::from_info(&info),
        // A path the proxy would refuse as ambiguous: judge it as a non-resource path, which
        // only `nonResourceURLs: ["*"]` (admins) allows.
        Err(_) => Attrs {
            verb: req.method().as_str().to_ascii_lowercase(),
            path: req.uri().path().to_string(),
            ..Attrs::default()
        },
    }
}

/// Authenticate, impersonate and authorize `req`; on success the identity it runs as is in
/// its extensions.
pub fn admit(sb: &Sandbox, req: &mut Request<Incoming>, conn: &ConnInfo) -> Result<(), Status> {
    let caller = authenticate(sb, req.headers(), conn)?;
    let store = sb.store();
    let user = impersonation::apply(&store, caller, req.headers())?;
    let a = attributes(req);
    let d = rbac::authorize(&store, &user, &a);
    drop(store);
    if !d.allowed {
        return Err(rbac::forbidden(&user, &a, &d.reason));
    }
    req.extensions_mut().insert(Arc::new(user));
    Ok(())
}

/// The identity `admit` let through (anonymous if none).
pub fn user_of<B>(req: &Request<B>) -> User {
    req.extensions()
        .get::<Arc<User>>()
        .map(|u| (**u).clone())
        .unwrap_or_else(|| User::new("system:anonymous", &["system:unauthenticated"]))
}

/// The client-certificate user, through the proxy's own CN / O mapping.
mod cert {
    use rustls_pki_types::CertificateDer;

    use super::User;
    use portcullis::authn::{config::X509Identity, x509};

    pub fn cert_user(leaf: &CertificateDer<'static>) -> Option<User> {
        let cfg = X509Identity {
            username_prefix: String::new(),
            groups_prefix: String::new(),
            allow_system_identities: true,
        };
        let (id, _) = x509::identity(Some(leaf), &cfg).ok()?;
        Some(User {
            name: id.user,
            groups: id.groups,
            ..User::default()
        })
    }
}
