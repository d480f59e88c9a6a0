//! `Audit-ID` values: random UUIDv4s.

use http::HeaderValue;

/// A random UUIDv4 from aws-lc-rs' system CSPRNG, as the value of `Audit-ID`.
///
/// Marked *sensitive*, which only tells HTTP/2's HPACK encoder to send it as a literal that is
/// never indexed. A value unique to one request is useless in a connection's dynamic table:
/// indexed, each one was inserted, evicted entries other headers could reuse, and made the
/// encoder compare every later `Audit-ID` with all those before it in the table: about 100
/// comparisons per request (callgrind). Never indexed, h2's `Table::index` and `memcmp` went
/// from 6 % to 2.2 % of the worker's CPU (`perf`, audit off).
pub(super) fn new_audit_id() -> HeaderValue {
    let mut v = uuid_v4();
    v.set_sensitive(true);
    v
}

fn uuid_v4() -> HeaderValue {
    use aws_lc_rs::rand::SecureRandom;
    const FALLBACK: HeaderValue = HeaderValue::from_static("00000000-0000-4000-8000-000000000000");
    let mut b = [0u8; 16];
    if aws_lc_rs::rand::SystemRandom::new().fill(&mut b).is_err() {
        // The CSPRNG failing is not something a request can fix; a fixed id keeps serving.
        return FALLBACK;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[(byte >> 4) as usize];
        out[o + 1] = HEX[(byte & 0x0f) as usize];
        o += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or(FALLBACK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn audit_ids_are_never_indexed_by_hpack() {
        assert!(super::new_audit_id().is_sensitive());
    }

    #[test]
    fn audit_ids_are_uuid_v4_and_distinct() {
        let a = super::new_audit_id();
        let b = super::new_audit_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(s.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
