//! Salesforce errors: the wire shape, the product's diagnostic categories, the retry
//! classification, and the conversion into [`salesync_core::Error`].

use std::fmt;

use salesync_core::{Error, Service};
use serde::{Deserialize, Serialize};

/// One error of a Salesforce REST error body (`[{message, errorCode, fields?}]`), or of a
/// per-record result in sObject Collections (`{statusCode, message, fields}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApiError {
    /// The raw `errorCode` (or `statusCode` for per-record errors), e.g. `UNABLE_TO_LOCK_ROW`.
    #[serde(rename = "errorCode", alias = "statusCode", default)]
    pub error_code: String,
    /// The raw message.
    #[serde(default)]
    pub message: String,
    /// The fields the error is tied to, when any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl ApiError {
    /// An error from its parts.
    pub fn new(error_code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { error_code: error_code.into(), message: message.into(), fields: Vec::new() }
    }

    /// The raw message, followed by ` [fields: A, B]` when the error names fields.
    pub fn message_with_fields(&self) -> String {
        if self.fields.is_empty() {
            self.message.clone()
        } else {
            format!("{} [fields: {}]", self.message, self.fields.join(", "))
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_code, self.message_with_fields())
    }
}

/// The four categories under which Sales Insight Actions lists failed Salesforce writes on its
/// Diagnostics page (reference §2.9), with the fix each calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCategory {
    /// The connection is broken: an operator must disconnect and reconnect.
    Authentication,
    /// Temporary: retried automatically.
    Intermittent,
    /// An admin must repair the org (permissions, validation rules, required fields), then retry by hand.
    AccessValidation,
    /// Anything else (e.g. `CANNOT_UPDATE_CONVERTED_LEAD`, `UNKNOWN_EXCEPTION`).
    Other,
}

/// Sorts a Salesforce error into the product's diagnostic category.
///
/// Codes are compared case-insensitively; token-endpoint errors (`invalid_grant` with a description
/// such as `authentication failure`, `expired access/refresh token`, `inactive user`, `inactive
/// organization`, `ip restricted`) are Authentication. `INVALID_FIELD` counts as Intermittent only
/// when its message shows a read timeout (`Net::ReadTimeout`), as SIA lists it. Beyond §2.9's own
/// list, a few codes that are plainly validation or access problems (`INVALID_CROSS_REFERENCE_KEY`,
/// `DUPLICATE_VALUE`, `INVALID_FIELD`, `MALFORMED_QUERY`, …) are Access/Validation, and the session
/// codes (`INVALID_SESSION_ID`, `invalid_client`) are Authentication.
pub fn categorize(error_code: &str, message: &str) -> ErrorCategory {
    let code = error_code.trim().to_ascii_uppercase();
    match code.as_str() {
        "AUTHENTICATION_FAILURE"
        | "EXPIRED_ACCESS"
        | "INACTIVE_ORGANIZATION"
        | "INACTIVE_USER"
        | "INVALID_GRANT"
        | "INVALID_SESSION_ID"
        | "INVALID_CLIENT"
        | "INVALID_CLIENT_ID"
        | "UNAUTHORIZED_CLIENT"
        | "INVALID_AUTH_HEADER" => ErrorCategory::Authentication,
        "FAILED_WRITE"
        | "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
        | "QUERY_TIMEOUT"
        | "REQUEST_LIMIT_EXCEEDED"
        | "SERVER_UNAVAILABLE"
        | "UNABLE_TO_LOCK_ROW" => ErrorCategory::Intermittent,
        "INVALID_FIELD" if message.contains("ReadTimeout") => ErrorCategory::Intermittent,
        "API_CURRENTLY_DISABLED"
        | "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"
        | "ENTITY_IS_LOCKED"
        | "FIELD_CUSTOM_VALIDATION_EXCEPTION"
        | "FIELD_FILTER_VALIDATION_EXCEPTION"
        | "FIELD_INTEGRITY_EXCEPTION"
        | "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY"
        | "INSUFFICIENT_ACCESS_OR_READONLY"
        | "INVALID_FIELD_FOR_INSERT_UPDATE"
        | "INVALID_TYPE"
        | "REQUIRED_FIELD_MISSING"
        | "TXN_SECURITY_NO_ACCESS"
        // Not in SIA's list, but access/validation by nature.
        | "INVALID_FIELD"
        | "MALFORMED_QUERY"
        | "INVALID_CROSS_REFERENCE_KEY"
        | "DUPLICATE_VALUE"
        | "DUPLICATES_DETECTED"
        | "STRING_TOO_LONG"
        | "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        | "INVALID_ID_FIELD"
        | "INSUFFICIENT_ACCESS"
        | "API_DISABLED_FOR_ORG" => ErrorCategory::AccessValidation,
        _ if code.is_empty() && is_auth_description(message) => ErrorCategory::Authentication,
        _ => ErrorCategory::Other,
    }
}

/// True for the documented `error_description`s of a token-endpoint `invalid_grant`.
fn is_auth_description(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "authentication failure",
        "expired access/refresh token",
        "inactive user",
        "inactive organization",
        "ip restricted",
    ]
    .iter()
    .any(|d| m.contains(d))
}

/// What the client does with one failed answer of a data call (a pure function of the answer;
/// see [`classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The session is invalid: obtain a new token and repeat the call once.
    Reauthenticate,
    /// An intermittent failure: back off and repeat (only when the call is idempotent).
    Retry,
    /// A concurrency limit: back off and repeat; if retries run out it is a rate limit.
    RetryRateLimited,
    /// Do not repeat: the answer is final.
    Stop,
}

/// True for `REQUEST_LIMIT_EXCEEDED` caused by a concurrency limit (not the daily allocation).
pub fn is_concurrency_limit(message: &str) -> bool {
    message.contains("Concurrent")
}

/// Classifies a failed answer by HTTP status and the first error's raw code and message.
///
/// Retried: `UNABLE_TO_LOCK_ROW`, `SERVER_UNAVAILABLE`, `QUERY_TIMEOUT`, `FAILED_WRITE`, the
/// maintenance error, concurrency `REQUEST_LIMIT_EXCEEDED` (`ConcurrentPerOrgLongTxn`,
/// `ConcurrentRequest`), and 502/503/504 whatever their body. A 500 is retried only with one of
/// those codes. The daily `REQUEST_LIMIT_EXCEEDED` (`TotalRequests`), validation and access errors
/// are never retried.
pub fn classify(status: u16, error_code: &str, message: &str) -> Disposition {
    if status == 401 || error_code == "INVALID_SESSION_ID" {
        return Disposition::Reauthenticate;
    }
    match error_code {
        "REQUEST_LIMIT_EXCEEDED" if is_concurrency_limit(message) => Disposition::RetryRateLimited,
        "REQUEST_LIMIT_EXCEEDED" => Disposition::Stop,
        "UNABLE_TO_LOCK_ROW"
        | "SERVER_UNAVAILABLE"
        | "QUERY_TIMEOUT"
        | "FAILED_WRITE"
        | "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE" => Disposition::Retry,
        _ if matches!(status, 502..=504) => Disposition::Retry,
        _ => Disposition::Stop,
    }
}

/// True for a per-record error inside a collections result that may succeed when the record is
/// sent again (lock contention, a failed write, maintenance).
pub fn record_error_is_intermittent(code: &str) -> bool {
    matches!(
        code,
        "UNABLE_TO_LOCK_ROW"
            | "FAILED_WRITE"
            | "SERVER_UNAVAILABLE"
            | "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
    )
}

/// Codes that mean the API user lacks a permission (mapped to [`Error::AccessDenied`]).
fn is_access_code(code: &str) -> bool {
    matches!(
        code,
        "INSUFFICIENT_ACCESS_OR_READONLY"
            | "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY"
            | "INSUFFICIENT_ACCESS"
            | "API_CURRENTLY_DISABLED"
            | "API_DISABLED_FOR_ORG"
            | "TXN_SECURITY_NO_ACCESS"
            | "INSUFFICIENT_PRIVILEGES"
            | "FUNCTIONALITY_NOT_ENABLED"
    )
}

/// Turns a final (not retried, or retries exhausted) data-call failure into the port error.
///
/// `retries_exhausted` is true when the failure was retryable but attempts ran out.
pub(crate) fn to_core(status: u16, err: &ApiError, disposition: Disposition) -> Error {
    let service = Service::Salesforce;
    let code = if err.error_code.is_empty() { format!("HTTP {status}") } else { err.error_code.clone() };
    let message = err.message_with_fields();
    match disposition {
        Disposition::Reauthenticate => Error::Unauthenticated { service, detail: format!("{code}: {message}") },
        Disposition::RetryRateLimited => Error::RateLimited { service, retry_after: None },
        Disposition::Retry => Error::Unavailable { service, code, message },
        Disposition::Stop => {
            if err.error_code == "REQUEST_LIMIT_EXCEEDED" {
                Error::QuotaExhausted { service, resets_at: None, detail: message }
            } else if categorize(&err.error_code, &err.message) == ErrorCategory::Authentication {
                Error::Unauthenticated { service, detail: format!("{code}: {message}") }
            } else if is_access_code(&err.error_code) || (status == 403 && err.error_code.is_empty()) {
                Error::AccessDenied { service, code, message }
            } else if status >= 500 {
                Error::Unavailable { service, code, message }
            } else {
                Error::Rejected { service, code, message }
            }
        }
    }
}

/// A token-endpoint failure (`{"error":"…","error_description":"…"}`) as the port error:
/// `invalid_grant` and bad-client errors mean "reconnect required".
pub(crate) fn token_error(status: u16, error: &str, description: &str) -> Error {
    let service = Service::Salesforce;
    match error {
        "invalid_grant"
        | "invalid_client"
        | "invalid_client_id"
        | "unauthorized_client"
        | "inactive_user"
        | "inactive_org" => Error::Unauthenticated { service, detail: format!("{error}: {description}") },
        _ if status >= 500 => {
            Error::Unavailable { service, code: format!("HTTP {status}"), message: description.into() }
        }
        _ => Error::Rejected {
            service,
            code: if error.is_empty() { format!("HTTP {status}") } else { error.to_string() },
            message: description.to_string(),
        },
    }
}

/// A protocol error (unreadable body).
pub(crate) fn protocol(detail: impl Into<String>) -> Error {
    Error::Protocol { service: Service::Salesforce, detail: detail.into() }
}

/// A configuration error naming the key.
pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config { key: key.into(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_diagnostics_code_is_categorized_as_sia_lists_it() {
        use ErrorCategory::*;
        let table: &[(&str, &str, ErrorCategory)] = &[
            // Authentication
            ("AUTHENTICATION_FAILURE", "invalid_grant: authentication failure", Authentication),
            ("EXPIRED_ACCESS", "invalid_grant: expired access/refresh token", Authentication),
            ("INACTIVE_ORGANIZATION", "inactive organization", Authentication),
            ("INACTIVE_USER", "inactive user", Authentication),
            ("INVALID_GRANT", "ip restricted", Authentication),
            ("invalid_grant", "authentication failure", Authentication),
            ("", "expired access/refresh token", Authentication),
            // Intermittent
            ("FAILED_WRITE", "", Intermittent),
            ("INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE", "", Intermittent),
            ("INVALID_FIELD", "Net::ReadTimeout", Intermittent),
            ("QUERY_TIMEOUT", "Your query request was running too long", Intermittent),
            ("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded", Intermittent),
            ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", Intermittent),
            ("REQUEST_LIMIT_EXCEEDED", "ConcurrentRequest Limit exceeded", Intermittent),
            ("SERVER_UNAVAILABLE", "server too busy", Intermittent),
            ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record", Intermittent),
            // Access/Validation
            ("API_CURRENTLY_DISABLED", "", AccessValidation),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "", AccessValidation),
            ("ENTITY_IS_LOCKED", "", AccessValidation),
            ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "", AccessValidation),
            ("FIELD_FILTER_VALIDATION_EXCEPTION", "", AccessValidation),
            ("FIELD_INTEGRITY_EXCEPTION", "", AccessValidation),
            ("INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY", "", AccessValidation),
            ("INSUFFICIENT_ACCESS_OR_READONLY", "", AccessValidation),
            ("INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: MSE_Replied__c", AccessValidation),
            ("INVALID_TYPE", "sObject type 'Lead' is not supported", AccessValidation),
            ("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", AccessValidation),
            ("TXN_SECURITY_NO_ACCESS", "", AccessValidation),
            ("INVALID_FIELD", "No such column 'FullName' on entity 'Account'", AccessValidation),
            // Other
            ("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", Other),
            ("UNKNOWN_EXCEPTION", "", Other),
            ("SOMETHING_NEW", "", Other),
        ];
        for (code, msg, want) in table {
            assert_eq!(categorize(code, msg), *want, "{code} / {msg}");
        }
    }

    #[test]
    fn classification_table() {
        use Disposition::*;
        let table: &[(u16, &str, &str, Disposition)] = &[
            (401, "INVALID_SESSION_ID", "Session expired or invalid", Reauthenticate),
            (400, "UNABLE_TO_LOCK_ROW", "", Retry),
            (503, "SERVER_UNAVAILABLE", "server too busy", Retry),
            (503, "", "", Retry),
            (502, "", "", Retry),
            (500, "UNKNOWN_EXCEPTION", "", Stop),
            (500, "SERVER_UNAVAILABLE", "", Retry),
            (400, "QUERY_TIMEOUT", "", Retry),
            (503, "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE", "", Retry),
            (403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded", RetryRateLimited),
            (403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentRequest Limit exceeded", RetryRateLimited),
            (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", Stop),
            (400, "MALFORMED_QUERY", "unexpected token", Stop),
            (400, "INVALID_FIELD", "No such column", Stop),
            (400, "REQUIRED_FIELD_MISSING", "", Stop),
            (403, "INSUFFICIENT_ACCESS_OR_READONLY", "", Stop),
            (404, "NOT_FOUND", "", Stop),
        ];
        for (status, code, msg, want) in table {
            assert_eq!(classify(*status, code, msg), *want, "{status} {code} {msg}");
        }
    }

    #[test]
    fn final_errors_are_typed() {
        let e =
            to_core(403, &ApiError::new("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), Disposition::Stop);
        assert!(matches!(e, Error::QuotaExhausted { .. }));
        let e = to_core(
            403,
            &ApiError::new("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded"),
            Disposition::RetryRateLimited,
        );
        assert!(matches!(e, Error::RateLimited { .. }));
        let e = to_core(400, &ApiError::new("MALFORMED_QUERY", "bad"), Disposition::Stop);
        assert!(
            matches!(e, Error::Rejected { ref code, ref message, .. } if code == "MALFORMED_QUERY" && message == "bad")
        );
        let e = to_core(400, &ApiError::new("INSUFFICIENT_ACCESS_OR_READONLY", "no"), Disposition::Stop);
        assert!(matches!(e, Error::AccessDenied { .. }));
        let e = to_core(503, &ApiError::new("SERVER_UNAVAILABLE", "busy"), Disposition::Retry);
        assert!(matches!(e, Error::Unavailable { .. }));
        let mut req = ApiError::new("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]");
        req.fields = vec!["LastName".into()];
        let e = to_core(400, &req, Disposition::Stop);
        assert!(
            matches!(e, Error::Rejected { ref message, .. } if message == "Required fields are missing: [LastName] [fields: LastName]")
        );
        let e = token_error(400, "invalid_grant", "authentication failure");
        assert!(matches!(e, Error::Unauthenticated { .. }));
        assert!(e.to_string().contains("reconnect required"));
        assert_eq!(e.to_string().matches("reconnect required").count(), 1, "said once: {e}");
        assert!(e.to_string().ends_with("invalid_grant: authentication failure"), "{e}");
    }

    #[test]
    fn error_body_parses_both_shapes() {
        let v: Vec<ApiError> =
            serde_json::from_str(r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#)
                .unwrap_or_default();
        assert_eq!(v[0].error_code, "INVALID_SESSION_ID");
        let r: ApiError = serde_json::from_str(
            r#"{"statusCode":"REQUIRED_FIELD_MISSING","message":"Required fields are missing: [LastName]","fields":["LastName"]}"#,
        )
        .unwrap_or_default();
        assert_eq!(r.error_code, "REQUIRED_FIELD_MISSING");
        assert_eq!(r.fields, vec!["LastName".to_string()]);
    }
}
