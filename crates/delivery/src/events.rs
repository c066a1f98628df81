//! What the dispatcher reports: events, round reports, target states and the Salesforce
//! failure categories.

use chrono::{DateTime, Utc};
use salesync_core::ports::store::Target;
use serde::{Deserialize, Serialize};

/// Something that happened to an outbox item or a delivery target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeliveryEvent {
    /// An item reached its target.
    Delivered {
        /// Outbox item id.
        item_id: i64,
        /// Target.
        target: Target,
        /// The remote id (Marketo activity GUID, Salesforce Task id, Lead/Contact id).
        remote_id: String,
    },
    /// An item failed and will be tried again.
    Retrying {
        /// Outbox item id.
        item_id: i64,
        /// Target.
        target: Target,
        /// The raw error.
        error: String,
        /// Next attempt.
        at: DateTime<Utc>,
    },
    /// An item was parked for an admin (permanent failure or too many attempts).
    Parked {
        /// Outbox item id.
        item_id: i64,
        /// Target.
        target: Target,
        /// The raw error.
        error: String,
    },
    /// An item was not delivered, by design (e.g. a call for a person without a Salesforce id).
    Skipped {
        /// Outbox item id.
        item_id: i64,
        /// Target.
        target: Target,
        /// Why.
        reason: String,
    },
    /// Authentication failed: delivery to this target is stopped until
    /// [`Dispatcher::reconnected`](crate::Dispatcher::reconnected) is called.
    Reconnect {
        /// Target.
        target: Target,
        /// The service's words.
        detail: String,
    },
    /// The target's daily quota (or salesync's reserve of it) is used up; delivery resumes at
    /// `until`.
    QuotaExhausted {
        /// Target.
        target: Target,
        /// When delivery resumes.
        until: DateTime<Utc>,
    },
}

/// Whether a target is being delivered to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TargetStatus {
    /// Delivering.
    #[default]
    Active,
    /// Stopped after an authentication failure: an operator must reconnect.
    ReconnectRequired {
        /// The service's words.
        detail: String,
    },
    /// Paused until the quota resets (or the reserve refills).
    Paused {
        /// When delivery resumes.
        until: DateTime<Utc>,
    },
}

/// What one round did for one target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetReport {
    /// Items claimed.
    pub claimed: u32,
    /// Items delivered.
    pub delivered: u32,
    /// Items scheduled for another attempt.
    pub retried: u32,
    /// Items parked.
    pub parked: u32,
    /// Items skipped by design.
    pub skipped: u32,
    /// Items found already delivered by an earlier attempt whose response was lost.
    pub recovered: u32,
    /// The target's status after the round.
    pub status: TargetStatus,
}

/// What one inbound Salesforce poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundReport {
    /// Records read from Salesforce.
    pub read: u32,
    /// Records applied to the store (reminders created/updated/deleted, unsubscribes set).
    pub applied: u32,
}

/// What one [`Dispatcher::deliver_once`](crate::Dispatcher::deliver_once) round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// Marketo delivery.
    pub marketo: TargetReport,
    /// Salesforce delivery.
    pub salesforce: TargetReport,
    /// Reminder task poll, when it ran.
    pub reminders: Option<InboundReport>,
    /// Opt-out reconcile, when it ran.
    pub opt_outs: Option<InboundReport>,
    /// Connector failures that did not concern one item (provisioning, polls), as text.
    pub errors: Vec<String>,
}

impl DeliveryReport {
    /// True when a target's claim came back full, so another round should follow at once.
    pub fn more_due(&self, marketo_batch: u32, salesforce_batch: u32) -> bool {
        (self.marketo.claimed > 0 && self.marketo.claimed >= marketo_batch)
            || (self.salesforce.claimed > 0 && self.salesforce.claimed >= salesforce_batch)
    }
}

/// How a Salesforce write failure is handled, following the product's diagnostics categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// Credentials: stop Salesforce delivery and ask for a reconnect.
    Authentication,
    /// Temporary: retried automatically with backoff.
    Intermittent,
    /// The org refuses (permissions, validation rules, required fields): parked for an admin,
    /// who retries after fixing the org.
    AccessValidation,
    /// Anything else: parked with the raw error.
    Other,
}

impl FailureCategory {
    /// A short label used as the prefix of parked errors.
    pub fn label(self) -> &'static str {
        match self {
            FailureCategory::Authentication => "authentication",
            FailureCategory::Intermittent => "intermittent",
            FailureCategory::AccessValidation => "access/validation",
            FailureCategory::Other => "other",
        }
    }
}

/// Classifies a raw Salesforce error code (and message) like the product's diagnostics page.
///
/// `CANNOT_UPDATE_CONVERTED_LEAD` is treated as intermittent: the next attempt re-checks the
/// lead's conversion and writes to the contact instead.
pub fn classify_salesforce(code: &str, message: &str) -> FailureCategory {
    let code = code.trim().to_ascii_uppercase();
    match code.as_str() {
        "AUTHENTICATION_FAILURE"
        | "EXPIRED_ACCESS"
        | "INACTIVE_ORGANIZATION"
        | "INACTIVE_USER"
        | "INVALID_GRANT"
        | "INVALID_SESSION_ID"
        | "INVALID_AUTH_HEADER" => FailureCategory::Authentication,
        "FAILED_WRITE"
        | "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
        | "QUERY_TIMEOUT"
        | "REQUEST_LIMIT_EXCEEDED"
        | "SERVER_UNAVAILABLE"
        | "UNABLE_TO_LOCK_ROW"
        | "ALL_OR_NONE_OPERATION_ROLLED_BACK"
        | "CANNOT_UPDATE_CONVERTED_LEAD"
        | "503"
        | "500"
        | "502"
        | "504" => FailureCategory::Intermittent,
        "INVALID_FIELD" if message.to_ascii_lowercase().contains("timeout") => FailureCategory::Intermittent,
        "API_CURRENTLY_DISABLED"
        | "API_DISABLED_FOR_ORG"
        | "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"
        | "ENTITY_IS_LOCKED"
        | "FIELD_CUSTOM_VALIDATION_EXCEPTION"
        | "FIELD_FILTER_VALIDATION_EXCEPTION"
        | "FIELD_INTEGRITY_EXCEPTION"
        | "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY"
        | "INSUFFICIENT_ACCESS_OR_READONLY"
        | "INSUFFICIENT_ACCESS"
        | "INVALID_FIELD_FOR_INSERT_UPDATE"
        | "INVALID_FIELD"
        | "INVALID_TYPE"
        | "INVALID_CROSS_REFERENCE_KEY"
        | "REQUIRED_FIELD_MISSING"
        | "TXN_SECURITY_NO_ACCESS"
        | "STRING_TOO_LONG"
        | "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" => FailureCategory::AccessValidation,
        _ => FailureCategory::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_categories() {
        use FailureCategory as C;
        assert_eq!(classify_salesforce("INVALID_GRANT", ""), C::Authentication);
        assert_eq!(classify_salesforce("UNABLE_TO_LOCK_ROW", ""), C::Intermittent);
        assert_eq!(classify_salesforce("SERVER_UNAVAILABLE", ""), C::Intermittent);
        assert_eq!(classify_salesforce("QUERY_TIMEOUT", ""), C::Intermittent);
        assert_eq!(classify_salesforce("INVALID_FIELD", "Net::ReadTimeout"), C::Intermittent);
        assert_eq!(classify_salesforce("INVALID_FIELD", "No such column"), C::AccessValidation);
        assert_eq!(classify_salesforce("REQUIRED_FIELD_MISSING", ""), C::AccessValidation);
        assert_eq!(classify_salesforce("insufficient_access_or_readonly", ""), C::AccessValidation);
        assert_eq!(classify_salesforce("FIELD_CUSTOM_VALIDATION_EXCEPTION", ""), C::AccessValidation);
        assert_eq!(classify_salesforce("INVALID_FIELD_FOR_INSERT_UPDATE", ""), C::AccessValidation);
        assert_eq!(classify_salesforce("UNKNOWN_EXCEPTION", ""), C::Other);
    }
}
