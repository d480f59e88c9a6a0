//! The 403 body, byte for byte as kube-apiserver writes it
//! (`apiserver:pkg/endpoints/handlers/responsewriters/errors.go` `Forbidden` +
//! `forbiddenMessage`, then `apimachinery:pkg/api/errors` `NewForbidden`;
//! shared/reference/kubernetes-api.md §2.1):
//!
//! ```text
//! <resource>[.<group>] ["<name>"] is forbidden: User "<u>" cannot <verb> resource "<res>[/<sub>]" in API group "<g>" in the namespace "<ns>"[: <reason>]
//! <resource>[.<group>] ["<name>"] is forbidden: User "<u>" cannot <verb> resource "<res>[/<sub>]" in API group "<g>" at the cluster scope[: <reason>]
//! forbidden: User "<u>" cannot <verb> path "<path>"[: <reason>]
//! ```
//!
//! As in Go, the `User … cannot …` part is quoted with Go's `%q` and then HTML-escaped (`&`, `<`,
//! `>`); the `<resource>.<group> "<name>"` prefix and the reason are not escaped.
//! `details = {name, group, kind: <resource>}` with empty fields omitted (`{}` for a
//! non-resource path).
//!
//! One deliberate difference: Go passes the assembled message to `fmt.Errorf` as a format
//! string, so a `%` in it (a decoded `%25` in a path) comes out mangled (`%!x(MISSING)`); we
//! keep the text as is.

use std::fmt::Write as _;

use crate::authn::identity::Identity;
use crate::k8s::request::RequestInfo;
use crate::refusal::Forbidden;

/// The apiserver's 403 for `req` by `id`, with `reason` (may be empty) appended; rendered by
/// the refusal table.
pub fn forbidden(id: &Identity, req: &RequestInfo, reason: &str) -> Forbidden {
    let user = go_quote(&id.user);
    let inner = if !req.is_resource_request {
        format!(
            "User {user} cannot {} path {}",
            req.verb,
            go_quote(&req.path)
        )
    } else {
        let mut resource = req.resource.clone();
        if !req.subresource.is_empty() {
            resource.push('/');
            resource.push_str(&req.subresource);
        }
        let (verb, resource, group) = (&req.verb, go_quote(&resource), go_quote(&req.api_group));
        if req.namespace.is_empty() {
            format!(
                "User {user} cannot {verb} resource {resource} in API group {group} at the cluster scope"
            )
        } else {
            format!(
                "User {user} cannot {verb} resource {resource} in API group {group} in the namespace {}",
                go_quote(&req.namespace)
            )
        }
    };
    let mut err = html_escape(&inner);
    if !reason.is_empty() {
        err.push_str(": ");
        err.push_str(reason);
    }

    let (group, resource, name) = if req.is_resource_request {
        (
            req.api_group.as_str(),
            req.resource.as_str(),
            req.name.as_str(),
        )
    } else {
        ("", "", "")
    };
    let message = if group.is_empty() && resource.is_empty() {
        format!("forbidden: {err}")
    } else {
        let qualified = if group.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}.{group}")
        };
        if name.is_empty() {
            format!("{qualified} is forbidden: {err}")
        } else {
            format!("{qualified} {} is forbidden: {err}", go_quote(name))
        }
    };

    Forbidden {
        message,
        name: name.to_owned(),
        group: group.to_owned(),
        resource: resource.to_owned(),
    }
}

/// Go's `strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")`.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Go's `%q` (`strconv.Quote`) for valid UTF-8: `"` and `\` escaped, `\a \b \f \n \r \t \v`,
/// other non-printable characters as `\xNN` (below U+0080), `\uNNNN` or `\UNNNNNNNN`.
/// "Printable" follows Go's `unicode.IsPrint` for the characters that matter in practice
/// (controls, non-ASCII spaces, line/paragraph separators, format characters, private use,
/// non-characters); unassigned code points are kept as they are.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if go_is_print(c) => out.push(c),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

fn go_is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    !matches!(u,
        // Cf (format)
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
        // Co (private use)
        | 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD
        // non-characters
        | 0xFDD0..=0xFDEF | 0xFFFE | 0xFFFF)
        && (u & 0xFFFE) != 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_strconv_quote() {
        assert_eq!(go_quote("alice"), r#""alice""#);
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(go_quote("a\nb\t"), r#""a\nb\t""#);
        assert_eq!(go_quote("\u{1}"), r#""\x01""#);
        assert_eq!(go_quote("\u{7f}"), r#""\x7f""#);
        assert_eq!(go_quote("\u{85}"), r#""\u0085""#);
        assert_eq!(go_quote("\u{a0}"), r#""\u00a0""#);
        assert_eq!(go_quote("\u{200b}"), r#""\u200b""#);
        assert_eq!(go_quote("\u{F0000}"), r#""\U000f0000""#);
        assert_eq!(go_quote("jürgen 日本"), "\"jürgen 日本\"");
    }
}
