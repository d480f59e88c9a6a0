//! Field numbers the generated types do not know.
//!
//! prost skips a field number its message does not declare, as protobuf allows; but a newer
//! API server may know that field and store it, so a body carrying one would be judged without
//! it. [`check`] compares the body with prost's re-encoding of what it decoded: a field number
//! present in the body with a non-zero value and absent from the re-encoding was skipped, and
//! the body is refused (415). Zero values — a varint 0, an empty length-delimited payload —
//! are tolerated because prost itself omits them in map entries (`labels: {"a": ""}`); a
//! non-empty payload is never zero, whatever it would parse as (a newer API server may read
//! it as a string). A group (start/end-group wire types, which no Kubernetes type uses and
//! prost and Go both skip) is a field of its own, never zero, so one the types do not know is
//! refused like any other — it must not make the message around it unreadable to this check.
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
    fn is_zero(&self) -> bool {
        match self.wire {
            WireType::Varint => self.varint == 0,
            WireType::LengthDelimited => self.bytes.is_empty(),
            WireType::StartGroup | WireType::EndGroup => false,
            _ => self.bytes.iter().all(|b| *b == 0),
        }
    }
}

/// After a start-group key of field `num`: the group's content, up to its matching end-group
/// key (nested groups counted), and what follows it. `None` when it does not end, or its
/// content is not well-formed.
fn group(mut buf: &[u8], num: u32) -> Option<(&[u8], &[u8])> {
    let start = buf;
    let mut depth = 0usize;
    loop {
        let at = start.len() - buf.len();
        let (n, wire) = decode_key(&mut buf).ok()?;
        match wire {
            WireType::StartGroup => depth = depth.checked_add(1).filter(|d| *d < MAX_DEPTH)?,
            WireType::EndGroup if depth == 0 => {
                return (n == num).then(|| (&start[..at], buf));
            }
            WireType::EndGroup => depth -= 1,
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                buf = buf.get(len..)?;
            }
            WireType::SixtyFourBit => buf = buf.get(8..)?,
            WireType::ThirtyTwoBit => buf = buf.get(4..)?,
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
            // Groups are not used by any Kubernetes type: skipped whole, kept as one
            // occurrence that is never zero.
            WireType::StartGroup => {
                let (content, rest) = group(buf, num)?;
                buf = rest;
                Occ {
                    wire,
                    varint: 0,
                    bytes: content,
                }
            }
            WireType::EndGroup => return None,
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
            None if occ_a.iter().all(Occ::is_zero) => {}
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
