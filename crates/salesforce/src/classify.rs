//! Retry classification of a Salesforce answer: a pure function of the HTTP status and the first
//! error's code and message (read in [`salesync_core::salesforce_codes`]), as the [`Verdict`]
//! shared with the Marketo connector.

use salesync_core::salesforce_codes::{Category, Remedy, is_concurrency_limit, lookup};
pub use salesync_http::{Backoff, Verdict};

/// Why a request failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The org's daily API request limit is used up (`REQUEST_LIMIT_EXCEEDED`, `TotalRequests`).
    QuotaExhausted,
    /// The credentials or the session are refused for good (an authentication error code).
    Unauthenticated,
    /// The integration user lacks a permission (`INSUFFICIENT_ACCESS_*`, HTTP 403 without a code).
    AccessDenied,
    /// A server error that is not retried (HTTP 500 `UNKNOWN_EXCEPTION`, …).
    Unavailable,
    /// The request is wrong (validation, unknown field, malformed query, …).
    Rejected,
}

/// Classifies an answer by HTTP status and the first error's raw code and message.
///
/// A 2xx proceeds. Retried: `UNABLE_TO_LOCK_ROW`, `SERVER_UNAVAILABLE`, `QUERY_TIMEOUT`,
/// `FAILED_WRITE`, the maintenance error, and 502/503/504 whatever their body (exponential
/// backoff); concurrency `REQUEST_LIMIT_EXCEEDED` (`ConcurrentPerOrgLongTxn`,
/// `ConcurrentRequest`; a concurrency backoff, a rate limit when retries run out). A 500 is
/// retried only with one of those codes. HTTP 401 and `INVALID_SESSION_ID` ask for a new
/// session. The daily `REQUEST_LIMIT_EXCEEDED` (`TotalRequests`), validation and access errors
/// fail at once.
pub fn classify(status: u16, error_code: &str, message: &str) -> Verdict<Failure> {
    if (200..300).contains(&status) {
        return Verdict::Proceed;
    }
    let info = lookup(error_code, message);
    if status == 401 || info.remedy == Remedy::NewSession {
        return Verdict::Reauthenticate;
    }
    match info.remedy {
        Remedy::WaitForLimit if is_concurrency_limit(message) => Verdict::Retry(Backoff::Concurrency),
        Remedy::Repeat => Verdict::Retry(Backoff::Exponential),
        Remedy::WaitForLimit => Verdict::Fail(final_failure(status, error_code, message)),
        _ if matches!(status, 502..=504) => Verdict::Retry(Backoff::Exponential),
        _ => Verdict::Fail(final_failure(status, error_code, message)),
    }
}

/// The kind of a failure that is not retried (or not any more).
pub(crate) fn final_failure(status: u16, error_code: &str, message: &str) -> Failure {
    if error_code == "REQUEST_LIMIT_EXCEEDED" {
        Failure::QuotaExhausted
    } else if lookup(error_code, message).category == Category::Authentication {
        Failure::Unauthenticated
    } else if lookup(error_code, "").remedy == Remedy::GrantAccess || (status == 403 && error_code.is_empty()) {
        Failure::AccessDenied
    } else if status >= 500 {
        Failure::Unavailable
    } else {
        Failure::Rejected
    }
}

/// True for a per-record error inside a collections result that may succeed when the record is
/// sent again (lock contention, a failed write, maintenance).
pub(crate) fn record_error_is_intermittent(code: &str) -> bool {
    lookup(code, "").remedy == Remedy::Repeat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use Backoff::*;
        use Failure::*;
        use Verdict::*;
        let table: &[(u16, &str, &str, Verdict<Failure>)] = &[
            (401, "INVALID_SESSION_ID", "Session expired or invalid", Reauthenticate),
            (400, "UNABLE_TO_LOCK_ROW", "", Retry(Exponential)),
            (503, "SERVER_UNAVAILABLE", "server too busy", Retry(Exponential)),
            (503, "", "", Retry(Exponential)),
            (502, "", "", Retry(Exponential)),
            (500, "UNKNOWN_EXCEPTION", "", Fail(Unavailable)),
            (500, "SERVER_UNAVAILABLE", "", Retry(Exponential)),
            (400, "QUERY_TIMEOUT", "", Retry(Exponential)),
            (503, "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE", "", Retry(Exponential)),
            (403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded", Retry(Concurrency)),
            (403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentRequest Limit exceeded", Retry(Concurrency)),
            (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", Fail(QuotaExhausted)),
            (400, "MALFORMED_QUERY", "unexpected token", Fail(Rejected)),
            (400, "INVALID_FIELD", "No such column", Fail(Rejected)),
            (400, "INVALID_FIELD", "Net::ReadTimeout", Fail(Rejected)),
            (400, "REQUIRED_FIELD_MISSING", "", Fail(Rejected)),
            (403, "INSUFFICIENT_ACCESS_OR_READONLY", "", Fail(AccessDenied)),
            (404, "NOT_FOUND", "", Fail(Rejected)),
        ];
        for (status, code, msg, want) in table {
            assert_eq!(classify(*status, code, msg), *want, "{status} {code} {msg}");
        }
    }
}
