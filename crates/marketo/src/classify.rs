//! Retry classification: a pure function of the HTTP status and the body's error code, as the
//! [`Verdict`] shared with the Salesforce connector.

pub use salesync_http::{Backoff, Verdict};

/// Why a request failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The daily quota is used up (607).
    QuotaExhausted,
    /// Credentials are wrong (identity HTTP 401).
    Unauthenticated,
    /// The API user lacks a permission (603, HTTP 403).
    AccessDenied,
    /// The request is wrong for this instance (609, 610, 612, 1003, 1006, 1011, 1035, HTTP 413/414 …).
    Rejected,
    /// HTTP 404 (bulk file not ready, unknown path).
    NotFound,
    /// Bulk 1029: the export queue is full, or the daily export quota is used up (decided by message).
    BulkQueue,
}

/// Classifies a response by HTTP status and the first body error code (`None` when the body is a
/// successful envelope or not an envelope at all).
///
/// Marketo answers most errors with HTTP 200 and `success:false`, so the body code wins whenever
/// there is one.
pub fn classify(http_status: u16, body_code: Option<&str>) -> Verdict<Failure> {
    if let Some(code) = body_code {
        return match code.trim() {
            "601" | "602" => Verdict::Reauthenticate,
            "606" => Verdict::Retry(Backoff::RateWindow),
            "615" => Verdict::Retry(Backoff::Concurrency),
            "502" | "604" | "608" | "611" | "614" | "713" | "719" => Verdict::Retry(Backoff::Exponential),
            "607" => Verdict::Fail(Failure::QuotaExhausted),
            "603" => Verdict::Fail(Failure::AccessDenied),
            "1029" => Verdict::Fail(Failure::BulkQueue),
            _ => Verdict::Fail(Failure::Rejected),
        };
    }
    match http_status {
        200..=299 => Verdict::Proceed,
        401 => Verdict::Fail(Failure::Unauthenticated),
        403 => Verdict::Fail(Failure::AccessDenied),
        404 => Verdict::Fail(Failure::NotFound),
        408 => Verdict::Retry(Backoff::Exponential),
        429 => Verdict::Retry(Backoff::RateWindow),
        500..=599 => Verdict::Retry(Backoff::Exponential),
        _ => Verdict::Fail(Failure::Rejected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use Backoff::*;
        use Failure::*;
        use Verdict::*;
        let cases: &[(u16, Option<&str>, Verdict<Failure>)] = &[
            (200, None, Proceed),
            (206, None, Proceed),
            (200, Some("601"), Reauthenticate),
            (200, Some("602"), Reauthenticate),
            (200, Some("606"), Retry(RateWindow)),
            (200, Some("615"), Retry(Concurrency)),
            (200, Some("502"), Retry(Exponential)),
            (200, Some("604"), Retry(Exponential)),
            (200, Some("608"), Retry(Exponential)),
            (200, Some("611"), Retry(Exponential)),
            (200, Some("614"), Retry(Exponential)),
            (200, Some("713"), Retry(Exponential)),
            (200, Some(" 713 "), Retry(Exponential)),
            (200, Some("607"), Fail(QuotaExhausted)),
            (200, Some("603"), Fail(AccessDenied)),
            (200, Some("1029"), Fail(BulkQueue)),
            (200, Some("605"), Fail(Rejected)),
            (200, Some("609"), Fail(Rejected)),
            (200, Some("610"), Fail(Rejected)),
            (200, Some("612"), Fail(Rejected)),
            (200, Some("1003"), Fail(Rejected)),
            (200, Some("1006"), Fail(Rejected)),
            (200, Some("1011"), Fail(Rejected)),
            (200, Some("1035"), Fail(Rejected)),
            (200, Some("weird"), Fail(Rejected)),
            (401, None, Fail(Unauthenticated)),
            (403, None, Fail(AccessDenied)),
            (404, None, Fail(NotFound)),
            (408, None, Retry(Exponential)),
            (413, None, Fail(Rejected)),
            (414, None, Fail(Rejected)),
            (429, None, Retry(RateWindow)),
            (500, None, Retry(Exponential)),
            (502, None, Retry(Exponential)),
            (503, None, Retry(Exponential)),
            (504, None, Retry(Exponential)),
            (400, None, Fail(Rejected)),
            // A body code wins over the HTTP status.
            (500, Some("606"), Retry(RateWindow)),
        ];
        for (status, code, want) in cases {
            assert_eq!(classify(*status, *code), *want, "status {status} code {code:?}");
        }
    }

    #[test]
    fn only_auth_and_rate_answers_prove_nothing_was_applied() {
        assert!(classify(200, Some("601")).proves_not_applied());
        assert!(classify(200, Some("606")).proves_not_applied());
        assert!(classify(200, Some("615")).proves_not_applied());
        assert!(!classify(200, Some("604")).proves_not_applied());
        assert!(!classify(200, Some("713")).proves_not_applied());
        assert!(!classify(502, None).proves_not_applied());
    }
}
