//! What the dispatcher reports: events, round reports and target states.

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
