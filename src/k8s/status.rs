//! `metav1.Status` — the error body kubectl and client-go understand.
//!
//! Every error portcullis produces itself goes through [`Status`] (rendered by
//! `crate::refusal`; this module is pure data), so kubectl prints
//! `Error from server (<Reason>): <message>` and client-go decodes it as an API error. 429 and
//! 503 carry `details.retryAfterSeconds` *and* an integer `Retry-After` header, the only form
//! client-go honours (shared/reference/kubernetes-api.md §2).

use http::StatusCode;
use serde::Serialize;

/// The wire shape of `metav1.Status` (only the fields we emit).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub metadata: Empty,
    pub status: &'static str,
    pub message: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    pub code: u16,
}

/// `metadata: {}` — ListMeta, always empty on errors.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Empty {}

/// `metav1.StatusDetails`. Note the apiserver quirk: for NotFound/Forbidden/Conflict `kind`
/// holds the *resource* (plural).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// One entry of `details.causes`. The JSON key for the cause type is `reason`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusCause {
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

impl Status {
    /// A failure Status with the given HTTP code, reason and message.
    pub fn failure(code: StatusCode, reason: &str, message: impl Into<String>) -> Self {
        Status {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: message.into(),
            reason: reason.to_string(),
            details: None,
            code: code.as_u16(),
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 401 Unauthorized — deliberately says nothing about why.
    pub fn unauthorized() -> Self {
        Self::failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// 404 NotFound for a named object: `<resource>[.<group>] "<name>" not found`.
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        Self::about_object(
            StatusCode::NOT_FOUND,
            "NotFound",
            resource,
            group,
            name,
            |q| format!("{q} \"{name}\" not found"),
        )
    }

    /// 409 Conflict for a write whose `resourceVersion` precondition does not hold, as the
    /// API server's optimistic-lock error: `Operation cannot be fulfilled on <resource>[.<group>]
    /// "<name>": the object has been modified; please apply your changes to the latest version
    /// and try again` (client-go's `IsConflict` retries it).
    /// The start of every message of the API server's `NewConflict`.
    pub const CONFLICT_PREFIX: &'static str = "Operation cannot be fulfilled on ";
    /// Why an update conflicts with a newer version (`OptimisticLockErrorMsg`).
    pub const OPTIMISTIC_LOCK: &'static str =
        "the object has been modified; please apply your changes to the latest version and try again";

    pub fn conflict(resource: &str, group: &str, name: &str) -> Self {
        Self::about_object(
            StatusCode::CONFLICT,
            "Conflict",
            resource,
            group,
            name,
            |q| {
                format!(
                    "{}{q} \"{name}\": {}",
                    Self::CONFLICT_PREFIX,
                    Self::OPTIMISTIC_LOCK
                )
            },
        )
    }

    /// A failure about one named object: the message from `<resource>[.<group>]`, and
    /// `details.{name, group, kind}` as the API server's `errors.New*` fill them.
    fn about_object(
        code: StatusCode,
        reason: &str,
        resource: &str,
        group: &str,
        name: &str,
        message: impl FnOnce(&str) -> String,
    ) -> Self {
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let mut s = Self::failure(code, reason, message(&qualified));
        s.details = Some(StatusDetails {
            name: Some(name.to_string()),
            group: Some(group.to_string()).filter(|g| !g.is_empty()),
            kind: Some(resource.to_string()),
            ..Default::default()
        });
        s
    }

    /// 413 RequestEntityTooLarge, worded as the apiserver's body limit.
    pub fn too_large(limit: usize) -> Self {
        Self::failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        )
    }

    /// 422 Invalid with one cause per offending field, as `errors.NewInvalid` builds it:
    /// message `<Kind>[.group] "<name>" is invalid: [<field>: <msg>, ...]`, and
    /// `details.{name, group, kind, causes}` so kubectl prints every cause on its own line.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<StatusCause>) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let list: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let joined = match list.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut s = Self::failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {joined}"),
        );
        s.details = Some(StatusDetails {
            name: Some(name.to_string()).filter(|n| !n.is_empty()),
            group: Some(group.to_string()).filter(|g| !g.is_empty()),
            kind: Some(kind.to_string()),
            causes,
            ..Default::default()
        });
        s
    }

    /// 403 Forbidden with a free-form message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// 502 BadGateway: the upstream could not be reached or broke off.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::BAD_GATEWAY, "BadGateway", message)
    }

    /// 503 ServiceUnavailable with a retry hint.
    pub fn service_unavailable(message: impl Into<String>, retry_after_seconds: u32) -> Self {
        Self::failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
        .with_retry_after(retry_after_seconds)
    }

    /// 504 Timeout, as the apiserver's timeout filter words it.
    pub fn timeout() -> Self {
        Self::failure(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            "Timeout: request did not complete within the allotted timeout",
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// Attach `details.retryAfterSeconds` (rendered also as the `Retry-After` header).
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.details
            .get_or_insert_with(Default::default)
            .retry_after_seconds = Some(seconds);
        self
    }

    /// The HTTP status code, falling back to 500 for a code outside the valid range.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Serialize to the JSON bytes the apiserver would send.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_matches_apiserver_bytes() {
        let s = Status::unauthorized();
        assert_eq!(
            String::from_utf8(s.to_json()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
        );
    }

    #[test]
    fn not_found_shape() {
        let s = Status::not_found("deployments", "apps", "web");
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(v["message"], "deployments.apps \"web\" not found");
        assert_eq!(v["details"]["kind"], "deployments");
        assert_eq!(v["code"], 404);
    }
}
