//! The Marketo response envelope and the small reply type every handler returns, and how values
//! and datetimes are written on the wire.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// What a handler produced; the server turns it into an HTTP response.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A JSON envelope (the server adds `requestId`).
    Envelope {
        /// HTTP status (200 for API-level errors).
        status: u16,
        /// The body without `requestId`.
        body: Map<String, Value>,
        /// `None` on success, else the first error code.
        outcome: Option<String>,
    },
    /// A non-envelope JSON body (identity).
    Json {
        /// HTTP status.
        status: u16,
        /// Body.
        body: Value,
        /// Outcome for the call log.
        outcome: Option<String>,
    },
    /// Plain bytes (bulk files, plain-text errors).
    Raw {
        /// HTTP status.
        status: u16,
        /// Content type.
        content_type: &'static str,
        /// Extra headers.
        headers: Vec<(&'static str, String)>,
        /// Body.
        body: Vec<u8>,
        /// Outcome for the call log.
        outcome: Option<String>,
    },
}

impl Reply {
    /// A successful envelope with `result`.
    pub(crate) fn ok(result: Vec<Value>) -> Reply {
        let mut body = Map::new();
        body.insert("success".into(), Value::Bool(true));
        body.insert("result".into(), Value::Array(result));
        Reply::Envelope { status: 200, body, outcome: None }
    }

    /// A successful envelope without `result`.
    pub(crate) fn ok_void() -> Reply {
        let mut body = Map::new();
        body.insert("success".into(), Value::Bool(true));
        Reply::Envelope { status: 200, body, outcome: None }
    }

    /// Adds a member to a successful envelope.
    pub(crate) fn with(mut self, key: &str, value: Value) -> Reply {
        if let Reply::Envelope { body, .. } = &mut self {
            body.insert(key.to_string(), value);
        }
        self
    }

    /// A failed envelope with one error (HTTP 200, or 502 for code 502).
    pub(crate) fn err(code: &str, message: impl Into<String>) -> Reply {
        let mut body = Map::new();
        body.insert("success".into(), Value::Bool(false));
        body.insert("errors".into(), json!([{ "code": code, "message": message.into() }]));
        let status = if code == "502" { 502 } else { 200 };
        Reply::Envelope { status, body, outcome: Some(code.to_string()) }
    }

    /// A plain-text HTTP error.
    pub(crate) fn text(status: u16, text: &str) -> Reply {
        Reply::Raw {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: text.as_bytes().to_vec(),
            outcome: Some(status.to_string()),
        }
    }

    /// The error code of this reply, if any.
    pub(crate) fn outcome(&self) -> Option<&str> {
        match self {
            Reply::Envelope { outcome, .. } | Reply::Json { outcome, .. } | Reply::Raw { outcome, .. } => {
                outcome.as_deref()
            }
        }
    }
}

/// The reply of a handler written with `?`: its answer, or the error reply that cut it short.
pub(crate) fn answer(run: impl FnOnce() -> Result<Reply, Reply>) -> Reply {
    run().unwrap_or_else(|e| e)
}

/// Default message for an error code (used by injected faults).
pub(crate) fn default_message(code: &str) -> &'static str {
    match code {
        "502" => "Bad Gateway",
        "601" => "Access token invalid",
        "602" => "Access token expired",
        "603" => "Access denied",
        "604" => "Request timed out",
        "605" => "HTTP Method not supported",
        "606" => "Max rate limit '100' exceeded with in '20' secs",
        "607" => "Daily quota reached",
        "608" => "API Temporarily Unavailable",
        "609" => "Invalid JSON",
        "610" => "Requested resource not found",
        "611" => "System error",
        "612" => "Invalid Content Type",
        "613" => "Invalid Multipart Request",
        "614" => "Invalid Subscription",
        "615" => "Concurrent access limit '10' reached",
        "713" => "Transient Error",
        "1029" => "Too many jobs in queue",
        _ => "Error",
    }
}

/// Codes that count neither against the rate limit nor the daily quota (the docs' ★ footnote).
pub(crate) fn is_uncounted(code: &str) -> bool {
    matches!(code, "601" | "602" | "604" | "605" | "608" | "611")
}

/// Formats a datetime the way lead records do (`2026-01-16T23:32:19Z`).
pub(crate) fn fmt_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses a Marketo datetime leniently (`Z`, `+00:00`, `+0000`, or a bare date).
pub(crate) fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|n| n.and_utc());
    }
    None
}

/// A lead value as the string Marketo compares / reports it as.
pub(crate) fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}
