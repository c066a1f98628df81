//! Salesforce error values and their wire formats.

use serde_json::{Value, json};

/// One Salesforce API error, as the REST API reports it (`[{"message","errorCode","fields"}]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesforceApiError {
    /// HTTP status of a single-resource response carrying this error.
    pub status: u16,
    /// Salesforce `errorCode` (`statusCode` inside collection results).
    pub error_code: String,
    /// Human-readable message.
    pub message: String,
    /// Fields the error is tied to (omitted from the wire when empty).
    pub fields: Vec<String>,
}

impl std::fmt::Display for SalesforceApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.error_code, self.status, self.message)
    }
}

impl std::error::Error for SalesforceApiError {}

impl SalesforceApiError {
    /// An error with no fields.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self { status, error_code: code.to_string(), message: message.into(), fields: Vec::new() }
    }

    /// Adds the fields the error is tied to.
    pub fn with_fields<I: IntoIterator<Item = S>, S: Into<String>>(mut self, fields: I) -> Self {
        self.fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// The REST body element `{"message","errorCode","fields"?}`.
    pub(crate) fn rest_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("message".into(), Value::String(self.message.clone()));
        m.insert("errorCode".into(), Value::String(self.error_code.clone()));
        if !self.fields.is_empty() {
            m.insert("fields".into(), json!(self.fields));
        }
        Value::Object(m)
    }

    /// The collections element `{"statusCode","message","fields"}` (fields always present).
    pub(crate) fn record_json(&self) -> Value {
        json!({"statusCode": self.error_code, "message": self.message, "fields": self.fields})
    }

    pub(crate) fn bad(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub(crate) fn not_found() -> Self {
        Self::new(404, "NOT_FOUND", "The requested resource does not exist")
    }

    pub(crate) fn invalid_session() -> Self {
        Self::new(401, "INVALID_SESSION_ID", "Session expired or invalid")
    }

    pub(crate) fn malformed_query(message: impl Into<String>) -> Self {
        Self::bad("MALFORMED_QUERY", message)
    }

    pub(crate) fn invalid_field(message: impl Into<String>) -> Self {
        Self::bad("INVALID_FIELD", message)
    }

    pub(crate) fn entity_deleted() -> Self {
        Self::new(404, "ENTITY_IS_DELETED", "entity is deleted")
    }

    pub(crate) fn method_not_allowed(method: &str, allowed: &str) -> Self {
        Self::new(405, "METHOD_NOT_ALLOWED", format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"))
    }

    pub(crate) fn json_parser(message: impl Into<String>) -> Self {
        Self::bad("JSON_PARSER_ERROR", message)
    }
}
