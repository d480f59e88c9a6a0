//! Header hygiene between client and upstream (pure functions).
//!
//! Order matters (peers.md §3.1): headers *named in* `Connection` are removed first, then the
//! standard hop-by-hop set, then every identity header a client must never be able to set
//! upstream. Only after that does the proxy add its own (`Authorization`, `Impersonate-*`,
//! `Audit-ID`, `X-Forwarded-For`), so no client-chosen `Connection` token can strip them.

use http::{header, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the de-facto ones).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove every header named in any `Connection` value (comma-separated, any case, any
/// surrounding whitespace), then the hop-by-hop set. A value with bytes beyond visible ASCII
/// still names the headers its valid tokens spell (it was skipped whole, so the headers it
/// named went on: review).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // A scan of the names present (usually none is hop-by-hop) instead of a hashed `remove`
    // per hop-by-hop name: 18 of those per proxied request had cost ≈ 5 k instructions
    // (callgrind), more than the rest of the header preparation.
    remove_where(headers, |n| HOP_BY_HOP.contains(n));
}

/// Remove every header whose name matches. Usually none does: that case is one scan with no
/// allocation. Otherwise the names are collected in that same scan and removed after — not
/// rescanned from the start after each removal, which a client could make quadratic (hundreds
/// of matching names behind hundreds of others in one HTTP/2 header block).
fn remove_where(headers: &mut HeaderMap, matches: impl Fn(&HeaderName) -> bool) {
    let mut keys = headers.keys();
    let Some(first) = keys.find(|n| matches(n)).cloned() else {
        return;
    };
    let rest: Vec<HeaderName> = keys.filter(|n| matches(n)).cloned().collect();
    headers.remove(first);
    for name in rest {
        headers.remove(name);
    }
}

/// Whether a header carries identity a client must never pass upstream: `Authorization`,
/// `Impersonate-*` (User, Group, Uid, Extra-*), `X-Remote-*` (front-proxy auth), `Audit-ID` —
/// also spelled with `_` for `-` (`Impersonate_User`, and `X_Forwarded_For` / `X_Real_Ip`,
/// which would forge the API server's `sourceIPs`): Go's server ignores those, but a hop
/// between the proxy and the API server that treats `_` as `-` (as some proxies and CGI-style
/// servers do) would turn them into identity headers.
pub fn is_identity_header(name: &HeaderName) -> bool {
    let n = name.as_str().as_bytes(); // always lower-case in the http crate
    same(n, b"authorization")
        || same(n, b"audit-id")
        || starts(n, b"impersonate-")
        || starts(n, b"x-remote-")
        // The real ones the proxy sets or drops; only their `_` spellings are identity here.
        || (n.contains(&b'_') && (same(n, b"x-forwarded-for") || same(n, b"x-real-ip")))
}

/// `n` spells `target`, an `_` in `n` standing for a `-` in `target`: compared in place rather
/// than on a rewritten copy of the name.
fn same(n: &[u8], target: &[u8]) -> bool {
    n.len() == target.len()
        && n.iter()
            .zip(target)
            .all(|(a, b)| a == b || (*a == b'_' && *b == b'-'))
}

fn starts(n: &[u8], prefix: &[u8]) -> bool {
    n.len() >= prefix.len() && same(&n[..prefix.len()], prefix)
}

/// Remove every identity header (see [`is_identity_header`]).
pub fn strip_identity(headers: &mut HeaderMap) {
    remove_where(headers, is_identity_header);
}

/// Keep only the `Sec-WebSocket-Protocol` offers `keep` accepts (comma-separated values across
/// every such header, trimmed, empties dropped), as one header — none left, no header. An
/// absent header stays absent.
pub fn retain_websocket_protocols(headers: &mut HeaderMap, keep: impl Fn(&str) -> bool) {
    if !headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && keep(p))
        .map(str::to_owned)
        .collect();
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if kept.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&kept.join(", ")) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
}

/// The subprotocol prefix through which a browser WebSocket client carries a bearer token
/// (kube-apiserver's `websocket.NewProtocolAuthenticator` reads it; so does `authn::request`).
pub const BEARER_PROTOCOL: &str = "base64url.bearer.authorization.k8s.io.";

/// Remove token-carrying subprotocols (any case) from a `Sec-WebSocket-Protocol` offer, on
/// every forwarded request: the API server must authenticate the proxy (and impersonate the
/// caller), never fall back to a client's token — e.g. were the proxy's own credential ever
/// rejected — and a token the proxy read is not the upstream's to see.
pub fn strip_bearer_protocols(h: &mut HeaderMap) {
    retain_websocket_protocols(h, |p| !p.to_ascii_lowercase().starts_with(BEARER_PROTOCOL));
}

/// Drop `names` (lower case) from the tokens of every `Connection` value, so that
/// [`strip_hop_by_hop`] leaves headers of those names alone: the proxy's own headers set before
/// it runs (the trace context). A value left with no token goes. Nothing to do, and nothing
/// allocated, without a `Connection` header (every HTTP/2 request).
pub fn unname_in_connection(headers: &mut HeaderMap, names: &[&str]) {
    let names_one = |v: &HeaderValue| {
        v.as_bytes().split(|b| *b == b',').any(|t| {
            let t = t.trim_ascii();
            names.iter().any(|n| t.eq_ignore_ascii_case(n.as_bytes()))
        })
    };
    if !headers.get_all(header::CONNECTION).iter().any(names_one) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| {
            let tokens: Vec<&[u8]> = v
                .as_bytes()
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|t| {
                    !t.is_empty() && !names.iter().any(|n| t.eq_ignore_ascii_case(n.as_bytes()))
                })
                .collect();
            // The tokens come from a valid value, so their join is one too.
            HeaderValue::from_bytes(&tokens.join(&b", "[..]))
                .ok()
                .filter(|v| !v.is_empty())
        })
        .collect();
    headers.remove(header::CONNECTION);
    for v in kept {
        headers.append(header::CONNECTION, v);
    }
}

/// Whether the request asks for an HTTP/1.1 upgrade: a `Connection` token `upgrade` and an
/// `Upgrade` header (as the apiserver's `httpstream.IsUpgradeRequest`, plus the header itself).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Append `peer` to `X-Forwarded-For`. With `trust_existing` false, any client-sent value is
/// dropped first — and so is `X-Real-Ip`: the API server records every XFF entry and then
/// X-Real-Ip as source IPs (`utilnet.SourceIPs`), and the client can forge all of them.
pub fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue, trust_existing: bool) {
    if !trust_existing {
        headers.remove(&X_REAL_IP);
        // The peer's value as it is: a clone shares its bytes.
        headers.insert(X_FORWARDED_FOR, peer.clone());
        return;
    }
    let mut value = Vec::new();
    for v in headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        value.extend_from_slice(v.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(peer.as_bytes());
    // The buffer becomes the header value as it is (validated, not copied).
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// Header names the forwarder sets on every request, made once (a `&str` name not known to
/// the http crate is copied into a new `HeaderName` at each use).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const AUDIT_ID: HeaderName = HeaderName::from_static("audit-id");
pub const IMPERSONATE_USER: HeaderName = HeaderName::from_static("impersonate-user");
pub const IMPERSONATE_GROUP: HeaderName = HeaderName::from_static("impersonate-group");
pub const IMPERSONATE_UID: HeaderName = HeaderName::from_static("impersonate-uid");

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn token_carrying_subprotocols_are_not_offered_upstream() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(
                "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.c2VjcmV0",
            ),
        );
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("Base64url.Bearer.Authorization.K8s.Io.eA"),
        );
        strip_bearer_protocols(&mut h);
        assert_eq!(h.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().count(), 1);
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "v5.channel.k8s.io");
        let mut only = HeaderMap::new();
        only.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("base64url.bearer.authorization.k8s.io.c2VjcmV0"),
        );
        strip_bearer_protocols(&mut only);
        assert!(!only.contains_key(header::SEC_WEBSOCKET_PROTOCOL));
    }

    /// Many identity headers behind many others (what a client can pack into one HTTP/2
    /// header block): every one removed — in one scan, where removing one at a time rescanned
    /// from the start each time — and nothing else.
    #[test]
    fn many_identity_headers_among_many_others_all_go() {
        let mut h = HeaderMap::new();
        for i in 0..300 {
            h.append(
                HeaderName::from_bytes(format!("a_{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        for i in 0..300 {
            for name in [format!("x-remote-{i}"), format!("impersonate_extra_{i}")] {
                h.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_static("1"),
                );
            }
        }
        h.append("x_real_ip", HeaderValue::from_static("10.0.0.1"));
        h.append("audit-id", HeaderValue::from_static("x"));
        strip_identity(&mut h);
        assert_eq!(h.keys_len(), 300);
        assert!(h.keys().all(|k| k.as_str().starts_with("a_")));
        // Names that only look alike stay.
        let mut h = map(&[
            ("x-remotely", "1"),
            ("authorizations", "1"),
            ("x_forwarded_fo", "1"),
        ]);
        strip_identity(&mut h);
        assert_eq!(h.keys_len(), 3);
    }

    #[test]
    fn connection_named_headers_are_removed_with_odd_spacing_and_case() {
        let mut h = map(&[
            ("connection", " Impersonate-User ,x-secret"),
            ("connection", "KEEP-ALIVE"),
            ("impersonate-user", "admin"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("accept", "application/json"),
        ]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("impersonate-user").is_none());
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("connection").is_none());
        assert_eq!(h["accept"], "application/json");
        // A value with a byte beyond visible ASCII still names the others.
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_bytes(b"x-secret, caf\xe9").unwrap(),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none(), "{h:?}");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn every_hop_by_hop_header_is_removed_with_all_its_values_and_nothing_else() {
        let mut h = map(&[
            ("proxy-connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("keep-alive", "max=9"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic eA=="),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "application/json"),
            ("x-keep", "1"),
            ("x-keep", "2"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                ("accept", "application/json"),
                ("x-keep", "1"),
                ("x-keep", "2")
            ]
        );
    }

    #[test]
    fn identity_headers_are_all_stripped() {
        let mut h = map(&[
            ("authorization", "Bearer x"),
            ("impersonate-user", "a"),
            ("impersonate-group", "system:masters"),
            ("impersonate-uid", "1"),
            ("impersonate-extra-scopes", "x"),
            ("x-remote-user", "root"),
            ("x-remote-extra-foo", "bar"),
            ("audit-id", "forged"),
            ("user-agent", "kubectl"),
            ("impersonate_user", "a"),
            ("impersonate_group", "system:masters"),
            ("x_remote_user", "root"),
            ("x-remote_group", "system:masters"),
            ("audit_id", "forged"),
            ("x_forwarded_for", "6.6.6.6"),
            ("x_real_ip", "6.6.6.6"),
            ("x_custom", "kept"),
        ]);
        strip_identity(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["user-agent"], "kubectl");
        assert_eq!(h["x_custom"], "kept");
    }

    #[test]
    fn upgrade_detection() {
        assert!(is_upgrade(&map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_upgrade(&map(&[("connection", "upgrade")])));
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn unnamed_headers_survive_the_strip_and_upgrades_still_upgrade() {
        let mut h = map(&[
            ("connection", "TraceParent , Upgrade"),
            ("connection", "tracestate"),
            ("upgrade", "SPDY/3.1"),
            ("traceparent", "ours"),
            ("tracestate", "ours too"),
            ("x-named", "v"),
        ]);
        h.append("connection", HeaderValue::from_static("x-named"));
        unname_in_connection(&mut h, &["traceparent", "tracestate"]);
        let left: Vec<&HeaderValue> = h.get_all("connection").iter().collect();
        assert_eq!(left, ["Upgrade", "x-named"]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h);
        assert_eq!(h["traceparent"], "ours");
        assert_eq!(h["tracestate"], "ours too");
        assert!(h.get("x-named").is_none());
        // No `Connection` header: untouched.
        let mut h = map(&[("traceparent", "ours")]);
        unname_in_connection(&mut h, &["traceparent"]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn forwarded_for_drops_untrusted_and_appends() {
        let peer = &HeaderValue::from_static("10.1.2.3");
        let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        append_forwarded_for(&mut h, peer, false);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert!(h.get("x-real-ip").is_none());
        let mut h = map(&[("x-forwarded-for", "1.1.1.1")]);
        append_forwarded_for(&mut h, peer, true);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
    }
}
