//! What a pass did.

use std::time::Duration;

use chrono::{DateTime, Utc};

use salesync_core::error::RecordError;
use salesync_core::mirror::RemovalReason;
use serde::{Deserialize, Serialize};

/// How the initial sync read Marketo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialPath {
    /// Bulk lead extract by `createdAt` windows.
    Bulk,
    /// REST `leads_by_filter` id-range sweep.
    Rest,
}

/// What the engine did when the bulk export quota ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkQuotaAction {
    /// Continued through the REST sweep.
    FellBackToRest,
    /// Waited for the quota to reset.
    Waited,
}

/// People removed, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RemovedCounts {
    /// Lost their owner or left Salesforce.
    pub disqualified: u64,
    /// Deleted in Marketo.
    pub deleted: u64,
    /// Lost a merge.
    pub merged: u64,
    /// Absent from Marketo at a sweep.
    pub vanished: u64,
}

impl RemovedCounts {
    /// All removals.
    pub fn total(&self) -> u64 {
        self.disqualified + self.deleted + self.merged + self.vanished
    }

    pub(crate) fn add(&mut self, reason: &RemovalReason) {
        match reason {
            RemovalReason::Disqualified { .. } => self.disqualified += 1,
            RemovalReason::Deleted => self.deleted += 1,
            RemovalReason::Merged { .. } => self.merged += 1,
            RemovalReason::Vanished => self.vanished += 1,
        }
    }
}

/// API calls made through the ports (each attempt counts, retries included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApiCalls {
    /// Marketo calls.
    pub marketo: u64,
    /// Salesforce calls.
    pub salesforce: u64,
}

impl ApiCalls {
    /// Both together.
    pub fn total(&self) -> u64 {
        self.marketo + self.salesforce
    }
}

/// The differences a reconciling resync found between the mirror and Marketo / Salesforce, and
/// repaired.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DriftCounts {
    /// Qualified people Marketo has that the mirror lacked (inserted).
    pub missing: u64,
    /// Mirror people Marketo no longer has (removed as vanished), or who no longer qualify.
    pub extra: u64,
    /// Stale fields put right, by field (REST name), e.g. `sfdcOpptyId` for an opportunity
    /// Salesforce changed.
    pub stale: std::collections::BTreeMap<String, u64>,
}

impl DriftCounts {
    /// Whether nothing differed.
    pub fn is_empty(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.stale.is_empty()
    }
}

/// What a pass did for a rebuild in progress.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RebuildReport {
    /// When the rebuild was started.
    pub requested_at: Option<DateTime<Utc>>,
    /// People written to the shadow copy in this pass (inserted or updated there).
    pub shadow_written: u64,
    /// True when the shadow copy replaced the live mirror in this pass: the rebuild is over.
    pub promoted: bool,
    /// At the promotion: people the live mirror lacked.
    pub inserted: u64,
    /// At the promotion: live people whose record differed.
    pub updated: u64,
    /// At the promotion: live people the rebuild did not find (removed as vanished).
    pub removed: u64,
}

/// What one [`SyncEngine::sync_once`](crate::SyncEngine::sync_once) did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SyncReport {
    /// People inserted.
    pub inserted: u64,
    /// People updated (opportunity fills not included: see `opportunities_resolved`).
    pub updated: u64,
    /// Records seen with no change.
    pub unchanged: u64,
    /// People removed, by reason.
    pub removed: RemovedCounts,
    /// Unqualified Marketo records that never touched the store.
    pub skipped_unqualified: u64,
    /// Deletions and merge losses of people the mirror never had.
    pub skipped_not_in_mirror: u64,
    /// Records that could not be mapped (each names the Marketo id when readable).
    pub record_errors: Vec<RecordError>,
    /// Pages applied to the store.
    pub pages: u64,
    /// API calls made.
    pub api_calls: ApiCalls,
    /// Wall time of the pass.
    pub duration: Duration,
    /// The path of the initial sync, when one ran (or resumed) in this pass.
    pub initial_path: Option<InitialPath>,
    /// Why [`InitialMode::Auto`](crate::InitialMode::Auto) chose that path (the Marketo calls each
    /// path would cost), when it chose in this pass.
    pub initial_path_reason: Option<String>,
    /// The Marketo client's share of the instance's limits at the end of the pass, when the
    /// connector adapts one.
    pub rate_budget: Option<salesync_core::ports::marketo::RateBudget>,
    /// What happened when the bulk export quota ran out, if it did.
    pub bulk_quota_action: Option<BulkQuotaAction>,
    /// True when a reconciling resync ran (token too old, deletions possibly pruned, or the
    /// scheduled drift repair was due: [`EngineSettings::reconcile_every`](crate::EngineSettings::reconcile_every)).
    pub reconciled: bool,
    /// What the reconciling resync found different and repaired.
    pub drift: DriftCounts,
    /// People whose opportunity id was filled from Salesforce.
    pub opportunities_resolved: u64,
    /// What the pass did for a rebuild in progress ([`SyncEngine::rebuild`](crate::SyncEngine::rebuild)), if one is.
    pub rebuild: Option<RebuildReport>,
    /// Non-fatal problems (e.g. an opportunity lookup that failed and will be retried).
    pub warnings: Vec<String>,
}
