//! `Audit-ID` values: random UUIDv4s.

use std::cell::RefCell;

use http::HeaderValue;

/// A random UUIDv4 from aws-lc-rs' system CSPRNG (a batch at a time, [`random16`]), as the
/// value of `Audit-ID`.
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

/// Random bytes for this thread's next ids: one CSPRNG call serves [`BATCH`] / 16 ids.
const BATCH: usize = 512;

thread_local! {
    static RANDOM: RefCell<([u8; BATCH], usize)> = const { RefCell::new(([0; BATCH], BATCH)) };
}

/// 16 bytes from aws-lc-rs' CSPRNG, drawn a batch at a time: one `RAND_bytes` call per id had
/// cost ≈ 2.3 k instructions per request (callgrind), most of it the DRBG's per-call setup.
/// The bytes are as random either way; an id is not a secret (the client gets it), and each
/// byte is handed out once and then zeroed.
fn random16() -> Option<[u8; 16]> {
    use aws_lc_rs::rand::SecureRandom;
    RANDOM.with(|cell| {
        let mut guard = cell.try_borrow_mut().ok()?;
        let (pool, used) = &mut *guard;
        if *used + 16 > BATCH {
            aws_lc_rs::rand::SystemRandom::new().fill(pool).ok()?;
            *used = 0;
        }
        let taken = pool.get_mut(*used..*used + 16)?;
        let mut b = [0u8; 16];
        b.copy_from_slice(taken);
        taken.fill(0);
        *used += 16;
        Some(b)
    })
}

fn uuid_v4() -> HeaderValue {
    const FALLBACK: HeaderValue = HeaderValue::from_static("00000000-0000-4000-8000-000000000000");
    let Some(mut b) = random16() else {
        // The CSPRNG failing is not something a request can fix; a fixed id keeps serving.
        return FALLBACK;
    };
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

    #[test]
    fn ids_stay_distinct_across_many_batches() {
        // 40 batches of random bytes on this thread: no id repeats, none is the fallback.
        let ids: std::collections::HashSet<_> = (0..1280).map(|_| super::new_audit_id()).collect();
        assert_eq!(ids.len(), 1280);
        assert!(!ids.contains(&http::HeaderValue::from_static(
            "00000000-0000-4000-8000-000000000000"
        )));
    }
}
