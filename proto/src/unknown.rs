//! Field numbers the generated types do not know.
//!
//! prost skips a field number its message does not declare, as protobuf allows; but a newer
//! API server may know that field and store it, so a body carrying one would be judged without
//! it. [`check`] compares the body with prost's re-encoding of what it decoded: a field number
//! present in the body with a non-zero value and absent from the re-encoding was skipped, and
//! the body is refused (415). Zero values are tolerated because prost itself omits them in map
//! entries (`labels: {"a": ""}`), and Go's zero of a non-pointer field means "unset".
//!
//! Repeated occurrences compare pairwise; a singular field sent several times (last wins for a
//! scalar, merged for a message) compares the concatenation, which is how protobuf merges.
//! A length-delimited value that differs between the two sides is compared as a nested message
//! when both sides parse as one (strings and packed scalars cannot hide fields). Recursion is
//! bounded by [`MAX_DEPTH`].

use std::collections::BTreeMap;

use prost::encoding::{decode_key, decode_varint, WireType};

use crate::Error;

/// Deeper than any Kubernetes object (a pod template is ~12 levels) and than prost's own
/// recursion limit (100), which refuses deeper bodies first.
pub const MAX_DEPTH: usize = 100;

/// One field occurrence: wire type and its payload (the value of a varint, the bytes of a
/// length-delimited field, the raw bytes of a fixed field).
#[derive(Clone, Copy)]
struct Occ<'a> {
    wire: WireType,
    varint: u64,
    bytes: &'a [u8],
}

impl Occ<'_> {
    fn is_zero(&self, depth: usize) -> bool {
        match self.wire {
            WireType::Varint => self.varint == 0,
            WireType::LengthDelimited => {
                self.bytes.is_empty()
                    || depth < MAX_DEPTH
                        && parse(self.bytes)
                            .is_some_and(|f| f.values().flatten().all(|o| o.is_zero(depth + 1)))
            }
            _ => self.bytes.iter().all(|b| *b == 0),
        }
    }
}

/// The fields of a message by number, in order; `None` when `buf` is not a message.
fn parse(mut buf: &[u8]) -> Option<BTreeMap<u32, Vec<Occ<'_>>>> {
    let mut out: BTreeMap<u32, Vec<Occ<'_>>> = BTreeMap::new();
    while !buf.is_empty() {
        let (num, wire) = decode_key(&mut buf).ok()?;
        let occ = match wire {
            WireType::Varint => Occ {
                wire,
                varint: decode_varint(&mut buf).ok()?,
                bytes: &[],
            },
            WireType::LengthDelimited => {
                let n = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let (v, rest) = (buf.get(..n)?, buf.get(n..)?);
                buf = rest;
                Occ {
                    wire,
                    varint: 0,
                    bytes: v,
                }
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let n = if wire == WireType::SixtyFourBit { 8 } else { 4 };
                let (v, rest) = (buf.get(..n)?, buf.get(n..)?);
                buf = rest;
                Occ {
                    wire,
                    varint: 0,
                    bytes: v,
                }
            }
            // Groups are not used by any Kubernetes type.
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        out.entry(num).or_default().push(occ);
    }
    Some(out)
}

/// The payloads of several occurrences, back to back (how protobuf merges a message sent
/// several times).
fn concat(occ: &[Occ<'_>]) -> Vec<u8> {
    occ.iter().flat_map(|o| o.bytes.iter().copied()).collect()
}

/// Refuse `sent` when it holds a non-zero field that `reencoded` (prost's encoding of what it
/// decoded from `sent`) lacks; the error names the field numbers on the way (`2.2.999`).
pub fn check(sent: &[u8], reencoded: &[u8]) -> Result<(), Error> {
    compare(sent, reencoded, 0, &mut Vec::new())
}

fn compare(sent: &[u8], re: &[u8], depth: usize, path: &mut Vec<u32>) -> Result<(), Error> {
    if depth >= MAX_DEPTH {
        return Err(Error::Malformed(format!(
            "protobuf nesting deeper than {MAX_DEPTH} levels"
        )));
    }
    let (Some(a), Some(b)) = (parse(sent), parse(re)) else {
        // Not messages on both sides: a string or packed scalars, decoded by prost as such.
        return Ok(());
    };
    for (num, occ_a) in &a {
        path.push(*num);
        match b.get(num) {
            None if occ_a.iter().all(|o| o.is_zero(depth + 1)) => {}
            None => {
                return Err(Error::Unsupported(format!(
                    "the protobuf body holds field {} that this version of the Kubernetes types does not know; send application/json",
                    path.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
                )))
            }
            Some(occ_b) => {
                let len = |o: &Occ<'_>| o.wire == WireType::LengthDelimited;
                if occ_a.iter().all(len) && occ_b.iter().all(len) {
                    if occ_a.len() == occ_b.len() {
                        for (x, y) in occ_a.iter().zip(occ_b) {
                            if x.bytes != y.bytes {
                                compare(x.bytes, y.bytes, depth + 1, path)?;
                            }
                        }
                    } else {
                        let (x, y) = (concat(occ_a), concat(occ_b));
                        if x != y {
                            compare(&x, &y, depth + 1, path)?;
                        }
                    }
                }
            }
        }
        path.pop();
    }
    Ok(())
}
