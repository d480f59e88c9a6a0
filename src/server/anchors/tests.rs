//! Unit tests of `anchors`: a client CA anchors chains only within its validity period, judged
//! at the time of each verification.
use super::*;
use crate::server::tls::{
    client_verifier, install_crypto_provider, server_verifier, ClientAuth, ClientCas,
};
use crate::test_pki::{Ca, CountingVerifier};
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

/// An `InForce` over `cas` whose inner verifiers count the chains they verify (`verified`)
/// and whose builds are counted (`builds`).
fn counted(
    cas: &[&Ca],
) -> (
    InForce<dyn ClientCertVerifier>,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    install_crypto_provider();
    let verified = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let builds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (v, b) = (verified.clone(), builds.clone());
    let build = move |cas: Vec<CertificateDer<'static>>| {
        b.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let inner = crate::server::tls::webpki_client(cas, &[], true)?;
        Ok(Arc::new(CountingVerifier::new(inner, v.clone())) as Arc<dyn ClientCertVerifier>)
    };
    let anchors = cas
        .iter()
        .map(|c| Anchor::new(c.cert.cert_der.clone()))
        .collect();
    (
        InForce::new(anchors, Box::new(build)).unwrap(),
        verified,
        builds,
    )
}

fn count(c: &std::sync::atomic::AtomicUsize) -> usize {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

/// With every CA in force, a refused chain costs one verification (nothing else could explain
/// the refusal); with one out of force, the refusal of a chain it would anchor costs two (the
/// second says why).
#[test]
fn a_refused_chain_is_verified_again_only_to_name_an_out_of_period_ca() {
    let now = OffsetDateTime::now_utc();
    let current = Ca::new("current").unwrap();
    let stranger = Ca::new("stranger").unwrap();
    let (v, verified, _) = counted(&[&current]);
    assert!(verify(&v, &stranger, now).is_err());
    assert_eq!(count(&verified), 1);

    let old = Ca::with_validity("old", now - Duration::days(400), now - Duration::days(1)).unwrap();
    let (v, verified, _) = counted(&[&old, &current]);
    let refused = verify(&v, &old, now).unwrap_err();
    assert!(refused.contains("outside its validity period"), "{refused}");
    assert_eq!(count(&verified), 2);
}

/// The verifier of the CAs in force is built once per window between two CA period changes,
/// not per handshake, also while a CA of the bundle is out of its period.
#[test]
fn the_verifier_is_built_again_only_when_a_ca_period_starts_or_ends() {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let until = now + Duration::days(1);
    let current = Ca::new("current").unwrap();
    let ending = Ca::with_validity("ending", now - Duration::days(9), until).unwrap();
    let old = Ca::with_validity("old", now - Duration::days(400), now - Duration::days(5)).unwrap();
    let (v, _, builds) = counted(&[&current, &ending, &old]);
    assert_eq!(count(&builds), 1, "the all-CA verifier, built at once");
    for _ in 0..5 {
        assert_eq!(verify(&v, &current, now), Ok(()));
        assert_eq!(verify(&v, &ending, now + Duration::hours(1)), Ok(()));
    }
    assert_eq!(count(&builds), 2, "one subset for the whole window");
    // Past `ending`'s notAfter: the next window, one more build.
    for _ in 0..5 {
        assert!(verify(&v, &ending, until + Duration::seconds(1)).is_err());
        assert_eq!(verify(&v, &current, until + Duration::days(3)), Ok(()));
    }
    assert_eq!(count(&builds), 3);
    // While every CA was in force the all-CA verifier serves, built nothing.
    assert_eq!(verify(&v, &old, now - Duration::days(6)), Ok(()));
    assert_eq!(count(&builds), 3);
}

/// The proxy's client configs never resume a TLS session: a resumed handshake skips the
/// server's certificate, so a session saved while its CA was in force would outlive the CA.
/// A second connection is a full handshake.
#[tokio::test]
async fn client_configs_never_resume_a_session() {
    use crate::server::tls::{client_config, server_config};
    install_crypto_provider();
    let ca = Ca::new("server CA").unwrap();
    let server = ca.server_cert(&["localhost"]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(
        server_config(
            vec![server.cert_der.clone()],
            server.key(),
            ClientAuth::None,
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    use tokio::io::AsyncWriteExt;
                    // TLS 1.3 tickets travel after the handshake: let them go out.
                    let _ = tls.write_all(b"hi").await;
                    let _ = tls.flush().await;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            });
        }
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        client_config(vec![ca.cert.cert_der.clone()], None, &[]).unwrap(),
    ));
    for round in 0..2 {
        use tokio::io::AsyncReadExt;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut hi = [0u8; 2];
        tls.read_exact(&mut hi).await.unwrap();
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "connection {round}"
        );
    }
}
