//! The bulk job records the database keeps: lead and activity export jobs and lead import
//! batches, with how long a job spends processing.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::envelope::fmt_ts;

/// What an export job extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportKind {
    Leads,
    Activities,
}

/// An export job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportStatus {
    Created,
    Queued,
    Processing,
    Completed,
    Cancelled,
    Failed,
}

impl ExportStatus {
    /// The status as the API spells it (`in_list`: as job lists spell it).
    pub(crate) fn name(self, in_list: bool) -> &'static str {
        match self {
            ExportStatus::Created => "Created",
            ExportStatus::Queued => "Queued",
            ExportStatus::Processing => "Processing",
            ExportStatus::Completed => "Completed",
            // The docs spell it "Canceled" in job lists and "Cancelled" elsewhere.
            ExportStatus::Cancelled if in_list => "Canceled",
            ExportStatus::Cancelled => "Cancelled",
            ExportStatus::Failed => "Failed",
        }
    }
}

/// An export job's filter.
#[derive(Debug, Clone)]
pub(crate) struct ExportFilter {
    pub(crate) field: &'static str,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    pub(crate) type_ids: Option<Vec<i64>>,
    pub(crate) primary_ids: Option<Vec<i64>>,
    pub(crate) primary_values: Option<Vec<String>>,
}

/// One export job.
#[derive(Debug, Clone)]
pub(crate) struct ExportJob {
    pub(crate) id: String,
    pub(crate) kind: ExportKind,
    pub(crate) client_id: String,
    pub(crate) format: String,
    pub(crate) fields: Vec<String>,
    pub(crate) headers: Vec<String>,
    pub(crate) filter: ExportFilter,
    pub(crate) status: ExportStatus,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) queued_at: Option<DateTime<Utc>>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) file: Option<Vec<u8>>,
    pub(crate) records: u64,
}

impl ExportJob {
    /// The job as the export endpoints report it (`in_list`: in a job list).
    pub(crate) fn render(&self, in_list: bool) -> Value {
        let mut o = Map::new();
        o.insert("exportId".into(), json!(self.id));
        o.insert("format".into(), json!(self.format));
        o.insert("status".into(), json!(self.status.name(in_list)));
        o.insert("createdAt".into(), json!(fmt_ts(self.created_at)));
        if let Some(t) = self.queued_at {
            o.insert("queuedAt".into(), json!(fmt_ts(t)));
        }
        if let Some(t) = self.started_at {
            o.insert("startedAt".into(), json!(fmt_ts(t)));
        }
        if let Some(t) = self.finished_at {
            o.insert("finishedAt".into(), json!(fmt_ts(t)));
        }
        if self.status == ExportStatus::Completed
            && let Some(f) = &self.file
        {
            o.insert("numberOfRecords".into(), json!(self.records));
            o.insert("fileSize".into(), json!(f.len()));
            o.insert("fileChecksum".into(), json!(format!("sha256:{}", hex::encode(Sha256::digest(f)))));
        }
        if self.status == ExportStatus::Failed {
            o.insert("errorMsg".into(), json!("Export failed"));
        }
        Value::Object(o)
    }
}

/// An import batch's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImportStatus {
    Queued,
    Importing,
    Complete,
    Failed,
}

impl ImportStatus {
    /// The status as the API spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ImportStatus::Queued => "Queued",
            ImportStatus::Importing => "Importing",
            ImportStatus::Complete => "Complete",
            ImportStatus::Failed => "Failed",
        }
    }
}

/// One import batch.
#[derive(Debug, Clone)]
pub(crate) struct ImportJob {
    pub(crate) id: i64,
    pub(crate) status: ImportStatus,
    pub(crate) delim: char,
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) lookup: String,
    pub(crate) partition: Option<i64>,
    pub(crate) queued_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) imported: u64,
    pub(crate) failures: Vec<(Vec<String>, String)>,
    pub(crate) warnings: Vec<(Vec<String>, String)>,
}

impl ImportJob {
    /// The batch as the import status endpoint reports it.
    pub(crate) fn render(&self) -> Value {
        let mut o = Map::new();
        o.insert("batchId".into(), json!(self.id));
        o.insert("importId".into(), json!(self.id.to_string()));
        o.insert("status".into(), json!(self.status.name()));
        let done = matches!(self.status, ImportStatus::Complete | ImportStatus::Failed);
        o.insert("numOfLeadsProcessed".into(), json!(if done { self.imported } else { 0 }));
        o.insert("numOfRowsFailed".into(), json!(if done { self.failures.len() } else { 0 }));
        o.insert("numOfRowsWithWarning".into(), json!(if done { self.warnings.len() } else { 0 }));
        if done {
            let n = self.imported;
            let msg = match (self.status, self.failures.len()) {
                (ImportStatus::Failed, f) => format!("Import failed, {n} records imported, {f} rows failed"),
                (_, 0) => format!("Import succeeded, {n} records imported ({n} members)"),
                (_, f) => format!("Import completed with errors, {n} records imported ({n} members), {f} rows failed"),
            };
            o.insert("message".into(), json!(msg));
        }
        Value::Object(o)
    }
}

/// How long a job with `records` rows spends in Processing: the fixed part plus the per-1,000-rows
/// part (microsecond precision, saturating).
pub(crate) fn processing_time(fixed: Duration, per_1000_rows: Duration, records: u64) -> Duration {
    let per_us = per_1000_rows.num_microseconds().unwrap_or(i64::MAX).max(0);
    let rows = i128::from(records);
    let us = (i128::from(per_us) * rows / 1000).min(i128::from(i64::MAX / 2));
    let variable = Duration::microseconds(i64::try_from(us).unwrap_or(i64::MAX / 2));
    fixed.checked_add(&variable).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processing_time_is_fixed_plus_per_row() {
        let fixed = Duration::seconds(30);
        let per = Duration::milliseconds(200);
        assert_eq!(processing_time(fixed, per, 0), fixed);
        assert_eq!(processing_time(fixed, per, 1_000_000), Duration::seconds(230));
        assert_eq!(processing_time(Duration::zero(), per, 5), Duration::milliseconds(1));
        assert_eq!(processing_time(fixed, Duration::zero(), 1_000_000), fixed);
        assert!(processing_time(fixed, Duration::MAX, u64::MAX) > Duration::days(365));
    }
}
