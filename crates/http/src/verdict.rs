//! What a connector does with one answer of its service: the one shape both connectors'
//! `classify` functions return and both request loops act on.

/// How long to wait before repeating a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Exponential backoff with jitter ([`RetryConfig::delay`](crate::RetryConfig::delay)):
    /// transient server trouble.
    Exponential,
    /// Wait out the service's rate window (the whole client pauses).
    RateWindow,
    /// A short backoff: too many calls in flight (a concurrency limit).
    Concurrency,
}

/// The verdict on one answer: a pure function of the answer (status, error code, message),
/// computed by a connector's `classify`. `F` is the connector's own kind of final failure
/// (`salesync_marketo::Failure`, `salesync_salesforce::Failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<F> {
    /// Success: use the answer.
    Proceed,
    /// The access token is invalid or expired: obtain a new one and repeat the request once.
    Reauthenticate,
    /// Transient: repeat after a backoff of this kind (subject to the request's idempotency and
    /// the retry budget).
    Retry(Backoff),
    /// Final for this request.
    Fail(F),
}

impl<F> Verdict<F> {
    /// Whether the verdict is a repeat after a backoff.
    pub fn is_retry(&self) -> bool {
        matches!(self, Verdict::Retry(_))
    }

    /// Whether an answer with this verdict proves the request was not applied, so that even a
    /// write that is not idempotent may be repeated: re-authentication, rate-window and
    /// concurrency answers are given before any work is done.
    pub fn proves_not_applied(&self) -> bool {
        matches!(self, Verdict::Reauthenticate | Verdict::Retry(Backoff::RateWindow | Backoff::Concurrency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_auth_and_limit_answers_prove_nothing_was_applied() {
        let v = |v: Verdict<()>| (v.is_retry(), v.proves_not_applied());
        assert_eq!(v(Verdict::Reauthenticate), (false, true));
        assert_eq!(v(Verdict::Retry(Backoff::RateWindow)), (true, true));
        assert_eq!(v(Verdict::Retry(Backoff::Concurrency)), (true, true));
        assert_eq!(v(Verdict::Retry(Backoff::Exponential)), (true, false));
        assert_eq!(v(Verdict::Fail(())), (false, false));
        assert_eq!(v(Verdict::Proceed), (false, false));
    }
}
