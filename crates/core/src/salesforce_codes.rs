//! The one table of Salesforce error codes: what each means for the product's diagnostics
//! (reference §2.9) and what to do about it.
//!
//! The Salesforce connector reads it to decide whether to repeat a call or a record and which
//! [`Error`](crate::Error) to return; delivery reads it to decide whether an outbox item is
//! retried, parked for an admin, or stops delivery until an operator reconnects. Codes are
//! compared case-insensitively (token-endpoint errors are lower case).

use serde::{Deserialize, Serialize};

/// The four categories under which Sales Insight Actions lists failed Salesforce writes on its
/// Diagnostics page, with the fix each calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// The connection is broken: an operator must disconnect and reconnect.
    Authentication,
    /// Temporary: retried automatically.
    Intermittent,
    /// An admin must repair the org (permissions, validation rules, required fields), then retry
    /// by hand.
    AccessValidation,
    /// Anything else (e.g. `CANNOT_UPDATE_CONVERTED_LEAD`, `UNKNOWN_EXCEPTION`).
    Other,
}

impl Category {
    /// A short label, the prefix of parked errors.
    pub fn label(self) -> &'static str {
        match self {
            Category::Authentication => "authentication",
            Category::Intermittent => "intermittent",
            Category::AccessValidation => "access/validation",
            Category::Other => "other",
        }
    }
}

/// What to do about one error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Remedy {
    /// The session expired: obtain a new token and repeat the call once.
    NewSession,
    /// Credentials or the connected user are no longer valid: an operator must reconnect.
    Reconnect,
    /// Temporary: the same request (or record) may succeed when repeated after a backoff.
    Repeat,
    /// A limit: a concurrency limit passes with a backoff, the daily allocation at its reset.
    WaitForLimit,
    /// Not worth repeating the same request at once (a lead converted meanwhile, a sibling that
    /// rolled the batch back, a timeout inside Salesforce that would recur), but the item
    /// succeeds when built and sent anew on a later attempt.
    Resend,
    /// The API user lacks a permission: an admin must grant it.
    GrantAccess,
    /// The org refuses the data (validation rules, required or unknown fields): an admin must
    /// repair the org or the data.
    Repair,
    /// Not known to pass: not repeated, kept with the raw error.
    Unknown,
}

/// What one Salesforce error code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CodeInfo {
    /// The diagnostics category.
    pub category: Category,
    /// What to do.
    pub remedy: Remedy,
}

impl CodeInfo {
    /// True when a later attempt may succeed without anyone's help (a repeat, a resend, or a
    /// wait for a limit).
    pub fn retried(self) -> bool {
        matches!(self.remedy, Remedy::Repeat | Remedy::Resend | Remedy::WaitForLimit)
    }
}

use Category::{AccessValidation as AV, Authentication as Auth, Intermittent as Int, Other};
use Remedy::{GrantAccess, NewSession, Reconnect, Repair, Repeat, Resend, WaitForLimit};

/// Code → (category, remedy). Beyond SIA's own list (§2.9), codes that are plainly access or
/// validation problems (`INVALID_CROSS_REFERENCE_KEY`, `DUPLICATE_VALUE`, `MALFORMED_QUERY`, …)
/// are Access/Validation, and the session and client codes are Authentication.
const TABLE: &[(&str, Category, Remedy)] = &[
    // Authentication.
    ("INVALID_SESSION_ID", Auth, NewSession),
    ("AUTHENTICATION_FAILURE", Auth, Reconnect),
    ("EXPIRED_ACCESS", Auth, Reconnect),
    ("INACTIVE_ORGANIZATION", Auth, Reconnect),
    ("INACTIVE_USER", Auth, Reconnect),
    ("INACTIVE_ORG", Auth, Reconnect),
    ("INVALID_GRANT", Auth, Reconnect),
    ("INVALID_CLIENT", Auth, Reconnect),
    ("INVALID_CLIENT_ID", Auth, Reconnect),
    ("UNAUTHORIZED_CLIENT", Auth, Reconnect),
    ("INVALID_AUTH_HEADER", Auth, Reconnect),
    // Intermittent.
    ("FAILED_WRITE", Int, Repeat),
    ("INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE", Int, Repeat),
    ("QUERY_TIMEOUT", Int, Repeat),
    ("SERVER_UNAVAILABLE", Int, Repeat),
    ("UNABLE_TO_LOCK_ROW", Int, Repeat),
    ("REQUEST_LIMIT_EXCEEDED", Int, WaitForLimit),
    // A record of an all-or-none batch that failed because a sibling did.
    ("ALL_OR_NONE_OPERATION_ROLLED_BACK", Int, Resend),
    // SIA lists it under Other; the next attempt re-resolves the person and writes to the
    // contact the lead was converted into.
    ("CANNOT_UPDATE_CONVERTED_LEAD", Other, Resend),
    // Access.
    ("API_CURRENTLY_DISABLED", AV, GrantAccess),
    ("API_DISABLED_FOR_ORG", AV, GrantAccess),
    ("FUNCTIONALITY_NOT_ENABLED", AV, GrantAccess),
    ("INSUFFICIENT_ACCESS", AV, GrantAccess),
    ("INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY", AV, GrantAccess),
    ("INSUFFICIENT_ACCESS_OR_READONLY", AV, GrantAccess),
    ("INSUFFICIENT_PRIVILEGES", AV, GrantAccess),
    ("TXN_SECURITY_NO_ACCESS", AV, GrantAccess),
    // Validation.
    ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", AV, Repair),
    ("DUPLICATE_VALUE", AV, Repair),
    ("DUPLICATES_DETECTED", AV, Repair),
    ("ENTITY_IS_LOCKED", AV, Repair),
    ("FIELD_CUSTOM_VALIDATION_EXCEPTION", AV, Repair),
    ("FIELD_FILTER_VALIDATION_EXCEPTION", AV, Repair),
    ("FIELD_INTEGRITY_EXCEPTION", AV, Repair),
    ("INVALID_CROSS_REFERENCE_KEY", AV, Repair),
    ("INVALID_FIELD", AV, Repair),
    ("INVALID_FIELD_FOR_INSERT_UPDATE", AV, Repair),
    ("INVALID_ID_FIELD", AV, Repair),
    ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", AV, Repair),
    ("INVALID_TYPE", AV, Repair),
    ("MALFORMED_QUERY", AV, Repair),
    ("REQUIRED_FIELD_MISSING", AV, Repair),
    ("STRING_TOO_LONG", AV, Repair),
];

/// What an error code (and its message) means.
///
/// Two cases read the message: `INVALID_FIELD` counts as Intermittent when it shows a read
/// timeout (`Net::ReadTimeout`), as SIA lists it; a token-endpoint error without a code but with
/// one of the documented `invalid_grant` descriptions (`authentication failure`, `expired
/// access/refresh token`, `inactive user`, `inactive organization`, `ip restricted`) is
/// Authentication.
pub fn lookup(code: &str, message: &str) -> CodeInfo {
    let code = code.trim();
    if code.eq_ignore_ascii_case("INVALID_FIELD") && message.to_ascii_lowercase().contains("readtimeout") {
        return CodeInfo { category: Int, remedy: Resend };
    }
    if code.is_empty() && is_auth_description(message) {
        return CodeInfo { category: Auth, remedy: Reconnect };
    }
    TABLE.iter().find(|(c, _, _)| c.eq_ignore_ascii_case(code)).map_or(
        CodeInfo { category: Other, remedy: Remedy::Unknown },
        |&(_, category, remedy)| CodeInfo { category, remedy },
    )
}

/// True for `REQUEST_LIMIT_EXCEEDED` caused by a concurrency limit (`ConcurrentRequest`,
/// `ConcurrentPerOrgLongTxn`), not the daily allocation (`TotalRequests`).
pub fn is_concurrency_limit(message: &str) -> bool {
    message.contains("Concurrent")
}

/// True for the documented `error_description`s of a token-endpoint `invalid_grant`.
fn is_auth_description(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "authentication failure",
        "expired access/refresh token",
        "inactive user",
        "inactive organization",
        "ip restricted",
    ]
    .iter()
    .any(|d| m.contains(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_diagnostics_code_is_categorized_as_sia_lists_it() {
        let table: &[(&str, &str, Category)] = &[
            ("AUTHENTICATION_FAILURE", "invalid_grant: authentication failure", Auth),
            ("EXPIRED_ACCESS", "invalid_grant: expired access/refresh token", Auth),
            ("INACTIVE_ORGANIZATION", "inactive organization", Auth),
            ("INACTIVE_USER", "inactive user", Auth),
            ("INVALID_GRANT", "ip restricted", Auth),
            ("invalid_grant", "authentication failure", Auth),
            ("", "expired access/refresh token", Auth),
            ("FAILED_WRITE", "", Int),
            ("INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE", "", Int),
            ("INVALID_FIELD", "Net::ReadTimeout", Int),
            ("QUERY_TIMEOUT", "Your query request was running too long", Int),
            ("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded", Int),
            ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", Int),
            ("SERVER_UNAVAILABLE", "server too busy", Int),
            ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record", Int),
            ("API_CURRENTLY_DISABLED", "", AV),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "", AV),
            ("ENTITY_IS_LOCKED", "", AV),
            ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "", AV),
            ("FIELD_FILTER_VALIDATION_EXCEPTION", "", AV),
            ("FIELD_INTEGRITY_EXCEPTION", "", AV),
            ("INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY", "", AV),
            ("insufficient_access_or_readonly", "", AV),
            ("INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: MSE_Replied__c", AV),
            ("INVALID_TYPE", "sObject type 'Lead' is not supported", AV),
            ("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", AV),
            ("TXN_SECURITY_NO_ACCESS", "", AV),
            ("INVALID_FIELD", "No such column 'FullName' on entity 'Account'", AV),
            ("INVALID_FIELD", "No such column 'Timeout__c' on entity 'Task'", AV),
            ("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", Other),
            ("UNKNOWN_EXCEPTION", "", Other),
            ("SOMETHING_NEW", "", Other),
        ];
        for (code, msg, want) in table {
            assert_eq!(lookup(code, msg).category, *want, "{code} / {msg}");
        }
    }

    #[test]
    fn remedies() {
        assert_eq!(lookup("INVALID_SESSION_ID", "Session expired or invalid").remedy, NewSession);
        assert_eq!(lookup("invalid_grant", "").remedy, Reconnect);
        assert_eq!(lookup("UNABLE_TO_LOCK_ROW", "").remedy, Repeat);
        assert_eq!(lookup("CANNOT_UPDATE_CONVERTED_LEAD", "").remedy, Resend);
        assert_eq!(lookup("INVALID_FIELD", "Net::ReadTimeout").remedy, Resend);
        assert_eq!(lookup("INSUFFICIENT_PRIVILEGES", "").remedy, GrantAccess);
        assert_eq!(lookup("DUPLICATE_VALUE", "").remedy, Repair);
        assert_eq!(lookup("UNKNOWN_EXCEPTION", "").remedy, Remedy::Unknown);
        assert!(lookup("ALL_OR_NONE_OPERATION_ROLLED_BACK", "").retried());
        assert!(lookup("REQUEST_LIMIT_EXCEEDED", "").retried());
        assert!(!lookup("REQUIRED_FIELD_MISSING", "").retried());
        assert!(!lookup("INVALID_GRANT", "").retried());
    }

    #[test]
    fn every_code_is_listed_once_in_upper_case() {
        let mut seen = std::collections::HashSet::new();
        for (c, _, _) in TABLE {
            assert_eq!(*c, c.to_ascii_uppercase(), "{c}");
            assert!(seen.insert(*c), "{c} listed twice");
        }
    }
}
