//! Unit tests of `x509`: the CN / O mapping, the validity period, and a connection's
//! certificate across configurations (mapped once, verified again after a reload, refused and
//! cached, an intermediate expiring).
use super::*;
use crate::test_pki::{Ca, CountingVerifier};

fn cfg(allow: bool) -> X509Identity {
    X509Identity {
        username_prefix: String::new(),
        groups_prefix: String::new(),
        allow_system_identities: allow,
    }
}

#[test]
fn cn_and_o_become_user_and_groups() {
    let ca = Ca::new("t").unwrap();
    let c = ca.client_cert("alice", &["dev"]).unwrap();
    let (id, _) = identity(Some(&c.cert_der), &cfg(false)).unwrap();
    assert_eq!(id.user, "alice");
    assert_eq!(id.groups, ["dev"]);
    let c = ca.client_cert("bob", &[]).unwrap();
    let (id, _) = identity(Some(&c.cert_der), &cfg(false)).unwrap();
    assert_eq!((id.user.as_str(), id.groups.len()), ("bob", 0));
}

#[test]
fn prefixes_apply_and_fingerprint_is_sha256_hex() {
    let ca = Ca::new("t").unwrap();
    let c = ca.client_cert("alice", &["dev"]).unwrap();
    let cfg = X509Identity {
        username_prefix: "cert:".into(),
        groups_prefix: "cert:".into(),
        allow_system_identities: false,
    };
    let (id, _) = identity(Some(&c.cert_der), &cfg).unwrap();
    assert_eq!(
        (id.user.as_str(), id.groups[0].as_str()),
        ("cert:alice", "cert:dev")
    );
    let Method::ClientCertificate { fingerprint } = id.method else {
        panic!("not a certificate identity")
    };
    assert_eq!(fingerprint.len(), 64);
}

#[test]
fn system_identities_refused_unless_allowed() {
    let ca = Ca::new("t").unwrap();
    let c = ca.client_cert("mallory", &["system:masters"]).unwrap();
    assert_eq!(
        identity(Some(&c.cert_der), &cfg(false)).map(|(id, _)| id),
        Err(Rejected::Reserved("system:masters".into()))
    );
    assert!(identity(Some(&c.cert_der), &cfg(true)).is_ok());
}

/// A name padded with a space would arrive trimmed upstream (HTTP/1.1 parsers trim header
/// values), past the `system:` check made on the padded form.
#[test]
fn names_padded_with_whitespace_are_refused() {
    let ca = Ca::new("t").unwrap();
    let c = ca.client_cert("mallory", &[" system:masters"]).unwrap();
    assert_eq!(
        identity(Some(&c.cert_der), &cfg(false)).map(|(id, _)| id),
        Err(Rejected::BadCharacters(" system:masters".into()))
    );
    let c = ca.client_cert("admin ", &[]).unwrap();
    assert!(identity(Some(&c.cert_der), &cfg(false)).is_err());
}

#[test]
fn missing_certificate_rejected() {
    assert_eq!(
        identity(None, &cfg(false)).map(|(id, _)| id),
        Err(Rejected::NoCertificate)
    );
}

/// One configuration's certificate authentication: its listener config and verifier both
/// trust `ca`, the mapping puts `prefix` before user names.
fn configuration(ca: &Ca, prefix: &str) -> CertAuth {
    configuration_with_crls(ca, prefix, vec![])
}

fn configuration_with_crls(
    ca: &Ca,
    prefix: &str,
    crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
) -> CertAuth {
    use crate::server::tls::{self, ClientAuth, ClientCas};
    tls::install_crypto_provider();
    let client_auth = ClientAuth::Optional(ClientCas {
        cas: vec![ca.cert.cert_der.clone()],
        crls,
    });
    let server = ca.server_cert(&["localhost"]).unwrap();
    CertAuth {
        mapping: X509Identity {
            username_prefix: prefix.into(),
            ..cfg(false)
        },
        listener: Some(
            tls::server_config(
                vec![server.cert_der.clone()],
                server.key(),
                client_auth.clone(),
            )
            .unwrap(),
        ),
        verifier: tls::client_verifier(&client_auth).unwrap(),
        crl_due: client_auth.crl_due(),
        ca_expiries: client_auth.ca_expiries().into(),
    }
}

/// A connection with `chain` that `by`'s listener accepted.
fn accepted(by: &CertAuth, chain: &[CertificateDer<'static>]) -> ConnInfo {
    let mut conn = ConnInfo::new(
        "192.0.2.1:1".parse().unwrap(),
        Some(Arc::new(chain.to_vec())),
        true,
    );
    conn.accepted_by = by.listener.as_ref().map(Arc::downgrade);
    conn
}

#[test]
fn a_connection_is_mapped_once_per_configuration_and_verified_again_after_a_reload() {
    let ca = Ca::new("t").unwrap();
    let chain = [ca.client_cert("alice", &["dev"]).unwrap().cert_der];
    let first = configuration(&ca, "");
    let conn = accepted(&first, &chain);
    let tenants = std::cell::Cell::new(0);
    let tenant = |_: &Identity| {
        tenants.set(tenants.get() + 1);
        Some("team-a".to_owned())
    };
    let id = first.identity(&conn, &chain, now(), tenant).unwrap();
    assert_eq!(
        (id.user.as_str(), id.tenant.as_deref()),
        ("alice", Some("team-a"))
    );
    // The accepting configuration needs no verifier: its handshake verified the chain.
    let no_verifier = CertAuth {
        verifier: None,
        ..first.clone()
    };
    let again = no_verifier.identity(&conn, &chain, now(), tenant).unwrap();
    assert!(Arc::ptr_eq(&id, &again), "mapped once");
    assert_eq!(tenants.get(), 1);

    // A reload trusting the same CA maps again, with its own prefix and tenant.
    let reloaded = configuration(&ca, "cert:");
    let id = reloaded.identity(&conn, &chain, now(), tenant).unwrap();
    assert_eq!(id.user, "cert:alice");
    assert_eq!(tenants.get(), 2);
    // ...and once: back under the first configuration it maps again too.
    assert!(Arc::ptr_eq(
        &id,
        &reloaded.identity(&conn, &chain, now(), tenant).unwrap()
    ));
    assert_eq!(
        first.identity(&conn, &chain, now(), tenant).unwrap().user,
        "alice"
    );
}

#[test]
fn after_a_reload_a_chain_the_new_cas_do_not_trust_is_refused() {
    let ca = Ca::new("t").unwrap();
    let chain = [ca.client_cert("alice", &[]).unwrap().cert_der];
    let first = configuration(&ca, "");
    let conn = accepted(&first, &chain);
    assert!(first.identity(&conn, &chain, now(), |_| None).is_ok());

    let mut other = configuration(&Ca::new("another").unwrap(), "");
    let counting = Arc::new(CountingVerifier::new(
        other.verifier.clone().unwrap(),
        Default::default(),
    ));
    other.verifier = Some(counting.clone());
    let refused = other.identity(&conn, &chain, now(), |_| None);
    assert!(
        matches!(refused, Err(Rejected::ChainRefused(_))),
        "{refused:?}"
    );
    // Refused on every request under it, not only the first, from one verification.
    for _ in 0..3 {
        assert_eq!(other.identity(&conn, &chain, now(), |_| None), refused);
    }
    assert_eq!(counting.count(), 1);
    // A configuration without client CAs cannot verify it either.
    let none = CertAuth {
        verifier: None,
        ..configuration(&ca, "")
    };
    assert_eq!(
        none.identity(&conn, &chain, now(), |_| None)
            .map(|id| id.user.clone()),
        Err(Rejected::NoClientCas)
    );
}

/// 1 January of `year`, in Unix seconds.
fn new_year(year: i32) -> i64 {
    rcgen::date_time_ymd(year, 1, 1).unix_timestamp()
}

#[test]
fn an_intermediate_that_expires_on_an_open_connection_refuses_it_from_then_on() {
    let root = Ca::new("root").unwrap();
    let intermediate = root.intermediate("intermediate", 2040).unwrap();
    let leaf = intermediate.client_cert("alice", &[]).unwrap();
    let chain = [leaf.cert_der, intermediate.cert.cert_der.clone()];
    let config = configuration(&root, "");
    let conn = accepted(&config, &chain);
    let before = new_year(2039);
    assert_eq!(
        config
            .identity(&conn, &chain, before, |_| None)
            .unwrap()
            .user,
        "alice"
    );
    let after = new_year(2041);
    let refused = config.identity(&conn, &chain, after, |_| None);
    assert!(
        matches!(refused, Err(Rejected::ChainRefused(_))),
        "{refused:?}"
    );

    // An expired certificate the client sends but the path does not use refuses nothing.
    let spare = root.intermediate("spare", 2030).unwrap();
    let with_spare = [
        chain[0].clone(),
        chain[1].clone(),
        spare.cert.cert_der.clone(),
    ];
    let conn = accepted(&config, &with_spare);
    let id = config
        .identity(&conn, &with_spare, before, |_| None)
        .unwrap();
    assert!(
        Arc::ptr_eq(
            &id,
            &config
                .identity(&conn, &with_spare, before, |_| None)
                .unwrap()
        ),
        "verified once, then mapped from the cache"
    );
    assert!(config
        .identity(&conn, &with_spare, after, |_| None)
        .is_err());
}

#[test]
fn the_validity_period_is_read_and_checked_inclusively() {
    let ca = Ca::new("t").unwrap();
    let c = ca.client_cert("alice", &[]).unwrap();
    let (_, v) = identity(Some(&c.cert_der), &cfg(false)).unwrap();
    let now = i64::try_from(SystemClock.now().as_secs()).unwrap();
    assert!(v.not_before < now && now < v.not_after, "{v:?}");
    assert!(v.check(now).is_ok());
    assert!(v.check(v.not_before).is_ok() && v.check(v.not_after).is_ok());
    assert_eq!(
        v.check(v.not_after + 1),
        Err(Rejected::OutsideValidity {
            not_before: v.not_before,
            not_after: v.not_after
        })
    );
    assert!(v.check(v.not_before - 1).is_err());
}

/// The client verifier of `root` with `crls`, and whether it accepts `chain` (leaf first) at
/// the current time.
fn verifies(
    root: &Ca,
    crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
    chain: &[CertificateDer<'static>],
) -> Result<(), rustls::Error> {
    use crate::server::tls::{client_verifier, ClientAuth, ClientCas};
    crate::server::tls::install_crypto_provider();
    let verifier = client_verifier(&ClientAuth::Required(ClientCas {
        cas: vec![root.cert.cert_der.clone()],
        crls,
    }))
    .unwrap()
    .unwrap();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls_pki_types::UnixTime::now())
        .map(drop)
}

/// Revocation covers the whole path: an intermediate the root's CRL lists no longer vouches
/// for a leaf it signs (RFC 5280 §6.3), a sibling intermediate still does, and without the
/// root's CRL an intermediate's status is unknown — refused, as a leaf's is.
#[test]
fn a_revoked_intermediate_refuses_the_leaves_it_signed() {
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let root = Ca::new("root").unwrap();
    let (bad, good) = (
        root.intermediate_with_serial("compromised", 2040, 7001)
            .unwrap(),
        root.intermediate_with_serial("sound", 2040, 7002).unwrap(),
    );
    let chain = |ca: &Ca| {
        [
            ca.client_cert("bob", &[]).unwrap().cert_der,
            ca.cert.cert_der.clone(),
        ]
    };
    let crls = |revoked: &[u64]| {
        vec![
            root.crl(revoked, now - day, now + day).unwrap(),
            bad.crl(&[], now - day, now + day).unwrap(),
            good.crl(&[], now - day, now + day).unwrap(),
        ]
    };
    assert!(verifies(&root, crls(&[]), &chain(&bad)).is_ok());
    let refused = verifies(&root, crls(&[7001]), &chain(&bad));
    assert!(
        matches!(
            refused,
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked
            ))
        ),
        "{refused:?}"
    );
    assert!(verifies(&root, crls(&[7001]), &chain(&good)).is_ok());
    // Only the intermediates' CRLs: the intermediates' own status is unknown.
    let unknown = verifies(&root, crls(&[])[1..].to_vec(), &chain(&good));
    assert!(unknown.is_err(), "{unknown:?}");
}

/// A CRL past its `nextUpdate` tells nothing about revocations since: refused, not trusted
/// for ever (a CRL refresh job that stopped would otherwise hide every later revocation).
#[test]
fn an_out_of_date_crl_refuses_the_certificates_it_covers() {
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let root = Ca::new("root").unwrap();
    let leaf = [root.client_cert("bob", &[]).unwrap().cert_der];
    let fresh = root.crl(&[], now - day, now + day).unwrap();
    assert!(verifies(&root, vec![fresh], &leaf).is_ok());
    let stale = root.crl(&[], now - day * 3, now - day).unwrap();
    let refused = verifies(&root, vec![stale], &leaf);
    assert!(refused.is_err(), "{refused:?}");
}

/// An open connection verified under a CRL is verified again once that CRL is past its
/// `nextUpdate` (as a new handshake would be refused then), not served on it for ever.
#[test]
fn an_open_connection_is_verified_again_when_its_crl_falls_due() {
    let now = time::OffsetDateTime::now_utc();
    let root = Ca::new("root").unwrap();
    let due = now + time::Duration::days(1);
    let crl = root.crl(&[], now - time::Duration::days(1), due).unwrap();
    let config = configuration_with_crls(&root, "", vec![crl]);
    assert_eq!(config.crl_due, due.unix_timestamp());
    let chain = [root.client_cert("alice", &[]).unwrap().cert_der];
    let conn = accepted(&config, &chain);
    let before = now.unix_timestamp();
    assert_eq!(
        config
            .identity(&conn, &chain, before, |_| None)
            .unwrap()
            .user,
        "alice"
    );
    let after = due.unix_timestamp() + 1;
    let refused = config.identity(&conn, &chain, after, |_| None);
    assert!(
        matches!(refused, Err(Rejected::ChainRefused(_))),
        "{refused:?}"
    );
}

/// A certificate made elsewhere with `subject`, signed by `ca`.
fn with_subject(ca: &Ca, subject: rcgen::DistinguishedName) -> CertificateDer<'static> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = subject;
    ca.sign_params(params).cert_der
}

/// Two CNs: Go (kube-apiserver) maps the last, x509-parser's first; a CA that copies a
/// requested subject verbatim could be made to issue `bob` a certificate a Go-based approver
/// read as `alice` — refused. A name in an encoding not read (a BMPString O) is refused, not
/// dropped (a group, perhaps a tenant's, silently lost).
#[test]
fn ambiguous_or_unreadable_names_are_refused() {
    let ca = Ca::new("t").unwrap();
    let mut two = rcgen::DistinguishedName::new();
    two.push(rcgen::DnType::CommonName, "bob");
    two.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]), "alice");
    let got = identity(Some(&with_subject(&ca, two)), &cfg(false));
    assert_eq!(got.err(), Some(Rejected::AmbiguousCommonName));

    let mut bmp = rcgen::DistinguishedName::new();
    bmp.push(rcgen::DnType::CommonName, "bob");
    bmp.push(
        rcgen::DnType::OrganizationName,
        rcgen::DnValue::BmpString(rcgen::string::BmpString::try_from("dev").unwrap()),
    );
    let got = identity(Some(&with_subject(&ca, bmp)), &cfg(false));
    assert_eq!(got.err(), Some(Rejected::UndecodableName("O")));

    let mut plain = rcgen::DistinguishedName::new();
    plain.push(rcgen::DnType::CommonName, "bob");
    plain.push(rcgen::DnType::OrganizationName, "dev");
    let (id, _) = identity(Some(&with_subject(&ca, plain)), &cfg(false)).unwrap();
    assert_eq!(
        (id.user.as_str(), id.groups.as_slice()),
        ("bob", &["dev".to_owned()][..])
    );
}

/// A configuration trusting every CA of `cas`, its verifier counting its verifications.
fn bundle(cas: &[&Ca]) -> (CertAuth, Arc<CountingVerifier>) {
    use crate::server::tls::{self, ClientAuth, ClientCas};
    tls::install_crypto_provider();
    let client_auth = ClientAuth::Optional(ClientCas {
        cas: cas.iter().map(|c| c.cert.cert_der.clone()).collect(),
        crls: Vec::new(),
    });
    let server = cas[0].server_cert(&["localhost"]).unwrap();
    let counting = Arc::new(CountingVerifier::new(
        tls::client_verifier(&client_auth).unwrap().unwrap(),
        Default::default(),
    ));
    let config = CertAuth {
        mapping: cfg(false),
        listener: Some(
            tls::server_config(
                vec![server.cert_der.clone()],
                server.key(),
                client_auth.clone(),
            )
            .unwrap(),
        ),
        verifier: Some(counting.clone()),
        crl_due: client_auth.crl_due(),
        ca_expiries: client_auth.ca_expiries().into(),
    };
    (config, counting)
}

/// How many chains `c` has verified.
fn verified(c: &CountingVerifier) -> usize {
    c.count()
}

/// A client CA that expires while a connection it anchored is open refuses that connection
/// from then on (kube-apiserver verifies the chain per request, and Go refuses an expired
/// root); a connection anchored by another CA of the bundle is verified again once, then
/// served from the cache.
#[test]
fn a_ca_that_expires_on_an_open_connection_refuses_it_from_then_on() {
    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(1);
    let old = Ca::with_validity("old", now - time::Duration::days(10), until).unwrap();
    let current = Ca::new("current").unwrap();
    let (config, counting) = bundle(&[&old, &current]);
    let (before, after) = (now.unix_timestamp(), until.unix_timestamp() + 1);
    let old_chain = [old.client_cert("alice", &[]).unwrap().cert_der];
    let cur_chain = [current.client_cert("bob", &[]).unwrap().cert_der];
    let mut old_conn = accepted(&config, &old_chain);
    let mut cur_conn = accepted(&config, &cur_chain);
    old_conn.verified_at = before;
    cur_conn.verified_at = before;

    let id = |conn: &ConnInfo, chain: &[CertificateDer<'static>], at: i64| {
        config
            .identity(conn, chain, at, |_| None)
            .map(|id| id.user.clone())
    };
    assert_eq!(id(&old_conn, &old_chain, before), Ok("alice".into()));
    assert_eq!(id(&cur_conn, &cur_chain, before), Ok("bob".into()));
    assert_eq!(
        verified(&counting),
        0,
        "the handshake's verification stands"
    );
    // The CA's last second is still inside its period.
    assert_eq!(id(&old_conn, &old_chain, after - 1), Ok("alice".into()));

    let refused = id(&old_conn, &old_chain, after);
    assert!(
        matches!(&refused, Err(Rejected::ChainRefused(e)) if e.contains("validity period")),
        "{refused:?}"
    );
    assert_eq!(id(&cur_conn, &cur_chain, after), Ok("bob".into()));
    assert_eq!(verified(&counting), 2);
    for later in [after + 1, after + 3600] {
        assert_eq!(id(&cur_conn, &cur_chain, later), Ok("bob".into()));
        assert!(id(&old_conn, &old_chain, later).is_err());
    }
    assert_eq!(verified(&counting), 2, "each verified again once");
}

/// A CA that had expired before the handshake costs an open connection no second verification
/// (the handshake already judged without it); a resumed TLS session, whose chain was verified
/// at a time not known, is verified again once — refused if only that CA anchored it.
#[test]
fn a_ca_expired_before_the_handshake_is_rechecked_only_for_resumed_sessions() {
    let now = time::OffsetDateTime::now_utc();
    let old = Ca::with_validity(
        "old",
        now - time::Duration::days(400),
        now - time::Duration::days(1),
    )
    .unwrap();
    let current = Ca::new("current").unwrap();
    let (config, counting) = bundle(&[&old, &current]);
    let at = now.unix_timestamp();
    let chain = [current.client_cert("bob", &[]).unwrap().cert_der];
    let id = |conn: &ConnInfo, chain: &[CertificateDer<'static>]| {
        config
            .identity(conn, chain, at, |_| None)
            .map(|id| id.user.clone())
    };

    let mut fresh = accepted(&config, &chain);
    fresh.verified_at = at;
    assert_eq!(id(&fresh, &chain), Ok("bob".into()));
    assert_eq!(verified(&counting), 0);

    let resumed = accepted(&config, &chain);
    assert_eq!(resumed.verified_at, i64::MIN);
    assert_eq!(id(&resumed, &chain), Ok("bob".into()));
    assert_eq!(id(&resumed, &chain), Ok("bob".into()));
    assert_eq!(verified(&counting), 1, "verified once, then from the cache");

    let old_chain = [old.client_cert("alice", &[]).unwrap().cert_der];
    let resumed_old = accepted(&config, &old_chain);
    assert!(matches!(
        id(&resumed_old, &old_chain),
        Err(Rejected::ChainRefused(_))
    ));
}
