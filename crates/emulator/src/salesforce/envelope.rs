//! The reply every handler returns, before the server renders it as an HTTP response.

use serde_json::Value;

use super::errors::SalesforceApiError as E;

/// A response before rendering.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Option<Value>,
    /// A non-JSON body with its content type (Bulk API 2.0 CSV results).
    pub(crate) text: Option<(&'static str, String)>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// A JSON body.
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self { status, body: Some(body), text: None, headers: Vec::new() }
    }

    /// No body.
    pub(crate) fn empty(status: u16) -> Self {
        Self { status, body: None, text: None, headers: Vec::new() }
    }

    /// A text body of `content_type`.
    pub(crate) fn text(status: u16, content_type: &'static str, body: String) -> Self {
        Self { status, body: None, text: Some((content_type, body)), headers: Vec::new() }
    }

    /// The REST error array `[{"message","errorCode"}]` with the error's status.
    pub(crate) fn err(e: E) -> Self {
        Self::json(e.status, Value::Array(vec![e.rest_json()]))
    }

    /// The first `errorCode` of an error array, or the OAuth `error` of an error object (for the call log).
    pub(crate) fn error_code(&self) -> Option<String> {
        match &self.body {
            Some(Value::Array(a)) => {
                a.first().and_then(|e| e.get("errorCode")).and_then(Value::as_str).map(str::to_string)
            }
            Some(Value::Object(o)) if self.status >= 400 => o.get("error").and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
    }
}
