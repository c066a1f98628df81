//! Retry classification: a pure function of the HTTP status and the body's error code.

/// How long to wait before repeating a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Exponential backoff with jitter (transient server trouble: 502, 604, 608, 611, 614, 713, 5xx).
    Exponential,
    /// Wait out the rate window (606, HTTP 429); the whole client pauses.
    RateWindow,
    /// A short backoff: too many calls in flight (615).
    Concurrency,
}

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

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Success: use the response.
    Proceed,
    /// The access token is invalid or expired (601/602): refresh it once and repeat the request once.
    Reauth,
    /// Transient: repeat after a backoff of this kind (subject to the request's idempotency).
    Retry(Backoff),
    /// Permanent for this request.
    Fail(Failure),
}

/// Classifies a response by HTTP status and the first body error code (`None` when the body is a
/// successful envelope or not an envelope at all).
///
/// Marketo answers most errors with HTTP 200 and `success:false`, so the body code wins whenever
/// there is one.
pub fn classify(http_status: u16, body_code: Option<&str>) -> Action {
    if let Some(code) = body_code {
        return match code.trim() {
            "601" | "602" => Action::Reauth,
            "606" => Action::Retry(Backoff::RateWindow),
            "615" => Action::Retry(Backoff::Concurrency),
            "502" | "604" | "608" | "611" | "614" | "713" | "719" => Action::Retry(Backoff::Exponential),
            "607" => Action::Fail(Failure::QuotaExhausted),
            "603" => Action::Fail(Failure::AccessDenied),
            "1029" => Action::Fail(Failure::BulkQueue),
            _ => Action::Fail(Failure::Rejected),
        };
    }
    match http_status {
        200..=299 => Action::Proceed,
        401 => Action::Fail(Failure::Unauthenticated),
        403 => Action::Fail(Failure::AccessDenied),
        404 => Action::Fail(Failure::NotFound),
        408 => Action::Retry(Backoff::Exponential),
        429 => Action::Retry(Backoff::RateWindow),
        500..=599 => Action::Retry(Backoff::Exponential),
        _ => Action::Fail(Failure::Rejected),
    }
}

/// True when a failure with this action proves the request was not applied, so even a
/// non-idempotent write may be repeated (re-auth and rate answers are given before any work).
pub(crate) fn proves_not_applied(action: Action) -> bool {
    matches!(action, Action::Reauth | Action::Retry(Backoff::RateWindow | Backoff::Concurrency))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use Action::*;
        use Backoff::*;
        use Failure::*;
        let cases: &[(u16, Option<&str>, Action)] = &[
            (200, None, Proceed),
            (206, None, Proceed),
            (200, Some("601"), Reauth),
            (200, Some("602"), Reauth),
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
        assert!(proves_not_applied(classify(200, Some("601"))));
        assert!(proves_not_applied(classify(200, Some("606"))));
        assert!(proves_not_applied(classify(200, Some("615"))));
        assert!(!proves_not_applied(classify(200, Some("604"))));
        assert!(!proves_not_applied(classify(200, Some("713"))));
        assert!(!proves_not_applied(classify(502, None)));
    }
}
