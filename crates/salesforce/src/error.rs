//! Salesforce errors: the wire shape, the retry classification of an answer (by HTTP status and
//! the codes of [`salesync_core::salesforce_codes`]), and the conversion into
//! [`salesync_core::Error`].

use std::fmt;

use salesync_core::salesforce_codes::{Category, Remedy, is_concurrency_limit, lookup};
use salesync_core::{Error, error::Service};
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

/// Classifies a failed answer by HTTP status and the first error's raw code and message.
///
/// Retried: `UNABLE_TO_LOCK_ROW`, `SERVER_UNAVAILABLE`, `QUERY_TIMEOUT`, `FAILED_WRITE`, the
/// maintenance error, concurrency `REQUEST_LIMIT_EXCEEDED` (`ConcurrentPerOrgLongTxn`,
/// `ConcurrentRequest`), and 502/503/504 whatever their body. A 500 is retried only with one of
/// those codes. The daily `REQUEST_LIMIT_EXCEEDED` (`TotalRequests`), validation and access errors
/// are never retried.
pub fn classify(status: u16, error_code: &str, message: &str) -> Disposition {
    let info = lookup(error_code, message);
    if status == 401 || info.remedy == Remedy::NewSession {
        return Disposition::Reauthenticate;
    }
    match info.remedy {
        Remedy::WaitForLimit if is_concurrency_limit(message) => Disposition::RetryRateLimited,
        Remedy::WaitForLimit => Disposition::Stop,
        Remedy::Repeat => Disposition::Retry,
        _ if matches!(status, 502..=504) => Disposition::Retry,
        _ => Disposition::Stop,
    }
}

/// True for a per-record error inside a collections result that may succeed when the record is
/// sent again (lock contention, a failed write, maintenance).
pub(crate) fn record_error_is_intermittent(code: &str) -> bool {
    lookup(code, "").remedy == Remedy::Repeat
}

/// Turns a final (not retried, or retries exhausted) data-call failure into the port error.
///
/// `spent` is true when the failure was retryable and the attempts ran out (the error is then
/// marked persistent).
pub(crate) fn to_core(status: u16, err: &ApiError, disposition: Disposition, spent: bool) -> Error {
    let service = Service::Salesforce;
    let code = if err.error_code.is_empty() { format!("HTTP {status}") } else { err.error_code.clone() };
    let message = err.message_with_fields();
    match disposition {
        Disposition::Reauthenticate => Error::Unauthenticated { service, detail: format!("{code}: {message}") },
        Disposition::RetryRateLimited => Error::RateLimited { service, retry_after: None },
        Disposition::Retry => Error::Unavailable { service, code, message, persistent: spent },
        Disposition::Stop => {
            if err.error_code == "REQUEST_LIMIT_EXCEEDED" {
                Error::QuotaExhausted { service, resets_at: None, detail: message }
            } else if lookup(&err.error_code, &err.message).category == Category::Authentication {
                Error::Unauthenticated { service, detail: format!("{code}: {message}") }
            } else if lookup(&err.error_code, "").remedy == Remedy::GrantAccess
                || (status == 403 && err.error_code.is_empty())
            {
                Error::AccessDenied { service, code, message }
            } else if status >= 500 {
                Error::Unavailable { service, code, message, persistent: false }
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
        _ if lookup(error, "").remedy == Remedy::Reconnect => {
            Error::Unauthenticated { service, detail: format!("{error}: {description}") }
        }
        _ if status >= 500 => Error::Unavailable {
            service,
            code: format!("HTTP {status}"),
            message: description.into(),
            persistent: false,
        },
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
            (400, "INVALID_FIELD", "Net::ReadTimeout", Stop),
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
        let e = to_core(
            403,
            &ApiError::new("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
            Disposition::Stop,
            false,
        );
        assert!(matches!(e, Error::QuotaExhausted { .. }));
        let e = to_core(
            403,
            &ApiError::new("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded"),
            Disposition::RetryRateLimited,
            true,
        );
        assert!(matches!(e, Error::RateLimited { .. }));
        let e = to_core(400, &ApiError::new("MALFORMED_QUERY", "bad"), Disposition::Stop, false);
        assert!(
            matches!(e, Error::Rejected { ref code, ref message, .. } if code == "MALFORMED_QUERY" && message == "bad")
        );
        let e = to_core(400, &ApiError::new("INSUFFICIENT_ACCESS_OR_READONLY", "no"), Disposition::Stop, false);
        assert!(matches!(e, Error::AccessDenied { .. }));
        let e = to_core(503, &ApiError::new("SERVER_UNAVAILABLE", "busy"), Disposition::Retry, false);
        assert!(matches!(e, Error::Unavailable { persistent: false, .. }));
        let e = to_core(503, &ApiError::new("SERVER_UNAVAILABLE", "busy"), Disposition::Retry, true);
        assert!(e.retries_spent(), "{e:?}");
        let mut req = ApiError::new("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]");
        req.fields = vec!["LastName".into()];
        let e = to_core(400, &req, Disposition::Stop, false);
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
