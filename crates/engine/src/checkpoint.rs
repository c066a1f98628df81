//! The engine's checkpoint positions (opaque JSON to the store).

use chrono::{DateTime, Utc};
use salesync_core::ports::store::{Checkpoint, StreamId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::report::{BulkQuotaAction, InitialPath};
use crate::{Error, Result};

/// Whether the initial sync finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum InitialStatus {
    Running,
    Done,
}

/// Position of the Salesforce opportunity stream: changes with a SystemModstamp after `since`
/// (read with an overlap) are still to be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SalesforcePos {
    pub since: DateTime<Utc>,
}

/// Position of the REST id-range sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RestPos {
    /// First id of the next chunk.
    pub next_id: i64,
    /// Highest Marketo id any chunk returned.
    pub highest_seen: i64,
    /// Consecutive chunks without any lead.
    pub empty_run: u32,
    /// The sweep is over.
    pub complete: bool,
    /// Highest id named by recent New Lead activities (`None`: not probed yet).
    #[serde(default)]
    pub probed_max: Option<i64>,
}

impl Default for RestPos {
    fn default() -> Self {
        Self { next_id: 1, highest_seen: 0, empty_run: 0, complete: false, probed_max: None }
    }
}

/// Position of the bulk path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct BulkPos {
    /// Index of the current `createdAt` window.
    pub window: u32,
    /// The export job of the current window, once created: a restarted run reuses it.
    pub export_id: Option<String>,
    /// Rows of that job's file already applied.
    pub rows_applied: u64,
    /// Byte offset in the file just after the last applied row.
    pub offset: u64,
    /// The file's header (REST names), once read.
    pub header: Vec<String>,
    /// Failed or cancelled jobs for the current window.
    #[serde(default)]
    pub failures: u32,
    /// Start of window 0, fixed when the bulk path starts (`None` in checkpoints written before
    /// the oldest-lead probe existed: their windows start at `oldest_created_at`).
    #[serde(default)]
    pub origin: Option<DateTime<Utc>>,
    /// Export jobs already created for the windows after the current one, in window order
    /// (`ahead[i]` is window `window + 1 + i`): a restarted run reuses them.
    #[serde(default)]
    pub ahead: Vec<String>,
}

/// The `InitialSync` checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct InitialState {
    pub status: InitialStatus,
    /// When this (re)sync started: incremental streams resume from here.
    pub started_at: DateTime<Utc>,
    pub path: InitialPath,
    /// A reconciling resync (REST sweep into an existing mirror).
    #[serde(default)]
    pub reconcile: bool,
    #[serde(default)]
    pub rest: RestPos,
    #[serde(default)]
    pub bulk: BulkPos,
    #[serde(default)]
    pub bulk_quota_action: Option<BulkQuotaAction>,
}

/// The `LeadChanges` checkpoint: the lead-changes token, and the merges (activity 32) token that
/// shares the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeadChangesPos {
    pub token: String,
    pub merges_token: String,
    /// The stream has been read up to about this time.
    pub as_of: DateTime<Utc>,
}

/// The `DeletedLeads` checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenPos {
    pub token: String,
    pub as_of: DateTime<Utc>,
}

pub(crate) fn encode<T: Serialize>(stream: StreamId, pos: &T, now: DateTime<Utc>) -> Result<Checkpoint> {
    let position = serde_json::to_value(pos).map_err(|e| Error::Checkpoint { stream, detail: e.to_string() })?;
    Ok(Checkpoint { stream, position, updated_at: now })
}

pub(crate) fn decode<T: DeserializeOwned>(cp: &Checkpoint) -> Result<T> {
    serde_json::from_value(cp.position.clone())
        .map_err(|e| Error::Checkpoint { stream: cp.stream, detail: e.to_string() })
}
