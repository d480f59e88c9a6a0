//! Tamper evidence for audit files: a hash chain over the events, and signed checkpoints.
//!
//! # The chain
//!
//! Every event line in a file carries the annotation `portcullis.io/chain` =
//! `hex(SHA-256(prev || canonical))`, where `prev` is the 32 raw bytes of the previous event's
//! link ([`GENESIS`] for the very first event) and `canonical` is the event's **canonical
//! bytes**: the line parsed as JSON, with the `portcullis.io/chain` annotation removed (and
//! `annotations` removed if that leaves it empty), written compactly with every object's keys
//! sorted by their UTF-8 bytes (serde_json's escaping for strings, its shortest round-trip form
//! for numbers). Sorting is done here, explicitly, so the canonical form cannot change if a
//! dependency ever turns on serde_json's `preserve_order`. Numbers must survive parse → print
//! unchanged, which needs serde_json's `float_roundtrip` feature (Cargo.toml): without it about
//! a third of all floats are read 1 ulp off and their events would fail verification (a test
//! below guards this). Whitespace and key order of the line
//! itself are therefore not covered; every value is.
//!
//! The chain never restarts: the first event of a rotated file links to the last event of the
//! previous file, and a process that reopens a file continues from its last valid line.
//!
//! # Checkpoints
//!
//! A hash chain alone proves nothing to someone who can rewrite the whole file (they recompute
//! it), so the file sink signs the chain head every K events, every T seconds, at the start and
//! end of each file and at clean shutdown. Checkpoints never go into the log itself — every
//! line of an audit file is an `audit.k8s.io/v1` Event, so collectors that read the API
//! server's log read ours unchanged — but into a **sidecar file** next to each log file,
//! `<log file>.checkpoints` (`audit.log.checkpoints`, rotated with its log file:
//! `audit-2026-11-27T07-25-09.123.log.checkpoints`), one JSON line each:
//!
//! ```json
//! {"kind":"PortcullisAuditCheckpoint","apiVersion":"portcullis.io/v2","seq":1000,
//!  "chain":"<link of the last event>","time":"2026-11-27T07:25:09.123456Z",
//!  "keyId":"<first 16 hex of SHA-256(public key)>","signature":"<base64 Ed25519>"}
//! ```
//!
//! The signature covers `"portcullis-audit-checkpoint/v2\n" + seq + "\n" + chain + "\n" + time`
//! (seq in decimal, chain in lower-case hex, time exactly as written), so the time a checkpoint
//! claims is signed too. `seq` is the number of events in the chain up to and including the one
//! whose link is `chain`; it is how `verify` places a sidecar's checkpoints between the lines of
//! its log file. Whoever lacks the private key can still append or rewrite events after the
//! last checkpoint and recompute the chain (the "unsigned tail" that `verify` reports), but
//! cannot make an edited event verify under any checkpoint, nor move a checkpoint in time.
//!
//! (`portcullis.io/v1` checkpoints, written inline in the log by earlier versions with an
//! unsigned `time`, are not read any more: verify such files with the release that wrote them.)
//!
//! # Keys
//!
//! Ed25519 (aws-lc-rs). Private keys are PKCS#8 (PEM `PRIVATE KEY` or DER); public keys are
//! SubjectPublicKeyInfo (PEM `PUBLIC KEY` or DER), or derived from the private key file.
//! Rejected: other key types, encrypted keys, malformed PEM/DER.

use std::{fmt, path::Path};

use aws_lc_rs::{
    digest,
    signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};
use base64::Engine;
use rustls_pki_types::{pem::PemObject, PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::MicroTime;

/// The annotation holding an event's link.
pub const CHAIN_ANNOTATION: &str = "portcullis.io/chain";
/// `kind` of checkpoint lines.
pub const CHECKPOINT_KIND: &str = "PortcullisAuditCheckpoint";
/// `apiVersion` of checkpoint lines.
pub const CHECKPOINT_API_VERSION: &str = "portcullis.io/v2";
/// Prefix of the signed checkpoint message (domain separation).
pub const CHECKPOINT_DOMAIN: &str = "portcullis-audit-checkpoint/v2\n";
/// What a log file's checkpoint sidecar adds to its name.
pub const SIDECAR_SUFFIX: &str = ".checkpoints";

/// The checkpoint sidecar of a log file: `audit.log` → `audit.log.checkpoints`.
pub fn sidecar_path(log: &Path) -> std::path::PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(SIDECAR_SUFFIX);
    std::path::PathBuf::from(name)
}

/// The link "before" the first event: SHA-256 of the ASCII string `portcullis.io/audit-chain/v1`
/// (a fixed, documented constant rather than zeros, so our chains cannot be confused with
/// another tool's).
pub const GENESIS: Link = Link([
    0x08, 0x67, 0x83, 0xf7, 0xa2, 0x3d, 0x83, 0x92, 0x43, 0x14, 0x8f, 0x51, 0x4e, 0xc5, 0xb5, 0x9f,
    0x41, 0xb0, 0x36, 0x22, 0x68, 0x34, 0xec, 0x97, 0xa8, 0x67, 0xec, 0x57, 0x0f, 0x78, 0x62, 0xd8,
]);

/// One link of the chain: a SHA-256 value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link(pub [u8; 32]);

impl Link {
    /// Lower-case hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Write the 64 hex characters into `out`.
    pub fn write_hex(&self, out: &mut Vec<u8>) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for b in self.0 {
            out.push(DIGITS[usize::from(b >> 4)]);
            out.push(DIGITS[usize::from(b & 15)]);
        }
    }

    /// Parse 64 hex characters (either case).
    pub fn from_hex(s: &str) -> Option<Link> {
        let bytes = unhex(s)?;
        Some(Link(bytes.try_into().ok()?))
    }

    /// The link after this one for an event with these canonical bytes.
    pub fn next(&self, canonical: &[u8]) -> Link {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.0);
        ctx.update(canonical);
        let d = ctx.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Link(out)
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Link({})", self.to_hex())
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            u8::try_from(d(p[0])? * 16 + d(p[1])?).ok()
        })
        .collect()
}

/// Append the canonical form of `v` (compact, object keys sorted bytewise) to `out`.
pub fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            out.push(b'{');
            let mut keys: Vec<&String> = map.keys().collect();
            // Already sorted unless serde_json's preserve_order is on; cheap either way.
            keys.sort_unstable();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                if let Some(child) = map.get(k) {
                    write_canonical(child, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar Value into a Vec cannot fail (no I/O, no non-string keys).
    let _ = serde_json::to_writer(&mut *out, v);
}

/// The canonical bytes of an event value, in place: takes out and returns the chain annotation
/// (if any) and drops `annotations` when that leaves it empty.
pub fn strip_chain(event: &mut Value) -> Option<Value> {
    let obj = event.as_object_mut()?;
    let annotations = obj.get_mut("annotations")?.as_object_mut()?;
    let link = annotations.remove(CHAIN_ANNOTATION);
    if annotations.is_empty() {
        obj.remove("annotations");
    }
    link
}

/// Append `line` (an event's JSON whose last member is `annotations` when `has_annotations`,
/// without a chain annotation) with `"portcullis.io/chain": link` added as the last
/// annotation, and `\n`. [`unlink_line`] undoes it.
pub fn link_line(line: &[u8], has_annotations: bool, link: &Link, out: &mut Vec<u8>) {
    let (body, open) = if has_annotations {
        // …,"annotations":{…}}  → cut "}}" and add ,"portcullis.io/chain":"…"}}
        (&line[..line.len().saturating_sub(2)], &b","[..])
    } else {
        // …}  → cut "}" and add ,"annotations":{"portcullis.io/chain":"…"}}
        (
            &line[..line.len().saturating_sub(1)],
            &b",\"annotations\":{"[..],
        )
    };
    out.extend_from_slice(body);
    out.extend_from_slice(open);
    out.extend_from_slice(b"\"");
    out.extend_from_slice(CHAIN_ANNOTATION.as_bytes());
    out.extend_from_slice(b"\":\"");
    link.write_hex(out);
    out.extend_from_slice(b"\"}}\n");
}

/// The line as it was before [`link_line`] (without its newline): `None` when the link is not
/// where `link_line` puts it.
pub fn unlink_line(raw: &[u8]) -> Option<Vec<u8>> {
    let key = format!("\"{CHAIN_ANNOTATION}\":\"");
    let end = raw.strip_suffix(b"\"}}")?;
    let (before, hex) = end.split_at_checked(end.len().checked_sub(64)?)?;
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let body = before.strip_suffix(key.as_bytes())?;
    let mut out = Vec::with_capacity(raw.len());
    if let Some(b) = body.strip_suffix(b",\"annotations\":{") {
        out.extend_from_slice(b);
        out.push(b'}');
    } else {
        out.extend_from_slice(body.strip_suffix(b",")?);
        out.extend_from_slice(b"}}");
    }
    Some(out)
}

/// The signed message of a checkpoint.
pub fn checkpoint_message(
    seq: u64,
    chain: &Link,
    time: &str,
    adopted: u64,
    clean_stop: bool,
) -> Vec<u8> {
    let mut m = format!("{CHECKPOINT_DOMAIN}{seq}\n{}\n{time}", chain.to_hex());
    // Only when there is something to say, so checkpoints without it sign what they always did.
    if adopted > 0 {
        m.push_str(&format!("\nadopted {adopted}"));
    }
    if clean_stop {
        m.push_str("\nclean stop");
    }
    m.into_bytes()
}

/// A checkpoint line (of a sidecar file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Checkpoint {
    pub kind: String,
    pub api_version: String,
    pub seq: u64,
    pub chain: String,
    pub time: String,
    pub key_id: String,
    pub signature: String,
    /// How many of the events this checkpoint signs, the newest before its predecessor's range
    /// ended, the signer did not write itself: found after the last checkpoint when the proxy
    /// started (a crash's unsigned tail — or lines someone appended while it was stopped).
    /// Part of the signed message; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub adopted: u64,
    /// Written by a clean shutdown, the last of its log: whatever a later checkpoint says it
    /// found unsigned on disk after this one (`adopted`) was added while the proxy was
    /// stopped, not written by it — `audit verify` fails on it. Part of the signed message;
    /// absent when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub clean_stop: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Checkpoint {
    /// Sign the state `(seq, chain)` now.
    pub fn sign(key: &SigningKey, seq: u64, chain: &Link) -> Checkpoint {
        Checkpoint::sign_at(key, seq, chain, MicroTime::now())
    }

    /// Sign the state `(seq, chain)` as of `time`.
    pub fn sign_at(key: &SigningKey, seq: u64, chain: &Link, time: MicroTime) -> Checkpoint {
        Checkpoint::sign_adopting(key, seq, chain, time, 0)
    }

    /// Sign the state `(seq, chain)` as of `time`, of whose newest events `adopted` were found
    /// on disk at start rather than written by this process (see [`Checkpoint::adopted`]).
    pub fn sign_adopting(
        key: &SigningKey,
        seq: u64,
        chain: &Link,
        time: MicroTime,
        adopted: u64,
    ) -> Checkpoint {
        Checkpoint::sign_stopping(key, seq, chain, time, adopted, false)
    }

    /// [`sign_adopting`](Self::sign_adopting), marked as a clean shutdown's last checkpoint
    /// when `clean_stop` (see [`Checkpoint::clean_stop`]).
    pub fn sign_stopping(
        key: &SigningKey,
        seq: u64,
        chain: &Link,
        time: MicroTime,
        adopted: u64,
        clean_stop: bool,
    ) -> Checkpoint {
        let time = time.to_string();
        let sig = key
            .pair
            .sign(&checkpoint_message(seq, chain, &time, adopted, clean_stop));
        Checkpoint {
            kind: CHECKPOINT_KIND.into(),
            api_version: CHECKPOINT_API_VERSION.into(),
            seq,
            chain: chain.to_hex(),
            time,
            key_id: key.key_id.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
            adopted,
            clean_stop,
        }
    }

    /// The line, without the newline.
    pub fn to_line(&self) -> Vec<u8> {
        // A struct of strings and an integer always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Check the signature with one of `keys` (matched by key id). Errors say why in words.
    pub fn verify(&self, keys: &[VerifyingKey]) -> Result<Link, String> {
        if self.kind != CHECKPOINT_KIND || self.api_version != CHECKPOINT_API_VERSION {
            return Err("not a checkpoint".into());
        }
        let chain = Link::from_hex(&self.chain)
            .ok_or_else(|| format!("chain {:?} is not 64 hex digits", self.chain))?;
        let key = keys
            .iter()
            .find(|k| k.key_id == self.key_id)
            .ok_or_else(|| {
                format!(
                    "signed by key {} but the given key is {}",
                    self.key_id,
                    keys.iter()
                        .map(|k| k.key_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| "signature invalid (not base64)".to_string())?;
        UnparsedPublicKey::new(&signature::ED25519, &key.raw)
            .verify(
                &checkpoint_message(self.seq, &chain, &self.time, self.adopted, self.clean_stop),
                &sig,
            )
            .map_err(|_| "signature invalid".to_string())?;
        Ok(chain)
    }
}

/// Key id: the first 16 hex digits of SHA-256 over the raw 32-byte public key.
pub fn key_id(raw_public: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, raw_public);
    hex(&d.as_ref()[..8])
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32 key bytes.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The checkpoint signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(keyId {})", self.key_id)
    }
}

impl SigningKey {
    /// From PKCS#8 bytes (PEM `PRIVATE KEY` or DER).
    pub fn from_pkcs8(bytes: &[u8]) -> Result<SigningKey, String> {
        let der = match PrivatePkcs8KeyDer::from_pem_slice(bytes) {
            Ok(der) => der.secret_pkcs8_der().to_vec(),
            Err(_) if looks_like_pem(bytes) => {
                return Err("no PEM PRIVATE KEY (PKCS#8) block found".into())
            }
            Err(_) => bytes.to_vec(),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|e| format!("not a PKCS#8 Ed25519 private key: {e}"))?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(SigningKey { pair, key_id })
    }

    /// Read a private key file.
    pub fn load(path: &Path) -> Result<SigningKey, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        SigningKey::from_pkcs8(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A fresh key: `(private PKCS#8 PEM, public SPKI PEM, key)`.
    pub fn generate() -> Result<(String, String, SigningKey), String> {
        let pair = Ed25519KeyPair::generate().map_err(|_| "cannot generate a key".to_string())?;
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|_| "cannot encode the key".to_string())?;
        let key = SigningKey::from_pkcs8(pkcs8.as_ref())?;
        let private_pem = pem("PRIVATE KEY", pkcs8.as_ref());
        let public_pem = key.verifying_key().to_pem();
        Ok((private_pem, public_pem, key))
    }

    /// The id written into checkpoints.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey {
            raw,
            key_id: self.key_id.clone(),
        }
    }
}

/// A public key checkpoints are verified with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    raw: [u8; 32],
    key_id: String,
}

impl VerifyingKey {
    /// From a public key (PEM `PUBLIC KEY` / DER SPKI) or a private key (PKCS#8 PEM / DER),
    /// whose public half is used.
    pub fn from_bytes(bytes: &[u8]) -> Result<VerifyingKey, String> {
        if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_slice(bytes) {
            return VerifyingKey::from_spki(spki.as_ref());
        }
        if bytes.len() == 44 && bytes.starts_with(&SPKI_ED25519_PREFIX) {
            return VerifyingKey::from_spki(bytes);
        }
        SigningKey::from_pkcs8(bytes)
            .map(|k| k.verifying_key())
            .map_err(|e| format!("neither an Ed25519 public key nor a private key: {e}"))
    }

    fn from_spki(der: &[u8]) -> Result<VerifyingKey, String> {
        let raw: [u8; 32] = der
            .strip_prefix(&SPKI_ED25519_PREFIX[..])
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| "the PUBLIC KEY is not an Ed25519 key".to_string())?;
        Ok(VerifyingKey {
            raw,
            key_id: key_id(&raw),
        })
    }

    /// Read a key file (public or private).
    pub fn load(path: &Path) -> Result<VerifyingKey, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        VerifyingKey::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The key id checkpoints name.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&self.raw);
        pem("PUBLIC KEY", &der)
    }
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A line with and without annotations gets its link as the last annotation, and
    /// `unlink_line` gives back exactly the line it was; a link moved or altered is `None`.
    #[test]
    fn linking_a_line_and_undoing_it() {
        for line in [
            &br#"{"kind":"Event","stage":"ResponseComplete"}"#[..],
            br#"{"kind":"Event","annotations":{"a":"b"}}"#,
        ] {
            let has = line.ends_with(b"}}");
            let mut out = Vec::new();
            link_line(line, has, &GENESIS, &mut out);
            let linked = out.strip_suffix(b"\n").unwrap();
            let v: Value = serde_json::from_slice(linked).unwrap();
            assert_eq!(v["annotations"][CHAIN_ANNOTATION], GENESIS.to_hex());
            assert_eq!(unlink_line(linked).as_deref(), Some(line));
        }
        let moved = format!(
            r#"{{"annotations":{{"{CHAIN_ANNOTATION}":"{}","a":"b"}}}}"#,
            GENESIS.to_hex()
        );
        assert_eq!(unlink_line(moved.as_bytes()), None);
        let short = format!(r#"{{"annotations":{{"{CHAIN_ANNOTATION}":"ab"}}}}"#);
        assert_eq!(unlink_line(short.as_bytes()), None);
    }

    #[test]
    fn genesis_is_the_documented_hash() {
        let d = digest::digest(&digest::SHA256, b"portcullis.io/audit-chain/v1");
        assert_eq!(d.as_ref(), &GENESIS.0);
    }

    #[test]
    fn hex_round_trip() {
        let l = GENESIS.next(b"x");
        assert_eq!(Link::from_hex(&l.to_hex()), Some(l));
        assert_eq!(Link::from_hex(&l.to_hex().to_uppercase()), Some(l));
        let mut out = Vec::new();
        l.write_hex(&mut out);
        assert_eq!(out, l.to_hex().as_bytes());
        assert_eq!(Link::from_hex("00"), None);
        assert_eq!(Link::from_hex(&"g".repeat(64)), None);
        assert_eq!(Link::from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn canonical_sorts_keys_everywhere_and_is_compact() {
        let v: Value = serde_json::from_str(
            r#"{ "b": 1, "a": {"z": [ {"y":true, "x":null} ], "é": "\u00e9\n", "A": 1.5e3} }"#,
        )
        .unwrap();
        let mut out = Vec::new();
        write_canonical(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"A":1500.0,"z":[{"x":null,"y":true}],"é":"é\n"},"b":1}"#
        );
    }

    /// The chain relies on number text surviving parse → print unchanged: `verify` re-prints
    /// the floats it parses from a line. serde_json's default float parser can read the
    /// shortest representation 1 ulp off; the `float_roundtrip` feature (Cargo.toml) makes it
    /// exact. This fails if that feature is ever dropped.
    #[test]
    fn floats_round_trip_through_parse_and_print() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut bad = Vec::new();
        for _ in 0..200_000 {
            // xorshift64*: arbitrary bit patterns cover every exponent.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let f = f64::from_bits(x.wrapping_mul(0x2545_f491_4f6c_dd1d));
            if !f.is_finite() {
                continue;
            }
            let text = serde_json::to_string(&f).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            if back.to_bits() != f.to_bits() {
                bad.push(text);
            }
        }
        assert!(
            bad.is_empty(),
            "{} floats do not round-trip, e.g. {:?}",
            bad.len(),
            &bad[..bad.len().min(3)]
        );
    }

    #[test]
    fn strip_chain_drops_empty_annotations() {
        let mut v = json!({"a":1,"annotations":{CHAIN_ANNOTATION:"ab"}});
        assert_eq!(strip_chain(&mut v), Some(json!("ab")));
        assert_eq!(v, json!({"a":1}));
        let mut v = json!({"annotations":{CHAIN_ANNOTATION:"ab","k":"v"}});
        strip_chain(&mut v);
        assert_eq!(v, json!({"annotations":{"k":"v"}}));
        let mut v = json!({"annotations":{}});
        assert_eq!(strip_chain(&mut v), None);
        assert_eq!(v, json!({}), "an empty annotations object is not canonical");
    }

    #[test]
    fn checkpoints_sign_and_verify() {
        let (private_pem, public_pem, key) = SigningKey::generate().unwrap();
        let from_private = VerifyingKey::from_bytes(private_pem.as_bytes()).unwrap();
        let from_public = VerifyingKey::from_bytes(public_pem.as_bytes()).unwrap();
        assert_eq!(from_private, from_public);
        assert_eq!(from_public.key_id(), key.key_id());
        assert_eq!(key.key_id().len(), 16);

        let link = GENESIS.next(b"{}");
        let cp = Checkpoint::sign(&key, 7, &link);
        assert_eq!(cp.verify(std::slice::from_ref(&from_public)), Ok(link));
        let line = cp.to_line();
        let back: Checkpoint = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, cp);

        let mut bad = cp.clone();
        bad.seq = 8;
        assert_eq!(
            bad.verify(std::slice::from_ref(&from_public)),
            Err("signature invalid".into())
        );
        // The time is signed: moving a checkpoint in time breaks it.
        let mut bad = cp.clone();
        bad.time = "2020-01-01T00:00:00.000000Z".into();
        assert_eq!(
            bad.verify(std::slice::from_ref(&from_public)),
            Err("signature invalid".into())
        );
        let mut bad = cp.clone();
        bad.signature.truncate(20);
        assert!(bad.verify(std::slice::from_ref(&from_public)).is_err());
        let (_, _, other) = SigningKey::generate().unwrap();
        assert!(cp
            .verify(&[other.verifying_key()])
            .unwrap_err()
            .contains("signed by key"));
        let mut extra: Value = serde_json::from_slice(&line).unwrap();
        extra["note"] = json!("x");
        assert!(serde_json::from_value::<Checkpoint>(extra).is_err());
    }

    #[test]
    fn keys_load_from_der_and_reject_others() {
        let (private_pem, _, key) = SigningKey::generate().unwrap();
        let der = PrivatePkcs8KeyDer::from_pem_slice(private_pem.as_bytes()).unwrap();
        let k2 = SigningKey::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        assert_eq!(k2.key_id(), key.key_id());
        let mut spki = SPKI_ED25519_PREFIX.to_vec();
        spki.extend_from_slice(&key.verifying_key().raw);
        assert_eq!(
            VerifyingKey::from_bytes(&spki).unwrap(),
            key.verifying_key()
        );
        // A P-256 key (what `token keygen` makes by default) is refused.
        let p256 = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(SigningKey::from_pkcs8(p256.as_bytes()).is_err());
        assert!(VerifyingKey::from_bytes(p256.as_bytes()).is_err());
        assert!(SigningKey::from_pkcs8(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
        assert!(SigningKey::from_pkcs8(b"garbage").is_err());
    }
}
