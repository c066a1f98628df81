//! Sync events and mirror change notifications.
//!
//! Both are delivered through bounded [`tokio::sync::broadcast`] channels. A subscriber that
//! falls behind by more than the channel capacity
//! ([`EngineSettings::channel_capacity`](crate::EngineSettings::channel_capacity)) receives
//! [`RecvError::Lagged`](tokio::sync::broadcast::error::RecvError::Lagged) with the number of
//! messages it missed and then continues with the oldest retained one: the sync never waits for
//! a subscriber. A host that must not miss a change re-reads the mirror after a lag.

use std::time::Duration;

use salesync_core::error::RecordError;
use salesync_core::mapping::LeadField;
use salesync_core::mirror::RemovalReason;
use salesync_core::ports::store::ApplyCounts;
use serde::{Deserialize, Serialize};

use crate::report::{InitialPath, SyncReport};

/// The stage a pass is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Initial full sync through the given path.
    Initial(InitialPath),
    /// Reconciling resync (REST id-range sweep that also removes vanished people).
    Reconcile,
    /// Lead changes (New Lead, Change Data Value).
    LeadChanges,
    /// Deleted leads.
    DeletedLeads,
    /// Merges.
    Merges,
    /// Opportunity ids filled from Salesforce.
    Opportunities,
    /// A rebuild: filling the shadow copy, or promoting it (see
    /// [`SyncEngine::rebuild`](crate::SyncEngine::rebuild)).
    Rebuild,
    /// Between passes.
    Idle,
}

/// Progress of the sync.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SyncEvent {
    /// A new stage started.
    PhaseChanged {
        /// The stage.
        phase: Phase,
    },
    /// A page of decisions (and its checkpoint) was applied.
    PageApplied {
        /// What the store did.
        counts: ApplyCounts,
        /// The stage.
        phase: Phase,
    },
    /// The engine is waiting before trying again (rate limit, outage, export still running,
    /// quota used up).
    Backoff {
        /// Why.
        reason: String,
        /// How long.
        delay: Duration,
    },
    /// A Marketo record could not be mapped; the rest of its page was applied.
    RecordFailed {
        /// What was wrong.
        error: RecordError,
    },
    /// This engine took the Marketo pull's leader lease: it pulls until it loses or releases it.
    LeaderAcquired {
        /// This engine's holder id.
        holder: String,
    },
    /// This engine no longer holds the leader lease: another process took it (or it lapsed
    /// before renewal), or it was released on shutdown. No further page is committed.
    LeaderLost {
        /// This engine's holder id.
        holder: String,
        /// Why.
        reason: String,
    },
    /// The Marketo client's share of the instance's shared limits changed (it adapts to other
    /// integrations: see the Marketo connector's `limiter` notes). Announced after the page
    /// during which it changed.
    RateBudget {
        /// The share now.
        budget: salesync_core::ports::marketo::RateBudget,
    },
    /// A pass finished.
    Finished {
        /// Its report.
        report: Box<SyncReport>,
    },
}

/// A change to the mirror, published after the store committed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum MirrorChange {
    /// A person entered the mirror.
    Inserted {
        /// Marketo id.
        id: i64,
    },
    /// A person's record changed.
    Updated {
        /// Marketo id.
        id: i64,
        /// The fields that changed.
        changed: Vec<LeadField>,
    },
    /// A person left the mirror.
    Removed {
        /// Marketo id.
        id: i64,
        /// Why.
        reason: RemovalReason,
    },
}
