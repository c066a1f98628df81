//! Salesforce errors: the wire shape, and the conversion of a final answer (with the verdict of
//! `classify`) into [`salesync_core::Error`].

use std::fmt;

use salesync_core::salesforce_codes::{Remedy, lookup};
use salesync_core::{Error, error::Service};
use serde::{Deserialize, Serialize};

use crate::classify::{Backoff, Failure, Verdict};

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

/// Turns a final (not retried, or retries exhausted) data-call failure into the port error.
///
/// `spent` is true when the failure was retryable and the attempts ran out (the error is then
/// marked persistent).
pub(crate) fn to_core(status: u16, err: &ApiError, verdict: Verdict<Failure>, spent: bool) -> Error {
    let service = Service::Salesforce;
    let code = if err.error_code.is_empty() { format!("HTTP {status}") } else { err.error_code.clone() };
    let message = err.message_with_fields();
    match verdict {
        Verdict::Reauthenticate | Verdict::Fail(Failure::Unauthenticated) => {
            Error::Unauthenticated { service, detail: format!("{code}: {message}") }
        }
        Verdict::Retry(Backoff::Concurrency | Backoff::RateWindow) => Error::RateLimited { service, retry_after: None },
        Verdict::Retry(Backoff::Exponential) => Error::Unavailable { service, code, message, persistent: spent },
        Verdict::Fail(Failure::QuotaExhausted) => Error::QuotaExhausted { service, resets_at: None, detail: message },
        Verdict::Fail(Failure::AccessDenied) => Error::AccessDenied { service, code, message },
        Verdict::Fail(Failure::Unavailable) => Error::Unavailable { service, code, message, persistent: false },
        Verdict::Fail(Failure::Rejected) => Error::Rejected { service, code, message },
        Verdict::Proceed => Error::Protocol { service, detail: format!("{code} treated as a failure: {message}") },
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
    use crate::classify::classify;

    /// The port error of an answer that is not retried.
    fn final_error(status: u16, e: &ApiError) -> Error {
        to_core(status, e, classify(status, &e.error_code, &e.message), false)
    }

    #[test]
    fn final_errors_are_typed() {
        let e = final_error(403, &ApiError::new("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."));
        assert!(matches!(e, Error::QuotaExhausted { .. }));
        let e = to_core(
            403,
            &ApiError::new("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded"),
            Verdict::Retry(Backoff::Concurrency),
            true,
        );
        assert!(matches!(e, Error::RateLimited { .. }));
        let e = final_error(400, &ApiError::new("MALFORMED_QUERY", "bad"));
        assert!(
            matches!(e, Error::Rejected { ref code, ref message, .. } if code == "MALFORMED_QUERY" && message == "bad")
        );
        let e = final_error(400, &ApiError::new("INSUFFICIENT_ACCESS_OR_READONLY", "no"));
        assert!(matches!(e, Error::AccessDenied { .. }));
        let e = to_core(503, &ApiError::new("SERVER_UNAVAILABLE", "busy"), Verdict::Retry(Backoff::Exponential), false);
        assert!(matches!(e, Error::Unavailable { persistent: false, .. }));
        let e = to_core(503, &ApiError::new("SERVER_UNAVAILABLE", "busy"), Verdict::Retry(Backoff::Exponential), true);
        assert!(e.retries_spent(), "{e:?}");
        let mut req = ApiError::new("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]");
        req.fields = vec!["LastName".into()];
        let e = final_error(400, &req);
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
