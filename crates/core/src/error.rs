//! Errors: what is wrong, and where (which field, which record, which value).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for port operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which external system an error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Service {
    /// Marketo Engage.
    Marketo,
    /// Salesforce.
    Salesforce,
    /// The salesync store.
    Store,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Marketo => "Marketo",
            Service::Salesforce => "Salesforce",
            Service::Store => "store",
        })
    }
}

/// An invalid Salesforce id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not 15 or 18 characters.
    #[error("Salesforce id {value:?} has {len} characters; expected 15 or 18")]
    Length {
        /// The offending value (truncated to 40 characters).
        value: String,
        /// Its length in characters.
        len: usize,
    },
    /// A character that is not an ASCII letter or digit.
    #[error("Salesforce id {value:?} has an invalid character at position {position}")]
    Character {
        /// The offending value.
        value: String,
        /// Zero-based position of the first bad character.
        position: usize,
    },
    /// The 18-character form's case-safe suffix does not match its first 15 characters.
    #[error("Salesforce id {value:?} has a wrong case-safe suffix; expected {expected}")]
    Checksum {
        /// The offending value.
        value: String,
        /// The suffix the first 15 characters call for.
        expected: String,
    },
}

/// What is wrong with one field of one record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum RecordProblem {
    /// A required field is absent or null.
    Missing,
    /// The JSON type is not the one the field needs.
    WrongType {
        /// Expected type.
        expected: String,
        /// Type found.
        found: String,
    },
    /// The value has the right type but is not valid.
    Invalid(String),
    /// The record is not a JSON object.
    NotAnObject,
}

impl std::fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordProblem::Missing => f.write_str("is missing"),
            RecordProblem::WrongType { expected, found } => write!(f, "should be {expected} but is {found}"),
            RecordProblem::Invalid(why) => write!(f, "is invalid: {why}"),
            RecordProblem::NotAnObject => f.write_str("is not a JSON object"),
        }
    }
}

/// A record that could not be mapped: names the record, the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("Marketo lead {}: field `{field}` {problem}{}", record_id.map_or_else(|| "(no id)".to_string(), |i| i.to_string()), value.as_deref().map(|v| format!(" (value {v:?})")).unwrap_or_default())]
pub struct RecordError {
    /// The record's Marketo id when it could be read.
    pub record_id: Option<i64>,
    /// The Marketo REST field name.
    pub field: String,
    /// The offending value, truncated to 80 characters.
    pub value: Option<String>,
    /// What is wrong.
    pub problem: RecordProblem,
}

impl RecordError {
    pub(crate) fn new(record_id: Option<i64>, field: &str, value: Option<&str>, problem: RecordProblem) -> Self {
        Self { record_id, field: field.to_string(), value: value.map(|v| v.chars().take(80).collect()), problem }
    }
}

/// The error type of the ports (connectors and stores) and of the domain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A thing that was asked for does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A write conflicts with existing state.
    #[error("conflict on {what}: {detail}")]
    Conflict {
        /// What kind of thing.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The service asked us to slow down (Marketo 606/615, Salesforce concurrency limits).
    #[error("{service} rate limit reached{}", retry_after.map(|d| format!("; retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        /// Which service.
        service: Service,
        /// How long to wait, when known.
        retry_after: Option<Duration>,
    },
    /// The daily quota is used up (Marketo 607, Salesforce REQUEST_LIMIT_EXCEEDED TotalRequests, bulk 1029).
    #[error("{service} daily quota exhausted{}: {detail}", resets_at.map(|t| format!(" until {t}")).unwrap_or_default())]
    QuotaExhausted {
        /// Which service.
        service: Service,
        /// When the quota resets, when known.
        resets_at: Option<DateTime<Utc>>,
        /// The service's own words.
        detail: String,
    },
    /// Credentials are wrong or the session cannot be renewed: an operator must reconnect.
    #[error("{service} authentication failed, reconnect required: {detail}")]
    Unauthenticated {
        /// Which service.
        service: Service,
        /// The service's own words (never a secret).
        detail: String,
    },
    /// The API user lacks a permission (Marketo 603, Salesforce INSUFFICIENT_ACCESS…).
    #[error("{service} denied access ({code}): {message}")]
    AccessDenied {
        /// Which service.
        service: Service,
        /// The raw error code.
        code: String,
        /// The raw message.
        message: String,
    },
    /// The service rejected the request or record (validation, unknown field, unsupported feature).
    #[error("{service} rejected the request ({code}): {message}")]
    Rejected {
        /// Which service.
        service: Service,
        /// The raw error code.
        code: String,
        /// The raw message.
        message: String,
    },
    /// A temporary failure (timeouts, 5xx, Marketo 604/608/611/713, lock contention).
    #[error("{service} temporarily unavailable ({code}): {message}")]
    Unavailable {
        /// Which service.
        service: Service,
        /// The raw error code or HTTP status.
        code: String,
        /// The raw message.
        message: String,
        /// True when the connector already repeated the call as often as its retry settings
        /// allow: a caller should not repeat it at once again (see [`Error::retries_spent`]).
        persistent: bool,
    },
    /// A write was sent and may or may not have been applied (the answer was lost or cut off,
    /// or the service failed after receiving it). Look for its effect before sending it again.
    #[error("{service} {operation}: outcome unknown, the write may have been applied: {cause}")]
    OutcomeUnknown {
        /// Which service.
        service: Service,
        /// The operation.
        operation: String,
        /// What happened.
        cause: String,
    },
    /// A paging position (token, cursor) the service no longer accepts: too old, or unknown to
    /// it. The stream must start again from a fresh position.
    #[error("{service} refused a paging position as expired or unknown: {detail}")]
    CursorExpired {
        /// Which service.
        service: Service,
        /// The service's own words.
        detail: String,
    },
    /// A record could not be mapped.
    #[error(transparent)]
    InvalidRecord(#[from] RecordError),
    /// A Salesforce id is invalid.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// Host input was rejected before anything was stored.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending input field.
        field: String,
        /// Why.
        reason: String,
    },
    /// Configuration is missing or wrong.
    #[error("configuration {key}: {reason}")]
    Config {
        /// The configuration key or environment variable.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A response could not be understood (malformed JSON, wrong envelope, oversize body).
    #[error("{service} sent a response salesync cannot read: {detail}")]
    Protocol {
        /// Which service.
        service: Service,
        /// What was wrong with it.
        detail: String,
    },
    /// The network failed (connection refused/reset, TLS, timeout) and the connector's retries
    /// did not help.
    #[error("{service} transport error: {source}")]
    Transport {
        /// Which service.
        service: Service,
        /// The underlying error.
        source: BoxError,
    },
    /// A storage backend failed.
    #[error("{backend} store error: {source}")]
    Backend {
        /// Backend name (`memory`, `sqlite`, `postgres`).
        backend: &'static str,
        /// The underlying error.
        source: BoxError,
    },
}

impl Error {
    /// True when repeating the same operation later may succeed (rate limits, transient outages,
    /// transport failures). Quota exhaustion is not retryable until its reset.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Unavailable { .. }
                | Error::Transport { .. }
                | Error::OutcomeUnknown { .. }
        )
    }

    /// True for a retryable failure the connector already retried as often as its settings
    /// allow (a persistent [`Error::Unavailable`], a [`Error::Transport`] failure): repeating it
    /// at once would only multiply the requests; try again on a later pass or round.
    pub fn retries_spent(&self) -> bool {
        matches!(self, Error::Unavailable { persistent: true, .. } | Error::Transport { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_error_names_record_field_and_value() {
        let e = RecordError::new(
            Some(42),
            "sfdcLeadId",
            Some("bogus"),
            RecordProblem::Invalid("Salesforce id has 5 characters".into()),
        );
        assert_eq!(
            e.to_string(),
            "Marketo lead 42: field `sfdcLeadId` is invalid: Salesforce id has 5 characters (value \"bogus\")"
        );
        let e = RecordError::new(None, "id", None, RecordProblem::Missing);
        assert_eq!(e.to_string(), "Marketo lead (no id): field `id` is missing");
    }

    #[test]
    fn retryable_classification() {
        assert!(Error::RateLimited { service: Service::Marketo, retry_after: None }.is_retryable());
        assert!(
            !Error::QuotaExhausted { service: Service::Marketo, resets_at: None, detail: "607".into() }.is_retryable()
        );
        assert!(
            !Error::Unauthenticated { service: Service::Salesforce, detail: "invalid_grant".into() }.is_retryable()
        );
        let spent = |persistent| Error::Unavailable {
            service: Service::Marketo,
            code: "604".into(),
            message: "timeout".into(),
            persistent,
        };
        assert!(spent(true).is_retryable() && spent(true).retries_spent());
        assert!(spent(false).is_retryable() && !spent(false).retries_spent());
        let unknown =
            Error::OutcomeUnknown { service: Service::Marketo, operation: "add".into(), cause: "reset".into() };
        assert!(unknown.is_retryable() && !unknown.retries_spent());
        assert!(!Error::CursorExpired { service: Service::Marketo, detail: "too old".into() }.is_retryable());
    }
}
