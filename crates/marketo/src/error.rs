//! The connector's private error type and its conversion into [`salesync_core::Error`].

use std::time::Duration;

use salesync_core::{Error, error::Service};

/// `Error::Unavailable::code` when a bulk export file cannot be downloaded yet (HTTP 404 with a
/// plain-text body: the job is not completed, or the file is not ready although the job says so).
pub const FILE_NOT_READY: &str = "file_not_ready";

/// What went wrong inside the connector. Converted into [`salesync_core::Error`] at the API boundary.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MkError {
    /// 606/615 (or HTTP 429) that retries did not overcome.
    #[error("rate limited ({code})")]
    RateLimited { code: String, retry_after: Option<Duration> },
    /// 607, or bulk 1029 "Export daily quota exceeded", or the client-side daily budget; all
    /// reset at `resets_at`, midnight US Central.
    #[error("daily quota exhausted: {detail}")]
    Quota { detail: String, resets_at: chrono::DateTime<chrono::Utc> },
    /// Identity 401, or a 601 again after a fresh token.
    #[error("authentication failed: {detail}")]
    Unauthenticated { detail: String },
    /// 603.
    #[error("access denied ({code}): {message}")]
    AccessDenied { code: String, message: String },
    /// Any other error code: the request is wrong for this instance.
    #[error("rejected ({code}): {message}")]
    Rejected { code: String, message: String },
    /// A transient failure that the client's retries did not overcome (every construction is
    /// after the last attempt: the core error is marked persistent).
    #[error("unavailable ({code}): {message}")]
    Unavailable { code: String, message: String },
    /// A paging token Marketo no longer accepts (1003 naming the token: invalid, expired, too old).
    #[error("paging token refused: {detail}")]
    CursorExpired { detail: String },
    /// A non-idempotent write failed after it may have been applied.
    #[error("outcome of {operation} unknown: {cause}")]
    OutcomeUnknown { operation: &'static str, cause: String },
    /// Bulk file not downloadable yet (HTTP 404 text).
    #[error("export {export_id} file not ready: {message}")]
    FileNotReady { export_id: String, message: String },
    /// The response could not be read.
    #[error("{detail}")]
    Protocol { detail: String },
    /// The network failed; the URL is stripped (it may carry credentials).
    #[error("{operation}: {source}")]
    Transport {
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// A stream of file chunks failed and could not be resumed.
    #[error("{operation}: {detail}")]
    Stream { operation: &'static str, detail: String },
    /// Caller input that cannot be sent.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: String, reason: String },
    /// Configuration.
    #[error("configuration {key}: {reason}")]
    Config { key: String, reason: String },
}

impl MkError {
    pub(crate) fn protocol(detail: impl Into<String>) -> Self {
        MkError::Protocol { detail: detail.into() }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MkError::InvalidInput { field: field.into(), reason: reason.into() }
    }

    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        MkError::Config { key: key.into(), reason: reason.into() }
    }
}

impl From<salesync_http::SettingError> for MkError {
    fn from(e: salesync_http::SettingError) -> Self {
        MkError::Config { key: e.key, reason: e.reason }
    }
}

/// A failure without an underlying error value (a broken file stream, an I/O error text).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StreamFailure(String);

impl From<MkError> for Error {
    fn from(e: MkError) -> Self {
        let service = Service::Marketo;
        match e {
            MkError::RateLimited { retry_after, .. } => Error::RateLimited { service, retry_after },
            MkError::Quota { detail, resets_at } => {
                Error::QuotaExhausted { service, resets_at: Some(resets_at), detail }
            }
            MkError::Unauthenticated { detail } => Error::Unauthenticated { service, detail },
            MkError::AccessDenied { code, message } => Error::AccessDenied { service, code, message },
            MkError::Rejected { code, message } => Error::Rejected { service, code, message },
            MkError::Unavailable { code, message } => Error::Unavailable { service, code, message, persistent: true },
            MkError::CursorExpired { detail } => Error::CursorExpired { service, detail },
            MkError::OutcomeUnknown { operation, cause } => {
                Error::OutcomeUnknown { service, operation: operation.to_string(), cause }
            }
            MkError::FileNotReady { export_id, message } => Error::Unavailable {
                service,
                code: FILE_NOT_READY.to_string(),
                message: format!("export {export_id}: {message}"),
                persistent: false,
            },
            MkError::Protocol { detail } => Error::Protocol { service, detail },
            MkError::Transport { operation, source } => {
                Error::Transport { service, source: Box::new(salesync_http::TransportError::new(operation, source)) }
            }
            MkError::Stream { operation, detail } => {
                Error::Transport { service, source: Box::new(StreamFailure(format!("{operation}: {detail}"))) }
            }
            MkError::InvalidInput { field, reason } => Error::InvalidInput { field, reason },
            MkError::Config { key, reason } => Error::Config { key, reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transport_errors_name_their_root_cause_without_the_url() {
        // A port nothing listens on: bind one, learn its number, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap();
        let url = format!("http://127.0.0.1:{port}/identity/oauth/token?client_secret=hush");
        let source = reqwest::Client::new().get(&url).send().await.unwrap_err();
        let e: Error = MkError::Transport { operation: "identity", source }.into();
        let text = e.to_string();
        assert!(text.contains("identity: error sending request"), "{text}");
        assert!(text.to_lowercase().contains("connect"), "the cause chain is shown: {text}");
        assert!(!text.contains("hush") && !text.contains(&port.to_string()), "no URL in {text}");
    }
}
