//! Path validation and decoding: the raw path is checked segment by segment (no encoded `/` or
//! `\`, no `.`/`..`, no empty segment but one trailing `/`, well-formed escapes, UTF-8, no
//! control characters) and then percent-decoded exactly once. Anything else is a
//! [`PathError`].

use std::borrow::Cow;

use super::PathError;

/// Validates the raw path and returns (decoded path, decoded segments).
pub(super) fn decode_path(raw: &str) -> Result<(String, Vec<Cow<'_, str>>), PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut segments = Vec::new();
    let mut trailing_slash = false;
    if !rest.is_empty() {
        let mut iter = rest.split('/').peekable();
        while let Some(seg) = iter.next() {
            if seg.is_empty() {
                if iter.peek().is_none() && !segments.is_empty() {
                    // The one trailing slash the apiserver trims.
                    trailing_slash = true;
                    continue;
                }
                return Err(PathError::EmptySegment);
            }
            let decoded = decode_segment(seg)?;
            if decoded == "." || decoded == ".." {
                return Err(PathError::DotSegment);
            }
            segments.push(decoded);
        }
    }
    let mut path = String::with_capacity(raw.len());
    for seg in &segments {
        path.push('/');
        path.push_str(seg);
    }
    if trailing_slash || segments.is_empty() {
        path.push('/');
    }
    Ok((path, segments))
}

fn decode_segment(seg: &str) -> Result<Cow<'_, str>, PathError> {
    // Fast path: nothing to decode. (A `Uri` path is ASCII; anything unusual takes the slow path.)
    if seg
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'%' && b != b'\\')
    {
        return Ok(Cow::Borrowed(seg));
    }
    let mut out = Vec::with_capacity(seg.len());
    let mut bytes = seg.bytes();
    while let Some(b) = bytes.next() {
        let byte = if b == b'%' {
            let hi = bytes.next().and_then(hex_value);
            let lo = bytes.next().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::InvalidPercentEncoding);
            };
            let v = (hi << 4) | lo;
            match v {
                b'/' => return Err(PathError::EncodedSlash),
                b'\\' => return Err(PathError::EncodedBackslash),
                _ => {}
            }
            v
        } else {
            if b == b'\\' {
                return Err(PathError::Backslash);
            }
            b
        };
        if byte < 0x20 || byte == 0x7f {
            return Err(PathError::ControlCharacter);
        }
        out.push(byte);
    }
    let s = String::from_utf8(out).map_err(|_| PathError::InvalidUtf8)?;
    if s.chars().any(char::is_control) {
        // C1 controls such as U+0085 (NEL).
        return Err(PathError::ControlCharacter);
    }
    Ok(Cow::Owned(s))
}

pub(super) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
