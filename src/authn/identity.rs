//! The one `Identity` produced by authentication and read by everything after it.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{
    authz::Scope,
    k8s::headers::{IMPERSONATE_GROUP, IMPERSONATE_UID, IMPERSONATE_USER},
};

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// A client certificate; the SHA-256 fingerprint of its DER, hex.
    ClientCertificate { fingerprint: String },
    /// A JWT bearer token from `issuer`; `token_id` is its `jti` claim (empty when absent).
    Jwt { issuer: String, token_id: String },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
    /// The tenant the caller belongs to (from `authorization.tenants`), once resolved.
    pub tenant: Option<String>,
    /// The token's scope, which narrows the caller's grants (None: not narrowed).
    pub scope: Option<Scope>,
    pub method: Method,
}

/// How the API server names a service account user: `system:serviceaccount:<ns>:<name>`.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

impl Identity {
    /// The groups as the API server knows this user: its authenticator adds
    /// `system:authenticated` to every authenticated user (`AuthenticatedGroupAdder`), and its
    /// impersonation filter to every impersonated one — `system:unauthenticated` instead to
    /// `system:anonymous` — unless either is there already. What audit events and policies
    /// (`userGroups`) see, and whoami says. (The proxy's own grants and quotas match the groups
    /// as authenticated, without it.)
    pub fn groups_as_authenticated(&self) -> Vec<String> {
        let mut groups = Vec::with_capacity(self.groups.len() + 1);
        groups.extend_from_slice(&self.groups);
        if !groups
            .iter()
            .any(|g| g == "system:authenticated" || g == "system:unauthenticated")
        {
            groups.push(if self.user == "system:anonymous" {
                "system:unauthenticated".into()
            } else {
                "system:authenticated".into()
            });
        }
        groups
    }

    /// Add `Impersonate-User`, one `Impersonate-Group` per group, `Impersonate-Uid` and
    /// `Impersonate-Extra-<key>` (key escaped as client-go does) so the API server's RBAC,
    /// fairness and audit see the real caller.
    ///
    /// Fails closed: values were validated as header-safe when the identity was built, so one
    /// that cannot be sent (or an empty user name) is a bug — and skipped, it would change who
    /// the API server sees (no `Impersonate-User`, or an empty one, is the proxy's own
    /// account; a dropped extra can be a dropped restriction, such as a token's scopes).
    pub fn impersonation_headers(&self, h: &mut HeaderMap) -> Result<(), Unsendable> {
        if self.user.is_empty() {
            return Err(Unsendable);
        }
        h.insert(IMPERSONATE_USER, value(&self.user)?);
        for g in &self.groups {
            h.append(IMPERSONATE_GROUP, value(g)?);
        }
        if self.groups.is_empty() && self.user.starts_with(SERVICE_ACCOUNT_PREFIX) {
            // The API server gives an impersonated service account named without groups its
            // service-account groups (`system:serviceaccounts`, `…:<namespace>`). A
            // certificate or token mapped to that name (`allow_system_identities`) never
            // authenticated as one — kube-apiserver's own x509 authenticator would give it
            // `system:authenticated` alone — so that group is named, and none is added.
            // (`kubectl --as system:serviceaccount:…` has its groups derived already.)
            h.append(
                IMPERSONATE_GROUP,
                HeaderValue::from_static("system:authenticated"),
            );
        }
        if !self.uid.is_empty() {
            h.insert(IMPERSONATE_UID, value(&self.uid)?);
        }
        for (key, values) in &self.extra {
            append_extra(h, key, values.iter().map(String::as_str))?;
        }
        // Ours: which tenant and which token, so the API server's audit can name them.
        if let Some(tenant) = &self.tenant {
            append_extra(h, TENANT_EXTRA, [tenant.as_str()])?;
        }
        if let Method::Jwt { token_id, .. } = &self.method {
            if !token_id.is_empty() {
                append_extra(h, TOKEN_ID_EXTRA, [token_id.as_str()])?;
            }
        }
        Ok(())
    }
}

/// An identity part that cannot travel as an `Impersonate-*` header (see
/// [`Identity::impersonation_headers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsendable;

fn value(s: &str) -> Result<HeaderValue, Unsendable> {
    HeaderValue::from_str(s).map_err(|_| Unsendable)
}

/// Whether `s` can travel upstream as an `Impersonate-*` header value and arrive as it is, and
/// be shown as it is: no control character but a tab inside it (C0, DEL, or C1 — U+0080 to
/// U+009F), none of the
/// invisible characters that reorder or hide text (bidi controls, zero-width marks, which would
/// let a name rearrange a log line), and no space or tab at either end. HTTP/1.1 parsers (Go's
/// included, on the upgrade path and the HTTP/1.1 fallback) trim those — ASCII space and tab
/// only — so `" system:masters"` would arrive as `system:masters`, past every check made on the
/// padded name. Other text beyond ASCII (`josé`, `Équipe`) travels as its UTF-8 bytes, as the
/// API server takes it. Every identity source (certificate, token, `--as`) refuses what fails
/// this.
pub fn forwards_intact(s: &str) -> bool {
    // What `HeaderValue::from_str` accepts, less C1 controls (which it takes) and the hidden
    // characters.
    s.chars()
        .all(|c| c == '\t' || !(c.is_control() || hides_text(c)))
        && !s.starts_with([' ', '\t'])
        && !s.ends_with([' ', '\t'])
}

/// Characters that change how the text around them reads without showing: the bidi controls
/// (the Trojan Source set: U+061C, the marks U+200E/F, embeddings and overrides U+202A–E,
/// isolates U+2066–9), invisible ones (zero-width space U+200B, word joiner and invisible
/// operators U+2060–4, byte-order mark U+FEFF, soft hyphen U+00AD, U+180E, the tag characters),
/// and the line and paragraph separators. Not the zero-width (non-)joiners U+200C/D, which
/// real names in Persian and Indic scripts hold.
pub fn hides_text(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

/// Extra key naming the caller's tenant.
pub const TENANT_EXTRA: &str = "portcullis.io/tenant";
/// Extra key naming the token's `jti`.
pub const TOKEN_ID_EXTRA: &str = "portcullis.io/token-id";

fn append_extra<'a>(
    h: &mut HeaderMap,
    key: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<(), Unsendable> {
    let header = format!("impersonate-extra-{}", escape_extra_key(key));
    let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| Unsendable)?;
    for v in values {
        h.append(name.clone(), value(v)?);
    }
    Ok(())
}

/// client-go's `headerKeyEscape` — every byte that is not an RFC 7230 token byte, and `%`,
/// becomes `%XX` with upper-case hex — and upper-case letters too: header names arrive
/// lower-cased (HTTP/2 requires it; the API server lower-cases the key before unescaping), so
/// `Abc` sent as a letter would be impersonated as `abc`, another key than the one authorized.
pub fn escape_extra_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        let token = b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$&'*+-.^_`|~".contains(&b);
        if token {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_key_escaping_matches_client_go() {
        assert_eq!(
            escape_extra_key("example.com/scopes"),
            "example.com%2Fscopes"
        );
        assert_eq!(escape_extra_key("a%b"), "a%25b");
        // An upper-case letter survives the lower-casing of header names only escaped.
        assert_eq!(escape_extra_key("Abc"), "%41bc");
        let name = format!("impersonate-extra-{}", escape_extra_key("Team/ID")).to_lowercase();
        assert_eq!(name, "impersonate-extra-%54eam%2f%49%44");
    }

    /// A name beyond ASCII travels as its UTF-8 bytes, as the API server takes it (a
    /// certificate's CN `Zoë`, a token's `josé`); control characters and padding still do not.
    #[test]
    fn utf8_names_travel_byte_for_byte() {
        assert!(forwards_intact("josé"));
        assert!(forwards_intact("Équipe Ω"));
        assert!(!forwards_intact(" josé"));
        assert!(!forwards_intact("jo\u{7f}sé"));
        assert!(!forwards_intact("jo\u{85}sé"), "C1 control");
        assert!(!forwards_intact("admin\u{202e}nimda"), "bidi override");
        assert!(!forwards_intact("ad\u{200b}min"), "zero-width space");
        assert!(!forwards_intact("a\u{061c}b"), "Arabic letter mark");
        assert!(
            forwards_intact("می\u{200c}خواهم"),
            "a Persian name's zero-width non-joiner"
        );
        let id = Identity {
            user: "josé".into(),
            uid: String::new(),
            groups: vec!["Équipe".into()],
            extra: BTreeMap::new(),
            tenant: None,
            scope: None,
            method: Method::ClientCertificate {
                fingerprint: "00".into(),
            },
        };
        let mut h = HeaderMap::new();
        assert_eq!(id.impersonation_headers(&mut h), Ok(()));
        assert_eq!(h["impersonate-user"].as_bytes(), "josé".as_bytes());
        assert_eq!(h["impersonate-group"].as_bytes(), "Équipe".as_bytes());
    }

    /// Nothing is sent for an identity with a part that cannot travel: without
    /// `Impersonate-User` (or with an empty one) the API server would run the request as the
    /// proxy's own account, and a dropped extra can be a dropped restriction.
    #[test]
    fn an_identity_that_cannot_be_sent_whole_is_refused() {
        let good = Identity {
            user: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into()],
            extra: BTreeMap::from([("scopes".to_string(), vec!["read".to_string()])]),
            tenant: None,
            scope: None,
            method: Method::ClientCertificate {
                fingerprint: "00".into(),
            },
        };
        let mut h = HeaderMap::new();
        assert_eq!(good.impersonation_headers(&mut h), Ok(()));
        let bad = [
            Identity {
                user: String::new(),
                ..good.clone()
            },
            Identity {
                user: "al\nice".into(),
                ..good.clone()
            },
            Identity {
                groups: vec!["dev".into(), "o\u{7f}ps".into()],
                ..good.clone()
            },
            Identity {
                uid: "u\r1".into(),
                ..good.clone()
            },
            Identity {
                extra: BTreeMap::from([("scopes".to_string(), vec!["re\nad".to_string()])]),
                ..good.clone()
            },
            Identity {
                tenant: Some("team\0a".into()),
                ..good.clone()
            },
        ];
        for id in bad {
            let mut h = HeaderMap::new();
            assert_eq!(id.impersonation_headers(&mut h), Err(Unsendable), "{id:?}");
        }
    }

    #[test]
    fn impersonation_headers_carry_user_groups_and_extra() {
        let id = Identity {
            user: "alice".into(),
            uid: "u-1".into(),
            groups: vec!["dev".into(), "ops".into()],
            extra: BTreeMap::from([("example.com/scopes".to_string(), vec!["a".to_string()])]),
            tenant: None,
            scope: None,
            method: Method::ClientCertificate {
                fingerprint: "00".into(),
            },
        };
        let mut h = HeaderMap::new();
        id.impersonation_headers(&mut h).unwrap();
        assert_eq!(h["impersonate-user"], "alice");
        let groups: Vec<_> = h.get_all("impersonate-group").iter().collect();
        assert_eq!(groups, ["dev", "ops"]);
        assert_eq!(h["impersonate-uid"], "u-1");
        assert_eq!(h["impersonate-extra-example.com%2fscopes"], "a");
        assert!(h.get("impersonate-extra-portcullis.io%2ftenant").is_none());
    }

    /// A certificate or token mapped to a service account's name, without groups, is sent
    /// with the one group any authenticated user has, so the API server does not add the
    /// service-account groups it would give a real service account.
    #[test]
    fn a_service_account_name_without_groups_gets_no_service_account_groups() {
        let mut id = crate::authz::tests::id("system:serviceaccount:ns:sa", &[]);
        let mut h = HeaderMap::new();
        id.impersonation_headers(&mut h).unwrap();
        let groups: Vec<_> = h.get_all("impersonate-group").iter().collect();
        assert_eq!(groups, ["system:authenticated"]);
        assert_eq!(id.groups_as_authenticated(), ["system:authenticated"]);
        id.groups = vec!["ops".into()];
        let mut h = HeaderMap::new();
        id.impersonation_headers(&mut h).unwrap();
        let groups: Vec<_> = h.get_all("impersonate-group").iter().collect();
        assert_eq!(groups, ["ops"]);
        let plain = crate::authz::tests::id("alice", &[]);
        let mut h = HeaderMap::new();
        plain.impersonation_headers(&mut h).unwrap();
        assert!(h.get("impersonate-group").is_none());
    }

    /// As the API server sees the groups: `system:authenticated` added (once), except for
    /// `system:anonymous`, which gets `system:unauthenticated`; the impersonation headers stay
    /// the groups as authenticated.
    #[test]
    fn the_api_server_s_implicit_group_is_added_for_audit_only() {
        let mut id = Identity {
            user: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into()],
            extra: BTreeMap::new(),
            tenant: None,
            scope: None,
            method: Method::ClientCertificate {
                fingerprint: "00".into(),
            },
        };
        assert_eq!(
            id.groups_as_authenticated(),
            ["dev", "system:authenticated"]
        );
        let mut h = HeaderMap::new();
        id.impersonation_headers(&mut h).unwrap();
        assert_eq!(h.get_all("impersonate-group").iter().count(), 1);
        id.groups.push("system:authenticated".into());
        assert_eq!(
            id.groups_as_authenticated(),
            ["dev", "system:authenticated"]
        );
        id.user = "system:anonymous".into();
        id.groups = Vec::new();
        assert_eq!(id.groups_as_authenticated(), ["system:unauthenticated"]);
    }

    #[test]
    fn tenant_and_token_id_travel_as_extras() {
        let id = Identity {
            user: "alice".into(),
            uid: String::new(),
            groups: vec![],
            extra: BTreeMap::new(),
            tenant: Some("team-a".into()),
            scope: None,
            method: Method::Jwt {
                issuer: "https://i".into(),
                token_id: "jti-1".into(),
            },
        };
        let mut h = HeaderMap::new();
        id.impersonation_headers(&mut h).unwrap();
        assert_eq!(h["impersonate-extra-portcullis.io%2ftenant"], "team-a");
        assert_eq!(h["impersonate-extra-portcullis.io%2ftoken-id"], "jti-1");
        assert!(h.get("impersonate-uid").is_none());
    }
}
