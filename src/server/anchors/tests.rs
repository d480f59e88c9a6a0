//! Unit tests of `anchors`: a client CA anchors chains only within its validity period, judged
//! at the time of each verification.
use super::*;
use crate::server::tls::{
    client_verifier, install_crypto_provider, server_verifier, ClientAuth, ClientCas,
};
use crate::test_pki::Ca;
use time::{Duration, OffsetDateTime};

/// The verifier of a bundle of `cas` (client certificates required).
fn verifier(cas: &[&Ca]) -> Arc<dyn ClientCertVerifier> {
    install_crypto_provider();
    client_verifier(&ClientAuth::Required(ClientCas {
        cas: cas.iter().map(|c| c.cert.cert_der.clone()).collect(),
        crls: Vec::new(),
    }))
    .unwrap()
    .unwrap()
}

/// Whether `v` accepts a client certificate `ca` issued, at `at`.
fn verify(v: &dyn ClientCertVerifier, ca: &Ca, at: OffsetDateTime) -> Result<(), String> {
    let leaf = ca.client_cert("alice", &[]).unwrap().cert_der;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(at.unix_timestamp()).unwrap(),
    ));
    v.verify_client_cert(&leaf, &[], at)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// An expired CA left in the bundle vouches for nobody (Go refuses a chain to an expired
/// root), while the bundle's current CA still does; the refusal says it is the CA's dates.
#[test]
fn an_expired_ca_anchors_nothing_and_a_current_one_still_does() {
    let now = OffsetDateTime::now_utc();
    let old = Ca::with_validity("old", now - Duration::days(400), now - Duration::days(1)).unwrap();
    let current = Ca::new("current").unwrap();
    let v = verifier(&[&old, &current]);
    assert_eq!(verify(&*v, &current, now), Ok(()));
    let refused = verify(&*v, &old, now).unwrap_err();
    assert!(
        refused.contains("chains only to a CA outside its validity period"),
        "{refused}"
    );
    // The same chain, verified at a time the old CA was in force, is accepted.
    assert_eq!(verify(&*v, &old, now - Duration::days(2)), Ok(()));
    // A certificate of a CA not in the bundle at all is still the usual unknown issuer.
    let stranger = Ca::new("stranger").unwrap();
    let refused = verify(&*v, &stranger, now).unwrap_err();
    assert!(!refused.contains("validity period"), "{refused}");
}

/// A CA whose `notBefore` is ahead anchors nothing yet, and does from then on; both ends of
/// the period are inside it (RFC 5280).
#[test]
fn a_ca_anchors_only_within_its_period_both_ends_included() {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let (from, until) = (now + Duration::days(1), now + Duration::days(30));
    let next = Ca::with_validity("next", from, until).unwrap();
    let current = Ca::new("current").unwrap();
    let v = verifier(&[&current, &next]);
    assert!(verify(&*v, &next, now).is_err());
    assert!(verify(&*v, &next, from - Duration::seconds(1)).is_err());
    assert_eq!(verify(&*v, &next, from), Ok(()));
    assert_eq!(verify(&*v, &next, until), Ok(()));
    assert!(verify(&*v, &next, until + Duration::seconds(1)).is_err());
    // The current CA is unaffected at every one of those times.
    for t in [now, from, until + Duration::seconds(1)] {
        assert_eq!(verify(&*v, &current, t), Ok(()));
    }
}

/// With every CA of the bundle outside its period, nothing is accepted, and the error says so.
#[test]
fn a_bundle_with_no_ca_in_force_accepts_nothing() {
    let now = OffsetDateTime::now_utc();
    let old = Ca::with_validity("old", now - Duration::days(400), now - Duration::days(1)).unwrap();
    let v = verifier(&[&old]);
    let refused = verify(&*v, &old, now).unwrap_err();
    assert!(refused.contains("validity period"), "{refused}");
    assert!(v.client_auth_mandatory() && v.offer_client_auth());
    // The CA names sent in the CertificateRequest are those of the whole bundle, as Go's.
    assert_eq!(v.root_hint_subjects().len(), 1);
}

/// The notAfter of each CA, ascending, is what authentication re-verifies at.
#[test]
fn ca_expiries_are_the_cas_not_after_ascending() {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let a = Ca::with_validity("a", now - Duration::days(1), now + Duration::days(9)).unwrap();
    let b = Ca::with_validity("b", now - Duration::days(1), now + Duration::days(3)).unwrap();
    let cas = ClientCas {
        cas: vec![a.cert.cert_der.clone(), b.cert.cert_der.clone()],
        crls: Vec::new(),
    };
    assert_eq!(
        cas.ca_expiries(),
        [
            (now + Duration::days(3)).unix_timestamp(),
            (now + Duration::days(9)).unix_timestamp()
        ]
    );
}

/// Toward servers the same holds: an API server (or JWKS endpoint, collector, webhook) whose
/// certificate chains only to an expired CA of the bundle is not trusted, as client-go would
/// not trust it; the bundle's current CA still is.
#[test]
fn a_server_certificate_of_an_expired_ca_is_not_trusted() {
    install_crypto_provider();
    let now = OffsetDateTime::now_utc();
    let old = Ca::with_validity("old", now - Duration::days(400), now - Duration::days(1)).unwrap();
    let current = Ca::new("current").unwrap();
    let v = server_verifier(vec![
        old.cert.cert_der.clone(),
        current.cert.cert_der.clone(),
    ])
    .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let verify = |ca: &Ca, at: OffsetDateTime| {
        let cert = ca.server_cert(&["localhost"]).unwrap().cert_der;
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(at.unix_timestamp()).unwrap(),
        ));
        v.verify_server_cert(&cert, &[], &name, &[], at)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    assert_eq!(verify(&current, now), Ok(()));
    let refused = verify(&old, now).unwrap_err();
    assert!(refused.contains("outside its validity period"), "{refused}");
    assert_eq!(verify(&old, now - Duration::days(2)), Ok(()));
}
