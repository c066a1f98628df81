//! The emulator's configuration, the faults it can inject and its call log entries: the public
//! vocabulary every other module of the emulator reads.

use std::net::SocketAddr;

use chrono::Duration;

use super::errors::SalesforceApiError;
use crate::clock::Clock;

/// Emulator configuration.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// Connected-app consumer key.
    pub client_id: String,
    /// Connected-app consumer secret.
    pub client_secret: String,
    /// The refresh token the `refresh_token` grant accepts (`None`: that grant always fails).
    pub refresh_token: Option<String>,
    /// When true, each refresh returns a new refresh token and invalidates the old one.
    pub rotate_refresh_token: bool,
    /// Username accepted by the `password` grant.
    pub username: String,
    /// Password (with security token appended) accepted by the `password` grant.
    pub password: String,
    /// How long an access token works after it is issued (default 2 hours).
    pub session_lifetime: Duration,
    /// Rolling 24-hour API allocation (default 100,000).
    pub daily_api_limit: u64,
    /// The version the emulator advertises (`v60.0`); any `vNN.N` is served.
    pub api_version: String,
    /// External-id custom field on Task (default `Salesync_Activity_Id__c`; empty = none).
    pub task_external_id_field: String,
    /// Whether the Task external id is unique (DUPLICATE_VALUE on a second insert; default true).
    /// With false, several Tasks may share a value and upserts answer 300.
    pub task_external_id_unique: bool,
    /// Allowed values of the restricted Task.Type picklist.
    pub task_type_values: Vec<String>,
    /// Extra Task custom fields (`…__c`) that exist in this org; others are INVALID_FIELD.
    pub task_custom_fields: Vec<String>,
    /// Extra custom fields on other objects, as (sObject, field) pairs.
    pub custom_fields: Vec<(String, String)>,
    /// Time source.
    pub clock: Clock,
    /// Address to bind (default `127.0.0.1:0`).
    pub bind: SocketAddr,
    /// Latency added to every request.
    pub latency: Option<std::time::Duration>,
    /// How many data requests may have been running for at least
    /// [`SalesforceConfig::long_running_threshold`] before new ones get 403 REQUEST_LIMIT_EXCEEDED
    /// (`ConcurrentPerOrgLongTxn Limit exceeded.`; default 25).
    pub long_running_limit: usize,
    /// When a running request counts as long-running (default 20 s).
    pub long_running_threshold: std::time::Duration,
    /// Seed for ratio faults.
    pub fault_seed: u64,
    /// How many status requests (`GET …/jobs/query/{id}`) of a Bulk API 2.0 query job answer
    /// `InProgress` before the job reports `JobComplete` (default 1; 0 = complete on the first).
    pub bulk_query_polls: u32,
}

impl Default for SalesforceConfig {
    fn default() -> Self {
        Self {
            client_id: "salesync-emulator-client".into(),
            client_secret: "salesync-emulator-secret".into(),
            refresh_token: Some("salesync-emulator-refresh-token".into()),
            rotate_refresh_token: false,
            username: "integration@salesync.example".into(),
            password: "salesync-emulator-password".into(),
            session_lifetime: Duration::hours(2),
            daily_api_limit: 100_000,
            api_version: "v60.0".into(),
            task_external_id_field: "Salesync_Activity_Id__c".into(),
            task_external_id_unique: true,
            task_type_values: ["Email", "Call", "Meeting", "Other", "Reply"].iter().map(|s| s.to_string()).collect(),
            task_custom_fields: Vec::new(),
            custom_fields: Vec::new(),
            clock: Clock::System,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency: None,
            long_running_limit: 25,
            long_running_threshold: std::time::Duration::from_secs(20),
            fault_seed: 0,
            bulk_query_polls: 1,
        }
    }
}

/// An injected Salesforce error.
#[derive(Debug, Clone, PartialEq)]
pub enum SalesforceFault {
    /// 503 SERVER_UNAVAILABLE.
    ServerUnavailable,
    /// 500 UNKNOWN_EXCEPTION.
    UnknownException,
    /// 400 UNABLE_TO_LOCK_ROW.
    UnableToLockRow,
    /// 403 REQUEST_LIMIT_EXCEEDED (concurrency flavour).
    RequestLimitExceeded,
    /// 400 QUERY_TIMEOUT.
    QueryTimeout,
    /// 401 INVALID_SESSION_ID.
    InvalidSessionId,
    /// Any status, errorCode and message.
    Custom {
        /// HTTP status.
        status: u16,
        /// errorCode.
        error_code: String,
        /// message.
        message: String,
    },
}

impl SalesforceFault {
    /// The error this fault answers with.
    pub fn to_error(&self) -> SalesforceApiError {
        match self {
            Self::ServerUnavailable => SalesforceApiError::new(503, "SERVER_UNAVAILABLE", "server too busy"),
            Self::UnknownException => SalesforceApiError::new(
                500,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-1234567890)",
            ),
            Self::UnableToLockRow => {
                SalesforceApiError::new(400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")
            }
            Self::RequestLimitExceeded => {
                SalesforceApiError::new(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.")
            }
            Self::QueryTimeout => {
                SalesforceApiError::new(400, "QUERY_TIMEOUT", "Your query request was running for too long.")
            }
            Self::InvalidSessionId => SalesforceApiError::invalid_session(),
            Self::Custom { status, error_code, message } => {
                SalesforceApiError::new(*status, error_code, message.clone())
            }
        }
    }
}

/// One request the emulator answered.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesforceCall {
    /// Emulator-clock time of the request.
    pub at: chrono::DateTime<chrono::Utc>,
    /// HTTP method.
    pub method: String,
    /// Request path (no query string).
    pub path: String,
    /// HTTP status answered; 0 when the connection was dropped.
    pub status: u16,
    /// The first errorCode (or OAuth `error`) of an error response.
    pub error_code: Option<String>,
    /// The fault that fired, if any (`"dropped"`, `"apply-then-drop"`, `"malformed"`, `"delay"`, `"error"`).
    pub fault: Option<String>,
}
